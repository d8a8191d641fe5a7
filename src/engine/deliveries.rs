//! Webhook deliveries once the door verified and parsed them: records a delivery before any effect (a GUID seen
//! before runs again only if it did not act), routes a recorded push (finds the deployments tracking the pushed
//! branch, claims the push, applies the same-push rule per deployment, redeploys, audits, records each outcome),
//! hands a pull request to `previews`, and routes at start the pushes recorded but not routed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::core::command::{Actor, Door};
use crate::core::deployment::DeploymentId;
use crate::core::names::CommitSha;
use crate::core::preview::PullRequestEvent;
use crate::core::webhook::{
    commit_or_none, push_skip, route_bound, same_push, Decision, DeliveryId, Outcome, PushAction, PushClaim, PushEvent, PushedRef, RepoIdentity, Skip,
};
use crate::core::delivery::{DeliveryRecord, TargetOutcome};
use crate::core::log::Level;
use crate::engine::{Engine, EngineError, RedeployTicket};
use crate::store::StoreError;

/// Pushes to one ref of one repository are routed one at a time (in this agent), so a copy of a push always sees
/// what the engine made of the first: the claim, the heading read and the engine's answer happen in one turn.
#[derive(Default)]
pub(super) struct Lanes {
    lanes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Lanes {
    async fn enter(&self, key: &str) -> LaneGuard<'_> {
        let lane = self.lanes.lock().expect("lanes poisoned").entry(key.to_owned()).or_default().clone();
        let held = lane.clone().lock_owned().await;
        LaneGuard { lanes: self, key: key.to_owned(), lane, _held: held }
    }
}

struct LaneGuard<'a> {
    lanes: &'a Lanes,
    key: String,
    lane: Arc<tokio::sync::Mutex<()>>,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        let mut lanes = self.lanes.lanes.lock().expect("lanes poisoned");
        // Ours, the map's and the held guard's: nobody else waits, the lane can go.
        if Arc::strong_count(&self.lane) <= 3 {
            lanes.remove(&self.key);
        }
    }
}

/// What a push delivery led to, as recorded.
struct Routed {
    outcome: Outcome,
    detail: Option<String>,
    targets: Vec<TargetOutcome>,
    same_push_as: Option<DeliveryId>,
}

/// What recording a delivery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A GUID not seen before.
    New,
    /// The `n`th retry of a GUID whose attempt before led to `before`, which did not act: it is processed again.
    Retry { n: i64, before: Outcome },
    /// A GUID seen before that acted (`before`), or is being processed again already: nothing is done.
    Duplicate { before: Outcome },
}

impl Engine {
    /// Records a delivery before anything acts on it. A GUID seen before whose outcome did not act
    /// (`Outcome::acted`) is taken for another attempt, once (a conditional write on its retry count); any other
    /// repeat is a duplicate, counted as a redelivery.
    pub async fn receive_delivery(&self, record: &DeliveryRecord) -> Result<Received, StoreError> {
        let store = &self.inner.store;
        match store.record_delivery(record).await {
            Ok(()) => return Ok(Received::New),
            Err(StoreError::Taken { .. }) => {}
            Err(e) => return Err(e),
        }
        let seen = match store.get_delivery(&record.delivery).await? {
            Some(seen) => seen,
            None => return Err(StoreError::Unavailable(format!("the delivery {} was recorded but cannot be read back", record.delivery))),
        };
        if !seen.outcome.acted() && store.retry_delivery(&seen, record).await? {
            tracing::info!(delivery = %record.delivery, before = %seen.outcome, "webhook delivery processed again");
            return Ok(Received::Retry { n: seen.retries + 1, before: seen.outcome });
        }
        if let Err(e) = store.note_redelivery(&record.delivery).await {
            tracing::warn!(delivery = %record.delivery, error = %e, "could not count a redelivery");
        }
        tracing::info!(delivery = %record.delivery, "duplicate webhook delivery ignored");
        Ok(Received::Duplicate { before: seen.outcome })
    }

