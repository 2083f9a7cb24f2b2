//! Housekeeping of project repositories, and the lock that keeps it apart
//! from the runs: runs of a project share its lock (a pull and its push
//! mirrors go on together), housekeeping holds it alone, so no run reads a
//! pack that housekeeping is about to delete.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::{App, ServiceError};
use crate::store;
use crate::sync::housekeeping::{self, HousekeepingError, Pass};

/// One lock per project, made on first use.
#[derive(Debug, Default)]
pub struct ProjectLocks(Mutex<HashMap<String, Arc<RwLock<()>>>>);

impl ProjectLocks {
    fn of(&self, project_id: &str) -> Arc<RwLock<()>> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(project_id.to_string()).or_default().clone()
    }

    /// Runs `f` holding `project_id`'s lock with the project's other runs.
    pub fn shared<T>(&self, project_id: &str, f: impl FnOnce() -> T) -> T {
        let lock = self.of(project_id);
        let _shared = lock.read().unwrap_or_else(PoisonError::into_inner);
        f()
    }

    /// Runs `f` holding `project_id`'s lock alone: no run of it meanwhile.
    pub fn alone<T>(&self, project_id: &str, f: impl FnOnce() -> T) -> T {
        let lock = self.of(project_id);
        let _alone = lock.write().unwrap_or_else(PoisonError::into_inner);
        f()
    }
}

impl From<HousekeepingError> for ServiceError {
    fn from(error: HousekeepingError) -> Self {
        match error {
            HousekeepingError::NoRepository => ServiceError::Conflict(error.to_string()),
            _ => ServiceError::Internal(error.to_string()),
        }
    }
}

impl App {
    /// Housekeeping of `project_id`'s repository now (the API's and CLI's).
    pub fn housekeeping(&self, project_id: &str) -> Result<Pass, ServiceError> {
        if self
            .store
            .with(|c| store::mirrors::project(c, project_id))?
            .is_none()
        {
            return Err(ServiceError::NotFound(format!("no project {project_id}")));
        }
        self.refuse_unless_owner(project_id)?;
        Ok(self.housekeep(project_id)?)
    }

    /// Housekeeping after a run, when the repository holds more packs than
    /// the limit (like `git gc --auto`). A failure is logged: the run that
    /// came before it stands.
    pub(super) fn housekeep_if_due(&self, project_id: &str) {
        let repo = crate::sync::repo_path(&self.repos_dir, project_id);
        if !housekeeping::due(&repo, self.config.housekeeping.pack_limit) {
            return;
        }
        if let Err(error) = self.housekeep(project_id) {
            tracing::error!(project_id, %error, "housekeeping failed");
        }
    }

    fn housekeep(&self, project_id: &str) -> Result<Pass, HousekeepingError> {
        let repo = crate::sync::repo_path(&self.repos_dir, project_id);
        let grace = self.config.housekeeping.grace;
        let pass = self
            .project_locks
            .alone(project_id, || housekeeping::run(&repo, grace))?;
        tracing::info!(
            project_id,
            packs_before = pass.packs_before,
            packs_after = pass.packs_after,
            bytes_before = pass.bytes_before,
            bytes_after = pass.bytes_after,
            duration_ms = pass.duration_ms,
            "housekeeping done"
        );
        Ok(pass)
    }
}
