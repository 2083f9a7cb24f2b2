//! `git-lfs-authenticate` over SSH, as git-lfs asks an SSH remote for its
//! LFS server: `git-lfs-authenticate <path> <operation>` on an exec channel,
//! answered with JSON (`href`, `header`: what the batch API wants). The
//! connection is the run's own (`sockets::connect`, so a cancel ends it),
//! the host key one the operator confirmed, the key the mirror's.

use std::collections::HashMap;
use std::io::Read;

use serde::Deserialize;

use super::batch::Operation;
use crate::plugins::{Credential, CredentialKinds};
use crate::store::AuthMethod;
use crate::sync::{Run, sockets};

/// What the SSH server answered.
#[derive(Debug, Default, Deserialize)]
pub struct Authenticated {
    /// The LFS server; absent: the one derived from the remote URL.
    #[serde(default)]
    pub href: Option<String>,
    /// Headers for the batch requests (a token, usually).
    #[serde(default)]
    pub header: HashMap<String, String>,
}

/// The most of an answer read: it is a URL and a header or two.
const MAX_ANSWER_BYTES: u64 = 64 << 10;

/// Where an SSH remote is: user, host, port, path as git-lfs names it
/// (no leading slash).
fn target(url: &str) -> Option<(Option<String>, String, u16, String)> {
    if let Some(rest) = url.strip_prefix("ssh://") {
        let parsed = url::Url::parse(&format!("ssh://{rest}")).ok()?;
        let user = (!parsed.username().is_empty()).then(|| parsed.username().to_string());
        let host = parsed.host_str()?.trim_matches(['[', ']']).to_string();
        let path = parsed.path().trim_start_matches('/').to_string();
        return Some((user, host, parsed.port().unwrap_or(22), path));
    }
    if url.contains("://") || url.starts_with('/') {
        return None;
    }
    let (authority, path) = url.split_once(':')?;
    let (user, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user.to_string()), host.to_string()),
        None => (None, authority.to_string()),
    };
    Some((user, host, 22, path.trim_start_matches('/').to_string()))
}

impl Run<'_> {
    /// Asks the mirror's SSH remote for its LFS server. `None` when the
    /// remote is not SSH or the mirror has no SSH key; an error when the
    /// server cannot be reached, is not trusted, or refuses (git-lfs then
    /// falls back to the derived endpoint, and so does the caller).
    pub(super) fn lfs_authenticate(
        &self,
        operation: Operation,
    ) -> Result<Option<Authenticated>, String> {
        let Some((user, host, port, path)) = target(&self.mirror.url) else {
            return Ok(None);
        };
        if self.mirror.auth_method != AuthMethod::SshKey {
            return Ok(None);
        }
        let Credential::SshKey(key) = self.provide(user.as_deref(), CredentialKinds::SSH_KEY)?
        else {
            return Ok(None);
        };
        let timeouts = self.engine.timeouts;
        let tcp = sockets::connect(
            &host,
            &port.to_string(),
            Some(timeouts.connect),
            Some(timeouts.stall),
        )?;
        let failed = |e: ssh2::Error| format!("git-lfs-authenticate on {host}: {}", e.message());
        let mut session = ssh2::Session::new().map_err(failed)?;
        session.set_tcp_stream(tcp);
        session.set_timeout(u32::try_from(timeouts.stall.as_millis()).unwrap_or(u32::MAX));
        session.handshake().map_err(failed)?;
        let (raw, _) = session
            .host_key()
            .ok_or_else(|| format!("{host} offered no SSH host key"))?;
        self.trusts_host_key(raw, &host)?;
        session
            .userauth_pubkey_memory(
                &key.username,
                None,
                &key.private_key,
                key.passphrase.as_deref(),
            )
            .map_err(failed)?;
        let mut channel = session.channel_session().map_err(failed)?;
        let verb = match operation {
            Operation::Download => "download",
            Operation::Upload => "upload",
        };
        channel
            .exec(&format!("git-lfs-authenticate {} {verb}", quoted(&path)))
            .map_err(failed)?;
        let mut answer = Vec::new();
        (&mut channel)
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut answer)
            .map_err(|e| format!("git-lfs-authenticate on {host}: {e}"))?;
        channel.wait_close().map_err(failed)?;
        match channel.exit_status().map_err(failed)? {
            0 => serde_json::from_slice(&answer)
                .map(Some)
                .map_err(|e| format!("git-lfs-authenticate on {host} answered no JSON: {e}")),
            status => Err(format!(
                "git-lfs-authenticate on {host} exited with {status}"
            )),
        }
    }
}

/// `path` as one word for the remote shell (git quotes its commands' paths
/// the same way).
fn quoted(path: &str) -> String {
    format!("'{}'", path.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_remotes_are_read_as_git_lfs_reads_them() {
        assert_eq!(
            target("git@example.com:org/repo.git"),
            Some((
                Some("git".into()),
                "example.com".into(),
                22,
                "org/repo.git".into()
            ))
        );
        assert_eq!(
            target("ssh://git@example.com:2222/org/repo.git"),
            Some((
                Some("git".into()),
                "example.com".into(),
                2222,
                "org/repo.git".into()
            ))
        );
        assert_eq!(target("https://example.com/org/repo.git"), None);
        assert_eq!(target("/srv/repo.git"), None);
        assert_eq!(quoted("it's/repo.git"), "'it'\\''s/repo.git'");
    }
}
