//! Plugin runtime benchmark: `cargo bench --bench plugins`.
//!
//! 1. Per-call cost of a fresh sandbox: new `Store`, instantiate from the
//!    pre-instantiated component, call a trivial export (`ours` deciding one ref).
//! 2. A 10,000-ref `regex-filter` call against the same filter in native Rust
//!    (compile the regexes, classify, match), in the same run. Prints the ratio.
//!
//! Targets (issue 2): instantiation at most 20 µs; the filter at most 3x native.

use std::hint::black_box;
use std::time::{Duration, Instant};

use mirrorhost::plugins::{
    Candidates, Direction, DivergedRef, Limits, MirrorContext, Registry, Runtime,
};
use regex::Regex;

const REFS: usize = 10_000;
const INCLUDE: [&str; 3] = ["^main$", "^release/", "^v\\d+\\."];
const EXCLUDE: &str = "-wip$";

fn main() {
    let cache = std::env::temp_dir().join("mirrorhost-bench-plugin-cache");
    let runtime = Runtime::new(Limits::default(), Some(cache)).expect("runtime");
    println!("pooling allocator: {}", runtime.uses_pooling());
    let registry = Registry::with_builtins(runtime).expect("built-ins load");
    let ctx = MirrorContext {
        mirror_id: "1".into(),
        project_id: "bench/repo".into(),
        direction: Direction::Pull,
        remote_url: "https://example.com/bench/repo.git".into(),
    };

    let diverged = DivergedRef {
        name: "refs/heads/main".into(),
        local_oid: "1".repeat(40),
        remote_oid: "2".repeat(40),
        merge_base: None,
        ahead: 1,
        behind: 1,
        protected: false,
        direction: Direction::Pull,
    };
    let call = measure(20_000, || {
        black_box(
            registry
                .decide("ours", &ctx, "", &diverged)
                .expect("decide"),
        );
    });
    report("fresh store + instantiate + trivial call", &call);

    // Sorted by name, as git advertises refs. The native filter gets them as a
    // plain Vec; the registry in the packed form the engine builds them in.
    let mut native_refs = candidate_refs(REFS);
    native_refs.sort_by(|a, b| a.name.cmp(&b.name));
    let refs: Candidates = native_refs
        .iter()
        .map(|r| (r.name.as_str(), r.oid.as_str(), r.protected))
        .collect();
    let config = serde_json::json!({"include": INCLUDE, "exclude": EXCLUDE}).to_string();
    let expected = native_filter(&native_refs);
    let wasm_kept = registry
        .filter("regex-filter", &ctx, &config, &refs)
        .expect("filter");
    // Order is not part of the comparison.
    let (mut guest_names, mut native_names) = (wasm_kept.value.clone(), expected.clone());
    guest_names.sort_unstable();
    native_names.sort_unstable();
    assert!(
        guest_names == native_names,
        "guest and native filters disagree"
    );
    println!(
        "regex-filter over {REFS} refs keeps {} (fuel {}, peak memory {} KiB)",
        expected.len(),
        wasm_kept.fuel_used,
        wasm_kept.peak_memory_bytes / 1024
    );
    // The cost of handing 10k refs over and back, with almost no guest work.
    let handover = measure(300, || {
        black_box(
            registry
                .filter("protected-only", &ctx, "", &refs)
                .expect("filter"),
        );
    });
    report("protected-only (hand-over cost)", &handover);
    let wasm = measure(300, || {
        black_box(
            registry
                .filter("regex-filter", &ctx, &config, &refs)
                .expect("filter"),
        );
    });
    let native = measure(300, || {
        black_box(native_filter(&native_refs));
    });
    report("regex-filter, wasm guest", &wasm);
    report("regex-filter, native Rust", &native);
    println!(
        "ratio wasm/native (median): {:.2}x  (target <= 3x)",
        wasm.median.as_secs_f64() / native.median.as_secs_f64()
    );
    println!(
        "instantiate+call median: {:.1} us  (target <= 20 us)",
        call.median.as_secs_f64() * 1e6
    );
}

/// A ref as a native program would hold it.
#[derive(Clone)]
struct CandidateRef {
    name: String,
    oid: String,
    protected: bool,
}

/// A repository's worth of refs: mostly feature branches, some releases, tags.
fn candidate_refs(count: usize) -> Vec<CandidateRef> {
    (0..count)
        .map(|i| {
            let name = match i % 10 {
                0 => format!("refs/tags/v{}.{}.{}", i / 1000, (i / 10) % 100, i % 7),
                1 => format!("refs/heads/release/{}.{}", i / 100, i % 100),
                2 => format!("refs/heads/feature/topic-{i}-wip"),
                3 => format!("refs/pull/{i}/head"),
                _ => format!("refs/heads/feature/team-{}/topic-{i}", i % 37),
            };
            CandidateRef {
                name,
                oid: format!("{:040x}", i as u128 * 0x9e37_79b9_7f4a_7c15),
                protected: false,
            }
        })
        .chain(std::iter::once(CandidateRef {
            name: "refs/heads/main".into(),
            oid: "f".repeat(40),
            protected: true,
        }))
        .collect()
}

/// What `regex-filter` does, natively: same patterns, same rules.
fn native_filter(refs: &[CandidateRef]) -> Vec<String> {
    let include = Regex::new(
        &INCLUDE
            .iter()
            .map(|p| format!("(?:{p})"))
            .collect::<Vec<_>>()
            .join("|"),
    )
    .expect("include");
    let exclude = Regex::new(EXCLUDE).expect("exclude");
    refs.iter()
        .filter_map(|r| {
            let short = r
                .name
                .strip_prefix("refs/heads/")
                .or_else(|| r.name.strip_prefix("refs/tags/"))?;
            (include.is_match(short) && !exclude.is_match(short)).then(|| r.name.clone())
        })
        .collect()
}

struct Stats {
    median: Duration,
    p99: Duration,
    mean: Duration,
}

fn measure(iterations: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..iterations / 10 {
        f();
    }
    let mut samples: Vec<Duration> = (0..iterations)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    samples.sort_unstable();
    let total: Duration = samples.iter().sum();
    Stats {
        median: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
        mean: total / iterations as u32,
    }
}

fn report(name: &str, stats: &Stats) {
    println!(
        "{name:<45} median {:>10.1} us  p99 {:>10.1} us  mean {:>10.1} us",
        stats.median.as_secs_f64() * 1e6,
        stats.p99.as_secs_f64() * 1e6,
        stats.mean.as_secs_f64() * 1e6
    );
}
