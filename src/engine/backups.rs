//! Backups of a deployment's guest through Proxmox VE's vzdump, for every door and for backup schedules: take (a
//! `vzdump` task on the guest's node into the configured storage), list, delete, restore over the guest. A backup
//! carries the deployment's mark and who took it in its notes; a listing shows only backups with this deployment's
//! mark (and its VMID while it has a guest), so another guest's backups at a reused VMID never show. vzdump is asked
//! to prune nothing: a backup schedule applies the configured retention (Proxmox VE's `prune-backups` rule,
//! `core::backup::beyond_retention`) to the backups it took itself, so a backup made in Proxmox VE directly, by hand
//! or by another schedule is never pruned. Taking and restoring go through the ownership guard like every other
//! change to the guest, one operation per guest at a time (shared with snapshots); tasks are waited for with the
//! task wait's backoff under the backup deadline and stopped beyond it; a vzdump task's log is copied into the
//! deployment's log. Backups outlive their deployment.

use std::sync::Arc;
use std::time::Duration;

use super::ownership::OwnedGuest;
use super::provision::{pve_kind, ProvisionError, Provisioner};
use super::snapshots::refused;
use super::{Engine, EngineError};
use crate::config::BackupSettings;
use crate::core::backup::{beyond_retention, commit_in, marked_for, notes_for, origin_in, BackupId, BackupKind, BackupOrigin, Dated, RestoreSource};
use crate::core::names::{AppName, CommitSha};
use crate::core::validation::{FieldError, ValidationErrors};
use crate::store::audit::AuditEntry;
use crate::store::logs::LogLine;
use crate::store::StoreError;
use crate::core::command::Actor;
use crate::core::deployment::{Deployment, GuestType};
use crate::core::snapshot::schedule_tag;
use crate::core::status::Status;
use crate::pve::{BackupVolume, PveError, Upid, VzdumpRequest};
use crate::store::leases::Lease;
use crate::store::logs::Level;

/// Most lines of a vzdump task's log copied into the deployment's log.
const TASK_LOG_LINES: u64 = 200;

/// One backup as a door shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    pub volid: BackupId,
    /// When it was made (UTC ms).
    pub taken_at: Option<i64>,
    pub size_bytes: u64,
    /// `tar.zst`, `vma.zst`, …
    pub format: String,
    pub vmid: Option<u32>,
    /// Proxmox VE will not prune or delete it.
    pub protected: bool,
    /// Who took it: a schedule (whose retention prunes it) or by hand (kept until deleted).
    pub origin: BackupOrigin,
    /// The commit the guest served when it was taken (written into its notes since restores into a new
    /// deployment; older backups have none).
    pub commit: Option<CommitSha>,
}

/// A listed volume as a backup, when its id is a vzdump archive's.
fn info(v: BackupVolume) -> Option<BackupInfo> {
    let volid = BackupId::parse(&v.volid).ok()?;
    let (origin, commit) = (origin_in(&v.notes), commit_in(&v.notes));
    Some(BackupInfo { volid, taken_at: v.ctime.map(|t| t as i64 * 1000), size_bytes: v.size, format: v.format, vmid: v.vmid.map(|v| v.get()), protected: v.protected, origin, commit })
}

impl Engine {
    /// The provisioner and the backup settings, or why backups cannot be used.
    fn backup_setup(&self) -> Result<(Arc<Provisioner>, BackupSettings), EngineError> {
        let prov = self.inner.provisioner.clone().ok_or_else(|| EngineError::Conflict("no Proxmox cluster is configured".into()))?;
        let settings = prov.settings.backups.clone().ok_or_else(|| EngineError::Conflict("backups are not configured: set [proxmox.backups] storage (a storage with content type `backup`)".into()))?;
        Ok((prov, settings))
    }

    /// The configured backup storage (409 when backups are not configured).
    pub fn backup_storage(&self) -> Result<String, EngineError> {
        Ok(self.backup_setup()?.1.storage)
    }

