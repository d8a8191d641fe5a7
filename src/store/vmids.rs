//! VMID claims: an id is ours once `vmid_claim:<id>` exists, created atomically, so two agents or two
//! deployments never race to the same id. VMs and containers share the one id space.

use serde_json::json;

use super::{now_millis, Store, StoreError};
use crate::core::deployment::DeploymentId;
use crate::core::names::VmId;

/// Outcome of trying to claim one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Claimed,
    /// Already claimed, by this deployment (a resumed step) or by another.
    Taken { by_us: bool },
}

impl Store {
    pub async fn claim_vmid(&self, id: VmId, dep: &DeploymentId) -> Result<Claim, StoreError> {
        let r = self
            .run(
                "CREATE type::record('vmid_claim', $id) CONTENT { deployment: $dep, at: $at }",
                json!({ "id": id.get(), "dep": dep.as_str(), "at": now_millis() }),
            )
            .await;
        match r {
            Ok(_) => Ok(Claim::Claimed),
            Err(StoreError::Taken { .. }) => {
                let owner = self.vmid_owner(id).await?;
                Ok(Claim::Taken { by_us: owner.as_deref() == Some(dep.as_str()) })
            }
            Err(e) => Err(e),
        }
    }

    /// The id `dep` holds, if any (a reservation resumed after a crash finds its own claim here).
    pub async fn vmid_held_by(&self, dep: &DeploymentId) -> Result<Option<VmId>, StoreError> {
        let rows = self.run("SELECT VALUE record::id(id) FROM vmid_claim WHERE deployment = $dep LIMIT 1", json!({ "dep": dep.as_str() })).await?;
        let id = rows.into_iter().next().and_then(|r| r.into_iter().next()).and_then(|v| v.as_u64());
        id.map(|v| VmId::new(v).map_err(|e| StoreError::Corrupt(format!("vmid_claim: {}", e.message)))).transpose()
    }

    /// Claimed ids in `from..=to`, at most `limit` of them, lowest first (one range read).
    pub async fn claimed_vmids(&self, from: VmId, to: VmId, limit: u32) -> Result<Vec<u32>, StoreError> {
        // A record range needs literal bounds; both are integers we typed, never text from outside.
        let sql = format!("SELECT VALUE record::id(id) FROM vmid_claim:{}..={} LIMIT $limit", from.get(), to.get());
        let rows = self.run(&sql, json!({ "limit": limit })).await?;
        Ok(rows.into_iter().next().unwrap_or_default().into_iter().filter_map(|v| v.as_u64().map(|n| n as u32)).collect())
    }

    pub async fn vmid_owner(&self, id: VmId) -> Result<Option<String>, StoreError> {
        let rows = self.run("SELECT VALUE deployment FROM ONLY type::record('vmid_claim', $id)", json!({ "id": id.get() })).await?;
        Ok(rows.into_iter().next().and_then(|r| r.into_iter().next()).and_then(|v| v.as_str().map(String::from)))
    }

    /// Releases an id, only if `dep` holds it.
    pub async fn release_vmid(&self, id: VmId, dep: &DeploymentId) -> Result<(), StoreError> {
        self.run("DELETE type::record('vmid_claim', $id) WHERE deployment = $dep", json!({ "id": id.get(), "dep": dep.as_str() })).await?;
        Ok(())
    }

    /// Every claimed id with its deployment (for the reconciler).
    pub async fn vmid_claims(&self) -> Result<Vec<(u32, String)>, StoreError> {
        let rows = self.run("SELECT record::id(id) AS vmid, deployment FROM vmid_claim", json!({})).await?;
        Ok(rows
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| Some((v.get("vmid")?.as_u64()? as u32, v.get("deployment")?.as_str()?.to_string())))
            .collect())
    }
}
