//! mirrorhost: keeps local bare copies of Git projects and mirrors them, with
//! every policy decision made by a sandboxed WebAssembly plugin.
//!
//! Module map, top to bottom (see ARCHITECTURE.md; a module names only modules
//! below it, `tests/e2e/layers.rs` checks it):
//!
//! - `cli` (the operator's commands, over the admin API) and `server` (start-up,
//!   the listener, shutdown);
//! - `api`: the HTTP face: admin API, webhook receivers, probes;
//! - `service`: `App` and the operations on it, whoever asks; one run from start
//!   to record;
//! - `config`: settings, defaults < file < environment < flags;
//! - `webhooks` (deliveries proven and routed) and `schedule` (ticks, backoff,
//!   the reconciliation sweep);
//! - `jobs`: the durable queue and the dispatcher with its caps;
//! - `alerts` (signed state-change POSTs) and `health` (figures and states from
//!   the run history);
//! - `sync`: the git engine (pull, push, refs, packs, transfers);
//! - `plugins`: the WebAssembly policy components;
//! - `secrets`: the master key, sealed credentials, the admin token;
//! - `telemetry`: Prometheus metrics;
//! - `store`: SQLite, its schema and its rows;
//! - `fsutil` (private files, durable renames), `memory` (giving freed
//!   memory back) and `clock` (where now comes from).

pub mod alerts;
pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
mod fsutil;
pub mod health;
pub mod jobs;
mod memory;
pub mod plugins;
pub mod schedule;
pub mod secrets;
pub mod server;
pub mod service;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod webhooks;
