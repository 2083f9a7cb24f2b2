//! The service's state, in SQLite (the embedded default) or PostgreSQL.
//! This module owns the connection and the schema: every table is created by
//! a migration in `migrations.rs`, applied in order at open; `db` is the one
//! SQL API both databases serve.
//!
//! The connection sits behind a mutex and every method is synchronous; async
//! callers go through `tokio::task::spawn_blocking`.

pub mod bandwidth;
pub mod cluster;
pub mod conflicts;
pub mod credentials;
pub mod db;
pub mod health;
mod migrations;
pub mod mirrors;
pub mod retention;
pub mod runs;
pub mod schedules;
mod text;
pub mod webhooks;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, TryLockError};

use rusqlite::functions::FunctionFlags;
use rusqlite::hooks::Action;

use crate::clock::{Clock, SystemClock, rfc3339};

pub use conflicts::{Conflict, ConflictStatus, NewConflict, Resolution};
pub use db::{Backend, Db, Optional, Row};
pub use migrations::SCHEMA_VERSION;
pub use mirrors::{AuthMethod, Direction, LfsMissing, Mirror, MirrorSettings, Project};
pub use runs::{
    Enqueued, ExternalUpdate, PendingJob, RefAction, Run, RunOutcome, RunRef, RunStatus, Trigger,
};
pub use text::UnknownValue;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database: {}", postgres_message(.0))]
    Postgres(#[from] postgres::Error),
    #[error("database: column {index}: {message}")]
    Decode { index: usize, message: String },
    #[error("database: the query returned no row")]
    NoRow,
    #[error("database: a transaction was begun inside another")]
    NestedTransaction,
    #[error("database connection: {0}")]
    Connection(String),
    #[error("database schema is version {found}, newer than this binary knows ({known})")]
    TooNew { found: u32, known: u32 },
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("database migration {version} {message}")]
    Migration { version: u32, message: String },
    #[error("cannot encode a value for the database: {0}")]
    Encode(String),
}

impl StoreError {
    /// The database could not grow: the disk (or the quota) of the data dir
    /// is full. SQLite rolled the statement back; nothing was written.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            StoreError::Postgres(e) => e.code() == Some(&postgres::error::SqlState::DISK_FULL),
            _ => false,
        }
    }
}

/// The server's own words where it gave them (postgres's `Display` of a
/// server error is only "db error").
fn postgres_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// What an operator is told when the database's disk is full.
pub const DISK_FULL: &str =
    "the data dir's disk is full: nothing was changed; free space there and try again";

/// One page of a list: `page` counts from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: u32,
    pub per_page: u32,
}

impl Page {
    /// Rows before this page.
    fn offset(self) -> i64 {
        i64::from(self.page.saturating_sub(1)) * i64::from(self.per_page)
    }
}

/// `page` of the rows that `SELECT {columns} {from_where} ORDER BY {order}`
/// gives with `args` (numbered ?1, ?2, ...), each read by `row`, and how many
/// rows the whole selection holds.
fn paged<T>(
    conn: &Db,
    columns: &str,
    from_where: &str,
    order: &str,
    args: &[&dyn db::ToSql],
    page: Page,
    row: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
) -> Result<(Vec<T>, u64), StoreError> {
    let total: i64 =
        conn.query_row(&format!("SELECT COUNT(*) {from_where}"), args, |r| r.get(0))?;
    let (limit, offset) = (args.len() + 1, args.len() + 2);
    let sql =
        format!("SELECT {columns} {from_where} ORDER BY {order} LIMIT ?{limit} OFFSET ?{offset}");
    let (per_page, skipped) = (i64::from(page.per_page), page.offset());
    let mut all = args.to_vec();
    all.extend([&per_page as &dyn db::ToSql, &skipped]);
    let rows = conn.query_map(&sql, all.as_slice(), row)?;
    Ok((rows, u64::try_from(total).unwrap_or(0)))
}

/// Unix milliseconds now, by the store's clock (SQL's `clock_now_ms()`).
pub fn now_ms(conn: &Db) -> Result<i64, StoreError> {
    conn.query_row("SELECT clock_now_ms()", [], |row| row.get(0))
}

/// Now by the store's clock, as every `*_at` column holds it.
pub fn now(conn: &Db) -> Result<String, StoreError> {
    Ok(rfc3339(now_ms(conn)?))
}

