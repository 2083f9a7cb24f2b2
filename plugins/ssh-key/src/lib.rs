//! `ssh-key`: the stored private key (and its passphrase), handed to the SSH transport
//! from memory. The username is, in order: the one stored with the key, the one in the
//! URL (`git@host:path`), `username` from the config, `git`.

use mirror_plugin_sdk::auth::{require_kind, secret_kind};
use mirror_plugin_sdk::auth_provider::Guest;
use mirror_plugin_sdk::types::{
    AuthRequest, Credential, CredentialKinds, MirrorContext, PluginInfo, SshKeyCredential,
    StoredSecret,
};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    username: Option<String>,
}

struct SshKey;

impl Guest for SshKey {
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
        require_kind(request.allowed, CredentialKinds::SSH_KEY)?;
        match request.secret {
            Some(StoredSecret::SshKey(key)) => Ok(Credential::SshKey(SshKeyCredential {
                username: key
                    .username
                    .or(request.username_from_url)
                    .or(config.username)
                    .unwrap_or_else(|| "git".to_string()),
                private_key: key.private_key,
                passphrase: key.passphrase,
            })),
            other => Err(format!(
                "ssh-key auth needs a stored SSH key, the mirror has {}",
                secret_kind(&other)
            )),
        }
    }
}

mirror_plugin_sdk::auth_provider::export!(SshKey);
