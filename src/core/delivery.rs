//! A GitHub webhook delivery as recorded: what its headers and payload said, what it led to for each deployment,
//! and the attempts before the latest (the webhook door records it before any effect; the engine finishes it).

use serde::{Deserialize, Serialize};

use crate::core::deployment::DeploymentId;
use crate::core::webhook::{DeliveryId, Outcome};

/// A delivery as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub delivery: DeliveryId,
    /// `X-GitHub-Event`.
    pub event: String,
    /// `owner/repo` as the payload named it.
    pub repo: Option<String>,
    /// The hosts of the repository's URLs in a push (kept so an interrupted push can be routed again).
    pub repo_hosts: Vec<String>,
    pub git_ref: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub pusher: Option<String>,
    /// The hook that sent it (`X-GitHub-Hook-ID`, or a `ping`'s payload).
    pub hook_id: Option<i64>,
    /// What the hook belongs to (`X-GitHub-Hook-Installation-Target-Type`: `repository`, `organization`, …).
    pub hook_target: Option<String>,
    /// The delivery that first carried the same push (repository, ref, before, after), when this one is not it.
    pub same_push_as: Option<DeliveryId>,
    /// The body's size, kept for a body refused as too large (the body itself is never kept).
    pub body_bytes: Option<i64>,
    pub received_at: i64,
    pub updated_at: i64,
    pub outcome: Outcome,
    pub detail: Option<String>,
    /// Each deployment of the repository and what the delivery did to it.
    pub targets: Vec<TargetOutcome>,
    /// How many times the same GUID came again after it acted (answered "duplicate delivery", nothing done).
    pub redeliveries: i64,
    /// How many times the same GUID came again after an outcome that did not act, and was processed again.
    pub retries: i64,
    /// What the attempts before the latest led to, oldest first (at most [`EARLIER_KEPT`]).
    pub earlier: Vec<EarlierAttempt>,
}

/// The most earlier attempts a delivery keeps.
pub const EARLIER_KEPT: usize = 20;

/// One earlier attempt of a delivery that was processed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarlierAttempt {
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetOutcome {
    pub deployment: DeploymentId,
    pub outcome: Outcome,
    pub detail: Option<String>,
}

/// Which deliveries a listing shows (all given conditions must hold).
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// `owner/repo`, case-insensitive.
    pub repo: Option<String>,
    pub deployment: Option<DeploymentId>,
    pub event: Option<String>,
    pub outcome: Option<Outcome>,
}
