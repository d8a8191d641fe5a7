//! QEMU VM endpoints: list, config (read and synchronous update, cloud-init included), clone, resize, power, destroy, guest agent, cloud-init dump.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::config::Secret;
use crate::core::names::{NodeName, VmId};

use super::client::{decode, upid_of, PveClient};
use super::error::PveError;
use super::form::{decode_sshkeys, encode_sshkeys, Form};
use super::guest::{guest_path, GuestStatus, GuestSummary, GuestType, PowerAction};
use super::lenient::{self, bool_of, prop, split_tags};
use super::upid::Upid;

/// A VM's configuration (`GET …/qemu/{vmid}/config`, pending changes applied), the keys pvedeploy
/// reads typed and every key in `raw` as text.
#[derive(Debug, Clone, PartialEq)]
pub struct QemuConfig {
    pub name: Option<String>,
    /// Held by an operation (`clone`, `backup`, …).
    pub lock: Option<String>,
    /// Pass back as `QemuUpdate::digest` to update only this version of the config.
    pub digest: String,
    pub cores: Option<u32>,
    pub sockets: Option<u32>,
    /// From `memory` (`[current=]<MiB>`, a string property since PVE 9).
    pub memory_mib: Option<u64>,
    pub net0: Option<String>,
    pub ipconfig0: Option<String>,
    pub tags: Vec<String>,
    /// `agent` enabled (`1` or `enabled=1,…`).
    pub agent: bool,
    pub template: bool,
    pub onboot: bool,
    pub ciuser: Option<String>,
    /// `sshkeys` decoded back to `authorized_keys` text (`raw` has PVE's url-encoded form).
    pub sshkeys: Option<String>,
    pub cicustom: Option<String>,
    pub description: Option<String>,
    /// Every key as PVE returned it, as text (`memory: "2048"`, `onboot: "1"`, …).
    pub raw: BTreeMap<String, String>,
}

impl QemuConfig {
    pub fn from_raw(raw: BTreeMap<String, String>) -> Self {
        let get = |k: &str| raw.get(k).cloned();
        let num = |k: &str| raw.get(k).and_then(|v| v.trim().parse::<u32>().ok());
        let flag = |k: &str| raw.get(k).and_then(|v| bool_of(&Value::String(v.clone()))).unwrap_or(false);
        Self {
            name: get("name"),
            lock: get("lock"),
            digest: get("digest").unwrap_or_default(),
            cores: num("cores"),
            sockets: num("sockets"),
            memory_mib: raw.get("memory").and_then(|m| prop(m, "current", Some("current"))).and_then(|m| m.parse().ok()),
            net0: get("net0"),
            ipconfig0: get("ipconfig0"),
            tags: raw.get("tags").map(|t| split_tags(t)).unwrap_or_default(),
            agent: raw
                .get("agent")
                .and_then(|a| prop(a, "enabled", Some("enabled")))
                .and_then(|e| bool_of(&Value::String(e.to_string())))
                .unwrap_or(false),
            template: flag("template"),
            onboot: flag("onboot"),
            ciuser: get("ciuser"),
            sshkeys: raw.get("sshkeys").map(|k| decode_sshkeys(k)),
            cicustom: get("cicustom"),
            description: get("description"),
            raw,
        }
    }
}

/// `POST /nodes/{node}/qemu/{template}/clone`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneRequest {
    pub newid: VmId,
    pub name: Option<String>,
    /// Full copy (`true`) or linked clone of a template (`false`; `storage` must then be `None`).
    pub full: bool,
    /// Target storage for a full clone.
    pub storage: Option<String>,
    /// Target node (only with shared storage).
    pub target: Option<NodeName>,
    pub description: Option<String>,
    /// Resource pool the new VM joins (PVE then checks `VM.Allocate` on `/pool/{pool}` instead of
    /// `/vms/{newid}`: qemu-server `src/PVE/API2/Qemu.pm:4335-4349`).
    pub pool: Option<crate::core::names::PoolName>,
}

impl CloneRequest {
    fn form(&self) -> Form {
        Form::new()
            .set("newid", self.newid)
            .opt("name", self.name.as_deref())
            .flag("full", self.full)
            .opt("storage", self.storage.as_deref())
            .opt("target", self.target.as_ref())
            .opt("description", self.description.as_deref())
            .opt("pool", self.pool.as_ref())
    }
}

