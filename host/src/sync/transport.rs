//! libgit2 transfer options: callbacks for progress and byte counts, no
//! automatic tag following, no FETCH_HEAD. Credentials plug in here.

use std::cell::Cell;

use git2::{AutotagOption, FetchOptions, PushOptions, RemoteCallbacks};

/// Bytes moved by one transfer, filled in by the progress callbacks.
#[derive(Debug, Default)]
pub struct Counter {
    bytes: Cell<u64>,
}

impl Counter {
    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }
}

pub fn callbacks(counter: &Counter) -> RemoteCallbacks<'_> {
    let mut callbacks = RemoteCallbacks::new();
    callbacks.transfer_progress(|progress| {
        counter.bytes.set(progress.received_bytes() as u64);
        true
    });
    callbacks.push_transfer_progress(|_current, _total, bytes| {
        counter.bytes.set(bytes as u64);
    });
    callbacks
}

pub fn fetch_options(counter: &Counter) -> FetchOptions<'_> {
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks(counter))
        .download_tags(AutotagOption::None)
        .update_fetchhead(false);
    options
}

pub fn push_options<'a>(
    counter: &'a Counter,
    mut on_ref: impl FnMut(&str, Option<&str>) + 'a,
) -> PushOptions<'a> {
    let mut callbacks = callbacks(counter);
    callbacks.push_update_reference(move |name, status| {
        on_ref(name, status);
        Ok(())
    });
    let mut options = PushOptions::new();
    options.remote_callbacks(callbacks);
    options
}