/// The clock behind `clock_now_ms()`, if not the system's; swapped by
/// [`Store::set_clock`].
type ClockSlot = Arc<RwLock<Option<Arc<dyn Clock>>>>;

/// Where the store keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file, the embedded default.
    Sqlite(PathBuf),
    /// A PostgreSQL server: a `postgres://` URL (or key=value settings).
    Postgres(String),
}

#[derive(Debug)]
pub struct Store {
    /// SQLite: the one connection. PostgreSQL: a few, so that runs of one
    /// node do not wait in line for one another's round trips.
    conns: Vec<Mutex<Db>>,
    /// Where it is, for the listener's own connection.
    location: Location,
    /// SQLite: bumped on every row change of the tables that say which
    /// mirror a webhook delivery reaches (`mirrors`, `projects`,
    /// `webhook_secrets`), by SQLite's update hook, so no writer can forget
    /// to. PostgreSQL keeps the count in a row its triggers bump, which
    /// every node of a cluster sees. Caches of those tables compare it to
    /// know they are stale.
    routing_generation: Arc<AtomicU64>,
    clock: ClockSlot,
    /// Which connection a caller who found none free waits for.
    turn: AtomicUsize,
}

/// Connections of a node to PostgreSQL (besides the listener's): as many as
/// runs that commonly touch the store at once; more only queue in the server.
const POSTGRES_CONNECTIONS: usize = 4;

/// Tables whose changes bump [`Store::routing_generation`]. All are rowid
/// tables (the update hook skips WITHOUT ROWID ones) and none is ever emptied
/// by an unfiltered DELETE (the hook skips the truncate optimisation).
const ROUTING_TABLES: &[&str] = &["mirrors", "projects", "webhook_secrets"];

impl Store {
    /// Opens the store at `location`, creating it if needed, and brings its
    /// schema up to date.
    pub fn open_at(location: &Location) -> Result<Self, StoreError> {
        match location {
            Location::Sqlite(path) => Self::open(path),
            Location::Postgres(url) => Self::connect(url),
        }
    }