    /// The deployment's backups on the configured storage, oldest first: those whose notes carry its mark (and, while
    /// it has a guest, of that guest's VMID). A deployment never placed on a node has none.
    pub async fn backups(&self, id_or_name: &str) -> Result<(Deployment, Vec<BackupInfo>), EngineError> {
        let d = self.find(id_or_name).await?;
        let (prov, settings) = self.backup_setup()?;
        let Some(node) = d.proxmox_node.clone() else { return Ok((d, vec![])) };
        let listed = prov.client.backup_volumes(&node, &settings.storage, d.proxmox_id).await.map_err(|e| refused(e.into()))?;
        let mut out: Vec<BackupInfo> = listed
            .into_iter()
            .filter(|v| marked_for(&v.notes, &d.id) && d.proxmox_id.is_none_or(|id| v.vmid == Some(id)))
            .filter_map(info)
            .collect();
        out.sort_by(|a, b| (a.taken_at, a.volid.as_str()).cmp(&(b.taken_at, b.volid.as_str())));
        Ok((d, out))
    }

    /// Copies a finished vzdump task's log into the deployment's log, and names the line that says why it failed.
    async fn copy_task_log(&self, d: &Deployment, prov: &Provisioner, upid: &Upid) -> Option<String> {
        let lines = match prov.client.task_log(upid, TASK_LOG_LINES).await {
            Ok(l) => l,
            Err(e) => {
                self.log(&d.id, Level::Warn, "backup", &format!("could not read the vzdump task's log: {e}")).await;
                return None;
            }
        };
        let mut why = None;
        for line in &lines {
            let level = if line.starts_with("ERROR:") || line.starts_with("TASK ERROR") { Level::Error } else { Level::Info };
            if why.is_none() && line.starts_with("ERROR: ") {
                why = Some(line.trim_start_matches("ERROR: ").to_string());
            }
            self.log(&d.id, level, "backup", line).await;
        }
        why
    }

    /// One vzdump of the guest: through the guard, waited for under the backup deadline (stopped beyond it), its log
    /// copied; the new backup's volume id.
    async fn vzdump(&self, d: &Deployment, origin: &BackupOrigin) -> Result<BackupId, EngineError> {
        let (prov, settings) = self.backup_setup()?;
        let served = d.commit.clone();
        let notes = notes_for(&d.id, d.spec.name.as_str(), origin, served.as_ref());
        let before: Vec<BackupId> = self.backups(d.id.as_str()).await?.1.into_iter().map(|b| b.volid).collect();
        let (upid, waited) = self
            .on_own_guest(d, async |prov: &Provisioner, g: &OwnedGuest, _: &Lease| {
                g.still_ours().await?;
                let req = VzdumpRequest { vmid: g.vmid, storage: &settings.storage, compress: &settings.compress, notes: &notes };
                let upid = prov.client.vzdump(&g.node, &req).await?.ok_or_else(|| ProvisionError::NotNow(format!("Proxmox VE did not back up guest {}: it is not on node {}", g.vmid, g.node)))?;
                let waited = prov.wait_task_for(&upid, settings.timeout).await;
                Ok((upid, waited))
            })
            .await
            .map_err(refused)?;
        let why = self.copy_task_log(d, &prov, &upid).await;
        if let Err(e) = waited {
            let reason = match (&e, why) {
                (ProvisionError::Pve(PveError::TaskFailed { .. }), Some(why)) => why,
                _ => e.to_string(),
            };
            return Err(EngineError::Proxmox(format!("the backup failed: {reason}")));
        }
        let (_, after) = self.backups(d.id.as_str()).await?;
        after
            .into_iter()
            .rev()
            .find(|b| !before.contains(&b.volid))
            .map(|b| b.volid)
            .ok_or_else(|| EngineError::Proxmox("vzdump ended without error but Proxmox VE lists no new backup of the guest".into()))
    }

    /// Deletes one backup volume and waits for the `imgdel` task.
    async fn delete_volume(&self, d: &Deployment, backup: &BackupId) -> Result<(), EngineError> {
        let (prov, _) = self.backup_setup()?;
        let node = d.proxmox_node.clone().ok_or_else(|| EngineError::NotFound(format!("backup {backup} of {}", d.spec.name)))?;
        let upid = prov.client.volume_delete(&node, &backup.storage, backup.as_str()).await.map_err(|e| refused(e.into()))?;
        prov.wait_task_for(&upid, prov.settings.task_deadline).await.map_err(refused)
    }

