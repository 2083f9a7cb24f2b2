//! A pack indexer: a fetch's pack stream in, `pack-<hash>.pack` and its
//! version-2 `.idx` out, as `git index-pack --stdin --fix-thin` does.
//!
//! Why our own: an initial pull of 100k objects must not need more memory than
//! git's (issue 7). libgit2's indexer keeps two maps and a delta-base cache per
//! pack, gix-pack a delta tree of ~100 bytes per object plus an mmap of the whole
//! pack. This one keeps 34 bytes per object (offset, CRC, id and kind) and the
//! delta lists, reads the pack back with `pread` (page cache, not resident
//! memory), and holds delta bases only along the chain being resolved, under a
//! budget. mirrorhost runs it in a child process (`mirrorhost-index-pack`,
//! see its `sync::packs`), so that parsing untrusted input cannot take the
//! service down with it. Its own crate so that it can be fuzzed without the
//! rest of the service (`fuzz/`).
//!
//! Two passes, as git's: `receive` parses the stream as it arrives (writes it
//! to a temporary file, hashes whole objects, checks every claimed size), then
//! `resolve` rebuilds deltas from their bases on every core. A thin pack's
//! missing bases come from the repository (`Bases`, `RepositoryObjects`) and
//! are appended (`complete_thin`).

mod delta;
mod idx;
mod links;
mod objects;
mod receive;
mod resolve;

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use objects::RepositoryObjects;

pub type Oid = [u8; 20];

/// What an object is; the numbers are the pack format's type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Commit = 1,
    Tree = 2,
    Blob = 3,
    Tag = 4,
}

impl Kind {
    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Commit),
            2 => Some(Self::Tree),
            3 => Some(Self::Blob),
            4 => Some(Self::Tag),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Commit => "commit",
            Self::Tree => "tree",
            Self::Blob => "blob",
            Self::Tag => "tag",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Commit, Self::Tree, Self::Blob, Self::Tag]
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

/// Where a thin pack's left-out delta bases come from: the repository.
pub trait Bases {
    fn find(&self, oid: &Oid) -> Option<(Kind, Vec<u8>)>;
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The largest object the pack may declare or produce.
    pub max_object_bytes: u64,
    /// Threads resolving deltas.
    pub threads: usize,
    /// Object data each thread keeps along a delta chain before it drops the
    /// oldest bases (rebuilt from the chain when needed again).
    pub base_budget: usize,
    /// The pack starts a repository: every object its objects name must be
    /// in it (git's `--check-self-contained-and-connected`, which a clone
    /// asks for). Costs a set of the named ids while indexing.
    pub self_contained: bool,
    /// Offsets past this go to the .idx's 64-bit table, as those of 2 GiB and
    /// more must: git's `index-pack --index-version=2,<offset>`, with which
    /// its tests (and ours) make the table without a 2 GiB pack.
    pub offset32_limit: u64,
}

/// Resolving threads at most, as `git index-pack` caps them: past this, more
/// threads mostly contend for memory.
const MAX_THREADS: usize = 20;

impl Options {
    /// Every core up to [`MAX_THREADS`], and a 32 MiB base budget per thread.
    pub fn new(max_object_bytes: u64) -> Self {
        Self {
            max_object_bytes,
            threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_THREADS),
            base_budget: 32 << 20,
            self_contained: false,
            offset32_limit: 0x7fff_ffff,
        }
    }
}

/// How far the indexer is, for libgit2's progress callbacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Objects the pack header announces.
    pub total: u32,
    /// Entries parsed from the stream.
    pub received: u32,
    /// Objects whose id is known.
    pub indexed: u32,
}

/// A pack that landed in the pack directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed {
    /// The pack's checksum in hex: the files are `pack-<name>.pack` and `.idx`.
    pub name: String,
    pub objects: u32,
}

/// What [`index`] made: the pack, and the kind of each asked-about tip it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    pub pack: Indexed,
    pub tips: Vec<(Oid, Kind)>,
    /// The pack's objects that may be Git LFS pointers: blobs under
    /// [`LFS_POINTER_MAX_BYTES`] that start as a pointer does. A pack with
    /// none brings no pointer, so the service need not look for any.
    pub lfs_candidates: u32,
}

/// git-lfs reads only blobs below this size as pointers.
pub const LFS_POINTER_MAX_BYTES: u64 = 1024;
/// How every pointer starts: its first line is its version.
const LFS_POINTER_START: &[u8] = b"version ";

/// Whether an object may be a Git LFS pointer, by its kind, size and first
/// bytes (a superset of what git-lfs reads as one).
fn may_be_lfs_pointer(kind: Kind, size: u64, start: &[u8]) -> bool {
    kind == Kind::Blob && size < LFS_POINTER_MAX_BYTES && start.starts_with(LFS_POINTER_START)
}

/// The first bytes of an object read in pieces, as many as
/// [`may_be_lfs_pointer`] looks at.
#[derive(Default)]
struct ObjectStart {
    bytes: [u8; LFS_POINTER_START.len()],
    len: usize,
}

