//! A project repository's refs as git's `packed-refs` file, which every run
//! replaces whole, in one rename.
//!
//! Why not libgit2's transaction: it locks each ref as a loose file and keeps
//! every lock open until the commit, a descriptor and about 11 KiB per ref (a
//! project with a few thousand tags passes the usual limit of 1024 open files;
//! the bench's 501 refs cost 5 MiB of locks), and its commit renames the refs
//! one by one, so a crash in between leaves a run half applied. A new
//! `packed-refs` renamed into place is all of a run or none of it, whatever
//! stops the process. The lock is git's: `packed-refs.lock`, created
//! exclusively, which git and libgit2 writers honour as well.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use git2::{ObjectType, Oid, Repository};

use super::{RefUpdate, valid_name};
use crate::sync::index_pack::Kind;

/// What git and libgit2 write: every annotated tag's target follows it on a
/// `^` line, and names are in byte order.
const HEADER: &str = "# pack-refs with: peeled fully-peeled sorted \n";
/// How long a writer waits for another's lock: git's `core.packedRefsTimeout`.
const LOCK_TIMEOUT: Duration = Duration::from_secs(1);
const LOCK: &str = "packed-refs.lock";

#[derive(Debug, thiserror::Error)]
pub enum PackedRefsError {
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        source: io::Error,
    },
    #[error("{0:?} is not a valid ref name")]
    InvalidName(String),
    #[error("{0} is a symbolic ref; mirrors do not overwrite those")]
    Symbolic(String),
    #[error("the loose ref {0} does not hold an object id")]
    NotAnObjectId(String),
    #[error("packed-refs line {line} is malformed")]
    Malformed { line: usize },
    #[error("another writer has held packed-refs.lock for over {LOCK_TIMEOUT:?}")]
    Locked,
    #[error("{0} changed while the run was planning; nothing was applied, the next run retries")]
    Moved(String),
    #[error("peeling {oid}: {message}")]
    Peel { oid: Oid, message: String },
    #[error("object database: {0}")]
    Odb(String),
}

impl PackedRefsError {
    fn io(context: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { context, source }
    }
}

