//! A real Git LFS server for tests: giftless (PyPI), run by flask on a free
//! loopback port with local storage, and the real `git lfs` client beside
//! it. giftless is installed into a virtual environment next to the build
//! on first use; where that or git-lfs is impossible the LFS tests skip,
//! saying so, unless `MIRRORHOST_REQUIRE_LFS` is set (`.ci/run` sets it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const REQUIRE: &str = "MIRRORHOST_REQUIRE_LFS";

/// giftless and the libraries its wheel does not declare, pinned.
const PACKAGES: &[&str] = &[
    "giftless==0.6.2",
    "Flask==3.1.3",
    "Flask-Classful==0.16.0",
    "flask-marshmallow==1.5.0",
    "marshmallow==4.4.0",
    "webargs==8.7.1",
    "PyJWT==2.15.1",
    "PyYAML==6.0.4",
    "python-dotenv==1.2.4",
    "figcan==0.0.4",
    "python-dateutil==4.0.0",
    "cachetools==8.0.2",
    "typing_extensions==4.16.0",
    "requests==2.34.2",
];

/// giftless's anonymous access does not cover object transfers
/// (`DefaultIdentity.is_authorized` finds no grant for an object): this
/// identity may do anything, which is what a test server needs.
const AUTH_MODULE: &str = "\
from giftless.auth.identity import DefaultIdentity

class Everyone(DefaultIdentity):
    def is_authorized(self, *args, **kwargs):
        return True

def everyone(_request):
    return Everyone(name=\"test\")
";

/// A running giftless; stopped when dropped.
pub struct Giftless {
    pub addr: SocketAddr,
    pub storage: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Giftless {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The virtual environment's flask, made once per test process.
fn flask() -> Option<&'static Path> {
    static FLASK: OnceLock<Option<PathBuf>> = OnceLock::new();
    FLASK
        .get_or_init(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
            let venv = target.join("giftless-venv");
            let flask = venv.join("bin/flask");
            if flask.exists() {
                return Some(flask);
            }
            let made = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success());
            let installed = made
                && Command::new(venv.join("bin/python"))
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                    ])
                    .args(PACKAGES)
                    .status()
                    .is_ok_and(|s| s.success());
            installed.then_some(flask)
        })
        .as_deref()
}

/// Whether `git lfs` runs here.
fn git_lfs() -> bool {
    Command::new("git")
        .args(["lfs", "version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Giftless {
    /// A fresh server with empty storage, or `None` (said on stderr) where
    /// giftless or git-lfs cannot be had and the run does not require them.
    pub fn start() -> Option<Self> {
        let (Some(flask), true) = (flask(), git_lfs()) else {
            assert!(
                std::env::var_os(REQUIRE).is_none(),
                "{REQUIRE} is set but giftless (PyPI) or git-lfs cannot be had"
            );
            eprintln!("skipped: giftless (PyPI) or git-lfs is not available");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).unwrap();
        std::fs::write(dir.path().join("lfs_test_auth.py"), AUTH_MODULE).unwrap();
        let config = dir.path().join("giftless.yaml");
        std::fs::write(
            &config,
            format!(
                "AUTH_PROVIDERS:\n  - lfs_test_auth:everyone\n\
                 PRE_AUTHORIZED_ACTION_PROVIDER: null\nLEGACY_ENDPOINTS: false\n\
                 TRANSFER_ADAPTERS:\n  basic:\n    factory: giftless.transfer.basic_streaming:factory\n\
                 \x20   options:\n      storage_class: giftless.storage.local_storage:LocalStorage\n\
                 \x20     storage_options:\n        path: {}\n",
                storage.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("giftless.log")).unwrap();
        let child = Command::new(flask)
            .args(["--app", "giftless.wsgi_entrypoint", "run", "--port"])
            .arg(port.to_string())
            .env("PYTHONPATH", dir.path())
            .env("GIFTLESS_CONFIG_FILE", &config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let server = Self {
            addr,
            storage,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "giftless did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(server)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
