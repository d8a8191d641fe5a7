//! QEMU guests: the node's VM list, create, clone (linked/full, storage locks, the newid race)
//! and the templates installed at start.

use std::sync::Arc;

use serde_json::{json, Value};

use super::config_update::{apply_changes, normalize_net};
use super::disks::{is_cdrom, is_cloudinit_volume, size_of, volume_of, with_volume};
use super::nodes::guest_summary;
use super::state::{epoch, ClusterState, Guest};
use super::storage::{self, NewVolume};
use super::tasks::TaskResult;
use super::{perms, ApiCall, Cluster};
use crate::backend::GuestKind;
use crate::config::TemplateSpec;
use crate::http::envelope::ApiError;
use crate::http::params::Params;

pub fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// `GET /nodes/{node}/qemu`
pub fn list(c: &Cluster, node: &str, _p: &Params) -> Value {
    let st = c.state();
    Value::Array(st.guests.values().filter(|g| g.node == node && g.kind == GuestKind::Qemu).map(guest_summary).collect())
}

/// `check_vmid_unused`: `VM 100 already exists on node 'pve1'`.
pub fn vmid_unused(st: &ClusterState, vmid: u32) -> Result<(), String> {
    match st.guests.get(&vmid) {
        Some(g) => Err(format!("{} {vmid} already exists on node '{}'", if g.kind == GuestKind::Qemu { "VM" } else { "CT" }, g.node)),
        None => Ok(()),
    }
}

/// Installs a template VM (config, base volume, cloud-init drive) at start.
pub fn install_template(st: &mut ClusterState, t: &TemplateSpec) -> Result<(), String> {
    vmid_unused(st, t.vmid)?;
    let mut g = Guest::new(t.vmid, &t.node, GuestKind::Qemu);
    st.guests.insert(t.vmid, g.clone());
    let size = t.disk_gib << 30;
    let base = base_volume(st, t, size)?;
    let ci = storage::alloc(st, &t.node, NewVolume::cloudinit(&t.storage, t.vmid))?;
    let mut hardware: Vec<(&str, String)> = Vec::new();
    if let Some(cpu) = &t.cpu {
        hardware.push(("cpu", cpu.clone()));
    }
    if t.uefi {
        // The GUI's UEFI VM: `efitype=4m,pre-enrolled-keys=1` (PVE 9 `qemu-server` PVE/QemuServer/Drive.pm efidisk
        // format); lvmthin rounds the 528 KiB volume to a 4 MiB extent.
        let efi = base_volume(st, t, 4 << 20)?;
        hardware.extend([("bios", "ovmf".into()), ("machine", "q35".into()), ("efidisk0", format!("{efi},efitype=4m,pre-enrolled-keys=1,size=4M"))]);
    }
    if let Some(gib) = t.data_disk_gib {
        let data = base_volume(st, t, gib << 30)?;
        hardware.push(("scsi1", with_volume(GuestKind::Qemu, &data, &data, gib << 30)));
    }
    let entries = [
        ("agent", if t.agent { "1".to_string() } else { "0".to_string() }),
        ("boot", "order=scsi0".into()),
        ("cores", t.cores.to_string()),
        ("ide2", format!("{ci},media=cdrom")),
        ("memory", t.memory_mib.to_string()),
        ("meta", format!("creation-qemu=10.0.2,ctime={}", epoch())),
        ("name", t.name.clone()),
        ("net0", normalize_net(GuestKind::Qemu, "virtio,bridge=vmbr0")),
        ("ostype", "l26".into()),
        ("scsi0", with_volume(GuestKind::Qemu, &base, &base, size)),
        ("scsihw", "virtio-scsi-pci".into()),
        ("serial0", "socket".into()),
        ("smbios1", format!("uuid={}", uuid())),
        ("template", "1".into()),
        ("vga", "serial0".into()),
        ("vmgenid", uuid()),
    ];
    for (k, v) in entries.into_iter().chain(hardware) {
        g.config.insert(k.to_string(), v);
    }
    if let Some(tags) = &t.tags {
        g.config.insert("tags".into(), tags.clone());
    }
    st.guests.insert(t.vmid, g);
    Ok(())
}

