//! Start-up and shutdown: data dir, admin token, database, plugins, then the
//! HTTP server until SIGTERM or Ctrl-C.

mod tls;

use std::sync::Arc;

use tokio::net::TcpListener;

pub use tls::{Certificates, TlsError, TlsListener};

use crate::alerts::Alerts;
use crate::api;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::jobs::{Node, Queue};
use crate::plugins::{PluginError, Registry, Runtime, uploaded};
use crate::secrets::{AdminToken, MasterKey, SecretsError, TokenSource};
use crate::service::{self, App, LiveRuns};
use crate::store::{Backend, Store, StoreError};
use crate::sync::packs::Program;
use crate::sync::throttle::Bucket;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data dir {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("admin token: {0}")]
    Token(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Serve(std::io::Error),
    #[error("cannot set the remote timeouts: {0}")]
    Timeouts(git2::Error),
    #[error("cannot install the TLS stream for https remotes: {0}")]
    TlsStream(git2::Error),
    #[error("cannot install the socket stream for http and ssh remotes: {0}")]
    SocketStream(git2::Error),
    #[error("cannot install the transport of file:// remotes: {0}")]
    LocalTransport(git2::Error),
    #[error("start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Git(#[from] crate::sync::housekeeping::HousekeepingError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    CaBundle(#[from] crate::sync::tls::TrustError),
}

/// Everything the service holds, built from `config`. Separate from [`serve`] so
/// that tests and tools can build the same state without a socket.
pub async fn build(config: Config, secrets: &Secrets<'_>) -> Result<App, ServerError> {
    crate::memory::bound_retention();
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let (admin_token, source) =
        AdminToken::load(secrets.admin_token, &config.data_dir).map_err(ServerError::Token)?;
    let master_key = MasterKey::load(secrets.master_key, &config.data_dir)?;
    match source {
        TokenSource::Environment => tracing::info!("admin token from MIRRORHOST_ADMIN_TOKEN"),
        TokenSource::File(path) => tracing::info!(path = %path.display(), "admin token from file"),
        TokenSource::Generated(path) => {
            tracing::info!(path = %path.display(), "generated a new admin token")
        }
    }
    config.timeouts.install().map_err(ServerError::Timeouts)?;
    crate::sync::tls_stream::register().map_err(ServerError::TlsStream)?;
    crate::sync::plain_stream::register().map_err(ServerError::SocketStream)?;
    crate::sync::local_transport::register().map_err(ServerError::LocalTransport)?;
    if let Some(bundle) = &config.ca_bundle {
        let count = crate::sync::tls::trust_bundle(bundle)?;
        tracing::info!(path = %bundle.display(), count, "trusting the ca_bundle's authorities for https remotes");
    }
    let git = crate::sync::housekeeping::check_git()?;
    tracing::debug!(%git, "git for housekeeping");
    match &config.pack_indexer.program {
        Program::Dedicated(_) => tracing::info!("pack indexer: mirrorhost-index-pack"),
        Program::Subcommand(_) => tracing::info!(
            "pack indexer: `mirrorhost index-pack` (mirrorhost-index-pack, which starts in \
             less memory, is not installed beside this executable)"
        ),
    }
    let store = Store::open_at(&config.database)?;
    let node = node_of(&config, store.backend())?;
    tracing::info!(node = %node.id, "this node");
    let interrupted = store.with(|c| crate::store::runs::recover(c, &node.id))?;
    // Beat before the first claim, so no other node takes this one's first
    // runs for a silent node's.
    store.with(|c| crate::store::cluster::heartbeat(c, &node.id, node.lease_ms()))?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "runs interrupted by the last stop are marked and retried"
        );
    }
    let leftovers = crate::sync::remove_leftovers(&config.repos_dir());
    if leftovers != crate::sync::Leftovers::default() {
        tracing::warn!(
            partial_packs = leftovers.partial_packs,
            partial_lfs_objects = leftovers.partial_lfs_objects,
            ref_locks = leftovers.ref_locks,
            "removed what runs cut off by the last stop left in the repositories"
        );
    }
    let (limits, cache_dir) = (config.plugin_limits, config.plugin_cache_dir.clone());
    // Compiling the built-ins is CPU work: keep it off the async workers.
    let plugins_dir = config.plugins_dir();
    let plugins = tokio::task::spawn_blocking(move || {
        let registry = Registry::with_builtins(Runtime::new(limits, Some(cache_dir))?)?;
        for loaded in uploaded::load_all(&registry, &plugins_dir) {
            match loaded {
                Ok(meta) => {
                    tracing::info!(plugin = %meta.name, world = %meta.world, "plugin loaded")
                }
                Err((path, error)) => {
                    tracing::error!(path = %path.display(), %error, "plugin skipped")
                }
            }
        }
        Ok::<_, PluginError>(registry)
    })
    .await??;
    tracing::info!(count = plugins.list().len(), "plugins loaded");
    // A first start compiled the built-ins: return what the compiler freed.
    crate::memory::release_free();
    let config_schedule = config.schedule;
    let bandwidth_cap = config.max_bytes_per_second;
    let alerts = config.alerts.clone();
    Ok(App {
        repos_dir: config.repos_dir(),
        jobs: Queue::new(config.caps, node),
        config,
        store,
        plugins,
        admin_token,
        master_key,
        schedule_policy: config_schedule,
        clock: Arc::new(SystemClock),
        bandwidth: bandwidth_cap.map(|rate| Arc::new(std::sync::Mutex::new(Bucket::new(rate)))),
        alerts: Alerts::start(alerts),
        metrics: crate::telemetry::handle(),
        live: LiveRuns::default(),
        webhook_routing: Default::default(),
        webhook_tally: Default::default(),
        project_locks: Default::default(),
    })
}

