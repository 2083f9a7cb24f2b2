//! What the benches share: running git, making bare repositories, building the
//! service. Each bench uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use mirrorhost::api::App;
use mirrorhost::config::{Config, Overrides};
use mirrorhost::server::{self, Secrets};

/// The service's state as `serve` builds it, on `data`, with `overrides`; no
/// reconciliation sweeps, and the plugin cache shared by every bench run.
pub async fn app(data: &Path, overrides: Overrides) -> Arc<App> {
    let config = Config::resolve(Overrides {
        data_dir: Some(data.to_path_buf()),
        plugin_cache_dir: Some(std::env::temp_dir().join("mirrorhost-bench-plugin-cache")),
        reconcile_seconds: Some(0),
        indexer_program: Some(env!("CARGO_BIN_EXE_mirrorhost").into()),
        ..overrides
    })
    .expect("config");
    let secrets = Secrets {
        admin_token: Some("bench-token"),
        master_key: None,
    };
    Arc::new(server::build(config, &secrets).await.expect("app"))
}

/// Runs `git <args>` in `dir` with a fixed identity; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A new bare repository `dir/name` with `main` as its default branch.
pub fn bare(dir: &Path, name: &str) -> PathBuf {
    git(dir, &["init", "-q", "--bare", "-b", "main", name]);
    dir.join(name)
}