/// Allocates a template's volume and renames it `base-<vmid>-disk-N`, as `qm template` does.
fn base_volume(st: &mut ClusterState, t: &TemplateSpec, size: u64) -> Result<String, String> {
    let disk = storage::alloc(st, &t.node, NewVolume::disk(&t.storage, t.vmid, size, "images"))?;
    let base = disk.replacen(&format!("vm-{}-disk", t.vmid), &format!("base-{}-disk", t.vmid), 2);
    let scope = st.scope(&t.storage, &t.node);
    if let Some(mut v) = st.volumes.remove(&(scope.clone(), disk.clone())) {
        v.volid = base.clone();
        st.volumes.insert((scope, base.clone()), v);
    }
    Ok(base)
}

const CREATE_CONTROL: &[&str] = &["node", "vmid", "start", "pool", "archive", "storage", "force", "unique", "live-restore", "bwlimit"];

/// `POST /nodes/{node}/qemu` (`qmcreate`)
pub fn create(c: &Arc<Cluster>, node: &str, call: &ApiCall) -> Result<Value, ApiError> {
    let p = &call.params;
    let vmid = p.need_u32("vmid")?;
    if p.has("archive") {
        return super::backups::restore::restore(c, node, GuestKind::Qemu, call);
    }
    let start_after = p.bool("start").unwrap_or(false);
    let pool = p.str("pool");
    let mut set = p.without(CREATE_CONTROL);
    create_checks(c, call, vmid, pool.as_deref(), start_after, &set)?;
    if let Some(keys) = set.iter().find(|(k, _)| k == "sshkeys").map(|(_, v)| v.clone()) {
        super::config_update::validate_ssh_keys(&keys)?;
    }
    for (k, v) in set.iter_mut() {
        if k == "cipassword" {
            *v = super::cloudinit::hash_password(v);
        }
    }
    {
        let mut st = c.state();
        vmid_unused(&st, vmid).map_err(ApiError::server)?;
        let mut g = Guest::new(vmid, node, GuestKind::Qemu);
        g.config.insert("lock".into(), "create".into());
        st.guests.insert(vmid, g);
    }
    let node_owned = node.to_string();
    let ident = call.ident.clone();
    let upid = c.spawn_task(node, "qmcreate", &vmid.to_string(), &call.ident, move |c, _| async move {
        Cluster::pause(c.timing.task_secs).await;
        // `assert_tag_permissions` runs inside the worker, on `/vms/<vmid>` only (qemu-server `API2/Qemu.pm:1534-1538`).
        let tags_allowed = if set.iter().any(|(k, _)| k == "tags") { perms::tags(&ident, vmid).map_err(|e| e.to_string()) } else { Ok(()) };
        let result = {
            let mut st = c.state();
            let r = tags_allowed.and_then(|_| apply_changes(&mut st, vmid, &set, &[]).map_err(|e| e.to_string()));
            if let Some(g) = st.guests.get_mut(&vmid) {
                g.config.entry("smbios1".into()).or_insert_with(|| format!("uuid={}", uuid()));
                g.config.entry("vmgenid".into()).or_insert_with(uuid);
                g.config.insert("meta".into(), format!("creation-qemu=10.0.2,ctime={}", epoch()));
                g.config.remove("lock");
            }
            r
        };
        if let Err(e) = result {
            let mut st = c.state();
            remove_guest(&mut st, vmid, &node_owned);
            return Err(format!("unable to create VM {vmid} - {e}"));
        }
        if let Some(pool) = &pool {
            perms::add_to_pool(&c.access, vmid, pool);
        }
        if start_after {
            return super::power::boot(&c, &node_owned, vmid, GuestKind::Qemu).await;
        }
        Ok(0)
    });
    Ok(json!(upid))
}

