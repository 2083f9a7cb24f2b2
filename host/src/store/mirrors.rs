//! Projects and mirrors.

use super::db::{Db, Optional, Row, ToSql, params};
use serde::{Deserialize, Serialize};

use super::health::State;
use super::runs::RunStatus;
use super::text::text_enum;
use super::{Page, StoreError, now};

text_enum! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum Direction as "direction" {
        Pull = "pull",
        Push = "push",
    }
}

text_enum! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum AuthMethod as "auth method" {
        None = "none",
        Password = "password",
        Token = "token",
        SshKey = "ssh_key",
    }
}

text_enum! {
    /// What a run does with an LFS object it cannot fetch or upload (missing
    /// on the server, wrong size or content).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum LfsMissing as "LFS missing-object policy" {
        /// The run fails, naming the object; no ref changes.
        Fail = "fail",
        /// The object is named in the run's record and left out.
        Skip = "skip",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Project {
    pub project_id: String,
    pub protected_branches: Vec<String>,
    pub created_at: String,
}

/// A mirror's settings, as stored and as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Mirror {
    pub mirror_id: i64,
    pub project_id: String,
    pub direction: Direction,
    /// Never carries credentials: URLs with userinfo are refused at creation.
    pub url: String,
    #[serde(skip)]
    pub remote_host: String,
    pub auth_method: AuthMethod,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_interval: Option<u32>,
    pub only_protected_branches: bool,
    pub keep_divergent_refs: bool,
    pub mirror_branch_regex: Option<String>,
    pub conflict_strategy: String,
    pub conflict_strategy_config: String,
    pub branch_filter: Option<String>,
    pub branch_filter_config: String,
    /// An auth-provider plugin chosen for this mirror; none means the built-in
    /// provider of `auth_method`.
    pub auth_provider: Option<String>,
    pub auth_provider_config: String,
    /// The HTTP proxy of this mirror's transfers; `""` for none, absent for
    /// the service's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    /// The proxy's `user:password`, sealed to `proxy_url`; shown only as
    /// whether there is one.
    #[serde(rename = "proxy_credentials", serialize_with = "is_some")]
    #[schema(value_type = bool)]
    pub proxy_secret: Option<Vec<u8>>,
    /// PEM certificates of the authorities this mirror's https remote may be
    /// signed by, beside those the service trusts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_pem: Option<String>,
    /// The client certificate (PEM chain, leaf first) this mirror presents
    /// to a remote that asks for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_cert_pem: Option<String>,
    /// The certificate's private key, sealed to the certificate; shown only
    /// as whether there is one.
    #[serde(rename = "tls_client_key", serialize_with = "is_some")]
    #[schema(value_type = bool)]
    pub tls_client_key_secret: Option<Vec<u8>>,
    /// Whether runs move the LFS objects of the commits they move.
    pub lfs: bool,
    pub lfs_missing: LfsMissing,
    pub created_at: String,
    pub updated_at: String,
    /// Where its runs stand, in GitLab's words.
    #[serde(flatten)]
    pub status: UpdateState,
}

text_enum! {
    /// GitLab's `update_status` of a mirror.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum UpdateStatus as "update status" {
        /// It never ran.
        None = "none",
        /// A run is queued.
        Scheduled = "scheduled",
        /// A run is going on.
        Started = "started",
        /// Its last run succeeded.
        Finished = "finished",
        /// Its last run failed.
        Failed = "failed",
    }
}

/// GitLab's status fields of a mirror, from its runs (cancelled and
/// interrupted runs are the service's or an operator's doing, left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UpdateState {
    pub update_status: UpdateStatus,
    /// When its latest run started.
    pub last_update_started_at: Option<String>,
    /// When its latest run that succeeded or failed ended.
    pub last_update_at: Option<String>,
    pub last_successful_update_at: Option<String>,
    /// The error of its latest run, if that failed.
    pub last_error: Option<String>,
}

