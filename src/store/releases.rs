//! Releases of each deployment: which commit, which step it reached, how long each step took, and
//! whether it is the active one. The deploy pipeline resumes a `deploying` release after a crash.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::deployments::DeploymentWrite;
use super::leases::{Lease, CHECK_LEASE};
use super::{decode, Store, StoreError};
use crate::core::deployment::{Deployment, DeploymentId};
use crate::core::status::Status;
use crate::core::release::{DeployStep, ReleaseId};
pub use crate::core::release::{Release, ReleaseStatus, Trigger};

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

/// A release write's variables, named apart from a deployment write's (`DeploymentWrite::vars`) so
/// both can run in one transaction.
fn release_vars(r: &Release) -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(vars) = json!({ "rel_dep": r.deployment.as_str(), "rel_key": key(&r.deployment, &r.id), "rel_row": Row::from(r), "rel_shard": super::deployments::tally_shard() }) else {
        unreachable!("json! of an object literal is an object")
    };
    vars
}

/// How many of the newest deploys that went live the duration quantiles are taken over.
pub const RECENT_DEPLOYS: u32 = 1000;

/// Whether the release was already finished before this write (`$was_finished`).
const WAS_FINISHED: &str = "LET $was_finished = type::record('release', $rel_key).finished_at != NONE;";

/// Counts a release in `release_tally:[outcome, shard]` by the write that finishes it, once: `ok`
/// (with its duration added to `sum_ms`) when it went live, `failed` when it failed.
const COUNT_FINISH: &str = "IF !$was_finished AND $rel_row.finished_at != NONE AND $rel_row.status IN ['active', 'superseded', 'failed'] {
    LET $outcome = IF $rel_row.status = 'failed' { 'failed' } ELSE { 'ok' };
    UPSERT type::record('release_tally', [$outcome, $rel_shard]) SET n += 1, sum_ms += $rel_row.finished_at - $rel_row.created_at RETURN NONE;
};";

/// Activates `$rel_row`: every other active release of the deployment superseded, this one written and counted.
const ACTIVATE: &str = "UPDATE release SET status = 'superseded' WHERE deployment = $rel_dep AND status = 'active' RETURN NONE;
    UPSERT type::record('release', $rel_key) CONTENT $rel_row RETURN NONE;";

/// The newest `RECENT_DEPLOYS` finished releases of each status that went live (`finished_at` and the
/// duration `ms`), each read newest first from the `(status, finished_at)` index `release_done`.
fn recent_durations_sql(explain: &str) -> String {
    ["active", "superseded"]
        .map(|status| {
            format!("SELECT finished_at, finished_at - created_at AS ms FROM release WHERE status = '{status}' ORDER BY finished_at DESC LIMIT {RECENT_DEPLOYS} {explain};\n")
        })
        .concat()
}

/// Deploy figures behind `/status` and `/metrics` (see `Store::release_stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseStats {
    /// Deploys that went live, ever.
    pub succeeded: u64,
    /// Deploys that failed, ever.
    pub failed: u64,
    /// The durations of every deploy that went live, summed (milliseconds).
    pub succeeded_ms_sum: i64,
    /// The durations of the newest `RECENT_DEPLOYS` deploys that went live, sorted ascending (milliseconds).
    pub recent_durations_ms: Vec<i64>,
}

impl Store {
    /// Writes a release (insert or full update); the write that finishes it also counts it in the
    /// release tallies, in the same transaction.
    pub async fn save_release(&self, r: &Release) -> Result<(), StoreError> {
        let sql = format!("{WAS_FINISHED}\nUPSERT type::record('release', $rel_key) CONTENT $rel_row RETURN NONE;\n{COUNT_FINISH}");
        self.transaction(&sql, serde_json::Value::Object(release_vars(r))).await?;
        Ok(())
    }

    /// Marks `r` as the active release and every other active one of the deployment superseded, in one
    /// transaction. A deploy goes live through `go_live`, which saves the deployment with it.
    pub async fn activate_release(&self, r: &Release) -> Result<(), StoreError> {
        let sql = format!("{WAS_FINISHED}\n{ACTIVATE}\n{COUNT_FINISH}");
        self.transaction(&sql, serde_json::Value::Object(release_vars(r))).await?;
        Ok(())
    }

