//! How long a remote may take. Three limits, each named in the error of a run
//! it ends: connecting (`connect`), silence in the middle of a transfer
//! (`stall`: no byte for that long) and the whole run (`run`).
//!
//! libgit2 keeps the first two as process-wide settings of its socket streams
//! (TLS runs over them, and its SSH transport hands them to libssh2); they are
//! installed once at start. The run's deadline is the engine's: the transfer
//! callbacks stop the transfer once it has passed.

// git2's setters of libgit2's process-wide options are `unsafe fn`.
#![allow(unsafe_code)]

use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub stall: Duration,
    pub run: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(30),
            stall: Duration::from_secs(120),
            run: Duration::from_secs(3600),
        }
    }
}

/// Serialises writers of libgit2's globals (tests build several services in
/// one process).
static INSTALLING: Mutex<()> = Mutex::new(());

impl Timeouts {
    /// Hands the connect and stall limits to libgit2, for every connection
    /// from now on.
    pub fn install(&self) -> Result<(), git2::Error> {
        let _guard = INSTALLING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: the options are plain ints in libgit2 that each new socket
        // stream reads when it is created; git2 marks the setters unsafe
        // because libgit2 does not synchronise them. Writers are serialised
        // above, and the service installs them at start, before its first
        // transfer.
        unsafe {
            git2::opts::set_server_connect_timeout_in_milliseconds(ms(self.connect))?;
            git2::opts::set_server_timeout_in_milliseconds(ms(self.stall))?;
        }
        Ok(())
    }

    /// Our words for libgit2's timeout errors, naming the limit; `None` for
    /// any other error.
    pub fn explain(&self, libgit2_message: &str) -> Option<String> {
        let message = libgit2_message.to_ascii_lowercase();
        if !(message.contains("timed out") || message.contains("timeout")) {
            return None;
        }
        Some(if message.contains("connect") {
            format!(
                "could not connect to the remote within {} s (connect timeout, \
                 MIRRORHOST_CONNECT_TIMEOUT_SECONDS)",
                self.connect.as_secs()
            )
        } else {
            format!(
                "the remote sent nothing for {} s (stall timeout, \
                 MIRRORHOST_STALL_TIMEOUT_SECONDS)",
                self.stall.as_secs()
            )
        })
    }

    /// The error of a run stopped at its deadline.
    pub fn run_expired(&self) -> String {
        format!(
            "the run took longer than {} s and was stopped (run timeout, \
             MIRRORHOST_RUN_TIMEOUT_SECONDS)",
            self.run.as_secs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libgit2s_timeouts_are_told_by_their_limit() {
        let t = Timeouts::default();
        let connect = t
            .explain("failed to connect to 10.0.0.1: Operation timed out")
            .unwrap();
        assert!(
            connect.contains("within 30 s (connect timeout"),
            "{connect}"
        );
        let stall = t.explain("could not read from socket: timed out").unwrap();
        assert!(
            stall.contains("nothing for 120 s (stall timeout"),
            "{stall}"
        );
        assert_eq!(t.explain("unexpected http status code: 404"), None);
    }
}
