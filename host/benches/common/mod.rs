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

/// A new bare repository `dir/name` with `main` as its default branch.
pub fn bare(dir: &Path, name: &str) -> PathBuf {
    git(dir, &["init", "-q", "--bare", "-b", "main", name]);
    dir.join(name)
}
