//! Pull-request previews: for each deployment of a pull request's repository, `core::preview::decide` says what the
//! event means, and this carries it out: a preview deployment `<name>-pr-<n>` made from the parent's spec on the head
//! commit (its environment copied, resealed for it; its expiry set to the parent's `preview_ttl_hours`, which the
//! scheduler's loop enforces as for any deployment), redeployed to each new head commit, destroyed when the pull
//! request closes, and with its parent (`previews_follow_destroy`). A preview is a deployment like any other: destroying
//! it goes through `act`, so only its own guest is touched; a deployment that merely has a preview's name is never
//! adopted nor destroyed. Why a preview ended is kept on its record (`preview_ended`), for its pull request's comment.

use crate::core::command::{Action, Actor, Door};
use crate::core::deployment::{Deployment, DeploymentId};
use crate::core::preview::{decide, preview_spec, PreviewDecision, PullRequestEvent};
use crate::core::status::Status;
use crate::core::webhook::{DeliveryId, Outcome, Skip};
use crate::store::deliveries::TargetOutcome;
use crate::store::logs::Level;
use crate::store::previews::PreviewRecord;
use crate::store::{now_millis, StoreError};

use super::{Engine, EngineError, RedeployTicket};

/// What a pull request delivery did, for its record.
#[derive(Debug, Clone)]
pub struct PreviewsRouted {
    pub outcome: Outcome,
    pub detail: Option<String>,
    pub targets: Vec<TargetOutcome>,
}

const HOUR_MS: i64 = 3_600_000;

impl Engine {
    /// Carries out a pull request event for every deployment of its repository (previews themselves left out).
    pub async fn pull_request(&self, pr: &PullRequestEvent, delivery: &DeliveryId) -> Result<PreviewsRouted, StoreError> {
        let store = self.store();
        let mut candidates = store.deployments_of_repo(&pr.repo.full_name).await?;
        if let Some(rid) = pr.repo.id {
            for id in store.deployments_bound_to_repo(rid).await? {
                if candidates.iter().all(|d| d.id != id) {
                    if let Some(d) = store.get_deployment(&id).await?.filter(|d| d.status != Status::Destroyed) {
                        candidates.push(d);
                    }
                }
            }
        }
        let ids: Vec<DeploymentId> = candidates.iter().map(|d| d.id.clone()).collect();
        let bound = store.repo_bindings(&ids).await?;
        let actor = Actor { name: format!("github:{}", pr.sender), door: Door::Webhook };
        let mut targets = Vec::new();
        for d in candidates.iter().filter(|d| pr.repo.is(&d.spec.repo_url, bound.get(&d.id).copied())) {
            if store.preview_of(&d.id).await?.is_some() {
                continue;
            }
            let (outcome, detail) = match decide(d, pr) {
                PreviewDecision::Skip(s) => (Outcome::Ignored(s), None),
                PreviewDecision::Refuse(why) => (Outcome::Refused, Some(why)),
                PreviewDecision::Close => self.close_preview(d, pr, &actor).await?,
                PreviewDecision::Deploy(_) => self.deploy_preview(d, pr, &actor).await?,
            };
            if !matches!(outcome, Outcome::Ignored(_)) {
                let said = detail.as_deref().map(|w| format!(": {w}")).unwrap_or_default();
                self.log(&d.id, Level::Info, "preview", &format!("pull request #{} {} by {} (delivery {delivery}): {outcome}{said}", pr.number, pr.action, pr.sender)).await;
                let what = format!("delivery={delivery} repo={} pull_request={} action={} head={} outcome={outcome}", pr.repo.full_name, pr.number, pr.action, pr.head_sha.as_str());
                if let Err(e) = store.audit(&actor, "webhook_preview", Some(d.id.as_str()), &what).await {
                    tracing::error!(%delivery, error = %e, "could not audit a preview request");
                }
            }
            targets.push(TargetOutcome { deployment: d.id.clone(), outcome, detail });
        }
        let outcome = Outcome::summary(targets.iter().map(|t| t.outcome));
        let detail = targets.iter().find(|t| t.outcome == outcome).and_then(|t| t.detail.clone());
        Ok(PreviewsRouted { outcome, detail, targets })
    }

