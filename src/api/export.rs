//! `/deployments/{id}/terraform` (the export as JSON or a `.tar.gz`) and `/drift`: the Terraform side of the HTTP door.

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use super::error::{ApiError, ErrorBody};
use super::security::TokenAuth;
use super::wire::rfc3339;
use super::ApiState;
use crate::auth::Scope;
use crate::engine::export::{ExportError, Rendered};
use crate::export::hcl::{resource_name, resource_type};
use crate::export::drift::Unreadable;
use crate::export::Difference;
use crate::engine::now_millis;

#[derive(Tags)]
enum ApiTags {
    /// Terraform export (bpg/proxmox) and drift.
    Terraform,
}

pub struct ExportApi {
    pub state: ApiState,
}

/// One generated file.
#[derive(Debug, Object)]
pub struct TerraformFile {
    /// Path inside the export folder, e.g. `main.tf`.
    pub path: String,
    pub content: String,
}

/// A deployment's Terraform export, rendered from its live guest.
#[derive(Debug, Object)]
pub struct TerraformExport {
    pub deployment_id: String,
    pub name: String,
    /// The resource address the import block targets, e.g. `proxmox_virtual_environment_vm.shop`.
    pub resource: String,
    pub files: Vec<TerraformFile>,
    /// What the first `terraform plan` after `terraform import` will still show (checked with pvedeploy's model of
    /// the bpg provider's import, `hcl-export/schema/`), or what Proxmox has that the export cannot describe.
    /// Empty when the plan will say "No changes".
    pub warnings: Vec<String>,
    /// When this export was rendered (RFC 3339).
    pub generated_at: String,
}

/// One difference between the store, the live guest and the export on disk.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct DriftItem {
    pub deployment_id: String,
    pub deployment: String,
    /// `memory_mib`, `cores`, `disk_gb`, `tags`, `started`, `guest`, `export`, `export:<file>` (the file on disk:
    /// edited, removed, or extra) or `live:<file>` (the file rendered now from the live guest differs from what was
    /// written: some exported attribute changed on Proxmox; `live` and `export` then hold the lines that differ).
    pub field: String,
    /// What the store recorded (absent when the store has no say).
    pub store: Option<String>,
    /// What Proxmox has now (absent when the guest is gone or unreadable).
    pub live: Option<String>,
    /// What the export on disk says (absent when it is missing).
    pub export: Option<String>,
    pub message: String,
}

/// A deployment whose guest or export could not be read, so its drift is unknown.
#[derive(Debug, Object)]
pub struct UnreadableItem {
    pub deployment_id: String,
    pub deployment: String,
    /// `guest` (Proxmox did not answer, or not in time) or `export` (the folder on disk could not be read).
    pub part: String,
    /// The guest the store records, `node/vmid`.
    pub guest: String,
    /// Why, in words.
    pub reason: String,
}

/// The drift of every deployment that has a guest.
#[derive(Debug, Object)]
pub struct DriftReport {
    /// How many deployments were compared in full (their guest and export read).
    pub checked: u64,
    /// Empty when store, Proxmox and exports agree (for the deployments that could be read).
    pub differences: Vec<DriftItem>,
    /// Deployments that could not be checked, each with the reason: not differences, and empty when all were read.
    pub unreadable: Vec<UnreadableItem>,
    pub generated_at: String,
}

#[derive(ApiResponse)]
pub enum ExportResponse {
    /// The files as JSON.
    #[oai(status = 200)]
    Json(Json<TerraformExport>),
    /// The files as a gzip-compressed tarball holding one folder named after the deployment.
    #[oai(status = 200, content_type = "application/gzip")]
    Tarball(Binary<Vec<u8>>, #[oai(header = "Content-Disposition")] String),
}

#[OpenApi(tag = "ApiTags::Terraform")]
impl ExportApi {
    /// A deployment's Terraform export (bpg/proxmox), rendered now from the live guest.
    ///
    /// `format=json` (default) answers the files as JSON; `format=tar.gz` as a tarball. 404: no such deployment;
    /// 409: it has no guest (not provisioned, destroyed, or deleted on Proxmox) or no cluster is configured.
    #[oai(path = "/deployments/:id/terraform", method = "get", operation_id = "deployment_terraform")]
    async fn terraform(
        &self,
        auth: TokenAuth,
        /// Deployment id or name.
        id: Path<String>,
        /// `json` (default) or `tar.gz`.
        format: Query<Option<String>>,
    ) -> Result<ExportResponse, ApiError> {
        auth.require(Scope::Read)?;
        let tarball = match format.0.as_deref() {
            None | Some("json") => false,
            Some("tar.gz") => true,
            Some(_) => return Err(ApiError::invalid_field("format", "enum", "must be one of: json, tar.gz")),
        };
        let r = self.state.exports.render(&id.0).await.map_err(api_error)?;
        if tarball {
            return tar_response(&r);
        }
        Ok(ExportResponse::Json(Json(TerraformExport {
            deployment_id: r.deployment.id.to_string(),
            name: r.deployment.spec.name.to_string(),
            resource: format!("{}.{}", resource_type(r.deployment.spec.guest_type), resource_name(&r.deployment.spec.name)),
            files: r.files.into_iter().map(|f| TerraformFile { path: f.path, content: f.content }).collect(),
            warnings: r.warnings,
            generated_at: rfc3339(r.generated_at),
        })))
    }

