//! libgit2's TLS stream, replaced by ours (`git_stream_register`): OpenSSL
//! through the openssl crate, so that a run can present its mirror's client
//! certificate, which libgit2's own OpenSSL stream has no way to do.
//!
//! It decides as libgit2's stream does: the remote's chain is verified
//! against the system's authorities and the `ca_bundle`, host name included;
//! a refusal is `GIT_ECERTIFICATE`, after which libgit2 shows the leaf to the
//! run's certificate callback, which may still accept it (a mirror's
//! `tls_ca_pem`). Through an HTTP proxy libgit2 opens the tunnel itself and
//! hands us its stream to wrap.
//!
//! Which certificate a connection presents is set per thread ([`present`]):
//! libgit2 makes its streams on the thread that runs the transfer, and a run
//! is one thread.

// The stream is a C struct libgit2 calls through function pointers.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Once, RwLock};
use std::time::Duration;

use libgit2_sys as raw;

use super::{per_thread, sockets};
use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    ErrorCode, HandshakeError, Ssl, SslContext, SslMethod, SslStream, SslVerifyMode,
};
use openssl::x509::{X509, X509VerifyResult};

/// A client certificate with its key, ready to be presented.
#[derive(Clone)]
pub struct Identity {
    /// The leaf first, then the intermediates the remote may need.
    chain: Vec<X509>,
    key: PKey<Private>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subject = self
            .chain
            .first()
            .map(|c| format!("{:?}", c.subject_name()));
        f.debug_struct("Identity")
            .field("subject", &subject)
            .finish_non_exhaustive()
    }
}

/// Which half of a client certificate is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("{0}")]
    Certificate(String),
    #[error("{0}")]
    Key(String),
}

impl Identity {
    /// A certificate chain (PEM, leaf first) and the leaf's unencrypted
    /// private key (PEM, PKCS#8 or traditional).
    pub fn from_pem(certificate_pem: &str, key_pem: &[u8]) -> Result<Self, IdentityError> {
        let chain = X509::stack_from_pem(certificate_pem.as_bytes())
            .map_err(|_| IdentityError::Certificate("not PEM certificates".into()))?;
        let Some(leaf) = chain.first() else {
            return Err(IdentityError::Certificate(
                "holds no PEM certificate".into(),
            ));
        };
        // An encrypted key would need a passphrase at every run: refuse it
        // now rather than fail each run.
        let key = PKey::private_key_from_pem_passphrase(key_pem, b"")
            .map_err(|_| IdentityError::Key("not an unencrypted PEM private key".into()))?;
        let public = leaf.public_key().map_err(|_| {
            IdentityError::Certificate("the first certificate has no usable public key".into())
        })?;
        if !public.public_eq(&key) {
            return Err(IdentityError::Key(
                "is not the key of the first certificate".into(),
            ));
        }
        Ok(Self { chain, key })
    }
}

thread_local! {
    static PRESENTING: RefCell<Option<Arc<Identity>>> = const { RefCell::new(None) };
}

/// While this lives, TLS connections made on this thread present its
/// identity (or none); dropping it restores what was presented before.
pub type Presenting = per_thread::Set<Arc<Identity>>;

pub fn present(identity: Option<Identity>) -> Presenting {
    per_thread::set(&PRESENTING, identity.map(Arc::new))
}

/// The authorities every connection trusts: the system's, and the
/// `ca_bundle` once [`trust`] named one.
static CONTEXT: RwLock<Option<SslContext>> = RwLock::new(None);

fn build_context(bundle: Option<&Path>) -> Result<SslContext, ErrorStack> {
    let mut builder = SslContext::builder(SslMethod::tls_client())?;
    builder.set_default_verify_paths()?;
    if let Some(bundle) = bundle {
        builder.load_verify_locations(Some(bundle), None)?;
    }
    // The chain is verified all the same; its verdict is read after the
    // handshake, so that the run's certificate callback can overrule it.
    builder.set_verify(SslVerifyMode::NONE);
    Ok(builder.build())
}

