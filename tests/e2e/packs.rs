//! The pack backend as the engine installs it: libgit2 hands a fetch's pack to
//! a `mirrorhost index-pack` child, and the pack lands whole or not at all.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use mirrorhost::sync::index_pack::Kind;
use mirrorhost::sync::packs::{Program, Tips};
use mirrorhost::sync::{DEFAULT_MAX_OBJECT_BYTES, PackIndexer, open_project_repo, packs};

use crate::pack_objects::pack_objects;
use crate::support::git;

/// `mirrorhost index-pack`, as the service starts it where
/// `mirrorhost-index-pack` is not installed: the suite's other tests go
/// through the latter.
fn indexer() -> PackIndexer {
    PackIndexer::new(
        Program::Subcommand(env!("CARGO_BIN_EXE_mirrorhost").into()),
        DEFAULT_MAX_OBJECT_BYTES,
    )
}

/// A project repository whose fetched packs go through `indexer`.
fn mirror(path: &Path, indexer: &PackIndexer) -> git2::Repository {
    mirror_with_tips(path, indexer).0
}

/// The same, and what its indexers find of the tips they are told to expect.
fn mirror_with_tips(path: &Path, indexer: &PackIndexer) -> (git2::Repository, Arc<Tips>) {
    let repo = open_project_repo(path).unwrap();
    let tips = packs::install(&repo, indexer).unwrap();
    (repo, tips)
}

/// A work dir with a source repository of `commits` commits on main, each
/// changing one file that they mostly share, so that git stores later
/// versions as deltas.
struct Upstream {
    work: tempfile::TempDir,
    source: PathBuf,
    commits: Vec<String>,
}

fn upstream(commits: usize) -> Upstream {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    std::fs::create_dir(&source).unwrap();
    git(&source, &["init", "-q", "-b", "main"]);
    let commits = (0..commits)
        .map(|i| {
            std::fs::write(source.join("file"), content(i)).unwrap();
            git(&source, &["add", "file"]);
            git(&source, &["commit", "-qm", &format!("commit {i}")]);
            git(&source, &["rev-parse", "HEAD"]).trim().to_string()
        })
        .collect();
    Upstream {
        work,
        source,
        commits,
    }
}

fn content(i: usize) -> String {
    let body: String = (0..200).map(|j| format!("common line {j}\n")).collect();
    format!("line {i}\n{body}")
}

/// Hands `data` to the repository's pack writer in small pieces, as the
/// network delivers them.
fn write_pack(repo: &git2::Repository, data: &[u8]) -> Result<i32, git2::Error> {
    let odb = repo.odb()?;
    let mut writer = odb.packwriter()?;
    for chunk in data.chunks(1000) {
        writer
            .write_all(chunk)
            .map_err(|e| git2::Error::from_str(&e.to_string()))?;
    }
    writer.commit()
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

fn has_commit(repo: &git2::Repository, id: &str) -> bool {
    repo.find_commit(git2::Oid::from_str(id).unwrap()).is_ok()
}

#[test]
fn packs_and_thin_packs_land_through_the_indexer_process() {
    let Upstream {
        work,
        source,
        commits,
    } = upstream(6);
    let repo = mirror(&work.path().join("mirror.git"), &indexer());

    write_pack(
        &repo,
        &pack_objects(&source, &format!("{}\n", commits[2]), false),
    )
    .unwrap();
    assert!(has_commit(&repo, &commits[2]));
    // Exactly one .pack and its .idx, read-only as git makes them.
    assert_eq!(pack_files(&repo).len(), 2, "{:?}", pack_files(&repo));
    for name in pack_files(&repo) {
        let path = repo.path().join("objects/pack").join(name);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o444, "{}", path.display());
    }

    // A thin pack deltas against objects the mirror already has; they are
    // copied in, so the new pack stands on its own.
    let thin = pack_objects(&source, &format!("{}\n^{}\n", commits[5], commits[2]), true);
    let empty = mirror(&work.path().join("empty.git"), &indexer());
    let error = write_pack(&empty, &thin).unwrap_err();
    assert!(error.message().contains("no base"), "{error}");
    write_pack(&repo, &thin).unwrap();
    assert_eq!(pack_files(&repo).len(), 4);
    for idx in pack_files(&repo).iter().filter(|n| n.ends_with(".idx")) {
        git(
            repo.path(),
            &["verify-pack", &format!("objects/pack/{idx}")],
        );
    }
    let tip = repo
        .find_commit(git2::Oid::from_str(&commits[5]).unwrap())
        .unwrap();
    let file = tip
        .tree()
        .unwrap()
        .get_name("file")
        .unwrap()
        .to_object(&repo)
        .unwrap();
    assert_eq!(file.as_blob().unwrap().content(), content(5).as_bytes());
}

#[test]
fn a_refused_or_abandoned_pack_leaves_nothing_behind() {
    let Upstream {
        work,
        source,
        commits,
    } = upstream(3);
    let repo = mirror(&work.path().join("mirror.git"), &indexer());
    let good = pack_objects(&source, &format!("{}\n", commits[2]), false);

    let mut corrupt = good.clone();
    corrupt[good.len() / 2] ^= 0xff;
    let error = write_pack(&repo, &corrupt).unwrap_err();
    assert!(
        error.message().starts_with("received pack refused: "),
        "{error}"
    );
    assert_eq!(pack_files(&repo), Vec::<String>::new());

    let strict = PackIndexer {
        max_object_bytes: 100,
        ..indexer()
    };
    let error = write_pack(&mirror(&work.path().join("strict.git"), &strict), &good).unwrap_err();
    assert!(
        error.message().contains("max_object_bytes is 100"),
        "{error}"
    );

    {
        let odb = repo.odb().unwrap();
        let mut writer = odb.packwriter().unwrap();
        writer.write_all(&good[..good.len() / 2]).unwrap();
        // Dropped without commit: the download was abandoned.
    }
    assert_eq!(pack_files(&repo), Vec::<String>::new());
    assert!(!has_commit(&repo, &commits[2]));

    write_pack(&repo, &good).unwrap();
    assert!(has_commit(&repo, &commits[2]));
}

