//! The engine's long-running work: provisioning a deployment step by step under its lease, resuming
//! unfinished work at start, and destroying guests.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::ownership::{Fence, Found, OwnedGuest};
use super::provision::{commit, wait, CloneSlot, IdChoice, ProvisionError, Provisioner, RawConfig};
use crate::core::host_key::HostKeyPin;
use crate::core::names::{NodeName, VmId};
use crate::core::status::IllegalTransition;
use crate::store::provision::StepWrite;
use crate::store::StoreError;
use crate::pve::PveError;
use super::{Engine, EngineError};
use crate::core::deployment::{Deployment, DeploymentId, GuestType};
use crate::core::provision::{GuestAt, Progress, Step};
use crate::core::status::Status;
use crate::store::leases::Lease;
use crate::store::logs::{Level, LogLine};
use super::Event;
use crate::store::now_millis;

/// How long a lease lasts without renewal; renewed every third of it while working.
pub const LEASE_TTL_MS: i64 = 30_000;

/// Another agent took the deployment's work lease over: provisioning, deploys and destroys all stop
/// quietly on it, and that agent carries on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the work lease was taken over by another agent")]
pub struct LeaseLost;

/// Why a save under the work lease (`Engine::leased_transition`) did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Unsaved {
    /// Stop quietly: another agent carries on.
    #[error(transparent)]
    LeaseLost(#[from] LeaseLost),
    /// The status does not allow it (it changed meanwhile): re-read and decide again.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// The database failed; `StoreError` says whether a retry is safe.
    #[error(transparent)]
    Store(StoreError),
}

impl Unsaved {
    /// A lease-checked write's failure: `Stale` means another worker holds the lease now.
    pub(crate) fn fenced(e: StoreError) -> Self {
        if matches!(e, StoreError::Stale) {
            Unsaved::LeaseLost(LeaseLost)
        } else {
            Unsaved::Store(e)
        }
    }
}

/// `d` moved to status `to` (checked against the status machine; staying put is allowed) with `change` applied
/// and the time of the change: what a lease-checked save writes.
pub(crate) fn moved(d: &mut Deployment, to: Status, change: impl FnOnce(&mut Deployment)) -> Result<(), Unsaved> {
    if d.status != to {
        d.status = d.status.transition(to)?;
    }
    change(d);
    d.updated_at = now_millis();
    Ok(())
}

impl From<Unsaved> for ProvisionError {
    fn from(e: Unsaved) -> Self {
        match e {
            Unsaved::LeaseLost(l) => ProvisionError::LeaseLost(l),
            Unsaved::Illegal(t) => ProvisionError::Illegal(t),
            Unsaved::Store(e) => ProvisionError::Store(e),
        }
    }
}

/// How long a destroy waits for work in flight to hand over: that work sees the destroy at its next
/// step commit, and the longest step is a task or an address wait running to its deadline.
fn destroy_patience(s: &super::provision::ProvisionSettings) -> Duration {
    (s.task_deadline.max(s.address_deadline) + Duration::from_millis(LEASE_TTL_MS as u64)).max(Duration::from_millis((LEASE_TTL_MS * 2) as u64))
}

/// What one run of provisioning keeps between its steps; none of it is persisted (after a crash it is
/// read again or not needed).
struct Run<'a> {
    id: &'a DeploymentId,
    lease: &'a Lease,
    prov: &'a Provisioner,
    /// Checked immediately before every mutating Proxmox call (see `ownership`).
    fence: Fence,
    /// The deployment as last saved.
    d: Deployment,
    kind: GuestType,
    /// The step follows a crash or a failed try: it checks what exists on Proxmox before acting.
    resumed: bool,
    /// The guest's config as last read in this run (disks and MAC do not change after the clone).
    config: Option<RawConfig>,
    /// A full clone's storage slot, from its clone call until its task has ended (see `Provisioner::create`).
    clone_slot: Option<CloneSlot>,
    /// Ids found held by guests that are not ours, this run (bounded: see `vmid_taken`).
    taken_ids: u32,
    /// The backup the guest is restored from instead of created (a deployment restored from a backup).
    restore: Option<crate::core::backup::RestoreSource>,
}

/// What a step did, committed with the next state in one transaction (see `Engine::commit_step`).
struct Outcome {
    next: Progress,
    lines: Vec<(Level, String)>,
    /// An id the step chose, claimed by the commit.
    claim: Option<VmId>,
    /// The deployment with the step's changes applied, and the event's message.
    change: Option<(Deployment, &'static str)>,
    /// Whether the step commits on its own; a step that changed nothing outside this process (a choice,
    /// a wait, a skipped upload) commits together with the next one: after a crash it is simply done again.
    alone: bool,
}

impl Outcome {
    fn to(next: Progress) -> Self {
        Self { next, lines: vec![], claim: None, change: None, alone: true }
    }

    fn say(mut self, level: Level, text: String) -> Self {
        self.lines.push((level, text));
        self
    }

    fn changing(mut self, d: Deployment, message: &'static str) -> Self {
        self.change = Some((d, message));
        self
    }

    fn later(mut self) -> Self {
        self.alone = false;
        self
    }
}

/// How a provisioning step ended. One lives per step and is moved straight into the commit, so its size does
/// not matter.
#[allow(clippy::large_enum_variant)]
enum Flow {
    /// It ran: commit its outcome.
    Next(Outcome),
    /// Run this state now (it was saved, or needs no saving).
    Again(Progress),
}

impl From<Outcome> for Flow {
    fn from(o: Outcome) -> Self {
        Flow::Next(o)
    }
}

/// How many times an id another agent claimed first, or a guest not ours holds, is chosen again before
/// provisioning fails.
const ID_RETRIES: u32 = 20;

/// How often a step that keeps Proxmox waiting says so in the deployment's log.
const SLOW_STEP_NOTICE: Duration = Duration::from_secs(10);

/// One retry budget per provisioning step: a transient failure (a lost quorum, a 5xx, a timeout or a
/// dropped connection) runs the step again after a jittered exponential backoff from 1 s (so no
/// failure sends more than one mutating call per second per deployment), capped at 5 minutes between
/// tries, within the step's deadline and at most `STEP_ATTEMPTS` tries (3 for a plain 500, which is
/// usually deterministic). Giving up names the last answer.
struct StepBudget {
    step: Step,
    since: std::time::Instant,
    attempts: u32,
    deadline: Duration,
}

const STEP_ATTEMPTS: u32 = 10;
const STEP_BACKOFF: crate::pve::RetryPolicy =
    crate::pve::RetryPolicy { attempts: STEP_ATTEMPTS, base_delay: Duration::from_secs(1), max_delay: Duration::from_secs(300), deadline: Duration::MAX };

impl StepBudget {
    fn new(step: Step, deadline: Duration) -> Self {
        Self { step, since: std::time::Instant::now(), attempts: 0, deadline }
    }

    /// How long to wait before trying `step` again after `e`; `None` when `e` is not transient or the
    /// budget is spent.
    fn retry(&mut self, step: Step, e: &ProvisionError) -> Option<Duration> {
        if step != self.step {
            *self = Self::new(step, self.deadline);
        }
        let ProvisionError::Pve(pe) = e else { return None };
        let cap = if matches!(pe, PveError::Server { status: 500, .. }) { 3 } else { STEP_ATTEMPTS };
        if !pe.is_transient() || self.attempts + 1 >= cap {
            return None;
        }
        // Jitter takes up to half of each step off; never below a second.
        let wait = STEP_BACKOFF.delay(self.attempts + 1).max(Duration::from_secs(1));
        if self.since.elapsed() + wait > self.deadline {
            return None;
        }
        self.attempts += 1;
        Some(wait)
    }