    /// The live preview deployment recorded for `parent`'s pull request, if any (a record whose deployment was
    /// destroyed, by its close or its TTL, names none).
    async fn live_preview(&self, parent: &Deployment, number: u64) -> Result<(Option<PreviewRecord>, Option<Deployment>), StoreError> {
        let Some(rec) = self.store().get_preview(&parent.id, number).await? else { return Ok((None, None)) };
        let d = self.store().get_deployment(&rec.deployment).await?.filter(|d| !matches!(d.status, Status::Destroying | Status::Destroyed));
        Ok((Some(rec), d))
    }

    /// Opened, reopened or new commits: redeploys the live preview to the head commit, or makes one.
    async fn deploy_preview(&self, parent: &Deployment, pr: &PullRequestEvent, actor: &Actor) -> Result<(Outcome, Option<String>), StoreError> {
        let head = pr.head_sha.as_str();
        let (rec, live) = self.live_preview(parent, pr.number).await?;
        if let (Some(_), Some(preview)) = (&rec, live) {
            // The head first, then the status: a first deploy that has not started yet reads this head when it does.
            self.store().set_preview_head(&parent.id, pr.number, head).await?;
            if matches!(preview.status, Status::Pending | Status::Provisioning) {
                return Ok((Outcome::Queued, Some(format!("{} is still being provisioned; its first deploy deploys {head}", preview.spec.name))));
            }
            let said = |t: &str| Some(format!("{}: {t}", preview.spec.name));
            if preview.status == Status::Failed && preview.proxmox_id.is_none() {
                // Its provisioning failed (or its guest was lost): it starts over, and its first deploy deploys the head.
                return Ok(match self.act(preview.id.as_str(), Action::Redeploy, actor).await {
                    Ok(_) => (Outcome::RedeployRequested, said(&format!("provisioning again for {head}"))),
                    Err(EngineError::Store(e)) => return Err(e),
                    Err(e) => (Outcome::Refused, said(&e.to_string())),
                });
            }
            return Ok(match self.redeploy_to(preview.id.as_str(), Some(pr.head_sha.clone()), actor).await {
                Ok(RedeployTicket::Started { .. }) => (Outcome::RedeployRequested, said(&format!("redeploying {head}"))),
                Ok(RedeployTicket::Queued { .. }) => (Outcome::Queued, said(&format!("a deploy runs; {head} follows it"))),
                Ok(RedeployTicket::AlreadyAt { .. }) => (Outcome::AlreadyAt, said(&format!("already at {head}"))),
                Err(EngineError::Store(e)) => return Err(e),
                Err(e) => (Outcome::Refused, said(&e.to_string())),
            });
        }
        let spec = match preview_spec(&parent.spec, pr, &self.inner.repos) {
            Ok(s) => s,
            Err(why) => return Ok((Outcome::Refused, Some(format!("pull request #{} is not previewed: {why}", pr.number)))),
        };
        if let Err(e) = self.writable().and_then(|()| self.refuse_doomed(spec.guest_type)) {
            return Ok((Outcome::Refused, Some(e.to_string())));
        }
        let name = spec.name.clone();
        let now = now_millis();
        let note = format!(" (the preview of pull request #{} of {}, from {})", pr.number, pr.repo.full_name, parent.spec.name);
        let d = match self.record_new(Deployment::new(spec, now), actor, &note).await {
            Ok(d) => d,
            Err(EngineError::Store(e)) => return Err(e),
            Err(EngineError::Invalid(_)) => {
                return Ok((Outcome::Refused, Some(format!("a deployment named {name} exists and is not this pull request's preview: it is left alone"))));
            }
            Err(e) => return Ok((Outcome::Refused, Some(e.to_string()))),
        };
        // Recorded before its pipeline starts: the first deploy reads the head commit, the environment and the TTL.
        let prepared = self.prepare_preview(parent, &d, pr, rec.and_then(|r| r.comment_id), now).await;
        if let Err(e) = prepared {
            let why = format!("the preview could not be prepared ({e}); it is destroyed again");
            self.log(&d.id, Level::Error, "preview", &why).await;
            let system = Actor { name: "preview".into(), door: Door::System };
            if let Err(e2) = self.act(d.id.as_str(), Action::Destroy, &system).await {
                self.log(&d.id, Level::Error, "preview", &format!("and could not be destroyed: {e2}")).await;
            }
            return Ok((Outcome::Failed, Some(why)));
        }
        // The parent may have been asked to be destroyed since it was read: its destroy either finds this record (it
        // was saved first) or is seen here, so no preview outlives its parent.
        if let Some(gone) = self.store().get_deployment(&parent.id).await?.filter(|p| matches!(p.status, Status::Destroying | Status::Destroyed)) {
            let why = format!("its parent deployment {} is being destroyed", gone.spec.name);
            self.destroy_preview(&d, &why).await;
            return Ok((Outcome::Refused, Some(format!("{name} is not made: {why}"))));
        }
        self.start_pipeline(&d);
        Ok((Outcome::PreviewCreated, Some(format!("{name} deploys {head} (destroyed when the pull request closes, or after {} hours)", parent.spec.preview_ttl_hours))))
    }

