//! Guest lifecycle: `status/current`, start / stop / shutdown / reboot tasks, destroy, and
//! conversion to a template — for QEMU and LXC, calling the guest backend.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::config_update::{apply_pending, net_mac, static_ipv4};
use super::disks::{disk_keys, volume_of};
use super::nodes::guest_summary;
use super::state::{kind_name, ClusterState, Guest, RunState};
use super::tasks::TaskResult;
use super::{cloudinit, storage, ApiCall, Cluster};
use crate::backend::{GuestKind, GuestStart};
use crate::http::envelope::ApiError;
use crate::http::params::Params;

fn prefix(kind: GuestKind) -> &'static str {
    match kind {
        GuestKind::Qemu => "qm",
        GuestKind::Lxc => "vz",
    }
}

/// `GET …/status/current`
pub fn current(c: &Cluster, node: &str, kind: GuestKind, p: &Params) -> Result<Value, ApiError> {
    let vmid = p.need_u32("vmid")?;
    c.with_guest(node, vmid, kind, |g| {
        let running = g.running.is_some();
        let mut v = guest_summary(g);
        if let Some(obj) = v.as_object_mut() {
            obj.insert("ha".into(), json!({"managed": 0}));
            obj.insert("type".into(), json!(kind_name(kind)));
            if kind == GuestKind::Qemu {
                obj.insert("qmpstatus".into(), json!(if running { "running" } else { "stopped" }));
                obj.insert("agent".into(), json!(u8::from(agent_enabled(g))));
                if running {
                    obj.insert("running-machine".into(), json!("pc-i440fx-10.0+pve0"));
                    obj.insert("running-qemu".into(), json!("10.0.2"));
                }
            }
        }
        v
    })
}

/// `agent: 1` / `agent: enabled=1,…`
pub fn agent_enabled(g: &Guest) -> bool {
    g.config
        .get("agent")
        .and_then(|a| crate::schema::propstring::get_key(a, "enabled", "enabled"))
        .is_some_and(|e| crate::schema::propstring::parse_boolean(&e) == Some(true))
}

fn not_running(g: &Guest) -> String {
    format!("{} not running", g.label())
}

/// Boots a guest through the backend (shared by start, reboot, create-with-start).
pub async fn boot(c: &Arc<Cluster>, node: &str, vmid: u32, kind: GuestKind) -> TaskResult {
    Cluster::pause(c.timing.start_secs).await;
    let start = {
        let mut st = c.state();
        let g = st.guest_on(node, vmid, kind)?;
        if g.is_template() {
            return Err(match kind {
                GuestKind::Qemu => "you can't start a vm if it's a template".to_string(),
                GuestKind::Lxc => "you can't start a CT if it's a template".to_string(),
            });
        }
        g.check_lock()?;
        if g.running.is_some() {
            return Err(format!("{} already running", g.label()));
        }
        let wanted = static_ipv4(g);
        let existing = g.ipv4;
        let ip = match existing {
            Some(ip) if wanted.is_none_or(|w| w == ip) => ip,
            _ => st.allocate_ip(wanted).ok_or("no free address left in the simulator's pool")?,
        };
        let g = st.guest_on_mut(node, vmid, kind)?;
        apply_pending(g);
        g.ipv4 = Some(ip);
        let g = g.clone();
        guest_start(&st, c, &g, ip)?
    };
    c.backend.start(start).await.map_err(|e| format!("start failed: {e:#}"))?;
    let mut st = c.state();
    if let Ok(g) = st.guest_on_mut(node, vmid, kind) {
        g.running = Some(RunState { since: Instant::now(), pid: 10_000 + rand::random_range(0..50_000) });
    }
    Ok(0)
}

