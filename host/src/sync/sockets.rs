//! The sockets a run has open, so that a cancel can end them at once.
//!
//! A run blocked on a remote that sends nothing sees no callback until the
//! stall limit; the flag a cancel sets is read by callbacks only. So every
//! TCP connection our streams make (`plain_stream` for http, ssh and proxy
//! tunnels; `tls_stream` for https) is listed in the `Sockets` of the run
//! whose thread made it ([`watch`], held by `Run`), and
//! [`Sockets::shut_down`] shuts each down: the blocked read returns at once,
//! the transfer fails, and the run ends `cancelled`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::per_thread;

/// One run's open connections. Each is kept as a second handle (`dup`) of
/// the socket, so shutting it down here never touches a descriptor number
/// that its owner has closed and the system has handed to someone else.
#[derive(Debug, Default)]
pub struct Sockets(Mutex<Open>);

#[derive(Debug, Default)]
struct Open {
    /// Set by `shut_down`: a connection made after it is refused.
    shut: bool,
    next: u64,
    sockets: HashMap<u64, TcpStream>,
}

impl Sockets {
    /// Ends every connection the run has open, and any it would open.
    pub fn shut_down(&self) {
        let mut open = self.lock();
        open.shut = true;
        for socket in open.sockets.values() {
            // An error here means the connection had already ended.
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lists `tcp`; `None` once the run was shut down.
    fn list(self: &Arc<Self>, tcp: &TcpStream) -> io::Result<Option<Listed>> {
        let handle = tcp.try_clone()?;
        let mut open = self.lock();
        if open.shut {
            return Ok(None);
        }
        open.next += 1;
        let key = open.next;
        open.sockets.insert(key, handle);
        Ok(Some(Listed {
            sockets: Arc::clone(self),
            key,
        }))
    }
}

/// A socket's place in its run's list, given up when it is dropped.
#[derive(Debug)]
struct Listed {
    sockets: Arc<Sockets>,
    key: u64,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.sockets.lock().sockets.remove(&self.key);
    }
}

thread_local! {
    static WATCHING: RefCell<Option<Arc<Sockets>>> = const { RefCell::new(None) };
}

/// While this lives, connections made on this thread are listed in its
/// `Sockets`; dropping it restores what was watched before.
pub type Watching = per_thread::Set<Arc<Sockets>>;

pub fn watch(sockets: Option<Arc<Sockets>>) -> Watching {
    per_thread::set(&WATCHING, sockets)
}

/// A TCP connection listed in the current run's `Sockets` while it lives.
#[derive(Debug)]
pub struct Tcp {
    // Dropped first: the listing goes before the socket closes.
    _listed: Option<Listed>,
    stream: TcpStream,
}

/// Connects to `host`:`port`, trying each address within `connect` (none:
/// the system's limit), and gives the socket the `stall` limit on reads and
/// writes. The error is worded as libgit2 words its own, which
/// `Timeouts::explain` reads.
pub fn connect(
    host: &str,
    port: &str,
    connect: Option<Duration>,
    stall: Option<Duration>,
) -> Result<Tcp, String> {
    let failed = |e: io::Error| format!("failed to connect to {host}: {e}");
    let port: u16 = port
        .parse()
        .map_err(|_| format!("failed to connect to {host}: port {port:?}"))?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address found");
    for address in (host, port).to_socket_addrs().map_err(failed)? {
        let connected = match connect {
            None => TcpStream::connect(address),
            Some(limit) => TcpStream::connect_timeout(&address, limit),
        };
        match connected {
            Ok(stream) => {
                stream.set_read_timeout(stall).map_err(failed)?;
                stream.set_write_timeout(stall).map_err(failed)?;
                let _ = stream.set_nodelay(true);
                let watched = per_thread::get(&WATCHING);
                let listed = match watched {
                    None => None,
                    Some(sockets) => Some(
                        sockets
                            .list(&stream)
                            .map_err(failed)?
                            .ok_or_else(|| format!("connection to {host} cancelled"))?,
                    ),
                };
                return Ok(Tcp {
                    _listed: listed,
                    stream,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(format!("failed to connect to {host}: Operation timed out"));
            }
            Err(e) => last = e,
        }
    }
    Err(failed(last))
}

impl std::os::fd::AsRawFd for Tcp {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.stream.as_raw_fd()
    }
}

impl Read for Tcp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for Tcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn a_shut_down_wakes_a_read_that_waits_on_a_silent_peer() {
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port().to_string();
        let sockets = Arc::new(Sockets::default());
        let _watching = watch(Some(sockets.clone()));
        let mut tcp = connect("127.0.0.1", &port, None, None).unwrap();
        let _peer = silent.accept().unwrap();
        let canceller = {
            let sockets = sockets.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                sockets.shut_down();
            })
        };
        let started = Instant::now();
        // No stall limit: only the shut-down can end this read.
        let read = tcp.read(&mut [0u8; 16]);
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        canceller.join().unwrap();
        let again = connect("127.0.0.1", &port, None, None).unwrap_err();
        assert!(again.contains("cancelled"), "{again}");
    }

    #[test]
    fn a_closed_connection_leaves_the_list() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let sockets = Arc::new(Sockets::default());
        let _watching = watch(Some(sockets.clone()));
        let tcp = connect("127.0.0.1", &port, None, None).unwrap();
        assert_eq!(sockets.lock().sockets.len(), 1);
        drop(tcp);
        assert!(sockets.lock().sockets.is_empty());
        drop(_watching);
        let unwatched = connect("127.0.0.1", &port, None, None).unwrap();
        assert!(unwatched._listed.is_none());
    }
}
