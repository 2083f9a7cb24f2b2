//! The service layer: what the service does, whoever asks. [`App`] holds the
//! service's state; its methods are the operations the admin API (and the
//! console, the CLI through the API) offers, and [`App::execute`] is one run
//! from start to record. Below it, each module takes only what it uses:
//! `jobs` (the queue and its dispatcher, through [`jobs::Executor`]),
//! `schedule`, `webhooks`, `health` and `alerts`, then `sync` and the rest.
//!
//! Nothing here knows HTTP: errors are [`ServiceError`], which `api` maps to
//! statuses. Everything but [`background`] blocks (store, git, plugins);
//! async callers hop to the blocking pool.

pub mod background;
mod credentials;
mod history;
mod housekeeping;

pub use housekeeping::ProjectLocks;
mod mirrors;
mod plugins;
mod runs;
mod schedules;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::alerts::Alerts;
use crate::clock::Clock;
use crate::config::Config;
use crate::jobs::Queue;
use crate::plugins::Registry;
use crate::schedule::Policy;
use crate::secrets::{AdminToken, MasterKey};
use crate::store::{Store, StoreError};
use crate::sync::progress::{Progress, Snapshot};
use crate::sync::throttle::Bucket;
use crate::sync::{Engine, SyncError};
use crate::webhooks::{Receiver, RoutingCache, Tally};

pub use mirrors::{CreateMirror, PatchMirror, check_project_id};
pub use runs::Detected;
pub use schedules::SetSchedule;

/// Why an operation did not happen. Every variant but `Store` and `Internal`
/// is the caller's to fix, and says how.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// What the caller named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A field of the caller's input is not acceptable.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The request does not fit the state things are in (a disabled mirror, a
    /// conflict already resolved, a plugin in use).
    #[error("{0}")]
    Conflict(String),
    /// The engine failed against the remote or the repository.
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Ours, not the caller's: sealing a secret, writing a plugin file.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    fn internal(error: impl std::fmt::Display) -> Self {
        Self::Internal(error.to_string())
    }
}

/// Everything the service holds. Built by `server::build`.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub repos_dir: PathBuf,
    pub store: Store,
    pub plugins: Registry,
    pub jobs: Queue,
    pub admin_token: AdminToken,
    pub master_key: MasterKey,
    pub schedule_policy: Policy,
    /// The scheduler's time source; tests put their own clock here.
    pub clock: Arc<dyn Clock>,
    /// The service-wide transfer cap (`max_bytes_per_second` in config).
    pub bandwidth: Option<Arc<std::sync::Mutex<Bucket>>>,
    /// Sends an alert per mirror state change, when configured.
    pub alerts: Alerts,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Transfer progress of the runs in flight, by run id.
    pub live: LiveRuns,
    /// Which mirrors a webhook delivery reaches, cached.
    pub webhook_routing: RoutingCache,
    /// What became of webhook deliveries since the last log summary.
    pub webhook_tally: Tally,
    /// Runs share their project's lock; housekeeping holds it alone.
    pub project_locks: ProjectLocks,
}

/// Progress of the runs in flight. Entries live from a run's start to its end.
#[derive(Debug, Default)]
pub struct LiveRuns(std::sync::Mutex<HashMap<i64, Arc<Progress>>>);

impl LiveRuns {
    pub fn start(&self, run_id: i64) -> Arc<Progress> {
        let progress = Arc::new(Progress::default());
        self.lock().insert(run_id, progress.clone());
        progress
    }

    pub fn finish(&self, run_id: i64) {
        self.lock().remove(&run_id);
    }

    pub fn get(&self, run_id: i64) -> Option<Snapshot> {
        self.lock().get(&run_id).map(|p| p.snapshot())
    }

    /// The runs in flight here.
    pub fn ids(&self) -> Vec<i64> {
        self.lock().keys().copied().collect()
    }

    /// The live state of a running run, to cancel it.
    pub fn progress(&self, run_id: i64) -> Option<Arc<Progress>> {
        self.lock().get(&run_id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Progress>>> {
        // The map holds no invariant a panicking holder could break.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl App {
    /// Replaces the time source (tests drive time with their own clock).
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        self.store.set_clock(clock.clone());
        Self { clock, ..self }
    }

    /// The sync engine over this service's repositories, plugins and database.
    pub fn engine(&self) -> Engine<'_> {
        Engine {
            repos_dir: &self.repos_dir,
            plugins: &self.plugins,
            store: &self.store,
            master_key: &self.master_key,
            shared_bandwidth: self.bandwidth.as_ref(),
            progress: None,
            pack_indexer: &self.config.pack_indexer,
            timeouts: &self.config.timeouts,
            proxy: &self.config.proxy,
            remote_policy: self.config.remote_policy(),
            lease: None,
        }
    }

    /// The webhook receiver over this service's routing cache and queue.
    pub fn webhooks(&self) -> Receiver<'_> {
        Receiver {
            store: &self.store,
            master_key: &self.master_key,
            routing: &self.webhook_routing,
            queue: &self.jobs,
            repos_dir: &self.repos_dir,
            tally: &self.webhook_tally,
            spacing: self.config.webhook_spacing,
        }
    }

    /// Compares the mirror's health state with the last one seen and alerts
    /// on a change.
    fn observe_health(&self, mirror_id: i64) -> Result<(), StoreError> {
        let change = crate::health::observe(&self.store, self.config.health_window, mirror_id)?;
        if let Some(change) = change {
            self.alerts.send(change);
        }
        Ok(())
    }
}
