//! `password`: the stored username and password, for HTTP Basic auth.

use mirror_plugin_sdk::auth::{require_kind, secret_kind};
use mirror_plugin_sdk::auth_provider::Guest;
use mirror_plugin_sdk::types::{
    AuthRequest, Credential, CredentialKinds, MirrorContext, PluginInfo, StoredSecret,
};

struct Password;

impl Guest for Password {
    fn info() -> PluginInfo {
        mirror_plugin_sdk::plugin_info!()
    }

    fn validate_config(config: String) -> Result<(), String> {
        mirror_plugin_sdk::config::expect_empty(&config)
    }

    fn provide(
        _ctx: MirrorContext,
        config: String,
        request: AuthRequest,
    ) -> Result<Credential, String> {
        mirror_plugin_sdk::config::expect_empty(&config)?;
        require_kind(request.allowed, CredentialKinds::USER_PASS)?;
        match request.secret {
            Some(StoredSecret::Password(user_pass)) => Ok(Credential::UserPass(user_pass)),
            other => Err(format!(
                "password auth needs a stored password, the mirror has {}",
                secret_kind(&other)
            )),
        }
    }
}

mirror_plugin_sdk::auth_provider::export!(Password);
