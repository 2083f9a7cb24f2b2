//! Received packs: the pack stream of every fetch goes to our own indexer
//! ([`index_pack`](super::index_pack)), run as a child process
//! (`mirrorhost-index-pack`, see [`Program`]), instead of libgit2's.
//!
//! libgit2 hands a fetch's pack to the object database's `writepack`. Its own
//! indexer hashes every object on the fetching thread and keeps two maps and a
//! 16 MiB delta-base cache: on an initial pull of 100k objects it took 1.15x
//! git's time and 2.8x its memory (BENCHMARKS.md). A child process, as git runs
//! `index-pack`: the service's memory does not grow with the pack, and a
//! hostile pack that gets past every check can only take the child down. The
//! child's environment is cleared: it never sees the service's secrets. It
//! also tells the service the kinds of the tips a run fetched ([`Tips`]), so
//! that the service reads nothing of the new pack.
//!
//! The backend registered here implements `writepack` only; libgit2 skips it for
//! every read and keeps reading through its own loose and pack backends, which
//! find the new pack on their next refresh. A pack that does not come through
//! libgit2 (a file:// pull's, `local_fetch`) goes to the same child through
//! [`Receiving`].

// The libgit2 ODB backend interface is a C vtable: this module is where the
// engine's unsafe code lives, each block with its reason.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CString, c_int, c_void};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use git2::Binding;
use libgit2_sys as raw;

use super::index_pack::{self, Indexed, Kind, Report};

/// Above libgit2's loose (1) and pack (2) backends, so that fetches write here.
const PRIORITY: c_int = 100;
/// The indexer's own executable, looked for beside the service's.
const DEDICATED: &str = "mirrorhost-index-pack";

/// How fetched packs are indexed: by a child running `program`, refusing
/// objects over `max_object_bytes`, under `limits`.
#[derive(Debug, Clone)]
pub struct PackIndexer {
    pub program: Program,
    /// The largest object a fetch may bring.
    pub max_object_bytes: u64,
    /// What the child may take of the machine.
    pub limits: ChildLimits,
}

/// The child's address space and processor time, set on itself
/// (`setrlimit`) before it reads a byte: whatever a hostile pack makes it
/// hold or compute, past these it dies, and the parent removes its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildLimits {
    pub memory_bytes: u64,
    pub cpu_seconds: u64,
}

impl Default for ChildLimits {
    fn default() -> Self {
        Self {
            memory_bytes: DEFAULT_INDEXER_MEMORY_BYTES,
            cpu_seconds: 3600,
        }
    }
}

/// The indexer's address space by default: a 1 GiB object (the default
/// `max_object_bytes`) twice over, with room for the threads and the code.
pub const DEFAULT_INDEXER_MEMORY_BYTES: u64 = 4 << 30;

/// The executable a pack indexer child runs.
#[derive(Debug, Clone)]
pub enum Program {
    /// `mirrorhost-index-pack`: the indexer alone, which starts in a
    /// quarter of the memory of the whole service's executable.
    Dedicated(Executable),
    /// `mirrorhost index-pack`.
    Subcommand(PathBuf),
}

/// An executable file, by path or held open.
#[derive(Debug, Clone)]
pub enum Executable {
    Path(PathBuf),
    /// Started through `/proc/self/fd`: an upgrade that replaces the file
    /// does not change what this service starts, as `/proc/self/exe` keeps
    /// starting the service's own binary.
    Pinned(Arc<File>),
}

impl Executable {
    fn path(&self) -> PathBuf {
        match self {
            Self::Path(path) => path.clone(),
            Self::Pinned(file) => PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
        }
    }
}

impl Program {
    /// What the service runs: `mirrorhost-index-pack` beside its own
    /// executable when that is there, held open from now on; otherwise
    /// itself (`/proc/self/exe`, which stays the running binary after an
    /// upgrade replaced the file). A child of another build refuses to start
    /// (`index_pack::PROTOCOL`), so a mix-up fails a fetch, never misreads it.
    pub fn installed() -> Self {
        let dedicated =
            std::env::current_exe().and_then(|exe| File::open(exe.with_file_name(DEDICATED)));
        match dedicated {
            Ok(file) => Self::Dedicated(Executable::Pinned(Arc::new(file))),
            Err(_) => Self::Subcommand(PathBuf::from("/proc/self/exe")),
        }
    }

