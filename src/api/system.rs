//! Liveness, readiness, monitoring figures, Prometheus metrics, the resource view and the audit log.

use poem_openapi::param::Query;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use super::error::ApiError;
use super::security::TokenAuth;
use super::wire::rfc3339;
use super::ApiState;
use crate::auth::Scope;
use crate::core::status::Status;
use crate::engine::reconcile::{GuestRef, ReconcileReport};
use crate::engine::EngineError;

#[derive(Tags)]
enum ApiTags {
    /// Health, monitoring and the cluster's resources.
    System,
}

pub struct SystemApi {
    pub state: ApiState,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Health {
    /// Always `ok` while the process serves requests.
    pub status: String,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Readiness {
    pub database: bool,
    /// `not_configured` when no Proxmox cluster is configured.
    pub proxmox: String,
    /// `ok`, `unreachable`, `certificate_mismatch` (TLS failed against the pinned fingerprint or CA),
    /// `token_rejected` or `failing`; absent without a cluster.
    #[oai(validator(pattern = "^(ok|unreachable|certificate_mismatch|token_rejected|failing)$"))]
    pub proxmox_state: Option<String>,
    /// Why Proxmox VE is not usable now, in words.
    pub proxmox_reason: Option<String>,
    /// The cluster's Proxmox VE version, when it answered.
    pub proxmox_version: Option<String>,
    /// `ok`, or `read-only` when the store lost acknowledged writes (the agent then changes nothing
    /// until `pvedeploy recover`).
    #[oai(validator(pattern = "^(ok|read-only)$"))]
    pub store: String,
    /// Why the agent is read-only and what to do.
    pub store_reason: Option<String>,
    /// The last check of the cluster (`pvedeploy check`; run at start and renewed when older than five minutes):
    /// `ready`, `problems` or `unchecked`, with every item. Absent without a cluster or before the first check
    /// ended. Problems do not make `/ready` fail: they refuse only the deployments they make certain to fail.
    pub check: Option<CheckView>,
}

/// The cluster check's verdict and items.
#[derive(Debug, Object)]
pub struct CheckView {
    /// `ready`, `problems` or `unchecked`.
    #[oai(validator(pattern = "^(ready|problems|unchecked)$"))]
    pub state: String,
    pub items: Vec<CheckItemView>,
}

/// One checked thing.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct CheckItemView {
    /// `version`, `token`, `privileges`, `nodes`, `vm_template`, `lxc_template`, `storage`, `bridge`, `node_ssh`,
    /// `vmid_range` or `address_pool`.
    pub check: String,
    /// `ok`, `warning`, `problem` or `unchecked`.
    #[oai(validator(pattern = "^(ok|warning|problem|unchecked)$"))]
    pub verdict: String,
    pub text: String,
    /// What to do, for a warning or a problem.
    pub fix: Option<String>,
}

impl From<crate::core::check::Report> for CheckView {
    fn from(r: crate::core::check::Report) -> Self {
        CheckView {
            state: r.state().to_string(),
            items: r.items.into_iter().map(|i| CheckItemView { check: i.check.to_string(), verdict: i.verdict.as_str().to_string(), text: i.text, fix: i.fix }).collect(),
        }
    }
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Ready to serve.
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// A dependency is not ready.
    #[oai(status = 503)]
    NotReady(Json<Readiness>),
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct StatusCount {
    pub status: String,
    pub count: u64,
}

/// The original design's monitoring figures.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct StatusReport {
    pub total: u64,
    pub by_status: Vec<StatusCount>,
    /// Deploys (releases) that went live / (those plus those that failed); absent until one ended.
    pub success_rate: Option<f64>,
    /// How long a deploy that went live took, from its start to the app answering its health check, in
    /// seconds: the mean over every such deploy.
    pub mean_deploy_seconds: Option<f64>,
    /// The 95th percentile of the same, over the newest 1,000 deploys that went live.
    pub p95_deploy_seconds: Option<f64>,
    /// Proxmox resource use, when known.
    pub resources: Resources,
    pub uptime_seconds: u64,
}

#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct NodeUse {
    pub node: String,
    pub online: bool,
    /// Guests on the node (templates excluded).
    pub guests: u32,
    pub cpu_used: f64,
    pub cpu_total: u32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
}

#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct StorageUse {
    pub node: String,
    pub storage: String,
    pub shared: bool,
    pub used_bytes: u64,
    pub total_bytes: u64,
}

