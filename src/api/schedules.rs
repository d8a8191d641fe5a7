//! `/schedules` (cron schedules: CRUD, next run times, run history) and `/deployments/{id}/expiry` (TTL).

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use super::error::{ApiError, ErrorBody};
use super::paging::Paging;
use super::payload::{FieldReader, JsonObject};
use super::security::TokenAuth;
use super::wire::rfc3339;
use super::{ApiState, API_PREFIX};
use crate::auth::Scope;
use crate::core::command::Actor;
use crate::core::schedule::{RawSchedule, Schedule, ScheduleSpec};
use crate::engine::schedules::Scheduler;
use crate::engine::EngineError;
use crate::core::schedule::RunRecord;

/// The longest `ttl_seconds`: a year.
pub const MAX_TTL_SECS: i64 = 31_536_000;

#[derive(Tags)]
enum ApiTags {
    /// Cron schedules (redeploy, snapshot with retention, backup, stop, start, destroy, reconcile, drift) and expiry.
    Schedules,
}

pub struct SchedulesApi {
    pub state: ApiState,
}

/// A schedule to create or (with `PUT`) the full replacement of one.
#[derive(Debug, Object)]
pub struct ScheduleRequest {
    /// A cron expression: 5 fields read as cron(8) reads them (minute hour day-of-month month day-of-week, Sunday = 0
    /// or 7; with both day fields restricted a day runs when either matches: `0 0 13 * 5` is every 13th and every
    /// Friday), or 6/7 fields with seconds first (and a year last; both day fields must match), or `@daily`-style
    /// shorthands. One with no run after now is refused.
    pub cron: String,
    /// An IANA time zone the expression is read in (default `UTC`), e.g. `Europe/Berlin`.
    pub timezone: Option<String>,
    /// `redeploy`, `snapshot`, `backup`, `stop`, `start`, `destroy` (admin scope), `reconcile` or `drift`.
    pub action: super::wire::ScheduleActionWire,
    /// `snapshot` only: how many `pvedeploy-*` snapshots to keep (1–100); older ones are deleted.
    pub keep: Option<i64>,
    /// `all`, or a deployment's id or name (stored as its id). `reconcile` and `drift` take `all`; `destroy` one deployment.
    pub target: String,
    /// Default true.
    pub enabled: Option<bool>,
    /// A run missed while no agent was up runs once at the next start when true; is skipped (and recorded so) when false (default).
    pub catch_up: Option<bool>,
}

/// One upcoming run.
#[derive(Debug, Object)]
pub struct NextRun {
    /// RFC 3339 in UTC.
    pub utc: String,
    /// The same instant, RFC 3339 with the schedule's time zone offset.
    pub local: String,
}

/// A schedule as recorded, with its next 5 run times.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ScheduleView {
    pub id: String,
    pub cron: String,
    pub timezone: String,
    pub action: super::wire::ScheduleActionWire,
    pub keep: Option<u32>,
    /// `all` or a deployment id.
    pub target: String,
    pub enabled: bool,
    /// Its target deployment was destroyed: the schedule is kept for the record, disabled, and never runs again
    /// (a `PUT` naming a live deployment gives it a new target).
    pub target_destroyed: bool,
    pub catch_up: bool,
    /// The token name (and door) that created it.
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    /// The last run time handled (run or skipped), RFC 3339 UTC.
    pub last_occurrence: Option<String>,
    /// The next 5 run times (empty when disabled or its target is destroyed).
    pub next_runs: Vec<NextRun>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SchedulePage {
    pub items: Vec<ScheduleView>,
    pub total: u64,
    pub limit: u32,
    pub offset: u32,
    pub next_offset: Option<u32>,
}

/// One occurrence of a schedule: run, failed, or skipped.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct RunView {
    /// The scheduled time this run is for (RFC 3339 UTC).
    pub occurrence: String,
    /// `running`, `succeeded`, `failed` or `skipped`.
    pub outcome: String,
    pub message: String,
    /// The agent that claimed it.
    pub agent: String,
    pub started_at: String,
    pub ended_at: Option<String>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct RunPage {
    pub items: Vec<RunView>,
    pub total: u64,
    pub limit: u32,
    pub offset: u32,
    pub next_offset: Option<u32>,
}

