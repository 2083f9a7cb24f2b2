//! Shared test fixtures: a running `mirrorhost serve` process and HTTP helpers.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub use crate::app::plugin_cache_dir;
pub use crate::git::git;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A `mirrorhost serve` child process on a free loopback port; killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: tempfile::TempDir,
    log: mpsc::Receiver<String>,
    /// Every log line read so far.
    pub seen: Vec<String>,
}

impl Server {
    pub fn start(envs: &[(&str, &str)]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), envs)
    }

    /// Starts on an existing data dir, as a restart does.
    pub fn start_in(data_dir: tempfile::TempDir, envs: &[(&str, &str)]) -> Self {
        Self::launch(
            Command::new(env!("CARGO_BIN_EXE_mirrorhost")),
            data_dir,
            envs,
        )
    }

    /// Starts `executable` (a `mirrorhost` installed elsewhere).
    pub fn start_installed(executable: &Path, envs: &[(&str, &str)]) -> Self {
        Self::launch(Command::new(executable), tempfile::tempdir().unwrap(), envs)
    }

    /// Starts allowed at most `limit` open files, as a service manager may
    /// start it (systemd's default soft limit is 1024).
    pub fn start_with_open_file_limit(limit: u32, envs: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={limit}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_mirrorhost"));
        Self::launch(cmd, tempfile::tempdir().unwrap(), envs)
    }

    /// Runs `cmd serve` (the binary, or a wrapper that execs it) on `data_dir`.
    fn launch(mut cmd: Command, data_dir: tempfile::TempDir, envs: &[(&str, &str)]) -> Self {
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir.path())
            .env("MIRRORHOST_PLUGIN_CACHE_DIR", plugin_cache_dir())
            .env("RUST_LOG", "info")
            .env_remove("MIRRORHOST_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own group: `crash` takes the service's children down with it.
            .process_group(0);
        database_of(&mut cmd, data_dir.path());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            log: rx,
            seen: Vec::new(),
        };
        let line = server
            .wait_for_log("listening", Duration::from_secs(120))
            .expect("server never said it was listening");
        let bound = match serde_json::from_str::<serde_json::Value>(&line) {
            // --log-format json
            Ok(event) => event["fields"]["bound"].as_str().unwrap().to_string(),
            Err(_) => line
                .split("bound=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_string(),
        };
        server.addr = bound.parse().unwrap();
        server
    }

    /// Waits for a log line containing `needle`; every line read is echoed so that
    /// a failing test shows the server's log.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            let line = self.log.recv_timeout(left).ok()?;
            eprintln!("server: {line}");
            self.seen.push(line.clone());
            if line.contains(needle) {
                return Some(line);
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends the service the signal `name` (`TERM`, `HUP`, ...).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM, waits for the exit status, and returns it with the whole log.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        self.signal("TERM");
        let exit = self.child.wait().unwrap();
        // The reader thread ends when the process's stderr closes.
        while let Ok(line) = self.log.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(line);
        }
        (exit, std::mem::take(&mut self.seen))
    }

    /// SIGTERM and wait; hands back the data dir for a restart.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.signal("TERM");
        assert!(self.child.wait().unwrap().success());
        let placeholder = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.data_dir, placeholder)
    }

    /// SIGKILL to the service and its children (pack indexers), as a crash of
    /// the machine; hands back the data dir for a restart. (A child whose
    /// service alone dies reads the end of its input and cleans up itself.)
    pub fn crash(mut self) -> tempfile::TempDir {
        let group = format!("-{}", self.child.id());
        let killed = Command::new("kill")
            .args(["-KILL", "--", &group])
            .status()
            .unwrap();
        assert!(killed.success());
        self.child.wait().unwrap();
        let placeholder = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.data_dir, placeholder)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON `server` answers a GET of `path` with, no token.
