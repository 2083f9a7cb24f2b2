//! Retention: the history the service forgets, a batch at a time.

use super::App;
use crate::store::StoreError;
use crate::store::retention::{self, BATCH, Pruned};

impl App {
    /// One retention pass by the service's clock: rows past their age, then
    /// each mirror's runs beyond its newest `retain_runs`, then free pages
    /// back to the file system. Each batch is its own transaction, so runs
    /// and API calls interleave with a long pass.
    pub fn prune_history(&self) -> Result<Pruned, StoreError> {
        let keep = self.config.retention;
        let now = self.clock.now_ms();
        let mut total = Pruned::default();
        loop {
            let batch = self
                .store
                .with(|c| retention::prune_by_age(c, &keep, now))?;
            total.runs += batch.runs;
            total.deliveries += batch.deliveries;
            total.conflicts += batch.conflicts;
            let full = BATCH as usize;
            if batch.runs < full && batch.deliveries < full && batch.conflicts < full {
                break;
            }
        }
        let mut after = 0;
        while let (runs, Some(last)) = self
            .store
            .with(|c| retention::trim_per_mirror(c, &keep, after))?
        {
            total.runs += runs;
            after = last;
        }
        let pages = self.store.with(|c| retention::reclaim(c))?;
        if total != Pruned::default() || pages > 0 {
            tracing::info!(
                runs = total.runs,
                deliveries = total.deliveries,
                conflicts = total.conflicts,
                pages_freed = pages,
                "history pruned"
            );
        }
        Ok(total)
    }
}
