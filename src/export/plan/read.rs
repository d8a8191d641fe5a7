//! The state the provider's Read leaves right after `terraform import` (the importer sets only the id and
//! `node_name`: `vm/vm.go:1794-1810`, `container/container.go:1230-1246`), computed from the guest's PVE config.
//! It shares no parsing with `export/live.rs` on purpose: the model checks the exporter, so a mistake in one must
//! not hide itself in the other.
//! With `clone` absent from state, every `len(clone) == 0` branch of Read applies. Line numbers are at
//! bpg/terraform-provider-proxmox v0.111.1, relative to `proxmoxtf/resource/` unless the path says otherwise.

use std::collections::BTreeMap;

use super::{Imported, ModelError, Tree, Value};
use crate::core::deployment::GuestType;

/// Keys of the PVE config Read has no attribute for, or that never differ from what the export writes.
const VM_IGNORED: &[&str] = &["digest", "meta", "vmgenid", "lock", "parent", "pending"];
const VM_KEYS: &[&str] = &[
    "name", "description", "tags", "onboot", "agent", "cores", "sockets", "cpu", "vcpus", "cpulimit", "cpuunits", "numa", "affinity", "arch", "memory",
    "balloon", "ostype", "scsihw", "boot", "bios", "machine", "efidisk0", "tpmstate0", "nameserver", "searchdomain", "ciuser", "cipassword", "sshkeys",
    "cicustom", "citype", "ciupgrade", "vga", "startup", "keyboard", "acpi", "tablet", "protection", "args", "hookscript", "hotplug", "template",
];
/// `ide3` is Read as the `cdrom` block (`vm/vm.go:4573-4608`), which the model does not know.
const VM_INDEXED: &[(&str, u32)] = &[("ide", 2), ("sata", 5), ("scsi", 30), ("virtio", 15), ("net", 31), ("ipconfig", 31), ("serial", 3), ("unused", 255)];
const CT_IGNORED: &[&str] = &["digest", "lock", "parent"];
const CT_KEYS: &[&str] = &[
    "hostname", "description", "tags", "onboot", "unprivileged", "protection", "hookscript", "cores", "arch", "cpulimit", "cpuunits", "memory", "swap",
    "rootfs", "features", "nameserver", "searchdomain", "ostype", "startup", "console", "cmode", "tty", "entrypoint", "template",
];
const CT_INDEXED: &[(&str, u32)] = &[("mp", 255), ("net", 31), ("unused", 255)];

/// The keys of `config` the model has no Read rule for, sorted.
pub fn unmodelled(kind: GuestType, vmid: u32, config: &BTreeMap<String, String>) -> Vec<String> {
    let (ignored, keys, indexed) = match kind {
        GuestType::Vm => (VM_IGNORED, VM_KEYS, VM_INDEXED),
        GuestType::Lxc => (CT_IGNORED, CT_KEYS, CT_INDEXED),
    };
    config
        .iter()
        .filter(|(k, v)| {
            let known = ignored.contains(&k.as_str())
                || keys.contains(&k.as_str())
                || indexed.iter().any(|(p, max)| k.strip_prefix(p).and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n <= *max));
            // An `smbios1` with only the UUID PVE adds to every VM leaves `smbios` unset (`vm/vm.go:5382-5465`).
            let smbios_uuid = kind == GuestType::Vm && k.as_str() == "smbios1" && v.split(',').all(|i| i.starts_with("uuid="));
            // Only `template: 0` matches a guest that is not a template; the export never describes templates.
            let template = k.as_str() == "template" && truthy(v);
            (!known && !smbios_uuid) || template
        })
        .map(|(k, _)| k.clone())
        .chain(config.iter().flat_map(|(k, v)| unknown_options(kind, vmid, k, v)))
        .collect()
}

