//! Cluster- and node-level reads: version, nodes and their status, cluster resources, the next free VMID, storages and their content.

use serde::Deserialize;
use serde_json::Value;

use crate::core::names::{NodeName, VmId};

use super::client::{seg, PveClient};
use super::error::PveError;
use super::form::Form;
use super::guest::GuestType;
use super::lenient::{self, vmid_of};

/// `GET /version`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Version {
    /// `9.1.1`
    #[serde(deserialize_with = "lenient::text")]
    pub version: String,
    /// `9.1`
    #[serde(default, deserialize_with = "lenient::text")]
    pub release: String,
    #[serde(default, deserialize_with = "lenient::text")]
    pub repoid: String,
}

impl Version {
    /// The major version (`9` of `9.1.1`).
    pub fn major(&self) -> Option<u32> {
        self.version.split('.').next()?.parse().ok()
    }
}

/// One entry of `GET /nodes`. Offline nodes report no usage (zeros).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NodeInfo {
    #[serde(deserialize_with = "lenient::node_name")]
    pub node: NodeName,
    #[serde(rename = "status", deserialize_with = "online")]
    pub online: bool,
    #[serde(default, deserialize_with = "lenient::num_f64")]
    pub cpu: f64,
    #[serde(default, deserialize_with = "lenient::num_u32")]
    pub maxcpu: u32,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    pub mem: u64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    pub maxmem: u64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    pub disk: u64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    pub maxdisk: u64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    pub uptime: u64,
    /// `AA:BB:…` of the node's certificate.
    #[serde(default)]
    pub ssl_fingerprint: Option<String>,
}

fn online<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(String::deserialize(d)? == "online")
}

/// `GET /nodes/{node}/status` (the parts pvedeploy uses).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    pub cpu: f64,
    pub cpus: u32,
    pub memory_total: u64,
    pub memory_used: u64,
    pub rootfs_total: u64,
    pub rootfs_used: u64,
    pub uptime: u64,
    /// `1`, `5` and `15` minute load averages.
    pub loadavg: Vec<f64>,
    /// `pve-manager/9.1.1/…`
    pub pveversion: String,
    pub kversion: String,
}

impl NodeStatus {
    fn from_value(v: &Value) -> Self {
        let u = |a: &str, b: &str| v.get(a).and_then(|x| x.get(b)).and_then(lenient::u64_of).unwrap_or(0);
        let text = |k: &str| v.get(k).and_then(lenient::text_of).unwrap_or_default();
        Self {
            cpu: v.get("cpu").and_then(lenient::f64_of).unwrap_or(0.0),
            cpus: u32::try_from(u("cpuinfo", "cpus")).unwrap_or(0),
            memory_total: u("memory", "total"),
            memory_used: u("memory", "used"),
            rootfs_total: u("rootfs", "total"),
            rootfs_used: u("rootfs", "used"),
            uptime: v.get("uptime").and_then(lenient::u64_of).unwrap_or(0),
            loadavg: v.get("loadavg").and_then(Value::as_array).map(|a| a.iter().filter_map(lenient::f64_of).collect()).unwrap_or_default(),
            pveversion: text("pveversion"),
            kversion: text("kversion"),
        }
    }
}

/// The `type` filter of `GET /cluster/resources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Vm,
    Node,
    Storage,
}

impl ResourceKind {
    fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Vm => "vm",
            ResourceKind::Node => "node",
            ResourceKind::Storage => "storage",
        }
    }
}

/// A resource's `type`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum ResourceType {
    Qemu,
    Lxc,
    Node,
    Storage,
    Pool,
    Sdn,
    /// Kept as PVE wrote it (`network`, `openvz`, types of later versions).
    Unknown(String),
}

impl From<String> for ResourceType {
    fn from(s: String) -> Self {
        match s.as_str() {
            "qemu" => ResourceType::Qemu,
            "lxc" => ResourceType::Lxc,
            "node" => ResourceType::Node,
            "storage" => ResourceType::Storage,
            "pool" => ResourceType::Pool,
            "sdn" => ResourceType::Sdn,
            _ => ResourceType::Unknown(s),
        }
    }
}

