//! Pull-request previews: one record per parent deployment and pull request number (`<parent>_<number>`), naming the
//! preview deployment made for it, the head commit it is to run, the pull request comment that shows it, and why the
//! preview ended once it did (the comment says so).

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{decode, now_millis, Store, StoreError};
use crate::core::deployment::DeploymentId;

/// A preview as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewRecord {
    pub parent: DeploymentId,
    pub number: u64,
    /// `owner/repo` of the base repository (where the comment goes).
    pub repo: String,
    /// The preview deployment (the latest one made for this pull request).
    pub deployment: DeploymentId,
    /// The head commit the preview is to run (its first deploy deploys this one).
    pub head_sha: String,
    /// GitHub's id of the comment that shows the preview, once posted.
    pub comment_id: Option<u64>,
    /// Why the preview was destroyed, in words (`the pull request was merged`, …), once it was.
    pub ended: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Serialize, Deserialize)]
struct Row {
    parent: String,
    number: i64,
    repo: String,
    deployment: String,
    head_sha: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    comment_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ended: Option<String>,
    created_at: i64,
    updated_at: i64,
}

fn key(parent: &DeploymentId, number: u64) -> String {
    format!("{parent}_{number}")
}

impl TryFrom<Row> for PreviewRecord {
    type Error = StoreError;

    fn try_from(r: Row) -> Result<Self, StoreError> {
        let bad = |what: &str| StoreError::Corrupt(format!("preview {}_{}: bad {what}", r.parent, r.number));
        Ok(PreviewRecord {
            parent: DeploymentId::parse(&r.parent).ok_or_else(|| bad("parent"))?,
            number: u64::try_from(r.number).map_err(|_| bad("number"))?,
            deployment: DeploymentId::parse(&r.deployment).ok_or_else(|| bad("deployment"))?,
            comment_id: r.comment_id.map(|c| u64::try_from(c).map_err(|_| bad("comment_id"))).transpose()?,
            repo: r.repo,
            head_sha: r.head_sha,
            ended: r.ended,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

fn one(rows: Vec<Vec<serde_json::Value>>) -> Result<Option<PreviewRecord>, StoreError> {
    match rows.into_iter().next().and_then(|r| r.into_iter().next()) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => decode::<Row>(v)?.try_into().map(Some),
    }
}

const FIELDS: &str = "parent, number, repo, deployment, head_sha, comment_id, ended, created_at, updated_at";

impl Store {
    /// Records the preview `p` (a new one replaces the record of an earlier preview of the same pull request).
    pub async fn save_preview(&self, p: &PreviewRecord) -> Result<(), StoreError> {
        let row = Row {
            parent: p.parent.to_string(),
            number: i64::try_from(p.number).map_err(|_| StoreError::Corrupt(format!("pull request number {} too large", p.number)))?,
            repo: p.repo.clone(),
            deployment: p.deployment.to_string(),
            head_sha: p.head_sha.clone(),
            comment_id: p.comment_id.and_then(|c| i64::try_from(c).ok()),
            ended: p.ended.clone(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        };
        self.run("UPSERT type::record('preview', $key) CONTENT $row RETURN NONE", json!({ "key": key(&p.parent, p.number), "row": row })).await?;
        Ok(())
    }

    /// The preview of pull request `number` made for `parent`, if any was.
    pub async fn get_preview(&self, parent: &DeploymentId, number: u64) -> Result<Option<PreviewRecord>, StoreError> {
        let rows = self.run(&format!("SELECT {FIELDS} FROM ONLY type::record('preview', $key)"), json!({ "key": key(parent, number) })).await?;
        one(rows)
    }

    /// The preview record whose deployment is `dep`, when `dep` is a preview.
    pub async fn preview_of(&self, dep: &DeploymentId) -> Result<Option<PreviewRecord>, StoreError> {
        let rows = self.run(&format!("SELECT {FIELDS} FROM preview WHERE deployment = $dep LIMIT 1"), json!({ "dep": dep.as_str() })).await?;
        one(rows)
    }

    /// Every preview made for `parent` (one record per pull request; its deployment may be destroyed already).
    pub async fn previews_of_parent(&self, parent: &DeploymentId) -> Result<Vec<PreviewRecord>, StoreError> {
        let rows = self.run(&format!("SELECT {FIELDS} FROM preview WHERE parent = $parent"), json!({ "parent": parent.as_str() })).await?;
        rows.into_iter().next().unwrap_or_default().into_iter().map(|v| PreviewRecord::try_from(decode::<Row>(v)?)).collect()
    }

    /// Records why the preview `dep` ended, unless a reason is recorded already (the first one to act says why).
    pub async fn set_preview_ended(&self, dep: &DeploymentId, why: &str) -> Result<(), StoreError> {
        self.run(
            "UPDATE preview SET ended = $why, updated_at = $now WHERE deployment = $dep AND ended = NONE RETURN NONE",
            json!({ "dep": dep.as_str(), "why": why, "now": now_millis() }),
        )
        .await?;
        Ok(())
    }

    /// A new head commit for the preview of `parent`'s pull request `number`.
    pub async fn set_preview_head(&self, parent: &DeploymentId, number: u64, head_sha: &str) -> Result<(), StoreError> {
        self.run(
            "UPDATE type::record('preview', $key) SET head_sha = $sha, updated_at = $now RETURN NONE",
            json!({ "key": key(parent, number), "sha": head_sha, "now": now_millis() }),
        )
        .await?;
        Ok(())
    }

    /// The comment that shows the preview `dep`.
    pub async fn set_preview_comment(&self, dep: &DeploymentId, comment_id: u64) -> Result<(), StoreError> {
        let id = i64::try_from(comment_id).map_err(|_| StoreError::Corrupt(format!("comment id {comment_id} too large")))?;
        self.run("UPDATE preview SET comment_id = $id, updated_at = $now WHERE deployment = $dep RETURN NONE", json!({ "dep": dep.as_str(), "id": id, "now": now_millis() })).await?;
        Ok(())
    }
}
