//! Helpers for auth providers.

use crate::types::{CredentialKinds, StoredSecret};

/// Fails unless the transport accepts `kind` for this attempt; the message says
/// what it accepts instead, which is what an operator needs to fix the mirror.
pub fn require_kind(allowed: CredentialKinds, kind: CredentialKinds) -> Result<(), String> {
    if allowed.contains(kind) {
        return Ok(());
    }
    Err(format!(
        "the remote asks for {}, this provider supplies {}",
        describe(allowed),
        describe(kind)
    ))
}

/// Names a stored secret's kind without showing any of it.
pub fn secret_kind(secret: &Option<StoredSecret>) -> &'static str {
    match secret {
        None => "no secret",
        Some(StoredSecret::Password(_)) => "a password",
        Some(StoredSecret::Token(_)) => "a token",
        Some(StoredSecret::SshKey(_)) => "an SSH key",
    }
}

fn describe(kinds: CredentialKinds) -> &'static str {
    match (
        kinds.contains(CredentialKinds::USER_PASS),
        kinds.contains(CredentialKinds::SSH_KEY),
    ) {
        (true, true) => "a username and password or an SSH key",
        (true, false) => "a username and password",
        (false, true) => "an SSH key",
        (false, false) => "no credential kind this host knows",
    }
}

/// The host part of a remote URL (`https://host:443/x`, `ssh://git@host/x`,
/// `git@host:x`), lower-cased, without port or userinfo.
pub fn url_host(url: &str) -> Option<String> {
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest,
        // scp-like syntax: [user@]host:path
        None => url.split_once(':')?.0,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_host_handles_the_usual_shapes() {
        assert_eq!(
            url_host("https://GitHub.com/a/b.git").as_deref(),
            Some("github.com")
        );
        assert_eq!(
            url_host("ssh://git@gitlab.com:22/a/b").as_deref(),
            Some("gitlab.com")
        );
        assert_eq!(
            url_host("git@bitbucket.org:a/b.git").as_deref(),
            Some("bitbucket.org")
        );
        assert_eq!(url_host("http://[::1]:8080/x").as_deref(), Some("::1"));
        assert_eq!(url_host("nonsense"), None);
    }

    #[test]
    fn require_kind_explains() {
        let err = require_kind(CredentialKinds::SSH_KEY, CredentialKinds::USER_PASS).unwrap_err();
        assert!(err.contains("asks for an SSH key"), "{err}");
        assert!(require_kind(CredentialKinds::all(), CredentialKinds::SSH_KEY).is_ok());
    }
}
