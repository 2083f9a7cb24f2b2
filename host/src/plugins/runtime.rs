//! The wasmtime side: one engine, one linker, compiled components cached on disk,
//! and `Runtime::call`, which runs one guest call inside a fresh sandbox.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};

use super::bindings::log;
use super::registry::Described;
use super::sandbox::{HostState, Limits, LogLine};
use super::{PluginError, PluginErrorKind};

/// How often the epoch advances; the time budget is counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// What a successful call returns besides its value: the cost, for metrics and
/// for `mirrorhost plugin test`, and what the guest logged.
#[derive(Debug, Clone)]
pub struct Outcome<T> {
    pub value: T,
    pub fuel_used: u64,
    pub peak_memory_bytes: usize,
    pub elapsed: Duration,
    pub log: Vec<LogLine>,
}

/// A component's bytes and its SHA-256 in hex, which names its compilation
/// in the cache: a built-in's digest is computed when it is built, so a
/// start that finds the cache reads none of its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Wasm<'a> {
    pub bytes: &'a [u8],
    pub sha256: &'a str,
}

/// Shared by every plugin: compiling, linking and calling.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    limits: Limits,
    cache_dir: Option<PathBuf>,
    /// Built on first use, once: a service whose mirrors call no plugin
    /// never builds the engine or the WASI linker, whose setup kept about
    /// 3 MiB of wasmtime's code resident in the service for good.
    wasmtime: OnceLock<Result<Wasmtime, String>>,
}

/// The engine and the host's imports, shared by every component.
struct Wasmtime {
    engine: Engine,
    linker: Linker<HostState>,
    pooling: bool,
}

