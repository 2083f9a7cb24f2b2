//! Loaded plugins by name, and one typed method per world call.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::Store;

use super::bindings::auth_provider::AuthProviderPre;
use super::bindings::branch_filter::BranchFilterPre;
use super::bindings::conflict_strategy::ConflictStrategyPre;
use super::bindings::types::PluginInfo;
use super::runtime::{Outcome, Runtime, Wasm};
use super::sandbox::HostState;
use super::{
    AuthRequest, BUILTINS, Candidates, Credential, CredentialKinds, Decision, DivergedRef,
    MirrorContext, PluginError, PluginErrorKind, World,
};

/// What the registry knows about a plugin; what `GET /api/v1/plugins` lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginMeta {
    pub name: String,
    pub world: World,
    pub version: String,
    pub description: String,
    pub sha256: String,
    pub size_bytes: usize,
    pub builtin: bool,
}

/// What a plugin says of itself (its info call), as the registry lists it;
/// the runtime keeps a built-in's in its cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Described {
    pub version: String,
    pub description: String,
}

/// What the registry lists for a plugin, partly from the plugin itself.
fn meta(
    name: &str,
    world: World,
    wasm: Wasm<'_>,
    described: Described,
    builtin: bool,
) -> PluginMeta {
    PluginMeta {
        name: name.to_string(),
        world,
        version: described.version,
        description: described.description,
        sha256: wasm.sha256.to_string(),
        size_bytes: wasm.bytes.len(),
        builtin,
    }
}

/// A component linked and type-checked against its world, ready to instantiate.
enum Prepared {
    BranchFilter(BranchFilterPre<HostState>),
    ConflictStrategy(ConflictStrategyPre<HostState>),
    AuthProvider(AuthProviderPre<HostState>),
}

struct Plugin {
    meta: PluginMeta,
    code: Code,
}

/// Where a plugin's prepared component comes from.
enum Code {
    /// Uploaded: prepared when it was loaded.
    Ready(Prepared),
    /// Built-in: its component is in the binary and is prepared on first use,
    /// so that the built-ins no mirror uses take no memory.
    Embedded {
        wasm: Wasm<'static>,
        prepared: OnceLock<Prepared>,
    },
}

#[derive(Debug)]
pub struct Registry {
    runtime: Runtime,
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.meta.fmt(f)
    }
}

impl Registry {
    pub fn new(runtime: Runtime) -> Self {
        Self {
            runtime,
            plugins: RwLock::default(),
        }
    }

    /// A registry holding the nine built-in plugins, each prepared on first
    /// use. What a built-in says of itself (its info) is asked once per
    /// component and kept in the runtime's cache, named by its digest: a
    /// start that finds it there loads no component at all (the instance,
    /// the WASI linker and wasmtime's code held a service that never calls a
    /// plugin about a megabyte larger for good).
    pub fn with_builtins(runtime: Runtime) -> Result<Self, PluginError> {
        let registry = Self::new(runtime);
        for builtin in BUILTINS {
            let wasm = builtin.wasm();
            let described = match registry.runtime.recall(wasm.sha256) {
                Some(described) => described,
                None => {
                    let prepared = registry.prepare(builtin.name, builtin.world, wasm)?;
                    let described = registry.describe(builtin.name, &prepared)?;
                    registry.runtime.remember(wasm.sha256, &described);
                    described
                }
            };
            registry.register(
                meta(builtin.name, builtin.world, wasm, described, true),
                Code::Embedded {
                    wasm,
                    prepared: OnceLock::new(),
                },
            );
        }
        Ok(registry)
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Compiles, links and type-checks `component` against `world`, asks it for its
    /// info, and registers it under `name` (replacing a plugin of that name).
    pub fn load(
        &self,
        name: &str,
        world: World,
        component: &[u8],
    ) -> Result<PluginMeta, PluginError> {
        let sha256 = hex::encode(Sha256::digest(component));
        let wasm = Wasm {
            bytes: component,
            sha256: &sha256,
        };
        let prepared = self.prepare(name, world, wasm)?;
        let meta = meta(name, world, wasm, self.describe(name, &prepared)?, false);
        self.register(meta.clone(), Code::Ready(prepared));
        Ok(meta)
    }

    fn prepare(&self, name: &str, world: World, wasm: Wasm<'_>) -> Result<Prepared, PluginError> {
        let invalid =
            |reason: String| PluginError::new(name, PluginErrorKind::Invalid { world, reason });
        let pre = self.runtime.prepare(wasm).map_err(invalid)?;
        match world {
            World::BranchFilter => BranchFilterPre::new(pre).map(Prepared::BranchFilter),
            World::ConflictStrategy => {
                ConflictStrategyPre::new(pre).map(Prepared::ConflictStrategy)
            }
            World::AuthProvider => AuthProviderPre::new(pre).map(Prepared::AuthProvider),
        }
        .map_err(|e| invalid(format!("{e:#}")))
    }

    /// What the plugin says of itself.
    fn describe(&self, name: &str, prepared: &Prepared) -> Result<Described, PluginError> {
        let info = self.info(name, prepared)?;
        Ok(Described {
            version: info.version,
            description: info.description,
        })
    }

    fn register(&self, meta: PluginMeta, code: Code) {
        let name = meta.name.clone();
        self.plugins
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, Arc::new(Plugin { meta, code }));
    }

