//! Where a remote keeps its LFS objects, as git-lfs works it out: the
//! remote URL with `.git/info/lfs` appended (an SSH remote's host over
//! https), or, for a pull, `lfs.url` from the repository's `.lfsconfig`. A
//! local remote (a path or file://) keeps them in its `lfs/objects`, read
//! directly as git-lfs's standalone file transfer does.

use std::path::{Path, PathBuf};

use git2::Oid;

use crate::sync::git_cli;
use crate::sync::remote::{self, Policy};

/// A remote's LFS store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A batch API: `<url>/objects/batch`.
    Http(url::Url),
    /// The `lfs/objects` directory of a repository on this machine.
    Local(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot derive an LFS endpoint from the remote URL: {0}")]
    Underivable(String),
    #[error(
        "the LFS endpoint {url} (from .lfsconfig's lfs.url or git-lfs-authenticate) is refused: {why}"
    )]
    Refused { url: String, why: String },
}

impl Endpoint {
    /// The endpoint git-lfs derives from `remote_url` (checked by the service
    /// when the mirror was created).
    pub fn of_remote(remote_url: &str) -> Result<Self, EndpointError> {
        let underivable = || EndpointError::Underivable(remote::redact(remote_url));
        if let Some(path) = local_path(remote_url) {
            return Ok(Endpoint::Local(lfs_dir(&path)));
        }
        // Only `scheme://` is a URL: `host:path` is scp-like, as git reads it.
        let with_scheme = remote_url.contains("://");
        let (scheme, host, path) = match url::Url::parse(remote_url).ok().filter(|_| with_scheme) {
            Some(url) => {
                let scheme = match url.scheme() {
                    "http" => "http",
                    // git-lfs asks an SSH host's https side (its
                    // `git-lfs-authenticate` exchange is not spoken here).
                    "https" | "ssh" | "git" => "https",
                    _ => return Err(underivable()),
                };
                let host = match (url.scheme(), url.host_str(), url.port()) {
                    ("http" | "https", Some(host), Some(port)) => format!("{host}:{port}"),
                    (_, Some(host), _) => host.to_string(),
                    (_, None, _) => return Err(underivable()),
                };
                (scheme, host, url.path().to_string())
            }
            // `[user@]host:path`
            None => {
                let (authority, path) = remote_url.split_once(':').ok_or_else(underivable)?;
                let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                (
                    "https",
                    host.to_string(),
                    format!("/{}", path.trim_start_matches('/')),
                )
            }
        };
        let mut path = path.trim_end_matches('/').to_string();
        if !path.ends_with(".git") {
            path.push_str(".git");
        }
        url::Url::parse(&format!("{scheme}://{host}{path}/info/lfs"))
            .map(Endpoint::Http)
            .map_err(|_| underivable())
    }

    /// The `lfs.url` of the `.lfsconfig` at `commit`, if it names one; the
    /// policy on remotes applies to it as to the mirror's own URL.
    pub fn configured(
        repo: &Path,
        commit: Oid,
        policy: Policy,
    ) -> Result<Option<Self>, EndpointError> {
        // `--blob` reads the file from the commit; git follows its includes
        // even there unless told not to (a file on this machine is no
        // business of the upstream's).
        let out = git_cli::in_repo(repo)
            .args(["config", "--no-includes", "--blob"])
            .arg(format!("{commit}:.lfsconfig"))
            .args(["--get", "lfs.url"])
            .output();
        let Some(url) = out
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        Self::given(&url, policy).map(Some)
    }

    /// An endpoint a server named (`lfs.url`, or an SSH remote's
    /// `git-lfs-authenticate`): an http(s) URL the policy on remotes lets
    /// through.
    pub fn given(url: &str, policy: Policy) -> Result<Self, EndpointError> {
        let refused = |why: String| EndpointError::Refused {
            url: remote::redact(url),
            why,
        };
        remote::parse(url, policy).map_err(|e| refused(e.to_string()))?;
        match url::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(Endpoint::Http(parsed)),
            _ => Err(refused("an LFS endpoint is an http(s) URL".into())),
        }
    }

    /// Whether the endpoint is on the same scheme, host and port as
    /// `remote_url`: only then does it get the mirror's credentials.
    pub fn shares_origin_with(&self, remote_url: &str) -> bool {
        match (self, Endpoint::of_remote(remote_url)) {
            (Endpoint::Http(ours), Ok(Endpoint::Http(derived))) => {
                ours.origin() == derived.origin()
            }
            _ => false,
        }
    }
}

/// The path of a local remote.
fn local_path(url: &str) -> Option<PathBuf> {
    if url.starts_with('/') || url.starts_with('.') {
        return Some(PathBuf::from(url));
    }
    let parsed = url::Url::parse(url).ok()?;
    (parsed.scheme() == "file")
        .then(|| parsed.to_file_path().ok())
        .flatten()
}

