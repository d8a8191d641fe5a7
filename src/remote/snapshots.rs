//! `pvedeploy snapshot list|take|delete|rollback NAME …`: a deployment's snapshots through the agent. Snapshot names
//! are parsed (Proxmox's rule) before any request; a rollback asks for the snapshot's name again, or `--yes`.

use serde::{Deserialize, Serialize};

use super::args::{self, DeploymentRef};
use super::{segment, AgentArgs, Need, Remote, RemoteError};
use crate::core::snapshot::SnapshotName;

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCommand {
    /// The guest's snapshots, oldest first: name, time, who took it, kind, description.
    List {
        /// The deployment's name or id.
        #[arg(value_parser = args::deployment_ref)]
        name: DeploymentRef,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Take a snapshot by hand (no schedule ever deletes it).
    Take {
        /// The deployment's name or id.
        #[arg(value_parser = args::deployment_ref)]
        name: DeploymentRef,
        /// The snapshot's name: 2-40 characters, a letter, then letters, digits, `_` or `-`; not `pvd-…`.
        #[arg(value_parser = |s: &str| SnapshotName::parse(s).map_err(|e| e.message))]
        snapshot: SnapshotName,
        /// One line, at most 200 characters.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Delete a snapshot (a schedule's too).
    Delete {
        #[arg(value_parser = args::deployment_ref)]
        name: DeploymentRef,
        #[arg(value_parser = |s: &str| SnapshotName::parse_existing(s).map_err(|e| e.message))]
        snapshot: SnapshotName,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Roll the guest back to a snapshot (admin): it is stopped, rolled back, started and health-checked; what changed
    /// since the snapshot is lost. Asks for the snapshot's name again unless --yes.
    Rollback {
        #[arg(value_parser = args::deployment_ref)]
        name: DeploymentRef,
        #[arg(value_parser = |s: &str| SnapshotName::parse_existing(s).map_err(|e| e.message))]
        snapshot: SnapshotName,
        /// Do not ask (required when standard input is not a terminal).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        agent: AgentArgs,
    },
}

impl SnapshotCommand {
    pub fn agent(&self) -> &AgentArgs {
        match self {
            SnapshotCommand::List { agent, .. } | SnapshotCommand::Take { agent, .. } | SnapshotCommand::Delete { agent, .. } | SnapshotCommand::Rollback { agent, .. } => agent,
        }
    }
}

/// A snapshot as the agent shows it.
#[derive(Debug, Deserialize, Serialize)]
pub struct SnapshotJson {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_by: Option<String>,
    pub kind: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize)]
struct SnapshotListJson {
    items: Vec<SnapshotJson>,
}

/// Runs the command; answers the exit code.
pub async fn run(remote: &Remote, command: &SnapshotCommand) -> Result<u8, RemoteError> {
    match command {
        SnapshotCommand::List { name, json, .. } => {
            let list: SnapshotListJson = remote.call(reqwest::Method::GET, &path(name), None, Need::read("listing snapshots")).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&list.items).unwrap_or_default());
            }
            for s in list.items.iter().filter(|_| !json) {
                let line = [s.name.as_str(), s.taken_at.as_deref().unwrap_or("-"), s.taken_by.as_deref().unwrap_or("-"), &s.kind, &s.description].join("\t");
                println!("{}", line.replace(|c: char| c.is_control() && c != '\t', " "));
            }
        }
        SnapshotCommand::Take { name, snapshot, description, .. } => {
            let body = serde_json::json!({ "name": snapshot.as_str(), "description": description.clone().unwrap_or_default() });
            let s: SnapshotJson = remote.call(reqwest::Method::POST, &path(name), Some(&body), Need::deploy("taking a snapshot")).await?;
            println!("{}\ttaken {}", s.name, s.taken_at.unwrap_or_default());
        }
        SnapshotCommand::Delete { name, snapshot, .. } => {
            let at = format!("{}/{}", path(name), segment(snapshot.as_str()));
            remote.call::<serde_json::Value>(reqwest::Method::DELETE, &at, None, Need::deploy("deleting a snapshot")).await?;
            println!("deleted {snapshot}");
        }
        SnapshotCommand::Rollback { name, snapshot, yes, .. } => {
            if !yes && !confirm(name, snapshot)? {
                eprintln!("not confirmed; nothing was rolled back");
                return Ok(2);
            }
            let at = format!("{}/{}/rollback", path(name), segment(snapshot.as_str()));
            remote.call::<serde_json::Value>(reqwest::Method::POST, &at, Some(&serde_json::json!({})), Need::admin("rolling back to a snapshot")).await?;
            println!("rolling {name} back to {snapshot}; follow it with `pvedeploy logs {name} -f`");
        }
    }
    Ok(0)
}

fn path(name: &DeploymentRef) -> String {
    format!("/deployments/{}/snapshots", segment(name.as_str()))
}

/// Asks for the snapshot's name again on the terminal; refuses at once when standard input is not one.
fn confirm(name: &DeploymentRef, snapshot: &SnapshotName) -> Result<bool, RemoteError> {
    let refusal = format!("is required to roll {name} back when standard input is not a terminal (nothing was rolled back)");
    let prompt = format!("This rolls {name} back to {snapshot}: its guest restarts and what changed since is lost.\nType the snapshot's name ({snapshot}) to confirm: ");
    super::actions::confirm_typed(refusal, &prompt, snapshot.as_str())
}
