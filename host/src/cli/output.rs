//! What the CLI prints: JSON on request, otherwise aligned tables for lists and
//! `key: value` lines for one object.

use std::io::{IsTerminal, Write};

use serde_json::Value;

/// Columns shown for each kind of list the API returns.
const COLUMNS: &[(&str, &[&str])] = &[
    (
        "mirrors",
        &[
            "mirror_id",
            "direction",
            "project_id",
            "enabled",
            "state",
            "success_rate",
            "url",
        ],
    ),
    (
        "refs",
        &["ref_name", "action", "local_oid", "remote_oid", "reason"],
    ),
    (
        "conflicts",
        &[
            "conflict_id",
            "ref_name",
            "status",
            "strategy",
            "ahead",
            "behind",
            "resolution",
        ],
    ),
];

pub fn print(answer: &Value, json: bool) {
    if json {
        println!("{answer:#}");
        return;
    }
    for (key, columns) in COLUMNS {
        if let Some(rows) = answer.get(*key).and_then(Value::as_array) {
            if rows.is_empty() {
                println!("no {key}");
            } else {
                print!("{}", table(rows, columns));
            }
            return;
        }
    }
    match answer.as_object() {
        Some(object) => {
            for (key, value) in object {
                if !value.is_object() && !value.is_array() {
                    println!("{key}: {}", cell(value));
                }
            }
        }
        None => println!("{answer:#}"),
    }
}

/// Columns that no row has are left out (mirror lists carry no `state`,
/// unhealthy lists no `enabled`).
fn table(rows: &[Value], columns: &[&str]) -> String {
    let columns: Vec<&str> = columns
        .iter()
        .copied()
        .filter(|c| rows.iter().any(|r| r.get(c).is_some()))
        .collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|r| r[i].len()).fold(c.len(), usize::max))
        .collect();
    let line = |values: Vec<&str>| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(columns.clone());
    for row in &cells {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The live line of `mirror sync`: rewritten in place on a terminal, one line
/// per change otherwise (logs, pipes, tests).
#[derive(Debug)]
pub struct Progress {
    run_id: i64,
    last: String,
    terminal: bool,
}

impl Progress {
    pub fn new(run_id: i64) -> Self {
        Self {
            run_id,
            last: String::new(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    pub fn show(&mut self, run: &Value) {
        let status = run["status"].as_str().unwrap_or("queued");
        let p = &run["progress"];
        let line = match (p["objects"].as_u64(), p["total_objects"].as_u64()) {
            (Some(objects), Some(total)) => format!(
                "run {}: {status}, objects {objects}/{total}, {}",
                self.run_id,
                bytes(p["bytes"].as_u64().unwrap_or(0))
            ),
            _ => format!("run {}: {status}", self.run_id),
        };
        if line == self.last {
            return;
        }
        let mut err = std::io::stderr();
        // A progress line that cannot be written is not worth failing the command.
        let _ = if self.terminal {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        self.last = line;
    }

    pub fn done(&self) {
        if self.terminal && !self.last.is_empty() {
            eprintln!();
        }
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / f64::from(1 << 10)),
        n => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_skip_columns_no_row_has() {
        let rows = vec![
            json!({"mirror_id": 1, "direction": "pull", "project_id": "a/b", "enabled": true, "url": "https://x/a.git"}),
            json!({"mirror_id": 12, "direction": "push", "project_id": "a/b", "enabled": false, "url": null}),
        ];
        let text = table(&rows, COLUMNS[0].1);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "mirror_id  direction  project_id  enabled  url");
        assert_eq!(
            lines[1],
            "1          pull       a/b         true     https://x/a.git"
        );
        assert_eq!(lines[2], "12         push       a/b         false    -");
    }

    #[test]
    fn byte_counts_read_like_git() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 20), "5.0 MiB");
    }
}
