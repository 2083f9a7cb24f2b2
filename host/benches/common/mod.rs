//! What the benches share: running git, making bare repositories, building the
//! service. Each bench uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mirrorhost::config::Overrides;
use mirrorhost::service::App;

pub mod child;
#[path = "../../../tests/fixtures/git.rs"]
pub mod git_cli;
#[path = "../../../tests/fixtures/app.rs"]
mod in_process;
#[path = "../../../tests/fixtures/postgres.rs"]
pub mod test_postgres;

use git_cli::git;

/// The service's state as `serve` builds it, on `data`, with `overrides`; no
/// reconciliation sweeps, and the plugin cache shared by every bench run.
pub async fn app(data: &Path, overrides: Overrides) -> Arc<App> {
    Arc::new(in_process_app(data, overrides).await)
}

/// The compiled-plugin cache every bench and test run shares.
pub fn plugin_cache_dir() -> PathBuf {
    in_process::plugin_cache_dir()
}

/// [`app`] before it is shared, for a bench that sets its clock.
pub async fn in_process_app(data: &Path, overrides: Overrides) -> App {
    in_process::app(data, "bench-token", overrides).await
}

/// The value after `name` on the bench's command line (`-- --rounds 10`).
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The multi-threaded runtime a bench drives the service on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Serves `app` (API, webhooks, background tasks) on a loopback port.
pub async fn serve(app: Arc<App>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(mirrorhost::server::serve(
        app,
        listener,
        std::future::pending(),
    ));
    addr
}

/// A work tree `root/work` cloned from `upstream`, to commit and push from.
pub fn work_tree(root: &Path, upstream: &Path) -> PathBuf {
    let from = upstream.to_str().expect("utf-8");
    git(root, &["clone", "-q", "--no-local", from, "work"]);
    root.join("work")
}

/// A new bare repository `dir/name` with `main` as its default branch.
pub fn bare(dir: &Path, name: &str) -> PathBuf {
    git(dir, &["init", "-q", "--bare", "-b", "main", name]);
    dir.join(name)
}
