//! Restores from a backup volume: `POST /nodes/{node}/qemu` with `archive` (qemu-server `src/PVE/API2/Qemu.pm:1260-1600`
//! at e6352be, a `qmrestore` task) and `POST /nodes/{node}/lxc` with `ostemplate` + `restore=1` (pve-container
//! `src/PVE/API2/LXC.pm:240-636` at 94f5585, a `vzrestore` task). The guest gets the backed-up config (without
//! `lock`, `parent`, `unusedN` and snapshots, qemu-server `QemuServer.pm:6700-6707`), new volumes for its disks,
//! the given parameters merged over it (`restore_merge_config`, `QemuServer.pm:6794-6803`), and, where the
//! backend keeps guest disks as files, the archived files.

use std::sync::Arc;

use serde_json::{json, Value};

use super::super::config_update::{apply_changes, net_mac};
use super::super::disks::{is_cdrom, is_cloudinit_volume, is_disk_key, size_of, volume_of, with_volume};
use super::super::state::{random_mac, Guest, HostKey};
use super::super::storage::{self, NewVolume};
use super::super::{ApiCall, Cluster};
use super::{archive, archive_path, backup_of, may_access};
use crate::auth::require;
use crate::backend::GuestKind;
use crate::http::envelope::ApiError;
use crate::schema::propstring::{get_key, set_key};

/// Create parameters that steer the restore rather than set config keys.
const CONTROL: &[&str] = &[
    "node", "vmid", "archive", "ostemplate", "storage", "start", "pool", "restore", "force", "unique",
    "ignore-unpack-errors", "bwlimit", "ha-managed", "live-restore", "password", "ssh-public-keys",
];

/// `POST …/qemu` with `archive` / `POST …/lxc` with `restore=1`.
pub fn restore(c: &Arc<Cluster>, node: &str, kind: GuestKind, call: &ApiCall) -> Result<Value, ApiError> {
    let p = &call.params;
    let vmid = p.need_u32("vmid")?;
    let force = p.bool("force").unwrap_or(false);
    let unique = p.bool("unique").unwrap_or(false);
    let start_after = p.bool("start").unwrap_or(false);
    let label = match kind {
        GuestKind::Qemu => "VM",
        GuestKind::Lxc => "CT",
    };
    let volid = match kind {
        GuestKind::Qemu => p.need("archive")?,
        GuestKind::Lxc => p.need("ostemplate")?,
    };
    if p.has("live-restore") || p.has("pool") || volid == "-" {
        return Err(ApiError::NotImplemented("live restores, pools and pipes are not modelled by pvedeploy-sim".into()));
    }
    let exists = c.state().guests.contains_key(&vmid);
    // Who may (`Qemu.pm:1308-1322`, `LXC.pm:293-318`): `VM.Allocate`, or `VM.Backup` to overwrite a guest with `force`.
    if !call.ident.has(&format!("/vms/{vmid}"), "VM.Allocate") && !(force && exists && call.ident.has(&format!("/vms/{vmid}"), "VM.Backup")) {
        require(&call.ident, &format!("/vms/{vmid}"), "VM.Allocate")?;
    }
    let set = p.without(CONTROL);
    if kind == GuestKind::Qemu {
        if let Some((key, _)) = set.iter().find(|(k, _)| is_disk_key(kind, k)) {
            return Err(ApiError::param(key, "option conflicts with option 'archive'"));
        }
    }
    // `check_volume_access($rpcenv, $authuser, $storecfg, $vmid, $archive, 'backup')` (pve-storage `Storage.pm:619-656`).
    // A PBS volume is a backup too (`PBSPlugin.pm:607-628`); restoring it runs `restore_proxmox_backup_archive`
    // (pve-container `LXC/Create.pm:24-33`, `59-91`; qemu-server `API2/Qemu.pm:1429-1432`, `QemuServer.pm:6952`).
    let Some(backup) = backup_of(&c.state(), &volid) else {
        return Err(ApiError::server(format!("unable to use volume {volid} - content type needs to be 'backup'")));
    };
    may_access(&call.ident, backup.storage, backup.vmid, Some(vmid))?;
    // LXC: the root file system's storage (`LXC.pm:321`, default `local`; `LXC.pm:347-360`).
    let rootfs_storage = p.str("storage").unwrap_or_else(|| "local".into());
    if kind == GuestKind::Lxc && !set.iter().any(|(k, _)| k == "rootfs") {
        let st = c.state();
        match st.storages.get(&rootfs_storage) {
            Some(s) if st.storage_on_node(&rootfs_storage, node) => {
                if !s.content.iter().any(|x| x == "rootdir") {
                    return Err(ApiError::param("storage", format!("storage '{rootfs_storage}' does not support container directories")));
                }
            }
            _ => return Err(ApiError::server(format!("storage '{rootfs_storage}' does not exist"))),
        }
        drop(st);
        require(&call.ident, &format!("/storage/{rootfs_storage}"), "Datastore.AllocateSpace")?;
    }
    let disk_storage = p.str("storage");
    {
        let mut st = c.state();
        match st.guests.get_mut(&vmid) {
            Some(g) if force => {
                if g.running.is_some() {
                    return Err(ApiError::server(match kind {
                        GuestKind::Lxc => "can't overwrite running container".to_string(),
                        GuestKind::Qemu => format!("unable to restore VM {vmid} - vm is running"),
                    }));
                }
                if g.kind != kind || g.node != node {
                    return Err(ApiError::server(format!("unable to restore {label} {vmid} - {} {vmid} exists on node '{}'", g.label(), g.node)));
                }
                g.check_lock().map_err(ApiError::server)?;
                g.config.insert("lock".into(), "create".into());
            }
            _ => {
                super::super::qemu::vmid_unused(&st, vmid).map_err(ApiError::server)?;
                let mut g = Guest::new(vmid, node, kind);
                g.config.insert("lock".into(), "create".into());
                st.guests.insert(vmid, g);
            }
        }
    }
    let task_type = match kind {
        GuestKind::Qemu => "qmrestore",
        GuestKind::Lxc => "vzrestore",
    };
    let node_owned = node.to_string();
    let upid = c.spawn_task(node, task_type, &vmid.to_string(), &call.ident, move |c, task| async move {
        let emsg = format!("unable to restore {label} {vmid} -");
        Cluster::pause(c.timing.task_secs).await;
        let job = Job { kind, vmid, node: node_owned.clone(), volid: volid.clone(), unique, set, rootfs_storage, disk_storage, existed: exists };
        match job.run(&c, &task).await {
            Ok(()) => {}
            Err(e) => {
                // A new guest's config goes again; an overwritten one keeps its lock, "state is NOT cleaned up"
                // (`Qemu.pm:1579-1595`, `LXC.pm:616-632`).
                let mut st = c.state();
                if !exists {
                    let vols: Vec<String> = st.volumes.values().filter(|v| v.vmid == vmid).map(|v| v.volid.clone()).collect();
                    for v in vols {
                        storage::free(&mut st, &v, &node_owned);
                    }
                    st.guests.remove(&vmid);
                }
                return Err(format!("{emsg} {e}"));
            }
        }
        if start_after {
            return super::super::power::boot(&c, &node_owned, vmid, kind).await;
        }
        Ok(0)
    });
    Ok(json!(upid))
}

