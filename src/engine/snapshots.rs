//! Snapshots of a deployment's guest, for every door and for snapshot schedules: list, take (by hand, or for a
//! schedule followed by that schedule's own retention), delete, roll back. Every change goes through the ownership
//! guard; one snapshot operation per guest runs at a time in this agent, and Proxmox's guest lock (another agent's
//! call, a backup) is waited out with capped backoff: at most `LOCK_TRIES` tries within `LOCK_PATIENCE`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ownership::{Fence, Found, OwnedGuest};
use super::provision::{pve_kind, wait, ProvisionError, Provisioner};
use super::{Engine, EngineError};
use crate::core::command::Actor;
use crate::core::deployment::Deployment;
use crate::core::names::CommitSha;
use crate::core::snapshot::{beyond_keep, description_for, read_description, Origin, SnapshotName, SnapshotNote};
use crate::core::status::Status;
use crate::pve::PveError;
use crate::store::leases::Lease;
use crate::store::logs::Level;

/// Tries of one snapshot call while Proxmox reports the guest locked.
pub const LOCK_TRIES: u32 = 8;
/// How long one snapshot call may wait out the guest's lock in all.
pub const LOCK_PATIENCE: Duration = Duration::from_secs(60);
/// The first wait after a lock; it doubles up to `LOCK_BACKOFF_CAP`.
const LOCK_BACKOFF: Duration = Duration::from_millis(250);
const LOCK_BACKOFF_CAP: Duration = Duration::from_secs(8);

/// One snapshot as a door shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub name: String,
    /// When Proxmox took it (UTC ms).
    pub taken_at: Option<i64>,
    /// Who took it: the actor pvedeploy recorded (`api:admin`, `schedule:<id>`), or `None` (taken in Proxmox VE).
    pub taken_by: Option<String>,
    /// The user's description.
    pub description: String,
    pub origin: Origin,
    /// The VM's memory is part of it.
    pub vmstate: bool,
    /// The commit the guest served when it was taken, as pvedeploy recorded it in the description (`None` for
    /// snapshots taken in Proxmox VE, or before pvedeploy recorded it).
    pub serving: Option<CommitSha>,
}

/// Whether a Proxmox failure is the guest's lock being held (synchronously, or as the task's failure).
fn locked(e: &ProvisionError) -> bool {
    match e {
        ProvisionError::Pve(PveError::Locked { .. }) => true,
        ProvisionError::Pve(PveError::TaskFailed { exitstatus, .. }) => exitstatus.contains("is locked"),
        _ => false,
    }
}

/// Runs a snapshot task (`start` starts it, then it is waited for) again while the guest is locked: backoff from
/// 250 ms doubling to 8 s, at most [`LOCK_TRIES`] tries within [`LOCK_PATIENCE`]; the last error otherwise.
pub(super) async fn while_locked<F, Fut>(prov: &Provisioner, g: &OwnedGuest, mut start: F) -> Result<(), ProvisionError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<crate::pve::Upid, PveError>>,
{
    let began = Instant::now();
    let mut pause = LOCK_BACKOFF;
    let mut tries = 0;
    loop {
        tries += 1;
        g.still_ours().await?;
        let result = match start().await {
            Ok(upid) => wait(&prov.client, upid.as_str(), &prov.settings).await,
            Err(e) => Err(e.into()),
        };
        match result {
            Err(e) if locked(&e) && tries < LOCK_TRIES && began.elapsed() + pause < LOCK_PATIENCE => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LOCK_BACKOFF_CAP);
            }
            Err(e) if locked(&e) => {
                return Err(ProvisionError::NotNow(format!("the guest stayed locked by another operation ({tries} tries in {} s): {e}", began.elapsed().as_secs())))
            }
            other => return other,
        }
    }
}

/// The commit the deployment's guest serves, as recorded.
fn serving(d: &Deployment) -> Option<CommitSha> {
    d.commit.clone()
}