/// A synchronous config update (`PUT …/qemu/{vmid}/config`); `None`/empty fields are left alone.
#[derive(Debug, Clone, Default)]
pub struct QemuUpdate {
    pub name: Option<String>,
    pub cores: Option<u32>,
    pub memory_mib: Option<u64>,
    pub ciuser: Option<String>,
    pub cipassword: Option<Secret<String>>,
    /// Raw `authorized_keys` text; the client applies PVE's `urlencoded` format.
    pub sshkeys: Option<String>,
    /// `ip=dhcp` or `ip=10.0.0.5/24,gw=10.0.0.1`
    pub ipconfig0: Option<String>,
    pub nameserver: Option<String>,
    pub searchdomain: Option<String>,
    /// `user=local:snippets/app.yaml`
    pub cicustom: Option<String>,
    pub net0: Option<String>,
    /// Replaces the tags (sent `;`-separated); empty leaves them alone (clear with `delete: ["tags"]`).
    pub tags: Vec<String>,
    pub agent: Option<bool>,
    pub description: Option<String>,
    pub onboot: Option<bool>,
    /// Keys to remove.
    pub delete: Vec<String>,
    /// Only apply if the config still has this digest.
    pub digest: Option<String>,
}

impl QemuUpdate {
    fn form(&self) -> Form {
        Form::new()
            .opt("name", self.name.as_deref())
            .opt("cores", self.cores)
            .opt("memory", self.memory_mib)
            .opt("ciuser", self.ciuser.as_deref())
            .opt("cipassword", self.cipassword.as_ref().map(|p| p.expose().as_str()))
            .opt("sshkeys", self.sshkeys.as_deref().map(encode_sshkeys))
            .opt("ipconfig0", self.ipconfig0.as_deref())
            .opt("nameserver", self.nameserver.as_deref())
            .opt("searchdomain", self.searchdomain.as_deref())
            .opt("cicustom", self.cicustom.as_deref())
            .opt("net0", self.net0.as_deref())
            .list("tags", &self.tags, ";")
            .opt("agent", self.agent.map(|a| if a { "1" } else { "0" }))
            .opt("description", self.description.as_deref())
            .opt_flag("onboot", self.onboot)
            .list("delete", &self.delete, ",")
            .opt("digest", self.digest.as_deref())
    }
}

/// Which cloud-init document `cloudinit_dump` renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudInitKind {
    User,
    Network,
    Meta,
}

impl CloudInitKind {
    fn as_str(self) -> &'static str {
        match self {
            CloudInitKind::User => "user",
            CloudInitKind::Network => "network",
            CloudInitKind::Meta => "meta",
        }
    }
}

/// A network interface as the QEMU guest agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInterface {
    pub name: String,
    pub hardware_address: Option<String>,
    /// Address and prefix length.
    pub ips: Vec<(IpAddr, u8)>,
}

#[derive(Deserialize)]
struct AgentReply {
    #[serde(default)]
    result: Vec<WireAgentInterface>,
}

#[derive(Deserialize)]
struct WireAgentInterface {
    name: String,
    #[serde(default, rename = "hardware-address")]
    hardware_address: Option<String>,
    #[serde(default, rename = "ip-addresses")]
    ip_addresses: Vec<WireAgentAddress>,
}

#[derive(Deserialize)]
struct WireAgentAddress {
    #[serde(rename = "ip-address")]
    ip_address: String,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    prefix: u64,
}

impl From<WireAgentInterface> for AgentInterface {
    fn from(w: WireAgentInterface) -> Self {
        let ips = w
            .ip_addresses
            .iter()
            .filter_map(|a| {
                let ip: IpAddr = a.ip_address.split('%').next()?.parse().ok()?;
                Some((ip, u8::try_from(a.prefix).ok()?))
            })
            .collect();
        AgentInterface { name: w.name, hardware_address: w.hardware_address, ips }
    }
}

