//! API tokens kept in the database, by SHA-256 only (the token itself is never stored).

use serde::Deserialize;
use serde_json::json;

use super::{decode, now_millis, Store, StoreError};
use crate::auth::{Scope, TokenEntry};

#[derive(Deserialize)]
struct Row {
    name: String,
    sha256: String,
    scopes: Vec<String>,
}

impl Store {
    pub async fn insert_token(&self, name: &str, sha256: &[u8; 32], scopes: &[Scope]) -> Result<(), StoreError> {
        let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        self.run(
            "CREATE api_token CONTENT { name: $name, sha256: $sha, scopes: $scopes, created_at: $now }",
            json!({ "name": name, "sha": hex::encode(sha256), "scopes": scopes, "now": now_millis() }),
        )
        .await?;
        Ok(())
    }

    pub async fn tokens(&self) -> Result<Vec<TokenEntry>, StoreError> {
        let rows = self.run("SELECT name, sha256, scopes FROM api_token", json!({})).await?;
        rows.into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .map(|v| {
                let r: Row = decode(v)?;
                let sha256 = hex::decode(&r.sha256)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| StoreError::Corrupt(format!("token {}: bad hash", r.name)))?;
                let scopes = r.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
                Ok(TokenEntry { name: r.name, sha256, scopes })
            })
            .collect()
    }
}