/// Applies every update or none. Each must still find its ref at `old`.
/// `kinds` spares reading the objects whose kind the indexer told.
pub fn apply(
    repo: &Repository,
    updates: &[RefUpdate],
    kinds: &HashMap<Oid, Kind>,
) -> Result<(), PackedRefsError> {
    if let Some(bad) = updates.iter().find(|u| !valid_name(&u.name)) {
        return Err(PackedRefsError::InvalidName(bad.name.clone()));
    }
    let dir = repo.path();
    let lock = Lock::acquire(&dir.join(LOCK))?;
    let mut packed = Packed::read(&dir.join("packed-refs"))?;
    let loose = packed.take_loose(dir, updates)?;
    if let Some(moved) = updates
        .iter()
        .find(|u| packed.refs.get(&u.name).map(|e| e.oid) != u.old)
    {
        return Err(PackedRefsError::Moved(moved.name.clone()));
    }
    let peeler = Peeler::new(repo, kinds)?;
    for update in updates {
        match update.new {
            Some(oid) => {
                let entry = Entry {
                    oid,
                    peeled: peeler.peel(oid)?,
                };
                packed.refs.insert(update.name.clone(), entry);
            }
            None => {
                packed.refs.remove(&update.name);
            }
        }
    }
    if !packed.fully_peeled {
        for entry in packed.refs.values_mut().filter(|e| e.peeled.is_none()) {
            entry.peeled = peeler.peel(entry.oid)?;
        }
    }
    lock.commit(&packed, &dir.join("packed-refs"))?;
    // The new file holds their values now; while they exist they shadow it.
    for path in loose {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(PackedRefsError::io("removing a loose ref")(e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Removes the ref lock of a run cut off by a crash in `repo_dir`; only for
/// start-up, before any run. Whether there was one.
pub fn remove_stale_lock(repo_dir: &Path) -> bool {
    std::fs::remove_file(repo_dir.join(LOCK)).is_ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    oid: Oid,
    /// What an annotated tag points at, through any chain of tags.
    peeled: Option<Oid>,
}

/// The file's refs, by name.
#[derive(Debug, Default, PartialEq, Eq)]
struct Packed {
    refs: BTreeMap<String, Entry>,
    /// Every annotated tag has its `^` line; otherwise entries without one
    /// may still be tags.
    fully_peeled: bool,
}

impl Packed {
    fn read(path: &Path) -> Result<Self, PackedRefsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self {
                refs: BTreeMap::new(),
                fully_peeled: true,
            }),
            Err(e) => Err(PackedRefsError::io("reading packed-refs")(e)),
        }
    }

    fn parse(text: &str) -> Result<Self, PackedRefsError> {
        let mut fully_peeled = false;
        let mut refs: Vec<(String, Entry)> = Vec::new();
        // Whether a `^` line may follow: only right after a ref.
        let mut peelable = false;
        for (i, line) in text.lines().enumerate() {
            let malformed = || PackedRefsError::Malformed { line: i + 1 };
            if let Some(traits) = line.strip_prefix("# pack-refs with:") {
                fully_peeled = traits.split_whitespace().any(|t| t == "fully-peeled");
                peelable = false;
            } else if let Some(hex) = line.strip_prefix('^') {
                let entry = refs.last_mut().filter(|_| peelable).ok_or_else(malformed)?;
                entry.1.peeled = Some(parse_oid(hex).ok_or_else(malformed)?);
                peelable = false;
            } else {
                let (hex, name) = line.split_once(' ').ok_or_else(malformed)?;
                let oid = parse_oid(hex)
                    .filter(|_| valid_name(name))
                    .ok_or_else(malformed)?;
                refs.push((name.to_string(), Entry { oid, peeled: None }));
                peelable = true;
            }
        }
        Ok(Self {
            refs: refs.into_iter().collect(),
            fully_peeled,
        })
    }

    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(HEADER.as_bytes())?;
        for (name, entry) in &self.refs {
            writeln!(out, "{} {name}", entry.oid)?;
            if let Some(peeled) = entry.peeled {
                writeln!(out, "^{peeled}")?;
            }
        }
        Ok(())
    }

    /// Takes in the loose refs among the updated names, which shadow this
    /// file's entries (an older mirrorhost, or git, wrote them): their paths,
    /// to remove once the new file is in place.
    fn take_loose(
        &mut self,
        dir: &Path,
        updates: &[RefUpdate],
    ) -> Result<Vec<PathBuf>, PackedRefsError> {
        let mut found = Vec::new();
        for update in updates {
            let path = dir.join(&update.name);
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                // Absent, or a directory of longer names.
                Err(_) if !path.is_file() => continue,
                Err(e) => return Err(PackedRefsError::io("reading a loose ref")(e)),
            };
            if text.starts_with("ref:") {
                return Err(PackedRefsError::Symbolic(update.name.clone()));
            }
            let oid = parse_oid(text.trim())
                .ok_or_else(|| PackedRefsError::NotAnObjectId(update.name.clone()))?;
            // A loose ref carries no peeled value, and needs none: every one
            // taken in is an updated name, which the update peels or removes,
            // so the file stays fully peeled.
            let entry = Entry { oid, peeled: None };
            self.refs.insert(update.name.clone(), entry);
            found.push(path);
        }
        Ok(found)
    }
}

/// A full hexadecimal object id.
fn parse_oid(hex: &str) -> Option<Oid> {
    Oid::from_str(hex).ok().filter(|_| hex.len() == 40)
}

/// Finds what annotated tags point at.
struct Peeler<'r> {
    repo: &'r Repository,
    odb: git2::Odb<'r>,
    kinds: &'r HashMap<Oid, Kind>,
}

