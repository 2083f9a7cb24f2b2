//! A pull's fetch from a file:// remote, without a protocol: `git
//! pack-objects` run in the remote's repository makes the pack (reusing its
//! deltas and bitmaps, as it does under upload-pack) and the service pipes
//! it to its indexer child. `git clone --mirror file://` runs upload-pack
//! between the two, to negotiate what the client has; a mirror knows that
//! already: everything its refs reach is in its repository (the connectivity
//! check keeps it so), so the tips of its refs that the remote holds are the
//! haves. One process fewer than git's tree, the largest after pack-objects
//! (BENCHMARKS.md, "file:// pulls").
//!
//! The copy loop is the service's, so a local fetch counts its bytes, keeps
//! to the bandwidth caps, shows progress and stops on cancel or at the run's
//! deadline as a remote's does. There is no stall limit: pack-objects is a
//! local program, silent while it counts objects, not a remote that may hang.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use git2::Oid;

use super::packs::Receiving;
use super::transport::Transfer;
use super::{Run, SyncError, git_cli};

/// The pieces the pack is copied in.
const CHUNK: usize = 64 << 10;
/// How often the copy wakes while pack-objects is silent, to ask whether the
/// run may go on.
const WAKE_EVERY: Duration = Duration::from_millis(100);
/// What is kept of pack-objects' complaints.
const STDERR_KEPT: u64 = 4096;

impl Run<'_> {
    /// Fetches `wanted` (ref name -> object) from the repository at `remote`,
    /// a directory; pack-objects leaves out what the local tips `ours` reach.
    pub(super) fn fetch_local(
        &self,
        remote: &Path,
        wanted: &BTreeMap<&str, Oid>,
        ours: impl IntoIterator<Item = Oid>,
        transfer: &Transfer,
    ) -> Result<(), SyncError> {
        let (git_dir, haves) = common_tips(remote, ours)?;
        let mut packer = PackObjects::start(&git_dir, wanted.values().copied(), &haves)?;
        self.tips.expect(wanted.values().copied());
        let mut receiving = Receiving::start(self.repo, self.engine.pack_indexer, self.tips)
            .map_err(SyncError::Git)?;
        let copied = self.copy(&packer.chunks, &mut receiving, transfer);
        if let Err(e) = copied.and_then(|()| packer.finish()) {
            // Pack-objects killed if it still runs, then the indexer refuses
            // the partial pack and removes its files.
            drop(packer);
            drop(receiving);
            return Err(e);
        }
        receiving.finish().map_err(SyncError::Git)?;
        // The pack backend sees the new pack now rather than on its first miss.
        self.repo.odb()?.refresh()?;
        self.check_sent(wanted)
    }

    /// Copies the pack from `chunks` to the indexer until it ends; stops
    /// early if the run may not go on or the indexer refuses the pack.
    fn copy(
        &self,
        chunks: &Receiver<io::Result<Vec<u8>>>,
        receiving: &mut Receiving,
        transfer: &Transfer,
    ) -> Result<(), SyncError> {
        let mut bytes = 0u64;
        loop {
            if !self.may_go_on() {
                return Err(self.stopped());
            }
            let chunk = match chunks.recv_timeout(WAKE_EVERY) {
                Ok(chunk) => chunk.map_err(|e| pack_objects_failed(&e.to_string()))?,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            receiving.write(&chunk).map_err(SyncError::Git)?;
            bytes += chunk.len() as u64;
            let (received, total) = receiving.objects();
            self.moved(transfer, received.into(), total.into(), bytes);
        }
    }
}

/// The git directory of the repository at `remote`, and which of `ours` it
/// holds: the haves pack-objects leaves out. The repository is closed on
/// return, so that its packs are not kept mapped while the pack is made.
fn common_tips(
    remote: &Path,
    ours: impl IntoIterator<Item = Oid>,
) -> Result<(PathBuf, Vec<Oid>), SyncError> {
    let repo = git2::Repository::open(remote)?;
    let odb = repo.odb()?;
    let ours: HashSet<Oid> = ours.into_iter().collect();
    let haves = ours.into_iter().filter(|oid| odb.exists(*oid)).collect();
    Ok((repo.path().to_path_buf(), haves))
}

