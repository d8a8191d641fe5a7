//! The persisted progress of each provisioning (its current step and what was learned), written
//! under the deployment's lease so that work resumes after a crash and a stale agent cannot overwrite it.

use std::net::Ipv4Addr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::leases::{Lease, CHECK_LEASE};
use super::{decode, now_millis, Store, StoreError};
use crate::core::deployment::{Deployment, DeploymentId};
use super::deployments::DeploymentWrite;
use crate::core::names::{NodeName, VmId};
use crate::core::provision::{Progress, Step};
use crate::core::status::Status;
use super::logs::LogLine;

/// The stored shape of a `Progress`.
#[derive(Debug, Serialize, Deserialize)]
struct ProgressRow {
    step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vmid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ipv4: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    static_ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host_key: Option<String>,
    #[serde(default)]
    attempts: u32,
}

impl From<&Progress> for ProgressRow {
    fn from(p: &Progress) -> Self {
        ProgressRow {
            step: p.step.as_str().into(),
            node: p.node.as_ref().map(ToString::to_string),
            vmid: p.vmid.map(VmId::get),
            upid: p.upid.clone(),
            ipv4: p.ipv4,
            static_ip: p.static_ip,
            host_key: p.host_key.clone(),
            attempts: p.attempts,
        }
    }
}

impl TryFrom<ProgressRow> for Progress {
    type Error = StoreError;

    fn try_from(r: ProgressRow) -> Result<Self, StoreError> {
        let bad = |what: &str| StoreError::Corrupt(format!("provision progress: bad {what}"));
        Ok(Progress {
            step: Step::parse(&r.step).ok_or_else(|| bad("step"))?,
            node: r.node.as_deref().map(NodeName::parse).transpose().map_err(|_| bad("node"))?,
            vmid: r.vmid.map(|v| VmId::new(v.into())).transpose().map_err(|_| bad("vmid"))?,
            upid: r.upid,
            ipv4: r.ipv4,
            static_ip: r.static_ip,
            host_key: r.host_key,
            attempts: r.attempts,
        })
    }
}

/// Everything one provisioning step commits, in one transaction under the deployment's lease: its
/// progress (the intent of the next step), the lines saying what it did, and, when the step made them,
/// a VMID claim and a revision-checked save of the deployment. One commit per step: a line, a claim or
/// a deployment change is never kept for a step whose progress was lost, nor the reverse.
#[derive(Debug, Clone, Copy)]
pub struct StepWrite<'a> {
    pub progress: &'a Progress,
    pub lines: &'a [LogLine],
    /// Claims this id for the deployment; the commit fails with `Taken` when another deployment holds it.
    pub claim: Option<VmId>,
    /// The deployment with the step's changes applied (its revision still the one read), and the status it had.
    pub deployment: Option<(&'a Deployment, Status, &'a str)>,
}

/// What a committed step left behind.
#[derive(Debug)]
pub struct StepSaved {
    /// The deployment's status as it is now: a destroy requested meanwhile shows up here.
    pub status: Option<Status>,
    /// The deployment as saved (its revision bumped), when the step saved it.
    pub deployment: Option<Deployment>,
}

impl<'a> StepWrite<'a> {
    /// Just the progress, with at most one line.
    pub fn progress(progress: &'a Progress, lines: &'a [LogLine]) -> Self {
        StepWrite { progress, lines, claim: None, deployment: None }
    }
}

impl Store {
    /// Writes the progress under `lease` together with the line saying what the step did, in one
    /// transaction, and returns the deployment's status as it is now (see [`Store::save_step`]).
    pub async fn save_progress(&self, lease: &Lease, p: &Progress, line: Option<&LogLine>) -> Result<Option<Status>, StoreError> {
        Ok(self.save_step(lease, StepWrite::progress(p, line.map(std::slice::from_ref).unwrap_or_default())).await?.status)
    }

