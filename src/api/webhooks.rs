//! `/webhooks/deliveries`: every GitHub webhook delivery received and what it led to (filterable, paginated).

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};

use super::error::ApiError;
use super::paging::Paging;
use super::security::TokenAuth;
use super::wire::rfc3339;
use super::ApiState;
use crate::auth::Scope;
use crate::core::deployment::DeploymentId;
use crate::core::webhook::{DeliveryId, Outcome};
use crate::engine::EngineError;
use crate::core::delivery::{DeliveryFilter, DeliveryRecord, TargetOutcome};

#[derive(Tags)]
enum ApiTags {
    /// GitHub push webhooks (deliveries arrive at `POST /webhooks/github`, outside `/api/v1`, authenticated by their HMAC signature).
    Webhooks,
}

pub struct WebhooksApi {
    pub state: ApiState,
}

/// What a delivery did to one deployment of its repository.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct DeliveryTargetView {
    pub deployment: String,
    /// As the delivery's `outcome`.
    pub outcome: String,
    pub detail: Option<String>,
}

/// An earlier attempt of a delivery GUID that was processed again.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct EarlierAttemptView {
    /// As the delivery's `outcome`.
    pub outcome: String,
    pub detail: Option<String>,
    /// When that attempt ended, RFC 3339 UTC.
    pub at: String,
}

/// One webhook delivery as recorded.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct DeliveryView {
    /// `X-GitHub-Delivery`.
    pub delivery: String,
    /// `X-GitHub-Event`: push, ping, …
    pub event: String,
    /// `owner/repo`.
    pub repo: Option<String>,
    #[oai(rename = "ref")]
    pub git_ref: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub pusher: Option<String>,
    /// The hook that sent it (`X-GitHub-Hook-ID`, or a ping's payload).
    pub hook_id: Option<i64>,
    /// What that hook belongs to (`X-GitHub-Hook-Installation-Target-Type`): `repository`, `organization`, …
    pub hook_target: Option<String>,
    /// The delivery that carried the same push (repository, ref, before, after) first, when this one did not: a copy
    /// from another hook, a late copy, or the branch moving along the same pair again.
    pub same_push_as: Option<String>,
    /// The size of a body refused as too large (the body is never kept).
    pub body_bytes: Option<i64>,
    /// RFC 3339 UTC.
    pub received_at: String,
    pub updated_at: String,
    /// received, pong, redeploy_requested, queued, already_at, refused, failed, too_large, or ignored_<reason>
    /// (tag, skip_marker, paths, branch_deleted, not_a_branch, no_deployment, other_branch, auto_redeploy_off, destroyed,
    /// same_push, event, invalid_payload). With several deployments, the one with the most effect.
    pub outcome: String,
    /// Why, in words (the engine's answer when it refused).
    pub detail: Option<String>,
    pub targets: Vec<DeliveryTargetView>,
    /// How many times GitHub sent this GUID again after it acted (answered "duplicate delivery", nothing done).
    pub redeliveries: i64,
    /// How many times this GUID came again after an outcome that did not act (refused, failed, too_large,
    /// ignored_…) and was processed again; `earlier` holds what those attempts led to.
    pub retries: i64,
    pub earlier: Vec<EarlierAttemptView>,
}

#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    pub total: u64,
    pub limit: u32,
    pub offset: u32,
    /// The `offset` of the next page, when there is one.
    pub next_offset: Option<u32>,
}

impl From<&TargetOutcome> for DeliveryTargetView {
    fn from(t: &TargetOutcome) -> Self {
        DeliveryTargetView { deployment: t.deployment.to_string(), outcome: t.outcome.as_str().into(), detail: t.detail.clone() }
    }
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> Self {
        DeliveryView {
            delivery: d.delivery.to_string(),
            event: d.event,
            repo: d.repo,
            git_ref: d.git_ref,
            before: d.before,
            after: d.after,
            pusher: d.pusher,
            hook_id: d.hook_id,
            hook_target: d.hook_target,
            same_push_as: d.same_push_as.map(|g| g.to_string()),
            body_bytes: d.body_bytes,
            received_at: rfc3339(d.received_at),
            updated_at: rfc3339(d.updated_at),
            outcome: d.outcome.as_str().into(),
            detail: d.detail,
            targets: d.targets.iter().map(DeliveryTargetView::from).collect(),
            redeliveries: d.redeliveries,
            retries: d.retries,
            earlier: d.earlier.into_iter().map(|e| EarlierAttemptView { outcome: e.outcome, detail: e.detail, at: rfc3339(e.at) }).collect(),
        }
    }
}

