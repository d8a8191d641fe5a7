//! The simulated cluster's data: nodes, storages, volumes and guests (with configs, pending
//! changes and snapshots), plus the config digest and address allocation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::backend::GuestKind;
use crate::config::{NodeSpec, StorageSpec};

use super::addresses::AddressPool;

/// A node and its capacity.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub spec: NodeSpec,
    pub nodeid: u32,
    pub ip: Ipv4Addr,
}

/// A volume on a storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Volume {
    pub volid: String,
    pub storage: String,
    pub size: u64,
    /// `raw`, `qcow2`, `subvol`
    pub format: String,
    /// `images` or `rootdir`
    pub content: String,
    pub vmid: u32,
    pub ctime: u64,
}

/// Where a volume lives: the node for local storages, `""` for shared ones.
pub type Scope = String;

/// A snapshot (the config as it was, plus metadata).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub config: BTreeMap<String, String>,
    pub snaptime: u64,
    pub description: String,
}

/// A running guest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    /// Not kept across simulator restarts: a restored guest's uptime counts from the restart.
    #[serde(skip, default = "Instant::now")]
    pub since: Instant,
    pub pid: u32,
}

/// A VM or container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Guest {
    pub vmid: u32,
    pub node: String,
    pub kind: GuestKind,
    /// The config file's keys (`lock`, `template`, `parent`, … included).
    pub config: BTreeMap<String, String>,
    /// Pending values (applied at the next start) and pending deletions.
    pub pending: BTreeMap<String, String>,
    pub pending_delete: BTreeSet<String>,
    pub snapshots: BTreeMap<String, Snapshot>,
    pub running: Option<RunState>,
    pub ipv4: Option<Ipv4Addr>,
    /// LXC `ssh-public-keys` given at create time (not part of the config, as in PVE).
    pub lxc_ssh_keys: Option<String>,
    /// LXC: the ed25519 host key made at create time and written into the container.
    pub lxc_host_key: Option<HostKey>,
}

/// An SSH host key pair (OpenSSH encodings) and its `SHA256:` fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKey {
    pub private: String,
    pub public: String,
    pub fingerprint: String,
}

impl Guest {
    pub fn new(vmid: u32, node: &str, kind: GuestKind) -> Self {
        Self {
            vmid,
            node: node.to_string(),
            kind,
            config: BTreeMap::new(),
            pending: BTreeMap::new(),
            pending_delete: BTreeSet::new(),
            snapshots: BTreeMap::new(),
            running: None,
            ipv4: None,
            lxc_ssh_keys: None,
            lxc_host_key: None,
        }
    }

    pub fn is_template(&self) -> bool {
        self.config.get("template").is_some_and(|v| v == "1")
    }

    pub fn lock(&self) -> Option<&str> {
        self.config.get("lock").map(String::as_str)
    }

    /// `VM 100` or `CT 100`.
    pub fn label(&self) -> String {
        match self.kind {
            GuestKind::Qemu => format!("VM {}", self.vmid),
            GuestKind::Lxc => format!("CT {}", self.vmid),
        }
    }

    /// `qemu` or `lxc`
    pub fn type_name(&self) -> &'static str {
        kind_name(self.kind)
    }

    /// `check_lock`: `VM is locked (clone)` / `CT is locked (backup)`.
    pub fn check_lock(&self) -> Result<(), String> {
        match self.lock() {
            Some(lock) => Err(match self.kind {
                GuestKind::Qemu => format!("VM is locked ({lock})"),
                GuestKind::Lxc => format!("CT is locked ({lock})"),
            }),
            None => Ok(()),
        }
    }

    /// The config as PVE writes the file (sorted `key: value` lines, description as comments).
    pub fn config_text(&self) -> String {
        render_config(&self.config, &self.pending, &self.pending_delete)
    }

    /// SHA-1 over the config file text, as PVE's `digest`.
    pub fn digest(&self) -> String {
        hex::encode(Sha1::digest(self.config_text().as_bytes()))
    }

    /// Memory in bytes (`memory` is a property string for QEMU, an integer for LXC).
    pub fn maxmem(&self) -> u64 {
        let mib = self
            .config
            .get("memory")
            .and_then(|m| crate::schema::propstring::get_key(m, "current", "current"))
            .and_then(|m| m.parse::<u64>().ok())
            .unwrap_or(512);
        mib * 1024 * 1024
    }

    pub fn maxcpu(&self) -> u32 {
        let cores: u32 = self.config.get("cores").and_then(|c| c.parse().ok()).unwrap_or(1);
        let sockets: u32 = self.config.get("sockets").and_then(|c| c.parse().ok()).unwrap_or(1);
        cores * sockets
    }

    pub fn name(&self) -> String {
        match self.kind {
            GuestKind::Qemu => self.config.get("name").cloned().unwrap_or_else(|| format!("VM {}", self.vmid)),
            GuestKind::Lxc => self.config.get("hostname").cloned().unwrap_or_else(|| format!("CT{}", self.vmid)),
        }
    }
}

