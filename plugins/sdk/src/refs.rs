//! Ref-name helpers shared by filters.

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

#[cfg(test)]
mod tests {
    use super::*;

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