/// Everything a caller sets on a mirror; `mirror_id` and times are the store's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSettings {
    pub project_id: String,
    pub direction: Direction,
    pub url: String,
    pub remote_host: String,
    pub auth_method: AuthMethod,
    pub enabled: bool,
    pub update_interval: Option<u32>,
    pub only_protected_branches: bool,
    pub keep_divergent_refs: bool,
    pub mirror_branch_regex: Option<String>,
    pub conflict_strategy: String,
    pub conflict_strategy_config: String,
    pub branch_filter: Option<String>,
    pub branch_filter_config: String,
    pub auth_provider: Option<String>,
    pub auth_provider_config: String,
    pub proxy_url: Option<String>,
    pub proxy_secret: Option<Vec<u8>>,
    pub tls_ca_pem: Option<String>,
    pub tls_client_cert_pem: Option<String>,
    pub tls_client_key_secret: Option<Vec<u8>>,
    pub lfs: bool,
    pub lfs_missing: LfsMissing,
}

impl MirrorSettings {
    /// A pull mirror of `url` with the defaults the API applies: no auth,
    /// enabled, no schedule, no filter, conflicts resolved with `theirs`.
    pub fn pull(project_id: &str, url: &str, remote_host: &str) -> Self {
        Self {
            project_id: project_id.into(),
            direction: Direction::Pull,
            url: url.into(),
            remote_host: remote_host.into(),
            auth_method: AuthMethod::None,
            enabled: true,
            update_interval: None,
            only_protected_branches: false,
            keep_divergent_refs: false,
            mirror_branch_regex: None,
            conflict_strategy: "theirs".into(),
            conflict_strategy_config: String::new(),
            branch_filter: None,
            branch_filter_config: String::new(),
            auth_provider: None,
            auth_provider_config: String::new(),
            proxy_url: None,
            proxy_secret: None,
            tls_ca_pem: None,
            tls_client_cert_pem: None,
            tls_client_key_secret: None,
            lfs: true,
            lfs_missing: LfsMissing::Fail,
        }
    }
}

impl Mirror {
    /// Whether one of this mirror's policies is the plugin `name`.
    pub fn uses_plugin(&self, name: &str) -> bool {
        self.conflict_strategy == name
            || self.branch_filter.as_deref() == Some(name)
            || self.auth_provider.as_deref() == Some(name)
    }

    pub fn settings(&self) -> MirrorSettings {
        MirrorSettings {
            project_id: self.project_id.clone(),
            direction: self.direction,
            url: self.url.clone(),
            remote_host: self.remote_host.clone(),
            auth_method: self.auth_method,
            enabled: self.enabled,
            update_interval: self.update_interval,
            only_protected_branches: self.only_protected_branches,
            keep_divergent_refs: self.keep_divergent_refs,
            mirror_branch_regex: self.mirror_branch_regex.clone(),
            conflict_strategy: self.conflict_strategy.clone(),
            conflict_strategy_config: self.conflict_strategy_config.clone(),
            branch_filter: self.branch_filter.clone(),
            branch_filter_config: self.branch_filter_config.clone(),
            auth_provider: self.auth_provider.clone(),
            auth_provider_config: self.auth_provider_config.clone(),
            proxy_url: self.proxy_url.clone(),
            proxy_secret: self.proxy_secret.clone(),
            tls_ca_pem: self.tls_ca_pem.clone(),
            tls_client_cert_pem: self.tls_client_cert_pem.clone(),
            tls_client_key_secret: self.tls_client_key_secret.clone(),
            lfs: self.lfs,
            lfs_missing: self.lfs_missing,
        }
    }
}

const MIRROR_COLUMNS: &str = "id, project_id, direction, url, remote_host, auth_method, enabled, \
     update_interval, only_protected_branches, keep_divergent_refs, mirror_branch_regex, \
     conflict_strategy, conflict_strategy_config, branch_filter, branch_filter_config, \
     created_at, updated_at, auth_provider, auth_provider_config, proxy_url, tls_ca_pem, \
     proxy_secret, tls_client_cert_pem, tls_client_key_secret, lfs, lfs_missing, \
     EXISTS (SELECT 1 FROM jobs WHERE jobs.mirror_id = mirrors.id AND jobs.state = 'running'), \
     EXISTS (SELECT 1 FROM jobs WHERE jobs.mirror_id = mirrors.id AND jobs.state = 'pending'), \
     h.last_started_at, h.last_status, h.last_finished_at, h.last_error, h.last_success_at";

/// What every query of mirrors reads from: each mirror beside its kept
/// summary (GitLab's status fields come from there, not from the history).
const MIRROR_TABLES: &str = "mirrors LEFT JOIN mirror_health h ON h.mirror_id = mirrors.id";