/// Trusts the certificates of `bundle` beside the system's for every
/// connection from now on.
pub fn trust(bundle: &Path) -> Result<(), ErrorStack> {
    let context = build_context(Some(bundle))?;
    *CONTEXT
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(context);
    Ok(())
}

fn context() -> Result<SslContext, ErrorStack> {
    if let Some(context) = CONTEXT
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
    {
        return Ok(context.clone());
    }
    let context = build_context(None)?;
    let mut slot = CONTEXT
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(slot.get_or_insert(context).clone())
}

static REGISTER: Once = Once::new();

/// Makes this module libgit2's TLS stream for every connection from now on.
pub fn register() -> Result<(), git2::Error> {
    let registration = Registration {
        version: STREAM_VERSION,
        init: Some(init),
        wrap: Some(wrap),
    };
    register_once(&REGISTER, GIT_STREAM_TLS, registration)
}

/// Registers a stream of `kind` with libgit2, the first time `once` is run.
pub(super) fn register_once(
    once: &Once,
    kind: c_int,
    mut registration: Registration,
) -> Result<(), git2::Error> {
    let mut result = Ok(());
    once.call_once(|| {
        raw::init();
        // SAFETY: libgit2 is initialised, and copies the registration.
        let code = unsafe { git_stream_register(kind, &mut registration) };
        if code < 0 {
            result = Err(git2::Error::last_error(code));
        }
    });
    result
}

// The C side: git2/sys/stream.h of libgit2 1.9, which libgit2-sys does not
// bind.

pub(super) const STREAM_VERSION: c_int = 1;
const GIT_STREAM_TLS: c_int = 2;
/// `encrypted` is the lowest bit of the bit-field word; `proxy_support`,
/// the next, stays clear: libgit2 tunnels through proxies itself.
const ENCRYPTED: c_uint = 1;

#[repr(C)]
pub(super) struct GitStream {
    pub(super) version: c_int,
    pub(super) flags: c_uint,
    pub(super) timeout: c_int,
    pub(super) connect_timeout: c_int,
    pub(super) connect: Option<unsafe extern "C" fn(*mut GitStream) -> c_int>,
    pub(super) certificate:
        Option<unsafe extern "C" fn(*mut *mut raw::git_cert, *mut GitStream) -> c_int>,
    pub(super) set_proxy:
        Option<unsafe extern "C" fn(*mut GitStream, *const raw::git_proxy_options) -> c_int>,
    pub(super) read: Option<unsafe extern "C" fn(*mut GitStream, *mut c_void, usize) -> isize>,
    pub(super) write:
        Option<unsafe extern "C" fn(*mut GitStream, *const c_char, usize, c_int) -> isize>,
    pub(super) close: Option<unsafe extern "C" fn(*mut GitStream) -> c_int>,
    pub(super) free: Option<unsafe extern "C" fn(*mut GitStream)>,
}

#[repr(C)]
pub(super) struct Registration {
    pub(super) version: c_int,
    pub(super) init:
        Option<unsafe extern "C" fn(*mut *mut GitStream, *const c_char, *const c_char) -> c_int>,
    pub(super) wrap:
        Option<unsafe extern "C" fn(*mut *mut GitStream, *mut GitStream, *const c_char) -> c_int>,
}

unsafe extern "C" {
    fn git_stream_register(kind: c_int, registration: *mut Registration) -> c_int;
}

/// Our stream; libgit2 sees only `parent`, the first field.
#[repr(C)]
struct Stream {
    parent: GitStream,
    host: String,
    state: State,
    context: SslContext,
    identity: Option<Arc<Identity>>,
    /// The remote's certificate as libgit2 shows it to the callback; `data`
    /// points into `leaf`.
    cert: raw::git_cert_x509,
    leaf: Vec<u8>,
}

enum State {
    /// `init`'s: the port to connect to.
    Unconnected(String),
    /// `wrap`'s: libgit2's tunnel through a proxy, connected.
    Tunnel(*mut GitStream),
    Connected(Box<SslStream<Io>>),
    Closed,
}