    /// Backs the deployment's guest up now (vzdump into the configured storage); no retention ever prunes it.
    pub async fn take_backup(&self, id_or_name: &str, actor: &Actor) -> Result<BackupInfo, EngineError> {
        let d = self.find(id_or_name).await?;
        self.writable()?;
        self.backup_setup()?;
        if matches!(d.status, Status::Destroying | Status::Destroyed) || d.proxmox_id.is_none() {
            return Err(EngineError::Conflict(format!("the deployment has no guest to back up (status {})", d.status)));
        }
        self.store().audit(actor, "backup_take", Some(d.id.as_str()), "").await?;
        self.log(&d.id, Level::Info, "backup", &format!("backup asked by {actor}")).await;
        let volid = self.vzdump(&d, &BackupOrigin::Manual).await?;
        self.log(&d.id, Level::Info, "backup", &format!("backup {volid} made")).await;
        let (_, all) = self.backups(d.id.as_str()).await?;
        all.into_iter().find(|b| b.volid == volid).ok_or_else(|| EngineError::Proxmox(format!("backup {volid} was made but Proxmox VE no longer lists it")))
    }

    /// Deletes one of the deployment's backups (its guest may be gone).
    pub async fn delete_backup(&self, id_or_name: &str, backup: BackupId, actor: &Actor) -> Result<(), EngineError> {
        let (d, existing) = self.backups(id_or_name).await?;
        self.writable()?;
        if !existing.iter().any(|b| b.volid == backup) {
            return Err(EngineError::NotFound(format!("backup {backup} of {}", d.spec.name)));
        }
        self.store().audit(actor, "backup_delete", Some(d.id.as_str()), &format!("volid={backup}")).await?;
        self.delete_volume(&d, &backup).await?;
        self.log(&d.id, Level::Info, "backup", &format!("backup {backup} deleted by {actor}")).await;
        Ok(())
    }

    /// Deletes every backup of the deployment (its own, by its mark; protected ones stay, as Proxmox VE refuses to
    /// delete them), before a destroy with `purge_backups`. The first deletion that fails ends it with an error.
    pub async fn purge_backups(&self, id_or_name: &str, actor: &Actor) -> Result<Vec<String>, EngineError> {
        let (d, all) = self.backups(id_or_name).await?;
        self.writable()?;
        self.store().audit(actor, "backup_purge", Some(d.id.as_str()), &format!("count={}", all.len())).await?;
        let mut deleted = Vec::new();
        for b in &all {
            if b.protected {
                self.log(&d.id, Level::Info, "backup", &format!("purge keeps protected backup {}", b.volid)).await;
                continue;
            }
            let id = &b.volid;
            self.delete_volume(&d, id).await.map_err(|e| EngineError::Proxmox(format!("purging the backups: deleting {id} failed ({e}); deleted before it: {}", if deleted.is_empty() { "none".to_string() } else { deleted.join(", ") })))?;
            self.log(&d.id, Level::Info, "backup", &format!("backup {id} deleted (purge asked by {actor})")).await;
            deleted.push(id.to_string());
        }
        Ok(deleted)
    }

    /// A backup schedule's occurrence: one vzdump, then the configured retention applied to this schedule's own
    /// backups of the deployment (and to nothing else).
    pub(crate) async fn scheduled_backup(&self, d: &Deployment, schedule_id: &str, actor: &Actor) -> Result<String, String> {
        self.log(&d.id, Level::Info, "backup", &format!("scheduled backup by {actor}")).await;
        let origin = BackupOrigin::Schedule { tag: schedule_tag(schedule_id) };
        let r = async {
            let volid = self.vzdump(d, &origin).await?;
            let pruned = self.prune_own(d, &origin).await?;
            Ok::<_, EngineError>(if pruned.is_empty() { format!("backup {volid} made") } else { format!("backup {volid} made; retention deleted {}", pruned.join(", ")) })
        }
        .await
        .map_err(|e| e.to_string());
        match &r {
            Ok(m) => self.log(&d.id, Level::Info, "backup", m).await,
            Err(m) => self.log(&d.id, Level::Error, "backup", &format!("scheduled backup failed: {m}")).await,
        }
        r
    }

