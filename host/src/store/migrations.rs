//! Versioned schema migrations, one list per database, kept in step: both
//! end at [`SCHEMA_VERSION`], and a test compares the schemas they build,
//! table by table and column by column. SQLite's `PRAGMA user_version`, and
//! PostgreSQL's `mirrorhost_schema` row, hold the number applied; each one
//! runs in its own transaction, so a failed migration leaves the previous
//! version intact. Append only: never edit a migration that has shipped.
//!
//! PostgreSQL's list starts at version 21, the schema SQLite's first 21
//! built (no PostgreSQL store is older); a later change is appended to both.

use super::StoreError;
use super::db::{Db, Lock, Optional};

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
    // 12: a run may end `cancelled`. SQLite cannot change a CHECK in place:
    // the table is rebuilt as its documentation says (foreign keys are off
    // while migrations run, and checked after each).
    "CREATE TABLE runs_new (
        id                 INTEGER PRIMARY KEY,
        mirror_id          INTEGER NOT NULL REFERENCES mirrors(id) ON DELETE CASCADE,
        trigger            TEXT NOT NULL,
        status             TEXT NOT NULL
                           CHECK (status IN ('queued', 'running', 'succeeded', 'failed',
                                             'interrupted', 'cancelled')),
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
    INSERT INTO runs_new SELECT * FROM runs;
    DROP TABLE runs;
    ALTER TABLE runs_new RENAME TO runs;
    CREATE INDEX runs_by_mirror ON runs(mirror_id, id);",
    // 13: every mirror backs off after a failure, scheduled or not: a row with
    // neither an interval nor a cron holds only the failure state and the
    // retry of a mirror that has no schedule.
    "CREATE TABLE schedules_new (
        mirror_id             INTEGER PRIMARY KEY REFERENCES mirrors(id) ON DELETE CASCADE,
        interval_seconds      INTEGER,
        cron                  TEXT,
        enabled               INTEGER NOT NULL,
        next_run_at           INTEGER,
        consecutive_failures  INTEGER NOT NULL DEFAULT 0,
        hard_failed           INTEGER NOT NULL DEFAULT 0,
        CHECK (interval_seconds IS NULL OR cron IS NULL)
    ) STRICT;
    INSERT INTO schedules_new SELECT * FROM schedules;
    DROP TABLE schedules;
    ALTER TABLE schedules_new RENAME TO schedules;
    CREATE INDEX schedules_due ON schedules(next_run_at) WHERE enabled = 1 AND hard_failed = 0;",
    // 14: a pending job may wait (Unix ms) before it starts: webhook runs of
    // one mirror are spaced out, so a flood of pushes costs a few runs.
    "ALTER TABLE jobs ADD COLUMN not_before INTEGER;",
    // 15: each mirror's health and GitLab status fields, kept as runs start and
    // finish, so that reading them costs one row, not a scan of the history
    // (which retention shortens anyway). `recent` is the last 100 finished
    // runs, newest first, 4 bytes each (big-endian duration in ms << 1, low bit
    // set for a success); the backfill builds it from the history.
    "CREATE TABLE mirror_health (
        mirror_id             INTEGER PRIMARY KEY REFERENCES mirrors(id) ON DELETE CASCADE,
        last_started_at       TEXT,
        last_finished_at      TEXT,
        last_status           TEXT CHECK (last_status IN ('succeeded', 'failed')),
        last_error            TEXT,
        last_success_at       TEXT,
        consecutive_failures  INTEGER NOT NULL DEFAULT 0,
        recent                BLOB NOT NULL DEFAULT x''
    ) STRICT;
    INSERT INTO mirror_health (mirror_id) SELECT id FROM mirrors;
    UPDATE mirror_health SET
        last_started_at = (SELECT MAX(started_at) FROM runs r WHERE r.mirror_id = mirror_health.mirror_id),
        (last_finished_at, last_status, last_error) = (
            SELECT finished_at, status, CASE status WHEN 'failed' THEN error END
            FROM runs r WHERE r.mirror_id = mirror_health.mirror_id
              AND status IN ('succeeded', 'failed') ORDER BY id DESC LIMIT 1),
        last_success_at = (
            SELECT finished_at FROM runs r WHERE r.mirror_id = mirror_health.mirror_id
              AND status = 'succeeded' ORDER BY id DESC LIMIT 1),
        consecutive_failures = (
            SELECT COUNT(*) FROM runs r WHERE r.mirror_id = mirror_health.mirror_id
              AND status = 'failed' AND id > COALESCE((SELECT MAX(id) FROM runs s
                  WHERE s.mirror_id = mirror_health.mirror_id AND status = 'succeeded'), 0)),
        recent = (
            SELECT COALESCE(unhex(group_concat(printf('%08X',
                       (MIN(MAX(COALESCE(duration_ms, 0), 0), 2147483647) << 1)
                       | (status = 'succeeded')), '' ORDER BY id DESC)), x'')
            FROM (SELECT id, status, duration_ms FROM runs r
                  WHERE r.mirror_id = mirror_health.mirror_id
                    AND status IN ('succeeded', 'failed') ORDER BY id DESC LIMIT 100));",
    // 16: retention deletes by age, and deleting a run looks for the jobs and
    // conflicts that name it: each needs an index to stay cheap.
    "CREATE INDEX runs_by_finish ON runs(finished_at) WHERE finished_at IS NOT NULL;
    CREATE INDEX deliveries_by_age ON webhook_deliveries(received_at);
    CREATE INDEX conflicts_by_run ON conflicts(run_id) WHERE run_id IS NOT NULL;
    CREATE INDEX jobs_by_run ON jobs(run_id);",
    // 17: a mirror's own HTTP proxy ('' for none; NULL for the service's).
    "ALTER TABLE mirrors ADD COLUMN proxy_url TEXT;",
    // 18: the certificate authorities a mirror trusts for its https remote.
    "ALTER TABLE mirrors ADD COLUMN tls_ca_pem TEXT;",
    // 19: the credentials of a mirror's own proxy, sealed to its proxy_url.
    "ALTER TABLE mirrors ADD COLUMN proxy_secret BLOB;",
    // 20: the client certificate a mirror presents to its https remote, and
    // its key, sealed to the certificate.
    "ALTER TABLE mirrors ADD COLUMN tls_client_cert_pem TEXT;
    ALTER TABLE mirrors ADD COLUMN tls_client_key_secret BLOB;",
    // 21: Git LFS: whether a mirror moves LFS objects and what it does with
    // one it cannot move; what each run moved and left out, and what all of
    // a mirror's runs moved (kept in its summary, beyond retention), and
    // what each ref's new tip needed of what a run moved.
    "ALTER TABLE mirrors ADD COLUMN lfs INTEGER NOT NULL DEFAULT 1 CHECK (lfs IN (0, 1));
    ALTER TABLE mirrors ADD COLUMN lfs_missing TEXT NOT NULL DEFAULT 'fail'
        CHECK (lfs_missing IN ('fail', 'skip'));
    ALTER TABLE runs ADD COLUMN lfs_objects INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN lfs_bytes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN lfs_skipped TEXT;
    ALTER TABLE mirror_health ADD COLUMN lfs_objects INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE mirror_health ADD COLUMN lfs_bytes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE run_refs ADD COLUMN lfs_objects INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE run_refs ADD COLUMN lfs_bytes INTEGER NOT NULL DEFAULT 0;",
    // 22: several nodes on one database: each node's heartbeat, the lease
    // by which one node at a time owns a project (its fencing number moves
    // on with every new holder), which node runs a job and ran a run.
    "CREATE TABLE nodes (
        id            TEXT PRIMARY KEY NOT NULL,
        heartbeat_ms  INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE project_leases (
        project_id     TEXT PRIMARY KEY NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        node           TEXT NOT NULL,
        fence          INTEGER NOT NULL,
        expires_at_ms  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX project_leases_by_node ON project_leases(node);
    ALTER TABLE jobs ADD COLUMN node TEXT;
    ALTER TABLE runs ADD COLUMN node TEXT;",
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// PostgreSQL's migrations: each the version it brings the schema to, and
/// its statements.
const POSTGRES_MIGRATIONS: &[(u32, &str)] = &[
    (21, POSTGRES_SCHEMA_21),
    (
        22,
        r#"CREATE TABLE nodes (
            id            TEXT COLLATE "C" PRIMARY KEY NOT NULL,
            heartbeat_ms  BIGINT NOT NULL
        );
        CREATE TABLE project_leases (
            project_id     TEXT COLLATE "C" PRIMARY KEY NOT NULL
                           REFERENCES projects(id) ON DELETE CASCADE,
            node           TEXT COLLATE "C" NOT NULL,
            fence          BIGINT NOT NULL,
            expires_at_ms  BIGINT NOT NULL
        );
        CREATE INDEX project_leases_by_node ON project_leases(node);
        ALTER TABLE jobs ADD COLUMN node TEXT COLLATE "C";
        ALTER TABLE runs ADD COLUMN node TEXT COLLATE "C";"#,
    ),
];