/// The checks of qemu-server's `create_vm` before the fork (`src/PVE/API2/Qemu.pm:1290-1365`), in its order: the
/// pool exists; `Datastore.AllocateSpace` on `storage`; `VM.PowerMgmt` for `start=1`; `VM.Allocate` on the guest
/// or the pool; then for the options: storage access per drive, each option's privilege, serial sockets
/// (`VM.Config.HWType`), the bridges' `SDN.Use`. `tags` are checked in the worker ([`perms::tags`]).
fn create_checks(c: &Cluster, call: &ApiCall, vmid: u32, pool: Option<&str>, start_after: bool, set: &[(String, String)]) -> Result<(), ApiError> {
    let ident = &call.ident;
    let storage = call.params.str("storage");
    if let Some(pool) = pool {
        perms::pool_exists(&c.access, pool)?;
    }
    if let Some(s) = &storage {
        perms::check(ident, &format!("/storage/{s}"), &["Datastore.AllocateSpace"], false)?;
    }
    if start_after {
        perms::vm_perm(ident, vmid, pool, &["VM.PowerMgmt"], false)?;
    }
    perms::allocate(ident, vmid, pool)?;
    if set.is_empty() {
        return Ok(());
    }
    perms::qemu_storage_access(ident, vmid, set, storage.as_deref())?;
    let keys: Vec<&str> = set.iter().map(|(k, _)| k.as_str()).collect();
    perms::qemu_modify_config(ident, vmid, pool, &keys)?;
    for (k, v) in set {
        if k.strip_prefix("serial").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) && ident.authid() != "root@pam" {
            if v != "socket" {
                return Err(ApiError::server(format!("only root can set '{k}' config for real devices")));
            }
            perms::vm_perm(ident, vmid, pool, &["VM.Config.HWType"], false)?;
        }
    }
    perms::config_bridges(ident, GuestKind::Qemu, set.iter().map(|(k, v)| (k, v)))
}

/// Drops a guest and its volumes (failed create/clone).
fn remove_guest(st: &mut ClusterState, vmid: u32, node: &str) {
    let vols: Vec<String> = st.volumes.values().filter(|v| v.vmid == vmid).map(|v| v.volid.clone()).collect();
    for v in vols {
        storage::free(st, &v, node);
    }
    st.guests.remove(&vmid);
}

/// One drive to copy or link.
struct CloneDrive {
    key: String,
    src: String,
    size: u64,
    /// storage the new volume goes to
    storage: String,
    /// the template's base volume name, for a linked clone
    base: Option<String>,
    cloudinit: bool,
}

/// What the pre-checks decided for a clone.
struct ClonePlan {
    full: bool,
    target_node: String,
    drives: Vec<CloneDrive>,
    newconf: std::collections::BTreeMap<String, String>,
}

