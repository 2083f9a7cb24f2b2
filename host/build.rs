//! Builds the guest plugins in `plugins/` for `wasm32-wasip2` and leaves the
//! components in `OUT_DIR`, where `src/plugins/builtin.rs` embeds them.
//!
//! The nested build has its own target dir beside ours (shared by every profile of
//! the host, and by `cargo check`/clippy), so a no-change rebuild takes a moment.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Variables that cargo sets for this build and that would leak into the nested one:
/// host rustflags, the clippy wrapper, our target dir and target triple.
const LEAKY_VARS: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_PRIMARY_PACKAGE",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("host/ sits in the workspace root");
    let plugins = root.join("plugins");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));

    println!("cargo:rerun-if-changed={}", plugins.display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let target_dir = nested_target_dir(&out_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--workspace",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    for var in LEAKY_VARS {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo for the guest plugins");
    assert!(
        status.success(),
        "building the guest plugins failed; is the wasm32-wasip2 target installed? \
         (rustup target add wasm32-wasip2)"
    );

    let built = target_dir.join("wasm32-wasip2").join("release");
    for entry in std::fs::read_dir(&built).expect("nested build output exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().is_some_and(|ext| ext == "wasm") {
            let name = path.file_name().expect("a file name");
            let bytes = std::fs::read(&path).expect("read a built component");
            std::fs::write(out_dir.join(name), &bytes).expect("copy component to OUT_DIR");
            // Its digest, embedded beside it: the service names the cached
            // compilation by it without reading the component at start.
            let digest: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let mut digest_file = out_dir.join(name).into_os_string();
            digest_file.push(".sha256");
            std::fs::write(digest_file, digest).expect("write the component's digest");
        }
    }
}

/// `<target>/<profile>/build/mirrorhost-<hash>/out` -> `<target>/wasm-guests`.
fn nested_target_dir(out_dir: &Path) -> PathBuf {
    let target = out_dir
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|n| n == "build"))
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap_or(out_dir);
    target.join("wasm-guests")
}
