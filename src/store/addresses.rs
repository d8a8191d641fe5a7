//! Static address claims: an address is a guest's once `ip_claim:<address>` exists, created
//! atomically, so two deployments (or two agents) never get the same one.

use std::net::Ipv4Addr;

use serde_json::json;

use super::vmids::Claim;
use super::{now_millis, Store, StoreError};
use crate::core::deployment::DeploymentId;

impl Store {
    pub async fn claim_address(&self, a: Ipv4Addr, dep: &DeploymentId) -> Result<Claim, StoreError> {
        let r = self
            .run(
                "CREATE type::record('ip_claim', $a) CONTENT { deployment: $dep, at: $at }",
                json!({ "a": a.to_string(), "dep": dep.as_str(), "at": now_millis() }),
            )
            .await;
        match r {
            Ok(_) => Ok(Claim::Claimed),
            Err(StoreError::Taken { .. }) => {
                let rows = self.run("SELECT VALUE deployment FROM ONLY type::record('ip_claim', $a)", json!({ "a": a.to_string() })).await?;
                let owner = rows.into_iter().next().and_then(|r| r.into_iter().next()).and_then(|v| v.as_str().map(String::from));
                Ok(Claim::Taken { by_us: owner.as_deref() == Some(dep.as_str()) })
            }
            Err(e) => Err(e),
        }
    }

    /// Releases an address, only if `dep` holds it.
    pub async fn release_address(&self, a: Ipv4Addr, dep: &DeploymentId) -> Result<(), StoreError> {
        self.run("DELETE type::record('ip_claim', $a) WHERE deployment = $dep", json!({ "a": a.to_string(), "dep": dep.as_str() })).await?;
        Ok(())
    }

    /// Releases every address `dep` holds.
    pub async fn release_addresses_of(&self, dep: &DeploymentId) -> Result<(), StoreError> {
        self.run("DELETE ip_claim WHERE deployment = $dep", json!({ "dep": dep.as_str() })).await?;
        Ok(())
    }

    /// Every claimed address with its deployment.
    pub async fn address_claims(&self) -> Result<Vec<(Ipv4Addr, String)>, StoreError> {
        let rows = self.run("SELECT record::id(id) AS a, deployment FROM ip_claim", json!({})).await?;
        Ok(rows
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| Some((v.get("a")?.as_str()?.parse().ok()?, v.get("deployment")?.as_str()?.to_string())))
            .collect())
    }
}
