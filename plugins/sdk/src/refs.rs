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
    /// The offered refs in order, without copying.
    pub fn iter(&self) -> impl Iterator<Item = Candidate<'_>> {
        self.names
            .lines()
            .zip(self.oids.lines())
            .zip(self.protected.iter())
            .map(|((name, oid), &protected)| Candidate {
                name,
                oid,
                protected,
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
