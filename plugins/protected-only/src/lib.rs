//! `protected-only`: mirror only the project's protected branches.
//!
//! The host marks each candidate `protected` from the project's patterns. With no
//! protected branch configured nothing is mirrored (GitLab would mirror everything;
//! an empty scope is the safe reading). Config: `{"include_tags": false}`; with
//! `true` every tag is kept as well.

use mirror_plugin_sdk::branch_filter::Guest;
use mirror_plugin_sdk::refs::{RefKind, classify};
use mirror_plugin_sdk::types::{CandidateRefs, MirrorContext, PluginInfo};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    include_tags: bool,
}

struct ProtectedOnly;

impl Guest for ProtectedOnly {
    fn info() -> PluginInfo {
        mirror_plugin_sdk::plugin_info!()
    }

    fn validate_config(config: String) -> Result<(), String> {
        mirror_plugin_sdk::config::parse::<Config>(&config).map(drop)
    }

    fn filter(
        _ctx: MirrorContext,
        config: String,
        refs: CandidateRefs,
    ) -> Result<Vec<String>, String> {
        let config: Config = mirror_plugin_sdk::config::parse(&config)?;
        Ok(refs
            .iter()
            .filter(|r| match classify(r.name) {
                RefKind::Branch(_) => r.protected,
                RefKind::Tag(_) => config.include_tags,
                RefKind::Other(_) => false,
            })
            .map(|r| r.name.to_string())
            .collect())
    }
}

mirror_plugin_sdk::branch_filter::export!(ProtectedOnly);