/// Proxmox nodes and storages.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Resources {
    pub available: bool,
    /// Why the figures are missing, when they are.
    pub reason: Option<String>,
    pub nodes: Vec<NodeUse>,
    pub storages: Vec<StorageUse>,
    /// When the figures were read (RFC 3339).
    pub as_of: Option<String>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AuditView {
    pub at: String,
    pub actor: String,
    pub door: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: String,
}

/// The cluster's figures as the API shows them; when there are none, why.
async fn resources_now(state: &ApiState) -> Resources {
    match state.engine.cluster_figures().await {
        Ok(f) => Resources {
            available: true,
            reason: None,
            nodes: f
                .nodes
                .into_iter()
                .map(|n| NodeUse {
                    node: n.node,
                    online: n.online,
                    guests: n.guests,
                    cpu_used: n.cpu_used,
                    cpu_total: n.cpu_total,
                    memory_used_bytes: n.memory_used,
                    memory_total_bytes: n.memory_total,
                    disk_used_bytes: n.disk_used,
                    disk_total_bytes: n.disk_total,
                })
                .collect(),
            storages: f
                .storages
                .into_iter()
                .map(|s| StorageUse { node: s.node, storage: s.storage, shared: s.shared, used_bytes: s.used, total_bytes: s.total })
                .collect(),
            as_of: Some(rfc3339(f.as_of)),
        },
        Err(e) => Resources { available: false, reason: Some(e.to_string()), nodes: vec![], storages: vec![], as_of: None },
    }
}

fn percentile(sorted: &[i64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0)
}

#[OpenApi(tag = "ApiTags::System")]
impl SystemApi {
    /// Liveness: answers while the process serves requests. No token needed.
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self) -> Json<Health> {
        Json(Health { status: "ok".into() })
    }

    /// Readiness: the database answers (and Proxmox, when configured).
    #[oai(path = "/ready", method = "get", operation_id = "ready")]
    async fn ready(&self, auth: TokenAuth) -> Result<ReadyResponse, ApiError> {
        auth.require(Scope::Read)?;
        let database = self.state.engine.database_answers().await;
        let pve = self.state.engine.proxmox_reachability().await;
        let proxmox_ok = pve.as_ref().is_none_or(|r| r.is_ok());
        let r = Readiness {
            database,
            proxmox: self.state.proxmox.clone().unwrap_or_else(|| "not_configured".into()),
            proxmox_state: pve.as_ref().map(|r| r.as_str().to_string()),
            proxmox_reason: pve.as_ref().and_then(|r| r.reason().map(String::from)),
            proxmox_version: match &pve {
                Some(crate::engine::reachability::Reachability::Ok { version }) => Some(version.clone()),
                _ => None,
            },
            store: if self.state.engine.read_only().is_some() { "read-only" } else { "ok" }.into(),
            store_reason: self.state.engine.read_only().map(String::from),
            check: self.state.engine.last_check().map(CheckView::from),
        };
        Ok(if database && proxmox_ok && r.store_reason.is_none() { ReadyResponse::Ready(Json(r)) } else { ReadyResponse::NotReady(Json(r)) })
    }

    /// Counts by status, success rate, mean and p95 deployment time, and Proxmox resource use.
    #[oai(path = "/status", method = "get", operation_id = "status")]
    async fn status(&self, auth: TokenAuth) -> Result<Json<StatusReport>, ApiError> {
        auth.require(Scope::Read)?;
        let stats = self.state.engine.deployment_stats().await?;
        let count = |s: Status| stats.by_status.iter().find(|(st, _)| *st == s).map(|(_, n)| *n).unwrap_or(0);
        let (succeeded, failed) = (stats.deploys.succeeded, stats.deploys.failed);
        let d = &stats.deploys.recent_durations_ms;
        Ok(Json(StatusReport {
            total: stats.by_status.iter().map(|(_, n)| n).sum(),
            by_status: Status::ALL.iter().map(|s| StatusCount { status: s.as_str().into(), count: count(*s) }).collect(),
            success_rate: (succeeded + failed > 0).then(|| succeeded as f64 / (succeeded + failed) as f64),
            mean_deploy_seconds: (succeeded > 0).then(|| stats.deploys.succeeded_ms_sum as f64 / succeeded as f64 / 1000.0),
            p95_deploy_seconds: percentile(d, 95.0),
            resources: resources_now(&self.state).await,
            uptime_seconds: self.state.started.elapsed().as_secs(),
        }))
    }

    /// Proxmox nodes and storages with used and free CPU, memory and disk.
    #[oai(path = "/resources", method = "get", operation_id = "resources")]
    async fn resources(&self, auth: TokenAuth) -> Result<Json<Resources>, ApiError> {
        auth.require(Scope::Read)?;
        Ok(Json(resources_now(&self.state).await))
    }

    /// Prometheus text format: deployments by status, deployment times, request counts and latencies.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self, auth: TokenAuth) -> Result<PlainText<String>, ApiError> {
        auth.require(Scope::Read)?;
        let stats = self.state.engine.deployment_stats().await?;
        Ok(PlainText(self.state.metrics.render(&stats)))
    }

    /// The reconciler's last findings: guests tagged `pvedeploy` that no deployment owns (orphans),
    /// recorded guests Proxmox no longer has (missing), guests found on another node (moved).
    /// Runs it first when it has not run yet.
    #[oai(path = "/reconcile", method = "get", operation_id = "reconcile_report")]
    async fn reconcile_report(&self, auth: TokenAuth) -> Result<Json<ReconcileView>, ApiError> {
        auth.require(Scope::Read)?;
        let engine = &self.state.engine;
        let report = match engine.last_reconcile() {
            Some(r) => Some(r),
            None => engine.reconcile().await?,
        };
        report.map(|r| Json(ReconcileView::from(r))).ok_or_else(no_cluster)
    }

    /// Runs the reconciler now (admin scope); removes orphans only when `remove_orphans` is configured.
    #[oai(path = "/reconcile", method = "post", operation_id = "reconcile_now")]
    async fn reconcile_now(&self, auth: TokenAuth) -> Result<Json<ReconcileView>, ApiError> {
        auth.require(Scope::Admin)?;
        self.state.engine.reconcile().await?.map(|r| Json(ReconcileView::from(r))).ok_or_else(no_cluster)
    }

    /// The audit log, newest first (admin scope).
    #[oai(path = "/audit", method = "get", operation_id = "audit")]
    async fn audit(&self, auth: TokenAuth, limit: Query<Option<u32>>, offset: Query<Option<u32>>) -> Result<Json<Vec<AuditView>>, ApiError> {
        auth.require(Scope::Admin)?;
        let limit = limit.0.unwrap_or(50);
        if limit == 0 || limit > self.state.max_page_size {
            return Err(ApiError::invalid_field("limit", "range", format!("must be between 1 and {}", self.state.max_page_size)));
        }
        let entries = self.state.engine.audit_entries(limit, offset.0.unwrap_or(0)).await?;
        Ok(Json(
            entries
                .into_iter()
                .map(|e| AuditView { at: rfc3339(e.at), actor: e.actor, door: e.door, action: e.action, target: e.target, detail: e.detail })
                .collect(),
        ))
    }
}

