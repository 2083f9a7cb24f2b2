//! libgit2 transfer options for one run: credentials from the auth provider,
//! byte counts from the progress callbacks, no automatic tag following, no
//! FETCH_HEAD.

use std::cell::Cell;

use git2::{AutotagOption, FetchOptions, PushOptions, RemoteCallbacks};

use super::Run;
use super::credentials::Attempts;

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
            self.credential(&transfer.attempts, username, allowed)
        });
        callbacks.certificate_check(|cert, host| self.check_certificate(cert, host));
        callbacks.transfer_progress(|progress| {
            let bytes = progress.received_bytes() as u64;
            transfer.bytes.set(bytes);
            if let Some(live) = self.engine.progress {
                live.update(
                    progress.received_objects() as u64,
                    progress.total_objects() as u64,
                    bytes,
                );
            }
            self.throttle.progress(bytes);
            true
        });
        callbacks.push_transfer_progress(|current, total, bytes| {
            transfer.bytes.set(bytes as u64);
            if let Some(live) = self.engine.progress {
                live.update(current as u64, total as u64, bytes as u64);
            }
            self.throttle.progress(bytes as u64);
        });
        callbacks
    }

    pub(super) fn fetch_options<'a>(&'a self, transfer: &'a Transfer) -> FetchOptions<'a> {
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(self.callbacks(transfer))
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        options
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
        options.remote_callbacks(callbacks);
        options
    }
}