/// When a deployment is destroyed: exactly one of `expires_at` or `ttl_seconds`.
#[derive(Debug, Object)]
pub struct ExpiryRequest {
    /// RFC 3339, in the future.
    pub expires_at: Option<String>,
    /// Seconds from now (1 – 31 536 000).
    pub ttl_seconds: Option<i64>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ExpiryView {
    pub deployment_id: String,
    /// RFC 3339 UTC; absent when none is set.
    pub expires_at: Option<String>,
}

#[derive(ApiResponse)]
pub enum CreatedSchedule {
    /// Recorded; `Location` names it.
    #[oai(status = 201)]
    Created(Json<ScheduleView>, #[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
pub enum Deleted {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(Json(ErrorBody { error: "not_found".into(), message: format!("no schedule {id:?}") }))
}

/// A schedule's not-found is not a deployment's.
fn schedule_error(id: &str) -> impl FnOnce(EngineError) -> ApiError + '_ {
    move |e| match e {
        EngineError::NotFound(_) => not_found(id),
        e => e.into(),
    }
}

fn raw_schedule(fields: &serde_json::Map<String, serde_json::Value>) -> (RawSchedule, crate::core::validation::ValidationErrors) {
    let mut r = FieldReader::new(fields);
    let raw = RawSchedule {
        cron: r.string("cron"),
        timezone: r.string("timezone"),
        action: r.string("action"),
        keep: r.integer("keep"),
        target: r.string("target"),
        enabled: r.boolean("enabled"),
        catch_up: r.boolean("catch_up"),
    };
    (raw, r.finish())
}

impl SchedulesApi {
    fn scheduler(&self) -> &Scheduler {
        &self.state.schedules
    }

    fn view(&self, s: Schedule, created_by: String) -> ScheduleView {
        let zone = s.spec.zone;
        let next_runs = self.scheduler().next_runs(&s, 5).into_iter().map(|t| NextRun { utc: rfc3339(t), local: zone.rfc3339(t) }).collect();
        ScheduleView {
            cron: s.spec.cron.as_str().to_string(),
            timezone: zone.name().to_string(),
            action: (&s.spec.action).into(),
            keep: s.spec.action.keep(),
            target: s.spec.target.as_str().to_string(),
            enabled: s.spec.enabled,
            target_destroyed: s.target_destroyed,
            catch_up: s.spec.catch_up,
            created_by,
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
            last_occurrence: s.last_occurrence.map(rfc3339),
            next_runs,
            id: s.id,
        }
    }

    /// Parses the body (every wrong field at once) and checks the scope its action needs.
    async fn parse(&self, auth: &TokenAuth, fields: &serde_json::Map<String, serde_json::Value>) -> Result<(ScheduleSpec, Actor), ApiError> {
        let actor = auth.require(Scope::Deploy)?;
        let (raw, type_errors) = raw_schedule(fields);
        let spec = super::payload::with_type_errors(type_errors, self.scheduler().parse(raw).await)?;
        if spec.action.needs_admin() {
            auth.require(Scope::Admin)?;
        }
        Ok((spec, actor))
    }
}

#[OpenApi(tag = "ApiTags::Schedules")]
impl SchedulesApi {
    /// Schedules, oldest first, each with its next 5 run times.
    #[oai(path = "/schedules", method = "get", operation_id = "list_schedules")]
    async fn list(&self, auth: TokenAuth, /// Page size (default 20).
        limit: Query<Option<u32>>, /// How many to skip.
        offset: Query<Option<u32>>) -> Result<Json<SchedulePage>, ApiError> {
        auth.require(Scope::Read)?;
        let paging = Paging::parse(limit.0, offset.0, self.state.max_page_size)?;
        let (items, total) = self.scheduler().list(paging.limit, paging.offset).await?;
        let n = items.len();
        Ok(Json(SchedulePage {
            items: items.into_iter().map(|(s, by)| self.view(s, by)).collect(),
            total,
            limit: paging.limit,
            offset: paging.offset,
            next_offset: paging.next_offset(n, total),
        }))
    }

    /// Create a schedule (deploy scope; admin for `destroy`). It counts from now: nothing earlier runs late.
    ///
    /// 422 names every wrong field and its rule (`cron`, `timezone`, `action`, `keep`, `target`, …); nothing is stored then.
    #[oai(path = "/schedules", method = "post", operation_id = "create_schedule")]
    async fn create(&self, auth: TokenAuth, body: JsonObject<ScheduleRequest>) -> Result<CreatedSchedule, ApiError> {
        let (spec, actor) = self.parse(&auth, &body.fields).await?;
        let s = self.scheduler().add(spec, &actor).await?;
        let location = format!("{API_PREFIX}/schedules/{}", s.id);
        Ok(CreatedSchedule::Created(Json(self.view(s, actor.to_string())), location))
    }

    /// One schedule with its next 5 run times.
    #[oai(path = "/schedules/:id", method = "get", operation_id = "get_schedule")]
    async fn get(&self, auth: TokenAuth, /// Schedule id.
        id: Path<String>) -> Result<Json<ScheduleView>, ApiError> {
        auth.require(Scope::Read)?;
        let (s, by) = self.scheduler().get_with_creator(&id.0).await.map_err(schedule_error(&id.0))?;
        Ok(Json(self.view(s, by)))
    }

    /// Replace a schedule's settings (deploy scope; admin when it is or becomes a `destroy`). It counts from now.
    #[oai(path = "/schedules/:id", method = "put", operation_id = "replace_schedule")]
    async fn replace(&self, auth: TokenAuth, /// Schedule id.
        id: Path<String>, body: JsonObject<ScheduleRequest>) -> Result<Json<ScheduleView>, ApiError> {
        auth.require(Scope::Deploy)?;
        let (old, by) = self.scheduler().get_with_creator(&id.0).await.map_err(schedule_error(&id.0))?;
        if old.spec.action.needs_admin() {
            auth.require(Scope::Admin)?;
        }
        let (spec, actor) = self.parse(&auth, &body.fields).await?;
        let s = self.scheduler().replace(&id.0, spec, &actor).await.map_err(schedule_error(&id.0))?;
        Ok(Json(self.view(s, by)))
    }