    /// The command that starts a child, before its arguments.
    fn command(&self) -> Command {
        match self {
            Self::Dedicated(executable) => {
                let mut command = Command::new(executable.path());
                command.arg0(DEDICATED);
                command
            }
            Self::Subcommand(path) => {
                let mut command = Command::new(path);
                command.arg(index_pack::SUBCOMMAND);
                command
            }
        }
    }

    /// The executable, for messages.
    fn describe(&self) -> String {
        match self {
            Self::Dedicated(Executable::Path(path)) | Self::Subcommand(path) => {
                path.display().to_string()
            }
            Self::Dedicated(Executable::Pinned(_)) => DEDICATED.to_string(),
        }
    }
}

impl PackIndexer {
    /// `program` with the default limits.
    pub fn new(program: Program, max_object_bytes: u64) -> Self {
        Self {
            program,
            max_object_bytes,
            limits: ChildLimits::default(),
        }
    }
}

/// What the indexers of one repository's fetches found of the tips the runs
/// fetched: the kind of each, which also shows the remote sent it.
#[derive(Debug, Default)]
pub struct Tips {
    state: Mutex<TipState>,
}

#[derive(Debug, Default)]
struct TipState {
    /// Asked about by the next pack's indexer.
    next: Vec<git2::Oid>,
    found: HashMap<git2::Oid, Kind>,
}

impl Tips {
    /// The objects the next download is for.
    pub fn expect(&self, tips: impl IntoIterator<Item = git2::Oid>) {
        self.lock().next = tips.into_iter().collect();
    }

    /// The kind of a tip a pack brought; `None` if none did.
    pub fn kind(&self, tip: git2::Oid) -> Option<Kind> {
        self.lock().found.get(&tip).copied()
    }