    /// Commits one step (see [`StepWrite`]). `Stale` when the lease was taken over or the deployment
    /// changed since it was read (a destroy, say); `Taken` when the claimed id is someone else's.
    pub async fn save_step(&self, lease: &Lease, step: StepWrite<'_>) -> Result<StepSaved, StoreError> {
        let write = step.deployment.map(|(d, previous, message)| DeploymentWrite { d, previous, message });
        let sql = format!(
            "{CHECK_LEASE}
             {claim}
             UPSERT type::record('provision', $lease_dep) CONTENT {{ state: $state, updated_at: $now }} RETURN NONE;
             {lines}
             {deployment}
             SELECT VALUE status FROM ONLY type::record('deployment', $lease_dep);",
            claim = if step.claim.is_some() { "CREATE type::record('vmid_claim', $claim_vmid) CONTENT { deployment: $lease_dep, at: $now } RETURN NONE;" } else { "" },
            lines = if step.lines.is_empty() { "" } else { "INSERT INTO log_line $lines RETURN NONE;" },
            deployment = write.as_ref().map(DeploymentWrite::statements).unwrap_or_default(),
        );
        let state = serde_json::to_value(ProgressRow::from(step.progress)).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut vars = write.as_ref().map(DeploymentWrite::vars).unwrap_or_default();
        for (k, v) in [
            ("lease_dep", json!(lease.deployment.as_str())),
            ("lease_token", json!(lease.token)),
            ("state", state),
            ("lines", json!(step.lines)),
            ("now", json!(now_millis())),
            ("claim_vmid", json!(step.claim.map(VmId::get))),
        ] {
            vars.insert(k.into(), v);
        }
        let result = self.transaction(&sql, serde_json::Value::Object(vars)).await;
        if write.is_some() {
            self.written(&lease.deployment);
        }
        let rows = match result {
            Ok(rows) => rows,
            Err(StoreError::Unavailable(m)) if m.contains("lease lost") || m.contains("stale revision") => return Err(StoreError::Stale),
            Err(StoreError::Taken { .. }) if step.claim.is_some() => {
                return Err(StoreError::Taken { what: format!("VMID {}", step.claim.map(VmId::get).unwrap_or_default()) })
            }
            Err(e) => return Err(e),
        };
        let status = rows.last().and_then(|r| r.first()).and_then(|v| v.as_str()).and_then(Status::parse);
        Ok(StepSaved { status, deployment: write.map(|w| w.saved()) })
    }

    pub async fn load_progress(&self, dep: &DeploymentId) -> Result<Option<Progress>, StoreError> {
        self.load_provision::<ProgressRow>(dep).await?.map(Progress::try_from).transpose()
    }

    async fn load_provision<S: DeserializeOwned>(&self, dep: &DeploymentId) -> Result<Option<S>, StoreError> {
        let rows = self.run("SELECT VALUE state FROM ONLY type::record('provision', $dep)", json!({ "dep": dep.as_str() })).await?;
        match rows.into_iter().next().and_then(|r| r.into_iter().next()) {
            Some(v) if !v.is_null() => Ok(Some(decode(v)?)),
            _ => Ok(None),
        }
    }
}

impl Store {
    /// Records a deployment rebuilt from its guest by `pvedeploy recover`, in one transaction: its name,
    /// the record, an event saying so, its VMID claim and its provisioning progress (finished, with the
    /// guest's place, address and host key when they could be read). Refused (`Taken`) when the name or
    /// the VMID is held by another deployment.
    pub async fn restore_deployment(&self, d: &Deployment, p: &Progress, message: &str) -> Result<(), StoreError> {
        let vmid = p.vmid.ok_or_else(|| StoreError::Corrupt("a restored deployment needs its VMID".into()))?;
        let sql = format!(
            "CREATE type::record('name_claim', $name) CONTENT {{ deployment: $id }};
            CREATE type::record('deployment', $id) CONTENT $row;
            CREATE deployment_event CONTENT {{ deployment: $id, at: $at, to: $status, message: $message }};
            {tally}
            CREATE type::record('vmid_claim', $vmid) CONTENT {{ deployment: $id, at: $at }} RETURN NONE;
            UPSERT type::record('provision', $id) CONTENT {{ state: $state, updated_at: $at }} RETURN NONE;",
            tally = super::deployments::TALLY_CREATED,
        );
        let state = serde_json::to_value(ProgressRow::from(p)).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let now = now_millis();
        let vars = json!({
            "name": d.spec.name.as_str(), "id": d.id.as_str(), "row": super::deployments::Row::created(d, message, now), "at": now,
            "status": d.status.as_str(), "message": message, "vmid": vmid.get(), "state": state,
            "tally_scopes": super::deployments::tally_scopes(d.status, d.spec.framework), "shard": super::deployments::tally_shard(),
        });
        let result = self.transaction(&sql, vars).await;
        self.written(&d.id);
        result.map(|_| ())
    }
}
