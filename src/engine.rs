//! Runs what the doors ask for: records intent, advances the lifecycle one persisted step at a time, and publishes what happened.

pub mod backups;
pub mod bus;
pub mod check;
pub mod deliveries;
pub mod deploy;
pub mod export;
pub mod ownership;
pub mod previews;
pub mod provision;
pub mod reachability;
mod reads;
pub mod reconcile;
pub mod recover;
pub mod resources;
mod run;
pub mod schedules;
pub mod snapshots;
pub mod source;

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::core::command::{Action, Actor};
use crate::core::deployment::{Deployment, DeploymentId, RawSpec, Spec};
use crate::core::limits::{Limits, RepoPolicy};
use crate::core::names::{AppName, CommitSha};
use crate::core::status::{IllegalTransition, Status};
use crate::core::validation::{FieldError, ValidationErrors};
use crate::store::audit::AuditEntry;
use crate::store::logs::{Level, LogLine};
use crate::store::Store;
pub use bus::{Bus, Event};
/// The store's errors reach the doors inside `EngineError::Store`, and from the delivery entry points as they are.
pub use crate::store::StoreError;
/// The agent's clock in milliseconds since the epoch, as the engine stamps what it records.
pub use crate::store::now_millis;

/// Why the engine refused or failed a command, phrased for the caller.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request broke rules; nothing was stored. Fix the named fields.
    #[error("invalid request: {0}")]
    Invalid(ValidationErrors),
    /// No deployment has that id or name.
    #[error("no deployment {0:?}")]
    NotFound(String),
    /// The deployment's current status does not allow this; retrying later may succeed.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store lost acknowledged writes and is not acted on until an operator runs `pvedeploy recover`;
    /// nothing was changed. Reads still answer.
    #[error("the agent is read-only: {0}")]
    ReadOnly(String),
    /// Proxmox VE refused or failed the call on the guest (its words); the request did not happen. Fix what it
    /// names (a privilege, a storage without snapshots) or retry later.
    #[error("Proxmox VE did not do it: {0}")]
    Proxmox(String),
}

/// What a redeploy request led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedeployTicket {
    /// A redeploy of this commit started now.
    Started { commit: Option<String> },
    /// A redeploy is running; this commit replaces any queued one and runs after it.
    Queued { commit: Option<String> },
    /// The deployment already runs (or is deploying) exactly this commit: nothing to do.
    AlreadyAt { commit: String },
}

/// The one command core behind every door.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    bus: Bus,
    limits: Limits,
    repos: RepoPolicy,
    tasks: TaskTracker,
    provisioner: Option<Arc<provision::Provisioner>>,
    /// This agent's name in leases: stable across its restarts, distinct between agents.
    agent_id: String,
    /// Deployments this process is working on; a lease is per agent, this keeps two tasks of one
    /// agent off the same deployment.
    working: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The last cluster figures and when they were read.
    figures: tokio::sync::Mutex<Option<(std::time::Instant, resources::ClusterFigures)>>,
    last_reconcile: std::sync::Mutex<Option<reconcile::ReconcileReport>>,
    reconciling: tokio::sync::Mutex<()>,
    /// Cancelled at shutdown: ends the periodic work (reconciler).
    stop: tokio_util::sync::CancellationToken,
    /// SSH deploys (set once at start when a cluster is configured).
    deployer: std::sync::OnceLock<Arc<deploy::Deployer>>,
    /// Seals environment values at rest.
    secrets: std::sync::OnceLock<crate::secrets::SecretBox>,
    /// Deployments with a redeploy task running: what it deploys and its queued follow-up (if any).
    redeploys: std::sync::Mutex<std::collections::HashMap<String, Lane>>,
    /// The last probe of the cluster for `/ready`.
    probe: reachability::Probe,
    /// Request-time repository checks, shared between concurrent requests.
    source_checks: source::Checks,
    /// The last check of the cluster (`pvedeploy check`'s items) and the one running.
    checks: check::Checks,
    /// One snapshot operation (take, delete, rollback, a schedule's retention) per deployment's guest at a time.
    snapshot_gates: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Webhook deliveries of one ref (or pull request) are routed one at a time.
    lanes: deliveries::Lanes,
}

