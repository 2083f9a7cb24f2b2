//! {{name}}: a conflict strategy. A diverged ref under one of the configured
//! prefixes takes the remote tip; any other waits for an operator.
//!
//! Config: `{"take_remote": ["feature/"]}`; the default takes none.

use mirror_plugin_sdk::conflict_strategy::Guest;
use mirror_plugin_sdk::refs::{RefKind, classify};
use mirror_plugin_sdk::types::{Decision, DivergedRef, MirrorContext, PluginInfo};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    take_remote: Vec<String>,
}

struct Plugin;

impl Guest for Plugin {
    fn info() -> PluginInfo {
        mirror_plugin_sdk::plugin_info!()
    }

    fn validate_config(config: String) -> Result<(), String> {
        mirror_plugin_sdk::config::parse::<Config>(&config).map(drop)
    }

    fn decide(_ctx: MirrorContext, config: String, diverged: DivergedRef) -> Result<Decision, String> {
        let config: Config = mirror_plugin_sdk::config::parse(&config)?;
        let short = match classify(&diverged.name) {
            RefKind::Branch(s) | RefKind::Tag(s) | RefKind::Other(s) => s,
        };
        if config.take_remote.iter().any(|p| short.starts_with(p.as_str())) {
            return Ok(Decision::TakeRemote);
        }
        Ok(Decision::DeferManual(format!(
            "{} diverged ({} local, {} remote commits apart)",
            diverged.name, diverged.ahead, diverged.behind
        )))
    }
}

mirror_plugin_sdk::conflict_strategy::export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use mirror_plugin_sdk::types::Direction;

    fn diverged(name: &str) -> DivergedRef {
        DivergedRef {
            name: name.into(),
            local_oid: "1".repeat(40),
            remote_oid: "2".repeat(40),
            merge_base: None,
            ahead: 1,
            behind: 2,
            protected: false,
            direction: Direction::Pull,
        }
    }

    fn ctx() -> MirrorContext {
        MirrorContext {
            mirror_id: "1".into(),
            project_id: "group/project".into(),
            direction: Direction::Pull,
            remote_url: "https://example.com/group/project.git".into(),
        }
    }

    #[test]
    fn feature_branches_take_the_remote_tip_others_wait() {
        let config = r#"{"take_remote": ["feature/"]}"#;
        let take = Plugin::decide(ctx(), config.into(), diverged("refs/heads/feature/x")).unwrap();
        assert!(matches!(take, Decision::TakeRemote));
        let wait = Plugin::decide(ctx(), config.into(), diverged("refs/heads/main")).unwrap();
        assert!(matches!(wait, Decision::DeferManual(_)));
    }
}
