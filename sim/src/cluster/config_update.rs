//! Guest config reads and writes (`config`, `pending`, `resize`): digests, locks, deletions,
//! new volumes, MAC addresses, cloud-init keys and pending changes on running guests.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::disks::{self, format_size, is_cdrom, is_cloudinit_volume, is_disk_key, new_volume_request, size_of, volume_of, with_volume};
use super::state::{random_mac, ClusterState, Guest};
use super::storage::{self, NewVolume};
use super::{ApiCall, Cluster};
use crate::backend::GuestKind;
use crate::http::envelope::ApiError;
use crate::http::params::Params;
use crate::schema::formats::split_list;
use crate::schema::propstring::{get_key, split_simple};

/// Keys PVE returns as JSON numbers (integer or boolean typed).
fn numeric_key(kind: GuestKind, key: &str) -> bool {
    const COMMON: &[&str] = &["cores", "cpulimit", "cpuunits", "onboot", "protection", "template", "debug"];
    const QEMU: &[&str] = &[
        "sockets", "vcpus", "balloon", "shares", "kvm", "acpi", "tablet", "localtime", "numa", "reboot", "freeze",
        "ciupgrade", "autostart", "hugepages", "keephugepages", "migrate_downtime", "migrate_speed",
    ];
    const LXC: &[&str] = &["memory", "swap", "unprivileged", "tty", "console"];
    COMMON.contains(&key)
        || match kind {
            GuestKind::Qemu => QEMU.contains(&key),
            GuestKind::Lxc => LXC.contains(&key),
        }
}

fn json_value(kind: GuestKind, key: &str, value: &str) -> Value {
    if numeric_key(kind, key) {
        if let Ok(i) = value.parse::<i64>() {
            return json!(i);
        }
        if let Ok(f) = value.parse::<f64>() {
            return json!(f);
        }
    }
    json!(value)
}

/// The config as the API returns it (`cipassword` masked, `digest` added).
pub fn config_json(g: &Guest, config: &BTreeMap<String, String>) -> Value {
    let mut out = Map::new();
    for (k, v) in config {
        let shown = match k.as_str() {
            "cipassword" => "**********".to_string(),
            "description" => description_as_parsed(g.kind, v),
            _ => v.clone(),
        };
        out.insert(k.clone(), json_value(g.kind, k, &shown));
    }
    out.insert("digest".into(), json!(g.digest()));
    Value::Object(out)
}

/// The description as PVE reads it back from the config file, where it is written as `#` comment lines: a
/// container's gains a newline after every line (pve-container `src/PVE/LXC/Config.pm:1175`,
/// `$descr .= decode_text($1) . "\n"`), a VM's loses trailing whitespace (qemu-server
/// `src/PVE/QemuServer.pm:1968-1972`, `$descr =~ s/\s+$//`).
fn description_as_parsed(kind: GuestKind, text: &str) -> String {
    match kind {
        GuestKind::Qemu => text.trim_end().to_string(),
        GuestKind::Lxc => text.lines().map(|l| format!("{l}\n")).collect(),
    }
}

/// `GET …/config` (pending values applied unless `current=1`; `snapshot=` reads a snapshot).
pub fn get_config(c: &Cluster, node: &str, kind: GuestKind, p: &Params) -> Result<Value, ApiError> {
    let vmid = p.need_u32("vmid")?;
    let st = c.state();
    let g = st.guest_on(node, vmid, kind).map_err(ApiError::server)?;
    if let Some(snap) = p.str("snapshot") {
        let s = g.snapshots.get(&snap).ok_or_else(|| ApiError::server(format!("snapshot '{snap}' does not exist")))?;
        return Ok(config_json(g, &s.config));
    }
    let mut config = g.config.clone();
    if !p.bool("current").unwrap_or(false) {
        config.extend(g.pending.iter().map(|(k, v)| (k.clone(), v.clone())));
        for k in &g.pending_delete {
            config.remove(k);
        }
    }
    Ok(config_json(g, &config))
}

