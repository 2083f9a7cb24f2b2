//! SSH host key verification: a mirror talks only to hosts whose key the
//! operator confirmed (`PUT .../ssh-host-keys`, usually after `.../detect`).
//! TLS certificates go through libgit2's own verification unchanged.

use std::cell::RefCell;

use git2::CertificateCheckStatus;
use git2::cert::Cert;

use super::{Run, SyncError};
use crate::store::{self, credentials::HostKey};

/// `SHA256:` fingerprint and type of the key a server offered, if it is SSH.
pub fn offered(cert: &Cert<'_>) -> Option<HostKey> {
    host_key(cert.as_hostkey()?.hostkey()?)
}

/// `SHA256:` fingerprint and type of a host key in the wire format.
fn host_key(raw: &[u8]) -> Option<HostKey> {
    let key = ssh_key::PublicKey::from_bytes(raw).ok()?;
    Some(HostKey {
        fingerprint: key.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
        key_type: Some(key.algorithm().as_str().to_string()),
    })
}

impl Run<'_> {
    /// The certificate check of every connection of a run.
    pub(super) fn check_certificate(
        &self,
        cert: &Cert<'_>,
        host: &str,
    ) -> Result<CertificateCheckStatus, git2::Error> {
        if let Some(x509) = cert.as_x509() {
            if let Some(pem) = &self.mirror.tls_ca_pem
                && super::tls::issued_by(pem, x509.data(), host)
            {
                return Ok(CertificateCheckStatus::CertificateOk);
            }
            // OpenSSL's verdict stands; keep the certificate to say why, should
            // it be a refusal.
            *self.presented.borrow_mut() = Some((x509.data().to_vec(), host.to_string()));
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        }
        let Some(offered) = cert.as_hostkey() else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        match self.trusts_host_key(offered.hostkey().unwrap_or_default(), host) {
            Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
            Err(refusal) => {
                *self.refusal.borrow_mut() = Some(refusal.clone());
                Err(git2::Error::from_str(&refusal))
            }
        }
    }

    /// Whether `raw` (an SSH host key in the wire format) is one the
    /// operator confirmed for this mirror; the refusal, worded for them, if
    /// not. Every SSH connection of a run asks this, libgit2's and ours.
    pub(super) fn trusts_host_key(&self, raw: &[u8], host: &str) -> Result<(), String> {
        let Some(key) = host_key(raw) else {
            return Err(format!(
                "{host} offered an SSH host key this service cannot read"
            ));
        };
        let trusted = self
            .engine
            .store
            .with(|c| store::credentials::host_keys(c, self.mirror.mirror_id))
            .map_err(|e| e.to_string())?;
        if trusted.iter().any(|t| t.fingerprint == key.fingerprint) {
            return Ok(());
        }
        let hint = if trusted.is_empty() {
            "the mirror trusts no host key yet"
        } else {
            "it does not match the mirror's trusted host keys"
        };
        Err(format!(
            "SSH host key {} of {host} refused: {hint}; check it, then confirm it with \
             PUT /api/v1/mirrors/{}/ssh-host-keys (POST .../ssh-host-keys/detect lists what the host offers)",
            key.fingerprint, self.mirror.mirror_id
        ))
    }

    /// Connects only far enough to see the host keys the server offers.
    pub(super) fn detect_host_keys(&self) -> Result<Vec<HostKey>, SyncError> {
        let seen = RefCell::new(Vec::new());
        let mut callbacks = git2::RemoteCallbacks::new();
        callbacks.certificate_check(|cert, _host| {
            if let Some(key) = offered(cert) {
                seen.borrow_mut().push(key);
            }
            // Stop here: detection must not authenticate or transfer anything.
            Err(git2::Error::from_str("host key recorded"))
        });
        let mut remote = self.repo.remote_anonymous(&self.mirror.url)?;
        let result = remote
            .connect_auth(git2::Direction::Fetch, Some(callbacks), None)
            .map(drop);
        let keys = seen.into_inner();
        match (result, keys.is_empty()) {
            (_, false) => Ok(keys),
            (Err(e), true) => Err(self.git_error(e)),
            (Ok(()), true) => Err(SyncError::Git("the remote is not an SSH remote".into())),
        }
    }
}
