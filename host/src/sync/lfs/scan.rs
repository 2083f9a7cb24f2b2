//! Finds the LFS pointers among the objects some commits bring: `git
//! rev-list --objects` from the new tips, stopping at what is already
//! there, keeps blobs under the pointer size (git's own object filter, so
//! big blobs are never read), and `git cat-file --batch` hands them over to
//! be read as pointers. A sync that brings nothing reads nothing.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Stdio};

use git2::Oid;

use super::pointer::{self, MAX_POINTER_BYTES, Pointer, Sha256};
use crate::sync::git_cli;

/// Where the walk stops.
#[derive(Debug, Clone, Copy)]
pub enum Known<'a> {
    /// At everything a ref of the repository reaches (a pull, before its
    /// refs land).
    AllRefs,
    /// At these commits (a push: what the destination holds).
    Commits(&'a [Oid]),
}

/// A pointer found, with a path it was found at (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub pointer: Pointer,
    pub path: String,
    /// The pointer file's blob.
    pub blob: Oid,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot list the LFS pointers of the new commits: {0}")]
pub struct ScanError(String);

impl From<std::io::Error> for ScanError {
    fn from(e: std::io::Error) -> Self {
        Self(e.to_string())
    }
}

/// The pointers `tips` reach that `known` does not, each object once.
pub fn pointers(repo: &Path, tips: &[Oid], known: Known<'_>) -> Result<Vec<Found>, ScanError> {
    if tips.is_empty() {
        return Ok(Vec::new());
    }
    let mut walk = git_cli::in_repo(repo)
        .args(["rev-list", "--objects", "--stdin"])
        .arg(format!(
            "--filter=combine:object:type=blob+blob:limit={MAX_POINTER_BYTES}"
        ))
        .args(match known {
            Known::AllRefs => &["--not", "--all"][..],
            Known::Commits(_) => &[],
        })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut input: String = tips.iter().map(|tip| format!("{tip}\n")).collect();
    if let Known::Commits(known) = known {
        input.extend(known.iter().map(|oid| format!("^{oid}\n")));
    }
    // rev-list reads all of its input before it writes a line.
    walk.stdin
        .take()
        .ok_or_else(|| ScanError("no input to git rev-list".into()))?
        .write_all(input.as_bytes())?;
    let listed = walk
        .stdout
        .take()
        .ok_or_else(|| ScanError("no output from git rev-list".into()))?;
    let mut read = git_cli::in_repo(repo)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let found = read_pointers(listed, &mut read);
    let walked = finish(walk, "rev-list");
    let _ = read.wait();
    let found = found?;
    walked?;
    Ok(found)
}

/// Feeds the listed blobs to `cat-file` from a thread, reads its answers here.
fn read_pointers(listed: ChildStdout, cat_file: &mut Child) -> Result<Vec<Found>, ScanError> {
    let mut requests = cat_file
        .stdin
        .take()
        .ok_or_else(|| ScanError("no input to git cat-file".into()))?;
    let answers = cat_file
        .stdout
        .take()
        .ok_or_else(|| ScanError("no output from git cat-file".into()))?;
    let feeder = std::thread::spawn(move || -> std::io::Result<HashMap<Oid, String>> {
        let mut paths = HashMap::new();
        for line in BufReader::new(listed).lines() {
            let line = line?;
            // Commits come without a path; with the filter, the rest are blobs.
            let Some((oid, path)) = line.split_once(' ') else {
                continue;
            };
            let Ok(oid) = Oid::from_str(oid) else {
                continue;
            };
            writeln!(requests, "{oid}")?;
            paths.insert(oid, path.to_string());
        }
        Ok(paths)
    });
    let mut answers = BufReader::new(answers);
    let mut header = String::new();
    let mut pointers: HashMap<Sha256, (Oid, Pointer)> = HashMap::new();
    loop {
        header.clear();
        if answers.read_line(&mut header)? == 0 {
            break;
        }
        let garbled = || ScanError(format!("git cat-file said {:?}", header.trim()));
        let mut fields = header.split_ascii_whitespace();
        let (Some(blob), Some(kind), Some(size)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(garbled());
        };
        let blob = Oid::from_str(blob).map_err(|_| garbled())?;
        let size: usize = size.parse().map_err(|_| garbled())?;
        // The content and the line break after it.
        let mut content = vec![0; size + 1];
        answers.read_exact(&mut content)?;
        content.pop();
        if kind == "blob"
            && let Some(pointer) = pointer::parse(&content)
        {
            pointers.entry(pointer.oid).or_insert((blob, pointer));
        }
    }
    let paths = feeder
        .join()
        .map_err(|_| ScanError("the feeding thread panicked".into()))??;
    let mut found: Vec<Found> = pointers
        .into_values()
        .map(|(blob, pointer)| Found {
            pointer,
            path: paths
                .get(&blob)
                .cloned()
                .unwrap_or_else(|| blob.to_string()),
            blob,
        })
        .collect();
    found.sort_by_key(|f| f.pointer);
    Ok(found)
}

fn finish(child: Child, what: &str) -> Result<(), ScanError> {
    let out = child.wait_with_output()?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    Err(ScanError(format!(
        "git {what}: {}",
        said.lines().next().unwrap_or("failed").trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::testing::git;

    fn pointer_text(oid: &str, size: u64) -> String {
        format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n")
    }

    /// Pointers are found in what the new commits bring, not in what the
    /// refs already reach; big blobs and look-alikes are not pointers.
    #[test]
    fn only_new_pointers_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("w");
        git(dir.path(), &["init", "-q", "w"]);
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        std::fs::write(work.join("one.bin"), pointer_text(&a, 10)).unwrap();
        std::fs::write(work.join("big"), "x".repeat(5000)).unwrap();
        std::fs::write(work.join("fake.bin"), "version nope\n").unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-qm", "one"]);
        git(&work, &["branch", "old"]);
        std::fs::create_dir(work.join("dir")).unwrap();
        std::fs::write(work.join("dir/two.bin"), pointer_text(&b, 20)).unwrap();
        std::fs::write(work.join("dir/copy.bin"), pointer_text(&a, 10)).unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-qm", "two"]);
        let head = Oid::from_str(&git(&work, &["rev-parse", "HEAD"])).unwrap();
        let old = Oid::from_str(&git(&work, &["rev-parse", "old"])).unwrap();

        let found = pointers(&work, &[head], Known::Commits(&[])).unwrap();
        let sizes: Vec<u64> = found.iter().map(|f| f.pointer.size).collect();
        assert_eq!(sizes, [10, 20], "{found:?}");
        let found = pointers(&work, &[head], Known::Commits(&[old])).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "dir/two.bin");
        assert_eq!(found[0].pointer.oid.to_string(), b);
        // Every ref reaches HEAD already: nothing is new.
        assert!(pointers(&work, &[head], Known::AllRefs).unwrap().is_empty());
        assert!(pointers(&work, &[], Known::AllRefs).unwrap().is_empty());
    }
}