/// This node: its name from the settings, or the one kept in the data dir
/// (made up at the first start), so that a restarted node finds its leases.
/// On PostgreSQL other nodes queue runs too; the dispatcher then looks at
/// the queue a few times per lease term besides the database's notices.
fn node_of(config: &Config, backend: Backend) -> Result<Node, ServerError> {
    let kept = config.data_dir.join("node-id");
    let id = match &config.node_id {
        Some(id) => id.clone(),
        None => match std::fs::read_to_string(&kept) {
            Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
            _ => {
                let id = format!("node-{}", hex::encode(rand::random::<[u8; 6]>()));
                crate::fsutil::write_private(&kept, id.as_bytes()).map_err(|source| {
                    ServerError::DataDir {
                        path: kept.clone(),
                        source,
                    }
                })?;
                id
            }
        },
    };
    Ok(match backend {
        Backend::Sqlite => Node::alone(id, config.lease),
        Backend::Postgres => Node {
            id,
            lease: config.lease,
            poll: config.lease / 3,
        },
    })
}

/// Secrets handed over from the environment (`MIRRORHOST_ADMIN_TOKEN`,
/// `MIRRORHOST_MASTER_KEY`); each falls back to its file in the data dir.
#[derive(Debug, Clone, Copy, Default)]
pub struct Secrets<'a> {
    pub admin_token: Option<&'a str>,
    pub master_key: Option<&'a str>,
}

/// Binds the configured address and serves (HTTPS when the settings name a
/// certificate, reloaded on SIGHUP) until SIGTERM or Ctrl-C.
pub async fn run(app: App) -> Result<(), ServerError> {
    let addr = app.config.listen;
    let certificates = app.config.tls.clone().map(Certificates::load).transpose()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen { addr, source })?;
    let app = Arc::new(app);
    match certificates {
        None => serve(app, listener, shutdown_signal()).await,
        Some(certificates) => {
            let reloads = tls::reload_on_sighup(certificates.clone());
            let listener = TlsListener::new(listener, certificates)?;
            tracing::info!("serving HTTPS; SIGHUP reloads the certificate");
            let served = serve(app, listener, shutdown_signal()).await;
            reloads.abort();
            served
        }
    }
}

/// Serves on `listener` (a `TcpListener`, or a [`TlsListener`]) until
/// `shutdown` completes, then lets in-flight requests finish. The bound
/// address is logged as `listening bound=<addr>`.
pub async fn serve<L>(
    app: Arc<App>,
    listener: L,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    let bound = listener.local_addr().map_err(ServerError::Serve)?;
    let background = service::background::start(&app);
    tracing::info!(%bound, "listening");
    axum::serve(listener, api::router(app))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServerError::Serve)?;
    // Runs in flight are cut off here; the next start marks them interrupted
    // and retries them.
    drop(background);
    tracing::info!("shut down");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}
