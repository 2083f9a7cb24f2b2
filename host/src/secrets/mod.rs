//! Credentials at rest: sealed with XChaCha20-Poly1305 under a master key that
//! never enters the database. The key comes from `MIRRORHOST_MASTER_KEY` (64 hex
//! characters) or from `<data-dir>/master.key`, generated on first start with
//! mode 0600. Each sealed secret is bound to its mirror id (associated data), so
//! a ciphertext copied to another row does not open.

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::SealedOwner;

mod admin_token;

pub use admin_token::{AdminToken, TOKEN_FILE, TokenSource};

pub const KEY_FILE: &str = "master.key";
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("master key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("master key must be 64 hex characters (32 bytes)")]
    BadKey,
    #[error("a stored secret does not open with this master key (wrong key, or tampered)")]
    Open,
    #[error("cannot seal the secret")]
    Seal,
}

/// A secret as the operator stored it (and as `PUT .../credentials` takes it).
/// `Debug` never shows the secret parts.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Secret {
    Password {
        username: String,
        password: String,
    },
    Token {
        token: String,
        username: Option<String>,
    },
    SshKey {
        private_key: String,
        passphrase: Option<String>,
        username: Option<String>,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Secret::Password { .. } => "Password",
            Secret::Token { .. } => "Token",
            Secret::SshKey { .. } => "SshKey",
        };
        write!(f, "Secret::{kind}(<redacted>)")
    }
}

/// What may be shown about a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub kind: &'static str,
    pub username: Option<String>,
    pub fingerprint: Option<String>,
}

/// Why a secret cannot be stored; names the field at fault and never quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: &'static str,
    pub message: &'static str,
}

impl Secret {
    pub fn kind(&self) -> &'static str {
        match self {
            Secret::Password { .. } => "password",
            Secret::Token { .. } => "token",
            Secret::SshKey { .. } => "ssh_key",
        }
    }

    /// Checks the secret is usable (non-empty parts; an SSH key that parses and
    /// opens with its passphrase) and returns what may be shown about it.
    pub fn describe(&self) -> Result<Described, Invalid> {
        let invalid = |field, message| Err(Invalid { field, message });
        let (username, fingerprint) = match self {
            Secret::Password { username, password } => {
                if username.is_empty() {
                    return invalid("username", "must not be empty");
                }
                if password.is_empty() {
                    return invalid("password", "must not be empty");
                }
                (Some(username.clone()), None)
            }
            Secret::Token { token, username } => {
                if token.trim().is_empty() {
                    return invalid("token", "must not be empty");
                }
                (username.clone(), None)
            }
            Secret::SshKey {
                private_key,
                passphrase,
                username,
            } => (
                username.clone(),
                Some(ssh_fingerprint(private_key, passphrase.as_deref())?),
            ),
        };
        Ok(Described {
            kind: self.kind(),
            username,
            fingerprint,
        })
    }
}

/// The `SHA256:` fingerprint of an OpenSSH private key, once it is known to open.
fn ssh_fingerprint(private_key: &str, passphrase: Option<&str>) -> Result<String, Invalid> {
    let key = ssh_key::PrivateKey::from_openssh(private_key).map_err(|_| Invalid {
        field: "private_key",
        message: "not an OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY-----)",
    })?;
    if key.is_encrypted() {
        let Some(passphrase) = passphrase else {
            return Err(Invalid {
                field: "passphrase",
                message: "the key is encrypted: a passphrase is required",
            });
        };
        key.decrypt(passphrase).map_err(|_| Invalid {
            field: "passphrase",
            message: "does not open the key",
        })?;
    }
    Ok(key
        .public_key()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string())
}

/// The master key. Only ever in memory (and in its file or environment variable).
#[derive(Clone)]
pub struct MasterKey {
    key: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id {})", self.id())
    }
}

impl MasterKey {
    pub fn from_hex(text: &str) -> Result<Self, SecretsError> {
        let bytes = hex::decode(text.trim()).map_err(|_| SecretsError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretsError::BadKey)?;
        Ok(Self { key })
    }

