//! `/deployments`: create, list, read, act on, and follow the logs of deployments.

use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::{ApiResponse, OpenApi, ResponseContent, Tags};
use tokio::sync::broadcast::error::RecvError;

use super::error::ApiError;
use super::security::TokenAuth;
use super::serialized::Serialized;
use super::paging::Paging;
use super::payload::JsonObject;
use super::wire::{raw_spec, DeploymentDetail, DeploymentPage, DeploymentRequest, DeploymentView, EventView, LogLineView, LogPage};
use super::{ApiState, API_PREFIX};
use crate::auth::Scope;
use crate::core::command::Action;
use crate::core::deployment::{DeploymentId, Framework};
use crate::core::status::Status;
use crate::engine::Event;
use crate::core::names::AppNamePrefix;
use crate::core::listing::{Filter, PageStart};

#[derive(Tags)]
enum ApiTags {
    /// Deployments and their lifecycle.
    Deployments,
}

pub struct DeploymentsApi {
    pub state: ApiState,
}

#[derive(ApiResponse)]
pub enum Created {
    /// Recorded as `pending`; the work runs asynchronously. `Location` names the new deployment.
    #[oai(status = 202)]
    Accepted(Json<DeploymentView>, #[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
pub enum Accepted {
    /// Accepted; the work runs asynchronously. The body is the deployment as it is now.
    #[oai(status = 202)]
    Accepted(Json<DeploymentView>),
}

#[derive(ResponseContent)]
pub enum LogsBody {
    Json(Json<LogPage>),
    /// With `follow=true`: a `log` event per line (its data is the line's JSON); after 5 s without a
    /// line, a `progress` event (`{"step", "waiting_seconds"}`) every 5 s; when the deployment settles,
    /// a last `status` event (`{"status", "error_message", "url", "commit"}`) and the end of the stream.
    Stream(EventStream<BoxStream<'static, FollowEvent>>),
}

#[derive(ApiResponse)]
pub enum LogsResponse {
    /// The lines (JSON), or a live stream (`text/event-stream`) with `follow=true`.
    #[oai(status = 200)]
    Ok(LogsBody),
}

#[OpenApi(tag = "ApiTags::Deployments")]
impl DeploymentsApi {
    /// Deploy a repository (the original design's `/deploy`).
    ///
    /// Validates the request, records it as `pending` and answers at once; provisioning and deployment run asynchronously.
    #[oai(path = "/deployments", method = "post", operation_id = "create_deployment")]
    async fn create(&self, auth: TokenAuth, body: JsonObject<DeploymentRequest>) -> Result<Created, ApiError> {
        let actor = auth.require(Scope::Deploy)?;
        let engine = &self.state.engine;
        let (raw, type_errors) = raw_spec(&body.fields);
        let spec = super::payload::with_type_errors(type_errors, engine.parse_spec(raw))?;
        let d = engine.deploy(spec, &actor).await?;
        let location = format!("{API_PREFIX}/deployments/{}", d.id);
        Ok(Created::Accepted(Json(DeploymentView::from(&d)), location))
    }

    /// List deployments, newest first.
    #[oai(path = "/deployments", method = "get", operation_id = "list_deployments")]
    async fn list(
        &self,
        auth: TokenAuth,
        /// Only this status.
        status: Query<Option<String>>,
        /// Only this framework.
        framework: Query<Option<String>>,
        /// Only names starting with this text (lowercase letters, digits, hyphens).
        name: Query<Option<String>>,
        /// Page size (default 20, at most the configured maximum, 100 by default).
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page: the deployments after it (older). Stable while
        /// deployments are added, and as fast deep in the list as at its start.
        after: Query<Option<String>>,
        /// How many to skip: a convenience whose cost grows with the offset; `after` is the way to page.
        offset: Query<Option<u32>>,
    ) -> Result<Serialized<DeploymentPage>, ApiError> {
        auth.require(Scope::Read)?;
        let Paging { limit, offset } = Paging::parse(limit.0, offset.0, self.state.max_page_size)?;
        let start = match (after.0.as_deref(), offset) {
            (Some(_), o) if o > 0 => return Err(ApiError::invalid_field("after", "exclusive", "give either after or offset, not both")),
            (Some(raw), _) => PageStart::After(
                DeploymentId::parse(raw).ok_or_else(|| ApiError::invalid_field("after", "cursor", "must be the next_cursor of a previous page (a deployment id)"))?,
            ),
            (None, 0) => PageStart::First,
            (None, o) => PageStart::Offset(o),
        };
        let status = match status.0.as_deref() {
            None => None,
            Some(s) => Some(Status::parse(s).ok_or_else(|| {
                let all: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::invalid_field("status", "enum", format!("must be one of: {}", all.join(", ")))
            })?),
        };
        let framework = match framework.0.as_deref() {
            None => None,
            Some(f) => Some(Framework::parse(f).map_err(|e| ApiError::invalid(&crate::core::validation::ValidationErrors(vec![e])))?),
        };
        let name = match name.0.as_deref() {
            None => None,
            Some(n) => Some(AppNamePrefix::parse(n).map_err(|e| ApiError::invalid(&crate::core::validation::ValidationErrors(vec![e])))?),
        };
        let filter = Filter { status, framework, name };
        let page = self.state.engine.list_deployments(&filter, limit, &start).await?;
        let n = page.items.len();
        Ok(Serialized(DeploymentPage {
            next_cursor: page.more.then(|| page.items.last().map(|d| d.id.to_string())).flatten(),
            items: page.items.iter().map(DeploymentView::from).collect(),
            total: page.total,
            limit,
            offset,
            next_offset: match start {
                PageStart::After(_) => None,
                _ => Paging { limit, offset }.next_offset(n, page.total).filter(|_| page.more),
            },
        }))
    }

    /// One deployment, by id or by name, with its status history.
    #[oai(path = "/deployments/:id", method = "get", operation_id = "get_deployment")]
    async fn get(&self, auth: TokenAuth, /// Deployment id or name.
        id: Path<String>) -> Result<Serialized<DeploymentDetail>, ApiError> {
        auth.require(Scope::Read)?;
        let engine = &self.state.engine;
        // By id: one round trip for the record and its history (the hot path); by name: find first.
        let found = match DeploymentId::parse(&id.0) {
            Some(did) => engine.deployment_with_events(&did).await?,
            None => {
                let d = self.state.engine.find(&id.0).await?;
                engine.deployment_with_events(&d.id).await?
            }
        };
        let detail = found.ok_or_else(|| ApiError::not_found(&id.0))?;
        let (d, events) = &*detail;
        Ok(Serialized(DeploymentDetail { deployment: DeploymentView::from(d), events: events.iter().map(EventView::from).collect() }))
    }

    /// Destroy a deployment: stop and delete its guest, release its name. Destroying twice is harmless. Its backups
    /// stay (they outlive it) unless `purge_backups=true`: then each of its own unprotected backups is deleted first,
    /// and a deletion that fails is a 502 with nothing destroyed.
    #[oai(path = "/deployments/:id", method = "delete", operation_id = "destroy_deployment")]
    async fn destroy(&self, auth: TokenAuth, id: Path<String>, /// Also delete the deployment's backups (default false).
        purge_backups: Query<Option<bool>>) -> Result<Accepted, ApiError> {
        if purge_backups.0 == Some(true) {
            let actor = auth.require(Scope::Admin)?;
            self.state.engine.purge_backups(&id.0, &actor).await?;
        }
        self.act(auth, &id.0, Action::Destroy).await
    }

    /// Start a stopped deployment's guest.
    #[oai(path = "/deployments/:id/start", method = "post", operation_id = "start_deployment")]
    async fn start(&self, auth: TokenAuth, id: Path<String>) -> Result<Accepted, ApiError> {
        self.act(auth, &id.0, Action::Start).await
    }

    /// Stop a running deployment's guest.
    #[oai(path = "/deployments/:id/stop", method = "post", operation_id = "stop_deployment")]
    async fn stop(&self, auth: TokenAuth, id: Path<String>) -> Result<Accepted, ApiError> {
        self.act(auth, &id.0, Action::Stop).await
    }

    /// Deploy the branch's newest commit (or `commit`) again on the existing guest; a failed deployment
    /// without a guest is provisioned again.
    #[oai(path = "/deployments/:id/redeploy", method = "post", operation_id = "redeploy_deployment")]
    async fn redeploy(
        &self,
        auth: TokenAuth,
        id: Path<String>,
        /// Deploy this commit (40 or 64 lowercase hex digits) instead of the branch's newest.
        commit: Query<Option<String>>,
    ) -> Result<Accepted, ApiError> {
        let Some(raw) = commit.0 else { return self.act(auth, &id.0, Action::Redeploy).await };
        let actor = auth.require(Scope::Deploy)?;
        let commit = crate::core::names::CommitSha::parse(&raw).map_err(|e| ApiError::invalid_field("commit", e.rule, e.message))?;
        let d = self.state.engine.redeploy(&id.0, Some(commit), &actor).await?;
        Ok(Accepted::Accepted(Json(DeploymentView::from(&d))))
    }

    /// Switch back to the previous release.
    #[oai(path = "/deployments/:id/rollback", method = "post", operation_id = "rollback_deployment")]
    async fn rollback(&self, auth: TokenAuth, id: Path<String>) -> Result<Accepted, ApiError> {
        self.act(auth, &id.0, Action::Rollback).await
    }

    /// A deployment's log; with `follow=true`, a live Server-Sent Events stream until the deployment settles.
    #[oai(path = "/deployments/:id/logs", method = "get", operation_id = "deployment_logs")]
    async fn logs(
        &self,
        auth: TokenAuth,
        id: Path<String>,
        /// Stream new lines as Server-Sent Events.
        follow: Query<Option<bool>>,
        /// Only lines after this cursor (a `seq`).
        after: Query<Option<i64>>,
        /// At most this many lines (default 200, at most 1000); ignored when following.
        limit: Query<Option<u32>>,
        /// Only the newest this many lines (1 to 1000); with `follow`, the stream starts with them.
        /// Not together with `after`.
        tail: Query<Option<u32>>,
    ) -> Result<LogsResponse, ApiError> {
        auth.require(Scope::Read)?;
        let d = self.state.engine.find(&id.0).await?;
        let after = match (tail.0, after.0) {
            (Some(_), Some(_)) => return Err(ApiError::invalid_field("tail", "exclusive", "cannot be combined with after")),
            (Some(0), None) | (Some(1001..), None) => return Err(ApiError::invalid_field("tail", "range", "must be between 1 and 1000")),
            (Some(n), None) => {
                let lines = self.state.engine.tail_log(&d.id, n).await?;
                if !follow.0.unwrap_or(false) {
                    let next_after = lines.last().map(|l| l.seq).unwrap_or(0);
                    return Ok(LogsResponse::Ok(LogsBody::Json(Json(LogPage { lines: lines.into_iter().map(LogLineView::from).collect(), next_after }))));
                }
                // Follow from just before the oldest of them.
                lines.first().map(|l| l.seq - 1).unwrap_or(0)
            }
            (None, after) => after.unwrap_or(0),
        };
        if follow.0.unwrap_or(false) {
            let stream = follow_log(self.state.clone(), d.id, after);
            let es = EventStream::new(stream).keep_alive(Duration::from_secs(15)).to_event(|e| match (&e.line, &e.progress, &e.end) {
                (Some(l), _, _) => poem::web::sse::Event::message(serde_json::to_string(&LogJson::from(l)).unwrap_or_default()).event_type("log").id(l.seq.to_string()),
                (_, Some(p), _) => poem::web::sse::Event::message(serde_json::json!({"step": p.step, "waiting_seconds": p.waiting_seconds}).to_string()).event_type("progress"),
                (_, _, Some(end)) => poem::web::sse::Event::message(serde_json::json!({"status": end.status, "error_message": end.error_message, "url": end.url, "commit": end.commit}).to_string()).event_type("status"),
                _ => poem::web::sse::Event::message("{}").event_type("progress"),
            });
            return Ok(LogsResponse::Ok(LogsBody::Stream(es)));
        }
        let limit = limit.0.unwrap_or(200);
        if limit == 0 || limit > 1000 {
            return Err(ApiError::invalid_field("limit", "range", "must be between 1 and 1000"));
        }
        let lines = self.state.engine.read_log(&d.id, after, limit).await?;
        let next_after = lines.last().map(|l| l.seq).unwrap_or(after);
        Ok(LogsResponse::Ok(LogsBody::Json(Json(LogPage { lines: lines.into_iter().map(LogLineView::from).collect(), next_after }))))
    }
}

impl DeploymentsApi {
    async fn act(&self, auth: TokenAuth, id: &str, action: Action) -> Result<Accepted, ApiError> {
        let scope = if action == Action::Destroy { Scope::Admin } else { Scope::Deploy };
        let actor = auth.require(scope)?;
        let d = self.state.engine.act(id, action, &actor).await?;
        Ok(Accepted::Accepted(Json(DeploymentView::from(&d))))
    }
}

/// The SSE data of one line.
#[derive(serde::Serialize)]
struct LogJson<'a> {
    seq: i64,
    ts: &'a str,
    level: &'a str,
    step: &'a str,
    text: &'a str,
}

impl<'a> From<&'a LogLineView> for LogJson<'a> {
    fn from(l: &'a LogLineView) -> Self {
        LogJson { seq: l.seq, ts: &l.ts, level: &l.level, step: &l.step, text: &l.text }
    }
}

/// One event of a followed log (see `LogsBody::Stream`): exactly one of its members is present.
#[derive(Debug, Clone, poem_openapi::Object)]
#[oai(skip_serializing_if_is_none)]
pub struct FollowEvent {
    /// A new line (SSE event `log`).
    pub line: Option<LogLineView>,
    /// Nothing was logged for a while; the step still at work (SSE event `progress`).
    pub progress: Option<FollowProgress>,
    /// The deployment settled; the stream ends after this (SSE event `status`).
    pub end: Option<FollowEnd>,
}

#[derive(Debug, Clone, poem_openapi::Object)]
pub struct FollowProgress {
    /// The step of the last line.
    pub step: String,
    /// Seconds since the last line.
    pub waiting_seconds: u64,
}

#[derive(Debug, Clone, poem_openapi::Object)]
#[oai(skip_serializing_if_is_none)]
pub struct FollowEnd {
    pub status: String,
    pub error_message: Option<String>,
    pub url: Option<String>,
    pub commit: Option<String>,
}

impl FollowEvent {
    fn line(l: LogLineView) -> Self {
        FollowEvent { line: Some(l), progress: None, end: None }
    }
}

/// How long a followed log may stay silent before a `progress` event says what is still at work.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Lines after `after`, then every new line, until the deployment is no longer busy; `progress`
/// during silences, and a last `status` event.
/// Subscribes before reading the backlog so that no line falls between the two.
fn follow_log(state: ApiState, id: DeploymentId, after: i64) -> BoxStream<'static, FollowEvent> {
    let (tx, rx) = tokio::sync::mpsc::channel::<FollowEvent>(256);
    tokio::spawn(async move {
        let mut events = state.engine.bus().subscribe();
        let engine = &state.engine;
        let mut last = after;
        let mut step = String::from("request");
        let mut quiet_since = std::time::Instant::now();
        let mut settled = false;
        loop {
            // Backlog (first pass, or after the bus overflowed).
            loop {
                let Ok(lines) = engine.read_log(&id, last, 500).await else { return };
                let n = lines.len();
                for l in lines {
                    last = l.seq;
                    step = l.step.clone();
                    quiet_since = std::time::Instant::now();
                    if tx.send(FollowEvent::line(l.into())).await.is_err() {
                        return;
                    }
                }
                if n < 500 {
                    break;
                }
            }
            if settled {
                // The end: what the deployment settled as.
                if let Ok(Some(d)) = engine.deployment(&id).await {
                    let end = FollowEnd { status: d.status.as_str().into(), error_message: d.error_message.clone(), url: d.url.clone(), commit: d.commit.as_ref().map(ToString::to_string) };
                    let _ = tx.send(FollowEvent { line: None, progress: None, end: Some(end) }).await;
                }
                return;
            }
            match engine.deployment(&id).await {
                Ok(Some(d)) if d.status.is_busy() => {}
                _ => settled = true,
            }
            if settled {
                continue; // one more backlog read catches lines written just before settling
            }
            loop {
                let next = match tokio::time::timeout(PROGRESS_EVERY, events.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        let progress = FollowProgress { step: step.clone(), waiting_seconds: quiet_since.elapsed().as_secs() };
                        if tx.send(FollowEvent { line: None, progress: Some(progress), end: None }).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                match next {
                    Ok(Event::Log(l)) if l.deployment == id.as_str() && l.seq > last => {
                        last = l.seq;
                        step = l.step.clone();
                        quiet_since = std::time::Instant::now();
                        if tx.send(FollowEvent::line(l.into())).await.is_err() {
                            return;
                        }
                    }
                    Ok(Event::Status { id: ref sid, status }) if *sid == id && !status.is_busy() => {
                        settled = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}