/// `GET …/pending`: `[{key, value, pending, delete}]`.
pub fn pending(c: &Cluster, node: &str, kind: GuestKind, p: &Params) -> Result<Value, ApiError> {
    let vmid = p.need_u32("vmid")?;
    let st = c.state();
    let g = st.guest_on(node, vmid, kind).map_err(ApiError::server)?;
    let mut keys: Vec<&String> = g.config.keys().chain(g.pending.keys()).chain(g.pending_delete.iter()).collect();
    keys.sort();
    keys.dedup();
    let mask = |k: &str, v: &str| if k == "cipassword" { "**********".to_string() } else { v.to_string() };
    let out: Vec<Value> = keys
        .into_iter()
        .filter(|k| !matches!(k.as_str(), "digest"))
        .map(|k| {
            let mut e = Map::new();
            e.insert("key".into(), json!(k));
            if let Some(v) = g.config.get(k) {
                e.insert("value".into(), json_value(kind, k, &mask(k, v)));
            }
            if let Some(v) = g.pending.get(k) {
                e.insert("pending".into(), json_value(kind, k, &mask(k, v)));
            }
            if g.pending_delete.contains(k) {
                e.insert("delete".into(), json!(1));
            }
            Value::Object(e)
        })
        .collect();
    Ok(Value::Array(out))
}

/// Keys a running guest takes at once; others wait in `pending` until the next start.
fn hotpluggable(kind: GuestKind, key: &str, is_new: bool) -> bool {
    if matches!(key, "name" | "description" | "tags" | "onboot" | "protection" | "lock") || key.starts_with("net") {
        return true;
    }
    match kind {
        GuestKind::Qemu => is_new && disks::is_qemu_drive(key),
        GuestKind::Lxc => matches!(key, "cores" | "cpulimit" | "memory" | "swap") || (is_new && disks::is_lxc_mount(key)),
    }
}

/// `skiplock` is for root@pam only (`Only root may use this option.`).
pub fn check_skiplock(call: &ApiCall) -> Result<bool, ApiError> {
    let skiplock = call.params.bool("skiplock").unwrap_or(false);
    if skiplock && call.ident.authid() != "root@pam" {
        return Err(ApiError::param("skiplock", "Only root may use this option."));
    }
    Ok(skiplock)
}

/// `PVE::Tools::assert_if_modified`
pub fn assert_digest(g: &Guest, digest: Option<&str>) -> Result<(), ApiError> {
    match digest {
        Some(d) if d != g.digest() => Err(ApiError::server("detected modified configuration - file changed by other user? Try again.")),
        _ => Ok(()),
    }
}

/// `validate_ssh_public_keys` on the url-decoded `sshkeys`.
pub fn validate_ssh_keys(encoded: &str) -> Result<(), ApiError> {
    let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy().to_string();
    for line in decoded.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut fields = line.split_whitespace();
        let key_type = fields.next().unwrap_or_default();
        let blob = fields.next().unwrap_or_default();
        let known = key_type.starts_with("ssh-") || key_type.starts_with("ecdsa-sha2-") || key_type.starts_with("sk-");
        let base64ish = !blob.is_empty() && blob.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
        if !known || !base64ish {
            return Err(ApiError::server("SSH public key validation error"));
        }
    }
    Ok(())
}

