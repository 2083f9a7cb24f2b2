//! From trigger to run: every trigger becomes a durable job (`store::runs`), and
//! the dispatcher starts jobs as slots free up, under a global cap and a
//! per-remote-host cap, never two runs of one mirror at once. What a run does
//! is the service's ([`Executor`]); when it is done is this module's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio::task::JoinSet;

use crate::store::{self, Enqueued, PendingJob, Store, StoreError, Trigger};

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
        store: &Store,
        mirror_id: i64,
        trigger: Trigger,
    ) -> Result<Enqueued, StoreError> {
        let enqueued = store.with(|conn| store::runs::enqueue(conn, mirror_id, trigger))?;
        self.wake.notify_one();
        Ok(enqueued)
    }

    /// Tells the dispatcher that jobs were queued directly in the store.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Tells those waiting for run `run_id` that it ended without running
    /// (cancelled while queued).
    pub fn announce_end(&self, run_id: i64) {
        let _ = self.finished.send(run_id);
    }

    /// Run ids as their runs finish. Subscribe before checking a run's status so
    /// that its end cannot slip between the two.
    pub fn finished(&self) -> broadcast::Receiver<i64> {
        self.finished.subscribe()
    }
}

/// What the dispatcher needs from the service: the queue, its rows, and a way
/// to carry out a job.
pub trait Executor: Send + Sync + 'static {
    fn store(&self) -> &Store;
    fn queue(&self) -> &Queue;
    /// Runs a started job to its end and records it. Blocking: the dispatcher
    /// calls it on the blocking pool, inside the run's span.
    fn execute(&self, job: &PendingJob);
}

/// How long the dispatcher sleeps when nothing wakes it and no job waits.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// Starts jobs until the service stops.
pub async fn dispatch<E: Executor>(service: Arc<E>) {
    let caps = service.queue().caps;
    let mut running: JoinSet<(i64, String)> = JoinSet::new();
    let mut busy_mirrors: HashSet<i64> = HashSet::new();
    let mut per_host: HashMap<String, usize> = HashMap::new();
    loop {
        // One read: the jobs that may start now, and how long until one that
        // was told to wait (webhook spacing) may.
        let read = {
            let service = service.clone();
            tokio::task::spawn_blocking(move || {
                service.store().with(|c| {
                    Ok::<_, StoreError>((
                        store::runs::startable(c)?,
                        store::runs::next_start_in(c)?,
                    ))
                })
            })
            .await
        };
        let mut until_next = IDLE_WAKE;
        match read {
            Ok(Ok((jobs, waiting))) => {
                until_next = waiting.unwrap_or(IDLE_WAKE);
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
                    let service = service.clone();
                    running.spawn(async move {
                        let key = (job.mirror_id, job.remote_host.clone());
                        execute(service, job).await;
                        key
                    });
                }
            }
            Ok(Err(error)) => tracing::error!(%error, "cannot read the job queue"),
            Err(error) => tracing::error!(%error, "job queue task failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(until_next) => {}
            () = service.queue().wake.notified() => {}
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

/// Marks the job running and has the service carry it out, in one span with
/// the mirror, the run and the trigger; then tells waiters the run ended.
async fn execute<E: Executor>(service: Arc<E>, job: PendingJob) {
    let span = tracing::info_span!(
        "run",
        mirror_id = job.mirror_id,
        run_id = job.run_id,
        trigger = %job.trigger
    );
    let run_id = job.run_id;
    let worker = service.clone();
    let result = tokio::task::spawn_blocking(move || {
        // The blocking pool does not inherit the task's span: carry it over.
        let _entered = span.enter();
        match worker.store().with(|c| store::runs::start(c, &job)) {
            Ok(()) => worker.execute(&job),
            Err(error) => tracing::error!(%error, "cannot mark the job running"),
        }
    })
    .await;
    if let Err(error) = result {
        tracing::error!(%error, "run task failed");
    }
    let queue = service.queue();
    let _ = queue.finished.send(run_id);
    queue.wake.notify_one();
}