/// The schema of SQLite's migrations 1 to 21, in PostgreSQL's types:
/// integers are BIGINT (booleans too, 0 or 1, as SQLite keeps them, so the
/// statements compare them the same way), BLOB is BYTEA, text compares
/// byte by byte as in SQLite (`COLLATE "C"`, whatever the database's
/// locale); SQLite's `INTEGER PRIMARY KEY` is an identity column. `clock_now_ms()` and
/// `instr()` are the two SQLite functions the statements use;
/// `routing_generation` is bumped by triggers where SQLite has an update hook.
const POSTGRES_SCHEMA_21: &str = r#"
    CREATE FUNCTION clock_now_ms() RETURNS BIGINT LANGUAGE sql VOLATILE AS $$
        SELECT COALESCE(NULLIF(current_setting('mirrorhost.now_ms', true), '')::BIGINT,
                        (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT) $$;
    CREATE FUNCTION instr(haystack TEXT, needle TEXT) RETURNS BIGINT LANGUAGE sql IMMUTABLE AS $$
        SELECT strpos(haystack, needle)::BIGINT $$;

    CREATE TABLE projects (
        id                  TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        protected_branches  TEXT COLLATE "C" NOT NULL DEFAULT '[]',
        created_at          TEXT COLLATE "C" NOT NULL
    );
    CREATE TABLE mirrors (
        id                        BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        project_id                TEXT COLLATE "C" NOT NULL REFERENCES projects(id),
        direction                 TEXT COLLATE "C" NOT NULL CHECK (direction IN ('pull', 'push')),
        url                       TEXT COLLATE "C" NOT NULL,
        remote_host               TEXT COLLATE "C" NOT NULL,
        auth_method               TEXT COLLATE "C" NOT NULL,
        enabled                   BIGINT NOT NULL,
        update_interval           BIGINT,
        only_protected_branches   BIGINT NOT NULL,
        keep_divergent_refs       BIGINT NOT NULL,
        mirror_branch_regex       TEXT COLLATE "C",
        conflict_strategy         TEXT COLLATE "C" NOT NULL,
        conflict_strategy_config  TEXT COLLATE "C" NOT NULL,
        branch_filter             TEXT COLLATE "C",
        branch_filter_config      TEXT COLLATE "C" NOT NULL,
        created_at                TEXT COLLATE "C" NOT NULL,
        updated_at                TEXT COLLATE "C" NOT NULL,
        auth_provider             TEXT COLLATE "C",
        auth_provider_config      TEXT COLLATE "C" NOT NULL DEFAULT '',
        proxy_url                 TEXT COLLATE "C",
        tls_ca_pem                TEXT COLLATE "C",
        proxy_secret              BYTEA,
        tls_client_cert_pem       TEXT COLLATE "C",
        tls_client_key_secret     BYTEA,
        lfs                       BIGINT NOT NULL DEFAULT 1 CHECK (lfs IN (0, 1)),
        lfs_missing               TEXT COLLATE "C" NOT NULL DEFAULT 'fail' CHECK (lfs_missing IN ('fail', 'skip'))
    );
    CREATE INDEX mirrors_by_project ON mirrors(project_id, direction);

    CREATE TABLE runs (
        id                 BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        mirror_id          BIGINT NOT NULL REFERENCES mirrors(id) ON DELETE CASCADE,
        trigger            TEXT COLLATE "C" NOT NULL,
        status             TEXT COLLATE "C" NOT NULL
                           CHECK (status IN ('queued', 'running', 'succeeded', 'failed',
                                             'interrupted', 'cancelled')),
        queued_at          TEXT COLLATE "C" NOT NULL,
        started_at         TEXT COLLATE "C",
        finished_at        TEXT COLLATE "C",
        duration_ms        BIGINT,
        bytes_transferred  BIGINT NOT NULL DEFAULT 0,
        refs_created       BIGINT NOT NULL DEFAULT 0,
        refs_updated       BIGINT NOT NULL DEFAULT 0,
        refs_deleted       BIGINT NOT NULL DEFAULT 0,
        refs_skipped       BIGINT NOT NULL DEFAULT 0,
        conflicts          BIGINT NOT NULL DEFAULT 0,
        error              TEXT COLLATE "C",
        lfs_objects        BIGINT NOT NULL DEFAULT 0,
        lfs_bytes          BIGINT NOT NULL DEFAULT 0,
        lfs_skipped        TEXT COLLATE "C"
    );
    CREATE INDEX runs_by_mirror ON runs(mirror_id, id);
    CREATE INDEX runs_by_finish ON runs(finished_at) WHERE finished_at IS NOT NULL;

    CREATE TABLE jobs (
        id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        mirror_id   BIGINT NOT NULL REFERENCES mirrors(id) ON DELETE CASCADE,
        run_id      BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        state       TEXT COLLATE "C" NOT NULL CHECK (state IN ('pending', 'running')),
        created_at  TEXT COLLATE "C" NOT NULL,
        not_before  BIGINT
    );
    CREATE UNIQUE INDEX jobs_one_per_state ON jobs(mirror_id, state);
    CREATE INDEX jobs_by_run ON jobs(run_id);

    CREATE TABLE conflicts (
        id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        mirror_id     BIGINT NOT NULL REFERENCES mirrors(id) ON DELETE CASCADE,
        run_id        BIGINT REFERENCES runs(id) ON DELETE SET NULL,
        ref_name      TEXT COLLATE "C" NOT NULL,
        local_oid     TEXT COLLATE "C" NOT NULL,
        remote_oid    TEXT COLLATE "C" NOT NULL,
        merge_base    TEXT COLLATE "C",
        ahead         BIGINT NOT NULL,
        behind        BIGINT NOT NULL,
        strategy      TEXT COLLATE "C" NOT NULL,
        status        TEXT COLLATE "C" NOT NULL CHECK (status IN ('open', 'resolved', 'aborted')),
        resolution    TEXT COLLATE "C",
        detected_at   TEXT COLLATE "C" NOT NULL,
        resolved_at   TEXT COLLATE "C"
    );
    CREATE INDEX conflicts_by_mirror ON conflicts(mirror_id, id);
    CREATE INDEX conflicts_by_run ON conflicts(run_id) WHERE run_id IS NOT NULL;

    CREATE TABLE pushed_refs (
        mirror_id  BIGINT NOT NULL REFERENCES mirrors(id) ON DELETE CASCADE,
        ref_name   TEXT COLLATE "C" NOT NULL,
        oid        TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (mirror_id, ref_name)
    );
    CREATE TABLE credentials (
        mirror_id    BIGINT PRIMARY KEY REFERENCES mirrors(id) ON DELETE CASCADE,
        kind         TEXT COLLATE "C" NOT NULL CHECK (kind IN ('password', 'token', 'ssh_key')),
        username     TEXT COLLATE "C",
        fingerprint  TEXT COLLATE "C",
        key_id       TEXT COLLATE "C" NOT NULL,
        sealed       BYTEA NOT NULL,
        created_at   TEXT COLLATE "C" NOT NULL,
        rotated_at   TEXT COLLATE "C"
    );
    CREATE TABLE ssh_host_keys (
        mirror_id    BIGINT NOT NULL REFERENCES mirrors(id) ON DELETE CASCADE,
        fingerprint  TEXT COLLATE "C" NOT NULL,
        key_type     TEXT COLLATE "C",
        added_at     TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (mirror_id, fingerprint)
    );
    CREATE TABLE webhook_secrets (
        project_id  TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES projects(id),
        sealed      BYTEA NOT NULL,
        key_id      TEXT COLLATE "C" NOT NULL,
        updated_at  TEXT COLLATE "C" NOT NULL
    );
    CREATE TABLE webhook_deliveries (
        source       TEXT COLLATE "C" NOT NULL,
        delivery_id  TEXT COLLATE "C" NOT NULL,
        received_at  TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (source, delivery_id)
    );
    CREATE INDEX deliveries_by_age ON webhook_deliveries(received_at);
    CREATE TABLE schedules (
        mirror_id             BIGINT PRIMARY KEY REFERENCES mirrors(id) ON DELETE CASCADE,
        interval_seconds      BIGINT,
        cron                  TEXT COLLATE "C",
        enabled               BIGINT NOT NULL,
        next_run_at           BIGINT,
        consecutive_failures  BIGINT NOT NULL DEFAULT 0,
        hard_failed           BIGINT NOT NULL DEFAULT 0,
        CHECK (interval_seconds IS NULL OR cron IS NULL)
    );
    CREATE INDEX schedules_due ON schedules(next_run_at) WHERE enabled = 1 AND hard_failed = 0;
    CREATE TABLE bandwidth (
        mirror_id               BIGINT PRIMARY KEY REFERENCES mirrors(id) ON DELETE CASCADE,
        max_bytes_per_second    BIGINT,
        max_concurrent_updates  BIGINT,
        throttle_on_failure     BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE remote_fingerprints (
        mirror_id    BIGINT PRIMARY KEY REFERENCES mirrors(id) ON DELETE CASCADE,
        fingerprint  TEXT COLLATE "C" NOT NULL,
        seen_at      TEXT COLLATE "C" NOT NULL
    );
    CREATE TABLE health_states (
        mirror_id   BIGINT PRIMARY KEY REFERENCES mirrors(id) ON DELETE CASCADE,
        state       TEXT COLLATE "C" NOT NULL,
        changed_at  TEXT COLLATE "C" NOT NULL
    );
    CREATE TABLE run_refs (
        run_id       BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        ref_name     TEXT COLLATE "C" NOT NULL,
        action       TEXT COLLATE "C" NOT NULL,
        local_oid    TEXT COLLATE "C",
        remote_oid   TEXT COLLATE "C",
        reason       TEXT COLLATE "C",
        lfs_objects  BIGINT NOT NULL DEFAULT 0,
        lfs_bytes    BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX run_refs_by_run ON run_refs(run_id);
    CREATE TABLE mirror_health (
        mirror_id             BIGINT PRIMARY KEY REFERENCES mirrors(id) ON DELETE CASCADE,
        last_started_at       TEXT COLLATE "C",
        last_finished_at      TEXT COLLATE "C",
        last_status           TEXT COLLATE "C" CHECK (last_status IN ('succeeded', 'failed')),
        last_error            TEXT COLLATE "C",
        last_success_at       TEXT COLLATE "C",
        consecutive_failures  BIGINT NOT NULL DEFAULT 0,
        recent                BYTEA NOT NULL DEFAULT ''::BYTEA,
        lfs_objects           BIGINT NOT NULL DEFAULT 0,
        lfs_bytes             BIGINT NOT NULL DEFAULT 0
    );

    CREATE TABLE routing_generation (generation BIGINT NOT NULL);
    INSERT INTO routing_generation VALUES (0);
    CREATE FUNCTION bump_routing_generation() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN UPDATE routing_generation SET generation = generation + 1; RETURN NULL; END $$;
    CREATE TRIGGER mirrors_routing AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON mirrors
        FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_generation();
    CREATE TRIGGER projects_routing AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON projects
        FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_generation();
    CREATE TRIGGER webhook_secrets_routing AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
        ON webhook_secrets FOR EACH STATEMENT EXECUTE FUNCTION bump_routing_generation();
"#;

pub(super) fn current_version(conn: &Db) -> Result<u32, StoreError> {
    match conn.as_sqlite() {
        Some(sqlite) => Ok(sqlite.pragma_query_value(None, "user_version", |row| row.get(0))?),
        None => {
            let version: Option<i64> = conn
                .query_row("SELECT version FROM mirrorhost_schema", [], |r| r.get(0))
                .optional()?;
            Ok(version.map_or(0, |v| v as u32))
        }
    }
}

pub(super) fn apply_sqlite(conn: &Db) -> Result<(), StoreError> {
    let found = refuse_newer(current_version(conn)?)?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        // Foreign keys are off while migrations run (a table rebuild needs
        // them off); each migration must still leave every reference whole.
        let broken: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |row| row.get(0))
            .optional()?;
        if let Some(table) = broken {
            return Err(StoreError::Migration {
                version: index as u32 + 1,
                message: format!("leaves broken references in {table}"),
            });
        }
        tx.execute_batch(&format!("PRAGMA user_version = {}", index + 1))?;
        tx.commit()?;
    }
    Ok(())
}

/// PostgreSQL's migrations, under a transaction-scoped advisory lock so
/// that nodes starting together apply each one once.
pub(super) fn apply_postgres(conn: &Db) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    tx.lock(Lock::Migrations)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS mirrorhost_schema (version BIGINT NOT NULL)")?;
    let found = refuse_newer(current_version(&tx)?)?;
    for &(version, sql) in POSTGRES_MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.execute_batch(sql)?;
        tx.execute("DELETE FROM mirrorhost_schema", [])?;
        tx.execute(
            "INSERT INTO mirrorhost_schema (version) VALUES (?1)",
            [i64::from(version)],
        )?;
    }
    tx.commit()
}