impl ObjectStart {
    fn feed(&mut self, data: &[u8]) {
        let take = (self.bytes.len() - self.len).min(data.len());
        self.bytes[self.len..self.len + take].copy_from_slice(&data[..take]);
        self.len += take;
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        source: io::Error,
    },
    #[error("malformed pack at offset {offset}: {problem}")]
    Malformed { offset: u64, problem: String },
    #[error("object at offset {offset} is too large: {size} bytes (max_object_bytes is {limit})")]
    TooLarge { offset: u64, size: u64, limit: u64 },
    #[error("the pack's checksum does not match its content")]
    Checksum,
    #[error("SHA-1 collision attack detected in the object at offset {offset}")]
    Collision { offset: u64 },
    #[error("{count} deltas have no base in the pack or the repository (one needs {needed})")]
    MissingBases { count: usize, needed: String },
    #[error(
        "the remote sent an incomplete history: its objects name {missing}, which the pack \
         does not hold (a first fetch must bring every object its history names)"
    )]
    NotSelfContained { missing: String },
}

impl IndexError {
    fn io(context: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { context, source }
    }

    fn malformed(offset: u64, problem: impl Into<String>) -> Self {
        Self::Malformed {
            offset,
            problem: problem.into(),
        }
    }
}

/// Prefix of the temporary files; `sync::remove_leftovers` sweeps them after a crash.
pub const TEMP_PREFIX: &str = ".tmp-index-pack-";

/// The prefix of the temporary files of the indexer running as process
/// `pid`, so that its parent can remove them should it die.
pub fn temp_prefix(pid: u32) -> String {
    format!("{TEMP_PREFIX}{pid}-")
}

/// Indexes the pack read from `input` into `pack_dir`, and finds the kinds of
/// `tips` (the objects a fetch asked for) in it. Nothing is left in `pack_dir`
/// unless the whole pack checked out.
pub fn index(
    input: impl Read,
    pack_dir: &Path,
    bases: Option<&dyn Bases>,
    tips: &[Oid],
    options: &Options,
    progress: &(dyn Fn(Counts) + Sync),
) -> Result<Landed, IndexError> {
    stage(input, pack_dir, bases, tips, options, progress)?.publish()
}

/// A pack indexed and checked, its files still temporary: [`Staged::publish`]
/// puts them in place; dropped, they are removed.
#[derive(Debug)]
pub struct Staged {
    pack: tempfile::NamedTempFile,
    idx: tempfile::NamedTempFile,
    pack_dir: PathBuf,
    /// What the pack will be once published.
    pub landed: Landed,
}

impl Staged {
    /// Makes the pack and its index durable and names them, so that git
    /// (and libgit2) find the pack.
    pub fn publish(self) -> Result<Landed, IndexError> {
        let files = [(self.pack, "pack"), (self.idx, "idx")];
        publish(files, &self.pack_dir, &self.landed.pack.name)?;
        Ok(self.landed)
    }
}

/// [`index`] up to the pack's publication, which is left to the caller.
pub fn stage(
    input: impl Read,
    pack_dir: &Path,
    bases: Option<&dyn Bases>,
    tips: &[Oid],
    options: &Options,
    progress: &(dyn Fn(Counts) + Sync),
) -> Result<Staged, IndexError> {
    let prefix = temp_prefix(std::process::id());
    let temp = |suffix| {
        tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(suffix)
            .tempfile_in(pack_dir)
            .map_err(IndexError::io("temporary file in the pack directory"))
    };
    let mut pack = temp(".pack")?;
    let mut table = receive::receive(
        input,
        pack.as_file(),
        options.max_object_bytes,
        options.self_contained,
        progress,
    )?;
    let all = 0..table.len();
    resolve::resolve(pack.as_file(), &mut table, all, options, progress)?;
    complete_thin(pack.as_file_mut(), &mut table, bases, options, progress)?;
    // Resolution reports every `REPORT_EVERY` objects; this is the last word.
    progress(Counts {
        total: table.len(),
        received: table.len(),
        indexed: table.len(),
    });

    let by_id = table.by_id();
    if options.self_contained {
        check_self_contained(&table, &by_id)?;
    }
    let mut idx = temp(".idx")?;
    idx::write(idx.as_file_mut(), &table, &by_id, options.offset32_limit)
        .map_err(IndexError::io("writing the pack index"))?;
    let tips = tips
        .iter()
        .filter_map(|tip| Some((*tip, table.find(&by_id, tip)?)))
        .collect();
    Ok(Staged {
        pack,
        idx,
        pack_dir: pack_dir.to_path_buf(),
        landed: Landed {
            pack: Indexed {
                name: hex::encode(table.checksum),
                objects: table.len(),
            },
            tips,
            lfs_candidates: table.lfs_candidates,
        },
    })
}

