//! Cluster-wide and node-level read endpoints: `/version`, `/nodes`, `/nodes/{node}/status`,
//! `/cluster/status`, `/cluster/resources`, `/cluster/nextid`.

use serde_json::{json, Value};

use super::disks::boot_disk_size;
use super::state::{ClusterState, Guest, NodeState};
use super::Cluster;
use crate::backend::GuestKind;
use crate::http::envelope::ApiError;
use crate::http::params::Params;

/// The PVE release the simulator follows.
pub const PVE_VERSION: &str = "9.1.1";
pub const PVE_RELEASE: &str = "9.1";
/// The PVE 8 release a `pve_major = 8` cluster reports (pve-manager branch stable-8 @2606ac85, 8.4.21).
pub const PVE8_VERSION: &str = "8.4.21";

/// `GET /version` of a cluster of `major`.
pub fn version(major: u8) -> Value {
    if major < 9 {
        return json!({"version": PVE8_VERSION, "release": "8.4", "repoid": "2606ac85"});
    }
    json!({"version": PVE_VERSION, "release": PVE_RELEASE, "repoid": "42becc32"})
}

/// `GET /nodes/{node}/network[?type=…]`: the node's uplink `eno1` and its Linux bridges (`vmbr0` as the
/// installer makes it, bridged to `eno1`). `type` filters as PVE's: `bridge`/`any_bridge`, `eth`.
pub fn network(c: &Cluster, node: &str, p: &Params) -> Value {
    let ip = c.state().nodes.get(node).map(|n| n.ip.to_string()).unwrap_or_default();
    let mut all = vec![json!({"iface": "eno1", "type": "eth", "method": "manual", "families": ["inet"], "active": 1, "exists": 1, "priority": 3})];
    for (i, b) in c.bridges.iter().enumerate() {
        let mut v = json!({"iface": b, "type": "bridge", "method": "static", "families": ["inet"], "active": 1, "autostart": 1, "priority": 4 + i, "bridge_stp": "off", "bridge_fd": "0"});
        if i == 0 {
            v["bridge_ports"] = json!("eno1");
            v["address"] = json!(ip);
            v["cidr"] = json!(format!("{ip}/24"));
            v["netmask"] = json!("24");
        }
        all.push(v);
    }
    let want = p.str("type");
    Value::Array(
        all.into_iter()
            .filter(|v| match want.as_deref() {
                None => true,
                Some("any_bridge") => v["type"] == "bridge" || v["type"] == "OVSBridge",
                Some(t) => v["type"] == t,
            })
            .collect(),
    )
}

/// Runtime numbers of a guest (zeros when stopped).
pub struct GuestStats {
    pub cpu: f64,
    pub mem: u64,
    pub uptime: u64,
}

pub fn guest_stats(g: &Guest) -> GuestStats {
    match &g.running {
        Some(run) => GuestStats { cpu: 0.012, mem: g.maxmem() / 4, uptime: run.since.elapsed().as_secs() },
        None => GuestStats { cpu: 0.0, mem: 0, uptime: 0 },
    }
}

fn node_usage(st: &ClusterState, node: &NodeState) -> (f64, u64) {
    let running: Vec<&Guest> = st.guests.values().filter(|g| g.node == node.spec.name && g.running.is_some()).collect();
    let mem: u64 = node.spec.base_mem_used_bytes + running.iter().map(|g| g.maxmem()).sum::<u64>();
    let cpu = node.spec.base_cpu_load + running.len() as f64 * 0.01 / f64::from(node.spec.cpus.max(1));
    (cpu.min(1.0), mem.min(node.spec.memory_bytes))
}

