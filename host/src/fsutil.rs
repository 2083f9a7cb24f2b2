//! Small filesystem helpers shared by the modules that keep files of their own.

use std::io::Write;
use std::path::Path;

/// Creates `path` with `bytes`, readable and writable by the owner only (0600 on
/// Unix). Fails if the file exists: a secret is never silently replaced.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes the entries of directory `dir` durable: a rename into it survives a
/// power loss only once the directory itself is synced.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
