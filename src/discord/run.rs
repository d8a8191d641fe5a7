//! The work behind a deferred Discord reply: asks the engine, follows a `/deploy` on the bus, edits the original message.

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use crate::core::command::{Action, Actor};
use crate::core::deployment::Spec;
use crate::core::status::Status;
use crate::engine::resources::FiguresError;
use crate::engine::{EngineError, Event};
use crate::core::listing::{Filter, PageStart};

use super::command::DiscordCommand;
use super::interaction::Interaction;
use super::reply::{Button, ButtonStyle, Reply};
use super::{command, render, DiscordDoor};

/// Discord's interaction tokens live 15 minutes: the `/deploy` message is followed for a little less.
const FOLLOW_FOR: Duration = Duration::from_secs(14 * 60);
/// At most one edit of a followed message per this interval (Discord's webhook rate limits).
const EDIT_SPACING: Duration = Duration::from_millis(750);
/// How many deployments `/list` shows.
const LIST_SIZE: u32 = 15;
/// Log lines shown when a deployment fails.
const FAILURE_LINES: u32 = 10;

/// Runs a read, an action or a destroy question, then edits the reply.
pub async fn command(door: DiscordDoor, i: Interaction, cmd: DiscordCommand, actor: Actor) {
    let private = cmd.private();
    let reply = answer(&door, &i, cmd, &actor).await;
    door.edit(&i, &reply, private).await;
}

/// How many schedules `/schedules` shows.
const SCHEDULES_SHOWN: usize = 20;