    /// The final error, saying how long the step was tried when it was tried more than once.
    fn give_up(&self, e: ProvisionError) -> ProvisionError {
        match e {
            ProvisionError::Pve(pe) if self.attempts > 0 && pe.is_transient() => {
                ProvisionError::GaveUp { step: self.step, tries: self.attempts + 1, secs: self.since.elapsed().as_secs(), last: pe }
            }
            e => e,
        }
    }
}

impl Engine {
    /// Takes the deployment's lease (waiting up to `patience` for another holder to finish), runs `work`,
    /// releases it; `None` when the lease could not be had.
    pub(crate) async fn with_lease<F, Fut, T>(&self, id: &DeploymentId, patience: Duration, work: F) -> Option<T>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let started = std::time::Instant::now();
        // One task of this process at a time per deployment (the lease is per agent).
        while !self.inner.working.lock().expect("working poisoned").insert(id.clone()) {
            if started.elapsed() >= patience {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _done = Working { engine: self, id };
        let store = self.store().clone();
        let lease = loop {
            match store.acquire_lease(id, &self.inner.agent_id, LEASE_TTL_MS).await {
                Ok(Some(l)) => break l,
                Ok(None) if started.elapsed() < patience => tokio::time::sleep(Duration::from_millis(200)).await,
                Ok(None) => return None,
                Err(e) => {
                    tracing::error!(deployment = %id, error = %e, "cannot take the work lease");
                    return None;
                }
            }
        };
        let renew = {
            let store = store.clone();
            let lease = lease.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis((LEASE_TTL_MS / 3) as u64)).await;
                    if store.renew_lease(&lease, LEASE_TTL_MS).await.is_err() {
                        break;
                    }
                }
            })
        };
        let out = work(lease.clone()).await;
        renew.abort();
        if let Err(e) = store.release_lease(&lease).await {
            // It runs out by itself within `LEASE_TTL_MS`.
            tracing::warn!(deployment = %id, error = %e, "could not release the work lease");
        }
        Some(out)
    }

    /// Provisions `id` if it is pending or provisioning and no other agent is working on it.
    pub(crate) async fn provision(&self, id: DeploymentId) {
        self.provision_with_patience(id, Duration::ZERO).await
    }

    /// As `provision`, waiting up to `patience` for another holder's lease to be released or to expire
    /// (after a crash of another agent, its lease runs out within `LEASE_TTL_MS`).
    async fn provision_with_patience(&self, id: DeploymentId, patience: Duration) {
        let Some(prov) = self.inner.provisioner.clone() else {
            self.log(&id, Level::Warn, "provision", "no Proxmox cluster is configured; the deployment stays pending").await;
            return;
        };
        let engine = self.clone();
        let key = id.clone();
        let taken = self
            .with_lease(&key, patience, |lease| async move {
                match engine.provision_steps(&id, &lease, &prov).await {
                    Ok(()) => {}
                    Err(ProvisionError::LeaseLost(_)) => {
                        tracing::warn!(deployment = %id, "another agent took over this deployment");
                    }
                    Err(e) => engine.fail_provisioning(&id, &lease, &prov, &e.to_string()).await,
                }
                prov.forget_pending(&id);
            })
            .await;
        if taken.is_none() {
            tracing::info!(deployment = %key, "another agent holds the work lease; leaving it to that agent");
        }
    }

    /// Runs the provisioning steps of `id` from its persisted progress to the end, committing each step's
    /// outcome (see `commit_step`), then hands the guest over to the deploy (`hand_over`).
    async fn provision_steps(&self, id: &DeploymentId, lease: &Lease, prov: &Provisioner) -> Result<(), ProvisionError> {
        let store = self.store();
        let d = store.get_deployment(id).await?.ok_or(ProvisionError::Vanished)?;
        if matches!(d.status, Status::Installing | Status::Deploying) {
            return self.resume_deploy(id, lease).await;
        }
        if !matches!(d.status, Status::Provisioning | Status::Pending) {
            return Ok(());
        }
        // A deployment that was pending a moment ago has no progress yet (it is only written under
        // `provisioning`); a retried or resumed one reads where it stopped.
        let mut p = if d.status == Status::Pending { Progress::default() } else { store.load_progress(id).await?.unwrap_or_default() };
        // The first step of a resumed run may have been half done before the crash: it checks what
        // exists on Proxmox before acting. Every later step follows one this run did itself.
        let resumed = p != Progress::Place;
        if resumed {
            self.log(id, Level::Info, "provision", &format!("resuming at: {}", p.describe())).await;
        }
        let fence = Fence::new(store.clone(), lease.clone());
        let restore = store.restore_source(id).await?;
        let mut run = Run { id, lease, prov, fence, kind: d.spec.guest_type, d, resumed, config: None, clone_slot: None, taken_ids: 0, restore };
        // Lines of steps whose commit was left to the next step (see `Outcome::later`).
        let mut lines: Vec<LogLine> = Vec::new();
        let mut budget = StepBudget::new(p.step(), prov.settings.step_deadline);
        while !matches!(p, Progress::Ready { .. }) {
            let step = p.step();
            let ran = self.patiently(id, step, self.run_step(&mut run, p.clone())).await;
            p = match ran {
                Ok(Flow::Again(next)) => next,
                Ok(Flow::Next(out)) => match self.commit_step(&mut run, &p, out, &mut lines).await? {
                    Some(next) => next,
                    None => return Ok(()),
                },
                Err(e) => {
                    let Some(wait) = budget.retry(step, &e) else {
                        let e = budget.give_up(e);
                        self.keep_lines(&mut lines, &e).await;
                        return Err(e);
                    };
                    self.log(id, Level::Warn, "provision", &format!("{} failed: {e}; retry {} in {:.1}s", step.as_str().replace('_', " "), budget.attempts, wait.as_secs_f64())).await;
                    tokio::time::sleep(wait).await;
                    // The step runs again checking what exists first (a create may have happened).
                    run.resumed = true;
                    p.tried()
                }
            };
        }
        self.hand_over(run).await
    }

    /// The guest is ready: the deployment goes on to install the app, at the commit it is to serve.
    async fn hand_over(&self, run: Run<'_>) -> Result<(), ProvisionError> {
        let (id, lease) = (run.id, run.lease);
        if run.d.status == Status::Provisioning {
            // Progress at `ready` from an older agent that stopped before handing the guest over.
            self.log(id, Level::Info, "provision", "provisioned; installing the app").await;
            self.leased_transition(run.d, Status::Installing, "guest ready", lease, |_| {}).await?;
        }
        // A guest restored from a backup gets the commit the backup served (its files are on the guest already);
        // a pull request's preview deploys the head commit its pull request named last (`engine::previews`).
        let restored = run.restore.and_then(|r| r.commit);
        let preview_head = match restored {
            Some(_) => None,
            None => self.store().preview_of(id).await?.and_then(|p| crate::core::names::CommitSha::parse(&p.head_sha).ok()),
        };
        let wanted = match restored.or(preview_head) {
            Some(c) => super::deploy::Wanted::Commit(c),
            None => super::deploy::Wanted::BranchHead,
        };
        self.deploy_release(id, lease, crate::store::releases::Trigger::Deploy, wanted).await
    }

    /// Runs the step `p` is at.
    async fn run_step(&self, run: &mut Run<'_>, p: Progress) -> Result<Flow, ProvisionError> {
        match p {
            Progress::Place => self.place(run).await,
            Progress::ReserveId { node, static_ip, attempts: _ } => self.reserve_id(run, node, static_ip).await,
            Progress::Create { guest, attempts } => self.create(run, guest, attempts).await,
            Progress::AwaitCreate { guest, task, attempts } => self.await_create(run, guest, task, attempts).await,
            Progress::Snippet { guest } => self.snippet(run, guest).await,
            Progress::Configure { guest, host_key } => self.configure(run, guest, host_key).await,
            Progress::Resize { guest, host_key } => self.resize(run, guest, host_key).await,
            Progress::Start { guest, host_key } => self.start(run, guest, host_key).await,
            Progress::AwaitStart { guest, host_key, task } => self.await_start(run, guest, host_key, task).await,
            Progress::AwaitAddress { guest, host_key } => self.await_address(run, guest, host_key).await,
            ready @ Progress::Ready { .. } => Ok(Flow::Again(ready)),
        }
    }

    /// Commits what a step did together with the next state, in one transaction (or leaves it to the next
    /// step's commit, see `Outcome::later`); the first commit also records that provisioning began, the
    /// last one hands the guest over to the deploy. Returns the state to run next; `None` when a destroy
    /// was requested meanwhile (it takes over from here: it waits for this lease).
    async fn commit_step(&self, run: &mut Run<'_>, before: &Progress, out: Outcome, lines: &mut Vec<LogLine>) -> Result<Option<Progress>, ProvisionError> {
        let (id, d) = (run.id, &run.d);
        let carried = lines.len();
        lines.extend(out.lines.iter().map(|(level, text)| LogLine::new(id, *level, "provision", text)));
        run.resumed = false;
        let Outcome { next, claim, mut change, alone, .. } = out;
        let ready = matches!(next, Progress::Ready { .. });
        if !alone && !ready {
            return Ok(Some(next));
        }
        if change.is_none() && d.status == Status::Pending {
            // The first commit also records that provisioning began (one transaction fewer per deployment).
            change = Some((Deployment { status: Status::Provisioning, ..d.clone() }, "provisioning"));
        }
        if ready {
            // The last step's commit also hands the guest over to the deploy.
            let (mut handed, _) = change.take().unwrap_or_else(|| (d.clone(), ""));
            handed.status = d.status.transition(Status::Installing)?;
            change = Some((handed, "guest ready"));
            lines.push(LogLine::new(id, Level::Info, "provision", "provisioned; installing the app"));
        }
        let deployment = change.as_mut().map(|(next, message)| {
            next.updated_at = now_millis();
            (&*next, d.status, *message)
        });
        let saved = match commit(self.store(), run.lease, StepWrite { progress: &next, lines, claim, deployment }).await {
            Ok(saved) => saved,
            Err(ProvisionError::Store(StoreError::Taken { .. })) if claim.is_some() && before.attempts() < ID_RETRIES => {
                // Another agent claimed that id first: choose again.
                run.prov.drop_choice(id);
                lines.truncate(carried);
                let Progress::Create { guest, .. } = next else { return Ok(Some(before.clone())) };
                return Ok(Some(Progress::ReserveId { node: guest.node, static_ip: guest.static_ip, attempts: before.attempts() + 1 }));
            }
            Err(e) => {
                self.keep_lines(lines, &e).await;
                return Err(e);
            }
        };
        for line in lines.drain(..) {
            self.inner.bus.publish(Event::Log(line));
        }
        if let Some(saved) = saved.deployment {
            run.d = saved;
            self.publish_status(&run.d);
        }
        if saved.status == Some(Status::Destroying) {
            self.log(id, Level::Info, "provision", "destroy requested; stopping provisioning").await;
            return Ok(None);
        }
        Ok(Some(next))
    }

    async fn place(&self, run: &mut Run<'_>) -> Result<Flow, ProvisionError> {
        let (node, line) = match &run.restore {
            // The node that lists the backup (a node-local backup storage is that node's alone).
            Some(r) => (r.node.clone(), format!("placed on node {}, which holds backup {}", r.node, r.backup)),
            None => {
                let node = run.prov.place(&run.d).await?;
                (node.clone(), format!("placed on node {node}"))
            }
        };
        Ok(Outcome::to(Progress::ReserveId { node, static_ip: None, attempts: 0 }).say(Level::Info, line).later().into())
    }

    async fn reserve_id(&self, run: &mut Run<'_>, node: NodeName, static_ip: Option<Ipv4Addr>) -> Result<Flow, ProvisionError> {
        let (vmid, claim) = match run.prov.choose_id(self.store(), run.id, run.resumed).await? {
            IdChoice::Held(vmid) => (vmid, None),
            IdChoice::ToClaim(vmid) => (vmid, Some(vmid)),
        };
        // Kept across a retry of this step: an address is claimed once per deployment.
        let static_ip = match static_ip {
            Some(a) => Some(a),
            None => run.prov.reserve_address(self.store(), run.id).await?,
        };
        let mut out = Outcome::to(Progress::Create { guest: GuestAt { node, vmid, static_ip }, attempts: 0 });
        out.claim = claim;
        if let Some(a) = static_ip {
            out = out.say(Level::Info, format!("reserved VMID {vmid} and address {a}"));
        }
        Ok(out.into())
    }

    /// Clones the template or creates the container (restores the backup, for a deployment restored from one). A
    /// resumed or retried create may have happened already
    /// (its answer lost to a crash, a timeout or a dropped connection): the guest's mark decides, never the id alone.
    async fn create(&self, run: &mut Run<'_>, guest: GuestAt, attempts: u32) -> Result<Flow, ProvisionError> {
        let (id, prov, kind) = (run.id, run.prov, run.kind);
        let (node, vmid) = (&guest.node, guest.vmid);
        let ours = format!("guest {vmid} already exists on {node} with this deployment's mark; continuing");
        let found = if run.resumed || attempts > 0 { prov.owner_at(kind, node, vmid).await? } else { None };
        let (task, line) = match found {
            // Created before; the await step waits for its task and lock.
            Some(owner) if owner.is(id) => (self.made_by(run, node, vmid).await?, ours),
            Some(_) => return self.vmid_taken(run, guest, attempts).await,
            None => {
                run.fence.check().await?;
                let addressing = prov.addressing(guest.static_ip);
                // A deployment restored from a backup gets its guest from the backup instead.
                let sent = match &run.restore {
                    Some(r) => prov.restore_new(&run.d, node, vmid, &addressing, &r.backup).await.map(|upid| (upid, None)),
                    None => prov.create(&run.d, node, vmid, &addressing).await,
                };
                match sent {
                    Ok((upid, slot)) => {
                        run.clone_slot = slot;
                        let what = match (&run.restore, kind) {
                            (Some(r), _) => format!("restoring backup {}", r.backup),
                            (None, GuestType::Vm) => "cloning the template".to_string(),
                            (None, GuestType::Lxc) => "creating the container".to_string(),
                        };
                        (Some(upid.as_str().to_owned()), format!("{what} as {vmid} on {node}"))
                    }
                    Err(e) if e.is_vmid_taken() => match prov.owner_at(kind, node, vmid).await? {
                        // An earlier create of ours whose answer was lost went through.
                        Some(owner) if owner.is(id) => (self.made_by(run, node, vmid).await?, ours),
                        _ => return self.vmid_taken(run, guest, attempts).await,
                    },
                    Err(e) if e.is_lock_timeout() && attempts < prov.settings.lock_retries => {
                        let again = Progress::Create { attempts: self.retry_after_lock(id, attempts, &e.to_string()).await, guest };
                        commit(self.store(), run.lease, StepWrite::progress(&again, &[])).await?;
                        return Ok(Flow::Again(again));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        Ok(Outcome::to(Progress::AwaitCreate { guest, task, attempts: 0 }).say(Level::Info, line).into())
    }

    /// The task that made guest `vmid` of ours: its create (or clone), or its restore from a backup.
    async fn made_by(&self, run: &Run<'_>, node: &NodeName, vmid: VmId) -> Result<Option<String>, ProvisionError> {
        match run.restore {
            Some(_) => run.prov.restore_task(run.kind, node, vmid).await,
            None => run.prov.creation_task(run.kind, node, vmid).await,
        }
    }

    /// Waits for the clone/create task and the guest's lock; the guest it goes on with must carry our mark.
    /// A container's host key fingerprint is read from its create task's log.
    async fn await_create(&self, run: &mut Run<'_>, guest: GuestAt, task: Option<String>, attempts: u32) -> Result<Flow, ProvisionError> {
        let (id, prov, kind, vmid) = (run.id, run.prov, run.kind, guest.vmid);
        if let Some(upid) = &task {
            let waited = wait(&prov.client, upid, &prov.settings).await;
            // The slot (if this run cloned) is given back as soon as the copy's task has ended.
            run.clone_slot = None;
            match waited {
                Ok(()) => {}
                Err(ProvisionError::Pve(e)) if e.is_lock_timeout() && attempts < prov.settings.lock_retries => {
                    // PVE removes the half-made guest when a clone fails; try the clone again.
                    let again = Progress::Create { attempts: self.retry_after_lock(id, attempts, &e.to_string()).await, guest };
                    commit(self.store(), run.lease, StepWrite::progress(&again, &[])).await?;
                    return Ok(Flow::Again(again));
                }
                // PVE's worker checks the id again under its lock (the race with `nextid`).
                Err(ProvisionError::Pve(e)) if e.is_vmid_taken() => return self.vmid_taken(run, guest, attempts).await,
                Err(e) => return Err(e),
            }
        }
        let created = prov.wait_unlocked(kind, &guest.node, vmid).await?;
        // Whatever this run believes, the guest it goes on with must carry our mark.
        if !super::ownership::owner_of(&created).is(id) {
            return Err(crate::core::ownership::NotOurs::Foreign { vmid: vmid.get() }.into());
        }
        if kind == GuestType::Lxc {
            // Under a pool, a container is created untagged and tagged now (see `Provisioner::tag_container`).
            run.fence.check().await?;
            prov.tag_container(&run.d, &guest.node, vmid, &created).await?;
        }
        run.config = Some(created);
        let changed = Deployment { proxmox_id: Some(vmid), proxmox_node: Some(guest.node.clone()), ..run.d.clone() };
        let created_line = format!("guest {vmid} created on {}", guest.node);
        let out = match kind {
            GuestType::Vm => Outcome::to(Progress::Snippet { guest }),
            GuestType::Lxc if run.restore.is_some() => {
                let host_key = run.restore.as_ref().and_then(|r| r.host_key.clone());
                let said = match (&host_key, &run.restore) {
                    (Some(k), Some(r)) => (Level::Info, format!("container host key {} (the backed-up container's, pinned by deployment {}; a restore keeps it)", k.fingerprint(), r.from)),
                    _ => (Level::Warn, "the backed-up container's host key is not known (its deployment never pinned one); deploys will refuse to connect to it".into()),
                };
                Outcome::to(Progress::Start { guest, host_key }).say(said.0, said.1)
            }
            GuestType::Lxc => {
                let host_key = match &task {
                    Some(upid) => prov.container_host_key(upid).await?,
                    None => None,
                };
                let said = match &host_key {
                    Some(k) => (Level::Info, format!("container host key {} (from Proxmox's create log)", k.fingerprint())),
                    None => (Level::Warn, "the container's host key fingerprint is not in its create log; deploys will refuse to connect to it until it is re-created".into()),
                };
                Outcome::to(Progress::Start { guest, host_key }).say(said.0, said.1)
            }
        };
        Ok(out.changing(changed, "guest created").say(Level::Info, created_line).into())
    }

    /// VM: renders the user-data with a fresh host key each time this step runs (the snippet and the pinned
    /// key always match) and uploads it to the node; without node SSH, Proxmox generates the user-data.
    async fn snippet(&self, run: &mut Run<'_>, guest: GuestAt) -> Result<Flow, ProvisionError> {
        let (prov, d) = (run.prov, &run.d);
        let Some(files) = &prov.node_files else {
            let why = "no node SSH is configured ([proxmox.node_ssh]): Proxmox generates the user-data and the guest's host key cannot be pinned";
            return Ok(Outcome::to(Progress::Configure { guest, host_key: None }).say(Level::Warn, why.into()).later().into());
        };
        let s = &prov.settings;
        let host = crate::keys::generate_ed25519(d.spec.name.as_str());
        let identity = crate::core::cloud_init::GuestIdentity {
            hostname: d.spec.name.as_str(),
            deploy_user: &s.deploy_user,
            deploy_public_key: &s.deploy_public_key,
            host_private_key: host.private_openssh.expose(),
            host_public_key: &host.public_openssh,
        };
        let user_data = crate::core::cloud_init::render(&s.user_data, &identity);
        let volid = files.upload(&prov.client, &guest.node, run.id, &user_data).await.map_err(ProvisionError::Snippet)?;
        let host_key = HostKeyPin::parse(&host.public_openssh).map_err(|e| ProvisionError::Snippet(e.to_string()))?;
        let line = format!("cloud-init snippet uploaded ({volid}) with the guest's own host key");
        Ok(Outcome::to(Progress::Configure { guest, host_key: Some(host_key) }).say(Level::Info, line).into())
    }

    /// VM: cores, memory, cloud-init (the snippet when its host key is pinned), agent, tags.
    async fn configure(&self, run: &mut Run<'_>, guest: GuestAt, host_key: Option<HostKeyPin>) -> Result<Flow, ProvisionError> {
        let (prov, d) = (run.prov, &run.d);
        let cicustom = match (&prov.node_files, &host_key) {
            (Some(files), Some(_)) => Some(files.cicustom(run.id)),
            _ => None,
        };
        run.fence.check().await?;
        prov.configure_vm(d, &guest.node, guest.vmid, &prov.addressing(guest.static_ip), cicustom).await?;
        let line = format!("configured {} cores, {} MiB, cloud-init user {}", d.spec.cpu, d.spec.memory_mib, prov.settings.deploy_user);
        Ok(Outcome::to(Progress::Resize { guest, host_key }).say(Level::Info, line).into())
    }

    /// VM: grows the boot disk to the requested size (absolute, so repeating is harmless).
    async fn resize(&self, run: &mut Run<'_>, guest: GuestAt, host_key: Option<HostKeyPin>) -> Result<Flow, ProvisionError> {
        let (prov, d) = (run.prov, &run.d);
        run.fence.check().await?;
        let grown = prov.resize_vm(d, &guest.node, guest.vmid, run.config.as_ref()).await?;
        let disk_gb = d.spec.disk_gb;
        let mut out = Outcome::to(Progress::Start { guest, host_key });
        if let Some(upid) = grown {
            wait(&prov.client, upid.as_str(), &prov.settings).await?;
            out = out.say(Level::Info, format!("boot disk grown to {disk_gb} GB"));
        }
        Ok(out.into())
    }

    async fn start(&self, run: &mut Run<'_>, guest: GuestAt, host_key: Option<HostKeyPin>) -> Result<Flow, ProvisionError> {
        run.fence.check().await?;
        let task = run.prov.start(run.kind, &guest.node, guest.vmid, !run.resumed).await?.map(|u| u.as_str().to_owned());
        let line = format!("starting guest {}", guest.vmid);
        Ok(Outcome::to(Progress::AwaitStart { guest, host_key, task }).say(Level::Info, line).into())
    }

    async fn await_start(&self, run: &mut Run<'_>, guest: GuestAt, host_key: Option<HostKeyPin>, task: Option<String>) -> Result<Flow, ProvisionError> {
        if let Some(upid) = &task {
            match wait(&run.prov.client, upid, &run.prov.settings).await {
                // A start resumed after a crash can race the first one: running is what we wanted.
                Err(ProvisionError::Pve(PveError::TaskFailed { exitstatus, .. })) if exitstatus.contains("already running") => {}
                other => other?,
            }
        }
        Ok(Outcome::to(Progress::AwaitAddress { guest, host_key }).later().into())
    }

    /// Polls the guest agent (VM) or the container's interfaces until the guest's IPv4 address appears.
    async fn await_address(&self, run: &mut Run<'_>, guest: GuestAt, host_key: Option<HostKeyPin>) -> Result<Flow, ProvisionError> {
        let ip = run.prov.await_address(run.kind, &guest.node, guest.vmid, run.config.as_ref()).await?;
        let changed = Deployment { ip_address: Some(ip), ..run.d.clone() };
        let line = format!("guest {} is up at {ip}", guest.vmid);
        Ok(Outcome::to(Progress::Ready { guest, host_key, ip: Some(ip) }).changing(changed, "address known").say(Level::Info, line).into())
    }

    /// A deploy was interrupted (agent crash or restart): its release is marked failed and a fresh
    /// release of the same commit (or of the branch head, when none was chosen yet) is deployed.
    async fn resume_deploy(&self, id: &DeploymentId, lease: &Lease) -> Result<(), ProvisionError> {
        use crate::store::releases::{ReleaseStatus, Trigger};
        let mut wanted = super::deploy::Wanted::BranchHead;
        let mut trigger = Trigger::Deploy;
        for mut r in self.store().releases(id, 20).await? {
            if r.status == ReleaseStatus::Deploying {
                r.status = ReleaseStatus::Failed;
                r.error = Some("interrupted (the agent stopped); deployed again".into());
                r.finished_at = Some(now_millis());
                self.store().save_release(&r).await?;
                if let super::deploy::Wanted::BranchHead = wanted {
                    wanted = super::deploy::Wanted::Commit(r.commit.clone());
                    trigger = r.trigger;
                }
            }
        }
        self.log(id, Level::Info, "deploy", "resuming the interrupted deploy").await;
        self.deploy_release(id, lease, trigger, wanted).await
    }

    /// Provisioning stopped on `cause` with `lines` not yet committed (deferred steps, or the step whose
    /// commit failed): they still tell what happened, so they are recorded and published, unless
    /// another agent took the work over.
    async fn keep_lines(&self, lines: &mut Vec<LogLine>, cause: &ProvisionError) {
        if lines.is_empty() || matches!(cause, ProvisionError::LeaseLost(_)) {
            return;
        }
        let lines = std::mem::take(lines);
        match self.store().append_lines(&lines).await {
            Ok(()) => lines.into_iter().for_each(|l| self.inner.bus.publish(Event::Log(l))),
            Err(e) => tracing::error!(error = %e, "could not record log lines"),
        }
    }

    /// Runs a step, logging every `SLOW_STEP_NOTICE` that it is still waiting on Proxmox (a call slower
    /// than expected is never silent).
    async fn patiently<T>(&self, id: &DeploymentId, step: Step, work: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(work);
        let started = std::time::Instant::now();
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tokio::time::sleep(SLOW_STEP_NOTICE) => {
                    let line = format!("still waiting on Proxmox VE: step {} running for {}s", step.as_str().replace('_', " "), started.elapsed().as_secs());
                    self.log(id, Level::Info, "provision", &line).await;
                }
            }
        }
    }

    /// The guest at `guest.vmid` is not ours (its id was taken outside our records): forget the id, remember
    /// it as taken, and choose another — at most `ID_RETRIES` times in one run.
    async fn vmid_taken(&self, run: &mut Run<'_>, guest: GuestAt, attempts: u32) -> Result<Flow, ProvisionError> {
        let (id, vmid) = (run.id, guest.vmid);
        run.prov.note_taken(vmid);
        run.taken_ids += 1;
        if run.taken_ids > ID_RETRIES {
            return Err(ProvisionError::IdsTakenOutside { tried: run.taken_ids, last: vmid });
        }
        self.log(id, Level::Info, "provision", &format!("VMID {vmid} is held by a guest that is not ours; choosing another")).await;
        // At most one create per second per deployment, whatever the cluster answers.
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Progress first: killed in between, the resumed ReserveId finds the claim still ours and comes
        // back here, instead of adopting someone else's guest.
        let again = Progress::ReserveId { node: guest.node, static_ip: guest.static_ip, attempts };
        commit(self.store(), run.lease, StepWrite::progress(&again, &[])).await?;
        self.store().release_vmid(vmid, id).await?;
        Ok(Flow::Again(again))
    }

    /// Deletes a VM's user-data snippet from its node (it holds the guest's host private key).
    async fn remove_snippet(&self, prov: &Provisioner, kind: GuestType, node: &crate::core::names::NodeName, id: &DeploymentId) {
        let (GuestType::Vm, Some(files)) = (kind, &prov.node_files) else { return };
        match files.remove(&prov.client, node, id).await {
            Ok(()) => {}
            Err(e) => self.log(id, Level::Warn, "cleanup", &format!("could not remove the cloud-init snippet from {node}: {e}")).await,
        }
    }

    /// Waits out a storage lock timeout before the create runs again; returns the create's new attempt count.
    async fn retry_after_lock(&self, id: &DeploymentId, attempts: u32, why: &str) -> u32 {
        let attempts = attempts + 1;
        let backoff = Duration::from_millis(500 * 2u64.pow(attempts.min(5)) + rand::random::<u64>() % 500);
        self.log(id, Level::Warn, "provision", &format!("storage lock timeout ({why}); retry {attempts} in {:.1}s", backoff.as_secs_f64())).await;
        tokio::time::sleep(backoff).await;
        attempts
    }

    /// Saves `d` with `change` applied and (when different) the new status, only while `lease` is held.
    pub(crate) async fn leased_transition(
        &self,
        mut d: Deployment,
        to: Status,
        message: &str,
        lease: &Lease,
        change: impl FnOnce(&mut Deployment),
    ) -> Result<Deployment, Unsaved> {
        let from = d.status;
        moved(&mut d, to, change)?;
        let saved = self.store().save_deployment_leased(&d, from, message, Some(lease)).await.map_err(Unsaved::fenced)?;
        self.publish_status(&saved);
        Ok(saved)
    }

    /// Records how work in flight ended (`failed`, or back to `running`) from `d` as just read, unless a
    /// destroy was requested meanwhile: that destroy waits for this lease and takes over, and recording
    /// the failure would strand it (a failed deployment cannot become destroyed).
    pub(crate) async fn record_end_of_work(&self, d: Deployment, to: Status, message: &str, lease: &Lease, change: impl FnOnce(&mut Deployment)) -> Result<(), Unsaved> {
        if d.status == Status::Destroying {
            return Ok(());
        }
        self.leased_transition(d, to, message, lease, change).await.map(|_| ())
    }

    /// Removes the deployment's guest at `vmid` through the ownership guard (see `ownership`) and says
    /// in the log what happened; `what` names the log step.
    async fn remove_if_ours(&self, fence: &Fence, prov: &Provisioner, kind: GuestType, node: &NodeName, vmid: VmId, graceful: Duration, what: &str) -> Removal {
        let id = fence.deployment();
        let owned = match prov.guard(fence, kind, node, vmid).await {
            Ok(Found::Owned(g)) => g,
            Ok(Found::Gone) => return Removal::NothingOfOurs,
            Err(ProvisionError::LeaseLost(_)) => return Removal::LeaseLost,
            Err(ProvisionError::NotOurs(why)) => {
                self.log(id, Level::Warn, what, &why.to_string()).await;
                return Removal::NothingOfOurs;
            }
            Err(e) => return Removal::Failed(e.to_string()),
        };
        let on = &owned.node;
        match prov.remove_owned(&owned, graceful).await {
            Ok(()) => {
                self.log(id, Level::Info, what, &format!("removed guest {vmid} from {on}")).await;
                Removal::NothingOfOurs
            }
            Err(ProvisionError::LeaseLost(_)) => Removal::LeaseLost,
            Err(e) => Removal::Failed(format!("could not remove guest {vmid} from {on}: {e}")),
        }
    }

    /// The progress and record a failed provisioning cleans up after; `None` (said in the log) when they cannot be
    /// read: without its progress the guest cannot be found to remove, so it and its claims are left as they are.
    async fn to_clean_up(&self, id: &DeploymentId) -> Option<(Progress, Deployment)> {
        let read = async { Ok::<_, StoreError>((self.store().load_progress(id).await?.unwrap_or_default(), self.store().get_deployment(id).await?)) };
        match read.await {
            Ok((progress, Some(d))) => Some((progress, d)),
            Ok((_, None)) => None,
            Err(e) => {
                tracing::error!(deployment = %id, error = %e, "could not read what to clean up");
                self.log(id, Level::Error, "cleanup", &format!("could not read the provisioning progress ({e}); nothing was cleaned up")).await;
                None
            }
        }
    }

    /// A step failed for good: remove the guest it made (only through the ownership guard), forget it,
    /// release its id and address, record the failure. A guest that could not be removed keeps its id
    /// and address claimed and stays on the record, so nothing else is given that id while it exists.
    async fn fail_provisioning(&self, id: &DeploymentId, lease: &Lease, prov: &Provisioner, why: &str) {
        self.log(id, Level::Error, "provision", &format!("provisioning failed: {why}")).await;
        let Some((progress, d)) = self.to_clean_up(id).await else { return };
        let fence = Fence::new(self.store().clone(), lease.clone());
        let kind = d.spec.guest_type;
        let mut kept: Option<(NodeName, VmId, String)> = None;
        if let Some(GuestAt { node, vmid, .. }) = progress.guest() {
            let vmid = *vmid;
            match self.remove_if_ours(&fence, prov, kind, node, vmid, Duration::from_secs(10), "cleanup").await {
                Removal::NothingOfOurs => {}
                // The successor carries on; nothing here is ours to touch any more.
                Removal::LeaseLost => return tracing::warn!(deployment = %id, "another agent took over; leaving the cleanup to it"),
                Removal::Failed(e) => kept = Some((node.clone(), vmid, e)),
            }
        }
        if let Some((_, vmid, e)) = &kept {
            self.log(id, Level::Error, "cleanup", &format!("{e}; VMID {vmid} stays claimed by this deployment until its guest is gone (destroy it to retry)")).await;
        } else {
            // The guest is gone (or was never ours): forget everything about it, so no later destroy or
            // resume can act on an id someone else may be given now.
            if let Err(e) = commit(self.store(), lease, StepWrite::progress(&Progress::default(), &[])).await {
                tracing::error!(deployment = %id, error = %e, "could not forget the removed guest");
                if !matches!(e, ProvisionError::LeaseLost(_)) {
                    self.log(id, Level::Error, "cleanup", &format!("could not forget the removed guest ({e}); its id and addresses stay claimed")).await;
                }
                return;
            }
            self.release_claims_or_say(id, "cleanup", progress.guest().map(|g| g.vmid)).await;
            if let Some(node) = progress.node() {
                self.remove_snippet(prov, kind, node, id).await;
            }
        }
        let msg = format!("provisioning failed at step {}: {why}", progress.step().as_str());
        let result = self
            .record_end_of_work(d, Status::Failed, &msg, lease, |d| {
                d.error_message = Some(msg.clone());
                match kept {
                    Some((node, vmid, _)) => {
                        d.proxmox_id = Some(vmid);
                        d.proxmox_node = Some(node);
                    }
                    None => {
                        d.proxmox_id = None;
                        d.proxmox_node = None;
                    }
                }
            })
            .await;
        if let Err(e) = result {
            tracing::error!(deployment = %id, error = %e, "could not record the failure");
            self.log(id, Level::Error, "provision", &format!("could not record the failure: {e}")).await;
        }
    }

    /// Gives back the deployment's VMID (`vmid`, once its guest is gone) and every address it holds (recorded in its
    /// progress or not: a first commit that failed). A claim that could not be given back is said in the log:
    /// it stays held by this deployment, so nothing else is given it.
    async fn release_claims_or_say(&self, id: &DeploymentId, step: &str, vmid: Option<VmId>) {
        if let Some(vmid) = vmid {
            if let Err(e) = self.store().release_vmid(vmid, id).await {
                tracing::error!(deployment = %id, error = %e, "could not release the VMID");
                self.log(id, Level::Warn, step, &format!("could not release VMID {vmid}: {e}; it stays claimed by this deployment")).await;
            }
        }
        if let Err(e) = self.store().release_addresses_of(id).await {
            tracing::error!(deployment = %id, error = %e, "could not release the addresses");
            self.log(id, Level::Warn, step, &format!("could not release the deployment's addresses: {e}; they stay claimed by it")).await;
        }
    }

    /// Removes the guest of a deployment being destroyed (only through the ownership guard) and marks
    /// it destroyed. A guest that is not ours is left untouched and the deployment is destroyed without it.
    pub(crate) async fn destroy_guest(&self, id: DeploymentId) {
        let Some(prov) = self.inner.provisioner.clone() else { return };
        let engine = self.clone();
        let id2 = id.clone();
        // A provisioning in flight holds the lease; wait for it (bounded), then clean up after it.
        let done = self.with_lease(&id, destroy_patience(&prov.settings), |lease| async move { engine.destroy_leased(&id2, &prov, &lease).await }).await;
        if done.is_none() {
            self.log(&id, Level::Error, "destroy", "another agent holds this deployment; destroy will resume when its lease expires").await;
        }
    }

    /// `destroy_guest` under the deployment's lease. Says "destroyed" only once the deployment is recorded so.
    async fn destroy_leased(&self, id: &DeploymentId, prov: &Provisioner, lease: &Lease) {
        let d = match self.store().get_deployment(id).await {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(deployment = %id, error = %e, "could not read the deployment to destroy");
                return self.log(id, Level::Error, "destroy", &format!("could not read the deployment: {e}; the destroy runs again at the next start")).await;
            }
        };
        let progress = match self.store().load_progress(id).await {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => {
                self.log(id, Level::Warn, "destroy", &format!("could not read the provisioning progress ({e}); going by the deployment's record")).await;
                Progress::default()
            }
        };
        let node = d.proxmox_node.clone().or(progress.node().cloned());
        let vmid = d.proxmox_id.or(progress.guest().map(|g| g.vmid));
        let fence = Fence::new(self.store().clone(), lease.clone());
        let mut released = None;
        if let (Some(node), Some(vmid)) = (node, vmid) {
            self.log(id, Level::Info, "destroy", &format!("stopping and deleting guest {vmid} on {node}")).await;
            match self.remove_if_ours(&fence, prov, d.spec.guest_type, &node, vmid, Duration::from_secs(30), "destroy").await {
                Removal::NothingOfOurs => {}
                Removal::LeaseLost => return tracing::warn!(deployment = %id, "another agent took over; leaving the destroy to it"),
                Removal::Failed(e) => {
                    self.log(id, Level::Error, "destroy", &e).await;
                    let msg = format!("destroy failed: {e}");
                    if let Err(e) = self.leased_transition(d, Status::Failed, &msg, lease, |d| d.error_message = Some(msg.clone())).await {
                        tracing::error!(deployment = %id, error = %e, "could not record the failed destroy");
                        self.log(id, Level::Error, "destroy", &format!("could not record the failed destroy: {e}")).await;
                    }
                    return;
                }
            }
            released = Some(vmid);
            self.remove_snippet(prov, d.spec.guest_type, &node, id).await;
        }
        self.release_claims_or_say(id, "destroy", released).await;
        // Before it is recorded destroyed: a destroy resumed after a crash asks for its previews' destroys again.
        self.previews_follow_destroy(&d).await;
        let marked = self.leased_transition(d, Status::Destroyed, "destroyed", lease, |d| {
            d.proxmox_id = None;
            d.ip_address = None;
        });
        match marked.await {
            Ok(_) => {
                self.log(id, Level::Info, "destroy", "destroyed").await;
                self.schedules_follow_destroy(id).await;
            }
            Err(e) => {
                tracing::error!(deployment = %id, error = %e, "could not record the destroy");
                let what = if released.is_some() { "the guest is gone, but " } else { "" };
                self.log(id, Level::Error, "destroy", &format!("{what}the deployment could not be marked destroyed: {e}")).await;
            }
        }
    }

    /// Starts or stops a deployment's guest under its lease: a stop shuts the guest down (hard stop
    /// after a bounded wait) and ends `stopped`; a start boots it, waits for its address and ends `running`.
    pub(crate) async fn power(&self, id: DeploymentId, action: crate::core::command::Action) {
        use crate::core::command::Action;
        let Some(prov) = self.inner.provisioner.clone() else { return };
        let engine = self.clone();
        let id2 = id.clone();
        let done = self
            .with_lease(&id, Duration::from_secs(60), |lease| async move {
                let id = id2;
                let step = action.as_str();
                let Ok(Some(d)) = engine.store().get_deployment(&id).await else { return };
                // Re-checked under the lease: a second request for the same action is a no-op.
                if action.check(d.status, d.proxmox_id.is_some()).is_err() {
                    return;
                }
                let (Some(node), Some(vmid)) = (d.proxmox_node.clone(), d.proxmox_id) else { return };
                let kind = d.spec.guest_type;
                let fence = Fence::new(engine.store().clone(), lease.clone());
                let result: Result<Deployment, ProvisionError> = async {
                    let g = match prov.guard(&fence, kind, &node, vmid).await? {
                        Found::Owned(g) => g,
                        Found::Gone => return Err(ProvisionError::GuestLost { vmid }),
                    };
                    // Followed to where it is now (migrated since it was recorded).
                    let d = engine.follow_move(d, &g.node).await?;
                    let on = g.node.clone();
                    match action {
                        Action::Stop => {
                            engine.log(&id, Level::Info, step, &format!("shutting down guest {vmid} on {on}")).await;
                            prov.stop_owned(&g, Duration::from_secs(60)).await?;
                            Ok(engine.leased_transition(d, Status::Stopped, "stopped", &lease, |_| {}).await?)
                        }
                        _ => engine.boot_and_check(&prov, &g, d, &lease, step, "started").await,
                    }
                }
                .await;
                match result {
                    Ok(_) => engine.log(&id, Level::Info, step, &format!("{step} done")).await,
                    Err(e) => engine.log(&id, Level::Error, step, &format!("{step} failed: {e}; the deployment keeps its status")).await,
                }
            })
            .await;
        if done.is_none() {
            self.log(&id, Level::Warn, action.as_str(), "another task holds this deployment; try again when it is done").await;
        }
    }

    /// Starts an owned guest, waits for its address and ends `running` (saying `done`) once the app answers its
    /// health check, as after a deploy; `failed` when it does not.
    pub(crate) async fn boot_and_check(&self, prov: &Provisioner, g: &OwnedGuest, d: Deployment, lease: &Lease, step: &str, done: &str) -> Result<Deployment, ProvisionError> {
        let (id, kind, vmid, on) = (d.id.clone(), d.spec.guest_type, g.vmid, g.node.clone());
        self.log(&id, Level::Info, step, &format!("starting guest {vmid} on {on}")).await;
        if let Some(upid) = prov.start_owned(g).await? {
            prov.wait_task_for(&upid, prov.settings.task_deadline).await?;
        }
        let ip = prov.await_address(kind, &on, vmid, None).await?;
        self.log(&id, Level::Info, step, &format!("guest {vmid} is up at {ip}")).await;
        // `running` means the app answers, as after a deploy: its health check first.
        let url = format!("http://{ip}:{}", crate::core::release::app_port(d.spec.framework));
        if let (Some(dep), Some(_)) = (self.inner.deployer.get(), d.commit.as_ref()) {
            if let Err(e) = self.health(dep, &id, &url, &d.spec, Duration::from_secs(d.spec.health_timeout_secs.into())).await {
                let msg = format!("{done}, but the app does not answer: {e}");
                let error = msg.clone();
                let at = url.clone();
                return Ok(self.leased_transition(d, Status::Failed, &msg, lease, move |d| {
                    at_address(d, ip, at);
                    d.error_message = Some(error);
                }).await?);
            }
        }
        Ok(self.leased_transition(d, Status::Running, done, lease, move |d| at_address(d, ip, url)).await?)
    }

    /// At start: picks up every deployment whose work was interrupted (pending, provisioning, destroying).
    /// Without a cluster there is nothing to resume. Returns how many it found.
    pub async fn resume_unfinished(&self) -> Result<usize, EngineError> {
        if self.inner.provisioner.is_none() {
            return Ok(0);
        }
        if let Some(why) = self.read_only() {
            tracing::warn!(%why, "read-only: unfinished work is not resumed");
            return Ok(0);
        }
        let found = self.store().unfinished_deployments().await?;
        for (id, status) in &found {
            let engine = self.clone();
            let id = id.clone();
            if *status == Status::Destroying {
                self.inner.tasks.spawn(async move { engine.destroy_guest(id).await });
            } else {
                let patience = Duration::from_millis((LEASE_TTL_MS * 2) as u64);
                self.inner.tasks.spawn(async move { engine.provision_with_patience(id, patience).await });
            }
        }
        Ok(found.len())
    }
}

