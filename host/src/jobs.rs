//! From trigger to run: every trigger becomes a durable job (`store::runs`), and
//! the dispatcher starts jobs as slots free up, under a global cap and a
//! per-remote-host cap, never two runs of one mirror at once. A pull that changed
//! refs queues the project's push mirrors.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Notify, broadcast};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::api::App;
use crate::store::{self, Direction, Enqueued, PendingJob, RunOutcome, StoreError};
use crate::sync::{Action, Engine, SyncError};
use crate::{health, telemetry};

/// Concurrency caps of the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub global: usize,
    pub per_host: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            global: 4,
            per_host: 2,
        }
    }
}

/// The handle the rest of the service uses to queue runs and hear of their end.
#[derive(Debug)]
pub struct Queue {
    wake: Notify,
    finished: broadcast::Sender<i64>,
    caps: Caps,
}

impl Queue {
    pub fn new(caps: Caps) -> Self {
        Self {
            wake: Notify::new(),
            finished: broadcast::channel(1024).0,
            caps,
        }
    }

    /// Queues a run of `mirror_id` (or joins the pending one) and wakes the dispatcher.
    pub fn trigger(
        &self,
        store: &store::Store,
        mirror_id: i64,
        trigger: &str,
    ) -> Result<Enqueued, StoreError> {
        let enqueued = store.with(|conn| store::runs::enqueue(conn, mirror_id, trigger))?;
        self.wake.notify_one();
        Ok(enqueued)
    }

    /// Tells the dispatcher that jobs were queued directly in the store.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Run ids as their runs finish. Subscribe before checking a run's status so
    /// that its end cannot slip between the two.
    pub fn finished(&self) -> broadcast::Receiver<i64> {
        self.finished.subscribe()
    }
}

/// Starts jobs until the service stops.
pub async fn dispatch(app: Arc<App>) {
    let caps = app.jobs.caps;
    let mut running: JoinSet<(i64, String)> = JoinSet::new();
    let mut busy_mirrors: HashSet<i64> = HashSet::new();
    let mut per_host: HashMap<String, usize> = HashMap::new();
    loop {
        let startable = {
            let app = app.clone();
            tokio::task::spawn_blocking(move || app.store.with(|c| store::runs::startable(c))).await
        };
        match startable {
            Ok(Ok(jobs)) => {
                for job in jobs {
                    let host_load = per_host.get(&job.remote_host).copied().unwrap_or(0);
                    let host_cap = job
                        .host_cap
                        .map_or(caps.per_host, |cap| caps.per_host.min(cap as usize));
                    if running.len() >= caps.global
                        || host_load >= host_cap
                        || busy_mirrors.contains(&job.mirror_id)
                    {
                        continue;
                    }
                    busy_mirrors.insert(job.mirror_id);
                    *per_host.entry(job.remote_host.clone()).or_default() += 1;
                    let app = app.clone();
                    running.spawn(async move {
                        let key = (job.mirror_id, job.remote_host.clone());
                        execute(app, job).await;
                        key
                    });
                }
            }
            Ok(Err(error)) => tracing::error!(%error, "cannot read the job queue"),
            Err(error) => tracing::error!(%error, "job queue task failed"),
        }
        tokio::select! {
            () = app.jobs.wake.notified() => {}
            Some(done) = running.join_next() => {
                if let Ok((mirror_id, host)) = done {
                    busy_mirrors.remove(&mirror_id);
                    if let Some(load) = per_host.get_mut(&host) {
                        *load = load.saturating_sub(1);
                    }
                }
            }
        }
    }
}

async fn execute(app: Arc<App>, job: PendingJob) {
    let span = tracing::info_span!(
        "run",
        mirror_id = job.mirror_id,
        run_id = job.run_id,
        trigger = %job.trigger
    );
    async move {
        let started = {
            let app = app.clone();
            let job = job.clone();
            tokio::task::spawn_blocking(move || app.store.with(|c| store::runs::start(c, &job)))
                .await
        };
        if !matches!(started, Ok(Ok(()))) {
            tracing::error!("cannot mark the job running");
            return;
        }
        let run_id = job.run_id;
        let app_for_run = app.clone();
        // The blocking pool does not inherit the task's span: carry it over.
        let span = tracing::Span::current();
        let result = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            run_blocking(&app_for_run, &job)
        })
        .await;
        match result {
            Ok(Ok(cascade)) => {
                if let Some(project_id) = cascade {
                    cascade_to_push_mirrors(&app, &project_id).await;
                }
            }
            Ok(Err(error)) => tracing::error!(%error, "cannot record the run"),
            Err(error) => tracing::error!(%error, "run task failed"),
        }
        let _ = app.jobs.finished.send(run_id);
        app.jobs.wake.notify_one();
    }
    .instrument(span)
    .await
}

