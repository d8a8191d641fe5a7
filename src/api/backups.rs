//! `/deployments/{id}/backups`: backups of a deployment's guest through Proxmox VE's vzdump — list, take now, delete,
//! restore over the guest or into a new deployment (`as_new`). The deployment may be destroyed: its backups outlive
//! it and are still listed and restored by its id.

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use super::deployments::Accepted;
use super::error::ApiError;
use super::payload::JsonObject;
use super::schedules::Deleted;
use super::security::TokenAuth;
use super::wire::{rfc3339, DeploymentView};
use super::ApiState;
use crate::auth::Scope;
use crate::core::backup::BackupId;
use crate::core::names::AppName;
use crate::core::validation::{FieldError, ValidationErrors};
use crate::engine::backups::BackupInfo;

#[derive(Tags)]
enum ApiTags {
    /// Backups of a deployment's guest (Proxmox VE vzdump into the configured backup storage, with Proxmox VE's own
    /// retention); they outlive the deployment.
    Backups,
}

pub struct BackupsApi {
    pub state: ApiState,
}

/// One backup.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct BackupView {
    /// The backup's name, as the paths below name it: the archive's file name on a file storage
    /// (`vzdump-lxc-10000-2030_01_02-03_00_00.tar.zst`), `<ct|vm>-<vmid>-<UTC time>` on a Proxmox Backup Server storage
    /// (`ct-10000-2030-01-02T03:00:00Z`, its volume name with `-` for `/`).
    pub name: String,
    /// Proxmox VE's volume id (`local:backup/vzdump-…`, `pbs:backup/ct/10000/2030-01-02T03:00:00Z`).
    pub volid: String,
    /// When it was made (RFC 3339 UTC).
    pub taken_at: Option<String>,
    pub size_bytes: u64,
    /// `tar.zst` (containers), `vma.zst` (VMs), … on a file storage; `pbs-ct` / `pbs-vm` on a Proxmox Backup Server
    /// storage.
    pub format: String,
    /// The VMID the guest had.
    pub vmid: Option<u32>,
    /// Marked protected in Proxmox VE: no retention removes it.
    pub protected: bool,
    /// `schedule:<tag>` (that schedule's retention prunes it) or `manual` (kept until deleted).
    pub taken_by: String,
}

impl From<BackupInfo> for BackupView {
    fn from(b: BackupInfo) -> Self {
        BackupView { name: b.volid.name(), volid: b.volid.to_string(), taken_at: b.taken_at.map(rfc3339), size_bytes: b.size_bytes, format: b.format, vmid: b.vmid, protected: b.protected, taken_by: b.origin.describe() }
    }
}

#[derive(Debug, Object)]
pub struct BackupList {
    pub deployment_id: String,
    /// Oldest first.
    pub items: Vec<BackupView>,
}

/// A restore: over the deployment's own guest (no `as_new`), or into a new deployment.
#[derive(Debug, Object)]
pub struct RestoreRequest {
    /// Restore into a new deployment instead of over the guest: same spec, this name, a new VMID from the agent's
    /// range, the backup's files and the commit it served; the old deployment (which may be destroyed) is untouched.
    pub as_new: Option<RestoreAsNew>,
}

#[derive(Debug, Object)]
pub struct RestoreAsNew {
    /// The new deployment's name (a DNS label, unique among live deployments).
    pub name: String,
}

/// The new deployment's name from `{"as_new": {"name": …}}`, `None` without `as_new`; a wrong shape is a 422 naming
/// the field.
fn as_new_name(fields: &serde_json::Map<String, serde_json::Value>) -> Result<Option<AppName>, ValidationErrors> {
    let mut errors = vec![];
    for k in fields.keys().filter(|k| k.as_str() != "as_new") {
        errors.push(FieldError::new(k.clone(), "unknown_field", "is not a field of this request"));
    }
    let name = match fields.get("as_new") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Object(o)) => {
            for k in o.keys().filter(|k| k.as_str() != "name") {
                errors.push(FieldError::new(format!("as_new.{k}"), "unknown_field", "is not a field of this request"));
            }
            match o.get("name") {
                Some(serde_json::Value::String(n)) => match AppName::parse(n) {
                    Ok(n) => Some(n),
                    Err(e) => {
                        errors.push(FieldError::new("as_new.name", e.rule, e.message));
                        None
                    }
                },
                None | Some(serde_json::Value::Null) => {
                    errors.push(FieldError::new("as_new.name", "required", "is required"));
                    None
                }
                Some(_) => {
                    errors.push(FieldError::new("as_new.name", "type", "must be a string"));
                    None
                }
            }
        }
        Some(_) => {
            errors.push(FieldError::new("as_new", "type", "must be an object: {\"name\": \"<new deployment's name>\"}"));
            None
        }
    };
    if errors.is_empty() {
        Ok(name)
    } else {
        Err(ValidationErrors(errors))
    }
}

