//! Keeps every deployment's Terraform export in step: a background task follows the bus's status events
//! (those that leave the guest settled), reads the guest back from Proxmox through the provisioner's
//! client, rewrites the export (only when it changed), archives it when the deployment is destroyed, and
//! records its place on the deployment.
//! Also renders an export on demand and checks drift for the doors, each under one deadline however Proxmox behaves.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::{timeout_at, Instant};

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::provision::{pve_kind, tag_for, Provisioner, TAG};
use super::{Engine, Event};
use crate::core::deployment::{Deployment, DeploymentId};
use crate::core::status::Status;
use crate::export::drift::{compare, ExportState, LiveState, Unreadable};
use crate::export::hcl::{render, RenderError};
use crate::export::{Difference, ExportDir, ExportFile, ExportIoError, LiveGuest, Origin};
use crate::pve::{GuestState, PveError};
use crate::store::{now_millis, StoreError};

/// How long a drift check may take in all: the guests still unread then are reported unreadable. The API's
/// `GET /drift` answers within it plus the time to list the deployments, well inside 35 s, whatever the Proxmox
/// client's per-call timeouts and retries would add up to.
pub const DRIFT_DEADLINE: Duration = Duration::from_secs(20);
/// How many guests a drift check reads at once.
pub const DRIFT_CONCURRENCY: usize = 8;
/// How long rendering one export from its live guest may take (on demand, for the API).
pub const RENDER_DEADLINE: Duration = Duration::from_secs(25);