impl Wasmtime {
    /// The engine (pooling allocator when the machine grants the address
    /// space, on-demand otherwise) with its epoch ticker, and the linker.
    fn build(limits: &Limits) -> Result<Self, String> {
        let run = |pooling| Engine::new(&engine_config(limits, Role::Run { pooling }));
        let (engine, pooling) = match run(true) {
            Ok(engine) => (engine, true),
            Err(error) => {
                tracing::warn!(%error, "pooling allocator unavailable, using on-demand instances");
                (run(false).map_err(|e| format!("{e:#}"))?, false)
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| format!("{e:#}"))?;
        log::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(|e| format!("{e:#}"))?;
        spawn_epoch_ticker(&engine);
        Ok(Self {
            engine,
            linker,
            pooling,
        })
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pooling = self
            .inner
            .wasmtime
            .get()
            .map(|built| built.as_ref().map(|w| w.pooling));
        f.debug_struct("Runtime")
            .field("limits", &self.inner.limits)
            .field("cache_dir", &self.inner.cache_dir)
            .field("pooling", &pooling)
            .finish()
    }
}

impl Runtime {
    /// A runtime whose engine is built when first needed. `cache_dir` keeps
    /// compiled components, and what they say of themselves, across
    /// restarts.
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> Result<Self, PluginError> {
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir).map_err(runtime_error)?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                limits,
                cache_dir,
                wasmtime: OnceLock::new(),
            }),
        })
    }

    /// Whether the engine has been built.
    #[cfg(test)]
    pub(super) fn has_engine(&self) -> bool {
        self.inner.wasmtime.get().is_some()
    }

    fn wasmtime(&self) -> Result<&Wasmtime, String> {
        self.inner
            .wasmtime
            .get_or_init(|| Wasmtime::build(&self.inner.limits))
            .as_ref()
            .map_err(Clone::clone)
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Whether the engine (built now if it was not) uses the pooling
    /// allocator.
    pub fn uses_pooling(&self) -> bool {
        self.wasmtime().is_ok_and(|wasmtime| wasmtime.pooling)
    }

    /// Compiles `wasm` (or loads the cached compilation) and links it against the
    /// host's imports. Fails when the bytes are not a component, or import
    /// something beyond WASI and the `mirror:plugin` host interface.
    pub fn prepare(&self, wasm: Wasm<'_>) -> Result<InstancePre<HostState>, String> {
        let component = self.compile(wasm)?;
        self.wasmtime()?
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("{e:#}"))
    }

    fn compile(&self, wasm: Wasm<'_>) -> Result<Component, String> {
        let engine = &self.wasmtime()?.engine;
        let path = self.cache_path(engine, wasm.sha256);
        if let Some(path) = path.as_deref().filter(|path| path.exists()) {
            match load_compiled(engine, path) {
                Ok(component) => return Ok(component),
                Err(error) => tracing::warn!(%error, path = %path.display(), "recompiling"),
            }
        }
        // Compiled by an engine of its own, dropped with the compiler's
        // working memory (cranelift keeps contexts, one per compiling thread,
        // as long as their engine lives, and their blocks pinned pages of
        // freed memory: a first start held 20 MiB more than the next one);
        // the runtime's engine, which has no compiler, maps the code from the
        // cache file as it runs, as after a restart.
        let compiled = Engine::new(&engine_config(&self.inner.limits, Role::Compile))
            .and_then(|compiler| compiler.precompile_component(wasm.bytes))
            .map_err(|e| format!("{e:#}"))?;
        let cached = path
            .as_deref()
            .map(|path| (path, write_whole(&compiled, path)));
        match cached {
            Some((path, Ok(()))) => load_compiled(engine, path),
            Some((path, Err(error))) => {
                tracing::warn!(%error, path = %path.display(), "could not cache compiled plugin");
                deserialize_compiled(engine, &compiled)
            }
            None => deserialize_compiled(engine, &compiled),
        }
        .map_err(|e| format!("{e:#}"))
    }

    fn cache_path(&self, engine: &Engine, sha256: &str) -> Option<PathBuf> {
        let dir = self.inner.cache_dir.as_ref()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = hasher.finish();
        Some(dir.join(format!("{sha256}-{engine_hash:016x}.cwasm")))
    }

    /// What a component said of itself, if a start before this one kept it
    /// (see [`Runtime::remember`]); `None` when unknown or unreadable.
    pub(super) fn recall(&self, sha256: &str) -> Option<Described> {
        let bytes = std::fs::read(self.described_path(sha256)?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Keeps what the component of digest `sha256` said of itself, for the
    /// next start; without a cache, or when it cannot be written, the next
    /// start asks the component again.
    pub(super) fn remember(&self, sha256: &str, described: &Described) {
        let Some(path) = self.described_path(sha256) else {
            return;
        };
        let written = serde_json::to_vec(described)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_whole(&bytes, &path));
        if let Err(error) = written {
            tracing::warn!(%error, path = %path.display(), "could not cache a plugin's info");
        }
    }

    /// Independent of the engine: the component alone answers.
    fn described_path(&self, sha256: &str) -> Option<PathBuf> {
        let dir = self.inner.cache_dir.as_ref()?;
        Some(dir.join(format!("{sha256}.info.json")))
    }

    /// Runs `body` against a fresh store: fuel, deadline and memory cap set, the
    /// store dropped afterwards whatever happened. `body` instantiates and calls.
    pub fn call<T>(
        &self,
        plugin: &str,
        input_bytes: usize,
        body: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<Result<T, String>>,
        output_bytes: impl FnOnce(&T) -> usize,
    ) -> Result<Outcome<T>, PluginError> {
        let result = self.call_sandboxed(plugin, input_bytes, body, output_bytes);
        crate::telemetry::plugin_called(
            plugin,
            result
                .as_ref()
                .map(|o| o.fuel_used)
                .map_err(PluginError::code),
        );
        result
    }

    fn call_sandboxed<T>(
        &self,
        plugin: &str,
        input_bytes: usize,
        body: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<Result<T, String>>,
        output_bytes: impl FnOnce(&T) -> usize,
    ) -> Result<Outcome<T>, PluginError> {
        let limits = self.inner.limits;
        let fail = |kind| PluginError::new(plugin, kind);
        if input_bytes > limits.max_input_bytes {
            return Err(fail(PluginErrorKind::InputTooLarge {
                size: input_bytes,
                limit: limits.max_input_bytes,
            }));
        }
        let engine = &self.wasmtime().map_err(|e| fail(runtime_kind(e)))?.engine;
        let started = Instant::now();
        let mut store = Store::new(engine, HostState::new(limits));
        store.limiter(|state| state);
        store
            .set_fuel(limits.fuel)
            .map_err(|e| fail(runtime_kind(e)))?;
        store.set_epoch_deadline(deadline_ticks(limits.timeout));
        store.epoch_deadline_trap();

        let result = body(&mut store);
        let fuel_left = store.get_fuel().unwrap_or(0);
        let state = store.data_mut();
        state.drain_stdio();
        let value = match result {
            Err(error) => return Err(fail(state.explain(&error, fuel_left))),
            Ok(Err(message)) if message.len() > limits.max_output_bytes => {
                return Err(fail(PluginErrorKind::OutputTooLarge {
                    size: message.len(),
                    limit: limits.max_output_bytes,
                }));
            }
            Ok(Err(message)) => return Err(fail(PluginErrorKind::Rejected(message))),
            Ok(Ok(value)) => value,
        };
        let size = output_bytes(&value);
        if size > limits.max_output_bytes {
            return Err(fail(PluginErrorKind::OutputTooLarge {
                size,
                limit: limits.max_output_bytes,
            }));
        }
        Ok(Outcome {
            value,
            fuel_used: limits.fuel - fuel_left,
            peak_memory_bytes: state.peak_memory,
            elapsed: started.elapsed(),
            log: std::mem::take(&mut state.log),
        })
    }
}