    pub fn generate() -> Self {
        Self {
            key: rand::random(),
        }
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.key)
    }

    /// A short public identifier of the key (not derived in a way that helps
    /// guess it): which key sealed a row, for rotation.
    pub fn id(&self) -> String {
        let digest = Sha256::digest([b"mirrorhost key id".as_slice(), &self.key].concat());
        hex::encode(&digest[..4])
    }

    /// The key from `MIRRORHOST_MASTER_KEY` if given, else `<data_dir>/master.key`,
    /// created (mode 0600) when missing.
    pub fn load(from_env: Option<&str>, data_dir: &Path) -> Result<Self, SecretsError> {
        if let Some(text) = from_env.filter(|t| !t.trim().is_empty()) {
            return Self::from_hex(text);
        }
        let path = data_dir.join(KEY_FILE);
        let key_error = |source| SecretsError::KeyFile {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_hex(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                crate::fsutil::write_private(&path, key.to_hex().as_bytes()).map_err(key_error)?;
                Ok(key)
            }
            Err(e) => Err(key_error(e)),
        }
    }

    /// Seals `secret` for `mirror_id`.
    pub fn seal(&self, mirror_id: i64, secret: &Secret) -> Result<Vec<u8>, SecretsError> {
        let plaintext = serde_json::to_vec(secret).map_err(|_| SecretsError::Seal)?;
        self.seal_bytes(&mirror_id.to_be_bytes(), &plaintext)
    }

    pub fn open(&self, mirror_id: i64, sealed: &[u8]) -> Result<Secret, SecretsError> {
        let plaintext = self.open_bytes(&mirror_id.to_be_bytes(), sealed)?;
        serde_json::from_slice(&plaintext).map_err(|_| SecretsError::Open)
    }

    /// Seals `plaintext` bound to `aad` (what it belongs to): a random nonce
    /// followed by the ciphertext.
    pub fn seal_bytes(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let cipher = XChaCha20Poly1305::new(&Key::from(self.key));
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce_bytes),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| SecretsError::Seal)?;
        Ok([nonce_bytes.as_slice(), &sealed].concat())
    }

    pub fn open_bytes(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SecretsError> {
        if sealed.len() < NONCE_LEN {
            return Err(SecretsError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| SecretsError::Open)?;
        let cipher = XChaCha20Poly1305::new(&Key::from(self.key));
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| SecretsError::Open)
    }
}

/// What a mirror's proxy credentials are sealed to: the proxy they open.
pub fn proxy_aad(proxy_url: &str) -> Vec<u8> {
    [b"proxy:".as_slice(), proxy_url.as_bytes()].concat()
}

/// What a mirror's TLS client key is sealed to: the certificate it is the
/// key of.
pub fn client_key_aad(certificate_pem: &str) -> Vec<u8> {
    [b"tls-client-key:".as_slice(), certificate_pem.as_bytes()].concat()
}

/// Re-seals every stored secret (credentials, webhook secrets) under `new`, all
/// or nothing, and, when the
/// old key lives in `<data_dir>/master.key`, replaces that file. The new key file
/// is written (0600) before the database changes and renamed over the old one
/// after, so a crash leaves either the old key with old rows or
/// `master.key.new` beside re-sealed rows. Returns how many credentials moved.
pub fn rotate(
    store: &crate::store::Store,
    data_dir: &Path,
    old: &MasterKey,
    new: &MasterKey,
    key_in_file: bool,
) -> Result<usize, RotateError> {
    let path = data_dir.join(KEY_FILE);
    let staged = data_dir.join(format!("{KEY_FILE}.new"));
    if key_in_file {
        let _ = std::fs::remove_file(&staged);
        crate::fsutil::write_private(&staged, new.to_hex().as_bytes()).map_err(|source| {
            SecretsError::KeyFile {
                path: staged.clone(),
                source,
            }
        })?;
    }
    let moved = store.with(|conn| {
        crate::store::reseal_all(conn, &new.id(), |owner, sealed| {
            let aad = match owner {
                SealedOwner::Mirror(id) => id.to_be_bytes().to_vec(),
                SealedOwner::Project(id) => crate::store::webhooks::aad(id),
                SealedOwner::Proxy { proxy_url, .. } => proxy_aad(proxy_url),
                SealedOwner::ClientKey {
                    certificate_pem, ..
                } => client_key_aad(certificate_pem),
            };
            let plaintext = old.open_bytes(&aad, sealed)?;
            Ok::<_, RotateError>(new.seal_bytes(&aad, &plaintext)?)
        })
    })?;
    if key_in_file {
        std::fs::rename(&staged, &path).map_err(|source| SecretsError::KeyFile {
            path: path.clone(),
            source,
        })?;
    }
    Ok(moved)
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Secret {
        Secret::Token {
            token: "ghp_distinctive".into(),
            username: None,
        }
    }

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_mirror() {
        let key = MasterKey::generate();
        let sealed = key.seal(7, &token()).unwrap();
        assert!(!sealed.windows(15).any(|w| w == b"ghp_distinctive"));
        assert_eq!(key.open(7, &sealed).unwrap(), token());
        assert!(matches!(key.open(8, &sealed), Err(SecretsError::Open)));
        assert!(matches!(
            MasterKey::generate().open(7, &sealed),
            Err(SecretsError::Open)
        ));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(key.open(7, &tampered), Err(SecretsError::Open)));
    }

    #[test]
    fn debug_never_shows_secrets() {
        assert_eq!(format!("{:?}", token()), "Secret::Token(<redacted>)");
        let key = MasterKey::generate();
        assert!(!format!("{key:?}").contains(&key.to_hex()));
    }

    #[test]
    fn key_file_is_generated_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = MasterKey::load(None, dir.path()).unwrap();
        let second = MasterKey::load(None, dir.path()).unwrap();
        assert_eq!(first.to_hex(), second.to_hex());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            MasterKey::load(Some("zz"), dir.path()),
            Err(SecretsError::BadKey)
        ));
    }
}