/// `model=virtio,bridge=vmbr0` / `virtio,bridge=…` → `virtio=BC:24:11:…,bridge=…` (QEMU);
/// LXC gets `hwaddr=` and `type=veth`.
pub fn normalize_net(kind: GuestKind, value: &str) -> String {
    match kind {
        GuestKind::Qemu => {
            let mut model = None;
            let mut mac = None;
            let mut rest = Vec::new();
            for (k, v) in split_simple(value, "model") {
                match k.as_str() {
                    "model" => model = Some(v),
                    "macaddr" => mac = Some(v),
                    _ if is_nic_model(&k) => {
                        model = Some(k);
                        mac = Some(v);
                    }
                    _ => rest.push(format!("{k}={v}")),
                }
            }
            let mut parts = vec![format!("{}={}", model.unwrap_or_else(|| "virtio".into()), mac.unwrap_or_else(random_mac))];
            parts.extend(rest);
            parts.join(",")
        }
        GuestKind::Lxc => {
            let mut pairs = split_simple(value, "name");
            if !pairs.iter().any(|(k, _)| k == "hwaddr") {
                pairs.push(("hwaddr".into(), random_mac()));
            }
            if !pairs.iter().any(|(k, _)| k == "type") {
                pairs.push(("type".into(), "veth".into()));
            }
            pairs.sort_by(|a, b| (a.0 != "name", &a.0).cmp(&(b.0 != "name", &b.0)));
            pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
        }
    }
}

/// A QEMU `net[n]` value without its MAC (clones get a new one): `virtio=MAC,…` → `model=virtio,…`.
pub fn strip_mac(value: &str) -> String {
    split_simple(value, "model")
        .into_iter()
        .filter(|(k, _)| k != "macaddr")
        .map(|(k, v)| if is_nic_model(&k) { format!("model={k}") } else { format!("{k}={v}") })
        .collect::<Vec<_>>()
        .join(",")
}

/// The MAC address of a stored `net[n]` value.
pub fn net_mac(kind: GuestKind, value: &str) -> Option<String> {
    let default = if kind == GuestKind::Qemu { "model" } else { "name" };
    split_simple(value, default)
        .into_iter()
        .find(|(k, _)| k == "macaddr" || k == "hwaddr" || (kind == GuestKind::Qemu && is_nic_model(k)))
        .map(|(_, v)| v)
}

fn is_nic_model(k: &str) -> bool {
    matches!(
        k,
        "e1000" | "e1000-82540em" | "e1000-82544gc" | "e1000-82545em" | "e1000e" | "i82551" | "i82557b" | "i82559er"
            | "ne2k_isa" | "ne2k_pci" | "pcnet" | "rtl8139" | "virtio" | "vmxnet3"
    )
}

/// Turns a requested drive/mount-point value into a stored one, allocating `STORAGE:SIZE`
/// volumes (and `STORAGE:cloudinit` drives).
pub fn prepare_disk(st: &mut ClusterState, g: &Guest, value: &str) -> Result<String, String> {
    if g.kind == GuestKind::Qemu && is_cdrom(value) && !value.contains("cloudinit") {
        return Ok(value.to_string());
    }
    let volume = volume_of(g.kind, value).unwrap_or_default();
    if let Some((storage, name)) = volume.split_once(':') {
        if name == "cloudinit" {
            let volid = storage::alloc(st, &g.node, NewVolume::cloudinit(storage, g.vmid))?;
            return Ok(format!("{volid},media=cdrom"));
        }
    }
    if let Some((storage, size)) = new_volume_request(&volume) {
        let content = if g.kind == GuestKind::Lxc { "rootdir" } else { "images" };
        let volid = storage::alloc(st, &g.node, NewVolume::disk(&storage, g.vmid, size, content))?;
        return Ok(with_volume(g.kind, value, &volid, size));
    }
    if volume.starts_with('/') {
        return Ok(value.to_string());
    }
    match storage::volume(st, &volume, &g.node) {
        Some(v) => Ok(with_volume(g.kind, value, &volume, v.size)),
        None => Err(format!("volume '{volume}' does not exist")),
    }
}

