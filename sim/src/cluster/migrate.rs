//! Migration between nodes: `POST /nodes/{node}/qemu/{vmid}/migrate` (`qmigrate`) and
//! `POST /nodes/{node}/lxc/{vmid}/migrate` (`vzmigrate`).
//!
//! Modelled on (commits in README.md, "Migration"):
//! - qemu-server `src/PVE/API2/Qemu.pm` `migrate_vm` (the synchronous checks) and
//!   `src/PVE/QemuMigrate.pm` (`prepare`, `scan_local_volumes`, `sync_offline_local_volumes`,
//!   `phase1`, `phase1_cleanup`, `phase2`, `phase3_cleanup`), `src/PVE/QemuServer.pm`
//!   `check_storage_availability`, `src/PVE/QemuMigrate/Helpers.pm` `check_local_resources`;
//! - pve-container `src/PVE/API2/LXC.pm` `migrate_vm` and `src/PVE/LXC/Migrate.pm` (`prepare`,
//!   `phase1`, `phase1_cleanup`, `phase3`, `final_cleanup`);
//! - pve-guest-common `src/PVE/AbstractMigrate.pm` `migrate` (phase order, the timestamped log,
//!   `migration aborted` / `migration problems`) and `src/PVE/GuestHelpers.pm`
//!   `guest_migration_lock`;
//! - pve-common `src/PVE/JSONSchema.pm` `parse_idmap` / `map_id` (`targetstorage`),
//!   pve-storage `src/PVE/Storage.pm` `storage_config` / `storage_check_node` /
//!   `storage_migrate` (`allow_rename`), pve-cluster `src/PVE/Cluster.pm` `check_node_exists`.
//!
//! All simulated nodes are this one machine, so a migration re-homes the guest: `Guest::node`
//! changes; config, pending changes, snapshots, running state and address stay. A running VM
//! migrated online keeps its backend process (nothing to move); a container in restart mode is
//! stopped on the source and started again on the target, as PVE does. Volumes on local
//! (non-shared) storages are copied into the target node's scope (same name if free there, the
//! next free name otherwise, like `storage_migrate` with `allow_rename`) and the source copies
//! are freed at the end; volumes on shared storages stay where they are.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::config_update::apply_pending;
use super::disks::{is_cdrom, is_cloudinit_volume, is_disk_key, is_qemu_drive, new_volume_request, volume_key, volume_of};
use super::state::{epoch, ClusterState, Guest};
use super::storage::{self, VolKind};
use super::tasks::{Task, TaskResult};
use super::{ApiCall, Cluster};
use crate::auth::{require, Identity};
use crate::backend::GuestKind;
use crate::config::StorageSpec;
use crate::http::envelope::ApiError;
use crate::http::params::Params;
use crate::schema::formats::{check_format, split_list};
use crate::schema::propstring::{get_key, parse_boolean, set_key};

// ---------------------------------------------------------------------------------------------
// storage maps (`targetstorage` / `target-storage`)

/// `PVE::JSONSchema::parse_idmap` of a `targetstorage` (QEMU) / `target-storage` (LXC) value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageMap {
    /// `1`: every storage maps to itself.
    pub identity: bool,
    /// A single ID without `:`: the target of every storage not listed in `entries`.
    pub default: Option<String>,
    /// `source:target` pairs.
    pub entries: BTreeMap<String, String>,
}

/// pve-common `PVE::JSONSchema::parse_idmap($idmap, 'pve-storage-id')`, with its messages.
pub fn parse_idmap(text: &str) -> Result<StorageMap, String> {
    let check = |id: &str| {
        check_format(&json!("pve-storage-id"), id, "").map_err(|e| e.to_string().trim_end().to_string())
    };
    let mut map = StorageMap::default();
    for entry in split_list(text) {
        if entry == "1" {
            map.identity = true;
            continue;
        }
        // m/^([^:]+):([^:]+)$/
        let pair = entry.split_once(':').filter(|(s, t)| !s.is_empty() && !t.is_empty() && !t.contains(':'));
        if let Some((source, target)) = pair {
            if let Err(e) = check(source).and_then(|()| check(target)) {
                return Err(format!("entry '{entry}' contains invalid ID - {e}"));
            }
            if map.entries.contains_key(source) {
                return Err(format!("duplicate mapping for source '{source}'"));
            }
            map.entries.insert(source.to_string(), target.to_string());
        } else {
            if let Err(e) = check(&entry) {
                return Err(format!("entry '{entry}' contains invalid ID - {e}"));
            }
            if map.default.is_some() {
                return Err("default target ID can only be provided once".to_string());
            }
            map.default = Some(entry.clone());
        }
    }
    if map.identity && (map.default.is_some() || !map.entries.is_empty()) {
        return Err("identity mapping cannot be combined with other mappings".to_string());
    }
    Ok(map)
}

/// pve-common `PVE::JSONSchema::map_id`: the entry, else the default, else the source itself.
pub fn map_id(map: Option<&StorageMap>, source: &str) -> String {
    let Some(map) = map else { return source.to_string() };
    if let Some(target) = map.entries.get(source) {
        return target.clone();
    }
    if let Some(default) = &map.default {
        return default.clone();
    }
    source.to_string()
}

// ---------------------------------------------------------------------------------------------
// storage and volume helpers

/// pve-storage `storage_config` + `storage_check_node` (what `storage_check_enabled` does for
/// storages that cannot be disabled here).
fn storage_check_enabled<'a>(st: &'a ClusterState, storage: &str, node: &str) -> Result<&'a StorageSpec, String> {
    let spec = st.storages.get(storage).ok_or_else(|| format!("storage '{storage}' does not exist"))?;
    if !st.storage_on_node(storage, node) {
        return Err(format!("storage '{storage}' is not available on node '{node}'"));
    }
    Ok(spec)
}

fn has_content(spec: &StorageSpec, content: &str) -> bool {
    spec.content.iter().any(|c| c == content)
}

/// The content type pve-storage's `parse_volname` reports for a QEMU volume.
fn vtype_of(volid: &str) -> &'static str {
    let volname = volid.split_once(':').map(|(_, v)| v).unwrap_or(volid);
    match volname.split('/').next().unwrap_or_default() {
        "iso" => "iso",
        "vztmpl" => "vztmpl",
        "snippets" => "snippets",
        "import" => "import",
        _ => "images",
    }
}

/// The owner VMID of a volume (the `$owner` of `PVE::Storage::path`): `vm-N-…`, `base-N-…`,
/// `subvol-N-…` in the volume's last name component.
fn owner_of(volid: &str) -> Option<u32> {
    let name = volid.rsplit(['/', ':']).next()?;
    let rest = ["vm-", "base-", "subvol-", "basevol-"].iter().find_map(|p| name.strip_prefix(*p))?;
    rest.split('-').next()?.parse().ok()
}

/// The base volume of a linked clone (`parse_volname`'s `$basename`): `base-9000-disk-0` of
/// `local-lvm:base-9000-disk-0/vm-100-disk-0`, `base-9000-disk-0.qcow2` of
/// `local:9000/base-9000-disk-0.qcow2/100/vm-100-disk-0.qcow2`.
fn linked_base(volid: &str) -> Option<String> {
    let volname = volid.split_once(':')?.1;
    let parts: Vec<&str> = volname.split('/').collect();
    match parts.as_slice() {
        [base, _] if base.starts_with("base-") => Some(base.to_string()),
        [vmid, base, _, _] if vmid.bytes().all(|b| b.is_ascii_digit()) => Some(base.to_string()),
        _ => None,
    }
}

/// `PVE::Storage::volume_is_base_and_used`: a base volume some linked clone (on the same
/// storage, as seen from the same node) is made from.
fn base_in_use(st: &ClusterState, volid: &str, scope: &str) -> bool {
    let Some((storage, volname)) = volid.split_once(':') else { return false };
    let name = volname.rsplit('/').next().unwrap_or(volname);
    if !name.starts_with("base-") || linked_base(volid).is_some() {
        return false;
    }
    let prefix = format!("{storage}:");
    st.volumes
        .keys()
        .any(|(sc, v)| sc.as_str() == scope && v.starts_with(&prefix) && linked_base(v).as_deref() == Some(name))
}

