//! The check's verdicts on facts of a fresh and a prepared cluster.

use super::*;

fn plan() -> Plan {
    Plan {
        token_id: "pvedeploy@pve!agent".into(),
        vm_template: 9000,
        lxc_template: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
        storage: "local-lvm".into(),
        bridge: "vmbr0".into(),
        vmid_first: 10000,
        vmid_last: 10009,
        full_clone: false,
        nodes: vec![],
        address_pool: None,
        node_ssh: Some(("local".into(), "/var/lib/vz/snippets".into())),
        pool: None,
        backup_storage: None,
    }
}

fn ready(major: u32) -> Facts {
    let nodes = ["pve1", "pve2"];
    let per_node = |f: &dyn Fn(&str) -> Read<bool>| nodes.iter().map(|n| (n.to_string(), f(n))).collect::<BTreeMap<_, _>>();
    let storages = vec![
        StorageFacts { id: "local".into(), kind: "dir".into(), content: vec!["iso".into(), "vztmpl".into(), "backup".into(), "snippets".into()], shared: false, enabled: true, active: true },
        StorageFacts { id: "local-lvm".into(), kind: "lvmthin".into(), content: vec!["images".into(), "rootdir".into()], shared: false, enabled: true, active: true },
    ];
    let template = TemplateFacts { node: "pve1".into(), is_template: true, cloud_init: true, agent: true, disk_storages: vec!["local-lvm".into()] };
    let mut f = Facts {
        version: Read::Got(format!("{major}.1.1")),
        privsep: Some(true),
        roles: Read::Got(BTreeMap::new()),
        nodes: Read::Got(nodes.iter().map(|n| (n.to_string(), true)).collect()),
        template: Read::Got(Some(template)),
        permissions: BTreeMap::new(),
        storages: nodes.iter().map(|n| (n.to_string(), Read::Got(storages.clone()))).collect(),
        lxc_template: per_node(&|_| Read::Got(true)),
        bridges: nodes.iter().map(|n| (n.to_string(), Read::Got(vec!["vmbr0".to_string()]))).collect(),
        node_ssh: Some(nodes.iter().map(|n| (n.to_string(), Ok(()))).collect()),
        guests: Read::Got(vec![]),
    };
    let all: BTreeSet<String> = privileges::role_privileges(major).iter().map(|p| p.to_string()).collect();
    for need in privileges::needs(major, &plan(), &["pve1".into(), "pve2".into()], &["local-lvm".into()]) {
        f.permissions.insert(need.path, Read::Got(all.clone()));
    }
    f
}

#[test]
fn a_prepared_cluster_is_ready_with_one_warning_for_a_local_template() {
    let r = evaluate(&plan(), &ready(9));
    assert_eq!(r.exit_code(), 0, "{}", r.render());
    let warnings: Vec<&Item> = r.items.iter().filter(|i| i.verdict == Verdict::Warning).collect();
    assert_eq!(warnings.len(), 1, "{}", r.render());
    assert!(warnings[0].text.contains("can only be placed on pve1"));
}

#[test]
fn a_missing_privilege_is_named_with_the_pveum_command_per_major() {
    for (major, agent) in [(9, "VM.GuestAgent.Audit"), (8, "VM.Monitor")] {
        let mut f = ready(major);
        f.roles = Read::Got(BTreeMap::from([("PVEDeploy".to_string(), vec!["VM.Audit".to_string()])]));
        if let Some(Read::Got(have)) = f.permissions.get_mut("/vms/10000") {
            have.remove(agent);
        }
        let r = evaluate(&plan(), &f);
        assert_eq!(r.exit_code(), 1);
        let item = r.items.iter().find(|i| i.verdict == Verdict::Problem).expect("a problem");
        assert!(item.text.contains(agent) && item.text.contains("/vms/10000"), "{}", item.text);
        let fix = item.fix.as_deref().unwrap_or_default();
        assert!(fix.starts_with("pveum role modify PVEDeploy --append 1 --privs \"") && fix.contains(agent) && fix.contains("pveum acl modify /vms --roles PVEDeploy"), "{fix}");
    }
}

#[test]
fn what_blocks_which_deployments() {
    let mut f = ready(9);
    f.template = Read::Got(None);
    f.node_ssh = None;
    for v in f.lxc_template.values_mut() {
        *v = Read::Got(false);
    }
    let r = evaluate(&plan(), &f);
    assert_eq!(r.exit_code(), 1);
    assert_eq!(r.refusal(GuestType::Vm).map(|i| i.check), Some("vm_template"));
    assert_eq!(r.refusal(GuestType::Lxc).map(|i| i.check), Some("lxc_template"));
}

#[test]
fn unread_facts_make_the_check_unchecked() {
    let mut f = ready(9);
    f.version = Read::Failed("no answer within 20 s".into());
    let r = evaluate(&plan(), &f);
    assert_eq!((r.exit_code(), r.state()), (2, "unchecked"));
}