impl<'r> Peeler<'r> {
    fn new(repo: &'r Repository, kinds: &'r HashMap<Oid, Kind>) -> Result<Self, PackedRefsError> {
        let odb = repo
            .odb()
            .map_err(|e| PackedRefsError::Odb(e.message().to_string()))?;
        Ok(Self { repo, odb, kinds })
    }

    /// The object a tag ends at; `None` for anything but a tag. A kind the
    /// indexer told, or else the object's header, says which: reading headers
    /// through a new pack's index made its pages resident in the service (2.4
    /// MiB for the bench's 501 refs), and a commit or a blob is never read.
    fn peel(&self, oid: Oid) -> Result<Option<Oid>, PackedRefsError> {
        let failed = |e: git2::Error| PackedRefsError::Peel {
            oid,
            message: e.message().to_string(),
        };
        let is_tag = match self.kinds.get(&oid) {
            Some(kind) => *kind == Kind::Tag,
            None => self.odb.read_header(oid).map_err(failed)?.1 == ObjectType::Tag,
        };
        if !is_tag {
            return Ok(None);
        }
        let tag = self
            .repo
            .find_object(oid, Some(ObjectType::Tag))
            .map_err(failed)?;
        Ok(Some(tag.peel(ObjectType::Any).map_err(failed)?.id()))
    }
}

/// `packed-refs.lock`, held from creation to the rename that publishes it;
/// removed if dropped before.
struct Lock {
    path: PathBuf,
    file: File,
    published: bool,
}

