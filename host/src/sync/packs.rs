//! Received packs: the pack stream of every fetch goes to gitoxide's pack
//! indexer (gix-pack) instead of libgit2's.
//!
//! libgit2 hands a fetch's pack to the object database's `writepack`. Its own
//! indexer hashes every object on the fetching thread and keeps a 16 MiB
//! delta-base cache and two maps per object: on an initial pull of 100k objects
//! it took 1.15x git's time and 2.8x its memory (BENCHMARKS.md). gix-pack parses
//! the stream as it arrives, resolves deltas on every core and keeps about a
//! hundred bytes per object. Both check SHA-1 with collision detection, as git does.
//!
//! The backend registered here implements `writepack` only; libgit2 skips it for
//! every read and keeps reading through its own loose and pack backends, which
//! find the new pack on their next refresh.

// The libgit2 ODB backend interface is a C vtable: this module is where the
// engine's unsafe code lives, each block with its reason.
#![allow(unsafe_code)]

use std::ffi::{CString, c_int, c_void};
use std::io::{self, BufRead, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use git2::Binding;
use gix_utils::progress::{Count, Id, MessageLevel, NestedProgress, Progress, Step, StepShared};
use libgit2_sys as raw;

/// Above libgit2's loose (1) and pack (2) backends, so that fetches write here.
const PRIORITY: c_int = 100;
/// Chunks of pack data in flight between libgit2 and the indexer: at most this
/// many pkt-lines (64 KiB each) are buffered.
const IN_FLIGHT: usize = 16;
/// gix-pack's id for its "objects indexed" counter.
const INDEXED_OBJECTS: Id = *b"IWIO";

/// Makes fetches into `repo` write their packs through gix-pack, refusing a pack
/// that declares an object over `max_object_bytes`.
pub fn install(repo: &git2::Repository, max_object_bytes: u64) -> Result<(), git2::Error> {
    let odb = repo.odb()?;
    let mut backend = Box::new(Backend {
        // SAFETY: the vtable is plain data (a version, a pointer, optional
        // function pointers); all-zero is "no odb, no functions", which
        // `git_odb_init_backend` then stamps with the version.
        raw: unsafe { std::mem::zeroed() },
        objects_dir: repo.path().join("objects"),
        max_object_bytes,
    });
    // SAFETY: `backend.raw` is a valid, writable vtable.
    check(unsafe { raw::git_odb_init_backend(&mut backend.raw, raw::GIT_ODB_BACKEND_VERSION) })?;
    backend.raw.writepack = Some(writepack);
    backend.raw.foreach = Some(foreach);
    backend.raw.free = Some(free_backend);
    let backend = Box::into_raw(backend);
    // SAFETY: the odb is live for the call; on success it owns the backend and
    // frees it through `free_backend`.
    let added = unsafe { raw::git_odb_add_backend(odb.raw(), &mut (*backend).raw, PRIORITY) };
    if let Err(e) = check(added) {
        // SAFETY: not registered, so still ours alone.
        drop(unsafe { Box::from_raw(backend) });
        return Err(e);
    }
    Ok(())
}

/// Removes the temporary files that indexers cut off by a crash left in the
/// pack directories under `repos_dir` (`<owner>/<name>.git`); a killed fetch of
/// a large repository would otherwise leave its partial pack there for good.
/// Only for start-up, before any run: a live indexer's files look the same.
pub fn remove_leftovers(repos_dir: &Path) -> usize {
    entries(repos_dir)
        .flat_map(|owner| entries(&owner.path()))
        .flat_map(|repo| entries(&repo.path().join("objects/pack")))
        .filter(|file| {
            file.file_name()
                .to_str()
                // gix-pack's temporary files, and libgit2's from before it.
                .is_some_and(|name| name.starts_with(".tmp") || name.starts_with("pack_git2_"))
        })
        .filter(|file| std::fs::remove_file(file.path()).is_ok())
        .count()
}

/// The entries of `dir`; none if it cannot be read.
fn entries(dir: &Path) -> impl Iterator<Item = std::fs::DirEntry> + use<> {
    std::fs::read_dir(dir).into_iter().flatten().flatten()
}

/// The registered backend. `raw` comes first so that the pointer libgit2 hands
/// back to the callbacks is a pointer to the whole struct.
#[repr(C)]
struct Backend {
    raw: raw::git_odb_backend,
    objects_dir: PathBuf,
    max_object_bytes: u64,
}

/// One pack being received. `raw` first, as in [`Backend`].
#[repr(C)]
struct Writepack {
    raw: raw::git_odb_writepack,
    odb: *mut raw::git_odb,
    /// Closed by `commit` (end of the pack) or `free` (abandoned).
    feed: Option<SyncSender<Vec<u8>>>,
    indexer: Option<JoinHandle<Result<u32, String>>>,
    interrupt: Arc<AtomicBool>,
    indexed: Arc<AtomicUsize>,
    /// The pack header's first bytes, until its object count is known.
    header: Vec<u8>,
}

extern "C" fn writepack(
    out: *mut *mut raw::git_odb_writepack,
    backend: *mut raw::git_odb_backend,
    odb: *mut raw::git_odb,
    _progress: raw::git_indexer_progress_cb,
    _payload: *mut c_void,
) -> c_int {
    // SAFETY: libgit2 passes back the vtable `install` registered, which is the
    // first field of a live `Backend`.
    let backend = unsafe { &*backend.cast::<Backend>() };
    let (feed, input) = sync_channel(IN_FLIGHT);
    let interrupt = Arc::new(AtomicBool::new(false));
    let indexed = Arc::new(AtomicUsize::new(0));
    let job = Indexing {
        objects_dir: backend.objects_dir.clone(),
        max_object_bytes: backend.max_object_bytes,
        input,
        interrupt: interrupt.clone(),
        indexed: indexed.clone(),
    };
    let indexer = match std::thread::Builder::new()
        .name("pack-indexer".into())
        .spawn(move || job.run())
    {
        Ok(handle) => handle,
        Err(e) => return fail(&format!("cannot start the pack indexer: {e}")),
    };
    let pack = Box::new(Writepack {
        raw: raw::git_odb_writepack {
            backend: std::ptr::from_ref(&backend.raw).cast_mut(),
            append: Some(append),
            commit: Some(commit),
            free: Some(free_writepack),
        },
        odb,
        feed: Some(feed),
        indexer: Some(indexer),
        interrupt,
        indexed,
        header: Vec::with_capacity(12),
    });
    // SAFETY: `out` is libgit2's out-parameter; it frees the pack through
    // `free_writepack`.
    unsafe { *out = &mut (*Box::into_raw(pack)).raw };
    0
}

extern "C" fn append(
    pack: *mut raw::git_odb_writepack,
    data: *const c_void,
    len: usize,
    stats: *mut raw::git_indexer_progress,
) -> c_int {
    // SAFETY: `pack` is the first field of the `Writepack` made by `writepack`,
    // alive until `free_writepack`; libgit2 calls its methods from one thread.
    let pack = unsafe { &mut *pack.cast::<Writepack>() };
    // SAFETY: libgit2 hands `len` readable bytes at `data`.
    let chunk = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
    pack.note_header(chunk);
    // SAFETY: libgit2's progress struct for this download, or null.
    if let Some(stats) = unsafe { stats.as_mut() } {
        pack.report(stats);
    }
    let sent = pack.feed.as_ref().map(|feed| feed.send(chunk.to_vec()));
    if let Some(Ok(())) = sent {
        return 0;
    }
    // The indexer stopped reading: it failed, and says why when joined.
    match pack.finish() {
        Err(message) => fail(&message),
        Ok(_) => fail("the pack indexer stopped before the end of the pack"),
    }
}

unsafe extern "C" fn commit(
    pack: *mut raw::git_odb_writepack,
    stats: *mut raw::git_indexer_progress,
) -> c_int {
    // SAFETY: as in `append`.
    let pack = unsafe { &mut *pack.cast::<Writepack>() };
    let objects = match pack.finish() {
        Ok(objects) => objects,
        Err(message) => return fail(&message),
    };
    // SAFETY: as in `append`.
    if let Some(stats) = unsafe { stats.as_mut() } {
        stats.total_objects = objects;
        stats.received_objects = objects;
        stats.indexed_objects = objects;
    }
    // SAFETY: the odb that asked for this writepack outlives it. A refresh makes
    // the pack backend see the new pack now rather than on its first miss.
    unsafe { raw::git_odb_refresh(pack.odb) }
}

unsafe extern "C" fn free_writepack(pack: *mut raw::git_odb_writepack) {
    if pack.is_null() {
        return;
    }
    // SAFETY: made by `Box::into_raw` in `writepack`; libgit2 frees it once.
    let mut pack = unsafe { Box::from_raw(pack.cast::<Writepack>()) };
    // An abandoned download: stop the indexer, which removes its temporary files.
    pack.interrupt.store(true, Ordering::Relaxed);
    let _ = pack.finish();
}

extern "C" fn foreach(
    _backend: *mut raw::git_odb_backend,
    _cb: raw::git_odb_foreach_cb,
    _payload: *mut c_void,
) -> c_int {
    // libgit2 calls `foreach` on every backend without checking for null; this
    // one stores nothing of its own.
    0
}

extern "C" fn free_backend(backend: *mut raw::git_odb_backend) {
    // SAFETY: made by `Box::into_raw` in `install`; the odb frees it once and
    // calls nothing of it afterwards.
    drop(unsafe { Box::from_raw(backend.cast::<Backend>()) });
}

impl Writepack {
    fn note_header(&mut self, chunk: &[u8]) {
        let missing = 12usize.saturating_sub(self.header.len());
        self.header
            .extend_from_slice(&chunk[..missing.min(chunk.len())]);
    }

    fn report(&self, stats: &mut raw::git_indexer_progress) {
        if let Some(count) = self.header.get(8..12) {
            stats.total_objects = u32::from_be_bytes([count[0], count[1], count[2], count[3]]);
        }
        let indexed = u32::try_from(self.indexed.load(Ordering::Relaxed)).unwrap_or(u32::MAX);
        stats.received_objects = indexed;
        stats.indexed_objects = indexed;
    }

    /// Ends the input and waits for the indexer: the number of objects indexed,
    /// or why the pack was refused.
    fn finish(&mut self) -> Result<u32, String> {
        drop(self.feed.take());
        match self.indexer.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err("the pack indexer panicked".into()),
            None => Err("the pack was already finished".into()),
        }
    }
}

