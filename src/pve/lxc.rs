//! LXC container endpoints: list, create, config (read and update), resize, power, destroy, interfaces.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;
use serde_json::Value;

use crate::config::Secret;
use crate::core::names::{NodeName, VmId};

use super::client::{seg, PveClient};
use super::error::PveError;
use super::form::Form;
use super::guest::{guest_path, GuestStatus, GuestSummary, GuestType, PowerAction};
use super::lenient::{self, bool_of, split_tags};
use super::upid::Upid;

/// A container's configuration, the keys pvedeploy reads typed and every key in `raw` as text.
#[derive(Debug, Clone, PartialEq)]
pub struct LxcConfig {
    pub hostname: Option<String>,
    pub lock: Option<String>,
    pub digest: String,
    pub cores: Option<u32>,
    pub memory_mib: Option<u64>,
    pub swap_mib: Option<u64>,
    /// `local-lvm:vm-200-disk-0,size=8G`
    pub rootfs: Option<String>,
    pub net0: Option<String>,
    pub tags: Vec<String>,
    pub unprivileged: bool,
    pub features: Option<String>,
    pub onboot: bool,
    pub template: bool,
    pub description: Option<String>,
    pub raw: BTreeMap<String, String>,
}

impl LxcConfig {
    pub fn from_raw(raw: BTreeMap<String, String>) -> Self {
        let get = |k: &str| raw.get(k).cloned();
        let num = |k: &str| raw.get(k).and_then(|v| v.trim().parse::<u64>().ok());
        let flag = |k: &str| raw.get(k).and_then(|v| bool_of(&Value::String(v.clone()))).unwrap_or(false);
        Self {
            hostname: get("hostname"),
            lock: get("lock"),
            digest: get("digest").unwrap_or_default(),
            cores: num("cores").and_then(|c| u32::try_from(c).ok()),
            memory_mib: num("memory"),
            swap_mib: num("swap"),
            rootfs: get("rootfs"),
            net0: get("net0"),
            tags: raw.get("tags").map(|t| split_tags(t)).unwrap_or_default(),
            unprivileged: flag("unprivileged"),
            features: get("features"),
            onboot: flag("onboot"),
            template: flag("template"),
            description: get("description"),
            raw,
        }
    }
}

/// `POST /nodes/{node}/lxc`
#[derive(Debug, Clone)]
pub struct LxcCreate {
    pub vmid: VmId,
    /// `local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`
    pub ostemplate: String,
    pub hostname: String,
    pub cores: u32,
    pub memory_mib: u64,
    pub swap_mib: u64,
    /// `local-lvm:8` (storage and size in GiB)
    pub rootfs: String,
    /// `name=eth0,bridge=vmbr0,ip=dhcp`
    pub net0: String,
    /// `authorized_keys` text for root (plain; this parameter is not url-encoded).
    pub ssh_public_keys: Option<String>,
    pub password: Option<Secret<String>>,
    pub unprivileged: bool,
    /// `nesting=1`
    pub features: Option<String>,
    pub tags: Vec<String>,
    /// Start once created (in the same task).
    pub start: bool,
    pub description: Option<String>,
    /// Resource pool the container joins (PVE checks `VM.Allocate` on `/pool/{pool}` then: pve-container
    /// `src/PVE/API2/LXC.pm` create, `check_vm_perm`).
    pub pool: Option<crate::core::names::PoolName>,
}

impl LxcCreate {
    fn form(&self) -> Form {
        Form::new()
            .set("vmid", self.vmid)
            .set("ostemplate", &self.ostemplate)
            .set("hostname", &self.hostname)
            .set("cores", self.cores)
            .set("memory", self.memory_mib)
            .set("swap", self.swap_mib)
            .set("rootfs", &self.rootfs)
            .set("net0", &self.net0)
            .opt("ssh-public-keys", self.ssh_public_keys.as_deref())
            .opt("password", self.password.as_ref().map(|p| p.expose().as_str()))
            .flag("unprivileged", self.unprivileged)
            .opt("features", self.features.as_deref())
            .list("tags", &self.tags, ";")
            .flag("start", self.start)
            .opt("description", self.description.as_deref())
            .opt("pool", self.pool.as_ref())
    }
}

