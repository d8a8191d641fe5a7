//! The live guest as Terraform should describe it, built at the edge from Proxmox's config map (what the guest really
//! has) and the deployment record (its id and name). Each field holds what the bpg provider's Read puts in state
//! after an import (`hcl-export/schema/SOURCE-FACTS.md`), so that the export can write exactly that.

use std::collections::BTreeMap;

use crate::core::deployment::{Deployment, DeploymentId, GuestType};
use crate::core::names::{AppName, NodeName, VmId};

/// What a guest was made from, which Proxmox does not keep in the guest's config: the provisioner's settings.
/// Written as a comment only: the provider cannot read it back (bpg#1988, #1131).
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
    /// Sorted, as the provider's Read sorts them.
    pub tags: Vec<String>,
    pub running: bool,
    pub on_boot: bool,
    pub protection: bool,
    pub cores: u32,
    pub memory_mib: u64,
    /// The boot disk (VM) or root filesystem (container).
    pub disk: Option<Disk>,
    /// In index order (`net0`, `net1`, …).
    pub nics: Vec<Nic>,
    pub nameservers: Vec<String>,
    pub search_domain: Option<String>,
    /// `startup: order=…,up=…,down=…`, each -1 when absent.
    pub startup: Option<(i64, i64, i64)>,
    pub kind: Kind,
    /// The config as Proxmox returned it, for the plan model's check of this export.
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Vm(Vm),
    Lxc(Lxc),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// The VM's own name in Proxmox, when it has one.
    pub vm_name: Option<String>,
    pub template: VmId,
    pub full_clone: bool,
    /// `agent: enabled,fstrim_cloned_disks=…,type=…` when PVE has the key.
    pub agent: Option<Agent>,
    pub cpu: Cpu,
    /// `balloon`, 0 when absent.
    pub balloon_mib: u64,
    /// Every disk but the cloud-init drive and CD-ROMs, in bus order (the boot disk is also `LiveGuest::disk`).
    pub disks: Vec<Disk>,
    /// `ostype` (`l26`, …).
    pub os_type: Option<String>,
    /// `scsihw` (`virtio-scsi-pci`, …).
    pub scsi_hardware: Option<String>,
    /// From `boot: order=scsi0;net0`.
    pub boot_order: Vec<String>,
    /// `serial0`… devices (`socket`), up to the highest index, "" in gaps.
    pub serial_devices: Vec<String>,
    pub vga: Option<Vga>,
    /// `bios`, `machine`, `keyboard`, `args`, `hookscript` as PVE has them.
    pub bios: Option<String>,
    pub machine: Option<String>,
    pub keyboard: Option<String>,
    pub kvm_arguments: Option<String>,
    pub hook_script: Option<String>,
    pub acpi: bool,
    pub tablet: bool,
    pub efi_disk: Option<EfiDisk>,
    /// `tpmstate0`: datastore and version.
    pub tpm_state: Option<(String, String)>,
    /// The cloud-init drive and what it carries, when the VM has one.
    pub cloud_init: Option<CloudInit>,
    /// `ipconfigN` for N up to the highest present; `None` in gaps.
    pub ip_configs: Vec<Option<IpConfig>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub enabled: bool,
    pub trim: bool,
    pub kind: String,
}