/// `qemu` or `lxc`
pub fn kind_name(kind: GuestKind) -> &'static str {
    match kind {
        GuestKind::Qemu => "qemu",
        GuestKind::Lxc => "lxc",
    }
}

fn render_config(config: &BTreeMap<String, String>, pending: &BTreeMap<String, String>, pending_delete: &BTreeSet<String>) -> String {
    let mut out = String::new();
    if let Some(desc) = config.get("description") {
        for line in desc.lines() {
            out.push_str(&format!("#{line}\n"));
        }
    }
    for (k, v) in config.iter().filter(|(k, _)| k.as_str() != "description") {
        out.push_str(&format!("{k}: {v}\n"));
    }
    if !pending.is_empty() || !pending_delete.is_empty() {
        out.push_str("\n[PENDING]\n");
        for (k, v) in pending {
            out.push_str(&format!("{k}: {v}\n"));
        }
        if !pending_delete.is_empty() {
            out.push_str(&format!("delete: {}\n", pending_delete.iter().cloned().collect::<Vec<_>>().join(",")));
        }
    }
    out
}

/// Everything the cluster holds, behind one mutex.
#[derive(Debug, Default)]
pub struct ClusterState {
    pub nodes: BTreeMap<String, NodeState>,
    pub storages: BTreeMap<String, StorageSpec>,
    pub volumes: BTreeMap<(Scope, String), Volume>,
    pub guests: BTreeMap<u32, Guest>,
    pub used_ips: BTreeSet<Ipv4Addr>,
    /// This instance's own /24s (see `addresses.rs`).
    pub pool: AddressPool,
}

impl ClusterState {
    /// `Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist`
    pub fn guest_on(&self, node: &str, vmid: u32, kind: GuestKind) -> Result<&Guest, String> {
        match self.guests.get(&vmid) {
            Some(g) if g.node == node && g.kind == kind => Ok(g),
            _ => Err(missing_config(node, vmid, kind)),
        }
    }

    pub fn guest_on_mut(&mut self, node: &str, vmid: u32, kind: GuestKind) -> Result<&mut Guest, String> {
        match self.guests.get_mut(&vmid) {
            Some(g) if g.node == node && g.kind == kind => Ok(g),
            _ => Err(missing_config(node, vmid, kind)),
        }
    }

    /// The lowest free VMID ≥ 100.
    pub fn next_free_vmid(&self) -> Option<u32> {
        (100..1_000_000).find(|id| !self.guests.contains_key(id))
    }

    /// The scope a storage's volumes live in on `node`.
    pub fn scope(&self, storage: &str, node: &str) -> Scope {
        match self.storages.get(storage) {
            Some(s) if s.shared => String::new(),
            _ => node.to_string(),
        }
    }

    /// Whether `storage` exists on `node`.
    pub fn storage_on_node(&self, storage: &str, node: &str) -> bool {
        self.storages.get(storage).is_some_and(|s| s.nodes.as_ref().is_none_or(|n| n.iter().any(|x| x == node)))
    }

    /// Bytes used by volumes of `storage` as seen from `node`.
    pub fn storage_used(&self, storage: &str, node: &str) -> u64 {
        let scope = self.scope(storage, node);
        self.volumes
            .iter()
            .filter(|((sc, _), v)| *sc == scope && v.storage == storage)
            .map(|(_, v)| v.size)
            .sum()
    }

    /// Allocates an address: the static one the config asks for (even if it is not a loopback
    /// address and so unreachable, as on PVE), else the next free address of this instance's
    /// pool (unique on the machine, nothing answering on :22).
    pub fn allocate_ip(&mut self, wanted: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        if let Some(ip) = wanted {
            self.used_ips.insert(ip);
            return Some(ip);
        }
        let ip = self.pool.next_free(&self.used_ips)?;
        self.used_ips.insert(ip);
        Some(ip)
    }
}

/// PVE's message for a VMID with no config file on that node.
pub fn missing_config(node: &str, vmid: u32, kind: GuestKind) -> String {
    match kind {
        GuestKind::Qemu => format!("Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"),
        GuestKind::Lxc => format!("Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist"),
    }
}

/// A MAC with Proxmox's OUI `BC:24:11`.
pub fn random_mac() -> String {
    let b: [u8; 3] = rand::random();
    format!("BC:24:11:{:02X}:{:02X}:{:02X}", b[0], b[1], b[2])
}

/// Seconds since the epoch.
pub fn epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
