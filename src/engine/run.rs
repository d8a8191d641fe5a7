//! The engine's long-running work: provisioning a deployment step by step under its lease, resuming
//! unfinished work at start, and destroying guests.

use std::time::Duration;

use super::ownership::{Fence, Found, OwnedGuest};
use super::provision::{commit, describe, wait, IdChoice, ProvisionError, Provisioner};
use crate::core::names::{NodeName, VmId};
use crate::store::provision::StepWrite;
use crate::store::StoreError;
use crate::pve::PveError;
use super::{Engine, EngineError};
use crate::core::deployment::{Deployment, DeploymentId, GuestType};
use crate::core::provision::{Progress, Step};
use crate::core::status::Status;
use crate::store::leases::Lease;
use crate::store::logs::{Level, LogLine};
use super::Event;
use crate::store::now_millis;

/// How long a lease lasts without renewal; renewed every third of it while working.
pub const LEASE_TTL_MS: i64 = 30_000;

/// How long a destroy waits for work in flight to hand over: that work sees the destroy at its next
/// step commit, and the longest step is a task or an address wait running to its deadline.
fn destroy_patience(s: &super::provision::ProvisionSettings) -> Duration {
    (s.task_deadline.max(s.address_deadline) + Duration::from_millis(LEASE_TTL_MS as u64)).max(Duration::from_millis((LEASE_TTL_MS * 2) as u64))
}

