//! `mirrorhost-index-pack`: the pack indexer child alone (sync/index_pack.rs),
//! which the service starts for every fetch. 3.6 MB linking libc alone, it
//! starts in 2.2 MiB, where `mirrorhost index-pack` (the same child inside
//! the whole service's executable) takes 9.

fn main() {
    std::process::exit(mirrorhost::sync::index_pack::child_main(
        std::env::args_os().skip(1),
    ));
}