/// `$load_and_check` of `clone_vm`: runs before forking and again inside the worker.
fn load_and_check(st: &ClusterState, node: &str, vmid: u32, newid: u32, p: &Params) -> Result<ClonePlan, String> {
    let storage_param = p.str("storage");
    let target = p.str("target").filter(|t| t != node && t != "localhost");
    if let Some(t) = &target {
        if !st.nodes.contains_key(t) {
            return Err(format!("no such cluster node '{t}'"));
        }
    }
    if let Some(s) = &storage_param {
        if !st.storage_on_node(s, node) {
            return Err(format!("storage '{s}' does not exist"));
        }
        if let Some(t) = &target {
            if !st.storage_on_node(s, t) {
                return Err(format!("storage '{s}' is not available on node '{t}'"));
            }
            if !st.storages.get(s).is_some_and(|x| x.shared) {
                return Err(format!("can't clone to non-shared storage '{s}'"));
            }
        }
    }
    let g = st.guest_on(node, vmid, GuestKind::Qemu)?;
    g.check_lock()?;
    if let Some(snap) = p.str("snapname") {
        if !g.snapshots.contains_key(&snap) {
            return Err(format!("snapshot '{snap}' does not exist"));
        }
    }
    let full = p.bool("full").unwrap_or(!g.is_template());
    if storage_param.is_some() && !full {
        return Err("parameter 'storage' not allowed for linked clones".into());
    }
    if p.has("format") && !full {
        return Err("parameter 'format' not allowed for linked clones".into());
    }
    if !full && !g.is_template() {
        return Err("Linked clone feature is not supported for drive 'scsi0'".into());
    }
    let oldconf = match p.str("snapname") {
        Some(s) => g.snapshots.get(&s).map(|s| s.config.clone()).unwrap_or_default(),
        None => g.config.clone(),
    };
    let mut shared = true;
    let mut drives = Vec::new();
    let mut newconf = std::collections::BTreeMap::new();
    newconf.insert("lock".to_string(), "clone".to_string());
    for (k, v) in &oldconf {
        if matches!(k.as_str(), "parent" | "snaptime" | "vmstate" | "snapstate" | "lock") || k.starts_with("unused") {
            continue;
        }
        if k.starts_with("net") && k[3..].bytes().all(|b| b.is_ascii_digit()) {
            newconf.insert(k.clone(), normalize_net(GuestKind::Qemu, &super::config_update::strip_mac(v)));
        } else if super::disks::is_qemu_drive(k) && (!is_cdrom(v) || v.contains("cloudinit")) {
            let volid = volume_of(GuestKind::Qemu, v).unwrap_or_default();
            let src_storage = volid.split(':').next().unwrap_or_default().to_string();
            if !st.storages.get(&src_storage).is_some_and(|s| s.shared) {
                shared = false;
            }
            let size = storage::volume(st, &volid, node).map(|x| x.size).unwrap_or_else(|| size_of(GuestKind::Qemu, v));
            let cloudinit = is_cloudinit_volume(&volid);
            let storage = if full || cloudinit { storage_param.clone().unwrap_or(src_storage) } else { src_storage };
            let base = (!full && !cloudinit).then(|| volid.split(':').nth(1).unwrap_or_default().to_string());
            drives.push(CloneDrive { key: k.clone(), src: volid, size, storage, base, cloudinit });
            newconf.insert(k.clone(), v.clone());
        } else {
            newconf.insert(k.clone(), v.clone());
        }
    }
    if let Some(t) = &target {
        if !shared {
            return Err(format!("can't clone VM to node '{t}' (VM uses local storage)"));
        }
    }
    if st.guests.contains_key(&newid) {
        return Err(format!("unable to create VM {newid}: config file already exists"));
    }
    Ok(ClonePlan { full, target_node: target.unwrap_or_else(|| node.to_string()), drives, newconf })
}

/// `POST /nodes/{node}/qemu/{vmid}/clone` (`qmclone`)
pub fn clone(c: &Arc<Cluster>, node: &str, call: &ApiCall) -> Result<Value, ApiError> {
    let p = call.params.clone();
    let vmid = p.need_u32("vmid")?;
    let newid = p.need_u32("newid")?;
    if let Some(pool) = p.str("pool") {
        perms::pool_exists(&c.access, &pool)?;
    }
    load_and_check(&c.state(), node, vmid, newid, &p).map_err(ApiError::server)?;
    clone_access(c, &call.ident, node, vmid, &p)?;
    let node_owned = node.to_string();
    let upid = c.spawn_task(node, "qmclone", &vmid.to_string(), &call.ident, move |c, task| async move {
        Cluster::pause(c.timing.worker_start_secs).await;
        clone_worker(c, task, node_owned, vmid, newid, p).await
    });
    Ok(json!(upid))
}

/// The privileges `$load_and_check` of `clone_vm` checks in code (qemu-server `API2/Qemu.pm:4489-4494`): the
/// source's disks need `Datastore.AllocateSpace` on the target storage (`$check_storage_access_clone`), its bridges
/// `SDN.Use` (`check_bridge_access`). `VM.Clone` and `VM.Allocate` (on `newid` or the pool) are the schema's.
fn clone_access(c: &Cluster, ident: &crate::auth::Identity, node: &str, vmid: u32, p: &Params) -> Result<(), ApiError> {
    let source = {
        let st = c.state();
        let g = st.guest_on(node, vmid, GuestKind::Qemu).map_err(ApiError::server)?;
        match p.str("snapname") {
            Some(s) => g.snapshots.get(&s).map(|s| s.config.clone()).unwrap_or_default(),
            None => g.config.clone(),
        }
    };
    perms::clone_storage_access(ident, &source, p.str("storage").as_deref())?;
    perms::config_bridges(ident, GuestKind::Qemu, &source)
}