/// A redeploy asked for: of which commit (the branch head when `None`) and through which door.
#[derive(Debug, Clone)]
struct Wish {
    commit: Option<CommitSha>,
    trigger: crate::store::releases::Trigger,
}

/// One deployment's redeploys: the one running (`Some(None)`: the branch head it read when it started; `None`: the
/// first deploy runs, under provisioning) and the follow-up queued behind it.
#[derive(Debug, Default)]
struct Lane {
    running: Option<Option<CommitSha>>,
    queued: Option<Wish>,
}

impl Engine {
    /// `agent_id` names this agent in work leases; it must be stable across restarts of the same agent
    /// (so a restarted agent takes its own leases back at once) and distinct between agents.
    pub fn new(store: Store, limits: Limits, repos: RepoPolicy, provisioner: Option<provision::Provisioner>, agent_id: String) -> Self {
        Self {
            inner: Arc::new(Inner { store, bus: Bus::new(), limits, repos, tasks: TaskTracker::new(), provisioner: provisioner.map(Arc::new), agent_id, working: Default::default(), figures: Default::default(), last_reconcile: Default::default(), reconciling: Default::default(), stop: Default::default(), deployer: Default::default(), secrets: Default::default(), redeploys: Default::default(), probe: Default::default(), source_checks: Default::default(), checks: Default::default(), snapshot_gates: Default::default(), lanes: Default::default() }),
        }
    }

    /// Enables deploying apps over SSH (set once, at start).
    pub fn set_deployer(&self, d: deploy::Deployer) {
        // Set once at start; a second call leaves the first deployer in place.
        let _ = self.inner.deployer.set(Arc::new(d));
    }

    /// Sets the key that seals environment values (set once, at start).
    pub fn set_secrets(&self, s: crate::secrets::SecretBox) {
        // Set once at start; a second call leaves the first key in place.
        let _ = self.inner.secrets.set(s);
    }

    /// The Proxmox side, when a cluster (or the sandbox) is configured.
    pub fn provisioner(&self) -> Option<&provision::Provisioner> {
        self.inner.provisioner.as_deref()
    }

    /// The store, for the engine's neighbours in the crate (the wiring, the GitHub reporter); doors read through
    /// the engine's own methods (`reads.rs`).
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Why the agent does not act (its store lost acknowledged writes), if it does not.
    pub fn read_only(&self) -> Option<&str> {
        self.inner.store.untrusted()
    }

    /// Every changing entry point asks first: a read-only agent changes nothing, here or on Proxmox.
    pub(crate) fn writable(&self) -> Result<(), EngineError> {
        match self.read_only() {
            Some(why) => Err(EngineError::ReadOnly(why.to_string())),
            None => Ok(()),
        }
    }

    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The repository policy requests are parsed under.
    pub fn repos(&self) -> &RepoPolicy {
        &self.inner.repos
    }

    /// Parses a request from any door into a spec, or every reason it is wrong.
    pub fn parse_spec(&self, raw: RawSpec) -> Result<Spec, EngineError> {
        Spec::parse(raw, &self.inner.limits, &self.inner.repos).map_err(EngineError::Invalid)
    }

    /// Records a new `pending` deployment (the name claimed atomically) and starts its pipeline.
    /// The repository and branch are asked for first (`source::check`): one that certainly does not
    /// exist is refused naming the field, before anything is recorded or created. So is a guest the
    /// cluster cannot take (`check::refuse_doomed`: a VM without node SSH, a problem the last check found).
    pub async fn deploy(&self, spec: Spec, actor: &Actor) -> Result<Deployment, EngineError> {
        self.writable()?;
        self.refuse_doomed(spec.guest_type)?;
        let source = self.inner.source_checks.check(&spec, &self.inner.repos).await;
        if let Some(refusal) = source.refusal(&spec) {
            return Err(EngineError::Invalid(refusal));
        }
        let checked = match &source {
            source::Source::Unverified(why) => format!(" (the repository could not be checked from the agent: {why}; the guest will try)"),
            _ => String::new(),
        };
        let d = self.record_new(Deployment::new(spec, now_millis()), actor, &checked).await?;
        self.start_pipeline(&d);
        Ok(d)
    }