fn info(s: crate::pve::Snapshot) -> Option<SnapshotInfo> {
    if s.is_current() {
        return None;
    }
    let origin = SnapshotName::parse_existing(&s.name).map(|n| n.origin()).unwrap_or(Origin::Other);
    let d = read_description(&s.description);
    Some(SnapshotInfo { name: s.name, taken_at: s.snaptime.map(|t| t as i64 * 1000), taken_by: d.taken_by, description: d.note, origin, vmstate: s.vmstate, serving: d.serving })
}

/// A failure to act on the guest, for the doors.
pub(super) fn refused(e: ProvisionError) -> EngineError {
    match e {
        ProvisionError::Pve(PveError::NotFound { message }) => EngineError::NotFound(message),
        ProvisionError::Store(e) => EngineError::Store(e),
        e @ (ProvisionError::LeaseLost(_) | ProvisionError::NotNow(_) | ProvisionError::Vanished) => EngineError::Conflict(e.to_string()),
        e => EngineError::Proxmox(e.to_string()),
    }
}

impl Engine {
    /// The deployment's guest (provisioner, node, id), or why there is none to act on.
    fn snapshot_target(&self, d: &Deployment) -> Result<(Arc<Provisioner>, crate::core::names::NodeName, crate::core::names::VmId), EngineError> {
        let prov = self.inner.provisioner.clone().ok_or_else(|| EngineError::Conflict("no Proxmox cluster is configured".into()))?;
        if matches!(d.status, Status::Destroying | Status::Destroyed) {
            return Err(EngineError::Conflict(format!("the deployment is {}", d.status)));
        }
        match (d.proxmox_node.clone(), d.proxmox_id) {
            (Some(node), Some(vmid)) => Ok((prov, node, vmid)),
            _ => Err(EngineError::Conflict(format!("the deployment has no guest (status {})", d.status))),
        }
    }

    /// A guest operation that put the deployment `deploying` failed: logs why under `step` and records `failed` (when
    /// it is still `deploying`).
    pub(super) async fn end_failed(&self, id: &crate::core::deployment::DeploymentId, step: &str, msg: &str) {
        self.log(id, Level::Error, step, msg).await;
        if let Ok(Some(now)) = self.store().get_deployment(id).await {
            if now.status == Status::Deploying {
                if let Err(e) = self.transition(now, Status::Failed, msg).await {
                    tracing::error!(deployment = %id, error = %e, step, "could not record the failure");
                }
            }
        }
    }

    /// The guest's snapshots, oldest first (Proxmox's `current`, the live state, left out).
    pub async fn snapshots(&self, id_or_name: &str) -> Result<(Deployment, Vec<SnapshotInfo>), EngineError> {
        let d = self.find(id_or_name).await?;
        let (prov, node, vmid) = self.snapshot_target(&d)?;
        let listed = prov.client.snapshot_list(pve_kind(d.spec.guest_type), &node, vmid).await.map_err(|e| refused(e.into()))?;
        let mut out: Vec<SnapshotInfo> = listed.into_iter().filter_map(info).collect();
        out.sort_by(|a, b| (a.taken_at, &a.name).cmp(&(b.taken_at, &b.name)));
        Ok((d, out))
    }

    /// Runs `work` on the deployment's guest once it is proven ours, with this agent's other snapshot operations on
    /// it kept out: under the deployment's work lease when it is free, or under this agent's own lease while its
    /// work on the deployment (an install, which may hold it for minutes) is in flight; never while another agent
    /// holds it.
    pub(super) async fn on_own_guest<T>(&self, d: &Deployment, work: impl AsyncFnOnce(&Provisioner, &OwnedGuest, &Lease) -> Result<T, ProvisionError>) -> Result<T, ProvisionError> {
        let (prov, node, vmid) = self.snapshot_target(d).map_err(|e| ProvisionError::NotNow(e.to_string()))?;
        let gate = {
            let mut gates = self.inner.snapshot_gates.lock().expect("snapshot gates poisoned");
            gates.entry(d.id.clone()).or_default().clone()
        };
        let _one_at_a_time = gate.lock().await;
        let kind = d.spec.guest_type;
        let act = async |lease: Lease| -> Result<T, ProvisionError> {
            let fence = Fence::new(self.store().clone(), lease.clone());
            match prov.guard(&fence, kind, &node, vmid).await? {
                Found::Owned(g) => work(&prov, &g, &lease).await,
                Found::Gone => Err(ProvisionError::GuestLost { vmid }),
            }
        };
        let mut act = Some(act);
        let leased = self.with_lease(&d.id, Duration::ZERO, |lease| act.take().expect("run once")(lease)).await;
        match leased {
            Some(r) => r,
            None => match self.store().live_lease(&d.id).await? {
                Some(lease) if lease.holder == self.inner.agent_id => act.take().expect("not run")(lease).await,
                Some(_) => Err(ProvisionError::NotNow("another agent is working on this deployment (it holds the work lease)".into())),
                None => Err(ProvisionError::NotNow("the deployment was busy".into())),
            },
        }
    }

