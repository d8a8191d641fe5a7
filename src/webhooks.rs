//! The GitHub webhook door: `POST /webhooks/github` — size limit, signature before anything else, delivery recorded before any effect, push handled in the background.

pub mod dispatch;
pub mod github;
pub mod signature;

use std::sync::Arc;
use std::time::Duration;

use poem::error::ReadBodyError;
use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{Body, IntoResponse, Request, Response};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::api::error::{ApiError, ErrorBody};
use crate::api::ApiState;
use crate::config::github::GithubSettings;
use crate::core::validation::{FieldError, ValidationErrors};
use crate::core::webhook::{DeliveryId, Outcome, Skip};
use crate::engine::Engine;
use crate::store::deliveries::DeliveryRecord;
use crate::store::{now_millis, StoreError};
use github::GithubEvent;
use signature::WebhookKeys;

/// Where GitHub posts deliveries.
pub const PATH: &str = "/webhooks/github";
/// Larger bodies are refused with 413 before more is read (GitHub's push payloads are far smaller:
/// at most 20 commits are listed).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Pushes being routed at once; beyond this the door answers 503 and records nothing (GitHub shows
/// the failure and the delivery can be redelivered).
pub const MAX_IN_FLIGHT: usize = 256;

/// The webhook door's state: the secrets, and the background work it started.
#[derive(Clone)]
pub struct WebhookDoor {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    /// `None`: no secret configured, the endpoint is off.
    keys: Option<WebhookKeys>,
    tasks: TaskTracker,
    slots: Arc<Semaphore>,
}

/// What the door answers to a delivery it accepted (or recognised as a duplicate).
#[derive(Debug, serde::Serialize)]
pub struct DeliveryAnswer {
    pub delivery: String,
    /// `accepted`, `pong`, `ignored`, `duplicate`.
    pub status: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_id: Option<i64>,
}

fn answer(status: StatusCode, delivery: &DeliveryId, word: &'static str, message: impl Into<String>, hook_id: Option<i64>) -> Response {
    let mut r = Json(DeliveryAnswer { delivery: delivery.to_string(), status: word, message: message.into(), hook_id }).into_response();
    r.set_status(status);
    r
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let mut r = poem::IntoResponse::into_response(poem_openapi::payload::Json(ErrorBody { error: code.into(), message: message.into() }));
    r.set_status(status);
    r
}

fn too_large() -> Response {
    error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body must be at most {MAX_BODY_BYTES} bytes"))
}

fn unavailable(e: &StoreError) -> Response {
    tracing::error!(error = %e, "webhook delivery not recorded: database unavailable");
    error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the database is unavailable; nothing was done, redelivering later is safe")
}

/// The poem endpoint behind [`PATH`].
#[poem::handler]
pub async fn receive(req: &Request, body: Body, state: Data<&ApiState>) -> Response {
    let mut resp = state.webhooks.receive(req, body).await;
    resp.set_data(poem_openapi::OperationId("github_webhook"));
    resp
}