    /// Records a new `pending` deployment whole in one commit (deployment, first event, audit entry, log line; the name
    /// claimed atomically: a live deployment of the same name is a 422 on `name`), without starting it.
    pub(crate) async fn record_new(&self, d: Deployment, actor: &Actor, note: &str) -> Result<Deployment, EngineError> {
        let checked = note;
        let store = &self.inner.store;
        // The request is recorded whole in one commit: deployment, first event, audit entry and log line.
        let audit = AuditEntry::new(actor, "deploy", Some(d.id.as_str()), &format!("name={} repo={} branch={}", d.spec.name, d.spec.repo_url, d.spec.branch));
        let line = LogLine::new(&d.id, Level::Info, "request", &format!("deployment {} requested by {actor}{checked}", d.spec.name));
        match store.create_requested_deployment(&d, &format!("requested by {actor}"), Some(&audit), Some(&line)).await {
            Ok(()) => {}
            Err(StoreError::Taken { .. }) => {
                return Err(EngineError::Invalid(ValidationErrors(vec![FieldError::new(
                    "name",
                    "unique",
                    "must be unique among live deployments: a deployment with this name already exists",
                )])))
            }
            Err(e) => return Err(e.into()),
        }
        self.inner.bus.publish(Event::Log(line));
        self.publish_status(&d);
        Ok(d)
    }

    /// Starts a recorded deployment's pipeline in the background.
    pub(crate) fn start_pipeline(&self, d: &Deployment) {
        let engine = self.clone();
        let id = d.id.clone();
        self.inner.tasks.spawn(async move { engine.run_pipeline(id).await });
    }

    /// The pipeline of a new deployment: provisioning (when a cluster is configured), then — once it
    /// lands — installing and deploying. Without a cluster it says so and leaves the deployment `pending`.
    async fn run_pipeline(&self, id: DeploymentId) {
        self.provision(id).await;
    }

    /// A page of deployments matching `filter`, newest first (see `Store::list_deployments` for costs).
    pub async fn list_deployments(
        &self,
        filter: &crate::store::deployments::Filter,
        limit: u32,
        start: &crate::store::deployments::PageStart,
    ) -> Result<crate::store::deployments::DeploymentPage, EngineError> {
        Ok(self.inner.store.list_deployments(filter, limit, start).await?)
    }

    /// Finds a deployment by id, or by name (the live one, else the latest that had it).
    pub async fn find(&self, id_or_name: &str) -> Result<Deployment, EngineError> {
        let store = &self.inner.store;
        let found = match DeploymentId::parse(id_or_name) {
            Some(id) => store.get_deployment(&id).await?,
            None => match AppName::parse(id_or_name) {
                Ok(name) => store.get_deployment_by_name(&name).await?,
                Err(_) => None,
            },
        };
        found.ok_or_else(|| EngineError::NotFound(id_or_name.to_owned()))
    }

