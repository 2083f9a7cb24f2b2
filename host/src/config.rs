//! Service settings: built-in defaults, overridden by a TOML file (`--config`),
//! overridden by environment variables, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::alerts::Target;
use crate::jobs::Caps;
use crate::plugins::Limits;
use crate::schedule::Policy;
use crate::store::Location;
use crate::store::retention::Retention;
use crate::sync::housekeeping::Housekeeping;
use crate::sync::packs::Program;
use crate::sync::packs::{ChildLimits, DEFAULT_INDEXER_MEMORY_BYTES};
use crate::sync::proxy::{ProxySettings, parse_no_proxy};
use crate::sync::{PackIndexer, Timeouts};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: &'static str,
    },
}

/// Settings given on the command line or in the environment; `None` means "not given".
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// TOML config file; flags and environment variables win over it.
    #[arg(long, env = "MIRRORHOST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "MIRRORHOST_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the database, the repositories and the caches [default: ./data].
    #[arg(long, env = "MIRRORHOST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The store on PostgreSQL 15 or newer, `postgres://user@host/db`
    /// [default: SQLite in the data dir]. Prefer the environment variable or
    /// the file if it holds a password: a flag shows in the process list.
    #[arg(long, env = "MIRRORHOST_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// This node's name among the nodes sharing a PostgreSQL database; keep
    /// it across restarts [default: generated once, kept in <data-dir>/node-id].
    #[arg(long, env = "MIRRORHOST_NODE_ID")]
    pub node_id: Option<String>,
    /// Seconds a node's lease on a project lasts unless renewed; a node silent
    /// this long is taken for dead and its projects move [default: 30].
    #[arg(long, env = "MIRRORHOST_LEASE_SECONDS")]
    pub lease_seconds: Option<u64>,
    /// Let remotes on file://, loopback and private addresses through (tests, labs).
    #[arg(long, env = "MIRRORHOST_ALLOW_LOCAL_REMOTES")]
    pub allow_local_remotes: Option<bool>,
    /// Let plain http:// and git:// remotes through.
    #[arg(long, env = "MIRRORHOST_ALLOW_HTTP_REMOTES")]
    pub allow_http_remotes: Option<bool>,
    /// Where compiled plugins are cached [default: <data-dir>/cache/plugins].
    #[arg(long, env = "MIRRORHOST_PLUGIN_CACHE_DIR")]
    pub plugin_cache_dir: Option<PathBuf>,
    /// Runs at once across all mirrors [default: 4].
    #[arg(long, env = "MIRRORHOST_MAX_CONCURRENT_RUNS")]
    pub max_concurrent_runs: Option<usize>,
    /// Runs at once against one remote host [default: 2].
    #[arg(long, env = "MIRRORHOST_MAX_RUNS_PER_HOST")]
    pub max_runs_per_host: Option<usize>,
    /// The shortest schedule interval allowed, in seconds [default: 60].
    #[arg(long, env = "MIRRORHOST_MIN_INTERVAL_SECONDS")]
    pub min_interval_seconds: Option<u32>,
    /// Consecutive failures before a mirror is hard-failed [default: 14].
    #[arg(long, env = "MIRRORHOST_MAX_FAILURES")]
    pub max_failures: Option<u32>,
    /// Transfer rate cap of the whole service, bytes per second [default: none].
    #[arg(long, env = "MIRRORHOST_MAX_BYTES_PER_SECOND")]
    pub max_bytes_per_second: Option<u64>,
    /// The largest object a fetch may bring, in bytes; a received pack that
    /// declares a bigger one is refused before memory is set aside for it
    /// [default: 1073741824, 1 GiB].
    #[arg(long, env = "MIRRORHOST_MAX_OBJECT_BYTES")]
    pub max_object_bytes: Option<u64>,
    /// Address space, in bytes, of the child that indexes a fetched pack;
    /// past it the child dies and the fetch fails [default: 4294967296, 4 GiB].
    #[arg(long, env = "MIRRORHOST_INDEXER_MEMORY_BYTES")]
    pub indexer_memory_bytes: Option<u64>,
    /// The executable that indexes fetched packs: the one installed beside
    /// this one unless given. Not a flag: tests and benches, whose own
    /// executable is not mirrorhost's, name the binary here.
    #[arg(skip)]
    pub indexer_program: Option<Program>,
    /// Seconds between reconciliation sweeps; 0 turns them off [default: 300].
    #[arg(long, env = "MIRRORHOST_RECONCILE_SECONDS")]
    pub reconcile_seconds: Option<u64>,
    /// How many of a mirror's latest finished runs its health covers [default: 100].
    #[arg(long, env = "MIRRORHOST_HEALTH_WINDOW")]
    pub health_window: Option<u32>,
    /// Milliseconds at least between the starts of one mirror's webhook runs;
    /// a lone push starts at once, a flood costs a run per this [default: 2000].
    #[arg(long, env = "MIRRORHOST_WEBHOOK_SPACING_MS")]
    pub webhook_spacing_ms: Option<u64>,
    /// Finished runs kept per mirror, newest first [default: 100].
    #[arg(long, env = "MIRRORHOST_RETAIN_RUNS")]
    pub retain_runs: Option<u32>,
    /// Days a finished run is kept at most [default: 30].
    #[arg(long, env = "MIRRORHOST_RETAIN_RUN_DAYS")]
    pub retain_run_days: Option<u32>,
    /// Days a webhook delivery id is kept to refuse its replay [default: 7].
    #[arg(long, env = "MIRRORHOST_RETAIN_DELIVERY_DAYS")]
    pub retain_delivery_days: Option<u32>,
    /// Days a resolved or aborted conflict is kept [default: 90].
    #[arg(long, env = "MIRRORHOST_RETAIN_CONFLICT_DAYS")]
    pub retain_conflict_days: Option<u32>,
    /// Housekeeping runs after a pull that leaves more packs than this [default: 8].
    #[arg(long, env = "MIRRORHOST_HOUSEKEEPING_PACK_LIMIT")]
    pub housekeeping_pack_limit: Option<usize>,
    /// Hours an object no ref reaches is kept before housekeeping deletes it [default: 336].
    #[arg(long, env = "MIRRORHOST_PRUNE_GRACE_HOURS")]
    pub prune_grace_hours: Option<u64>,
    /// Seconds a remote may take to accept a connection [default: 30].
    #[arg(long, env = "MIRRORHOST_CONNECT_TIMEOUT_SECONDS")]
    pub connect_timeout_seconds: Option<u64>,
    /// Seconds a transfer may go without a byte from the remote [default: 120].
    #[arg(long, env = "MIRRORHOST_STALL_TIMEOUT_SECONDS")]
    pub stall_timeout_seconds: Option<u64>,
    /// Seconds one run may take from start to end [default: 3600].
    #[arg(long, env = "MIRRORHOST_RUN_TIMEOUT_SECONDS")]
    pub run_timeout_seconds: Option<u64>,
    /// Where to POST an alert when a mirror changes state [default: none].
    #[arg(long, env = "MIRRORHOST_ALERT_WEBHOOK_URL")]
    pub alert_webhook_url: Option<url::Url>,
    /// The HMAC-SHA256 key that signs alerts; required with an alert URL. Prefer
    /// the environment variable or the file: a flag shows in the process list.
    #[arg(long, env = "MIRRORHOST_ALERT_WEBHOOK_SECRET", hide_env_values = true)]
    pub alert_webhook_secret: Option<String>,
    /// PEM certificate chain to serve HTTPS with (with --tls-key) [default: plain HTTP].
    #[arg(long, env = "MIRRORHOST_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "MIRRORHOST_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM file of certificate authorities trusted for https remotes, beside
    /// the system's [default: the system's only].
    #[arg(long, env = "MIRRORHOST_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
    /// HTTP proxy for http(s) remotes, `http://[user:password@]host:port`
    /// [default: libgit2 reads HTTPS_PROXY/HTTP_PROXY and NO_PROXY]. Prefer
    /// the environment variable or the file: a flag shows in the process list.
    #[arg(long, env = "MIRRORHOST_HTTPS_PROXY", hide_env_values = true)]
    pub https_proxy: Option<String>,
    /// Comma-separated hosts reached without the proxy [default: NO_PROXY].
    #[arg(long, env = "MIRRORHOST_NO_PROXY")]
    pub no_proxy: Option<String>,
}

