//! The sync engine: pull mirrors import refs from upstream into the project's
//! bare repository, push mirrors export them to a destination. Only this module
//! writes refs of a project repository.
//!
//! A run lists the remote's refs, asks the branch filters which refs are in
//! scope, fetches only objects it lacks, relates each ref pair, asks the
//! conflict strategy about each diverged ref, and then applies all of the run's
//! ref updates as one transaction (`refs::apply`). Everything here is blocking
//! (libgit2 and plugin calls); callers run it on the blocking pool.

mod connectivity;
mod credentials;
mod git_cli;
mod hostkeys;
pub mod housekeeping;
pub mod index_pack;
pub mod lfs;
mod listing;
mod local_fetch;
pub mod local_transport;
pub mod no_lfs_pointers;
pub mod packs;
mod per_thread;
pub mod plain_stream;
pub mod progress;
pub mod proxy;
mod pull;
mod push;
pub mod refs;
pub mod remote;
mod resolve;
pub mod sockets;
/// The git CLI the engine's unit tests check against.
#[cfg(test)]
#[path = "../../../tests/fixtures/git.rs"]
mod testing;
pub mod throttle;
mod timeouts;
pub mod tls;
pub mod tls_stream;
mod transport;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::plugins::{self, Candidates, MirrorContext, PluginError, Registry};
use crate::secrets::MasterKey;
use crate::store::{Direction, Mirror, NewConflict, Project, Store, StoreError};

pub use crate::store::RefAction as Action;
pub use packs::PackIndexer;
use progress::Progress;
pub use remote::{RemoteUrl, UrlError};
use throttle::{Bucket, Throttle};
pub use timeouts::Timeouts;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("git: {0}")]
    Git(String),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Refs(#[from] refs::PackedRefsError),
    #[error(
        "the remote advertised {name} at {oid} but did not send that object; nothing was applied"
    )]
    NotSent { name: String, oid: git2::Oid },
    #[error(
        "the remote's repository uses the sha256 object format: sha256 object format is not supported"
    )]
    Sha256,
    #[error(
        "the remote sent an incomplete history ({0}): objects the fetched refs reach are missing; nothing was applied"
    )]
    Disconnected(String),
    #[error("aborted by the conflict strategy: {0}; no ref was changed")]
    Aborted(String),
    #[error("the destination refused {0}")]
    PushRejected(String),
    #[error("repository path: {0}")]
    Io(#[from] std::io::Error),
    #[error("credentials: {0}")]
    Credentials(String),
    #[error(transparent)]
    Lfs(#[from] lfs::LfsError),
}

impl From<git2::Error> for SyncError {
    fn from(e: git2::Error) -> Self {
        SyncError::Git(e.message().to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedRef {
    pub ref_name: String,
    pub action: Action,
    #[serde(serialize_with = "hex")]
    pub local_oid: Option<git2::Oid>,
    #[serde(serialize_with = "hex")]
    pub remote_oid: Option<git2::Oid>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "hex")]
    pub merge_base: Option<git2::Oid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ahead: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behind: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The LFS objects (and bytes) the run moved that the ref's new tip's
    /// files hold.
    #[serde(skip_serializing_if = "LfsCount::is_none")]
    pub lfs: LfsCount,
}

/// LFS objects and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LfsCount {
    pub objects: u64,
    pub bytes: u64,
}

impl LfsCount {
    fn is_none(&self) -> bool {
        self.objects == 0
    }
}

impl PlannedRef {
    /// `action` on `ref_name` between its two tips; no divergence figures yet.
    fn new(
        ref_name: &str,
        action: Action,
        local_oid: Option<git2::Oid>,
        remote_oid: Option<git2::Oid>,
    ) -> Self {
        Self {
            ref_name: ref_name.to_string(),
            action,
            local_oid,
            remote_oid,
            merge_base: None,
            ahead: None,
            behind: None,
            reason: None,
            lfs: LfsCount::default(),
        }
    }

    fn because(self, reason: &str) -> Self {
        Self {
            reason: Some(reason.to_string()),
            ..self
        }
    }
}

impl From<&PlannedRef> for crate::store::RunRef {
    fn from(p: &PlannedRef) -> Self {
        Self {
            ref_name: p.ref_name.clone(),
            action: p.action,
            local_oid: p.local_oid.map(|o| o.to_string()),
            remote_oid: p.remote_oid.map(|o| o.to_string()),
            reason: p.reason.clone(),
            lfs_objects: i64::try_from(p.lfs.objects).unwrap_or(i64::MAX),
            lfs_bytes: i64::try_from(p.lfs.bytes).unwrap_or(i64::MAX),
        }
    }
}

/// Object ids show as hex in JSON, as git prints them.
fn hex<S: serde::Serializer>(oid: &Option<git2::Oid>, s: S) -> Result<S::Ok, S::Error> {
    match oid {
        Some(oid) => s.collect_str(oid),
        None => s.serialize_none(),
    }
}

/// The result of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub plan: Vec<PlannedRef>,
    pub bytes_transferred: u64,
    #[serde(skip)]
    pub conflicts: Vec<NewConflict>,
    /// Set when a run ended without applying anything because of an abort decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
    /// Pull only: the fingerprint of the refs the remote advertised.
    #[serde(skip)]
    pub remote_fingerprint: Option<String>,
    /// The LFS objects the run moved.
    pub lfs: lfs::LfsTally,
}

