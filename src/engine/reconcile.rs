//! The reconciler: compares the guests tagged `pvedeploy` on the cluster with the store, reports
//! orphans and missing guests, and removes orphans only when configured to (and only tagged ones).

use std::time::Duration;

use super::provision::TAG;
use super::{Engine, EngineError};
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
        if prov.settings.remove_orphans {
            let actor = Actor { name: "reconciler".into(), door: Door::System };
            for g in &orphans {
                match prov.remove_guest(g.kind, &g.node, g.vmid, Duration::from_secs(30)).await {
                    Ok(()) => {
                        let _ = self.store().audit(&actor, "remove_orphan", None, &format!("guest {} on {} (tagged {TAG})", g.vmid, g.node)).await;
                        removed.push(GuestRef::from(g));
                    }
                    Err(e) => errors.push(format!("could not remove orphan {} on {}: {e}", g.vmid, g.node)),
                }
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

    /// The last run's report, if any.
    pub fn last_reconcile(&self) -> Option<ReconcileReport> {
        self.inner.last_reconcile.lock().expect("reconcile poisoned").clone()
    }

    /// Runs the reconciler now and then every configured interval until shutdown.
    pub fn spawn_reconciler(&self) {
        let Some(prov) = self.inner.provisioner.clone() else { return };
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