/// What TLS runs over: our own socket, or libgit2's tunnel (not ours to free).
enum Io {
    Tcp(sockets::Tcp),
    Tunnel(*mut GitStream),
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Tcp(tcp) => tcp.read(buf),
            Io::Tunnel(inner) => {
                // SAFETY: libgit2 keeps the tunnel alive until after it has
                // freed the stream wrapping it.
                let n = unsafe {
                    let read = (**inner).read.ok_or_else(|| io::Error::other("no read"))?;
                    read(*inner, buf.as_mut_ptr().cast(), buf.len())
                };
                usize::try_from(n).map_err(|_| io::Error::other(last_git_error(n as c_int)))
            }
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Tcp(tcp) => tcp.write(buf),
            Io::Tunnel(inner) => {
                // SAFETY: as in `read`.
                let n = unsafe {
                    let write = (**inner)
                        .write
                        .ok_or_else(|| io::Error::other("no write"))?;
                    write(*inner, buf.as_ptr().cast(), buf.len(), 0)
                };
                usize::try_from(n).map_err(|_| io::Error::other(last_git_error(n as c_int)))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Io::Tcp(tcp) => tcp.flush(),
            Io::Tunnel(_) => Ok(()),
        }
    }
}

pub(super) fn last_git_error(code: c_int) -> String {
    git2::Error::last_error(code.min(-1)).message().to_string()
}

/// Sets libgit2's error (class `class`) to `message`; the -1 to return.
pub(super) fn fail(class: raw::git_error_t, message: &str) -> c_int {
    let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: libgit2 copies the string.
    unsafe { raw::git_error_set_str(class as c_int, message.as_ptr()) };
    -1
}

unsafe extern "C" fn init(
    out: *mut *mut GitStream,
    host: *const c_char,
    port: *const c_char,
) -> c_int {
    // SAFETY: libgit2 passes NUL-terminated strings it owns for the call.
    let (host, port) = unsafe { (text(host), text(port)) };
    let timeouts = libgit2_timeouts();
    new_stream(out, host, State::Unconnected(port), timeouts)
}

unsafe extern "C" fn wrap(
    out: *mut *mut GitStream,
    inner: *mut GitStream,
    host: *const c_char,
) -> c_int {
    // SAFETY: as in `init`.
    let host = unsafe { text(host) };
    // SAFETY: libgit2 hands over a live stream.
    let timeouts = unsafe { ((*inner).timeout, (*inner).connect_timeout) };
    new_stream(out, host, State::Tunnel(inner), timeouts)
}

