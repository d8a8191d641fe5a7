//! The `pvedeploy` command line: parses flags and configuration, then runs a subcommand. Wiring only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use pvedeploy::app::{redact_url, Application};
use pvedeploy::config::{Config, Overrides};
use pvedeploy::remote::actions::{DestroyArgs, RedeployArgs, TargetArgs};
use pvedeploy::remote::deploy::DeployArgs;
use pvedeploy::remote::env::EnvCommand;
use pvedeploy::remote::backups::BackupCommand;
use pvedeploy::remote::snapshots::SnapshotCommand;
use pvedeploy::remote::follow::Goal;
use pvedeploy::remote::list::ListArgs;
use pvedeploy::remote::logs::LogsArgs;
use pvedeploy::remote::manual::{CompletionsArgs, ManArgs};
use pvedeploy::remote::show::StatusArgs;
use pvedeploy::remote::{self, AgentArgs, RemoteError};

#[derive(Parser)]
#[command(name = "pvedeploy", version, propagate_version = true, about = "Deploy apps from git onto Proxmox VE", after_long_help = AFTER_HELP)]
struct Cli {
    /// Configuration file (default: ./pvedeploy.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

const AFTER_HELP: &str = "\
Every command but serve, recover, check, completions and man talks to a running agent: --url, else PVEDEPLOY_URL, else
http:// and the configured listen address (recover opens the store itself and needs the agent stopped). The token
comes from PVEDEPLOY_TOKEN or --token-file, never from a flag value.

Exit status of deploy, redeploy, rollback, start, stop and destroy: 0 the work ended well (running, stopped,
destroyed), 1 it failed, 2 a usage or connection problem (or --timeout passed), 130 Ctrl-C (watching stopped; the
work goes on). drift: 1 when guests differ from their records, 2 when any could not be checked (each named);
export: 1 when a deployment was skipped or could not be exported (each named); check: 1 when the cluster has
problems (each with its fix), 2 when something could not be checked. Other commands: 0, or 2 for a usage or
connection problem.";

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
    /// Rebuild lost records from the cluster: compare the guests carrying pvedeploy's marks with the
    /// store (the agent must be stopped), print the plan, and with --confirm record what the store lost
    /// and leave read-only mode. Only reads the cluster.
    Recover {
        /// Apply the plan (without it, only print it).
        #[arg(long)]
        confirm: bool,
        /// Directory of the agent's state (default ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Database URL: surrealkv://PATH (default <data_dir>/db).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Check that the configured Proxmox VE cluster is ready for pvedeploy (version, token and privileges,
    /// nodes, templates, storages, bridge, node SSH, VMID range, address pool) and print each problem with its
    /// fix. Reads the cluster directly from the configuration (the agent may run or not). Exits 0 when ready
    /// (warnings allowed), 1 with problems, 2 when something could not be checked.
    Check {
        /// How long the whole check may take, in seconds (a hung Proxmox is reported as unchecked then).
        #[arg(long, default_value_t = 20)]
        timeout: u64,
    },
    /// Write deployments' Terraform exports (bpg/proxmox), read from a running agent, to a folder.
    /// Exits 1 when any deployment was skipped or could not be exported (each named with the reason).
    Export {
        /// Deployment name or id.
        name: Option<String>,
        /// Every deployment that has a guest.
        #[arg(long, conflicts_with = "name")]
        all: bool,
        /// Folder to write `<name>/` into (default ./hcl-export).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// List the differences between the store, the live Proxmox guests and the exports.
    /// Exits 0 when there are none, 1 when there are, 2 when any deployment (named) or the agent could not be checked.
    Drift {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Deploy a git repository as a new app and follow it live until it runs (exit 0) or fails (exit 1).
    Deploy(DeployArgs),
    /// List deployments, newest first, as a table fitted to the terminal.
    List(ListArgs),
    /// Show one deployment: facts, URL, status history, releases with step timings.
    Status(StatusArgs),
    /// Print a deployment's log; -f follows it live until the deployment settles.
    Logs(LogsArgs),
    /// Deploy the branch's newest commit again, and follow it.
    Redeploy(RedeployArgs),
    /// Switch back to the previous release, and follow it.
    Rollback(TargetArgs),
    /// Start a stopped deployment's guest, and follow it.
    Start(TargetArgs),
    /// Stop a running deployment's guest, and follow it.
    Stop(TargetArgs),
    /// Destroy a deployment (asks for its name again unless --yes), and follow it.
    Destroy(DestroyArgs),
    /// A deployment's environment variables: set, unset, list (values are never shown).
    Env {
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a folder.
    Man(ManArgs),
    /// Manage the schedules of a running agent (cron: redeploy, snapshot, backup, stop, start, destroy, reconcile, drift).
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// A deployment's snapshots: list, take, delete, roll back to one.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// A deployment's vzdump backups: list, take, delete, restore the guest from one.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// List the schedules with their next run time.
    List {
        /// Print them as JSON (with the next 5 run times).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Add a schedule (the token needs the deploy scope; admin for destroy).
    Add {
        /// Cron expression: 5 fields (Unix) or 6/7 with seconds first, e.g. "0 3 * * *".
        #[arg(long)]
        cron: String,
        /// redeploy, snapshot, backup, stop, start, destroy, reconcile or drift.
        #[arg(long)]
        action: String,
        /// `all` or a deployment name or id.
        #[arg(long, default_value = "all")]
        target: String,
        /// IANA time zone the expression is read in (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// Snapshots to keep (snapshot action).
        #[arg(long)]
        keep: Option<i64>,
        /// Run once at start a time missed while no agent was up (default: skip it).
        #[arg(long)]
        catch_up: bool,
        /// Record it disabled.
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Remove a schedule and its history.
    Remove {
        /// The schedule id.
        id: String,
        #[command(flatten)]
        agent: AgentArgs,
    },
}

fn main() -> ExitCode {
    // Before any other thread: see `memory` for why, with figures.
    pvedeploy::memory::tune_allocator();
    // `RUST_BACKTRACE=1` (common in developer shells) also makes every error value capture a
    // backtrace, and SurrealDB creates errors on ordinary paths: provisioning took nearly twice as
    // long. Panics still print theirs; error values do not, unless `RUST_LIB_BACKTRACE` asks for it.
    // Set before any other thread exists.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    // SurrealDB starts a pool of at least 16 threads for blocking storage work; with surrealkv only
    // row counts run there. Four (its minimum) is plenty on the small hosts an agent runs on, and
    // saves twelve idle threads. An explicit setting wins.
    if std::env::var_os("SURREAL_KVS_THREADPOOL_SIZE").is_none() {
        std::env::set_var("SURREAL_KVS_THREADPOOL_SIZE", "4");
    }
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        remote::terminal::exit_quietly_on_closed_pipe();
    }
    pvedeploy::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let env: BTreeMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("PVEDEPLOY_")).collect();
    let config = cli.config.clone();
    let connect = |agent: &AgentArgs| remote::connect(agent, config.as_deref(), &env);
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
            app.run_until_stopped(shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Recover { confirm, data_dir, database_url } => {
            let over = Overrides { config: cli.config, listen: None, data_dir, database_url };
            let config = Config::load(&over, &env)?;
            let r = pvedeploy::app::recover(config, confirm).await?;
            match &r.was_untrusted {
                Some(why) => println!("the store is read-only: {why}\n"),
                None => println!("the store was trusted; comparing it with the cluster anyway\n"),
            }
            for line in r.plan.lines() {
                println!("{line}");
            }
            if r.plan.findings.is_empty() && r.plan.recorded_without_guest.is_empty() {
                println!("no guest on the cluster carries pvedeploy's tag, and the store records none");
            }
            match r.recorded {
                Some(n) => println!("\nrecorded {n} deployment(s); the store is trusted again: start the agent"),
                None => println!("\n{} deployment(s) to record. Nothing was changed: run again with --confirm to apply", r.plan.restorable()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { timeout } => {
            let over = Overrides { config: cli.config, listen: None, data_dir: None, database_url: None };
            let config = Config::load(&over, &env)?;
            let deadline = std::time::Duration::from_secs(timeout.clamp(1, 600));
            match pvedeploy::app::check(config, deadline).await? {
                pvedeploy::app::Checked::Report(r) => {
                    print!("{}", r.render());
                    Ok(ExitCode::from(r.exit_code()))
                }
                pvedeploy::app::Checked::NoCluster(why) => {
                    eprintln!("{why}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Export { name, all, out, agent } => {
            let out = out.unwrap_or_else(|| PathBuf::from("hcl-export"));
            Ok(finish(async { remote::terraform::export(&connect(&agent)?, name.as_deref(), all, &out).await }.await))
        }
        Command::Drift { json, agent } => Ok(finish(async { remote::terraform::drift(&connect(&agent)?, json).await }.await)),
        Command::Deploy(a) => Ok(finish(async { pvedeploy::remote::deploy::run(&connect(&a.agent)?, &a).await }.await)),
        Command::List(a) => Ok(finish(async { pvedeploy::remote::list::run(&connect(&a.agent)?, &a).await }.await)),
        Command::Status(a) => Ok(finish(async { pvedeploy::remote::show::run(&connect(&a.agent)?, &a).await }.await)),
        Command::Logs(a) => Ok(finish(async { pvedeploy::remote::logs::run(&connect(&a.agent)?, &a).await }.await)),
        Command::Redeploy(a) => Ok(finish(
            async {
                remote::actions::run(&connect(&a.agent)?, Goal::Redeploy, &a.name, &a.follow, false, a.commit.as_ref()).await
            }
            .await,
        )),
        Command::Rollback(a) => Ok(finish(async { remote::actions::run(&connect(&a.agent)?, Goal::Rollback, &a.name, &a.follow, false, None).await }.await)),
        Command::Start(a) => Ok(finish(async { remote::actions::run(&connect(&a.agent)?, Goal::Start, &a.name, &a.follow, false, None).await }.await)),
        Command::Stop(a) => Ok(finish(async { remote::actions::run(&connect(&a.agent)?, Goal::Stop, &a.name, &a.follow, false, None).await }.await)),
        Command::Destroy(a) => Ok(finish(async { remote::actions::run(&connect(&a.agent)?, Goal::Destroy, &a.name, &a.follow, a.yes, None).await }.await)),
        Command::Env { command } => Ok(finish(async { remote::env::run(&connect(command.agent())?, &command).await }.await)),
        Command::Snapshot { command } => Ok(finish(async { remote::snapshots::run(&connect(command.agent())?, &command).await }.await)),
        Command::Backup { command } => Ok(finish(async { remote::backups::run(&connect(command.agent())?, &command).await }.await)),
        Command::Completions(a) => {
            remote::manual::completions(&a, Cli::command(), &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man(a) => Ok(finish(remote::manual::man(&a, Cli::command(), &mut std::io::stdout()).map(|()| 0))),
        Command::Schedule { command } => {
            let agent = match &command {
                ScheduleCommand::List { agent, .. } | ScheduleCommand::Add { agent, .. } | ScheduleCommand::Remove { agent, .. } => agent,
            };
            let remote = connect(agent)?;
            match command {
                ScheduleCommand::List { json, .. } => {
                    let list = remote.schedules().await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&list)?);
                    } else {
                        for s in &list {
                            let keep = s.keep.map(|k| format!(" keep={k}")).unwrap_or_default();
                            let next = s.next_runs.first().map(|n| n.local.as_str()).unwrap_or(if s.enabled { "never" } else { "disabled" });
                            println!("{}\t{}\t{}\t{}{keep}\t{}\tnext {next}", s.id, s.cron, s.timezone, s.action, s.target);
                        }
                    }
                }
                ScheduleCommand::Add { cron, action, target, timezone, keep, catch_up, disabled, .. } => {
                    let mut body = serde_json::json!({ "cron": cron, "action": action, "target": target, "catch_up": catch_up, "enabled": !disabled });
                    if let Some(z) = timezone {
                        body["timezone"] = z.into();
                    }
                    if let Some(k) = keep {
                        body["keep"] = k.into();
                    }
                    let s = remote.add_schedule(&body).await?;
                    let next = s.next_runs.first().map(|n| n.local.clone()).unwrap_or_else(|| "never".into());
                    println!("{}\tnext run {next}", s.id);
                }
                ScheduleCommand::Remove { id, .. } => {
                    remote.remove_schedule(&id).await?;
                    println!("removed {id}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A command's result as its exit code; an error is printed in words first.
fn finish(r: Result<u8, RemoteError>) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
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
