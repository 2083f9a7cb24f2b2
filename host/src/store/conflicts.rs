//! Conflict history, and the refs each push mirror has put on its destination.

use std::collections::BTreeMap;

use super::db::{Db, Optional, Row, params};
use serde::{Deserialize, Serialize};

use super::text::text_enum;
use super::{StoreError, now};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Conflict {
    pub conflict_id: i64,
    pub mirror_id: i64,
    pub run_id: Option<i64>,
    pub ref_name: String,
    pub local_oid: String,
    pub remote_oid: String,
    pub merge_base: Option<String>,
    pub ahead: i64,
    pub behind: i64,
    /// The strategy (or push rule) that met the divergence.
    pub strategy: String,
    pub status: ConflictStatus,
    pub resolution: Option<Resolution>,
    pub detected_at: String,
    pub resolved_at: Option<String>,
}

text_enum! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum ConflictStatus as "conflict status" {
        /// Waiting for an operator.
        Open = "open",
        /// Settled, by the strategy at detection time or later through the API.
        Resolved = "resolved",
        /// Its run was aborted: nothing changed.
        Aborted = "aborted",
    }
}

text_enum! {
    /// How a divergence was settled: our side kept, or theirs taken. On a pull
    /// mirror "ours" is the local ref; on a push mirror it is what we push.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum Resolution as "conflict resolution" {
        Ours = "ours",
        Theirs = "theirs",
    }
}

/// A divergence as the engine met it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConflict {
    pub ref_name: String,
    pub local_oid: String,
    pub remote_oid: String,
    pub merge_base: Option<String>,
    pub ahead: i64,
    pub behind: i64,
    pub strategy: String,
    pub status: ConflictStatus,
    pub resolution: Option<Resolution>,
}

const COLUMNS: &str = "id, mirror_id, run_id, ref_name, local_oid, remote_oid, merge_base, ahead, \
     behind, strategy, status, resolution, detected_at, resolved_at";

fn from_row(row: &Row<'_>) -> Result<Conflict, StoreError> {
    Ok(Conflict {
        conflict_id: row.get(0)?,
        mirror_id: row.get(1)?,
        run_id: row.get(2)?,
        ref_name: row.get(3)?,
        local_oid: row.get(4)?,
        remote_oid: row.get(5)?,
        merge_base: row.get(6)?,
        ahead: row.get(7)?,
        behind: row.get(8)?,
        strategy: row.get(9)?,
        status: row.get(10)?,
        resolution: row.get(11)?,
        detected_at: row.get(12)?,
        resolved_at: row.get(13)?,
    })
}

/// Records the divergences of a run. An open conflict already on record for the
/// same ref and the same two tips is not recorded twice; one the run settled
/// closes the ref's earlier open ones (a dry run may have opened them) the same way.
pub fn record(
    conn: &mut Db,
    mirror_id: i64,
    run_id: i64,
    conflicts: &[NewConflict],
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    let at = now(&tx)?;
    for c in conflicts {
        if c.status == ConflictStatus::Open && open_one(&tx, mirror_id, c)?.is_some() {
            continue;
        }
        if c.status == ConflictStatus::Resolved {
            tx.execute(
                "UPDATE conflicts SET status = 'resolved', resolution = ?3, resolved_at = ?4 \
                 WHERE mirror_id = ?1 AND ref_name = ?2 AND status = 'open'",
                params![mirror_id, c.ref_name, c.resolution, at],
            )?;
        }
        insert(&tx, mirror_id, Some(run_id), c, &at)?;
    }
    tx.commit()?;
    Ok(())
}

/// Opens a conflict for each divergence a dry run found, whatever the strategy
/// would do with it, so an operator can settle it; one already open for the
/// same ref and tips is reused. The conflicts, in the order given.
pub fn record_detected(
    conn: &mut Db,
    mirror_id: i64,
    found: &[NewConflict],
) -> Result<Vec<Conflict>, StoreError> {
    let tx = conn.transaction()?;
    let at = now(&tx)?;
    let mut ids = Vec::with_capacity(found.len());
    for c in found {
        let open = NewConflict {
            status: ConflictStatus::Open,
            resolution: None,
            ..c.clone()
        };
        let id = match open_one(&tx, mirror_id, &open)? {
            Some(id) => id,
            None => insert(&tx, mirror_id, None, &open, &at)?,
        };
        ids.push(id);
    }
    let conflicts = ids
        .into_iter()
        .map(|id| get(&tx, mirror_id, id)?.ok_or(StoreError::NotFound("conflict")))
        .collect::<Result<_, _>>()?;
    tx.commit()?;
    Ok(conflicts)
}