fn refuse_newer(found: u32) -> Result<u32, StoreError> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    Ok(found)
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
                let mode: String =
                    conn.as_sqlite()
                        .unwrap()
                        .pragma_query_value(None, "journal_mode", |r| r.get(0))?;
                let fk: i64 =
                    conn.as_sqlite()
                        .unwrap()
                        .pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
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
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
    }
}

#[cfg(test)]
mod backend_tests {
    use std::collections::BTreeSet;

    use super::super::{Backend, Store};
    use super::*;

    /// Every table's columns (name, kind, whether NULL is refused) and every
    /// index's name, as `store` sees them.
    fn schema(store: &Store) -> BTreeSet<String> {
        let (columns, indexes) = match store.backend() {
            Backend::Sqlite => (
                "SELECT m.name, p.name, lower(p.type), p.\"notnull\" OR p.pk > 0 \
                 FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type = 'table'",
                "SELECT name FROM sqlite_master WHERE type = 'index' \
                 AND name NOT LIKE 'sqlite_autoindex%'",
            ),
            Backend::Postgres => (
                "SELECT table_name::TEXT, column_name::TEXT, data_type::TEXT, is_nullable = 'NO' \
                 FROM information_schema.columns WHERE table_schema = current_schema() \
                 AND table_name NOT IN ('mirrorhost_schema', 'routing_generation')",
                "SELECT indexname::TEXT FROM pg_indexes WHERE schemaname = current_schema() \
                 AND indexname NOT LIKE '%_pkey'",
            ),
        };
        let kind = |t: &str| match t {
            "integer" | "bigint" => "integer",
            "blob" | "bytea" => "blob",
            other => {
                if other == "text" {
                    "text"
                } else {
                    "other"
                }
            }
        };
        store
            .with(|c| {
                let mut all: BTreeSet<String> = c
                    .query_map(columns, [], |r| {
                        let (table, column, t): (String, String, String) =
                            (r.get(0)?, r.get(1)?, r.get(2)?);
                        let not_null: bool = r.get(3)?;
                        Ok(format!("{table}.{column} {} not-null={not_null}", kind(&t)))
                    })?
                    .into_iter()
                    .collect();
                all.extend(c.query_map(indexes, [], |r| {
                    Ok(format!("index {}", r.get::<String>(0)?))
                })?);
                Ok::<_, StoreError>(all)
            })
            .unwrap()
    }

