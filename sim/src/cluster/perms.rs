//! The privilege checks PVE's handlers make in code, besides the schema's `permissions.check`, and pool
//! membership of the guests they create. Sources (pinned): qemu-server `e6352be` `src/PVE/API2/Qemu.pm`,
//! `src/PVE/QemuServer.pm`; pve-container `94f5585` `src/PVE/API2/LXC.pm`, `src/PVE/LXC.pm`; pve-guest-common
//! `4a8f6cb` `src/PVE/GuestHelpers.pm`; pve-access-control `5ccd07d` `src/PVE/RPCEnvironment.pm`,
//! `src/PVE/AccessControl.pm`; pve-storage `0c56bad` `src/PVE/Storage.pm`.

use std::collections::BTreeMap;

use crate::auth::access::Access;
use crate::auth::Identity;
use crate::backend::GuestKind;
use crate::http::envelope::ApiError;
use crate::schema::propstring::get_key;

/// `raise_perm_exc($what)` (pve-common `PVE/Exception.pm`): 403 `Permission check failed (<what>)`.
fn denied(what: impl std::fmt::Display) -> ApiError {
    ApiError::Forbidden(format!("Permission check failed ({what})"))
}

/// `$authuser eq 'root@pam'`: the user itself, not one of its tokens, skips the per-option checks.
fn is_root(ident: &Identity) -> bool {
    ident.authid() == "root@pam"
}

/// `$rpcenv->check` (all of `privs`, the first missing one named) or `check_any` (any, all named with `|`),
/// RPCEnvironment.pm:291-326.
pub fn check(ident: &Identity, path: &str, privs: &[&str], any: bool) -> Result<(), ApiError> {
    if any {
        if privs.iter().any(|p| ident.has(path, p)) {
            return Ok(());
        }
        let names: Vec<String> = privs.iter().map(|p| ident.privilege_name(p)).collect();
        return Err(denied(format!("{path}, {}", names.join("|"))));
    }
    match privs.iter().find(|p| !ident.has(path, p)) {
        None => Ok(()),
        Some(p) => Err(denied(format!("{path}, {}", ident.privilege_name(p)))),
    }
}

/// `check_vm_perm` (RPCEnvironment.pm:388-397): on `/pool/<pool>` when a pool is given and that suffices,
/// else on `/vms/<vmid>` (whose error is the one raised).
pub fn vm_perm(ident: &Identity, vmid: u32, pool: Option<&str>, privs: &[&str], any: bool) -> Result<(), ApiError> {
    if let Some(pool) = pool {
        if check(ident, &format!("/pool/{pool}"), privs, any).is_ok() {
            return Ok(());
        }
    }
    check(ident, &format!("/vms/{vmid}"), privs, any)
}

/// `check_pool_exist` (RPCEnvironment.pm:376-386): 403 `Permission check failed (pool 'x' does not exist)`.
pub fn pool_exists(access: &Access, pool: &str) -> Result<(), ApiError> {
    if access.state().pools.contains_key(pool) {
        Ok(())
    } else {
        Err(denied(format!("pool '{pool}' does not exist")))
    }
}

/// Create's `VM.Allocate` (qemu-server `API2/Qemu.pm:1308-1321`, pve-container `API2/LXC.pm:295-318`): on
/// `/vms/<vmid>`, or on `/pool/<pool>` when `pool` is given; otherwise the bare `Permission check failed`.
pub fn allocate(ident: &Identity, vmid: u32, pool: Option<&str>) -> Result<(), ApiError> {
    if ident.has(&format!("/vms/{vmid}"), "VM.Allocate") || pool.is_some_and(|p| ident.has(&format!("/pool/{p}"), "VM.Allocate")) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("Permission check failed".into()))
    }
}