/// The TOML file. Every key is optional; unknown keys are an error so that a
/// typo does not silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    allow_local_remotes: Option<bool>,
    allow_http_remotes: Option<bool>,
    plugin_cache_dir: Option<PathBuf>,
    max_concurrent_runs: Option<usize>,
    max_runs_per_host: Option<usize>,
    min_interval_seconds: Option<u32>,
    max_failures: Option<u32>,
    max_bytes_per_second: Option<u64>,
    max_object_bytes: Option<u64>,
    indexer_memory_bytes: Option<u64>,
    reconcile_seconds: Option<u64>,
    health_window: Option<u32>,
    alert_webhook_url: Option<url::Url>,
    alert_webhook_secret: Option<String>,
    connect_timeout_seconds: Option<u64>,
    stall_timeout_seconds: Option<u64>,
    run_timeout_seconds: Option<u64>,
    webhook_spacing_ms: Option<u64>,
    retain_runs: Option<u32>,
    retain_run_days: Option<u32>,
    retain_delivery_days: Option<u32>,
    retain_conflict_days: Option<u32>,
    housekeeping_pack_limit: Option<usize>,
    prune_grace_hours: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    ca_bundle: Option<PathBuf>,
    https_proxy: Option<String>,
    no_proxy: Option<String>,
    database_url: Option<String>,
    node_id: Option<String>,
    lease_seconds: Option<u64>,
    plugins: PluginLimitsFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PluginLimitsFile {
    timeout_ms: Option<u64>,
    fuel: Option<u64>,
    memory_bytes: Option<usize>,
    max_input_bytes: Option<usize>,
    max_output_bytes: Option<usize>,
    max_log_lines: Option<usize>,
    max_log_bytes: Option<usize>,
}

