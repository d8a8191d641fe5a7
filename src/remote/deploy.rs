//! `pvedeploy deploy`: creates a deployment from checked arguments, sets its environment, and follows it live to
//! its URL or its failing step.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::args;
use super::dotenv;
use super::follow::{watch, FollowArgs, Goal, Watch};
use super::progress::Progress;
use super::terminal::Terminal;
use super::{AgentArgs, Remote, RemoteError};
use crate::core::deployment::{Framework, GuestType};
use crate::core::names::{AppName, GitRef, HealthPath, NodeName, StartCommand};

/// Deploy a git repository as a new app and follow it until it runs (exit 0) or fails (exit 1).
#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// The deployment's name: a DNS label (lowercase letters, digits, hyphens; at most 63).
    #[arg(value_parser = args::app_name)]
    pub name: AppName,
    /// The repository's URL (https:// on an allowed host, as the agent's [repos] policy says).
    #[arg(long, value_name = "URL")]
    pub repo: String,
    /// The app's framework (how it is installed, built and started).
    #[arg(long, value_parser = args::framework())]
    pub framework: Framework,
    /// A virtual machine or a container [default: vm].
    #[arg(long = "type", value_name = "TYPE", value_parser = args::guest_type())]
    pub guest_type: Option<GuestType>,
    /// The branch to deploy [default: main].
    #[arg(long, value_parser = args::git_ref)]
    pub branch: Option<GitRef>,
    /// CPU cores [default: 1].
    #[arg(long, value_name = "N")]
    pub cpu: Option<u32>,
    /// Memory in MiB [default: 1024].
    #[arg(long, value_name = "N")]
    pub memory_mib: Option<u32>,
    /// Disk in GB [default: 10].
    #[arg(long, value_name = "N")]
    pub disk_gb: Option<u32>,
    /// Put the guest on this Proxmox node [default: the agent places it].
    #[arg(long, value_parser = args::node)]
    pub node: Option<NodeName>,
    /// The path the health check asks for [default: /].
    #[arg(long, value_name = "PATH", value_parser = args::health_path)]
    pub health_path: Option<HealthPath>,
    /// Start the app with this command line instead of the framework's (like a Procfile's web: line, run by
    /// /bin/sh -c as the app's user; not for static or laravel).
    #[arg(long, value_name = "COMMAND", value_parser = args::start_command)]
    pub start_command: Option<StartCommand>,
    /// How long the health check waits for the app, in seconds (1-600) [default: 120].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..=600))]
    pub health_timeout_secs: Option<u32>,
    /// The HTTP status the health check must see (100-599) [default: any 2xx or 3xx].
    #[arg(long, value_name = "STATUS", value_parser = clap::value_parser!(u16).range(100..=599))]
    pub health_status: Option<u16>,
    /// A path in the repository whose data outlives releases (repeatable; a trailing / for a directory)
    /// [default: the framework's, e.g. Django's db.sqlite3 and media/].
    #[arg(long = "persist", value_name = "PATH", value_parser = args::persistent_path)]
    pub persist: Vec<crate::core::release::PersistentPath>,
    /// Do not redeploy on a GitHub push to the branch (nor on a pushed tag).
    #[arg(long)]
    pub no_auto_redeploy: bool,
    /// Redeploy on a push only when one of its commits touched a file matching PATTERN (`*`, `**`, `?` as in GitHub
    /// Actions' filters; repeatable, at most 20) [default: any push to the branch].
    #[arg(long = "paths", value_name = "PATTERN", value_parser = args::glob)]
    pub paths: Vec<crate::core::glob::Glob>,
    /// Deploy a pushed tag matching PATTERN (e.g. `v*`) [default: tags deploy nothing].
    #[arg(long, value_name = "PATTERN", value_parser = args::glob)]
    pub deploy_tags: Option<crate::core::glob::Glob>,
    /// Make a preview deployment NAME-pr-N of every GitHub pull request into the branch.
    #[arg(long)]
    pub previews: bool,
    /// Preview pull requests from forks too (their code runs with the app's environment).
    #[arg(long, requires = "previews")]
    pub previews_from_forks: bool,
    /// Destroy a preview still up this many hours after it was made (1-720) [default: 72].
    #[arg(long, value_name = "HOURS", requires = "previews", value_parser = clap::value_parser!(u32).range(1..=720))]
    pub preview_ttl_hours: Option<u32>,
    /// An environment variable: KEY=VALUE, or KEY to take its value from this shell's environment (kept out of
    /// `ps` and shell history). Repeatable; wins over --env-file.
    #[arg(long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// A .env file of KEY=VALUE lines.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    #[command(flatten)]
    pub follow: FollowArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// Creates the deployment, sets its environment, follows it; answers the exit code.
