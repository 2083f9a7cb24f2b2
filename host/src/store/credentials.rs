//! Sealed credentials, one per mirror. The store never sees a plaintext secret:
//! it keeps what `secrets` sealed plus metadata that is safe to show.

use super::db::{Db, Optional, params};
use serde::Serialize;

use super::{StoreError, now};

/// What `GET .../credentials` shows: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CredentialMeta {
    #[serde(rename = "type")]
    pub kind: String,
    pub username: Option<String>,
    /// `SHA256:...` of the SSH public key, for SSH keys.
    pub fingerprint: Option<String>,
    pub created_at: String,
    pub rotated_at: Option<String>,
}

/// A credential ready to store: metadata plus the sealed secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedCredential {
    pub kind: &'static str,
    pub username: Option<String>,
    pub fingerprint: Option<String>,
    pub key_id: String,
    pub sealed: Vec<u8>,
}

/// Stores the mirror's credential, replacing (rotating) any previous one in place.
pub fn put(conn: &Db, mirror_id: i64, c: &SealedCredential) -> Result<CredentialMeta, StoreError> {
    conn.execute(
        "INSERT INTO credentials (mirror_id, kind, username, fingerprint, key_id, sealed, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT(mirror_id) DO UPDATE SET kind = excluded.kind, username = excluded.username, \
         fingerprint = excluded.fingerprint, key_id = excluded.key_id, sealed = excluded.sealed, \
         rotated_at = excluded.created_at",
        params![mirror_id, c.kind, c.username, c.fingerprint, c.key_id, c.sealed, now(conn)?],
    )?;
    meta(conn, mirror_id)?.ok_or(StoreError::NotFound("credential"))
}

pub fn meta(conn: &Db, mirror_id: i64) -> Result<Option<CredentialMeta>, StoreError> {
    conn.query_row(
        "SELECT kind, username, fingerprint, created_at, rotated_at FROM credentials WHERE mirror_id = ?1",
        [mirror_id],
        |row| {
            Ok(CredentialMeta {
                kind: row.get(0)?,
                username: row.get(1)?,
                fingerprint: row.get(2)?,
                created_at: row.get(3)?,
                rotated_at: row.get(4)?,
            })
        },
    )
    .optional()
}

pub fn sealed(conn: &Db, mirror_id: i64) -> Result<Option<Vec<u8>>, StoreError> {
    conn.query_row(
        "SELECT sealed FROM credentials WHERE mirror_id = ?1",
        [mirror_id],
        |row| row.get(0),
    )
    .optional()
}

pub fn delete(conn: &Db, mirror_id: i64) -> Result<(), StoreError> {
    match conn.execute("DELETE FROM credentials WHERE mirror_id = ?1", [mirror_id])? {
        0 => Err(StoreError::NotFound("credential")),
        _ => Ok(()),
    }
}

/// A host key an operator trusts for a mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct HostKey {
    /// `SHA256:<base64>`, as `ssh-keygen -lf` prints it.
    #[schema(pattern = "^SHA256:[A-Za-z0-9+/]{43}$")]
    pub fingerprint: String,
    /// e.g. `ssh-ed25519`; informative only.
    #[serde(default, rename = "type")]
    pub key_type: Option<String>,
}

pub fn host_keys(conn: &Db, mirror_id: i64) -> Result<Vec<HostKey>, StoreError> {
    conn.query_map("SELECT fingerprint, key_type FROM ssh_host_keys WHERE mirror_id = ?1 ORDER BY added_at, fingerprint", [mirror_id], |row| {
        Ok(HostKey {
            fingerprint: row.get(0)?,
            key_type: row.get(1)?,
        })
    })
}

/// Replaces the mirror's trusted host keys with `keys`.
pub fn set_host_keys(conn: &mut Db, mirror_id: i64, keys: &[HostKey]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    tx.execute(
        "DELETE FROM ssh_host_keys WHERE mirror_id = ?1",
        [mirror_id],
    )?;
    let at = now(&tx)?;
    for key in keys {
        tx.execute(
            "INSERT INTO ssh_host_keys (mirror_id, fingerprint, key_type, added_at) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            params![mirror_id, key.fingerprint, key.key_type, at],
        )?;
    }
    tx.commit()?;
    Ok(())
}