/// `PVE::AccessControl::add_vm_to_pool` (AccessControl.pm:1945-1958), called at the end of the create and clone
/// workers (qemu-server `API2/Qemu.pm:1553, 4710`; pve-container `API2/LXC.pm:631, 2229`): a pool that no longer
/// exists is skipped silently.
pub fn add_to_pool(access: &Access, vmid: u32, pool: &str) {
    let mut st = access.state();
    if st.pools.contains_key(pool) {
        for p in st.pools.values_mut() {
            p.vms.remove(&vmid);
        }
        if let Some(p) = st.pools.get_mut(pool) {
            p.vms.insert(vmid);
        }
    }
}

/// `PVE::AccessControl::remove_vm_access` (AccessControl.pm:1898-1919), called by destroy (qemu-server
/// `API2/Qemu.pm:2872`, pve-container `API2/LXC.pm:906`): the ACL below `/vms/<vmid>` and the pool membership go.
pub fn remove_vm_access(access: &Access, vmid: u32) {
    let mut st = access.state();
    let path = format!("/vms/{vmid}");
    st.acl.retain(|e| e.path != path && !e.path.starts_with(&format!("{path}/")));
    for p in st.pools.values_mut() {
        p.vms.remove(&vmid);
    }
}

/// `check_vnet_access` (pve-guest-common `GuestHelpers.pm:397-421`) for one `netN` value: `SDN.Use` on
/// `/sdn/zones/localnetwork/<bridge>/<tag>` with a tag, on each trunk's VLAN, else on the bridge (no SDN vnets here,
/// so the zone is always `localnetwork`).
pub fn bridge_access(ident: &Identity, kind: GuestKind, net: &str) -> Result<(), ApiError> {
    if is_root(ident) {
        return Ok(());
    }
    let default_key = match kind {
        GuestKind::Qemu => "model",
        GuestKind::Lxc => "name",
    };
    let Some(bridge) = get_key(net, default_key, "bridge") else { return Ok(()) };
    let base = format!("/sdn/zones/localnetwork/{bridge}");
    let tag = get_key(net, default_key, "tag").filter(|t| !t.is_empty() && t != "0");
    let trunks = get_key(net, default_key, "trunks").filter(|t| !t.is_empty());
    if let Some(tag) = &tag {
        check(ident, &format!("{base}/{tag}"), &["SDN.Use"], false)?;
    }
    if let Some(trunks) = &trunks {
        for vlan in trunk_tags(trunks) {
            check(ident, &format!("{base}/{vlan}"), &["SDN.Use"], false)?;
        }
    }
    if tag.is_none() && trunks.is_none() {
        check(ident, &base, &["SDN.Use"], false)?;
    }
    Ok(())
}

/// `get_tags_from_trunk` (GuestHelpers.pm): `10;20-22` → 10, 20, 21, 22.
fn trunk_tags(trunks: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in trunks.split(';').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    out.extend(a..=b.min(a + 4094));
                }
            }
            None => out.extend(part.parse::<u32>().ok()),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// `$NEW_DISK_RE` (qemu-server `QemuServer/Drive.pm`, pve-container `LXC.pm`): `[STORAGE:]SIZE` → the storage.
fn new_disk_storage(volume: &str) -> Option<Option<&str>> {
    let (storage, size) = match volume.split_once(':') {
        Some((s, size)) => (Some(s), size),
        None => (None, volume),
    };
    let numeric = !size.is_empty() && size.split_once('.').map_or(size.bytes().all(|b| b.is_ascii_digit()), |(a, b)| !a.is_empty() && !b.is_empty() && (a.bytes().chain(b.bytes())).all(|c| c.is_ascii_digit()));
    (numeric && storage.is_none_or(|s| !s.is_empty() && !s.contains('/'))).then_some(storage)
}