/// pve-storage `storage_migrate` of one local volume to `target`: a copy on `targetsid` in the
/// target node's scope, under the same name if the storage type is the same and the name is
/// free there, else under the next free name (`allow_rename`; without it a taken name is an
/// error). The source volume stays until the migration frees it. Returns the new volid.
pub fn copy_to_node(
    st: &mut ClusterState,
    volid: &str,
    source: &str,
    target: &str,
    targetsid: &str,
    vmid: u32,
    allow_rename: bool,
) -> Result<String, String> {
    let (sid, volname) = storage::split_volid(volid).ok_or_else(|| format!("unable to parse volume ID '{volid}'"))?;
    let src_kind = st.storages.get(sid).map(|s| s.kind).ok_or_else(|| format!("storage '{sid}' does not exist"))?;
    let tgt = st.storages.get(targetsid).cloned().ok_or_else(|| format!("storage '{targetsid}' does not exist"))?;
    let mut vol = storage::volume(&*st, volid, source).cloned().ok_or_else(|| format!("volume '{volid}' does not exist"))?;
    let scope = st.scope(targetsid, target);
    let same = format!("{targetsid}:{volname}");
    let fresh_kind = if is_cloudinit_volume(volid) { VolKind::CloudInit } else { VolKind::Disk };
    let new = if src_kind == tgt.kind && !st.volumes.contains_key(&(scope.clone(), same.clone())) {
        same
    } else if src_kind == tgt.kind && !allow_rename {
        // (the sim's wording; the storage plugins' import dies with "volume … already exists")
        return Err(format!("volume '{same}' already exists"));
    } else {
        storage::new_volid(&*st, &tgt, target, vmid, fresh_kind, None)
    };
    if src_kind != tgt.kind {
        let format = if tgt.kind.is_file_based() && vol.content != "rootdir" { "qcow2" } else { "raw" };
        vol.format = format.to_string();
    }
    vol.volid = new.clone();
    vol.storage = targetsid.to_string();
    vol.ctime = epoch();
    st.volumes.insert((scope, new.clone()), vol);
    Ok(new)
}

/// `PVE::AbstractConfig::update_volume_ids`: every reference (config, pending, snapshots) to a
/// copied volume now names the copy.
fn update_volume_ids(g: &mut Guest, map: &BTreeMap<String, String>) {
    let kind = g.kind;
    let fix = |conf: &mut BTreeMap<String, String>| {
        for (key, value) in conf.iter_mut() {
            if is_unused_key(key) {
                if let Some(new) = map.get(value.as_str()) {
                    *value = new.clone();
                }
                continue;
            }
            if !is_disk_key(kind, key) {
                continue;
            }
            if let Some(new) = volume_of(kind, value.as_str()).and_then(|v| map.get(&v)) {
                *value = set_key(value.as_str(), volume_key(kind), volume_key(kind), new);
            }
        }
    };
    fix(&mut g.config);
    fix(&mut g.pending);
    for snap in g.snapshots.values_mut() {
        fix(&mut snap.config);
    }
}

