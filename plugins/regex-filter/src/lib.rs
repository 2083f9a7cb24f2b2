//! `regex-filter`: include/exclude regular expressions over branch and tag names.
//!
//! Config (all optional):
//! `{"include": "^main$" | ["^main$", "^release/"], "exclude": [...], "tags": "filter" | "all" | "none"}`
//!
//! Patterns match the short name (`main`, `v1.0`), unanchored as `regex` does.
//! A branch is kept when it matches an include pattern (or none is given) and no
//! exclude pattern. `tags` says whether tags go through the same test (`filter`, the
//! default), are all kept (`all`, GitLab's behaviour for its branch regex) or dropped.
//! Refs outside `refs/heads/` and `refs/tags/` are never kept.

use mirror_plugin_sdk::branch_filter::Guest;
use mirror_plugin_sdk::refs::{RefKind, classify};
use mirror_plugin_sdk::types::{CandidateRefs, MirrorContext, PluginInfo};
use regex::Regex;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Patterns {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Tags {
    #[default]
    Filter,
    All,
    None,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    include: Patterns,
    exclude: Patterns,
    tags: Tags,
}

struct Compiled {
    include: Option<Regex>,
    exclude: Option<Regex>,
    tags: Tags,
}

impl Compiled {
    fn new(config: &str) -> Result<Self, String> {
        let config: Config = mirror_plugin_sdk::config::parse(config)?;
        Ok(Self {
            include: union("include", config.include)?,
            exclude: union("exclude", config.exclude)?,
            tags: config.tags,
        })
    }

    fn keeps(&self, full_name: &str) -> bool {
        let short = match classify(full_name) {
            RefKind::Branch(short) => short,
            RefKind::Tag(short) => match self.tags {
                Tags::Filter => short,
                Tags::All => return true,
                Tags::None => return false,
            },
            RefKind::Other(_) => return false,
        };
        self.include.as_ref().is_none_or(|re| re.is_match(short))
            && !self.exclude.as_ref().is_some_and(|re| re.is_match(short))
    }
}

/// Compiles every pattern on its own first, so that an error names the bad one,
/// then matches them all at once as a single alternation.
fn union(field: &str, patterns: Patterns) -> Result<Option<Regex>, String> {
    let patterns = match patterns {
        Patterns::None => return Ok(None),
        Patterns::One(p) => vec![p],
        Patterns::Many(ps) if ps.is_empty() => return Ok(None),
        Patterns::Many(ps) => ps,
    };
    for p in &patterns {
        Regex::new(p).map_err(|e| format!("{field}: invalid regex {p:?}: {e}"))?;
    }
    let joined: Vec<String> = patterns.iter().map(|p| format!("(?:{p})")).collect();
    Regex::new(&joined.join("|"))
        .map(Some)
        .map_err(|e| format!("{field}: {e}"))
}

struct RegexFilter;

impl Guest for RegexFilter {
    fn info() -> PluginInfo {
        mirror_plugin_sdk::plugin_info!()
    }

    fn validate_config(config: String) -> Result<(), String> {
        Compiled::new(&config).map(drop)
    }

    fn filter(
        _ctx: MirrorContext,
        config: String,
        refs: CandidateRefs,
    ) -> Result<Vec<String>, String> {
        let compiled = Compiled::new(&config)?;
        Ok(refs
            .iter()
            .filter(|r| compiled.keeps(r.name))
            .map(|r| r.name.to_string())
            .collect())
    }
}

mirror_plugin_sdk::branch_filter::export!(RegexFilter);