/// `PVE::Storage::check_volume_access` (Storage.pm:619-656) for an existing volume `volid` used by `vmid`.
pub fn volume_access(ident: &Identity, vmid: u32, volid: &str) -> Result<(), ApiError> {
    let Some((sid, volname)) = volid.split_once(':') else {
        return if is_root(ident) { Ok(()) } else { Err(ApiError::server("Only root can pass arbitrary filesystem paths.")) };
    };
    let storage = format!("/storage/{sid}");
    if ident.has(&storage, "Datastore.Allocate") {
        return Ok(());
    }
    let vtype = volname.split_once('/').map(|(t, _)| t).filter(|t| ["iso", "vztmpl", "import", "snippets", "dump", "backup"].contains(t));
    match vtype {
        Some("iso" | "vztmpl" | "import") => check(ident, &storage, &["Datastore.AllocateSpace", "Datastore.Audit"], true),
        Some(_) => Err(ApiError::server(format!("missing privileges to access {volid}"))),
        None => match volume_owner(volname) {
            Some(owner) if owner == vmid => Ok(()),
            Some(owner) => {
                check(ident, &storage, &["Datastore.Audit"], false)?;
                check(ident, &format!("/vms/{owner}"), &["VM.Config.Disk"], false)
            }
            None => Err(ApiError::server(format!("missing privileges to access {volid}"))),
        },
    }
}

/// The owning guest of an image volume: `vm-100-disk-0`, `base-9000-disk-0/vm-100-disk-0` (the clone's),
/// `100/vm-100-disk-0.qcow2`.
fn volume_owner(volname: &str) -> Option<u32> {
    let last = volname.rsplit('/').next().unwrap_or(volname);
    let rest = last.strip_prefix("vm-").or_else(|| last.strip_prefix("base-")).or_else(|| last.strip_prefix("subvol-"))?;
    rest.split('-').next()?.parse().ok()
}

/// The option classes of `$check_vm_modify_config_perm` (qemu-server `API2/Qemu.pm:789-861`).
fn qemu_option_privs(opt: &str) -> Option<&'static [&'static str]> {
    const CPU: &[&str] = &["cores", "cpu", "runningcpu", "cpulimit", "cpuunits", "numa", "smp", "sockets", "vcpus"];
    const MEMORY: &[&str] = &["memory", "balloon", "shares", "allow-ksm"];
    const HWTYPE: &[&str] = &["acpi", "hotplug", "kvm", "machine", "runningmachine", "scsihw", "smbios1", "tablet", "vga", "watchdog", "audio0", "rng0"];
    const GENERAL: &[&str] = &[
        "agent", "autostart", "bios", "description", "keyboard", "localtime", "migrate_downtime", "migrate_speed", "name", "onboot", "ostype",
        "protection", "reboot", "startdate", "startup", "tdf", "template",
    ];
    const DISK: &[&str] = &["boot", "bootdisk", "vmstatestorage"];
    const CLOUDINIT: &[&str] = &["cicustom", "cipassword", "citype", "ciuser", "ciupgrade", "nameserver", "searchdomain", "sshkeys"];
    let numbered = |prefix: &str| opt.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    Some(if CPU.contains(&opt) || numbered("numa") {
        &["VM.Config.CPU"]
    } else if MEMORY.contains(&opt) {
        &["VM.Config.Memory"]
    } else if HWTYPE.contains(&opt) {
        &["VM.Config.HWType"]
    } else if GENERAL.contains(&opt) {
        &["VM.Config.Options"]
    } else if opt == "freeze" {
        &["VM.PowerMgmt"]
    } else if DISK.contains(&opt) {
        &["VM.Config.Disk"]
    } else if numbered("net") || opt == "running-nets-host-mtu" {
        &["VM.Config.Network"]
    } else if CLOUDINIT.contains(&opt) || numbered("ipconfig") {
        // `check_vm_perm(…, ['VM.Config.Cloudinit', 'VM.Config.Network'], 1)`: either suffices.
        &["VM.Config.Cloudinit", "VM.Config.Network"]
    } else if opt == "vmstate" {
        &["VM.Config.Disk", "VM.PowerMgmt"]
    } else {
        return None;
    })
}

