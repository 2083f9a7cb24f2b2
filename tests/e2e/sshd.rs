//! A real OpenSSH server for tests: `sshd` on a free loopback port with its own
//! host key and authorized keys, serving git-upload-pack and git-receive-pack.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A key pair made with ssh-keygen: the private key text and its public line.
pub struct KeyPair {
    pub private_key: String,
    pub public_line: String,
}

pub fn keygen(dir: &Path, name: &str, passphrase: &str) -> KeyPair {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-C", name, "-N", passphrase, "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success(), "ssh-keygen failed");
    KeyPair {
        private_key: std::fs::read_to_string(&path).unwrap(),
        public_line: std::fs::read_to_string(path.with_extension("pub")).unwrap(),
    }
}

pub struct Sshd {
    child: Child,
    pub port: u16,
    /// `SHA256:...` of the server's host key, as `ssh-keygen -lf` prints it.
    pub host_key_fingerprint: String,
    _dir: tempfile::TempDir,
}

impl Sshd {
    /// Starts sshd accepting `authorized` public keys for the current user.
    pub fn start(authorized: &[&KeyPair]) -> Self {
        Self::start_with(authorized, "")
    }

    /// As [`Sshd::start`], the programs of `bin` found first by the
    /// commands clients run (a `git-lfs-authenticate`, say).
    pub fn start_with_programs(authorized: &[&KeyPair], bin: &Path) -> Self {
        let path = format!(
            "SetEnv PATH={}:/usr/local/bin:/usr/bin:/bin\n",
            bin.display()
        );
        Self::start_with(authorized, &path)
    }

    fn start_with(authorized: &[&KeyPair], extra_config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host_key = dir.path().join("host_key");
        keygen(dir.path(), "host_key", "");
        let listing = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&host_key)
            .output()
            .unwrap();
        let host_key_fingerprint = String::from_utf8_lossy(&listing.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string();
        let keys: Vec<&str> = authorized.iter().map(|k| k.public_line.trim()).collect();
        std::fs::write(dir.path().join("authorized_keys"), keys.join("\n") + "\n").unwrap();
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        for _ in 0..20 {
            let port = free_port();
            let config = write_config(dir.path(), &host_key, port, extra_config);
            let mut child = Command::new(sshd_path())
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            if wait_listening(&mut child, port) {
                return Self {
                    child,
                    port,
                    host_key_fingerprint,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("sshd did not start");
    }

    /// `ssh://user@127.0.0.1:port/abs/path` for a repository on this machine.
    pub fn url(&self, repo: &Path) -> String {
        format!("ssh://{}@127.0.0.1:{}{}", user(), self.port, repo.display())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, host_key: &Path, port: u16, extra: &str) -> PathBuf {
    let config = dir.join("sshd_config");
    let text = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\n\
         AuthorizedKeysFile {dir}/authorized_keys\nPubkeyAuthentication yes\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n\
         PidFile {dir}/sshd.pid\nLogLevel ERROR\n{extra}",
        host = host_key.display(),
        dir = dir.display(),
    );
    std::fs::write(&config, text).unwrap();
    config
}

fn sshd_path() -> &'static str {
    ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("sshd is installed (Debian: openssh-server)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