/// `git pack-objects` making the pack of the wanted objects but not the
/// haves, on its standard output.
struct PackObjects {
    child: Child,
    /// The pack, read by a thread of its own, which ends with the output or
    /// when this end is dropped.
    chunks: Receiver<io::Result<Vec<u8>>>,
    /// Its standard error, read by a thread; taken by `finish`.
    complaints: Option<JoinHandle<String>>,
}

impl PackObjects {
    fn start(
        git_dir: &Path,
        wanted: impl Iterator<Item = Oid>,
        haves: &[Oid],
    ) -> Result<Self, SyncError> {
        // The arguments upload-pack gives it for a client that takes thin
        // packs and offset deltas, quiet.
        let mut child = git_cli::command()
            .arg("--git-dir")
            .arg(git_dir)
            .args(["pack-objects", "--revs", "--thin", "--stdout"])
            .args(["--delta-base-offset", "-q"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| pack_objects_failed(&format!("cannot run it: {e}")))?;
        let (Some(mut input), Some(output), Some(errors)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(pack_objects_failed("its pipes were not opened"));
        };
        let mut packer = Self {
            child,
            chunks: read_chunks(output),
            complaints: Some(collect(errors)),
        };
        // It reads every line before it writes a byte, so writing them all
        // first cannot deadlock. One that fails early (a revision it does
        // not know) closes its input: its status and words say why.
        let lines = revisions(wanted, haves);
        if input.write_all(lines.as_bytes()).is_err() {
            drop(input);
            packer.finish()?;
        }
        Ok(packer)
    }

    /// Waits for pack-objects; what it said if it failed.
    fn finish(&mut self) -> Result<(), SyncError> {
        let status = self.child.wait()?;
        let said = self
            .complaints
            .take()
            .and_then(|c| c.join().ok())
            .unwrap_or_default();
        match (status.success(), said.trim()) {
            (true, _) => Ok(()),
            (false, "") => Err(pack_objects_failed(&status.to_string())),
            (false, said) => Err(pack_objects_failed(said)),
        }
    }
}

impl Drop for PackObjects {
    fn drop(&mut self) {
        // Unfinished: the run stopped or the indexer refused the pack.
        if self.complaints.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The lines pack-objects reads: the wanted objects, then the haves.
fn revisions(wanted: impl Iterator<Item = Oid>, haves: &[Oid]) -> String {
    let mut lines: String = wanted.map(|oid| format!("{oid}\n")).collect();
    lines.push_str("--not\n");
    lines.extend(haves.iter().map(|oid| format!("{oid}\n")));
    lines
}

/// A thread reading `output` in chunks into the channel returned; the
/// channel closes at the end of the output. Two chunks wait at most.
fn read_chunks(mut output: ChildStdout) -> Receiver<io::Result<Vec<u8>>> {
    let (send, receive) = mpsc::sync_channel(2);
    std::thread::spawn(move || {
        loop {
            let mut chunk = vec![0; CHUNK];
            let read = match output.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = read.is_err();
            let sent = send.send(read.map(|n| {
                chunk.truncate(n);
                chunk
            }));
            // Gone: the copy stopped; an error ends the output.
            if sent.is_err() || failed {
                return;
            }
        }
    });
    receive
}

/// A thread keeping the first words of `errors` and draining the rest, so
/// that pack-objects never blocks on a full pipe.
fn collect(errors: ChildStderr) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut errors = errors;
        let mut said = String::new();
        let _ = (&mut errors).take(STDERR_KEPT).read_to_string(&mut said);
        let _ = io::copy(&mut errors, &mut io::sink());
        said
    })
}

fn pack_objects_failed(why: &str) -> SyncError {
    SyncError::Git(format!(
        "git pack-objects in the remote's repository failed: {why}"
    ))
}