/// `$check_vm_modify_config_perm` (qemu-server `API2/Qemu.pm:995-1046`) for the keys set or deleted; drives,
/// `unused*`, `serial*`, `usb*`, `hostpci*`, `virtiofs*` and `tags` are checked elsewhere (see [`qemu_drive`] and
/// [`tags`]); anything unknown is root's only (`only root can set '<opt>' config`, a 500).
pub fn qemu_modify_config(ident: &Identity, vmid: u32, pool: Option<&str>, keys: &[&str]) -> Result<(), ApiError> {
    if is_root(ident) {
        return Ok(());
    }
    let numbered = |opt: &str, prefix: &str| opt.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    for opt in keys {
        if super::disks::is_qemu_drive(opt) || *opt == "cdrom" || *opt == "tags" || ["unused", "serial", "usb", "hostpci", "virtiofs"].iter().any(|p| numbered(opt, p)) {
            continue;
        }
        match qemu_option_privs(opt) {
            Some(privs) => {
                let any = privs.len() == 2 && privs[0] == "VM.Config.Cloudinit";
                vm_perm(ident, vmid, pool, privs, any)?;
                if *opt == "startup" {
                    check(ident, "/", &["Sys.Modify"], false)?;
                }
            }
            None => return Err(ApiError::server(format!("only root can set '{opt}' config"))),
        }
    }
    Ok(())
}

/// A drive's privileges on update (`$check_drive_perms`, qemu-server `API2/Qemu.pm:2273-2288`): a cloud-init drive
/// needs `VM.Config.Cloudinit` and `VM.Config.CDROM`, a CD-ROM `VM.Config.CDROM`, a disk `VM.Config.Disk`.
pub fn qemu_drive(ident: &Identity, vmid: u32, value: &str) -> Result<(), ApiError> {
    let file = super::disks::volume_of(GuestKind::Qemu, value).unwrap_or_default();
    let privs: &[&str] = if file == "cloudinit" || file.ends_with(":cloudinit") || super::disks::is_cloudinit_volume(&file) {
        &["VM.Config.Cloudinit", "VM.Config.CDROM"]
    } else if super::disks::is_cdrom(value) {
        &["VM.Config.CDROM"]
    } else {
        &["VM.Config.Disk"]
    };
    vm_perm(ident, vmid, None, privs, false)
}

/// `$check_storage_access` (qemu-server `API2/Qemu.pm:163-280`) for the drives in `settings`: a new disk
/// (`STORAGE:SIZE`) needs `Datastore.AllocateSpace` there; cloud-init and `none` need nothing; an existing
/// volume goes through [`volume_access`].
pub fn qemu_storage_access(ident: &Identity, vmid: u32, settings: &[(String, String)], default_storage: Option<&str>) -> Result<(), ApiError> {
    for (key, value) in settings {
        if !super::disks::is_qemu_drive(key) {
            if key == "vmstatestorage" {
                check(ident, &format!("/storage/{value}"), &["Datastore.AllocateSpace"], false)?;
            }
            continue;
        }
        let file = super::disks::volume_of(GuestKind::Qemu, value).unwrap_or_default();
        let volname = file.split_once(':').map_or(file.as_str(), |(_, v)| v);
        if file.is_empty() || file == "none" || file == "cloudinit" || volname == "cloudinit" {
            continue;
        }
        let cdrom = super::disks::is_cdrom(value);
        if cdrom && file == "cdrom" {
            check(ident, "/", &["Sys.Console"], false)?;
        } else if let Some(storage) = new_disk_storage(&file).filter(|_| !cdrom) {
            let storage = storage.or(default_storage).ok_or_else(|| ApiError::server("no storage ID specified (and no default storage)"))?;
            check(ident, &format!("/storage/{storage}"), &["Datastore.AllocateSpace"], false)?;
        } else {
            volume_access(ident, vmid, &file)?;
        }
    }
    Ok(())
}