/// What an engine is made for. The runtime's engine runs components and
/// never compiles one: with a compiler, building it ran cranelift's setup,
/// which kept about a megabyte of its code resident in the service for good.
/// A component is compiled by an engine made for that, then dropped.
#[derive(Debug, Clone, Copy)]
enum Role {
    Run { pooling: bool },
    Compile,
}

fn engine_config(limits: &Limits, role: Role) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .enable_compiler(matches!(role, Role::Compile));
    if let Role::Run { pooling: true } = role {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(256)
            .total_core_instances(1024)
            .total_memories(512)
            .total_tables(512)
            .max_memory_size(limits.memory_bytes)
            // Reset a returned slot by rewriting the pages the call dirtied rather
            // than discarding them: PAGEMAP_SCAN (Linux 6.7+) finds exactly those,
            // so a call that touched little memory costs little to clean up.
            // Without it (Auto), only the first 64 KiB are memset and the rest is
            // madvised away, which is wasmtime's usual behaviour.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(if pagemap_scan_available() {
                limits.memory_bytes
            } else {
                64 << 10
            })
            .table_keep_resident(64 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Whether the kernel has the PAGEMAP_SCAN ioctl (Linux 6.7 or later).
fn pagemap_scan_available() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 7)
}

/// Advances the engine's epoch until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("plugin-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(error) = spawned {
        // Without a ticker the fuel budget still bounds every call.
        tracing::error!(%error, "cannot start the plugin epoch ticker");
    }
}

/// Ticks until the deadline; one extra tick because the current one is partly over.
fn deadline_ticks(timeout: Duration) -> u64 {
    let ticks = timeout.as_micros().div_ceil(EPOCH_TICK.as_micros());
    u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
}

/// A compiled component from the cache, mapped from its file.
fn load_compiled(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize_file` trusts its input to be wasmtime's own output.
    // The file sits in our private cache dir, was written whole by
    // `write_whole` (renamed into place once complete), and its name binds it to the
    // component's sha256 and this engine's compatibility hash.
    #[allow(unsafe_code)]
    unsafe {
        Component::deserialize_file(engine, path)
    }
}

/// A component just compiled, from memory (no cache, or it could not be
/// written).
fn deserialize_compiled(engine: &Engine, compiled: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: the bytes are wasmtime's own output, just made by
    // `precompile_component` with this engine's settings.
    #[allow(unsafe_code)]
    unsafe {
        Component::deserialize(engine, compiled)
    }
}

/// Puts `bytes` at `path` whole or not at all. The temporary file's name is
/// its own: two threads of one process may compile the same component at
/// once (two first calls of a built-in), and with a name shared per process
/// one truncated the file the other was renaming into place, which the
/// runtime then failed to load.
fn write_whole(bytes: &[u8], path: &Path) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn runtime_error(error: impl std::fmt::Display) -> PluginError {
    PluginError::new("<runtime>", runtime_kind(error))
}

fn runtime_kind(error: impl std::fmt::Display) -> PluginErrorKind {
    PluginErrorKind::Runtime(error.to_string())
}