/// A local repository's LFS directory: `lfs/` of a bare one, `.git/lfs/` of
/// one with a work tree.
fn lfs_dir(repo: &Path) -> PathBuf {
    let worktree = repo.join(".git");
    match worktree.is_dir() {
        true => worktree.join("lfs"),
        false => repo.join("lfs"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn derived(remote: &str) -> String {
        match Endpoint::of_remote(remote).unwrap() {
            Endpoint::Http(url) => url.to_string(),
            Endpoint::Local(path) => path.display().to_string(),
        }
    }

    /// git-lfs's own cases (`lfshttp/endpoint_finder_test.go`): `.git`
    /// appended once, an SSH remote's host asked over https without its port.
    #[test]
    fn endpoints_are_derived_as_git_lfs_derives_them() {
        for (remote, endpoint) in [
            (
                "https://example.com/org/repo.git",
                "https://example.com/org/repo.git/info/lfs",
            ),
            (
                "https://example.com/org/repo",
                "https://example.com/org/repo.git/info/lfs",
            ),
            (
                "https://example.com/org/repo/",
                "https://example.com/org/repo.git/info/lfs",
            ),
            (
                "http://127.0.0.1:8080/org/repo.git",
                "http://127.0.0.1:8080/org/repo.git/info/lfs",
            ),
            (
                "ssh://git@example.com:2222/org/repo.git",
                "https://example.com/org/repo.git/info/lfs",
            ),
            (
                "git@example.com:org/repo.git",
                "https://example.com/org/repo.git/info/lfs",
            ),
            (
                "example.com:org/repo",
                "https://example.com/org/repo.git/info/lfs",
            ),
        ] {
            assert_eq!(derived(remote), endpoint, "{remote}");
        }
        assert_eq!(derived("/srv/git/repo.git"), "/srv/git/repo.git/lfs");
        assert_eq!(derived("file:///srv/git/repo.git"), "/srv/git/repo.git/lfs");
    }

    /// `lfs.url` is read from the commit's `.lfsconfig` (no includes) and
    /// must pass the same policy as a mirror's URL.
    #[test]
    fn lfs_url_is_read_from_the_commit_and_checked_by_the_policy() {
        use crate::sync::testing::git;
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("w");
        git(dir.path(), &["init", "-q", "w"]);
        let commit_with = |config: &str| {
            std::fs::write(work.join(".lfsconfig"), config).unwrap();
            git(&work, &["add", "."]);
            git(&work, &["commit", "-q", "-m", "config"]);
            Oid::from_str(&git(&work, &["rev-parse", "HEAD"])).unwrap()
        };
        let open = Policy {
            allow_local: true,
            allow_http: true,
        };
        let strict = Policy::default();
        let public = commit_with("[lfs]\n\turl = https://lfs.example.com/org/repo\n");
        let found = Endpoint::configured(&work, public, strict).unwrap();
        assert_eq!(
            found,
            Some(Endpoint::Http(
                url::Url::parse("https://lfs.example.com/org/repo").unwrap()
            ))
        );
        let internal = commit_with("[lfs]\n\turl = https://169.254.169.254/latest\n");
        assert!(matches!(
            Endpoint::configured(&work, internal, strict),
            Err(EndpointError::Refused { .. })
        ));
        assert!(
            Endpoint::configured(&work, internal, open)
                .unwrap()
                .is_some()
        );
        let plain = commit_with("[lfs]\n\turl = http://lfs.example.com/x\n");
        assert!(Endpoint::configured(&work, plain, strict).is_err());
        let local = commit_with("[lfs]\n\turl = file:///etc\n");
        assert!(
            Endpoint::configured(&work, local, open).is_err(),
            "an endpoint is http(s)"
        );
        std::fs::write(
            dir.path().join("elsewhere"),
            "[lfs]\n\turl = https://included.example.com/x\n",
        )
        .unwrap();
        let include = format!(
            "[include]\n\tpath = {}\n",
            dir.path().join("elsewhere").display()
        );
        let including = commit_with(&include);
        assert_eq!(Endpoint::configured(&work, including, open).unwrap(), None);
        std::fs::remove_file(work.join(".lfsconfig")).unwrap();
        git(&work, &["commit", "-qam", "none"]);
        let none = Oid::from_str(&git(&work, &["rev-parse", "HEAD"])).unwrap();
        assert_eq!(Endpoint::configured(&work, none, open).unwrap(), None);
    }

    #[test]
    fn credentials_go_only_to_the_remote_s_own_origin() {
        let at = |u: &str| Endpoint::Http(url::Url::parse(u).unwrap());
        let remote = "https://example.com/org/repo.git";
        assert!(at("https://example.com/other/lfs").shares_origin_with(remote));
        assert!(!at("https://lfs.example.com/org/repo").shares_origin_with(remote));
        assert!(!at("http://example.com/org/repo").shares_origin_with(remote));
        assert!(!at("https://example.com:8443/x").shares_origin_with(remote));
    }
}
