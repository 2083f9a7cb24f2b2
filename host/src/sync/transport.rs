//! libgit2 transfer options for one run: credentials from the auth provider,
//! byte counts from the progress callbacks, no automatic tag following, no
//! FETCH_HEAD; and the download of a run's tips.

use std::cell::Cell;
use std::collections::BTreeMap;

use git2::{AutotagOption, FetchOptions, Oid, PushOptions, RemoteCallbacks};

use super::credentials::Attempts;
use super::{Run, SyncError};

/// State shared by the callbacks of one transfer.
#[derive(Debug, Default)]
pub struct Transfer {
    bytes: Cell<u64>,
    attempts: Attempts,
}

impl Transfer {
    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }

    /// Raises the count to `bytes` if it is below it.
    pub fn at_least(&self, bytes: u64) {
        self.bytes.set(self.bytes.get().max(bytes));
    }
}

impl<'r> Run<'r> {
    pub(super) fn callbacks<'a>(&'a self, transfer: &'a Transfer) -> RemoteCallbacks<'a> {
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(move |_url, username, allowed| {
            self.go_on()?;
            self.credential(&transfer.attempts, username, allowed)
        });
        callbacks.certificate_check(|cert, host| self.check_certificate(cert, host));
        // Returning false from a progress callback stops the transfer: that is
        // how a run past its deadline ends while the remote still sends.
        callbacks.sideband_progress(|_| self.may_go_on());
        callbacks.transfer_progress(|progress| {
            self.moved(
                transfer,
                progress.received_objects() as u64,
                progress.total_objects() as u64,
                progress.received_bytes() as u64,
            );
            self.may_go_on()
        });
        callbacks.push_transfer_progress(|current, total, bytes| {
            self.moved(transfer, current as u64, total as u64, bytes as u64);
        });
        callbacks.push_negotiation(|_| self.go_on());
        callbacks
    }

    /// A transfer's running counts: the run's bytes and the live progress
    /// follow them, and the caps make it wait as long as they say.
    pub(super) fn moved(&self, transfer: &Transfer, objects: u64, total: u64, bytes: u64) {
        transfer.bytes.set(bytes);
        if let Some(live) = self.engine.progress {
            live.update(objects, total, bytes);
        }
        self.throttle.progress(bytes, || self.may_go_on());
    }

    /// How this run's transfers reach the remote.
    pub(super) fn route(&self) -> super::proxy::Route {
        let own = self
            .mirror
            .proxy_url
            .as_deref()
            .map(|url| self.with_login(url));
        super::proxy::Route::to(self.engine.proxy, own.as_deref(), &self.mirror.remote_host)
    }

    /// The mirror's proxy URL with its sealed `user:password` put back, if it
    /// has one that opens (else without: the proxy's 407 then says so).
    fn with_login(&self, url: &str) -> String {
        let login = self.mirror.proxy_secret.as_deref().and_then(|sealed| {
            let aad = crate::secrets::proxy_aad(url);
            self.engine.master_key.open_bytes(&aad, sealed).ok()
        });
        match (
            login.and_then(|l| String::from_utf8(l).ok()),
            url.split_once("://"),
        ) {
            (Some(login), Some((scheme, rest))) => format!("{scheme}://{login}@{rest}"),
            _ => url.to_string(),
        }
    }

    /// [`Run::may_go_on`] for the callbacks that answer with an error. The
    /// run's error is the reason `may_go_on` recorded, not this message.
    fn go_on(&self) -> Result<(), git2::Error> {
        match self.may_go_on() {
            true => Ok(()),
            false => Err(git2::Error::from_str("the run was stopped")),
        }
    }

    pub(super) fn fetch_options<'a>(&'a self, transfer: &'a Transfer) -> FetchOptions<'a> {
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(self.callbacks(transfer))
            .proxy_options(self.route().options())
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        options
    }

    /// Downloads the objects of `tips` (ref name -> the object it is
    /// advertised at) and checks, by the indexer's report, that the remote
    /// sent every one of them.
    pub(super) fn download_tips(
        &self,
        connection: &mut git2::RemoteConnection<'_, '_, '_>,
        tips: &BTreeMap<&str, Oid>,
        transfer: &Transfer,
    ) -> Result<(), SyncError> {
        self.tips.expect(tips.values().copied());
        let names: Vec<&str> = tips.keys().copied().collect();
        let mut options = self.fetch_options(transfer);
        connection
            .remote()
            .download(&names, Some(&mut options))
            .map_err(|e| self.git_error(e))?;
        // The progress callbacks may not see the last bytes of a small pack:
        // take the remote's own count.
        transfer.at_least(connection.remote().stats().received_bytes() as u64);
        self.check_sent(tips)
    }

    /// Checks, by the indexer's report, that a download brought every one
    /// of `tips`.
    pub(super) fn check_sent(&self, tips: &BTreeMap<&str, Oid>) -> Result<(), SyncError> {
        match tips.iter().find(|(_, oid)| self.tips.kind(**oid).is_none()) {
            Some((name, oid)) => Err(SyncError::NotSent {
                name: name.to_string(),
                oid: *oid,
            }),
            None => Ok(()),
        }
    }

    pub(super) fn push_options<'a>(
        &'a self,
        transfer: &'a Transfer,
        mut on_ref: impl FnMut(&str, Option<&str>) + 'a,
    ) -> PushOptions<'a> {
        let mut callbacks = self.callbacks(transfer);
        callbacks.push_update_reference(move |name, status| {
            on_ref(name, status);
            Ok(())
        });
        let mut options = PushOptions::new();
        options
            .remote_callbacks(callbacks)
            .proxy_options(self.route().options());
        options
    }
}