    /// Records a delivery the door refused unread (too large) under its GUID, unless that GUID is recorded already:
    /// `Ok(false)` then, and the record is left as it was.
    pub async fn record_refused_delivery(&self, record: &DeliveryRecord) -> Result<bool, StoreError> {
        match self.inner.store.record_delivery(record).await {
            Ok(()) => Ok(true),
            Err(StoreError::Taken { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Handles one recorded push delivery to the end and records its outcome; failures are recorded, never lost.
    pub async fn on_push(&self, delivery: &DeliveryId, push: &PushEvent) {
        route_push(self, delivery, push).await
    }

    /// Handles one recorded pull request delivery to the end (`Engine::pull_request` decides and acts) and records
    /// its outcome. Deliveries of one pull request are handled one at a time.
    pub async fn on_pull_request(&self, delivery: &DeliveryId, pr: &PullRequestEvent) {
        route_pull_request(self, delivery, pr).await
    }

    /// The deliveries recorded but not routed when the agent last stopped (a crash between the 202 and the
    /// engine's answer), oldest first; none on a read-only agent.
    pub async fn unrouted_deliveries(&self) -> Result<Vec<DeliveryRecord>, StoreError> {
        if self.read_only().is_some() {
            return Ok(vec![]);
        }
        self.inner.store.unrouted_deliveries().await
    }

    /// Routes one delivery `unrouted_deliveries` returned; its push claim keeps it from acting twice. One that
    /// cannot be read back as a push is recorded failed.
    pub async fn resume_delivery(&self, record: &DeliveryRecord) {
        // A pull request is handed over again from the event kept with it: what it asks is idempotent (a preview
        // already made is moved to the same head, one destroyed is destroyed already).
        if let Some(pr) = &record.pull_request {
            tracing::info!(delivery = %record.delivery, number = pr.number, action = %pr.action, "webhook pull request handled after a restart");
            return self.on_pull_request(&record.delivery, pr).await;
        }
        match push_from_record(record) {
            Some(push) => self.on_push(&record.delivery, &push).await,
            None => {
                let why = "the recorded delivery could not be read back (a push whose record lacks a field, or a pull request recorded by an older version, whose event was not kept); redeliver it from GitHub";
                if let Err(e) = self.inner.store.finish_delivery(&record.delivery, Outcome::Failed, Some(why), &[], None).await {
                    tracing::error!(delivery = %record.delivery, error = %e, "could not record a webhook delivery's outcome");
                }
            }
        }
    }
}

async fn route_push(engine: &Engine, delivery: &DeliveryId, push: &PushEvent) {
    let routed = {
        let _turn = engine.inner.lanes.enter(&lane_key(push)).await;
        route_and_ask(engine, delivery, push).await
    };
    let r = routed.unwrap_or_else(|e| {
        tracing::error!(%delivery, error = %e, "webhook push not routed");
        Routed { outcome: Outcome::Failed, detail: Some(e.to_string()), targets: vec![], same_push_as: None }
    });
    tracing::info!(%delivery, repo = %push.repo.full_name, git_ref = %push.raw_ref, outcome = %r.outcome, "webhook push handled");
    if let Err(e) = engine.inner.store.finish_delivery(delivery, r.outcome, r.detail.as_deref(), &r.targets, r.same_push_as.as_ref()).await {
        tracing::error!(%delivery, error = %e, "could not record a webhook delivery's outcome");
    }
}

async fn route_pull_request(engine: &Engine, delivery: &DeliveryId, pr: &PullRequestEvent) {
    let routed = {
        let _turn = engine.inner.lanes.enter(&format!("{}\npull/{}", pr.repo.full_name.to_ascii_lowercase(), pr.number)).await;
        engine.pull_request(pr, delivery).await
    };
    let what = format!("pull request #{} `{}` (head {})", pr.number, pr.action, pr.head_sha.as_str());
    let (outcome, detail, targets) = match routed {
        Ok(r) => {
            let said = r.detail.unwrap_or_else(|| match r.outcome {
                Outcome::Ignored(Skip::NoDeployment) => "no deployment of this repository".into(),
                Outcome::Ignored(Skip::PreviewsOff) => "previews are off for this repository's deployments (`previews: true` turns them on)".into(),
                Outcome::Ignored(Skip::OtherBranch) => format!("no deployment with previews tracks its base branch {}", pr.base_ref),
                Outcome::Ignored(Skip::Event) => "previews act on opened, reopened, synchronize and closed".into(),
                o => o.to_string(),
            });
            (r.outcome, format!("{what}: {said}"), r.targets)
        }
        Err(e) => {
            tracing::error!(%delivery, error = %e, "webhook pull request not handled");
            (Outcome::Failed, format!("{what}: {e}"), vec![])
        }
    };
    tracing::info!(%delivery, repo = %pr.repo.full_name, number = pr.number, action = %pr.action, %outcome, "webhook pull request handled");
    if let Err(e) = engine.inner.store.finish_delivery(delivery, outcome, Some(&detail), &targets, None).await {
        tracing::error!(%delivery, error = %e, "could not record a webhook delivery's outcome");
    }
}

/// A recorded push delivery as the `PushEvent` it was converted into; `None` when it is not a push or the record lacks a field.
fn push_from_record(r: &DeliveryRecord) -> Option<PushEvent> {
    if r.event != "push" {
        return None;
    }
    let raw_ref = r.git_ref.clone()?;
    let zeros = "0".repeat(40);
    let before = commit_or_none(r.before.as_deref().unwrap_or(&zeros), "before").ok()?;
    let after = commit_or_none(r.after.as_deref().unwrap_or(&zeros), "after").ok()?;
    Some(PushEvent {
        // The id is not kept: a resumed push is routed by name.
        repo: RepoIdentity { id: None, full_name: r.repo.clone()?, hosts: r.repo_hosts.clone() },
        pushed_ref: PushedRef::parse(&raw_ref),
        raw_ref,
        deleted: after.is_none(),
        before,
        after,
        pusher: r.pusher.clone().unwrap_or_else(|| "unknown".into()),
        // A push with a skip marker is never left unrouted (the door records it as skipped at once); the files are
        // not kept, so path filters let a resumed push through.
        head: None,
        skip_marker: None,
        changed: None,
    })
}

fn lane_key(push: &PushEvent) -> String {
    format!("{}\n{}", push.repo.full_name.to_ascii_lowercase(), push.raw_ref)
}

/// What identifies one push across deliveries (a repository hook and an organisation hook both
/// deliver it): repository, ref, before and after. A later push back to an older commit has another
/// `before`, so it is a new push; a later push that repeats an earlier pair is left to `same_push`.
fn identity(push: &PushEvent) -> String {
    let mut hosts = push.repo.hosts.clone();
    hosts.sort();
    let before = push.before.as_ref().map(CommitSha::as_str).unwrap_or("");
    let after = push.after.as_ref().map(CommitSha::as_str).unwrap_or("");
    format!("{}\n{}\n{}\n{before}\n{after}", hosts.join(","), push.repo.full_name.to_ascii_lowercase(), push.raw_ref)
}

async fn route_and_ask(engine: &Engine, delivery: &DeliveryId, push: &PushEvent) -> Result<Routed, StoreError> {
    if let Some(skip) = push_skip(push) {
        return Ok(Routed { outcome: Outcome::Ignored(skip), detail: None, targets: vec![], same_push_as: None });
    }
    let store = &engine.inner.store;
    let mut candidates = store.deployments_of_repo(&push.repo.full_name).await?;
    // Deployments of this repository under an earlier name, known by its id.
    if let Some(rid) = push.repo.id {
        for id in store.deployments_bound_to_repo(rid).await? {
            if candidates.iter().all(|d| d.id != id) {
                if let Some(d) = store.get_deployment(&id).await?.filter(|d| d.status != crate::core::status::Status::Destroyed) {
                    candidates.push(d);
                }
            }
        }
    }
    let ids: Vec<DeploymentId> = candidates.iter().map(|d| d.id.clone()).collect();
    let bound = store.repo_bindings(&ids).await?;
    let decisions = route_bound(push, &candidates, &bound);
    // Remembered from now on: a rename keeps routing.
    if let Some(rid) = push.repo.id {
        for (id, _) in decisions.iter().filter(|(id, _)| bound.get(id) != Some(&rid)) {
            store.bind_repo(id, rid, &push.repo.full_name).await?;
        }
    }
    let claim = match decisions.iter().any(|(_, d)| matches!(d, Decision::Redeploy(_))) {
        false => PushClaim::First,
        true => match store.claim_push(&identity(push), delivery).await? {
            None => PushClaim::First,
            Some(other) => PushClaim::SeenIn(DeliveryId::parse(&other).map_err(|_| StoreError::Corrupt(format!("push claim names delivery {other:?}")))?),
        },
    };
    let actor = Actor { name: format!("github:{}", push.pusher), door: Door::Webhook };
    let mut targets = Vec::with_capacity(decisions.len());
    for (id, decision) in decisions {
        let (outcome, detail) = match decision {
            Decision::Skip(s) => (Outcome::Ignored(s), None),
            Decision::Redeploy(commit) => {
                let heading = match &claim {
                    PushClaim::First => Default::default(),
                    PushClaim::SeenIn(_) => match engine.heading(&id).await {
                        Ok(h) => h,
                        Err(EngineError::Store(e)) => return Err(e),
                        // Gone since it was routed: nothing reaches the commit, the engine will say why.
                        Err(_) => Default::default(),
                    },
                };
                match same_push(&claim, &heading, commit) {
                    PushAction::Redeploy(commit) => ask(engine, delivery, push, &id, Some(commit), &actor, None).await,
                    PushAction::Copy { first } => {
                        (Outcome::Ignored(Skip::SamePush), Some(format!("a copy of the push delivery {first} carried first; this deployment is already at, deploying or queued to deploy its commit")))
                    }
                    PushAction::BranchHead { first } => {
                        let why = format!("the same before→after as delivery {first}, while this deployment is headed elsewhere (the branch moved back, or a late copy): redeploying the branch head");
                        ask(engine, delivery, push, &id, None, &actor, Some(why)).await
                    }
                }
            }
        };
        targets.push(TargetOutcome { deployment: id, outcome, detail });
    }
    let outcome = match Outcome::summary(targets.iter().map(|t| t.outcome)) {
        // A tag no deployment of the repository deploys: a tag push, as before tags could deploy.
        Outcome::Ignored(Skip::NoDeployment) if matches!(push.pushed_ref, PushedRef::Tag(_)) => Outcome::Ignored(Skip::Tag),
        o => o,
    };
    let detail = targets.iter().find(|t| t.outcome == outcome).and_then(|t| t.detail.clone());
    let same_push_as = match claim {
        PushClaim::First => None,
        PushClaim::SeenIn(first) => Some(first),
    };
    Ok(Routed { outcome, detail, targets, same_push_as })
}

/// Asks the engine to redeploy `commit` (the branch head when `None`) on one deployment, and records the request in
/// the audit log and the deployment's log; `why` says why it is not simply the pushed commit.
async fn ask(engine: &Engine, delivery: &DeliveryId, push: &PushEvent, id: &DeploymentId, commit: Option<CommitSha>, actor: &Actor, why: Option<String>) -> (Outcome, Option<String>) {
    let sha = commit.as_ref().map(|c| c.as_str().to_owned()).unwrap_or_else(|| "branch-head".into());
    let pushed = push.after.as_ref().map(CommitSha::as_str).unwrap_or("");
    let (outcome, said) = match engine.redeploy_to(id.as_str(), commit, actor).await {
        Ok(RedeployTicket::Started { .. }) => (Outcome::RedeployRequested, None),
        Ok(RedeployTicket::Queued { .. }) => (Outcome::Queued, Some("a redeploy is running; this follows it".to_owned())),
        Ok(RedeployTicket::AlreadyAt { commit }) => (Outcome::AlreadyAt, Some(format!("already at {commit}"))),
        Err(EngineError::Store(e)) => (Outcome::Failed, Some(e.to_string())),
        Err(e) => (Outcome::Refused, Some(e.to_string())),
    };
    let detail = match (why, said) {
        (Some(why), Some(said)) => Some(format!("{why}; {said}")),
        (why, said) => why.or(said),
    };
    let what = format!("delivery={delivery} repo={} ref={} commit={sha} outcome={outcome}", push.repo.full_name, push.raw_ref);
    if let Err(e) = engine.inner.store.audit(actor, "webhook_redeploy", Some(id.as_str()), &what).await {
        tracing::error!(%delivery, error = %e, "could not audit a webhook redeploy request");
    }
    let said = detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
    engine.log(id, Level::Info, "webhook", &format!("push of {pushed} to {} by {} (delivery {delivery}): {outcome}{said}", push.raw_ref, push.pusher)).await;
    (outcome, detail)
}
