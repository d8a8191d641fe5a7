//! The plan model against every guest shape pvedeploy makes: today's export plans clean after an import (a
//! container only adds the provider's timeout defaults), the export as it was before the model (`fixtures/`,
//! written at 53181a5) is caught, and the model refuses what it does not know. The table is checked against the
//! facts taken from the provider's source (`hcl-export/schema/bpg-source-facts.json`).

use std::collections::BTreeMap;

use super::schema::{self, Replace, Ty};
use super::{after_import, Imported, ModelError, Plan};
use crate::core::deployment::GuestType;
use crate::core::names::{NodeName, VmId};
use crate::export::hcl::render;
use crate::export::hcl::tests::{deployment, lxc_config, map, origin, vm_config};
use crate::export::live::LiveGuest;

const FACTS: &str = include_str!("../../../hcl-export/schema/bpg-source-facts.json");

/// The sandbox template's linked clone after provisioning (agent on, cloud-init snippet, DHCP), with the keys PVE
/// adds that Read has no attribute for.
fn vm_linked() -> BTreeMap<String, String> {
    let mut c = vm_config();
    c.extend(map(&[
        ("meta", "creation-qemu=10.0.2,ctime=1733000000"),
        ("smbios1", "uuid=5d6c1f0e-8f0b-4d0e-9a55-0f5c2f7f1a11"),
        ("vmgenid", "2b1c7a4e-1a9e-4c55-8a0a-6f5e4f3d2c1b"),
    ]));
    c
}

/// A full clone of a GUI-made template: UEFI with pre-enrolled keys, q35, `x86-64-v2-AES`, a TPM, a second
/// disk with options, a static address, the agent with fstrim, a partial disk size (rounded down).
fn vm_uefi() -> BTreeMap<String, String> {
    let mut c = vm_linked();
    c.extend(map(&[
        ("agent", "1,fstrim_cloned_disks=1"),
        ("bios", "ovmf"),
        ("machine", "q35"),
        ("cpu", "x86-64-v2-AES,flags=+aes;-pcid"),
        ("sockets", "2"),
        ("balloon", "1024"),
        ("efidisk0", "local-lvm:vm-105-disk-1,efitype=4m,pre-enrolled-keys=1,size=4M"),
        ("tpmstate0", "local-lvm:vm-105-disk-2,size=4M,version=v2.0"),
        ("scsi0", "local-lvm:vm-105-disk-0,iothread=1,size=10752M"),
        ("scsi1", "local:105/vm-105-disk-3.qcow2,discard=on,ssd=1,backup=0,size=32G"),
        ("scsihw", "virtio-scsi-single"),
        ("ipconfig0", "ip=10.0.0.5/24,gw=10.0.0.1,ip6=auto"),
        ("startup", "order=3,up=30"),
        ("onboot", "1"),
    ]));
    c.remove("cicustom");
    c
}

/// A container as the provisioner makes it, with a mount point added in the UI and a static address.
fn ct_static() -> BTreeMap<String, String> {
    map(&[
        ("arch", "amd64"),
        ("cores", "2"),
        ("description", "pvedeploy deployment 0190f3a2-7c4e-7a1b-9c3d-2e4f5a6b7c8d (notes)\n"),
        ("features", "nesting=1,keyctl=1"),
        ("hostname", "notes"),
        ("memory", "1024"),
        ("mp0", "local-lvm:vm-106-disk-1,mp=/srv/data,backup=1,size=8G"),
        ("nameserver", "10.0.0.53"),
        ("net0", "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:5D:6E:7F,ip=10.0.0.6/24,gw=10.0.0.1,type=veth"),
        ("onboot", "1"),
        ("ostype", "debian"),
        ("rootfs", "local-lvm:vm-106-disk-0,size=8G"),
        ("swap", "512"),
        ("tags", "pvedeploy;pvedeploy-0190f3a2"),
        ("unprivileged", "1"),
    ])
}

/// The smallest container: one core, 512 MiB, no swap, DHCP, no features — no `cpu`/`memory`/`features` blocks.
fn ct_defaults() -> BTreeMap<String, String> {
    map(&[
        ("arch", "amd64"),
        ("cores", "1"),
        ("hostname", "notes"),
        ("memory", "512"),
        ("net0", "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:5D:6E:7F,ip=dhcp,type=veth"),
        ("ostype", "debian"),
        ("rootfs", "local:106/vm-106-disk-0.raw,size=4G"),
        ("swap", "0"),
        ("unprivileged", "1"),
    ])
}