    /// Deletes the backups `origin` took of the deployment that the configured retention does not keep.
    async fn prune_own(&self, d: &Deployment, origin: &BackupOrigin) -> Result<Vec<String>, EngineError> {
        let (_, settings) = self.backup_setup()?;
        let Some(rule) = settings.retention.prune_backups() else { return Ok(vec![]) };
        let (_, all) = self.backups(d.id.as_str()).await?;
        let group: Vec<Dated> = all.iter().filter(|b| &b.origin == origin).map(|b| Dated { id: b.volid.clone(), protected: b.protected }).collect();
        let old = beyond_retention(&group, &settings.retention);
        self.log(&d.id, Level::Info, "backup", &format!("retention {rule} over this schedule's {} backup(s): {} to delete", group.len(), old.len())).await;
        let mut deleted = Vec::new();
        for b in &old {
            self.delete_volume(d, b).await.map_err(|e| EngineError::Proxmox(format!("retention could not delete {b}: {e}")))?;
            self.log(&d.id, Level::Info, "backup", &format!("retention deleted {b}")).await;
            deleted.push(b.to_string());
        }
        Ok(deleted)
    }

    /// Restores the guest in place from one of the deployment's own backups (202): the deployment goes `deploying`,
    /// the guest (proven ours under the work lease) is stopped, overwritten from the backup by Proxmox VE, started,
    /// and ends `running` once the app answers its health check as after a deploy, `failed` otherwise.
    pub async fn restore_backup(&self, id_or_name: &str, backup: BackupId, actor: &Actor) -> Result<Deployment, EngineError> {
        let (d, existing) = self.backups(id_or_name).await?;
        self.writable()?;
        if !matches!(d.status, Status::Running | Status::Stopped | Status::Failed) {
            return Err(EngineError::Conflict(format!("the deployment is {}; a restore waits until it is running, stopped or failed", d.status)));
        }
        let Some(found) = existing.iter().find(|b| b.volid == backup) else {
            return Err(EngineError::NotFound(format!("backup {backup} of {}", d.spec.name)));
        };
        // The guest serves again what it served then: the deployment says so once it answers.
        let served = found.commit.clone();
        let (_, settings) = self.backup_setup()?;
        // Refuse before changing anything when the guest is not provably ours (another agent's lease, no mark).
        self.on_own_guest(&d, async |_: &Provisioner, g: &OwnedGuest, _: &Lease| g.still_ours().await).await.map_err(|e| match e {
            ProvisionError::NotOurs(why) => EngineError::Conflict(format!("the guest is not provably this deployment's, so nothing is restored: {why}")),
            e => refused(e),
        })?;
        self.store().audit(actor, "backup_restore", Some(d.id.as_str()), &format!("volid={backup}")).await?;
        let d = self.transition(d, Status::Deploying, &format!("restoring backup {backup}, asked by {actor}")).await?;
        self.log(&d.id, Level::Info, "restore", &format!("restore of backup {backup} requested by {actor}")).await;
        let engine = self.clone();
        let id = d.id.clone();
        let answer = d.clone();
        self.inner.tasks.spawn(async move {
            let step = "restore";
            let result = engine
                .on_own_guest(&d, async |prov: &Provisioner, g: &OwnedGuest, lease: &Lease| {
                    let kind = pve_kind(d.spec.guest_type);
                    // A container's root file system goes back to the storage it is on now.
                    let storage = match d.spec.guest_type {
                        GuestType::Lxc => prov.client.lxc_config(&g.node, g.vmid).await?.rootfs.and_then(|r| r.split_once(':').map(|(s, _)| s.to_string())),
                        GuestType::Vm => None,
                    };
                    engine.log(&d.id, Level::Info, step, &format!("stopping guest {} to restore it", g.vmid)).await;
                    prov.stop_owned(g, Duration::from_secs(60)).await?;
                    g.still_ours().await?;
                    let upid = prov.client.restore_over(kind, &g.node, g.vmid, backup.as_str(), storage.as_deref()).await?;
                    let waited = prov.wait_task_for(&upid, settings.timeout).await;
                    match prov.client.task_log(&upid, TASK_LOG_LINES).await {
                        Ok(lines) => {
                            for line in &lines {
                                engine.log(&d.id, if line.starts_with("ERROR") || line.starts_with("TASK ERROR") { Level::Error } else { Level::Info }, step, line).await;
                            }
                        }
                        Err(e) => engine.log(&d.id, Level::Warn, step, &format!("could not read the restore task's log: {e}")).await,
                    }
                    waited?;
                    engine.log(&d.id, Level::Info, step, &format!("guest {} restored from {backup}", g.vmid)).await;
                    let mut now = engine.store().get_deployment(&d.id).await?.ok_or(ProvisionError::Vanished)?;
                    if let Some(c) = &served {
                        now.commit = Some(c.clone());
                    }
                    engine.boot_and_check(prov, g, now, lease, step, &format!("restored from backup {backup}")).await
                })
                .await;
            match result {
                Ok(_) => engine.log(&id, Level::Info, step, &format!("restore of backup {backup} done")).await,
                Err(e) => engine.end_failed(&id, step, &format!("restore of backup {backup} failed: {e}")).await,
            }
        });
        Ok(answer)
    }