/// The resolved settings the service runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub allow_local_remotes: bool,
    pub allow_http_remotes: bool,
    pub plugin_cache_dir: PathBuf,
    pub plugin_limits: Limits,
    pub caps: Caps,
    pub schedule: Policy,
    pub max_bytes_per_second: Option<u64>,
    /// How fetched packs are indexed, and the largest object they may bring.
    pub pack_indexer: PackIndexer,
    /// Between reconciliation sweeps; `None` when turned off.
    pub reconcile_every: Option<Duration>,
    /// How many of a mirror's latest finished runs its health covers.
    pub health_window: u32,
    /// Where state-change alerts go, if anywhere.
    pub alerts: Option<Target>,
    /// How long a remote may take.
    pub timeouts: Timeouts,
    /// At least this far apart start one mirror's webhook runs.
    pub webhook_spacing: Duration,
    /// How much history is kept.
    pub retention: Retention,
    /// When repositories are packed anew, and how long unreachable objects wait.
    pub housekeeping: Housekeeping,
    /// HTTPS on the listener, when set; plain HTTP otherwise.
    pub tls: Option<TlsFiles>,
    /// Certificate authorities trusted for https remotes beside the system's.
    pub ca_bundle: Option<PathBuf>,
    /// The HTTP proxy of every http(s) remote whose mirror names none.
    pub proxy: ProxySettings,
    /// Where the store is: SQLite in the data dir, or PostgreSQL.
    pub database: Location,
    /// This node's name, if given; else the one kept in the data dir.
    pub node_id: Option<String>,
    /// How long a project's lease lasts unless renewed.
    pub lease: Duration,
}

