//! The console's markup: escaping, the page frame and the small pieces every
//! page uses. Pages are written with `write!` into a `String`; every value
//! that did not come from this file goes through [`esc`].

use std::fmt::{self, Display, Write as _};

use crate::store::RunStatus;
use crate::store::health::State;

/// Text made safe for HTML content and quoted attribute values.
pub struct Esc<'a>(&'a str);

pub fn esc(text: &str) -> Esc<'_> {
    Esc(text)
}

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// The sections of the console, for the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Mirrors,
    Queue,
    Plugins,
    /// Not signed in: no navigation.
    Login,
}

/// A whole page: `body` inside the frame, with the navigation and the
/// logout form when signed in (`csrf` given).
pub fn page(title: &str, section: Section, csrf: Option<&str>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · mirrorhost</title>\
         <link rel=\"stylesheet\" href=\"/console/console.css\">",
        esc(title)
    );
    if csrf.is_some() {
        out.push_str("<script src=\"/console/console.js\" defer></script>");
    }
    out.push_str("</head><body><header><a class=\"brand\" href=\"/\">mirrorhost</a>");
    if let Some(csrf) = csrf {
        out.push_str("<nav aria-label=\"Console\"><ul>");
        for (s, href, label) in [
            (Section::Mirrors, "/", "Mirrors"),
            (Section::Queue, "/queue", "Queue"),
            (Section::Plugins, "/plugins", "Plugins"),
        ] {
            let current = if s == section {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(out, "<li><a href=\"{href}\"{current}>{label}</a></li>");
        }
        out.push_str("</ul></nav>");
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/logout\" class=\"logout\">{}\
             <button type=\"submit\">Log out</button></form>",
            csrf_field(csrf)
        );
    }
    let _ = write!(
        out,
        "</header><main id=\"main\"><h1>{}</h1>{body}</main></body></html>",
        esc(title)
    );
    out
}

/// The hidden field that proves a POST came from a page we served.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// A one-button form that POSTs to `action`.
pub fn button(action: &str, csrf: &str, label: &str, fields: &[(&str, &str)]) -> String {
    let mut out = format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\">{}",
        esc(action),
        csrf_field(csrf)
    );
    for (name, value) in fields {
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            esc(name),
            esc(value)
        );
    }
    let _ = write!(
        out,
        "<button type=\"submit\">{}</button></form>",
        esc(label)
    );
    out
}

/// A mirror's health state as a badge: a word, not only a colour.
pub fn state_badge(state: State) -> String {
    let label = match state {
        State::Healthy => "healthy",
        State::Failing => "failing",
        State::HardFailed => "hard failed",
        State::Disabled => "paused",
    };
    format!(
        "<span class=\"badge state-{}\">{label}</span>",
        state.as_str()
    )
}

pub fn run_badge(status: RunStatus) -> String {
    format!("<span class=\"badge run-{0}\">{0}</span>", status.as_str())
}

/// A stored timestamp (RFC 3339) as a `<time>`, shown to the second.
pub fn time(at: Option<&str>) -> String {
    match at {
        None => "<span class=\"none\">never</span>".into(),
        Some(at) => {
            let shown = at.get(..19).unwrap_or(at).replace('T', " ");
            format!("<time datetime=\"{}\">{} UTC</time>", esc(at), esc(&shown))
        }
    }
}

/// Milliseconds as a person reads a duration.
pub fn duration(ms: Option<i64>) -> String {
    match ms {
        None => "–".into(),
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) => format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// Bytes as a person reads a size.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// An object id, shortened for a table, whole in its title.
pub fn oid(oid: Option<&str>) -> String {
    match oid {
        None => "–".into(),
        Some(o) => format!(
            "<code title=\"{}\">{}</code>",
            esc(o),
            esc(o.get(..10).unwrap_or(o))
        ),
    }
}

/// A term and its description, for the settings lists.
pub fn item(out: &mut String, term: &str, description: &str) {
    let _ = write!(out, "<dt>{}</dt><dd>{description}</dd>", esc(term));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        let hostile = "<script>alert('x')</script> & \"q\"";
        assert_eq!(
            esc(hostile).to_string(),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("plain").to_string(), "plain");
    }

    #[test]
    fn figures_read_as_people_say_them() {
        assert_eq!(duration(Some(950)), "950 ms");
        assert_eq!(duration(Some(1500)), "1.5 s");
        assert_eq!(duration(Some(125_000)), "2 min 5 s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }
}
