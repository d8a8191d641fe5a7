//! Routes a recorded push: finds the deployments tracking the pushed branch, claims the push once, asks the engine, records each outcome.

use crate::core::command::{Actor, Door};
use crate::core::deployment::DeploymentId;
use crate::core::names::CommitSha;
use crate::core::webhook::{commit_or_none, push_skip, route, Decision, DeliveryId, Outcome, PushEvent, PushedRef, RepoIdentity, Skip};
use crate::engine::{Engine, EngineError, RedeployTicket};
use crate::store::deliveries::{DeliveryRecord, TargetOutcome};
use crate::store::logs::Level;
use crate::store::StoreError;

/// Handles one push delivery to the end and records its outcome; failures are recorded, never lost.
pub async fn push(engine: &Engine, delivery: &DeliveryId, push: &PushEvent) {
    let (outcome, detail, targets) = match route_and_ask(engine, delivery, push).await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(%delivery, error = %e, "webhook push not routed");
            (Outcome::Failed, Some(e.to_string()), vec![])
        }
    };
    tracing::info!(%delivery, repo = %push.repo.full_name, git_ref = %push.raw_ref, %outcome, "webhook push handled");
    if let Err(e) = engine.store().finish_delivery(delivery, outcome, detail.as_deref(), &targets).await {
        tracing::error!(%delivery, error = %e, "could not record a webhook delivery's outcome");
    }
}

/// A recorded push delivery as the `PushEvent` it was converted into; `None` when it is not a push or the record lacks a field.
pub fn push_from_record(r: &DeliveryRecord) -> Option<PushEvent> {
    if r.event != "push" {
        return None;
    }
    let raw_ref = r.git_ref.clone()?;
    let zeros = "0".repeat(40);
    let before = commit_or_none(r.before.as_deref().unwrap_or(&zeros), "before").ok()?;
    let after = commit_or_none(r.after.as_deref().unwrap_or(&zeros), "after").ok()?;
    Some(PushEvent {
        repo: RepoIdentity { full_name: r.repo.clone()?, hosts: r.repo_hosts.clone() },
        pushed_ref: PushedRef::parse(&raw_ref),
        raw_ref,
        deleted: after.is_none(),
        before,
        after,
        pusher: r.pusher.clone().unwrap_or_else(|| "unknown".into()),
    })
}

/// What identifies one push across deliveries (a repository hook and an organisation hook both
/// deliver it): repository, ref, before and after. A later push back to an older commit has another
/// `before`, so it is a new push and redeploys.
fn identity(push: &PushEvent) -> String {
    let mut hosts = push.repo.hosts.clone();
    hosts.sort();
    let before = push.before.as_ref().map(CommitSha::as_str).unwrap_or("");
    let after = push.after.as_ref().map(CommitSha::as_str).unwrap_or("");
    format!("{}\n{}\n{}\n{before}\n{after}", hosts.join(","), push.repo.full_name.to_ascii_lowercase(), push.raw_ref)
}

async fn route_and_ask(engine: &Engine, delivery: &DeliveryId, push: &PushEvent) -> Result<(Outcome, Option<String>, Vec<TargetOutcome>), StoreError> {
    if let Some(skip) = push_skip(push) {
        return Ok((Outcome::Ignored(skip), None, vec![]));
    }
    let store = engine.store();
    let candidates = store.deployments_mentioning_repo(&push.repo.full_name).await?;
    let decisions = route(push, &candidates);
    let first = if decisions.iter().any(|(_, d)| matches!(d, Decision::Redeploy(_))) { store.claim_push(&identity(push), delivery).await? } else { None };
    let actor = Actor { name: format!("github:{}", push.pusher), door: Door::Webhook };
    let mut targets = Vec::with_capacity(decisions.len());
    for (id, decision) in decisions {
        let (outcome, detail) = match (decision, &first) {
            (Decision::Skip(s), _) => (Outcome::Ignored(s), None),
            (Decision::Redeploy(_), Some(other)) => (Outcome::Ignored(Skip::SamePush), Some(format!("the same push came first in delivery {other}"))),
            (Decision::Redeploy(commit), None) => ask(engine, delivery, push, &id, commit, &actor).await,
        };
        targets.push(TargetOutcome { deployment: id, outcome, detail });
    }
    let outcome = Outcome::summary(targets.iter().map(|t| t.outcome));
    let detail = targets.iter().find(|t| t.outcome == outcome).and_then(|t| t.detail.clone());
    Ok((outcome, detail, targets))
}

/// Asks the engine to redeploy `commit` on one deployment, and records the request in the audit log and the deployment's log.
async fn ask(engine: &Engine, delivery: &DeliveryId, push: &PushEvent, id: &DeploymentId, commit: CommitSha, actor: &Actor) -> (Outcome, Option<String>) {
    let sha = commit.as_str().to_owned();
    let (outcome, detail) = match engine.redeploy_to(id.as_str(), Some(commit), actor).await {
        Ok(RedeployTicket::Started { .. }) => (Outcome::RedeployRequested, None),
        Ok(RedeployTicket::Queued { .. }) => (Outcome::Queued, Some("a redeploy is running; this commit follows it".to_owned())),
        Ok(RedeployTicket::AlreadyAt { commit }) => (Outcome::AlreadyAt, Some(format!("already at {commit}"))),
        Err(EngineError::Store(e)) => (Outcome::Failed, Some(e.to_string())),
        Err(e) => (Outcome::Refused, Some(e.to_string())),
    };
    let what = format!("delivery={delivery} repo={} ref={} commit={sha} outcome={outcome}", push.repo.full_name, push.raw_ref);
    if let Err(e) = engine.store().audit(actor, "webhook_redeploy", Some(id.as_str()), &what).await {
        tracing::error!(%delivery, error = %e, "could not audit a webhook redeploy request");
    }
    let said = detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
    engine.log(id, Level::Info, "webhook", &format!("push of {sha} to {} by {} (delivery {delivery}): {outcome}{said}", push.raw_ref, push.pusher)).await;
    (outcome, detail)
}