/// The per-guest fields shared by `/nodes/{node}/qemu`, `/nodes/{node}/lxc` and `status/current`.
pub fn guest_summary(g: &Guest) -> Value {
    let s = guest_stats(g);
    let mut v = json!({
        "vmid": g.vmid,
        "name": g.name(),
        "status": if g.running.is_some() { "running" } else { "stopped" },
        "cpus": g.maxcpu(),
        "cpu": s.cpu,
        "maxmem": g.maxmem(),
        "mem": s.mem,
        "maxdisk": boot_disk_size(g),
        "disk": 0,
        "uptime": s.uptime,
        "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
    });
    if let Some(obj) = v.as_object_mut() {
        if g.is_template() {
            obj.insert("template".into(), json!(1));
        }
        if let Some(tags) = g.config.get("tags") {
            obj.insert("tags".into(), json!(tags));
        }
        if let Some(lock) = g.lock() {
            obj.insert("lock".into(), json!(lock));
        }
        if let Some(run) = &g.running {
            obj.insert("pid".into(), json!(run.pid));
        }
        if g.kind == GuestKind::Lxc {
            obj.insert("type".into(), json!("lxc"));
            obj.insert("swap".into(), json!(0));
            let swap_mib = g.config.get("swap").and_then(|x| x.parse::<u64>().ok()).unwrap_or(512);
            obj.insert("maxswap".into(), json!(swap_mib << 20));
        }
    }
    v
}

const ROOTFS_TOTAL: u64 = 100 * 1024 * 1024 * 1024;
const ROOTFS_USED: u64 = 9 * 1024 * 1024 * 1024;

fn node_entry(c: &Cluster, st: &ClusterState, node: &NodeState) -> Value {
    let offline = c.faults.node_offline(&node.spec.name);
    let (cpu, mem) = node_usage(st, node);
    let mut v = json!({
        "node": node.spec.name,
        "id": format!("node/{}", node.spec.name),
        "type": "node",
        "status": if offline { "offline" } else { "online" },
        "level": "",
        "ssl_fingerprint": c.fingerprint,
    });
    if !offline {
        if let Some(obj) = v.as_object_mut() {
            obj.insert("cpu".into(), json!(cpu));
            obj.insert("maxcpu".into(), json!(node.spec.cpus));
            obj.insert("mem".into(), json!(mem));
            obj.insert("maxmem".into(), json!(node.spec.memory_bytes));
            obj.insert("disk".into(), json!(ROOTFS_USED));
            obj.insert("maxdisk".into(), json!(ROOTFS_TOTAL));
            obj.insert("uptime".into(), json!(c.started.elapsed().as_secs() + 86_400));
        }
    }
    v
}

/// `GET /nodes`
pub fn list(c: &Cluster, st: &ClusterState) -> Value {
    Value::Array(st.nodes.values().map(|n| node_entry(c, st, n)).collect())
}

/// `GET /nodes/{node}/status`
pub fn status(c: &Cluster, st: &ClusterState, node: &str) -> Result<Value, ApiError> {
    let n = st.nodes.get(node).ok_or_else(|| ApiError::server(format!("no such node '{node}'")))?;
    let (cpu, mem) = node_usage(st, n);
    Ok(json!({
        "cpu": cpu,
        "wait": 0.0,
        "loadavg": [format!("{:.2}", cpu * f64::from(n.spec.cpus)), "0.50", "0.40"],
        "cpuinfo": {"cpus": n.spec.cpus, "cores": n.spec.cpus, "sockets": 1, "model": "QEMU Virtual CPU (pvedeploy-sim)", "mhz": "2400.000", "hvm": "1", "user_hz": 100, "flags": ""},
        "memory": {"total": n.spec.memory_bytes, "used": mem, "free": n.spec.memory_bytes - mem, "available": n.spec.memory_bytes - mem},
        "swap": {"total": 0, "used": 0, "free": 0},
        "rootfs": {"total": ROOTFS_TOTAL, "used": ROOTFS_USED, "avail": ROOTFS_TOTAL - ROOTFS_USED, "free": ROOTFS_TOTAL - ROOTFS_USED},
        "ksm": {"shared": 0},
        "uptime": c.started.elapsed().as_secs() + 86_400,
        "idle": 0,
        "kversion": "Linux 6.17.2-1-pve #1 SMP PREEMPT_DYNAMIC PMX 6.17.2-1 (2025-10-21T11:55Z) x86_64",
        "pveversion": format!("pve-manager/{}/{}", version(c.access.major)["version"].as_str().unwrap_or(PVE_VERSION), version(c.access.major)["repoid"].as_str().unwrap_or("")),
        "current-kernel": {"sysname": "Linux", "release": "6.17.2-1-pve", "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.17.2-1 (2025-10-21T11:55Z)", "machine": "x86_64"},
        "boot-info": {"mode": "efi", "secureboot": 0},
    }))
}

