//! The audit trail: who changed what, through which door, and when. Append-only.

use serde_json::json;

use super::{decode, now_millis, Store, StoreError};
use crate::core::command::Actor;
pub use crate::core::audit::AuditEntry;

impl AuditEntry {
    /// An entry stamped now.
    pub fn new(actor: &Actor, action: &str, target: Option<&str>, detail: &str) -> AuditEntry {
        AuditEntry {
            at: now_millis(),
            actor: actor.name.clone(),
            door: actor.door.as_str().into(),
            action: action.into(),
            target: target.map(Into::into),
            detail: detail.into(),
        }
    }
}

impl Store {
    pub async fn audit(&self, actor: &Actor, action: &str, target: Option<&str>, detail: &str) -> Result<(), StoreError> {
        let e = AuditEntry::new(actor, action, target, detail);
        self.run("CREATE audit CONTENT $e", json!({ "e": e })).await?;
        Ok(())
    }

    /// Newest first.
    pub async fn audit_entries(&self, limit: u32, offset: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self
            .run(
                "SELECT at, actor, door, action, target, detail FROM audit ORDER BY at DESC LIMIT $limit START $offset",
                json!({ "limit": limit, "offset": offset }),
            )
            .await?;
        rows.into_iter().next().unwrap_or_default().into_iter().map(decode).collect()
    }
}
