//! https remotes and the HTTPS listener, with certificate authorities the
//! test makes: pull and push through a TLS front with password and token
//! credentials; an unknown authority, an expired certificate and a wrong host
//! each refused by name; the listener's certificate swapped on SIGHUP without
//! dropping a connection.

use std::path::PathBuf;
use std::time::Duration;

use mirrorhost::config::TlsFiles;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::{Value, json};

use crate::http_git::{BasicAuth, HttpGit};
use crate::support::{
    ADMIN_TOKEN, Api, LOCAL_REMOTES, Server, Upstream, bare_repo, fsck, project_repo, refs_of,
};

const PASSWORD: &str = "tls-pw-5Gd1";
const TOKEN: &str = "tls-token-8Jq3";

/// A certificate authority of the test's own, writing PEM files to a temp dir.
pub struct Authority {
    dir: tempfile::TempDir,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Authority {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Self { dir, cert, key }
    }

    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A service on `data_dir` that takes local remotes and trusts this
    /// authority (`ca_bundle`), with `extra` settings.
    pub fn trusted_by(&self, data_dir: tempfile::TempDir, extra: &[(&str, &str)]) -> Server {
        let bundle = self.bundle();
        let mut envs = LOCAL_REMOTES.to_vec();
        envs.push(("MIRRORHOST_CA_BUNDLE", bundle.to_str().unwrap()));
        envs.extend_from_slice(extra);
        Server::start_in(data_dir, &envs)
    }

