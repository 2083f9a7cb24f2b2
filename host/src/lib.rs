//! mirrorhost: keeps local bare copies of Git projects and mirrors them, with
//! every policy decision made by a sandboxed WebAssembly plugin.
//!
//! Module map (see ARCHITECTURE.md): `config` resolves settings, `store` owns the
//! SQLite schema, `plugins` runs policy components, `sync` moves refs with git2,
//! `jobs` turns triggers into runs, `api` serves HTTP, `server` wires them together.

pub mod alerts;
pub mod api;
pub mod cli;
pub mod config;
mod fsutil;
pub mod health;
pub mod jobs;
pub mod plugins;
pub mod schedule;
pub mod secrets;
pub mod server;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod webhooks;
