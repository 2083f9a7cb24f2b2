//! The wasmtime side: one engine, one linker, compiled components cached on disk,
//! and `Runtime::call`, which runs one guest call inside a fresh sandbox.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};

use super::bindings::log;
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
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    cache_dir: Option<PathBuf>,
    pooling: bool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("limits", &self.inner.limits)
            .field("cache_dir", &self.inner.cache_dir)
            .field("pooling", &self.inner.pooling)
            .finish()
    }
}

impl Runtime {
    /// Builds the engine (pooling allocator when the machine grants the address
    /// space, on-demand otherwise) and starts its epoch ticker.
    /// `cache_dir` keeps compiled components across restarts.
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> Result<Self, PluginError> {
        let (engine, pooling) = match Engine::new(&engine_config(&limits, true)) {
            Ok(engine) => (engine, true),
            Err(error) => {
                tracing::warn!(%error, "pooling allocator unavailable, using on-demand instances");
                let engine = Engine::new(&engine_config(&limits, false)).map_err(runtime_error)?;
                (engine, false)
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(runtime_error)?;
        log::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(runtime_error)?;
        spawn_epoch_ticker(&engine);
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir).map_err(runtime_error)?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                limits,
                cache_dir,
                pooling,
            }),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn uses_pooling(&self) -> bool {
        self.inner.pooling
    }

    /// Compiles `wasm` (or loads the cached compilation) and links it against the
    /// host's imports. Fails when the bytes are not a component, or import
    /// something beyond WASI and the `mirror:plugin` host interface.
    pub fn prepare(&self, wasm: Wasm<'_>) -> Result<InstancePre<HostState>, String> {
        let component = self.compile(wasm)?;
        self.inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("{e:#}"))
    }

    fn compile(&self, wasm: Wasm<'_>) -> Result<Component, String> {
        let engine = &self.inner.engine;
        let Some(path) = self.cache_path(wasm.sha256) else {
            return Component::new(engine, wasm.bytes).map_err(|e| format!("{e:#}"));
        };
        if path.exists() {
            match load_compiled(engine, &path) {
                Ok(component) => return Ok(component),
                Err(error) => tracing::warn!(%error, path = %path.display(), "recompiling"),
            }
        }
        // Compiled by an engine of its own, dropped with the compiler's
        // working memory (cranelift keeps contexts, one per compiling thread,
        // as long as their engine lives, and their blocks pinned pages of
        // freed memory: a first start held 20 MiB more than the next one);
        // the runtime's engine maps the code from the cache file as it runs,
        // as after a restart.
        let compiled = Engine::new(&engine_config(&self.inner.limits, false))
            .and_then(|compiler| compiler.precompile_component(wasm.bytes))
            .map_err(|e| format!("{e:#}"))?;
        let component = match store_compiled(&compiled, &path) {
            Ok(()) => load_compiled(engine, &path),
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "could not cache compiled plugin");
                // SAFETY: the bytes are wasmtime's own output, just made.
                #[allow(unsafe_code)]
                unsafe {
                    Component::deserialize(engine, &compiled)
                }
            }
        };
        component.map_err(|e| format!("{e:#}"))
    }

    fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        let dir = self.inner.cache_dir.as_ref()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.inner
            .engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let engine_hash = hasher.finish();
        Some(dir.join(format!("{sha256}-{engine_hash:016x}.cwasm")))
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
        let started = Instant::now();
        let mut store = Store::new(&self.inner.engine, HostState::new(limits));
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

fn engine_config(limits: &Limits, pooling: bool) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true);
    if pooling {
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
    // The file sits in our private cache dir, was written by `store_compiled`
    // (renamed into place only once complete), and its name binds it to the
    // component's sha256 and this engine's compatibility hash.
    #[allow(unsafe_code)]
    unsafe {
        Component::deserialize_file(engine, path)
    }
}

/// Puts `bytes` at `path` whole or not at all. The temporary file's name is
/// its own: two threads of one process may compile the same component at
/// once (two first calls of a built-in), and with a name shared per process
/// one truncated the file the other was renaming into place, which the
/// runtime then failed to load.
fn store_compiled(bytes: &[u8], path: &Path) -> std::io::Result<()> {
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
