//! `pvedeploy recover`: rebuilds what a damaged or lost store forgot from the cluster itself. Every
//! guest of ours carries its deployment's id (tag and description) and the request that made it (the
//! description's `pvedeploy-spec` line, `core::ownership`); recover reads them (GETs only: the client
//! it is given refuses anything else), compares with the store, prints the plan, and — when the
//! operator confirms — records the missing deployments and marks the store trusted again.

use crate::core::deployment::{Deployment, DeploymentId, GuestType, Spec};
use crate::core::status::Status;
use crate::core::names::{NodeName, VmId};
use crate::core::ownership::{spec_in_description, Owner, TAG};
use crate::core::provision::{GuestAt, Progress};
use crate::pve::{LxcInterface, ResourceKind, ResourceType};

use super::ownership::owner_of;
use super::provision::pve_kind;
use super::{Engine, EngineError};

/// What recover found for one guest carrying our tag.
#[derive(Debug, Clone)]
pub struct Finding {
    pub vmid: VmId,
    pub node: NodeName,
    pub kind: GuestType,
    pub what: Found,
}

#[derive(Debug, Clone)]
pub enum Found {
    /// The store has this deployment on this guest.
    Matches { id: DeploymentId, name: String },
    /// The store does not know the deployment; it is rebuilt from the guest (record, VMID claim,
    /// place, address and host key when they could be read).
    Restore { deployment: Box<Deployment>, progress: Progress, notes: Vec<String> },
    /// The store knows the deployment on another guest, or the name is another live deployment's.
    Differs { id: DeploymentId, why: String },
    /// Marked, but the guest does not say enough to rebuild its record.
    Unrecoverable { why: String },
}

/// The whole comparison: the guests, and the store's deployments whose guest is not on the cluster.
#[derive(Debug, Clone, Default)]
pub struct RecoverPlan {
    pub findings: Vec<Finding>,
    pub recorded_without_guest: Vec<(DeploymentId, String, u32)>,
}

impl RecoverPlan {
    pub fn restorable(&self) -> usize {
        self.findings.iter().filter(|f| matches!(f.what, Found::Restore { .. })).count()
    }

    /// The plan in words, a line per guest.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![];
        for f in &self.findings {
            let at = format!("{} {} on {}", f.kind.as_str(), f.vmid, f.node);
            out.push(match &f.what {
                Found::Matches { id, name } => format!("ok       {at}: deployment {name} ({id}) as the store has it"),
                Found::Restore { deployment, notes, .. } => {
                    let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
                    format!("restore  {at}: deployment {} ({}) is not in the store; it will be recorded as {}{notes}", deployment.spec.name, deployment.id, deployment.status.as_str())
                }
                Found::Differs { id, why } => format!("differs  {at}: deployment {id}: {why}; left for an operator"),
                Found::Unrecoverable { why } => format!("skipped  {at}: {why}"),
            });
        }
        for (id, name, vmid) in &self.recorded_without_guest {
            out.push(format!("missing  deployment {name} ({id}) records guest {vmid}, which is not on the cluster; left as recorded"));
        }
        out
    }
}

impl Engine {
    /// Reads the cluster's marked guests and compares them with the store. Changes nothing.
    pub async fn recover_plan(&self) -> Result<RecoverPlan, EngineError> {
        let prov = self.inner.provisioner.clone().ok_or_else(|| EngineError::Conflict("recover needs a Proxmox cluster to read the guests from".into()))?;
        let c = &prov.client;
        let pve = |e: crate::pve::PveError| EngineError::Conflict(format!("reading the cluster: {e}"));
        let resources = c.cluster_resources(Some(ResourceKind::Vm)).await.map_err(pve)?;
        let mut plan = RecoverPlan::default();
        let mut on_cluster = vec![];
        for r in resources.iter().filter(|r| !r.template && r.tags.iter().any(|t| t == TAG)) {
            let kind = match r.kind {
                ResourceType::Qemu => GuestType::Vm,
                ResourceType::Lxc => GuestType::Lxc,
                _ => continue,
            };
            let (Some(node), Some(vmid)) = (r.node.clone(), r.vmid) else { continue };
            on_cluster.push(vmid.get());
            let config = c.guest_config_raw(pve_kind(kind), &node, vmid).await.map_err(pve)?;
            let what = match owner_of(&config) {
                Owner::Unmarked => Found::Unrecoverable { why: "carries only the shared tag, no deployment's mark".into() },
                Owner::Conflicting => Found::Unrecoverable { why: "carries the marks of two deployments".into() },
                Owner::Deployment(id) => self.compare(&prov, &config, id, kind, &node, vmid, r.status.as_deref()).await?,
            };
            plan.findings.push(Finding { vmid, node, kind, what });
        }
        for g in self.store().recorded_guests().await? {
            if !on_cluster.contains(&g.vmid.get()) {
                if let Some(id) = DeploymentId::parse(&g.deployment) {
                    plan.recorded_without_guest.push((id, g.name, g.vmid.get()));
                }
            }
        }
        Ok(plan)
    }