fn mirror_from_row(row: &Row<'_>) -> Result<Mirror, StoreError> {
    Ok(Mirror {
        mirror_id: row.get(0)?,
        project_id: row.get(1)?,
        direction: row.get(2)?,
        url: row.get(3)?,
        remote_host: row.get(4)?,
        auth_method: row.get(5)?,
        enabled: row.get(6)?,
        update_interval: row.get(7)?,
        only_protected_branches: row.get(8)?,
        keep_divergent_refs: row.get(9)?,
        mirror_branch_regex: row.get(10)?,
        conflict_strategy: row.get(11)?,
        conflict_strategy_config: row.get(12)?,
        branch_filter: row.get(13)?,
        branch_filter_config: row.get(14)?,
        created_at: row.get(15)?,
        updated_at: row.get(16)?,
        auth_provider: row.get(17)?,
        auth_provider_config: row.get(18)?,
        proxy_url: row.get(19)?,
        tls_ca_pem: row.get(20)?,
        proxy_secret: row.get(21)?,
        tls_client_cert_pem: row.get(22)?,
        tls_client_key_secret: row.get(23)?,
        lfs: row.get(24)?,
        lfs_missing: row.get(25)?,
        status: update_state(row, 26)?,
    })
}

/// GitLab's status fields from the columns at `at..`: a run going on, one
/// pending, the latest start; the status, end and error of the latest run
/// that succeeded or failed; the latest success.
fn update_state(row: &Row<'_>, at: usize) -> Result<UpdateState, StoreError> {
    let (running, pending): (bool, bool) = (row.get(at)?, row.get(at + 1)?);
    let finished: Option<RunStatus> = row.get(at + 3)?;
    let update_status = match (running, pending, finished) {
        (true, _, _) => UpdateStatus::Started,
        (false, true, _) => UpdateStatus::Scheduled,
        (false, false, Some(RunStatus::Succeeded)) => UpdateStatus::Finished,
        (false, false, Some(_)) => UpdateStatus::Failed,
        (false, false, None) => UpdateStatus::None,
    };
    let error: Option<String> = row.get(at + 5)?;
    Ok(UpdateState {
        update_status,
        last_update_started_at: row.get(at + 2)?,
        last_update_at: row.get(at + 4)?,
        last_successful_update_at: row.get(at + 6)?,
        last_error: error.filter(|_| finished == Some(RunStatus::Failed)),
    })
}

fn is_some<S: serde::Serializer>(value: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(value.is_some())
}

/// Creates the project on first use; returns it either way.
pub fn ensure_project(conn: &Db, project_id: &str) -> Result<Project, StoreError> {
    conn.execute(
        "INSERT INTO projects (id, created_at) VALUES (?1, ?2) ON CONFLICT(id) DO NOTHING",
        params![project_id, now(conn)?],
    )?;
    project(conn, project_id)?.ok_or(StoreError::NotFound("project"))
}

pub fn project(conn: &Db, project_id: &str) -> Result<Option<Project>, StoreError> {
    conn.query_row(
        "SELECT id, protected_branches, created_at FROM projects WHERE id = ?1",
        [project_id],
        |row| {
            let patterns: String = row.get(1)?;
            Ok(Project {
                project_id: row.get(0)?,
                protected_branches: serde_json::from_str(&patterns)
                    .map_err(|_| bad_column("protected_branches", &patterns))?,
                created_at: row.get(2)?,
            })
        },
    )
    .optional()
}

pub fn set_protected_branches(
    conn: &Db,
    project_id: &str,
    patterns: &[String],
) -> Result<Project, StoreError> {
    ensure_project(conn, project_id)?;
    let json = serde_json::to_string(patterns).map_err(|e| StoreError::Encode(e.to_string()))?;
    conn.execute(
        "UPDATE projects SET protected_branches = ?2 WHERE id = ?1",
        params![project_id, json],
    )?;
    project(conn, project_id)?.ok_or(StoreError::NotFound("project"))
}

/// The settings a caller may change, in the column order of [`SETTABLE`]:
/// the first [`SETTABLE_COUNT`] parameters of both the INSERT and the UPDATE.
const SETTABLE: &str = "url, remote_host, auth_method, enabled, update_interval, \
     only_protected_branches, keep_divergent_refs, mirror_branch_regex, conflict_strategy, \
     conflict_strategy_config, branch_filter, branch_filter_config, auth_provider, \
     auth_provider_config, proxy_url, tls_ca_pem, proxy_secret, tls_client_cert_pem, \
     tls_client_key_secret, lfs, lfs_missing";