    /// The two lists of migrations build the same schema.
    #[test]
    fn postgres_and_sqlite_migrations_build_the_same_schema() {
        let Some(url) =
            super::super::test_postgres::schema_url(&super::super::test_postgres::fresh_schema())
        else {
            eprintln!("PostgreSQL runs skipped: no MIRRORHOST_TEST_DATABASE_URL");
            return;
        };
        let postgres = Store::connect(&url).unwrap();
        let sqlite = Store::open_in_memory().unwrap();
        assert_eq!(postgres.schema_version().unwrap(), SCHEMA_VERSION);
        let (ours, theirs) = (schema(&sqlite), schema(&postgres));
        assert!(ours.len() > 100, "{ours:?}");
        assert_eq!(ours, theirs);
        // Opening again applies nothing and changes nothing.
        drop(postgres);
        let again = Store::connect(&url).unwrap();
        assert_eq!(schema(&again), theirs);
    }
}

/// A database file at schema `version`, with project `a/b` and its pull
/// mirror 1, as an older binary left it.
#[cfg(test)]
fn old_database(path: &std::path::Path, version: usize) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    for sql in &MIGRATIONS[..version] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", version as i64)
        .unwrap();
    conn.execute_batch(
        "INSERT INTO projects (id, protected_branches, created_at) VALUES ('a/b', '[]', 't');
         INSERT INTO mirrors (id, project_id, direction, url, remote_host, auth_method,
             enabled, only_protected_branches, keep_divergent_refs, conflict_strategy,
             conflict_strategy_config, branch_filter_config, created_at, updated_at)
             VALUES (1, 'a/b', 'pull', 'https://h/a/b', 'h', 'none', 1, 0, 0, 'theirs',
             '', '', 't', 't');",
    )
    .unwrap();
    conn
}

