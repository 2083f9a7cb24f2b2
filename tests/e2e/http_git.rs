//! A real smart-HTTP Git server for tests: `git http-backend` run as a CGI
//! program behind a small axum front on a free loopback port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use tokio::io::AsyncWriteExt;

/// HTTP Basic auth the server demands. `username: None` accepts any username
/// with the password, the way GitHub accepts a token.
#[derive(Debug, Clone)]
pub struct BasicAuth {
    pub username: Option<String>,
    pub password: String,
}

struct Front {
    root: PathBuf,
    auth: Option<BasicAuth>,
    /// Added to every answer, standing for a slow network.
    latency: std::time::Duration,
    /// The LFS server that `<repo>.git/info/lfs/...` requests go to, as a
    /// forge serves LFS beside its repositories.
    lfs: Option<SocketAddr>,
    /// How many LFS requests came.
    lfs_requests: std::sync::atomic::AtomicUsize,
}

/// Serves every repository under `root` at `http://<addr>/<name>` (or
/// `https://`), with push (receive-pack) enabled. Stops when dropped.
pub struct HttpGit {
    pub addr: SocketAddr,
    scheme: &'static str,
    task: tokio::task::JoinHandle<()>,
    front: Option<Arc<Front>>,
}

impl HttpGit {
    pub async fn start(root: &Path) -> Self {
        Self::start_with_auth(root, None).await
    }

    pub async fn start_with_auth(root: &Path, auth: Option<BasicAuth>) -> Self {
        Self::start_with(root, auth, std::time::Duration::ZERO).await
    }

    /// A server that answers every request `latency` late.
    pub async fn start_slow(root: &Path, latency: std::time::Duration) -> Self {
        Self::start_with(root, None, latency).await
    }

    async fn start_with(
        root: &Path,
        auth: Option<BasicAuth>,
        latency: std::time::Duration,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, "http", router(root, auth, latency))
    }

    /// A server whose repositories' LFS requests (`<repo>/info/lfs/...`,
    /// behind the same `auth`) go to the LFS server at `lfs`.
    pub async fn start_with_lfs(root: &Path, auth: Option<BasicAuth>, lfs: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = Arc::new(Front {
            root: root.to_path_buf(),
            auth,
            latency: std::time::Duration::ZERO,
            lfs: Some(lfs),
            lfs_requests: Default::default(),
        });
        let app = axum::Router::new().fallback(cgi).with_state(front.clone());
        let mut git = Self::serve(listener, "http", app);
        git.front = Some(front);
        git
    }

    /// How many LFS requests the server has forwarded.
    pub fn lfs_requests(&self) -> usize {
        self.front.as_ref().map_or(0, |f| {
            f.lfs_requests.load(std::sync::atomic::Ordering::SeqCst)
        })
    }

    /// Serves `app` on `listener` until dropped.
    fn serve<L>(listener: L, scheme: &'static str, app: axum::Router) -> Self
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            scheme,
            task,
            front: None,
        }
    }

    /// Behind TLS with the certificate of `tls`, terminated by the same
    /// listener `mirrorhost serve --tls-cert` uses.
    pub async fn start_tls(
        root: &Path,
        auth: Option<BasicAuth>,
        tls: mirrorhost::config::TlsFiles,
    ) -> Self {
        let app = router(root, auth, std::time::Duration::ZERO);
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let certificates = mirrorhost::server::Certificates::load(tls).unwrap();
        let listener = mirrorhost::server::TlsListener::new(tcp, certificates).unwrap();
        Self::serve(listener, "https", app)
    }

    /// Behind TLS that demands a client certificate issued by one of the
    /// certificates in `client_roots` (PEM) and ends any handshake without.
    pub async fn start_mutual_tls(
        root: &Path,
        tls: mirrorhost::config::TlsFiles,
        client_roots: &Path,
    ) -> Self {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(client_roots).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(mirrorhost::server::Certificates::load(tls).unwrap());
        let listener = MutualTls {
            tcp: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        };
        Self::serve(
            listener,
            "https",
            router(root, None, std::time::Duration::ZERO),
        )
    }

    pub fn url(&self, repo: &str) -> String {
        format!("{}://{}/{repo}", self.scheme, self.addr)
    }
}

impl Drop for HttpGit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connections whose client presented a certificate the verifier took.
struct MutualTls {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for MutualTls {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else {
                continue;
            };
            // A refused handshake ends that connection only.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// `git http-backend` for every request, behind `auth` when given.
fn router(root: &Path, auth: Option<BasicAuth>, latency: std::time::Duration) -> axum::Router {
    let front = Arc::new(Front {
        root: root.to_path_buf(),
        auth,
        latency,
        lfs: None,
        lfs_requests: Default::default(),
    });
    axum::Router::new().fallback(cgi).with_state(front)
}

async fn cgi(State(front): State<Arc<Front>>, request: Request) -> Response {
    tokio::time::sleep(front.latency).await;
    let (parts, body) = request.into_parts();
    if let Some(auth) = &front.auth
        && !authorized(&parts.headers, auth)
    {
        let mut denied = Response::new(Body::from("authentication required"));
        *denied.status_mut() = StatusCode::UNAUTHORIZED;
        denied.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"git\""),
        );
        return denied;
    }
    let root = &front.root;
    let body: Bytes = axum::body::to_bytes(body, 1 << 30).await.unwrap();
    if let Some(lfs) = front.lfs
        && parts.uri.path().contains("/info/lfs")
    {
        front
            .lfs_requests
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        return forward(lfs, parts, body).await;
    }
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root.as_os_str())
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "http.receivepack")
        .env("GIT_CONFIG_VALUE_0", "true")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .env(
            "REMOTE_USER",
            if front.auth.is_some() { "mirror" } else { "" },
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = child.wait_with_output().await.unwrap();
    feed.await.unwrap();
    cgi_response(&output.stdout)
}

/// The request, as it came (the Host header kept, so that the LFS server's
/// hrefs point back here), to the LFS server at `to`.
async fn forward(to: SocketAddr, parts: axum::http::request::Parts, body: Bytes) -> Response {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let client = reqwest::Client::new();
    let mut request = client
        .request(parts.method.clone(), format!("http://{to}{path}"))
        .body(body);
    for (name, value) in &parts.headers {
        if name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.unwrap();
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from(answer.bytes().await.unwrap()))
        .unwrap()
}

fn authorized(headers: &HeaderMap, auth: &BasicAuth) -> bool {
    let Some(encoded) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Some(decoded) = base64_decode(encoded.trim()) else {
        return false;
    };
    let Some((user, password)) = decoded.split_once(':') else {
        return false;
    };
    password == auth.password && auth.username.as_deref().is_none_or(|u| u == user)
}

/// Standard base64, enough for an Authorization header.
fn base64_decode(text: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Splits a CGI answer into status, headers and body.
fn cgi_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, at + 4))
        .or_else(|| {
            raw.windows(2)
                .position(|w| w == b"\n\n")
                .map(|at| (at, at + 2))
        })
        .unwrap_or((raw.len(), raw.len()));
    let head = String::from_utf8_lossy(&raw[..split.0]);
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("200");
            status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
        } else if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    let mut response = Response::new(Body::from(raw[split.1..].to_vec()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