/// What the backend needs to boot `g` at `ip`.
fn guest_start(st: &ClusterState, c: &Cluster, g: &Guest, ip: Ipv4Addr) -> Result<GuestStart, String> {
    let (vmid, kind) = (g.vmid, g.kind);
    let cloud_init = match kind {
        GuestKind::Qemu => Some(cloudinit::seed(st, &c.state_dir, g)?),
        GuestKind::Lxc => None,
    };
    Ok(GuestStart {
        vmid,
        node: g.node.clone(),
        kind,
        hostname: match kind {
            GuestKind::Qemu => cloudinit::hostname_fqdn(g).0,
            GuestKind::Lxc => g.config.get("hostname").cloned().unwrap_or_else(|| format!("CT{vmid}")),
        },
        ipv4: ip,
        mac: g.config.get("net0").and_then(|n| net_mac(kind, n)).unwrap_or_default(),
        cloud_init,
        lxc_ssh_public_keys: g.lxc_ssh_keys.clone(),
        lxc_host_key: g.lxc_host_key.as_ref().map(|k| (k.private.clone(), k.public.clone())),
    })
}

/// How often `resume` tries to start a restored guest (pauses of 1, 2, 4, 8, 8 s between: 23 s at most).
const RESUME_TRIES: u32 = 6;