    /// Opens (creating if needed) the database at `path`, in WAL mode with
    /// foreign keys enforced, and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let location = Location::Sqlite(path.to_path_buf());
        Self::init(rusqlite::Connection::open(path)?, location)
    }

    /// A private in-memory database, for tests and tools.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let location = Location::Sqlite(PathBuf::from(":memory:"));
        Self::init(rusqlite::Connection::open_in_memory()?, location)
    }

    /// Connects to the PostgreSQL database `url` names and brings its
    /// schema up to date (one node at a time: migrations take a lock).
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let db = Db::postgres(url)?;
        migrations::apply_postgres(&db)?;
        let mut conns = vec![Mutex::new(db)];
        for _ in 1..POSTGRES_CONNECTIONS {
            conns.push(Mutex::new(Db::postgres(url)?));
        }
        Ok(Self {
            conns,
            location: Location::Postgres(url.to_string()),
            routing_generation: Arc::new(AtomicU64::new(0)),
            clock: Arc::new(RwLock::new(None)),
            turn: AtomicUsize::new(0),
        })
    }

    fn init(mut conn: rusqlite::Connection, location: Location) -> Result<Self, StoreError> {
        incremental_vacuum(&conn)?;
        // WAL lets readers proceed during a write; NORMAL sync is durable across
        // process crashes (the case we care about) and much faster than FULL.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Checkpoints leave the WAL file at its largest; cap what stays on disk.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Migrations run with foreign keys off (SQLite's way to rebuild a
        // table; each migration checks references itself), the service with
        // them on.
        conn.pragma_update(None, "foreign_keys", false)?;
        // Every timestamp the store writes comes from this clock, so that a
        // test (or a soak on simulated time) can drive it.
        let clock: ClockSlot = Arc::new(RwLock::new(None));
        let read = clock.clone();
        conn.create_scalar_function("clock_now_ms", 0, FunctionFlags::SQLITE_UTF8, move |_| {
            let clock = read.read().unwrap_or_else(PoisonError::into_inner);
            Ok(clock
                .as_ref()
                .map_or_else(|| SystemClock.now_ms(), |c| c.now_ms()))
        })?;
        let routing_generation = Arc::new(AtomicU64::new(0));
        let bump = routing_generation.clone();
        conn.update_hook(Some(move |_: Action, _: &str, table: &str, _: i64| {
            if ROUTING_TABLES.contains(&table) {
                bump.fetch_add(1, Ordering::Release);
            }
        }))?;
        let db = Db::sqlite(conn);
        migrations::apply_sqlite(&db)?;
        db.execute_batch("PRAGMA foreign_keys = ON")?;
        Ok(Self {
            conns: vec![Mutex::new(db)],
            location,
            routing_generation,
            clock,
            turn: AtomicUsize::new(0),
        })
    }

    /// On PostgreSQL, hands the cluster's notices to `on_notice`
    /// ([`cluster::listen`]); SQLite has no other node to hear.
    pub fn listen(&self, on_notice: impl FnMut(cluster::Notice) + Send + 'static) {
        if let Location::Postgres(url) = &self.location {
            cluster::listen(url.clone(), on_notice);
        }
    }

    /// Replaces the clock the store stamps rows with.
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        *self.clock.write().unwrap_or_else(PoisonError::into_inner) = Some(clock);
    }

    pub fn backend(&self) -> Backend {
        match self.location {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }

    /// Changes with every write to the tables webhook routing reads; see the field.
    pub fn routing_generation(&self) -> Result<u64, StoreError> {
        match self.backend() {
            // The update hook's count: no connection needed.
            Backend::Sqlite => Ok(self.routing_generation.load(Ordering::Acquire)),
            Backend::Postgres => self.with(|conn| {
                let n: i64 =
                    conn.query_row("SELECT generation FROM routing_generation", [], |r| {
                        r.get(0)
                    })?;
                Ok(n as u64)
            }),
        }
    }

    /// Runs `f` with a connection: a free one, else the next in turn when
    /// it is free. A panic in an earlier holder cannot leave the connection
    /// half-changed (every change is a transaction), so a poisoned lock is
    /// still safe to use.
    pub fn with<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, E>,
    ) -> Result<T, E> {
        let free = self.conns.iter().find_map(|conn| match conn.try_lock() {
            Ok(conn) => Some(conn),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        });
        let mut conn = free.unwrap_or_else(|| {
            let turn = self.turn.fetch_add(1, Ordering::Relaxed) % self.conns.len();
            self.conns[turn]
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        });
        if conn.backend() == Backend::Postgres {
            self.hand_clock_to_postgres(&conn)?;
        }
        f(&mut conn)
    }

    /// PostgreSQL's `clock_now_ms()` reads the database server's clock, the
    /// one all nodes share, unless the session names a time: a store whose
    /// clock was replaced names its time before each use.
    fn hand_clock_to_postgres(&self, conn: &Db) -> Result<(), StoreError> {
        let clock = self.clock.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(clock) = clock.as_ref() {
            conn.query_row(
                "SELECT set_config('mirrorhost.now_ms', ?1, false)",
                [clock.now_ms().to_string()],
                |_| Ok(()),
            )?;
        }
        Ok(())
    }

    /// Cheap liveness probe for `/readyz`.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.with(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
    }

    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.with(|conn| migrations::current_version(conn))
    }
}

#[cfg(test)]
#[path = "../../../tests/fixtures/postgres.rs"]
pub(crate) mod test_postgres;

#[cfg(test)]
impl Store {
    /// A new, empty store for a test: on PostgreSQL in the PostgreSQL pass
    /// (`tests/on-postgres.sh`), in memory on SQLite otherwise.
    pub(crate) fn for_test() -> Self {
        match test_postgres::schema_url(&test_postgres::fresh_schema()) {
            Some(url) => Self::connect(&url).unwrap(),
            None => Self::open_in_memory().unwrap(),
        }
    }

    /// [`Store::for_test`] on a clock the test moves.
    pub(crate) fn driven_for_test() -> (Self, Arc<crate::clock::Driven>) {
        let store = Self::for_test();
        let clock = Arc::new(crate::clock::Driven::default());
        store.set_clock(clock.clone());
        (store, clock)
    }
}