/// The open conflict on record for this ref and these two tips, if any.
fn open_one(conn: &Db, mirror_id: i64, c: &NewConflict) -> Result<Option<i64>, StoreError> {
    conn.query_row(
        "SELECT id FROM conflicts WHERE mirror_id = ?1 AND ref_name = ?2 \
             AND local_oid = ?3 AND remote_oid = ?4 AND status = 'open'",
        params![mirror_id, c.ref_name, c.local_oid, c.remote_oid],
        |row| row.get(0),
    )
    .optional()
}

fn insert(
    conn: &Db,
    mirror_id: i64,
    run_id: Option<i64>,
    c: &NewConflict,
    at: &str,
) -> Result<i64, StoreError> {
    let resolved_at = (c.status == ConflictStatus::Resolved).then_some(at);
    conn.query_row(
        "INSERT INTO conflicts (mirror_id, run_id, ref_name, local_oid, remote_oid, merge_base, \
         ahead, behind, strategy, status, resolution, detected_at, resolved_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) RETURNING id",
        params![
            mirror_id,
            run_id,
            c.ref_name,
            c.local_oid,
            c.remote_oid,
            c.merge_base,
            c.ahead,
            c.behind,
            c.strategy,
            c.status,
            c.resolution,
            at,
            resolved_at,
        ],
        |row| row.get(0),
    )
}

/// Whether an operator settled this exact divergence with `ours`: the engine
/// then leaves the ref alone until one of the tips moves.
pub fn kept_by_operator(
    conn: &Db,
    mirror_id: i64,
    ref_name: &str,
    local_oid: &str,
    remote_oid: &str,
) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM conflicts WHERE mirror_id = ?1 AND ref_name = ?2 \
         AND local_oid = ?3 AND remote_oid = ?4 AND status = 'resolved' AND resolution = ?5)",
        params![mirror_id, ref_name, local_oid, remote_oid, Resolution::Ours],
        |row| row.get(0),
    )
}

/// One page of `mirror_id`'s conflicts, newest first, only those with
/// `status` if given, and how many there are in all.
pub fn page(
    conn: &Db,
    mirror_id: i64,
    status: Option<ConflictStatus>,
    page: super::Page,
) -> Result<(Vec<Conflict>, u64), StoreError> {
    let from = "FROM conflicts WHERE mirror_id = ?1 AND (status = ?2 OR ?2 IS NULL)";
    let args = params![mirror_id, status];
    super::paged(conn, COLUMNS, from, "id DESC", args, page, from_row)
}

pub fn get(conn: &Db, mirror_id: i64, conflict_id: i64) -> Result<Option<Conflict>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM conflicts WHERE mirror_id = ?1 AND id = ?2"),
        params![mirror_id, conflict_id],
        from_row,
    )
    .optional()
}

/// Marks an open conflict resolved with `resolution`.
pub fn resolve(conn: &Db, conflict_id: i64, resolution: Resolution) -> Result<(), StoreError> {
    let changed = conn.execute(
        "UPDATE conflicts SET status = 'resolved', resolution = ?2, resolved_at = ?3 \
         WHERE id = ?1 AND status = 'open'",
        params![conflict_id, resolution, now(conn)?],
    )?;
    match changed {
        0 => Err(StoreError::NotFound("open conflict")),
        _ => Ok(()),
    }
}

/// Ref name -> oid of everything this push mirror has put on its destination.
pub fn pushed_refs(conn: &Db, mirror_id: i64) -> Result<BTreeMap<String, String>, StoreError> {
    let rows = conn.query_map(
        "SELECT ref_name, oid FROM pushed_refs WHERE mirror_id = ?1",
        [mirror_id],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    Ok(rows.into_iter().collect())
}

/// Applies what a push run did on the destination: `Some(oid)` pushed, `None` deleted.
pub fn update_pushed_refs(
    conn: &mut Db,
    mirror_id: i64,
    changes: &[(String, Option<String>)],
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    for (name, oid) in changes {
        match oid {
            Some(oid) => tx.execute(
                "INSERT INTO pushed_refs (mirror_id, ref_name, oid) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(mirror_id, ref_name) DO UPDATE SET oid = excluded.oid",
                params![mirror_id, name, oid],
            )?,
            None => tx.execute(
                "DELETE FROM pushed_refs WHERE mirror_id = ?1 AND ref_name = ?2",
                params![mirror_id, name],
            )?,
        };
    }
    tx.commit()?;
    Ok(())
}