/// `PUT …/lxc/{vmid}/config`; `None`/empty fields are left alone.
#[derive(Debug, Clone, Default)]
pub struct LxcUpdate {
    pub hostname: Option<String>,
    pub cores: Option<u32>,
    pub memory_mib: Option<u64>,
    pub swap_mib: Option<u64>,
    pub net0: Option<String>,
    /// Replaces the tags; empty leaves them alone (clear with `delete: ["tags"]`).
    pub tags: Vec<String>,
    pub features: Option<String>,
    pub description: Option<String>,
    pub onboot: Option<bool>,
    pub delete: Vec<String>,
    pub digest: Option<String>,
}

impl LxcUpdate {
    fn form(&self) -> Form {
        Form::new()
            .opt("hostname", self.hostname.as_deref())
            .opt("cores", self.cores)
            .opt("memory", self.memory_mib)
            .opt("swap", self.swap_mib)
            .opt("net0", self.net0.as_deref())
            .list("tags", &self.tags, ";")
            .opt("features", self.features.as_deref())
            .opt("description", self.description.as_deref())
            .opt_flag("onboot", self.onboot)
            .list("delete", &self.delete, ",")
            .opt("digest", self.digest.as_deref())
    }
}

/// A container interface (`GET …/lxc/{vmid}/interfaces`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LxcInterface {
    pub name: String,
    pub hwaddr: Option<String>,
    pub inet: Option<(Ipv4Addr, u8)>,
    pub inet6: Option<(Ipv6Addr, u8)>,
    /// Every address (from `ip-addresses`, or `inet`/`inet6` where that is missing).
    pub ips: Vec<(IpAddr, u8)>,
}

impl LxcInterface {
    /// The IPv4 address of the interface whose MAC is `mac` (the container's `net0` `hwaddr`), from
    /// `ip-addresses` (PVE 8.2+) or the deprecated `inet`; without a MAC, or when no interface carries it,
    /// the first usable address outside `lo` and bridges (pve-container `src/PVE/LXC.pm:1262-1302`).
    pub fn ipv4_on_mac(interfaces: &[LxcInterface], mac: Option<&str>) -> Option<Ipv4Addr> {
        super::qemu::ipv4_on_mac(interfaces.iter().map(|i| (i.name.as_str(), i.hwaddr.as_deref(), i.ips.as_slice())), mac)
    }

    /// The container's first IPv4 address outside `lo` and the link-local range.
    pub fn first_ipv4(interfaces: &[LxcInterface]) -> Option<Ipv4Addr> {
        Self::ipv4_on_mac(interfaces, None)
    }
}

#[derive(Deserialize)]
struct WireLxcInterface {
    name: String,
    #[serde(default)]
    hwaddr: Option<String>,
    #[serde(default, rename = "hardware-address")]
    hardware_address: Option<String>,
    #[serde(default)]
    inet: Option<String>,
    #[serde(default)]
    inet6: Option<String>,
    #[serde(default, rename = "ip-addresses")]
    ip_addresses: Vec<WireLxcAddress>,
}

#[derive(Deserialize)]
struct WireLxcAddress {
    #[serde(rename = "ip-address")]
    ip_address: String,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    prefix: u64,
}

/// `10.0.0.5/24` (the first of several separated by commas or spaces).
fn cidr(s: &str) -> Option<(IpAddr, u8)> {
    let first = s.split([',', ' ']).find(|x| !x.is_empty())?;
    let (ip, prefix) = first.split_once('/')?;
    Some((ip.split('%').next()?.parse().ok()?, prefix.parse().ok()?))
}

impl From<WireLxcInterface> for LxcInterface {
    fn from(w: WireLxcInterface) -> Self {
        let inet = w.inet.as_deref().and_then(cidr).and_then(|(ip, p)| match ip {
            IpAddr::V4(v4) => Some((v4, p)),
            IpAddr::V6(_) => None,
        });
        let inet6 = w.inet6.as_deref().and_then(cidr).and_then(|(ip, p)| match ip {
            IpAddr::V6(v6) => Some((v6, p)),
            IpAddr::V4(_) => None,
        });
        let mut ips: Vec<(IpAddr, u8)> = w
            .ip_addresses
            .iter()
            .filter_map(|a| Some((a.ip_address.split('%').next()?.parse().ok()?, u8::try_from(a.prefix).ok()?)))
            .collect();
        if ips.is_empty() {
            ips.extend(inet.map(|(ip, p)| (IpAddr::V4(ip), p)));
            ips.extend(inet6.map(|(ip, p)| (IpAddr::V6(ip), p)));
        }
        LxcInterface { name: w.name, hwaddr: w.hwaddr.or(w.hardware_address), inet, inet6, ips }
    }
}