/// The PEM files the listener serves HTTPS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// Which remotes mirrors (and the LFS endpoints their repositories
    /// name) may reach.
    pub fn remote_policy(&self) -> crate::sync::remote::Policy {
        crate::sync::remote::Policy {
            allow_local: self.allow_local_remotes,
            allow_http: self.allow_http_remotes,
        }
    }

    pub fn resolve(overrides: Overrides) -> Result<Self, ConfigError> {
        let file = match &overrides.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = overrides
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("data"));
        let plugin_cache_dir = overrides
            .plugin_cache_dir
            .or(file.plugin_cache_dir)
            .unwrap_or_else(|| data_dir.join("cache").join("plugins"));
        Ok(Self {
            listen: overrides
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            allow_local_remotes: overrides
                .allow_local_remotes
                .or(file.allow_local_remotes)
                .unwrap_or(false),
            allow_http_remotes: overrides
                .allow_http_remotes
                .or(file.allow_http_remotes)
                .unwrap_or(false),
            plugin_limits: file.plugins.apply(Limits::default()),
            max_bytes_per_second: overrides.max_bytes_per_second.or(file.max_bytes_per_second),
            pack_indexer: {
                let max_object_bytes = overrides
                    .max_object_bytes
                    .or(file.max_object_bytes)
                    .unwrap_or(crate::sync::DEFAULT_MAX_OBJECT_BYTES)
                    .max(1);
                let program = overrides.indexer_program.unwrap_or_else(Program::installed);
                let mut indexer = PackIndexer::new(program, max_object_bytes);
                indexer.limits = ChildLimits {
                    memory_bytes: overrides
                        .indexer_memory_bytes
                        .or(file.indexer_memory_bytes)
                        .unwrap_or(DEFAULT_INDEXER_MEMORY_BYTES),
                    // The indexer cannot usefully outlast the run it serves.
                    cpu_seconds: overrides
                        .run_timeout_seconds
                        .or(file.run_timeout_seconds)
                        .unwrap_or(Timeouts::default().run.as_secs())
                        .max(1),
                };
                indexer
            },
            reconcile_every: Some(
                overrides
                    .reconcile_seconds
                    .or(file.reconcile_seconds)
                    .unwrap_or(300),
            )
            .filter(|s| *s > 0)
            .map(Duration::from_secs),
            schedule: Policy {
                min_interval_seconds: overrides
                    .min_interval_seconds
                    .or(file.min_interval_seconds)
                    .unwrap_or(Policy::default().min_interval_seconds)
                    .max(1),
                max_failures: overrides
                    .max_failures
                    .or(file.max_failures)
                    .unwrap_or(Policy::default().max_failures)
                    .max(1),
                ..Policy::default()
            },
            caps: Caps {
                global: overrides
                    .max_concurrent_runs
                    .or(file.max_concurrent_runs)
                    .unwrap_or(Caps::default().global)
                    .max(1),
                per_host: overrides
                    .max_runs_per_host
                    .or(file.max_runs_per_host)
                    .unwrap_or(Caps::default().per_host)
                    .max(1),
            },
            health_window: overrides
                .health_window
                .or(file.health_window)
                .unwrap_or(100)
                .max(1),
            alerts: alert_target(
                overrides.alert_webhook_url.or(file.alert_webhook_url),
                overrides.alert_webhook_secret.or(file.alert_webhook_secret),
            )?,
            tls: tls_files(
                overrides.tls_cert.or(file.tls_cert),
                overrides.tls_key.or(file.tls_key),
            )?,
            ca_bundle: overrides.ca_bundle.or(file.ca_bundle),
            database: database(
                overrides.database_url.or(file.database_url),
                data_dir.join("mirrorhost.db"),
            )?,
            node_id: node_id(overrides.node_id.or(file.node_id))?,
            lease: Duration::from_secs(
                overrides
                    .lease_seconds
                    .or(file.lease_seconds)
                    .unwrap_or(30)
                    .max(3),
            ),
            proxy: proxy_settings(
                overrides.https_proxy.or(file.https_proxy),
                overrides.no_proxy.or(file.no_proxy),
            )?,
            webhook_spacing: Duration::from_millis(
                overrides
                    .webhook_spacing_ms
                    .or(file.webhook_spacing_ms)
                    .unwrap_or(2000),
            ),
            housekeeping: {
                let defaults = Housekeeping::default();
                Housekeeping {
                    pack_limit: overrides
                        .housekeeping_pack_limit
                        .or(file.housekeeping_pack_limit)
                        .unwrap_or(defaults.pack_limit)
                        .max(1),
                    grace: overrides
                        .prune_grace_hours
                        .or(file.prune_grace_hours)
                        .map_or(defaults.grace, |hours| Duration::from_secs(hours * 3600)),
                }
            },
            retention: {
                let defaults = Retention::default();
                Retention {
                    runs_per_mirror: overrides
                        .retain_runs
                        .or(file.retain_runs)
                        .unwrap_or(defaults.runs_per_mirror)
                        .max(1),
                    run_days: overrides
                        .retain_run_days
                        .or(file.retain_run_days)
                        .unwrap_or(defaults.run_days)
                        .max(1),
                    delivery_days: overrides
                        .retain_delivery_days
                        .or(file.retain_delivery_days)
                        .unwrap_or(defaults.delivery_days)
                        .max(1),
                    conflict_days: overrides
                        .retain_conflict_days
                        .or(file.retain_conflict_days)
                        .unwrap_or(defaults.conflict_days)
                        .max(1),
                }
            },
            timeouts: {
                let seconds = |given: Option<u64>, default: Duration| {
                    given.map_or(default, |s| Duration::from_secs(s.max(1)))
                };
                let defaults = Timeouts::default();
                Timeouts {
                    connect: seconds(
                        overrides
                            .connect_timeout_seconds
                            .or(file.connect_timeout_seconds),
                        defaults.connect,
                    ),
                    stall: seconds(
                        overrides
                            .stall_timeout_seconds
                            .or(file.stall_timeout_seconds),
                        defaults.stall,
                    ),
                    run: seconds(
                        overrides.run_timeout_seconds.or(file.run_timeout_seconds),
                        defaults.run,
                    ),
                }
            },
            plugin_cache_dir,
            data_dir,
        })
    }

    /// Uploaded plugins, and components an operator drops in.
    pub fn plugins_dir(&self) -> PathBuf {
        self.data_dir.join("plugins")
    }

    /// Where the projects' bare repositories live.
    pub fn repos_dir(&self) -> PathBuf {
        self.data_dir.join("repos")
    }
}

