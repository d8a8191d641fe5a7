//! `/deployments/{id}/snapshots`: a guest's snapshots — list, take by hand, delete, roll back (admin).

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use super::deployments::Accepted;
use super::error::ApiError;
use super::payload::{FieldReader, JsonObject};
use super::schedules::Deleted;
use super::security::TokenAuth;
use super::wire::{rfc3339, DeploymentView};
use super::ApiState;
use crate::auth::Scope;
use crate::core::snapshot::{Origin, SnapshotName, SnapshotNote};
use crate::core::validation::ValidationErrors;
use crate::engine::snapshots::SnapshotInfo;

#[derive(Tags)]
enum ApiTags {
    /// Snapshots of a deployment's guest: taken by hand or by snapshot schedules, rolled back to, deleted.
    Snapshots,
}

pub struct SnapshotsApi {
    pub state: ApiState,
}

/// A snapshot to take by hand; no schedule ever deletes it.
#[derive(Debug, Object)]
pub struct SnapshotRequest {
    /// 2-40 characters: a letter, then letters, digits, `_` or `-` (Proxmox VE's rule); not `current`, not `pvd-…`
    /// (the names schedules give).
    pub name: String,
    /// One line, at most 200 characters.
    pub description: Option<String>,
}

/// One snapshot of the guest.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SnapshotView {
    pub name: String,
    /// When Proxmox VE took it (RFC 3339 UTC).
    pub taken_at: Option<String>,
    /// Who took it (`api:<token>`, `schedule:<id>`, …) when pvedeploy did; absent for one taken in Proxmox VE.
    pub taken_by: Option<String>,
    /// `schedule` (pruned by that schedule's `keep`), `earlier_schedule` (`pvedeploy-YYYYMMDD-HHMMSS`, from before
    /// names carried the schedule: never pruned) or `manual` (never pruned).
    pub kind: String,
    pub description: String,
    /// The VM's memory is part of it.
    pub vmstate: bool,
    /// Proxmox VE's snapshot list reports no size; absent until it does.
    pub size_bytes: Option<u64>,
    /// The commit the guest served when it was taken (what a rollback serves again); absent when pvedeploy did
    /// not record it.
    pub commit: Option<String>,
}

#[derive(Debug, Object)]
pub struct SnapshotList {
    pub deployment_id: String,
    /// Oldest first.
    pub items: Vec<SnapshotView>,
}

#[derive(ApiResponse)]
pub enum Taken {
    /// Taken.
    #[oai(status = 201)]
    Created(Json<SnapshotView>),
}

impl From<SnapshotInfo> for SnapshotView {
    fn from(s: SnapshotInfo) -> Self {
        let kind = match s.origin {
            Origin::Schedule { .. } => "schedule",
            Origin::EarlierSchedule => "earlier_schedule",
            Origin::Other => "manual",
        };
        SnapshotView { name: s.name, taken_at: s.taken_at.map(rfc3339), taken_by: s.taken_by, kind: kind.into(), description: s.description, vmstate: s.vmstate, size_bytes: None, commit: s.serving.map(|c| c.as_str().to_string()) }
    }
}

fn existing(name: &str) -> Result<SnapshotName, ApiError> {
    SnapshotName::parse_existing(name).map_err(|e| ApiError::invalid(&ValidationErrors(vec![e])))
}

#[OpenApi(tag = "ApiTags::Snapshots")]
impl SnapshotsApi {
    /// The guest's snapshots, oldest first.
    #[oai(path = "/deployments/:id/snapshots", method = "get", operation_id = "list_snapshots")]
    async fn list(&self, auth: TokenAuth, /// Deployment id or name.
        id: Path<String>) -> Result<Json<SnapshotList>, ApiError> {
        auth.require(Scope::Read)?;
        let (d, items) = self.state.engine.snapshots(&id.0).await?;
        Ok(Json(SnapshotList { deployment_id: d.id.to_string(), items: items.into_iter().map(SnapshotView::from).collect() }))
    }

    /// Take a snapshot by hand (deploy scope); no schedule ever deletes it.
    ///
    /// 422 names every wrong field (`name`, `description`) and its rule; nothing is taken then.
    #[oai(path = "/deployments/:id/snapshots", method = "post", operation_id = "take_snapshot")]
    async fn take(&self, auth: TokenAuth, /// Deployment id or name.
        id: Path<String>, body: JsonObject<SnapshotRequest>) -> Result<Taken, ApiError> {
        let actor = auth.require(Scope::Deploy)?;
        let mut r = FieldReader::new(&body.fields);
        let (name, description) = (r.string("name"), r.string("description"));
        let mut errs = r.finish();
        let name = match name {
            Some(n) => errs.take(SnapshotName::parse(&n)),
            None if errs.0.iter().any(|e| e.field == "name") => None,
            None => errs.take(Err(crate::core::validation::FieldError::new("name", "required", "is required: the snapshot's name"))),
        };
        let note = errs.take(SnapshotNote::parse(description.as_deref().unwrap_or("")));
        let (Some(name), Some(note), true) = (name, note, errs.is_empty()) else { return Err(ApiError::invalid(&errs)) };
        let taken = self.state.engine.take_snapshot(&id.0, name, note, &actor).await?;
        Ok(Taken::Created(Json(taken.into())))
    }

    /// Delete a snapshot (deploy scope), a schedule's included.
    #[oai(path = "/deployments/:id/snapshots/:name", method = "delete", operation_id = "delete_snapshot")]
    async fn delete(&self, auth: TokenAuth, /// Deployment id or name.
        id: Path<String>, /// Snapshot name.
        name: Path<String>) -> Result<Deleted, ApiError> {
        let actor = auth.require(Scope::Deploy)?;
        self.state.engine.delete_snapshot(&id.0, existing(&name.0)?, &actor).await?;
        Ok(Deleted::NoContent)
    }

    /// Roll the guest back to a snapshot (admin scope; 202): the deployment goes `deploying`, the guest is stopped,
    /// rolled back and started, and it ends `running` once the app answers its health check (`failed` otherwise).
    /// What changed on the guest since the snapshot is lost.
    #[oai(path = "/deployments/:id/snapshots/:name/rollback", method = "post", operation_id = "rollback_snapshot")]
    async fn rollback(&self, auth: TokenAuth, /// Deployment id or name.
        id: Path<String>, /// Snapshot name.
        name: Path<String>) -> Result<Accepted, ApiError> {
        let actor = auth.require(Scope::Admin)?;
        let d = self.state.engine.rollback_snapshot(&id.0, existing(&name.0)?, &actor).await?;
        Ok(Accepted::Accepted(Json(DeploymentView::from(&d))))
    }
}
