//! From trigger to run: every trigger becomes a durable job (`store::runs`), and
//! the dispatcher starts jobs as slots free up, under a global cap and a
//! per-remote-host cap, never two runs of one mirror at once, and only runs
//! of projects this node holds the lease of (`store::cluster::claim`, which
//! counts the caps across every node on the database). What a run does is
//! the service's ([`Executor`]); when it is done is this module's.

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

/// This node among the nodes sharing the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Stable across restarts: a restarted node finds its leases and its
    /// interrupted runs again.
    pub id: String,
    /// How long a project's lease lasts unless renewed; a node silent this
    /// long is taken for dead.
    pub lease: Duration,
    /// How often the dispatcher looks at the queue when nothing woke it:
    /// what another node queued reaches this one by a database notice, this
    /// is the backstop (a lease that expired, a notice lost to a reconnect).
    pub poll: Duration,
}

impl Node {
    /// The one node of an embedded (SQLite) service: nothing but itself
    /// queues runs, so it polls only for runs told to wait.
    pub fn alone(id: String, lease: Duration) -> Self {
        Self {
            id,
            lease,
            poll: IDLE_WAKE,
        }
    }

    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The handle the rest of the service uses to queue runs and hear of their end.
#[derive(Debug)]
pub struct Queue {
    wake: Notify,
    finished: broadcast::Sender<i64>,
    caps: Caps,
    node: Node,
}

impl Queue {
    pub fn new(caps: Caps, node: Node) -> Self {
        Self {
            wake: Notify::new(),
            finished: broadcast::channel(1024).0,
            caps,
            node,
        }
    }

    pub fn node(&self) -> &Node {
        &self.node
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
    /// Whether this node holds a copy of the project's repository: a push
    /// mirror takes its project over only where it does.
    fn holds_copy(&self, project_id: &str) -> bool;
}

/// How long the dispatcher sleeps when nothing wakes it and no job waits.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// Starts jobs until the service stops.
pub async fn dispatch<E: Executor>(service: Arc<E>) {
    let mut running: JoinSet<()> = JoinSet::new();
    loop {
        // One transaction claims what may start now; then, how long until a
        // job that was told to wait (webhook spacing) may.
        let read = {
            let service = service.clone();
            tokio::task::spawn_blocking(move || claim(&*service)).await
        };
        let poll = service.queue().node.poll;
        let mut until_next = poll;
        match read {
            Ok(Ok((jobs, waiting))) => {
                until_next = waiting.map_or(poll, |w| w.min(poll));
                for job in jobs {
                    running.spawn(execute(service.clone(), job));
                }
            }
            Ok(Err(error)) => tracing::error!(%error, "cannot read the job queue"),
            Err(error) => tracing::error!(%error, "job queue task failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(until_next) => {}
            () = service.queue().wake.notified() => {}
            Some(_) = running.join_next() => {}
        }
    }
}

/// The jobs this node starts now, and how long until a waiting one may.
fn claim<E: Executor>(service: &E) -> Result<(Vec<PendingJob>, Option<Duration>), StoreError> {
    let queue = service.queue();
    let terms = store::cluster::Terms {
        global: queue.caps.global,
        per_host: queue.caps.per_host,
        lease_ms: queue.node.lease_ms(),
    };
    service.store().with(|c| {
        let jobs = store::cluster::claim(c, &queue.node.id, terms, |project| {
            service.holds_copy(project)
        })?;
        Ok((jobs, store::runs::next_start_in(c)?))
    })
}

/// Has the service carry a claimed job out, in one span with the mirror,
/// the run and the trigger; then tells waiters the run ended.
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
        worker.execute(&job);
    })
    .await;
    if let Err(error) = result {
        tracing::error!(%error, "run task failed");
    }
    let queue = service.queue();
    let _ = queue.finished.send(run_id);
    queue.wake.notify_one();
}
