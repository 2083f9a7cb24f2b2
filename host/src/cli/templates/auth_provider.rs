//! {{name}}: an auth provider. Sends the mirror's stored token as the HTTP
//! Basic password, with the configured username.
//!
//! Config: `{"username": "ci-bot"}`; the default is `oauth2`.

use mirror_plugin_sdk::auth_provider::Guest;
use mirror_plugin_sdk::types::{
    AuthRequest, Credential, CredentialKinds, MirrorContext, PluginInfo, StoredSecret, UserPass,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    username: String,
}

impl Default for Config {
    fn default() -> Self {
        Self { username: "oauth2".into() }
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

    fn provide(_ctx: MirrorContext, config: String, request: AuthRequest) -> Result<Credential, String> {
        let config: Config = mirror_plugin_sdk::config::parse(&config)?;
        if !request.allowed.contains(CredentialKinds::USER_PASS) {
            return Err("the remote does not accept a username and password".into());
        }
        match request.secret {
            Some(StoredSecret::Token(secret)) => Ok(Credential::UserPass(UserPass {
                username: secret.username.unwrap_or(config.username),
                password: secret.token,
            })),
            _ => Err("this provider needs a stored token".into()),
        }
    }
}

mirror_plugin_sdk::auth_provider::export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use mirror_plugin_sdk::types::{Direction, TokenSecret};

    #[test]
    fn the_token_is_the_password() {
        let ctx = MirrorContext {
            mirror_id: "1".into(),
            project_id: "group/project".into(),
            direction: Direction::Pull,
            remote_url: "https://example.com/group/project.git".into(),
        };
        let request = AuthRequest {
            url: ctx.remote_url.clone(),
            username_from_url: None,
            allowed: CredentialKinds::USER_PASS,
            secret: Some(StoredSecret::Token(TokenSecret { token: "t0k3n".into(), username: None })),
        };
        match Plugin::provide(ctx, r#"{"username": "bot"}"#.into(), request).unwrap() {
            Credential::UserPass(up) => assert_eq!((up.username.as_str(), up.password.as_str()), ("bot", "t0k3n")),
            _ => panic!("expected a username and password"),
        }
    }
}
