//! Snapshots of a VM's and a container's export (kept as the examples in `hcl-export/examples/`), determinism,
//! and every attribute and block checked against the provider's documented schema.

use std::collections::BTreeMap;

use expect_test::expect_file;

use super::{render, CONTAINER_RESOURCE, VM_RESOURCE};
use crate::core::deployment::{Deployment, DeploymentId, Framework, GuestType, Spec};
use crate::core::names::{AppName, GitRef, NodeName, VmId};
use crate::core::repo::RepoUrl;
use crate::core::status::Status;
use crate::export::live::{LiveGuest, Origin};
use crate::export::ExportFile;

const SCHEMA: &str = include_str!("../../../hcl-export/schema/bpg-proxmox-schema.json");
/// Provider arguments we write; the schema file covers resources only. Source: bpg/terraform-provider-proxmox `docs/index.md`.
const PROVIDER_ARGS: [&str; 2] = ["endpoint", "api_token"];

pub fn deployment(name: &str, kind: GuestType, vmid: u32) -> Deployment {
    Deployment {
        id: DeploymentId::parse("0190f3a2-7c4e-7a1b-9c3d-2e4f5a6b7c8d").unwrap(),
        spec: Spec {
            name: AppName::parse(name).unwrap(),
            guest_type: kind,
            framework: Framework::Flask,
            repo_url: RepoUrl::from_stored("https://github.com/octo/shop".into()),
            branch: GitRef::parse("main").unwrap(),
            cpu: 2,
            memory_mib: 2048,
            disk_gb: 10,
            node: None,
            auto_redeploy: true,
            health_path: crate::core::names::HealthPath::root(),
            start_command: None,
            persistent_paths: vec![],
            health_timeout_secs: 120,
            health_status: None,
            paths: vec![],
            deploy_tags: None,
            previews: false,
            previews_from_forks: false,
            preview_ttl_hours: 72,
        },
        status: Status::Installing,
        proxmox_id: Some(VmId::new(vmid.into()).unwrap()),
        proxmox_node: Some(NodeName::parse("pve1").unwrap()),
        ip_address: None,
        url: None,
        commit: None,
        error_message: None,
        terraform_output: None,
        created_at: 0,
        updated_at: 0,
        deployed_at: None,
        revision: 3,
    }
}

pub fn origin() -> Origin {
    Origin { vm_template: VmId::new(9000).unwrap(), full_clone: false, lxc_template: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into() }
}

pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A linked clone of the sandbox's template after provisioning, as `GET …/config` returns it.
pub fn vm_config() -> BTreeMap<String, String> {
    map(&[
        ("agent", "1"),
        ("boot", "order=scsi0"),
        ("cicustom", "user=local:snippets/shop-user.yaml"),
        ("ciuser", "deploy"),
        ("cores", "2"),
        ("description", "pvedeploy deployment 0190f3a2-7c4e-7a1b-9c3d-2e4f5a6b7c8d (shop)"),
        ("digest", "5b1c0e"),
        ("ide2", "local-lvm:vm-105-cloudinit,media=cdrom"),
        ("ipconfig0", "ip=dhcp"),
        ("memory", "2048"),
        ("name", "shop"),
        ("nameserver", "10.0.0.53 10.0.0.54"),
        ("net0", "virtio=BC:24:11:2A:3B:4C,bridge=vmbr0,firewall=1"),
        ("ostype", "l26"),
        ("scsi0", "local-lvm:base-9000-disk-0/vm-105-disk-0,size=10G"),
        ("scsihw", "virtio-scsi-pci"),
        ("serial0", "socket"),
        ("sshkeys", "ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIG%2Bk%2F0%3D%20pvedeploy%40agent%0A"),
        ("tags", "pvedeploy;pvedeploy-0190f3a2"),
        ("vga", "serial0"),
    ])
}

pub fn vm_guest() -> LiveGuest {
    let cfg = vm_config();
    LiveGuest::from_config(&deployment("shop", GuestType::Vm, 105), NodeName::parse("pve1").unwrap(), VmId::new(105).unwrap(), &cfg, true, &origin())
}

/// A container as the provisioner makes it, as `GET …/config` returns it.
pub fn lxc_config() -> BTreeMap<String, String> {
    map(&[
        ("arch", "amd64"),
        ("cores", "1"),
        ("description", "pvedeploy deployment 0190f3a2-7c4e-7a1b-9c3d-2e4f5a6b7c8d (notes)"),
        ("features", "nesting=1"),
        ("hostname", "notes"),
        ("memory", "1024"),
        ("net0", "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:5D:6E:7F,ip=dhcp,type=veth"),
        ("ostype", "debian"),
        ("rootfs", "local-lvm:vm-106-disk-0,size=8G"),
        ("swap", "512"),
        ("tags", "pvedeploy;pvedeploy-0190f3a2"),
        ("unprivileged", "1"),
    ])
}

pub fn lxc_guest() -> LiveGuest {
    let cfg = lxc_config();
    LiveGuest::from_config(&deployment("notes", GuestType::Lxc, 106), NodeName::parse("pve1").unwrap(), VmId::new(106).unwrap(), &cfg, false, &origin())
}

fn file<'a>(files: &'a [ExportFile], path: &str) -> &'a str {
    &files.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("{path} is generated")).content
}