/// Makes the file one whose free pages can be handed back
/// (`retention::reclaim`): set before the first table of a new database; an
/// older database is rebuilt once (`VACUUM`), at the first start of a binary
/// that retains history.
fn incremental_vacuum(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    const INCREMENTAL: i64 = 2;
    let mode: i64 = conn.pragma_query_value(None, "auto_vacuum", |row| row.get(0))?;
    if mode == INCREMENTAL {
        return Ok(());
    }
    let pages: i64 = conn.pragma_query_value(None, "page_count", |row| row.get(0))?;
    conn.pragma_update(None, "auto_vacuum", INCREMENTAL)?;
    if pages > 0 {
        tracing::info!(pages, "rebuilding the database once for incremental vacuum");
        conn.execute_batch("VACUUM")?;
    }
    Ok(())
}

/// Whose sealed secret a row holds, and so what it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedOwner {
    /// `credentials`: a mirror's credential.
    Mirror(i64),
    /// `webhook_secrets`: a project's webhook secret.
    Project(String),
    /// `mirrors.proxy_secret`: a mirror's proxy credentials, bound to its
    /// `proxy_url`.
    Proxy { mirror_id: i64, proxy_url: String },
    /// `mirrors.tls_client_key_secret`: a mirror's TLS client key, bound to
    /// its certificate.
    ClientKey {
        mirror_id: i64,
        certificate_pem: String,
    },
}

/// Each kind of sealed row: the query listing them (owner columns, then the
/// sealed bytes), how a row names its owner.
type SealedRows = (
    &'static str,
    fn(&Row<'_>) -> Result<SealedOwner, StoreError>,
);

const SEALED_ROWS: [SealedRows; 4] = [
    ("SELECT mirror_id, sealed FROM credentials", |row| {
        Ok(SealedOwner::Mirror(row.get(0)?))
    }),
    ("SELECT project_id, sealed FROM webhook_secrets", |row| {
        Ok(SealedOwner::Project(row.get(0)?))
    }),
    (
        "SELECT id, proxy_url, proxy_secret FROM mirrors \
         WHERE proxy_secret IS NOT NULL AND proxy_url IS NOT NULL",
        |row| {
            Ok(SealedOwner::Proxy {
                mirror_id: row.get(0)?,
                proxy_url: row.get(1)?,
            })
        },
    ),
    (
        "SELECT id, tls_client_cert_pem, tls_client_key_secret FROM mirrors \
         WHERE tls_client_key_secret IS NOT NULL AND tls_client_cert_pem IS NOT NULL",
        |row| {
            Ok(SealedOwner::ClientKey {
                mirror_id: row.get(0)?,
                certificate_pem: row.get(1)?,
            })
        },
    ),
];

/// Re-seals every sealed secret (credentials, webhook secrets, proxy
/// credentials, TLS client keys) in one transaction: an error from `reseal`
/// leaves every row as it was.
pub fn reseal_all<E: From<StoreError>>(
    conn: &mut Db,
    key_id: &str,
    mut reseal: impl FnMut(&SealedOwner, &[u8]) -> Result<Vec<u8>, E>,
) -> Result<usize, E> {
    let tx = conn.transaction()?;
    let mut rows: Vec<(SealedOwner, Vec<u8>)> = Vec::new();
    for (sql, owner) in SEALED_ROWS {
        rows.extend(tx.query_map(sql, [], |row| {
            let sealed_at = row.column_count() - 1;
            Ok((owner(row)?, row.get(sealed_at)?))
        })?);
    }
    for (owner, sealed) in &rows {
        let resealed = reseal(owner, sealed)?;
        match owner {
            SealedOwner::Mirror(id) => tx.execute(
                "UPDATE credentials SET sealed = ?2, key_id = ?3 WHERE mirror_id = ?1",
                db::params![id, resealed, key_id],
            ),
            SealedOwner::Project(id) => tx.execute(
                "UPDATE webhook_secrets SET sealed = ?2, key_id = ?3 WHERE project_id = ?1",
                db::params![id, resealed, key_id],
            ),
            SealedOwner::Proxy { mirror_id, .. } => tx.execute(
                "UPDATE mirrors SET proxy_secret = ?2 WHERE id = ?1",
                db::params![mirror_id, resealed],
            ),
            SealedOwner::ClientKey { mirror_id, .. } => tx.execute(
                "UPDATE mirrors SET tls_client_key_secret = ?2 WHERE id = ?1",
                db::params![mirror_id, resealed],
            ),
        }?;
    }
    tx.commit()?;
    Ok(rows.len())
}