impl PluginLimitsFile {
    fn apply(self, defaults: Limits) -> Limits {
        Limits {
            timeout: self
                .timeout_ms
                .map_or(defaults.timeout, Duration::from_millis),
            fuel: self.fuel.unwrap_or(defaults.fuel),
            memory_bytes: self.memory_bytes.unwrap_or(defaults.memory_bytes),
            max_input_bytes: self.max_input_bytes.unwrap_or(defaults.max_input_bytes),
            max_output_bytes: self.max_output_bytes.unwrap_or(defaults.max_output_bytes),
            max_log_lines: self.max_log_lines.unwrap_or(defaults.max_log_lines),
            max_log_bytes: self.max_log_bytes.unwrap_or(defaults.max_log_bytes),
        }
    }
}

/// Alerts are always signed: a URL without a secret is refused.
fn alert_target(
    url: Option<url::Url>,
    secret: Option<String>,
) -> Result<Option<Target>, ConfigError> {
    match (url, secret.filter(|s| !s.is_empty())) {
        (None, _) => Ok(None),
        (Some(_), None) => Err(ConfigError::Invalid {
            field: "alert_webhook_secret",
            message: "alerts are signed: set a secret with the alert URL",
        }),
        (Some(url), Some(secret)) => Ok(Some(Target { url, secret })),
    }
}