#[test]
fn backups_need_their_storage_content_type_and_privileges() {
    let with_backups = Plan { backup_storage: Some("local".into()), ..plan() };
    // The ready cluster's role has neither VM.Backup nor Datastore.Allocate: both are named, with the fix.
    let r = evaluate(&with_backups, &ready(9));
    assert_eq!(r.exit_code(), 1, "{}", r.render());
    let problems: Vec<&Item> = r.items.iter().filter(|i| i.verdict == Verdict::Problem).collect();
    assert!(problems.iter().any(|i| i.text.contains("VM.Backup") && i.text.contains("/vms/10000")), "{}", r.render());
    let storage = problems.iter().find(|i| i.text.contains("/storage/local ")).expect("the backup storage's privileges");
    assert!(storage.text.contains("Datastore.Allocate") && storage.fix.as_deref().unwrap_or_default().contains("pveum acl modify /storage/local"), "{}", r.render());
    // Granted, and the storage without content `backup`: that alone is the problem.
    let mut f = ready(9);
    for need in privileges::needs(9, &with_backups, &["pve1".into(), "pve2".into()], &["local-lvm".into()]) {
        f.permissions.insert(need.path, Read::Got(need.privileges.iter().map(|p| p.to_string()).chain(privileges::role_privileges(9).iter().map(|p| p.to_string())).collect()));
    }
    assert_eq!(evaluate(&with_backups, &f).exit_code(), 0, "{}", evaluate(&with_backups, &f).render());
    for list in f.storages.values_mut() {
        if let Read::Got(l) = list {
            l.iter_mut().filter(|s| s.id == "local").for_each(|s| s.content.retain(|c| c != "backup"));
        }
    }
    let r = evaluate(&with_backups, &f);
    let problems: Vec<&Item> = r.items.iter().filter(|i| i.verdict == Verdict::Problem).collect();
    assert_eq!(problems.len(), 1, "{}", r.render());
    assert!(problems[0].text.contains("storage local lacks content type backup (for backups)") && problems[0].fix.as_deref().unwrap_or_default().contains("pvesm set local --content"), "{}", r.render());
}

#[test]
fn a_pbs_backup_storage_is_checked_like_a_directory_and_must_be_enabled_and_active() {
    let with_pbs = Plan { backup_storage: Some("pbs".into()), ..plan() };
    let mut f = ready(9);
    for need in privileges::needs(9, &with_pbs, &["pve1".into(), "pve2".into()], &["local-lvm".into()]) {
        f.permissions.insert(need.path, Read::Got(need.privileges.iter().map(|p| p.to_string()).chain(privileges::role_privileges(9).iter().map(|p| p.to_string())).collect()));
    }
    assert!(privileges::needs(9, &with_pbs, &["pve1".into()], &[]).iter().any(|n| n.path == "/storage/pbs" && n.privileges.contains(&"Datastore.Allocate") && n.privileges.contains(&"Datastore.AllocateSpace")));
    let pbs = StorageFacts { id: "pbs".into(), kind: "pbs".into(), content: vec!["backup".into()], shared: true, enabled: true, active: true };
    let set = |f: &mut Facts, on: &str, s: Option<StorageFacts>| {
        if let Some(Read::Got(l)) = f.storages.get_mut(on) {
            l.retain(|x| x.id != "pbs");
            l.extend(s);
        }
    };
    // Missing on the nodes: named per node.
    let r = evaluate(&with_pbs, &f);
    assert!(r.items.iter().any(|i| i.verdict == Verdict::Problem && i.text.contains("storage pbs (for backups) is not available on pve1")), "{}", r.render());
    // Present everywhere: ready, and the line says what it is.
    set(&mut f, "pve1", Some(pbs.clone()));
    set(&mut f, "pve2", Some(pbs.clone()));
    let r = evaluate(&with_pbs, &f);
    assert_eq!(r.exit_code(), 0, "{}", r.render());
    assert!(r.items.iter().any(|i| i.check == "storage" && i.text.contains("pbs:backup") && i.text.contains("backups to pbs (Proxmox Backup Server, shared by the nodes)")), "{}", r.render());
    // Without content `backup`, disabled, or not reachable from one node: a problem each, with the fix.
    set(&mut f, "pve2", Some(StorageFacts { content: vec![], ..pbs.clone() }));
    let r = evaluate(&with_pbs, &f);
    assert!(r.items.iter().any(|i| i.text.contains("storage pbs lacks content type backup (for backups)")), "{}", r.render());
    set(&mut f, "pve2", Some(StorageFacts { enabled: false, ..pbs.clone() }));
    let r = evaluate(&with_pbs, &f);
    assert!(r.items.iter().any(|i| i.verdict == Verdict::Problem && i.text.contains("backup storage pbs is disabled on pve2") && i.fix.as_deref().unwrap_or_default().contains("pvesm set pbs --disable 0")), "{}", r.render());
    set(&mut f, "pve2", Some(StorageFacts { active: false, ..pbs.clone() }));
    let r = evaluate(&with_pbs, &f);
    let inactive = r.items.iter().find(|i| i.text.contains("backup storage pbs is not active on pve2")).expect(&r.render());
    assert!(inactive.text.contains("Proxmox Backup Server") && inactive.fix.as_deref().unwrap_or_default().contains("fingerprint"), "{}", r.render());
    assert_eq!(r.exit_code(), 1);
}