    /// Restores one of a deployment's backups into a new deployment named `name` (202; the answer is the new
    /// deployment, `pending`): same spec, a VMID from the agent's range, on the node that lists the backup. The
    /// deployment the backup is of may be destroyed (backups outlive it) and is not touched. Provisioning restores
    /// the backup as the new guest (`run::create`), pins the backed-up container's host key, gives the guest its
    /// address as any new guest's, and deploys the commit the backup served (the deployment's last one when the
    /// backup does not say), health check included.
    pub async fn restore_backup_as_new(&self, id_or_name: &str, backup: BackupId, name: AppName, actor: &Actor) -> Result<Deployment, EngineError> {
        let (old, existing) = self.backups(id_or_name).await?;
        self.writable()?;
        let Some(found) = existing.iter().find(|b| b.volid == backup) else {
            return Err(EngineError::NotFound(format!("backup {backup} of {}", old.spec.name)));
        };
        let kind_matches = matches!((backup.kind, old.spec.guest_type), (BackupKind::Lxc, GuestType::Lxc) | (BackupKind::Qemu, GuestType::Vm));
        let node = old.proxmox_node.clone().filter(|_| kind_matches).ok_or_else(|| EngineError::Conflict(format!("backup {backup} is not of a {} guest on a known node", old.spec.guest_type.as_str())))?;
        self.refuse_doomed(old.spec.guest_type)?;
        let host_key = match old.spec.guest_type {
            GuestType::Lxc => self.store().load_progress(&old.id).await?.and_then(|p| p.host_key().cloned()),
            GuestType::Vm => None,
        };
        let commit = found.commit.clone().or_else(|| old.commit.clone());
        let src = RestoreSource { backup: backup.clone(), from: old.id.clone(), node, host_key, commit };
        let spec = crate::core::deployment::Spec { name, ..old.spec.clone() };
        let d = Deployment::new(spec, crate::store::now_millis());
        let audit = AuditEntry::new(actor, "backup_restore_new", Some(d.id.as_str()), &format!("volid={backup} from={} name={}", old.id, d.spec.name));
        let served = src.commit.as_ref().map_or_else(|| "the branch's head (the backup does not say which commit it served)".to_string(), |c| format!("commit {}", c.as_str()));
        let line = LogLine::new(&d.id, Level::Info, "request", &format!("deployment {} requested by {actor}: restored from backup {backup} of deployment {} ({}), serving {served}", d.spec.name, old.id, old.spec.name));
        match self.store().create_restored_deployment(&d, &src, &format!("restored from a backup, requested by {actor}"), &audit, &line).await {
            Ok(()) => {}
            Err(StoreError::Taken { .. }) => {
                return Err(EngineError::Invalid(ValidationErrors(vec![FieldError::new("as_new.name", "unique", "must be unique among live deployments: a deployment with this name already exists")])))
            }
            Err(e) => return Err(e.into()),
        }
        self.inner.bus.publish(crate::engine::bus::Event::Log(line));
        self.publish_status(&d);
        self.log(&old.id, Level::Info, "restore", &format!("backup {backup} is being restored into new deployment {} ({}), asked by {actor}", d.id, d.spec.name)).await;
        let engine = self.clone();
        let id = d.id.clone();
        self.inner.tasks.spawn(async move { engine.provision(id).await });
        Ok(d)
    }
}