/// The VM's CPU settings; `None`/0 where PVE has no key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cpu {
    pub sockets: Option<u32>,
    /// The CPU model (`x86-64-v2-AES`, `host`); `qemu64` when PVE has no `cpu`.
    pub kind: Option<String>,
    pub flags: Vec<String>,
    pub architecture: Option<String>,
    pub hotplugged: Option<u32>,
    pub limit: Option<String>,
    pub units: Option<u32>,
    pub numa: bool,
    pub affinity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vga {
    pub kind: Option<String>,
    pub memory: Option<u32>,
    pub clipboard: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EfiDisk {
    pub datastore_id: String,
    /// `efitype`, `2m` when absent.
    pub kind: String,
    pub pre_enrolled_keys: bool,
    /// `raw`, `qcow2`, …: from `format=` or the volume's extension.
    pub format: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudInit {
    /// `ide2`
    pub interface: String,
    pub datastore_id: String,
    pub user: Option<String>,
    /// One `authorized_keys` line each.
    pub ssh_keys: Vec<String>,
    /// Whether PVE has any of `ciuser`, `sshkeys`, `cipassword` (then Read fills `user_account`).
    pub user_account: bool,
    /// From `cicustom`: `user=`, `vendor=`, `network=`, `meta=` snippets (`local:snippets/x.yaml`).
    pub user_data_file_id: Option<String>,
    pub vendor_data_file_id: Option<String>,
    pub network_data_file_id: Option<String>,
    pub meta_data_file_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lxc {
    /// PVE's `hostname`, when it has one.
    pub hostname: Option<String>,
    pub template_file_id: String,
    /// `ostype`, e.g. `debian`.
    pub os_type: Option<String>,
    /// `swap`, 0 when absent (the provider's Read, `container.go:2859-2863`).
    pub swap_mib: u64,
    pub unprivileged: bool,
    pub features: Features,
    pub architecture: Option<String>,
    pub cpu_limit: Option<String>,
    pub cpu_units: Option<u32>,
    pub mount_points: Vec<MountPoint>,
    /// `console`, `cmode`, `tty` where one differs from 1/tty/2.
    pub console: Option<(bool, String, u32)>,
    pub entrypoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Features {
    pub nesting: bool,
    pub keyctl: bool,
    pub fuse: bool,
    pub mknod: bool,
}

impl Features {
    pub fn any(&self) -> bool {
        self.nesting || self.keyctl || self.fuse || self.mknod
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    /// `local-lvm:vm-101-disk-1`
    pub volume: String,
    pub path: String,
    /// PVE's own size string (`8G`): the provider keeps it as text (`container.go:3102-3106`).
    pub size: Option<String>,
    /// The options PVE has set (`acl`, `backup`, `quota`, `ro`, `replicate`, `shared`) with their values.
    pub options: BTreeMap<String, bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `scsi0`, `virtio0`, … for VMs; `rootfs` for containers.
    pub interface: String,
    pub datastore_id: String,
    /// Whole GiB, rounded down as the provider's Read does (`proxmox/types/disk_size.go:40-46`).
    pub size_gib: u64,
    /// Every `key=value` option PVE has on the drive but `size`, `format`, `media` (`iothread=1`, `discard=on`).
    pub options: BTreeMap<String, String>,
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
    pub mtu: Option<u32>,
    pub rate_limit: Option<String>,
    /// VMs: `link_down`, `queues`, `trunks`.
    pub disconnected: bool,
    pub queues: Option<u32>,
    pub trunks: Option<String>,
    /// A container interface's own `ip=`/`gw=`/`ip6=`/`gw6=`.
    pub ip: Option<IpConfig>,
}

/// One interface's addresses: `ip=`/`gw=` and `ip6=`/`gw6=`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpConfig {
    pub ipv4: Option<(String, Option<String>)>,
    pub ipv6: Option<(String, Option<String>)>,
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

const VM_DISKS: [&str; 4] = ["ide", "sata", "scsi", "virtio"];
/// PVE's boot preference when looking for the boot disk.
const BOOT_PREFERENCE: [&str; 4] = ["scsi", "virtio", "sata", "ide"];
const NIC_MODELS: [&str; 5] = ["virtio", "e1000", "e1000e", "rtl8139", "vmxnet3"];

impl LiveGuest {
    /// Reads a guest's config map (`GET …/config`, every value as text) and run state.
    pub fn from_config(d: &Deployment, node: NodeName, vmid: VmId, config: &BTreeMap<String, String>, running: bool, origin: &Origin) -> LiveGuest {
        let get = |k: &str| config.get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let flag = |k: &str| get(k).is_some_and(|v| truthy(&v));
        // PVE's own default when the key is absent; the provider then reads 0 (`vm.go:5259-5263`), which no
        // configuration can match: the plan model reports it.
        let memory_mib = get("memory").and_then(|m| prop(&m, "current", true).and_then(|v| v.parse().ok())).unwrap_or(512);
        let mut tags: Vec<String> = get("tags").map(|t| t.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()).unwrap_or_default();
        tags.sort();
        let is_vm = d.spec.guest_type == GuestType::Vm;
        let kind = if is_vm { Kind::Vm(vm(config, vmid, origin)) } else { Kind::Lxc(lxc(config, origin)) };
        let disk = match &kind {
            Kind::Vm(vm) => BOOT_PREFERENCE.iter().find_map(|bus| vm.disks.iter().find(|d| d.interface.starts_with(bus)).cloned()),
            Kind::Lxc(_) => get("rootfs").and_then(|v| disk("rootfs", &v)),
        };
        LiveGuest {
            deployment: d.id.clone(),
            name: d.spec.name.clone(),
            node,
            vmid,
            description: config.get("description").filter(|v| !v.is_empty()).cloned(),
            tags,
            running,
            on_boot: flag("onboot"),
            protection: flag("protection"),
            cores: get("cores").and_then(|c| c.parse().ok()).unwrap_or(1),
            memory_mib,
            disk,
            nics: nics(config, is_vm),
            nameservers: get("nameserver").map(|n| n.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect()).unwrap_or_default(),
            search_domain: get("searchdomain"),
            startup: get("startup").map(|s| {
                let n = |k: &str| prop(&s, k, k == "order").and_then(|v| v.parse().ok()).unwrap_or(-1);
                (n("order"), n("up"), n("down"))
            }),
            kind,
            config: config.clone(),
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

fn vm(config: &BTreeMap<String, String>, vmid: VmId, origin: &Origin) -> Vm {
    let get = |k: &str| config.get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let num = |k: &str| get(k).and_then(|v| v.parse().ok());
    let cpu = get("cpu");
    let efi = get("efidisk0");
    let disks: Vec<Disk> = VM_DISKS
        .iter()
        .flat_map(|bus| indexed(config, bus))
        .filter(|(_, _, v)| {
            let volume = v.split(',').next().unwrap_or("");
            volume != "none" && !volume.contains(&format!("vm-{vmid}-cloudinit")) && prop(v, "media", false) != Some("cdrom")
        })
        .filter_map(|(_, k, v)| disk(k, v))
        .collect();
    let ipconfigs = indexed(config, "ipconfig");
    let last_ip = ipconfigs.last().map_or(0, |(n, _, _)| n + 1);
    let serials = indexed(config, "serial");
    let last_serial = serials.last().map_or(0, |(n, _, _)| n + 1);
    Vm {
        vm_name: get("name"),
        template: origin.vm_template,
        full_clone: origin.full_clone,
        agent: get("agent").map(|a| Agent {
            enabled: prop(&a, "enabled", true).is_some_and(truthy),
            trim: prop(&a, "fstrim_cloned_disks", false).is_some_and(truthy),
            kind: prop(&a, "type", false).unwrap_or("virtio").to_owned(),
        }),
        cpu: Cpu {
            sockets: num("sockets"),
            kind: cpu.as_deref().and_then(|c| prop(c, "cputype", true)).map(str::to_owned),
            flags: cpu.as_deref().and_then(|c| prop(c, "flags", false)).filter(|f| !f.is_empty()).map(|f| f.split(';').map(str::to_owned).collect()).unwrap_or_default(),
            architecture: get("arch"),
            hotplugged: num("vcpus"),
            limit: get("cpulimit"),
            units: num("cpuunits"),
            numa: get("numa").is_some_and(|n| truthy(&n)),
            affinity: get("affinity"),
        },
        balloon_mib: get("balloon").and_then(|b| b.parse().ok()).unwrap_or(0),
        disks,
        os_type: get("ostype"),
        scsi_hardware: get("scsihw"),
        boot_order: get("boot")
            .and_then(|b| prop(&b, "order", true).map(|o| o.split(';').filter(|s| !s.is_empty()).map(str::to_owned).collect()))
            .unwrap_or_default(),
        serial_devices: (0..last_serial).map(|i| get(&format!("serial{i}")).unwrap_or_default()).collect(),
        vga: get("vga").map(|v| Vga {
            kind: prop(&v, "type", true).map(str::to_owned),
            memory: prop(&v, "memory", false).and_then(|m| m.parse().ok()),
            clipboard: prop(&v, "clipboard", false).map(str::to_owned),
        }),
        bios: get("bios"),
        machine: get("machine"),
        keyboard: get("keyboard"),
        kvm_arguments: get("args"),
        hook_script: get("hookscript"),
        acpi: get("acpi").is_none_or(|v| truthy(&v)),
        tablet: get("tablet").is_none_or(|v| truthy(&v)),
        efi_disk: efi.map(|e| EfiDisk {
            datastore_id: storage(&e).to_owned(),
            kind: prop(&e, "efitype", false).unwrap_or("2m").to_owned(),
            pre_enrolled_keys: prop(&e, "pre-enrolled-keys", false).is_some_and(truthy),
            format: volume_format(&e).to_owned(),
        }),
        tpm_state: get("tpmstate0").map(|t| (storage(&t).to_owned(), prop(&t, "version", false).unwrap_or("v2.0").to_owned())),
        cloud_init: cloud_init(config, vmid),
        ip_configs: (0..last_ip).map(|i| config.get(&format!("ipconfig{i}")).map(|v| ip_config(v))).collect(),
    }
}

fn lxc(config: &BTreeMap<String, String>, origin: &Origin) -> Lxc {
    let get = |k: &str| config.get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let features = get("features").unwrap_or_default();
    let feature = |k: &str| prop(&features, k, false).is_some_and(truthy);
    let console = (get("console").is_none_or(|c| truthy(&c)), get("cmode").unwrap_or_else(|| "tty".into()), get("tty").and_then(|t| t.parse().ok()).unwrap_or(2));
    Lxc {
        hostname: get("hostname"),
        template_file_id: origin.lxc_template.clone(),
        os_type: get("ostype"),
        swap_mib: get("swap").and_then(|s| s.parse().ok()).unwrap_or(0),
        unprivileged: get("unprivileged").is_some_and(|u| truthy(&u)),
        features: Features { nesting: feature("nesting"), keyctl: feature("keyctl"), fuse: feature("fuse"), mknod: feature("mknod") },
        architecture: get("arch"),
        cpu_limit: get("cpulimit"),
        cpu_units: get("cpuunits").and_then(|u| u.parse().ok()),
        mount_points: indexed(config, "mp")
            .into_iter()
            .map(|(_, _, v)| MountPoint {
                volume: v.split(',').next().unwrap_or("").to_owned(),
                path: prop(v, "mp", false).unwrap_or("").to_owned(),
                size: prop(v, "size", false).map(str::to_owned),
                options: ["acl", "backup", "quota", "ro", "replicate", "shared"].iter().filter_map(|k| Some((k.to_string(), truthy(prop(v, k, false)?)))).collect(),
            })
            .collect(),
        console: (console != (true, "tty".to_owned(), 2)).then_some(console),
        entrypoint: get("entrypoint"),
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

/// The storage of a volume option string (`local-lvm:vm-100-disk-0,size=10G` → `local-lvm`).
fn storage(value: &str) -> &str {
    value.split(',').next().and_then(|v| v.split_once(':')).map_or("", |(s, _)| s)
}

/// `format=`, else the volume's extension (file-based storages), else `raw`.
fn volume_format(value: &str) -> &str {
    prop(value, "format", false).unwrap_or_else(|| {
        let volume = value.split(',').next().unwrap_or("");
        ["qcow2", "vmdk"].into_iter().find(|ext| volume.ends_with(&format!(".{ext}"))).unwrap_or("raw")
    })
}

/// `local-lvm:vm-100-disk-0,size=10G,iothread=1` as a disk on `interface`.
fn disk(interface: &str, value: &str) -> Option<Disk> {
    let volume = value.split(',').next()?;
    let (datastore, _) = volume.split_once(':')?;
    let bytes = prop(value, "size", false).and_then(size_bytes).unwrap_or(0);
    let options = value
        .split(',')
        .skip(1)
        .filter_map(|i| i.split_once('='))
        .filter(|(k, _)| !matches!(k.trim(), "size" | "format" | "media"))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Some(Disk { interface: interface.to_owned(), datastore_id: datastore.to_owned(), size_gib: bytes >> 30, options })
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

fn ip_config(v: &str) -> IpConfig {
    let family = |ip: &str, gw: &str| match (prop(v, ip, false), prop(v, gw, false)) {
        (None, None) => None,
        (a, g) => Some((a.unwrap_or("").to_owned(), g.map(str::to_owned))),
    };
    IpConfig { ipv4: family("ip", "gw"), ipv6: family("ip6", "gw6") }
}

fn cloud_init(config: &BTreeMap<String, String>, vmid: VmId) -> Option<CloudInit> {
    let marker = format!("vm-{vmid}-cloudinit");
    let (interface, datastore_id) = VM_DISKS.iter().find_map(|bus| {
        indexed(config, bus)
            .into_iter()
            .find(|(_, _, v)| v.split(',').next().is_some_and(|vol| vol.contains(&marker)))
            .map(|(_, k, v)| (k.to_owned(), storage(v).to_owned()))
    })?;
    let custom = config.get("cicustom").map(String::as_str).unwrap_or("");
    let snippet = |key: &str| prop(custom, key, false).filter(|s| !s.is_empty()).map(str::to_owned);
    // As the provider reads them: URL-query-unescaped, trimmed as a whole, one key per line
    // (`proxmox/nodes/vms/custom_cloud_init.go:203-222`).
    let ssh_keys = config
        .get("sshkeys")
        .map(|k| {
            let decoded = percent_encoding::percent_decode_str(&k.replace('+', "%20")).decode_utf8_lossy().into_owned();
            decoded.trim().split('\n').map(str::to_owned).collect()
        })
        .unwrap_or_default();
    Some(CloudInit {
        interface,
        datastore_id,
        user: config.get("ciuser").filter(|u| !u.is_empty()).cloned(),
        ssh_keys,
        user_account: ["ciuser", "sshkeys", "cipassword"].iter().any(|k| config.contains_key(*k)),
        user_data_file_id: snippet("user"),
        vendor_data_file_id: snippet("vendor"),
        network_data_file_id: snippet("network"),
        meta_data_file_id: snippet("meta"),
    })
}

fn nics(config: &BTreeMap<String, String>, is_vm: bool) -> Vec<Nic> {
    indexed(config, "net")
        .into_iter()
        .map(|(_, _, v)| {
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
            let ip = (!is_vm).then(|| ip_config(v)).filter(|ip| ip.ipv4.is_some() || ip.ipv6.is_some());
            Nic {
                name: if is_vm { None } else { get("name") },
                bridge: get("bridge").unwrap_or_default(),
                model,
                mac_address: mac,
                firewall: get("firewall").is_some_and(|f| truthy(&f)),
                vlan_id: get("tag").and_then(|t| t.parse().ok()),
                mtu: get("mtu").and_then(|t| t.parse().ok()),
                rate_limit: get("rate"),
                disconnected: get("link_down").is_some_and(|f| truthy(&f)),
                queues: get("queues").and_then(|t| t.parse().ok()),
                trunks: get("trunks"),
                ip,
            }
        })
        .collect()
}