async fn answer(door: &DiscordDoor, i: &Interaction, cmd: DiscordCommand, actor: &Actor) -> Reply {
    let engine = &door.inner.engine;
    let result: Result<Reply, EngineError> = async {
        Ok(match cmd {
            DiscordCommand::Status { name: Some(name), .. } => render::status_of(&engine.find(&name).await?),
            DiscordCommand::Status { name: None, .. } => render::summary(&engine.deployment_stats().await?.by_status),
            DiscordCommand::List { .. } => {
                let page = engine.list_deployments(&Filter::default(), LIST_SIZE, &PageStart::First).await?;
                render::list(&page.items, page.total)
            }
            DiscordCommand::Logs { name, lines, .. } => {
                let d = engine.find(&name).await?;
                render::logs(&d, &engine.tail_log(&d.id, lines).await?)
            }
            DiscordCommand::Snapshots { name, .. } => {
                let (d, list) = engine.snapshots(&name).await?;
                render::snapshots(&d, &list)
            }
            DiscordCommand::Backups { name, .. } => {
                let (d, list) = engine.backups(&name).await?;
                render::backups(&d, &list)
            }
            DiscordCommand::Schedules { name, .. } => {
                let only = match name {
                    Some(n) => Some(engine.find(&n).await?.id),
                    None => None,
                };
                let scheduler = &door.inner.schedules;
                let (items, total) = scheduler.list(500, 0).await?;
                let mut names = super::complete::TargetNames::default();
                let mut shown = Vec::new();
                let mut matched = 0u64;
                for (s, _) in items {
                    if only.as_ref().is_some_and(|id| !super::complete::targets(&s, id)) {
                        continue;
                    }
                    matched += 1;
                    if shown.len() < SCHEDULES_SHOWN {
                        let target = names.of(door, &s).await;
                        let next = scheduler.next_runs(&s, 1).first().copied();
                        shown.push((s, target, next));
                    }
                }
                render::schedules(&shown, if only.is_some() { matched } else { total })
            }
            DiscordCommand::Unschedule { schedule } => {
                let scheduler = &door.inner.schedules;
                let s = match scheduler.get(&schedule).await {
                    Ok(s) => s,
                    Err(EngineError::NotFound(_)) => return Ok(Reply::private(format!("No schedule has the id `{}`.", schedule.replace('`', "'")))),
                    Err(e) => return Err(e),
                };
                if s.spec.action.needs_admin() {
                    return Ok(Reply::private("A destroy schedule can only be deleted with an admin token (`DELETE /api/v1/schedules/{id}`); nothing was changed."));
                }
                let target = super::complete::TargetNames::default().of(door, &s).await;
                scheduler.remove(&s.id, actor).await?;
                Reply::text(format!("🗓️ Schedule `{}` ({}) deleted.", s.id, render::schedule_line(&s, &target)))
            }
            DiscordCommand::Resources { .. } => match engine.cluster_figures().await {
                Ok(f) => render::resources(&f),
                Err(FiguresError::NotConfigured) => Reply::private("No Proxmox cluster is configured on this agent."),
                Err(FiguresError::Pve(e)) => Reply::private(format!("Proxmox did not answer: {e}")),
            },
            DiscordCommand::Act { action, name } => render::accepted(action.as_str(), &engine.act(&name, action, actor).await?),
            DiscordCommand::AskDestroy { name } => {
                let d = engine.find(&name).await?;
                if matches!(d.status, Status::Destroying | Status::Destroyed) {
                    return Ok(Reply::text(format!("**{}** is already {}.", d.spec.name, d.status)));
                }
                let caller = i.caller.as_ref().map(|c| c.id).unwrap_or(crate::config::discord::Snowflake(0));
                let nonce = door.inner.confirmations.issue(d.id.as_str(), caller, std::time::Instant::now());
                let guest = d.proxmox_id.map(|v| format!(" and its guest {v}")).unwrap_or_default();
                Reply {
                    buttons: vec![
                        Button::action(format!("Destroy {}", d.spec.name), command::confirm_id(d.id.as_str(), &nonce), ButtonStyle::Danger),
                        Button::action("Cancel", command::cancel_id(&nonce), ButtonStyle::Secondary),
                    ],
                    ..Reply::text(format!(
                        "⚠️ Destroy **{}** (`{}`, {}){guest}? This cannot be undone. Only the person who asked can confirm; the buttons expire in {} seconds.",
                        d.spec.name,
                        d.id,
                        d.status,
                        super::confirm::TTL.as_secs()
                    ))
                }
            }
            DiscordCommand::Snapshot { name, snapshot, description } => {
                let s = engine.take_snapshot(&name, snapshot, description, actor).await?;
                Reply::text(format!("📸 Snapshot **{}** of **{name}** taken; no schedule deletes it.", s.name))
            }
            DiscordCommand::Backup { name } => {
                let b = engine.take_backup(&name, actor).await?;
                let file = b.volid.split_once(":backup/").map_or(b.volid.as_str(), |(_, f)| f);
                Reply::text(format!("💾 Backup `{file}` of **{name}** made; no retention deletes it."))
            }
            DiscordCommand::AskRestore { name, snapshot } => {
                let (d, list) = engine.snapshots(&name).await?;
                if !list.iter().any(|s| s.name == snapshot.as_str()) {
                    return Ok(Reply::private(format!("**{}** has no snapshot `{snapshot}`.", d.spec.name)));
                }
                let caller = i.caller.as_ref().map(|c| c.id).unwrap_or(crate::config::discord::Snowflake(0));
                let nonce = door.inner.confirmations.issue(&format!("{}/{snapshot}", d.id), caller, std::time::Instant::now());
                Reply {
                    buttons: vec![
                        Button::action(format!("Restore {snapshot}"), command::restore_id(&nonce), ButtonStyle::Danger),
                        Button::action("Cancel", command::cancel_id(&nonce), ButtonStyle::Secondary),
                    ],
                    ..Reply::text(format!(
                        "⚠️ Roll **{}** back to snapshot `{snapshot}`? Its guest restarts and what changed since the snapshot is lost. Only the person who asked can confirm; the buttons expire in {} seconds.",
                        d.spec.name,
                        super::confirm::TTL.as_secs()
                    ))
                }
            }
            DiscordCommand::Deploy(_) | DiscordCommand::ConfirmDestroy { .. } | DiscordCommand::CancelDestroy { .. } | DiscordCommand::ConfirmRestore { .. } => {
                Reply::private("this command is handled elsewhere")
            }
        })
    }
    .await;
    result.unwrap_or_else(|e| render::engine_error(&e))
}

