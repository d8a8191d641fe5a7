//! Schedules, their run history, per-occurrence claims, and deployment expiry times.
//!
//! A run record is also the claim on its occurrence: `schedule_run:<schedule>_<occurrence-ms>` is created
//! in one transaction that checks the schedule has not handled that occurrence and has no live run, and
//! advances the schedule's `last_occurrence`. With several agents on one database, exactly one creates it.
//! A running record carries a token and an expiry (renewed while it runs), like a work lease.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{decode, Store, StoreError};
use crate::core::deployment::DeploymentId;
use crate::core::schedule::{RawSchedule, Schedule, ScheduleSpec};
pub use crate::core::schedule::{RunOutcome, RunRecord};

/// A claimed occurrence: present the token when renewing or finishing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunClaim {
    pub key: String,
    pub token: String,
}

/// What claiming an occurrence led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// Ours to run (recorded as `running`).
    Run(RunClaim),
    /// Recorded with the outcome asked for (a skip), nothing to run.
    Recorded,
    /// A run of this schedule is still going: the occurrence was recorded as skipped.
    Busy,
    /// Another agent (or an earlier pass) handled this occurrence, or the schedule is gone.
    Handled,
}

#[derive(Debug, Serialize, Deserialize)]
struct Row {
    #[serde(default, skip_serializing)]
    key: String,
    cron: String,
    timezone: String,
    action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keep: Option<i64>,
    target: String,
    enabled: bool,
    catch_up: bool,
    created_by: String,
    created_at: i64,
    updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_occurrence: Option<i64>,
    #[serde(default)]
    target_destroyed: bool,
}

impl Row {
    fn from_schedule(s: &Schedule, created_by: &str) -> Self {
        Row {
            key: String::new(),
            cron: s.spec.cron.as_str().to_string(),
            timezone: s.spec.zone.name().to_string(),
            action: s.spec.action.as_str().to_string(),
            keep: s.spec.action.keep().map(i64::from),
            target: s.spec.target.as_str().to_string(),
            enabled: s.spec.enabled,
            catch_up: s.spec.catch_up,
            created_by: created_by.to_string(),
            created_at: s.created_at,
            updated_at: s.updated_at,
            last_occurrence: s.last_occurrence,
            target_destroyed: s.target_destroyed,
        }
    }

