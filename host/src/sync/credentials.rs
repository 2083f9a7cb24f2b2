//! The git2 credential callback: the mirror's sealed secret, opened for this
//! request only, goes through the mirror's auth-provider plugin, and what the
//! plugin returns goes to the transport. Every failure fails closed.

use std::cell::Cell;

use git2::{Cred, CredentialType};

use super::{Run, SyncError, remote};
use crate::plugins::{
    AuthRequest, Credential, CredentialKinds, SshKeySecret, StoredSecret, TokenSecret, UserPass,
};
use crate::secrets::Secret;
use crate::store::{self, AuthMethod};

/// libgit2 asks again after a rejected credential; one answer per kind is all a
/// run gives, so wrong credentials fail instead of looping.
#[derive(Debug, Default)]
pub struct Attempts {
    user_pass: Cell<u8>,
    ssh_key: Cell<u8>,
}

impl Run<'_> {
    /// Answers libgit2's request for a credential.
    pub(super) fn credential(
        &self,
        attempts: &Attempts,
        username_from_url: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        let fail = |message: String| Err(git2::Error::from_str(&message));
        if self.mirror.auth_method == AuthMethod::None {
            return fail(
                "the remote asks for credentials, but the mirror has auth_method none".into(),
            );
        }
        if allowed.contains(CredentialType::USERNAME) {
            // SSH asks for the username alone first when the URL has none.
            return Cred::username(username_from_url.unwrap_or("git"));
        }
        let kinds = kinds_of(allowed);
        let counter = if kinds.contains(CredentialKinds::SSH_KEY) {
            &attempts.ssh_key
        } else {
            &attempts.user_pass
        };
        if counter.replace(counter.get() + 1) > 0 {
            return fail("authentication failed: the remote refused the stored credentials".into());
        }
        match self.provide(username_from_url, kinds) {
            Err(message) => fail(message),
            Ok(Credential::UserPass(up)) => Cred::userpass_plaintext(&up.username, &up.password),
            Ok(Credential::SshKey(key)) => Cred::ssh_key_from_memory(
                &key.username,
                None,
                &key.private_key,
                key.passphrase.as_deref(),
            ),
            Ok(Credential::None) => fail("the auth provider returned no credential".into()),
        }
    }

    /// The username and password an HTTP request to the mirror's own
    /// remote (its LFS server) carries, if the mirror has such credentials:
    /// none for `auth_method` none or an SSH key.
    pub(super) fn http_login(&self) -> Result<Option<(String, String)>, SyncError> {
        if matches!(
            self.mirror.auth_method,
            AuthMethod::None | AuthMethod::SshKey
        ) {
            return Ok(None);
        }
        match self.provide(None, CredentialKinds::USER_PASS) {
            Ok(Credential::UserPass(up)) => Ok(Some((up.username, up.password))),
            Ok(_) => Ok(None),
            Err(message) => Err(SyncError::Credentials(message)),
        }
    }

    /// What the mirror's auth provider answers for a credential of `kinds`,
    /// given the mirror's opened secret; no credential at all is an error.
    pub(super) fn provide(
        &self,
        username_from_url: Option<&str>,
        kinds: CredentialKinds,
    ) -> Result<Credential, String> {
        let builtin = match self.mirror.auth_method {
            AuthMethod::None | AuthMethod::Password => "password",
            AuthMethod::Token => "token",
            AuthMethod::SshKey => "ssh-key",
        };
        let (provider, config) = match &self.mirror.auth_provider {
            Some(chosen) => (chosen.as_str(), self.mirror.auth_provider_config.as_str()),
            None => (builtin, ""),
        };
        let secret = self.open_secret()?;
        let request = AuthRequest {
            url: remote::redact(&self.mirror.url),
            username_from_url: username_from_url.map(str::to_string),
            allowed: kinds,
            secret: Some(secret),
        };
        match self
            .engine
            .plugins
            .provide(provider, &self.context(), config, &request)
            .map_err(|e| e.to_string())?
            .value
        {
            Credential::None => Err(format!("auth provider {provider} returned no credential")),
            credential => Ok(credential),
        }
    }

    fn open_secret(&self) -> Result<StoredSecret, String> {
        let id = self.mirror.mirror_id;
        let sealed = self
            .engine
            .store
            .with(|c| store::credentials::sealed(c, id))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!("mirror {id} has no stored credentials (PUT .../credentials)")
            })?;
        let secret = self
            .engine
            .master_key
            .open(id, &sealed)
            .map_err(|e| e.to_string())?;
        Ok(secret.into())
    }
}

fn kinds_of(allowed: CredentialType) -> CredentialKinds {
    let mut kinds = CredentialKinds::empty();
    if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
        kinds |= CredentialKinds::USER_PASS;
    }
    if allowed.intersects(CredentialType::SSH_KEY | CredentialType::SSH_MEMORY) {
        kinds |= CredentialKinds::SSH_KEY;
    }
    kinds
}

/// The secret as an auth-provider plugin receives it.
impl From<Secret> for StoredSecret {
    fn from(secret: Secret) -> Self {
        match secret {
            Secret::Password { username, password } => {
                StoredSecret::Password(UserPass { username, password })
            }
            Secret::Token { token, username } => {
                StoredSecret::Token(TokenSecret { token, username })
            }
            Secret::SshKey {
                private_key,
                passphrase,
                username,
            } => StoredSecret::SshKey(SshKeySecret {
                private_key,
                passphrase,
                username,
            }),
        }
    }
}
