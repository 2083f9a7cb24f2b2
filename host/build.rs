//! Builds the guest plugins in `plugins/` for `wasm32-wasip2` and leaves the
//! components in `OUT_DIR`, where `src/plugins/builtin.rs` embeds them.
//!
//! The nested build has its own target dir beside ours (shared by every profile of
//! the host, and by `cargo check`/clippy), so a no-change rebuild takes a moment.
//!
//! It also links the host's executables with packed relative relocations
//! where the build's glibc applies them (see `pack_relative_relocations`).

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
    pack_relative_relocations();

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

/// Relative relocations packed (DT_RELR): the service's `.rela.dyn`, 1 MB
/// that the loader reads at every start of every process, becomes a few KB
/// (about 1 MiB less resident in the service). glibc applies them from 2.36
/// on, and an executable linked so requires that version: only for a native
/// build on a glibc that has it, which is where it runs first. A linker
/// that does not know the option warns and links as before.
fn pack_relative_relocations() {
    let var = |name: &str| env::var(name).unwrap_or_default();
    let native = var("HOST") == var("TARGET");
    let gnu_linux = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if native && gnu_linux && glibc_at_least((2, 36)) {
        println!("cargo:rustc-link-arg=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether this machine's glibc, as `getconf` names it ("glibc 2.36"), is
/// at least `wanted`.
fn glibc_at_least(wanted: (u32, u32)) -> bool {
    let Ok(output) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|part| part.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= wanted
}