/// The options the model knows on each kind of device: those Read maps to a modelled attribute, or PVE's own
/// bookkeeping (`size`, `format`, `media`, container NIC `type`).
fn known_options(kind: GuestType, key: &str) -> Option<&'static [&'static str]> {
    let bus = key.trim_end_matches(|c: char| c.is_ascii_digit());
    Some(match (kind, bus) {
        (GuestType::Vm, "ide" | "sata" | "scsi" | "virtio") => &["size", "format", "media", "iothread", "discard", "ssd", "aio", "backup", "cache", "replicate", "serial", "queues"],
        (GuestType::Vm, "net") => &["bridge", "firewall", "tag", "link_down", "queues", "rate", "mtu", "trunks", "model", "macaddr", "virtio", "e1000", "e1000e", "rtl8139", "vmxnet3"],
        (GuestType::Vm, "efidisk") => &["size", "format", "efitype", "pre-enrolled-keys"],
        (GuestType::Vm, "tpmstate") => &["size", "format", "version"],
        (GuestType::Lxc, "rootfs") => &["size", "acl", "quota", "replicate"],
        (GuestType::Lxc, "mp") => &["mp", "size", "acl", "backup", "quota", "ro", "replicate", "shared"],
        (GuestType::Lxc, "net") => &["name", "bridge", "hwaddr", "firewall", "tag", "rate", "mtu", "host-managed", "ip", "gw", "ip6", "gw6", "type"],
        _ => return None,
    })
}

/// `scsi1: mbps_rd` for each option of a device that the model has no Read rule for (the cloud-init drive and
/// CD-ROMs are not read as disks, so their options do not matter).
fn unknown_options(kind: GuestType, vmid: u32, key: &str, value: &str) -> Vec<String> {
    let Some(known) = known_options(kind, key) else { return vec![] };
    let volume = value.split(',').next().unwrap_or("");
    if kind == GuestType::Vm && (volume.contains(&format!("vm-{vmid}-cloudinit")) || prop(value, "media", None) == Some("cdrom")) {
        return vec![];
    }
    value
        .split(',')
        .filter_map(|item| item.split_once('=').map(|(k, _)| k.trim()))
        .filter(|k| !known.contains(k))
        .map(|k| format!("{key}: {k}"))
        .collect()
}

/// The state after import.
pub fn after_import(g: &Imported<'_>) -> Result<Tree, ModelError> {
    if let Some(key) = unmodelled(g.kind, g.vmid, g.config).into_iter().next() {
        return Err(ModelError::UnmodelledKey(key));
    }
    Ok(match g.kind {
        GuestType::Vm => vm(g),
        GuestType::Lxc => container(g),
    })
}

/// A property string's value for `key`; the bare first item counts as `default_key`'s value.
fn prop<'a>(value: &'a str, key: &str, default_key: Option<&str>) -> Option<&'a str> {
    value.split(',').enumerate().find_map(|(i, item)| match item.split_once('=') {
        Some((k, v)) if k.trim() == key => Some(v.trim()),
        None if i == 0 && default_key == Some(key) => Some(item.trim()),
        _ => None,
    })
}

fn truthy(v: &str) -> bool {
    matches!(v.trim(), "1" | "yes" | "on" | "true")
}

fn text(v: impl ToString) -> Value {
    Value::Text(v.to_string())
}

fn block(t: Tree) -> Value {
    Value::Blocks(vec![t])
}

/// Keys `prefixN` of `config`, in numeric order of N.
fn indexed<'a>(config: &'a BTreeMap<String, String>, prefix: &str) -> Vec<(u32, &'a str, &'a str)> {
    let mut found: Vec<(u32, &str, &str)> =
        config.iter().filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.parse::<u32>().ok()?, k.as_str(), v.as_str()))).collect();
    found.sort_by_key(|(n, _, _)| *n);
    found
}

