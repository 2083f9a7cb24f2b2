//! What the benches share: running git and making bare repositories.

use std::path::{Path, PathBuf};
use std::process::Command;

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
