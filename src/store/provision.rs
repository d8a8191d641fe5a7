//! The persisted progress of each provisioning (its current step and what was learned), written
//! under the deployment's lease so that work resumes after a crash and a stale agent cannot overwrite it.

use std::net::Ipv4Addr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::leases::{Lease, CHECK_LEASE};
use super::{decode, now_millis, Store, StoreError};
use crate::core::deployment::DeploymentId;
use crate::core::names::{NodeName, VmId};
use crate::core::provision::{Progress, Step};

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

impl Store {
    /// Writes the state if `lease` is still ours (`Stale` otherwise).
    pub async fn save_provision<S: Serialize>(&self, lease: &Lease, state: &S) -> Result<(), StoreError> {
        let sql = format!(
            "BEGIN TRANSACTION;
             {CHECK_LEASE}
             UPSERT type::record('provision', $lease_dep) CONTENT {{ state: $state, updated_at: $now }};
             COMMIT TRANSACTION;"
        );
        let state = serde_json::to_value(state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let vars = json!({ "lease_dep": lease.deployment.as_str(), "lease_token": lease.token, "state": state, "now": now_millis() });
        match self.run(&sql, vars).await {
            Ok(_) => Ok(()),
            Err(StoreError::Unavailable(m)) if m.contains("lease lost") => Err(StoreError::Stale),
            Err(e) => Err(e),
        }
    }

    pub async fn save_progress(&self, lease: &Lease, p: &Progress) -> Result<(), StoreError> {
        self.save_provision(lease, &ProgressRow::from(p)).await
    }

    pub async fn load_progress(&self, dep: &DeploymentId) -> Result<Option<Progress>, StoreError> {
        self.load_provision::<ProgressRow>(dep).await?.map(Progress::try_from).transpose()
    }

    pub async fn load_provision<S: DeserializeOwned>(&self, dep: &DeploymentId) -> Result<Option<S>, StoreError> {
        let rows = self.run("SELECT VALUE state FROM ONLY type::record('provision', $dep)", json!({ "dep": dep.as_str() })).await?;
        match rows.into_iter().next().and_then(|r| r.into_iter().next()) {
            Some(v) if !v.is_null() => Ok(Some(decode(v)?)),
            _ => Ok(None),
        }
    }
}