pub async fn run(remote: &Remote, a: &DeployArgs) -> Result<u8, RemoteError> {
    // Everything is checked before the first request.
    let vars = dotenv::from_args(&a.env, "--env", a.env_file.as_deref())?;
    if a.repo.trim().is_empty() {
        return Err(super::arg("--repo", "must be the repository's URL"));
    }
    if a.paths.len() > crate::core::deployment::MAX_PATH_FILTERS {
        return Err(super::arg("--paths", format!("must hold at most {} patterns", crate::core::deployment::MAX_PATH_FILTERS)));
    }
    let mut body = json!({ "name": a.name.as_str(), "repo_url": a.repo, "framework": a.framework.as_str() });
    if let Some(t) = a.guest_type {
        body["type"] = t.as_str().into();
    }
    if let Some(b) = &a.branch {
        body["branch"] = b.as_str().into();
    }
    for (key, v) in [("cpu", a.cpu), ("memory_mib", a.memory_mib), ("disk_gb", a.disk_gb)] {
        if let Some(v) = v {
            body[key] = v.into();
        }
    }
    if let Some(n) = &a.node {
        body["node"] = n.to_string().into();
    }
    if let Some(h) = &a.health_path {
        body["health_path"] = h.as_str().into();
    }
    if let Some(c) = &a.start_command {
        body["start_command"] = c.as_str().into();
    }
    if let Some(t) = a.health_timeout_secs {
        body["health_timeout_secs"] = t.into();
    }
    if let Some(s) = a.health_status {
        body["health_status"] = s.into();
    }
    if !a.persist.is_empty() {
        body["persistent_paths"] = a.persist.iter().map(|p| p.as_str()).collect::<Vec<_>>().into();
    }
    if a.no_auto_redeploy {
        body["auto_redeploy"] = false.into();
    }
    if !a.paths.is_empty() {
        body["paths"] = a.paths.iter().map(|p| p.as_str()).collect::<Vec<_>>().into();
    }
    if let Some(t) = &a.deploy_tags {
        body["deploy_tags"] = t.as_str().into();
    }
    if a.previews {
        body["previews"] = true.into();
    }
    if a.previews_from_forks {
        body["previews_from_forks"] = true.into();
    }
    if let Some(h) = a.preview_ttl_hours {
        body["preview_ttl_hours"] = h.into();
    }
    let d = remote.create(&body).await?;
    // The first deploy reads the environment once the guest is provisioned, seconds from now: set it at once.
    if !vars.is_empty() {
        if let Err(e) = remote.put_env(&d.id, &vars.to_body()).await {
            eprintln!(
                "error: {} was created, but its environment was not set: {e}\n  it is being deployed without it; set it with `pvedeploy env set {}` and then `pvedeploy redeploy {}`",
                d.name, d.name, d.name
            );
            return Ok(2);
        }
    }
    let mut progress = Progress::new(Terminal::stdout(), &a.follow, &d.name);
    progress.accepted(Goal::Deploy, &d);
    if !vars.is_empty() && !a.follow.json {
        let names: Vec<&str> = vars.names().collect();
        println!("  environment: {} (values not shown)", names.join(", "));
    }
    if a.follow.detach {
        return Ok(0);
    }
    let w = Watch { remote, id: d.id.clone(), before: None, after: 0, timeout: Duration::from_secs(a.follow.timeout) };
    let end = watch(w, &mut progress).await?;
    Ok(progress.finish(Goal::Deploy, &end).exit_code())
}
