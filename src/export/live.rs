//! The live guest as Terraform should describe it, built at the edge from Proxmox's config map (what the guest really
//! has) and the deployment record (its id and name); PVE's defaults fill what the config leaves out.

use std::collections::BTreeMap;

use crate::core::deployment::{Deployment, DeploymentId, GuestType};
use crate::core::names::{AppName, NodeName, VmId};

/// What a guest was made from, which Proxmox does not keep in the guest's config: the provisioner's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The VM template cloned for VMs.
    pub vm_template: VmId,
    pub full_clone: bool,
    /// `storage:vztmpl/file` for containers.
    pub lxc_template: String,
}

/// One guest, as read back from Proxmox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveGuest {
    pub deployment: DeploymentId,
    /// The deployment's name: the Terraform resource's name and the export folder's.
    pub name: AppName,
    pub node: NodeName,
    pub vmid: VmId,
    pub description: Option<String>,
    /// Sorted, as Proxmox sorts them.
    pub tags: Vec<String>,
    pub running: bool,
    pub on_boot: bool,
    pub cores: u32,
    pub memory_mib: u64,
    /// The boot disk (VM) or root filesystem (container).
    pub disk: Option<Disk>,
    /// In index order (`net0`, `net1`, …).
    pub nics: Vec<Nic>,
    pub nameservers: Vec<String>,
    pub search_domain: Option<String>,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Vm(Vm),
    Lxc(Lxc),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// The VM's own name in Proxmox.
    pub vm_name: String,
    pub template: VmId,
    pub full_clone: bool,
    pub agent: bool,
    pub sockets: Option<u32>,
    /// `ostype` (`l26`, …).
    pub os_type: Option<String>,
    /// `scsihw` (`virtio-scsi-pci`, …).
    pub scsi_hardware: Option<String>,
    /// From `boot: order=scsi0;net0`.
    pub boot_order: Vec<String>,
    /// `serial0`… devices (`socket`).
    pub serial_devices: Vec<String>,
    /// `vga`'s type (`serial0`, `std`, …).
    pub vga_type: Option<String>,
    /// The cloud-init drive and what it carries, when the VM has one.
    pub cloud_init: Option<CloudInit>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudInit {
    /// `ide2`
    pub interface: String,
    pub datastore_id: String,
    pub user: Option<String>,
    /// One `authorized_keys` line each.
    pub ssh_keys: Vec<String>,
    /// From `cicustom`: `user=`, `vendor=`, `network=`, `meta=` snippets (`local:snippets/x.yaml`).
    pub user_data_file_id: Option<String>,
    pub vendor_data_file_id: Option<String>,
    pub network_data_file_id: Option<String>,
    pub meta_data_file_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lxc {
    pub hostname: String,
    pub template_file_id: String,
    /// `ostype`, e.g. `debian`.
    pub os_type: Option<String>,
    pub swap_mib: u64,
    pub unprivileged: bool,
    pub nesting: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `scsi0`, `virtio0`, … for VMs; `rootfs` for containers.
    pub interface: String,
    pub datastore_id: String,
    /// Whole GiB, rounded up (the provider counts disk sizes in gigabytes).
    pub size_gib: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// The interface name inside a container (`eth0`); VMs have none.
    pub name: Option<String>,
    pub bridge: String,
    /// `virtio`, `e1000`, … (VMs only).
    pub model: Option<String>,
    pub mac_address: Option<String>,
    pub firewall: bool,
    pub vlan_id: Option<u32>,
    /// `ipconfigN` (VMs) or the interface's `ip=`/`gw=` (containers).
    pub ipv4: Option<Ipv4>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4 {
    /// `dhcp` or an address in CIDR notation.
    pub address: String,
    pub gateway: Option<String>,
}

/// The figures drift compares, as the export recorded them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub node: String,
    pub vmid: u32,
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_gib: Option<u64>,
    pub tags: Vec<String>,
    pub running: bool,
}

const VM_DISKS: [&str; 4] = ["scsi", "virtio", "sata", "ide"];
const NIC_MODELS: [&str; 5] = ["virtio", "e1000", "e1000e", "rtl8139", "vmxnet3"];

impl LiveGuest {
    /// Reads a guest's config map (`GET …/config`, every value as text) and run state.
    pub fn from_config(d: &Deployment, node: NodeName, vmid: VmId, config: &BTreeMap<String, String>, running: bool, origin: &Origin) -> LiveGuest {
        let get = |k: &str| config.get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let flag = |k: &str| get(k).is_some_and(|v| truthy(&v));
        let memory_mib = get("memory").and_then(|m| prop(&m, "current", true).and_then(|v| v.parse().ok())).unwrap_or(512);
        let mut tags: Vec<String> = get("tags").map(|t| t.split([';', ',', ' ']).filter(|s| !s.is_empty()).map(str::to_owned).collect()).unwrap_or_default();
        tags.sort();
        tags.dedup();
        let kind = match d.spec.guest_type {
            GuestType::Vm => Kind::Vm(Vm {
                vm_name: get("name").unwrap_or_else(|| d.spec.name.to_string()),
                template: origin.vm_template,
                full_clone: origin.full_clone,
                agent: get("agent").is_some_and(|a| prop(&a, "enabled", true).is_some_and(truthy)),
                sockets: get("sockets").and_then(|s| s.parse().ok()),
                os_type: get("ostype"),
                scsi_hardware: get("scsihw"),
                boot_order: get("boot")
                    .and_then(|b| prop(&b, "order", false).map(|o| o.split(';').filter(|s| !s.is_empty()).map(str::to_owned).collect()))
                    .unwrap_or_default(),
                serial_devices: indexed(config, "serial").into_iter().map(|(_, _, v)| v.trim().to_owned()).collect(),
                vga_type: get("vga").and_then(|v| prop(&v, "type", true).map(str::to_owned)),
                cloud_init: cloud_init(config),
            }),
            GuestType::Lxc => Kind::Lxc(Lxc {
                hostname: get("hostname").unwrap_or_else(|| d.spec.name.to_string()),
                template_file_id: origin.lxc_template.clone(),
                os_type: get("ostype"),
                swap_mib: get("swap").and_then(|s| s.parse().ok()).unwrap_or(512),
                unprivileged: flag("unprivileged"),
                nesting: get("features").is_some_and(|f| prop(&f, "nesting", false).is_some_and(truthy)),
            }),
        };
        let is_vm = matches!(kind, Kind::Vm(_));
        LiveGuest {
            deployment: d.id.clone(),
            name: d.spec.name.clone(),
            node,
            vmid,
            description: get("description"),
            tags,
            running,
            on_boot: flag("onboot"),
            cores: get("cores").and_then(|c| c.parse().ok()).unwrap_or(1),
            memory_mib,
            disk: if is_vm { vm_boot_disk(config) } else { get("rootfs").and_then(|v| disk("rootfs", &v)) },
            nics: nics(config, is_vm),
            nameservers: get("nameserver").map(|n| n.split_whitespace().map(str::to_owned).collect()).unwrap_or_default(),
            search_domain: get("searchdomain"),
            kind,
        }
    }

    pub fn guest_type(&self) -> GuestType {
        match self.kind {
            Kind::Vm(_) => GuestType::Vm,
            Kind::Lxc(_) => GuestType::Lxc,
        }
    }

    pub fn summary(&self) -> Summary {
        Summary {
            node: self.node.to_string(),
            vmid: self.vmid.get(),
            cores: self.cores,
            memory_mib: self.memory_mib,
            disk_gib: self.disk.as_ref().map(|d| d.size_gib),
            tags: self.tags.clone(),
            running: self.running,
        }
    }
}

/// A property string's value for `key`; with `default_key`, a bare first item counts as that key (`memory: 2048`).
fn prop<'a>(value: &'a str, key: &str, default_key: bool) -> Option<&'a str> {
    value.split(',').enumerate().find_map(|(i, item)| match item.split_once('=') {
        Some((k, v)) if k.trim() == key => Some(v.trim()),
        None if default_key && i == 0 => Some(item.trim()),
        _ => None,
    })
}