/// The guest's first IPv4 address outside the loopback interface `lo` and the link-local range.
/// The guest's IPv4 address on the interface with MAC `mac` (the VM's `net0`), as the guest agent
/// reports it; without a MAC match (an agent that reports no hardware addresses), the first usable
/// address of an interface that is not loopback or a container bridge (docker0, br-…, veth…, virbr…, cni…, lxc…).
pub fn guest_ipv4_on_mac(interfaces: &[AgentInterface], mac: Option<&str>) -> Option<Ipv4Addr> {
    ipv4_on_mac(interfaces.iter().map(|i| (i.name.as_str(), i.hardware_address.as_deref(), i.ips.as_slice())), mac)
}

/// The rule for VM agents and container `interfaces` alike: the first usable IPv4 (not link-local, not unspecified)
/// of the interface whose MAC is `mac`; without a MAC, or when no interface carries it, of the first interface that
/// is neither `lo` nor a bridge. Each item is `(name, MAC, addresses)`.
pub(crate) fn ipv4_on_mac<'a>(interfaces: impl Iterator<Item = (&'a str, Option<&'a str>, &'a [(IpAddr, u8)])> + Clone, mac: Option<&str>) -> Option<Ipv4Addr> {
    let usable = |ips: &[(IpAddr, u8)]| {
        ips.iter().find_map(|(ip, _)| match ip {
            IpAddr::V4(v4) if !v4.is_link_local() && !v4.is_unspecified() => Some(*v4),
            _ => None,
        })
    };
    if let Some(mac) = mac {
        if let Some((_, _, ips)) = interfaces.clone().find(|(_, hw, _)| hw.is_some_and(|h| h.eq_ignore_ascii_case(mac))) {
            return usable(ips);
        }
    }
    interfaces.filter(|(name, _, _)| *name != "lo" && !is_bridge_name(name)).find_map(|(_, _, ips)| usable(ips))
}

/// Interfaces a guest's own container runtime or hypervisor makes (Docker, libvirt, CNI, …): never the guest's address.
pub(crate) fn is_bridge_name(name: &str) -> bool {
    const BRIDGES: [&str; 8] = ["docker", "br-", "veth", "virbr", "cni", "flannel", "lxc", "podman"];
    BRIDGES.iter().any(|b| name.starts_with(b))
}

pub fn first_guest_ipv4(interfaces: &[AgentInterface]) -> Option<Ipv4Addr> {
    interfaces.iter().filter(|i| i.name != "lo").flat_map(|i| i.ips.iter()).find_map(|(ip, _)| match ip {
        IpAddr::V4(v4) if !v4.is_link_local() && !v4.is_unspecified() => Some(*v4),
        _ => None,
    })
}

impl PveClient {
    /// `GET /nodes/{node}/qemu`
    pub async fn qemu_list(&self, node: &NodeName) -> Result<Vec<GuestSummary>, PveError> {
        self.guest_list(GuestType::Qemu, node).await
    }

    /// `GET …/qemu/{vmid}/config`
    pub async fn qemu_config(&self, node: &NodeName, vmid: VmId) -> Result<QemuConfig, PveError> {
        Ok(QemuConfig::from_raw(self.guest_config_raw(GuestType::Qemu, node, vmid).await?))
    }

    /// `GET …/qemu/{vmid}/status/current`
    pub async fn qemu_current(&self, node: &NodeName, vmid: VmId) -> Result<GuestStatus, PveError> {
        self.guest_current(GuestType::Qemu, node, vmid).await
    }

    /// `POST …/qemu/{template}/clone` on the template's node; the task creates `req.newid`.
    /// A taken `newid` fails here or as the task ([`PveError::is_vmid_taken`]).
    pub async fn qemu_clone(&self, node: &NodeName, template: VmId, req: &CloneRequest) -> Result<Upid, PveError> {
        let path = format!("{}/clone", guest_path(GuestType::Qemu, node, template));
        self.post_task(&path, req.form()).await
    }

    /// `PUT …/qemu/{vmid}/config` (synchronous).
    pub async fn qemu_update_config(&self, node: &NodeName, vmid: VmId, update: &QemuUpdate) -> Result<(), PveError> {
        let path = format!("{}/config", guest_path(GuestType::Qemu, node, vmid));
        self.put(&path, update.form()).await.map(|_| ())
    }

