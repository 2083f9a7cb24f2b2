//! The per-call sandbox: what a guest may use (a deny-by-default WASI context,
//! the capped `log` import, a capped memory) and how a failed call is explained.

use std::time::Duration;

use serde::Serialize;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::PluginErrorKind;
use super::bindings::log;

/// Bounds of one plugin call. The defaults suit policies that look at a few
/// thousand refs; operators can raise them in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock bound, enforced by epoch interruption.
    pub timeout: Duration,
    /// Deterministic CPU bound in wasmtime fuel units (about one per instruction).
    pub fuel: u64,
    /// Cap on the guest's linear memory.
    pub memory_bytes: usize,
    /// Cap on the strings handed to the guest (refs, config, context), in bytes.
    pub max_input_bytes: usize,
    /// Cap on the strings the guest hands back, in bytes.
    pub max_output_bytes: usize,
    /// Caps on the plugin log (the `log` import plus stdout and stderr).
    pub max_log_lines: usize,
    pub max_log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(100),
            fuel: 10_000_000_000,
            memory_bytes: 16 << 20,
            max_input_bytes: 4 << 20,
            max_output_bytes: 1 << 20,
            max_log_lines: 200,
            max_log_bytes: 64 << 10,
        }
    }
}

/// One line of a plugin's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

/// The store data of one call.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limits,
    stdout: MemoryOutputPipe,
    pub(super) log: Vec<LogLine>,
    log_bytes: usize,
    log_overflowed: bool,
    memory_denied: bool,
    pub(super) peak_memory: usize,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("limits", &self.limits)
            .field("log_lines", &self.log.len())
            .field("peak_memory", &self.peak_memory)
            .finish_non_exhaustive()
    }
}

impl HostState {
    pub fn new(limits: Limits) -> Self {
        // stdout and stderr share one pipe so the cap holds for both together.
        let stdout = MemoryOutputPipe::new(limits.max_log_bytes);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stdout.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limits,
            stdout,
            log: Vec::new(),
            log_bytes: 0,
            log_overflowed: false,
            memory_denied: false,
            peak_memory: 0,
        }
    }

    /// The guest's stdout/stderr, as log lines, after the call.
    pub(super) fn drain_stdio(&mut self) {
        let bytes = self.stdout.contents();
        for line in String::from_utf8_lossy(&bytes).lines() {
            self.log.push(LogLine {
                level: "stdout",
                message: line.to_string(),
            });
        }
    }

    /// Explains why a call failed, using what the sandbox saw during it.
    pub(super) fn explain(&self, error: &wasmtime::Error, fuel_left: u64) -> PluginErrorKind {
        let limits = &self.limits;
        if self.memory_denied {
            return PluginErrorKind::MemoryLimit(limits.memory_bytes);
        }
        if self.log_overflowed || self.stdout.contents().len() >= limits.max_log_bytes {
            return PluginErrorKind::LogLimit {
                lines: limits.max_log_lines,
                bytes: limits.max_log_bytes,
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PluginErrorKind::Timeout(limits.timeout),
            Some(Trap::OutOfFuel) => PluginErrorKind::OutOfFuel(limits.fuel),
            _ if fuel_left == 0 => PluginErrorKind::OutOfFuel(limits.fuel),
            Some(Trap::UnreachableCodeReached) => {
                PluginErrorKind::Trap("the guest panicked (unreachable instruction)".into())
            }
            Some(trap) => PluginErrorKind::Trap(trap.to_string()),
            None => PluginErrorKind::Trap(format!("{error:#}")),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            // Trap rather than let `memory.grow` return -1: Rust guests abort on a
            // failed allocation anyway, and a trap here tells us the real cause.
            self.memory_denied = true;
            wasmtime::bail!("memory cap of {} bytes reached", self.limits.memory_bytes);
        }
        self.peak_memory = self.peak_memory.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.log_bytes += message.len();
        if self.log.len() >= self.limits.max_log_lines || self.log_bytes > self.limits.max_log_bytes
        {
            self.log_overflowed = true;
            wasmtime::bail!("plugin log cap reached");
        }
        self.log.push(LogLine {
            level: level_name(level),
            message,
        });
        Ok(())
    }
}

fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Trace => "trace",
        log::Level::Debug => "debug",
        log::Level::Info => "info",
        log::Level::Warn => "warn",
        log::Level::Error => "error",
    }
}