    /// The same export as a `.tar.gz` (one folder named after the deployment).
    #[oai(path = "/deployments/:id/terraform.tar.gz", method = "get", operation_id = "deployment_terraform_tarball")]
    async fn terraform_tarball(&self, auth: TokenAuth, /// Deployment id or name.
        id: Path<String>) -> Result<ExportResponse, ApiError> {
        auth.require(Scope::Read)?;
        let r = self.state.exports.render(&id.0).await.map_err(api_error)?;
        tar_response(&r)
    }

    /// Differences between the store, the live Proxmox guests and the exports on disk.
    ///
    /// For every deployment with a guest: memory, cores, disk size changed behind our back, the guest deleted,
    /// its tags removed, its run state, any exported attribute changed on Proxmox (the export rendered now against
    /// the files as written), the export edited by hand, missing, without its manifest, or with files pvedeploy did
    /// not write. Guests are read concurrently under one deadline (20 s), so the answer comes within about that
    /// however Proxmox behaves; a guest or export that could not be read is listed in `unreadable`, with the reason.
    #[oai(path = "/drift", method = "get", operation_id = "drift")]
    async fn drift(&self, auth: TokenAuth) -> Result<Json<DriftReport>, ApiError> {
        auth.require(Scope::Read)?;
        let drift = self.state.exports.drift().await.map_err(api_error)?;
        Ok(Json(DriftReport {
            checked: drift.checked as u64,
            differences: drift.differences.into_iter().map(DriftItem::from).collect(),
            unreadable: drift.unreadable.into_iter().map(UnreadableItem::from).collect(),
            generated_at: rfc3339(now_millis()),
        }))
    }
}

impl From<Difference> for DriftItem {
    fn from(d: Difference) -> Self {
        DriftItem { deployment_id: d.deployment_id, deployment: d.deployment, field: d.field, store: d.store, live: d.live, export: d.export, message: d.message }
    }
}

impl From<Unreadable> for UnreadableItem {
    fn from(u: Unreadable) -> Self {
        UnreadableItem { deployment_id: u.deployment_id, deployment: u.deployment, part: u.part.as_str().into(), guest: u.guest, reason: u.reason }
    }
}

fn tar_response(r: &Rendered) -> Result<ExportResponse, ApiError> {
    let name = r.deployment.spec.name.as_str();
    let bytes = tarball(name, &r.files).map_err(|e| {
        tracing::error!(error = %e, "cannot build the export tarball");
        ApiError::Internal(Json(ErrorBody { error: "internal".into(), message: "cannot build the tarball; see the agent's log".into() }))
    })?;
    Ok(ExportResponse::Tarball(Binary(bytes), format!("attachment; filename=\"{name}-terraform.tar.gz\"")))
}

/// `<name>/<file>` entries, mode 0644, mtime 0 and fixed owner: the same files give the same bytes.
fn tarball(name: &str, files: &[crate::export::ExportFile]) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for f in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(f.content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, format!("{name}/{}", f.path), f.content.as_bytes())?;
    }
    tar.into_inner()?.finish()
}

fn api_error(e: ExportError) -> ApiError {
    let body = |code: &str, message: String| Json(ErrorBody { error: code.into(), message });
    match e {
        ExportError::NotFound(what) => ApiError::not_found(&what),
        e @ (ExportError::NoGuest(_) | ExportError::NoCluster) => ApiError::Conflict(body("conflict", e.to_string())),
        e @ ExportError::ProxmoxSlow(_) => {
            tracing::warn!(error = %e, "Proxmox too slow for an export");
            ApiError::Unavailable(body("proxmox_timeout", format!("{e}; the agent is fine, Proxmox VE is slow or hung: retrying later is safe")))
        }
        ExportError::Proxmox(p) => {
            tracing::warn!(error = %p, "Proxmox unavailable for an export");
            ApiError::Unavailable(body("unavailable", format!("cannot read the guest from Proxmox; retrying later is safe ({p})")))
        }
        ExportError::Store(s) => crate::engine::EngineError::Store(s).into(),
        e @ (ExportError::Io(_) | ExportError::Render(_)) => {
            tracing::error!(error = %e, "export failed");
            ApiError::Internal(body("internal", "the export could not be made; see the agent's log".into()))
        }
    }
}