    fn into_schedule(self) -> Result<(Schedule, String), StoreError> {
        let raw = RawSchedule {
            cron: Some(self.cron),
            timezone: Some(self.timezone),
            action: Some(self.action),
            keep: self.keep,
            target: Some(self.target),
            enabled: Some(self.enabled),
            catch_up: Some(self.catch_up),
        };
        let spec = ScheduleSpec::parse(raw).map_err(|e| StoreError::Corrupt(format!("schedule {}: {e}", self.key)))?;
        Ok((Schedule { id: self.key, spec, created_at: self.created_at, updated_at: self.updated_at, last_occurrence: self.last_occurrence, target_destroyed: self.target_destroyed }, self.created_by))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct RunRow {
    schedule: String,
    occurrence: i64,
    agent: String,
    #[serde(default)]
    token: String,
    started_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ended_at: Option<i64>,
    expires_at: i64,
    outcome: String,
    message: String,
}

impl TryFrom<RunRow> for RunRecord {
    type Error = StoreError;
    fn try_from(r: RunRow) -> Result<Self, StoreError> {
        let outcome = RunOutcome::parse(&r.outcome).ok_or_else(|| StoreError::Corrupt(format!("run outcome {:?}", r.outcome)))?;
        Ok(RunRecord { schedule: r.schedule, occurrence: r.occurrence, agent: r.agent, started_at: r.started_at, ended_at: r.ended_at, outcome, message: r.message })
    }
}

const SELECT: &str = "SELECT *, record::id(id) AS key FROM";

fn schedules(rows: Vec<serde_json::Value>) -> Result<Vec<(Schedule, String)>, StoreError> {
    rows.into_iter().map(|v| decode::<Row>(v).and_then(Row::into_schedule)).collect()
}

impl Store {
    pub async fn create_schedule(&self, s: &Schedule, created_by: &str) -> Result<(), StoreError> {
        self.run("CREATE type::record('schedule', $key) CONTENT $row", json!({ "key": s.id, "row": Row::from_schedule(s, created_by) })).await.map(|_| ())
    }

    /// A schedule and who created it.
    pub async fn get_schedule(&self, id: &str) -> Result<Option<(Schedule, String)>, StoreError> {
        let rows = self.run(&format!("{SELECT} type::record('schedule', $key)"), json!({ "key": id })).await?;
        Ok(schedules(rows.into_iter().next().unwrap_or_default())?.into_iter().next())
    }

    /// Every schedule, oldest first (the scheduler's view).
    pub async fn all_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        let rows = self.run(&format!("{SELECT} schedule ORDER BY created_at ASC"), json!({})).await?;
        Ok(schedules(rows.into_iter().next().unwrap_or_default())?.into_iter().map(|(s, _)| s).collect())
    }

    /// A page of schedules, oldest first, and how many there are.
    pub async fn list_schedules(&self, limit: u32, offset: u32) -> Result<(Vec<(Schedule, String)>, u64), StoreError> {
        let page = format!("{SELECT} schedule ORDER BY created_at ASC LIMIT $limit START $offset");
        let (rows, total) = self.read_page(&page, "SELECT count() AS n FROM schedule GROUP ALL", json!({ "limit": limit, "offset": offset })).await?;
        Ok((schedules(rows)?, total))
    }

    /// Replaces a schedule's settings (its `updated_at` says from when it counts); `false` when it is gone.
    pub async fn replace_schedule(&self, s: &Schedule, created_by: &str) -> Result<bool, StoreError> {
        let rows = self
            .run(
                "UPDATE type::record('schedule', $key) CONTENT $row RETURN VALUE record::id(id)",
                json!({ "key": s.id, "row": Row::from_schedule(s, created_by) }),
            )
            .await?;
        Ok(rows.into_iter().next().is_some_and(|r| !r.is_empty()))
    }

    /// Disables every schedule whose target is `dep` and marks it `target_destroyed` (kept, with its history,
    /// for the record); answers the ids of those not marked before.
    pub async fn disable_schedules_of(&self, dep: &DeploymentId) -> Result<Vec<String>, StoreError> {
        let rows = self
            .run(
                "UPDATE schedule SET enabled = false, target_destroyed = true WHERE target = $dep AND target_destroyed = false RETURN VALUE record::id(id)",
                json!({ "dep": dep.as_str() }),
            )
            .await?;
        Ok(rows.into_iter().next().unwrap_or_default().into_iter().filter_map(|v| v.as_str().map(String::from)).collect())
    }

    /// Deletes a schedule and its history; `false` when there was none.
    pub async fn delete_schedule(&self, id: &str) -> Result<bool, StoreError> {
        let rows = self
            .transaction(
                "DELETE schedule_run WHERE schedule = $key;
                 DELETE type::record('schedule', $key) RETURN BEFORE;",
                json!({ "key": id }),
            )
            .await?;
        Ok(rows.iter().any(|r| r.iter().any(|v| v.get("cron").is_some())))
    }

    /// Claims `occurrence` of `schedule` for `agent`. `want` is `Running` (a run follows; refused as
    /// `Busy` — and recorded as skipped — while another run of this schedule is live) or `Skipped`.
    /// A run left `running` by an agent that stopped (its expiry passed) is closed as failed first.
    pub async fn claim_occurrence(&self, schedule: &str, occurrence: i64, agent: &str, now: i64, ttl_ms: i64, want: RunOutcome, message: &str) -> Result<Claimed, StoreError> {
        let key = format!("{schedule}_{occurrence}");
        let token = uuid::Uuid::new_v4().to_string();
        let sql = "LET $s = (SELECT * FROM ONLY type::record('schedule', $sid));
            IF $s = NONE { THROW 'occurrence handled' };
            IF ($s.last_occurrence ?? -1) >= $occ { THROW 'occurrence handled' };
            UPDATE schedule_run SET outcome = 'failed', ended_at = $now, message = 'the agent running it stopped before it finished'
                WHERE schedule = $sid AND outcome = 'running' AND expires_at <= $now;
            LET $busy = array::len((SELECT VALUE occurrence FROM schedule_run WHERE schedule = $sid AND outcome = 'running')) > 0;
            LET $outcome = IF $want = 'running' AND $busy { 'skipped' } ELSE { $want };
            LET $msg = IF $want = 'running' AND $busy { 'skipped: the previous run of this schedule was still running' } ELSE { $message };
            CREATE type::record('schedule_run', $key) CONTENT {
                schedule: $sid, occurrence: $occ, agent: $agent, token: $run_token, started_at: $now,
                expires_at: $exp, outcome: $outcome, message: $msg
            };
            IF $outcome != 'running' { UPDATE type::record('schedule_run', $key) SET ended_at = $now };
            UPDATE type::record('schedule', $sid) SET last_occurrence = $occ;";
        let vars = json!({
            "sid": schedule, "occ": occurrence, "key": key, "agent": agent, "run_token": token, "now": now,
            "exp": now + ttl_ms, "want": want.as_str(), "message": message,
        });
        match self.transaction(sql, vars).await {
            Ok(_) => {}
            Err(StoreError::Unavailable(m)) if m.contains("occurrence handled") => return Ok(Claimed::Handled),
            Err(StoreError::Taken { .. }) => return Ok(Claimed::Handled),
            Err(StoreError::Unavailable(m)) if m.contains("schedule_run") && m.contains("exists") => return Ok(Claimed::Handled),
            Err(e) => return Err(e),
        }
        let rows = self.run("SELECT VALUE outcome FROM ONLY type::record('schedule_run', $key)", json!({ "key": key })).await?;
        let outcome = rows.into_iter().next().and_then(|r| r.into_iter().next()).and_then(|v| v.as_str().and_then(RunOutcome::parse));
        Ok(match outcome {
            Some(RunOutcome::Running) => Claimed::Run(RunClaim { key, token }),
            Some(RunOutcome::Skipped) if want == RunOutcome::Running => Claimed::Busy,
            _ => Claimed::Recorded,
        })
    }

    /// Extends a running claim; `Stale` when it was closed meanwhile (taken for abandoned).
    pub async fn renew_run(&self, claim: &RunClaim, expires_at: i64) -> Result<(), StoreError> {
        let rows = self
            .run(
                "UPDATE type::record('schedule_run', $key) SET expires_at = $exp WHERE token = $run_token AND outcome = 'running' RETURN VALUE record::id(id)",
                json!({ "key": claim.key, "run_token": claim.token, "exp": expires_at }),
            )
            .await?;
        if rows.into_iter().next().is_some_and(|r| !r.is_empty()) {
            Ok(())
        } else {
            Err(StoreError::Stale)
        }
    }

    /// Records how a claimed run ended.
    pub async fn finish_run(&self, claim: &RunClaim, outcome: RunOutcome, message: &str, now: i64) -> Result<(), StoreError> {
        self.run(
            "UPDATE type::record('schedule_run', $key) SET outcome = $outcome, message = $message, ended_at = $now WHERE token = $run_token",
            json!({ "key": claim.key, "run_token": claim.token, "outcome": outcome.as_str(), "message": message, "now": now }),
        )
        .await
        .map(|_| ())
    }

    /// A page of a schedule's runs, newest occurrence first, and how many there are.
    pub async fn schedule_runs(&self, schedule: &str, limit: u32, offset: u32) -> Result<(Vec<RunRecord>, u64), StoreError> {
        let (rows, total) = self
            .read_page(
                "SELECT * FROM schedule_run WHERE schedule = $sid ORDER BY occurrence DESC LIMIT $limit START $offset",
                "SELECT count() AS n FROM schedule_run WHERE schedule = $sid GROUP ALL",
                json!({ "sid": schedule, "limit": limit, "offset": offset }),
            )
            .await?;
        let items = rows.into_iter().map(|v| decode::<RunRow>(v).and_then(RunRecord::try_from)).collect::<Result<_, _>>()?;
        Ok((items, total))
    }

    /// Sets (or moves) the time a deployment is destroyed at.
    pub async fn set_expiry(&self, dep: &DeploymentId, expires_at: i64, set_by: &str, now: i64) -> Result<(), StoreError> {
        self.run(
            "UPSERT type::record('deployment_expiry', $dep) CONTENT { deployment: $dep, expires_at: $at, set_by: $by, set_at: $now }",
            json!({ "dep": dep.as_str(), "at": expires_at, "by": set_by, "now": now }),
        )
        .await
        .map(|_| ())
    }

    pub async fn get_expiry(&self, dep: &DeploymentId) -> Result<Option<i64>, StoreError> {
        let rows = self.run("SELECT VALUE expires_at FROM ONLY type::record('deployment_expiry', $dep)", json!({ "dep": dep.as_str() })).await?;
        Ok(rows.into_iter().next().and_then(|r| r.into_iter().next()).and_then(|v| v.as_i64()))
    }

    /// Removes an expiry; `false` when there was none.
    pub async fn clear_expiry(&self, dep: &DeploymentId) -> Result<bool, StoreError> {
        let rows = self.run("DELETE type::record('deployment_expiry', $dep) RETURN BEFORE", json!({ "dep": dep.as_str() })).await?;
        Ok(rows.into_iter().next().is_some_and(|r| !r.is_empty()))
    }

    /// The earliest expiry set, if any.
    pub async fn next_expiry(&self) -> Result<Option<i64>, StoreError> {
        let rows = self.run("SELECT VALUE expires_at FROM deployment_expiry ORDER BY expires_at ASC LIMIT 1", json!({})).await?;
        Ok(rows.into_iter().next().and_then(|r| r.into_iter().next()).and_then(|v| v.as_i64()))
    }

    /// Takes every expiry due at `now` (each deleted atomically: with several agents, one takes it).
    pub async fn take_expired(&self, now: i64) -> Result<Vec<DeploymentId>, StoreError> {
        let rows = self.run("DELETE deployment_expiry WHERE expires_at <= $now RETURN BEFORE", json!({ "now": now })).await?;
        Ok(rows
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.get("deployment").and_then(|d| d.as_str()).and_then(DeploymentId::parse))
            .collect())
    }
}