impl Report {
    pub fn count(&self, action: Action) -> usize {
        self.plan.iter().filter(|p| p.action == action).count()
    }

    /// Whether the run moved any ref.
    pub fn changed(&self) -> bool {
        self.aborted.is_none()
            && self.plan.iter().any(|p| {
                matches!(
                    p.action,
                    Action::Create | Action::FastForward | Action::Overwrite | Action::Delete
                )
            })
    }
}

/// Everything a run needs besides the mirror itself.
#[derive(Debug, Clone, Copy)]
pub struct Engine<'a> {
    pub repos_dir: &'a Path,
    pub plugins: &'a Registry,
    pub store: &'a Store,
    /// Opens the mirror's sealed credential when the transport asks for one.
    pub master_key: &'a MasterKey,
    /// The service-wide transfer cap, shared by every run.
    pub shared_bandwidth: Option<&'a Arc<Mutex<Bucket>>>,
    /// Where the transfer callbacks report progress, for a run someone watches.
    pub progress: Option<&'a Progress>,
    /// Indexes fetched packs, refusing objects over `max_object_bytes`.
    pub pack_indexer: &'a PackIndexer,
    /// How long a remote may take; a run stops at its deadline.
    pub timeouts: &'a Timeouts,
    /// The service's HTTP proxy, unless a mirror names its own.
    pub proxy: &'a proxy::ProxySettings,
    /// Which remotes are allowed: also the LFS endpoints a repository names.
    pub remote_policy: remote::Policy,
    /// Whether this node still owns the project (its lease, under the
    /// fencing number the run started with): asked just before a pull
    /// writes its refs and before a push sends, so a node that lost the
    /// project while it ran changes nothing. `None`: no one else could own it.
    pub lease: Option<LeaseCheck<'a>>,
}

/// Asks whether this node still owns the run's project ([`Engine::lease`]).
#[derive(Clone, Copy)]
pub struct LeaseCheck<'a>(pub &'a dyn Fn() -> bool);

impl std::fmt::Debug for LeaseCheck<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseCheck")
    }
}

/// Default of `max_object_bytes`: ten times GitHub's hard limit on a file.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 1 << 30;

impl Engine<'_> {
    /// Runs `mirror` once: refs move, and the report says how.
    pub fn sync(&self, mirror: &Mirror, project: &Project) -> Result<Report, SyncError> {
        self.start(mirror, project, Mode::Apply)
    }

    /// What a run of `mirror` would do now, ref by ref, with the strategy's
    /// decisions; no ref changes (objects may be downloaded, which changes
    /// nothing visible).
    pub fn plan(&self, mirror: &Mirror, project: &Project) -> Result<Report, SyncError> {
        self.start(mirror, project, Mode::DryRun)
    }

    fn start(&self, mirror: &Mirror, project: &Project, mode: Mode) -> Result<Report, SyncError> {
        std::fs::create_dir_all(self.repos_dir)?;
        let opened = self.open(project)?;
        let run = Run::new(self, &opened, mirror, project, mode)?;
        match mirror.direction {
            Direction::Pull => run.pull(),
            Direction::Push => run.push(),
        }
    }
}