    /// Takes snapshot `name` of the deployment's guest by hand; no schedule ever deletes it.
    pub async fn take_snapshot(&self, id_or_name: &str, name: SnapshotName, note: SnapshotNote, actor: &Actor) -> Result<SnapshotInfo, EngineError> {
        let d = self.find(id_or_name).await?;
        self.writable()?;
        self.snapshot_target(&d)?;
        let (_, existing) = self.snapshots(d.id.as_str()).await?;
        if existing.iter().any(|s| s.name == name.as_str()) {
            return Err(EngineError::Conflict(format!("the guest already has a snapshot {name}")));
        }
        self.store().audit(actor, "snapshot_take", Some(d.id.as_str()), &format!("name={name}")).await?;
        let description = description_for(&note, &actor.to_string(), serving(&d).as_ref());
        let kind = pve_kind(d.spec.guest_type);
        self.on_own_guest(&d, async |prov: &Provisioner, g: &OwnedGuest, _: &Lease| {
            while_locked(prov, g, || prov.client.snapshot_create(kind, &g.node, g.vmid, name.as_str(), Some(description.as_str()))).await
        })
        .await
        .map_err(refused)?;
        self.log(&d.id, Level::Info, "snapshot", &format!("snapshot {name} taken by {actor}")).await;
        let (_, now) = self.snapshots(d.id.as_str()).await?;
        now.into_iter().find(|s| s.name == name.as_str()).ok_or_else(|| EngineError::Proxmox(format!("snapshot {name} was taken but Proxmox VE does not list it")))
    }

    /// Deletes snapshot `name` of the deployment's guest (any snapshot, a schedule's included).
    pub async fn delete_snapshot(&self, id_or_name: &str, name: SnapshotName, actor: &Actor) -> Result<(), EngineError> {
        let d = self.find(id_or_name).await?;
        self.writable()?;
        let (_, existing) = self.snapshots(d.id.as_str()).await?;
        if !existing.iter().any(|s| s.name == name.as_str()) {
            return Err(EngineError::NotFound(format!("snapshot {name} of {}", d.spec.name)));
        }
        self.store().audit(actor, "snapshot_delete", Some(d.id.as_str()), &format!("name={name}")).await?;
        let kind = pve_kind(d.spec.guest_type);
        self.on_own_guest(&d, async |prov: &Provisioner, g: &OwnedGuest, _: &Lease| while_locked(prov, g, || prov.client.snapshot_delete(kind, &g.node, g.vmid, name.as_str())).await)
            .await
            .map_err(refused)?;
        self.log(&d.id, Level::Info, "snapshot", &format!("snapshot {name} deleted by {actor}")).await;
        Ok(())
    }

