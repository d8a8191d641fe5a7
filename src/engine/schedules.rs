//! The scheduler: manages schedules for the doors, wakes at the next due time (and at least every 30 s),
//! claims each occurrence once across agents, runs its action through the engine as
//! `schedule:<id>` via the schedule door, records the outcome, and destroys expired deployments.

pub mod clock;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use clock::{Clock, ManualClock, SystemClock};

use super::export::Exports;
use super::{Engine, EngineError};
use crate::core::command::{Action, Actor, Door};
use crate::core::deployment::{Deployment, DeploymentId};
use crate::core::schedule::{Decision, RawSchedule, Schedule, ScheduleAction, ScheduleSpec, Target};
use crate::core::status::Status;
use crate::core::validation::{FieldError, ValidationErrors};
use crate::store::logs::Level;
use crate::store::schedules::{Claimed, RunClaim, RunOutcome, RunRecord};

/// The scheduler wakes at least this often to notice schedules changed by other agents.
pub const MAX_SLEEP_MS: i64 = 30_000;
/// A running occurrence's claim lasts this long without renewal (renewed every third of it).
pub const RUN_TTL_MS: i64 = 30_000;

/// The schedules of one agent; cheap to clone. Doors (API, CLI through the API, Discord) call
/// `add`/`replace`/`remove`/`list`/`get`/`runs`/`set_expiry`; the agent runs `spawn`.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    exports: Option<Exports>,
    clock: Arc<dyn Clock>,
    wake: Notify,
    runs: TaskTracker,
}

/// The running loop; `stop` ends it and waits for runs in progress.
pub struct SchedulerTask {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SchedulerTask {
    pub async fn stop(self) {
        self.cancel.cancel();
        // Waits for the loop to end; it returns nothing, and a panic in it was already reported by the runtime.
        let _ = self.task.await;
    }
}

/// What one pass did (tests and logs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Occurrences this agent claimed and started.
    pub started: Vec<(String, i64)>,
    /// Occurrences recorded as skipped (missed without catch-up, or the previous run still going).
    pub skipped: Vec<(String, i64)>,
    /// Deployments destroyed because their expiry passed.
    pub expired: Vec<DeploymentId>,
    /// When the next schedule or expiry is due (UTC ms), if any.
    pub next_due: Option<i64>,
}