fn truthy(v: &str) -> bool {
    matches!(v, "1" | "yes" | "on" | "true")
}

/// `local-lvm:vm-100-disk-0,size=10G` as a disk on `interface`.
fn disk(interface: &str, value: &str) -> Option<Disk> {
    let volume = value.split(',').next()?;
    let (datastore, _) = volume.split_once(':')?;
    let bytes = prop(value, "size", false).and_then(size_bytes).unwrap_or(0);
    Some(Disk { interface: interface.to_owned(), datastore_id: datastore.to_owned(), size_gib: bytes.div_ceil(1 << 30) })
}

/// `10G`, `512M`, `1T`, `4096` (bytes).
fn size_bytes(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let n: f64 = s[..split].parse().ok()?;
    let unit: u64 = match s[split..].trim_end_matches("iB").trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    Some((n * unit as f64).round() as u64)
}

/// Keys `prefixN` of `config` in numeric order of N.
fn indexed<'a>(config: &'a BTreeMap<String, String>, prefix: &str) -> Vec<(u32, &'a str, &'a str)> {
    let mut found: Vec<(u32, &str, &str)> = config
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.parse::<u32>().ok()?, k.as_str(), v.as_str())))
        .collect();
    found.sort_by_key(|(n, _, _)| *n);
    found
}