/// What a clone asks of a pack (`--check-self-contained-and-connected`):
/// every object named is in it, and no object is in it twice.
fn check_self_contained(table: &receive::Table, by_id: &[u32]) -> Result<(), IndexError> {
    let oid = |i: &u32| table.slots[*i as usize].oid;
    if let Some(pair) = by_id.windows(2).find(|pair| oid(&pair[0]) == oid(&pair[1])) {
        let offset = table.offsets[pair[1] as usize];
        let twice = hex::encode(oid(&pair[1]));
        return Err(IndexError::malformed(
            offset,
            format!("the same object {twice} appears twice in the pack"),
        ));
    }
    match table
        .links
        .iter()
        .find(|id| table.find(by_id, id).is_none())
    {
        Some(missing) => Err(IndexError::NotSelfContained {
            missing: hex::encode(missing),
        }),
        None => Ok(()),
    }
}

/// Gives the finished files their names, `pack-<name>.<ext>`. Read-only, as
/// git makes packs; on disk before their names say they exist (refs will point
/// into them), and the names on disk before the refs that need them. The .idx
/// goes last: readers look for it.
fn publish(
    files: [(tempfile::NamedTempFile, &str); 2],
    pack_dir: &Path,
    name: &str,
) -> Result<(), IndexError> {
    for (file, ext) in files {
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o444))
            .and_then(|()| file.as_file().sync_all())
            .map_err(IndexError::io("finishing the pack files"))?;
        file.persist(pack_dir.join(format!("pack-{name}.{ext}")))
            .map_err(|e| IndexError::io("naming the pack files")(e.error))?;
    }
    File::open(pack_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(IndexError::io("syncing the pack directory"))
}

/// Makes a thin pack whole: every base its deltas name but it does not carry is
/// read from `bases`, appended as a whole object, and its deltas resolved; the
/// header's count and the checksum are rewritten, as `git index-pack --fix-thin`.
fn complete_thin(
    pack: &mut File,
    table: &mut receive::Table,
    bases: Option<&dyn Bases>,
    options: &Options,
    progress: &(dyn Fn(Counts) + Sync),
) -> Result<(), IndexError> {
    let missing = table.missing_bases();
    if missing.is_empty() {
        return Ok(());
    }
    let lacking = |table: &receive::Table, oid: &Oid| IndexError::MissingBases {
        count: table.unresolved(),
        needed: hex::encode(oid),
    };
    let Some(bases) = bases else {
        return Err(lacking(table, &missing[0]));
    };
    pack.set_len(table.end)
        .map_err(IndexError::io("reopening the pack"))?;
    for oid in &missing {
        // An earlier base may have let the pack's own deltas rebuild this one;
        // appending it as well would store it twice.
        if !table.waits_for(oid) {
            continue;
        }
        // Not in the repository either: a delta later in the pack may still
        // rebuild it from a base that is (git's fix_unresolved_deltas goes on
        // too). What is still waiting at the end is refused below.
        let Some((kind, data)) = bases.find(oid) else {
            continue;
        };
        let entry = receive::encode_whole(kind, &data)
            .and_then(|entry| pack.write_all_at(&entry, table.end).map(|()| entry))
            .map_err(IndexError::io("appending a base"))?;
        table.push_whole(&entry, *oid, kind);
        let appended = table.len() - 1;
        resolve::resolve(pack, table, appended..appended + 1, options, progress)?;
    }
    match table.missing_bases().first() {
        Some(oid) => Err(lacking(table, oid)),
        None => {
            table.checksum = rewrite_trailer(pack, table.end, table.len())?;
            Ok(())
        }
    }
}

/// Sets the header's object count and appends the checksum of everything up
/// to `end`, which it returns.
fn rewrite_trailer(pack: &File, end: u64, objects: u32) -> Result<Oid, IndexError> {
    let fail = IndexError::io("rewriting the pack trailer");
    let mut hasher = sha1dc::Hasher::new();
    let mut chunk = vec![0; resolve::CHUNK];
    let result = (|| {
        pack.write_all_at(&objects.to_be_bytes(), 8)?;
        let mut at = 0;
        while at < end {
            let n = chunk
                .len()
                .min(usize::try_from(end - at).unwrap_or(usize::MAX));
            pack.read_exact_at(&mut chunk[..n], at)?;
            hasher.update(&chunk[..n]);
            at += n as u64;
        }
        let checksum: Oid = hasher
            .finalize()
            .map_err(|_| io::Error::other("SHA-1 collision in the pack"))?
            .into();
        pack.write_all_at(&checksum, end)?;
        Ok(checksum)
    })();
    result.map_err(fail)
}

/// The id of an object: SHA-1 (with collision detection) of its loose header and data.
fn object_id(kind: Kind, data: &[u8], offset: u64) -> Result<Oid, IndexError> {
    let mut hasher = object_hasher(kind, data.len() as u64);
    hasher.update(data);
    finish_id(hasher, offset)
}

fn object_hasher(kind: Kind, size: u64) -> sha1dc::Hasher {
    let mut hasher = sha1dc::Hasher::new();
    hasher.update(format!("{} {size}\0", kind.name()).as_bytes());
    hasher
}

fn finish_id(hasher: sha1dc::Hasher, offset: u64) -> Result<Oid, IndexError> {
    hasher
        .finalize()
        .map(Into::into)
        .map_err(|_| IndexError::Collision { offset })
}

#[cfg(test)]
mod tests;