const SETTABLE_COUNT: usize = 21;

fn settable_params(s: &MirrorSettings) -> [&dyn ToSql; SETTABLE_COUNT] {
    [
        &s.url,
        &s.remote_host,
        &s.auth_method,
        &s.enabled,
        &s.update_interval,
        &s.only_protected_branches,
        &s.keep_divergent_refs,
        &s.mirror_branch_regex,
        &s.conflict_strategy,
        &s.conflict_strategy_config,
        &s.branch_filter,
        &s.branch_filter_config,
        &s.auth_provider,
        &s.auth_provider_config,
        &s.proxy_url,
        &s.tls_ca_pem,
        &s.proxy_secret,
        &s.tls_client_cert_pem,
        &s.tls_client_key_secret,
        &s.lfs,
        &s.lfs_missing,
    ]
}

/// `?from, ?from+1, ... ?to`.
fn placeholders(from: usize, to: usize) -> String {
    (from..=to)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn insert(conn: &mut Db, s: &MirrorSettings) -> Result<Mirror, StoreError> {
    let tx = conn.transaction()?;
    ensure_project(&tx, &s.project_id)?;
    let at = now(&tx)?;
    let mut values: Vec<&dyn ToSql> = settable_params(s).to_vec();
    values.extend([&s.project_id as &dyn ToSql, &s.direction, &at]);
    let id: i64 = tx.query_row(
        &format!(
            "INSERT INTO mirrors ({SETTABLE}, project_id, direction, created_at, updated_at) \
             VALUES ({}, ?{at}) RETURNING id",
            placeholders(1, SETTABLE_COUNT + 3),
            at = SETTABLE_COUNT + 3,
        ),
        values.as_slice(),
        |row| row.get(0),
    )?;
    let mirror = get(&tx, id)?.ok_or(StoreError::NotFound("mirror"))?;
    tx.commit()?;
    Ok(mirror)
}

pub fn update(conn: &Db, id: i64, s: &MirrorSettings) -> Result<Mirror, StoreError> {
    let assignments: Vec<String> = SETTABLE
        .split(", ")
        .enumerate()
        .map(|(i, column)| format!("{} = ?{}", column.trim(), i + 1))
        .collect();
    let at = now(conn)?;
    let mut values: Vec<&dyn ToSql> = settable_params(s).to_vec();
    values.extend([&at as &dyn ToSql, &id]);
    let changed = conn.execute(
        &format!(
            "UPDATE mirrors SET {}, updated_at = ?{} WHERE id = ?{}",
            assignments.join(", "),
            SETTABLE_COUNT + 1,
            SETTABLE_COUNT + 2,
        ),
        values.as_slice(),
    )?;
    if changed == 0 {
        return Err(StoreError::NotFound("mirror"));
    }
    get(conn, id)?.ok_or(StoreError::NotFound("mirror"))
}

pub fn get(conn: &Db, id: i64) -> Result<Option<Mirror>, StoreError> {
    conn.query_row(
        &format!("SELECT {MIRROR_COLUMNS} FROM {MIRROR_TABLES} WHERE id = ?1"),
        [id],
        mirror_from_row,
    )
    .optional()
}

/// All mirrors, or a project's, optionally of one direction; oldest first.
pub fn list(
    conn: &Db,
    project_id: Option<&str>,
    direction: Option<Direction>,
) -> Result<Vec<Mirror>, StoreError> {
    conn.query_map(
        &format!(
            "SELECT {MIRROR_COLUMNS} FROM {MIRROR_TABLES} \
         WHERE (project_id = ?1 OR ?1 IS NULL) AND (direction = ?2 OR ?2 IS NULL) ORDER BY id"
        ),
        params![project_id, direction.map(Direction::as_str)],
        mirror_from_row,
    )
}

/// Which mirrors a list shows; `None` is any.
#[derive(Debug, Clone, Default)]
pub struct MirrorFilter {
    pub project_id: Option<String>,
    pub direction: Option<Direction>,
    pub enabled: Option<bool>,
    pub state: Option<State>,
    /// Only mirrors whose project id or URL holds this text.
    pub search: Option<String>,
}

/// The column a page of mirrors is sorted by; ties go by id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub enum MirrorOrder {
    #[default]
    #[serde(rename = "id")]
    Id,
    #[serde(rename = "project_id")]
    Project,
    /// Health state: disabled, failing, hard_failed, healthy.
    #[serde(rename = "state")]
    State,
    /// When its latest run ended; never-run mirrors first.
    #[serde(rename = "last_update_at")]
    LastUpdate,
}