/// Sets libgit2's error message, which git2 turns into the fetch's error.
fn fail(message: &str) -> c_int {
    let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: a valid C string for the duration of the call; libgit2 copies it.
    unsafe { raw::git_error_set_str(raw::GIT_ERROR_ODB as c_int, message.as_ptr()) };
    -1
}

fn check(code: c_int) -> Result<(), git2::Error> {
    if code < 0 {
        Err(git2::Error::last_error(code))
    } else {
        Ok(())
    }
}

/// The indexer thread's work: the pack stream in, `pack-*.pack` and `.idx` out.
struct Indexing {
    objects_dir: PathBuf,
    max_object_bytes: u64,
    input: Receiver<Vec<u8>>,
    interrupt: Arc<AtomicBool>,
    indexed: Arc<AtomicUsize>,
}

impl Indexing {
    fn run(self) -> Result<u32, String> {
        let pack_dir = self.objects_dir.join("pack");
        std::fs::create_dir_all(&pack_dir).map_err(|e| format!("pack directory: {e}"))?;
        // A thin pack leaves out bases the receiver already has; with no object
        // yet there is none to leave out, and gix-pack then writes the stream
        // as it comes instead of re-encoding every entry.
        let bases = if has_objects(&self.objects_dir) {
            Some(LocalObjects::open(&self.objects_dir)?)
        } else {
            None
        };
        let mut input = Feed {
            input: self.input,
            chunk: Vec::new(),
            at: 0,
        };
        let mut progress = ObjectCount {
            indexed: self.indexed,
            counts: false,
        };
        let outcome = gix_pack::Bundle::write_to_directory(
            &mut input,
            Some(&pack_dir),
            &mut progress,
            &self.interrupt,
            bases,
            gix_hash::Kind::Sha1,
            gix_pack::bundle::write::Options {
                // Sizes come from the sender: without a cap, a pack declaring a
                // huge object makes the indexer set aside that much memory (git's
                // index-pack does; a 64 GiB claim kills it) before the data can
                // prove the claim false.
                alloc_limit_bytes: Some(
                    usize::try_from(self.max_object_bytes).unwrap_or(usize::MAX),
                ),
                ..Default::default()
            },
        )
        .map_err(|e| {
            let e = e.to_string();
            // gix-pack's words for an object over `alloc_limit_bytes`; the
            // unit tests pin them.
            let hint = if e.contains("too large") {
                format!(" (max_object_bytes is {})", self.max_object_bytes)
            } else {
                String::new()
            };
            format!("received pack refused: {e}{hint}")
        })?;
        // The keep file guards the pack from a concurrent gc until refs point
        // into it; nothing here collects garbage, and refs are written next.
        if let Some(keep) = outcome.keep_path {
            std::fs::remove_file(&keep).map_err(|e| format!("pack keep file: {e}"))?;
        }
        // Temporary files are private (0600); packs are immutable, and git and
        // libgit2 make them read-only for everyone who may read the repository.
        for path in [outcome.data_path, outcome.index_path].iter().flatten() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444))
                .map_err(|e| format!("pack permissions: {e}"))?;
        }
        Ok(outcome.index.num_objects)
    }
}

