//! Ref-name helpers shared by filters, and the view over packed candidates.

use crate::types::CandidateRefs;

const HEADS: &str = "refs/heads/";
const TAGS: &str = "refs/tags/";

/// What a full ref name designates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind<'a> {
    Branch(&'a str),
    Tag(&'a str),
    /// Anything else (`refs/pull/…`, `refs/notes/…`, `HEAD`): mirrors leave these alone
    /// unless a plugin says otherwise.
    Other(&'a str),
}

/// Splits a full ref name into its kind and short name.
pub fn classify(full: &str) -> RefKind<'_> {
    if let Some(short) = full.strip_prefix(HEADS) {
        RefKind::Branch(short)
    } else if let Some(short) = full.strip_prefix(TAGS) {
        RefKind::Tag(short)
    } else {
        RefKind::Other(full)
    }
}

/// One offered ref, borrowed from the packed [`CandidateRefs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub name: &'a str,
    pub oid: &'a str,
    pub protected: bool,
}

impl CandidateRefs {
    /// The offered refs in order, without copying. Names are found with a
    /// vectorised newline search; oids, all of one width, by offset.
    pub fn iter(&self) -> impl Iterator<Item = Candidate<'_>> {
        let width = self.oids.find('\n').unwrap_or(self.oids.len());
        let mut start = 0;
        let names = memchr::memchr_iter(b'\n', self.names.as_bytes())
            .chain(std::iter::once(self.names.len()))
            .map(move |end| {
                let name = &self.names[start..end];
                start = end + 1;
                name
            });
        names
            .zip(self.protected.iter())
            .enumerate()
            .map(move |(i, (name, &protected))| {
                let at = i * (width + 1);
                Candidate {
                    name,
                    oid: self.oids.get(at..at + width).unwrap_or_default(),
                    protected,
                }
            })
    }

    pub fn len(&self) -> usize {
        self.protected.len()
    }

    pub fn is_empty(&self) -> bool {
        self.protected.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_unpack_in_order() {
        let refs = CandidateRefs {
            names: "refs/heads/a\nrefs/tags/b".into(),
            oids: "1111\n2222".into(),
            protected: vec![true, false],
        };
        let got: Vec<Candidate<'_>> = refs.iter().collect();
        assert_eq!(got.len(), refs.len());
        assert_eq!(
            got[1],
            Candidate {
                name: "refs/tags/b",
                oid: "2222",
                protected: false
            }
        );
        assert!(got[0].protected);
    }

    #[test]
    fn classify_splits_kinds() {
        assert_eq!(
            classify("refs/heads/release/1"),
            RefKind::Branch("release/1")
        );
        assert_eq!(classify("refs/tags/v1"), RefKind::Tag("v1"));
        assert_eq!(
            classify("refs/pull/1/head"),
            RefKind::Other("refs/pull/1/head")
        );
    }
}
