//! Webhook deliveries: one record per delivery GUID (created before any effect, unique; processed again only when its first outcome did not act), its outcome, and claims on pushes already handled.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{decode, now_millis, Store, StoreError};
use crate::core::deployment::DeploymentId;
use crate::core::webhook::{DeliveryId, Outcome};
pub use crate::core::delivery::{DeliveryFilter, DeliveryRecord, EarlierAttempt, TargetOutcome, EARLIER_KEPT};

/// Made here, not in `core`: a record is stamped with the clock.
impl DeliveryRecord {
    /// A delivery about to be handled: what its headers said, nothing done yet.
    pub fn received(delivery: DeliveryId, event: String, hook_id: Option<i64>, hook_target: Option<String>) -> Self {
        let now = super::now_millis();
        DeliveryRecord {
            delivery,
            event,
            repo: None,
            repo_hosts: vec![],
            git_ref: None,
            before: None,
            after: None,
            pusher: None,
            hook_id,
            hook_target,
            same_push_as: None,
            body_bytes: None,
            received_at: now,
            updated_at: now,
            outcome: Outcome::Received,
            detail: None,
            targets: vec![],
            redeliveries: 0,
            retries: 0,
            earlier: vec![],
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TargetRow {
    deployment: String,
    outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// The stored shape; absent options are omitted (SurrealDB `option<T>` means absent, not null).
#[derive(Debug, Serialize, Deserialize)]
struct Row {
    delivery: String,
    event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    repo: Option<String>,
    #[serde(default)]
    repo_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    git_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pusher: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hook_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hook_target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    same_push_as: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_bytes: Option<i64>,
    received_at: i64,
    updated_at: i64,
    outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    deployments: Vec<String>,
    targets: Vec<TargetRow>,
    redeliveries: i64,
    #[serde(default)]
    retries: i64,
    #[serde(default)]
    earlier: Vec<EarlierAttempt>,
}

fn target_rows(targets: &[TargetOutcome]) -> Vec<TargetRow> {
    targets.iter().map(|t| TargetRow { deployment: t.deployment.to_string(), outcome: t.outcome.as_str().into(), detail: t.detail.clone() }).collect()
}

impl From<&DeliveryRecord> for Row {
    fn from(d: &DeliveryRecord) -> Self {
        Row {
            delivery: d.delivery.to_string(),
            event: d.event.clone(),
            repo: d.repo.clone(),
            repo_hosts: d.repo_hosts.clone(),
            git_ref: d.git_ref.clone(),
            before_commit: d.before.clone(),
            after_commit: d.after.clone(),
            pusher: d.pusher.clone(),
            hook_id: d.hook_id,
            hook_target: d.hook_target.clone(),
            same_push_as: d.same_push_as.as_ref().map(DeliveryId::to_string),
            body_bytes: d.body_bytes,
            received_at: d.received_at,
            updated_at: d.updated_at,
            outcome: d.outcome.as_str().into(),
            detail: d.detail.clone(),
            deployments: d.targets.iter().map(|t| t.deployment.to_string()).collect(),
            targets: target_rows(&d.targets),
            redeliveries: d.redeliveries,
            retries: d.retries,
            earlier: d.earlier.clone(),
        }
    }
}

impl TryFrom<Row> for DeliveryRecord {
    type Error = StoreError;

    fn try_from(r: Row) -> Result<Self, StoreError> {
        let bad = |what: &str| StoreError::Corrupt(format!("webhook delivery {}: bad {what}", r.delivery));
        let outcome = |s: &str| Outcome::parse(s).ok_or_else(|| bad("outcome"));
        let targets = r
            .targets
            .iter()
            .map(|t| {
                Ok(TargetOutcome {
                    deployment: DeploymentId::parse(&t.deployment).ok_or_else(|| bad("deployment"))?,
                    outcome: outcome(&t.outcome)?,
                    detail: t.detail.clone(),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(DeliveryRecord {
            delivery: DeliveryId::parse(&r.delivery).map_err(|_| bad("delivery id"))?,
            outcome: outcome(&r.outcome)?,
            targets,
            event: r.event,
            repo: r.repo,
            repo_hosts: r.repo_hosts,
            git_ref: r.git_ref,
            before: r.before_commit,
            after: r.after_commit,
            pusher: r.pusher,
            hook_id: r.hook_id,
            hook_target: r.hook_target,
            same_push_as: r.same_push_as.as_deref().map(DeliveryId::parse).transpose().map_err(|_| bad("same_push_as"))?,
            body_bytes: r.body_bytes,
            received_at: r.received_at,
            updated_at: r.updated_at,
            detail: r.detail,
            redeliveries: r.redeliveries,
            retries: r.retries,
            earlier: r.earlier,
        })
    }
}

impl Store {
    /// Records a delivery the first time its GUID is seen; `Taken` when it was seen before
    /// (also when two arrive at once: the record id and a unique index both refuse the second).
    pub async fn record_delivery(&self, d: &DeliveryRecord) -> Result<(), StoreError> {
        match self.run("CREATE type::record('webhook_delivery', $key) CONTENT $row", json!({ "key": d.delivery.as_str(), "row": Row::from(d) })).await {
            Err(StoreError::Taken { .. }) => Err(StoreError::Taken { what: format!("the delivery {}", d.delivery) }),
            Err(StoreError::Unavailable(m)) if m.contains("webhook_delivery") && m.contains("exists") => {
                Err(StoreError::Taken { what: format!("the delivery {}", d.delivery) })
            }
            other => other.map(|_| ()),
        }
    }

    /// Counts a redelivery of a GUID already recorded.
    pub async fn note_redelivery(&self, id: &DeliveryId) -> Result<(), StoreError> {
        self.run(
            "UPDATE type::record('webhook_delivery', $key) SET redeliveries += 1, updated_at = $now",
            json!({ "key": id.as_str(), "now": now_millis() }),
        )
        .await
        .map(|_| ())
    }

    /// Takes a GUID seen before, whose outcome did not act (`seen`, as read), for another attempt: the record becomes
    /// `again` (received now), keeping when it was first received, its counts and what `seen` led to in `earlier`.
    /// `false`: another attempt took it first (or it changed since it was read); this one is a duplicate.
    pub async fn retry_delivery(&self, seen: &DeliveryRecord, again: &DeliveryRecord) -> Result<bool, StoreError> {
        let mut earlier = seen.earlier.clone();
        earlier.push(EarlierAttempt { outcome: seen.outcome.as_str().into(), detail: seen.detail.clone(), at: seen.updated_at });
        let drop = earlier.len().saturating_sub(EARLIER_KEPT);
        earlier.drain(..drop);
        let next = DeliveryRecord {
            received_at: seen.received_at,
            redeliveries: seen.redeliveries,
            retries: seen.retries + 1,
            earlier,
            ..again.clone()
        };
        let rows = self
            .run(
                "UPDATE type::record('webhook_delivery', $key) CONTENT $row WHERE retries = $seen AND outcome = $outcome RETURN AFTER",
                json!({ "key": seen.delivery.as_str(), "row": Row::from(&next), "seen": seen.retries, "outcome": seen.outcome.as_str() }),
            )
            .await?;
        Ok(rows.into_iter().next().is_some_and(|r| !r.is_empty()))
    }

    /// Records what a delivery led to; `same_push_as`: the delivery that carried the same push first.
    pub async fn finish_delivery(&self, id: &DeliveryId, outcome: Outcome, detail: Option<&str>, targets: &[TargetOutcome], same_push_as: Option<&DeliveryId>) -> Result<(), StoreError> {
        let detail_set = if detail.is_some() { ", detail = $detail" } else { "" };
        let same_set = if same_push_as.is_some() { ", same_push_as = $same" } else { "" };
        let sql = format!(
            "UPDATE type::record('webhook_delivery', $key) SET outcome = $outcome, targets = $targets, deployments = $deployments, updated_at = $now{detail_set}{same_set}"
        );
        let vars = json!({
            "key": id.as_str(),
            "outcome": outcome.as_str(),
            "detail": detail,
            "same": same_push_as.map(DeliveryId::as_str),
            "targets": target_rows(targets),
            "deployments": targets.iter().map(|t| t.deployment.to_string()).collect::<Vec<_>>(),
            "now": now_millis(),
        });
        self.run(&sql, vars).await.map(|_| ())
    }

    /// Remembers that `dep` was pushed from GitHub's repository `repo_id` (named `full_name` then).
    pub async fn bind_repo(&self, dep: &DeploymentId, repo_id: i64, full_name: &str) -> Result<(), StoreError> {
        self.run(
            "UPSERT type::record('repo_binding', $dep) CONTENT { repo_id: $rid, full_name: $name, at: $now } RETURN NONE",
            json!({ "dep": dep.as_str(), "rid": repo_id, "name": full_name, "now": now_millis() }),
        )
        .await?;
        Ok(())
    }

    /// The deployments pushed from repository `repo_id` before.
    pub async fn deployments_bound_to_repo(&self, repo_id: i64) -> Result<Vec<DeploymentId>, StoreError> {
        let rows = self.run("SELECT VALUE record::id(id) FROM repo_binding WHERE repo_id = $rid", json!({ "rid": repo_id })).await?;
        Ok(rows.into_iter().next().unwrap_or_default().into_iter().filter_map(|v| v.as_str().and_then(DeploymentId::parse)).collect())
    }

    /// The repository id each of `deps` was last pushed from, for those that have one.
    pub async fn repo_bindings(&self, deps: &[DeploymentId]) -> Result<std::collections::HashMap<DeploymentId, i64>, StoreError> {
        let mut out = std::collections::HashMap::new();
        for dep in deps {
            let rows = self.run("SELECT VALUE repo_id FROM ONLY type::record('repo_binding', $dep)", json!({ "dep": dep.as_str() })).await?;
            if let Some(rid) = rows.into_iter().next().and_then(|r| r.into_iter().next()).and_then(|v| v.as_i64()) {
                out.insert(dep.clone(), rid);
            }
        }
        Ok(out)
    }

    /// Claims a push (its identity: repository, ref, before, after) for `delivery`. `None`: claimed now
    /// (or earlier by this same delivery, whose routing was interrupted); `Some(other)`: the delivery
    /// that claimed it first. Atomic, so two deliveries of one push never both take it for new (what a repeat then
    /// does is `core::webhook::same_push`'s).
    pub async fn claim_push(&self, identity: &str, delivery: &DeliveryId) -> Result<Option<String>, StoreError> {
        let key = hex::encode(Sha256::digest(identity.as_bytes()));
        let created = self
            .run("CREATE type::record('push_claim', $key) CONTENT { delivery: $delivery, at: $now }", json!({ "key": key, "delivery": delivery.as_str(), "now": now_millis() }))
            .await;
        match created {
            Ok(_) => Ok(None),
            Err(StoreError::Taken { .. }) => {
                let rows = self.run("SELECT VALUE delivery FROM ONLY type::record('push_claim', $key)", json!({ "key": key })).await?;
                let first = rows.into_iter().next().and_then(|r| r.into_iter().next()).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
                Ok((first != delivery.as_str()).then_some(first))
            }
            Err(e) => Err(e),
        }
    }

    /// Deliveries recorded but never routed (the agent stopped in between), oldest first.
    pub async fn unrouted_deliveries(&self) -> Result<Vec<DeliveryRecord>, StoreError> {
        let rows = self.run("SELECT * FROM webhook_delivery WHERE outcome = 'received' ORDER BY received_at ASC", json!({})).await?;
        rows.into_iter().next().unwrap_or_default().into_iter().map(|v| decode::<Row>(v).and_then(DeliveryRecord::try_from)).collect()
    }

    pub async fn get_delivery(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>, StoreError> {
        let rows = self.run("SELECT * FROM type::record('webhook_delivery', $key)", json!({ "key": id.as_str() })).await?;
        rows.into_iter().next().unwrap_or_default().into_iter().map(|v| decode::<Row>(v).and_then(DeliveryRecord::try_from)).next().transpose()
    }

    /// A page of deliveries, newest first, and how many match in all.
    pub async fn list_deliveries(&self, f: &DeliveryFilter, limit: u32, offset: u32) -> Result<(Vec<DeliveryRecord>, u64), StoreError> {
        let mut conds = Vec::new();
        if f.repo.is_some() {
            conds.push("string::lowercase(repo ?? '') = $repo");
        }
        if f.deployment.is_some() {
            conds.push("$deployment IN deployments");
        }
        if f.event.is_some() {
            conds.push("event = $event");
        }
        if f.outcome.is_some() {
            conds.push("outcome = $outcome");
        }
        let cond = if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) };
        let page = format!("SELECT * FROM webhook_delivery {cond} ORDER BY received_at DESC, delivery ASC LIMIT $limit START $offset");
        let count = format!("SELECT count() AS n FROM webhook_delivery {cond} GROUP ALL");
        let vars = json!({
            "repo": f.repo.as_ref().map(|r| r.to_ascii_lowercase()),
            "deployment": f.deployment.as_ref().map(|d| d.to_string()),
            "event": f.event,
            "outcome": f.outcome.map(|o| o.as_str()),
            "limit": limit,
            "offset": offset,
        });
        let (rows, total) = self.read_page(&page, &count, vars).await?;
        let items = rows.into_iter().map(|v| decode::<Row>(v).and_then(DeliveryRecord::try_from)).collect::<Result<_, _>>()?;
        Ok((items, total))
    }
}
