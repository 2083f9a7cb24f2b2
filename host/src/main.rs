//! The `mirrorhost` command.

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mirrorhost::config::{Config, Overrides};
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve { overrides } => {
            let config = Config::resolve(overrides)?;
            let admin_token = std::env::var("MIRRORHOST_ADMIN_TOKEN").ok();
            let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
            runtime.block_on(async {
                let app = mirrorhost::server::build(config, admin_token.as_deref()).await?;
                mirrorhost::server::run(app).await
            })?;
        }
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