    /// The preview record (keeping the comment of an earlier preview of the same pull request), the parent's
    /// environment resealed for the preview, and its expiry.
    async fn prepare_preview(&self, parent: &Deployment, d: &Deployment, pr: &PullRequestEvent, comment_id: Option<u64>, now: i64) -> Result<(), EngineError> {
        let store = self.store();
        let rec = PreviewRecord {
            parent: parent.id.clone(),
            number: pr.number,
            repo: pr.repo.full_name.clone(),
            deployment: d.id.clone(),
            head_sha: pr.head_sha.as_str().to_owned(),
            comment_id,
            ended: None,
            created_at: now,
            updated_at: now,
        };
        store.save_preview(&rec).await?;
        let sealed = store.env_sealed(&parent.id).await?;
        if !sealed.is_empty() {
            let secrets = self.inner.secrets.get().ok_or_else(|| EngineError::Conflict("no secrets key is loaded to copy the environment".into()))?;
            let mut copied = Vec::with_capacity(sealed.len());
            for (name, value) in sealed {
                let plain = secrets.open(&super::deploy::env_context(&parent.id, &name), &value).map_err(|e| EngineError::Conflict(format!("the parent's {name} cannot be opened: {e}")))?;
                copied.push((name.clone(), secrets.seal(&super::deploy::env_context(&d.id, &name), &plain)));
            }
            store.replace_env(&d.id, &copied, now).await?;
        }
        let ttl = i64::from(parent.spec.preview_ttl_hours) * HOUR_MS;
        store.set_expiry(&d.id, now + ttl, "preview ttl", now).await?;
        self.log(&d.id, Level::Info, "preview", &format!("preview of pull request #{} ({}) at {}; destroyed when it closes, or at the latest {} hours from now", pr.number, pr.repo.full_name, pr.head_sha.as_str(), parent.spec.preview_ttl_hours)).await;
        Ok(())
    }

    /// Closed (merged or not): destroys the live preview recorded for this pull request, and nothing else.
    async fn close_preview(&self, parent: &Deployment, pr: &PullRequestEvent, actor: &Actor) -> Result<(Outcome, Option<String>), StoreError> {
        let (rec, live) = self.live_preview(parent, pr.number).await?;
        let Some(preview) = live else {
            let why = match rec {
                Some(_) => "its preview is destroyed already",
                None => "this deployment has no preview of it",
            };
            return Ok((Outcome::Ignored(Skip::NoPreview), Some(why.into())));
        };
        let merged = if pr.merged { "merged" } else { "closed without merging" };
        self.preview_ended(&preview.id, &format!("the pull request was {merged}")).await;
        match self.act(preview.id.as_str(), Action::Destroy, actor).await {
            Ok(_) => {
                // Its TTL backstop is not needed any more.
                if let Err(e) = self.store().clear_expiry(&preview.id).await {
                    self.log(&preview.id, Level::Warn, "preview", &format!("could not remove the preview's expiry ({e}); it expires on a destroyed deployment, which does nothing")).await;
                }
                Ok((Outcome::PreviewDestroyed, Some(format!("{}: destroying (the pull request was {merged})", preview.spec.name))))
            }
            Err(EngineError::Store(e)) => Err(e),
            Err(e) => Ok((Outcome::Refused, Some(format!("{}: {e}", preview.spec.name)))),
        }
    }

