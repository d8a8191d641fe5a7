//! The persisted progress of each provisioning (its current step and what was learned), written
//! under the deployment's lease so that work resumes after a crash and a stale agent cannot overwrite it.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use super::leases::{Lease, CHECK_LEASE};
use super::{decode, now_millis, Store, StoreError};
use crate::core::deployment::DeploymentId;

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

    pub async fn load_provision<S: DeserializeOwned>(&self, dep: &DeploymentId) -> Result<Option<S>, StoreError> {
        let rows = self.run("SELECT VALUE state FROM ONLY type::record('provision', $dep)", json!({ "dep": dep.as_str() })).await?;
        match rows.into_iter().next().and_then(|r| r.into_iter().next()) {
            Some(v) if !v.is_null() => Ok(Some(decode(v)?)),
            _ => Ok(None),
        }
    }
}
