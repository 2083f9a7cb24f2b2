//! Remote URLs: what is accepted, which host a URL talks to (for per-host caps),
//! and how a URL is shown (never with credentials).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a remote URL is refused. The message is shown to the operator as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a Git remote URL: {0}")]
    Malformed(String),
    #[error("scheme {0:?} is not supported; use https, http, ssh, git or scp-like user@host:path")]
    Scheme(String),
    #[error(
        "credentials in the URL are not accepted; store them with PUT /api/v1/mirrors/{{id}}/credentials"
    )]
    Credentials,
    #[error("{0} remotes are refused; set MIRRORHOST_ALLOW_LOCAL_REMOTES=true to allow them")]
    Local(&'static str),
    #[error(
        "plain http carries code and credentials unprotected; use https, or set \
         MIRRORHOST_ALLOW_HTTP_REMOTES=true to allow it"
    )]
    InsecureHttp,
}

/// Which remotes the operator lets through besides the safe default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// file://, paths, loopback and private-range hosts.
    pub allow_local: bool,
    /// http:// (and git://, which is just as unprotected).
    pub allow_http: bool,
}

/// A remote URL that passed the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    pub url: String,
    /// Lower-cased host (or `local` for file paths): the key of per-host caps.
    pub host: String,
    /// The username written in the URL (`git` in `git@host:path`), if any.
    pub username: Option<String>,
}

/// Checks `url` against the policy: supported scheme, no password or (for HTTP)
/// no userinfo at all, no file, loopback or private-range remote unless
/// `allow_local`, no plain http or git:// unless `allow_http`.
pub fn parse(url: &str, policy: Policy) -> Result<RemoteUrl, UrlError> {
    let allow_local = policy.allow_local;
    let url = url.trim();
    if url.is_empty() || url.chars().any(char::is_control) {
        return Err(UrlError::Malformed(
            "empty or contains control characters".into(),
        ));
    }
    let parsed = match url.split_once("://") {
        Some(_) => parse_with_scheme(url)?,
        None if url.starts_with('/') || url.starts_with('.') => {
            return local_path(url, allow_local);
        }
        None => parse_scp_like(url)?,
    };
    if parsed.host == "local" {
        return local_path(url, allow_local);
    }
    if !policy.allow_http && (url.starts_with("http://") || url.starts_with("git://")) {
        return Err(UrlError::InsecureHttp);
    }
    if !allow_local && let Some(kind) = local_kind(&parsed.host) {
        return Err(UrlError::Local(kind));
    }
    Ok(parsed)
}

fn parse_with_scheme(raw: &str) -> Result<RemoteUrl, UrlError> {
    let url = url::Url::parse(raw).map_err(|e| UrlError::Malformed(e.to_string()))?;
    let scheme = url.scheme();
    match scheme {
        "file" => {
            return Ok(RemoteUrl {
                url: raw.to_string(),
                host: "local".into(),
                username: None,
            });
        }
        "https" | "http" | "ssh" | "git" => {}
        other => return Err(UrlError::Scheme(other.to_string())),
    }
    let has_user = !url.username().is_empty();
    if url.password().is_some() || (has_user && matches!(scheme, "https" | "http" | "git")) {
        return Err(UrlError::Credentials);
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| UrlError::Malformed("no host".into()))?;
    if url.path().trim_matches('/').is_empty() {
        return Err(UrlError::Malformed("no repository path".into()));
    }
    Ok(RemoteUrl {
        url: raw.to_string(),
        host: host.trim_matches(['[', ']']).to_ascii_lowercase(),
        username: has_user.then(|| url.username().to_string()),
    })
}

/// `[user@]host:path`, as git and ssh understand it.
fn parse_scp_like(raw: &str) -> Result<RemoteUrl, UrlError> {
    // `user:password@host:path` is not valid scp syntax, but it is what someone
    // pasting a credential would write: refuse it as such.
    if let Some((user, _)) = raw.split_once('@')
        && !user.contains('/')
        && user.contains(':')
    {
        return Err(UrlError::Credentials);
    }
    let (authority, path) = raw.split_once(':').ok_or_else(|| {
        UrlError::Malformed("expected scheme://host/path or user@host:path".into())
    })?;
    let (user, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, authority),
    };
    if user.is_some_and(|u| u.contains(':')) {
        return Err(UrlError::Credentials);
    }
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !valid_host || path.is_empty() || path.starts_with("//") {
        return Err(UrlError::Malformed("expected user@host:path".into()));
    }
    Ok(RemoteUrl {
        url: raw.to_string(),
        host: host.to_ascii_lowercase(),
        username: user.map(str::to_string),
    })
}

fn local_path(url: &str, allow_local: bool) -> Result<RemoteUrl, UrlError> {
    if !allow_local {
        return Err(UrlError::Local("file://"));
    }
    Ok(RemoteUrl {
        url: url.to_string(),
        host: "local".into(),
        username: None,
    })
}

/// Names why `host` counts as local, if it does. Only literal addresses and
/// `localhost` are recognised; names are not resolved here.
fn local_kind(host: &str) -> Option<&'static str> {
    if host == "localhost" || host.ends_with(".localhost") {
        return Some("loopback");
    }
    match host.parse::<IpAddr>().ok()? {
        IpAddr::V4(ip) => v4_kind(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => v4_kind(v4),
            None => v6_kind(ip),
        },
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() || ip.is_link_local() || ip.is_unspecified() {
        Some("private-network")
    } else {
        None
    }
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() || first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80 {
        Some("private-network")
    } else {
        None
    }
}