impl PveClient {
    /// `GET /nodes/{node}/lxc`
    pub async fn lxc_list(&self, node: &NodeName) -> Result<Vec<GuestSummary>, PveError> {
        self.guest_list(GuestType::Lxc, node).await
    }

    /// `POST /nodes/{node}/lxc` (`vzcreate` task; with `start` it also boots the container).
    pub async fn lxc_create(&self, node: &NodeName, req: &LxcCreate) -> Result<Upid, PveError> {
        self.post_task(&format!("/nodes/{}/lxc", seg(node.as_str())), req.form()).await
    }

    /// `GET …/lxc/{vmid}/config`
    pub async fn lxc_config(&self, node: &NodeName, vmid: VmId) -> Result<LxcConfig, PveError> {
        Ok(LxcConfig::from_raw(self.guest_config_raw(GuestType::Lxc, node, vmid).await?))
    }

    /// `PUT …/lxc/{vmid}/config` (synchronous).
    pub async fn lxc_update_config(&self, node: &NodeName, vmid: VmId, update: &LxcUpdate) -> Result<(), PveError> {
        let path = format!("{}/config", guest_path(GuestType::Lxc, node, vmid));
        self.put(&path, update.form()).await.map(|_| ())
    }

    /// `PUT …/lxc/{vmid}/resize` (`rootfs` or `mpN`; `+4G` or absolute).
    pub async fn lxc_resize(&self, node: &NodeName, vmid: VmId, disk: &str, size: &str) -> Result<Upid, PveError> {
        let path = format!("{}/resize", guest_path(GuestType::Lxc, node, vmid));
        super::client::upid_of(self.put(&path, Form::new().set("disk", disk).set("size", size)).await?)
    }

    /// `GET …/lxc/{vmid}/status/current`
    pub async fn lxc_current(&self, node: &NodeName, vmid: VmId) -> Result<GuestStatus, PveError> {
        self.guest_current(GuestType::Lxc, node, vmid).await
    }

    /// `POST …/lxc/{vmid}/status/{start|stop|shutdown|reboot}`
    pub async fn lxc_power(&self, node: &NodeName, vmid: VmId, action: PowerAction) -> Result<Upid, PveError> {
        self.guest_power(GuestType::Lxc, node, vmid, action).await
    }

    /// `DELETE …/lxc/{vmid}` (the container must be stopped).
    pub async fn lxc_delete(&self, node: &NodeName, vmid: VmId, purge: bool, destroy_unreferenced_disks: bool) -> Result<Upid, PveError> {
        self.guest_delete(GuestType::Lxc, node, vmid, purge, destroy_unreferenced_disks).await
    }