/// One entry of `GET /cluster/resources`; which fields are set depends on `kind`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterResource {
    pub kind: ResourceType,
    /// `qemu/100`, `node/pve1`, `storage/pve1/local-lvm`
    pub id: String,
    pub node: Option<NodeName>,
    pub vmid: Option<VmId>,
    pub name: Option<String>,
    /// `running`/`stopped` (guests), `online`/`offline` (nodes), `available` (storages)
    pub status: Option<String>,
    pub template: bool,
    pub maxcpu: f64,
    pub cpu: f64,
    pub maxmem: u64,
    pub mem: u64,
    pub maxdisk: u64,
    pub disk: u64,
    pub uptime: u64,
    pub tags: Vec<String>,
    pub lock: Option<String>,
    pub storage: Option<String>,
    pub shared: bool,
    /// Storage content types (`images`, `rootdir`, …).
    pub content: Vec<String>,
    /// Storage plugin type (`dir`, `lvmthin`, `nfs`, …).
    pub plugintype: Option<String>,
    pub pool: Option<String>,
    pub guest_type: Option<GuestType>,
}

#[derive(Deserialize)]
struct WireResource {
    #[serde(rename = "type")]
    kind: ResourceType,
    id: String,
    #[serde(default, deserialize_with = "lenient::opt_node_name")]
    node: Option<NodeName>,
    #[serde(default)]
    vmid: Value,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    name: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool01")]
    template: bool,
    #[serde(default, deserialize_with = "lenient::num_f64")]
    maxcpu: f64,
    #[serde(default, deserialize_with = "lenient::num_f64")]
    cpu: f64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    maxmem: u64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    mem: u64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    maxdisk: u64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    disk: u64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    uptime: u64,
    #[serde(default, deserialize_with = "lenient::tags")]
    tags: Vec<String>,
    #[serde(default)]
    lock: Option<String>,
    #[serde(default)]
    storage: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool01")]
    shared: bool,
    #[serde(default, deserialize_with = "lenient::comma_list")]
    content: Vec<String>,
    #[serde(default)]
    plugintype: Option<String>,
    #[serde(default)]
    pool: Option<String>,
}

impl From<WireResource> for ClusterResource {
    fn from(w: WireResource) -> Self {
        let guest_type = match w.kind {
            ResourceType::Qemu => Some(GuestType::Qemu),
            ResourceType::Lxc => Some(GuestType::Lxc),
            _ => None,
        };
        ClusterResource {
            kind: w.kind,
            id: w.id,
            node: w.node,
            vmid: vmid_of(&w.vmid),
            name: w.name,
            status: w.status,
            template: w.template,
            maxcpu: w.maxcpu,
            cpu: w.cpu,
            maxmem: w.maxmem,
            mem: w.mem,
            maxdisk: w.maxdisk,
            disk: w.disk,
            uptime: w.uptime,
            tags: w.tags,
            lock: w.lock,
            storage: w.storage,
            shared: w.shared,
            content: w.content,
            plugintype: w.plugintype,
            pool: w.pool,
            guest_type,
        }
    }
}

/// One entry of `GET /cluster/status` (`type` is `cluster` or `node`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClusterStatusEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool01")]
    pub online: bool,
}

/// One entry of `GET /nodes/{node}/storage`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StorageInfo {
    pub storage: String,
    /// Plugin type: `dir`, `lvmthin`, `nfs`, `zfspool`, …
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "lenient::comma_list")]
    pub content: Vec<String>,
    #[serde(default, deserialize_with = "lenient::bool01")]
    pub shared: bool,
    #[serde(default, deserialize_with = "lenient::bool01")]
    pub active: bool,
    #[serde(default, deserialize_with = "lenient::bool01")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    pub avail: u64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    pub used: u64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    pub total: u64,
}

/// One entry of `GET /nodes/{node}/storage/{storage}/content`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Volume {
    /// `local-lvm:vm-100-disk-0`, `local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`
    pub volid: String,
    /// `images`, `rootdir`, `vztmpl`, `iso`, `snippets`, `backup`, …
    #[serde(default)]
    pub content: String,
    #[serde(default, deserialize_with = "lenient::text")]
    pub format: String,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    pub size: u64,
    #[serde(default, deserialize_with = "lenient::opt_vmid")]
    pub vmid: Option<VmId>,
    /// When it was made (a backup: from its name, in the node's time zone), Unix seconds.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub ctime: Option<u64>,
    /// A backup's guest type: `lxc` or `qemu`.
    #[serde(default, deserialize_with = "lenient::text")]
    pub subtype: String,
    /// A backup's notes (their first line).
    #[serde(default, deserialize_with = "lenient::text")]
    pub notes: String,
    /// A backup Proxmox VE will neither prune nor delete.
    #[serde(default, deserialize_with = "lenient::bool01")]
    pub protected: bool,
}