/// A confirmed `/destroy`: asks the engine, and replaces the question (and its buttons) with the answer.
pub async fn destroy(door: DiscordDoor, i: Interaction, deployment: String, actor: Actor) {
    let reply = match door.inner.engine.act(&deployment, Action::Destroy, &actor).await {
        Ok(d) => Reply::text(format!("🗑️ Destroying **{}** (`{}`), confirmed by {}.", d.spec.name, d.id, actor.name)),
        Err(e) => render::engine_error(&e),
    };
    door.edit(&i, &reply, false).await;
}

/// A confirmed `/restore` (`bound` is `<deployment id>/<snapshot>` as the nonce carried it): asks the engine, and
/// replaces the question (and its buttons) with the answer.
pub async fn restore(door: DiscordDoor, i: Interaction, bound: String, actor: Actor) {
    let parsed = bound.split_once('/').and_then(|(id, s)| crate::core::snapshot::SnapshotName::parse_existing(s).ok().map(|s| (id.to_string(), s)));
    let reply = match parsed {
        Some((id, snapshot)) => match door.inner.engine.rollback_snapshot(&id, snapshot.clone(), &actor).await {
            Ok(d) => Reply::text(format!("⏪ Rolling **{}** back to snapshot `{snapshot}`, confirmed by {}; it is running again once its health check passes.", d.spec.name, actor.name)),
            Err(e) => render::engine_error(&e),
        },
        None => Reply::private("this confirmation is not a restore's; run /restore again"),
    };
    door.edit(&i, &reply, false).await;
}

/// A `/deploy`: records it, then edits the same message as the deployment moves, ending with the URL
/// or the error and the last log lines.
pub async fn deploy(door: DiscordDoor, i: Interaction, spec: Spec, actor: Actor) {
    let engine = door.inner.engine.clone();
    // Subscribed before the deployment exists, so no step is missed.
    let mut events = engine.bus().subscribe();
    let d = match engine.deploy(spec, &actor).await {
        Ok(d) => d,
        Err(e) => return door.edit(&i, &render::engine_error(&e), false).await,
    };
    door.edit(&i, &render::deploy_progress(&d, &[]), false).await;
    let deadline = tokio::time::Instant::now() + FOLLOW_FOR;
    let mut shown = d.status;
    loop {
        let changed = tokio::select! {
            _ = door.inner.stop.cancelled() => return,
            _ = tokio::time::sleep_until(deadline) => {
                let now = engine.deployment(&d.id).await.ok().flatten().unwrap_or_else(|| d.clone());
                let mut r = render::deploy_progress(&now, &[]);
                r.content = format!("{}\n… still {}: this message stops updating; follow it with `/status {}`.", r.content, now.status, d.spec.name);
                return door.edit(&i, &r, false).await;
            }
            ev = events.recv() => match ev {
                Ok(Event::Status { id, .. }) => id == d.id,
                Ok(Event::Log(_)) => false,
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            },
        };
        if !changed {
            continue;
        }
        // Several steps in quick succession become one edit of the newest state.
        tokio::time::sleep(EDIT_SPACING).await;
        let now = match engine.deployment(&d.id).await {
            Ok(Some(now)) => now,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(deployment = %d.id, error = %e, "could not read a deployment to update its Discord message");
                continue;
            }
        };
        if now.status == shown {
            continue;
        }
        shown = now.status;
        let tail = if now.status == Status::Failed { engine.tail_log(&d.id, FAILURE_LINES).await.unwrap_or_default() } else { vec![] };
        door.edit(&i, &render::deploy_progress(&now, &tail), false).await;
        if !now.status.is_busy() {
            return;
        }
    }
}
