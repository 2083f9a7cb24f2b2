//! The `mirrorhost` command.

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mirrorhost::cli::{
    self, ConflictsCommand, Connection, CredentialsCommand, MirrorCommand, PluginCommand,
    ProjectCommand,
};
use mirrorhost::config::{Config, Overrides};
use mirrorhost::secrets::{self, MasterKey};
use mirrorhost::store::Store;
use mirrorhost::sync::index_pack;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "mirrorhost",
    version,
    about = "Git mirroring service with WebAssembly policy plugins"
)]
struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MIRRORHOST_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Manage the master key that seals stored credentials.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Mirrors of a running server: add, list, sync, health.
    Mirror {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: MirrorCommand,
    },
    /// Projects of a running server: housekeeping of their repositories.
    Project {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: ProjectCommand,
    },
    /// Conflicts of a running server's mirrors.
    Conflicts {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: ConflictsCommand,
    },
    /// Write and try plugins: scaffold a crate, run a component on an input.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Credentials of a running server's mirrors.
    Credentials {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: CredentialsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SecretsCommand {
    /// Re-seal every stored credential under a new master key. Run it with the
    /// service stopped (a running service keeps the old key until restarted).
    RotateKey {
        #[command(flatten)]
        overrides: Overrides,
    },
}

fn main() -> anyhow::Result<()> {
    // The pack indexer child, where `mirrorhost-index-pack` is not installed
    // beside this executable (sync/packs.rs): before the parser and the log
    // subscriber, which a child of every fetch does without.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == index_pack::SUBCOMMAND) {
        std::process::exit(index_pack::child_main(args));
    }
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve { overrides } => {
            let config = Config::resolve(overrides)?;
            let admin_token = std::env::var("MIRRORHOST_ADMIN_TOKEN").ok();
            let master_key = std::env::var("MIRRORHOST_MASTER_KEY").ok();
            let secrets = mirrorhost::server::Secrets {
                admin_token: admin_token.as_deref(),
                master_key: master_key.as_deref(),
            };
            let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
            runtime.block_on(async {
                let app = mirrorhost::server::build(config, &secrets).await?;
                mirrorhost::server::run(app).await
            })?;
        }
        Command::Secrets {
            command: SecretsCommand::RotateKey { overrides },
        } => rotate_key(Config::resolve(overrides)?)?,
        Command::Mirror {
            connection,
            command,
        } => client_command(cli::mirror(&connection, command))?,
        Command::Project {
            connection,
            command,
        } => client_command(cli::project(&connection, command))?,
        Command::Conflicts {
            connection,
            command,
        } => client_command(cli::conflicts(&connection, command))?,
        Command::Credentials {
            connection,
            command,
        } => client_command(cli::credentials(&connection, command))?,
        Command::Plugin { command } => {
            if let Err(error) = cli::plugin(command) {
                eprintln!("error: {error}");
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

/// Runs a command against the server. Its error is the whole message: printed
/// as it is, with exit status 1.
fn client_command(command: impl Future<Output = Result<(), cli::CliError>>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    if let Err(error) = runtime.block_on(command) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
    Ok(())
}

fn rotate_key(config: Config) -> anyhow::Result<()> {
    let from_env = std::env::var("MIRRORHOST_MASTER_KEY").ok();
    let old = MasterKey::load(from_env.as_deref(), &config.data_dir)?;
    let store = Store::open_at(&config.database)?;
    let new = MasterKey::generate();
    let key_in_file = from_env.is_none();
    let moved = secrets::rotate(&store, &config.data_dir, &old, &new, key_in_file)?;
    eprintln!(
        "re-sealed {moved} stored secrets: key {} -> {}",
        old.id(),
        new.id()
    );
    if key_in_file {
        eprintln!(
            "the new key is in {}",
            config.data_dir.join(secrets::KEY_FILE).display()
        );
    } else {
        // The operator owns the variable: hand the key over on stdout only.
        eprintln!("set MIRRORHOST_MASTER_KEY to the key printed on standard output");
        println!("{}", new.to_hex());
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