impl PveClient {
    /// `GET /version`
    pub async fn version(&self) -> Result<Version, PveError> {
        self.get("/version", Form::new(), "version").await
    }

    /// `GET /nodes`
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, PveError> {
        self.get("/nodes", Form::new(), "node list").await
    }

    /// `GET /nodes/{node}/status`
    pub async fn node_status(&self, node: &NodeName) -> Result<NodeStatus, PveError> {
        let v: Value = self.get(&format!("/nodes/{}/status", seg(node.as_str())), Form::new(), "node status").await?;
        if !v.is_object() {
            return Err(PveError::decode("node status", format!("expected an object, got {v}")));
        }
        Ok(NodeStatus::from_value(&v))
    }

    /// `GET /cluster/resources[?type=…]`
    pub async fn cluster_resources(&self, kind: Option<ResourceKind>) -> Result<Vec<ClusterResource>, PveError> {
        let query = Form::new().opt("type", kind.map(ResourceKind::as_str));
        let wire: Vec<WireResource> = self.get("/cluster/resources", query, "cluster resources").await?;
        Ok(wire.into_iter().map(ClusterResource::from).collect())
    }

    /// `GET /cluster/nextid`: the lowest free VMID (PVE answers it as a string; not reserved —
    /// a concurrent create can take it, see [`PveError::is_vmid_taken`]).
    /// `GET /cluster/status`: the cluster and its nodes with their addresses (as corosync knows them).
    pub async fn cluster_status(&self) -> Result<Vec<ClusterStatusEntry>, PveError> {
        self.get("/cluster/status", Form::new(), "cluster status").await
    }

    pub async fn next_id(&self) -> Result<VmId, PveError> {
        let v: Value = self.get("/cluster/nextid", Form::new(), "next VMID").await?;
        vmid_of(&v).ok_or_else(|| PveError::decode("next VMID", format!("expected a VMID, got {v}")))
    }

    /// `GET /nodes/{node}/storage`
    pub async fn storages(&self, node: &NodeName) -> Result<Vec<StorageInfo>, PveError> {
        self.get(&format!("/nodes/{}/storage", seg(node.as_str())), Form::new(), "storage list").await
    }

    /// `GET /nodes/{node}/storage/{storage}/content[?content=…]`
    pub async fn storage_content(&self, node: &NodeName, storage: &str, content: Option<&str>) -> Result<Vec<Volume>, PveError> {
        let path = format!("/nodes/{}/storage/{}/content", seg(node.as_str()), seg(storage));
        self.get(&path, Form::new().opt("content", content), "storage content").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resources_keep_unknown_types_and_read_01() {
        let wire: Vec<WireResource> = serde_json::from_value(json!([
            {"type": "qemu", "id": "qemu/9000", "node": "pve1", "vmid": 9000, "template": 1, "tags": "a;b", "maxcpu": 2},
            {"type": "storage", "id": "storage/pve1/shared", "node": "pve1", "storage": "shared", "shared": "1", "content": "images,rootdir"},
            {"type": "network", "id": "network/pve1/vmbr0"}
        ]))
        .unwrap();
        let r: Vec<ClusterResource> = wire.into_iter().map(ClusterResource::from).collect();
        assert_eq!((r[0].vmid.map(VmId::get), r[0].template, r[0].guest_type), (Some(9000), true, Some(GuestType::Qemu)));
        assert!(r[1].shared && r[1].content == ["images", "rootdir"]);
        assert_eq!(r[2].kind, ResourceType::Unknown("network".into()));
        let offline: NodeInfo = serde_json::from_value(json!({"node": "pve2", "status": "offline"})).unwrap();
        assert!(!offline.online && offline.maxmem == 0);
    }
}
