//! Drift of one deployment from a live config, the export rendered from it and the export as written: clean, an
//! attribute changed on Proxmox (named, with its lines), files edited, removed or added by hand, a folder without
//! its manifest, and a guest or folder that could not be read (unreadable, never a difference).

use std::collections::BTreeMap;

use super::*;
use crate::core::deployment::{RawSpec, Spec};
use crate::core::limits::{Limits, RepoPolicy};
use crate::core::names::{NodeName, VmId};
use crate::export::hcl::render;
use crate::export::live::Origin;

fn deployment() -> Deployment {
    let raw = RawSpec {
        name: Some("shop".into()),
        repo_url: Some("https://github.com/o/r".into()),
        framework: Some("flask".into()),
        guest_type: Some("vm".into()),
        cpu: Some(2),
        memory_mib: Some(1024),
        disk_gb: Some(10),
        ..RawSpec::default()
    };
    let mut d = Deployment::new(Spec::parse(raw, &Limits::default(), &RepoPolicy::default()).unwrap(), 0);
    d.status = Status::Running;
    d.proxmox_node = Some(NodeName::parse("pve1").unwrap());
    d.proxmox_id = Some(VmId::new(105).unwrap());
    d
}

fn tags(d: &Deployment) -> Vec<String> {
    vec!["pvedeploy".into(), format!("pvedeploy-{}", d.id)]
}