#[test]
fn a_vm_export() {
    let files = render(&vm_guest(), "https://pve.example:8006").unwrap();
    expect_file!["../../../hcl-export/examples/vm/main.tf"].assert_eq(file(&files, "main.tf"));
    expect_file!["../../../hcl-export/examples/vm/variables.tf"].assert_eq(file(&files, "variables.tf"));
    expect_file!["../../../hcl-export/examples/vm/terraform.tfvars"].assert_eq(file(&files, "terraform.tfvars"));
    expect_file!["../../../hcl-export/examples/vm/imports.tf"].assert_eq(file(&files, "imports.tf"));
}

#[test]
fn an_lxc_export() {
    let files = render(&lxc_guest(), "https://pve.example:8006").unwrap();
    expect_file!["../../../hcl-export/examples/lxc/main.tf"].assert_eq(file(&files, "main.tf"));
    expect_file!["../../../hcl-export/examples/lxc/variables.tf"].assert_eq(file(&files, "variables.tf"));
    expect_file!["../../../hcl-export/examples/lxc/terraform.tfvars"].assert_eq(file(&files, "terraform.tfvars"));
    expect_file!["../../../hcl-export/examples/lxc/imports.tf"].assert_eq(file(&files, "imports.tf"));
}

#[test]
fn rendering_is_deterministic_and_keeps_secrets_out() {
    for g in [vm_guest(), lxc_guest()] {
        let a = render(&g, "https://pve.example:8006").unwrap();
        assert_eq!(a, render(&g.clone(), "https://pve.example:8006").unwrap(), "identical bytes on re-export");
        let tfvars = file(&a, "terraform.tfvars");
        assert!(!tfvars.contains("proxmox_api_token ") && !tfvars.contains("proxmox_api_token="), "{tfvars}");
        assert!(file(&a, "variables.tf").contains("sensitive   = true"));
    }
}

/// The provider's Read fills `user_account` from `ciuser`/`sshkeys` whether or not a `cicustom user=` snippet is
/// set (`vm.go:5133-5160`; only its docs claim the two conflict), so the export writes both.
#[test]
fn the_user_account_is_written_next_to_a_snippet_and_without_one() {
    let g = vm_guest();
    let main = file(&render(&g, "https://x:8006").unwrap(), "main.tf").to_owned();
    assert!(main.contains("user_data_file_id = \"local:snippets/shop-user.yaml\"") && main.contains("user_account {"), "{main}");
    let mut g2 = g.clone();
    if let crate::export::live::Kind::Vm(vm) = &mut g2.kind {
        vm.cloud_init.as_mut().unwrap().user_data_file_id = None;
    }
    let main = file(&render(&g2, "https://x:8006").unwrap(), "main.tf").to_owned();
    assert!(main.contains("username = \"deploy\"") && main.contains("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG+k/0= pvedeploy@agent"), "{main}");
    assert!(!main.contains("user_data_file_id"), "{main}");
}

/// Terraform's own meta-arguments, valid in every resource block (not part of a provider's schema).
const META_BLOCKS: [&str; 1] = ["lifecycle"];

/// Walks every attribute and block of `body` against the schema's `arguments` tree.
fn check_against(body: &::hcl::Body, args: &serde_json::Value, at: &str, problems: &mut Vec<String>) {
    for attr in body.attributes() {
        match args.get(attr.key()) {
            Some(a) if a.get("block").and_then(|b| b.as_bool()) != Some(true) => {}
            Some(_) => problems.push(format!("{at}.{} is a block in the schema, written as an attribute", attr.key())),
            None => problems.push(format!("{at}.{} is not in the schema", attr.key())),
        }
    }
    for block in body.blocks().filter(|b| !(META_BLOCKS.contains(&b.identifier()) && at.starts_with("proxmox_") && !at.contains('.'))) {
        let name = block.identifier();
        match args.get(name) {
            Some(a) if a.get("block").and_then(|b| b.as_bool()) == Some(true) => check_against(block.body(), &a["attributes"], &format!("{at}.{name}"), problems),
            Some(_) => problems.push(format!("{at}.{name} is an attribute in the schema, written as a block")),
            None => problems.push(format!("{at}.{name} is not in the schema")),
        }
    }
}

/// Parses `main.tf` back and returns every attribute or block that the provider does not document.
pub fn schema_problems(main_tf: &str) -> Vec<String> {
    let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
    let body = ::hcl::parse(main_tf).expect("main.tf parses");
    let mut problems = Vec::new();
    for block in body.blocks() {
        match block.identifier() {
            "resource" => {
                let kind = block.labels()[0].as_str();
                let args = &schema[kind]["arguments"];
                assert!(args.is_object(), "{kind} is in the schema file");
                check_against(block.body(), args, kind, &mut problems);
            }
            "provider" => {
                for attr in block.body().attributes() {
                    if !PROVIDER_ARGS.contains(&attr.key()) {
                        problems.push(format!("provider.{} is not a documented provider argument", attr.key()));
                    }
                }
            }
            _ => {}
        }
    }
    problems
}

#[test]
fn every_attribute_and_block_is_in_the_provider_schema() {
    for (g, kind) in [(vm_guest(), VM_RESOURCE), (lxc_guest(), CONTAINER_RESOURCE)] {
        let main = file(&render(&g, "https://x:8006").unwrap(), "main.tf").to_owned();
        assert!(main.contains(kind));
        let problems = schema_problems(&main);
        assert!(problems.is_empty(), "{problems:#?}\n{main}");
    }
    // The checker does catch what the provider lacks.
    let bad = "resource \"proxmox_virtual_environment_vm\" \"x\" {\n  memory_mib = 1\n  cpu {\n    threads = 2\n  }\n}\n";
    assert_eq!(schema_problems(bad).len(), 2);
}
