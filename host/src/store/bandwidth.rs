//! Per-mirror transfer limits.

use super::db::{Db, Optional, params};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// A mirror's limits; all optional, none by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bandwidth {
    /// Transfer rate cap of this mirror's fetches and pushes.
    #[serde(default)]
    #[schema(minimum = 1, format = Int64)]
    pub max_bytes_per_second: Option<u64>,
    /// Runs at once against this mirror's remote host.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 4294967295.0, format = Int64)]
    pub max_concurrent_updates: Option<u32>,
    /// Slow a failing mirror's transfers down further.
    #[serde(default)]
    pub throttle_on_failure: bool,
}

pub fn get(conn: &Db, mirror_id: i64) -> Result<Bandwidth, StoreError> {
    Ok(conn
        .query_row(
            "SELECT max_bytes_per_second, max_concurrent_updates, throttle_on_failure \
             FROM bandwidth WHERE mirror_id = ?1",
            [mirror_id],
            |row| {
                Ok(Bandwidth {
                    max_bytes_per_second: row
                        .get::<Option<i64>>(0)?
                        .and_then(|n| u64::try_from(n).ok()),
                    max_concurrent_updates: row.get(1)?,
                    throttle_on_failure: row.get(2)?,
                })
            },
        )
        .optional()?
        .unwrap_or_default())
}

pub fn set(conn: &Db, mirror_id: i64, b: &Bandwidth) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO bandwidth (mirror_id, max_bytes_per_second, max_concurrent_updates, throttle_on_failure) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT(mirror_id) DO UPDATE SET \
         max_bytes_per_second = excluded.max_bytes_per_second, \
         max_concurrent_updates = excluded.max_concurrent_updates, \
         throttle_on_failure = excluded.throttle_on_failure",
        params![
            mirror_id,
            b.max_bytes_per_second.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            b.max_concurrent_updates,
            b.throttle_on_failure
        ],
    )?;
    Ok(())
}
