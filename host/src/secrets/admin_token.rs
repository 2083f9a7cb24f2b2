//! The admin token. Only its SHA-256 is kept in memory; a presented token is
//! checked by comparing digests in constant time.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const TOKEN_FILE: &str = "admin-token";

#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Where the token came from, for the start-up log line (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Environment,
    File(PathBuf),
    Generated(PathBuf),
}

impl AdminToken {
    pub fn new(token: &str) -> Self {
        Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// The token from `MIRRORHOST_ADMIN_TOKEN` if given, else the one in
    /// `<data_dir>/admin-token`, else a new random one written there (mode 0600).
    pub fn load(from_env: Option<&str>, data_dir: &Path) -> std::io::Result<(Self, TokenSource)> {
        if let Some(token) = from_env.filter(|t| !t.trim().is_empty()) {
            return Ok((Self::new(token.trim()), TokenSource::Environment));
        }
        let path = data_dir.join(TOKEN_FILE);
        match std::fs::read_to_string(&path) {
            Ok(token) if !token.trim().is_empty() => {
                return Ok((Self::new(token.trim()), TokenSource::File(path)));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let token = hex::encode(rand::random::<[u8; 32]>());
        crate::fsutil::write_private(&path, token.as_bytes())?;
        Ok((Self::new(&token), TokenSource::Generated(path)))
    }

    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digest.ct_eq(&digest).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = AdminToken::load(None, dir.path()).unwrap();
        let path = dir.path().join(TOKEN_FILE);
        assert_eq!(source, TokenSource::Generated(path.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(first.matches(&written));
        let (second, source) = AdminToken::load(None, dir.path()).unwrap();
        assert_eq!(source, TokenSource::File(path));
        assert!(second.matches(&written));
        assert!(!second.matches("wrong"));
    }

    #[test]
    fn environment_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (token, source) = AdminToken::load(Some("s3cret"), dir.path()).unwrap();
        assert_eq!(source, TokenSource::Environment);
        assert!(token.matches("s3cret"));
        assert!(!dir.path().join(TOKEN_FILE).exists());
    }
}
