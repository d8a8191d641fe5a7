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

impl Store {
    /// Writes the progress under `lease` together with the line saying what the step did, in one
    /// transaction (one commit per step; a line is never kept for a step whose result was lost), and
    /// returns the deployment's status as it is now: a destroy requested meanwhile shows up here.
    pub async fn save_progress(&self, lease: &Lease, p: &Progress, line: Option<&LogLine>) -> Result<Option<Status>, StoreError> {
        let log = if line.is_some() { "CREATE log_line CONTENT $line RETURN NONE;" } else { "" };
        let sql = format!(
            "{CHECK_LEASE}
             UPSERT type::record('provision', $lease_dep) CONTENT {{ state: $state, updated_at: $now }} RETURN NONE;
             {log}
             SELECT VALUE status FROM ONLY type::record('deployment', $lease_dep);"
        );
        let state = serde_json::to_value(ProgressRow::from(p)).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let vars = json!({ "lease_dep": lease.deployment.as_str(), "lease_token": lease.token, "state": state, "line": line, "now": now_millis() });
        let rows = match self.transaction(&sql, vars).await {
            Ok(rows) => rows,
            Err(StoreError::Unavailable(m)) if m.contains("lease lost") => return Err(StoreError::Stale),
            Err(e) => return Err(e),
        };
        let status = rows.last().and_then(|r| r.first()).and_then(|v| v.as_str()).and_then(Status::parse);
        Ok(status)
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