/// A restored cluster's guest `vmid` (a persistent simulator's restart): clears what the previous run's backend
/// left of it (processes, mounts), then boots again the guest the cluster says is running, on its disk, at its
/// address. PVE starts a rebooted node's guests that have `onboot` set (pve-manager `PVE/API2/Nodes.pm`
/// `startall`); the simulator's nodes never went down as far as the API could tell, so every guest that ran runs
/// again. One that cannot start is stopped, as a failed start leaves it on PVE.
pub async fn resume(c: &Arc<Cluster>, vmid: u32) {
    if !c.state().guests.get(&vmid).is_some_and(|g| g.running.is_some()) {
        return;
    }
    tracing::info!(vmid, "restarting a guest of the restored cluster");
    // The previous run's guest may still be going down (a killed simulator's guests get SIGTERM and shut down in
    // their own time, holding their address meanwhile): each try clears what is left first, and a failed start is
    // tried again after a pause, at most RESUME_TRIES times.
    let mut pause = std::time::Duration::from_secs(1);
    let mut tries = 0;
    let started = loop {
        tries += 1;
        if let Err(e) = c.backend.stop(vmid).await {
            tracing::error!(vmid, error = %format!("{e:#}"), "clearing what the previous run left of a guest");
        }
        let start = {
            let st = c.state();
            match st.guests.get(&vmid) {
                Some(g) if g.running.is_some() => match g.ipv4 {
                    Some(ip) => guest_start(&st, c, g, ip),
                    None => Err("it has no address".to_string()),
                },
                _ => return,
            }
        };
        let started = match start {
            Ok(start) => c.backend.start(start).await.map_err(|e| format!("{e:#}")),
            Err(e) => break Err(e),
        };
        match started {
            Err(e) if tries < RESUME_TRIES => {
                tracing::warn!(vmid, error = %e, "a guest of the restored cluster did not start; trying again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(8));
            }
            other => break other,
        }
    };
    match started {
        Ok(()) => tracing::info!(vmid, "restarted a guest of the restored cluster"),
        Err(e) => {
            tracing::error!(vmid, error = %e, "a guest of the restored cluster did not start again; it is stopped");
            if let Some(g) = c.state().guests.get_mut(&vmid) {
                g.running = None;
            }
        }
    }
}

/// `POST …/status/start` (`qmstart` / `vzstart`)
pub fn start(c: &Arc<Cluster>, node: &str, kind: GuestKind, call: &ApiCall) -> Result<Value, ApiError> {
    let vmid = call.params.need_u32("vmid")?;
    c.with_guest(node, vmid, kind, |g| if kind == GuestKind::Lxc && g.running.is_some() { Err(format!("CT {vmid} already running")) } else { Ok(()) })?
        .map_err(ApiError::server)?;
    let node_owned = node.to_string();
    let upid = c.spawn_task(node, &format!("{}start", prefix(kind)), &vmid.to_string(), &call.ident, move |c, _| async move {
        boot(&c, &node_owned, vmid, kind).await
    });
    Ok(json!(upid))
}

async fn halt(c: &Arc<Cluster>, node: &str, vmid: u32, kind: GuestKind, must_run: bool) -> TaskResult {
    Cluster::pause(c.timing.stop_secs).await;
    {
        let st = c.state();
        let g = st.guest_on(node, vmid, kind)?;
        if g.running.is_none() {
            return if must_run { Err(not_running(g)) } else { Ok(0) };
        }
    }
    c.backend.stop(vmid).await.map_err(|e| format!("stop failed: {e:#}"))?;
    let mut st = c.state();
    if let Ok(g) = st.guest_on_mut(node, vmid, kind) {
        g.running = None;
        apply_pending(g);
    }
    Ok(0)
}

/// `POST …/status/stop` and `…/status/shutdown`
pub fn stop(c: &Arc<Cluster>, node: &str, kind: GuestKind, call: &ApiCall, task_type: &str) -> Result<Value, ApiError> {
    let vmid = call.params.need_u32("vmid")?;
    let must_run = kind == GuestKind::Lxc || task_type == "qmshutdown";
    let running = c.with_guest(node, vmid, kind, |g| g.running.is_some())?;
    if kind == GuestKind::Lxc && !running {
        return Err(ApiError::server(format!("CT {vmid} not running")));
    }
    let node_owned = node.to_string();
    let upid = c.spawn_task(node, task_type, &vmid.to_string(), &call.ident, move |c, _| async move {
        halt(&c, &node_owned, vmid, kind, must_run).await
    });
    Ok(json!(upid))
}

/// `POST …/status/reboot` (`qmreboot` / `vzreboot`)
pub fn reboot(c: &Arc<Cluster>, node: &str, kind: GuestKind, call: &ApiCall) -> Result<Value, ApiError> {
    let vmid = call.params.need_u32("vmid")?;
    let running = c.with_guest(node, vmid, kind, |g| g.running.is_some())?;
    if !running {
        return Err(ApiError::server(match kind {
            GuestKind::Qemu => format!("VM {vmid} not running"),
            GuestKind::Lxc => format!("CT {vmid} not running"),
        }));
    }
    let node_owned = node.to_string();
    let upid = c.spawn_task(node, &format!("{}reboot", prefix(kind)), &vmid.to_string(), &call.ident, move |c, _| async move {
        halt(&c, &node_owned, vmid, kind, true).await?;
        boot(&c, &node_owned, vmid, kind).await
    });
    Ok(json!(upid))
}

/// `DELETE /nodes/{node}/{qemu,lxc}/{vmid}` (`qmdestroy` / `vzdestroy`)
pub fn destroy(c: &Arc<Cluster>, node: &str, kind: GuestKind, call: &ApiCall) -> Result<Value, ApiError> {
    let p = &call.params;
    let vmid = p.need_u32("vmid")?;
    let skiplock = super::config_update::check_skiplock(call)?;
    let purge = p.bool("purge").unwrap_or(false);
    c.with_guest(node, vmid, kind, |g| {
        if g.running.is_some() {
            return Err(match kind {
                GuestKind::Qemu => format!("VM {vmid} is running - destroy failed"),
                GuestKind::Lxc => format!("unable to destroy CT {vmid} - container is running"),
            });
        }
        if !skiplock {
            g.check_lock()?;
        }
        if g.config.get("protection").is_some_and(|v| v == "1") {
            return Err(format!("can't remove {} {vmid} - protection mode enabled", if kind == GuestKind::Qemu { "VM" } else { "CT" }));
        }
        Ok(())
    })?
    .map_err(ApiError::server)?;
    let node_owned = node.to_string();
    let upid = c.spawn_task(node, &format!("{}destroy", prefix(kind)), &vmid.to_string(), &call.ident, move |c, task| async move {
        Cluster::pause(c.timing.task_secs).await;
        {
            let mut st = c.state();
            let g = st.guest_on(&node_owned, vmid, kind)?.clone();
            if g.running.is_some() {
                return Err(format!("{} is running - destroy failed", g.label()));
            }
            let mut volumes: Vec<String> = g.config.iter().filter(|(k, _)| super::disks::is_disk_key(kind, k) || k.starts_with("unused")).filter_map(|(k, v)| {
                if k.starts_with("unused") { Some(v.clone()) } else { volume_of(kind, v) }
            }).collect();
            volumes.extend(st.volumes.values().filter(|v| v.vmid == vmid).map(|v| v.volid.clone()));
            for volid in &volumes {
                let in_use = st.volumes.values().any(|v| v.vmid != vmid && v.volid.contains(&format!("{}/", volid.split(':').nth(1).unwrap_or("-"))));
                if in_use && g.is_template() {
                    return Err(format!("base volume '{volid}' is still in use by linked cloned"));
                }
            }
            for volid in volumes {
                task.log(format!("  Logical volume \"{}\" successfully removed.", volid.split(':').nth(1).unwrap_or_default()));
                storage::free(&mut st, &volid, &node_owned);
            }
            if let Some(ip) = g.ipv4 {
                st.used_ips.remove(&ip);
            }
            st.guests.remove(&vmid);
        }
        super::perms::remove_vm_access(&c.access, vmid);
        if purge {
            task.log(format!("purging {} {vmid} from related configurations..", if kind == GuestKind::Qemu { "VM" } else { "CT" }));
        }
        c.backend.destroy(vmid).await.map_err(|e| format!("{e:#}"))?;
        Ok(0)
    });
    Ok(json!(upid))
}

/// `POST …/template`: QEMU → `qmtemplate` task; LXC → synchronous (returns null).
pub fn template(c: &Arc<Cluster>, node: &str, kind: GuestKind, call: &ApiCall) -> Result<Value, ApiError> {
    let vmid = call.params.need_u32("vmid")?;
    c.with_guest(node, vmid, kind, |g| {
        if g.is_template() {
            return Err("you can't convert a template to a template".to_string());
        }
        if g.running.is_some() {
            return Err(match kind {
                GuestKind::Qemu => "you can't convert a VM to template if VM is running".to_string(),
                GuestKind::Lxc => "you can't convert a CT to template if the CT is running".to_string(),
            });
        }
        g.check_lock()
    })?
    .map_err(ApiError::server)?;
    let node_owned = node.to_string();
    match kind {
        GuestKind::Lxc => {
            convert(c, &node_owned, vmid, kind).map_err(ApiError::server)?;
            Ok(Value::Null)
        }
        GuestKind::Qemu => {
            let upid = c.spawn_task(node, "qmtemplate", &vmid.to_string(), &call.ident, move |c, _| async move {
                Cluster::pause(c.timing.task_secs).await;
                convert(&c, &node_owned, vmid, kind)
            });
            Ok(json!(upid))
        }
    }
}

/// Renames `vm-N-disk-M` volumes to `base-N-disk-M` and sets `template: 1`.
fn convert(c: &Cluster, node: &str, vmid: u32, kind: GuestKind) -> TaskResult {
    let mut st = c.state();
    let g = st.guest_on(node, vmid, kind)?.clone();
    let mut config = g.config.clone();
    for key in disk_keys(&g) {
        let Some(value) = g.config.get(&key) else { continue };
        let Some(volid) = volume_of(kind, value) else { continue };
        if super::disks::is_cloudinit_volume(&volid) || !volid.contains("vm-") {
            continue;
        }
        let based = volid.replacen(&format!("vm-{vmid}-disk"), &format!("base-{vmid}-disk"), 2);
        let scope = st.scope(volid.split(':').next().unwrap_or_default(), node);
        if let Some(mut vol) = st.volumes.remove(&(scope.clone(), volid.clone())) {
            vol.volid = based.clone();
            st.volumes.insert((scope, based.clone()), vol);
        }
        config.insert(key.clone(), value.replacen(&volid, &based, 1));
    }
    config.insert("template".into(), "1".into());
    if let Ok(g) = st.guest_on_mut(node, vmid, kind) {
        g.config = config;
    }
    Ok(0)
}