/// The identity of a repository behind a URL, for matching webhook payloads to
/// mirrors: `host/path` with the scheme, userinfo, port, `.git` suffix and
/// trailing slash dropped and the host lower-cased. `https://GitHub.com/a/b.git`,
/// `git@github.com:a/b` and `ssh://git@github.com:22/a/b/` all give
/// `github.com/a/b`.
pub fn normalize(url: &str) -> Option<String> {
    let url = url.trim();
    let (host, path) = match url.split_once("://") {
        Some((_, rest)) => {
            let (authority, path) = rest.split_once('/')?;
            let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let host = match host_port.strip_prefix('[') {
                Some(v6) => v6.split(']').next()?,
                None => host_port.split(':').next()?,
            };
            (host, path)
        }
        None => {
            let (authority, path) = url.split_once(':')?;
            (
                authority.rsplit_once('@').map_or(authority, |(_, h)| h),
                path,
            )
        }
    };
    let path = path.trim_matches('/');
    let path = path
        .strip_suffix(".git")
        .unwrap_or(path)
        .trim_end_matches('/');
    if host.is_empty() || path.is_empty() {
        return None;
    }
    Some(format!("{}/{path}", host.to_ascii_lowercase()))
}

/// `url` with any userinfo replaced by `***`, for logs and error messages.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// Replaces every occurrence of `url` in a message with its redacted form, for
/// errors that come from libgit2 and may quote the URL.
pub fn redact_in(message: &str, url: &str) -> String {
    if url.is_empty() {
        return message.to_string();
    }
    message.replace(url, &redact(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Policy = Policy {
        allow_local: false,
        allow_http: false,
    };
    const LAX: Policy = Policy {
        allow_local: true,
        allow_http: true,
    };

    #[test]
    fn accepts_the_usual_remotes() {
        let r = parse("https://GitHub.com/acme/widgets.git", STRICT).unwrap();
        assert_eq!(r.host, "github.com");
        let r = parse("ssh://git@gitlab.com:2222/acme/widgets.git", STRICT).unwrap();
        assert_eq!(
            (r.host.as_str(), r.username.as_deref()),
            ("gitlab.com", Some("git"))
        );
        let r = parse("git@bitbucket.org:acme/widgets.git", STRICT).unwrap();
        assert_eq!(
            (r.host.as_str(), r.username.as_deref()),
            ("bitbucket.org", Some("git"))
        );
        assert!(parse("git://example.com/x.git", LAX).is_ok());
    }

    #[test]
    fn plain_http_needs_the_operator() {
        for url in ["http://example.com/x.git", "git://example.com/x.git"] {
            assert_eq!(parse(url, STRICT), Err(UrlError::InsecureHttp), "{url}");
            let http_only = Policy {
                allow_http: true,
                ..STRICT
            };
            assert!(parse(url, http_only).is_ok(), "{url}");
        }
    }

    #[test]
    fn refuses_credentials_in_urls() {
        for url in [
            "https://user:pw@github.com/a/b.git",
            "https://token@github.com/a/b.git",
            "ssh://git:pw@host/a.git",
            "git:pw@host:a.git",
        ] {
            assert_eq!(parse(url, LAX), Err(UrlError::Credentials), "{url}");
        }
        assert!(UrlError::Credentials.to_string().contains("credentials"));
    }

    #[test]
    fn refuses_local_remotes_unless_allowed() {
        for url in [
            "file:///srv/repo.git",
            "/srv/repo.git",
            "http://127.0.0.1:8080/repo.git",
            "http://localhost/repo.git",
            "https://10.1.2.3/repo.git",
            "https://192.168.0.1/repo.git",
            "ssh://git@[::1]/repo.git",
            "git@172.16.0.9:repo.git",
        ] {
            let http_allowed = Policy {
                allow_http: true,
                ..STRICT
            };
            assert!(
                matches!(parse(url, http_allowed), Err(UrlError::Local(_))),
                "{url}"
            );
            assert!(parse(url, LAX).is_ok(), "{url}");
        }
    }

    #[test]
    fn refuses_nonsense() {
        for url in [
            "",
            "ftp://host/x",
            "https://",
            "https://host",
            "not a url",
            "host:",
        ] {
            assert!(parse(url, LAX).is_err(), "{url:?}");
        }
    }

    #[test]
    fn normalizes_the_forms_a_forge_reports() {
        let id = Some("github.com/acme/widgets".to_string());
        for url in [
            "https://github.com/acme/widgets.git",
            "https://GitHub.com/acme/widgets",
            "http://github.com/acme/widgets/",
            "git://github.com/acme/widgets.git",
            "git@github.com:acme/widgets.git",
            "ssh://git@github.com:22/acme/widgets.git",
        ] {
            assert_eq!(normalize(url), id, "{url}");
        }
        assert_ne!(
            normalize("https://github.com/Acme/widgets"),
            id,
            "paths keep their case"
        );
        assert_eq!(normalize("https://github.com/"), None);
    }

    #[test]
    fn redacts_userinfo() {
        assert_eq!(redact("https://u:p@host/x"), "https://***@host/x");
        assert_eq!(redact("https://host/x@y"), "https://host/x@y");
        assert_eq!(
            redact_in("failed for https://u:p@h/x: 401", "https://u:p@h/x"),
            "failed for https://***@h/x: 401"
        );
    }
}