impl WebhookDoor {
    pub fn new(engine: Engine, settings: &GithubSettings) -> Self {
        Self { inner: Arc::new(Inner { engine, keys: WebhookKeys::new(settings), tasks: TaskTracker::new(), slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)) }) }
    }

    pub fn enabled(&self) -> bool {
        self.inner.keys.is_some()
    }

    async fn receive(&self, req: &Request, body: Body) -> Response {
        let Some(keys) = &self.inner.keys else {
            return error(
                StatusCode::NOT_FOUND,
                "not_configured",
                "webhooks not configured: set [github] webhook_secret, PVEDEPLOY_GITHUB_WEBHOOK_SECRET or [[github.repos]]",
            );
        };
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        if header("content-length").and_then(|l| l.parse::<u64>().ok()).is_some_and(|l| l > MAX_BODY_BYTES as u64) {
            return too_large();
        }
        let body = match body.into_bytes_limit(MAX_BODY_BYTES).await {
            Ok(b) => b,
            Err(ReadBodyError::PayloadTooLarge) => return too_large(),
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("the body could not be read: {e}")),
        };
        // The signature, before anything looks at the body or the other headers.
        let signer = match keys.verify(header("x-hub-signature-256"), req.headers().contains_key("x-hub-signature"), &body) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(reason = %e, remote = %req.remote_addr(), "webhook delivery refused: signature");
                return error(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string());
            }
        };
        if let Some(why) = self.inner.engine.read_only() {
            return error(StatusCode::SERVICE_UNAVAILABLE, "read_only", format!("the agent is read-only and recorded nothing (redeliver later): {why}"));
        }
        let mut errs = ValidationErrors::default();
        let event = errs.take(github::parse_event_name(header("x-github-event")));
        let delivery = errs.take(
            header("x-github-delivery").ok_or_else(|| FieldError::new(DeliveryId::FIELD, "required", "is required (the delivery GUID)")).and_then(DeliveryId::parse),
        );
        let (Some(event), Some(delivery)) = (event, delivery) else { return ApiError::invalid(&errs).into_response() };
        let parsed = github::payload_json(header("content-type"), &body).and_then(|json| github::parse(&event, &json));
        let mut record = DeliveryRecord {
            delivery: delivery.clone(),
            event: event.clone(),
            repo: None,
            repo_hosts: vec![],
            git_ref: None,
            before: None,
            after: None,
            pusher: None,
            hook_id: None,
            received_at: now_millis(),
            updated_at: now_millis(),
            outcome: Outcome::Received,
            detail: None,
            targets: vec![],
            redeliveries: 0,
        };
        let ev = match parsed {
            Ok(ev) => ev,
            Err(errs) => {
                record.outcome = Outcome::Ignored(Skip::InvalidPayload);
                record.detail = Some(errs.to_string());
                if let Some(r) = self.record(&record).await {
                    return r;
                }
                return ApiError::invalid(&errs).into_response();
            }
        };
        if !signer.covers(ev.repo(), keys) {
            tracing::warn!(%delivery, repo = ev.repo().unwrap_or(""), "webhook delivery refused: signed with a secret that does not belong to its repository");
            return error(StatusCode::UNAUTHORIZED, "unauthorized", "the signature was made with a secret that is not the one configured for this repository");
        }
        record.repo = ev.repo().map(str::to_owned);
        match ev {
            GithubEvent::Ping { hook_id, .. } => {
                record.outcome = Outcome::Pong;
                record.hook_id = hook_id;
                if let Some(r) = self.record(&record).await {
                    return r;
                }
                tracing::info!(%delivery, hook_id, "webhook ping");
                answer(StatusCode::OK, &delivery, "pong", "webhook configured; pvedeploy acts on push events", hook_id)
            }
            GithubEvent::Other { .. } => {
                record.outcome = Outcome::Ignored(Skip::Event);
                record.detail = Some(format!("pvedeploy does not act on `{event}` events"));
                if let Some(r) = self.record(&record).await {
                    return r;
                }
                answer(StatusCode::ACCEPTED, &delivery, "ignored", format!("pvedeploy does not act on `{event}` events; subscribe the hook to push only"), None)
            }
            GithubEvent::Push(push) => {
                let Ok(slot) = self.inner.slots.clone().try_acquire_owned() else {
                    tracing::warn!(%delivery, "webhook delivery refused: too many pushes in flight");
                    return error(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many deliveries are being handled; nothing was done, redeliver later");
                };
                record.repo_hosts = push.repo.hosts.clone();
                record.git_ref = Some(push.raw_ref.clone());
                record.before = push.before.as_ref().map(|c| c.as_str().to_owned());
                record.after = push.after.as_ref().map(|c| c.as_str().to_owned());
                record.pusher = Some(push.pusher.clone());
                if let Some(r) = self.record(&record).await {
                    return r;
                }
                let engine = self.inner.engine.clone();
                let id = delivery.clone();
                self.inner.tasks.spawn(async move {
                    dispatch::push(&engine, &id, &push).await;
                    drop(slot);
                });
                answer(StatusCode::ACCEPTED, &delivery, "accepted", "push recorded; redeploys are requested in the background", None)
            }
        }
    }

    /// Records the delivery; `Some(response)` when that ends the request (a duplicate GUID, or the store failed).
    async fn record(&self, record: &DeliveryRecord) -> Option<Response> {
        let store = self.inner.engine.store();
        match store.record_delivery(record).await {
            Ok(()) => None,
            Err(StoreError::Taken { .. }) => {
                if let Err(e) = store.note_redelivery(&record.delivery).await {
                    tracing::warn!(delivery = %record.delivery, error = %e, "could not count a redelivery");
                }
                tracing::info!(delivery = %record.delivery, "duplicate webhook delivery ignored");
                Some(answer(StatusCode::OK, &record.delivery, "duplicate", "duplicate delivery: this GUID was already received; nothing was done", None))
            }
            Err(e) => Some(unavailable(&e)),
        }
    }

    /// Routes the pushes that were recorded but not routed when the agent last stopped (a crash
    /// between the 202 and the engine's answer); their push claims keep them from acting twice.
    pub async fn resume(&self) -> Result<usize, StoreError> {
        if self.inner.engine.read_only().is_some() {
            return Ok(0);
        }
        let pending = self.inner.engine.store().unrouted_deliveries().await?;
        let n = pending.len();
        for record in pending {
            let engine = self.inner.engine.clone();
            self.inner.tasks.spawn(async move {
                match dispatch::push_from_record(&record) {
                    Some(push) => dispatch::push(&engine, &record.delivery, &push).await,
                    None => {
                        let why = "the recorded push could not be read back; redeliver it from GitHub";
                        if let Err(e) = engine.store().finish_delivery(&record.delivery, Outcome::Failed, Some(why), &[]).await {
                            tracing::error!(delivery = %record.delivery, error = %e, "could not record a webhook delivery's outcome");
                        }
                    }
                }
            });
        }
        Ok(n)
    }

    /// Stops taking pushes and waits (up to `grace`) for those being routed.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait()).await.is_err() {
            tracing::warn!("webhook pushes still being routed after {grace:?}; their deliveries stay `received`");
        }
    }
}