/// How a provisioning step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Go on to the next step.
    Next,
    /// Run the step again (its progress was saved).
    Again,
    /// Provisioning is complete.
    Done,
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
            ProvisionError::Pve(pe) if self.attempts > 0 && pe.is_transient() => ProvisionError::Failed(format!(
                "step {} gave up after {} tries in {}s; the last Proxmox VE answer: {pe}",
                self.step.as_str().replace('_', " "),
                self.attempts + 1,
                self.since.elapsed().as_secs()
            )),
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
        while !self.inner.working.lock().expect("working poisoned").insert(id.to_string()) {
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
                    Err(ProvisionError::LeaseLost) => {
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

    async fn provision_steps(&self, id: &DeploymentId, lease: &Lease, prov: &Provisioner) -> Result<(), ProvisionError> {
        let store = self.store();
        let mut d = store.get_deployment(id).await?.ok_or_else(|| ProvisionError::Failed("the deployment vanished".into()))?;
        // A pending deployment becomes `provisioning` with its first step's commit (see below).
        let fresh = d.status == Status::Pending;
        if matches!(d.status, Status::Installing | Status::Deploying) {
            return self.resume_deploy(id, lease).await;
        }
        if !matches!(d.status, Status::Provisioning | Status::Pending) {
            return Ok(());
        }
        let kind = d.spec.guest_type;
        // A deployment that was pending a moment ago has no progress yet (it is only written under
        // `provisioning`); a retried or resumed one reads where it stopped.
        let mut p = if fresh { Progress::default() } else { store.load_progress(id).await?.unwrap_or_default() };
        // The first step of a resumed run may have been half done before the crash: it checks what
        // exists on Proxmox before acting. Every later step follows one this run did itself.
        let mut resumed = p.step != Step::Place;
        if resumed {
            self.log(id, Level::Info, "provision", &format!("resuming at: {}", describe(&p))).await;
        }
        // The guest's config as last read in this run (disks and MAC do not change after the clone).
        let mut config: Option<super::provision::RawConfig> = None;
        let s = &prov.settings;
        // Lines of steps whose commit was left to the next step (see `defer` below).
        let mut lines: Vec<LogLine> = Vec::new();
        // Checked immediately before every mutating Proxmox call (see `ownership`).
        let fence = super::ownership::Fence::new(store.clone(), lease.clone());
        // Ids found held by guests that are not ours, this run (bounded: see `vmid_taken`).
        let mut taken_ids: u32 = 0;
        // The step being retried after a transient failure, since when, and how often (see `StepBudget`).
        let mut budget = StepBudget::new(p.step, s.step_deadline);
        // A full clone's storage slot, from its clone call until its task has ended (see `Provisioner::create`).
        let mut clone_slot: Option<super::provision::CloneSlot> = None;
        loop {
            // What the step did, committed with its progress (one transaction per step): lines, the id
            // it chose to claim, and the deployment with the step's changes applied.
            let mut note: Option<(Level, String)> = None;
            let carried = lines.len();
            let mut claim = None;
            // A step that changed nothing outside this process (a choice, a wait, a skipped upload)
            // commits together with the next one: after a crash it is simply done again.
            let mut defer = false;
            let mut change: Option<(Deployment, &str)> = None;
            // The step itself; `Again` when it must run again (its progress was saved), `Done` at the end.
            let step = p.step;
            let outcome = async {
                match p.step {
                    Step::Place => {
                        let node = prov.place(&d).await?;
                        note = Some((Level::Info, format!("placed on node {node}")));
                        defer = true;
                        p.node = Some(node);
                    }
                    Step::ReserveId => {
                        let vmid = match prov.choose_id(store, id, resumed).await? {
                            IdChoice::Held(vmid) => vmid,
                            IdChoice::ToClaim(vmid) => *claim.insert(vmid),
                        };
                        p.vmid = Some(vmid);
                        // Kept across a retry of this step: an address is claimed once per deployment.
                        let reserved = match p.static_ip {
                            Some(a) => Some(a),
                            None => prov.reserve_address(store, id).await?,
                        };
                        if let Some(a) = reserved {
                            note = Some((Level::Info, format!("reserved VMID {vmid} and address {a}")));
                            p.static_ip = Some(a);
                        }
                    }
                    Step::Create => {
                        let (node, vmid) = (p.node.clone().ok_or_else(missing("node"))?, p.vmid.ok_or_else(missing("vmid"))?);
                        // A resumed or retried create may have happened already (its answer lost to a
                        // crash, a timeout or a dropped connection): the guest's mark decides, never the id alone.
                        let found = if resumed || p.attempts > 0 { prov.owner_at(kind, &node, vmid).await? } else { None };
                        match found {
                            Some(owner) if owner.is(id) => {
                                // Created before; the await step waits for its task and lock.
                                note = Some((Level::Info, format!("guest {vmid} already exists on {node} with this deployment's mark; continuing")));
                                p.upid = prov.creation_task(kind, &node, vmid).await?;
                            }
                            Some(_) => return self.vmid_taken(id, lease, prov, &mut p, vmid, &mut taken_ids).await,
                            None => {
                                fence.check().await?;
                                match prov.create(&d, &node, vmid, &prov.addressing(p.static_ip)).await {
                                    Ok((upid, slot)) => {
                                        clone_slot = slot;
                                        let what = if kind == GuestType::Vm { "cloning the template" } else { "creating the container" };
                                        note = Some((Level::Info, format!("{what} as {vmid} on {node}")));
                                        p.upid = Some(upid.as_str().to_owned());
                                    }
                                    Err(e) if e.is_vmid_taken() => match prov.owner_at(kind, &node, vmid).await? {
                                        // An earlier create of ours whose answer was lost went through.
                                        Some(owner) if owner.is(id) => {
                                            note = Some((Level::Info, format!("guest {vmid} already exists on {node} with this deployment's mark; continuing")));
                                            p.upid = prov.creation_task(kind, &node, vmid).await?;
                                        }
                                        _ => return self.vmid_taken(id, lease, prov, &mut p, vmid, &mut taken_ids).await,
                                    },
                                    Err(e) if e.is_lock_timeout() && p.attempts < s.lock_retries => {
                                        self.retry_after_lock(id, &mut p, &e.to_string()).await;
                                        commit(store, lease, StepWrite::progress(&p, &[])).await?;
                                        return Ok(Flow::Again);
                                    }
                                    Err(e) => return Err(e.into()),
                                }
                            }
                        }
                    }
                    Step::AwaitCreate => {
                        let (node, vmid) = (p.node.clone().ok_or_else(missing("node"))?, p.vmid.ok_or_else(missing("vmid"))?);
                        if let Some(upid) = p.upid.clone() {
                            // The slot (if this run cloned) is given back as soon as the copy's task has ended.
                            let waited = wait(&prov.client, &upid, s).await;
                            clone_slot = None;
                            match waited {
                                Ok(()) => {}
                                Err(ProvisionError::Pve(e)) if e.is_lock_timeout() && p.attempts < s.lock_retries => {
                                    // PVE removes the half-made guest when a clone fails; try the clone again.
                                    self.retry_after_lock(id, &mut p, &e.to_string()).await;
                                    p.step = Step::Create;
                                    p.upid = None;
                                    commit(store, lease, StepWrite::progress(&p, &[])).await?;
                                    return Ok(Flow::Again);
                                }
                                // PVE's worker checks the id again under its lock (the race with `nextid`).
                                Err(ProvisionError::Pve(e)) if e.is_vmid_taken() => return self.vmid_taken(id, lease, prov, &mut p, vmid, &mut taken_ids).await,
                                Err(e) => return Err(e),
                            }
                        }
                        let created = prov.wait_unlocked(kind, &node, vmid).await?;
                        // Whatever this run believes, the guest it goes on with must carry our mark.
                        if !super::ownership::owner_of(&created).is(id) {
                            return Err(crate::core::ownership::NotOurs::Foreign { vmid: vmid.get() }.into());
                        }
                        config = Some(created);
                        if kind == GuestType::Lxc {
                            p.host_key = match &p.upid {
                                Some(upid) => prov.container_host_key(upid).await?,
                                None => None,
                            };
                            lines.push(match &p.host_key {
                                Some(fp) => LogLine::new(id, Level::Info, "provision", &format!("container host key {fp} (from Proxmox's create log)")),
                                None => LogLine::new(id, Level::Warn, "provision", "the container's host key fingerprint is not in its create log; deploys will refuse to connect to it until it is re-created"),
                            });
                        }
                        let mut next = d.clone();
                        next.proxmox_id = Some(vmid);
                        next.proxmox_node = Some(node.clone());
                        change = Some((next, "guest created"));
                        note = Some((Level::Info, format!("guest {vmid} created on {node}")));
                    }
                    Step::Snippet => {
                        let node = p.node.clone().ok_or_else(missing("node"))?;
                        match &prov.node_files {
                            Some(files) => {
                                // A fresh host key each time this step runs: the snippet and the pinned key always match.
                                let host = crate::keys::generate_ed25519(d.spec.name.as_str());
                                let identity = crate::core::cloud_init::GuestIdentity {
                                    hostname: d.spec.name.as_str(),
                                    deploy_user: &s.deploy_user,
                                    deploy_public_key: &s.deploy_public_key,
                                    host_private_key: host.private_openssh.expose(),
                                    host_public_key: &host.public_openssh,
                                };
                                let user_data = crate::core::cloud_init::render(&s.user_data, &identity);
                                let volid = files.upload(&prov.client, &node, id, &user_data).await.map_err(|e| ProvisionError::Failed(format!("uploading the cloud-init snippet: {e}")))?;
                                note = Some((Level::Info, format!("cloud-init snippet uploaded ({volid}) with the guest's own host key")));
                                p.host_key = Some(host.public_openssh);
                            }
                            None => {
                                note = Some((Level::Warn, "no node SSH is configured ([proxmox.node_ssh]): Proxmox generates the user-data and the guest's host key cannot be pinned".into()));
                                defer = true;
                            }
                        }
                    }
                    Step::Configure => {
                        let (node, vmid) = (p.node.clone().ok_or_else(missing("node"))?, p.vmid.ok_or_else(missing("vmid"))?);
                        let cicustom = match (&prov.node_files, &p.host_key) {
                            (Some(files), Some(_)) => Some(files.cicustom(id)),
                            _ => None,
                        };
                        fence.check().await?;
                        prov.configure_vm(&d, &node, vmid, &prov.addressing(p.static_ip), cicustom).await?;
                        note = Some((Level::Info, format!("configured {} cores, {} MiB, cloud-init user {}", d.spec.cpu, d.spec.memory_mib, s.deploy_user)));
                    }
                    Step::Resize => {
                        let (node, vmid) = (p.node.clone().ok_or_else(missing("node"))?, p.vmid.ok_or_else(missing("vmid"))?);
                        fence.check().await?;
                        if let Some(upid) = prov.resize_vm(&d, &node, vmid, config.as_ref()).await? {
                            wait(&prov.client, upid.as_str(), s).await?;
                            note = Some((Level::Info, format!("boot disk grown to {} GB", d.spec.disk_gb)));
                        }
                    }
                    Step::Start => {
                        let (node, vmid) = (p.node.clone().ok_or_else(missing("node"))?, p.vmid.ok_or_else(missing("vmid"))?);
                        fence.check().await?;
                        p.upid = prov.start(kind, &node, vmid, !resumed).await?.map(|u| u.as_str().to_owned());
                        note = Some((Level::Info, format!("starting guest {vmid}")));
                    }
                    Step::AwaitStart => {
                        defer = true;
                        if let Some(upid) = p.upid.clone() {
                            match wait(&prov.client, &upid, s).await {
                                // A start resumed after a crash can race the first one: running is what we wanted.
                                Err(ProvisionError::Pve(PveError::TaskFailed { exitstatus, .. })) if exitstatus.contains("already running") => {}
                                other => other?,
                            }
                        }
                    }
                    Step::AwaitAddress => {
                        let (node, vmid) = (p.node.clone().ok_or_else(missing("node"))?, p.vmid.ok_or_else(missing("vmid"))?);
                        let ip = prov.await_address(kind, &node, vmid, config.as_ref()).await?;
                        p.ipv4 = Some(ip);
                        let mut next = d.clone();
                        next.ip_address = Some(ip.to_string());
                        change = Some((next, "address known"));
                        note = Some((Level::Info, format!("guest {vmid} is up at {ip}")));
                    }
                    Step::Done => return Ok(Flow::Done),
                }
                Ok(Flow::Next)
            };
            let outcome: Result<Flow, ProvisionError> = self.patiently(id, step, outcome).await;
            match outcome {
                Ok(Flow::Next) => {}
                Ok(Flow::Again) => continue,
                Ok(Flow::Done) => break,
                Err(e) => {
                    if let Some(wait) = budget.retry(step, &e) {
                        lines.truncate(carried);
                        self.log(id, Level::Warn, "provision", &format!("{} failed: {e}; retry {} in {:.1}s", step.as_str().replace('_', " "), budget.attempts, wait.as_secs_f64())).await;
                        tokio::time::sleep(wait).await;
                        // The step runs again checking what exists first (a create may have happened).
                        resumed = true;
                        p.attempts = p.attempts.max(1);
                        continue;
                    }
                    let e = budget.give_up(e);
                    self.keep_lines(&mut lines, &e).await;
                    return Err(e);
                }
            }
            let before = p.clone();
            resumed = false;
            p.advance(kind);
            p.upid = if matches!(p.step, Step::AwaitCreate | Step::AwaitStart) { p.upid.take() } else { None };
            lines.extend(note.map(|(level, text)| LogLine::new(id, level, "provision", &text)));
            if defer && p.step != Step::Done {
                continue;
            }
            if change.is_none() && d.status == Status::Pending {
                // The first commit also records that provisioning began (one transaction fewer per deployment).
                let mut next = d.clone();
                next.status = Status::Provisioning;
                change = Some((next, "provisioning"));
            }
            if p.step == Step::Done {
                // The last step's commit also hands the guest over to the deploy.
                let (mut next, _) = change.take().unwrap_or_else(|| (d.clone(), ""));
                next.status = d.status.transition(Status::Installing).map_err(|e| ProvisionError::Failed(e.to_string()))?;
                change = Some((next, "guest ready"));
                lines.push(LogLine::new(id, Level::Info, "provision", "provisioned; installing the app"));
            }
            let deployment = change.as_mut().map(|(next, message)| {
                next.updated_at = now_millis();
                (&*next, d.status, *message)
            });
            let saved = match commit(store, lease, StepWrite { progress: &p, lines: &lines, claim, deployment }).await {
                Ok(saved) => saved,
                Err(ProvisionError::Store(StoreError::Taken { .. })) if claim.is_some() && before.attempts < ID_RETRIES => {
                    // Another agent claimed that id first: choose again.
                    prov.drop_choice(id);
                    p = Progress { vmid: None, attempts: before.attempts + 1, ..before };
                    lines.truncate(carried);
                    continue;
                }
                Err(e) => {
                    self.keep_lines(&mut lines, &e).await;
                    return Err(e);
                }
            };
            for line in lines.drain(..) {
                self.inner.bus.publish(Event::Log(line));
            }
            if let Some(saved) = saved.deployment {
                d = saved;
                self.publish_status(&d);
            }
            // A destroy requested meanwhile takes over from here (it waits for this lease).
            if saved.status == Some(Status::Destroying) {
                self.log(id, Level::Info, "provision", "destroy requested; stopping provisioning").await;
                return Ok(());
            }
        }
        if d.status == Status::Provisioning {
            // Progress at `done` from an older agent that stopped before handing the guest over.
            self.log(id, Level::Info, "provision", "provisioned; installing the app").await;
            self.leased_transition(d, Status::Installing, "guest ready", lease, |_| {}).await?;
        }
        self.deploy_release(id, lease, crate::store::releases::Trigger::Deploy, super::deploy::Wanted::BranchHead).await
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
                if let (super::deploy::Wanted::BranchHead, Ok(c)) = (&wanted, crate::core::names::CommitSha::parse(&r.commit)) {
                    wanted = super::deploy::Wanted::Commit(c);
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
        if lines.is_empty() || matches!(cause, ProvisionError::LeaseLost) {
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

    /// The guest at `vmid` is not ours (its id was taken outside our records): forget the id, remember
    /// it as taken, and choose another — at most `ID_RETRIES` times in one run.
    async fn vmid_taken(&self, id: &DeploymentId, lease: &Lease, prov: &Provisioner, p: &mut Progress, vmid: crate::core::names::VmId, taken: &mut u32) -> Result<Flow, ProvisionError> {
        prov.note_taken(vmid);
        *taken += 1;
        if *taken > ID_RETRIES {
            return Err(ProvisionError::Failed(format!("gave up after {taken} VMIDs were found held by guests that are not ours (the last: {vmid})")));
        }
        self.log(id, Level::Info, "provision", &format!("VMID {vmid} is held by a guest that is not ours; choosing another")).await;
        // At most one create per second per deployment, whatever the cluster answers.
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Progress first: killed in between, the resumed ReserveId finds the claim still ours and comes
        // back here, instead of adopting someone else's guest.
        p.vmid = None;
        p.upid = None;
        p.step = Step::ReserveId;
        commit(self.store(), lease, StepWrite::progress(p, &[])).await?;
        self.store().release_vmid(vmid, id).await?;
        Ok(Flow::Again)
    }

    /// Deletes a VM's user-data snippet from its node (it holds the guest's host private key).
    async fn remove_snippet(&self, prov: &Provisioner, kind: GuestType, node: &crate::core::names::NodeName, id: &DeploymentId) {
        let (GuestType::Vm, Some(files)) = (kind, &prov.node_files) else { return };
        match files.remove(&prov.client, node, id).await {
            Ok(()) => {}
            Err(e) => self.log(id, Level::Warn, "cleanup", &format!("could not remove the cloud-init snippet from {node}: {e}")).await,
        }
    }

    async fn retry_after_lock(&self, id: &DeploymentId, p: &mut Progress, why: &str) {
        p.attempts += 1;
        let backoff = Duration::from_millis(500 * 2u64.pow(p.attempts.min(5)) + rand::random::<u64>() % 500);
        self.log(id, Level::Warn, "provision", &format!("storage lock timeout ({why}); retry {} in {:.1}s", p.attempts, backoff.as_secs_f64())).await;
        tokio::time::sleep(backoff).await;
    }

    /// Saves `d` with `change` applied and (when different) the new status, only while `lease` is held.
    pub(crate) async fn leased_transition(
        &self,
        mut d: Deployment,
        to: Status,
        message: &str,
        lease: &Lease,
        change: impl FnOnce(&mut Deployment),
    ) -> Result<Deployment, ProvisionError> {
        let from = d.status;
        if from != to {
            d.status = from.transition(to).map_err(|e| ProvisionError::Failed(e.to_string()))?;
        }
        change(&mut d);
        d.updated_at = now_millis();
        let saved = self
            .store()
            .save_deployment_leased(&d, from, message, Some(lease))
            .await
            .map_err(|e| if matches!(e, crate::store::StoreError::Stale) { ProvisionError::LeaseLost } else { e.into() })?;
        self.publish_status(&saved);
        Ok(saved)
    }

    /// Records how work in flight ended (`failed`, or back to `running`) from `d` as just read, unless a
    /// destroy was requested meanwhile: that destroy waits for this lease and takes over, and recording
    /// the failure would strand it (a failed deployment cannot become destroyed).
    pub(crate) async fn record_end_of_work(&self, d: Deployment, to: Status, message: &str, lease: &Lease, change: impl FnOnce(&mut Deployment)) -> Result<(), ProvisionError> {
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
            Err(ProvisionError::LeaseLost) => return Removal::LeaseLost,
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
            Err(ProvisionError::LeaseLost) => Removal::LeaseLost,
            Err(e) => Removal::Failed(format!("could not remove guest {vmid} from {on}: {e}")),
        }
    }

    /// A step failed for good: remove the guest it made (only through the ownership guard), forget it,
    /// release its id and address, record the failure. A guest that could not be removed keeps its id
    /// and address claimed and stays on the record, so nothing else is given that id while it exists.
    async fn fail_provisioning(&self, id: &DeploymentId, lease: &Lease, prov: &Provisioner, why: &str) {
        self.log(id, Level::Error, "provision", &format!("provisioning failed: {why}")).await;
        let progress = self.store().load_progress(id).await.ok().flatten().unwrap_or_default();
        let Ok(Some(d)) = self.store().get_deployment(id).await else { return };
        let fence = Fence::new(self.store().clone(), lease.clone());
        let kind = d.spec.guest_type;
        let mut kept: Option<(NodeName, VmId, String)> = None;
        if let (true, Some(node), Some(vmid)) = (progress.step.guest_may_exist(), &progress.node, progress.vmid) {
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
                return;
            }
            if let Some(vmid) = progress.vmid {
                if let Err(e) = self.store().release_vmid(vmid, id).await {
                    tracing::error!(deployment = %id, error = %e, "could not release the VMID");
                }
            }
            if let Some(node) = &progress.node {
                self.remove_snippet(prov, kind, node, id).await;
            }
            // Every address the deployment holds, recorded in its progress or not (a first commit that failed).
            if let Err(e) = self.store().release_addresses_of(id).await {
                tracing::error!(deployment = %id, error = %e, "could not release the addresses");
            }
        }
        let msg = format!("provisioning failed at step {}: {why}", progress.step.as_str());
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
        }
    }

    /// Removes the guest of a deployment being destroyed (only through the ownership guard) and marks
    /// it destroyed. A guest that is not ours is left untouched and the deployment is destroyed without it.
    pub(crate) async fn destroy_guest(&self, id: DeploymentId) {
        let Some(prov) = self.inner.provisioner.clone() else { return };
        let engine = self.clone();
        let id2 = id.clone();
        // A provisioning in flight holds the lease; wait for it (bounded), then clean up after it.
        let done = self
            .with_lease(&id, destroy_patience(&prov.settings), |lease| async move {
                let id = id2;
                let Ok(Some(d)) = engine.store().get_deployment(&id).await else { return };
                let progress = engine.store().load_progress(&id).await.ok().flatten().unwrap_or_default();
                let node = d.proxmox_node.clone().or(progress.node.clone());
                let vmid = d.proxmox_id.or(progress.vmid);
                let fence = Fence::new(engine.store().clone(), lease.clone());
                if let (Some(node), Some(vmid)) = (node, vmid) {
                    engine.log(&id, Level::Info, "destroy", &format!("stopping and deleting guest {vmid} on {node}")).await;
                    match engine.remove_if_ours(&fence, &prov, d.spec.guest_type, &node, vmid, Duration::from_secs(30), "destroy").await {
                        Removal::NothingOfOurs => {}
                        Removal::LeaseLost => return,
                        Removal::Failed(e) => {
                            engine.log(&id, Level::Error, "destroy", &e).await;
                            let msg = format!("destroy failed: {e}");
                            if let Err(e) = engine.leased_transition(d, Status::Failed, &msg, &lease, |d| d.error_message = Some(msg.clone())).await {
                                tracing::error!(deployment = %id, error = %e, "could not record the failed destroy");
                            }
                            return;
                        }
                    }
                    if let Err(e) = engine.store().release_vmid(vmid, &id).await {
                        tracing::error!(deployment = %id, error = %e, "could not release the VMID");
                    }
                    engine.remove_snippet(&prov, d.spec.guest_type, &node, &id).await;
                }
                if let Err(e) = engine.store().release_addresses_of(&id).await {
                    tracing::error!(deployment = %id, error = %e, "could not release the addresses");
                }
                if let Err(e) = engine.leased_transition(d, Status::Destroyed, "destroyed", &lease, |d| {
                    d.proxmox_id = None;
                    d.ip_address = None;
                }).await {
                    tracing::error!(deployment = %id, error = %e, "could not record the destroy");
                    return;
                }
                engine.log(&id, Level::Info, "destroy", "destroyed").await;
                engine.schedules_follow_destroy(&id).await;
            })
            .await;
        if done.is_none() {
            self.log(&id, Level::Error, "destroy", "another agent holds this deployment; destroy will resume when its lease expires").await;
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
                        Found::Gone => return Err(ProvisionError::Failed(format!("guest {vmid} no longer exists on the cluster"))),
                    };
                    // Followed to where it is now (migrated since it was recorded).
                    let d = engine.follow_move(d, &g.node).await?;
                    let on = g.node.clone();
                    match action {
                        Action::Stop => {
                            engine.log(&id, Level::Info, step, &format!("shutting down guest {vmid} on {on}")).await;
                            prov.stop_owned(&g, Duration::from_secs(60)).await?;
                            engine.leased_transition(d, Status::Stopped, "stopped", &lease, |_| {}).await
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
                return self.leased_transition(d, Status::Failed, &msg, lease, move |d| {
                    d.ip_address = Some(ip.to_string());
                    d.error_message = Some(error);
                }).await;
            }
        }
        self.leased_transition(d, Status::Running, done, lease, move |d| d.ip_address = Some(ip.to_string())).await
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
            w.remove(self.id.as_str());
        }
    }
}

fn missing(what: &'static str) -> impl Fn() -> ProvisionError {
    move || ProvisionError::Failed(format!("provisioning state lost its {what}; cannot continue safely"))
}