#[OpenApi(tag = "ApiTags::Webhooks")]
impl WebhooksApi {
    /// Webhook deliveries, newest first: what each push, ping or other event led to.
    #[oai(path = "/webhooks/deliveries", method = "get", operation_id = "list_webhook_deliveries")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: TokenAuth,
        /// Only deliveries for this repository (`owner/repo`, case-insensitive).
        repo: Query<Option<String>>,
        /// Only deliveries that concerned this deployment (id or name).
        deployment: Query<Option<String>>,
        /// Only this event (`push`, `ping`, …).
        event: Query<Option<String>>,
        /// Only this outcome (see `outcome` in the response).
        outcome: Query<Option<String>>,
        /// Page size (default 20, at most the configured maximum, 100 by default).
        limit: Query<Option<u32>>,
        /// How many to skip.
        offset: Query<Option<u32>>,
    ) -> Result<Json<DeliveryPage>, ApiError> {
        auth.require(Scope::Read)?;
        let paging = Paging::parse(limit.0, offset.0, self.state.max_page_size)?;
        let outcome = match outcome.0.as_deref() {
            None => None,
            Some(o) => Some(Outcome::parse(o).ok_or_else(|| {
                let all: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
                ApiError::invalid_field("outcome", "enum", format!("must be one of: {}", all.join(", ")))
            })?),
        };
        if let Some(e) = &event.0 {
            crate::core::webhook::parse_event_name(Some(e)).map_err(|err| ApiError::invalid_field("event", err.rule, err.message))?;
        }
        if repo.0.as_ref().is_some_and(|r| r.is_empty() || r.chars().count() > 200) {
            return Err(ApiError::invalid_field("repo", "length", "must be owner/repo, 1-200 characters"));
        }
        let deployment = match deployment.0.as_deref() {
            None => None,
            Some(d) => Some(match DeploymentId::parse(d) {
                Some(id) => id,
                None => match self.state.engine.find(d).await {
                    Ok(found) => found.id,
                    Err(EngineError::NotFound(_)) => {
                        return Err(ApiError::invalid_field("deployment", "exists", "must be the id or name of a deployment"))
                    }
                    Err(e) => return Err(e.into()),
                },
            }),
        };
        let filter = DeliveryFilter { repo: repo.0, deployment, event: event.0, outcome };
        let (items, total) = self.state.engine.deliveries(&filter, paging.limit, paging.offset).await?;
        Ok(Json(DeliveryPage {
            next_offset: paging.next_offset(items.len(), total),
            items: items.into_iter().map(DeliveryView::from).collect(),
            total,
            limit: paging.limit,
            offset: paging.offset,
        }))
    }

    /// One delivery by its GUID (`X-GitHub-Delivery`).
    #[oai(path = "/webhooks/deliveries/:delivery", method = "get", operation_id = "get_webhook_delivery")]
    async fn get(&self, auth: TokenAuth, /// The delivery GUID.
        delivery: Path<String>) -> Result<Json<DeliveryView>, ApiError> {
        auth.require(Scope::Read)?;
        let id = DeliveryId::parse(&delivery.0).map_err(|e| ApiError::invalid_field("delivery", e.rule, e.message))?;
        let found = self.state.engine.delivery(&id).await?;
        found.map(|d| Json(DeliveryView::from(d))).ok_or_else(|| ApiError::NotFound(poem_openapi::payload::Json(super::error::ErrorBody {
            error: "not_found".into(),
            message: format!("no webhook delivery {:?}", delivery.0),
        })))
    }
}
