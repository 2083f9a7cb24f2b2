//! The built-in plugins: components built from `plugins/` by `build.rs` and
//! embedded in the binary, so a fresh install needs nothing else.

use super::World;
use super::runtime::Wasm;

#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    pub name: &'static str,
    pub world: World,
    pub component: &'static [u8],
    /// The component's SHA-256 in hex, computed when it was built.
    pub sha256: &'static str,
}

impl Builtin {
    /// The component with its digest, as the runtime prepares it.
    pub fn wasm(&self) -> Wasm<'static> {
        Wasm {
            bytes: self.component,
            sha256: self.sha256,
        }
    }
}

macro_rules! builtin {
    ($name:literal, $file:literal, $world:ident) => {
        Builtin {
            name: $name,
            world: World::$world,
            component: include_bytes!(concat!(env!("OUT_DIR"), "/", $file, ".wasm")),
            sha256: include_str!(concat!(env!("OUT_DIR"), "/", $file, ".wasm.sha256")),
        }
    };
}

pub const BUILTINS: &[Builtin] = &[
    builtin!("regex-filter", "regex_filter", BranchFilter),
    builtin!("protected-only", "protected_only", BranchFilter),
    builtin!("ours", "ours", ConflictStrategy),
    builtin!("theirs", "theirs", ConflictStrategy),
    builtin!("manual", "manual", ConflictStrategy),
    builtin!("abort", "abort", ConflictStrategy),
    builtin!("password", "password", AuthProvider),
    builtin!("token", "token", AuthProvider),
    builtin!("ssh-key", "ssh_key", AuthProvider),
];
