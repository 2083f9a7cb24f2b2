//! Git LFS objects travel with the mirror. After a pull's fetch and before
//! its refs land, the pointers the new commits bring are read (`scan`), the
//! objects the project lacks are fetched from the upstream's LFS store
//! (`batch`, or a local remote's `lfs/objects`) and kept, checked, in the
//! project's (`objects`). Before a push mirror pushes refs, the objects
//! those refs need are uploaded to the destination's own LFS server. A
//! sync that brings no commit does no LFS work.

mod batch;
mod endpoint;
pub mod objects;
mod per_ref;
mod pointer;
mod scan;
mod ssh;

use std::cell::Cell;
use std::collections::HashMap;

use git2::Oid;
use serde::Serialize;

use self::batch::{Answer, BatchError, Client, Operation, Pace};
use self::endpoint::Endpoint;
pub use self::endpoint::EndpointError;
use self::objects::{Complete, Objects, Verified};
pub use self::pointer::Pointer;
pub use self::scan::ScanError;
use self::scan::{Found, Known};
use super::{Run, SyncError};
use crate::store::LfsMissing;

/// What a run moved of LFS, for its record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LfsTally {
    /// Objects downloaded (pull) or uploaded (push) by the run.
    pub objects: u64,
    pub bytes: u64,
    /// Objects that could not be moved and were left out, as the mirror's
    /// `lfs_missing: skip` allows: `<oid> (<path>): <why>`.
    pub skipped: Vec<String>,
    /// The pointer blobs of the objects moved, with the objects' sizes: what
    /// [`Run::count_lfs_per_ref`] looks for in each ref's files.
    #[serde(skip)]
    pub moved: HashMap<Oid, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum LfsError {
    #[error("LFS: {0}")]
    Endpoint(#[from] EndpointError),
    #[error("LFS: {0}")]
    Scan(#[from] ScanError),
    #[error("LFS: {0}")]
    Server(String),
    #[error("LFS object {oid} ({path}, {size} bytes): {why}; no ref was changed")]
    Object {
        oid: String,
        path: String,
        size: u64,
        why: String,
    },
    #[error("LFS: {0}")]
    Io(#[from] std::io::Error),
}

/// At most this many skipped objects are named in a run's record.
const SKIPPED_NAMED: usize = 50;

impl Run<'_> {
    /// Fetches the LFS objects that the commits `tips` bring (those no ref
    /// reaches yet) and the project lacks. `config_at` is the commit whose
    /// `.lfsconfig` may name the upstream's LFS endpoint. Once, the whole
    /// history: where refs landed while LFS was off (or before mirrorhost
    /// moved LFS objects), the first run with it on looks at everything
    /// the refs reach, so an upgraded mirror becomes a whole copy.
    pub(super) fn fetch_lfs(
        &self,
        tips: &[Oid],
        config_at: Option<Oid>,
    ) -> Result<LfsTally, SyncError> {
        let mut tally = LfsTally::default();
        let kept = Objects::of(self.repo.path());
        if !self.mirror.lfs {
            if !tips.is_empty() {
                kept.forget_complete(Complete::Pulled)?;
            }
            return Ok(tally);
        }
        let complete = kept.is_complete(Complete::Pulled);
        let mut tips = tips.to_vec();
        if !complete {
            tips.extend(super::refs::local_refs(self.repo)?.into_values());
        }
        let known = match complete {
            true => Known::AllRefs,
            false => Known::Commits(&[]),
        };
        let wanted: Vec<Found> = self
            .pointers(&tips, known)?
            .into_iter()
            .filter(|found| !kept.has(&found.pointer))
            .collect();
        if !wanted.is_empty() {
            self.fetch_wanted(&kept, &wanted, config_at, &mut tally)?;
        }
        if !complete {
            kept.mark_complete(Complete::Pulled)?;
        }
        Ok(tally)
    }

    /// Fetches `wanted` from the upstream's LFS server (or store).
    fn fetch_wanted(
        &self,
        kept: &Objects,
        wanted: &[Found],
        config_at: Option<Oid>,
        tally: &mut LfsTally,
    ) -> Result<(), SyncError> {
        let configured = match config_at {
            Some(commit) => {
                Endpoint::configured(self.repo.path(), commit, self.engine.remote_policy)
                    .map_err(LfsError::from)?
            }
            None => None,
        };
        let (endpoint, headers) = match configured {
            Some(endpoint) => (endpoint, HashMap::new()),
            None => self.remote_server(Operation::Download)?,
        };
        self.transfer(Way::Pull, (&endpoint, headers), kept, wanted, tally)
    }

    /// Uploads the LFS objects that `tips` reach and the destination's
    /// commits `theirs` do not, to the destination's own LFS server (never
    /// an `lfs.url` of the repository: the destination's credentials stay
    /// with the destination). Once, the whole history the destination holds
    /// too: where this mirror pushed while LFS was off (or before mirrorhost
    /// moved LFS objects), the server's batch answers say what it lacks.
    pub(super) fn push_lfs(&self, tips: &[Oid], theirs: &[Oid]) -> Result<LfsTally, SyncError> {
        let mut tally = LfsTally::default();
        let kept = Objects::of(self.repo.path());
        let marker = Complete::PushedBy(self.mirror.mirror_id);
        if !self.mirror.lfs {
            if !tips.is_empty() {
                kept.forget_complete(marker)?;
            }
            return Ok(tally);
        }
        let complete = kept.is_complete(marker);
        let mut tips = tips.to_vec();
        let known = match complete {
            true => Known::Commits(theirs),
            false => {
                tips.extend_from_slice(theirs);
                Known::Commits(&[])
            }
        };
        let found = self.pointers(&tips, known)?;
        if !found.is_empty() {
            let (endpoint, headers) = self.remote_server(Operation::Upload)?;
            self.transfer(Way::Push, (&endpoint, headers), &kept, &found, &mut tally)?;
        }
        if !complete {
            kept.mark_complete(marker)?;
        }
        Ok(tally)
    }

    /// The pointers `tips` reach that `known` does not; none, without a
    /// look, where no object of the repository may be one.
    fn pointers(&self, tips: &[Oid], known: Known<'_>) -> Result<Vec<Found>, LfsError> {
        if super::no_lfs_pointers::holds_none(self.repo.path()) {
            return Ok(Vec::new());
        }
        Ok(scan::pointers(self.repo.path(), tips, known)?)
    }

    /// Moves `objects` between the mirror's store (`kept`) and the remote's
    /// (`server`, with the headers its batch requests carry), the `way` the
    /// run goes.
    fn transfer(
        &self,
        way: Way,
        server: (&Endpoint, HashMap<String, String>),
        kept: &Objects,
        objects: &[Found],
        tally: &mut LfsTally,
    ) -> Result<(), SyncError> {
        let pacer = Pacer::new(self, objects.len());
        let (endpoint, headers) = server;
        match (endpoint, way) {
            (Endpoint::Local(dir), Way::Pull) => {
                let theirs = Objects::in_dir(dir.clone());
                self.copy_all(way, &theirs, kept, objects, &pacer, tally)
            }
            (Endpoint::Local(dir), Way::Push) => {
                let theirs = Objects::in_dir(dir.clone());
                self.copy_all(way, kept, &theirs, objects, &pacer, tally)
            }
            (Endpoint::Http(url), Way::Pull) => {
                let client = self.lfs_client(endpoint, url, headers)?;
                self.download_all(&client, kept, objects, &pacer, tally)
            }
            (Endpoint::Http(url), Way::Push) => {
                let client = self.lfs_client(endpoint, url, headers)?;
                self.upload_all(&client, kept, objects, &pacer, tally)
            }
        }
    }

    /// The server's answer for each object of `group` (at most
    /// [`batch::BATCH_SIZE`]), in order.
    fn ask(
        &self,
        client: &Client,
        operation: Operation,
        group: &[Found],
        pacer: &Pacer<'_, '_>,
    ) -> Result<Vec<Answer>, SyncError> {
        let pointers: Vec<Pointer> = group.iter().map(|f| f.pointer).collect();
        client
            .batch(pacer, operation, &pointers, None)
            .map_err(|e| self.lfs_failed(e))
    }

    /// Uploads what the destination's server says it lacks, a batch at a time.
    fn upload_all(
        &self,
        client: &Client,
        kept: &Objects,
        found: &[Found],
        pacer: &Pacer<'_, '_>,
        tally: &mut LfsTally,
    ) -> Result<(), SyncError> {
        for group in found.chunks(batch::BATCH_SIZE) {
            let answers = self.ask(client, Operation::Upload, group, pacer)?;
            for (found, answer) in group.iter().zip(answers) {
                let result = match answer {
                    Answer::Nothing => Ok(false),
                    Answer::Refused(code, message) => Err(refused(code, &message)),
                    Answer::Act(actions) => self.upload_one(client, kept, found, &actions, pacer),
                };
                self.count_one(found, result, pacer, tally)?;
            }
        }
        Ok(())
    }

    fn upload_one(
        &self,
        client: &Client,
        kept: &Objects,
        found: &Found,
        actions: &HashMap<String, batch::Action>,
        pacer: &Pacer<'_, '_>,
    ) -> Result<bool, String> {
        let Some(upload) = actions.get("upload") else {
            return Ok(false);
        };
        if !kept.has(&found.pointer) {
            return Err(
                "the mirror does not hold it (its pull skipped it, or it predates LFS mirroring)"
                    .into(),
            );
        }
        let file = kept.open(&found.pointer).map_err(|e| e.to_string())?;
        client.upload(pacer, upload, file, found.pointer.size)?;
        if let Some(verify) = actions.get("verify") {
            client.verify(pacer, verify, &found.pointer)?;
        }
        Ok(true)
    }

    /// Downloads `wanted` through the batch API, a batch at a time: its
    /// small objects [`batch::CONCURRENT`] at once, then its large ones one
    /// at a time.
    fn download_all(
        &self,
        client: &Client,
        kept: &Objects,
        wanted: &[Found],
        pacer: &Pacer<'_, '_>,
        tally: &mut LfsTally,
    ) -> Result<(), SyncError> {
        for group in wanted.chunks(batch::BATCH_SIZE) {
            let answers = self.ask(client, Operation::Download, group, pacer)?;
            let mut fetches = Vec::new();
            for (index, (found, answer)) in group.iter().zip(answers).enumerate() {
                let fetch = self
                    .download_action(client, found, answer, pacer)
                    .and_then(|action| {
                        let into = kept.receive(found.pointer).map_err(|e| e.to_string())?;
                        Ok(batch::Fetch {
                            index,
                            action,
                            into,
                        })
                    });
                match fetch {
                    Ok(fetch) => fetches.push(fetch),
                    Err(why) => self.count_one(found, Err(why), pacer, tally)?,
                }
            }
            let (large, small): (Vec<_>, Vec<_>) = fetches
                .into_iter()
                .partition(|f| group[f.index].pointer.size >= batch::LARGE_OBJECT_BYTES);
            let mut fetched = client
                .download_many(pacer, small, batch::CONCURRENT)
                .map_err(|e| self.lfs_failed(e))?;
            fetched.extend(
                client
                    .download_many(pacer, large, 1)
                    .map_err(|e| self.lfs_failed(e))?,
            );
            let mut checked = Vec::new();
            for (fetch, done) in fetched {
                match done.and_then(|()| fetch.into.verify().map_err(|e| e.to_string())) {
                    Ok(verified) => checked.push((fetch.index, verified)),
                    Err(why) => self.count_one(&group[fetch.index], Err(why), pacer, tally)?,
                }
            }
            self.land_all(kept, group, checked, pacer, tally)?;
        }
        Ok(())
    }

    /// Lands the checked objects of `group` (by index) in `into`, together,
    /// and counts each.
    fn land_all(
        &self,
        into: &Objects,
        group: &[Found],
        checked: Vec<(usize, Verified)>,
        pacer: &Pacer<'_, '_>,
        tally: &mut LfsTally,
    ) -> Result<(), SyncError> {
        let (indices, verified): (Vec<usize>, Vec<Verified>) = checked.into_iter().unzip();
        for (index, landed) in indices.into_iter().zip(into.land(verified)) {
            let landed = landed.map(|()| true).map_err(|e| e.to_string());
            self.count_one(&group[index], landed, pacer, tally)?;
        }
        Ok(())
    }

    /// Where to download one object from, as the batch answered; an action
    /// past its expiry is asked for again first, once.
    fn download_action(
        &self,
        client: &Client,
        found: &Found,
        answer: Answer,
        pacer: &Pacer<'_, '_>,
    ) -> Result<batch::Action, String> {
        let offered = |answer: Answer| match answer {
            Answer::Act(mut actions) => actions
                .remove("download")
                .ok_or_else(|| "the server offered no download for it".to_string()),
            Answer::Nothing => Err("the server offered no download for it".into()),
            Answer::Refused(code, message) => Err(refused(code, &message)),
        };
        let action = offered(answer)?;
        if !action.expired() {
            return Ok(action);
        }
        let again = client
            .batch(pacer, Operation::Download, &[found.pointer], None)
            .map_err(|e| e.to_string())?;
        let renewed = match again.into_iter().next() {
            Some(answer) => offered(answer)?,
            None => return Err("the server's batch answer left it out".into()),
        };
        match renewed.expired() {
            false => Ok(renewed),
            true => Err("its download href had expired, and so had the one asked for again".into()),
        }
    }

    /// Copies the objects of `wanted` that `to` lacks from `from`: a local
    /// remote's LFS directory to the mirror's (pull), or the other way (push).
    fn copy_all(
        &self,
        way: Way,
        from: &Objects,
        to: &Objects,
        wanted: &[Found],
        pacer: &Pacer<'_, '_>,
        tally: &mut LfsTally,
    ) -> Result<(), SyncError> {
        for group in wanted.chunks(batch::BATCH_SIZE) {
            let mut checked = Vec::new();
            for (index, found) in group.iter().enumerate() {
                if to.has(&found.pointer) {
                    continue;
                }
                if !self.may_go_on() {
                    return Err(self.stopped());
                }
                match self.copy_one(way, from, to, found, pacer) {
                    Ok(verified) => checked.push((index, verified)),
                    Err(why) => self.count_one(found, Err(why), pacer, tally)?,
                }
            }
            self.land_all(to, group, checked, pacer, tally)?;
        }
        Ok(())
    }

    fn copy_one(
        &self,
        way: Way,
        from: &Objects,
        to: &Objects,
        found: &Found,
        pacer: &Pacer<'_, '_>,
    ) -> Result<Verified, String> {
        use std::io::Read;
        let mut source = from.open(&found.pointer).map_err(|e| match way {
            Way::Pull => format!("the remote's LFS store has no such object ({e})"),
            Way::Push => format!("the mirror does not hold it ({e})"),
        })?;
        let mut incoming = to.receive(found.pointer).map_err(|e| e.to_string())?;
        let mut buffer = vec![0; 256 << 10];
        loop {
            let n = source.read(&mut buffer).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            incoming.write(&buffer[..n]).map_err(|e| e.to_string())?;
            pacer.moved(n as u64);
            if !self.may_go_on() {
                return Err(batch::STOPPED.into());
            }
        }
        incoming.verify().map_err(|e| e.to_string())
    }

    /// Counts an object done: moved (`Ok(true)`), or found on the other
    /// side already (`Ok(false)`), or not moved and skipped (`Err`, unless
    /// [`Run::object_failed`] fails the run).
    fn count_one(
        &self,
        found: &Found,
        moved: Result<bool, String>,
        pacer: &Pacer<'_, '_>,
        tally: &mut LfsTally,
    ) -> Result<(), SyncError> {
        match moved {
            Ok(true) => {
                tally.objects += 1;
                tally.bytes += found.pointer.size;
                tally.moved.insert(found.blob, found.pointer.size);
            }
            Ok(false) => {}
            Err(why) => self.object_failed(found, why, tally)?,
        }
        pacer.one_done();
        Ok(())
    }

    /// An object that could not be moved: the run fails naming it, or (with
    /// `lfs_missing: skip`) it is recorded and left out. A stopped run stops.
    fn object_failed(
        &self,
        found: &Found,
        why: String,
        tally: &mut LfsTally,
    ) -> Result<(), SyncError> {
        if !self.may_go_on() {
            return Err(self.stopped());
        }
        let oid = found.pointer.oid.to_string();
        if self.mirror.lfs_missing == LfsMissing::Fail {
            return Err(LfsError::Object {
                oid,
                path: found.path.clone(),
                size: found.pointer.size,
                why,
            }
            .into());
        }
        tracing::warn!(lfs_oid = %oid, path = %found.path, reason = %why, "LFS object skipped");
        if tally.skipped.len() < SKIPPED_NAMED {
            tally.skipped.push(format!("{oid} ({}): {why}", found.path));
        }
        Ok(())
    }

    /// A batch request that failed: the run's own reason if it was stopped.
    fn lfs_failed(&self, e: BatchError) -> SyncError {
        match e {
            BatchError::Stopped => self.stopped(),
            other => LfsError::Server(other.to_string()).into(),
        }
    }

    /// The LFS server of the mirror's own remote and the headers its batch
    /// requests carry: what an SSH remote's `git-lfs-authenticate` answers
    /// (its `href` checked by the remote policy), else the endpoint derived
    /// from the URL, as git-lfs falls back to it.
    fn remote_server(
        &self,
        operation: Operation,
    ) -> Result<(Endpoint, HashMap<String, String>), SyncError> {
        let derived = Endpoint::of_remote(&self.mirror.url).map_err(LfsError::from)?;
        match self.lfs_authenticate(operation) {
            Ok(None) => Ok((derived, HashMap::new())),
            Ok(Some(answer)) => {
                let endpoint = match answer.href {
                    Some(href) => {
                        Endpoint::given(&href, self.engine.remote_policy).map_err(LfsError::from)?
                    }
                    None => derived,
                };
                Ok((endpoint, answer.header))
            }
            Err(_) if !self.may_go_on() => Err(self.stopped()),
            Err(why) => {
                tracing::warn!(reason = %why, "git-lfs-authenticate failed; using the derived LFS endpoint");
                Ok((derived, HashMap::new()))
            }
        }
    }

    /// A batch client for `url`, reached as the run reaches its remote:
    /// the same proxy, authorities, client certificate and limits; the
    /// mirror's credentials only if the endpoint is on the remote's origin;
    /// `headers` on every batch request.
    fn lfs_client(
        &self,
        endpoint: &Endpoint,
        url: &url::Url,
        headers: HashMap<String, String>,
    ) -> Result<Client, SyncError> {
        let login = match endpoint.shares_origin_with(&self.mirror.url) {
            true => self.http_login()?,
            false => None,
        };
        let identity = self.client_identity_pem()?;
        let route = self.route();
        let (proxy, from_environment) = match &route {
            super::proxy::Route::Auto => (None, true),
            super::proxy::Route::Direct => (None, false),
            super::proxy::Route::Via(url) => (Some(url.as_str()), false),
        };
        let settings = batch::Settings {
            timeouts: *self.engine.timeouts,
            proxy,
            proxy_from_environment: from_environment,
            ca_pem: self.mirror.tls_ca_pem.as_deref(),
            identity: identity.as_ref().map(|(c, k)| (c.as_bytes(), k.as_slice())),
            login,
            headers,
        };
        Client::new(url.clone(), settings).map_err(|e| LfsError::Server(e.to_string()).into())
    }

    /// The mirror's client certificate and its key (PKCS#8 PEM, as
    /// reqwest's TLS takes it), opened.
    fn client_identity_pem(&self) -> Result<Option<(String, Vec<u8>)>, SyncError> {
        let Some((certificate, key)) =
            super::client_certificate(self.engine.master_key, self.mirror)?
        else {
            return Ok(None);
        };
        let pkcs8 = openssl::pkey::PKey::private_key_from_pem(&key)
            .and_then(|k| k.private_key_to_pem_pkcs8())
            .map_err(|e| super::unusable_certificate(e.to_string()))?;
        Ok(Some((certificate.to_string(), pkcs8)))
    }
}

/// Which way a run moves objects: to the mirror (pull) or from it (push).
#[derive(Debug, Clone, Copy)]
enum Way {
    Pull,
    Push,
}

/// The words for an object the batch answer refused.
fn refused(code: i64, message: &str) -> String {
    let message: String = message.chars().take(200).collect();
    match code {
        404 => format!("the LFS server does not have it (404: {message})"),
        0 => message,
        code => format!("the LFS server refused it ({code}: {message})"),
    }
}

/// The run's pace for its LFS transfers: the throttle, the progress
/// figures (objects of this phase, bytes on top of the pack's), the run's
/// cancel and deadline.
struct Pacer<'r, 'a> {
    run: &'r Run<'a>,
    total: u64,
    done: Cell<u64>,
    moved: Cell<u64>,
}

impl<'r, 'a> Pacer<'r, 'a> {
    fn new(run: &'r Run<'a>, total: usize) -> Self {
        Self {
            run,
            total: total as u64,
            done: Cell::new(0),
            moved: Cell::new(0),
        }
    }

    fn one_done(&self) {
        self.done.set(self.done.get() + 1);
        self.report();
    }

    fn report(&self) {
        if let Some(live) = self.run.engine.progress {
            live.update(self.done.get(), self.total, self.moved.get());
        }
    }
}

impl Pace for Pacer<'_, '_> {
    fn may_go_on(&self) -> bool {
        self.run.may_go_on()
    }

    fn moved(&self, bytes: u64) {
        let total = self.moved.get() + bytes;
        self.moved.set(total);
        self.report();
        self.run.throttle.progress(total, || self.run.may_go_on());
    }
}