/// Which way a list runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub enum Sort {
    #[default]
    #[serde(rename = "asc")]
    Ascending,
    #[serde(rename = "desc")]
    Descending,
}

impl MirrorOrder {
    /// The `ORDER BY` clause; built from these fixed words only, never from input.
    fn clause(self, sort: Sort) -> String {
        let way = match sort {
            Sort::Ascending => "ASC",
            Sort::Descending => "DESC",
        };
        match self {
            MirrorOrder::Id => format!("id {way}"),
            MirrorOrder::Project => format!("project_id {way}, id"),
            MirrorOrder::State => format!("{STATE_SQL} {way}, id"),
            // Mirrors that never ran sort as the oldest.
            MirrorOrder::LastUpdate => {
                format!("COALESCE(h.last_finished_at, '') {way}, id")
            }
        }
    }
}

/// A mirror's health state in SQL, as `health::of` decides it: disabled,
/// hard-failed, failing since its last success, or healthy.
const STATE_SQL: &str = "CASE WHEN mirrors.enabled = 0 THEN 'disabled' \
     WHEN EXISTS (SELECT 1 FROM schedules s WHERE s.mirror_id = mirrors.id AND s.hard_failed = 1) \
       THEN 'hard_failed' \
     WHEN COALESCE(h.consecutive_failures, 0) > 0 THEN 'failing' ELSE 'healthy' END";

/// The mirrors `filter` lets through, in `order`, one `page` of them, and
/// how many there are in all.
pub fn page(
    conn: &Db,
    filter: &MirrorFilter,
    (order, sort): (MirrorOrder, Sort),
    page: Page,
) -> Result<(Vec<Mirror>, u64), StoreError> {
    let from = format!(
        "FROM {MIRROR_TABLES} WHERE (project_id = ?1 OR ?1 IS NULL) \
         AND (direction = ?2 OR ?2 IS NULL) AND (enabled = ?3 OR ?3 IS NULL) \
         AND ({STATE_SQL} = ?4 OR ?4 IS NULL) \
         AND (instr(project_id, ?5) > 0 OR instr(url, ?5) > 0 OR ?5 IS NULL)"
    );
    let args = params![
        filter.project_id,
        filter.direction.map(Direction::as_str),
        filter.enabled,
        filter.state.map(State::as_str),
        filter.search,
    ];
    super::paged(
        conn,
        MIRROR_COLUMNS,
        &from,
        &order.clause(sort),
        args,
        page,
        mirror_from_row,
    )
}

/// Deletes the mirror with its runs, jobs, conflicts and push records.
pub fn delete(conn: &Db, id: i64) -> Result<(), StoreError> {
    match conn.execute("DELETE FROM mirrors WHERE id = ?1", [id])? {
        0 => Err(StoreError::NotFound("mirror")),
        _ => Ok(()),
    }
}

fn bad_column(column: &str, value: &str) -> StoreError {
    StoreError::Decode {
        index: 0,
        message: format!("unexpected {column} value {value:?}"),
    }
}

/// The fingerprint of the refs the mirror's remote advertised at its last
/// successful run.
pub fn remote_fingerprint(conn: &Db, mirror_id: i64) -> Result<Option<String>, StoreError> {
    conn.query_row(
        "SELECT fingerprint FROM remote_fingerprints WHERE mirror_id = ?1",
        [mirror_id],
        |row| row.get(0),
    )
    .optional()
}

pub fn set_remote_fingerprint(
    conn: &Db,
    mirror_id: i64,
    fingerprint: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO remote_fingerprints (mirror_id, fingerprint, seen_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT(mirror_id) DO UPDATE SET fingerprint = excluded.fingerprint, seen_at = excluded.seen_at",
        params![mirror_id, fingerprint, now(conn)?],
    )?;
    Ok(())
}
