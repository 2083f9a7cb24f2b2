//! `token`: an access token sent as the HTTP Basic password.
//!
//! Forges ignore or check the username in their own way; the username is, in order:
//! the one stored with the token, `username` from the config, the config's `forges`
//! entry for the remote host, the built-in forge default, `oauth2`.
//! Config: `{"username": "ci-bot", "forges": {"git.example.com": "token"}}`.

use std::collections::BTreeMap;

use mirror_plugin_sdk::auth::{require_kind, secret_kind, url_host};
use mirror_plugin_sdk::auth_provider::Guest;
use mirror_plugin_sdk::types::{
    AuthRequest, Credential, CredentialKinds, MirrorContext, PluginInfo, StoredSecret, UserPass,
};
use serde::Deserialize;

/// What each forge expects beside a token.
const FORGE_USERNAMES: &[(&str, &str)] = &[
    ("github.com", "x-access-token"),
    ("gitlab.com", "oauth2"),
    ("bitbucket.org", "x-token-auth"),
    ("codeberg.org", "token"),
];
const FALLBACK_USERNAME: &str = "oauth2";

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    username: Option<String>,
    forges: BTreeMap<String, String>,
}

impl Config {
    fn username_for(&self, url: &str) -> String {
        if let Some(name) = &self.username {
            return name.clone();
        }
        let host = url_host(url).unwrap_or_default();
        self.forges
            .iter()
            .map(|(h, u)| (h.as_str(), u.as_str()))
            .chain(FORGE_USERNAMES.iter().copied())
            .find(|(h, _)| h.eq_ignore_ascii_case(&host))
            .map_or(FALLBACK_USERNAME, |(_, u)| u)
            .to_string()
    }
}

struct Token;

impl Guest for Token {
    fn info() -> PluginInfo {
        mirror_plugin_sdk::plugin_info!()
    }

    fn validate_config(config: String) -> Result<(), String> {
        mirror_plugin_sdk::config::parse::<Config>(&config).map(drop)
    }

    fn provide(
        _ctx: MirrorContext,
        config: String,
        request: AuthRequest,
    ) -> Result<Credential, String> {
        let config: Config = mirror_plugin_sdk::config::parse(&config)?;
        require_kind(request.allowed, CredentialKinds::USER_PASS)?;
        match request.secret {
            Some(StoredSecret::Token(secret)) => Ok(Credential::UserPass(UserPass {
                username: secret
                    .username
                    .unwrap_or_else(|| config.username_for(&request.url)),
                password: secret.token,
            })),
            other => Err(format!(
                "token auth needs a stored token, the mirror has {}",
                secret_kind(&other)
            )),
        }
    }
}

mirror_plugin_sdk::auth_provider::export!(Token);