/// `GET /cluster/status`
pub fn cluster_status(c: &Cluster, st: &ClusterState) -> Value {
    let mut out = vec![json!({
        "type": "cluster",
        "id": "cluster",
        "name": c.name,
        "nodes": st.nodes.len(),
        "quorate": 1,
        "version": st.nodes.len() + 2,
    })];
    for (i, n) in st.nodes.values().enumerate() {
        out.push(json!({
            "type": "node",
            "id": format!("node/{}", n.spec.name),
            "name": n.spec.name,
            "nodeid": n.nodeid,
            "ip": n.ip.to_string(),
            "online": u8::from(!c.faults.node_offline(&n.spec.name)),
            "local": u8::from(i == 0),
            "level": "",
        }));
    }
    Value::Array(out)
}

fn guest_resource(g: &Guest) -> Value {
    let s = guest_stats(g);
    let mut v = json!({
        "id": format!("{}/{}", g.type_name(), g.vmid),
        "type": g.type_name(),
        "node": g.node,
        "vmid": g.vmid,
        "name": g.name(),
        "status": if g.running.is_some() { "running" } else { "stopped" },
        "maxcpu": g.maxcpu(),
        "cpu": s.cpu,
        "maxmem": g.maxmem(),
        "mem": s.mem,
        "maxdisk": boot_disk_size(g),
        "disk": if g.kind == GuestKind::Lxc && g.running.is_some() { boot_disk_size(g) / 10 } else { 0 },
        "uptime": s.uptime,
        "template": u8::from(g.is_template()),
        "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(tags) = g.config.get("tags") {
            obj.insert("tags".into(), json!(tags));
        }
        if let Some(lock) = g.lock() {
            obj.insert("lock".into(), json!(lock));
        }
    }
    v
}

/// `GET /cluster/resources`
pub fn resources(c: &Cluster, st: &ClusterState, p: &Params) -> Value {
    let filter = p.str("type");
    let want = |t: &str| filter.as_deref().is_none_or(|f| f == t);
    let mut out = Vec::new();
    if want("vm") {
        out.extend(st.guests.values().map(guest_resource));
    }
    if want("node") {
        out.extend(st.nodes.values().map(|n| node_entry(c, st, n)));
    }
    if want("storage") {
        for n in st.nodes.values() {
            for spec in st.storages.values().filter(|s| st.storage_on_node(&s.id, &n.spec.name)) {
                let used = st.storage_used(&spec.id, &n.spec.name);
                out.push(json!({
                    "id": format!("storage/{}/{}", n.spec.name, spec.id),
                    "type": "storage",
                    "node": n.spec.name,
                    "storage": spec.id,
                    "status": if c.faults.node_offline(&n.spec.name) { "unknown" } else { "available" },
                    "plugintype": spec.kind.plugin_type(),
                    "content": spec.content.join(","),
                    "shared": u8::from(spec.shared),
                    "maxdisk": spec.total_bytes,
                    "disk": used,
                }));
            }
        }
    }
    Value::Array(out)
}

/// `GET /cluster/nextid`: the lowest free VMID (as a string, like PVE); with `vmid`, that VMID if free.
pub fn nextid(st: &ClusterState, p: &Params) -> Result<Value, ApiError> {
    if let Some(vmid) = p.u32("vmid") {
        if st.guests.contains_key(&vmid) {
            return Err(ApiError::param("vmid", format!("VM {vmid} already exists")));
        }
        return Ok(json!(vmid.to_string()));
    }
    st.next_free_vmid()
        .map(|id| json!(id.to_string()))
        .ok_or_else(|| ApiError::server("unable to get any free VMID in range [100, 999999999]"))
}