#[derive(ApiResponse)]
pub enum Made {
    /// Made (and Proxmox VE's retention applied).
    #[oai(status = 201)]
    Created(Json<BackupView>),
}

#[OpenApi(tag = "ApiTags::Backups")]
impl BackupsApi {
    /// The deployment's backups, oldest first (its guest may be gone: backups outlive it). 409 when backups are not
    /// configured.
    #[oai(path = "/deployments/:id/backups", method = "get", operation_id = "list_backups")]
    async fn list(&self, auth: TokenAuth, /// Deployment id or name.
        id: Path<String>) -> Result<Json<BackupList>, ApiError> {
        auth.require(Scope::Read)?;
        let (d, items) = self.state.engine.backups(&id.0).await?;
        Ok(Json(BackupList { deployment_id: d.id.to_string(), items: items.into_iter().map(BackupView::from).collect() }))
    }

    /// Back the guest up now (deploy scope): a vzdump into the configured storage; the request waits for it (up to the
    /// task deadline) and its log goes into the deployment's log.
    #[oai(path = "/deployments/:id/backups", method = "post", operation_id = "take_backup")]
    async fn take(&self, auth: TokenAuth, /// Deployment id or name.
        id: Path<String>) -> Result<Made, ApiError> {
        let actor = auth.require(Scope::Deploy)?;
        let made = self.state.engine.take_backup(&id.0, &actor).await?;
        Ok(Made::Created(Json(made.into())))
    }

    /// Delete one of the deployment's backups (deploy scope). 422 names `name` when it is not a backup's name.
    #[oai(path = "/deployments/:id/backups/:name", method = "delete", operation_id = "delete_backup")]
    async fn delete(&self, auth: TokenAuth, /// Deployment id or name.
        id: Path<String>, /// The backup's name, as listed.
        name: Path<String>) -> Result<Deleted, ApiError> {
        let actor = auth.require(Scope::Deploy)?;
        let backup = self.named(&name.0)?;
        self.state.engine.delete_backup(&id.0, backup, &actor).await?;
        Ok(Deleted::NoContent)
    }

    /// Restore from one of the deployment's backups (admin scope; 202).
    ///
    /// Without `as_new`, in place: the deployment goes `deploying`, the guest is stopped, overwritten from the
    /// backup, started, and is `running` again once the app answers its health check (`failed` otherwise);
    /// everything written since the backup is lost. With `as_new: {"name": …}`, into a new deployment (the answer is
    /// the new deployment, `pending`): the deployment the backup is of may be destroyed (use its id); Proxmox VE
    /// restores the backup as a new guest at a VMID from the agent's range, on the node that holds the backup, with
    /// the new deployment's mark; the guest gets its address as any new guest and the commit the backup served is
    /// deployed and health-checked. 422 names `as_new.name` when the name is wrong or taken.
    #[oai(path = "/deployments/:id/backups/:name/restore", method = "post", operation_id = "restore_backup")]
    async fn restore(&self, auth: TokenAuth, /// Deployment id or name.
        id: Path<String>, /// The backup's name, as listed.
        name: Path<String>, body: JsonObject<RestoreRequest>) -> Result<Accepted, ApiError> {
        let actor = auth.require(Scope::Admin)?;
        let as_new = as_new_name(&body.fields).map_err(|e| ApiError::invalid(&e))?;
        let backup = self.named(&name.0)?;
        let d = match as_new {
            None => self.state.engine.restore_backup(&id.0, backup, &actor).await?,
            Some(new_name) => self.state.engine.restore_backup_as_new(&id.0, backup, new_name, &actor).await?,
        };
        Ok(Accepted::Accepted(Json(DeploymentView::from(&d))))
    }
}

impl BackupsApi {
    /// A backup's name in a path, on the configured storage (409 when backups are not configured, 422 naming `name`).
    fn named(&self, name: &str) -> Result<BackupId, ApiError> {
        let storage = self.state.engine.backup_storage()?;
        BackupId::on_storage(&storage, name, "name").map_err(|e| ApiError::invalid(&ValidationErrors(vec![e])))
    }
}
