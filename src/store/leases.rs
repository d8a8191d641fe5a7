//! Work leases: one agent at a time works on a deployment. A lease has a holder, a random token and an
//! expiry; it is taken atomically when free or expired, renewed while working, and every write made
//! under it carries its token so a stale holder cannot overwrite a newer one.

use serde_json::json;

use super::{now_millis, Store, StoreError};
use crate::core::deployment::DeploymentId;

/// A held lease: present its token with every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub deployment: DeploymentId,
    pub holder: String,
    pub token: String,
}

impl Store {
    /// Takes the lease on `dep` for `ttl_ms` if nobody holds a live one. `None` when someone else does.
    pub async fn acquire_lease(&self, dep: &DeploymentId, holder: &str, ttl_ms: i64) -> Result<Option<Lease>, StoreError> {
        let token = uuid::Uuid::new_v4().to_string();
        let now = now_millis();
        let sql = "LET $cur = (SELECT * FROM ONLY type::record('lease', $dep));
            IF $cur != NONE AND $cur.expires_at > $now AND $cur.holder != $holder { THROW 'lease held' };
            UPSERT type::record('lease', $dep) CONTENT { holder: $holder, token: $lease_token, expires_at: $exp };";
        let vars = json!({ "dep": dep.as_str(), "holder": holder, "lease_token": token, "now": now, "exp": now + ttl_ms });
        match self.transaction(sql, vars).await {
            Ok(_) => Ok(Some(Lease { deployment: dep.clone(), holder: holder.into(), token })),
            Err(StoreError::Unavailable(m)) if m.contains("lease held") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Extends a lease we still hold; `Stale` when it was taken over.
    pub async fn renew_lease(&self, lease: &Lease, ttl_ms: i64) -> Result<(), StoreError> {
        let sql = "LET $cur = (SELECT * FROM ONLY type::record('lease', $dep));
            IF $cur = NONE OR $cur.token != $lease_token { THROW 'lease lost' };
            UPDATE type::record('lease', $dep) SET expires_at = $exp;";
        let vars = json!({ "dep": lease.deployment.as_str(), "lease_token": lease.token, "exp": now_millis() + ttl_ms });
        match self.transaction(sql, vars).await {
            Ok(_) => Ok(()),
            Err(StoreError::Unavailable(m)) if m.contains("lease lost") => Err(StoreError::Stale),
            Err(e) => Err(e),
        }
    }

    /// The live lease on `dep`, if any (whoever holds it).
    pub async fn live_lease(&self, dep: &DeploymentId) -> Result<Option<Lease>, StoreError> {
        let rows = self
            .run("SELECT holder, token FROM ONLY type::record('lease', $dep) WHERE expires_at > $now", json!({ "dep": dep.as_str(), "now": now_millis() }))
            .await?;
        let row = rows.into_iter().next().and_then(|r| r.into_iter().next());
        Ok(row.and_then(|r| Some(Lease { deployment: dep.clone(), holder: r.get("holder")?.as_str()?.to_string(), token: r.get("token")?.as_str()?.to_string() })))
    }

    pub async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.run("DELETE type::record('lease', $dep) WHERE token = $lease_token", json!({ "dep": lease.deployment.as_str(), "lease_token": lease.token })).await?;
        Ok(())
    }
}

/// SurrealQL that aborts the surrounding transaction unless `$lease_dep`'s lease still has `$lease_token`.
pub(crate) const CHECK_LEASE: &str = "LET $lease_cur = (SELECT VALUE token FROM ONLY type::record('lease', $lease_dep));
    IF $lease_cur != $lease_token { THROW 'lease lost' };";