/// Why an export or a drift check could not be made, phrased for the caller.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// No deployment has that id or name.
    #[error("no deployment {0:?}")]
    NotFound(String),
    /// The deployment has no guest to export (not provisioned yet, failed, destroyed, or deleted on Proxmox).
    #[error("{0}")]
    NoGuest(String),
    /// No Proxmox cluster is configured, so nothing can be read back.
    #[error("no Proxmox cluster is configured, so there is no live guest to export")]
    NoCluster,
    /// Proxmox did not answer usefully; retrying later is safe.
    #[error("cannot read the guest from Proxmox: {0}")]
    Proxmox(#[from] PveError),
    /// Proxmox did not answer in time (it is slow or hung; the agent is fine); retrying later is safe.
    #[error("Proxmox VE did not answer in time while the agent read the guest back ({0})")]
    ProxmoxSlow(String),
    #[error(transparent)]
    Io(#[from] ExportIoError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The drift of every deployment that has a guest.
#[derive(Debug, Clone, Default)]
pub struct Drift {
    /// Deployments whose guest and export were both read.
    pub checked: usize,
    pub differences: Vec<Difference>,
    /// Guests and exports that could not be read, so their drift is unknown (not a difference).
    pub unreadable: Vec<Unreadable>,
}

/// An export made now from the live guest.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub deployment: Deployment,
    pub files: Vec<ExportFile>,
    /// What the first `terraform plan` after an import will still show, or what the export cannot describe.
    pub warnings: Vec<String>,
    pub generated_at: i64,
}

/// The exports of one agent: where they live and how to read guests back. Cheap to clone.
#[derive(Clone)]
pub struct Exports {
    engine: Engine,
    dir: ExportDir,
    /// Base of the relative references kept in `terraform_output`.
    data_dir: PathBuf,
}

/// The running keeper; `stop` ends it.
pub struct Keeper {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Keeper {
    pub async fn stop(self) {
        self.cancel.cancel();
        // Waits for the keeper to end; it returns nothing, and a panic in it was already reported by the runtime.
        let _ = self.task.await;
    }
}

impl Exports {
    pub fn new(engine: Engine, dir: PathBuf, data_dir: PathBuf) -> Self {
        Self { engine, dir: ExportDir::new(dir), data_dir }
    }

    pub fn dir(&self) -> &ExportDir {
        &self.dir
    }

    /// Starts following the bus (after one sweep over every deployment, for changes made while the agent was down).
    pub fn spawn_keeper(&self) -> Keeper {
        let cancel = CancellationToken::new();
        let mut events = self.engine.bus().subscribe();
        let this = self.clone();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            this.sweep().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    event = events.recv() => match event {
                        Ok(Event::Status { id, status }) if settles_the_guest(status) => this.on_change(&id, status).await,
                        Ok(Event::Status { .. }) => {}
                        Ok(Event::Log(_)) => {}
                        Err(RecvError::Lagged(_)) => this.sweep().await,
                        Err(RecvError::Closed) => break,
                    },
                }
            }
        });
        Keeper { cancel, task }
    }

    /// The export of one deployment, rendered now from its live guest (nothing is written).
    pub async fn render(&self, id_or_name: &str) -> Result<Rendered, ExportError> {
        let d = self.engine.find(id_or_name).await.map_err(|e| match e {
            super::EngineError::Store(s) => ExportError::Store(s),
            _ => ExportError::NotFound(id_or_name.to_owned()),
        })?;
        let prov = self.engine.provisioner().ok_or(ExportError::NoCluster)?;
        let slow = |what: String| ExportError::ProxmoxSlow(what);
        let live = timeout_at(Instant::now() + RENDER_DEADLINE, self.live(prov, &d)).await.map_err(|_| slow(format!("no answer within {} s", RENDER_DEADLINE.as_secs())))?;
        let live = live.map_err(|e| match e {
            PveError::Timeout => slow(e.to_string()),
            e => ExportError::Proxmox(e),
        })?;
        let guest = match live {
            Some(g) => g,
            None if d.proxmox_id.is_some() && d.status != Status::Destroyed => {
                return Err(ExportError::NoGuest(format!(
                    "deployment {} records guest {} on {}, but Proxmox no longer has it (see GET /api/v1/drift)",
                    d.spec.name,
                    d.proxmox_id.map(|v| v.to_string()).unwrap_or_default(),
                    d.proxmox_node.as_ref().map(|n| n.to_string()).unwrap_or_default()
                )))
            }
            None => return Err(ExportError::NoGuest(format!("deployment {} has no guest to export (status {})", d.spec.name, d.status))),
        };
        let files = render(&guest, &endpoint(prov))?;
        let main = files.iter().find(|f| f.path == "main.tf").map_or("", |f| f.content.as_str());
        let warnings = crate::export::plan::warnings(&guest, main);
        Ok(Rendered { deployment: d, files, warnings, generated_at: now_millis() })
    }

    /// Every difference between store, live guests and exports, over all deployments that have a guest: at most
    /// `DRIFT_CONCURRENCY` guests read at once, all within `DRIFT_DEADLINE`; what could not be read by then is
    /// named in `unreadable`.
    pub async fn drift(&self) -> Result<Drift, ExportError> {
        let deadline = Instant::now() + DRIFT_DEADLINE;
        let listed = timeout_at(deadline, self.engine.store().deployments_with_guests()).await;
        let mut deployments = listed.map_err(|_| StoreError::Unavailable(format!("listing the deployments took longer than {} s", DRIFT_DEADLINE.as_secs())))??;
        // A deployment whose guest was found deleted and forgotten keeps its export folder: checked too, since that
        // export still describes the guest (`compare` reports it).
        let dir = self.dir.clone();
        let owners = timeout_at(deadline, tokio::task::spawn_blocking(move || dir.owners())).await;
        let listed: std::collections::HashSet<DeploymentId> = deployments.iter().map(|d| d.id.clone()).collect();
        for id in owners.ok().and_then(Result::ok).unwrap_or_default() {
            if listed.contains(&id) {
                continue;
            }
            if let Ok(Ok(Some(d))) = timeout_at(deadline, self.engine.store().get_deployment(&id)).await {
                if d.status != Status::Destroyed && d.proxmox_id.is_none() {
                    deployments.push(d);
                }
            }
        }
        // The futures are made first, then run at most DRIFT_CONCURRENCY at a time (in order, so the report is too).
        let pending: Vec<_> = deployments.iter().map(|d| self.check(d, deadline)).collect();
        let checks: Vec<_> = futures_util::stream::iter(pending).buffered(DRIFT_CONCURRENCY).collect().await;
        let mut drift = Drift::default();
        for c in checks {
            drift.checked += usize::from(c.unreadable.is_empty());
            drift.differences.extend(c.differences);
            drift.unreadable.extend(c.unreadable);
        }
        Ok(drift)
    }

    /// One deployment's drift: its guest and its export folder read side by side, neither past `deadline`.
    async fn check(&self, d: &Deployment, deadline: Instant) -> crate::export::drift::Checked {
        let late = || format!("no answer within the drift check's deadline of {} s", DRIFT_DEADLINE.as_secs());
        let live = async {
            let Some(prov) = self.engine.provisioner() else { return LiveState::Unreadable("no Proxmox cluster is configured".into()) };
            if Instant::now() >= deadline {
                return LiveState::Unreadable(format!("not asked: {}", late()));
            }
            match timeout_at(deadline, self.live(prov, d)).await {
                Err(_) => LiveState::Unreadable(format!("Proxmox VE gave {}", late())),
                Ok(Err(e)) => LiveState::Unreadable(format!("Proxmox VE: {e}")),
                Ok(Ok(None)) => LiveState::Missing,
                Ok(Ok(Some(g))) => match render(&g, &endpoint(prov)) {
                    Ok(files) => LiveState::Present { guest: Box::new(g), files },
                    Err(e) => LiveState::Unreadable(format!("the export cannot be rendered from it: {e}")),
                },
            }
        };
        let dir = self.dir.clone();
        let (name, id) = (d.spec.name.clone(), d.id.clone());
        let export = async {
            match timeout_at(deadline, tokio::task::spawn_blocking(move || dir.read(&name, &id))).await {
                Err(_) => ExportState::Unreadable(format!("the export folder gave {}", late())),
                Ok(Err(e)) => ExportState::Unreadable(format!("reading the export folder failed: {e}")),
                Ok(Ok(Err(e))) => ExportState::Unreadable(e.to_string()),
                Ok(Ok(Ok(on_disk))) => on_disk.state,
            }
        };
        let (live, export) = tokio::join!(live, export);
        compare(d, &[TAG.to_string(), tag_for(&d.id)], &live, &export)
    }

    /// Reads the deployment's guest back; `None` when it has none or Proxmox says it does not exist.
    async fn live(&self, prov: &Provisioner, d: &Deployment) -> Result<Option<LiveGuest>, PveError> {
        let (Some(node), Some(vmid)) = (d.proxmox_node.clone(), d.proxmox_id) else { return Ok(None) };
        let kind = pve_kind(d.spec.guest_type);
        let config = match prov.client.guest_config_raw(kind, &node, vmid).await {
            Ok(c) => c,
            Err(PveError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let running = match prov.client.guest_current(kind, &node, vmid).await {
            Ok(s) => s.status == GuestState::Running,
            Err(PveError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let s = &prov.settings;
        let origin = Origin { vm_template: s.vm_template, full_clone: s.full_clone, lxc_template: s.lxc_template.clone() };
        Ok(Some(LiveGuest::from_config(d, node, vmid, &config, running, &origin)))
    }

    /// Regenerates every live deployment's export and archives folders of destroyed ones.
    async fn sweep(&self) {
        match self.engine.store().deployments_with_guests().await {
            Ok(all) => {
                for d in all {
                    self.keep(&d).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list deployments to refresh their Terraform exports"),
        }
        let dir = self.dir.clone();
        let owners = tokio::task::spawn_blocking(move || dir.owners()).await.unwrap_or_default();
        for id in owners {
            if let Ok(Some(d)) = self.engine.store().get_deployment(&id).await {
                if d.status == Status::Destroyed {
                    self.archive(&d).await;
                }
            }
        }
    }

    async fn on_change(&self, id: &DeploymentId, status: Status) {
        match self.engine.store().get_deployment(id).await {
            Ok(Some(d)) if status == Status::Destroyed || d.status == Status::Destroyed => self.archive(&d).await,
            Ok(Some(d)) => self.keep(&d).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(deployment = %id, error = %e, "cannot read the deployment to refresh its Terraform export"),
        }
    }

    /// Rewrites `d`'s export from its live guest when it has one, and records where it is.
    async fn keep(&self, d: &Deployment) {
        let Some(prov) = self.engine.provisioner() else { return };
        let guest = match self.live(prov, d).await {
            Ok(Some(g)) => g,
            Ok(None) => return, // no guest (yet, or any more): drift reports a deleted one
            Err(e) => {
                tracing::warn!(deployment = %d.id, error = %e, "cannot read the guest back; its Terraform export stays as it was");
                return;
            }
        };
        let result = async {
            let files = render(&guest, &endpoint(prov))?;
            let dir = self.dir.clone();
            let now = now_millis();
            let written = tokio::task::spawn_blocking(move || dir.write(&guest, &files, now)).await.expect("the export writer does not panic")?;
            let reference = ExportDir::reference(&written.folder, &self.data_dir);
            if d.terraform_output.as_deref() != Some(reference.as_str()) {
                self.engine.store().set_terraform_output(&d.id, &reference).await?;
            }
            if written.changed {
                tracing::info!(deployment = %d.id, folder = %written.folder.display(), "Terraform export written");
            }
            Ok::<(), ExportError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(deployment = %d.id, error = %e, "cannot write the Terraform export");
        }
    }

    async fn archive(&self, d: &Deployment) {
        let dir = self.dir.clone();
        let (name, id) = (d.spec.name.clone(), d.id.clone());
        match tokio::task::spawn_blocking(move || dir.archive(&name, &id)).await.expect("archiving does not panic") {
            Ok(Some(path)) => {
                let reference = ExportDir::reference(&path, &self.data_dir);
                if let Err(e) = self.engine.store().set_terraform_output(&d.id, &reference).await {
                    tracing::warn!(deployment = %d.id, error = %e, "cannot record the archived Terraform export");
                }
                tracing::info!(deployment = %d.id, folder = %path.display(), "Terraform export archived");
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(deployment = %d.id, error = %e, "cannot archive the Terraform export"),
        }
    }
}

/// Whether a change to `status` leaves the guest in a shape worth exporting. While a guest is being
/// provisioned (or deployed onto, or destroyed) its config is still moving; exporting every step would
/// cost a read-back and a rewrite per step for files nobody can use yet.
fn settles_the_guest(status: Status) -> bool {
    matches!(status, Status::Installing | Status::Running | Status::Stopped | Status::Failed | Status::Destroyed)
}

/// The cluster's API URL as the provider wants it (without `/api2/json`).
fn endpoint(prov: &Provisioner) -> String {
    let base = prov.client.base_url();
    base.strip_suffix("/api2/json").unwrap_or(base).to_owned()
}
