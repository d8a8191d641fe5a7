//! Releases of each deployment: which commit, which step it reached, how long each step took, and
//! whether it is the active one. The deploy pipeline resumes a `deploying` release after a crash.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{decode, Store, StoreError};
use crate::core::deployment::DeploymentId;
use crate::core::release::{DeployStep, ReleaseId};

/// What started a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The first deploy after provisioning.
    Deploy,
    /// A GitHub push.
    Push,
    /// A redeploy asked through the HTTP API (or the dashboard).
    Api,
    Discord,
    Schedule,
    Cli,
    Rollback,
    /// A redeploy asked by the agent itself, or recorded before triggers named their door.
    Redeploy,
}

impl Trigger {
    const ALL: [Trigger; 8] = [Self::Deploy, Self::Push, Self::Api, Self::Discord, Self::Schedule, Self::Cli, Self::Rollback, Self::Redeploy];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Deploy => "deploy",
            Trigger::Push => "push",
            Trigger::Api => "api",
            Trigger::Discord => "discord",
            Trigger::Schedule => "schedule",
            Trigger::Cli => "cli",
            Trigger::Rollback => "rollback",
            Trigger::Redeploy => "redeploy",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// A redeploy's trigger, from the door it was asked through.
    pub fn redeploy_via(door: crate::core::command::Door) -> Self {
        use crate::core::command::Door;
        match door {
            Door::Api => Trigger::Api,
            Door::Webhook => Trigger::Push,
            Door::Discord => Trigger::Discord,
            Door::Schedule => Trigger::Schedule,
            Door::Cli => Trigger::Cli,
            Door::System => Trigger::Redeploy,
        }
    }

    /// Any deploy after the first (what a notice calls "redeployed").
    pub fn is_redeploy(self) -> bool {
        !matches!(self, Trigger::Deploy | Trigger::Rollback)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseStatus {
    Deploying,
    Active,
    Failed,
    /// Was active; another release replaced it (it can be rolled back to).
    Superseded,
}

impl ReleaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploying => "deploying",
            Self::Active => "active",
            Self::Failed => "failed",
            Self::Superseded => "superseded",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Deploying, Self::Active, Self::Failed, Self::Superseded].into_iter().find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub deployment: DeploymentId,
    pub id: ReleaseId,
    pub commit: String,
    pub status: ReleaseStatus,
    /// The step to run next (while deploying) or the one it ended at.
    pub step: DeployStep,
    pub trigger: Trigger,
    /// Milliseconds spent in each finished step, in order.
    pub timings: Vec<(String, u64)>,
    pub error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Row {
    deployment: String,
    release_id: String,
    commit: String,
    status: String,
    step: String,
    trigger: String,
    timings: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    finished_at: Option<i64>,
}

impl From<&Release> for Row {
    fn from(r: &Release) -> Self {
        // Keys carry their order (`0_boot`) so the FLEXIBLE object keeps the steps in sequence.
        let timings = r.timings.iter().enumerate().map(|(i, (k, v))| (format!("{i}_{k}"), json!(v))).collect();
        Row {
            deployment: r.deployment.to_string(),
            release_id: r.id.to_string(),
            commit: r.commit.clone(),
            status: r.status.as_str().into(),
            step: r.step.as_str().into(),
            trigger: r.trigger.as_str().into(),
            timings,
            error: r.error.clone(),
            created_at: r.created_at,
            finished_at: r.finished_at,
        }
    }
}

impl TryFrom<Row> for Release {
    type Error = StoreError;

    fn try_from(r: Row) -> Result<Self, StoreError> {
        let bad = |what: &str| StoreError::Corrupt(format!("release {}: bad {what}", r.release_id));
        let mut timings: Vec<(usize, String, u64)> = r
            .timings
            .iter()
            .filter_map(|(k, v)| {
                let (i, name) = k.split_once('_')?;
                Some((i.parse().ok()?, name.to_string(), v.as_u64()?))
            })
            .collect();
        timings.sort();
        Ok(Release {
            deployment: DeploymentId::parse(&r.deployment).ok_or_else(|| bad("deployment"))?,
            id: ReleaseId::parse(&r.release_id).ok_or_else(|| bad("id"))?,
            commit: r.commit,
            status: ReleaseStatus::parse(&r.status).ok_or_else(|| bad("status"))?,
            step: DeployStep::parse(&r.step).ok_or_else(|| bad("step"))?,
            trigger: Trigger::parse(&r.trigger).ok_or_else(|| bad("trigger"))?,
            timings: timings.into_iter().map(|(_, n, v)| (n, v)).collect(),
            error: r.error,
            created_at: r.created_at,
            finished_at: r.finished_at,
        })
    }
}

fn key(dep: &DeploymentId, id: &ReleaseId) -> String {
    format!("{dep}_{id}")
}

impl Store {
    /// Writes a release (insert or full update).
    pub async fn save_release(&self, r: &Release) -> Result<(), StoreError> {
        self.run("UPSERT type::record('release', $key) CONTENT $row", json!({ "key": key(&r.deployment, &r.id), "row": Row::from(r) })).await?;
        Ok(())
    }

    /// Marks `active` as the active release and every other active one of the deployment superseded, in one transaction.
    pub async fn activate_release(&self, r: &Release) -> Result<(), StoreError> {
        let sql = "BEGIN;
            UPDATE release SET status = 'superseded' WHERE deployment = $dep AND status = 'active';
            UPSERT type::record('release', $key) CONTENT $row;
            COMMIT;";
        self.run(sql, json!({ "dep": r.deployment.as_str(), "key": key(&r.deployment, &r.id), "row": Row::from(r) })).await?;
        Ok(())
    }

    /// A deployment's releases, newest first.
    pub async fn releases(&self, dep: &DeploymentId, limit: u32) -> Result<Vec<Release>, StoreError> {
        let rows = self
            .run("SELECT * OMIT id FROM release WHERE deployment = $dep ORDER BY created_at DESC LIMIT $limit", json!({ "dep": dep.as_str(), "limit": limit }))
            .await?;
        rows.into_iter().next().unwrap_or_default().into_iter().map(|v| decode::<Row>(v).and_then(Release::try_from)).collect()
    }

    pub async fn release(&self, dep: &DeploymentId, id: &ReleaseId) -> Result<Option<Release>, StoreError> {
        let rows = self.run("SELECT * OMIT id FROM ONLY type::record('release', $key)", json!({ "key": key(dep, id) })).await?;
        match rows.into_iter().next().and_then(|r| r.into_iter().next()) {
            Some(v) if !v.is_null() => Ok(Some(Release::try_from(decode::<Row>(v)?)?)),
            _ => Ok(None),
        }
    }
}