    /// Delete a schedule and its history (deploy scope; admin for a `destroy` schedule).
    #[oai(path = "/schedules/:id", method = "delete", operation_id = "delete_schedule")]
    async fn delete(&self, auth: TokenAuth, /// Schedule id.
        id: Path<String>) -> Result<Deleted, ApiError> {
        let actor = auth.require(Scope::Deploy)?;
        let s = self.scheduler().get(&id.0).await.map_err(schedule_error(&id.0))?;
        if s.spec.action.needs_admin() {
            auth.require(Scope::Admin)?;
        }
        self.scheduler().remove(&id.0, &actor).await.map_err(schedule_error(&id.0))?;
        Ok(Deleted::NoContent)
    }

    /// A schedule's runs, newest first: each occurrence run, failed or skipped, with its message.
    #[oai(path = "/schedules/:id/runs", method = "get", operation_id = "list_schedule_runs")]
    async fn runs(&self, auth: TokenAuth, /// Schedule id.
        id: Path<String>, /// Page size (default 20).
        limit: Query<Option<u32>>, /// How many to skip.
        offset: Query<Option<u32>>) -> Result<Json<RunPage>, ApiError> {
        auth.require(Scope::Read)?;
        let paging = Paging::parse(limit.0, offset.0, self.state.max_page_size)?;
        let (items, total) = self.scheduler().runs(&id.0, paging.limit, paging.offset).await.map_err(schedule_error(&id.0))?;
        let n = items.len();
        Ok(Json(RunPage { items: items.into_iter().map(RunView::from).collect(), total, limit: paging.limit, offset: paging.offset, next_offset: paging.next_offset(n, total) }))
    }

    /// When the deployment will be destroyed, if ever.
    #[oai(path = "/deployments/:id/expiry", method = "get", operation_id = "get_deployment_expiry")]
    async fn get_expiry(&self, auth: TokenAuth, /// Deployment id or name.
        id: Path<String>) -> Result<Json<ExpiryView>, ApiError> {
        auth.require(Scope::Read)?;
        let (d, at) = self.scheduler().expiry(&id.0).await?;
        Ok(Json(ExpiryView { deployment_id: d.id.to_string(), expires_at: at.map(rfc3339) }))
    }

    /// Set the time the deployment is destroyed (admin scope): a preview's TTL.
    #[oai(path = "/deployments/:id/expiry", method = "post", operation_id = "set_deployment_expiry")]
    async fn set_expiry(&self, auth: TokenAuth, /// Deployment id or name.
        id: Path<String>, body: JsonObject<ExpiryRequest>) -> Result<Json<ExpiryView>, ApiError> {
        let actor = auth.require(Scope::Admin)?;
        let mut r = FieldReader::new(&body.fields);
        let at = r.string("expires_at");
        let ttl = r.integer("ttl_seconds");
        let errs = r.finish();
        if !errs.is_empty() {
            return Err(ApiError::invalid(&errs));
        }
        let now = self.scheduler().now();
        let expires_at = match (at, ttl) {
            (Some(at), None) => time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .map_err(|_| ApiError::invalid_field("expires_at", "rfc3339", "must be an RFC 3339 time such as 2026-12-31T18:00:00Z"))?,
            (None, Some(s)) if (1..=MAX_TTL_SECS).contains(&s) => now + s * 1000,
            (None, Some(_)) => return Err(ApiError::invalid_field("ttl_seconds", "range", format!("must be between 1 and {MAX_TTL_SECS} (a year)"))),
            _ => return Err(ApiError::invalid_field("expires_at", "one_of", "give exactly one of expires_at or ttl_seconds")),
        };
        let d = self.scheduler().set_expiry(&id.0, expires_at, &actor).await?;
        Ok(Json(ExpiryView { deployment_id: d.id.to_string(), expires_at: Some(rfc3339(expires_at)) }))
    }

    /// Remove the deployment's expiry (deploy scope): it is no longer destroyed on its own.
    #[oai(path = "/deployments/:id/expiry", method = "delete", operation_id = "clear_deployment_expiry")]
    async fn clear_expiry(&self, auth: TokenAuth, /// Deployment id or name.
        id: Path<String>) -> Result<Deleted, ApiError> {
        let actor = auth.require(Scope::Deploy)?;
        self.scheduler().clear_expiry(&id.0, &actor).await?;
        Ok(Deleted::NoContent)
    }
}

impl From<RunRecord> for RunView {
    fn from(r: RunRecord) -> Self {
        RunView {
            occurrence: rfc3339(r.occurrence),
            outcome: r.outcome.as_str().to_string(),
            message: r.message,
            agent: r.agent,
            started_at: rfc3339(r.started_at),
            ended_at: r.ended_at.map(rfc3339),
        }
    }
}