    #[allow(clippy::too_many_arguments)]
    async fn compare(
        &self,
        prov: &super::provision::Provisioner,
        config: &super::provision::RawConfig,
        id: DeploymentId,
        kind: GuestType,
        node: &NodeName,
        vmid: VmId,
        state: Option<&str>,
    ) -> Result<Found, EngineError> {
        if let Some(d) = self.store().get_deployment(&id).await? {
            return Ok(match d.proxmox_id {
                Some(v) if v == vmid => Found::Matches { id, name: d.spec.name.to_string() },
                other => Found::Differs { id, why: format!("the store records guest {}", other.map(|v| v.to_string()).unwrap_or_else(|| "none".into())) },
            });
        }
        let Some(raw) = config.get("description").and_then(|d| spec_in_description(d)) else {
            return Ok(Found::Unrecoverable { why: format!("deployment {id} is not in the store and the guest's description holds no request to rebuild it from (made before specs were recorded)") });
        };
        let spec = match Spec::parse(raw, self.limits(), &self.inner.repos) {
            Ok(s) => s,
            Err(e) => return Ok(Found::Unrecoverable { why: format!("deployment {id}: the request in the description no longer passes this agent's rules: {e}") }),
        };
        if let Ok(Some(other)) = self.store().get_deployment_by_name(&spec.name).await {
            if other.status != Status::Destroyed {
                return Ok(Found::Differs { id, why: format!("its name {} is held by deployment {}", spec.name, other.id) });
            }
        }
        let mut notes = vec![];
        let mut d = Deployment::new(spec, crate::store::now_millis());
        d.id = id;
        d.proxmox_id = Some(vmid);
        d.proxmox_node = Some(node.clone());
        d.status = if state == Some("running") { Status::Running } else { Status::Stopped };
        let c = &prov.client;
        let ip = match kind {
            GuestType::Lxc => c.lxc_interfaces(node, vmid).await.ok().and_then(|i| LxcInterface::first_ipv4(&i)),
            GuestType::Vm => c.qemu_agent_interfaces(node, vmid).await.ok().and_then(|i| crate::pve::guest_ipv4_on_mac(&i, None)),
        };
        match ip {
            Some(ip) => d.ip_address = Some(ip),
            None => notes.push("its address could not be read (guest stopped, or no agent)".into()),
        }
        let host_key = match kind {
            GuestType::Lxc => match prov.creation_task(kind, node, vmid).await {
                Ok(Some(upid)) => prov.container_host_key(&upid).await.ok().flatten(),
                _ => None,
            },
            // A VM's host key lives only in its cloud-init snippet; it is not read back.
            GuestType::Vm => None,
        };
        if host_key.is_none() {
            notes.push("its SSH host key is unknown, so deploys to it are refused until it is re-provisioned".into());
            d.error_message = Some("recovered from the cluster without the guest's SSH host key: deploys are refused (destroy and create it again to deploy)".into());
        }
        let p = Progress::Ready { guest: GuestAt { node: node.clone(), vmid, static_ip: None }, host_key, ip };
        Ok(Found::Restore { deployment: Box::new(d), progress: p, notes })
    }

    /// Records every deployment the plan restores, then marks the store trusted (the repair report is
    /// kept as `wal-repair-report.resolved-<ms>`). Returns how many were recorded.
    pub async fn recover_apply(&self, plan: &RecoverPlan) -> Result<usize, EngineError> {
        let mut n = 0;
        for f in &plan.findings {
            if let Found::Restore { deployment, progress, .. } = &f.what {
                self.store().restore_deployment(deployment, progress, "recovered from its guest by pvedeploy recover").await?;
                n += 1;
            }
        }
        if let Some(dir) = self.store().dir() {
            crate::store::trust::resolve(dir, crate::store::now_millis()).map_err(|e| EngineError::Conflict(format!("could not mark the store trusted: {e}")))?;
        }
        Ok(n)
    }
}
