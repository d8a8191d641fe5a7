//! `pvedeploy status NAME`: one deployment's facts, URL, recent status changes and releases with step timings.

use serde_json::json;

use super::args::{self, DeploymentRef};
use super::terminal::{clean, duration, Terminal};
use super::wire::{DeploymentJson, ReleaseJson};
use super::{AgentArgs, Remote, RemoteError};

/// Show one deployment: facts, URL, releases with their step timings.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The deployment's name or id.
    #[arg(value_parser = args::deployment_ref)]
    pub name: DeploymentRef,
    /// Print `{deployment, releases}` as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// How many releases and status changes are shown.
const SHOWN: usize = 5;

/// The text of `status`, line by line.
pub fn lines(d: &DeploymentJson, releases: &[ReleaseJson], term: &Terminal) -> Vec<String> {
    let mut out = vec![];
    let status = match d.status.as_str() {
        "running" => term.paint("32", &d.status).into_owned(),
        "failed" => term.paint("31", &d.status).into_owned(),
        _ => d.status.clone(),
    };
    out.push(format!("{}  {status}", d.name));
    let mut fact = |k: &str, v: String| out.push(format!("  {k:<11}{}", clean(&v)));
    fact("url", d.url.clone().unwrap_or_else(|| "-".into()));
    fact("commit", d.commit.clone().unwrap_or_else(|| "-".into()));
    fact("app", format!("{} in a {}, {} CPU, {} MiB, {} GB", d.framework, if d.guest_type == "lxc" { "container" } else { "VM" }, d.cpu, d.memory_mib, d.disk_gb));
    fact("repository", format!("{} (branch {})", d.repo_url, d.branch));
    let guest = match (d.proxmox_id, &d.proxmox_node) {
        (Some(id), Some(node)) => format!("{id} on {node}{}", d.ip_address.as_deref().map(|ip| format!(", {ip}")).unwrap_or_default()),
        _ => "-".into(),
    };
    fact("guest", guest);
    fact("id", d.id.clone());
    fact("created", d.created_at.clone());
    if let Some(at) = &d.deployed_at {
        fact("deployed", at.clone());
    }
    if let Some(e) = &d.error_message {
        fact("error", e.lines().next().unwrap_or("").to_string());
    }
    if !d.events.is_empty() {
        out.push(String::new());
        out.push("history (newest last):".into());
        for e in d.events.iter().rev().take(SHOWN).rev() {
            let from = e.from.as_deref().map(|f| format!("{f} → ")).unwrap_or_default();
            out.push(format!("  {}  {from}{}: {}", e.at, e.to, clean(e.message.lines().next().unwrap_or(""))));
        }
    }
    out.push(String::new());
    if releases.is_empty() {
        out.push("releases: none yet".into());
        return out;
    }
    out.push(format!("releases (newest first{}):", if releases.len() > SHOWN { format!(", {SHOWN} of {}", releases.len()) } else { String::new() }));
    for r in releases.iter().take(SHOWN) {
        let total: u64 = r.timings.iter().map(|t| t.ms).sum();
        let commit: String = r.commit.chars().take(12).collect();
        out.push(format!("  {}  {:<10} {:<8}  commit {commit}  {}", r.id, r.status, r.trigger, duration(total)));
        if !r.timings.is_empty() {
            let steps: Vec<String> = r.timings.iter().map(|t| format!("{} {}", t.step, duration(t.ms))).collect();
            out.push(format!("      {}", steps.join(" · ")));
        }
        if let Some(e) = &r.error {
            out.push(format!("      error: {}", clean(e.lines().next().unwrap_or(""))));
        }
    }
    out
}

pub async fn run(remote: &Remote, a: &StatusArgs) -> Result<u8, RemoteError> {
    let d = remote.deployment(a.name.as_str()).await?;
    let releases = remote.releases(&d.id).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json!({ "deployment": d, "releases": releases })).unwrap_or_default());
        return Ok(0);
    }
    for line in lines(&d, &releases, &Terminal::stdout()) {
        println!("{line}");
    }
    Ok(0)
}
