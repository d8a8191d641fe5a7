//! `pvedeploy backup list|take|delete|restore NAME …`: a deployment's vzdump backups through the agent. Backup names
//! are parsed (vzdump's file names, or a Proxmox Backup Server snapshot's `ct-<vmid>-<UTC time>`) before any request;
//! a restore in place asks for the backup's name again, or `--yes`; a restore into a new deployment (`--as NEW`)
//! overwrites nothing and asks nothing. NAME may be a destroyed deployment's id: its backups outlive it.

use serde::{Deserialize, Serialize};

use super::args::{self, DeploymentRef};
use super::{segment, AgentArgs, Need, Remote, RemoteError};
use crate::core::backup::BackupId;

/// A backup's name as listed (`vzdump-lxc-10000-2030_01_02-03_00_00.tar.zst`, or `ct-10000-2030-01-02T03:00:00Z` on
/// a Proxmox Backup Server storage), checked for either shape.
fn backup_name(s: &str) -> Result<String, String> {
    BackupId::on_storage("storage", s, "backup").map(|b| b.name()).map_err(|e| e.message)
}

#[derive(clap::Subcommand, Debug)]
pub enum BackupCommand {
    /// The deployment's backups, oldest first: name, time, size, who took it.
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
    /// Back the guest up now (no retention ever deletes a backup taken by hand); waits until vzdump ends.
    Take {
        #[arg(value_parser = args::deployment_ref)]
        name: DeploymentRef,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Delete one of the deployment's backups.
    Delete {
        #[arg(value_parser = args::deployment_ref)]
        name: DeploymentRef,
        /// The backup's name, as listed.
        #[arg(value_parser = backup_name)]
        backup: String,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Restore from a backup (admin). In place: the guest is stopped, overwritten, started and health-checked; what
    /// changed since the backup is lost; asks for the backup's name again unless --yes. With --as NEW: into a new
    /// deployment NEW (same spec, new guest, the commit the backup served), nothing overwritten; NAME may be a
    /// destroyed deployment's id.
    Restore {
        #[arg(value_parser = args::deployment_ref)]
        name: DeploymentRef,
        #[arg(value_parser = backup_name)]
        backup: String,
        /// Restore into a new deployment with this name instead of over the guest.
        #[arg(long = "as", value_name = "NEW", value_parser = args::app_name)]
        as_new: Option<crate::core::names::AppName>,
        /// Do not ask (required for a restore in place when standard input is not a terminal).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        agent: AgentArgs,
    },
}

impl BackupCommand {
    pub fn agent(&self) -> &AgentArgs {
        match self {
            BackupCommand::List { agent, .. } | BackupCommand::Take { agent, .. } | BackupCommand::Delete { agent, .. } | BackupCommand::Restore { agent, .. } => agent,
        }
    }
}

/// A backup as the agent shows it.
#[derive(Debug, Deserialize, Serialize)]
pub struct BackupJson {
    pub name: String,
    pub volid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<String>,
    #[serde(default)]
    pub size_bytes: u64,
    #[serde(default)]
    pub taken_by: String,
    #[serde(default)]
    pub protected: bool,
}

#[derive(Debug, Deserialize)]
struct BackupListJson {
    items: Vec<BackupJson>,
}

/// Runs the command; answers the exit code.
pub async fn run(remote: &Remote, command: &BackupCommand) -> Result<u8, RemoteError> {
    match command {
        BackupCommand::List { name, json, .. } => {
            let list: BackupListJson = remote.call(reqwest::Method::GET, &path(name), None, Need::read("listing backups")).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&list.items).unwrap_or_default());
            }
            for b in list.items.iter().filter(|_| !json) {
                let size = b.size_bytes.to_string();
                let line = [b.name.as_str(), b.taken_at.as_deref().unwrap_or("-"), &size, &b.taken_by, if b.protected { "protected" } else { "-" }].join("\t");
                println!("{}", line.replace(|c: char| c.is_control() && c != '\t', " "));
            }
        }
        BackupCommand::Take { name, .. } => {
            let b: BackupJson = remote.call(reqwest::Method::POST, &path(name), Some(&serde_json::json!({})), Need::deploy("taking a backup")).await?;
            println!("{}\tmade {}", b.name, b.taken_at.unwrap_or_default());
        }
        BackupCommand::Delete { name, backup, .. } => {
            let at = format!("{}/{}", path(name), segment(backup));
            remote.call::<serde_json::Value>(reqwest::Method::DELETE, &at, None, Need::deploy("deleting a backup")).await?;
            println!("deleted {backup}");
        }
        BackupCommand::Restore { name, backup, as_new: Some(new), .. } => {
            let at = format!("{}/{}/restore", path(name), segment(backup));
            let body = serde_json::json!({ "as_new": { "name": new.as_str() } });
            let d: serde_json::Value = remote.call(reqwest::Method::POST, &at, Some(&body), Need::admin("restoring a backup")).await?;
            let id = d["id"].as_str().unwrap_or_default();
            println!("{id}\trestoring {backup} of {name} into new deployment {new}; follow it with `pvedeploy logs {new} -f`");
        }
        BackupCommand::Restore { name, backup, yes, as_new: None, .. } => {
            if !yes && !confirm(name, backup)? {
                eprintln!("not confirmed; nothing was restored");
                return Ok(2);
            }
            let at = format!("{}/{}/restore", path(name), segment(backup));
            remote.call::<serde_json::Value>(reqwest::Method::POST, &at, Some(&serde_json::json!({})), Need::admin("restoring a backup")).await?;
            println!("restoring {name} from {backup}; follow it with `pvedeploy logs {name} -f`");
        }
    }
    Ok(0)
}

fn path(name: &DeploymentRef) -> String {
    format!("/deployments/{}/backups", segment(name.as_str()))
}

/// Asks for the backup's name again on the terminal; refuses at once when standard input is not one.
fn confirm(name: &DeploymentRef, backup: &str) -> Result<bool, RemoteError> {
    let refusal = format!("is required to restore {name} when standard input is not a terminal (nothing was restored)");
    let prompt = format!("This restores {name} from {backup}: its guest is overwritten and restarts, and what changed since is lost.\nType the backup's name ({backup}) to confirm: ");
    super::actions::confirm_typed(refusal, &prompt, backup)
}