fn node_id(id: Option<String>) -> Result<Option<String>, ConfigError> {
    match id {
        Some(id)
            if id.is_empty()
                || id.len() > 64
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            Err(ConfigError::Invalid {
                field: "node_id",
                message: "1 to 64 letters, digits, '-', '_' or '.'",
            })
        }
        id => Ok(id),
    }
}

fn database(url: Option<String>, sqlite: PathBuf) -> Result<Location, ConfigError> {
    match url.filter(|u| !u.is_empty()) {
        None => Ok(Location::Sqlite(sqlite)),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Location::Postgres(url))
        }
        Some(_) => Err(ConfigError::Invalid {
            field: "database_url",
            message: "give a postgres:// or postgresql:// URL (SQLite needs none)",
        }),
    }
}

fn proxy_settings(
    url: Option<String>,
    no_proxy: Option<String>,
) -> Result<ProxySettings, ConfigError> {
    let url = url.filter(|u| !u.is_empty());
    if let Some(url) = &url {
        crate::sync::proxy::parse_url(url).map_err(|message| ConfigError::Invalid {
            field: "https_proxy",
            message,
        })?;
    }
    // Read like curl and git do, when the service names its own proxy.
    let no_proxy = no_proxy
        .or_else(|| std::env::var("NO_PROXY").ok())
        .or_else(|| std::env::var("no_proxy").ok())
        .unwrap_or_default();
    Ok(ProxySettings {
        url,
        no_proxy: parse_no_proxy(&no_proxy),
    })
}

fn tls_files(cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (Some(_), None) => Err(ConfigError::Invalid {
            field: "tls_key",
            message: "HTTPS needs the certificate's private key too",
        }),
        (None, Some(_)) => Err(ConfigError::Invalid {
            field: "tls_cert",
            message: "HTTPS needs the certificate the key belongs to",
        }),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mirrorhost.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\nallow_local_remotes = true\ndata_dir = \"/srv/m\"\n\
             [plugins]\ntimeout_ms = 50\n",
        )
        .unwrap();
        let config = Config::resolve(Overrides {
            config: Some(path),
            data_dir: Some("/tmp/x".into()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(config.listen.port(), 9999);
        assert!(config.allow_local_remotes);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(
            config.plugin_cache_dir,
            PathBuf::from("/tmp/x/cache/plugins")
        );
        assert_eq!(config.plugin_limits.timeout, Duration::from_millis(50));
        assert_eq!(config.plugin_limits.fuel, Limits::default().fuel);
    }

    #[test]
    fn every_setting_is_documented_in_the_readme() {
        use clap::CommandFactory;
        #[derive(Debug, clap::Parser)]
        struct Serve {
            #[command(flatten)]
            overrides: Overrides,
        }
        let readme = include_str!("../../README.md");
        for arg in Serve::command().get_arguments() {
            let long = arg.get_long().unwrap();
            assert!(readme.contains(&format!("`--{long}`")), "--{long}");
            let env = arg.get_env().unwrap().to_str().unwrap();
            assert!(readme.contains(&format!("`{env}`")), "{env}");
        }
    }

    #[test]
    fn alerts_and_the_health_window_come_from_the_file_and_need_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(
            &path,
            "health_window = 20\nalert_webhook_url = \"https://alerts.example.com/hook\"\n",
        )
        .unwrap();
        let overrides = Overrides {
            config: Some(path.clone()),
            ..Overrides::default()
        };
        let err = Config::resolve(overrides.clone()).unwrap_err();
        assert!(err.to_string().contains("alert_webhook_secret"), "{err}");
        let config = Config::resolve(Overrides {
            alert_webhook_secret: Some("from-the-environment".into()),
            ..overrides
        })
        .unwrap();
        assert_eq!(config.health_window, 20);
        let target = config.alerts.unwrap();
        assert_eq!(target.url.as_str(), "https://alerts.example.com/hook");
        assert!(!format!("{target:?}").contains("from-the-environment"));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "allow_local_remote = true\n").unwrap();
        let err = Config::resolve(Overrides {
            config: Some(path),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("allow_local_remote"), "{err}");
    }
}
