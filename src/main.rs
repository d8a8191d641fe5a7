//! The `pvedeploy` command line: parses flags and configuration, then runs a subcommand. Wiring only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pvedeploy::app::{redact_url, Application};
use pvedeploy::config::{Config, Overrides};

#[derive(Parser)]
#[command(name = "pvedeploy", version, about = "Deploy apps from git onto Proxmox VE")]
struct Cli {
    /// Configuration file (default: ./pvedeploy.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: HTTP API, dashboard and background work.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
        /// Directory for the embedded database and other state (default ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Database URL: surrealkv://PATH, mem:// or ws://HOST:PORT.
        #[arg(long)]
        database_url: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    pvedeploy::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let env: BTreeMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("PVEDEPLOY_")).collect();
    match cli.command {
        Command::Serve { listen, data_dir, database_url } => {
            // Handlers first: a SIGTERM that arrives while starting must stop us gracefully too.
            let shutdown = shutdown_signal()?;
            let over = Overrides { config: cli.config, listen, data_dir, database_url };
            let config = Config::load(&over, &env)?;
            tracing::info!(
                listen = %config.listen,
                data_dir = %config.data_dir.display(),
                database = %redact_url(&config.database.url),
                sources = ?config.sources,
                "starting pvedeploy"
            );
            let app = Application::build(config).await?;
            if let Some(token) = &app.generated_admin_token {
                println!("No API token existed, so an admin token was generated. It is shown only this once; keep it safe:\n\n    {token}\n");
            }
            tracing::info!(addr = %app.addr(), "serving the API at http://{}/api/v1 (docs at /docs)", app.addr());
            app.run_until_stopped(shutdown).await
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now and returns a future that resolves on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("shutdown requested; finishing in-flight work");
    })
}