/// Applies `set` and `delete` to a guest (pending when running and not hot-pluggable).
pub fn apply_changes(st: &mut ClusterState, vmid: u32, set: &[(String, String)], delete: &[String]) -> Result<u32, ApiError> {
    let mut warnings = 0;
    let g = st.guests.get(&vmid).cloned().ok_or_else(|| ApiError::server(format!("VM {vmid} does not exist")))?;
    let running = g.running.is_some();
    let mut prepared = Vec::new();
    for (k, v) in set {
        let value = if is_disk_key(g.kind, k) {
            prepare_disk(st, &g, v).map_err(ApiError::server)?
        } else if k.starts_with("net") && k[3..].bytes().all(|b| b.is_ascii_digit()) {
            normalize_net(g.kind, v)
        } else {
            v.clone()
        };
        prepared.push((k.clone(), value));
    }
    let Some(g) = st.guests.get_mut(&vmid) else { return Err(ApiError::server(format!("VM {vmid} does not exist"))) };
    for k in delete {
        if !g.config.contains_key(k) && !g.pending.contains_key(k) {
            warnings += 1;
            continue;
        }
        if running && !hotpluggable(g.kind, k, false) {
            g.pending_delete.insert(k.clone());
            g.pending.remove(k);
        } else {
            g.config.remove(k);
            g.pending.remove(k);
        }
    }
    for (k, v) in prepared {
        let is_new = !g.config.contains_key(&k);
        if running && !hotpluggable(g.kind, &k, is_new) {
            g.pending.insert(k.clone(), v);
            g.pending_delete.remove(&k);
        } else {
            if let Some(old) = g.config.get(&k) {
                if is_disk_key(g.kind, &k) {
                    let old_vol = volume_of(g.kind, old).unwrap_or_default();
                    let new_vol = volume_of(g.kind, &v).unwrap_or_default();
                    if old_vol != new_vol && !is_cdrom(old) && !is_cloudinit_volume(&old_vol) {
                        let n = (0..).find(|n| !g.config.contains_key(&format!("unused{n}"))).unwrap_or(0);
                        g.config.insert(format!("unused{n}"), old_vol);
                    }
                }
            }
            g.config.insert(k.clone(), v);
            g.pending.remove(&k);
            g.pending_delete.remove(&k);
        }
    }
    Ok(warnings)
}

/// Moves pending changes into the config (at start/stop).
pub fn apply_pending(g: &mut Guest) {
    for (k, v) in std::mem::take(&mut g.pending) {
        g.config.insert(k, v);
    }
    for k in std::mem::take(&mut g.pending_delete) {
        g.config.remove(&k);
    }
}

const CONTROL_PARAMS: &[&str] = &["node", "vmid", "digest", "delete", "revert", "skiplock", "background_delay", "force"];

/// The checks and edits shared by `PUT …/config` and `POST …/config`.
fn update(c: &Cluster, node: &str, kind: GuestKind, call: &ApiCall) -> Result<u32, ApiError> {
    let p = &call.params;
    let vmid = p.need_u32("vmid")?;
    let skiplock = check_skiplock(call)?;
    let set = p.without(CONTROL_PARAMS);
    let delete: Vec<String> = p.str("delete").map(|d| split_list(&d)).unwrap_or_default();
    for k in &delete {
        if set.iter().any(|(s, _)| s == k) {
            return Err(ApiError::param("delete", format!("you can't use '-{k}' and -delete {k}' at the same time")));
        }
    }
    if let Some(keys) = set.iter().find(|(k, _)| k == "sshkeys").map(|(_, v)| v) {
        validate_ssh_keys(keys)?;
    }
    let set: Vec<(String, String)> = set
        .into_iter()
        .map(|(k, v)| if k == "cipassword" { (k, super::cloudinit::hash_password(&v)) } else { (k, v) })
        .collect();
    let old = c.with_guest(node, vmid, kind, |g| g.config.clone())?;
    super::perms::config_update(&call.ident, kind, vmid, &old, &set, &delete)?;
    let mut st = c.state();
    {
        let g = st.guest_on(node, vmid, kind).map_err(ApiError::server)?;
        if !skiplock {
            g.check_lock().map_err(ApiError::server)?;
        }
        assert_digest(g, p.str("digest").as_deref())?;
        if let Some(revert) = p.str("revert") {
            let keys = split_list(&revert);
            if let Some(g) = st.guests.get_mut(&vmid) {
                for k in keys {
                    g.pending.remove(&k);
                    g.pending_delete.remove(&k);
                }
            }
        }
    }
    apply_changes(&mut st, vmid, &set, &delete)
}

