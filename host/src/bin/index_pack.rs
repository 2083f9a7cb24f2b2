//! `mirrorhost-index-pack`: the pack indexer child alone (sync/index_pack.rs),
//! which the service starts for every fetch. A tenth of `mirrorhost`'s size:
//! starting it costs about half the memory of `mirrorhost index-pack`, the
//! same child inside the whole service's executable.

fn main() {
    std::process::exit(mirrorhost::sync::index_pack::child_main(
        std::env::args_os().skip(1),
    ));
}
