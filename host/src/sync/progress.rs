//! Live transfer progress of a running run, written by libgit2's callbacks on
//! the transfer thread and read by the API (`GET /api/v1/runs/{id}`); and the
//! operator's request to cancel it, read by the same callbacks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;

use super::sockets::Sockets;

#[derive(Debug, Default)]
pub struct Progress {
    objects: AtomicU64,
    total_objects: AtomicU64,
    bytes: AtomicU64,
    cancelled: AtomicBool,
    /// The run's open connections, shut down by a cancel.
    sockets: Arc<Sockets>,
}

/// One reading of [`Progress`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Snapshot {
    /// Objects received (fetch) or sent (push) so far.
    pub objects: u64,
    pub total_objects: u64,
    pub bytes: u64,
}

impl Progress {
    pub fn update(&self, objects: u64, total_objects: u64, bytes: u64) {
        // Each field is read on its own: a reader may see a newer byte count than
        // object count, which a progress line does not mind.
        self.objects.store(objects, Ordering::Relaxed);
        self.total_objects.store(total_objects, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    /// Asks the run to stop: its transfer callbacks say no from now on.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        // A transfer blocked on a silent remote reads no flag: end its
        // connections, and the read that waits returns now.
        self.sockets.shut_down();
    }

    /// The connections of the run this reports on.
    pub fn sockets(&self) -> Arc<Sockets> {
        Arc::clone(&self.sockets)
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            objects: self.objects.load(Ordering::Relaxed),
            total_objects: self.total_objects.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}