#[cfg(test)]
mod rebuild_tests {
    use super::super::Store;
    use super::*;

    /// Migration 12 rebuilds `runs`: a database of version 11 keeps every run
    /// and every row that refers to one, and takes `cancelled` afterwards.
    #[test]
    fn rebuilding_runs_keeps_every_row_and_reference() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = old_database(&path, 11);
            conn.pragma_update(None, "foreign_keys", true).unwrap();
            conn.execute_batch(
                "INSERT INTO runs (id, mirror_id, trigger, status, queued_at)
                     VALUES (7, 1, 'manual', 'succeeded', 't'), (8, 1, 'manual', 'queued', 't');
                 INSERT INTO jobs (mirror_id, run_id, state, created_at) VALUES (1, 8, 'pending', 't');
                 INSERT INTO run_refs (run_id, ref_name, action) VALUES (7, 'refs/heads/main', 'create');",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        store
            .with(|c| {
                let runs: i64 = c.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))?;
                let refs: i64 = c.query_row("SELECT COUNT(*) FROM run_refs", [], |r| r.get(0))?;
                let job_run: i64 = c.query_row("SELECT run_id FROM jobs", [], |r| r.get(0))?;
                assert_eq!((runs, refs, job_run), (2, 1, 8));
                assert!(crate::store::runs::cancel_queued(c, 8)?);
                // References still hold: deleting the mirror cascades.
                c.execute("DELETE FROM mirrors WHERE id = 1", [])?;
                let left: i64 = c.query_row(
                    "SELECT (SELECT COUNT(*) FROM runs) + (SELECT COUNT(*) FROM run_refs)",
                    [],
                    |r| r.get(0),
                )?;
                assert_eq!(left, 0);
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }
}