/// Whether the repository holds any object: a pack index, or a loose object.
/// Read from the directory, not through libgit2, whose object walk lists and
/// sorts a whole pack index before it yields the first object.
fn has_objects(objects_dir: &Path) -> bool {
    let packed = entries(&objects_dir.join("pack"))
        .any(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".idx")));
    packed
        || entries(objects_dir).any(|e| {
            let name = e.file_name();
            let fan_out = name.len() == 2
                && name
                    .to_str()
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_hexdigit()));
            fan_out && entries(&e.path()).next().is_some()
        })
}

/// The pack stream as libgit2 delivers it; ends when the sender is dropped.
struct Feed {
    input: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for Feed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Feed {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.at == self.chunk.len() {
            match self.input.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.chunk[self.at..])
    }

    fn consume(&mut self, n: usize) {
        self.at = (self.at + n).min(self.chunk.len());
    }
}

/// The repository's objects, for the bases a thin pack leaves out.
struct LocalObjects(git2::Odb<'static>);

impl LocalObjects {
    fn open(objects_dir: &Path) -> Result<Self, String> {
        let odb = git2::Odb::new().map_err(|e| e.message().to_string())?;
        let dir = objects_dir
            .to_str()
            .ok_or_else(|| "the objects directory is not valid UTF-8".to_string())?;
        odb.add_disk_alternate(dir)
            .map_err(|e| e.message().to_string())?;
        Ok(Self(odb))
    }
}

impl gix_object::Find for LocalObjects {
    fn try_find<'a>(
        &self,
        id: &gix_hash::oid,
        buffer: &'a mut Vec<u8>,
    ) -> gix_error::Result<Option<gix_object::Data<'a>>> {
        let Ok(oid) = git2::Oid::from_bytes(id.as_bytes()) else {
            return Ok(None);
        };
        let Ok(object) = self.0.read(oid) else {
            return Ok(None);
        };
        let kind = match object.kind() {
            git2::ObjectType::Commit => gix_object::Kind::Commit,
            git2::ObjectType::Tree => gix_object::Kind::Tree,
            git2::ObjectType::Blob => gix_object::Kind::Blob,
            git2::ObjectType::Tag => gix_object::Kind::Tag,
            _ => return Ok(None),
        };
        buffer.clear();
        buffer.extend_from_slice(object.data());
        Ok(Some(gix_object::Data {
            kind,
            object_hash: gix_hash::Kind::Sha1,
            data: buffer,
        }))
    }
}