    /// `PUT …/qemu/{vmid}/resize`: `size` `+8G` (grow by) or `32G` (absolute). PVE 9 answers a
    /// task id (`Some`), older versions resize synchronously (`None`).
    pub async fn qemu_resize(&self, node: &NodeName, vmid: VmId, disk: &str, size: &str) -> Result<Option<Upid>, PveError> {
        let path = format!("{}/resize", guest_path(GuestType::Qemu, node, vmid));
        match self.put(&path, Form::new().set("disk", disk).set("size", size)).await? {
            Value::Null => Ok(None),
            data => upid_of(data).map(Some),
        }
    }

    /// `POST …/qemu/{vmid}/status/{start|stop|shutdown|reboot}`
    pub async fn qemu_power(&self, node: &NodeName, vmid: VmId, action: PowerAction) -> Result<Upid, PveError> {
        self.guest_power(GuestType::Qemu, node, vmid, action).await
    }

    /// `DELETE …/qemu/{vmid}` (the VM must be stopped).
    pub async fn qemu_delete(&self, node: &NodeName, vmid: VmId, purge: bool, destroy_unreferenced_disks: bool) -> Result<Upid, PveError> {
        self.guest_delete(GuestType::Qemu, node, vmid, purge, destroy_unreferenced_disks).await
    }

    /// `POST …/agent/ping`: `Ok` once the guest agent answers.
    pub async fn qemu_agent_ping(&self, node: &NodeName, vmid: VmId) -> Result<(), PveError> {
        let path = format!("{}/agent/ping", guest_path(GuestType::Qemu, node, vmid));
        self.post(&path, Form::new()).await.map(|_| ()).map_err(agent_error)
    }

    /// `GET …/agent/network-get-interfaces`. `AgentNotRunning` until the guest agent answers
    /// (also while the VM is stopped); `AgentNotConfigured` when `agent` is off.
    pub async fn qemu_agent_interfaces(&self, node: &NodeName, vmid: VmId) -> Result<Vec<AgentInterface>, PveError> {
        let path = format!("{}/agent/network-get-interfaces", guest_path(GuestType::Qemu, node, vmid));
        let reply: AgentReply = self.get(&path, Form::new(), "guest agent interfaces").await.map_err(agent_error)?;
        Ok(reply.result.into_iter().map(AgentInterface::from).collect())
    }

