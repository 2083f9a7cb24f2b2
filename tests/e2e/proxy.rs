//! https remotes through a real HTTP proxy on loopback (squid): the
//! service-wide proxy with credentials, a mirror's own proxy or none at all,
//! and proxies that demand authentication or refuse, each failing the run by
//! name; the proxy's password never shows.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::http_git::HttpGit;
use crate::https::{Authority, pem_pair};
use crate::support::{Api, Server, Upstream, project_repo, refs_of};

const PROXY_USER: &str = "squidward";
const PROXY_PASSWORD: &str = "proxy-pw-Xk29-distinctive";

/// Squid on a free loopback port: `login` demands PROXY_USER's password;
/// `refuse` denies every request.
struct Squid {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Squid {
    fn start(login: bool, refuse: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Squid drops root for this user, which must be able to write its logs.
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let hash = Command::new("openssl")
            .args(["passwd", "-apr1", PROXY_PASSWORD])
            .output()
            .unwrap();
        let hash = String::from_utf8(hash.stdout).unwrap();
        std::fs::write(d.join("passwd"), format!("{PROXY_USER}:{}", hash.trim())).unwrap();
        let access = match (refuse, login) {
            (true, _) => "http_access deny all".to_string(),
            (false, true) => format!(
                "auth_param basic program /usr/lib/squid/basic_ncsa_auth {}/passwd\n\
                 auth_param basic realm mirrorhost-test\n\
                 acl login proxy_auth REQUIRED\nhttp_access allow login\nhttp_access deny all",
                d.display()
            ),
            (false, false) => "http_access allow all".to_string(),
        };
        let conf = d.join("squid.conf");
        std::fs::write(
            &conf,
            format!(
                "http_port 127.0.0.1:{port}\npid_filename {d}/squid.pid\n\
                 access_log stdio:{d}/access.log\ncache_log {d}/cache.log\ncache deny all\n\
                 coredump_dir {d}\ncache_effective_user proxy\nshutdown_lifetime 0 seconds\n\
                 {access}\n",
                d = d.display()
            ),
        )
        .unwrap();
        // Its own service name: each squid's shared memory segments are its own.
        let child = Command::new("squid")
            .args(["-N", "-n", &format!("mh{port}"), "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("squid (Debian's squid) runs the proxy tests");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "squid did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port, dir }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn url_with_login(&self, password: &str) -> String {
        format!("http://{PROXY_USER}:{password}@127.0.0.1:{}", self.port)
    }

    /// How many tunnels this proxy opened or refused.
    fn tunnels(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" CONNECT "))
            .count()
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An https git front for a one-commit upstream, and a service trusting its CA.
struct Remote {
    ca: Authority,
    up: Upstream,
    front: HttpGit,
}

impl Remote {
    async fn start() -> Self {
        let ca = Authority::new("Proxy Test Root");
        let up = Upstream::with_main();
        let front =
            HttpGit::start_tls(up.dir.path(), None, ca.issue("git", &["127.0.0.1"], false)).await;
        Self { ca, up, front }
    }

    fn server(&self, proxy: Option<&str>) -> Server {
        let extra: Vec<(&str, &str)> = proxy
            .map(|proxy| ("MIRRORHOST_HTTPS_PROXY", proxy))
            .into_iter()
            .collect();
        self.ca.trusted_by(tempfile::tempdir().unwrap(), &extra)
    }

    fn url(&self) -> String {
        self.front.url("upstream.git")
    }
}

async fn sync(api: &Api<'_>, body: serde_json::Value) -> serde_json::Value {
    let id = api.create("pull", body).await;
    api.sync(id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_proxy_carries_https_pulls_and_a_mirror_may_opt_out() {
    let remote = Remote::start().await;
    let proxy = Squid::start(true, false);
    let server = remote.server(Some(&proxy.url_with_login(PROXY_PASSWORD)));
    let api = Api::new(&server);

    let run = sync(
        &api,
        json!({"project_id": "proxy/via", "url": remote.url()}),
    )
    .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        refs_of(&project_repo(&server, "proxy/via")),
        refs_of(&remote.up.bare())
    );
    let tunnels = proxy.tunnels();
    assert!(tunnels >= 1, "the pull went around the proxy");

    let body = json!({"project_id": "proxy/direct", "url": remote.url(), "proxy_url": ""});
    let run = sync(&api, body).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(proxy.tunnels(), tunnels, "proxy_url \"\" goes direct");
    let (_, mirrors) = api.get("/api/v1/mirrors").await;
    let shown = mirrors.to_string();
    assert!(shown.contains("\"proxy_url\":\"\""), "{shown}");

    // The service-wide proxy with a wrong password fails by name.
    let (status, _) = server.terminate();
    assert!(status.success());
    let server = remote.server(Some(&proxy.url_with_login("wrong-password")));
    let api = Api::new(&server);
    let run = sync(
        &api,
        json!({"project_id": "proxy/denied", "url": remote.url()}),
    )
    .await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(error.contains("demands credentials"), "{error}");
    assert!(!error.contains(PROXY_PASSWORD) && !error.contains("wrong-password"));
    let (_, log) = server.terminate();
    let log = log.join("\n");
    assert!(!log.contains(PROXY_PASSWORD) && !log.contains("wrong-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_through_the_tunnel() {
    let ca = Authority::new("Proxy Test Root");
    let clients = Authority::new("Tunnel Clients CA");
    let up = Upstream::with_main();
    let tls = ca.issue("git", &["127.0.0.1"], false);
    let front = HttpGit::start_mutual_tls(up.dir.path(), tls, &clients.bundle()).await;
    let (cert, key) = pem_pair(&clients.issue("mirrorhost", &["mirrorhost.test"], false));
    let proxy = Squid::start(false, false);
    let server = ca.trusted_by(tempfile::tempdir().unwrap(), &[]);
    let api = Api::new(&server);
    let body = json!({"project_id": "proxy/mtls", "url": front.url("upstream.git"),
                      "proxy_url": proxy.url(),
                      "tls_client_cert_pem": cert, "tls_client_key_pem": key});
    let run = sync(&api, body).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(proxy.tunnels() >= 1, "the pull went around the proxy");
    assert_eq!(
        refs_of(&project_repo(&server, "proxy/mtls")),
        refs_of(&up.bare())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_proxy_that_demands_auth_or_refuses_fails_the_run_by_name() {
    let remote = Remote::start().await;
    let demanding = Squid::start(true, false);
    let refusing = Squid::start(false, true);
    let server = remote.server(None);
    let api = Api::new(&server);

    let body = json!({"project_id": "proxy/auth", "url": remote.url(),
                      "proxy_url": demanding.url()});
    let run = sync(&api, body).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains(&format!("proxy {} demands credentials", demanding.url())),
        "{run}"
    );
    let body = json!({"project_id": "proxy/refused", "url": remote.url(),
                      "proxy_url": refusing.url()});
    let run = sync(&api, body).await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("proxy {} refused", refusing.url())) && error.contains("403"),
        "{run}"
    );
    assert!(refs_of(&project_repo(&server, "proxy/refused")).is_empty());
    assert_eq!(refusing.tunnels(), 1);
}

#[tokio::test]
async fn a_mirror_proxy_is_checked_before_it_is_stored() {
    let server = crate::support::local_server();
    let api = Api::new(&server);
    let url = "https://git.example.com/team/app.git";
    for proxy in [
        "ftp://proxy:21",
        "not a url",
        "http://user@proxy:3128",
        "http://proxy:3128/path",
    ] {
        let body = json!({"project_id": "proxy/bad", "url": url, "proxy_url": proxy});
        let (status, err) = api.post("/api/v1/mirrors/pull", body).await;
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (422, Some("proxy_url")),
            "{proxy}: {err}"
        );
        assert!(!err.to_string().contains("secret"), "{err}");
    }
    let body = json!({"project_id": "proxy/ok", "url": url,
                      "proxy_url": "http://user:s3cret-pw@proxy.corp:3128"});
    let id = api.create("pull", body).await;
    let path = format!("/api/v1/mirrors/{id}");
    let (_, shown) = api.get(&path).await;
    assert_eq!(
        (&shown["proxy_url"], &shown["proxy_credentials"]),
        (&json!("http://proxy.corp:3128"), &json!(true)),
        "{shown}"
    );
    assert!(!shown.to_string().contains("s3cret-pw"));
    let database = crate::support::database_bytes(server.data_dir.path());
    let clear = database.windows(9).any(|w| w == b"s3cret-pw");
    assert!(!clear, "proxy credentials are stored sealed");
    // Another proxy drops the credentials of the first.
    let other = json!({"proxy_url": "http://other.corp:8080"});
    let (_, patched) = api.call(reqwest::Method::PATCH, &path, Some(other)).await;
    assert_eq!(patched["proxy_credentials"], false, "{patched}");
    let (status, patched) = api
        .call(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"proxy_url": null})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert!(patched.get("proxy_url").is_none(), "{patched}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirrors_own_proxy_credentials_open_after_a_key_rotation() {
    let remote = Remote::start().await;
    let proxy = Squid::start(true, false);
    let server = remote.server(None);
    let api = Api::new(&server);
    let body = json!({"project_id": "proxy/own", "url": remote.url(),
                      "proxy_url": proxy.url_with_login(PROXY_PASSWORD)});
    let id = api.create("pull", body).await;
    let run = api.sync(id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(proxy.tunnels() >= 1);

    let data_dir = server.stop();
    let out = crate::support::rotate_master_key(data_dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("re-sealed 1 stored secrets"), "{stderr}");

    let server = remote.ca.trusted_by(data_dir, &[]);
    let api = Api::new(&server);
    remote.up.commit("main", "b");
    remote.up.push(&["main"]);
    let run = api.sync(id).await;
    assert_eq!(
        run["status"], "succeeded",
        "the re-sealed login opens: {run}"
    );
    assert_eq!(
        refs_of(&project_repo(&server, "proxy/own")),
        refs_of(&remote.up.bare())
    );
}
