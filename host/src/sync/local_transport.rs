//! file:// remotes reached as git reaches them: `git upload-pack` (fetch) or
//! `git receive-pack` (push) on the path, the smart protocol over its pipes.
//! libgit2's own local transport builds the pack in the service, recomputing
//! every delta (tokio's history: 45.6 s and 490 MiB against 2.3 s for `git
//! fetch`); upload-pack reuses the remote's packs, and the pack reaches our
//! indexer child as from any other remote.
//!
//! A pull lists a local repository in-process ([`listing_url`]) and fetches
//! from it without a protocol ([`local_fetch`](super::local_fetch)); what
//! goes through here is pushes and the other downloads (a resolution's, a
//! push's look at a destination's diverged tips).

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Stdio};
use std::sync::Once;

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};

use super::git_cli;

static REGISTER: Once = Once::new();

/// Makes every file:// remote from now on go through git's programs.
pub fn register() -> Result<(), git2::Error> {
    let mut result = Ok(());
    REGISTER.call_once(|| {
        // SAFETY: libgit2's list of transports is not synchronised with
        // transports being created; the service registers once, at start,
        // before its first transfer.
        #[allow(unsafe_code)]
        let registered = unsafe {
            git2::transport::register("file", |remote| {
                // Stateful, as ssh: one conversation per connection.
                Transport::smart(remote, false, GitPrograms)
            })
        };
        result = registered;
    });
    result
}

struct GitPrograms;

impl SmartSubtransport for GitPrograms {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        let path = file_path(url)
            .ok_or_else(|| git2::Error::from_str(&format!("not a file:// URL: {url}")))?;
        let program = match action {
            Service::UploadPackLs | Service::UploadPack => "upload-pack",
            Service::ReceivePackLs | Service::ReceivePack => "receive-pack",
        };
        let mut child = git_cli::command()
            .arg(program)
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| git2::Error::from_str(&format!("cannot run git {program}: {e}")))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(git2::Error::from_str("git's pipes were not opened"));
        };
        Ok(Box::new(Pipes {
            child,
            stdin: Some(stdin),
            stdout: Some(stdout),
            stderr,
        }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

/// The URL a pull lists `url`'s refs through: for file:// of a directory,
/// the bare path, which libgit2 reads in-process (a no-op sync then starts
/// no program; its local transport is slow only at building packs, which the
/// fetch leaves to pack-objects in that directory). Anything else, a
/// missing path included (upload-pack then says what is wrong), as it is.
pub(super) fn listing_url(url: &str) -> String {
    let path = file_path(url).filter(|path| url.starts_with("file://") && path.is_dir());
    match path.and_then(|path| path.into_os_string().into_string().ok()) {
        Some(path) => path,
        None => url.to_string(),
    }
}

fn file_path(url: &str) -> Option<PathBuf> {
    url::Url::parse(url).ok()?.to_file_path().ok()
}

/// One conversation with git's program; the program ends with it.
struct Pipes {
    child: Child,
    /// Open until the conversation ends (then closed, to end the program).
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: ChildStderr,
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the conversation with git ended")
}

impl Read for Pipes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.as_mut().ok_or_else(closed)?.read(buf)?;
        if n == 0 && !buf.is_empty() {
            // The program ended: if it failed, its words say why (it is
            // gone, so its stderr ends).
            if let Ok(status) = self.child.wait()
                && !status.success()
            {
                let mut said = String::new();
                let _ = (&mut self.stderr).take(4096).read_to_string(&mut said);
                return Err(io::Error::other(said.trim().to_string()));
            }
        }
        Ok(n)
    }
}

impl Write for Pipes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stdin.as_mut().ok_or_else(closed)?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stdin.as_mut().ok_or_else(closed)?.flush()
    }
}

impl Drop for Pipes {
    fn drop(&mut self) {
        // Closed pipes end the program whether it waits to read (a
        // conversation cut short) or to write (output nobody reads); one that
        // finished its work (receive-pack's hooks) is let finish.
        self.stdin.take();
        self.stdout.take();
        let _ = self.child.wait();
    }
}