    /// Destroys every live preview of `parent` (asked before the parent is recorded destroyed, so a destroy resumed
    /// after a crash asks again): each preview's log says it goes with its parent, and so does its pull request's
    /// comment. Previews already destroyed (their pull request closed, their TTL) are left as they are.
    ///
    /// Boxed (a plain function returning a `Send` future): a destroy makes its previews follow, and a preview's destroy
    /// is a destroy, so the futures' types would otherwise contain themselves.
    pub(crate) fn previews_follow_destroy<'a>(&'a self, parent: &'a Deployment) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(self.follow_destroy(parent))
    }

    async fn follow_destroy(&self, parent: &Deployment) {
        let records = match self.store().previews_of_parent(&parent.id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(deployment = %parent.id, error = %e, "could not read the previews of a deployment being destroyed");
                return self.log(&parent.id, Level::Error, "destroy", &format!("could not read this deployment's previews ({e}); they stay until their pull requests close or their TTL")).await;
            }
        };
        let mut live = Vec::new();
        for rec in records {
            match self.store().get_deployment(&rec.deployment).await {
                Ok(Some(d)) if !matches!(d.status, Status::Destroying | Status::Destroyed) => live.push(d),
                Ok(_) => {}
                Err(e) => self.log(&parent.id, Level::Error, "destroy", &format!("could not read the preview of pull request #{} ({e}); it stays until its pull request closes or its TTL", rec.number)).await,
            }
        }
        if live.is_empty() {
            return;
        }
        let names: Vec<&str> = live.iter().map(|d| d.spec.name.as_str()).collect();
        self.log(&parent.id, Level::Info, "destroy", &format!("destroying its {} preview(s) with it: {}", live.len(), names.join(", "))).await;
        let why = format!("its parent deployment {} was destroyed", parent.spec.name);
        for d in &live {
            self.destroy_preview(d, &why).await;
        }
    }

    /// Destroys preview `d` because of `why` (said in its log, kept for its comment); a failure is said in its log.
    async fn destroy_preview(&self, d: &Deployment, why: &str) {
        self.log(&d.id, Level::Info, "preview", &format!("destroying: {why}")).await;
        self.preview_ended(&d.id, why).await;
        let system = Actor { name: "preview".into(), door: Door::System };
        match self.act(d.id.as_str(), Action::Destroy, &system).await {
            Ok(_) => {
                if let Err(e) = self.store().clear_expiry(&d.id).await {
                    self.log(&d.id, Level::Warn, "preview", &format!("could not remove the preview's expiry ({e}); it expires on a destroyed deployment, which does nothing")).await;
                }
            }
            Err(e) => {
                tracing::error!(deployment = %d.id, error = %e, "could not destroy a preview");
                self.log(&d.id, Level::Error, "preview", &format!("could not be destroyed ({why}): {e}; it stays until its TTL")).await;
            }
        }
    }

    /// Keeps why preview `id` ended (the first reason given wins); a deployment that is no preview has no record and
    /// this changes nothing. A failure is said in its log (its comment then says only that it is gone).
    pub(crate) async fn preview_ended(&self, id: &DeploymentId, why: &str) {
        if let Err(e) = self.store().set_preview_ended(id, why).await {
            tracing::warn!(deployment = %id, error = %e, "could not record why a preview ended");
            self.log(id, Level::Warn, "preview", &format!("could not record why it ended ({e})")).await;
        }
    }
}