/// Whether a run applies its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Apply,
    DryRun,
}

impl Engine<'_> {
    /// The SSH host keys `mirror`'s remote offers, for an operator to confirm.
    pub fn detect_host_keys(
        &self,
        mirror: &Mirror,
        project: &Project,
    ) -> Result<Vec<crate::store::credentials::HostKey>, SyncError> {
        let opened = self.open(project)?;
        Run::new(self, &opened, mirror, project, Mode::DryRun)?.detect_host_keys()
    }
}

impl Engine<'_> {
    /// The fingerprint of the refs `mirror`'s remote advertises now: one listing,
    /// no fetch. Equal to the last run's fingerprint means nothing to do.
    pub fn remote_fingerprint(
        &self,
        mirror: &Mirror,
        project: &Project,
    ) -> Result<String, SyncError> {
        let opened = self.open(project)?;
        let run = Run::new(self, &opened, mirror, project, Mode::DryRun)?;
        let transfer = transport::Transfer::default();
        let mut remote = opened.repo.remote_anonymous(&mirror.url)?;
        let mut connection = remote
            .connect_auth(
                git2::Direction::Fetch,
                Some(run.callbacks(&transfer)),
                Some(run.route().options()),
            )
            .map_err(|e| run.git_error(e))?;
        Ok(fingerprint(&listing::list(connection.remote())?.refs))
    }
}