pub async fn get_json(server: &Server, path: &str) -> serde_json::Value {
    client()
        .get(server.url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// In the PostgreSQL pass, points `cmd` at the store of `data_dir` in the
/// test database; otherwise it finds SQLite in the data dir.
fn database_of(cmd: &mut Command, data_dir: &Path) {
    if let Some(url) = crate::test_postgres::url_of_dir(data_dir) {
        cmd.env("MIRRORHOST_DATABASE_URL", url);
    }
}

/// Every byte the store of `data_dir` holds: the SQLite file, or in the
/// PostgreSQL pass the dump of its schema.
pub fn database_bytes(data_dir: &Path) -> Vec<u8> {
    crate::test_postgres::dump_of_dir(data_dir)
        .unwrap_or_else(|| std::fs::read(data_dir.join("mirrorhost.db")).unwrap())
}

/// The store of `data_dir`, as the service opens it.
pub fn store_of(data_dir: &Path) -> mirrorhost::store::Store {
    use mirrorhost::store::{Location, Store};
    let location = match crate::test_postgres::url_of_dir(data_dir) {
        Some(url) => Location::Postgres(url),
        None => Location::Sqlite(data_dir.join("mirrorhost.db")),
    };
    Store::open_at(&location).unwrap()
}

/// `mirrorhost secrets rotate-key` on a stopped service's data dir (its key
/// in `master.key`); the command's output, after checking it succeeded.
pub fn rotate_master_key(data_dir: &Path) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mirrorhost"));
    cmd.args(["secrets", "rotate-key", "--data-dir"])
        .arg(data_dir)
        .env_remove("MIRRORHOST_MASTER_KEY");
    database_of(&mut cmd, data_dir);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn refs_of(repo: &Path) -> std::collections::BTreeMap<String, String> {
    git(repo, &["for-each-ref", "--format=%(refname) %(objectname)"])
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, oid)| (name.to_string(), oid.to_string()))
        .collect()
}

pub fn fsck(repo: &Path) {
    git(repo, &["fsck", "--strict", "--no-dangling"]);
}

/// An upstream: a bare repository plus a work tree that commits and pushes to it.
pub struct Upstream {
    pub dir: tempfile::TempDir,
}

impl Upstream {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(
            root,
            &["init", "-q", "--bare", "-b", "main", "upstream.git"],
        );
        git(root, &["init", "-q", "-b", "main", "work"]);
        let up = Self { dir };
        git(
            &up.work(),
            &["remote", "add", "origin", up.bare().to_str().unwrap()],
        );
        up
    }

    /// An upstream whose `main` has one commit, pushed.
    pub fn with_main() -> Self {
        let up = Self::new();
        up.commit("main", "a");
        up.push(&["main"]);
        up
    }

    pub fn bare(&self) -> PathBuf {
        self.dir.path().join("upstream.git")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.bare().display())
    }

    /// Commits a change to `file` on `branch` (created from the current HEAD if new)
    /// and returns the commit id.
    pub fn commit(&self, branch: &str, file: &str) -> String {
        let work = self.work();
        let has_commits = Command::new("git")
            .current_dir(&work)
            .args(["rev-parse", "--verify", "-q", "HEAD"])
            .output()
            .unwrap()
            .status
            .success();
        if has_commits {
            git(&work, &["checkout", "-q", "-B", branch]);
        } else {
            git(&work, &["checkout", "-q", "--orphan", branch]);
        }
        let path = work.join(file);
        let previous = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, format!("{previous}{branch} {file}\n")).unwrap();
        git(&work, &["add", file]);
        git(&work, &["commit", "-q", "-m", &format!("{branch}: {file}")]);
        git(&work, &["rev-parse", "HEAD"]).trim().to_string()
    }

    pub fn push(&self, refspecs: &[&str]) {
        let mut args = vec!["push", "-q", "origin"];
        args.extend_from_slice(refspecs);
        git(&self.work(), &args);
    }
}

/// A bare repository to push into, standing for a push mirror's destination.
pub fn bare_repo(dir: &Path, name: &str) -> PathBuf {
    git(dir, &["init", "-q", "--bare", "-b", "main", name]);
    dir.join(name)
}

/// Thin JSON client for the admin API of a [`Server`].
pub struct Api<'a> {
    pub server: &'a Server,
    http: reqwest::Client,
}

