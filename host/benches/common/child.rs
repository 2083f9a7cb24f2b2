//! The service as a child process (`mirrorhost serve`), for benches that kill
//! it or read its log.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "bench-child-token";

pub struct Service {
    child: Child,
    addr: SocketAddr,
}

impl Service {
    /// Starts the built binary on `data` in a process group of its own, with
    /// local remotes allowed, the shared plugin cache, and `envs`; its log
    /// goes to `log`.
    pub fn start(data: &Path, envs: &[(&str, &str)], log: Stdio) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(env!("CARGO_BIN_EXE_mirrorhost"));
        command
            .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
            .arg(data)
            .env("MIRRORHOST_ADMIN_TOKEN", TOKEN)
            .env("MIRRORHOST_ALLOW_LOCAL_REMOTES", "true")
            .env("MIRRORHOST_ALLOW_HTTP_REMOTES", "true")
            .env("MIRRORHOST_PLUGIN_CACHE_DIR", super::plugin_cache_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0);
        for (key, value) in envs {
            command.env(key, value);
        }
        let child = command.spawn().expect("start mirrorhost");
        Self { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Some((200, _)) = call(http, "GET", &self.url("/readyz"), Value::Null).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the service never became ready");
    }

    /// The command lines of the service's children now (its process group).
    pub fn children(&self) -> String {
        let out = Command::new("pgrep")
            .args(["-a", "-g", &self.child.id().to_string()])
            .output()
            .expect("pgrep");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGKILL to the service and every child it started.
    pub fn kill(mut self) {
        let group = format!("-{}", self.child.id());
        let killed = Command::new("kill")
            .args(["-KILL", "--", &group])
            .status()
            .expect("kill");
        assert!(killed.success());
        let _ = self.child.wait();
    }
}

/// An admin API call (GET, or POST with `body`) with the token; `None` when
/// the service did not answer.
pub async fn call(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    body: Value,
) -> Option<(u16, Value)> {
    let request = match method {
        "POST" => http.post(url).json(&body),
        _ => http.get(url),
    };
    let answer = request.bearer_auth(TOKEN).send().await.ok()?;
    let status = answer.status().as_u16();
    Some((status, answer.json().await.unwrap_or(Value::Null)))
}

/// Every run of mirror `id`, newest first, page after page.
pub async fn all_runs(http: &reqwest::Client, service: &Service, id: i64) -> Vec<Value> {
    let mut runs = Vec::new();
    for page in 1.. {
        let url = service.url(&format!(
            "/api/v1/mirrors/{id}/runs?per_page=100&page={page}"
        ));
        let (_, body) = call(http, "GET", &url, Value::Null).await.expect("runs");
        let rows = body["runs"].as_array().cloned().unwrap_or_default();
        let last = rows.len() < 100;
        runs.extend(rows);
        if last {
            return runs;
        }
    }
    runs
}
