//! Snapshots of QEMU and LXC guests: list (with the `current` entry), create, rollback, delete. Where the backend
//! keeps the guest's disk as files (real guests), a snapshot also keeps a copy of them and a rollback puts that copy
//! back, as PVE snapshots and rolls back each volume (pve-container `src/PVE/LXC/Config.pm:217-280` at 94f5585:
//! `__snapshot_create_vol_snapshot` → `PVE::Storage::volume_snapshot`, `__snapshot_rollback_vol_rollback` →
//! `volume_snapshot_rollback`, `__snapshot_delete_vol_snapshot`), so a rolled-back guest has its files of then.

use std::sync::Arc;

use serde_json::{json, Value};

use super::state::{epoch, Snapshot};
use super::{ApiCall, Cluster};
use crate::backend::GuestKind;
use crate::http::envelope::ApiError;
use crate::http::params::Params;

/// Where a snapshot's copy of the guest's files is kept: beside its disk (`<guest dir>/snapshot-<name>`), so that
/// destroying the guest removes it too.
fn files_of(disk: &std::path::Path, name: &str) -> std::path::PathBuf {
    disk.with_file_name(format!("snapshot-{name}"))
}

/// `cp -a` of `from`'s contents into a fresh `to` (reflinked where the file system can).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> Result<(), String> {
    if to.exists() {
        std::fs::remove_dir_all(to).map_err(|e| format!("unable to remove '{}': {e}", to.display()))?;
    }
    std::fs::create_dir_all(to).map_err(|e| format!("unable to create '{}': {e}", to.display()))?;
    let out = std::process::Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .output()
        .map_err(|e| format!("unable to run cp: {e}"))?;
    if !out.status.success() {
        return Err(format!("copying the guest's files failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

fn task_type(kind: GuestKind, what: &str) -> String {
    match kind {
        GuestKind::Qemu => format!("qm{what}"),
        GuestKind::Lxc => format!("vz{what}"),
    }
}

/// `GET …/snapshot`
pub fn list(c: &Cluster, node: &str, kind: GuestKind, p: &Params) -> Result<Value, ApiError> {
    let vmid = p.need_u32("vmid")?;
    c.with_guest(node, vmid, kind, |g| {
        let mut out: Vec<Value> = g
            .snapshots
            .iter()
            .map(|(name, s)| {
                let mut v = json!({"name": name, "description": s.description, "snaptime": s.snaptime});
                if let (Some(obj), Some(parent)) = (v.as_object_mut(), s.config.get("parent")) {
                    obj.insert("parent".into(), json!(parent));
                }
                if kind == GuestKind::Qemu {
                    if let Some(obj) = v.as_object_mut() {
                        obj.insert("vmstate".into(), json!(0));
                    }
                }
                v
            })
            .collect();
        let mut current = json!({
            "name": "current",
            "description": "You are here!",
            "digest": g.digest(),
            "running": u8::from(g.running.is_some()),
        });
        if let (Some(obj), Some(parent)) = (current.as_object_mut(), g.config.get("parent")) {
            obj.insert("parent".into(), json!(parent));
        }
        out.push(current);
        Value::Array(out)
    })
}

/// `POST …/snapshot` (`qmsnapshot` / `vzsnapshot`)
pub fn create(c: &Arc<Cluster>, node: &str, kind: GuestKind, call: &ApiCall) -> Result<Value, ApiError> {
    let p = &call.params;
    let vmid = p.need_u32("vmid")?;
    let name = p.need("snapname")?;
    let description = p.str("description").unwrap_or_default();
    c.with_guest(node, vmid, kind, |g| {
        if name == "current" {
            return Err("snapshot name 'current' is reserved".to_string());
        }
        if g.snapshots.contains_key(&name) {
            return Err(format!("snapshot name '{name}' already used"));
        }
        g.check_lock()
    })?
    .map_err(ApiError::server)?;
    let node_owned = node.to_string();
    let upid = c.spawn_task(node, &task_type(kind, "snapshot"), &vmid.to_string(), &call.ident, move |c, task| async move {
        {
            let mut st = c.state();
            let g = st.guest_on_mut(&node_owned, vmid, kind)?;
            g.check_lock()?;
            g.config.insert("lock".into(), "snapshot".into());
        }
        task.log(format!("snapshotting '{name}'"));
        Cluster::pause(c.timing.task_secs).await;
        if let Some(disk) = c.backend.disk_dir(vmid).filter(|d| d.is_dir()) {
            let to = files_of(&disk, &name);
            let copied = tokio::task::spawn_blocking(move || copy_tree(&disk, &to)).await.map_err(|e| e.to_string()).and_then(|r| r);
            if let Err(e) = copied {
                let mut st = c.state();
                if let Ok(g) = st.guest_on_mut(&node_owned, vmid, kind) {
                    g.config.remove("lock");
                }
                return Err(e);
            }
        }
        let mut st = c.state();
        let g = st.guest_on_mut(&node_owned, vmid, kind)?;
        g.config.remove("lock");
        let mut config = g.config.clone();
        config.remove("parent");
        if let Some(parent) = g.config.get("parent") {
            config.insert("parent".into(), parent.clone());
        }
        g.snapshots.insert(name.clone(), Snapshot { config, snaptime: epoch(), description });
        g.config.insert("parent".into(), name);
        Ok(0)
    });
    Ok(json!(upid))
}

/// `POST …/snapshot/{snapname}/rollback` (`qmrollback` / `vzrollback`)
pub fn rollback(c: &Arc<Cluster>, node: &str, kind: GuestKind, call: &ApiCall) -> Result<Value, ApiError> {
    let p = &call.params;
    let vmid = p.need_u32("vmid")?;
    let name = p.need("snapname")?;
    let start_after = p.bool("start").unwrap_or(false);
    c.with_guest(node, vmid, kind, |g| {
        if !g.snapshots.contains_key(&name) {
            return Err(format!("snapshot '{name}' does not exist"));
        }
        g.check_lock()
    })?
    .map_err(ApiError::server)?;
    let node_owned = node.to_string();
    let upid = c.spawn_task(node, &task_type(kind, "rollback"), &vmid.to_string(), &call.ident, move |c, _| async move {
        let running = c.state().guest_on(&node_owned, vmid, kind)?.running.is_some();
        if running {
            c.backend.stop(vmid).await.map_err(|e| format!("{e:#}"))?;
        }
        Cluster::pause(c.timing.task_secs).await;
        // The guest is stopped (its overlay unmounted): its files become the snapshot's again.
        if let Some(disk) = c.backend.disk_dir(vmid) {
            let from = files_of(&disk, &name);
            if from.is_dir() {
                let work = disk.with_file_name("work");
                tokio::task::spawn_blocking(move || {
                    copy_tree(&from, &disk)?;
                    match std::fs::remove_dir_all(&work) {
                        Ok(()) => Ok(()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                        Err(e) => Err(format!("unable to clear '{}': {e}", work.display())),
                    }
                })
                .await
                .map_err(|e| e.to_string())??;
            }
        }
        {
            let mut st = c.state();
            let g = st.guest_on_mut(&node_owned, vmid, kind)?;
            let snap = g.snapshots.get(&name).cloned().ok_or_else(|| format!("snapshot '{name}' does not exist"))?;
            g.config = snap.config;
            g.config.insert("parent".into(), name);
            g.pending.clear();
            g.pending_delete.clear();
            g.running = None;
        }
        if start_after {
            return super::power::boot(&c, &node_owned, vmid, kind).await;
        }
        Ok(0)
    });
    Ok(json!(upid))
}

/// `DELETE …/snapshot/{snapname}` (`qmdelsnapshot` / `vzdelsnapshot`)
pub fn delete(c: &Arc<Cluster>, node: &str, kind: GuestKind, call: &ApiCall) -> Result<Value, ApiError> {
    let p = &call.params;
    let vmid = p.need_u32("vmid")?;
    let name = p.need("snapname")?;
    let force = p.bool("force").unwrap_or(false);
    c.with_guest(node, vmid, kind, |g| {
        if !g.snapshots.contains_key(&name) {
            return Err(format!("snapshot '{name}' does not exist"));
        }
        if force { Ok(()) } else { g.check_lock() }
    })?
    .map_err(ApiError::server)?;
    let node_owned = node.to_string();
    let upid = c.spawn_task(node, &task_type(kind, "delsnapshot"), &vmid.to_string(), &call.ident, move |c, _| async move {
        Cluster::pause(c.timing.task_secs).await;
        let mut st = c.state();
        let g = st.guest_on_mut(&node_owned, vmid, kind)?;
        let removed = g.snapshots.remove(&name).ok_or_else(|| format!("snapshot '{name}' does not exist"))?;
        if let Some(files) = c.backend.disk_dir(vmid).map(|d| files_of(&d, &name)).filter(|f| f.is_dir()) {
            std::fs::remove_dir_all(&files).map_err(|e| format!("unable to remove '{}': {e}", files.display()))?;
        }
        let grandparent = removed.config.get("parent").cloned();
        let reparent = |cfg: &mut std::collections::BTreeMap<String, String>| {
            if cfg.get("parent") == Some(&name) {
                match &grandparent {
                    Some(gp) => cfg.insert("parent".into(), gp.clone()),
                    None => cfg.remove("parent"),
                };
            }
        };
        reparent(&mut g.config);
        for s in g.snapshots.values_mut() {
            reparent(&mut s.config);
        }
        Ok(0)
    });
    Ok(json!(upid))
}