impl Scheduler {
    /// `exports` serves the `drift` action (absent: drift runs fail saying so).
    pub fn new(engine: Engine, exports: Option<Exports>, clock: Arc<dyn Clock>) -> Self {
        Self { inner: Arc::new(Inner { engine, exports, clock, wake: Notify::new(), runs: TaskTracker::new() }) }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Parses a request from any door: `target` may be a deployment's name (resolved to its id here).
    pub async fn parse(&self, mut raw: RawSchedule) -> Result<ScheduleSpec, EngineError> {
        let mut target_error = None;
        if let Some(t) = raw.target.clone().filter(|t| t != "all") {
            match self.inner.engine.find(&t).await {
                Ok(d) if d.status != Status::Destroyed => raw.target = Some(d.id.to_string()),
                Ok(_) => target_error = Some(FieldError::new("target", "exists", format!("deployment {t:?} is destroyed"))),
                Err(EngineError::NotFound(_)) => target_error = Some(FieldError::new("target", "exists", format!("no deployment {t:?}"))),
                Err(e) => return Err(e),
            }
        }
        let parsed = ScheduleSpec::parse_new(RawSchedule { target: if target_error.is_some() { Some("all".into()) } else { raw.target.clone() }, ..raw.clone() }, self.now());
        match (parsed, target_error) {
            (Ok(spec), None) => Ok(spec),
            (Err(mut errs), Some(te)) => {
                errs.0.retain(|e| e.field != "target");
                errs.push(te);
                Err(EngineError::Invalid(errs))
            }
            (Ok(_), Some(te)) => Err(EngineError::Invalid(ValidationErrors(vec![te]))),
            (Err(errs), None) => Err(EngineError::Invalid(errs)),
        }
    }

    /// Records a new schedule (it counts from now: nothing before runs late).
    pub async fn add(&self, spec: ScheduleSpec, actor: &Actor) -> Result<Schedule, EngineError> {
        let now = self.now();
        let s = Schedule { id: uuid::Uuid::now_v7().to_string(), spec, created_at: now, updated_at: now, last_occurrence: None, target_destroyed: false };
        let store = self.inner.engine.store();
        store.create_schedule(&s, &actor.to_string()).await?;
        store.audit(actor, "schedule_add", Some(&s.id), &describe(&s)).await?;
        self.inner.wake.notify_one();
        Ok(s)
    }

    /// Replaces a schedule's settings; it counts from now (a changed expression never runs late).
    pub async fn replace(&self, id: &str, spec: ScheduleSpec, actor: &Actor) -> Result<Schedule, EngineError> {
        let (old, created_by) = self.get_with_creator(id).await?;
        // `parse` took the target as live: a replace gives a schedule of a destroyed deployment a new life.
        let s = Schedule { spec, updated_at: self.now().max(old.updated_at), target_destroyed: false, ..old };
        if !self.inner.engine.store().replace_schedule(&s, &created_by).await? {
            return Err(EngineError::NotFound(id.to_string()));
        }
        self.inner.engine.store().audit(actor, "schedule_replace", Some(id), &describe(&s)).await?;
        self.inner.wake.notify_one();
        Ok(s)
    }

    /// Deletes a schedule and its history.
    pub async fn remove(&self, id: &str, actor: &Actor) -> Result<(), EngineError> {
        let (s, _) = self.get_with_creator(id).await?;
        if !self.inner.engine.store().delete_schedule(id).await? {
            return Err(EngineError::NotFound(id.to_string()));
        }
        self.inner.engine.store().audit(actor, "schedule_remove", Some(id), &describe(&s)).await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Schedule, EngineError> {
        Ok(self.get_with_creator(id).await?.0)
    }

    /// A schedule and who created it.
    pub async fn get_with_creator(&self, id: &str) -> Result<(Schedule, String), EngineError> {
        self.inner.engine.store().get_schedule(id).await?.ok_or_else(|| EngineError::NotFound(id.to_string()))
    }

    pub async fn list(&self, limit: u32, offset: u32) -> Result<(Vec<(Schedule, String)>, u64), EngineError> {
        Ok(self.inner.engine.store().list_schedules(limit, offset).await?)
    }

    /// A page of a schedule's runs, newest first.
    pub async fn runs(&self, id: &str, limit: u32, offset: u32) -> Result<(Vec<RunRecord>, u64), EngineError> {
        self.get(id).await?;
        Ok(self.inner.engine.store().schedule_runs(id, limit, offset).await?)
    }

    /// The next `n` run times of `s` from now (UTC ms); none when disabled or its target is destroyed.
    pub fn next_runs(&self, s: &Schedule, n: usize) -> Vec<i64> {
        if !s.spec.enabled || s.target_destroyed {
            return vec![];
        }
        s.spec.next_runs(self.now(), n)
    }

    /// Sets when a deployment is destroyed (`expires_at`, UTC ms, must be in the future).
    pub async fn set_expiry(&self, id_or_name: &str, expires_at: i64, actor: &Actor) -> Result<Deployment, EngineError> {
        let d = self.inner.engine.find(id_or_name).await?;
        if matches!(d.status, Status::Destroying | Status::Destroyed) {
            return Err(EngineError::Conflict(format!("the deployment is {}", d.status)));
        }
        let now = self.now();
        if expires_at <= now {
            return Err(EngineError::Invalid(ValidationErrors(vec![FieldError::new("expires_at", "future", "must be in the future")])));
        }
        let store = self.inner.engine.store();
        store.set_expiry(&d.id, expires_at, &actor.to_string(), now).await?;
        store.audit(actor, "expiry", Some(d.id.as_str()), &format!("expires_at={expires_at}")).await?;
        self.inner.engine.log(&d.id, Level::Info, "expiry", &format!("{actor} set this deployment to be destroyed at {}", crate::core::schedule::Zone::UTC.rfc3339(expires_at))).await;
        self.inner.wake.notify_one();
        Ok(d)
    }

    /// Removes a deployment's expiry; `false` when it had none.
    pub async fn clear_expiry(&self, id_or_name: &str, actor: &Actor) -> Result<bool, EngineError> {
        let d = self.inner.engine.find(id_or_name).await?;
        let cleared = self.inner.engine.store().clear_expiry(&d.id).await?;
        if cleared {
            self.inner.engine.store().audit(actor, "expiry_clear", Some(d.id.as_str()), "").await?;
            self.inner.engine.log(&d.id, Level::Info, "expiry", &format!("{actor} removed this deployment's expiry")).await;
        }
        Ok(cleared)
    }

    /// A deployment's expiry (UTC ms), if set.
    pub async fn expiry(&self, id_or_name: &str) -> Result<(Deployment, Option<i64>), EngineError> {
        let d = self.inner.engine.find(id_or_name).await?;
        let at = self.inner.engine.store().get_expiry(&d.id).await?;
        Ok((d, at))
    }

    /// Starts the loop: a pass at once (runs missed while down are caught up or skipped), then one at
    /// every due time, at least every 30 s, and whenever a schedule changes.
    pub fn spawn(&self) -> SchedulerTask {
        let cancel = CancellationToken::new();
        let me = self.clone();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            loop {
                let next = match me.tick().await {
                    Ok(p) => p.next_due,
                    Err(e) => {
                        tracing::warn!(error = %e, "scheduler pass failed; trying again shortly");
                        None
                    }
                };
                let now = me.now();
                let at = next.unwrap_or(i64::MAX).min(now + MAX_SLEEP_MS);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = me.inner.clock.sleep_until(at) => {}
                    _ = me.inner.wake.notified() => {}
                }
            }
            me.inner.runs.close();
            if tokio::time::timeout(Duration::from_secs(20), me.inner.runs.wait()).await.is_err() {
                tracing::warn!("scheduled runs did not finish within 20 s; their claims expire and are recorded as failed");
            }
        });
        SchedulerTask { cancel, task }
    }

    /// Waits until the runs started so far have finished (tests).
    pub async fn settle(&self) {
        self.inner.runs.close();
        self.inner.runs.wait().await;
        self.inner.runs.reopen();
    }

    /// One pass at the clock's now: destroys expired deployments, claims and starts every due occurrence.
    pub async fn tick(&self) -> Result<Pass, EngineError> {
        let now = self.now();
        let engine = &self.inner.engine;
        // A read-only agent runs nothing (a run would change the store and the cluster).
        if engine.read_only().is_some() {
            return Ok(Pass::default());
        }
        let store = engine.store();
        let mut pass = Pass::default();
        for id in store.take_expired(now).await? {
            let actor = Actor { name: "expiry".into(), door: Door::Schedule };
            match engine.act(id.as_str(), Action::Destroy, &actor).await {
                Ok(_) => engine.log(&id, Level::Info, "expiry", "expired: destroying").await,
                Err(e) => engine.log(&id, Level::Error, "expiry", &format!("expired, but cannot destroy: {e}")).await,
            }
            pass.expired.push(id);
        }
        let agent = engine.inner.agent_id.clone();
        for s in store.all_schedules().await? {
            if let Some(due) = s.due(s.last_occurrence, now) {
                let (want, message) = match due.decision {
                    Decision::Run => (RunOutcome::Running, String::new()),
                    Decision::CatchUp => (RunOutcome::Running, format!("catch-up run of a time missed while no agent ran it ({} earlier ones folded in)", due.missed)),
                    Decision::Skip => (
                        RunOutcome::Skipped,
                        format!("skipped: missed while no agent ran it, and catch_up is off ({} earlier ones too)", due.missed),
                    ),
                };
                match store.claim_occurrence(&s.id, due.occurrence, &agent, now, RUN_TTL_MS, want, &message).await? {
                    Claimed::Run(claim) => {
                        pass.started.push((s.id.clone(), due.occurrence));
                        let me = self.clone();
                        let sched = s.clone();
                        self.inner.runs.spawn(async move { me.run(sched, due.occurrence, claim, message).await });
                    }
                    Claimed::Recorded | Claimed::Busy => pass.skipped.push((s.id.clone(), due.occurrence)),
                    Claimed::Handled => {}
                }
            }
            if s.spec.enabled && !s.target_destroyed {
                let from = now.max(s.updated_at);
                if let Some(&n) = s.spec.next_runs(from, 1).first() {
                    pass.next_due = Some(pass.next_due.map_or(n, |m: i64| m.min(n)));
                }
            }
        }
        if let Some(e) = store.next_expiry().await? {
            pass.next_due = Some(pass.next_due.map_or(e, |m| m.min(e)));
        }
        Ok(pass)
    }

    /// Carries out one claimed occurrence and records how it ended.
    async fn run(&self, s: Schedule, occurrence: i64, claim: RunClaim, note: String) {
        let store = self.inner.engine.store().clone();
        let renew = {
            let store = store.clone();
            let claim = claim.clone();
            let clock = self.inner.clock.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis((RUN_TTL_MS / 3) as u64)).await;
                    if store.renew_run(&claim, clock.now_ms() + RUN_TTL_MS).await.is_err() {
                        break;
                    }
                }
            })
        };
        let actor = Actor { name: format!("schedule:{}", s.id), door: Door::Schedule };
        let result = self.execute(&s, occurrence, &actor).await;
        renew.abort();
        let (outcome, text) = match result {
            Ok(Ran::Done(m)) => (RunOutcome::Succeeded, m),
            Ok(Ran::NotRun(m)) => (RunOutcome::Skipped, m),
            Err(m) => (RunOutcome::Failed, m),
        };
        let text = if note.is_empty() { text } else { format!("{note}; {text}") };
        if let Err(e) = store.finish_run(&claim, outcome, &text, self.now()).await {
            tracing::error!(schedule = %s.id, error = %e, "cannot record a scheduled run's outcome");
        }
    }

    /// The action itself; `Ok` with what happened (or why nothing was to be done), `Err` with what went wrong, in words.
    async fn execute(&self, s: &Schedule, occurrence: i64, actor: &Actor) -> Result<Ran, String> {
        let engine = &self.inner.engine;
        match s.spec.action {
            ScheduleAction::Reconcile => match engine.reconcile().await {
                Ok(Some(r)) => Ok(Ran::Done(format!("{} guests seen, {} orphans, {} missing, {} removed", r.guests_seen, r.orphans.len(), r.missing.len(), r.removed.len()))),
                Ok(None) => Err("no Proxmox cluster is configured; nothing to reconcile".into()),
                Err(e) => Err(e.to_string()),
            },
            ScheduleAction::Drift => {
                let exports = self.inner.exports.as_ref().ok_or("drift checks are not available on this agent")?;
                match exports.drift().await {
                    Ok(d) if d.unreadable.is_empty() && d.differences.is_empty() => Ok(Ran::Done(format!("{} deployments checked, no drift", d.checked))),
                    Ok(d) if d.unreadable.is_empty() => Ok(Ran::Done(format!(
                        "{} deployments checked, {} differences: {}",
                        d.checked,
                        d.differences.len(),
                        d.differences.iter().take(5).map(|x| format!("{} {}", x.deployment, x.field)).collect::<Vec<_>>().join(", ")
                    ))),
                    // A check that could not read everything did not do its work: it fails, naming what it could not read.
                    Ok(d) => Err(format!(
                        "could not check {}; {} deployments checked, {} differences",
                        d.unreadable.iter().take(5).map(|u| format!("{} ({} {}: {})", u.deployment, u.part.as_str(), u.guest, u.reason)).collect::<Vec<_>>().join(", "),
                        d.checked,
                        d.differences.len()
                    )),
                    Err(e) => Err(e.to_string()),
                }
            }
            action => {
                let targets = match &s.spec.target {
                    Target::Deployment(id) => {
                        let d = engine.find(id.as_str()).await.map_err(|e| e.to_string())?;
                        // A schedule never acts on a destroyed deployment: it stops for good (kept, disabled,
                        // marked), and one being destroyed is left alone (its destroy disables the schedule).
                        match d.status {
                            Status::Destroyed => {
                                engine.schedules_follow_destroy(&d.id).await;
                                return Ok(Ran::NotRun(format!("not run: {} is destroyed; this schedule is now disabled", d.spec.name)));
                            }
                            Status::Destroying => return Ok(Ran::NotRun(format!("not run: {} is being destroyed", d.spec.name))),
                            _ => vec![d],
                        }
                    }
                    // Every deployment with a guest that is not being destroyed.
                    Target::All => engine.store().deployments_with_guests().await.map_err(|e| e.to_string())?.into_iter().filter(|d| d.status != Status::Destroying).collect(),
                };
                let mut done = Vec::new();
                let mut failed = Vec::new();
                let mut gone = Vec::new();
                for d in &targets {
                    match self.apply(action, d, &s.id, occurrence, actor).await {
                        Ok(m) => done.push(format!("{}: {m}", d.spec.name)),
                        // A destroy that began while this ran is no failure of the schedule's.
                        Err(m) if self.destroyed_meanwhile(&d.id).await => gone.push(format!("{}: being destroyed, not run ({m})", d.spec.name)),
                        Err(m) => failed.push(format!("{}: {m}", d.spec.name)),
                    }
                }
                let all = done.iter().chain(&failed).chain(&gone).cloned().collect::<Vec<_>>().join("; ");
                match (failed.is_empty(), targets.is_empty()) {
                    (_, true) => Ok(Ran::Done("no deployment with a guest to act on".into())),
                    (true, _) if done.is_empty() => Ok(Ran::NotRun(all)),
                    (true, _) => Ok(Ran::Done(all)),
                    (false, _) => Err(all),
                }
            }
        }
    }

    /// Whether the deployment is being (or was) destroyed now.
    async fn destroyed_meanwhile(&self, id: &DeploymentId) -> bool {
        matches!(self.inner.engine.store().get_deployment(id).await, Ok(Some(d)) if matches!(d.status, Status::Destroying | Status::Destroyed))
    }

    async fn apply(&self, action: ScheduleAction, d: &Deployment, schedule: &str, occurrence: i64, actor: &Actor) -> Result<String, String> {
        let engine = &self.inner.engine;
        let id = d.id.as_str();
        match action {
            ScheduleAction::Redeploy => match engine.redeploy_to(id, None, actor).await.map_err(|e| e.to_string())? {
                super::RedeployTicket::Started { .. } => Ok("redeploy of the branch head started".into()),
                super::RedeployTicket::Queued { .. } => Ok("redeploy queued after the one running".into()),
                super::RedeployTicket::AlreadyAt { commit } => Ok(format!("already at {commit}")),
            },
            ScheduleAction::Stop => engine.act(id, Action::Stop, actor).await.map(|_| "stop requested".into()).map_err(|e| e.to_string()),
            ScheduleAction::Start => engine.act(id, Action::Start, actor).await.map(|_| "start requested".into()).map_err(|e| e.to_string()),
            ScheduleAction::Destroy => engine.act(id, Action::Destroy, actor).await.map(|_| "destroy requested".into()).map_err(|e| e.to_string()),
            ScheduleAction::Snapshot { keep } => engine.scheduled_snapshot(d, schedule, occurrence, keep, actor).await,
            ScheduleAction::Backup => engine.scheduled_backup(d, schedule, actor).await,
            ScheduleAction::Reconcile | ScheduleAction::Drift => Err("not a per-deployment action".into()),
        }
    }
}

/// How a run that did not fail ended.
enum Ran {
    /// It did its work (what, in words).
    Done(String),
    /// There was nothing it may act on (its target is being destroyed, or is gone): recorded as skipped.
    NotRun(String),
}

fn describe(s: &Schedule) -> String {
    let keep = s.spec.action.keep().map(|k| format!(" keep={k}")).unwrap_or_default();
    format!("cron={:?} timezone={} action={}{keep} target={} enabled={} catch_up={}", s.spec.cron.as_str(), s.spec.zone.name(), s.spec.action.as_str(), s.spec.target.as_str(), s.spec.enabled, s.spec.catch_up)
}