    /// Accepts an action on a deployment if its status allows it, records it, and carries it out.
    pub async fn act(&self, id_or_name: &str, action: Action, actor: &Actor) -> Result<Deployment, EngineError> {
        let d = self.find(id_or_name).await?;
        self.writable()?;
        if action == Action::Destroy && matches!(d.status, Status::Destroying | Status::Destroyed) {
            return Ok(d); // destroying twice is a no-op
        }
        action.check(d.status, d.proxmox_id.is_some()).map_err(EngineError::Conflict)?;
        self.inner.store.audit(actor, action.as_str(), Some(d.id.as_str()), &format!("name={}", d.spec.name)).await?;
        match action {
            Action::Destroy => self.destroy(d, actor).await,
            Action::Start | Action::Stop => {
                if self.inner.provisioner.is_none() {
                    return Err(EngineError::Conflict("no Proxmox cluster is configured to start or stop this guest".into()));
                }
                self.log(&d.id, Level::Info, action.as_str(), &format!("{} requested by {actor}", action.as_str())).await;
                let engine = self.clone();
                let id = d.id.clone();
                self.inner.tasks.spawn(async move { engine.power(id, action).await });
                Ok(d)
            }
            Action::Redeploy if d.proxmox_id.is_none() => self.provision_again(d, actor).await,
            Action::Redeploy => {
                self.redeploy_to(d.id.as_str(), None, actor).await?;
                Ok(d)
            }
            Action::Rollback => {
                let previous = self.store().releases(&d.id, 50).await?.into_iter().find(|r| r.status == crate::store::releases::ReleaseStatus::Superseded);
                let Some(prev) = previous else {
                    return Err(EngineError::Conflict("there is no earlier release to roll back to".into()));
                };
                self.require_deployer()?;
                self.log(&d.id, Level::Info, "rollback", &format!("rollback to release {} requested by {actor}", prev.id)).await;
                let engine = self.clone();
                let id = d.id.clone();
                self.inner.tasks.spawn(async move {
                    let e2 = engine.clone();
                    let id2 = id.clone();
                    let done = engine
                        .with_lease(&id, std::time::Duration::from_secs(600), |lease| async move {
                            e2.deploy_release_or_say(&id2, &lease, crate::store::releases::Trigger::Rollback, deploy::Wanted::Release(prev.id)).await;
                        })
                        .await;
                    if done.is_none() {
                        engine.log(&id, Level::Warn, "rollback", "another task holds this deployment; try again when it is done").await;
                    }
                });
                Ok(d)
            }
        }
    }

    /// Replaces a deployment's environment variables (values sealed before they are stored); they
    /// reach the guest at the next deploy. Only names are audited and logged.
    pub async fn set_env(&self, id_or_name: &str, vars: Vec<(crate::core::release::EnvName, crate::core::release::EnvValue)>, actor: &Actor) -> Result<Vec<String>, EngineError> {
        let d = self.find(id_or_name).await?;
        self.writable()?;
        if d.status == Status::Destroyed {
            return Err(EngineError::Conflict("the deployment is destroyed".into()));
        }
        let secrets = self.inner.secrets.get().ok_or_else(|| EngineError::Conflict("no secrets key is loaded on this agent".into()))?;
        let sealed: Vec<(String, String)> =
            vars.iter().map(|(n, v)| (n.as_str().to_string(), secrets.seal(&deploy::env_context(&d.id, n.as_str()), v.expose()))).collect();
        self.store().replace_env(&d.id, &sealed, crate::store::now_millis()).await?;
        let names: Vec<String> = sealed.into_iter().map(|(n, _)| n).collect();
        self.store().audit(actor, "set_env", Some(d.id.as_str()), &format!("names={}", names.join(","))).await?;
        self.log(&d.id, Level::Info, "env", &format!("environment set by {actor}: {} (applied at the next deploy)", if names.is_empty() { "none".to_string() } else { names.join(", ") })).await;
        Ok(names)
    }

    /// The names of a deployment's environment variables (values are write-only).
    pub async fn env_names(&self, id_or_name: &str) -> Result<Vec<String>, EngineError> {
        let d = self.find(id_or_name).await?;
        Ok(self.store().env_sealed(&d.id).await?.into_iter().map(|(n, _)| n).collect())
    }

    fn require_deployer(&self) -> Result<(), EngineError> {
        match self.inner.deployer.get() {
            Some(_) => Ok(()),
            None => Err(EngineError::Conflict("deploying over SSH is not configured on this agent (no Proxmox cluster)".into())),
        }
    }