/// SHA-256 over the sorted `name oid` lines of a ref listing.
pub fn fingerprint(refs: &std::collections::BTreeMap<String, git2::Oid>) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (name, oid) in refs {
        hasher.update(name.as_bytes());
        hasher.update(b" ");
        hasher.update(oid.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

/// Where a project's bare repository lives. Project ids are validated at the API
/// (`segment/segment`, no `..`), so the join stays under `repos_dir`.
pub fn repo_path(repos_dir: &Path, project_id: &str) -> PathBuf {
    repos_dir.join(format!("{project_id}.git"))
}

pub fn open_project_repo(path: &Path) -> Result<git2::Repository, SyncError> {
    match git2::Repository::open_bare(path) {
        Ok(repo) => Ok(repo),
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            Ok(git2::Repository::init_bare(path)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// What runs cut off by a crash left in the project repositories.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Leftovers {
    /// Temporary files of pack indexers.
    pub partial_packs: usize,
    /// LFS objects half received.
    pub partial_lfs_objects: usize,
    /// `packed-refs.lock` files of ref updates.
    pub ref_locks: usize,
}

/// Removes what runs cut off by a crash left in the repositories under
/// `repos_dir` (`<owner>/<name>.git`). Only for start-up, before any run: a
/// live run's files look the same.
pub fn remove_leftovers(repos_dir: &Path) -> Leftovers {
    let mut found = Leftovers::default();
    for repo in entries(repos_dir).flat_map(|owner| entries(&owner.path())) {
        found.partial_packs += packs::remove_partial_packs(&repo.path());
        found.partial_lfs_objects += lfs::objects::Objects::remove_leftovers(&repo.path());
        found.ref_locks += usize::from(refs::remove_stale_lock(&repo.path()));
    }
    found
}

/// The entries of `dir`; none if it cannot be read.
fn entries(dir: &Path) -> impl Iterator<Item = std::fs::DirEntry> + use<> {
    std::fs::read_dir(dir).into_iter().flatten().flatten()
}

/// A project repository as the engine opens it: fetched packs go through the
/// engine's [`PackIndexer`], which reports what it found of the tips to `tips`.
struct Opened {
    repo: git2::Repository,
    tips: Arc<packs::Tips>,
}

impl Engine<'_> {
    /// Opens (or creates) `project`'s repository.
    fn open(&self, project: &Project) -> Result<Opened, SyncError> {
        let repo = open_project_repo(&repo_path(self.repos_dir, &project.project_id))?;
        let tips = packs::install(&repo, self.pack_indexer)?;
        Ok(Opened { repo, tips })
    }
}

/// The client certificate `mirror` presents, its key opened.
fn client_identity(
    master_key: &MasterKey,
    mirror: &Mirror,
) -> Result<Option<tls_stream::Identity>, SyncError> {
    let Some((certificate, key)) = client_certificate(master_key, mirror)? else {
        return Ok(None);
    };
    tls_stream::Identity::from_pem(certificate, &key)
        .map(Some)
        .map_err(|e| unusable_certificate(e.to_string()))
}

/// `mirror`'s client certificate (PEM) and its key, opened (PEM).
fn client_certificate<'m>(
    master_key: &MasterKey,
    mirror: &'m Mirror,
) -> Result<Option<(&'m str, Vec<u8>)>, SyncError> {
    let (Some(certificate), Some(sealed)) =
        (&mirror.tls_client_cert_pem, &mirror.tls_client_key_secret)
    else {
        return Ok(None);
    };
    let aad = crate::secrets::client_key_aad(certificate);
    let key = master_key
        .open_bytes(&aad, sealed)
        .map_err(|e| unusable_certificate(e.to_string()))?;
    Ok(Some((certificate, key)))
}

fn unusable_certificate(why: String) -> SyncError {
    SyncError::Git(format!(
        "the mirror's TLS client certificate cannot be used: {why}"
    ))
}

/// One run of one mirror.
struct Run<'a> {
    engine: &'a Engine<'a>,
    repo: &'a git2::Repository,
    /// The kinds of the tips this run's downloads brought.
    tips: &'a Arc<packs::Tips>,
    mirror: &'a Mirror,
    project: &'a Project,
    mode: Mode,
    /// Why a callback refused a connection, when libgit2 replaces the callback's
    /// message with a generic one (it does for host keys).
    refusal: std::cell::RefCell<Option<String>>,
    /// The TLS certificate (DER) the remote presented, and the host it was
    /// asked for: what explains libgit2's refusal of it.
    presented: std::cell::RefCell<Option<(Vec<u8>, String)>>,
    /// The caps on this run's transfers.
    throttle: Throttle,
    /// When the run has taken all the time it may (`Timeouts::run`).
    deadline: Instant,
    /// The mirror's TLS client certificate, presented by this thread's
    /// connections while the run lasts.
    _presenting: tls_stream::Presenting,
    /// This thread's connections, listed for a cancel to shut down.
    _watching: sockets::Watching,
}

impl<'a> Run<'a> {
    fn new(
        engine: &'a Engine<'a>,
        opened: &'a Opened,
        mirror: &'a Mirror,
        project: &'a Project,
        mode: Mode,
    ) -> Result<Self, SyncError> {
        let identity = client_identity(engine.master_key, mirror)?;
        Ok(Self {
            engine,
            repo: &opened.repo,
            tips: &opened.tips,
            mirror,
            project,
            mode,
            refusal: std::cell::RefCell::new(None),
            presented: std::cell::RefCell::new(None),
            throttle: Throttle::new(
                rate_for(engine.store, mirror.mirror_id),
                engine.shared_bandwidth.cloned(),
            ),
            deadline: Instant::now() + engine.timeouts.run,
            _presenting: tls_stream::present(identity),
            _watching: sockets::watch(engine.progress.map(Progress::sockets)),
        })
    }

    /// Whether the run may go on: not past its deadline, not cancelled. When
    /// it may not, it records why, for the error libgit2 will return once a
    /// callback says no.
    fn may_go_on(&self) -> bool {
        let why = if self.engine.progress.is_some_and(Progress::is_cancelled) {
            CANCELLED.to_string()
        } else if Instant::now() >= self.deadline {
            self.engine.timeouts.run_expired()
        } else {
            return true;
        };
        *self.refusal.borrow_mut() = Some(why);
        false
    }

    /// Whether this node still owns the project: the last check before a
    /// ref is written or sent (see [`Engine::lease`]).
    fn still_owner(&self) -> Result<(), SyncError> {
        match self.engine.lease {
            Some(LeaseCheck(holds)) if !holds() => Err(SyncError::Git(LEASE_LOST.to_string())),
            _ => Ok(()),
        }
    }

    /// The error of a run that may not go on ([`Run::may_go_on`]).
    fn stopped(&self) -> SyncError {
        SyncError::Git(
            self.refusal
                .borrow_mut()
                .take()
                .unwrap_or_else(|| CANCELLED.to_string()),
        )
    }
}

/// The error of a run an operator cancelled.
pub const CANCELLED: &str = "cancelled by an operator; no ref was changed";

/// Why a run of a node that lost its project's lease ends.
pub const LEASE_LOST: &str =
    "this node no longer holds the project's lease (another node took it over); no ref was changed";

/// A failing mirror with `throttle_on_failure` and no cap of its own moves at
/// most this fast, halved per consecutive failure (down to a sixteenth).
const FAILING_BASE_RATE: u64 = 8 << 20;

/// The mirror's own rate cap, reduced while it is failing if it asked for that.
fn rate_for(store: &Store, mirror_id: i64) -> Option<u64> {
    let limits = store
        .with(|c| crate::store::bandwidth::get(c, mirror_id))
        .ok()?;
    if !limits.throttle_on_failure {
        return limits.max_bytes_per_second;
    }
    let failures = store
        .with(|c| crate::store::schedules::get(c, mirror_id))
        .ok()
        .flatten()
        .map_or(0, |s| s.consecutive_failures);
    if failures == 0 {
        return limits.max_bytes_per_second;
    }
    let base = limits.max_bytes_per_second.unwrap_or(FAILING_BASE_RATE);
    Some(base >> failures.min(4))
}

impl Run<'_> {
    fn context(&self) -> MirrorContext {
        MirrorContext {
            mirror_id: self.mirror.mirror_id.to_string(),
            project_id: self.project.project_id.clone(),
            direction: match self.mirror.direction {
                Direction::Pull => plugins::Direction::Pull,
                Direction::Push => plugins::Direction::Push,
            },
            remote_url: remote::redact(&self.mirror.url),
        }
    }

    /// The names among `candidates` that every configured filter keeps: the
    /// protected-only filter, the regex, then the mirror's own plugin. With no
    /// filter configured, branches and tags are in scope, decided here: no
    /// plugin runs for a mirror that configures none (the default's instance
    /// cost every pull, and the service that ran one kept wasmtime resident).
    fn scope(&self, candidates: &[(String, git2::Oid)]) -> Result<HashSet<String>, SyncError> {
        let filters = self.filters();
        if filters.is_empty() {
            return Ok(candidates
                .iter()
                .map(|(name, _)| name)
                .filter(|name| name.starts_with("refs/heads/") || name.starts_with("refs/tags/"))
                .cloned()
                .collect());
        }
        let ctx = self.context();
        let mut refs = Candidates::new();
        for (name, oid) in candidates {
            let protected = is_protected(name, &self.project.protected_branches);
            refs.push(name, &oid.to_string(), protected);
        }
        for (plugin, config) in filters {
            let kept: HashSet<String> = self
                .engine
                .plugins
                .filter(plugin, &ctx, &config, &refs)?
                .value
                .into_iter()
                .collect();
            refs = refs.retain(&kept);
        }
        Ok(refs.names().map(str::to_string).collect())
    }

    fn filters(&self) -> Vec<(&str, String)> {
        let m = self.mirror;
        let mut filters = Vec::new();
        if m.only_protected_branches {
            filters.push(("protected-only", String::new()));
        }
        if let Some(regex) = &m.mirror_branch_regex {
            filters.push((
                "regex-filter",
                serde_json::json!({ "include": regex }).to_string(),
            ));
        }
        if let Some(plugin) = &m.branch_filter {
            filters.push((plugin.as_str(), m.branch_filter_config.clone()));
        }
        filters
    }
}

/// Whether a branch matches one of the project's protected patterns (GitLab
/// wildcards: `*` matches any run of characters).
pub fn is_protected(ref_name: &str, patterns: &[String]) -> bool {
    let Some(branch) = ref_name.strip_prefix("refs/heads/") else {
        return false;
    };
    patterns.iter().any(|p| wildcard_match(p, branch))
}

fn wildcard_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let mut middle: Vec<&str> = parts.collect();
    let Some(last) = middle.pop() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_patterns_follow_gitlab_wildcards() {
        let patterns = vec!["main".to_string(), "release/*".to_string()];
        assert!(is_protected("refs/heads/main", &patterns));
        assert!(is_protected("refs/heads/release/1.0", &patterns));
        assert!(!is_protected("refs/heads/mainline", &patterns));
        assert!(!is_protected("refs/tags/main", &patterns));
        assert!(!is_protected("refs/heads/main", &[]));
    }
}
