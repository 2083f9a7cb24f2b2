//! {{name}}: a branch filter. Keeps the branches and tags whose short name
//! starts with one of the configured prefixes.
//!
//! Config: `{"prefixes": ["main", "release/"]}`; the default keeps `main`.

use mirror_plugin_sdk::branch_filter::Guest;
use mirror_plugin_sdk::refs::{RefKind, classify};
use mirror_plugin_sdk::types::{CandidateRefs, MirrorContext, PluginInfo};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    prefixes: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self { prefixes: vec!["main".into()] }
    }
}

struct Plugin;

impl Guest for Plugin {
    fn info() -> PluginInfo {
        mirror_plugin_sdk::plugin_info!()
    }

    fn validate_config(config: String) -> Result<(), String> {
        mirror_plugin_sdk::config::parse::<Config>(&config).map(drop)
    }

    fn filter(_ctx: MirrorContext, config: String, refs: CandidateRefs) -> Result<Vec<String>, String> {
        let config: Config = mirror_plugin_sdk::config::parse(&config)?;
        let keep = |name: &str| match classify(name) {
            RefKind::Branch(short) | RefKind::Tag(short) => {
                config.prefixes.iter().any(|p| short.starts_with(p.as_str()))
            }
            RefKind::Other(_) => false,
        };
        Ok(refs.iter().map(|r| r.name).filter(|n| keep(n)).map(String::from).collect())
    }
}

mirror_plugin_sdk::branch_filter::export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use mirror_plugin_sdk::types::Direction;

    fn ctx() -> MirrorContext {
        MirrorContext {
            mirror_id: "1".into(),
            project_id: "group/project".into(),
            direction: Direction::Pull,
            remote_url: "https://example.com/group/project.git".into(),
        }
    }

    #[test]
    fn keeps_the_configured_prefixes() {
        let oid = "0".repeat(40);
        let refs = CandidateRefs {
            names: "refs/heads/main\nrefs/heads/dev\nrefs/tags/v1.0".into(),
            oids: [oid.as_str(); 3].join("\n"),
            protected: vec![true, false, false],
        };
        let kept = Plugin::filter(ctx(), r#"{"prefixes": ["main", "v"]}"#.into(), refs).unwrap();
        assert_eq!(kept, ["refs/heads/main", "refs/tags/v1.0"]);
        assert!(Plugin::validate_config(r#"{"prefix": "main"}"#.into()).is_err());
    }
}
