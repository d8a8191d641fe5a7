//! The GitHub webhook door: `POST /webhooks/github` — size limit while reading, signature before anything else, delivery recorded before any effect (a GUID runs again only if it did not act), push handled in the background.

pub mod github;
pub mod signature;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{Body, IntoResponse, Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::http::{error, invalid};
use crate::config::github::GithubSettings;
use crate::core::preview::PrAction;
use crate::core::validation::{FieldError, ValidationErrors};
use crate::core::delivery::DeliveryRecord;
use crate::core::webhook::{push_skip, DeliveryId, Outcome, Skip};
use crate::engine::deliveries::Received;
use crate::engine::{Engine, StoreError};
use github::GithubEvent;
use signature::WebhookKeys;

/// Where GitHub posts deliveries.
pub const PATH: &str = "/webhooks/github";
/// Larger bodies are refused with 413 while they are read, never buffered past this. GitHub caps a payload at 25 MB
/// ("Payloads are capped at 25 MB", <https://docs.github.com/en/webhooks/webhook-events-and-payloads#payload-cap>); read
/// as 25 MiB, so nothing GitHub sends is refused. The cap is on the body as sent: a form-encoded delivery's
/// percent-encoding counts.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;
/// A body over this is large: anyone can send one (its signature is checked once it is whole), so at most
/// [`MAX_LARGE_READS`] are read at once; beyond that the answer is 503 and nothing is recorded.
pub const LARGE_BODY_BYTES: usize = 1024 * 1024;
pub const MAX_LARGE_READS: usize = 4;
/// At most this many 413s a minute are recorded (their sender is unverified); the rest are answered and logged.
pub const TOO_LARGE_RECORDS_PER_MINUTE: u32 = 10;
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
    large_reads: Arc<Semaphore>,
    too_large_quota: Quota,
}

/// A count per minute (recording unverified 413s).
struct Quota {
    per_minute: u32,
    window: Mutex<(Instant, u32)>,
}

impl Quota {
    fn new(per_minute: u32) -> Self {
        Self { per_minute, window: Mutex::new((Instant::now(), 0)) }
    }

    fn take(&self) -> bool {
        let mut w = self.window.lock().expect("quota poisoned");
        if w.0.elapsed() >= Duration::from_secs(60) {
            *w = (Instant::now(), 0);
        }
        w.1 += 1;
        w.1 <= self.per_minute
    }
}

/// Why a body was not read whole.
enum BodyError {
    /// Over [`MAX_BODY_BYTES`]: as declared, or at least this many bytes arrived.
    TooLarge(u64),
    /// Too many large bodies are being read.
    Busy,
    Unreadable(String),
}

/// Reads the body, enforcing [`MAX_BODY_BYTES`] on what was declared and on every chunk as it arrives; the buffer
/// never grows past the cap. A large body holds one of the large-read slots until the request ends.
async fn read_body(body: Body, declared: Option<u64>, large: &Arc<Semaphore>) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), BodyError> {
    let slot = || large.clone().try_acquire_owned().map_err(|_| BodyError::Busy);
    let mut permit = None;
    match declared {
        Some(n) if n > MAX_BODY_BYTES as u64 => return Err(BodyError::TooLarge(n)),
        Some(n) if n > LARGE_BODY_BYTES as u64 => permit = Some(slot()?),
        _ => {}
    }
    let mut buf: Vec<u8> = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut stream = std::pin::pin!(body.into_bytes_stream());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Unreadable(e.to_string()))?;
        let total = buf.len() + chunk.len();
        if total > MAX_BODY_BYTES {
            return Err(BodyError::TooLarge(total as u64));
        }
        if total > LARGE_BODY_BYTES && permit.is_none() {
            permit = Some(slot()?);
        }
        if total > buf.capacity() {
            let grown = (buf.capacity() * 2).max(total).min(MAX_BODY_BYTES);
            buf.reserve_exact(grown - buf.len());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, permit))
}

/// Whether a recorded delivery is new or a GUID processed again.
enum Recorded {
    New,
    /// The `n`th retry; the attempt before led to `before`.
    Retry { n: i64, before: Outcome },
}