    /// A certificate for `names`, valid now unless `expired`.
    pub fn issue(&self, stem: &str, names: &[&str], expired: bool) -> TlsFiles {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, stem);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let files = TlsFiles {
            cert: self.dir.path().join(format!("{stem}.pem")),
            key: self.dir.path().join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}

fn trusting(ca: &Authority) -> Server {
    ca.trusted_by(tempfile::tempdir().unwrap(), &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_and_push_over_https_with_a_private_authority() {
    let ca = Authority::new("Mirrorhost Test Root");
    let up = Upstream::new();
    up.commit("main", "a");
    up.commit("dev", "b");
    up.push(&["main", "dev"]);
    let dest = bare_repo(up.dir.path(), "dest.git");
    let alice = BasicAuth {
        username: Some("alice".into()),
        password: PASSWORD.into(),
    };
    let tls = ca.issue("git", &["localhost", "127.0.0.1"], false);
    let password_front = HttpGit::start_tls(up.dir.path(), Some(alice), tls.clone()).await;
    let token = BasicAuth {
        username: None,
        password: TOKEN.into(),
    };
    let token_front = HttpGit::start_tls(up.dir.path(), Some(token), tls).await;
    assert!(password_front.url("x").starts_with("https://"));

    let server = trusting(&ca);
    let api = Api::new(&server);
    let body = json!({"project_id": "tls/app", "url": password_front.url("upstream.git"),
                      "auth_method": "password"});
    let pull = api.create("pull", body).await;
    let alice = json!({"type": "password", "username": "alice", "password": PASSWORD});
    let (status, _) = api
        .put(&format!("/api/v1/mirrors/{pull}/credentials"), alice)
        .await;
    assert_eq!(status, 200);
    let run = api.sync(pull).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let local = project_repo(&server, "tls/app");
    assert_eq!(refs_of(&local), refs_of(&up.bare()));

    let body = json!({"project_id": "tls/app", "url": token_front.url("dest.git"),
                      "auth_method": "token"});
    let push = api.create("push", body).await;
    let (status, _) = api
        .put(
            &format!("/api/v1/mirrors/{push}/credentials"),
            json!({"type": "token", "token": TOKEN}),
        )
        .await;
    assert_eq!(status, 200);
    let run = api.sync(push).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(refs_of(&dest), refs_of(&up.bare()));
    fsck(&local);
    fsck(&dest);
}

/// Syncs a new pull mirror of `url`; the failed run's error.
async fn refusal(api: &Api<'_>, project: &str, url: String) -> String {
    let id = api
        .create("pull", json!({"project_id": project, "url": url}))
        .await;
    let run = api.sync(id).await;
    assert_eq!(run["status"], "failed", "{run}");
    run["error"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refused_certificate_is_named() {
    let ca = Authority::new("Mirrorhost Test Root");
    let stranger = Authority::new("Unknown Issuer CA");
    let up = Upstream::with_main();
    let root = up.dir.path();
    let unknown = HttpGit::start_tls(root, None, stranger.issue("s", &["127.0.0.1"], false)).await;
    let expired = HttpGit::start_tls(root, None, ca.issue("old", &["127.0.0.1"], true)).await;
    let elsewhere =
        HttpGit::start_tls(root, None, ca.issue("other", &["git.example.com"], false)).await;
    let good = HttpGit::start_tls(root, None, ca.issue("good", &["127.0.0.1"], false)).await;

    let server = trusting(&ca);
    let api = Api::new(&server);
    // Named by IP address or by host name, the names on the certificate
    // are told.
    let by_name = elsewhere
        .url("upstream.git")
        .replace("127.0.0.1", "localhost");
    let error = refusal(&api, "tls/elsewhere", by_name).await;
    assert!(
        error.contains("is for git.example.com, not localhost"),
        "{error}"
    );
    let error = refusal(&api, "tls/elsewhere-ip", elsewhere.url("upstream.git")).await;
    assert!(
        error.contains("is for git.example.com, not 127.0.0.1"),
        "{error}"
    );
    let error = refusal(&api, "tls/unknown", unknown.url("upstream.git")).await;
    assert!(
        error.contains("signed by Unknown Issuer CA") && error.contains("ca_bundle"),
        "{error}"
    );
    let error = refusal(&api, "tls/expired", expired.url("upstream.git")).await;
    assert!(
        error.contains("expired on") && error.contains("2021"),
        "{error}"
    );
    assert!(refs_of(&project_repo(&server, "tls/unknown")).is_empty());
    // The same authority is not trusted by a service that was not told of it.
    let untold = Server::start(LOCAL_REMOTES);
    let api = Api::new(&untold);
    let error = refusal(&api, "tls/good", good.url("upstream.git")).await;
    assert!(error.contains("signed by Mirrorhost Test Root"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_trusts_the_authority_it_names() {
    let ca = Authority::new("Team CA");
    let other = Authority::new("Other CA");
    let up = Upstream::with_main();
    let root = up.dir.path();
    let front = HttpGit::start_tls(root, None, ca.issue("git", &["127.0.0.1"], false)).await;
    let elsewhere =
        HttpGit::start_tls(root, None, ca.issue("else", &["git.example.com"], false)).await;
    let server = Server::start(LOCAL_REMOTES);
    let api = Api::new(&server);
    let team_pem = std::fs::read_to_string(ca.bundle()).unwrap();
    let other_pem = std::fs::read_to_string(other.bundle()).unwrap();

    let body = json!({"project_id": "tls/own", "url": front.url("upstream.git"),
                      "tls_ca_pem": team_pem});
    let id = api.create("pull", body).await;
    let run = api.sync(id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        refs_of(&project_repo(&server, "tls/own")),
        refs_of(&up.bare())
    );
    let (_, shown) = api.get(&format!("/api/v1/mirrors/{id}")).await;
    assert_eq!(shown["tls_ca_pem"], team_pem);

    // Another authority is not enough, and naming one does not excuse a
    // certificate for another host.
    let body = json!({"project_id": "tls/other", "url": front.url("upstream.git"),
                      "tls_ca_pem": other_pem});
    let id_other = api.create("pull", body).await;
    let run = api.sync(id_other).await;
    assert!(
        run["error"].as_str().unwrap().contains("signed by Team CA"),
        "{run}"
    );
    let by_name = elsewhere
        .url("upstream.git")
        .replace("127.0.0.1", "localhost");
    let body = json!({"project_id": "tls/else", "url": by_name, "tls_ca_pem": team_pem});
    let id_else = api.create("pull", body).await;
    let run = api.sync(id_else).await;
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("is for git.example.com, not localhost"),
        "{run}"
    );

    // Removed, the service's trust alone applies again.
    let path = format!("/api/v1/mirrors/{id}");
    let (status, _) = api
        .call(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"tls_ca_pem": null})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(api.sync(id).await["status"], "failed");
    for bad in [
        "not pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        let (status, err) = api
            .call(
                reqwest::Method::PATCH,
                &path,
                Some(json!({"tls_ca_pem": bad})),
            )
            .await;
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (422, Some("tls_ca_pem")),
            "{err}"
        );
    }
}

/// The PEM texts (certificate, key) of `files`.
pub fn pem_pair(files: &TlsFiles) -> (String, String) {
    let read = |path: &PathBuf| std::fs::read_to_string(path).unwrap();
    (read(&files.cert), read(&files.key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_demanding_a_client_certificate_gets_the_mirrors() {
    let ca = Authority::new("Mirrorhost Test Root");
    let clients = Authority::new("Team Clients CA");
    let up = Upstream::with_main();
    let dest = bare_repo(up.dir.path(), "dest.git");
    let tls = ca.issue("git", &["127.0.0.1"], false);
    let front = HttpGit::start_mutual_tls(up.dir.path(), tls, &clients.bundle()).await;
    let (cert, key) = pem_pair(&clients.issue("mirrorhost", &["mirrorhost.test"], false));
    let stranger = Authority::new("Stranger CA");
    let (their_cert, their_key) = pem_pair(&stranger.issue("other", &["other.test"], false));

    let server = trusting(&ca);
    let api = Api::new(&server);
    let error = refusal(&api, "mtls/none", front.url("upstream.git")).await;
    assert!(
        error.contains("demands a TLS client certificate") && error.contains("tls_client_cert_pem"),
        "{error}"
    );
    let body = json!({"project_id": "mtls/stranger", "url": front.url("upstream.git"),
                      "tls_client_cert_pem": their_cert, "tls_client_key_pem": their_key});
    let run = api.sync(api.create("pull", body).await).await;
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("refused the mirror's TLS client certificate"),
        "{run}"
    );

    let body = json!({"project_id": "mtls/app", "url": front.url("upstream.git"),
                      "tls_client_cert_pem": cert, "tls_client_key_pem": key});
    let pull = api.create("pull", body).await;
    let run = api.sync(pull).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let local = project_repo(&server, "mtls/app");
    assert_eq!(refs_of(&local), refs_of(&up.bare()));
    let (_, shown) = api.get(&format!("/api/v1/mirrors/{pull}")).await;
    assert_eq!(
        (
            shown["tls_client_cert_pem"].as_str(),
            shown["tls_client_key"].as_bool()
        ),
        (Some(cert.as_str()), Some(true))
    );
    assert!(!shown.to_string().contains("PRIVATE KEY"), "{shown}");
    let body = json!({"project_id": "mtls/app", "url": front.url("dest.git"),
                      "tls_client_cert_pem": cert, "tls_client_key_pem": key});
    let push = api.create("push", body).await;
    assert_eq!(api.sync(push).await["status"], "succeeded");
    assert_eq!(refs_of(&dest), refs_of(&up.bare()));
    fsck(&dest);

    // The key is sealed at rest and opens again after a key rotation.
    let key_body = key.lines().nth(1).unwrap().to_string();
    let data_dir = server.stop();
    let database = crate::support::database_bytes(data_dir.path());
    assert!(!String::from_utf8_lossy(&database).contains(&key_body));
    let out = crate::support::rotate_master_key(data_dir.path());
    assert!(String::from_utf8_lossy(&out.stderr).contains("re-sealed 3 stored secrets"));
    let server = ca.trusted_by(data_dir, &[]);
    let api = Api::new(&server);
    up.commit("main", "b");
    up.push(&["main"]);
    assert_eq!(api.sync(pull).await["status"], "succeeded");
    assert_eq!(refs_of(&local), refs_of(&up.bare()));

    // Removed, the remote refuses the mirror again.
    let path = format!("/api/v1/mirrors/{pull}");
    let (status, patched) = api
        .call(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"tls_client_cert_pem": null})),
        )
        .await;
    assert_eq!(
        (status, patched["tls_client_key"].as_bool()),
        (200, Some(false)),
        "{patched}"
    );
    assert!(patched.get("tls_client_cert_pem").is_none(), "{patched}");
    assert_eq!(api.sync(pull).await["status"], "failed");
}

#[tokio::test]
async fn a_client_certificate_is_checked_before_it_is_stored() {
    let clients = Authority::new("Team Clients CA");
    let (cert, key) = pem_pair(&clients.issue("mirrorhost", &["mirrorhost.test"], false));
    let (_, other_key) = pem_pair(&clients.issue("other", &["other.test"], false));
    let server = Server::start(LOCAL_REMOTES);
    let api = Api::new(&server);
    let url = "https://127.0.0.1:9/app.git";
    let cases = [
        (json!({"tls_client_cert_pem": cert}), "tls_client_key_pem"),
        (json!({"tls_client_key_pem": key}), "tls_client_cert_pem"),
        (
            json!({"tls_client_cert_pem": "not pem", "tls_client_key_pem": key}),
            "tls_client_cert_pem",
        ),
        (
            json!({"tls_client_cert_pem": cert, "tls_client_key_pem": "not pem"}),
            "tls_client_key_pem",
        ),
        (
            json!({"tls_client_cert_pem": cert, "tls_client_key_pem": other_key}),
            "tls_client_key_pem",
        ),
    ];
    for (fields, field) in cases {
        let mut body = json!({"project_id": "mtls/bad", "url": url});
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let (status, err) = api.post("/api/v1/mirrors/pull", body.clone()).await;
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (422, Some(field)),
            "{body}: {err}"
        );
    }
    let (_, listed) = api.get("/api/v1/mirrors").await;
    assert_eq!(listed["mirrors"], json!([]), "nothing stored");
    let body = json!({"project_id": "mtls/bad", "url": url});
    let id = api.create("pull", body).await;
    let (status, err) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/mirrors/{id}"),
            Some(json!({"tls_client_cert_pem": cert})),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (422, Some("tls_client_key_pem"))
    );
}

#[tokio::test]
async fn a_ca_bundle_that_is_no_pem_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, "not a certificate").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mirrorhost"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--ca-bundle")
        .arg(&bundle)
        .env(
            "MIRRORHOST_PLUGIN_CACHE_DIR",
            crate::support::plugin_cache_dir(),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ca_bundle"), "{stderr}");
}

