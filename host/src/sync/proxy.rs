//! Which HTTP proxy a transfer goes through. A mirror's own `proxy_url` wins
//! (the empty string: none at all); else the service's `https_proxy` unless
//! its `no_proxy` list names the remote's host; else what libgit2 finds itself
//! (`HTTPS_PROXY`/`HTTP_PROXY` with `NO_PROXY`, or git's `http.proxy`).
//! SSH remotes never use one: libgit2's SSH transport has no proxy support.

use git2::ProxyOptions;

/// The service-wide proxy settings. Its `Debug` hides the proxy's credentials.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// `http://[user:password@]host:port`, for every http(s) remote.
    pub url: Option<String>,
    /// Hosts reached directly: `example.com` (and its subdomains),
    /// `.example.com`, an address, or `*` for all.
    pub no_proxy: Vec<String>,
}

impl std::fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxySettings")
            .field("url", &self.url.as_deref().map(super::remote::redact))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// How one transfer reaches its remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Whatever libgit2 finds in the environment and git's configuration.
    Auto,
    Direct,
    Via(String),
}

impl Route {
    /// The route of a transfer to `host` for a mirror whose `proxy_url` is
    /// `mirror_proxy`.
    pub fn to(settings: &ProxySettings, mirror_proxy: Option<&str>, host: &str) -> Self {
        match (mirror_proxy, &settings.url) {
            (Some(""), _) => Route::Direct,
            (Some(own), _) => Route::Via(own.to_string()),
            (None, Some(_)) if bypassed(&settings.no_proxy, host) => Route::Direct,
            (None, Some(service)) => Route::Via(service.clone()),
            (None, None) => Route::Auto,
        }
    }

    pub fn options(&self) -> ProxyOptions<'static> {
        let mut options = ProxyOptions::new();
        match self {
            Route::Auto => {
                options.auto();
            }
            Route::Direct => {}
            Route::Via(url) => {
                options.url(url);
            }
        }
        options
    }
}

/// Our words for libgit2's proxy errors, naming the proxy (its credentials
/// hidden); `None` for any other error.
pub fn explain(libgit2_message: &str, route: &Route) -> Option<String> {
    let proxy = match route {
        Route::Via(url) => super::remote::redact(url),
        Route::Auto => "from the environment".to_string(),
        Route::Direct => return None,
    };
    if libgit2_message.contains("proxy authentication required") {
        return Some(format!(
            "the proxy {proxy} demands credentials it was not given, or refused them; \
             give them in the proxy URL (http://user:password@host:port)"
        ));
    }
    libgit2_message
        .strip_prefix("proxy returned unexpected status: ")
        .map(|status| format!("the proxy {proxy} refused the connection (HTTP {status})"))
}

/// Whether `no_proxy` names `host` (as curl reads `NO_PROXY`).
fn bypassed(no_proxy: &[String], host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    no_proxy.iter().any(|entry| {
        let entry = entry.trim().trim_start_matches('.');
        entry == "*"
            || entry.eq_ignore_ascii_case(host)
            || host.len().checked_sub(entry.len() + 1).is_some_and(|cut| {
                !entry.is_empty()
                    && host.as_bytes()[cut] == b'.'
                    && host[cut + 1..].eq_ignore_ascii_case(entry)
            })
    })
}

/// A proxy URL as libgit2 can use one: http or https, with a host. The
/// service's setting and a mirror's `proxy_url` are both checked here.
pub fn parse_url(proxy: &str) -> Result<url::Url, &'static str> {
    let url =
        url::Url::parse(proxy).map_err(|_| "not a URL; give http://[user:password@]host:port")?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err("an http:// or https:// proxy with a host");
    }
    Ok(url)
}

/// Splits a `NO_PROXY`-style list.
pub fn parse_no_proxy(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(no_proxy: &str) -> ProxySettings {
        ProxySettings {
            url: Some("http://u:p@proxy:3128".into()),
            no_proxy: parse_no_proxy(no_proxy),
        }
    }

    #[test]
    fn the_mirror_wins_then_no_proxy_then_the_service() {
        let s = service("internal.example.com, .corp, 10.0.0.7");
        assert_eq!(Route::to(&s, Some(""), "github.com"), Route::Direct);
        let own = Route::to(&s, Some("http://other:8080"), "git.corp");
        assert_eq!(own, Route::Via("http://other:8080".into()));
        for direct in [
            "internal.example.com",
            "git.internal.example.com",
            "a.corp",
            "10.0.0.7",
        ] {
            assert_eq!(Route::to(&s, None, direct), Route::Direct, "{direct}");
        }
        for proxied in [
            "example.com",
            "notcorp",
            "xinternal.example.com",
            "10.0.0.70",
        ] {
            assert_eq!(
                Route::to(&s, None, proxied),
                Route::Via("http://u:p@proxy:3128".into()),
                "{proxied}"
            );
        }
        assert_eq!(Route::to(&ProxySettings::default(), None, "x"), Route::Auto);
        assert_eq!(Route::to(&service("*"), None, "anything"), Route::Direct);
    }

    #[test]
    fn debug_hides_the_proxy_credentials() {
        let shown = format!("{:?}", service(""));
        assert!(!shown.contains("u:p"), "{shown}");
        assert!(shown.contains("proxy:3128"), "{shown}");
    }
}
