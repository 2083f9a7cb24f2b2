//! What the engine's unit tests share: the git CLI, the reference they are
//! checked against.

use std::path::Path;
use std::process::Command;

/// `git <args>` in `dir` with a fixed identity; its trimmed output. Panics on
/// failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
