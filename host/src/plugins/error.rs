//! Everything a plugin call or a plugin load can fail with. Each error names the
//! plugin, so a run record says which policy failed and why.

use std::time::Duration;

use super::World;

#[derive(Debug, thiserror::Error)]
#[error("plugin `{plugin}`: {kind}")]
pub struct PluginError {
    pub plugin: String,
    pub kind: PluginErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum PluginErrorKind {
    #[error("no such plugin")]
    NotFound,
    #[error("is a {actual} plugin, used as a {expected} plugin")]
    WrongWorld { expected: World, actual: World },
    #[error("not a valid {world} component: {reason}")]
    Invalid { world: World, reason: String },
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("exceeded its time budget of {0:?}")]
    Timeout(Duration),
    #[error("exceeded its fuel budget of {0} units")]
    OutOfFuel(u64),
    #[error("exceeded its memory cap of {0} bytes")]
    MemoryLimit(usize),
    #[error("input of {size} bytes exceeds the cap of {limit} bytes")]
    InputTooLarge { size: usize, limit: usize },
    #[error("answer of {size} bytes exceeds the cap of {limit} bytes")]
    OutputTooLarge { size: usize, limit: usize },
    #[error("wrote more log than its cap of {lines} lines / {bytes} bytes")]
    LogLimit { lines: usize, bytes: usize },
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("runtime failure: {0}")]
    Runtime(String),
}

impl PluginError {
    pub fn new(plugin: impl Into<String>, kind: PluginErrorKind) -> Self {
        Self {
            plugin: plugin.into(),
            kind,
        }
    }

    /// A short stable identifier of the cause, for metrics labels and API error codes.
    pub fn code(&self) -> &'static str {
        match self.kind {
            PluginErrorKind::NotFound => "plugin_not_found",
            PluginErrorKind::WrongWorld { .. } => "plugin_wrong_world",
            PluginErrorKind::Invalid { .. } => "plugin_invalid",
            PluginErrorKind::Rejected(_) => "plugin_rejected",
            PluginErrorKind::Timeout(_) => "plugin_timeout",
            PluginErrorKind::OutOfFuel(_) => "plugin_out_of_fuel",
            PluginErrorKind::MemoryLimit(_) => "plugin_memory_limit",
            PluginErrorKind::InputTooLarge { .. } => "plugin_input_too_large",
            PluginErrorKind::OutputTooLarge { .. } => "plugin_output_too_large",
            PluginErrorKind::LogLimit { .. } => "plugin_log_limit",
            PluginErrorKind::Malformed(_) => "plugin_malformed_answer",
            PluginErrorKind::Trap(_) => "plugin_trap",
            PluginErrorKind::Runtime(_) => "plugin_runtime",
        }
    }
}
