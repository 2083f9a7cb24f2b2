//! The git CLI as the engine runs it (housekeeping, the connectivity check):
//! none of the host's or the user's configuration, and no secret of the
//! service's environment.

use std::path::Path;
use std::process::Command;

/// `git` with a clean environment: PATH kept, configuration files off.
pub(super) fn command() -> Command {
    let mut command = Command::new("git");
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LC_ALL", "C");
    command
}

/// [`command`] working in the repository `repo`.
pub(super) fn in_repo(repo: &Path) -> Command {
    let mut command = command();
    command.arg("-C").arg(repo);
    command
}
