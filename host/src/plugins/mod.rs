//! Policy plugins: sandboxed WebAssembly components implementing one of the
//! three `mirror:plugin` worlds (see `wit/`).
//!
//! [`Runtime`] owns the wasmtime engine and the per-call sandbox; [`Registry`]
//! holds the loaded plugins by name and offers one typed method per world call.
//! Calls are synchronous and CPU-bound: async code runs them on the blocking pool.

mod bindings;
mod builtin;
mod candidates;
mod error;
mod registry;
mod runtime;
mod sandbox;
#[cfg(test)]
mod tests;
pub mod uploaded;

use serde::{Deserialize, Serialize};

pub use bindings::types::{
    AuthRequest, Credential, CredentialKinds, Decision, Direction, DivergedRef, MirrorContext,
    SshKeyCredential, SshKeySecret, StoredSecret, TokenSecret, UserPass,
};
pub use builtin::{BUILTINS, Builtin};
pub use candidates::Candidates;
pub use error::{PluginError, PluginErrorKind};
pub use registry::{PluginMeta, Registry};
pub use runtime::{Outcome, Runtime};
pub use sandbox::{Limits, LogLine};

/// The contract a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    BranchFilter,
    ConflictStrategy,
    AuthProvider,
}

impl World {
    pub const ALL: [World; 3] = [
        World::BranchFilter,
        World::ConflictStrategy,
        World::AuthProvider,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            World::BranchFilter => "branch-filter",
            World::ConflictStrategy => "conflict-strategy",
            World::AuthProvider => "auth-provider",
        }
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for World {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        World::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| format!("unknown world {s:?}: expected branch-filter, conflict-strategy or auth-provider"))
    }
}