/// `$check_storage_access_clone` (qemu-server `API2/Qemu.pm:282-323`): every non-CD-ROM drive of the source needs
/// `Datastore.AllocateSpace` on the target `storage`, or on its own storage without one.
pub fn clone_storage_access(ident: &Identity, source: &BTreeMap<String, String>, storage: Option<&str>) -> Result<(), ApiError> {
    for (key, value) in source {
        if !super::disks::is_qemu_drive(key) || super::disks::is_cdrom(value) {
            continue;
        }
        let Some(volid) = super::disks::volume_of(GuestKind::Qemu, value).filter(|v| v != "none") else { continue };
        let sid = storage.map(str::to_string).or_else(|| volid.split_once(':').map(|(s, _)| s.to_string())).unwrap_or_default();
        check(ident, &format!("/storage/{sid}"), &["Datastore.AllocateSpace"], false)?;
    }
    if let Some(s) = source.get("vmstatestorage") {
        check(ident, &format!("/storage/{s}"), &["Datastore.AllocateSpace"], false)?;
    }
    Ok(())
}

/// `check_bridge_access` (qemu-server `QemuServer.pm`, pve-container `LXC.pm:1758-1769`) for every `netN` of a config.
pub fn config_bridges<'a>(ident: &Identity, kind: GuestKind, config: impl IntoIterator<Item = (&'a String, &'a String)>) -> Result<(), ApiError> {
    for (key, value) in config {
        if key.strip_prefix("net").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
            bridge_access(ident, kind, value)?;
        }
    }
    Ok(())
}

/// `assert_tag_permissions` (GuestHelpers.pm:314-347): `VM.Config.Options` on `/vms/<vmid>` — never on the pool,
/// so a guest that is not yet a pool member (a create with `tags`) needs it there. Tag-access settings are the
/// defaults (`user-tag-access: free`, no privileged tags), so any tag is allowed then.
pub fn tags(ident: &Identity, vmid: u32) -> Result<(), ApiError> {
    vm_perm(ident, vmid, None, &["VM.Config.Options"], false)
}

/// `check_ct_modify_config_perm` (pve-container `LXC.pm:1655-1750`) for the keys of `new` set and `delete`d, with the
/// guest's current config `old` (empty at create).
pub fn lxc_modify_config(
    ident: &Identity,
    vmid: u32,
    pool: Option<&str>,
    old: &BTreeMap<String, String>,
    new: &[(String, String)],
    delete: &[String],
    unprivileged: bool,
) -> Result<(), ApiError> {
    if is_root(ident) {
        return Ok(());
    }
    let numbered = |opt: &str, prefix: &str| opt.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let root_only = |what: &str| Err(denied(format!("{what} is only allowed for root@pam")));
    let items = new.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))).chain(delete.iter().map(|k| (k.as_str(), None)));
    for (opt, value) in items {
        match opt {
            "cores" | "cpuunits" | "cpulimit" => vm_perm(ident, vmid, pool, &["VM.Config.CPU"], false)?,
            "memory" | "swap" => vm_perm(ident, vmid, pool, &["VM.Config.Memory"], false)?,
            "nameserver" | "searchdomain" | "hostname" => vm_perm(ident, vmid, pool, &["VM.Config.Network"], false)?,
            "hookscript" => return root_only("changing the hookscript"),
            "tags" => tags(ident, vmid)?,
            "features" => {
                if !unprivileged {
                    return root_only("changing feature flags for privileged container");
                }
                let parse = |v: Option<&String>| -> BTreeMap<String, String> {
                    v.map(|v| v.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()).unwrap_or_default()
                };
                let (before, after) = (parse(old.get(opt)), if value.is_some() { parse(value.map(str::to_string).as_ref()) } else { BTreeMap::new() });
                let changed: Vec<&String> = before.keys().chain(after.keys()).filter(|k| before.get(*k) != after.get(*k)).collect();
                if changed.iter().any(|k| *k != "nesting") {
                    return root_only("changing feature flags (except nesting)");
                }
                if !changed.is_empty() {
                    vm_perm(ident, vmid, pool, &["VM.Allocate"], false)?;
                }
            }
            _ if opt == "rootfs" || numbered(opt, "mp") => {
                vm_perm(ident, vmid, pool, &["VM.Config.Disk"], false)?;
                let Some(value) = value else { continue };
                let volume = get_key(value, "volume", "volume").unwrap_or_default();
                match new_disk_storage(&volume) {
                    Some(Some(sid)) => check(ident, &format!("/storage/{sid}"), &["Datastore.AllocateSpace"], false)?,
                    Some(None) => {}
                    None if volume.starts_with('/') => return Err(denied("mount point type bind is only allowed for root@pam")),
                    None => volume_access(ident, vmid, &volume)?,
                }
            }
            _ if numbered(opt, "net") => {
                vm_perm(ident, vmid, pool, &["VM.Config.Network"], false)?;
                if let Some(before) = old.get(opt) {
                    bridge_access(ident, GuestKind::Lxc, before)?;
                }
                if let Some(value) = value {
                    bridge_access(ident, GuestKind::Lxc, value)?;
                }
            }
            _ if numbered(opt, "dev") => return root_only("configuring device passthrough"),
            _ => vm_perm(ident, vmid, pool, &["VM.Config.Options"], false)?,
        }
    }
    Ok(())
}

