//! Secrets: a mirror's credential and trusted SSH host keys, a project's
//! webhook secret. A secret goes in once, sealed, and never comes back out.

use super::{App, ServiceError, check_project_id};
use crate::secrets::Secret;
use crate::store::credentials::{self, CredentialMeta, HostKey, SealedCredential};

impl App {
    /// Seals and stores (or replaces) the mirror's credential; returns what
    /// may be shown of it.
    pub fn set_credential(&self, id: i64, secret: &Secret) -> Result<CredentialMeta, ServiceError> {
        let mirror = self.mirror(id)?;
        if mirror.auth_method.as_str() != secret.kind() {
            return Err(ServiceError::invalid(
                "type",
                format!(
                    "the mirror's auth_method is {}; PATCH it to {} first",
                    mirror.auth_method,
                    secret.kind()
                ),
            ));
        }
        let described = secret
            .describe()
            .map_err(|e| ServiceError::invalid(e.field, e.message))?;
        let sealed = self
            .master_key
            .seal(id, secret)
            .map_err(ServiceError::internal)?;
        let credential = SealedCredential {
            kind: described.kind,
            username: described.username,
            fingerprint: described.fingerprint,
            key_id: self.master_key.id(),
            sealed,
        };
        let meta = self.store.with(|c| credentials::put(c, id, &credential))?;
        tracing::info!(mirror_id = id, kind = meta.kind, "credentials stored");
        Ok(meta)
    }

    pub fn credential(&self, id: i64) -> Result<CredentialMeta, ServiceError> {
        self.mirror(id)?;
        self.store
            .with(|c| credentials::meta(c, id))?
            .ok_or_else(|| ServiceError::NotFound(format!("mirror {id} has no credentials")))
    }

    pub fn delete_credential(&self, id: i64) -> Result<(), ServiceError> {
        self.mirror(id)?;
        Ok(self.store.with(|c| credentials::delete(c, id))?)
    }

    pub fn host_keys(&self, id: i64) -> Result<Vec<HostKey>, ServiceError> {
        self.mirror(id)?;
        Ok(self.store.with(|c| credentials::host_keys(c, id))?)
    }

    /// Replaces the host keys the mirror trusts.
    pub fn set_host_keys(&self, id: i64, keys: &[HostKey]) -> Result<Vec<HostKey>, ServiceError> {
        for (i, key) in keys.iter().enumerate() {
            let digest = key.fingerprint.strip_prefix("SHA256:").unwrap_or_default();
            let well_formed = digest.len() == 43
                && digest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/');
            if !well_formed {
                return Err(ServiceError::invalid(
                    format!("host_keys[{i}].fingerprint"),
                    "expected SHA256:<43 base64 characters>, as ssh-keygen -lf prints it",
                ));
            }
        }
        self.mirror(id)?;
        self.store
            .with(|c| credentials::set_host_keys(c, id, keys))?;
        self.host_keys(id)
    }

    /// The host keys the mirror's remote offers, for an operator to check and
    /// confirm; nothing is stored.
    pub fn detect_host_keys(&self, id: i64) -> Result<Vec<HostKey>, ServiceError> {
        let (mirror, project) = self.mirror_with_project(id)?;
        Ok(self.engine().detect_host_keys(&mirror, &project)?)
    }

    /// Seals a project's webhook secret (GitHub's secret, GitLab's token) under
    /// the master key, bound to the project, and stores it.
    pub fn set_webhook_secret(&self, project_id: &str, secret: &str) -> Result<(), ServiceError> {
        check_project_id(project_id)?;
        if secret.len() < 8 {
            return Err(ServiceError::invalid("secret", "at least 8 characters"));
        }
        let aad = crate::store::webhooks::aad(project_id);
        let sealed = self
            .master_key
            .seal_bytes(&aad, secret.as_bytes())
            .map_err(ServiceError::internal)?;
        let key_id = self.master_key.id();
        self.store
            .with(|c| crate::store::webhooks::set_secret(c, project_id, &sealed, &key_id))?;
        Ok(())
    }
}
