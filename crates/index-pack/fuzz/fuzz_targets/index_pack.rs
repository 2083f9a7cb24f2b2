//! Any bytes as a fetch's pack stream: the indexer must return (a pack or an
//! error), never panic, hang or overrun its memory budget. Whether it agrees
//! with git on the corpus is checked by the crate's tests
//! (`the_fuzz_corpus_is_judged_as_git_judges_it`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mirror_index_pack::{Options, index};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = Options {
        threads: 2,
        // Small enough that the budget's eviction paths run too.
        base_budget: 1 << 16,
        // As a first fetch is checked: every commit, tree and tag is parsed
        // for the objects it names.
        self_contained: true,
        ..Options::new(16 << 20)
    };
    let _ = index(data, dir.path(), None, &[], &options, &|_| {});
});