/// `PUT|POST …/config`'s privilege checks. QEMU (`update_vm`, qemu-server `API2/Qemu.pm:2196-2204`, drives
/// 2273-2288, 2342, 2407-2413, `unused*` 2313-2318, tags 2375-2377 and 2491-2495): each option's privilege for the
/// keys set and deleted, storage access for new disks, `SDN.Use` for bridges, the drive's own privilege for drives
/// set or deleted, `VM.Config.Options` on the guest for tags. Containers (pve-container `API2/LXC/Config.pm:178-213`):
/// `check_ct_modify_config_perm` for the deleted keys, then for the set ones, with the container's `unprivileged`.
pub fn config_update(ident: &Identity, kind: GuestKind, vmid: u32, old: &BTreeMap<String, String>, set: &[(String, String)], delete: &[String]) -> Result<(), ApiError> {
    if kind == GuestKind::Lxc {
        let unprivileged = old.get("unprivileged").is_some_and(|u| u == "1");
        lxc_modify_config(ident, vmid, None, old, &[], delete, unprivileged)?;
        return lxc_modify_config(ident, vmid, None, old, set, &[], unprivileged);
    }
    let deleted: Vec<&str> = delete.iter().map(String::as_str).collect();
    qemu_modify_config(ident, vmid, None, &deleted)?;
    let keys: Vec<&str> = set.iter().map(|(k, _)| k.as_str()).collect();
    qemu_modify_config(ident, vmid, None, &keys)?;
    qemu_storage_access(ident, vmid, set, None)?;
    config_bridges(ident, GuestKind::Qemu, set.iter().map(|(k, v)| (k, v)))?;
    if is_root(ident) {
        return Ok(());
    }
    for opt in delete {
        match old.get(opt) {
            Some(value) if super::disks::is_qemu_drive(opt) => qemu_drive(ident, vmid, value)?,
            Some(_) if opt.starts_with("unused") => vm_perm(ident, vmid, None, &["VM.Config.Disk"], false)?,
            Some(_) if opt == "tags" => tags(ident, vmid)?,
            _ => {}
        }
    }
    for (opt, value) in set {
        if super::disks::is_qemu_drive(opt) {
            qemu_drive(ident, vmid, value)?;
        } else if opt == "tags" {
            tags(ident, vmid)?;
        }
    }
    Ok(())
}