/// Runs the job's mirror and records the run. Returns the project id when a pull
/// changed refs, so that its push mirrors follow.
fn run_blocking(app: &App, job: &PendingJob) -> Result<Option<String>, StoreError> {
    let started = Instant::now();
    let (mirror, project) = app.store.with(|c| -> Result<_, StoreError> {
        let mirror =
            store::mirrors::get(c, job.mirror_id)?.ok_or(StoreError::NotFound("mirror"))?;
        let project = store::mirrors::project(c, &mirror.project_id)?
            .ok_or(StoreError::NotFound("project"))?;
        Ok((mirror, project))
    })?;
    tracing::info!(direction = mirror.direction.as_str(), "run started");
    let progress = app.live.start(job.run_id);
    let engine = Engine {
        progress: Some(&progress),
        ..app.engine()
    };
    let result = engine.run(&mirror, &project, false);
    app.live.finish(job.run_id);
    let mut outcome = RunOutcome {
        duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        ..RunOutcome::default()
    };
    let mut cascade = None;
    match &result {
        Ok(report) => {
            outcome.bytes_transferred = i64::try_from(report.bytes_transferred).unwrap_or(i64::MAX);
            outcome.refs_created = report.count(Action::Create) as i64;
            outcome.refs_updated =
                (report.count(Action::FastForward) + report.count(Action::Overwrite)) as i64;
            outcome.refs_deleted = report.count(Action::Delete) as i64;
            outcome.refs_skipped =
                (report.count(Action::KeepLocal) + report.count(Action::Manual)) as i64;
            outcome.conflicts = report.conflicts.len() as i64;
            match &report.aborted {
                Some(reason) => {
                    outcome.error = Some(SyncError::Aborted(reason.clone()).to_string())
                }
                None => outcome.succeeded = true,
            }
            if report.changed() && mirror.direction == Direction::Pull {
                cascade = Some(mirror.project_id.clone());
            }
            app.store.with(|c| {
                store::conflicts::record(c, mirror.mirror_id, job.run_id, &report.conflicts)
            })?;
            if let (Some(fingerprint), true) = (&report.remote_fingerprint, outcome.succeeded) {
                app.store.with(|c| {
                    store::mirrors::set_remote_fingerprint(c, mirror.mirror_id, fingerprint)
                })?;
            }
        }
        Err(error) => outcome.error = Some(error.to_string()),
    }
    match &outcome.error {
        None => tracing::info!(
            created = outcome.refs_created,
            updated = outcome.refs_updated,
            deleted = outcome.refs_deleted,
            bytes = outcome.bytes_transferred,
            "run succeeded"
        ),
        Some(error) => tracing::warn!(%error, "run failed"),
    }
    app.store
        .with(|c| store::runs::finish(c, job.job_id, job.run_id, &outcome))?;
    telemetry::run_finished(mirror.direction, &outcome);
    crate::schedule::record_run(app, mirror.mirror_id, outcome.succeeded, app.clock.now_ms())?;
    health::observe(app, mirror.mirror_id)?;
    Ok(cascade)
}

async fn cascade_to_push_mirrors(app: &Arc<App>, project_id: &str) {
    let app = app.clone();
    let project_id = project_id.to_string();
    let queued = tokio::task::spawn_blocking(move || {
        let mirrors = app
            .store
            .with(|c| store::mirrors::list(c, Some(&project_id), Some(Direction::Push)))?;
        for mirror in mirrors.iter().filter(|m| m.enabled) {
            app.jobs.trigger(&app.store, mirror.mirror_id, "cascade")?;
        }
        Ok::<_, StoreError>(mirrors.len())
    })
    .await;
    if !matches!(queued, Ok(Ok(_))) {
        tracing::error!("cannot queue the project's push mirrors");
    }
}
