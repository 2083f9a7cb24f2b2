//! Webhook secrets (sealed by `secrets`, bound to the project id) and the
//! delivery ids already acted on.

use super::db::{Db, Optional, params};

use super::{StoreError, mirrors, now};

/// What a project's sealed webhook secret is bound to.
pub fn aad(project_id: &str) -> Vec<u8> {
    format!("webhook:{project_id}").into_bytes()
}

pub fn set_secret(
    conn: &Db,
    project_id: &str,
    sealed: &[u8],
    key_id: &str,
) -> Result<(), StoreError> {
    mirrors::ensure_project(conn, project_id)?;
    conn.execute(
        "INSERT INTO webhook_secrets (project_id, sealed, key_id, updated_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT(project_id) DO UPDATE SET sealed = excluded.sealed, key_id = excluded.key_id, \
         updated_at = excluded.updated_at",
        params![project_id, sealed, key_id, now(conn)?],
    )?;
    Ok(())
}

pub fn secret(conn: &Db, project_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
    conn.query_row(
        "SELECT sealed FROM webhook_secrets WHERE project_id = ?1",
        [project_id],
        |row| row.get(0),
    )
    .optional()
}

/// Records a delivery; false when it was recorded before (a replay).
pub fn first_delivery(conn: &Db, source: &str, delivery_id: &str) -> Result<bool, StoreError> {
    let inserted = conn.execute(
        "INSERT INTO webhook_deliveries (source, delivery_id, received_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT DO NOTHING",
        params![source, delivery_id, now(conn)?],
    )?;
    Ok(inserted == 1)
}

/// Every project's sealed webhook secret.
pub fn all_secrets(conn: &Db) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    conn.query_map(
        "SELECT project_id, sealed FROM webhook_secrets",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
}
