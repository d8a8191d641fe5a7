//! PVE's privileges and built-in roles per major release, generated the way pve-access-control's
//! `create_roles` does (acl `src/PVE/AccessControl.pm:1057-1204`; PVE 8: branch stable-bookworm, same
//! lines): privilege groups with `root`, `admin`, `user` and `audit` members.

use std::collections::{BTreeMap, BTreeSet};

/// One privilege group: (category, root, admin, user, audit).
type Group = (&'static str, &'static [&'static str], &'static [&'static str], &'static [&'static str], &'static [&'static str]);

/// The VM group on PVE 9: `VM.GuestAgent.*` (acl 922f710, 9.0.2) and `VM.Replicate` (acl 5f7544f) added,
/// `VM.Monitor` dropped (acl 0706945).
const VM9: Group = (
    "VM",
    &[],
    &[
        "VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network", "VM.Config.HWType", "VM.Config.Options",
        "VM.Allocate", "VM.Clone", "VM.GuestAgent.Unrestricted", "VM.Migrate", "VM.Replicate", "VM.Snapshot", "VM.Snapshot.Rollback",
    ],
    &["VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup", "VM.GuestAgent.FileRead", "VM.GuestAgent.FileSystemMgmt", "VM.GuestAgent.FileWrite", "VM.PowerMgmt"],
    &["VM.Audit", "VM.GuestAgent.Audit"],
);

/// The VM group on PVE 8 (acl8 `src/PVE/AccessControl.pm:1057-1084`): `VM.Monitor`, no agent privileges.
const VM8: Group = (
    "VM",
    &[],
    &[
        "VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network", "VM.Config.HWType", "VM.Config.Options",
        "VM.Allocate", "VM.Clone", "VM.Migrate", "VM.Monitor", "VM.Snapshot", "VM.Snapshot.Rollback",
    ],
    &["VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup", "VM.PowerMgmt"],
    &["VM.Audit"],
);

/// The groups both majors share (identical in 8 and 9).
const OTHERS: &[Group] = &[
    ("Sys", &["Sys.PowerMgmt", "Sys.Modify", "Sys.Incoming", "Sys.AccessNetwork"], &["Sys.Console", "Sys.Syslog"], &[], &["Sys.Audit"]),
    ("Datastore", &[], &["Datastore.Allocate", "Datastore.AllocateTemplate"], &["Datastore.AllocateSpace"], &["Datastore.Audit"]),
    ("SDN", &[], &["SDN.Allocate", "SDN.Audit"], &["SDN.Use"], &["SDN.Audit"]),
    ("User", &["Realm.Allocate"], &["User.Modify", "Group.Allocate", "Realm.AllocateUser"], &[], &[]),
    ("Pool", &[], &["Pool.Allocate"], &["Pool.Audit"], &["Pool.Audit"]),
    ("Mapping", &[], &["Mapping.Modify"], &["Mapping.Use"], &["Mapping.Audit"]),
];

/// Every valid privilege of `major` (`Permissions.Modify` is in no group).
pub fn valid_privileges(major: u8) -> BTreeSet<String> {
    let mut out = BTreeSet::from(["Permissions.Modify".to_string()]);
    for (_, root, admin, user, audit) in groups(major) {
        out.extend(root.iter().chain(admin.iter()).chain(user.iter()).chain(audit.iter()).map(|p| p.to_string()));
    }
    out
}

fn groups(major: u8) -> Vec<Group> {
    let mut g = vec![if major >= 9 { VM9 } else { VM8 }];
    g.extend_from_slice(OTHERS);
    g
}

/// The built-in roles (`special` in `GET /access/roles`), as `create_roles` builds them.
pub fn builtin_roles(major: u8) -> BTreeMap<String, BTreeSet<String>> {
    let mut roles: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    roles.insert("NoAccess".into(), BTreeSet::new());
    roles.insert("Administrator".into(), valid_privileges(major));
    for (cat, _, admin, user, audit) in groups(major) {
        for p in admin.iter().chain(user.iter()).chain(audit.iter()) {
            roles.entry(format!("PVE{cat}Admin")).or_default().insert(p.to_string());
            roles.entry("PVEAdmin".into()).or_default().insert(p.to_string());
        }
        if !user.is_empty() {
            for p in user.iter().chain(audit.iter()) {
                roles.entry(format!("PVE{cat}User")).or_default().insert(p.to_string());
            }
        }
        for p in audit {
            roles.entry("PVEAuditor".into()).or_default().insert(p.to_string());
        }
    }
    if let Some(admin) = roles.get_mut("PVEAdmin") {
        admin.remove("Mapping.Modify");
    }
    roles.insert("PVETemplateUser".into(), BTreeSet::from(["VM.Clone".to_string(), "VM.Audit".to_string()]));
    roles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_match_stock_facts() {
        let r9 = builtin_roles(9);
        let vmuser: Vec<&str> = r9["PVEVMUser"].iter().map(String::as_str).collect();
        assert!(vmuser.contains(&"VM.GuestAgent.Audit") && vmuser.contains(&"VM.PowerMgmt") && !vmuser.contains(&"VM.Allocate"));
        assert!(r9["PVEAuditor"].contains("VM.GuestAgent.Audit") && !r9["PVEAdmin"].contains("Mapping.Modify"));
        assert!(!r9["PVEAdmin"].contains("Sys.Modify") && r9["Administrator"].contains("Sys.Modify"));
        let r8 = builtin_roles(8);
        assert!(!r8["PVEVMUser"].iter().any(|p| p.starts_with("VM.GuestAgent")) && r8["PVEVMAdmin"].contains("VM.Monitor"));
        assert!(!r8["PVEAuditor"].contains("VM.Monitor") && !valid_privileges(9).contains("VM.Monitor"));
        assert!(!r9.contains_key("PVESysUser") && r9["PVESysAdmin"].len() == 3);
    }
}