impl Recorded {
    fn note(&self) -> String {
        match self {
            Recorded::New => String::new(),
            Recorded::Retry { n, before } => format!(" (this GUID processed again, retry {n}: the attempt before was `{before}`)"),
        }
    }
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


fn too_large() -> Response {
    error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body must be at most {MAX_BODY_BYTES} bytes (GitHub's 25 MB payload cap)"))
}

fn unavailable(e: &StoreError) -> Response {
    tracing::error!(error = %e, "webhook delivery not recorded: database unavailable");
    error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the database is unavailable; nothing was done, redelivering later is safe")
}

/// The poem endpoint behind [`PATH`].
#[poem::handler]
pub async fn receive(req: &Request, body: Body, door: Data<&WebhookDoor>) -> Response {
    let mut resp = door.receive(req, body).await;
    resp.set_data(poem_openapi::OperationId("github_webhook"));
    resp
}

impl WebhookDoor {
    pub fn new(engine: Engine, settings: &GithubSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine,
                keys: WebhookKeys::new(settings),
                tasks: TaskTracker::new(),
                slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
                large_reads: Arc::new(Semaphore::new(MAX_LARGE_READS)),
                too_large_quota: Quota::new(TOO_LARGE_RECORDS_PER_MINUTE),
            }),
        }
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
        let declared = header("content-length").and_then(|l| l.parse::<u64>().ok());
        let (body, _large_slot) = match read_body(body, declared, &self.inner.large_reads).await {
            Ok(read) => read,
            Err(BodyError::TooLarge(bytes)) => {
                self.record_too_large(req, bytes).await;
                return too_large();
            }
            Err(BodyError::Busy) => {
                tracing::warn!(remote = %req.remote_addr(), "webhook delivery refused: too many large bodies being read");
                return error(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many large deliveries are being read; nothing was done, redeliver later");
            }
            Err(BodyError::Unreadable(e)) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("the body could not be read: {e}")),
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
        let (Some(event), Some(delivery)) = (event, delivery) else { return invalid(&errs) };
        let parsed = github::payload_json(header("content-type"), &body).and_then(|json| github::parse(&event, &json));
        drop(body);
        let hook = github::Hook::from_headers(header("x-github-hook-id"), header("x-github-hook-installation-target-type"));
        let mut record = DeliveryRecord::received(delivery.clone(), event.clone(), hook.id, hook.target);
        let ev = match parsed {
            Ok(ev) => ev,
            Err(errs) => {
                record.outcome = Outcome::Ignored(Skip::InvalidPayload);
                record.detail = Some(errs.to_string());
                if let Err(r) = self.record(&record).await {
                    return r;
                }
                return invalid(&errs);
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
                record.hook_id = hook_id.or(record.hook_id);
                let again = match self.record(&record).await {
                    Ok(r) => r.note(),
                    Err(r) => return r,
                };
                tracing::info!(%delivery, hook_id = record.hook_id, "webhook ping");
                answer(StatusCode::OK, &delivery, "pong", format!("webhook configured; pvedeploy acts on push events{again}"), record.hook_id)
            }
            GithubEvent::PullRequest(pr) => {
                record.repo_hosts = pr.repo.hosts.clone();
                record.git_ref = Some(format!("refs/pull/{}/head", pr.number));
                record.after = Some(pr.head_sha.as_str().to_owned());
                record.pusher = Some(pr.sender.clone());
                if let PrAction::Other(action) = &pr.action {
                    // Decided from the payload alone: recorded as done at once.
                    let why = format!("pull request #{} `{action}` (head {}): previews act on opened, reopened, synchronize and closed", pr.number, pr.head_sha.as_str());
                    record.outcome = Outcome::Ignored(Skip::Event);
                    record.detail = Some(why.clone());
                    let again = match self.record(&record).await {
                        Ok(r) => r.note(),
                        Err(r) => return r,
                    };
                    return answer(StatusCode::ACCEPTED, &delivery, "ignored", format!("{why}{again}"), None);
                }
                let Ok(slot) = self.inner.slots.clone().try_acquire_owned() else {
                    tracing::warn!(%delivery, "webhook delivery refused: too many deliveries in flight");
                    return error(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many deliveries are being handled; nothing was done, redeliver later");
                };
                let again = match self.record(&record).await {
                    Ok(r) => r.note(),
                    Err(r) => return r,
                };
                let engine = self.inner.engine.clone();
                let id = delivery.clone();
                let said = format!("pull request #{} `{}` recorded; previews are handled in the background{again}", pr.number, pr.action);
                self.inner.tasks.spawn(async move {
                    engine.on_pull_request(&id, &pr).await;
                    drop(slot);
                });
                answer(StatusCode::ACCEPTED, &delivery, "accepted", said, None)
            }
            GithubEvent::Other { .. } => {
                let why = github::not_acted_on(&event);
                record.outcome = Outcome::Ignored(Skip::Event);
                record.detail = Some(why.clone());
                let again = match self.record(&record).await {
                    Ok(r) => r.note(),
                    Err(r) => return r,
                };
                answer(StatusCode::ACCEPTED, &delivery, "ignored", format!("{why}{again}"), None)
            }
            GithubEvent::Push(push) if push_skip(&push) == Some(Skip::Marker) => {
                // Decided from the payload alone: recorded as done at once (nothing to route, nothing to resume).
                let why = format!("the head commit's message holds `{}`: nothing is deployed", push.skip_marker.unwrap_or_default());
                record.repo_hosts = push.repo.hosts.clone();
                record.git_ref = Some(push.raw_ref.clone());
                record.before = push.before.as_ref().map(|c| c.as_str().to_owned());
                record.after = push.after.as_ref().map(|c| c.as_str().to_owned());
                record.pusher = Some(push.pusher.clone());
                record.outcome = Outcome::Ignored(Skip::Marker);
                record.detail = Some(why.clone());
                let again = match self.record(&record).await {
                    Ok(r) => r.note(),
                    Err(r) => return r,
                };
                tracing::info!(%delivery, repo = %push.repo.full_name, git_ref = %push.raw_ref, "webhook push skipped by its commit message");
                answer(StatusCode::ACCEPTED, &delivery, "ignored", format!("{why}{again}"), None)
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
                let again = match self.record(&record).await {
                    Ok(r) => r.note(),
                    Err(r) => return r,
                };
                let engine = self.inner.engine.clone();
                let id = delivery.clone();
                self.inner.tasks.spawn(async move {
                    engine.on_push(&id, &push).await;
                    drop(slot);
                });
                answer(StatusCode::ACCEPTED, &delivery, "accepted", format!("push recorded; redeploys are requested in the background{again}"), None)
            }
        }
    }

    /// Records a body refused as too large, under its GUID, when its headers look like GitHub's, the GUID is new and
    /// the per-minute quota allows: its signature cannot be checked, so it holds the headers' words and the size only,
    /// never overwrites a record, and does not act (GitHub's redelivery of a real one is processed as a retry).
    async fn record_too_large(&self, req: &Request, bytes: u64) {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let delivery = header("x-github-delivery").and_then(|g| DeliveryId::parse(g).ok());
        let event = github::parse_event_name(header("x-github-event")).ok();
        let (Some(delivery), Some(event)) = (delivery, event) else {
            tracing::warn!(bytes, remote = %req.remote_addr(), "webhook body over the limit, not recorded: no GitHub delivery headers");
            return;
        };
        if !self.inner.too_large_quota.take() {
            tracing::warn!(%delivery, bytes, "webhook body over the limit, not recorded: too many this minute");
            return;
        }
        let hook = github::Hook::from_headers(header("x-github-hook-id"), header("x-github-hook-installation-target-type"));
        let mut record = DeliveryRecord::received(delivery.clone(), event, hook.id, hook.target);
        record.outcome = Outcome::TooLarge;
        record.body_bytes = Some(i64::try_from(bytes).unwrap_or(i64::MAX));
        record.detail = Some(format!(
            "the body ({bytes} bytes, or more) is over the {MAX_BODY_BYTES}-byte limit: answered 413, not read further and not kept; its signature could not be checked"
        ));
        match self.inner.engine.record_refused_delivery(&record).await {
            Ok(true) => tracing::warn!(%delivery, bytes, "webhook body over the limit: recorded as too_large"),
            Ok(false) => tracing::warn!(%delivery, bytes, "webhook body over the limit under a GUID already recorded: left as it was"),
            Err(e) => tracing::error!(%delivery, error = %e, "webhook body over the limit: could not be recorded"),
        }
    }

    /// Records the delivery before anything acts on it (`Engine::receive_delivery`: a GUID seen before runs again
    /// only if it did not act). `Err(response)` ends the request (a duplicate GUID, or the store failed).
    async fn record(&self, record: &DeliveryRecord) -> Result<Recorded, Response> {
        match self.inner.engine.receive_delivery(record).await {
            Ok(Received::New) => Ok(Recorded::New),
            Ok(Received::Retry { n, before }) => Ok(Recorded::Retry { n, before }),
            Ok(Received::Duplicate { before }) => {
                let said = format!("duplicate delivery: this GUID was already received and {}; nothing was done", if before.acted() { format!("led to `{before}`") } else { "is being processed again".into() });
                Err(answer(StatusCode::OK, &record.delivery, "duplicate", said, None))
            }
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// Routes the pushes that were recorded but not routed when the agent last stopped (a crash
    /// between the 202 and the engine's answer); their push claims keep them from acting twice.
    pub async fn resume(&self) -> Result<usize, StoreError> {
        let pending = self.inner.engine.unrouted_deliveries().await?;
        let n = pending.len();
        for record in pending {
            let engine = self.inner.engine.clone();
            self.inner.tasks.spawn(async move { engine.resume_delivery(&record).await });
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
