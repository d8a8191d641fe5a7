//! The lifecycle requests on an existing deployment — `redeploy`, `rollback`, `stop`, `start`, `destroy` (which
//! asks for the name to be typed again) — each followed live like `deploy`.

use std::io::{BufRead, Write};
use std::time::Duration;

use super::args::{self, DeploymentRef};
use super::follow::{log_end, watch, Before, FollowArgs, Goal, Watch};
use super::progress::Progress;
use super::terminal::{stdin_is_terminal, Terminal};
use super::{arg, AgentArgs, Need, Remote, RemoteError};
use crate::core::names::CommitSha;

/// Deploy the branch's newest commit again on the existing guest, and follow it.
#[derive(clap::Args, Debug)]
pub struct RedeployArgs {
    /// The deployment's name or id.
    #[arg(value_parser = args::deployment_ref)]
    pub name: DeploymentRef,
    /// Deploy this exact commit (40 or 64 hex digits) instead of the branch's newest.
    #[arg(long, value_name = "SHA", value_parser = args::commit)]
    pub commit: Option<CommitSha>,
    #[command(flatten)]
    pub follow: FollowArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// A request on one deployment that needs nothing more (rollback, stop, start).
#[derive(clap::Args, Debug)]
pub struct TargetArgs {
    /// The deployment's name or id.
    #[arg(value_parser = args::deployment_ref)]
    pub name: DeploymentRef,
    #[command(flatten)]
    pub follow: FollowArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// Destroy a deployment: stop and delete its guest, free its name.
#[derive(clap::Args, Debug)]
pub struct DestroyArgs {
    /// The deployment's name or id.
    #[arg(value_parser = args::deployment_ref)]
    pub name: DeploymentRef,
    /// Do not ask for the name to be typed again (required when standard input is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub follow: FollowArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// Asks for `name` to be typed again on the terminal; refuses at once when standard input is not one.
fn confirm_destroy(name: &str, summary: &str) -> Result<bool, RemoteError> {
    let refusal = format!("is required to destroy {name} when standard input is not a terminal (nothing was destroyed)");
    confirm_typed(refusal, &format!("This destroys {summary}: its guest and all its data are deleted.\nType the name ({name}) to confirm: "), name)
}

/// Shows `prompt` and reads a line: whether it is `expected`. Without a terminal, the `--yes` refusal, at once.
pub(crate) fn confirm_typed(refusal: String, prompt: &str, expected: &str) -> Result<bool, RemoteError> {
    if !stdin_is_terminal() {
        return Err(arg("--yes", refusal));
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{prompt}");
    let _ = err.flush();
    let mut typed = String::new();
    std::io::stdin().lock().read_line(&mut typed).map_err(|e| arg("--yes", format!("could not read the confirmation: {e}")))?;
    Ok(typed.trim() == expected)
}

/// Sends `goal`'s request for `target` and follows it; answers the exit code.
/// `commit` is the one a redeploy deploys (the branch's newest when `None`).
pub async fn run(remote: &Remote, goal: Goal, target: &DeploymentRef, follow: &FollowArgs, confirmed: bool, commit: Option<&CommitSha>) -> Result<u8, RemoteError> {
    if goal == Goal::Destroy && !confirmed && !stdin_is_terminal() {
        // Before any request: a script without --yes never destroys anything.
        confirm_destroy(target.as_str(), target.as_str())?;
    }
    let before = remote.deployment(target.as_str()).await?;
    if goal == Goal::Destroy && !confirmed {
        let guest = match (before.proxmox_id, &before.proxmox_node) {
            (Some(id), Some(node)) => format!(", guest {id} on {node}"),
            _ => String::new(),
        };
        let summary = format!("{} ({}{guest})", before.name, before.status);
        let ok = tokio::task::spawn_blocking({
            let name = before.name.clone();
            move || confirm_destroy(&name, &summary)
        })
        .await
        .map_err(|e| arg("--yes", e.to_string()))??;
        if !ok {
            eprintln!("The name did not match: {} was not destroyed.", before.name);
            return Ok(2);
        }
    }
    let after = log_end(remote, &before.id).await?;
    let d = match goal {
        Goal::Redeploy => match commit {
            Some(c) => remote.redeploy_commit(&before.id, c).await?,
            None => remote.act(&before.id, "redeploy", Need::deploy("redeploying")).await?,
        },
        Goal::Rollback => remote.act(&before.id, "rollback", Need::deploy("rolling back")).await?,
        Goal::Start => remote.act(&before.id, "start", Need::deploy("starting a deployment")).await?,
        Goal::Stop => remote.act(&before.id, "stop", Need::deploy("stopping a deployment")).await?,
        Goal::Destroy => remote.destroy(&before.id).await?,
        Goal::Deploy => unreachable!("a new deployment is made by `deploy::run`"),
    };
    let mut progress = Progress::new(Terminal::stdout(), follow, &d.name);
    progress.accepted(goal, &d);
    if follow.detach {
        return Ok(0);
    }
    let w = Watch { remote, id: d.id.clone(), before: Some(Before::from(&before)), after, timeout: Duration::from_secs(follow.timeout) };
    let end = watch(w, &mut progress).await?;
    Ok(progress.finish(goal, &end).exit_code())
}
