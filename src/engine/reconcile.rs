//! The reconciler: compares the guests tagged `pvedeploy` on the cluster with the store, reports
//! orphans, missing and moved guests, follows moved guests of ours to their new node, and removes
//! orphans only when configured to, and then only through the ownership guard: a guest whose mark names
//! a deployment this store records as finished (destroyed or failed without a guest). A guest marked for
//! a deployment this store does not know (a restored database, another agent's store) is never removed.

use std::time::Duration;

use super::ownership::{Fence, Found};
use super::provision::{ProvisionError, TAG};
use super::{Engine, EngineError};
use crate::core::deployment::{Deployment, DeploymentId};
use crate::core::names::NodeName;
use crate::core::ownership::Owner;
use crate::core::status::Status;
use crate::store::leases::Lease;
use crate::core::command::{Actor, Door};
use crate::core::deployment::GuestType;
use crate::core::names::VmId;
use crate::core::reconcile::{compare, TaggedGuest};
use crate::pve::{ResourceKind, ResourceType};
use crate::store::now_millis;

/// One run's findings, as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub at: i64,
    pub guests_seen: usize,
    pub orphans: Vec<GuestRef>,
    pub missing: Vec<MissingGuest>,
    pub moved: Vec<MovedGuest>,
    /// Orphans deleted in this run (only with `remove_orphans`).
    pub removed: Vec<GuestRef>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRef {
    pub node: String,
    pub vmid: u32,
    pub kind: &'static str,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingGuest {
    pub deployment: String,
    pub name: String,
    pub node: Option<String>,
    pub vmid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedGuest {
    pub deployment: String,
    pub vmid: u32,
    pub recorded_node: Option<String>,
    pub node: String,
}

impl From<&TaggedGuest> for GuestRef {
    fn from(g: &TaggedGuest) -> Self {
        GuestRef { node: g.node.to_string(), vmid: g.vmid.get(), kind: g.kind.as_str(), name: g.name.clone() }
    }
}

impl Engine {
    /// Runs the reconciler once; `None` without a cluster.
    pub async fn reconcile(&self) -> Result<Option<ReconcileReport>, EngineError> {
        let Some(prov) = self.inner.provisioner.clone() else { return Ok(None) };
        // One run at a time: two runs would both try to remove the same orphans.
        let _one = self.inner.reconciling.lock().await;
        let mut errors = Vec::new();
        let resources = match prov.client.cluster_resources(Some(ResourceKind::Vm)).await {
            Ok(r) => r,
            Err(e) => return Err(EngineError::Conflict(format!("cannot list the cluster's guests: {e}"))),
        };
        let guests: Vec<TaggedGuest> = resources
            .iter()
            .filter(|r| !r.template && r.tags.iter().any(|t| t == TAG))
            .filter_map(|r| {
                let kind = match r.kind {
                    ResourceType::Qemu => GuestType::Vm,
                    ResourceType::Lxc => GuestType::Lxc,
                    _ => return None,
                };
                Some(TaggedGuest { node: r.node.clone()?, vmid: r.vmid?, kind, name: r.name.clone(), tags: r.tags.clone() })
            })
            .collect();
        // Every guest (tagged or not) counts as present: a record whose guest lost its tag is not missing.
        let present: Vec<TaggedGuest> = resources
            .iter()
            .filter_map(|r| Some(TaggedGuest { node: r.node.clone()?, vmid: r.vmid?, kind: GuestType::Vm, name: None, tags: vec![] }))
            .collect();
        let recorded = self.store().recorded_guests().await?;
        let claimed: Vec<VmId> = self.store().vmid_claims().await?.into_iter().filter_map(|(v, _)| VmId::new(v.into()).ok()).collect();
        let orphans = compare(&guests, &recorded, &claimed).orphans;
        let f = compare(&present, &recorded, &claimed);
        let mut removed = Vec::new();
        if prov.settings.remove_orphans && self.read_only().is_none() {
            for g in &orphans {
                match self.remove_orphan(g).await {
                    Ok(true) => removed.push(GuestRef::from(g)),
                    Ok(false) => {}
                    Err(e) => errors.push(format!("orphan {} on {} left in place: {e}", g.vmid, g.node)),
                }
            }
        }
        // A record whose guest carries another deployment's mark: never acted on, reported.
        for r in &recorded {
            let mark = resources.iter().find(|x| x.vmid == Some(r.vmid)).map(|x| Owner::of(&x.tags, None));
            if let Some(Owner::Deployment(other)) = mark.filter(|o| !matches!(o, Owner::Deployment(d) if d.as_str() == r.deployment)) {
                errors.push(format!("deployment {} records guest {}, which carries deployment {other}'s mark: it is not acted on", r.name, r.vmid));
            }
        }
        // Guests of ours that were migrated: the record follows them.
        for (r, now_on) in &f.moved {
            let owner = resources.iter().find(|x| x.vmid == Some(r.vmid)).map(|x| Owner::of(&x.tags, None));
            let Some(dep) = DeploymentId::parse(&r.deployment).filter(|d| owner.as_ref().is_some_and(|o| o.is(d))) else {
                errors.push(format!("guest {} is recorded for {} but its mark says otherwise: not followed", r.vmid, r.name));
                continue;
            };
            if let Err(e) = self.record_move(&dep, r.vmid, r.node.as_ref(), now_on).await {
                errors.push(format!("guest {} moved to {now_on}; could not record it: {e}", r.vmid));
            }
        }
        let report = ReconcileReport {
            at: now_millis(),
            guests_seen: guests.len(),
            orphans: orphans.iter().map(GuestRef::from).collect(),
            missing: f.missing.iter().map(|r| MissingGuest { deployment: r.deployment.clone(), name: r.name.clone(), node: r.node.as_ref().map(ToString::to_string), vmid: r.vmid.get() }).collect(),
            moved: f.moved.iter().map(|(r, n)| MovedGuest { deployment: r.deployment.clone(), vmid: r.vmid.get(), recorded_node: r.node.as_ref().map(ToString::to_string), node: n.to_string() }).collect(),
            removed,
            errors,
        };
        if !report.orphans.is_empty() || !report.missing.is_empty() || !report.moved.is_empty() {
            tracing::warn!(orphans = report.orphans.len(), missing = report.missing.len(), moved = report.moved.len(), removed = report.removed.len(), "reconciler found differences");
        }
        *self.inner.last_reconcile.lock().expect("reconcile poisoned") = Some(report.clone());
        Ok(Some(report))
    }

    /// Removes one orphan when it is provably a finished deployment's guest: its mark names a deployment
    /// this store records as destroyed or failed without a guest, the agent takes that deployment's
    /// lease, claims the VMID for it, and the guard confirms lease, claim and mark just before acting.
    /// `Ok(false)`: not provably ours, left in place (reported only).
    async fn remove_orphan(&self, g: &TaggedGuest) -> Result<bool, String> {
        let prov = self.inner.provisioner.clone().ok_or("no cluster")?;
        let Owner::Deployment(dep) = Owner::of(&g.tags, None) else {
            return Err("it carries no deployment's mark (only the shared tag): never removed".into());
        };
        let d = match self.store().get_deployment(&dep).await.map_err(|e| e.to_string())? {
            Some(d) => d,
            None => return Err(format!("its mark names deployment {dep}, which this store does not know (a restored database or another agent's): never removed")),
        };
        let finished = d.status == Status::Destroyed || (d.status == Status::Failed && d.proxmox_id.is_none());
        if !finished {
            return Err(format!("its deployment {} is {}: not an orphan of ours to remove", d.spec.name, d.status));
        }
        let engine = self.clone();
        let (kind, node, vmid) = (g.kind, g.node.clone(), g.vmid);
        self.with_lease(&dep, Duration::from_secs(5), |lease| async move { engine.remove_orphan_leased(&prov, &lease, kind, &node, vmid).await })
            .await
            .unwrap_or_else(|| Err("its deployment is busy".into()))
    }

    async fn remove_orphan_leased(&self, prov: &super::provision::Provisioner, lease: &Lease, kind: GuestType, node: &NodeName, vmid: VmId) -> Result<bool, String> {
        let dep = &lease.deployment;
        match self.store().claim_vmid(vmid, dep).await.map_err(|e| e.to_string())? {
            crate::store::vmids::Claim::Claimed | crate::store::vmids::Claim::Taken { by_us: true } => {}
            crate::store::vmids::Claim::Taken { by_us: false } => return Err(format!("VMID {vmid} is claimed by another deployment: never removed")),
        }
        let fence = Fence::new(self.store().clone(), lease.clone());
        let result = match prov.guard(&fence, kind, node, vmid).await {
            Ok(Found::Owned(owned)) => prov.remove_owned(&owned, Duration::from_secs(30)).await.map(|()| true),
            Ok(Found::Gone) => Ok(false),
            Err(e) => Err(e),
        };
        match result {
            Ok(removed) => {
                if let Err(e) = self.store().release_vmid(vmid, dep).await {
                    tracing::error!(error = %e, "could not release an orphan's VMID");
                }
                if removed {
                    let actor = Actor { name: "reconciler".into(), door: Door::System };
                    if let Err(e) = self.store().audit(&actor, "remove_orphan", Some(dep.as_str()), &format!("guest {vmid} on {node} (marked for deployment {dep})")).await {
                        tracing::error!(error = %e, "could not audit an orphan's removal");
                    }
                }
                Ok(removed)
            }
            Err(e) => {
                // Not ours after all: give the claim back. Still there: keep it claimed until it is gone.
                if matches!(e, ProvisionError::NotOurs(_)) {
                    if let Err(e) = self.store().release_vmid(vmid, dep).await {
                        tracing::error!(error = %e, "could not release an orphan's VMID");
                    }
                }
                Err(e.to_string())
            }
        }
    }

    /// Records that `dep`'s guest `vmid` is now on `node` (migrated), with an audit entry and a log line.
    /// A fact about the cluster, not an action on the guest: no lease needed (see `Store::set_guest_node`).
    pub(crate) async fn record_move(&self, dep: &DeploymentId, vmid: VmId, from: Option<&NodeName>, node: &NodeName) -> Result<(), crate::store::StoreError> {
        if !self.store().set_guest_node(dep, vmid, node).await? {
            return Ok(());
        }
        let from = from.map(ToString::to_string).unwrap_or_else(|| "an unknown node".into());
        let detail = format!("guest {vmid} moved from {from} to {node}");
        let actor = Actor { name: "reconciler".into(), door: Door::System };
        self.store().audit(&actor, "guest_moved", Some(dep.as_str()), &detail).await?;
        self.log(dep, crate::store::logs::Level::Info, "reconcile", &detail).await;
        Ok(())
    }

    /// `d` with its guest on `node`: recorded when it moved (see `record_move`).
    pub(crate) async fn follow_move(&self, mut d: Deployment, node: &NodeName) -> Result<Deployment, ProvisionError> {
        if let (Some(vmid), false) = (d.proxmox_id, d.proxmox_node.as_ref() == Some(node)) {
            self.record_move(&d.id, vmid, d.proxmox_node.as_ref(), node).await?;
            d.proxmox_node = Some(node.clone());
        }
        Ok(d)
    }

    /// The last run's report, if any.
    pub fn last_reconcile(&self) -> Option<ReconcileReport> {
        self.inner.last_reconcile.lock().expect("reconcile poisoned").clone()
    }

    /// Runs the reconciler now and then every configured interval until shutdown.
    pub fn spawn_reconciler(&self) {
        let Some(prov) = self.inner.provisioner.clone() else { return };
        if self.read_only().is_some() {
            tracing::warn!("read-only: the reconciler does not run (GET /api/v1/reconcile still reports)");
            return;
        }
        let every = prov.settings.reconcile_every;
        let engine = self.clone();
        let stop = self.inner.stop.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = engine.reconcile().await {
                    tracing::warn!(error = %e, "reconciler run failed");
                }
                let Some(every) = every else { return };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
    }
}