    /// The plugin's prepared component; a built-in's is prepared on first use.
    fn prepared<'p>(&self, plugin: &'p Plugin) -> Result<&'p Prepared, PluginError> {
        match &plugin.code {
            Code::Ready(prepared) => Ok(prepared),
            Code::Embedded { wasm, prepared } => {
                if let Some(ready) = prepared.get() {
                    return Ok(ready);
                }
                // Two first calls at once may both prepare; one result is kept.
                let fresh = self.prepare(&plugin.meta.name, plugin.meta.world, *wasm)?;
                Ok(prepared.get_or_init(|| fresh))
            }
        }
    }

    /// Whether `name` is prepared now (built-ins are not until first used).
    #[cfg(test)]
    pub(super) fn is_prepared(&self, name: &str) -> bool {
        self.find(name).is_ok_and(|plugin| match &plugin.code {
            Code::Ready(_) => true,
            Code::Embedded { prepared, .. } => prepared.get().is_some(),
        })
    }

    /// Forgets an uploaded plugin. Built-ins stay.
    pub fn remove(&self, name: &str) -> Option<PluginMeta> {
        let mut plugins = self.plugins.write().unwrap_or_else(PoisonError::into_inner);
        if plugins.get(name).is_some_and(|p| p.meta.builtin) {
            return None;
        }
        plugins.remove(name).map(|p| p.meta.clone())
    }

    pub fn list(&self) -> Vec<PluginMeta> {
        let plugins = self.plugins.read().unwrap_or_else(PoisonError::into_inner);
        plugins.values().map(|p| p.meta.clone()).collect()
    }

    pub fn get(&self, name: &str) -> Option<PluginMeta> {
        self.find(name).ok().map(|p| p.meta.clone())
    }

    fn find(&self, name: &str) -> Result<Arc<Plugin>, PluginError> {
        let plugins = self.plugins.read().unwrap_or_else(PoisonError::into_inner);
        plugins
            .get(name)
            .cloned()
            .ok_or_else(|| PluginError::new(name, PluginErrorKind::NotFound))
    }

    fn info(&self, name: &str, prepared: &Prepared) -> Result<PluginInfo, PluginError> {
        let outcome = self.runtime.call(
            name,
            0,
            |store| {
                Ok(Ok(match prepared {
                    Prepared::BranchFilter(pre) => {
                        pre.instantiate(&mut *store)?.call_info(store)?
                    }
                    Prepared::ConflictStrategy(pre) => {
                        pre.instantiate(&mut *store)?.call_info(store)?
                    }
                    Prepared::AuthProvider(pre) => {
                        pre.instantiate(&mut *store)?.call_info(store)?
                    }
                }))
            },
            |info| info.name.len() + info.version.len() + info.description.len(),
        )?;
        Ok(outcome.value)
    }

    /// Asks the plugin whether it accepts `config`; `world` is the role the caller
    /// wants it in, so a plugin of another world is refused here too.
    pub fn validate_config(
        &self,
        name: &str,
        world: World,
        config: &str,
    ) -> Result<(), PluginError> {
        let plugin = self.find(name)?;
        check_world(&plugin, world)?;
        let prepared = self.prepared(&plugin)?;
        self.runtime
            .call(
                name,
                config.len(),
                |store| match prepared {
                    Prepared::BranchFilter(pre) => pre
                        .instantiate(&mut *store)?
                        .call_validate_config(store, config),
                    Prepared::ConflictStrategy(pre) => pre
                        .instantiate(&mut *store)?
                        .call_validate_config(store, config),
                    Prepared::AuthProvider(pre) => pre
                        .instantiate(&mut *store)?
                        .call_validate_config(store, config),
                },
                |()| 0,
            )
            .map(drop)
    }

    /// The names, among `refs`, that the branch filter `name` keeps.
    pub fn filter(
        &self,
        name: &str,
        ctx: &MirrorContext,
        config: &str,
        refs: &Candidates,
    ) -> Result<Outcome<Vec<String>>, PluginError> {
        let plugin = self.find(name)?;
        let Prepared::BranchFilter(pre) = self.prepared(&plugin)? else {
            return Err(wrong_world(&plugin, World::BranchFilter));
        };
        let input = context_bytes(ctx) + config.len() + refs.byte_len();
        let outcome = self.runtime.call(
            name,
            input,
            |store: &mut Store<HostState>| {
                pre.instantiate(&mut *store)?
                    .call_filter(store, ctx, config, &refs.packed)
            },
            |names| names.iter().map(String::len).sum(),
        )?;
        if let Some(stranger) = refs.stranger(&outcome.value) {
            return Err(PluginError::new(
                name,
                PluginErrorKind::Malformed(format!("returned {stranger:?}, which was not offered")),
            ));
        }
        Ok(outcome)
    }

    /// What the conflict strategy `name` decides for one diverged ref.
    pub fn decide(
        &self,
        name: &str,
        ctx: &MirrorContext,
        config: &str,
        diverged: &DivergedRef,
    ) -> Result<Outcome<Decision>, PluginError> {
        let plugin = self.find(name)?;
        let Prepared::ConflictStrategy(pre) = self.prepared(&plugin)? else {
            return Err(wrong_world(&plugin, World::ConflictStrategy));
        };
        let input = context_bytes(ctx) + config.len() + diverged.name.len() + 3 * 40;
        self.runtime.call(
            name,
            input,
            |store| {
                pre.instantiate(&mut *store)?
                    .call_decide(store, ctx, config, diverged)
            },
            |decision| match decision {
                Decision::DeferManual(reason) | Decision::Abort(reason) => reason.len(),
                Decision::KeepLocal | Decision::TakeRemote => 0,
            },
        )
    }

    /// The credential the auth provider `name` hands to the transport. Fails closed:
    /// an error, or a credential of a kind the transport did not ask for, is an error.
    pub fn provide(
        &self,
        name: &str,
        ctx: &MirrorContext,
        config: &str,
        request: &AuthRequest,
    ) -> Result<Outcome<Credential>, PluginError> {
        let plugin = self.find(name)?;
        let Prepared::AuthProvider(pre) = self.prepared(&plugin)? else {
            return Err(wrong_world(&plugin, World::AuthProvider));
        };
        let input = context_bytes(ctx) + config.len() + request_bytes(request);
        let outcome = self.runtime.call(
            name,
            input,
            |store| {
                pre.instantiate(&mut *store)?
                    .call_provide(store, ctx, config, request)
            },
            credential_bytes,
        )?;
        let kind = match &outcome.value {
            Credential::None => None,
            Credential::UserPass(_) => Some(CredentialKinds::USER_PASS),
            Credential::SshKey(_) => Some(CredentialKinds::SSH_KEY),
        };
        if let Some(kind) = kind.filter(|k| !request.allowed.contains(*k)) {
            return Err(PluginError::new(
                name,
                PluginErrorKind::Malformed(format!(
                    "returned a credential of kind {kind:?}, the transport accepts {:?}",
                    request.allowed
                )),
            ));
        }
        Ok(outcome)
    }
}

