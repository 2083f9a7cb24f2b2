//! What a remote advertises, read without trusting its names.
//!
//! git2's `RemoteHead::name` panics on a name that is not UTF-8, and a remote
//! chooses its names: here the advertisement is read from libgit2 as bytes,
//! and every name is checked as git checks a ref name before it can reach a
//! filter, a fetch refspec or `packed-refs`. Names that cannot land are kept
//! with their reason, for the run to report.

// libgit2's advertisement, read through its C API (see the module doc).
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::CStr;

use git2::{Binding, Oid};
use libgit2_sys as raw;

use super::refs;

/// Why an advertised ref is not mirrored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Its name is not UTF-8.
    NotUtf8,
    /// Its name breaks git's rules (`git check-ref-format`).
    InvalidName,
    /// Another ref is a directory of it, or it is a directory of another
    /// (`refs/heads/a` beside `refs/heads/a/b`): git cannot hold both.
    Clash(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotUtf8 => f.write_str("refused: the name is not UTF-8"),
            Refusal::InvalidName => f.write_str("refused: git does not accept this ref name"),
            Refusal::Clash(other) => {
                write!(
                    f,
                    "refused: clashes with {other} (one would be a directory of the other)"
                )
            }
        }
    }
}

/// A remote's advertisement, sorted out.
#[derive(Debug, Default)]
pub struct Listing {
    /// The mirrorable refs whose names git accepts.
    pub refs: BTreeMap<String, Oid>,
    /// The mirrorable refs that cannot land: the name as shown (lossy where
    /// it is not UTF-8), its object and why.
    pub refused: Vec<(String, Oid, Refusal)>,
}

/// Lists what `remote` (connected) advertises.
pub fn list(remote: &git2::Remote<'_>) -> Result<Listing, git2::Error> {
    let mut listing = Listing::default();
    for (name, oid) in advertised(remote)? {
        match std::str::from_utf8(&name) {
            Ok(name) if !refs::is_mirrorable(name) => {}
            Ok(name) if !refs::valid_name(name) => {
                listing
                    .refused
                    .push((name.to_string(), oid, Refusal::InvalidName));
            }
            Ok(name) => {
                listing.refs.insert(name.to_string(), oid);
            }
            Err(_) => {
                let shown = String::from_utf8_lossy(&name).into_owned();
                if shown.starts_with("refs/") {
                    listing.refused.push((shown, oid, Refusal::NotUtf8));
                }
            }
        }
    }
    Ok(listing)
}

/// The advertisement as libgit2 holds it: each name's bytes and its object.
fn advertised(remote: &git2::Remote<'_>) -> Result<Vec<(Vec<u8>, Oid)>, git2::Error> {
    let mut heads: *mut *const raw::git_remote_head = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: `remote` is a live, connected libgit2 remote; git_remote_ls
    // points `heads` at `size` head pointers that the remote owns until it
    // disconnects or lists again. Both need `&mut` access to the remote, which
    // the borrow of `remote` excludes while the heads are copied out here.
    let code = unsafe { raw::git_remote_ls(&mut heads, &mut size, remote.raw()) };
    if code < 0 {
        return Err(git2::Error::last_error(code));
    }
    if heads.is_null() || size == 0 {
        return Ok(Vec::new());
    }
    let mut found = Vec::with_capacity(size);
    for i in 0..size {
        // SAFETY: `i < size`, within the array libgit2 handed out; each head
        // and its NUL-terminated name stay valid as said above.
        let (name, oid) = unsafe {
            let head = &**heads.add(i);
            if head.name.is_null() {
                continue;
            }
            let name = CStr::from_ptr(head.name).to_bytes().to_vec();
            (name, Oid::from_bytes(&head.oid.id)?)
        };
        found.push((name, oid));
    }
    Ok(found)
}

/// Refuses, in name order, each name of `new` that clashes with a name of
/// `kept` or with a name of `new` accepted before it. `kept` are the names the
/// repository will hold whatever happens (local refs this run leaves).
/// Returns the refused names with the name each clashes with.
pub fn clashes<'a>(
    kept: impl IntoIterator<Item = &'a str>,
    new: impl IntoIterator<Item = &'a str>,
) -> Vec<(&'a str, String)> {
    let mut taken: std::collections::BTreeSet<&str> = kept.into_iter().collect();
    let mut new: Vec<&str> = new.into_iter().collect();
    new.sort_unstable();
    let mut refused = Vec::new();
    for name in new {
        match clash_in(&taken, name) {
            Some(other) => refused.push((name, other.to_string())),
            None => {
                taken.insert(name);
            }
        }
    }
    refused
}

/// A name of `taken` that is a directory of `name`, or of which `name` is one.
fn clash_in<'a>(taken: &std::collections::BTreeSet<&'a str>, name: &str) -> Option<&'a str> {
    // A directory of `name`: one of its proper prefixes ending at a '/'.
    let parent = name
        .match_indices('/')
        .map(|(at, _)| &name[..at])
        .find(|prefix| taken.contains(prefix));
    if let Some(parent) = parent {
        return taken.get(parent).copied();
    }
    // A name under `name/`: the first one after `name/` in order.
    let dir = format!("{name}/");
    taken
        .range::<str, _>((
            std::ops::Bound::Excluded(dir.as_str()),
            std::ops::Bound::Unbounded,
        ))
        .next()
        .filter(|other| other.starts_with(&dir))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_and_a_directory_of_it_cannot_both_land() {
        let refused = clashes(
            ["refs/heads/a", "refs/tags/v1/rc"],
            [
                "refs/heads/a/b",
                "refs/heads/ab",
                "refs/tags/v1",
                "refs/heads/x",
                "refs/heads/x/y/z",
            ],
        );
        assert_eq!(
            refused,
            [
                ("refs/heads/a/b", "refs/heads/a".to_string()),
                ("refs/heads/x/y/z", "refs/heads/x".to_string()),
                ("refs/tags/v1", "refs/tags/v1/rc".to_string()),
            ]
        );
        assert!(clashes(["refs/heads/a"], ["refs/heads/a-b", "refs/heads/a.b"]).is_empty());
    }
}