    /// A redeploy of `commit` (the branch's newest when `None`), checked and audited like every action.
    pub async fn redeploy(&self, id_or_name: &str, commit: Option<CommitSha>, actor: &Actor) -> Result<Deployment, EngineError> {
        let Some(commit) = commit else { return self.act(id_or_name, Action::Redeploy, actor).await };
        let d = self.find(id_or_name).await?;
        self.writable()?;
        Action::Redeploy.check(d.status, d.proxmox_id.is_some()).map_err(EngineError::Conflict)?;
        if d.proxmox_id.is_none() {
            return Err(EngineError::Conflict("this deployment has no guest: redeploy without a commit to provision it again".into()));
        }
        self.inner.store.audit(actor, "redeploy", Some(d.id.as_str()), &format!("name={} commit={}", d.spec.name, commit.as_str())).await?;
        self.redeploy_to(d.id.as_str(), Some(commit), actor).await?;
        Ok(d)
    }

    /// A failed deployment without a guest (its provisioning failed, or its guest was lost) starts over:
    /// back to `provisioning` from its first step, under its lease, then provisioned as a new one is.
    async fn provision_again(&self, d: Deployment, actor: &Actor) -> Result<Deployment, EngineError> {
        if self.inner.provisioner.is_none() {
            return Err(EngineError::Conflict("no Proxmox cluster is configured to provision this deployment".into()));
        }
        let engine = self.clone();
        let message = format!("provisioned again: asked by {actor}");
        let id = d.id.clone();
        let restarted = self
            .with_lease(&id, std::time::Duration::from_secs(5), |lease| async move {
                engine.store().save_progress(&lease, &crate::core::provision::Progress::default(), None).await.map_err(EngineError::from)?;
                engine.leased_transition(d, Status::Provisioning, &message, &lease, |d| d.error_message = None).await.map_err(|e| EngineError::Conflict(e.to_string()))
            })
            .await
            .ok_or_else(|| EngineError::Conflict("the deployment is busy; try again in a moment".into()))??;
        self.log(&restarted.id, Level::Info, "provision", &format!("provisioning again (asked by {actor})")).await;
        let engine = self.clone();
        let id = restarted.id.clone();
        self.inner.tasks.spawn(async move { engine.provision(id).await });
        Ok(restarted)
    }