fn is_unused_key(key: &str) -> bool {
    key.strip_prefix("unused").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn is_numbered(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// How a guest references one volume (`PVE::QemuServer::foreach_volid`'s attributes; for LXC
/// the mount points of the config, pending changes and snapshots).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct VolRef {
    /// The first config key it was found under (`scsi0`, `unused0`, `rootfs`, `mp0`).
    key: String,
    /// In the current config, not as `unusedN` (`is_attached`).
    attached: bool,
    unused: bool,
    in_pending: bool,
    /// Names of the snapshots referencing it.
    snapshots: Vec<String>,
    /// Every reference is a CD-ROM drive.
    cdrom: bool,
    tpmstate: bool,
    /// `shared=1` on the drive / mount point.
    shared: bool,
}

#[derive(Clone, Copy)]
enum Origin<'a> {
    Current,
    Pending,
    Snapshot(&'a str),
}

fn visit(out: &mut BTreeMap<String, VolRef>, kind: GuestKind, conf: &BTreeMap<String, String>, origin: Origin<'_>) {
    for (key, value) in conf {
        let unused = is_unused_key(key);
        if !unused && !is_disk_key(kind, key) {
            continue;
        }
        let volid = if unused {
            value.clone()
        } else {
            match volume_of(kind, value) {
                Some(v) if !v.is_empty() => v,
                _ => continue,
            }
        };
        // a new volume requested in a pending change (`STORAGE:SIZE`) does not exist yet
        if matches!(origin, Origin::Pending) && new_volume_request(&volid).is_some() {
            continue;
        }
        let cdrom = kind == GuestKind::Qemu && !unused && is_cdrom(value);
        let shared = !unused && get_key(value, volume_key(kind), "shared").is_some_and(|s| parse_boolean(&s) == Some(true));
        let r = out.entry(volid).or_insert_with(|| VolRef { key: key.clone(), cdrom: true, ..VolRef::default() });
        r.cdrom &= cdrom;
        r.shared |= shared;
        r.tpmstate |= key.as_str() == "tpmstate0";
        match origin {
            Origin::Current if unused => r.unused = true,
            Origin::Current => r.attached = true,
            Origin::Pending => r.in_pending = true,
            Origin::Snapshot(name) => r.snapshots.push(name.to_string()),
        }
    }
}

/// Every volume the guest references, by volid.
fn guest_volumes(g: &Guest) -> BTreeMap<String, VolRef> {
    let mut out = BTreeMap::new();
    visit(&mut out, g.kind, &g.config, Origin::Current);
    visit(&mut out, g.kind, &g.pending, Origin::Pending);
    for (name, snap) in &g.snapshots {
        visit(&mut out, g.kind, &snap.config, Origin::Snapshot(name.as_str()));
    }
    out
}

/// qemu-server `PVE::QemuMigrate::Helpers::check_local_resources` (with
/// `check_non_migratable_resources`): (blocking local resources, mapped devices). The sim has no
/// resource mappings, so a mapped device is missing on every node.
fn local_resources(g: &Guest, running: bool) -> (Vec<String>, Vec<String>) {
    let mut blockers = Vec::new();
    let mut mapped = Vec::new();
    if running {
        for key in ["amd-sev", "intel-tdx"] {
            if g.config.contains_key(key) {
                blockers.push(key.to_string());
            }
        }
        if g.config.keys().any(|k| is_numbered(k, "virtiofs")) {
            blockers.push("virtiofs".to_string());
        }
    }
    for key in ["hostusb", "hostpci", "ivshmem"] {
        if g.config.contains_key(key) {
            blockers.push(key.to_string());
        }
    }
    for (k, v) in &g.config {
        let usb = is_numbered(k, "usb");
        if usb && get_key(v, "host", "host").is_some_and(|h| h.eq_ignore_ascii_case("spice")) {
            continue;
        }
        let is_mapped = ((usb || is_numbered(k, "hostpci")) && get_key(v, "host", "mapping").is_some()) || is_numbered(k, "virtiofs");
        if is_mapped {
            mapped.push(k.clone());
            continue;
        }
        if is_numbered(k, "serial") && v.as_str() == "socket" {
            continue;
        }
        if ["usb", "hostpci", "serial", "parallel"].iter().any(|p| is_numbered(k, p)) {
            blockers.push(k.clone());
        }
    }
    (blockers, mapped)
}

/// `strftime("%F %H:%M:%S", localtime)` of AbstractMigrate's log — in UTC here.
fn stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // civil_from_days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

// ---------------------------------------------------------------------------------------------
// the API handler (synchronous checks, then the worker)

#[derive(Debug, Clone, Default)]
struct Opts {
    online: bool,
    restart: bool,
    with_local_disks: bool,
    force: bool,
    storagemap: Option<StorageMap>,
}

/// Perl truthiness of a parameter (`$param->{force}`, `$param->{migration_type}`).
fn perl_true(p: &Params, key: &str) -> bool {
    p.str(key).is_some_and(|v| !v.is_empty() && v != "0")
}

/// `$check_storage_access_migrate` of `API2/Qemu.pm` / `API2/LXC.pm`.
fn check_storage_access_migrate(st: &ClusterState, ident: &Identity, storage: &str, node: &str, kind: GuestKind) -> Result<(), ApiError> {
    let spec = storage_check_enabled(st, storage, node).map_err(ApiError::server)?;
    require(ident, &format!("/storage/{storage}"), "Datastore.AllocateSpace")?;
    match kind {
        GuestKind::Qemu if !has_content(spec, "images") => Err(ApiError::server(format!("storage '{storage}' does not support vm images"))),
        GuestKind::Lxc if !has_content(spec, "rootdir") => Err(ApiError::server(format!("storage '{storage}' does not support CT rootdirs"))),
        _ => Ok(()),
    }
}

/// qemu-server `PVE::QemuServer::check_storage_availability`: every drive's storage exists on
/// the source and the target and holds that content type.
fn check_storage_availability(st: &ClusterState, node: &str, vmid: u32, target: &str) -> Result<(), String> {
    let g = st.guest_on(node, vmid, GuestKind::Qemu)?;
    for (key, value) in &g.config {
        if !is_qemu_drive(key) {
            continue;
        }
        let Some(volid) = volume_of(GuestKind::Qemu, value) else { continue };
        let Some((sid, _)) = storage::split_volid(&volid) else { continue };
        let scfg = storage_check_enabled(st, sid, node)?;
        storage_check_enabled(st, sid, target)?;
        let vtype = vtype_of(&volid);
        if !has_content(scfg, vtype) {
            return Err(format!("{volid}: content type '{vtype}' is not available on storage '{sid}'"));
        }
    }
    Ok(())
}

/// `POST /nodes/{node}/qemu/{vmid}/migrate` (`qmigrate`) and `POST /nodes/{node}/lxc/{vmid}/migrate`
/// (`vzmigrate`): the checks `migrate_vm` does before forking, in its order.
pub fn migrate(c: &Arc<Cluster>, node: &str, kind: GuestKind, call: &ApiCall) -> Result<Value, ApiError> {
    let p = &call.params;
    let target = p.need("target")?;
    // `$localnode = PVE::INotify::nodename()` — the node the call was proxied to
    if target == node {
        return Err(ApiError::param("target", "target is local node."));
    }
    // `check_cfs_quorum` comes next; the `no_quorum` fault already answers writes in http.rs
    // `PVE::Cluster::check_node_exists`
    if !c.has_node(&target) {
        return Err(ApiError::server(format!("no such cluster node '{target}'")));
    }
    let vmid = p.need_u32("vmid")?;
    if kind == GuestKind::Qemu && call.ident.authid() != "root@pam" {
        for key in ["force", "migration_type", "migration_network"] {
            if perl_true(p, key) {
                return Err(ApiError::param(key, "Only root may use this option."));
            }
        }
    }
    let mut opts = Opts {
        online: p.bool("online").unwrap_or(false),
        restart: p.bool("restart").unwrap_or(false),
        with_local_disks: p.bool("with-local-disks").unwrap_or(false),
        force: p.bool("force").unwrap_or(false),
        storagemap: None,
    };
    {
        let st = c.state();
        // `load_config` ("Configuration file '…' does not exist")
        let g = st.guest_on(node, vmid, kind).map_err(ApiError::server)?;
        let running = g.running.is_some();
        match kind {
            GuestKind::Qemu => {
                g.check_lock().map_err(ApiError::server)?;
                if running && !opts.online {
                    return Err(ApiError::server("can't migrate running VM without --online"));
                }
                // "VM isn't running. Doing offline migration instead." (a warning on the daemon)
                if !running {
                    opts.online = false;
                }
            }
            // pve-container checks no lock here; its worker's `prepare` does
            GuestKind::Lxc => {
                if running && !opts.online && !opts.restart {
                    return Err(ApiError::server("can't migrate running container without --online or --restart"));
                }
            }
        }
    }
    let map_param = match kind {
        GuestKind::Qemu => "targetstorage",
        GuestKind::Lxc => "target-storage",
    };
    {
        let st = c.state();
        if let Some(text) = p.str(map_param).filter(|t| !t.is_empty()) {
            let map = parse_idmap(&text).map_err(|e| ApiError::param(map_param, format!("failed to parse storage map: {e}")))?;
            if !map.identity {
                require(&call.ident, &format!("/vms/{vmid}"), "VM.Config.Disk")?;
            }
            for sid in map.entries.values().chain(map.default.iter()) {
                check_storage_access_migrate(&st, &call.ident, sid, &target, kind)?;
            }
            if kind == GuestKind::Qemu && map.identity {
                check_storage_availability(&st, node, vmid, &target).map_err(ApiError::server)?;
            }
            opts.storagemap = Some(map);
        } else if kind == GuestKind::Qemu {
            check_storage_availability(&st, node, vmid, &target).map_err(ApiError::server)?;
        }
    }
    // (HA-managed guests would get an `hamigrate` task; the sim has no HA)
    let task_type = match kind {
        GuestKind::Qemu => "qmigrate",
        GuestKind::Lxc => "vzmigrate",
    };
    let source = node.to_string();
    let upid = c.spawn_task(node, task_type, &vmid.to_string(), &call.ident, move |c, task| async move {
        Cluster::pause(c.timing.worker_start_secs).await;
        let m = Migration {
            c,
            task,
            kind,
            vmid,
            source,
            target,
            opts,
            started: Instant::now(),
            errors: false,
            volume_map: BTreeMap::new(),
        };
        worker(m).await
    });
    Ok(json!(upid))
}

// ---------------------------------------------------------------------------------------------
// the worker

/// A local volume to copy (`$self->{local_volumes}` / `$volhash` entries).
#[derive(Debug, Clone)]
struct LocalVolume {
    targetsid: String,
    /// QEMU: `attached`, `unused`, `snapshot`, `pending`, `generated`, `config` (a local
    /// file/device); LXC: `config`, `snapshot`.
    reference: &'static str,
    /// Cloud-init drives keep their name (`allow_rename => 0`).
    preserve_name: bool,
}

/// One migration (`$self` of AbstractMigrate).
struct Migration {
    c: Arc<Cluster>,
    task: Arc<Task>,
    kind: GuestKind,
    vmid: u32,
    source: String,
    target: String,
    opts: Opts,
    started: Instant,
    /// `$self->{errors}`: problems after the config moved.
    errors: bool,
    /// Old volid → volid of its copy on the target (`$self->{volume_map}`).
    volume_map: BTreeMap<String, String>,
}

/// `guest_migration_lock` around AbstractMigrate's `migrate`.
async fn worker(mut m: Migration) -> TaskResult {
    // pve-guest-common GuestHelpers.pm: lock_file("/var/lock/pve-manager/pve-migrate-$vmid", 10)
    // (the sim waits `Timing::lock_timeout_secs`, 10 s by default)
    let path = format!("/var/lock/pve-manager/pve-migrate-{}", m.vmid);
    let timeout = Duration::from_secs_f64(m.c.timing.lock_timeout_secs);
    let _lock = m.c.locks.acquire_file(&m.source, &path, timeout).await?;
    m.started = Instant::now();
    let result = match m.kind {
        GuestKind::Qemu => m.qemu().await,
        GuestKind::Lxc => m.lxc().await,
    };
    let duration = m.duration();
    match result {
        Err(err) => {
            m.log_err(&format!("migration aborted (duration {duration}): {err}"));
            Err("migration aborted".to_string())
        }
        Ok(()) if m.errors => {
            m.log_err(&format!("migration finished with problems (duration {duration})"));
            Err("migration problems".to_string())
        }
        Ok(()) => {
            m.log(&format!("migration finished successfully (duration {duration})"));
            Ok(0)
        }
    }
}

impl Migration {
    /// AbstractMigrate's `log`: every line prefixed with the time (`ERROR:` for errors).
    fn log_line(&self, err: bool, msg: &str) {
        let msg = msg.trim_end_matches('\n');
        if msg.is_empty() {
            return;
        }
        let prefix = stamp(epoch());
        for line in msg.split('\n') {
            if err {
                self.task.log(format!("{prefix} ERROR: {line}"));
            } else {
                self.task.log(format!("{prefix} {line}"));
            }
        }
    }

    fn log(&self, msg: &str) {
        self.log_line(false, msg);
    }

    fn log_err(&self, msg: &str) {
        self.log_line(true, msg);
    }

    /// `%02d:%02d:%02d` since the migration started.
    fn duration(&self) -> String {
        let s = self.started.elapsed().as_secs();
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }

    fn target_ip(&self) -> String {
        self.c.state().nodes.get(&self.target).map(|n| n.ip.to_string()).unwrap_or_default()
    }

    /// `prepare`'s SSH test (`Can't connect to destination address using public key`): fails
    /// while the target node is offline (`Faults::set_node_offline`).
    fn check_ssh(&self) -> Result<(), String> {
        if self.c.faults.node_offline(&self.target) {
            return Err("Can't connect to destination address using public key".to_string());
        }
        Ok(())
    }

    /// Sets or removes the config's `lock` on `node`.
    fn set_lock(&self, node: &str, lock: Option<&str>) -> Result<(), String> {
        let mut st = self.c.state();
        let g = st.guest_on_mut(node, self.vmid, self.kind)?;
        match lock {
            Some(l) => {
                g.config.insert("lock".into(), l.into());
            }
            None => {
                g.config.remove("lock");
            }
        }
        Ok(())
    }

    /// Copies a volume to the target (`storage_migrate`) and records it in the volume map.
    fn copy_volume(&mut self, volid: &str, targetsid: &str, allow_rename: bool) -> Result<String, String> {
        let new = {
            let mut st = self.c.state();
            copy_to_node(&mut st, volid, &self.source, &self.target, targetsid, self.vmid, allow_rename)?
        };
        self.volume_map.insert(volid.to_string(), new.clone());
        Ok(new)
    }

    /// Frees the copies made on the target (QEMU `cleanup_remotedisks`: `pvesm free` there).
    fn free_target_copies(&mut self) {
        let copies = std::mem::take(&mut self.volume_map);
        let mut st = self.c.state();
        for new in copies.values() {
            storage::free(&mut st, new, &self.target);
        }
    }

    /// Frees the source volumes that were copied (`phase3`/`phase3_cleanup`: "destroy local
    /// copies").
    fn free_source_volumes(&self) {
        let mut st = self.c.state();
        for old in self.volume_map.keys() {
            storage::free(&mut st, old, &self.source);
        }
    }

    /// Moves the config to the target node with the copied volumes' new ids
    /// (`update_volume_ids` + `move_config_to_node`).
    fn move_config(&self) -> Result<(), String> {
        let mut st = self.c.state();
        let g = st.guest_on_mut(&self.source, self.vmid, self.kind)?;
        update_volume_ids(g, &self.volume_map);
        g.node = self.target.clone();
        Ok(())
    }

    // --- QEMU (QemuMigrate.pm) -----------------------------------------------------------------

    async fn qemu(&mut self) -> Result<(), String> {
        let running = {
            let st = self.c.state();
            self.qemu_prepare(&st)?
        };
        let online_volumes = match self.qemu_phase1(running).await {
            Ok(v) => v,
            Err(err) => {
                self.log_err(&err);
                // phase1_cleanup: drop the lock, free what was copied (cleanup_remotedisks)
                self.log("aborting phase 1 - cleanup resources");
                if let Err(e) = self.set_lock(&self.source, None) {
                    self.log_err(&e);
                }
                self.free_target_copies();
                return Err(err);
            }
        };
        if running {
            if let Err(err) = self.qemu_phase2(online_volumes).await {
                // AbstractMigrate: "online migrate failure - …", phase2_cleanup unlocks; the VM
                // stays on the source and the task ends with "migration problems"
                self.log_err(&format!("online migrate failure - {err}"));
                self.errors = true;
                if let Err(e) = self.set_lock(&self.source, None) {
                    self.log_err(&e);
                }
                self.free_target_copies();
                return Ok(());
            }
        }
        // phase3_cleanup: new volume ids, move the config, destroy the local copies, `qm unlock`
        self.move_config()?;
        self.free_source_volumes();
        if let Err(e) = self.set_lock(&self.target, None) {
            self.log_err(&e);
            self.errors = true;
        }
        Ok(())
    }

    /// `prepare` (runs before any lock is set; errors abort the migration).
    fn qemu_prepare(&self, st: &ClusterState) -> Result<bool, String> {
        let g = st.guest_on(&self.source, self.vmid, GuestKind::Qemu)?;
        g.check_lock()?;
        let running = g.running.is_some();
        if running && !self.opts.online {
            return Err("can't migrate running VM without --online".to_string());
        }
        let (blockers, mapped) = local_resources(g, running);
        if !blockers.is_empty() {
            // `$self->{running}` is still 0 inside prepare, so only `force` matters
            if !self.opts.force {
                return Err(format!("can't migrate VM which uses local devices: {}", blockers.join(", ")));
            }
            self.log("migrating VM which uses local devices");
        }
        if !mapped.is_empty() {
            return Err(format!("can't migrate to '{}': missing mapped devices {}", self.target, mapped.join(", ")));
        }
        // get_vm_volumes: the storage of every volume is available on the target
        for volid in guest_volumes(g).into_keys() {
            if volid.starts_with('/') {
                continue;
            }
            let Some((sid, _)) = storage::split_volid(&volid) else { continue };
            let scfg = storage_check_enabled(st, sid, &self.source)?;
            let targetsid = if scfg.shared { sid.to_string() } else { map_id(self.opts.storagemap.as_ref(), sid) };
            target_storage_check_available(st, &targetsid, &volid, &self.target)?;
        }
        self.check_ssh()?;
        Ok(running)
    }

    /// `phase1`: lock, scan, copy offline volumes. Returns the attached local volumes of a
    /// running VM (mirrored in phase 2).
    async fn qemu_phase1(&mut self, running: bool) -> Result<Vec<(String, LocalVolume)>, String> {
        let ip = self.target_ip();
        self.log(&format!("starting migration of VM {} to node '{}' ({ip})", self.vmid, self.target));
        self.set_lock(&self.source, Some("migrate"))?;
        let local = {
            let st = self.c.state();
            self.qemu_scan(&st, running)
        }
        .map_err(|e| format!("Problem found while scanning volumes - {e}"))?;
        let (online, offline): (Vec<(String, LocalVolume)>, Vec<(String, LocalVolume)>) =
            local.into_iter().partition(|(_, l)| running && l.reference == "attached");
        // sync_offline_local_volumes
        if !offline.is_empty() {
            self.log("copying local disk images");
            Cluster::pause(self.c.timing.clone_secs).await;
        }
        for (volid, l) in &offline {
            let new = self
                .copy_volume(volid, &l.targetsid, !l.preserve_name)
                .map_err(|e| format!("storage migration for '{volid}' to storage '{}' failed - {e}", l.targetsid))?;
            self.log(&format!("volume '{volid}' is '{new}' on the target"));
        }
        Ok(online)
    }

    /// `scan_local_volumes`: which volumes must be copied, and whether they can be.
    fn qemu_scan(&self, st: &ClusterState, running: bool) -> Result<BTreeMap<String, LocalVolume>, String> {
        let g = st.guest_on(&self.source, self.vmid, GuestKind::Qemu)?;
        let mut local: BTreeMap<String, LocalVolume> = BTreeMap::new();
        let mut vol_errors: BTreeMap<String, String> = BTreeMap::new();
        let mut other_errors: Vec<String> = Vec::new();
        for (volid, r) in guest_volumes(g) {
            if r.cdrom && volid == "cdrom" {
                let mut msg = "can't migrate local cdrom drive".to_string();
                if !r.snapshots.is_empty() && !r.attached {
                    let mut names = r.snapshots.clone();
                    names.sort();
                    msg.push_str(&format!(" (referenced in snapshot - {})", names.join(", ")));
                }
                other_errors.push(msg);
                continue;
            }
            if let Err(e) = self.qemu_test_volid(st, &volid, &r, running, &mut local) {
                vol_errors.insert(volid, e);
            }
        }
        for (volid, l) in &local {
            if l.reference == "attached" && running && !self.opts.with_local_disks {
                vol_errors.insert(volid.clone(), "can't live migrate attached local disks without with-local-disks option".to_string());
            }
            self.log(&match l.reference {
                "attached" => format!("found local disk '{volid}' (attached)"),
                "unused" => format!("found local disk '{volid}' (unused)"),
                "snapshot" => format!("found local disk '{volid}' (referenced by snapshot(s))"),
                "pending" => format!("found local disk '{volid}' (pending change)"),
                "generated" => format!("found generated disk '{volid}' (in current VM config)"),
                _ => format!("found local disk '{volid}'"),
            });
        }
        for (volid, e) in &vol_errors {
            self.log(&format!("can't migrate local disk '{volid}': {e}"));
        }
        for e in &other_errors {
            self.log(e);
        }
        if !vol_errors.is_empty() || !other_errors.is_empty() {
            return Err("can't migrate VM - check log".to_string());
        }
        // additional checks for local storage
        for volid in local.keys() {
            let sid = storage::split_volid(volid).map(|(s, _)| s).unwrap_or_default();
            let ty = st.storages.get(sid).map(|s| s.kind.plugin_type()).unwrap_or_default();
            if !matches!(ty, "dir" | "btrfs" | "zfspool" | "lvmthin" | "lvm") {
                return Err(format!("can't migrate '{volid}' - storage type '{ty}' not supported"));
            }
            if let Some(base) = linked_base(volid) {
                // (PVE's `die` has no newline here, so Perl appends " at …/QemuMigrate.pm line N.")
                return Err(format!("can't migrate '{volid}' as it's a clone of '{base}'"));
            }
        }
        Ok(local)
    }

    /// `$test_volid` of `scan_local_volumes`.
    fn qemu_test_volid(
        &self,
        st: &ClusterState,
        volid: &str,
        r: &VolRef,
        running: bool,
        local: &mut BTreeMap<String, LocalVolume>,
    ) -> Result<(), String> {
        if volid.starts_with('/') {
            if r.shared {
                return Ok(());
            }
            local.insert(volid.to_string(), LocalVolume { targetsid: String::new(), reference: "config", preserve_name: false });
            return Err("local file/device".to_string());
        }
        if r.cdrom && volid == "none" {
            return Ok(());
        }
        let (sid, _) = storage::split_volid(volid).ok_or_else(|| format!("unable to parse volume ID '{volid}'"))?;
        let scfg = storage_check_enabled(st, sid, &self.source)?;
        let targetsid = if scfg.shared { sid.to_string() } else { map_id(self.opts.storagemap.as_ref(), sid) };
        target_storage_check_available(st, &targetsid, volid, &self.target)?;
        if scfg.shared {
            return Ok(());
        }
        let cloudinit = r.cdrom && is_cloudinit_volume(volid);
        let reference = if r.tpmstate || cloudinit {
            "generated"
        } else if r.attached {
            "attached"
        } else if r.unused {
            "unused"
        } else if !r.snapshots.is_empty() {
            "snapshot"
        } else {
            "pending"
        };
        local.insert(volid.to_string(), LocalVolume { targetsid, reference, preserve_name: cloudinit });
        let Some(vol) = storage::volume(st, volid, &self.source) else {
            return Err(format!("unable to determine size for volume '{volid}'"));
        };
        if r.cdrom {
            if cloudinit {
                return Ok(());
            }
            return Err("local cdrom image".to_string());
        }
        let owner = owner_of(volid);
        if owner != Some(self.vmid) {
            return Err(format!("owned by other VM (owner = VM {})", owner.map(|o| o.to_string()).unwrap_or_default()));
        }
        if !r.snapshots.is_empty() {
            if running {
                return Err("online storage migration not possible if non-replicated snapshot exists".to_string());
            }
            // zfspool / btrfs are not modelled; qcow2 files carry their snapshots
            if vol.format != "qcow2" {
                return Err("non-migratable snapshot exists".to_string());
            }
        }
        if base_in_use(st, volid, &st.scope(sid, &self.source)) {
            return Err("referenced by linked clone(s)".to_string());
        }
        Ok(())
    }

    /// `phase2` of a running VM: start it on the target, mirror attached local disks
    /// (`with-local-disks`, new volumes allocated there), migrate the RAM. The backend's
    /// process is the same on every simulated node, so it just keeps running.
    async fn qemu_phase2(&mut self, online_volumes: Vec<(String, LocalVolume)>) -> Result<(), String> {
        self.log(&format!("starting VM {} on remote node '{}'", self.vmid, self.target));
        self.log("start remote tunnel");
        if !online_volumes.is_empty() {
            self.log("starting storage migration");
            Cluster::pause(self.c.timing.clone_secs).await;
            for (volid, l) in &online_volumes {
                self.copy_volume(volid, &l.targetsid, true)?;
            }
        }
        self.log(&format!("starting online/live migration on unix:/run/qemu-server/{}.migrate", self.vmid));
        Cluster::pause(self.c.timing.task_secs).await;
        self.log("migration status: completed");
        Ok(())
    }

    // --- LXC (LXC/Migrate.pm) ------------------------------------------------------------------

    async fn lxc(&mut self) -> Result<(), String> {
        let was_running = {
            let st = self.c.state();
            self.lxc_prepare(&st)?
        };
        // in restart mode, prepare shuts the container down before migrating
        if self.opts.restart && was_running {
            self.log(&format!("shutdown CT {}", self.vmid));
            self.stop_ct().await?;
        }
        if let Err(err) = self.lxc_phase1().await {
            self.log_err(&err);
            // phase1_cleanup: copies already made stay on the target ("fixme: try to remove ?")
            self.log("aborting phase 1 - cleanup resources");
            for new in self.volume_map.values() {
                self.log_err(&format!("found stale volume copy '{new}' on node '{}'", self.target));
            }
            if let Err(e) = self.lxc_final_cleanup(was_running, false).await {
                self.log_err(&e);
            }
            return Err(err);
        }
        // phase3: destroy local copies
        self.free_source_volumes();
        if let Err(e) = self.lxc_final_cleanup(was_running, true).await {
            self.log_err(&e);
            self.errors = true;
        }
        Ok(())
    }

    /// `prepare`: returns whether the CT was running.
    fn lxc_prepare(&self, st: &ClusterState) -> Result<bool, String> {
        let g = st.guest_on(&self.source, self.vmid, GuestKind::Lxc)?;
        g.check_lock()?;
        let running = g.running.is_some();
        if running {
            if self.opts.online {
                return Err("lxc live migration is currently not implemented".to_string());
            }
            if !self.opts.restart {
                // (no newline in PVE's die: Perl appends " at …/LXC/Migrate.pm line N.")
                return Err("running container can only be migrated in restart mode".to_string());
            }
        }
        // foreach_volume_full($conf, { include_unused => 1 }, …)
        for (key, value) in &g.config {
            let unused = is_unused_key(key);
            if !unused && !is_disk_key(GuestKind::Lxc, key) {
                continue;
            }
            let volid = if unused { value.clone() } else { volume_of(GuestKind::Lxc, value).unwrap_or_default() };
            if volid.starts_with('/') {
                let shared = get_key(value, "volume", "shared").is_some_and(|s| parse_boolean(&s) == Some(true));
                if shared {
                    continue;
                }
                let ty = if volid.starts_with("/dev/") { "device" } else { "bind" };
                return Err(format!("cannot migrate local {ty} mount point '{key}'"));
            }
            if volid.is_empty() {
                return Err(format!("missing volume for mount point '{key}'"));
            }
            let Some((sid, _)) = storage::split_volid(&volid) else {
                return Err(format!("can't determine assigned storage for mount point '{key}'"));
            };
            let scfg = storage_check_enabled(st, sid, &self.source)?;
            if !has_content(scfg, "rootdir") {
                return Err(format!("content type 'rootdir' is not available on storage '{sid}'"));
            }
            // ("unable to migrate local mount point … while CT is running" needs a running CT
            // without restart mode, which was refused above)
            let targetsid = if scfg.shared { sid.to_string() } else { map_id(self.opts.storagemap.as_ref(), sid) };
            let tcfg = storage_check_enabled(st, &targetsid, &self.target)?;
            if !has_content(tcfg, "rootdir") {
                return Err(format!("{volid}: content type 'rootdir' is not available on storage '{targetsid}'"));
            }
        }
        self.check_ssh()?;
        Ok(running)
    }

    /// `PVE::LXC::vm_stop` for restart mode (the sim stops at once; `timeout` is not needed).
    async fn stop_ct(&mut self) -> Result<(), String> {
        Cluster::pause(self.c.timing.stop_secs).await;
        self.c.backend.stop(self.vmid).await.map_err(|e| format!("{e:#}"))?;
        let mut st = self.c.state();
        if let Ok(g) = st.guest_on_mut(&self.source, self.vmid, GuestKind::Lxc) {
            g.running = None;
            apply_pending(g);
        }
        Ok(())
    }

    /// `phase1`: lock, scan, copy local volumes, move the config (the lock stays until
    /// `final_cleanup`'s `pct unlock` on the target).
    async fn lxc_phase1(&mut self) -> Result<(), String> {
        let ip = self.target_ip();
        self.log(&format!("starting migration of CT {} to node '{}' ({ip})", self.vmid, self.target));
        self.set_lock(&self.source, Some("migrate"))?;
        let local = {
            let st = self.c.state();
            self.lxc_scan(&st)
        }?;
        if !local.is_empty() {
            Cluster::pause(self.c.timing.clone_secs).await;
        }
        for (volid, l) in &local {
            let new = self
                .copy_volume(volid, &l.targetsid, true)
                .map_err(|e| format!("storage migration for '{volid}' to storage '{}' failed - {e}", l.targetsid))?;
            self.log(&format!("volume '{volid}' is '{new}' on the target"));
        }
        self.move_config()
    }

    /// `phase1`'s volume checks (`$test_volid` / `$test_mp` and the local-storage checks).
    fn lxc_scan(&self, st: &ClusterState) -> Result<BTreeMap<String, LocalVolume>, String> {
        let g = st.guest_on(&self.source, self.vmid, GuestKind::Lxc)?;
        let mut local: BTreeMap<String, LocalVolume> = BTreeMap::new();
        let mut errors: BTreeMap<String, String> = BTreeMap::new();
        for (volid, r) in guest_volumes(g) {
            if volid.starts_with('/') {
                // local ones were refused in prepare
                if r.attached || r.unused {
                    let ty = if volid.starts_with("/dev/") { "device" } else { "bind" };
                    self.log(&format!("ignoring shared '{ty}' mount point '{}' ('{volid}')", r.key));
                }
                continue;
            }
            if let Err(e) = self.lxc_test_volid(st, &volid, &r, &mut local) {
                errors.entry(volid).or_insert(e);
            }
        }
        for volid in local.keys() {
            let sid = storage::split_volid(volid).map(|(s, _)| s).unwrap_or_default();
            let ty = st.storages.get(sid).map(|s| s.kind.plugin_type()).unwrap_or_default();
            let problem = if !["dir", "zfspool", "lvmthin", "lvm", "btrfs"].contains(&ty) {
                Some(format!("storage type '{ty}' not supported"))
            } else {
                linked_base(volid).map(|base| format!("clone of '{base}'"))
            };
            if let Some(e) = problem {
                errors.entry(volid.clone()).or_insert(e);
            }
        }
        for (volid, l) in &local {
            self.log(&match l.reference {
                "snapshot" => format!("found local volume '{volid}' (referenced by snapshot(s))"),
                _ => format!("found local volume '{volid}' (in current VM config)"),
            });
        }
        for (volid, e) in &errors {
            self.log(&format!("can't migrate local volume '{volid}': {e}"));
        }
        if !errors.is_empty() {
            return Err("can't migrate CT - check log".to_string());
        }
        Ok(local)
    }

    /// `$test_volid` of LXC `phase1`.
    fn lxc_test_volid(&self, st: &ClusterState, volid: &str, r: &VolRef, local: &mut BTreeMap<String, LocalVolume>) -> Result<(), String> {
        let (sid, _) = storage::split_volid(volid).ok_or_else(|| format!("unable to parse volume ID '{volid}'"))?;
        let scfg = storage_check_enabled(st, sid, &self.source)?;
        if scfg.shared {
            if r.attached || r.unused || r.in_pending {
                self.log(&format!("volume '{volid}' is on shared storage '{sid}'"));
            }
            return Ok(());
        }
        let targetsid = map_id(self.opts.storagemap.as_ref(), sid);
        storage_check_enabled(st, &targetsid, &self.target)?;
        let reference = if r.attached || r.unused || r.in_pending { "config" } else { "snapshot" };
        local.insert(volid.to_string(), LocalVolume { targetsid, reference, preserve_name: false });
        let owner = owner_of(volid);
        if owner != Some(self.vmid) {
            return Err(format!("owned by other guest (owner = {})", owner.map(|o| o.to_string()).unwrap_or_default()));
        }
        // zfspool / btrfs (which can carry snapshots) are not modelled
        if !r.snapshots.is_empty() {
            return Err("non-migratable snapshot exists".to_string());
        }
        Ok(())
    }

    /// `final_cleanup`: unlock; in restart mode start the CT again — on the target after a
    /// migration, on the source after a failed one.
    async fn lxc_final_cleanup(&mut self, was_running: bool, conf_migrated: bool) -> Result<(), String> {
        self.log("start final cleanup");
        let restart = self.opts.restart && was_running;
        if !conf_migrated {
            if let Err(e) = self.set_lock(&self.source, None) {
                self.log_err(&e);
            }
            if restart {
                self.log("start container on source node");
                super::power::boot(&self.c, &self.source, self.vmid, GuestKind::Lxc).await?;
            }
        } else {
            // `pct unlock` on the target (cmd_logerr: an error is logged and counted)
            if let Err(e) = self.set_lock(&self.target, None) {
                self.log_err(&e);
                self.errors = true;
            }
            if restart {
                self.log("start container on target node");
                super::power::boot(&self.c, &self.target, self.vmid, GuestKind::Lxc).await?;
            }
        }
        Ok(())
    }
}

/// QemuMigrate `target_storage_check_available`.
fn target_storage_check_available(st: &ClusterState, targetsid: &str, volid: &str, target: &str) -> Result<(), String> {
    let tcfg = storage_check_enabled(st, targetsid, target)?;
    let vtype = vtype_of(volid);
    if !has_content(tcfg, vtype) {
        return Err(format!("{volid}: content type '{vtype}' is not available on storage '{targetsid}'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::cluster::state::{RunState, Snapshot};
    use crate::cluster::storage::NewVolume;
    use crate::config::{ClusterSpec, SimConfig, Timing};
    use crate::faults::Faults;

    #[test]
    fn storage_maps_like_parse_idmap() {
        assert_eq!(parse_idmap("1").unwrap(), StorageMap { identity: true, ..StorageMap::default() });
        let map = parse_idmap("local-lvm:shared,local:local-lvm").unwrap();
        assert_eq!(map_id(Some(&map), "local-lvm"), "shared");
        assert_eq!(map_id(Some(&map), "local"), "local-lvm");
        assert_eq!(map_id(Some(&map), "other"), "other");
        let map = parse_idmap("shared").unwrap();
        assert_eq!(map_id(Some(&map), "local-lvm"), "shared");
        assert_eq!(map_id(None, "local-lvm"), "local-lvm");
        assert_eq!(parse_idmap("1,shared").unwrap_err(), "identity mapping cannot be combined with other mappings");
        assert_eq!(parse_idmap("aa:bb,aa:cc").unwrap_err(), "duplicate mapping for source 'aa'");
        assert_eq!(parse_idmap("xx yy").unwrap_err(), "default target ID can only be provided once");
        // storage IDs have at least two characters
        assert!(parse_idmap("x").unwrap_err().starts_with("entry 'x' contains invalid ID - "));
        assert_eq!(
            parse_idmap("a:b:c").unwrap_err(),
            "entry 'a:b:c' contains invalid ID - storage ID 'a:b:c' contains illegal characters"
        );
    }

    #[test]
    fn log_timestamps_and_volume_names() {
        assert_eq!(stamp(0), "1970-01-01 00:00:00");
        assert_eq!(stamp(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(stamp(1_700_000_000), "2023-11-14 22:13:20");
        assert_eq!(stamp(4_102_444_799), "2099-12-31 23:59:59");
        assert_eq!(owner_of("local-lvm:vm-100-disk-0"), Some(100));
        assert_eq!(owner_of("local-lvm:base-9000-disk-0/vm-101-disk-0"), Some(101));
        assert_eq!(owner_of("local:100/vm-100-disk-0.qcow2"), Some(100));
        assert_eq!(owner_of("local-lvm:vm-9000-cloudinit"), Some(9000));
        assert_eq!(owner_of("local:iso/debian.iso"), None);
        assert_eq!(linked_base("local-lvm:base-9000-disk-0/vm-100-disk-0").as_deref(), Some("base-9000-disk-0"));
        assert_eq!(linked_base("local:9000/base-9000-disk-0.qcow2/100/vm-100-disk-0.qcow2").as_deref(), Some("base-9000-disk-0.qcow2"));
        assert_eq!(linked_base("local:100/vm-100-disk-0.qcow2"), None);
        assert_eq!(linked_base("local-lvm:base-9000-disk-0"), None);
        assert_eq!(vtype_of("local:iso/debian.iso"), "iso");
        assert_eq!(vtype_of("local:100/vm-100-disk-0.qcow2"), "images");
    }

    #[test]
    fn volumes_of_a_guest_and_their_renaming() {
        let mut g = Guest::new(100, "pve1", GuestKind::Qemu);
        g.config.insert("scsi0".into(), "local-lvm:vm-100-disk-0,size=4G".into());
        g.config.insert("ide2".into(), "local-lvm:vm-100-cloudinit,media=cdrom".into());
        g.config.insert("ide0".into(), "none,media=cdrom".into());
        g.config.insert("unused0".into(), "local-lvm:vm-100-disk-1".into());
        g.pending.insert("scsi1".into(), "local-lvm:8".into());
        let mut snap = g.config.clone();
        snap.insert("scsi2".into(), "local-lvm:vm-100-disk-2,size=1G".into());
        g.snapshots.insert("before".into(), Snapshot { config: snap, snaptime: 0, description: String::new() });
        let vols = guest_volumes(&g);
        assert_eq!(vols.keys().cloned().collect::<Vec<_>>(), vec![
            "local-lvm:vm-100-cloudinit", "local-lvm:vm-100-disk-0", "local-lvm:vm-100-disk-1", "local-lvm:vm-100-disk-2", "none"
        ]);
        let d0 = &vols["local-lvm:vm-100-disk-0"];
        assert!(d0.attached && !d0.cdrom && d0.snapshots == vec!["before".to_string()] && d0.key == "scsi0");
        assert!(vols["local-lvm:vm-100-cloudinit"].cdrom && vols["none"].cdrom);
        assert!(vols["local-lvm:vm-100-disk-1"].unused && !vols["local-lvm:vm-100-disk-1"].attached);
        assert!(!vols["local-lvm:vm-100-disk-2"].attached && vols["local-lvm:vm-100-disk-2"].snapshots.len() == 1);

        let map = BTreeMap::from([
            ("local-lvm:vm-100-disk-0".to_string(), "local-lvm:vm-100-disk-3".to_string()),
            ("local-lvm:vm-100-disk-1".to_string(), "local-lvm:vm-100-disk-4".to_string()),
        ]);
        update_volume_ids(&mut g, &map);
        assert_eq!(g.config["scsi0"], "local-lvm:vm-100-disk-3,size=4G");
        assert_eq!(g.config["unused0"], "local-lvm:vm-100-disk-4");
        assert_eq!(g.config["ide2"], "local-lvm:vm-100-cloudinit,media=cdrom");
        assert_eq!(g.snapshots["before"].config["scsi0"], "local-lvm:vm-100-disk-3,size=4G");
        assert_eq!(g.pending["scsi1"], "local-lvm:8");
    }

    #[test]
    fn local_resources_block_offline_and_online() {
        let mut g = Guest::new(100, "pve1", GuestKind::Qemu);
        g.config.insert("serial0".into(), "socket".into());
        g.config.insert("usb0".into(), "host=spice".into());
        assert_eq!(local_resources(&g, true), (Vec::<String>::new(), Vec::<String>::new()));
        g.config.insert("hostpci0".into(), "0000:01:00.0".into());
        g.config.insert("usb1".into(), "mapping=stick".into());
        g.config.insert("amd-sev".into(), "type=std".into());
        assert_eq!(local_resources(&g, false), (vec!["hostpci0".to_string()], vec!["usb1".to_string()]));
        assert_eq!(local_resources(&g, true).0, vec!["amd-sev".to_string(), "hostpci0".to_string()]);
    }

    fn state_with_storages() -> ClusterState {
        let mut st = ClusterState::default();
        for s in ClusterSpec::sandbox().storages {
            st.storages.insert(s.id.clone(), s);
        }
        st
    }

    #[test]
    fn copies_keep_or_change_names_like_storage_migrate() {
        let mut st = state_with_storages();
        let v = storage::alloc(&mut st, "pve1", NewVolume::disk("local-lvm", 100, 1 << 30, "images")).unwrap();
        assert_eq!(v, "local-lvm:vm-100-disk-0");
        // free name on the target: kept
        assert_eq!(copy_to_node(&mut st, &v, "pve1", "pve2", "local-lvm", 100, true).unwrap(), v);
        assert!(st.volumes.contains_key(&("pve2".to_string(), v.clone())));
        assert!(st.volumes.contains_key(&("pve1".to_string(), v.clone())), "the source stays until freed");
        // taken now: renamed with allow_rename, an error without
        assert_eq!(copy_to_node(&mut st, &v, "pve1", "pve2", "local-lvm", 100, true).unwrap(), "local-lvm:vm-100-disk-1");
        assert!(copy_to_node(&mut st, &v, "pve1", "pve2", "local-lvm", 100, false).is_err());
        // another storage type: named in its scheme
        let moved = copy_to_node(&mut st, &v, "pve1", "pve2", "local", 100, true).unwrap();
        assert_eq!(moved, "local:100/vm-100-disk-0.qcow2");
        assert_eq!(st.volumes[&("pve2".to_string(), moved)].format, "qcow2");
        assert!(copy_to_node(&mut st, "local-lvm:vm-100-disk-9", "pve1", "pve2", "local-lvm", 100, true).is_err());
    }

    #[test]
    fn base_volumes_used_by_linked_clones() {
        let mut st = state_with_storages();
        let base = "local-lvm:base-9000-disk-0".to_string();
        let vol = storage::alloc(&mut st, "pve1", NewVolume::disk("local-lvm", 9000, 1 << 30, "images")).unwrap();
        let mut v = st.volumes.remove(&("pve1".to_string(), vol)).unwrap();
        v.volid = base.clone();
        st.volumes.insert(("pve1".to_string(), base.clone()), v);
        assert!(!base_in_use(&st, &base, "pve1"));
        let linked = storage::alloc(&mut st, "pve1", NewVolume::linked("local-lvm", 100, 1 << 30, "base-9000-disk-0")).unwrap();
        assert_eq!(linked, "local-lvm:base-9000-disk-0/vm-100-disk-0");
        assert!(base_in_use(&st, &base, "pve1"));
        assert!(!base_in_use(&st, &base, "pve2"));
        assert!(!base_in_use(&st, &linked, "pve1"));
    }

    // --- the handler and the worker against a cluster (no HTTP server) ----------------------

    fn cluster(dir: &std::path::Path) -> Arc<Cluster> {
        let mut cfg = SimConfig::sandbox(dir.to_path_buf());
        cfg.timing = Timing {
            clone_secs: 0.0,
            start_secs: 0.0,
            stop_secs: 0.0,
            agent_delay_secs: 0.0,
            lock_timeout_secs: 0.2,
            worker_start_secs: 0.0,
            task_secs: 0.0,
            unauthorized_delay_secs: 0.0,
            agent_ping_timeout_secs: 0.0,
            agent_command_timeout_secs: 0.0,
        };
        Cluster::new(&cfg, Faults::default(), "00:11".to_string(), Arc::new(crate::auth::access::Access::new(9))).unwrap()
    }

    fn call(kind: GuestKind, params: Value) -> ApiCall {
        let path = match kind {
            GuestKind::Qemu => "/nodes/{node}/qemu/{vmid}/migrate",
            GuestKind::Lxc => "/nodes/{node}/lxc/{vmid}/migrate",
        };
        ApiCall {
            method: "POST".to_string(),
            path: path.to_string(),
            params: Params(params.as_object().cloned().unwrap_or_default()),
            ident: Identity::root(),
            upload: None,
        }
    }

    /// A guest on pve1 with one disk on `storage`.
    fn add_guest(c: &Cluster, vmid: u32, kind: GuestKind, storage: &str, running: bool) -> String {
        let mut st = c.state();
        let content = if kind == GuestKind::Qemu { "images" } else { "rootdir" };
        let volid = storage::alloc(&mut st, "pve1", NewVolume::disk(storage, vmid, 1 << 30, content)).unwrap();
        let mut g = Guest::new(vmid, "pve1", kind);
        let key = if kind == GuestKind::Qemu { "scsi0" } else { "rootfs" };
        g.config.insert(key.into(), format!("{volid},size=1G"));
        if running {
            g.running = Some(RunState { since: Instant::now(), pid: 4242 });
            g.ipv4 = Some(Ipv4Addr::new(127, 77, 0, 5));
        }
        st.guests.insert(vmid, g);
        volid
    }

    /// Waits for the task; (exit status, log).
    async fn finish(c: &Cluster, upid: &Value) -> (String, Vec<String>) {
        let task = c.tasks.get(upid.as_str().unwrap()).unwrap();
        for _ in 0..500 {
            if !task.is_running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let status = task.exitstatus().expect("task finished");
        let log = crate::cluster::tasks::log(&c.tasks, &task.node, &Params(
            json!({"upid": task.upid, "limit": 0}).as_object().cloned().unwrap_or_default(),
        ))
        .unwrap()
        .0;
        let lines = log.as_array().unwrap().iter().map(|l| l["t"].as_str().unwrap_or_default().to_string()).collect();
        (status, lines)
    }

    fn has(log: &[String], needle: &str) -> bool {
        log.iter().any(|l| l.contains(needle))
    }

    #[tokio::test]
    async fn synchronous_checks() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(dir.path());
        let q = |params: Value| migrate(&c, "pve1", GuestKind::Qemu, &call(GuestKind::Qemu, params));
        match q(json!({"node": "pve1", "vmid": "9000", "target": "pve1"})) {
            Err(ApiError::Params(e)) => assert_eq!(e["target"], "target is local node."),
            other => panic!("{other:?}"),
        }
        match q(json!({"node": "pve1", "vmid": "9000", "target": "pve9"})) {
            Err(ApiError::Server(m)) => assert_eq!(m, "no such cluster node 'pve9'"),
            other => panic!("{other:?}"),
        }
        match q(json!({"node": "pve1", "vmid": "123", "target": "pve2"})) {
            Err(ApiError::Server(m)) => assert_eq!(m, "Configuration file 'nodes/pve1/qemu-server/123.conf' does not exist"),
            other => panic!("{other:?}"),
        }
        add_guest(&c, 100, GuestKind::Qemu, "local-lvm", true);
        match q(json!({"node": "pve1", "vmid": "100", "target": "pve2"})) {
            Err(ApiError::Server(m)) => assert_eq!(m, "can't migrate running VM without --online"),
            other => panic!("{other:?}"),
        }
        c.state().guests.get_mut(&100).unwrap().config.insert("lock".into(), "backup".into());
        match q(json!({"node": "pve1", "vmid": "100", "target": "pve2", "online": "1"})) {
            Err(ApiError::Server(m)) => assert_eq!(m, "VM is locked (backup)"),
            other => panic!("{other:?}"),
        }
        match q(json!({"node": "pve1", "vmid": "9000", "target": "pve2", "targetstorage": "1,shared"})) {
            Err(ApiError::Params(e)) => {
                assert_eq!(e["targetstorage"], "failed to parse storage map: identity mapping cannot be combined with other mappings")
            }
            other => panic!("{other:?}"),
        }
        add_guest(&c, 200, GuestKind::Lxc, "local-lvm", true);
        match migrate(&c, "pve1", GuestKind::Lxc, &call(GuestKind::Lxc, json!({"node": "pve1", "vmid": "200", "target": "pve2"}))) {
            Err(ApiError::Server(m)) => assert_eq!(m, "can't migrate running container without --online or --restart"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn offline_migration_moves_template_and_local_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(dir.path());
        let upid = migrate(&c, "pve1", GuestKind::Qemu, &call(GuestKind::Qemu, json!({"node": "pve1", "vmid": "9000", "target": "pve2"}))).unwrap();
        assert!(upid.as_str().unwrap().contains(":qmigrate:9000:root@pam:"));
        let (status, log) = finish(&c, &upid).await;
        assert_eq!(status, "OK", "{log:#?}");
        assert!(has(&log, "starting migration of VM 9000 to node 'pve2' (10.77.0.12)"), "{log:#?}");
        assert!(has(&log, "found generated disk 'local-lvm:vm-9000-cloudinit' (in current VM config)"));
        assert!(has(&log, "found local disk 'local-lvm:base-9000-disk-0' (attached)"));
        assert!(has(&log, "volume 'local-lvm:base-9000-disk-0' is 'local-lvm:base-9000-disk-0' on the target"));
        assert!(has(&log, "migration finished successfully (duration 00:00:00)"));
        let st = c.state();
        let g = &st.guests[&9000];
        assert_eq!(g.node, "pve2");
        assert_eq!(g.lock(), None);
        assert!(g.is_template());
        for v in ["local-lvm:base-9000-disk-0", "local-lvm:vm-9000-cloudinit"] {
            assert!(st.volumes.contains_key(&("pve2".to_string(), v.to_string())), "{v} on pve2");
            assert!(!st.volumes.contains_key(&("pve1".to_string(), v.to_string())), "{v} gone from pve1");
        }
    }

    #[tokio::test]
    async fn online_migration_needs_with_local_disks_and_keeps_running() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(dir.path());
        add_guest(&c, 100, GuestKind::Qemu, "local-lvm", true);
        let params = json!({"node": "pve1", "vmid": "100", "target": "pve2", "online": "1"});
        let upid = migrate(&c, "pve1", GuestKind::Qemu, &call(GuestKind::Qemu, params)).unwrap();
        let (status, log) = finish(&c, &upid).await;
        assert_eq!(status, "migration aborted");
        assert!(has(&log, "can't migrate local disk 'local-lvm:vm-100-disk-0': can't live migrate attached local disks without with-local-disks option"), "{log:#?}");
        assert!(has(&log, "ERROR: migration aborted (duration 00:00:00): Problem found while scanning volumes - can't migrate VM - check log"));
        assert!(has(&log, "aborting phase 1 - cleanup resources"));
        {
            let st = c.state();
            assert_eq!(st.guests[&100].node, "pve1");
            assert_eq!(st.guests[&100].lock(), None, "phase1_cleanup removes the lock");
        }
        let params = json!({"node": "pve1", "vmid": "100", "target": "pve2", "online": "1", "with-local-disks": "1", "targetstorage": "local"});
        let upid = migrate(&c, "pve1", GuestKind::Qemu, &call(GuestKind::Qemu, params)).unwrap();
        let (status, log) = finish(&c, &upid).await;
        assert_eq!(status, "OK", "{log:#?}");
        assert!(has(&log, "starting online/live migration on unix:/run/qemu-server/100.migrate"));
        let st = c.state();
        let g = &st.guests[&100];
        assert_eq!(g.node, "pve2");
        assert!(g.running.is_some());
        assert_eq!(g.ipv4, Some(Ipv4Addr::new(127, 77, 0, 5)));
        assert_eq!(g.config["scsi0"], "local:100/vm-100-disk-0.qcow2,size=1G");
        assert!(st.volumes.contains_key(&("pve2".to_string(), "local:100/vm-100-disk-0.qcow2".to_string())));
        assert!(!st.volumes.contains_key(&("pve1".to_string(), "local-lvm:vm-100-disk-0".to_string())));
    }

    #[tokio::test]
    async fn linked_clones_and_their_bases_stay() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(dir.path());
        {
            let mut st = c.state();
            let linked = storage::alloc(&mut st, "pve1", NewVolume::linked("local-lvm", 100, 4 << 30, "base-9000-disk-0")).unwrap();
            let mut g = Guest::new(100, "pve1", GuestKind::Qemu);
            g.config.insert("scsi0".into(), format!("{linked},size=4G"));
            st.guests.insert(100, g);
        }
        let upid = migrate(&c, "pve1", GuestKind::Qemu, &call(GuestKind::Qemu, json!({"node": "pve1", "vmid": "9000", "target": "pve2"}))).unwrap();
        let (status, log) = finish(&c, &upid).await;
        assert_eq!(status, "migration aborted");
        assert!(has(&log, "can't migrate local disk 'local-lvm:base-9000-disk-0': referenced by linked clone(s)"), "{log:#?}");
        let upid = migrate(&c, "pve1", GuestKind::Qemu, &call(GuestKind::Qemu, json!({"node": "pve1", "vmid": "100", "target": "pve2"}))).unwrap();
        let (status, log) = finish(&c, &upid).await;
        assert_eq!(status, "migration aborted");
        assert!(
            has(&log, "Problem found while scanning volumes - can't migrate 'local-lvm:base-9000-disk-0/vm-100-disk-0' as it's a clone of 'base-9000-disk-0'"),
            "{log:#?}"
        );
        let st = c.state();
        assert_eq!(st.guests[&9000].node, "pve1");
        assert_eq!(st.guests[&100].node, "pve1");
        assert_eq!(st.guests[&100].lock(), None);
    }

    #[tokio::test]
    async fn containers_restart_mode_locks_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(dir.path());
        add_guest(&c, 200, GuestKind::Lxc, "local-lvm", true);
        let lxc = |params: Value| migrate(&c, "pve1", GuestKind::Lxc, &call(GuestKind::Lxc, params));
        // online: accepted by the API, refused by the worker
        let upid = lxc(json!({"node": "pve1", "vmid": "200", "target": "pve2", "online": "1"})).unwrap();
        let (status, log) = finish(&c, &upid).await;
        assert_eq!(status, "migration aborted");
        assert!(has(&log, "migration aborted (duration 00:00:00): lxc live migration is currently not implemented"), "{log:#?}");
        // a lock is only checked by the worker for containers
        c.state().guests.get_mut(&200).unwrap().config.insert("lock".into(), "backup".into());
        let upid = lxc(json!({"node": "pve1", "vmid": "200", "target": "pve2", "restart": "1"})).unwrap();
        let (status, log) = finish(&c, &upid).await;
        assert_eq!(status, "migration aborted");
        assert!(has(&log, "): CT is locked (backup)"), "{log:#?}");
        c.state().guests.get_mut(&200).unwrap().config.remove("lock");
        // restart mode: stopped, moved, started on the target
        let upid = lxc(json!({"node": "pve1", "vmid": "200", "target": "pve2", "restart": "1"})).unwrap();
        let (status, log) = finish(&c, &upid).await;
        assert_eq!(status, "OK", "{log:#?}");
        assert!(has(&log, "shutdown CT 200") && has(&log, "start container on target node"));
        assert!(has(&log, "found local volume 'local-lvm:vm-200-disk-0' (in current VM config)"));
        {
            let st = c.state();
            let g = &st.guests[&200];
            assert_eq!(g.node, "pve2");
            assert!(g.running.is_some());
            assert_eq!(g.ipv4, Some(Ipv4Addr::new(127, 77, 0, 5)));
            assert_eq!(g.lock(), None);
        }
        // back again, stopped, with a snapshot on lvmthin: refused
        {
            let mut st = c.state();
            let g = st.guests.get_mut(&200).unwrap();
            g.running = None;
            let config = g.config.clone();
            g.snapshots.insert("s1".into(), Snapshot { config, snaptime: 0, description: String::new() });
        }
        let upid = migrate(&c, "pve2", GuestKind::Lxc, &call(GuestKind::Lxc, json!({"node": "pve2", "vmid": "200", "target": "pve1"}))).unwrap();
        let (status, log) = finish(&c, &upid).await;
        assert_eq!(status, "migration aborted");
        assert!(has(&log, "can't migrate local volume 'local-lvm:vm-200-disk-0': non-migratable snapshot exists"), "{log:#?}");
        assert!(has(&log, "can't migrate CT - check log"));
        assert_eq!(c.state().guests[&200].lock(), None, "final_cleanup unlocks");
    }

    #[tokio::test]
    async fn offline_target_and_migration_lock() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(dir.path());
        c.faults.set_node_offline("pve2", true);
        let upid = migrate(&c, "pve1", GuestKind::Qemu, &call(GuestKind::Qemu, json!({"node": "pve1", "vmid": "9000", "target": "pve2"}))).unwrap();
        let (status, log) = finish(&c, &upid).await;
        assert_eq!(status, "migration aborted");
        assert!(has(&log, "Can't connect to destination address using public key"), "{log:#?}");
        c.faults.set_node_offline("pve2", false);
        let _held = c.locks.acquire_file("pve1", "/var/lock/pve-manager/pve-migrate-9000", Duration::from_secs(1)).await.unwrap();
        let upid = migrate(&c, "pve1", GuestKind::Qemu, &call(GuestKind::Qemu, json!({"node": "pve1", "vmid": "9000", "target": "pve2"}))).unwrap();
        let (status, _) = finish(&c, &upid).await;
        assert_eq!(status, "can't lock file '/var/lock/pve-manager/pve-migrate-9000' - got timeout");
    }
}