#[cfg(test)]
mod summary_tests {
    use super::super::Store;
    use super::super::health::{self, Outcome};
    use super::*;

    /// Migration 15 builds each mirror's summary from its history: the same
    /// summary that keeping it run by run gives.
    #[test]
    fn the_backfilled_summary_matches_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = old_database(&path, 14);
            conn.execute_batch(
                "INSERT INTO mirrors (id, project_id, direction, url, remote_host, auth_method,
                     enabled, only_protected_branches, keep_divergent_refs, conflict_strategy,
                     conflict_strategy_config, branch_filter_config, created_at, updated_at)
                     VALUES (2, 'a/b', 'push', 'https://h/c/d', 'h', 'none', 1, 0, 0, 'theirs',
                     '', '', 't', 't');",
            )
            .unwrap();
            // 130 runs of mirror 1: every third fails, the last two fail;
            // an interrupted and a cancelled run count for nothing.
            for i in 1..=130_i64 {
                let status = if i % 3 == 0 || i > 128 {
                    "failed"
                } else {
                    "succeeded"
                };
                conn.execute(
                    "INSERT INTO runs (mirror_id, trigger, status, queued_at, started_at, \
                     finished_at, duration_ms, error) VALUES (1, 'manual', ?1, 'q', ?2, ?2, ?3, ?4)",
                    rusqlite::params![status, format!("t{i:03}"), i * 10, format!("e{i}")],
                )
                .unwrap();
            }
            conn.execute_batch(
                "INSERT INTO runs (mirror_id, trigger, status, queued_at, started_at, finished_at)
                     VALUES (1, 'manual', 'interrupted', 'q', 't131', 't131'),
                            (1, 'manual', 'cancelled', 'q', NULL, 't132');",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let (one, two) = store
            .with(|c| Ok::<_, StoreError>((health::summary(c, 1)?, health::summary(c, 2)?)))
            .unwrap();
        assert_eq!(one.last_started_at.as_deref(), Some("t131"));
        assert_eq!(one.last_finished_at.as_deref(), Some("t130"));
        assert_eq!(one.last_succeeded, Some(false));
        assert_eq!(one.last_error.as_deref(), Some("e130"));
        assert_eq!(one.last_success_at.as_deref(), Some("t128"));
        assert_eq!(one.consecutive_failures, 2);
        let expected: Vec<Outcome> = (31..=130_i64)
            .rev()
            .map(|i| Outcome {
                succeeded: i % 3 != 0 && i <= 128,
                duration_ms: i * 10,
            })
            .collect();
        assert_eq!(one.recent, expected);
        assert_eq!(two, health::Summary::default());
    }
}