/// gix-pack's progress, reduced to the one figure libgit2's callbacks report:
/// objects indexed so far.
#[derive(Debug, Clone)]
struct ObjectCount {
    indexed: Arc<AtomicUsize>,
    /// Whether this node is the "objects indexed" counter.
    counts: bool,
}

impl Count for ObjectCount {
    fn set(&self, step: usize) {
        if self.counts {
            self.indexed.store(step, Ordering::Relaxed);
        }
    }

    fn step(&self) -> usize {
        if self.counts {
            self.indexed.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    fn inc_by(&self, step: usize) {
        if self.counts {
            self.indexed.fetch_add(step, Ordering::Relaxed);
        }
    }

    fn counter(&self) -> StepShared {
        if self.counts {
            self.indexed.clone()
        } else {
            Arc::default()
        }
    }
}

impl Progress for ObjectCount {
    fn init(&mut self, _max: Option<usize>, _unit: Option<gix_utils::progress::Unit>) {}

    fn set_max(&mut self, _max: Option<Step>) -> Option<Step> {
        None
    }

    fn set_name(&mut self, _name: String) {}

    fn name(&self) -> Option<String> {
        None
    }

    fn id(&self) -> Id {
        if self.counts {
            INDEXED_OBJECTS
        } else {
            gix_utils::progress::UNKNOWN
        }
    }

    fn message(&self, _level: MessageLevel, _message: String) {}
}

impl NestedProgress for ObjectCount {
    type SubProgress = Self;

    fn add_child(&mut self, _name: impl Into<String>) -> Self {
        Self {
            counts: false,
            ..self.clone()
        }
    }

    fn add_child_with_id(&mut self, _name: impl Into<String>, id: Id) -> Self {
        Self {
            counts: id == INDEXED_OBJECTS,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// `git pack-objects --stdout --revs` of `revs` in `dir` (`--thin` if asked).
    fn pack(dir: &Path, revs: &str, thin: bool) -> Vec<u8> {
        let mut cmd = Command::new("git");
        cmd.arg("-C")
            .arg(dir)
            .args(["pack-objects", "--stdout", "--revs", "-q"]);
        if thin {
            cmd.arg("--thin");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(revs.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        out.stdout
    }

    /// Commit `i`'s file: one line of its own and a body they share, so that
    /// git stores later versions as deltas.
    fn content(i: usize) -> String {
        let body: String = (0..200).map(|j| format!("common line {j}\n")).collect();
        format!("line {i}\n{body}")
    }

    /// Commits `content` as `dir/file` and returns the commit id.
    fn commit_file(dir: &Path, file: &str, content: &str) -> String {
        std::fs::write(dir.join(file), content).unwrap();
        git(dir, &["add", file]);
        let identity = ["-c", "user.name=t", "-c", "user.email=t@t"];
        git(dir, &[&identity[..], &["commit", "-qm", file]].concat());
        git(dir, &["rev-parse", "HEAD"])
    }

    /// An upstream repository with `commits` commits on main, each changing one file.
    fn upstream(dir: &Path, commits: usize) -> Vec<String> {
        git(dir, &["init", "-q", "-b", "main"]);
        (0..commits)
            .map(|i| commit_file(dir, "file", &content(i)))
            .collect()
    }

    /// A project repository whose fetched packs go through this backend.
    fn mirror(path: &Path, max_object_bytes: u64) -> git2::Repository {
        let repo = super::super::open_project_repo(path).unwrap();
        install(&repo, max_object_bytes).unwrap();
        repo
    }

    fn pack_files(repo: &git2::Repository) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(repo.path().join("objects/pack"))
            .map(|dir| {
                dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn write_pack(repo: &git2::Repository, data: &[u8]) -> Result<i32, git2::Error> {
        let odb = repo.odb()?;
        let mut writer = odb.packwriter()?;
        // Small writes, as the network delivers them.
        for chunk in data.chunks(1000) {
            writer
                .write_all(chunk)
                .map_err(|e| git2::Error::from_str(&e.to_string()))?;
        }
        writer.commit()
    }

    fn verify_packs(repo: &git2::Repository) {
        for idx in pack_files(repo).iter().filter(|n| n.ends_with(".idx")) {
            git(
                repo.path(),
                &["verify-pack", &format!("objects/pack/{idx}")],
            );
        }
    }

    #[test]
    fn packs_and_thin_packs_are_indexed_and_readable() {
        let work = tempfile::tempdir().unwrap();
        let source = work.path().join("source");
        std::fs::create_dir(&source).unwrap();
        let commits = upstream(&source, 6);
        let repo = mirror(
            &work.path().join("mirror.git"),
            super::super::DEFAULT_MAX_OBJECT_BYTES,
        );

        write_pack(&repo, &pack(&source, &format!("{}\n", commits[2]), false)).unwrap();
        assert!(
            repo.find_commit(git2::Oid::from_str(&commits[2]).unwrap())
                .is_ok()
        );
        // No keep file and no temporary file left: exactly one .pack and its .idx,
        // read-only as git makes them.
        assert_eq!(pack_files(&repo).len(), 2, "{:?}", pack_files(&repo));
        for name in pack_files(&repo) {
            let path = repo.path().join("objects/pack").join(name);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o444, "{}", path.display());
        }

        // A thin pack deltas against objects the mirror already has; they are
        // copied in, so the new pack stands on its own.
        let thin = pack(&source, &format!("{}\n^{}\n", commits[5], commits[2]), true);
        let empty = mirror(
            &work.path().join("empty.git"),
            super::super::DEFAULT_MAX_OBJECT_BYTES,
        );
        assert!(
            write_pack(&empty, &thin).is_err(),
            "the pack is thin: it cannot stand without the mirror's objects"
        );
        write_pack(&repo, &thin).unwrap();
        assert_eq!(pack_files(&repo).len(), 4);
        verify_packs(&repo);
        let tip = repo
            .find_commit(git2::Oid::from_str(&commits[5]).unwrap())
            .unwrap();
        let blob = tip
            .tree()
            .unwrap()
            .get_name("file")
            .unwrap()
            .to_object(&repo)
            .unwrap();
        assert_eq!(blob.as_blob().unwrap().content(), content(5).as_bytes());
    }

    #[test]
    fn a_corrupt_or_abandoned_pack_leaves_nothing_behind() {
        let work = tempfile::tempdir().unwrap();
        let source = work.path().join("source");
        std::fs::create_dir(&source).unwrap();
        let commits = upstream(&source, 3);
        let repo = mirror(
            &work.path().join("mirror.git"),
            super::super::DEFAULT_MAX_OBJECT_BYTES,
        );
        let good = pack(&source, &format!("{}\n", commits[2]), false);

        let mut corrupt = good.clone();
        let middle = corrupt.len() / 2;
        corrupt[middle] ^= 0xff;
        let error = write_pack(&repo, &corrupt).unwrap_err();
        assert!(error.message().contains("received pack refused"), "{error}");
        assert_eq!(pack_files(&repo), Vec::<String>::new());

        {
            let odb = repo.odb().unwrap();
            let mut writer = odb.packwriter().unwrap();
            writer.write_all(&good[..good.len() / 2]).unwrap();
            // Dropped without commit: the download was abandoned.
        }
        assert_eq!(pack_files(&repo), Vec::<String>::new());
        assert!(
            repo.find_commit(git2::Oid::from_str(&commits[2]).unwrap())
                .is_err()
        );

        write_pack(&repo, &good).unwrap();
        assert!(
            repo.find_commit(git2::Oid::from_str(&commits[2]).unwrap())
                .is_ok()
        );
    }

    /// A pack of `entries` (already encoded), with its header and trailer.
    fn raw_pack(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut pack = b"PACK".to_vec();
        pack.extend(2u32.to_be_bytes());
        pack.extend((entries.len() as u32).to_be_bytes());
        pack.extend(entries.concat());
        let mut hasher = gix_hash::hasher(gix_hash::Kind::Sha1);
        hasher.update(&pack);
        pack.extend(hasher.try_finalize().unwrap().as_bytes());
        pack
    }

    /// A pack entry header: type and (claimed) size.
    fn entry_header(kind: u8, size: u64) -> Vec<u8> {
        let mut out = vec![(kind << 4) | (size & 0x0f) as u8];
        let mut rest = size >> 4;
        while rest > 0 {
            *out.last_mut().unwrap() |= 0x80;
            out.push((rest & 0x7f) as u8);
            rest >>= 7;
        }
        out
    }

    /// `data` as a zlib stream of one stored (uncompressed) block.
    fn zlib_stored(data: &[u8]) -> Vec<u8> {
        let len = data.len() as u16;
        let mut out = vec![0x78, 0x01, 0x01];
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend(data);
        let (a, b) = data.iter().fold((1u32, 0u32), |(a, b), &byte| {
            let a = (a + u32::from(byte)) % 65521;
            (a, (b + a) % 65521)
        });
        out.extend(((b << 16) | a).to_be_bytes());
        out
    }

    fn peak_rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    #[test]
    fn objects_over_the_limit_are_refused_before_memory_is_set_aside() {
        let work = tempfile::tempdir().unwrap();
        let repo = mirror(&work.path().join("mirror.git"), 1 << 20);

        // An honest pack with a 2 MiB blob, over a 1 MiB limit.
        let source = work.path().join("source");
        std::fs::create_dir(&source).unwrap();
        git(&source, &["init", "-q", "-b", "main"]);
        let big: String = (0..120_000).map(|i| format!("{i:016x}\n")).collect();
        commit_file(&source, "big", &big);
        let error = write_pack(&repo, &pack(&source, "HEAD\n", false)).unwrap_err();
        assert!(
            error.message().contains("too large")
                && error.message().contains("max_object_bytes is 1048576"),
            "{error}"
        );
        assert_eq!(pack_files(&repo), Vec::<String>::new());

        // A hostile one: a 5-byte blob and a delta against it that claims a
        // 2 GiB result. git's index-pack sets the 2 GiB aside before it finds
        // out; here the claim alone is refused.
        let repo = mirror(
            &work.path().join("other.git"),
            super::super::DEFAULT_MAX_OBJECT_BYTES,
        );
        let base = [entry_header(3, 5), zlib_stored(b"hello")].concat();
        let delta = [
            &[0x05][..],
            &[0x80, 0x80, 0x80, 0x80, 0x08],
            &[0x04],
            b"abcd",
        ]
        .concat();
        let base_distance = base.len() as u8;
        let claim = [
            entry_header(6, delta.len() as u64),
            vec![base_distance],
            zlib_stored(&delta),
        ]
        .concat();
        let before = peak_rss_kib();
        let error = write_pack(&repo, &raw_pack(&[base, claim])).unwrap_err();
        assert!(error.message().contains("too large"), "{error}");
        assert!(
            peak_rss_kib() - before < 512 << 10,
            "the claim was not acted on"
        );
        assert_eq!(pack_files(&repo), Vec::<String>::new());
    }
}