fn check_world(plugin: &Plugin, expected: World) -> Result<(), PluginError> {
    if plugin.meta.world == expected {
        Ok(())
    } else {
        Err(wrong_world(plugin, expected))
    }
}

fn wrong_world(plugin: &Plugin, expected: World) -> PluginError {
    PluginError::new(
        &plugin.meta.name,
        PluginErrorKind::WrongWorld {
            expected,
            actual: plugin.meta.world,
        },
    )
}

fn context_bytes(ctx: &MirrorContext) -> usize {
    ctx.mirror_id.len() + ctx.project_id.len() + ctx.remote_url.len()
}

fn request_bytes(request: &AuthRequest) -> usize {
    use super::StoredSecret;
    let secret = match &request.secret {
        None => 0,
        Some(StoredSecret::Password(up)) => up.username.len() + up.password.len(),
        Some(StoredSecret::Token(t)) => t.token.len() + t.username.as_ref().map_or(0, String::len),
        Some(StoredSecret::SshKey(k)) => {
            k.private_key.len()
                + k.passphrase.as_ref().map_or(0, String::len)
                + k.username.as_ref().map_or(0, String::len)
        }
    };
    request.url.len() + request.username_from_url.as_ref().map_or(0, String::len) + secret
}

fn credential_bytes(credential: &Credential) -> usize {
    match credential {
        Credential::None => 0,
        Credential::UserPass(up) => up.username.len() + up.password.len(),
        Credential::SshKey(key) => {
            key.username.len()
                + key.private_key.len()
                + key.passphrase.as_ref().map_or(0, String::len)
        }
    }
}