/// A repository's first pack must hold every object its objects name (a
/// clone's check): one that names a parent it does not carry is refused and
/// leaves nothing; once the parent is there, the same pack lands (later
/// fetches are walked by `sync::connectivity`).
#[test]
fn a_first_pack_must_hold_every_object_it_names() {
    let Upstream {
        work,
        source,
        commits,
    } = upstream(3);
    let repo = mirror(&work.path().join("mirror.git"), &indexer());
    let last_only = pack_objects(
        &source,
        &format!("{}\n^{}\n", commits[2], commits[1]),
        false,
    );
    let error = write_pack(&repo, &last_only).unwrap_err();
    assert!(
        error.message().contains("incomplete history") && error.message().contains(&commits[1]),
        "{error}"
    );
    assert_eq!(pack_files(&repo), Vec::<String>::new());

    write_pack(
        &repo,
        &pack_objects(&source, &format!("{}\n", commits[1]), false),
    )
    .unwrap();
    write_pack(&repo, &last_only).unwrap();
    assert!(has_commit(&repo, &commits[2]));
}

/// libgit2 hands a pack to the next backend when one refuses to take it; its
/// own indexer knows nothing of `max_object_bytes`, so a fetch whose indexer
/// cannot start must fail, not fall back.
#[test]
fn a_fetch_whose_indexer_cannot_start_fails_instead_of_falling_back() {
    let Upstream { work, source, .. } = upstream(1);
    let missing = PackIndexer {
        program: Program::Subcommand(work.path().join("no-such-mirrorhost")),
        ..indexer()
    };
    let repo = mirror(&work.path().join("mirror.git"), &missing);
    let url = format!("file://{}", source.display());
    let mut remote = repo.remote_anonymous(&url).unwrap();
    let error = remote.download(&["refs/heads/main"], None).unwrap_err();
    assert!(
        error.message().contains("cannot start the pack indexer"),
        "{error}"
    );
    assert_eq!(pack_files(&repo), Vec::<String>::new());
}

/// The run tells the indexer which tips it fetches; the indexer says which
/// of them the pack held, and their kinds, so the service reads none of it.
#[test]
fn the_indexer_reports_the_kinds_of_the_expected_tips() {
    let Upstream {
        work,
        source,
        commits,
    } = upstream(2);
    git(&source, &["tag", "-a", "-m", "v1", "v1"]);
    let tag = git(&source, &["rev-parse", "v1"]).trim().to_string();
    let (repo, tips) = mirror_with_tips(&work.path().join("mirror.git"), &indexer());
    let oid = |hex: &str| git2::Oid::from_str(hex).unwrap();
    let absent = oid("5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a");
    tips.expect([oid(&commits[1]), oid(&tag), absent]);
    write_pack(&repo, &pack_objects(&source, "main\nrefs/tags/v1\n", false)).unwrap();
    assert_eq!(tips.kind(oid(&commits[1])), Some(Kind::Commit));
    assert_eq!(tips.kind(oid(&tag)), Some(Kind::Tag));
    assert_eq!(tips.kind(absent), None);
    // An earlier commit the pack holds was not asked about.
    assert_eq!(tips.kind(oid(&commits[0])), None);
}

/// A pack of a 1-byte blob and a delta on it that claims a 900 MiB result:
/// within `max_object_bytes`, so the indexer sets the memory aside.
fn pack_claiming_900_mib() -> Vec<u8> {
    use crate::pack_objects::{deflated, entry_header, ofs_distance, raw_pack, varint};
    let mut delta = Vec::new();
    varint(1, &mut delta);
    varint(900 << 20, &mut delta);
    delta.extend([0x91, 0x00, 0x01]); // copy 1 byte from offset 0
    let blob = [entry_header(3, 1), deflated(b"x")].concat();
    let claim = [
        entry_header(6, delta.len() as u64),
        ofs_distance(blob.len()),
        deflated(&delta),
    ]
    .concat();
    raw_pack(&[blob, claim])
}

/// Past its address-space limit the indexer child dies; the fetch fails with
/// what it said, and its files are gone at once, not at the next start.
#[test]
fn an_indexer_past_its_memory_limit_dies_and_leaves_nothing() {
    let work = tempfile::tempdir().unwrap();
    let pack = pack_claiming_900_mib();
    let mut tight = indexer();
    tight.limits.memory_bytes = 512 << 20;
    let repo = mirror(&work.path().join("tight.git"), &tight);
    let error = write_pack(&repo, &pack).unwrap_err();
    assert!(
        error.message().contains("memory allocation"),
        "{}",
        error.message()
    );
    assert_eq!(pack_files(&repo), Vec::<String>::new());

    // Under the default limit the same pack is refused for what it is.
    let repo = mirror(&work.path().join("roomy.git"), &indexer());
    let error = write_pack(&repo, &pack).unwrap_err();
    assert!(error.message().contains("received pack refused"), "{error}");
    assert!(!error.message().contains("memory allocation"), "{error}");
    assert_eq!(pack_files(&repo), Vec::<String>::new());
}