    /// Rolls the guest back to snapshot `name` (202): the deployment goes `deploying`, the guest is stopped (Proxmox
    /// rolls back a stopped guest), rolled back, started, and ends `running` once the app answers its health check as
    /// after a deploy, `failed` otherwise. The release record is not rewound.
    pub async fn rollback_snapshot(&self, id_or_name: &str, name: SnapshotName, actor: &Actor) -> Result<Deployment, EngineError> {
        let d = self.find(id_or_name).await?;
        self.writable()?;
        if !matches!(d.status, Status::Running | Status::Stopped | Status::Failed) {
            return Err(EngineError::Conflict(format!("the deployment is {}; a rollback waits until it is running, stopped or failed", d.status)));
        }
        let (_, existing) = self.snapshots(d.id.as_str()).await?;
        let Some(found) = existing.iter().find(|s| s.name == name.as_str()) else {
            return Err(EngineError::NotFound(format!("snapshot {name} of {}", d.spec.name)));
        };
        // The guest serves again what it served then: the deployment says so once it answers.
        let served = found.serving.clone();
        self.store().audit(actor, "snapshot_rollback", Some(d.id.as_str()), &format!("name={name}")).await?;
        let d = self.transition(d, Status::Deploying, &format!("rolling back to snapshot {name}, asked by {actor}")).await?;
        self.log(&d.id, Level::Info, "rollback", &format!("rollback to snapshot {name} requested by {actor}")).await;
        let engine = self.clone();
        let id = d.id.clone();
        let answer = d.clone();
        self.inner.tasks.spawn(async move {
            let step = "rollback";
            let result = engine
                .on_own_guest(&d, async |prov: &Provisioner, g: &OwnedGuest, lease: &Lease| {
                    engine.log(&d.id, Level::Info, step, &format!("stopping guest {} to roll it back", g.vmid)).await;
                    prov.stop_owned(g, Duration::from_secs(60)).await?;
                    let kind = pve_kind(d.spec.guest_type);
                    while_locked(prov, g, || prov.client.snapshot_rollback(kind, &g.node, g.vmid, name.as_str())).await?;
                    engine.log(&d.id, Level::Info, step, &format!("guest {} rolled back to snapshot {name}", g.vmid)).await;
                    let mut now = engine.store().get_deployment(&d.id).await?.ok_or(ProvisionError::Vanished)?;
                    if let Some(c) = &served {
                        now.commit = Some(c.clone());
                    }
                    engine.boot_and_check(prov, g, now, lease, step, &format!("rolled back to snapshot {name}")).await
                })
                .await;
            match result {
                Ok(_) => engine.log(&id, Level::Info, step, &format!("rollback to snapshot {name} done")).await,
                Err(e) => engine.end_failed(&id, step, &format!("rollback to snapshot {name} failed: {e}")).await,
            }
        });
        Ok(answer)
    }

    /// A snapshot schedule's occurrence: takes `pvd-<schedule>-<UTC time>` (once: an occurrence run again finds it
    /// taken), then deletes that schedule's own oldest snapshots beyond `keep`; no other snapshot is touched.
    pub(crate) async fn scheduled_snapshot(&self, d: &Deployment, schedule_id: &str, occurrence: i64, keep: u32, actor: &Actor) -> Result<String, String> {
        let name = SnapshotName::scheduled(schedule_id, occurrence);
        let description = description_for(&SnapshotNote::default(), &actor.to_string(), serving(d).as_ref());
        let kind = pve_kind(d.spec.guest_type);
        let r = self
            .on_own_guest(d, async |prov: &Provisioner, g: &OwnedGuest, _: &Lease| {
                let names = |listed: Vec<crate::pve::Snapshot>| listed.into_iter().filter(|s| !s.is_current()).filter_map(|s| SnapshotName::parse_existing(&s.name).ok()).collect::<Vec<_>>();
                if !names(prov.client.snapshot_list(kind, &g.node, g.vmid).await?).contains(&name) {
                    while_locked(prov, g, || prov.client.snapshot_create(kind, &g.node, g.vmid, name.as_str(), Some(description.as_str()))).await?;
                }
                let old = beyond_keep(&names(prov.client.snapshot_list(kind, &g.node, g.vmid).await?), schedule_id, keep);
                for o in &old {
                    while_locked(prov, g, || prov.client.snapshot_delete(kind, &g.node, g.vmid, o.as_str())).await?;
                }
                let old: Vec<&str> = old.iter().map(SnapshotName::as_str).collect();
                Ok(if old.is_empty() { format!("snapshot {name} taken") } else { format!("snapshot {name} taken; deleted {}", old.join(", ")) })
            })
            .await
            .map_err(|e| format!("snapshot {name}: {e}"));
        match &r {
            Ok(m) => self.log(&d.id, Level::Info, "snapshot", m).await,
            Err(m) => self.log(&d.id, Level::Error, "snapshot", &format!("scheduled snapshot failed: {m}")).await,
        }
        r
    }
}