/// `GET /cluster/resources` as the caller may see it (pve-manager `PVE/API2/Cluster.pm:533-658`): pools with
/// `Pool.Audit` (as `type: pool` entries, unless `type` filters them out), guests with `VM.Audit` (their `pool`
/// field only with `Pool.Audit` on it), every node but without its figures lacking `Sys.Audit` on it
/// (`PVE/API2Tools.pm:38-78`), storages with `Datastore.Audit`.
pub fn visible_resources(ident: &Identity, access: &Access, all: serde_json::Value, type_filter: Option<&str>) -> serde_json::Value {
    let pools: BTreeMap<String, Vec<u32>> = access.state().pools.iter().map(|(id, p)| (id.clone(), p.vms.iter().copied().collect())).collect();
    let pool_of = |vmid: u64| pools.iter().find(|(_, vms)| vms.iter().any(|v| u64::from(*v) == vmid)).map(|(id, _)| id.clone());
    let mut out: Vec<serde_json::Value> = Vec::new();
    if type_filter.is_none_or(|t| t == "pool") {
        for id in pools.keys().filter(|id| ident.has(&format!("/pool/{id}"), "Pool.Audit")) {
            out.push(serde_json::json!({"id": format!("/pool/{id}"), "pool": id, "type": "pool"}));
        }
    }
    for mut entry in all.as_array().cloned().unwrap_or_default() {
        let text = |k: &str| entry.get(k).and_then(serde_json::Value::as_str).map(str::to_string);
        match text("type").as_deref() {
            Some("qemu" | "lxc") => {
                let Some(vmid) = entry.get("vmid").and_then(serde_json::Value::as_u64) else { continue };
                if !ident.has(&format!("/vms/{vmid}"), "VM.Audit") {
                    continue;
                }
                if let Some(pool) = pool_of(vmid).filter(|p| ident.has(&format!("/pool/{p}"), "Pool.Audit")) {
                    entry["pool"] = serde_json::json!(pool);
                }
            }
            Some("node") => {
                let node = text("node").unwrap_or_default();
                if !ident.has(&format!("/nodes/{node}"), "Sys.Audit") {
                    if let Some(obj) = entry.as_object_mut() {
                        for k in ["cpu", "maxcpu", "mem", "maxmem", "disk", "maxdisk", "uptime"] {
                            obj.remove(k);
                        }
                    }
                }
            }
            Some("storage") => {
                if !ident.has(&format!("/storage/{}", text("storage").unwrap_or_default()), "Datastore.Audit") {
                    continue;
                }
            }
            _ => {}
        }
        out.push(entry);
    }
    serde_json::Value::Array(out)
}

/// A node's guest list (`GET /nodes/{node}/qemu`, `…/lxc`): only guests with `VM.Audit` (qemu-server
/// `API2/Qemu.pm:1111`; pve-container `API2/LXC.pm` `vmlist`).
pub fn visible_guests(ident: &Identity, all: serde_json::Value) -> serde_json::Value {
    let keep = |g: &serde_json::Value| g.get("vmid").and_then(serde_json::Value::as_u64).is_some_and(|id| ident.has(&format!("/vms/{id}"), "VM.Audit"));
    serde_json::Value::Array(all.as_array().cloned().unwrap_or_default().into_iter().filter(keep).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_disks_and_owners_are_told_apart() {
        assert_eq!(new_disk_storage("local-lvm:4"), Some(Some("local-lvm")));
        assert_eq!(new_disk_storage("8"), Some(None));
        assert_eq!(new_disk_storage("local-lvm:0.5"), Some(Some("local-lvm")));
        assert_eq!(new_disk_storage("local-lvm:vm-100-disk-0"), None);
        assert_eq!(volume_owner("base-9000-disk-0/vm-100-disk-0"), Some(100));
        assert_eq!(volume_owner("100/vm-100-disk-0.qcow2"), Some(100));
        assert_eq!(trunk_tags("10;20-22"), vec![10, 20, 21, 22]);
    }
}