struct Job {
    kind: GuestKind,
    vmid: u32,
    node: String,
    volid: String,
    unique: bool,
    set: Vec<(String, String)>,
    rootfs_storage: String,
    disk_storage: Option<String>,
    existed: bool,
}

impl Job {
    async fn run(&self, c: &Arc<Cluster>, task: &super::super::tasks::Task) -> Result<(), String> {
        let (kind, vmid) = (self.kind, self.vmid);
        let path = {
            let st = c.state();
            archive_path(c, &st, &self.volid, &self.node).filter(|p| p.is_file())
        }
        .ok_or_else(|| format!("volume '{}' does not exist", self.volid))?;
        let backup = backup_of(&c.state(), &self.volid);
        let from_pbs = backup.is_some_and(|b| b.pbs);
        if let Some(backed_up) = backup.and_then(|b| b.kind) {
            // PBS: "got unexpected backup format 'pbs-vm'" (`LXC/Create.pm:70`, `QemuServer.pm:6976`).
            if from_pbs && backed_up != kind {
                return Err(format!("got unexpected backup format 'pbs-{}'", super::pbs::btype(backed_up)));
            }
            if backed_up != kind {
                return Err(format!("archive '{}' is not a {} backup", self.volid, if kind == GuestKind::Lxc { "container" } else { "VM" }));
            }
        }
        match kind {
            GuestKind::Lxc => task.log(format!("recovering backed-up configuration from '{}'", self.volid)),
            GuestKind::Qemu if !from_pbs => task.log(format!("restore vma archive: {}", path.display())),
            GuestKind::Qemu => {}
        }
        let (text, host_key) = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let text = archive::read_member(&path, archive::config_member(kind))?;
                let key = match kind {
                    GuestKind::Lxc => host_key(&path),
                    GuestKind::Qemu => None,
                };
                Ok::<_, String>((text, key))
            })
            .await
            .map_err(|e| e.to_string())??
        };
        let backed_up = archive::parse_config(&text);
        if self.existed {
            // Overwriting: the old disks go first.
            c.backend.destroy(vmid).await.map_err(|e| format!("{e:#}"))?;
            let mut st = c.state();
            let vols: Vec<String> = st.volumes.values().filter(|v| v.vmid == vmid).map(|v| v.volid.clone()).collect();
            for v in vols {
                storage::free(&mut st, &v, &self.node);
            }
        }
        {
            let mut st = c.state();
            let mut config = std::collections::BTreeMap::new();
            let given_rootfs = self.set.iter().any(|(k, _)| k == "rootfs");
            for (k, v) in &backed_up {
                if matches!(k.as_str(), "lock" | "parent" | "digest") || k.starts_with("unused") || (kind == GuestKind::Lxc && k.starts_with("mp")) {
                    continue;
                }
                let value = if is_disk_key(kind, k) && !(kind == GuestKind::Qemu && is_cdrom(v) && !v.contains("cloudinit")) {
                    if kind == GuestKind::Lxc && given_rootfs && k == "rootfs" {
                        continue;
                    }
                    let old = volume_of(kind, v).unwrap_or_default();
                    let target = match kind {
                        GuestKind::Lxc => self.rootfs_storage.clone(),
                        GuestKind::Qemu => self.disk_storage.clone().unwrap_or_else(|| old.split(':').next().unwrap_or_default().to_string()),
                    };
                    let req = if is_cloudinit_volume(&old) {
                        NewVolume::cloudinit(&target, vmid)
                    } else {
                        NewVolume::disk(&target, vmid, size_of(kind, v).max(1 << 30), if kind == GuestKind::Lxc { "rootdir" } else { "images" })
                    };
                    let new = storage::alloc(&mut st, &self.node, req)?;
                    task.log(format!("new volume ID is '{new}'"));
                    match is_cloudinit_volume(&old) {
                        true => format!("{new},media=cdrom"),
                        false => with_volume(kind, v, &new, size_of(kind, v).max(1 << 30)),
                    }
                } else if self.unique && k.starts_with("net") {
                    // `unique`: new MAC addresses (`restore_update_config_line`, `QemuServer.pm:6728-6733`).
                    let mac_key = if kind == GuestKind::Qemu { qemu_model(v) } else { Some("hwaddr".to_string()) };
                    match mac_key {
                        Some(key) => set_key(v, "model", &key, &random_mac()),
                        None => v.clone(),
                    }
                } else if k == "vmgenid" && v != "0" {
                    super::super::qemu::uuid()
                } else {
                    v.clone()
                };
                config.insert(k.clone(), value);
            }
            let g = st.guests.get_mut(&vmid).ok_or_else(|| format!("{} {vmid} vanished", if kind == GuestKind::Lxc { "CT" } else { "VM" }))?;
            // The address is the network's, not PVE's: a DHCP server hands a client (its MAC) its current or
            // previous address again (RFC 2131 §4.3.1), so a guest overwritten with its own MAC (no `unique`) keeps
            // its address; a new MAC gets a new one at its next boot.
            let mac = |c: &std::collections::BTreeMap<String, String>| c.get("net0").and_then(|n| net_mac(kind, n));
            let same_mac = mac(&g.config).is_some() && mac(&g.config) == mac(&config);
            let lock = g.config.get("lock").cloned();
            g.config = config;
            if let Some(lock) = lock {
                g.config.insert("lock".into(), lock);
            }
            g.snapshots.clear();
            g.pending.clear();
            g.pending_delete.clear();
            if !same_mac {
                g.ipv4 = None;
            }
            if let Some(key) = host_key {
                g.lxc_host_key = Some(key);
            }
        }
        if let Some(dir) = c.backend.disk_dir(vmid) {
            if kind == GuestKind::Lxc {
                task.log(format!("restoring '{}' now..", self.volid));
            }
            let path = path.clone();
            tokio::task::spawn_blocking(move || archive::extract(&path, &dir)).await.map_err(|e| e.to_string())??;
        }
        if kind == GuestKind::Lxc {
            task.log("merging backed-up and given configuration..");
        }
        let mut st = c.state();
        apply_changes(&mut st, vmid, &self.set, &[]).map_err(|e| e.to_string())?;
        if let Some(g) = st.guests.get_mut(&vmid) {
            g.config.remove("lock");
        }
        Ok(())
    }
}

/// The MAC key of a QEMU `netN` value (`virtio=AA:…`: the model is the key).
fn qemu_model(net: &str) -> Option<String> {
    net.split(',').next()?.split_once('=').map(|(m, _)| m.to_string()).filter(|m| get_key(net, "model", m).is_some())
}

/// The container's host key from its archived root file system, with its `SHA256:` fingerprint.
fn host_key(path: &std::path::Path) -> Option<HostKey> {
    let private = archive::read_member(path, archive::HOST_KEY).ok().filter(|k| !k.is_empty())?;
    let public = archive::read_member(path, &format!("{}.pub", archive::HOST_KEY)).ok().filter(|k| !k.is_empty())?;
    let mut child = std::process::Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    use std::io::Write as _;
    child.stdin.take()?.write_all(public.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    let fingerprint = String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).unwrap_or_default().to_string();
    Some(HostKey { private, public, fingerprint })
}
