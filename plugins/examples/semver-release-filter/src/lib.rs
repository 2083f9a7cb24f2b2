//! Example branch filter: keep semver tags (`v1.2.3`, `2.0.0-rc.1+build.5`) and
//! release branches, drop everything else.
//!
//! Config: `{"release_prefixes": ["release/", "release-"], "prereleases": true}`
//! (both optional, these are the defaults).

use mirror_plugin_sdk::branch_filter::Guest;
use mirror_plugin_sdk::refs::{RefKind, classify};
use mirror_plugin_sdk::types::{CandidateRefs, MirrorContext, PluginInfo};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    release_prefixes: Vec<String>,
    prereleases: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            release_prefixes: vec!["release/".into(), "release-".into()],
            prereleases: true,
        }
    }
}

struct SemverRelease;

impl Guest for SemverRelease {
    fn info() -> PluginInfo {
        mirror_plugin_sdk::plugin_info!()
    }

    fn validate_config(config: String) -> Result<(), String> {
        mirror_plugin_sdk::config::parse::<Config>(&config).map(drop)
    }

    fn filter(
        _: MirrorContext,
        config: String,
        refs: CandidateRefs,
    ) -> Result<Vec<String>, String> {
        let config: Config = mirror_plugin_sdk::config::parse(&config)?;
        let keep = |name: &str| match classify(name) {
            RefKind::Branch(b) => config
                .release_prefixes
                .iter()
                .any(|p| b.starts_with(p.as_str())),
            RefKind::Tag(t) => semver(t).is_some_and(|pre| config.prereleases || !pre),
            RefKind::Other(_) => false,
        };
        Ok(refs
            .iter()
            .map(|r| r.name)
            .filter(|n| keep(n))
            .map(String::from)
            .collect())
    }
}

/// `Some(is_prerelease)` when `tag` is a semantic version, with an optional `v`.
fn semver(tag: &str) -> Option<bool> {
    let version = tag.strip_prefix('v').unwrap_or(tag);
    let (version, build) = version
        .split_once('+')
        .map_or((version, None), |(v, b)| (v, Some(b)));
    let (core, pre) = version
        .split_once('-')
        .map_or((version, None), |(c, p)| (c, Some(p)));
    let numbers: Vec<&str> = core.split('.').collect();
    let number = |n: &&str| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (*n == "0" || !n.starts_with('0'))
    };
    let ident =
        |i: &str| !i.is_empty() && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let idents_ok = |s: Option<&str>| s.is_none_or(|s| s.split('.').all(ident));
    (numbers.len() == 3 && numbers.iter().all(number) && idents_ok(pre) && idents_ok(build))
        .then_some(pre.is_some())
}

mirror_plugin_sdk::branch_filter::export!(SemverRelease);

#[cfg(test)]
mod tests {
    use super::semver;

    #[test]
    fn semver_tags_and_their_prereleases() {
        assert_eq!(semver("v1.2.3"), Some(false));
        assert_eq!(semver("10.0.0-rc.1+build.7"), Some(true));
        for not in ["1.2", "v1.02.3", "1.2.3-", "1.2.3.4", "nightly", "v1.2.x"] {
            assert_eq!(semver(not), None, "{not}");
        }
    }
}
