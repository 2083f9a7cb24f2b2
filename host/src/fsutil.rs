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

/// Makes everything written to the filesystem that holds `path` durable, in
/// one call: one journal commit for a whole batch of files, where an fsync
/// of each would cost one per file.
#[allow(unsafe_code)]
pub fn sync_filesystem(path: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs reads only the descriptor, which `file` keeps open
        // for the length of the call.
        if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        file.sync_all()?;
        // SAFETY: sync takes no arguments and cannot fail.
        unsafe { libc::sync() };
        Ok(())
    }
}