impl Lock {
    fn acquire(path: &Path) -> Result<Self, PackedRefsError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let created = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(path);
            match created {
                Ok(file) => {
                    return Ok(Self {
                        path: path.to_path_buf(),
                        file,
                        published: false,
                    });
                }
                // Another writer: nothing announces its end, so poll as git
                // does, backing off.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if started.elapsed() >= LOCK_TIMEOUT {
                        return Err(PackedRefsError::Locked);
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(PackedRefsError::io("creating packed-refs.lock")(e)),
            }
        }
    }

    /// Writes `packed` to the lock, makes it durable and renames it to `target`.
    fn commit(mut self, packed: &Packed, target: &Path) -> Result<(), PackedRefsError> {
        let mut out = BufWriter::new(&self.file);
        packed
            .write(&mut out)
            .and_then(|()| out.flush())
            .map_err(PackedRefsError::io("writing packed-refs.lock"))?;
        drop(out);
        self.file
            .sync_all()
            .and_then(|()| std::fs::rename(&self.path, target))
            .map_err(PackedRefsError::io("replacing packed-refs"))?;
        self.published = true;
        // The rename is the run's commit: durable only once the directory is.
        match target.parent() {
            Some(dir) => crate::fsutil::sync_dir(dir)
                .map_err(PackedRefsError::io("syncing the repository directory")),
            None => Ok(()),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::testing::git;

    /// A repository with two commits on a loose `main`, and the objects (no
    /// refs) of an annotated tag and of a tag of that tag.
    struct Fixture {
        _work: tempfile::TempDir,
        dir: PathBuf,
        first: Oid,
        second: Oid,
        tag: Oid,
        nested: Oid,
    }

    impl Fixture {
        fn new() -> Self {
            let work = tempfile::tempdir().unwrap();
            let dir = work.path().join("repo.git");
            git(
                work.path(),
                &["init", "-q", "--bare", "-b", "main", "repo.git"],
            );
            let tree = git(&dir, &["mktree"]);
            let first = git(&dir, &["commit-tree", &tree, "-m", "first"]);
            let second = git(&dir, &["commit-tree", &tree, "-p", &first, "-m", "second"]);
            git(&dir, &["update-ref", "refs/heads/main", &second]);
            git(&dir, &["tag", "-a", "-m", "v1", "v1", &first]);
            git(&dir, &["tag", "-a", "-m", "nested", "nested", "v1"]);
            let tag = git(&dir, &["rev-parse", "refs/tags/v1"]);
            let nested = git(&dir, &["rev-parse", "refs/tags/nested"]);
            git(&dir, &["update-ref", "-d", "refs/tags/v1"]);
            git(&dir, &["update-ref", "-d", "refs/tags/nested"]);
            let oid = |hex: &str| Oid::from_str(hex).unwrap();
            Self {
                dir,
                first: oid(&first),
                second: oid(&second),
                tag: oid(&tag),
                nested: oid(&nested),
                _work: work,
            }
        }

        fn repo(&self) -> Repository {
            Repository::open_bare(&self.dir).unwrap()
        }

        fn packed_refs(&self) -> String {
            std::fs::read_to_string(self.dir.join("packed-refs")).unwrap_or_default()
        }

        fn refs(&self) -> String {
            git(
                &self.dir,
                &["for-each-ref", "--format=%(objectname) %(refname)"],
            )
        }
    }

    /// Applies with no kinds told: every new tip's header is read.
    fn apply(repo: &Repository, updates: &[RefUpdate]) -> Result<(), PackedRefsError> {
        super::apply(repo, updates, &HashMap::new())
    }

    fn update(name: &str, old: Option<Oid>, new: Option<Oid>) -> RefUpdate {
        RefUpdate {
            name: name.to_string(),
            old,
            new,
        }
    }

    #[test]
    fn a_run_lands_whole_as_git_itself_would_pack_it() {
        let f = Fixture::new();
        let updates = [
            update("refs/heads/main", Some(f.second), Some(f.first)),
            update("refs/heads/feature", None, Some(f.second)),
            update("refs/tags/v1", None, Some(f.tag)),
            update("refs/tags/nested", None, Some(f.nested)),
            update("refs/tags/light", None, Some(f.first)),
        ];
        apply(&f.repo(), &updates).unwrap();
        let expected = [
            format!("{} refs/heads/feature", f.second),
            format!("{} refs/heads/main", f.first),
            format!("{} refs/tags/light", f.first),
            format!("{} refs/tags/nested", f.nested),
            format!("{} refs/tags/v1", f.tag),
        ];
        assert_eq!(f.refs(), expected.join("\n"));
        // The loose main that shadowed the file is gone, and so is the lock.
        assert!(!f.dir.join("refs/heads/main").exists());
        assert!(!f.dir.join(LOCK).exists());
        // git, packing the same refs itself, writes the same bytes: the
        // header, the order, and both tags peeled to the commit.
        let ours = f.packed_refs();
        assert!(ours.contains(&format!("{} refs/tags/nested\n^{}\n", f.nested, f.first)));
        git(&f.dir, &["pack-refs", "--all"]);
        assert_eq!(f.packed_refs(), ours);
        git(&f.dir, &["fsck", "--no-progress"]);
        // libgit2 reads the new file at once through a repository it had open.
        let repo = f.repo();
        assert_eq!(repo.refname_to_id("refs/heads/main").unwrap(), f.first);
        apply(&repo, &[update("refs/heads/main", Some(f.first), None)]).unwrap();
        assert!(repo.refname_to_id("refs/heads/main").is_err());
        assert!(!f.refs().contains("refs/heads/main"));
    }

    #[test]
    fn a_ref_that_moved_since_planning_stops_the_whole_run() {
        let f = Fixture::new();
        apply(
            &f.repo(),
            &[update("refs/heads/feature", None, Some(f.first))],
        )
        .unwrap();
        let (refs, file) = (f.refs(), f.packed_refs());
        let error = apply(
            &f.repo(),
            &[
                update("refs/tags/v1", None, Some(f.tag)),
                update("refs/heads/feature", Some(f.second), Some(f.second)),
            ],
        )
        .unwrap_err();
        assert!(matches!(&error, PackedRefsError::Moved(n) if n == "refs/heads/feature"));
        assert_eq!((f.refs(), f.packed_refs()), (refs, file));
        assert!(!f.dir.join(LOCK).exists());
    }

    #[test]
    fn another_writers_lock_is_waited_for_then_left_alone() {
        let f = Fixture::new();
        std::fs::write(f.dir.join(LOCK), "").unwrap();
        let started = Instant::now();
        let error = apply(&f.repo(), &[update("refs/tags/v1", None, Some(f.tag))]).unwrap_err();
        assert!(matches!(error, PackedRefsError::Locked), "{error}");
        assert!(started.elapsed() >= LOCK_TIMEOUT);
        assert!(f.dir.join(LOCK).exists(), "not ours to remove");
        assert!(!f.refs().contains("v1"));
        assert!(remove_stale_lock(&f.dir));
        apply(&f.repo(), &[update("refs/tags/v1", None, Some(f.tag))]).unwrap();
    }

    #[test]
    fn names_git_refuses_are_refused_before_anything_is_written() {
        let f = Fixture::new();
        for name in [
            "HEAD",
            "refs/heads/a..b",
            "refs/heads/x\nrefs/heads/y",
            "refs/heads/topic.lock",
            "refs/heads/with space",
            "refs/heads/../../config",
        ] {
            let updates = [
                update("refs/tags/v1", None, Some(f.tag)),
                update(name, None, Some(f.first)),
            ];
            let error = apply(&f.repo(), &updates).unwrap_err();
            assert!(matches!(error, PackedRefsError::InvalidName(_)), "{name:?}");
            assert_eq!(f.packed_refs(), "", "{name:?}");
        }
    }

    #[test]
    fn a_file_that_did_not_peel_its_tags_gets_them_peeled() {
        let f = Fixture::new();
        let unpeeled = format!("# pack-refs with: sorted\n{} refs/tags/v1\n", f.tag);
        std::fs::write(f.dir.join("packed-refs"), unpeeled).unwrap();
        apply(
            &f.repo(),
            &[update("refs/heads/other", None, Some(f.first))],
        )
        .unwrap();
        assert!(f.packed_refs().starts_with(HEADER));
        assert!(
            f.packed_refs()
                .contains(&format!("{} refs/tags/v1\n^{}\n", f.tag, f.first))
        );
    }

    #[test]
    fn a_damaged_file_is_left_as_it_is() {
        let f = Fixture::new();
        for damaged in [
            "^0000\n",
            "not-an-oid refs/heads/x\n",
            "# pack-refs with: peeled\n^ab\n",
        ] {
            std::fs::write(f.dir.join("packed-refs"), damaged).unwrap();
            let error = apply(&f.repo(), &[update("refs/tags/v1", None, Some(f.tag))]).unwrap_err();
            assert!(
                matches!(error, PackedRefsError::Malformed { .. }),
                "{damaged:?}: {error}"
            );
            assert_eq!(f.packed_refs(), damaged);
        }
    }

    #[test]
    fn a_kind_the_indexer_told_is_not_read_again() {
        let f = Fixture::new();
        // Not in the repository: only the told kind can vouch for it.
        let told = Oid::from_str("5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a").unwrap();
        let updates = [update("refs/heads/told", None, Some(told))];
        let error = apply(&f.repo(), &updates).unwrap_err();
        assert!(matches!(error, PackedRefsError::Peel { .. }), "{error}");
        let kinds = HashMap::from([(told, Kind::Commit), (f.tag, Kind::Tag)]);
        let updates = [
            update("refs/heads/told", None, Some(told)),
            update("refs/tags/v1", None, Some(f.tag)),
        ];
        super::apply(&f.repo(), &updates, &kinds).unwrap();
        let file = f.packed_refs();
        assert!(
            file.contains(&format!("{told} refs/heads/told\n{}", f.tag)),
            "{file}"
        );
        assert!(
            file.contains(&format!("{} refs/tags/v1\n^{}\n", f.tag, f.first)),
            "{file}"
        );
    }
}