/// The guest as Proxmox has it, with `changes` applied to its config.
fn live(d: &Deployment, changes: &[(&str, &str)]) -> (LiveGuest, Vec<ExportFile>) {
    let mut cfg: BTreeMap<String, String> = [
        ("cores", "2"),
        ("memory", "1024"),
        ("name", "shop"),
        ("description", "pvedeploy deployment (shop)"),
        ("net0", "virtio=BC:24:11:2A:3B:4C,bridge=vmbr0"),
        ("onboot", "1"),
        ("scsi0", "local-lvm:vm-105-disk-0,size=10G"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    cfg.insert("tags".into(), tags(d).join(";"));
    for (k, v) in changes {
        cfg.insert(k.to_string(), v.to_string());
    }
    let origin = Origin { vm_template: VmId::new(9000).unwrap(), full_clone: false, lxc_template: String::new() };
    let g = LiveGuest::from_config(d, NodeName::parse("pve1").unwrap(), VmId::new(105).unwrap(), &cfg, true, &origin);
    let files = render(&g, "https://pve.example:8006").unwrap();
    (g, files)
}

/// The export as pvedeploy wrote it from `g`, untouched since.
fn written(g: &LiveGuest, files: &[ExportFile]) -> ExportFiles {
    ExportFiles {
        summary: g.summary(),
        hashes: files.iter().map(|f| (f.path.clone(), f.sha256())).collect(),
        intact: files.iter().map(|f| (f.path.clone(), f.content.clone())).collect(),
        edited: vec![],
        removed: vec![],
        extra: vec![],
    }
}

fn present(g: LiveGuest, files: Vec<ExportFile>) -> LiveState {
    LiveState::Present { guest: Box::new(g), files }
}

fn fields(c: &Checked) -> Vec<&str> {
    c.differences.iter().map(|d| d.field.as_str()).collect()
}

#[test]
fn an_export_that_still_describes_the_guest_has_no_drift() {
    let d = deployment();
    let (g, files) = live(&d, &[]);
    let export = ExportState::Present(Box::new(written(&g, &files)));
    assert_eq!(compare(&d, &tags(&d), &present(g, files), &export), Checked::default());
}

#[test]
fn any_exported_attribute_changed_on_proxmox_is_named_with_its_lines() {
    let d = deployment();
    let (g, files) = live(&d, &[]);
    let export = ExportState::Present(Box::new(written(&g, &files)));
    let (g2, files2) = live(&d, &[("description", "changed in the UI"), ("onboot", "0")]);
    let c = compare(&d, &tags(&d), &present(g2, files2), &export);
    assert_eq!(fields(&c), ["live:main.tf"], "{c:#?}");
    let diff = &c.differences[0];
    assert!(diff.message.contains("main.tf of the export of shop no longer describes guest pve1/105 on Proxmox (changed: description, on_boot)"), "{}", diff.message);
    assert_eq!(diff.live.as_deref(), Some("description = \"changed in the UI\"\non_boot = false"));
    assert_eq!(diff.export.as_deref(), Some("description = \"pvedeploy deployment (shop)\"\non_boot = true"));
    assert!(c.unreadable.is_empty());
}

#[test]
fn a_changed_figure_keeps_its_own_difference_beside_the_file() {
    let d = deployment();
    let (g, files) = live(&d, &[]);
    let export = ExportState::Present(Box::new(written(&g, &files)));
    let (g2, files2) = live(&d, &[("memory", "2048")]);
    let c = compare(&d, &tags(&d), &present(g2, files2), &export);
    assert_eq!(fields(&c), ["live:main.tf", "memory_mib"], "{c:#?}");
    assert!(c.differences[0].message.contains("(changed: memory.dedicated)"), "{}", c.differences[0].message);
    assert_eq!((c.differences[0].live.as_deref(), c.differences[0].export.as_deref()), (Some("memory.dedicated = 2048"), Some("memory.dedicated = 1024")));
    assert_eq!((c.differences[1].store.as_deref(), c.differences[1].live.as_deref(), c.differences[1].export.as_deref()), (Some("1024"), Some("2048"), Some("1024")));
}

#[test]
fn files_edited_removed_or_added_by_hand_are_each_named() {
    let d = deployment();
    let (g, files) = live(&d, &[]);
    let mut w = written(&g, &files);
    w.intact.remove("main.tf");
    w.edited.push("main.tf".into());
    w.intact.remove("imports.tf");
    w.removed.push("imports.tf".into());
    w.extra = vec!["override.tf".into(), ".terraform/".into()];
    let (g2, files2) = live(&d, &[("description", "changed")]);
    let c = compare(&d, &tags(&d), &present(g2, files2), &ExportState::Present(Box::new(w)));
    assert_eq!(fields(&c), ["export:main.tf", "export:imports.tf", "export:override.tf", "export:.terraform/", "live:main.tf"], "{c:#?}");
    assert!(c.differences[2].message.contains("Terraform reads it with the export"), "{}", c.differences[2].message);
    assert!(!c.differences[3].message.contains("Terraform reads it"), "{}", c.differences[3].message);
    assert!(c.differences[4].message.contains("edited or removed too, so the changed attributes cannot be named"), "{}", c.differences[4].message);
}

#[test]
fn a_folder_without_its_manifest_is_reported_with_its_files() {
    let d = deployment();
    let (g, files) = live(&d, &[]);
    for (why, words) in [
        (NoManifest::Missing, "its manifest .pvedeploy-export.json was deleted"),
        (NoManifest::Unreadable("expected value at line 1".into()), "cannot be read (expected value at line 1)"),
        (NoManifest::OtherDeployment("other-id".into()), "names another deployment (other-id)"),
    ] {
        let export = ExportState::Unowned { files: vec!["main.tf".into(), "variables.tf".into()], why };
        let c = compare(&d, &tags(&d), &present(g.clone(), files.clone()), &export);
        assert_eq!(fields(&c), ["export"], "{c:#?}");
        let m = &c.differences[0].message;
        assert!(m.contains("holds main.tf, variables.tf but") && m.contains(words), "{m}");
    }
    let c = compare(&d, &tags(&d), &present(g, files), &ExportState::Missing);
    assert_eq!(fields(&c), ["export"]);
    assert!(c.differences[0].message.contains("is missing"));
}

#[test]
fn a_forgotten_guest_whose_export_remains_is_a_difference_and_without_one_is_none() {
    // The agent found the guest deleted and forgot it (no node, no VMID), the export folder still describes it.
    let d = deployment();
    let (g, files) = live(&d, &[]);
    let export = ExportState::Present(Box::new(written(&g, &files)));
    let mut forgotten = d.clone();
    forgotten.status = Status::Failed;
    (forgotten.proxmox_node, forgotten.proxmox_id) = (None, None);
    let c = compare(&forgotten, &tags(&d), &LiveState::Missing, &export);
    assert_eq!(fields(&c), ["guest"], "{c:#?}");
    let diff = &c.differences[0];
    assert_eq!((diff.store.as_deref(), diff.live.as_deref(), diff.export.as_deref()), (None, None, Some("pve1/105")));
    assert!(diff.message.contains("guest pve1/105 of shop no longer exists on Proxmox") && diff.message.contains("would create it again"), "{}", diff.message);
    // nothing recorded and nothing exported: nothing to say
    assert_eq!(compare(&forgotten, &tags(&d), &LiveState::Missing, &ExportState::Missing), Checked::default());
}

#[test]
fn what_cannot_be_read_is_unreadable_not_a_difference() {
    let d = deployment();
    let (g, files) = live(&d, &[]);
    let mut w = written(&g, &files);
    w.extra = vec!["stray.tf".into()];
    let c = compare(&d, &tags(&d), &LiveState::Unreadable("Proxmox VE gave no answer within 20 s".into()), &ExportState::Present(Box::new(w)));
    assert_eq!(fields(&c), ["export:stray.tf"], "what the folder shows is still reported: {c:#?}");
    assert_eq!(c.unreadable.len(), 1);
    let u = &c.unreadable[0];
    assert_eq!((u.deployment.as_str(), u.part, u.guest.as_str(), u.reason.as_str()), ("shop", Part::Guest, "pve1/105", "Proxmox VE gave no answer within 20 s"));

    let c = compare(&d, &tags(&d), &present(g, files), &ExportState::Unreadable("permission denied".into()));
    assert_eq!(c.unreadable.iter().map(|u| u.part).collect::<Vec<_>>(), [Part::Export]);
    assert!(c.differences.is_empty(), "the live guest agrees with the store: {c:#?}");
}

#[test]
fn the_line_diff_ignores_alignment_and_names_nested_attributes() {
    let old = "resource \"x\" \"y\" {\n  name = \"a\"\n  cpu {\n    cores   = 2\n    sockets = 1\n  }\n}\n";
    let new = "resource \"x\" \"y\" {\n  name = \"a\"\n  cpu {\n    cores = 4\n    sockets = 1\n  }\n}\n";
    let (removed, added) = changed_lines(old, new);
    assert_eq!((removed.clone(), added.clone()), (vec![3], vec![3]));
    assert_eq!(changed_names(old, &removed), ["cpu.cores"]);
    assert_eq!(changed_lines(old, &old.replace("sockets = 1", "sockets   = 1")), (vec![], vec![]));
}