/// How a guarded removal ended.
enum Removal {
    /// Removed, already gone, or not ours (left untouched): nothing of ours is at that id.
    NothingOfOurs,
    /// Another agent took the deployment over: it carries on, this work stops.
    LeaseLost,
    /// Ours, and still there: keep its id claimed.
    Failed(String),
}

/// Removes a deployment from this process's working set when its work ends (even by panic).
struct Working<'a> {
    engine: &'a Engine,
    id: &'a DeploymentId,
}

impl Drop for Working<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.engine.inner.working.lock() {
            w.remove(self.id);
        }
    }
}

/// Records the address a guest came back on (after a restart, a rollback or a restore it may differ):
/// the app's URL follows it once the app has one.
fn at_address(d: &mut Deployment, ip: std::net::Ipv4Addr, url: String) {
    d.ip_address = Some(ip);
    if d.url.is_some() {
        d.url = Some(url);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::{DatabaseConfig, Secret};
    use crate::core::deployment::{RawSpec, Spec};
    use crate::core::limits::{Limits, RepoPolicy};
    use crate::pve::{PveClient, PveConfig, TlsTrust};
    use crate::store::Store;

    /// A guest that came back on another address (a restore or rollback of a VM with DHCP): the app's URL
    /// follows the address once the app has one, and a deployment never deployed gets none.
    #[test]
    fn the_url_follows_the_address_a_guest_came_back_on() {
        let raw = RawSpec { name: Some("moved".into()), repo_url: Some("https://github.com/o/r".into()), framework: Some("flask".into()), ..RawSpec::default() };
        let mut d = Deployment::new(Spec::parse(raw, &Limits::default(), &RepoPolicy::default()).unwrap(), 0);
        at_address(&mut d, "127.0.1.4".parse().unwrap(), "http://127.0.1.4:8000".into());
        assert_eq!((d.ip_address, d.url.as_deref()), (Some(std::net::Ipv4Addr::new(127, 0, 1, 4)), None));
        d.url = Some("http://127.0.1.3:8000".into());
        at_address(&mut d, "127.0.1.5".parse().unwrap(), "http://127.0.1.5:8000".into());
        assert_eq!((d.ip_address, d.url.as_deref()), (Some(std::net::Ipv4Addr::new(127, 0, 1, 5)), Some("http://127.0.1.5:8000")));
    }

    /// An engine over an in-memory store with a cluster that is never called (the deployment has no guest;
    /// nothing listens there), and a deployment of it whose destroy was requested.
    async fn destroying() -> (Engine, Store, Deployment) {
        let cfg = DatabaseConfig { url: "mem://".into(), namespace: "t".into(), database: "t".into(), credentials: None };
        let store = Store::open(&cfg).await.unwrap();
        let client = PveClient::new(PveConfig::new("https://127.0.0.1:9/", "root@pam!t", Secret::new("x".into()), TlsTrust::Fingerprint([7; 32]))).unwrap();
        let cluster = crate::config::ClusterSettings::new("https://127.0.0.1:9/".into(), "root@pam!t".into(), Secret::new("x".into()), crate::config::TrustSetting::Fingerprint(String::new()), 9000);
        let settings = super::super::provision::ProvisionSettings::from_config(&cluster, String::new(), crate::core::cloud_init::Template::default_template()).unwrap();
        let prov = Provisioner::new(client, settings);
        let engine = Engine::new(store.clone(), Limits::default(), RepoPolicy::default(), Some(prov), "agent-a".into());
        let raw = RawSpec { name: Some("doomed".into()), repo_url: Some("https://github.com/o/r".into()), framework: Some("flask".into()), ..RawSpec::default() };
        let mut d = Deployment::new(Spec::parse(raw, &Limits::default(), &RepoPolicy::default()).unwrap(), now_millis());
        store.create_deployment(&d, "created").await.unwrap();
        d.status = Status::Destroying;
        let d = store.save_deployment(&d, Status::Pending, "destroy requested").await.unwrap();
        (engine, store, d)
    }

    /// The store refuses to mark a deployment destroyed (here a schema rule; in life a full disk or a lost
    /// server): the destroy says so in the deployment's log and never says "destroyed"; the deployment stays
    /// `destroying`, which the next start resumes.
    #[tokio::test]
    async fn a_destroy_the_store_refuses_to_record_is_said_and_never_called_done() {
        let (engine, store, d) = destroying().await;
        store.run("DEFINE FIELD OVERWRITE status ON deployment TYPE string ASSERT $value != 'destroyed'", json!({})).await.unwrap();

        engine.destroy_guest(d.id.clone()).await;

        let lines = store.read_log(&d.id, 0, 50).await.unwrap();
        let said: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert!(!said.contains(&"destroyed"), "{said:?}");
        let refusal = lines.iter().find(|l| l.text.contains("could not be marked destroyed")).unwrap_or_else(|| panic!("the failure is said: {said:?}"));
        assert_eq!((refusal.level, refusal.step.as_str()), (Level::Error, "destroy"));
        assert_eq!(store.get_deployment(&d.id).await.unwrap().unwrap().status, Status::Destroying);
    }

    /// The store will not give back the deployment's address (here an event that refuses the delete; in life a
    /// lost server): the destroy says so in the deployment's log, the address stays claimed by the deployment
    /// (nothing else is given it), and the destroy still ends `destroyed`.
    #[tokio::test]
    async fn a_claim_the_store_will_not_give_back_is_said_and_stays_held() {
        let (engine, store, d) = destroying().await;
        let a: Ipv4Addr = "10.0.0.5".parse().unwrap();
        store.claim_address(a, &d.id).await.unwrap();
        store.run("DEFINE EVENT OVERWRITE keep ON ip_claim WHEN $event = 'DELETE' THEN { THROW 'the claims are read-only' }", json!({})).await.unwrap();

        engine.destroy_guest(d.id.clone()).await;

        let lines = store.read_log(&d.id, 0, 50).await.unwrap();
        let said: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        let refusal = lines.iter().find(|l| l.text.contains("could not release the deployment's addresses")).unwrap_or_else(|| panic!("the failure is said: {said:?}"));
        assert_eq!((refusal.level, refusal.step.as_str()), (Level::Warn, "destroy"));
        assert!(refusal.text.contains("they stay claimed"), "{}", refusal.text);
        assert_eq!(store.address_claims().await.unwrap(), vec![(a, d.id.to_string())]);
        assert!(said.contains(&"destroyed"), "{said:?}");
        assert_eq!(store.get_deployment(&d.id).await.unwrap().unwrap().status, Status::Destroyed);
    }
}
