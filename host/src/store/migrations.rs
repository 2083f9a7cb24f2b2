//! Versioned schema migrations. `PRAGMA user_version` holds the number of
//! migrations applied; each one runs in its own transaction, so a failed
//! migration leaves the previous version intact. Append only: never edit a
//! migration that has shipped.

use rusqlite::Connection;

use super::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: projects, the unit that owns a bare repository and its mirrors.
    "CREATE TABLE projects (
        id                  TEXT PRIMARY KEY NOT NULL,
        protected_branches  TEXT NOT NULL DEFAULT '[]',
        created_at          TEXT NOT NULL
    ) STRICT;",
    // 2: mirrors, their runs, the job queue, conflicts, and what push mirrors pushed.
    "CREATE TABLE mirrors (
        id                        INTEGER PRIMARY KEY,
        project_id                TEXT NOT NULL REFERENCES projects(id),
        direction                 TEXT NOT NULL CHECK (direction IN ('pull', 'push')),
        url                       TEXT NOT NULL,
        remote_host               TEXT NOT NULL,
        auth_method               TEXT NOT NULL,
        enabled                   INTEGER NOT NULL,
        update_interval           INTEGER,
        only_protected_branches   INTEGER NOT NULL,
        keep_divergent_refs       INTEGER NOT NULL,
        mirror_branch_regex       TEXT,
        conflict_strategy         TEXT NOT NULL,
        conflict_strategy_config  TEXT NOT NULL,
        branch_filter             TEXT,
        branch_filter_config      TEXT NOT NULL,
        created_at                TEXT NOT NULL,
        updated_at                TEXT NOT NULL
    ) STRICT;
    CREATE INDEX mirrors_by_project ON mirrors(project_id, direction);

    CREATE TABLE runs (
        id                 INTEGER PRIMARY KEY,
        mirror_id          INTEGER NOT NULL REFERENCES mirrors(id) ON DELETE CASCADE,
        trigger            TEXT NOT NULL,
        status             TEXT NOT NULL
                           CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'interrupted')),
        queued_at          TEXT NOT NULL,
        started_at         TEXT,
        finished_at        TEXT,
        duration_ms        INTEGER,
        bytes_transferred  INTEGER NOT NULL DEFAULT 0,
        refs_created       INTEGER NOT NULL DEFAULT 0,
        refs_updated       INTEGER NOT NULL DEFAULT 0,
        refs_deleted       INTEGER NOT NULL DEFAULT 0,
        refs_skipped       INTEGER NOT NULL DEFAULT 0,
        conflicts          INTEGER NOT NULL DEFAULT 0,
        error              TEXT
    ) STRICT;
    CREATE INDEX runs_by_mirror ON runs(mirror_id, id);

    -- At most one pending and one running job per mirror.
    CREATE TABLE jobs (
        id          INTEGER PRIMARY KEY,
        mirror_id   INTEGER NOT NULL REFERENCES mirrors(id) ON DELETE CASCADE,
        run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        state       TEXT NOT NULL CHECK (state IN ('pending', 'running')),
        created_at  TEXT NOT NULL
    ) STRICT;
    CREATE UNIQUE INDEX jobs_one_per_state ON jobs(mirror_id, state);

    CREATE TABLE conflicts (
        id            INTEGER PRIMARY KEY,
        mirror_id     INTEGER NOT NULL REFERENCES mirrors(id) ON DELETE CASCADE,
        run_id        INTEGER REFERENCES runs(id) ON DELETE SET NULL,
        ref_name      TEXT NOT NULL,
        local_oid     TEXT NOT NULL,
        remote_oid    TEXT NOT NULL,
        merge_base    TEXT,
        ahead         INTEGER NOT NULL,
        behind        INTEGER NOT NULL,
        strategy      TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('open', 'resolved', 'aborted')),
        resolution    TEXT,
        detected_at   TEXT NOT NULL,
        resolved_at   TEXT
    ) STRICT;
    CREATE INDEX conflicts_by_mirror ON conflicts(mirror_id, id);

    -- Refs a push mirror has put on its destination: only these may be deleted there.
    CREATE TABLE pushed_refs (
        mirror_id  INTEGER NOT NULL REFERENCES mirrors(id) ON DELETE CASCADE,
        ref_name   TEXT NOT NULL,
        oid        TEXT NOT NULL,
        PRIMARY KEY (mirror_id, ref_name)
    ) STRICT, WITHOUT ROWID;",
    // 3: credentials, sealed by the secrets module; only metadata is readable.
    "CREATE TABLE credentials (
        mirror_id    INTEGER PRIMARY KEY REFERENCES mirrors(id) ON DELETE CASCADE,
        kind         TEXT NOT NULL CHECK (kind IN ('password', 'token', 'ssh_key')),
        username     TEXT,
        fingerprint  TEXT,
        key_id       TEXT NOT NULL,
        sealed       BLOB NOT NULL,
        created_at   TEXT NOT NULL,
        rotated_at   TEXT
    ) STRICT;",
    // 4: the SSH host keys an operator trusts for each mirror.
    "CREATE TABLE ssh_host_keys (
        mirror_id    INTEGER NOT NULL REFERENCES mirrors(id) ON DELETE CASCADE,
        fingerprint  TEXT NOT NULL,
        key_type     TEXT,
        added_at     TEXT NOT NULL,
        PRIMARY KEY (mirror_id, fingerprint)
    ) STRICT, WITHOUT ROWID;",
    // 5: push webhooks: each project's sealed secret, and the deliveries seen.
    "CREATE TABLE webhook_secrets (
        project_id  TEXT PRIMARY KEY NOT NULL REFERENCES projects(id),
        sealed      BLOB NOT NULL,
        key_id      TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    ) STRICT;
    CREATE TABLE webhook_deliveries (
        source       TEXT NOT NULL,
        delivery_id  TEXT NOT NULL,
        received_at  TEXT NOT NULL,
        PRIMARY KEY (source, delivery_id)
    ) STRICT, WITHOUT ROWID;",
    // 6: schedules of pull mirrors, with their failure backoff.
    "CREATE TABLE schedules (
        mirror_id             INTEGER PRIMARY KEY REFERENCES mirrors(id) ON DELETE CASCADE,
        interval_seconds      INTEGER,
        cron                  TEXT,
        enabled               INTEGER NOT NULL,
        next_run_at           INTEGER,
        consecutive_failures  INTEGER NOT NULL DEFAULT 0,
        hard_failed           INTEGER NOT NULL DEFAULT 0,
        CHECK ((interval_seconds IS NULL) <> (cron IS NULL))
    ) STRICT;
    CREATE INDEX schedules_due ON schedules(next_run_at) WHERE enabled = 1 AND hard_failed = 0;",
    // 7: per-mirror bandwidth and concurrency limits.
    "CREATE TABLE bandwidth (
        mirror_id               INTEGER PRIMARY KEY REFERENCES mirrors(id) ON DELETE CASCADE,
        max_bytes_per_second    INTEGER,
        max_concurrent_updates  INTEGER,
        throttle_on_failure     INTEGER NOT NULL DEFAULT 0
    ) STRICT;",
    // 8: what each pull mirror's remote advertised at its last successful run.
    "CREATE TABLE remote_fingerprints (
        mirror_id    INTEGER PRIMARY KEY REFERENCES mirrors(id) ON DELETE CASCADE,
        fingerprint  TEXT NOT NULL,
        seen_at      TEXT NOT NULL
    ) STRICT;",
    // 9: the health state each mirror was last seen in, so that a change of
    // state raises one alert and a repeated failure none.
    "CREATE TABLE health_states (
        mirror_id   INTEGER PRIMARY KEY REFERENCES mirrors(id) ON DELETE CASCADE,
        state       TEXT NOT NULL,
        changed_at  TEXT NOT NULL
    ) STRICT;",
    // 10: a mirror may name its own auth-provider plugin and config; without
    // one, the built-in provider of its auth_method answers.
    "ALTER TABLE mirrors ADD COLUMN auth_provider TEXT;
    ALTER TABLE mirrors ADD COLUMN auth_provider_config TEXT NOT NULL DEFAULT '';",
    // 11: what each run did to each ref it did not leave alone, and why.
    "CREATE TABLE run_refs (
        run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        ref_name    TEXT NOT NULL,
        action      TEXT NOT NULL,
        local_oid   TEXT,
        remote_oid  TEXT,
        reason      TEXT
    ) STRICT;
    CREATE INDEX run_refs_by_run ON run_refs(run_id);",
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

pub(super) fn current_version(conn: &Connection) -> Result<u32, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

pub(super) fn apply(conn: &mut Connection) -> Result<(), StoreError> {
    let found = current_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::*;

    #[test]
    fn fresh_database_gets_every_migration_and_reopens_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        store.ping().unwrap();
    }

    #[test]
    fn wal_and_foreign_keys_are_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        store
            .with(|conn| -> Result<(), StoreError> {
                let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
                let fk: i64 = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
                assert_eq!(mode, "wal");
                assert_eq!(fk, 1);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
    }
}
