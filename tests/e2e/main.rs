//! End-to-end tests: the real binary and the real plugin runtime against real
//! servers started by the tests. One test binary, one module per area.

// Fixtures panic on setup failure: that is how a test reports it.
#![allow(clippy::unwrap_used)]

mod api_input;
#[path = "../fixtures/app.rs"]
mod app;
mod auth;
mod bandwidth;
mod cancel;
mod cli;
mod cluster;
mod console;
mod disk;
#[path = "../fixtures/git.rs"]
mod git;
mod health;
#[path = "../fixtures/history.rs"]
mod history;
mod housekeeping;
mod http_git;
mod https;
mod indexer_program;
mod layers;
mod lfs;
mod lfs_server;
mod openapi;
#[path = "../fixtures/pack_objects.rs"]
mod pack_objects;
mod packs;
mod plugin_kit;
mod plugins;
mod proxy;
mod pull;
mod push;
mod recovery;
mod sandbox;
mod schedule;
mod serve;
mod ssh;
mod sshd;
mod support;
#[path = "../fixtures/postgres.rs"]
mod test_postgres;
mod timeouts;
mod webdriver;
mod webhooks;