    /// Every tip found so far, with its kind.
    pub fn found(&self) -> HashMap<git2::Oid, Kind> {
        self.lock().found.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TipState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Makes fetches into `repo` write their packs through `indexer`; what the
/// indexers find of the expected tips goes to the `Tips` returned.
pub fn install(repo: &git2::Repository, indexer: &PackIndexer) -> Result<Arc<Tips>, git2::Error> {
    let odb = repo.odb()?;
    let tips = Arc::<Tips>::default();
    let mut backend = Box::new(Backend {
        // SAFETY: the vtable is plain data (a version, a pointer, optional
        // function pointers); all-zero is "no odb, no functions", which
        // `git_odb_init_backend` then stamps with the version.
        raw: unsafe { std::mem::zeroed() },
        objects_dir: repo.path().join("objects"),
        indexer: indexer.clone(),
        tips: tips.clone(),
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
    Ok(tips)
}

/// Removes the temporary files that indexers cut off by a crash left in the
/// pack directory of `repo_dir`; a killed fetch of a large repository would
/// otherwise leave its partial pack there for good. How many it removed.
pub fn remove_partial_packs(repo_dir: &Path) -> usize {
    // The indexer's temporary files, those of the indexers used before it
    // (gix-pack's `.tmp*`, libgit2's), and those of a housekeeping `git
    // repack` (`.tmp-<pid>-pack*`, pack-objects' `tmp_pack_*`, `tmp_idx_*`, ...).
    remove_named(&repo_dir.join("objects/pack"), |name| {
        name.starts_with(".tmp") || name.starts_with("pack_git2_") || name.starts_with("tmp_")
    })
}

/// Removes the files of `dir` whose names `doomed` picks; how many it removed.
fn remove_named(dir: &Path, doomed: impl Fn(&str) -> bool) -> usize {
    super::entries(dir)
        .filter(|file| file.file_name().to_str().is_some_and(&doomed))
        .filter(|file| std::fs::remove_file(file.path()).is_ok())
        .count()
}

/// The registered backend. `raw` comes first so that the pointer libgit2 hands
/// back to the callbacks is a pointer to the whole struct.
#[repr(C)]
struct Backend {
    raw: raw::git_odb_backend,
    objects_dir: PathBuf,
    indexer: PackIndexer,
    tips: Arc<Tips>,
}

/// One pack being received. `raw` first, as in [`Backend`].
#[repr(C)]
struct Writepack {
    raw: raw::git_odb_writepack,
    odb: *mut raw::git_odb,
    /// The child indexing the pack, or why none could be started. A failing
    /// `writepack` would make libgit2 hand the pack to its own indexer, which
    /// knows nothing of `max_object_bytes`: the failure waits for `append`.
    indexing: Result<Indexing, String>,
}

/// A child indexer and what the service keeps of it.
#[derive(Debug)]
struct Indexing {
    child: Child,
    /// Closed by `commit` (end of the pack) or `free` (abandoned).
    input: Option<ChildStdin>,
    /// Reads the child's reports; `None` once finished.
    reports: Option<JoinHandle<Option<Indexed>>>,
    counts: Arc<LiveCounts>,
    /// Where the child writes, to clean up after it if it dies.
    pack_dir: PathBuf,
}

/// The child's last progress report.
#[derive(Debug, Default)]
struct LiveCounts {
    total: AtomicU32,
    received: AtomicU32,
    indexed: AtomicU32,
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
    let indexing = Indexing::spawn(&backend.indexer, &backend.objects_dir, &backend.tips);
    let pack = Box::new(Writepack {
        raw: raw::git_odb_writepack {
            backend: std::ptr::from_ref(&backend.raw).cast_mut(),
            append: Some(append),
            commit: Some(commit),
            free: Some(free_writepack),
        },
        odb,
        indexing,
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
    let indexing = match &mut pack.indexing {
        Ok(indexing) => indexing,
        Err(message) => return fail(message),
    };
    // SAFETY: libgit2 hands `len` readable bytes at `data`.
    let chunk = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
    // SAFETY: libgit2's progress struct for this download, or null.
    if let Some(stats) = unsafe { stats.as_mut() } {
        indexing.report(stats);
    }
    match indexing.send(chunk) {
        Ok(()) => 0,
        Err(message) => fail(&message),
    }
}

unsafe extern "C" fn commit(
    pack: *mut raw::git_odb_writepack,
    stats: *mut raw::git_indexer_progress,
) -> c_int {
    // SAFETY: as in `append`.
    let pack = unsafe { &mut *pack.cast::<Writepack>() };
    let finished = match &mut pack.indexing {
        Ok(indexing) => indexing.finish(),
        Err(message) => Err(message.clone()),
    };
    let indexed = match finished {
        Ok(indexed) => indexed,
        Err(message) => return fail(&message),
    };
    // SAFETY: as in `append`.
    if let Some(stats) = unsafe { stats.as_mut() } {
        stats.total_objects = indexed.objects;
        stats.received_objects = indexed.objects;
        stats.indexed_objects = indexed.objects;
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
    // An abandoned download's indexer is finished as it drops.
    drop(unsafe { Box::from_raw(pack.cast::<Writepack>()) });
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

/// A pack that reaches the service other than through libgit2's transfer
/// (a file:// remote's `git pack-objects`), indexed as a fetched one is.
/// Dropped before [`Receiving::finish`], the pack is abandoned: the indexer
/// refuses the partial pack and removes its files.
#[derive(Debug)]
pub struct Receiving(Indexing);

impl Receiving {
    /// Starts the indexer on `repo`'s objects; it looks for the tips last
    /// given to [`Tips::expect`] and reports them to `tips`.
    pub fn start(
        repo: &git2::Repository,
        indexer: &PackIndexer,
        tips: &Arc<Tips>,
    ) -> Result<Self, String> {
        Indexing::spawn(indexer, &repo.path().join("objects"), tips).map(Self)
    }

    /// Hands the indexer the next bytes of the pack; why it refused the pack
    /// if it stopped reading.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.0.send(chunk)
    }

    /// Objects received so far, and the pack's count of them.
    pub fn objects(&self) -> (u32, u32) {
        let counts = &self.0.counts;
        (
            counts.received.load(Ordering::Relaxed),
            counts.total.load(Ordering::Relaxed),
        )
    }

    /// The end of the pack: what the indexer put in place, or why it refused
    /// the pack.
    pub fn finish(mut self) -> Result<Indexed, String> {
        self.0.finish()
    }
}

impl Indexing {
    /// Starts `program index-pack` on `objects_dir`, hands it the tips to
    /// look for, and starts a thread reading its reports.
    fn spawn(indexer: &PackIndexer, objects_dir: &Path, tips: &Arc<Tips>) -> Result<Self, String> {
        Self::try_spawn(indexer, objects_dir, tips).map_err(|e| {
            let program = indexer.program.describe();
            format!("cannot start the pack indexer {program}: {e}")
        })
    }

    fn try_spawn(indexer: &PackIndexer, objects_dir: &Path, tips: &Arc<Tips>) -> io::Result<Self> {
        let args = index_pack::Args {
            objects_dir: objects_dir.to_path_buf(),
            max_object_bytes: indexer.max_object_bytes,
            limits: indexer.limits,
        };
        let mut command = indexer.program.command();
        command
            .args(args.to_args())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // What the dynamic loader may need to start the same executable again.
        if let Some(path) = std::env::var_os("LD_LIBRARY_PATH") {
            command.env("LD_LIBRARY_PATH", path);
        }
        let mut child = command.spawn()?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("the indexer's pipes are missing"));
        };
        let counts = Arc::<LiveCounts>::default();
        let (live, found) = (counts.clone(), tips.clone());
        let reports = std::thread::Builder::new()
            .name("pack-indexer".into())
            .spawn(move || read_reports(output, &live, &found));
        let mut indexing = match reports {
            Ok(reports) => Self {
                child,
                input: Some(input),
                reports: Some(reports),
                counts,
                pack_dir: objects_dir.join("pack"),
            },
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let asked = std::mem::take(&mut tips.lock().next);
        if let Err(e) = indexing.send_tips(&asked) {
            let _ = indexing.finish();
            return Err(e);
        }
        Ok(indexing)
    }

    /// The `tip <id>` lines and the empty line that come before the pack.
    fn send_tips(&mut self, tips: &[git2::Oid]) -> io::Result<()> {
        let input = self.input.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
        let mut lines = String::with_capacity(tips.len() * 45 + 1);
        for tip in tips {
            lines.push_str(&format!("tip {tip}\n"));
        }
        lines.push('\n');
        input.write_all(lines.as_bytes())
    }

    /// Hands the child the next bytes of the pack; if it stopped reading, it
    /// failed, and says why as it ends.
    fn send(&mut self, chunk: &[u8]) -> Result<(), String> {
        let sent = self.input.as_mut().map(|input| input.write_all(chunk));
        if let Some(Ok(())) = sent {
            return Ok(());
        }
        match self.finish() {
            Err(message) => Err(message),
            Ok(_) => Err("the pack indexer stopped before the end of the pack".to_string()),
        }
    }

    fn report(&self, stats: &mut raw::git_indexer_progress) {
        let counts = &self.counts;
        stats.total_objects = counts.total.load(Ordering::Relaxed);
        stats.received_objects = counts.received.load(Ordering::Relaxed);
        stats.indexed_objects = counts.indexed.load(Ordering::Relaxed);
    }

    /// Ends the input and waits for the child: the pack it put in place, or
    /// why it refused the pack.
    fn finish(&mut self) -> Result<Indexed, String> {
        drop(self.input.take());
        let reports = self.reports.take().ok_or("the pack was already finished")?;
        let indexed = reports.join().ok().flatten();
        let mut message = String::new();
        if let Some(mut errors) = self.child.stderr.take() {
            let _ = errors.read_to_string(&mut message);
        }
        let status = self
            .child
            .wait()
            .map_err(|e| format!("waiting for the pack indexer: {e}"))?;
        if !status.success() {
            // A child that died (out of memory, out of time, killed) could
            // not remove its own files.
            remove_files_of(&self.pack_dir, self.child.id());
        }
        match (indexed, message.trim()) {
            (Some(indexed), _) if status.success() => Ok(indexed),
            (_, "") => Err(format!("the pack indexer failed ({status})")),
            (_, message) => Err(format!("received pack refused: {message}")),
        }
    }
}

impl Drop for Indexing {
    fn drop(&mut self) {
        // An abandoned pack: the child reads the end of a partial pack,
        // refuses it and removes its temporary file.
        if self.reports.is_some() {
            let _ = self.finish();
        }
    }
}

/// Removes the temporary files the indexer child `pid` left in `pack_dir`.
fn remove_files_of(pack_dir: &Path, pid: u32) {
    let prefix = index_pack::temp_prefix(pid);
    remove_named(pack_dir, |name| name.starts_with(&prefix));
}

/// Follows the child's standard output until it closes; the pack it reported.
fn read_reports(output: ChildStdout, counts: &LiveCounts, tips: &Tips) -> Option<Indexed> {
    let mut indexed = None;
    for line in BufReader::new(output).lines() {
        let Ok(line) = line else { break };
        match Report::parse(&line) {
            Some(Report::Progress(c)) => {
                counts.total.store(c.total, Ordering::Relaxed);
                counts.received.store(c.received, Ordering::Relaxed);
                counts.indexed.store(c.indexed, Ordering::Relaxed);
            }
            Some(Report::Tip(oid, kind)) => {
                if let Ok(oid) = git2::Oid::from_bytes(&oid) {
                    tips.lock().found.insert(oid, kind);
                }
            }
            Some(Report::Done(pack)) => indexed = Some(pack),
            None => {}
        }
    }
    indexed
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