fn no_cluster() -> ApiError {
    ApiError::from(EngineError::Conflict("no Proxmox cluster is configured: there is nothing to reconcile".into()))
}

#[derive(Debug, Object)]
pub struct ReconcileView {
    /// When the reconciler ran (RFC 3339).
    pub at: String,
    /// Guests tagged `pvedeploy` on the cluster.
    pub guests_seen: u32,
    pub orphans: Vec<GuestRefView>,
    pub missing: Vec<MissingGuestView>,
    pub moved: Vec<MovedGuestView>,
    /// Orphans deleted by this run (only with `remove_orphans`).
    pub removed: Vec<GuestRefView>,
    pub errors: Vec<String>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct GuestRefView {
    pub node: String,
    pub vmid: u32,
    /// `vm` or `lxc`
    #[oai(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct MissingGuestView {
    pub deployment: String,
    pub name: String,
    pub node: Option<String>,
    pub vmid: u32,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct MovedGuestView {
    pub deployment: String,
    pub vmid: u32,
    pub recorded_node: Option<String>,
    pub node: String,
}

impl From<&GuestRef> for GuestRefView {
    fn from(g: &GuestRef) -> Self {
        GuestRefView { node: g.node.clone(), vmid: g.vmid, kind: g.kind.to_string(), name: g.name.clone() }
    }
}

impl From<ReconcileReport> for ReconcileView {
    fn from(r: ReconcileReport) -> Self {
        ReconcileView {
            at: rfc3339(r.at),
            guests_seen: r.guests_seen as u32,
            orphans: r.orphans.iter().map(GuestRefView::from).collect(),
            missing: r.missing.into_iter().map(|m| MissingGuestView { deployment: m.deployment, name: m.name, node: m.node, vmid: m.vmid }).collect(),
            moved: r.moved.into_iter().map(|m| MovedGuestView { deployment: m.deployment, vmid: m.vmid, recorded_node: m.recorded_node, node: m.node }).collect(),
            removed: r.removed.iter().map(GuestRefView::from).collect(),
            errors: r.errors,
        }
    }
}