fn plan_of(kind: GuestType, vmid: u32, config: &BTreeMap<String, String>, running: bool) -> (Plan, String) {
    let name = if kind == GuestType::Vm { "shop" } else { "notes" };
    let node = NodeName::parse("pve1").unwrap();
    let guest = LiveGuest::from_config(&deployment(name, kind, vmid), node, VmId::new(vmid.into()).unwrap(), config, running, &origin());
    let files = render(&guest, "https://pve.example:8006").unwrap();
    let main = files.iter().find(|f| f.path == "main.tf").unwrap().content.clone();
    let imported = Imported { kind, node: "pve1", vmid, config, running };
    (after_import(&imported, &main).unwrap_or_else(|e| panic!("{e}\n{main}")), main)
}

#[test]
fn every_vm_shape_plans_clean_after_an_import() {
    for (what, config) in [("linked clone", vm_linked()), ("UEFI full clone with a second disk", vm_uefi())] {
        for running in [true, false] {
            let (plan, main) = plan_of(GuestType::Vm, 105, &config, running);
            assert!(plan.is_clean(), "{what}: {:#?}\n{main}", plan.changes);
        }
    }
}

#[test]
fn every_container_shape_plans_only_the_providers_timeout_defaults() {
    for (what, config) in [("static with a mount point", ct_static()), ("all defaults", ct_defaults())] {
        let (plan, main) = plan_of(GuestType::Lxc, 106, &config, false);
        assert!(plan.beyond_container_timeouts().is_empty(), "{what}: {:#?}\n{main}", plan.changes);
        let mut timeouts: Vec<&str> = plan.changes.iter().map(|c| c.path.as_str()).collect();
        timeouts.sort();
        assert_eq!(timeouts, ["timeout_clone", "timeout_create", "timeout_delete", "timeout_start", "timeout_update"], "{what}");
        assert!(!plan.replaces());
    }
}

#[test]
fn the_export_writes_what_the_real_template_has() {
    let (_, main) = plan_of(GuestType::Vm, 105, &vm_uefi(), true);
    expect_test::expect_file!["../../../hcl-export/examples/vm-uefi/main.tf"].assert_eq(&main);
    let words = main.split_whitespace().collect::<Vec<_>>().join(" ");
    for line in [
        "bios = \"ovmf\"",
        "machine = \"q35\"",
        "type = \"x86-64-v2-AES\"",
        "flags = [\"+aes\", \"-pcid\"]",
        "interface = \"scsi1\"",
        "size = 10 iothread = true",
        "pre_enrolled_keys = true",
        "floating = 1024",
    ] {
        assert!(words.contains(line), "missing `{line}`:\n{main}");
    }
    assert!(!main.contains("clone {"), "{main}");
    let (_, main) = plan_of(GuestType::Lxc, 106, &ct_static(), false);
    expect_test::expect_file!["../../../hcl-export/examples/lxc-mount-point/main.tf"].assert_eq(&main);
    assert!(main.contains("mount_point {") && main.contains("ignore_changes = [operating_system]") && !main.contains("vm_id ="), "{main}");
}

#[test]
fn the_export_before_the_model_is_caught() {
    let imported = |kind, vmid, config| Imported { kind, node: "pve1", vmid, config, running: true };
    let vm = vm_linked();
    let plan = after_import(&imported(GuestType::Vm, 105, &vm), include_str!("fixtures/vm-before.tf")).unwrap();
    let paths: Vec<&str> = plan.changes.iter().map(|c| c.path.as_str()).collect();
    assert!(plan.replaces(), "{paths:?}");
    for expected in ["clone.#", "initialization.0.user_account.#"] {
        assert!(paths.contains(&expected), "{expected} in {paths:?}");
    }
    // PVE returns a container's description with a trailing newline (pve-container LXC/Config.pm:1175).
    let mut ct = lxc_config();
    ct.insert("description".into(), format!("{}\n", ct["description"]));
    let plan = after_import(&Imported { running: false, ..imported(GuestType::Lxc, 106, &ct) }, include_str!("fixtures/lxc-before.tf")).unwrap();
    let paths: Vec<&str> = plan.changes.iter().map(|c| c.path.as_str()).collect();
    assert!(plan.changes.iter().any(|c| c.path == "operating_system.0.template_file_id" && c.replace), "{paths:?}");
    for expected in ["vm_id", "cpu.#"] {
        assert!(paths.contains(&expected), "{expected} in {paths:?}");
    }
}