/// The first disk that is neither a CD-ROM nor the cloud-init drive, in PVE's boot preference.
fn vm_boot_disk(config: &BTreeMap<String, String>) -> Option<Disk> {
    VM_DISKS.iter().find_map(|bus| {
        indexed(config, bus)
            .into_iter()
            .find(|(_, _, v)| !v.contains("media=cdrom") && !v.contains("cloudinit"))
            .and_then(|(_, k, v)| disk(k, v))
    })
}

fn cloud_init(config: &BTreeMap<String, String>) -> Option<CloudInit> {
    let (interface, datastore_id) = VM_DISKS.iter().find_map(|bus| {
        indexed(config, bus).into_iter().find(|(_, _, v)| v.contains("cloudinit")).and_then(|(_, k, v)| Some((k.to_owned(), v.split_once(':')?.0.to_owned())))
    })?;
    let custom = config.get("cicustom").map(String::as_str).unwrap_or("");
    let snippet = |key: &str| prop(custom, key, false).filter(|s| !s.is_empty()).map(str::to_owned);
    let ssh_keys = config
        .get("sshkeys")
        .map(|k| percent_encoding::percent_decode_str(k).decode_utf8_lossy().lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    Some(CloudInit {
        interface,
        datastore_id,
        user: config.get("ciuser").filter(|u| !u.is_empty()).cloned(),
        ssh_keys,
        user_data_file_id: snippet("user"),
        vendor_data_file_id: snippet("vendor"),
        network_data_file_id: snippet("network"),
        meta_data_file_id: snippet("meta"),
    })
}

fn nics(config: &BTreeMap<String, String>, is_vm: bool) -> Vec<Nic> {
    indexed(config, "net")
        .into_iter()
        .map(|(n, _, v)| {
            let items: Vec<(&str, &str)> = v.split(',').filter_map(|i| i.split_once('=')).map(|(k, v)| (k.trim(), v.trim())).collect();
            let get = |key: &str| items.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string());
            let (model, mac) = if is_vm {
                match items.iter().find(|(k, _)| NIC_MODELS.contains(k)) {
                    Some((m, mac)) => (Some(m.to_string()), Some(mac.to_string())),
                    None => (get("model"), get("macaddr")),
                }
            } else {
                (None, get("hwaddr"))
            };
            let ip_source = if is_vm { config.get(&format!("ipconfig{n}")).cloned().unwrap_or_default() } else { v.to_owned() };
            let ipv4 = prop(&ip_source, "ip", false).map(|address| Ipv4 { address: address.to_owned(), gateway: prop(&ip_source, "gw", false).map(str::to_owned) });
            Nic {
                name: if is_vm { None } else { get("name") },
                bridge: get("bridge").unwrap_or_else(|| "vmbr0".into()),
                model,
                mac_address: mac,
                firewall: get("firewall").is_some_and(|f| truthy(&f)),
                vlan_id: get("tag").and_then(|t| t.parse().ok()),
                ipv4,
            }
        })
        .collect()
}
