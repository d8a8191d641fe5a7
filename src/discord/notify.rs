//! Deployment events (created, running, redeployed, rolled back, failed, destroyed) posted to the notification channel, rate-limited.

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::core::deployment::Deployment;
use crate::core::status::Status;
use crate::engine::Event;
use crate::core::release::Trigger;

use super::reply::Reply;
use super::DiscordDoor;

/// At most one channel message per this interval; Discord's per-channel limit is about 5 per 5 s.
const SPACING: Duration = Duration::from_millis(1100);
/// Messages waiting beyond this are dropped (with a warning) rather than flooding the channel late.
const QUEUE: usize = 64;

/// The notice for a status event, if it is one worth telling the channel. `trigger` is the newest
/// release's (when the deployment has one).
pub fn notice(d: &Deployment, status: Status, trigger: Option<Trigger>) -> Option<String> {
    let name = &d.spec.name;
    let url = d.url.as_deref().map(|u| format!(" at {u}")).unwrap_or_default();
    let commit = d.commit.as_deref().map(|c| format!(" ({})", c.chars().take(12).collect::<String>())).unwrap_or_default();
    Some(match (status, trigger) {
        (Status::Pending, _) => format!("🆕 **{name}** created: {} @ {} ({} on {})", d.spec.repo_url, d.spec.branch.as_str(), d.spec.framework.as_str(), d.spec.guest_type.as_str()),
        (Status::Running, Some(t)) if t.is_redeploy() => format!("🔁 **{name}** redeployed{commit}, running{url}"),
        (Status::Running, Some(Trigger::Rollback)) => format!("↩️ **{name}** rolled back{commit}, running{url}"),
        (Status::Running, _) => format!("🟢 **{name}** is running{url}{commit}"),
        (Status::Failed, _) => format!("🔴 **{name}** failed: {}", d.error_message.as_deref().unwrap_or("see its log")),
        (Status::Destroyed, _) => format!("🗑️ **{name}** destroyed"),
        _ => return None,
    })
}

/// Follows the bus and posts notices, when a channel (and the bot token that posts) are configured.
pub fn spawn(door: &DiscordDoor) {
    let Some(channel) = door.inner.settings.notify_channel_id else { return };
    let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
    let stop = door.inner.stop.clone();
    let rest = door.inner.rest.clone();
    door.inner.tasks.spawn(async move {
        loop {
            let text = tokio::select! {
                _ = stop.cancelled() => return,
                t = rx.recv() => match t { Some(t) => t, None => return },
            };
            if let Err(e) = rest.post_message(channel, &Reply::text(text).message_json()).await {
                tracing::warn!(error = %e, %channel, "could not post a Discord notification");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(SPACING) => {}
            }
        }
    });
    let engine = door.inner.engine.clone();
    let stop = door.inner.stop.clone();
    let mut events = engine.bus().subscribe();
    door.inner.tasks.spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                ev = events.recv() => ev,
            };
            let (id, status) = match ev {
                Ok(Event::Status { id, status }) => (id, status),
                Ok(Event::Log(_)) => continue,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "Discord notifications fell behind; some events were not posted");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            if !matches!(status, Status::Pending | Status::Running | Status::Failed | Status::Destroyed) {
                continue;
            }
            let Ok(Some(d)) = engine.deployment(&id).await else { continue };
            let trigger = if status == Status::Running { engine.releases(&id, 1).await.ok().and_then(|r| r.first().map(|r| r.trigger)) } else { None };
            if let Some(text) = notice(&d, status, trigger) {
                if tx.try_send(text).is_err() {
                    tracing::warn!(deployment = %id, "Discord notification dropped: too many waiting");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::deployment::{RawSpec, Spec};
    use crate::core::limits::{Limits, RepoPolicy};

    #[test]
    fn notices_for_the_events_that_matter() {
        let raw = RawSpec { name: Some("web".into()), repo_url: Some("https://github.com/o/r".into()), framework: Some("node".into()), ..RawSpec::default() };
        let mut d = Deployment::new(Spec::parse(raw, &Limits::default(), &RepoPolicy::default()).unwrap(), 0);
        assert_eq!(notice(&d, Status::Pending, None).unwrap(), "🆕 **web** created: https://github.com/o/r @ main (node on vm)");
        d.url = Some("http://10.0.0.9".into());
        d.commit = Some("0123456789abcdef".into());
        assert_eq!(notice(&d, Status::Running, Some(Trigger::Deploy)).unwrap(), "🟢 **web** is running at http://10.0.0.9 (0123456789ab)");
        assert_eq!(notice(&d, Status::Running, Some(Trigger::Redeploy)).unwrap(), "🔁 **web** redeployed (0123456789ab), running at http://10.0.0.9");
        assert!(notice(&d, Status::Failed, None).unwrap().starts_with("🔴 **web** failed"));
        assert_eq!(notice(&d, Status::Destroyed, None).unwrap(), "🗑️ **web** destroyed");
        assert_eq!(notice(&d, Status::Provisioning, None), None);
    }
}