/// # Safety
/// `ptr` is a NUL-terminated string (or null).
pub(super) unsafe fn text(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: the caller's promise.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// A stream's stall and connect limits as durations (0 is none).
pub(super) fn limits((stall, connect): (c_int, c_int)) -> (Option<Duration>, Option<Duration>) {
    let limit = |ms: c_int| {
        u64::try_from(ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    };
    (limit(stall), limit(connect))
}

/// The stall and connect limits libgit2's socket streams take
/// (`Timeouts::install` sets them), in milliseconds; 0 for none.
pub(super) fn libgit2_timeouts() -> (c_int, c_int) {
    // SAFETY: plain reads of ints libgit2 keeps; written only at start.
    unsafe {
        (
            git2::opts::get_server_timeout_in_milliseconds().unwrap_or(0),
            git2::opts::get_server_connect_timeout_in_milliseconds().unwrap_or(0),
        )
    }
}

fn new_stream(
    out: *mut *mut GitStream,
    host: String,
    state: State,
    (timeout, connect_timeout): (c_int, c_int),
) -> c_int {
    let context = match context() {
        Ok(context) => context,
        Err(e) => return fail(raw::GIT_ERROR_SSL, &format!("OpenSSL: {e}")),
    };
    let stream = Box::new(Stream {
        parent: GitStream {
            version: STREAM_VERSION,
            flags: ENCRYPTED,
            timeout,
            connect_timeout,
            connect: Some(connect),
            certificate: Some(certificate),
            set_proxy: None,
            read: Some(read),
            write: Some(write),
            close: Some(close),
            free: Some(free),
        },
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        state,
        context,
        identity: per_thread::get(&PRESENTING),
        cert: raw::git_cert_x509 {
            parent: raw::git_cert {
                cert_type: raw::GIT_CERT_X509,
            },
            data: std::ptr::null_mut(),
            len: 0,
        },
        leaf: Vec::new(),
    });
    // SAFETY: `out` is libgit2's slot for the new stream, which it frees
    // through `free`.
    unsafe { *out = Box::into_raw(stream).cast() };
    0
}

/// # Safety
/// `st` is a stream `new_stream` made and `free` has not freed.
unsafe fn ours<'a>(st: *mut GitStream) -> &'a mut Stream {
    // SAFETY: `parent` is the first field of the `repr(C)` `Stream`.
    unsafe { &mut *st.cast::<Stream>() }
}

unsafe extern "C" fn connect(st: *mut GitStream) -> c_int {
    // SAFETY: libgit2 calls back with the stream it got from us.
    let stream = unsafe { ours(st) };
    match stream.connect() {
        Ok(code) => code,
        Err(message) => fail(raw::GIT_ERROR_NET, &message),
    }
}

impl Stream {
    /// Connects and shakes hands: 0, or `GIT_ECERTIFICATE` when the remote's
    /// certificate does not verify (the connection stays, for the callback).
    fn connect(&mut self) -> Result<c_int, String> {
        let io = match std::mem::replace(&mut self.state, State::Closed) {
            State::Unconnected(port) => Io::Tcp(self.tcp(&port)?),
            State::Tunnel(inner) => Io::Tunnel(inner),
            State::Connected(_) | State::Closed => {
                return Err("the TLS stream was already used".into());
            }
        };
        let ssl = self.ssl().map_err(|e| format!("OpenSSL: {e}"))?;
        let tls = match ssl.connect(io) {
            Ok(tls) => tls,
            Err(HandshakeError::WouldBlock(_)) => {
                return Err(format!("TLS handshake with {} timed out", self.host));
            }
            Err(HandshakeError::SetupFailure(e)) => return Err(format!("OpenSSL: {e}")),
            Err(HandshakeError::Failure(mid)) => {
                return Err(self.explain(&format!("TLS handshake with {}", self.host), mid.error()));
            }
        };
        let verdict = tls.ssl().verify_result();
        let Some(leaf) = tls.ssl().peer_certificate() else {
            return Err(format!("{} presented no TLS certificate", self.host));
        };
        self.leaf = leaf.to_der().map_err(|e| format!("OpenSSL: {e}"))?;
        self.cert.data = self.leaf.as_mut_ptr().cast();
        self.cert.len = self.leaf.len();
        self.state = State::Connected(Box::new(tls));
        if verdict == X509VerifyResult::OK {
            return Ok(0);
        }
        fail(
            raw::GIT_ERROR_SSL,
            &format!("the SSL certificate is invalid: {}", verdict.error_string()),
        );
        Ok(raw::GIT_ECERTIFICATE as c_int)
    }

    fn tcp(&self, port: &str) -> Result<sockets::Tcp, String> {
        let (stall, connect) = limits((self.parent.timeout, self.parent.connect_timeout));
        sockets::connect(&self.host, port, connect, stall)
    }

    /// The connection's SSL: server name, host check, and the identity.
    fn ssl(&self) -> Result<Ssl, ErrorStack> {
        let mut ssl = Ssl::new(&self.context)?;
        match self.host.parse::<IpAddr>() {
            Ok(ip) => ssl.param_mut().set_ip(ip)?,
            Err(_) => {
                ssl.set_hostname(&self.host)?;
                ssl.param_mut().set_host(&self.host)?;
            }
        }
        if let Some(identity) = &self.identity {
            let mut chain = identity.chain.iter();
            if let Some(leaf) = chain.next() {
                ssl.set_certificate(leaf)?;
            }
            for intermediate in chain {
                ssl.add_chain_cert(intermediate.clone())?;
            }
            ssl.set_private_key(&identity.key)?;
        }
        Ok(ssl)
    }

    /// Our words for an error of the connection, naming the client
    /// certificate when the remote's alert is about it.
    fn explain(&self, doing: &str, e: &openssl::ssl::Error) -> String {
        if let Some(io) = e.io_error() {
            return match io.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    format!("{doing}: could not read from socket: timed out")
                }
                _ => format!("{doing}: {io}"),
            };
        }
        let detail = e.to_string();
        let about_us = [
            "alert certificate required",
            "alert bad certificate",
            "alert unknown ca",
            "alert certificate expired",
            "alert certificate unknown",
            "alert handshake failure",
        ]
        .iter()
        .any(|alert| detail.contains(alert));
        match (&self.identity, about_us) {
            (None, true) => format!(
                "{} demands a TLS client certificate, and the mirror has none; set \
                 tls_client_cert_pem and tls_client_key_pem ({detail})",
                self.host
            ),
            (Some(_), true) => format!(
                "{} refused the mirror's TLS client certificate ({detail})",
                self.host
            ),
            (_, false) => format!("{doing}: {detail}"),
        }
    }

    fn tls(&mut self) -> Result<&mut SslStream<Io>, c_int> {
        match &mut self.state {
            State::Connected(tls) => Ok(tls),
            _ => Err(fail(raw::GIT_ERROR_NET, "the TLS stream is not connected")),
        }
    }
}