async fn clone_worker(c: Arc<Cluster>, task: Arc<super::tasks::Task>, node: String, vmid: u32, newid: u32, p: Params) -> TaskResult {
    // under the (simulated) config lock of newid: check again, then write the temporary config
    let plan = {
        let mut st = c.state();
        let plan = load_and_check(&st, &node, vmid, newid, &p)?;
        let mut g = Guest::new(newid, &node, GuestKind::Qemu);
        g.config.insert("lock".into(), "clone".into());
        st.guests.insert(newid, g);
        plan
    };
    task.log(format!("create {} clone of drive(s)", if plan.full { "full" } else { "linked" }));
    let result = copy_drives(&c, &task, &node, newid, &plan).await;
    let mut st = c.state();
    match result {
        Ok(drives) => {
            let Some(g) = st.guests.get_mut(&newid) else { return Err(format!("clone failed: VM {newid} vanished")) };
            let mut conf = plan.newconf.clone();
            conf.remove("lock");
            conf.remove("template");
            for (key, value) in drives {
                conf.insert(key, value);
            }
            conf.insert("name".into(), p.str("name").unwrap_or_else(|| format!("Copy-of-VM-{}", plan.newconf.get("name").cloned().unwrap_or_else(|| vmid.to_string()))));
            if let Some(d) = p.str("description") {
                conf.insert("description".into(), d);
            }
            conf.insert("smbios1".into(), format!("uuid={}", uuid()));
            if conf.contains_key("vmgenid") {
                conf.insert("vmgenid".into(), uuid());
            }
            g.config = conf;
            g.node = plan.target_node.clone();
            drop(st);
            if let Some(pool) = p.str("pool") {
                perms::add_to_pool(&c.access, newid, &pool);
            }
            Ok(0)
        }
        Err(e) => {
            remove_guest(&mut st, newid, &node);
            Err(format!("clone failed: {e}"))
        }
    }
}

/// Copies (full) or links each drive; full copies hold the target storage's lock meanwhile.
async fn copy_drives(c: &Arc<Cluster>, task: &super::tasks::Task, node: &str, newid: u32, plan: &ClonePlan) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let full_count = plan.drives.iter().filter(|d| !d.cloudinit && d.base.is_none()).count().max(1);
    for d in &plan.drives {
        let shared = c.state().storages.get(&d.storage).is_some_and(|s| s.shared);
        let value = plan.newconf.get(&d.key).cloned().unwrap_or_default();
        if d.cloudinit {
            let mut st = c.state();
            let volid = storage::alloc(&mut st, node, NewVolume::cloudinit(&d.storage, newid))?;
            out.push((d.key.clone(), format!("{volid},media=cdrom")));
            continue;
        }
        if let Some(base) = &d.base {
            let mut st = c.state();
            let volid = storage::alloc(&mut st, node, NewVolume::linked(&d.storage, newid, d.size, base))?;
            task.log(format!("clone {}: {} snapname=__base__ to {volid}", d.src, d.key));
            out.push((d.key.clone(), with_volume(GuestKind::Qemu, &value, &volid, d.size)));
            continue;
        }
        let timeout = std::time::Duration::from_secs_f64(c.timing.lock_timeout_secs);
        let forced = c.faults.lock_times_out(&d.storage);
        let guard = c.locks.acquire(&d.storage, node, shared, timeout, forced).await?;
        let volid = {
            let mut st = c.state();
            storage::alloc(&mut st, node, NewVolume::disk(&d.storage, newid, d.size, "images"))?
        };
        task.log(format!("drive mirror/copy {} -> {volid}", d.src));
        Cluster::pause(c.timing.clone_secs / full_count as f64).await;
        drop(guard);
        task.log(format!("transferred {0} of {0} (100.00%)", super::disks::format_size(d.size)));
        out.push((d.key.clone(), with_volume(GuestKind::Qemu, &value, &volid, d.size)));
    }
    if plan.drives.iter().all(|d| d.cloudinit || d.base.is_some()) {
        Cluster::pause(c.timing.clone_secs).await;
    }
    Ok(out)
}