/// A client that trusts `ca` only, and keeps its connections.
fn https_client(ca: &Authority) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([root])
        .tls_info(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The subject common name of the certificate the server presented.
async fn presented(client: &reqwest::Client, url: &str) -> String {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .unwrap();
    let der = info.peer_certificate().unwrap().to_vec();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    let cert = openssl::x509::X509::from_der(&der).unwrap();
    let cn = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .unwrap();
    cn.data().to_string().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_serves_https_and_reloads_its_certificate_on_sighup() {
    let ca = Authority::new("Listener Test Root");
    let first = ca.issue("first", &["127.0.0.1"], false);
    let served = TlsFiles {
        cert: ca.dir.path().join("served.pem"),
        key: ca.dir.path().join("served.key"),
    };
    std::fs::copy(&first.cert, &served.cert).unwrap();
    std::fs::copy(&first.key, &served.key).unwrap();
    let mut server = Server::start(&[
        ("MIRRORHOST_ADMIN_TOKEN", ADMIN_TOKEN),
        ("MIRRORHOST_TLS_CERT", served.cert.to_str().unwrap()),
        ("MIRRORHOST_TLS_KEY", served.key.to_str().unwrap()),
    ]);
    let url = format!("https://{}/healthz", server.addr);
    let kept = https_client(&ca);
    assert_eq!(presented(&kept, &url).await, "first");
    // Over TLS the console's session cookie is never sent in the clear.
    let root = reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap();
    let login = reqwest::Client::builder()
        .tls_certs_only([root])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("https://{}/login", server.addr))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    // Plain HTTP on the HTTPS port gets no answer it could mistake for one.
    let plain = crate::support::client()
        .get(server.url("/healthz"))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);

    let second = ca.issue("second", &["127.0.0.1"], false);
    std::fs::copy(&second.cert, &served.cert).unwrap();
    std::fs::copy(&second.key, &served.key).unwrap();
    server.signal("HUP");
    assert!(
        server
            .wait_for_log("TLS certificate reloaded", Duration::from_secs(30))
            .is_some()
    );
    // The open connection keeps its session; a new one gets the new certificate.
    assert_eq!(presented(&kept, &url).await, "first");
    assert_eq!(presented(&https_client(&ca), &url).await, "second");

    // A broken file is refused, and the certificate in use stays.
    std::fs::write(&served.key, "garbage").unwrap();
    server.signal("HUP");
    assert!(
        server
            .wait_for_log("TLS certificate not reloaded", Duration::from_secs(30))
            .is_some()
    );
    assert_eq!(presented(&https_client(&ca), &url).await, "second");
}

#[tokio::test]
async fn a_certificate_without_its_key_stops_the_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mirrorhost"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent.pem",
        ])
        .env_remove("MIRRORHOST_TLS_KEY")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tls_key"), "{stderr}");
}
