//! Shared test fixtures: a running `mirrorhost serve` process and HTTP helpers.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Compiled plugins survive between test runs here, so only the first run pays
/// for cranelift.
pub fn plugin_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

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
        let data_dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mirrorhost"));
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
            .stderr(Stdio::piped());
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
        let bound = line
            .split("bound=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
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

    /// Sends SIGTERM, waits for the exit status, and returns it with the whole log.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        // The reader thread ends when the process's stderr closes.
        while let Ok(line) = self.log.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(line);
        }
        (exit, std::mem::take(&mut self.seen))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}
