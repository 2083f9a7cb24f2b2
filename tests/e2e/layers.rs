//! The direction of dependency inside `host/src`, read from the sources: a
//! module names only modules below it (ARCHITECTURE.md, "Dependency order"),
//! and only the HTTP face names axum.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top to bottom. A module may name modules of later rows only; modules of one
/// row do not name each other.
const LAYERS: &[&[&str]] = &[
    &["cli", "server"],
    &["api"],
    &["service"],
    &["config"],
    &["webhooks", "schedule"],
    &["jobs"],
    &["alerts"],
    &["health"],
    &["sync"],
    &["plugins"],
    &["secrets"],
    &["telemetry"],
    &["store"],
    &["fsutil", "memory", "clock"],
];

/// Modules whose code may name axum: the HTTP face and what serves it.
const HTTP: &[&str] = &["api", "server"];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with the top-level module it belongs to.
fn sources(dir: &Path, top: Option<&str>, out: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let module = top.map_or(name.clone(), str::to_string);
        if path.is_dir() {
            sources(&path, Some(&module), out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((module, path));
        }
    }
}

/// The code of a file without its comments (a doc comment may mention any
/// module).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules `code` names through `crate::`, braced groups included.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => found.extend(group_heads(group).into_iter().map(str::to_string)),
            None => {
                found.insert(ident(rest).to_string());
            }
        }
    }
    found
}

/// The first segment of each path in a `{a::b, c, d::{e, f}}` group (from
/// after its opening brace).
fn group_heads(group: &str) -> Vec<&str> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expecting = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expecting = true,
            c if expecting && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                expecting = false;
                heads.push(ident(&group[i..]));
            }
            _ => {}
        }
    }
    heads
}

fn ident(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

#[test]
fn every_module_names_only_modules_below_it() {
    let mut files = Vec::new();
    sources(&src(), None, &mut files);
    let mut wrong = Vec::new();
    for (module, path) in &files {
        // The crate root and the executables (main.rs, bin/), which reach
        // the library from outside it.
        if matches!(module.as_str(), "lib" | "main" | "bin") {
            continue;
        }
        let own = rank(module).unwrap_or_else(|| panic!("{module} is in no layer: add it"));
        let code = code(path);
        for named in named_modules(&code) {
            if named == *module {
                continue;
            }
            let Some(theirs) = rank(&named) else {
                panic!(
                    "{} names crate::{named}, which is in no layer",
                    path.display()
                );
            };
            if theirs <= own {
                wrong.push(format!("{} ({module}) names {named}", path.display()));
            }
        }
        if !HTTP.contains(&module.as_str()) && code.contains("axum") {
            wrong.push(format!("{} ({module}) names axum", path.display()));
        }
    }
    assert!(wrong.is_empty(), "back edges:\n{}", wrong.join("\n"));
}

#[test]
fn the_layer_check_sees_grouped_and_plain_paths() {
    let code = "use crate::{jobs::Queue, store::{self, Store}};\nlet x = crate::sync::Engine;";
    let named: Vec<String> = named_modules(code).into_iter().collect();
    assert_eq!(named, ["jobs", "store", "sync"]);
}

/// lib.rs declares every module the layers name, and no other.
#[test]
fn the_layers_cover_the_crate() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim_start_matches("pub ");
            l.strip_prefix("mod ")?.strip_suffix(';')
        })
        .collect();
    let layered: BTreeSet<&str> = LAYERS.iter().flat_map(|row| row.iter().copied()).collect();
    assert_eq!(declared, layered);
}
