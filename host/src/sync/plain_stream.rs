//! libgit2's plain socket stream, replaced by ours (`git_stream_register`,
//! standard streams): every connection a run makes without TLS of ours (http
//! remotes, ssh remotes, the tunnels to proxies) opens through
//! `sockets::connect`, so that a cancel can shut it down while it waits on
//! a remote that sends nothing.
//!
//! libgit2's SSH transport hands the socket to libssh2 by reading the
//! descriptor out of libgit2's own stream struct (`git_socket_stream`:
//! the stream, host, port, descriptor). Ours starts with the same fields in
//! the same order, for libgit2 1.9 as libgit2-sys vendors it; every SSH
//! test (tests/e2e/ssh.rs, against a real sshd) fails if that changes.

// The stream is a C struct libgit2 calls through function pointers.
#![allow(unsafe_code)]

use std::ffi::{CString, c_char, c_int, c_void};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Once;

use libgit2_sys as raw;

use super::sockets;
use super::tls_stream::{
    GitStream, Registration, STREAM_VERSION, fail, libgit2_timeouts, limits, register_once, text,
};

const GIT_STREAM_STANDARD: c_int = 1;

/// Our stream. libgit2 sees `parent`; libssh2, through libgit2, `s`.
#[repr(C)]
struct Stream {
    parent: GitStream,
    /// `git_socket_stream`'s `host` and `port`, pointing into ours below.
    host_ptr: *mut c_char,
    port_ptr: *mut c_char,
    /// The connected socket's descriptor, -1 before and after.
    s: c_int,
    host: CString,
    port: CString,
    tcp: Option<sockets::Tcp>,
}

static REGISTER: Once = Once::new();

/// Makes this module libgit2's standard stream for every connection from now on.
pub fn register() -> Result<(), git2::Error> {
    let registration = Registration {
        version: STREAM_VERSION,
        init: Some(init),
        wrap: None,
    };
    register_once(&REGISTER, GIT_STREAM_STANDARD, registration)
}

unsafe extern "C" fn init(
    out: *mut *mut GitStream,
    host: *const c_char,
    port: *const c_char,
) -> c_int {
    // SAFETY: libgit2 passes NUL-terminated strings it owns for the call.
    let (host, port) = unsafe { (text(host), text(port)) };
    let (Ok(host), Ok(port)) = (CString::new(host), CString::new(port)) else {
        return fail(raw::GIT_ERROR_NET, "a host or port holds a NUL byte");
    };
    let (timeout, connect_timeout) = libgit2_timeouts();
    let mut stream = Box::new(Stream {
        parent: GitStream {
            version: STREAM_VERSION,
            flags: 0,
            timeout,
            connect_timeout,
            connect: Some(connect),
            certificate: None,
            set_proxy: None,
            read: Some(read),
            write: Some(write),
            close: Some(close),
            free: Some(free),
        },
        host_ptr: std::ptr::null_mut(),
        port_ptr: std::ptr::null_mut(),
        s: -1,
        host,
        port,
        tcp: None,
    });
    stream.host_ptr = stream.host.as_ptr().cast_mut();
    stream.port_ptr = stream.port.as_ptr().cast_mut();
    // SAFETY: `out` is libgit2's slot for the new stream, which it frees
    // through `free`.
    unsafe { *out = Box::into_raw(stream).cast() };
    0
}

/// # Safety
/// `st` is a stream `init` made and `free` has not freed.
unsafe fn ours<'a>(st: *mut GitStream) -> &'a mut Stream {
    // SAFETY: `parent` is the first field of the `repr(C)` `Stream`.
    unsafe { &mut *st.cast::<Stream>() }
}

unsafe extern "C" fn connect(st: *mut GitStream) -> c_int {
    // SAFETY: libgit2 calls back with the stream it got from us.
    let stream = unsafe { ours(st) };
    let host = stream.host.to_string_lossy();
    let port = stream.port.to_string_lossy();
    let (stall, connect) = limits((stream.parent.timeout, stream.parent.connect_timeout));
    match sockets::connect(host.trim_matches(['[', ']']), &port, connect, stall) {
        Ok(tcp) => {
            stream.s = tcp.as_raw_fd();
            stream.tcp = Some(tcp);
            0
        }
        Err(message) => fail(raw::GIT_ERROR_NET, &message),
    }
}

/// libgit2's answer for a read or write: the byte count, or an error code
/// with the error set, worded as libgit2's own stream words it.
fn answer(result: io::Result<usize>, doing: &str) -> isize {
    match result {
        Ok(n) => n as isize,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            fail(
                raw::GIT_ERROR_NET,
                &format!("could not {doing} socket: timed out"),
            );
            raw::GIT_TIMEOUT as isize
        }
        Err(e) => fail(
            raw::GIT_ERROR_NET,
            &format!("could not {doing} socket: {e}"),
        ) as isize,
    }
}

unsafe extern "C" fn read(st: *mut GitStream, data: *mut c_void, len: usize) -> isize {
    // SAFETY: as in `connect`.
    let stream = unsafe { ours(st) };
    let Some(tcp) = stream.tcp.as_mut() else {
        return fail(raw::GIT_ERROR_NET, "the socket is not connected") as isize;
    };
    // SAFETY: libgit2's buffer of `len` bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(data.cast::<u8>(), len) };
    answer(tcp.read(buf), "read from")
}

unsafe extern "C" fn write(
    st: *mut GitStream,
    data: *const c_char,
    len: usize,
    _flags: c_int,
) -> isize {
    // SAFETY: as in `connect`.
    let stream = unsafe { ours(st) };
    let Some(tcp) = stream.tcp.as_mut() else {
        return fail(raw::GIT_ERROR_NET, "the socket is not connected") as isize;
    };
    // SAFETY: libgit2's `len` bytes.
    let buf = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
    answer(tcp.write(buf), "write to")
}

unsafe extern "C" fn close(st: *mut GitStream) -> c_int {
    // SAFETY: as in `connect`.
    let stream = unsafe { ours(st) };
    stream.s = -1;
    stream.tcp = None;
    0
}

unsafe extern "C" fn free(st: *mut GitStream) {
    // SAFETY: libgit2 frees each stream once, with this function we gave it.
    drop(unsafe { Box::from_raw(st.cast::<Stream>()) });
}