/// `PUT …/config` (synchronous; returns null).
pub fn update_sync(c: &Cluster, node: &str, kind: GuestKind, call: &ApiCall) -> Result<Value, ApiError> {
    update(c, node, kind, call)?;
    Ok(Value::Null)
}

/// `POST /nodes/{node}/qemu/{vmid}/config` (the same edits, reported through a `qmconfig` task).
pub fn update_async(c: &Arc<Cluster>, node: &str, kind: GuestKind, call: &ApiCall) -> Result<Value, ApiError> {
    let warnings = update(c, node, kind, call)?;
    let vmid = call.params.need_u32("vmid")?;
    let secs = c.timing.task_secs;
    let upid = c.spawn_task(node, "qmconfig", &vmid.to_string(), &call.ident, move |_, task| async move {
        Cluster::pause(secs).await;
        for _ in 0..warnings {
            task.log("cannot delete option - not set in current configuration!");
        }
        Ok(warnings)
    });
    Ok(json!(upid))
}

/// `PUT …/resize` (a `resize` task; grow only).
pub fn resize(c: &Arc<Cluster>, node: &str, kind: GuestKind, call: &ApiCall) -> Result<Value, ApiError> {
    let p = &call.params;
    let vmid = p.need_u32("vmid")?;
    let skiplock = check_skiplock(call)?;
    let disk = p.need("disk")?;
    let size = p.need("size")?;
    let digest = p.str("digest");
    c.with_guest(node, vmid, kind, |_| ())?;
    let node_owned = node.to_string();
    let upid = c.spawn_task(node, "resize", &vmid.to_string(), &call.ident, move |c, task| async move {
        Cluster::pause(c.timing.task_secs).await;
        let mut st = c.state();
        let g = st.guest_on(&node_owned, vmid, kind)?;
        if !skiplock {
            g.check_lock()?;
        }
        assert_digest(g, digest.as_deref()).map_err(|e| e.to_string())?;
        let value = g.config.get(&disk).cloned().ok_or_else(|| format!("disk '{disk}' does not exist"))?;
        if kind == GuestKind::Qemu && is_cdrom(&value) {
            return Err("you can't resize a cdrom".to_string());
        }
        let volid = volume_of(kind, &value).unwrap_or_default();
        let old = storage::volume(&st, &volid, &node_owned).map(|v| v.size).unwrap_or_else(|| size_of(kind, &value));
        let (grow, amount) = match size.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, size.as_str()),
        };
        let bytes = crate::schema::formats::parse_size(amount).filter(|_| !amount.ends_with("iB")).ok_or_else(|| "invalid size string".to_string())?;
        let new = if grow { old + bytes } else { bytes };
        if new < old {
            return Err(match kind {
                GuestKind::Qemu => "shrinking disks is not supported".to_string(),
                GuestKind::Lxc => "unable to shrink disk size".to_string(),
            });
        }
        task.log(format!("  Size of logical volume {volid} changed from {} to {}.", format_size(old), format_size(new)));
        if let Some(v) = storage::volume_mut(&mut st, &volid, &node_owned) {
            v.size = new;
        }
        if let Some(g) = st.guests.get_mut(&vmid) {
            let updated = disks::with_volume(kind, &value, &volid, new);
            g.config.insert(disk.clone(), updated);
        }
        Ok(0)
    });
    Ok(json!(upid))
}

/// The `ip=` of a stored `net0` (LXC) or `ipconfig0` (QEMU), if static.
pub fn static_ipv4(g: &Guest) -> Option<std::net::Ipv4Addr> {
    let (value, key, default) = match g.kind {
        GuestKind::Qemu => (g.config.get("ipconfig0")?, "ip", "ip"),
        GuestKind::Lxc => (g.config.get("net0")?, "ip", "name"),
    };
    let ip = get_key(value, default, key)?;
    ip.split('/').next()?.parse().ok()
}
