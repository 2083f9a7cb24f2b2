//! The objects an object names, git's links: a commit its tree and parents, a
//! tag its object, a tree its entries (but submodules, whose commits live in
//! another repository). A pack that starts a repository must hold every
//! object its objects name, as `git index-pack
//! --check-self-contained-and-connected` checks for a clone.

use super::{Kind, Oid};

/// Why an object's links cannot be read: git's parser refuses it too.
pub(crate) type Malformed = &'static str;

/// Reads one commit's, tree's or tag's links from its data, fed in pieces.
pub(crate) struct LinkReader {
    kind: Kind,
    /// The start of what is not parsed yet: one tree entry or header line at
    /// most.
    pending: Vec<u8>,
    /// A commit's header: the tree line is read (then parents may follow).
    seen_tree: bool,
    /// Nothing more to read (a commit's or tag's links are all at its start).
    done: bool,
}

/// Git's mode of a submodule entry, which names a commit of another repository.
const GITLINK: &[u8] = b"160000";
/// The longest header line looked at before its end is seen.
const MAX_LINE: usize = 4096;

impl LinkReader {
    /// A reader for an object of `kind`; `None` for blobs, which name nothing.
    pub(crate) fn new(kind: Kind) -> Option<Self> {
        (kind != Kind::Blob).then(|| Self {
            kind,
            pending: Vec::new(),
            seen_tree: false,
            done: false,
        })
    }

    /// Reads the links in `data`, the next piece of the object, into `found`.
    pub(crate) fn feed(
        &mut self,
        data: &[u8],
        found: &mut impl FnMut(Oid),
    ) -> Result<(), Malformed> {
        if self.done {
            return Ok(());
        }
        self.pending.extend_from_slice(data);
        let used = match self.kind {
            Kind::Tree => self.tree_entries(found)?,
            Kind::Commit | Kind::Tag => self.header_lines(found)?,
            Kind::Blob => self.pending.len(),
        };
        self.pending.drain(..used);
        Ok(())
    }

    /// Checks that the object did not end in the middle of what names a link.
    pub(crate) fn finish(self) -> Result<(), Malformed> {
        match self.kind {
            Kind::Tree if !self.pending.is_empty() => Err("a tree entry is cut short"),
            Kind::Commit if !self.seen_tree => Err("a commit names no tree"),
            Kind::Tag if !self.done => Err("a tag names no object"),
            _ => Ok(()),
        }
    }

    /// Whole entries, `<octal mode> <name>\0<20-byte id>`; how many bytes they
    /// took.
    fn tree_entries(&mut self, found: &mut impl FnMut(Oid)) -> Result<usize, Malformed> {
        let mut at = 0;
        let data = &self.pending;
        while let Some(space) = data[at..].iter().position(|b| *b == b' ') {
            let mode = &data[at..at + space];
            if mode.is_empty() || !mode.iter().all(|b| (b'0'..=b'7').contains(b)) {
                return Err("a tree entry has a malformed mode");
            }
            let name_at = at + space + 1;
            let Some(nul) = data[name_at..].iter().position(|b| *b == 0) else {
                break;
            };
            if nul == 0 {
                return Err("a tree entry has an empty name");
            }
            let id_at = name_at + nul + 1;
            let Some(id) = data.get(id_at..id_at + 20) else {
                break;
            };
            if mode != GITLINK {
                found(id.try_into().map_err(|_| "a tree entry is cut short")?);
            }
            at = id_at + 20;
        }
        // An unfinished mode with no space yet is bounded by the same rule.
        if data.len() - at > MAX_LINE + 20 && !data[at..].contains(&0) {
            return Err("a tree entry has a malformed name");
        }
        Ok(at)
    }

    /// A commit's `tree` and `parent` lines, a tag's `object` line; how many
    /// bytes they took.
    fn header_lines(&mut self, found: &mut impl FnMut(Oid)) -> Result<usize, Malformed> {
        let mut at = 0;
        while let Some(end) = self.pending[at..].iter().position(|b| *b == b'\n') {
            let line = &self.pending[at..at + end];
            at += end + 1;
            let named = match (self.kind, self.seen_tree) {
                (Kind::Commit, false) => line
                    .strip_prefix(b"tree ")
                    .ok_or("a commit names no tree")?,
                (Kind::Commit, true) => match line.strip_prefix(b"parent ") {
                    Some(parent) => parent,
                    None => {
                        self.done = true;
                        return Ok(at);
                    }
                },
                _ => line
                    .strip_prefix(b"object ")
                    .ok_or("a tag names no object")?,
            };
            found(hex_id(named).ok_or("a link is not a 40-digit object id")?);
            if self.kind == Kind::Tag {
                self.done = true;
                return Ok(at);
            }
            self.seen_tree = true;
        }
        if self.pending.len() - at > MAX_LINE {
            return Err("a header line is too long");
        }
        Ok(at)
    }
}

fn hex_id(text: &[u8]) -> Option<Oid> {
    let mut oid = [0; 20];
    hex::decode_to_slice(text, &mut oid).ok()?;
    Some(oid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(kind: Kind, data: &[u8], piece: usize) -> Result<Vec<Oid>, Malformed> {
        let mut reader = LinkReader::new(kind).unwrap();
        let mut found = Vec::new();
        for chunk in data.chunks(piece) {
            reader.feed(chunk, &mut |oid| found.push(oid))?;
        }
        reader.finish()?;
        Ok(found)
    }

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    #[test]
    fn commits_name_their_tree_and_parents_in_any_pieces() {
        let commit =
            format!("tree {A}\nparent {B}\nparent {A}\nauthor x <x> 1 +0000\n\nparent {B}\n");
        for piece in [1, 7, 1000] {
            assert_eq!(
                links(Kind::Commit, commit.as_bytes(), piece),
                Ok(vec![[0x11; 20], [0x22; 20], [0x11; 20]])
            );
        }
        assert!(links(Kind::Commit, format!("parent {A}\n").as_bytes(), 5).is_err());
        assert!(links(Kind::Commit, b"tree 12\n", 5).is_err());
        assert!(links(Kind::Commit, b"", 5).is_err());
    }

    #[test]
    fn trees_name_their_entries_but_submodules() {
        let mut tree = Vec::new();
        for (mode, name, id) in [
            ("100644", "a", [1u8; 20]),
            ("160000", "sub", [2; 20]),
            ("40000", "d", [3; 20]),
        ] {
            tree.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            tree.extend_from_slice(&id);
        }
        for piece in [1, 3, 1000] {
            assert_eq!(links(Kind::Tree, &tree, piece), Ok(vec![[1; 20], [3; 20]]));
        }
        assert!(links(Kind::Tree, &tree[..tree.len() - 1], 4).is_err());
        assert!(links(Kind::Tree, b"100644 \0aaaaaaaaaaaaaaaaaaaa", 4).is_err());
        assert!(links(Kind::Tree, b"10x644 a\0aaaaaaaaaaaaaaaaaaaa", 4).is_err());
    }

    #[test]
    fn tags_name_their_object() {
        let tag = format!("object {B}\ntype commit\ntag v1\n");
        assert_eq!(links(Kind::Tag, tag.as_bytes(), 4), Ok(vec![[0x22; 20]]));
        assert!(links(Kind::Tag, b"type commit\n", 4).is_err());
    }
}