impl<'a> Api<'a> {
    pub fn new(server: &'a Server) -> Self {
        Self {
            server,
            http: client(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .request(method, self.server.url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, json)
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Creates a mirror and returns its id; panics unless the API says 201.
    pub async fn create(&self, direction: &str, body: serde_json::Value) -> i64 {
        let (status, mirror) = self
            .post(&format!("/api/v1/mirrors/{direction}"), body)
            .await;
        assert_eq!(status, 201, "{mirror}");
        mirror["mirror_id"].as_i64().unwrap()
    }

    /// A manual sync, not waited for; returns the queued run's id.
    pub async fn queue(&self, mirror_id: i64) -> i64 {
        let (status, queued) = self
            .post(
                &format!("/api/v1/mirrors/{mirror_id}/sync"),
                serde_json::json!({}),
            )
            .await;
        assert_eq!(status, 202, "{queued}");
        queued["run_id"].as_i64().unwrap()
    }

    /// A manual sync, waited for; returns the finished run.
    pub async fn sync(&self, mirror_id: i64) -> serde_json::Value {
        let (status, run) = self
            .post(
                &format!("/api/v1/mirrors/{mirror_id}/sync?wait=true"),
                serde_json::json!({}),
            )
            .await;
        assert_eq!(status, 200, "{run}");
        run
    }
}

/// The settings of a server that accepts the tests' remotes: file://, and plain
/// http on loopback.
pub const LOCAL_REMOTES: &[(&str, &str)] = &[
    ("MIRRORHOST_ADMIN_TOKEN", ADMIN_TOKEN),
    ("MIRRORHOST_ALLOW_LOCAL_REMOTES", "true"),
    ("MIRRORHOST_ALLOW_HTTP_REMOTES", "true"),
];

/// Starts a server that accepts the tests' local remotes.
pub fn local_server() -> Server {
    Server::start(LOCAL_REMOTES)
}

/// Where the server keeps a project's bare repository.
pub fn project_repo(server: &Server, project_id: &str) -> PathBuf {
    server
        .data_dir
        .path()
        .join("repos")
        .join(format!("{project_id}.git"))
}

/// `GET /metrics` (unauthenticated, as scrapers expect): parsed, and as text.
pub async fn scrape(server: &Server) -> (prometheus_parse::Scrape, String) {
    let response = reqwest::get(server.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    (prometheus_parse::Scrape::parse(lines).unwrap(), text)
}

/// Sums a metric's samples that carry all of `labels`.
pub fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// A 2 MiB upstream over smart HTTP and a server whose mirrors of it move at
/// 128 KiB/s: about sixteen seconds a run.
pub async fn slow_upstream(root: &Path) -> crate::http_git::HttpGit {
    let upstream = bare_repo(root, "big.git");
    crate::history::generate(
        &upstream,
        crate::history::History {
            commits: 8,
            blob_bytes: 256 << 10,
            dirs: 1,
            refs_every: 0,
        },
    );
    crate::http_git::HttpGit::start(root).await
}

pub async fn slow_mirror(api: &Api<'_>, url: &str, project: &str) -> i64 {
    let id = api
        .create(
            "pull",
            serde_json::json!({"project_id": project, "url": url}),
        )
        .await;
    let (status, _) = api
        .put(
            &format!("/api/v1/mirrors/{id}/bandwidth"),
            serde_json::json!({"max_bytes_per_second": 131_072}),
        )
        .await;
    assert_eq!(status, 200);
    id
}

/// A loopback listener that accepts every connection and answers nothing.
pub fn silent_listener() -> SocketAddr {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    addr
}

/// A manual-strategy pull mirror of `project`, synced, whose upstream then
/// rewrote `main` (reset one commit back, a new commit, forced): the next
/// run opens a conflict. The upstream, the mirror's id and the new tip.
pub async fn mirror_with_rewritten_main(api: &Api<'_>, project: &str) -> (Upstream, i64, String) {
    let up = Upstream::new();
    up.commit("main", "a");
    up.commit("main", "b");
    up.push(&["main"]);
    let id = api
        .create(
            "pull",
            serde_json::json!({"project_id": project, "url": up.url(), "conflict_strategy": "manual"}),
        )
        .await;
    assert_eq!(api.sync(id).await["status"], "succeeded");
    git(&up.work(), &["reset", "-q", "--hard", "HEAD~1"]);
    let rewritten = up.commit("main", "rewritten");
    git(&up.work(), &["push", "-q", "--force", "origin", "main"]);
    (up, id, rewritten)
}