#[test]
fn a_change_on_proxmox_after_the_export_shows_in_the_plan() {
    let (_, main) = plan_of(GuestType::Vm, 105, &vm_uefi(), true);
    let mut changed = vm_uefi();
    changed.insert("cpu".into(), "host".into());
    changed.insert("scsi1".into(), "local:105/vm-105-disk-3.qcow2,discard=on,ssd=1,backup=0,size=40G".into());
    let plan = after_import(&Imported { kind: GuestType::Vm, node: "pve1", vmid: 105, config: &changed, running: true }, &main).unwrap();
    let mut paths: Vec<&str> = plan.changes.iter().map(|c| c.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["cpu.0.flags", "cpu.0.type", "disk.1.size"], "{:#?}", plan.changes);
}

#[test]
fn the_model_refuses_what_it_does_not_know() {
    let config = vm_linked();
    let imported = Imported { kind: GuestType::Vm, node: "pve1", vmid: 105, config: &config, running: true };
    let unknown = "resource \"proxmox_virtual_environment_vm\" \"shop\" {\n  node_name = \"pve1\"\n  cpu {\n    threads = 2\n  }\n}\n";
    assert_eq!(after_import(&imported, unknown), Err(ModelError::UnknownAttribute("cpu.threads".into())));
    let shape = "resource \"proxmox_virtual_environment_vm\" \"shop\" {\n  node_name = \"pve1\"\n  cpu = 2\n}\n";
    assert!(matches!(after_import(&imported, shape), Err(ModelError::Shape { .. })));
    let mut gpu = vm_linked();
    gpu.insert("hostpci0".into(), "0000:01:00.0".into());
    gpu.insert("scsi0".into(), "local-lvm:vm-105-disk-0,size=10G,mbps_rd=100".into());
    let imported = Imported { config: &gpu, ..imported };
    assert_eq!(super::unmodelled_keys(GuestType::Vm, 105, &gpu), ["hostpci0", "scsi0: mbps_rd"]);
    assert_eq!(after_import(&imported, unknown), Err(ModelError::UnmodelledKey("hostpci0".into())));
}

/// Every entry of the model's tables agrees with the facts read from the provider's source: type, Computed,
/// ForceNew and Default where the facts state them plainly.
#[test]
fn the_tables_agree_with_the_facts_from_the_providers_source() {
    let facts: serde_json::Value = serde_json::from_str(FACTS).unwrap();
    for kind in [GuestType::Vm, GuestType::Lxc] {
        let attrs = &facts["resources"][schema::resource_type(kind)]["attributes"];
        for a in schema::table(kind) {
            let Some(f) = attrs.get(a.path) else {
                assert!(a.path.ends_with(".ipv4") || a.path.ends_with(".ipv6") || a.path.starts_with("startup."), "{} is not in the facts", a.path);
                continue;
            };
            let ty = f["type"].as_str().unwrap();
            let expected = match ty {
                t if t.starts_with("list(block)") => Ty::Block,
                t if t.starts_with("list(string)") => Ty::List,
                t if t.starts_with("int") => Ty::Int,
                t if t.starts_with("float") => Ty::Float,
                t if t.starts_with("bool") => Ty::Bool,
                _ => Ty::Str,
            };
            assert_eq!(a.ty, expected, "{}: type", a.path);
            assert_eq!(a.computed, f["computed"] == true, "{}: computed", a.path);
            if f["force_new"] == true {
                assert_eq!(a.replace, Replace::Always, "{}: ForceNew", a.path);
            } else {
                // Not ForceNew in the literal; a CustomizeDiff may still force it in some cases (noted in the facts).
                assert_ne!(a.replace, Replace::Always, "{}: not ForceNew", a.path);
            }
            let default = match &f["default"] {
                serde_json::Value::Bool(b) => Some(b.to_string()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                serde_json::Value::String(s) if !s.starts_with("DefaultFunc") => Some(s.clone()),
                _ => None,
            };
            if expected != Ty::Block {
                assert_eq!(a.default.map(str::to_owned), default, "{}: default", a.path);
            }
            let source = f["source"].as_str().or(f["read_source"].as_str()).unwrap_or("");
            assert!(source.contains(a.source.split(':').next().unwrap()), "{}: source {} vs {source}", a.path, a.source);
        }
    }
}