/// PVE size strings (`10G`, `512M`, `4096`) in bytes.
fn size_bytes(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let n: f64 = s[..split].parse().ok()?;
    let unit: u64 = match &s[split..] {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    Some((n * unit as f64) as u64)
}

/// `DiskSize.InGigabytes`: bytes / 2^30 by integer division (`proxmox/types/disk_size.go:40-46`).
fn gigabytes(value: &str) -> u64 {
    prop(value, "size", None).and_then(size_bytes).unwrap_or(0) >> 30
}

/// The volume's storage: the part before `:` (`vm/disk/disk.go:415-423`, `container/container.go:2807`).
fn storage(value: &str) -> &str {
    value.split(',').next().and_then(|v| v.split_once(':')).map_or("", |(s, _)| s)
}

/// A volume's format: `format=` or, as the storage API answers for file-based storages, its extension; `raw` else.
fn format(value: &str) -> &str {
    prop(value, "format", None).unwrap_or_else(|| {
        let volume = value.split(',').next().unwrap_or("");
        ["qcow2", "vmdk"].into_iter().find(|ext| volume.ends_with(&format!(".{ext}"))).unwrap_or("raw")
    })
}

fn vm(g: &Imported<'_>) -> Tree {
    let c = g.config;
    let get = |k: &str| c.get(k).map(|v| v.as_str());
    let flag = |k: &str, default: bool| get(k).map_or(default, truthy);
    let mut t = Tree::new();
    // vmReadPrimitiveValues (vm/vm.go:5649-5850) and vmReadCustom (4358-5647).
    t.insert("name".into(), text(get("name").unwrap_or("")));
    t.insert("node_name".into(), text(g.node));
    t.insert("vm_id".into(), text(g.vmid));
    t.insert("description".into(), text(get("description").unwrap_or("")));
    t.insert("tags".into(), tags(get("tags")));
    t.insert("on_boot".into(), text(flag("onboot", false)));
    t.insert("started".into(), text(g.running));
    if let Some(s) = get("scsihw") {
        t.insert("scsi_hardware".into(), text(s));
    }
    let order = get("boot").and_then(|b| prop(b, "order", Some("order"))).map(|o| o.split(';').filter(|s| !s.is_empty()).map(str::to_owned).collect());
    t.insert("boot_order".into(), Value::List(order.unwrap_or_default()));
    t.insert("bios".into(), text(get("bios").unwrap_or("seabios")));
    t.insert("machine".into(), text(get("machine").unwrap_or("")));
    t.insert("keyboard_layout".into(), text(get("keyboard").unwrap_or("en-us")));
    t.insert("acpi".into(), text(flag("acpi", true)));
    t.insert("tablet_device".into(), text(flag("tablet", true)));
    t.insert("protection".into(), text(flag("protection", false)));
    t.insert("kvm_arguments".into(), text(get("args").unwrap_or("")));
    t.insert("hook_script_file_id".into(), text(get("hookscript").unwrap_or("")));
    if let Some(h) = get("hotplug") {
        t.insert("hotplug".into(), text(h));
    }
    t.insert("template".into(), text(flag("template", false)));
    // agent: vm/vm.go:4402-4474.
    if let Some(a) = get("agent") {
        let enabled = prop(a, "enabled", Some("enabled")).is_some_and(truthy);
        let trim = prop(a, "fstrim_cloned_disks", None).is_some_and(truthy);
        let kind = prop(a, "type", None).unwrap_or("virtio");
        if enabled || trim || kind != "virtio" {
            t.insert("agent".into(), block(Tree::from([("enabled".into(), text(enabled)), ("trim".into(), text(trim)), ("type".into(), text(kind))])));
        }
    }
    if let Some(cpu) = vm_cpu(c) {
        t.insert("cpu".into(), block(cpu));
    }
    // memory: vm/vm.go:5256-5304 (`memory` 0 when absent; PVE 8+ may write `current=`).
    let dedicated: u64 = get("memory").and_then(|m| prop(m, "current", Some("current"))).and_then(|m| m.parse().ok()).unwrap_or(0);
    let floating: u64 = get("balloon").and_then(|b| b.parse().ok()).unwrap_or(0);
    if dedicated != 512 || floating != 0 {
        t.insert("memory".into(), block(Tree::from([("dedicated".into(), text(dedicated)), ("floating".into(), text(floating))])));
    }
    t.insert("disk".into(), Value::Blocks(vm_disks(c, g.vmid)));
    t.insert("network_device".into(), Value::Blocks(vm_nics(c)));
    if let Some(init) = vm_initialization(c, g.vmid) {
        t.insert("initialization".into(), block(init));
    }
    // operating_system: set unless `ostype` is `other`, also when absent (type "") (vm/vm.go:5308-5334).
    match get("ostype") {
        Some("other") => {}
        os => {
            t.insert("operating_system".into(), block(Tree::from([("type".into(), text(os.unwrap_or("")))])));
        }
    }
    // serial_device: serial0..the highest present, gaps as "" (vm/vm.go:5352-5380).
    let serial = indexed(c, "serial");
    let last = serial.last().map_or(0, |(n, _, _)| *n + 1);
    let devices = (0..last).map(|i| Tree::from([("device".into(), text(get(&format!("serial{i}")).unwrap_or("")))])).collect();
    t.insert("serial_device".into(), Value::Blocks(devices));
    // vga: vm/vm.go:5513-5553.
    if let Some(v) = get("vga") {
        let kind = prop(v, "type", Some("type"));
        let memory = prop(v, "memory", None).unwrap_or("16");
        let clipboard = prop(v, "clipboard", None).unwrap_or("");
        if clipboard != "" || memory != "16" || kind != Some("std") {
            let mut vga = Tree::from([("memory".into(), text(memory)), ("clipboard".into(), text(clipboard))]);
            if let Some(kind) = kind {
                vga.insert("type".into(), text(kind));
            }
            t.insert("vga".into(), block(vga));
        }
    }
    // efi_disk: vm/vm.go:4748-4804.
    if let Some(e) = get("efidisk0") {
        let (ds, kind, keys, fmt) = (storage(e), prop(e, "efitype", None).unwrap_or("2m"), prop(e, "pre-enrolled-keys", None).is_some_and(truthy), format(e));
        if ds != "local-lvm" || kind != "2m" || keys || fmt != "raw" {
            t.insert("efi_disk".into(), block(Tree::from([("datastore_id".into(), text(ds)), ("type".into(), text(kind)), ("pre_enrolled_keys".into(), text(keys))])));
        }
    }
    // tpm_state: vm/vm.go:4806-4831.
    if let Some(tpm) = get("tpmstate0") {
        let (ds, version) = (storage(tpm), prop(tpm, "version", None).unwrap_or("v2.0"));
        if ds != "local-lvm" || version != "v2.0" {
            t.insert("tpm_state".into(), block(Tree::from([("datastore_id".into(), text(ds)), ("version".into(), text(version))])));
        }
    }
    if let Some(s) = get("startup") {
        t.insert("startup".into(), block(startup(s)));
    }
    t
}

/// `tags` split on `;`, trimmed, sorted (vm/vm.go:5742-5758, container/container.go:3421-3439).
fn tags(v: Option<&str>) -> Value {
    let mut tags: Vec<String> = v.unwrap_or("").split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    tags.sort();
    Value::List(tags)
}

/// `startup: order=1,up=30,down=60`; each -1 when absent (vm/vm.go:5467-5511, container/container.go:3292-3332).
fn startup(s: &str) -> Tree {
    let get = |k: &str| prop(s, k, Some("order")).unwrap_or("-1");
    Tree::from([("order".into(), text(get("order"))), ("up_delay".into(), text(get("up"))), ("down_delay".into(), text(get("down")))])
}

/// vm/vm.go:4610-4742: the block only when something differs from the provider's defaults.
fn vm_cpu(c: &BTreeMap<String, String>) -> Option<Tree> {
    let get = |k: &str| c.get(k).map(|v| v.as_str());
    let num = |k: &str, d: &'static str| get(k).unwrap_or(d).to_owned();
    let (kind, flags) = match get("cpu") {
        Some(cpu) => {
            let kind = prop(cpu, "cputype", Some("cputype")).unwrap_or("");
            let flags: Vec<String> = prop(cpu, "flags", None).filter(|f| !f.is_empty()).map(|f| f.split(';').map(str::to_owned).collect()).unwrap_or_default();
            (kind.to_owned(), flags)
        }
        None => ("qemu64".to_owned(), vec![]),
    };
    let cpu = Tree::from([
        ("architecture".into(), text(get("arch").unwrap_or(""))),
        ("cores".into(), text(num("cores", "1"))),
        ("sockets".into(), text(num("sockets", "1"))),
        ("type".into(), text(&kind)),
        ("flags".into(), Value::List(flags.clone())),
        ("units".into(), text(num("cpuunits", "0"))),
        ("hotplugged".into(), text(num("vcpus", "0"))),
        ("limit".into(), text(num("cpulimit", "0"))),
        ("numa".into(), text(get("numa").is_some_and(truthy))),
        ("affinity".into(), text(get("affinity").unwrap_or(""))),
    ]);
    let differs = get("arch").is_some_and(|a| !a.is_empty())
        || num("cores", "1") != "1"
        || !flags.is_empty()
        || num("vcpus", "0") != "0"
        || num("cpulimit", "0").parse::<f64>().unwrap_or(0.0) != 0.0
        || num("sockets", "1") != "1"
        || kind != "qemu64"
        || num("cpuunits", "0") != "0";
    differs.then_some(cpu)
}

/// vm/disk/disk.go:385-617: every ide/sata/scsi/virtio device except the cloud-init volume, CD-ROMs and `none`.
fn vm_disks(c: &BTreeMap<String, String>, vmid: u32) -> Vec<Tree> {
    let mut disks = Vec::new();
    for bus in ["ide", "sata", "scsi", "virtio"] {
        for (_, key, v) in indexed(c, bus) {
            let volume = v.split(',').next().unwrap_or("");
            if volume == "none" || volume.contains(&format!("vm-{vmid}-cloudinit")) || prop(v, "media", None) == Some("cdrom") {
                continue;
            }
            let opt = |k: &str, d: &str| prop(v, k, None).unwrap_or(d).to_owned();
            let flag = |k: &str, d: bool| prop(v, k, None).map_or(d, truthy);
            disks.push(Tree::from([
                ("interface".into(), text(key)),
                ("datastore_id".into(), text(storage(v))),
                ("size".into(), text(gigabytes(v))),
                ("iothread".into(), text(flag("iothread", false))),
                ("discard".into(), text(opt("discard", "ignore"))),
                ("ssd".into(), text(flag("ssd", false))),
                ("aio".into(), text(opt("aio", "io_uring"))),
                ("backup".into(), text(flag("backup", true))),
                ("cache".into(), text(opt("cache", "none"))),
                ("replicate".into(), text(flag("replicate", true))),
                ("serial".into(), text(opt("serial", ""))),
                ("queues".into(), text(opt("queues", "0"))),
            ]));
        }
    }
    disks
}

const NIC_MODELS: [&str; 5] = ["virtio", "e1000", "e1000e", "rtl8139", "vmxnet3"];

/// vm/network/network.go:134-182: one entry per netN up to the highest index.
fn vm_nics(c: &BTreeMap<String, String>) -> Vec<Tree> {
    let nets = indexed(c, "net");
    let last = nets.last().map_or(0, |(n, _, _)| *n + 1);
    (0..last)
        .map(|i| {
            let Some(v) = c.get(&format!("net{i}")) else { return Tree::new() };
            let (model, mac) = v
                .split(',')
                .filter_map(|i| i.split_once('='))
                .find(|(k, _)| NIC_MODELS.contains(&k.trim()))
                .map_or((prop(v, "model", None).unwrap_or(""), prop(v, "macaddr", None).unwrap_or("")), |(m, mac)| (m.trim(), mac.trim()));
            let opt = |k: &str, d: &str| prop(v, k, None).unwrap_or(d).to_owned();
            Tree::from([
                ("bridge".into(), text(opt("bridge", ""))),
                ("model".into(), text(model)),
                ("mac_address".into(), text(mac)),
                ("firewall".into(), text(prop(v, "firewall", None).is_some_and(truthy))),
                ("vlan_id".into(), text(opt("tag", "0"))),
                ("enabled".into(), text(true)),
                ("disconnected".into(), text(prop(v, "link_down", None).is_some_and(truthy))),
                ("queues".into(), text(opt("queues", "0"))),
                ("rate_limit".into(), text(opt("rate", "0"))),
                ("mtu".into(), text(opt("mtu", "0"))),
                ("trunks".into(), text(opt("trunks", ""))),
            ])
        })
        .collect()
}

/// `ip=`/`gw=` and `ip6=`/`gw6=` of an `ipconfigN` or a container's `netN` as the `ipv4`/`ipv6` blocks.
fn ip_entry(v: &str) -> Tree {
    let family = |ip: &str, gw: &str| match (prop(v, ip, None), prop(v, gw, None)) {
        (None, None) => Value::Blocks(vec![]),
        (a, g) => block(Tree::from([("address".into(), text(a.unwrap_or(""))), ("gateway".into(), text(g.unwrap_or("")))])),
    };
    Tree::from([("ipv4".into(), family("ip", "gw")), ("ipv6".into(), family("ip6", "gw6"))])
}

/// vm/vm.go:5012-5245.
fn vm_initialization(c: &BTreeMap<String, String>, vmid: u32) -> Option<Tree> {
    let get = |k: &str| c.get(k).map(|v| v.as_str());
    let drive = ["ide", "sata", "scsi", "virtio"]
        .into_iter()
        .flat_map(|bus| indexed(c, bus))
        .find(|(_, _, v)| v.split(',').next().is_some_and(|vol| vol.contains(&format!("vm-{vmid}-cloudinit"))));
    let ipconfigs = indexed(c, "ipconfig");
    let any = drive.is_some()
        || !ipconfigs.is_empty()
        || ["searchdomain", "nameserver", "ciuser", "sshkeys", "cipassword", "cicustom", "citype", "ciupgrade"].iter().any(|k| c.contains_key(*k));
    if !any {
        return None;
    }
    let mut t = Tree::new();
    if let Some((_, key, v)) = drive {
        t.insert("interface".into(), text(key));
        t.insert("datastore_id".into(), text(storage(v)));
    }
    if get("searchdomain").is_some() || get("nameserver").is_some() {
        let servers = get("nameserver").map(|n| n.split(' ').map(str::to_owned).collect()).unwrap_or_default();
        t.insert("dns".into(), block(Tree::from([("domain".into(), text(get("searchdomain").unwrap_or(""))), ("servers".into(), Value::List(servers))])));
    }
    if let Some((last, _, _)) = ipconfigs.last() {
        let entries = (0..=*last).map(|i| c.get(&format!("ipconfig{i}")).map_or_else(|| ip_entry(""), |v| ip_entry(v))).collect();
        t.insert("ip_config".into(), Value::Blocks(entries));
    }
    if ["ciuser", "sshkeys", "cipassword"].iter().any(|k| c.contains_key(*k)) {
        // keys: URL-query-unescaped, the whole string trimmed, split on "\n" (proxmox/nodes/vms/custom_cloud_init.go:203-222).
        let keys = get("sshkeys").map(|k| {
            let decoded = percent_encoding::percent_decode_str(&k.replace('+', "%20")).decode_utf8_lossy().into_owned();
            decoded.trim().split('\n').map(str::to_owned).collect()
        });
        t.insert("user_account".into(), block(Tree::from([("username".into(), text(get("ciuser").unwrap_or(""))), ("keys".into(), Value::List(keys.unwrap_or_default()))])));
    }
    let custom = get("cicustom").unwrap_or("");
    for (attr, key) in [("user_data_file_id", "user"), ("vendor_data_file_id", "vendor"), ("network_data_file_id", "network"), ("meta_data_file_id", "meta")] {
        t.insert(attr.into(), text(prop(custom, key, None).unwrap_or("")));
    }
    t.insert("type".into(), text(get("citype").unwrap_or("")));
    t.insert("upgrade".into(), text(get("ciupgrade").map_or(true, truthy)));
    Some(t)
}

fn container(g: &Imported<'_>) -> Tree {
    let c = g.config;
    let get = |k: &str| c.get(k).map(|v| v.as_str());
    let flag = |k: &str| get(k).is_some_and(truthy);
    let num = |k: &str, d: &'static str| get(k).unwrap_or(d).to_owned();
    let mut t = Tree::new();
    // containerRead (container/container.go:2660-3519); vm_id is never set (2691-2701), nor any timeout_*.
    t.insert("node_name".into(), text(g.node));
    t.insert("description".into(), text(get("description").unwrap_or("")));
    t.insert("tags".into(), tags(get("tags")));
    t.insert("start_on_boot".into(), text(flag("onboot")));
    t.insert("started".into(), text(g.running));
    t.insert("unprivileged".into(), text(flag("unprivileged")));
    t.insert("protection".into(), text(flag("protection")));
    t.insert("hook_script_file_id".into(), text(get("hookscript").unwrap_or("")));
    // console: only when it differs (2718-2755).
    let (console, cmode, tty) = (get("console").map_or(true, truthy), num("cmode", "tty"), num("tty", "2"));
    if !console || cmode != "tty" || tty != "2" {
        t.insert("console".into(), block(Tree::from([("enabled".into(), text(console)), ("type".into(), text(cmode)), ("tty_count".into(), text(tty))])));
    }
    // cpu (2757-2801).
    let (arch, cores, limit, units) = (num("arch", "amd64"), num("cores", "1"), num("cpulimit", "0"), num("cpuunits", "0"));
    if arch != "amd64" || cores != "1" || limit.parse::<f64>().unwrap_or(0.0) != 0.0 || units != "0" {
        t.insert(
            "cpu".into(),
            block(Tree::from([("architecture".into(), text(arch)), ("cores".into(), text(cores)), ("limit".into(), text(limit)), ("units".into(), text(units))])),
        );
    }
    // memory (2850-2877): `memory` and `swap` 0 when absent.
    let (memory, swap) = (num("memory", "0"), num("swap", "0"));
    if memory != "512" || swap != "0" {
        t.insert("memory".into(), block(Tree::from([("dedicated".into(), text(memory)), ("swap".into(), text(swap))])));
    }
    // disk (2803-2848): rootfs; acl/quota/replicate false when absent.
    let rootfs = get("rootfs").unwrap_or("");
    let pflag = |v: &str, k: &str, d: bool| prop(v, k, None).map_or(d, truthy);
    t.insert(
        "disk".into(),
        block(Tree::from([
            ("datastore_id".into(), text(storage(rootfs))),
            ("size".into(), text(gigabytes(rootfs))),
            ("acl".into(), text(pflag(rootfs, "acl", false))),
            ("quota".into(), text(pflag(rootfs, "quota", false))),
            ("replicate".into(), text(pflag(rootfs, "replicate", false))),
        ])),
    );
    // mount_point (3053-3125): every mpN in order; `size` is PVE's string.
    let mounts = indexed(c, "mp")
        .into_iter()
        .map(|(_, _, v)| {
            Tree::from([
                ("volume".into(), text(v.split(',').next().unwrap_or(""))),
                ("path".into(), text(prop(v, "mp", None).unwrap_or(""))),
                ("size".into(), text(prop(v, "size", None).unwrap_or(""))),
                ("acl".into(), text(pflag(v, "acl", false))),
                ("backup".into(), text(pflag(v, "backup", false))),
                ("quota".into(), text(pflag(v, "quota", false))),
                ("read_only".into(), text(pflag(v, "ro", false))),
                ("replicate".into(), text(pflag(v, "replicate", true))),
                ("shared".into(), text(pflag(v, "shared", false))),
            ])
        })
        .collect();
    t.insert("mount_point".into(), Value::Blocks(mounts));
    // features (2879-2935).
    let features = get("features").unwrap_or("");
    let f: Vec<(String, bool)> = ["nesting", "keyctl", "fuse", "mknod"].iter().map(|k| (k.to_string(), pflag(features, k, false))).collect();
    if f.iter().any(|(_, on)| *on) {
        t.insert("features".into(), block(f.into_iter().map(|(k, on)| (k, text(on))).collect()));
    }
    // initialization (2937-2991, 3230-3290): always set.
    let mut init = Tree::from([("hostname".into(), text(get("hostname").unwrap_or(""))), ("entrypoint".into(), text(get("entrypoint").unwrap_or("")))]);
    if get("searchdomain").is_some() || get("nameserver").is_some() {
        let servers = get("nameserver").map(|n| n.split(' ').map(str::to_owned).collect()).unwrap_or_default();
        init.insert("dns".into(), block(Tree::from([("domain".into(), text(get("searchdomain").unwrap_or(""))), ("servers".into(), Value::List(servers))])));
    }
    let nets = indexed(c, "net");
    let addressed: Vec<Tree> =
        nets.iter().filter(|(_, _, v)| ["ip", "gw", "ip6", "gw6"].iter().any(|k| prop(v, k, None).is_some())).map(|(_, _, v)| ip_entry(v)).collect();
    if !addressed.is_empty() {
        init.insert("ip_config".into(), Value::Blocks(addressed));
    }
    t.insert("initialization".into(), block(init));
    // network_interface (3179-3229): every netN.
    let nics = nets
        .iter()
        .map(|(_, _, v)| {
            let opt = |k: &str, d: &str| prop(v, k, None).unwrap_or(d).to_owned();
            Tree::from([
                ("name".into(), text(opt("name", ""))),
                ("bridge".into(), text(opt("bridge", ""))),
                ("mac_address".into(), text(opt("hwaddr", ""))),
                ("firewall".into(), text(pflag(v, "firewall", false))),
                ("vlan_id".into(), text(opt("tag", "0"))),
                ("enabled".into(), text(true)),
                ("rate_limit".into(), text(opt("rate", "0"))),
                ("mtu".into(), text(opt("mtu", "0"))),
                ("host_managed".into(), text(pflag(v, "host-managed", false))),
            ])
        })
        .collect();
    t.insert("network_interface".into(), Value::Blocks(nics));
    // operating_system (3334-3364): set unless `unmanaged`; template_file_id only from prior state, so absent.
    match get("ostype") {
        Some("unmanaged") => {}
        os => {
            t.insert("operating_system".into(), block(Tree::from([("type".into(), text(os.unwrap_or("")))])));
        }
    }
    if let Some(s) = get("startup") {
        t.insert("startup".into(), block(startup(s)));
    }
    t
}
