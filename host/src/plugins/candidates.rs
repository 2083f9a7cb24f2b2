//! The refs offered to a branch filter, kept in the packed form they cross into
//! the guest in (`candidate-refs`), so a call over tens of thousands of refs
//! copies three buffers and nothing else.

use std::collections::HashSet;

use super::bindings::types::CandidateRefs;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidates {
    pub(super) packed: CandidateRefs,
    /// Byte range of each name in `packed.names`.
    spans: Vec<(usize, usize)>,
}

impl Default for Candidates {
    fn default() -> Self {
        Self {
            packed: CandidateRefs {
                names: String::new(),
                oids: String::new(),
                protected: Vec::new(),
            },
            spans: Vec::new(),
        }
    }
}

impl Candidates {
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers one ref. A name with a newline is not a valid Git ref and an oid of
    /// another width than the first cannot share the column: both are left out
    /// (returns false).
    pub fn push(&mut self, name: &str, oid: &str, protected: bool) -> bool {
        let width = self
            .packed
            .oids
            .find('\n')
            .unwrap_or(self.packed.oids.len());
        if name.contains('\n') || (!self.is_empty() && oid.len() != width) {
            return false;
        }
        if !self.is_empty() {
            self.packed.names.push('\n');
            self.packed.oids.push('\n');
        }
        let start = self.packed.names.len();
        self.packed.names.push_str(name);
        self.spans.push((start, self.packed.names.len()));
        self.packed.oids.push_str(oid);
        self.packed.protected.push(protected);
        true
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The offered names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.spans
            .iter()
            .map(|&(start, end)| &self.packed.names[start..end])
    }

    /// The (name, oid, protected) triples, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, bool)> {
        let width = self
            .packed
            .oids
            .find('\n')
            .unwrap_or(self.packed.oids.len());
        self.names()
            .zip(self.packed.protected.iter())
            .enumerate()
            .map(move |(i, (name, &protected))| {
                let at = i * (width + 1);
                (name, &self.packed.oids[at..at + width], protected)
            })
    }

    /// The candidates whose names are in `keep`, in the same order.
    pub fn retain(&self, keep: &HashSet<String>) -> Candidates {
        let mut kept = Candidates::new();
        for (name, oid, protected) in self.iter().filter(|(n, _, _)| keep.contains(*n)) {
            kept.push(name, oid, protected);
        }
        kept
    }

    /// Bytes handed to the guest, for the input cap.
    pub fn byte_len(&self) -> usize {
        self.packed.names.len() + self.packed.oids.len() + self.packed.protected.len()
    }

    /// The first name of `answer` that was not offered. Filters answer in the
    /// order offered, so a cursor walks both lists once; an answer out of that
    /// order falls back to a set of the offered names.
    pub fn stranger<'a>(&self, answer: &'a [String]) -> Option<&'a String> {
        let mut cursor = 0;
        for (i, name) in answer.iter().enumerate() {
            let rest = &self.spans[cursor..];
            match rest
                .iter()
                .position(|&(s, e)| &self.packed.names[s..e] == name)
            {
                Some(step) => cursor += step + 1,
                None => {
                    let all: HashSet<&str> = self.names().collect();
                    return answer[i..].iter().find(|n| !all.contains(n.as_str()));
                }
            }
        }
        None
    }
}

impl<'a> FromIterator<(&'a str, &'a str, bool)> for Candidates {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str, bool)>>(iter: I) -> Self {
        let mut candidates = Candidates::new();
        for (name, oid, protected) in iter {
            candidates.push(name, oid, protected);
        }
        candidates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OID: &str = "0123456789012345678901234567890123456789";

    #[test]
    fn packs_in_order_and_leaves_out_what_cannot_be_packed() {
        let mut c = Candidates::new();
        assert!(c.push("refs/heads/a", OID, true));
        assert!(!c.push("refs/heads/bad\nname", OID, false));
        assert!(!c.push("refs/heads/short", "abc", false));
        assert!(c.push("refs/tags/b", OID, false));
        assert_eq!(c.packed.names, "refs/heads/a\nrefs/tags/b");
        assert_eq!(c.len(), 2);
        let triples: Vec<_> = c.iter().collect();
        assert_eq!(triples[1], ("refs/tags/b", OID, false));
        let keep: HashSet<String> = ["refs/tags/b".to_string()].into();
        assert_eq!(c.retain(&keep).names().collect::<Vec<_>>(), ["refs/tags/b"]);
    }

    #[test]
    fn answers_are_checked_against_the_offer_in_any_order() {
        let c: Candidates = ["a", "b", "c"].iter().map(|n| (*n, OID, false)).collect();
        let answer = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(c.stranger(&answer(&["a", "c"])), None);
        assert_eq!(c.stranger(&answer(&["c", "a"])), None);
        assert_eq!(
            c.stranger(&answer(&["a", "x"])).map(String::as_str),
            Some("x")
        );
        assert_eq!(
            c.stranger(&answer(&["c", "a", "x"])).map(String::as_str),
            Some("x")
        );
    }
}