    /// `GET …/lxc/{vmid}/interfaces`: empty until the container's network is up.
    pub async fn lxc_interfaces(&self, node: &NodeName, vmid: VmId) -> Result<Vec<LxcInterface>, PveError> {
        let path = format!("{}/interfaces", guest_path(GuestType::Lxc, node, vmid));
        let wire: Option<Vec<WireLxcInterface>> = self.get(&path, Form::new(), "container interfaces").await?;
        Ok(wire.unwrap_or_default().into_iter().map(LxcInterface::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn interfaces_parse() {
        let wire: Vec<WireLxcInterface> = serde_json::from_value(json!([
            {"name": "lo", "hwaddr": "00:00:00:00:00:00", "inet": "127.0.0.1/8", "inet6": "::1/128"},
            {"name": "eth0", "hardware-address": "bc:24:11:aa:bb:cc", "inet": "10.1.2.3/24", "inet6": "fe80::1/64"}
        ]))
        .unwrap();
        let ifaces: Vec<LxcInterface> = wire.into_iter().map(LxcInterface::from).collect();
        assert_eq!(ifaces[1].hwaddr.as_deref(), Some("bc:24:11:aa:bb:cc"));
        assert_eq!(ifaces[1].inet, Some((Ipv4Addr::new(10, 1, 2, 3), 24)));
        assert_eq!(ifaces[1].inet6.map(|(_, p)| p), Some(64));
        assert_eq!(ifaces[1].ips.len(), 2);
        assert_eq!(LxcInterface::first_ipv4(&ifaces), Some(Ipv4Addr::new(10, 1, 2, 3)));
    }

    /// PVE 9 right after boot: `ip-addresses` (types `inet`/`inet6`) before the deprecated `inet`, a second
    /// interface (a Docker bridge) listed first, `null` for a stopped container (pve-container LXC.pm:1262-1302).
    #[test]
    fn the_address_is_the_one_on_net0s_mac_from_ip_addresses() {
        let wire: Vec<WireLxcInterface> = serde_json::from_value(json!([
            {"name": "lo", "hwaddr": "00:00:00:00:00:00", "hardware-address": "00:00:00:00:00:00", "inet": "127.0.0.1/8",
             "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "inet", "prefix": 8}]},
            {"name": "docker0", "hwaddr": "02:42:ac:11:00:01", "hardware-address": "02:42:ac:11:00:01", "inet": "172.17.0.1/16",
             "ip-addresses": [{"ip-address": "172.17.0.1", "ip-address-type": "inet", "prefix": 16}]},
            {"name": "eth0", "hwaddr": "bc:24:11:aa:bb:cc", "hardware-address": "bc:24:11:aa:bb:cc",
             "ip-addresses": [{"ip-address": "fe80::be24:11ff:feaa:bbcc", "ip-address-type": "inet6", "prefix": 64},
                              {"ip-address": "10.1.2.3", "ip-address-type": "inet", "prefix": 24}]}
        ]))
        .unwrap();
        let ifaces: Vec<LxcInterface> = wire.into_iter().map(LxcInterface::from).collect();
        assert_eq!(LxcInterface::ipv4_on_mac(&ifaces, Some("BC:24:11:AA:BB:CC")), Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(LxcInterface::first_ipv4(&ifaces), Some(Ipv4Addr::new(10, 1, 2, 3)), "without the MAC: the first that is not a bridge");
        assert_eq!(LxcInterface::ipv4_on_mac(&ifaces[..2], Some("bc:24:11:aa:bb:cc")), None, "a Docker bridge is never the container's address");
        let stopped: Option<Vec<WireLxcInterface>> = serde_json::from_value(json!(null)).unwrap();
        assert!(stopped.is_none());
    }

    #[test]
    fn config_and_create_form() {
        let c = LxcConfig::from_raw([("memory", "512"), ("unprivileged", "1"), ("tags", "a;b")].map(|(k, v)| (k.to_string(), v.to_string())).into());
        assert_eq!((c.memory_mib, c.unprivileged, c.tags.len()), (Some(512), true, 2));
        let req = LxcCreate {
            vmid: VmId::new(200).unwrap(),
            ostemplate: "local:vztmpl/x.tar.zst".into(),
            hostname: "ct1".into(),
            cores: 1,
            memory_mib: 512,
            swap_mib: 0,
            rootfs: "local-lvm:8".into(),
            net0: "name=eth0,bridge=vmbr0,ip=dhcp".into(),
            ssh_public_keys: Some("ssh-ed25519 AA+/= a b".into()),
            password: None,
            unprivileged: true,
            features: None,
            tags: vec![],
            start: false,
            description: None,
            pool: Some(crate::core::names::PoolName::parse("apps").unwrap()),
        };
        assert_eq!(
            req.form().encode(),
            "vmid=200&ostemplate=local%3Avztmpl%2Fx.tar.zst&hostname=ct1&cores=1&memory=512&swap=0&rootfs=local-lvm%3A8\
             &net0=name%3Deth0%2Cbridge%3Dvmbr0%2Cip%3Ddhcp&ssh-public-keys=ssh-ed25519+AA%2B%2F%3D+a+b&unprivileged=1&start=0&pool=apps"
        );
    }
}
