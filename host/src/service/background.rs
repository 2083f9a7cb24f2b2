//! The service's own tasks: the dispatcher that starts queued runs, the
//! node's heartbeat (its leases renewed, the runs of silent nodes retried),
//! the cluster's notices (PostgreSQL), the scheduler tick, the
//! reconciliation sweep, a minute's chores (the webhook log summary, handing
//! freed memory back) and the hourly retention pass. Started by
//! `server::serve`, stopped when the [`Background`] handle is dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::App;
use crate::{jobs, schedule, store};

/// The running tasks; aborted on drop. Runs they cut off are marked
/// interrupted and retried at the next start.
#[derive(Debug)]
pub struct Background(Vec<JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Starts the dispatcher, the scheduler, the minute's and the hour's chores
/// and (if configured) the sweep.
pub fn start(app: &Arc<App>) -> Background {
    listen(app);
    let mut tasks = vec![
        tokio::spawn(jobs::dispatch(app.clone())),
        tokio::spawn(keep_leases(app.clone())),
        tokio::spawn(tick_schedules(app.clone())),
        tokio::spawn(every_minute(app.clone())),
        tokio::spawn(every_hour(app.clone())),
    ];
    if let Some(every) = app.config.reconcile_every {
        tasks.push(tokio::spawn(reconcile(app.clone(), every)));
    }
    Background(tasks)
}

/// The cluster's notices: a queued job or a freed slot wakes the dispatcher;
/// a cancel of a run this node runs cancels it.
fn listen(app: &Arc<App>) {
    let app: Weak<App> = Arc::downgrade(app);
    if let Some(strong) = app.upgrade() {
        let app = app.clone();
        strong.store.listen(move |notice| {
            let Some(app) = app.upgrade() else { return };
            match notice {
                store::cluster::Notice::Jobs => app.jobs.wake(),
                store::cluster::Notice::Cancel(run_id) => {
                    if let Some(progress) = app.live.progress(run_id) {
                        progress.cancel();
                        tracing::info!(run_id, "run cancelled from another node");
                    }
                }
            }
        });
    }
}

/// Three times per lease term: this node's heartbeat and its leases
/// renewed, the runs of nodes silent for a whole term interrupted and
/// queued again (the dispatcher is woken for them), and this node's own
/// runs that were taken for lost stopped.
async fn keep_leases(app: Arc<App>) {
    let node = app.jobs.node().clone();
    let lease_ms = node.lease_ms();
    let mut ticker = tokio::time::interval(node.lease / 3);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let app = app.clone();
        let id = node.id.clone();
        let kept = tokio::task::spawn_blocking(move || {
            app.store
                .with(|c| store::cluster::heartbeat(c, &id, lease_ms))?;
            let reclaimed = app
                .store
                .with(|c| store::cluster::reclaim_silent(c, lease_ms))?;
            if reclaimed > 0 {
                tracing::warn!(
                    reclaimed,
                    "runs of a silent node interrupted and queued again"
                );
                app.jobs.wake();
            }
            // This node was the silent one: what it still runs was retried
            // elsewhere, and writes nothing (the lease check); stop it now.
            let lost = app
                .store
                .with(|c| store::cluster::lost_runs(c, &id, &app.live.ids()))?;
            for run_id in lost {
                if let Some(progress) = app.live.progress(run_id) {
                    tracing::warn!(run_id, "this node's run was taken for lost: stopping it");
                    progress.cancel();
                }
            }
            Ok::<_, store::StoreError>(())
        })
        .await;
        match kept {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "heartbeat failed"),
            Err(error) => tracing::error!(%error, "heartbeat task failed"),
        }
    }
}

/// Queues every due schedule's mirror, once a second.
async fn tick_schedules(app: Arc<App>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let app = app.clone();
        let now = app.clock.now_ms();
        let fired =
            tokio::task::spawn_blocking(move || schedule::tick(&app.store, &app.jobs, now)).await;
        match fired {
            Ok(Ok(0)) => {}
            Ok(Ok(count)) => tracing::debug!(count, "schedules fired"),
            Ok(Err(error)) => tracing::error!(%error, "schedule tick failed"),
            Err(error) => tracing::error!(%error, "schedule task failed"),
        }
    }
}

/// Once a minute: what became of the webhook deliveries of that minute (each
/// logs at debug level only), and the memory large answers (a list of every
/// mirror, a health scan) freed handed back, so an idle service stays small.
async fn every_minute(app: Arc<App>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let (queued, up_to_date, duplicate) = app.webhook_tally.take();
        if queued + up_to_date + duplicate > 0 {
            tracing::info!(
                queued,
                up_to_date,
                duplicate,
                "webhook deliveries in the last minute"
            );
        }
        let _ = tokio::task::spawn_blocking(crate::memory::release_free).await;
    }
}

/// Retention once an hour, the first pass at start.
async fn every_hour(app: Arc<App>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(3600));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let app = app.clone();
        match tokio::task::spawn_blocking(move || app.prune_history()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "retention pass failed"),
            Err(error) => tracing::error!(%error, "retention task failed"),
        }
    }
}

/// A reconciliation sweep every `every` (the first one `every` after start).
async fn reconcile(app: Arc<App>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let app = app.clone();
        let swept = tokio::task::spawn_blocking(move || {
            let now = app.clock.now_ms();
            schedule::sweep(&app.store, &app.jobs, &app.engine(), now)
        })
        .await;
        match swept {
            Ok(Ok((checked, changed))) => tracing::info!(checked, changed, "reconcile sweep"),
            Ok(Err(error)) => tracing::error!(%error, "reconcile sweep failed"),
            Err(error) => tracing::error!(%error, "reconcile task failed"),
        }
    }
}