    /// A release goes live: `r` activated (every other active release of the deployment superseded) and the deployment `d` saved (as
    /// `save_deployment_leased`, from `previous`, while `lease` is held) in one transaction. Whoever
    /// reads the release active reads the deployment at its commit and URL, and a crash between the
    /// two cannot leave an active release under a deployment that never went live.
    pub async fn go_live(&self, r: &Release, d: &Deployment, previous: Status, message: &str, lease: &Lease) -> Result<Deployment, StoreError> {
        let write = DeploymentWrite { d, previous, message };
        let sql = format!("{CHECK_LEASE}\n{WAS_FINISHED}\n{ACTIVATE}\n{COUNT_FINISH}\n{}", write.statements());
        let mut vars = write.vars();
        vars.extend(release_vars(r));
        vars.insert("lease_dep".into(), json!(d.id.as_str()));
        vars.insert("lease_token".into(), json!(lease.token.as_str()));
        let result = self.transaction(&sql, serde_json::Value::Object(vars)).await;
        self.written(&d.id);
        write.outcome(result)
    }

    /// Deploy figures that cost the same whatever the history holds: every finished deploy's outcome
    /// and total duration from the tallies, and the durations of the newest `RECENT_DEPLOYS` that went
    /// live (for quantiles), each status walked backward on its `(status, finished_at)` index.
    pub async fn release_stats(&self) -> Result<ReleaseStats, StoreError> {
        let last = super::deployments::TALLY_SHARDS - 1;
        let sql = format!(
            "SELECT math::sum(n) AS n, math::sum(sum_ms) AS sum_ms FROM release_tally:['ok', 0]..=['ok', {last}] GROUP ALL;
             SELECT math::sum(n) AS n FROM release_tally:['failed', 0]..=['failed', {last}] GROUP ALL;
             {recent}",
            recent = recent_durations_sql("")
        );
        let mut rows = self.run(&sql, json!({})).await?.into_iter();
        let field = |rows: Option<Vec<serde_json::Value>>, f: &str| rows.unwrap_or_default().first().and_then(|v| v.get(f)).and_then(|n| n.as_i64()).unwrap_or(0);
        let ok = rows.next();
        let (succeeded, sum_ms) = (field(ok.clone(), "n"), field(ok, "sum_ms"));
        let failed = field(rows.next(), "n");
        // The newest of each status, merged: the newest `RECENT_DEPLOYS` of both.
        let mut recent: Vec<(i64, i64)> = rows
            .flatten()
            .filter_map(|v| Some((v.get("finished_at")?.as_i64()?, v.get("ms")?.as_i64()?)))
            .collect();
        recent.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        recent.truncate(RECENT_DEPLOYS as usize);
        let mut recent_durations_ms: Vec<i64> = recent.into_iter().map(|(_, ms)| ms).collect();
        recent_durations_ms.sort_unstable();
        Ok(ReleaseStats { succeeded: succeeded.max(0) as u64, failed: failed.max(0) as u64, succeeded_ms_sum: sum_ms, recent_durations_ms })
    }

    /// How the database plans the duration walks of `release_stats` (SurrealDB's `EXPLAIN`, one plan per
    /// status): the tests hold that each walks `release_done` backward and stops.
    #[doc(hidden)]
    pub async fn release_stats_plan(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        let rows = self.run(&recent_durations_sql("EXPLAIN"), json!({})).await?;
        Ok(rows.into_iter().map(serde_json::Value::Array).collect())
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

#[cfg(test)]
mod tests {
    use super::Trigger;

    /// Every trigger any version stored reads back as itself (before triggers named their door, `deploy`,
    /// `redeploy` and `rollback` were written); unknown text is refused, never read as a first deploy.
    #[test]
    fn stored_triggers_parse_and_unknown_text_is_refused() {
        for t in Trigger::ALL {
            assert_eq!(Trigger::parse(t.as_str()), Some(t));
        }
        for older in ["deploy", "redeploy", "rollback"] {
            assert!(Trigger::parse(older).is_some(), "{older}");
        }
        for unknown in ["", "webhook", "Deploy", "deploy "] {
            assert_eq!(Trigger::parse(unknown), None, "{unknown:?}");
        }
    }
}