    /// Asks for a redeploy of `commit` (the branch's newest commit when `None`). Pushes arriving
    /// while a redeploy runs coalesce into one follow-up of the newest commit; two redeploys never
    /// run on one guest at once. The webhook door and the schedules go through here.
    pub async fn redeploy_to(&self, id_or_name: &str, commit: Option<crate::core::names::CommitSha>, actor: &Actor) -> Result<RedeployTicket, EngineError> {
        let d = self.find(id_or_name).await?;
        self.writable()?;
        let deploying = matches!(d.status, Status::Installing | Status::Deploying);
        if !deploying {
            crate::core::command::Action::Redeploy.check(d.status, d.proxmox_id.is_some()).map_err(EngineError::Conflict)?;
        }
        self.require_deployer()?;
        let commit_text = commit.as_ref().map(|c| c.as_str().to_string());
        enum Plan {
            Queued,
            AlreadyAt(String),
            AfterFirst,
            Start,
        }
        let wish = Wish { commit: commit.clone(), trigger: crate::store::releases::Trigger::redeploy_via(actor.door) };
        let plan = {
            let mut running = self.inner.redeploys.lock().expect("redeploys poisoned");
            let start = Lane { running: Some(commit.clone()), queued: None };
            if let Some(lane) = running.get_mut(d.id.as_str()) {
                lane.queued = Some(wish.clone());
                Plan::Queued
            } else if let (Some(c), Some(live), true) = (&commit_text, &d.commit, d.status == Status::Running) {
                if c == live {
                    Plan::AlreadyAt(c.clone())
                } else {
                    running.insert(d.id.to_string(), start);
                    Plan::Start
                }
            } else if deploying {
                // The first deploy is still running under provisioning's lease: follow up after it.
                running.insert(d.id.to_string(), Lane { running: None, queued: Some(wish.clone()) });
                Plan::AfterFirst
            } else {
                running.insert(d.id.to_string(), start);
                Plan::Start
            }
        };
        let what = commit_text.clone().unwrap_or_else(|| "the branch head".into());
        match plan {
            Plan::Queued => {
                self.log(&d.id, Level::Info, "redeploy", &format!("redeploy of {what} requested by {actor} while one runs: queued as the follow-up")).await;
                return Ok(RedeployTicket::Queued { commit: commit_text });
            }
            Plan::AlreadyAt(c) => return Ok(RedeployTicket::AlreadyAt { commit: c }),
            Plan::AfterFirst => {
                self.log(&d.id, Level::Info, "redeploy", &format!("redeploy of {what} requested by {actor}: queued after the first deploy")).await;
                let engine = self.clone();
                let id = d.id.clone();
                self.inner.tasks.spawn(async move { engine.redeploy_loop(id, None, true).await });
                return Ok(RedeployTicket::Queued { commit: commit_text });
            }
            Plan::Start => {}
        }
        self.log(&d.id, Level::Info, "redeploy", &format!("redeploy of {what} requested by {actor}")).await;
        let engine = self.clone();
        let id = d.id.clone();
        self.inner.tasks.spawn(async move { engine.redeploy_loop(id, Some(wish), false).await });
        Ok(RedeployTicket::Started { commit: commit_text })
    }

    /// Where a deployment is headed: what it serves, the deploy in progress, the follow-up queued behind it (the
    /// webhook door's same-push rule, `core::webhook::same_push`, compares a push with it).
    pub async fn heading(&self, id: &DeploymentId) -> Result<crate::core::webhook::Heading, EngineError> {
        let d = self.store().get_deployment(id).await?.ok_or_else(|| EngineError::NotFound(id.to_string()))?;
        let live = if d.status == Status::Running { d.commit.clone() } else { None };
        let deploying = matches!(d.status, Status::Installing | Status::Deploying);
        let running = self.inner.redeploys.lock().expect("redeploys poisoned");
        let lane = running.get(id.as_str());
        let text = |c: &Option<CommitSha>| c.as_ref().map(|c| c.as_str().to_owned());
        Ok(crate::core::webhook::Heading {
            live,
            deploying: lane.and_then(|l| l.running.as_ref().map(text)).or(deploying.then_some(None)),
            queued: lane.and_then(|l| l.queued.as_ref().map(|w| text(&w.commit))),
        })
    }

    /// Runs redeploys of one deployment back to back until no follow-up is queued. With `first`
    /// `None` it starts with the queued one (after waiting for the work in progress).
    async fn redeploy_loop(&self, id: DeploymentId, first: Option<Wish>, wait_first: bool) {
        let mut next = first;
        let patience = if wait_first { std::time::Duration::from_secs(3600) } else { std::time::Duration::from_secs(600) };
        loop {
            let Wish { commit, trigger } = match next.take() {
                Some(c) => c,
                None => {
                    let mut running = self.inner.redeploys.lock().expect("redeploys poisoned");
                    let lane = running.get_mut(id.as_str());
                    match lane.and_then(|l| l.queued.take().map(|w| (l, w))) {
                        Some((lane, w)) => {
                            lane.running = Some(w.commit.clone());
                            w
                        }
                        None => {
                            running.remove(id.as_str());
                            return;
                        }
                    }
                }
            };
            let wanted = match commit {
                Some(c) => deploy::Wanted::Commit(c),
                None => deploy::Wanted::BranchHead,
            };
            let engine = self.clone();
            let id2 = id.clone();
            let done = self
                .with_lease(&id, patience, |lease| async move {
                    // A redeploy queued behind the first deploy may find that very commit live already.
                    if let (deploy::Wanted::Commit(c), Ok(Some(d))) = (&wanted, engine.store().get_deployment(&id2).await) {
                        if d.status == Status::Running && d.commit.as_deref() == Some(c.as_str()) {
                            engine.log(&id2, Level::Info, "redeploy", &format!("{} is already live", c.as_str())).await;
                            return;
                        }
                        if !matches!(d.status, Status::Running | Status::Stopped | Status::Failed) {
                            engine.log(&id2, Level::Warn, "redeploy", &format!("skipped: the deployment is {}", d.status)).await;
                            return;
                        }
                    }
                    engine.deploy_release_or_say(&id2, &lease, trigger, wanted).await;
                })
                .await;
            if done.is_none() {
                self.log(&id, Level::Warn, "redeploy", "another task held this deployment for too long; redeploy dropped").await;
            }
        }
    }

