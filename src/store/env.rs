//! A deployment's environment variables, values sealed (`secrets::SecretBox`) before they reach the
//! database; names are readable, values only through the box.

use serde_json::json;

use super::{Store, StoreError};
use crate::core::deployment::DeploymentId;

impl Store {
    /// Replaces all variables of a deployment with `sealed` (name, sealed value), atomically.
    pub async fn replace_env(&self, dep: &DeploymentId, sealed: &[(String, String)], at: i64) -> Result<(), StoreError> {
        let rows: Vec<serde_json::Value> = sealed
            .iter()
            .map(|(n, s)| json!({ "key": format!("{dep}/{n}"), "row": { "deployment": dep.as_str(), "name": n, "sealed": s, "updated_at": at } }))
            .collect();
        let sql = "BEGIN;
            DELETE env_var WHERE deployment = $dep;
            FOR $r IN $rows { CREATE type::record('env_var', $r.key) CONTENT $r.row; };
            COMMIT;";
        self.run(sql, json!({ "dep": dep.as_str(), "rows": rows })).await?;
        Ok(())
    }

    /// (name, sealed value) pairs, sorted by name.
    pub async fn env_sealed(&self, dep: &DeploymentId) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.run("SELECT name, sealed FROM env_var WHERE deployment = $dep ORDER BY name", json!({ "dep": dep.as_str() })).await?;
        Ok(rows
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| Some((v.get("name")?.as_str()?.to_string(), v.get("sealed")?.as_str()?.to_string())))
            .collect())
    }
}