unsafe extern "C" fn certificate(out: *mut *mut raw::git_cert, st: *mut GitStream) -> c_int {
    // SAFETY: as in `connect`.
    let stream = unsafe { ours(st) };
    if stream.leaf.is_empty() {
        return fail(raw::GIT_ERROR_SSL, "no certificate was presented");
    }
    // SAFETY: `out` is libgit2's slot; the certificate lives as long as the
    // stream, which libgit2 frees after its callback.
    unsafe { *out = (&raw mut stream.cert).cast() };
    0
}

unsafe extern "C" fn read(st: *mut GitStream, data: *mut c_void, len: usize) -> isize {
    // SAFETY: as in `connect`.
    let stream = unsafe { ours(st) };
    if len == 0 {
        return 0;
    }
    // SAFETY: libgit2's buffer of `len` bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(data.cast::<u8>(), len) };
    let result = stream.tls().map(|tls| tls.ssl_read(buf));
    stream.answer(result, "reading from")
}

unsafe extern "C" fn write(
    st: *mut GitStream,
    data: *const c_char,
    len: usize,
    _flags: c_int,
) -> isize {
    // SAFETY: as in `connect`.
    let stream = unsafe { ours(st) };
    // SAFETY: libgit2's `len` bytes.
    let buf = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
    let result = stream.tls().map(|tls| tls.ssl_write(buf));
    stream.answer(result, "writing to")
}

impl Stream {
    /// libgit2's answer for a read or write: the byte count, 0 at the end
    /// of the stream, or -1 with the error set.
    fn answer(
        &self,
        result: Result<Result<usize, openssl::ssl::Error>, c_int>,
        doing: &str,
    ) -> isize {
        match result {
            Err(code) => code as isize,
            Ok(Ok(n)) => n as isize,
            Ok(Err(e)) if e.code() == ErrorCode::ZERO_RETURN => 0,
            Ok(Err(e)) => {
                let doing = format!("{doing} {}", self.host);
                fail(raw::GIT_ERROR_NET, &self.explain(&doing, &e)) as isize
            }
        }
    }
}

unsafe extern "C" fn close(st: *mut GitStream) -> c_int {
    // SAFETY: as in `connect`.
    let stream = unsafe { ours(st) };
    if let State::Connected(tls) = &mut stream.state {
        // A courtesy to the remote; the connection ends either way.
        let _ = tls.shutdown();
    }
    stream.state = State::Closed;
    0
}

unsafe extern "C" fn free(st: *mut GitStream) {
    // SAFETY: libgit2 frees each stream once, with this function we gave it.
    drop(unsafe { Box::from_raw(st.cast::<Stream>()) });
}