    async fn destroy(&self, d: Deployment, actor: &Actor) -> Result<Deployment, EngineError> {
        let d = self.transition(d, Status::Destroying, &format!("destroy requested by {actor}")).await?;
        self.log(&d.id, Level::Info, "destroy", "destroy requested").await;
        if self.inner.provisioner.is_some() {
            // A guest may exist or be in the making: remove it in the background (202), under the lease.
            let engine = self.clone();
            let id = d.id.clone();
            self.inner.tasks.spawn(async move { engine.destroy_guest(id).await });
            return Ok(d);
        }
        if d.proxmox_id.is_some() {
            return Err(EngineError::Conflict("this deployment has a guest but no Proxmox cluster is configured to remove it".into()));
        }
        self.log(&d.id, Level::Info, "destroy", "no guest was ever created; nothing to remove on Proxmox").await;
        let d = self.transition(d, Status::Destroyed, "destroyed").await?;
        self.log(&d.id, Level::Info, "destroy", "destroyed").await;
        self.schedules_follow_destroy(&d.id).await;
        Ok(d)
    }

    /// A destroyed deployment's schedules are disabled (kept with their history), and the log says which.
    pub(crate) async fn schedules_follow_destroy(&self, id: &DeploymentId) {
        match self.store().disable_schedules_of(id).await {
            Ok(ids) if ids.is_empty() => {}
            Ok(ids) => self.log(id, Level::Info, "destroy", &format!("disabled {} schedule(s) of this deployment: {}", ids.len(), ids.join(", "))).await,
            Err(e) => {
                tracing::error!(deployment = %id, error = %e, "could not disable the destroyed deployment's schedules");
                self.log(id, Level::Warn, "destroy", &format!("could not disable this deployment's schedules ({e}); they stay enabled")).await;
            }
        }
    }

    /// Moves `d` to `to` if the lifecycle allows it, persists it (revision-checked) and publishes it.
    pub async fn transition(&self, mut d: Deployment, to: Status, message: &str) -> Result<Deployment, EngineError> {
        let from = d.status;
        d.status = from.transition(to)?;
        d.updated_at = now_millis();
        let saved = self.inner.store.save_deployment(&d, from, message).await?;
        self.publish_status(&saved);
        Ok(saved)
    }

    /// Appends a log line and publishes it; a store failure is reported in the agent's own log, not lost silently.
    pub async fn log(&self, id: &DeploymentId, level: Level, step: &str, text: &str) {
        match self.inner.store.append_log(id, level, step, text).await {
            Ok(line) => self.inner.bus.publish(Event::Log(line)),
            Err(e) => tracing::error!(deployment = %id, error = %e, "could not record a log line"),
        }
    }

    fn publish_status(&self, d: &Deployment) {
        self.inner.bus.publish(Event::Status { id: d.id.clone(), status: d.status });
    }

    /// Stops taking work and waits for in-flight work to reach a persisted point.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait()).await.is_err() {
            tracing::warn!("in-flight work did not finish within {grace:?}; it resumes from its last persisted step at the next start");
        }
    }
}