    /// Polls [`Self::qemu_agent_interfaces`] every `poll` until the agent reports an IPv4 address
    /// ([`first_guest_ipv4`]) or `deadline` passes. At the deadline: the last answer if the agent
    /// answered at all (without such an address), else the last error (`AgentNotRunning`).
    pub async fn qemu_wait_agent_interfaces(
        &self,
        node: &NodeName,
        vmid: VmId,
        poll: Duration,
        deadline: Duration,
    ) -> Result<Vec<AgentInterface>, PveError> {
        let started = Instant::now();
        loop {
            let last = self.qemu_agent_interfaces(node, vmid).await;
            match &last {
                Ok(ifaces) if first_guest_ipv4(ifaces).is_some() => return last,
                Err(e) if !e.is_retryable() => return last,
                _ => {}
            }
            if started.elapsed() + poll > deadline {
                return last;
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// `GET …/qemu/{vmid}/cloudinit/dump?type=…`: the document PVE generates from the config
    /// (PVE ignores `cicustom` here).
    pub async fn cloudinit_dump(&self, node: &NodeName, vmid: VmId, kind: CloudInitKind) -> Result<String, PveError> {
        let path = format!("{}/cloudinit/dump", guest_path(GuestType::Qemu, node, vmid));
        let data: Value = self.get(&path, Form::new().set("type", kind.as_str()), "cloud-init dump").await?;
        decode("cloud-init dump", data)
    }
}

/// `VM 100 is not running` from an agent call means "no agent to talk to" as well.
fn agent_error(e: PveError) -> PveError {
    match e {
        PveError::Server { ref message, .. } if message.contains("is not running") => PveError::AgentNotRunning,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_reads_strings_numbers_and_property_strings() {
        let raw: BTreeMap<String, String> = [
            ("cores", "2"),
            ("memory", "current=4096"),
            ("agent", "enabled=1,fstrim_cloned_disks=1"),
            ("onboot", "1"),
            ("tags", "web;prod"),
            ("sshkeys", "ssh-ed25519%20AAAA%2B%2F%3D%20me%40host"),
            ("digest", "abc"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = QemuConfig::from_raw(raw);
        assert_eq!((c.cores, c.memory_mib, c.agent, c.onboot, c.template), (Some(2), Some(4096), true, true, false));
        assert_eq!(c.tags, ["web", "prod"]);
        assert_eq!(c.sshkeys.as_deref(), Some("ssh-ed25519 AAAA+/= me@host"));
        assert_eq!(c.digest, "abc");
        let plain = QemuConfig::from_raw([("memory".to_string(), "2048".to_string()), ("agent".to_string(), "0".to_string())].into());
        assert_eq!((plain.memory_mib, plain.agent), (Some(2048), false));
    }

    #[test]
    fn update_form_encodes_booleans_and_sshkeys() {
        let u = QemuUpdate {
            cores: Some(4),
            memory_mib: Some(4096),
            cipassword: Some(Secret::new("pw".into())),
            sshkeys: Some("ssh-ed25519 AA+/= a b\n".into()),
            tags: vec!["a".into(), "b".into()],
            agent: Some(true),
            onboot: Some(false),
            delete: vec!["ide3".into(), "net1".into()],
            ..QemuUpdate::default()
        };
        assert_eq!(
            u.form().encode(),
            "cores=4&memory=4096&cipassword=pw&sshkeys=ssh-ed25519%2520AA%252B%252F%253D%2520a%2520b%250A&tags=a%3Bb&agent=1&onboot=0&delete=ide3%2Cnet1"
        );
        assert!(!format!("{u:?}").contains("\"pw\""));
    }

    #[test]
    fn agent_interfaces_parse_and_pick_the_guest_address() {
        let reply: AgentReply = serde_json::from_value(json!({"result": [
            {"name": "lo", "hardware-address": "00:00:00:00:00:00", "ip-addresses": [
                {"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8}]},
            {"name": "eth0", "hardware-address": "bc:24:11:00:00:01", "ip-addresses": [
                {"ip-address-type": "ipv6", "ip-address": "fe80::1%eth0", "prefix": 64},
                {"ip-address-type": "ipv4", "ip-address": "169.254.3.4", "prefix": 16},
                {"ip-address-type": "ipv4", "ip-address": "10.0.0.5", "prefix": "24"}]},
            {"name": "docker0"}
        ]}))
        .unwrap();
        let ifaces: Vec<AgentInterface> = reply.result.into_iter().map(AgentInterface::from).collect();
        assert_eq!(ifaces[1].ips.len(), 3);
        assert_eq!(ifaces[2].ips, vec![]);
        assert_eq!(first_guest_ipv4(&ifaces), Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(first_guest_ipv4(&ifaces[..1]), None);
        let iface = |name: &str, mac: &str, ip: [u8; 4]| AgentInterface { name: name.into(), hardware_address: Some(mac.into()), ips: vec![(IpAddr::V4(Ipv4Addr::from(ip)), 24)] };
        let many = [iface("docker0", "02:42:00:00:00:01", [172, 17, 0, 1]), iface("eth1", "bc:24:11:00:00:02", [10, 9, 9, 9]), iface("eth0", "BC:24:11:00:00:01", [10, 0, 0, 7])];
        assert_eq!(guest_ipv4_on_mac(&many, Some("bc:24:11:00:00:01")), Some(Ipv4Addr::new(10, 0, 0, 7)), "the net0 MAC, in any case");
        assert_eq!(guest_ipv4_on_mac(&many, None), Some(Ipv4Addr::new(10, 9, 9, 9)), "no MAC: first interface that is not a bridge");
        assert_eq!(guest_ipv4_on_mac(&many[..1], None), None);
    }

    #[test]
    fn clone_form() {
        let req = CloneRequest {
            newid: VmId::new(101).unwrap(),
            name: Some("web".into()),
            full: false,
            storage: None,
            target: Some(NodeName::parse("pve2").unwrap()),
            description: None,
            pool: Some(crate::core::names::PoolName::parse("apps").unwrap()),
        };
        assert_eq!(req.form().encode(), "newid=101&name=web&full=0&target=pve2&pool=apps");
    }
}
