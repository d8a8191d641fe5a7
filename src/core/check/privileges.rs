//! The Proxmox VE privileges the agent needs, per path it touches and per PVE major, and the `pveum`
//! commands that grant them. Sources: sim/STOCK-FACTS.md §3 (qemu-server `API2/Qemu.pm`, pve-container
//! `API2/LXC.pm`, pve-manager `API2/Cluster.pm`, pve-access-control `AccessControl.pm`).

use super::Plan;

/// The role name the README tells operators to create.
pub const ROLE: &str = "PVEDeploy";

/// The guest-agent privilege: `VM.GuestAgent.Audit` on PVE 9 (qemu-server `API2/Qemu/Agent.pm:25-118`),
/// `VM.Monitor` on PVE 8 (qs8 `API2/Qemu/Agent.pm:147-148`), which PVE 9 no longer has (acl 0706945).
pub fn agent_privilege(major: u32) -> &'static str {
    if major >= 9 {
        "VM.GuestAgent.Audit"
    } else {
        "VM.Monitor"
    }
}

/// Every privilege of the README's role for `major`, sorted.
pub fn role_privileges(major: u32) -> Vec<&'static str> {
    let mut all: Vec<&'static str> = GUEST.iter().copied().chain([agent_privilege(major)]).chain(["VM.Clone", "Datastore.AllocateSpace", "Datastore.Audit", "SDN.Use", "Sys.Audit"]).collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// What the agent does on a guest it made: create or clone (`VM.Allocate`), configure (`VM.Config.*` per option:
/// cores, memory, disks, `net0`/`ipconfig0`/hostname, cloud-init keys, name/tags/description/agent), read it
/// (`VM.Audit`), start/stop (`VM.PowerMgmt`), snapshot and roll back, remove (`VM.Allocate`).
const GUEST: &[&str] = &[
    "VM.Allocate",
    "VM.Audit",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.PowerMgmt",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

/// One path and what the agent needs there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// The ACL path PVE checks (`/vms/10000`, `/storage/local-lvm`, `/sdn/zones/localnetwork/vmbr0`).
    pub path: String,
    pub privileges: Vec<&'static str>,
    /// What for, in words.
    pub why: String,
    /// Where to grant the role so that this path (and its siblings) get it.
    pub grant_on: String,
    /// Whether the grant should propagate below `grant_on`.
    pub propagate: bool,
}

/// Every path the agent touches with what it needs there, for a cluster of `major` whose VM template keeps its
/// disks on `template_storages` (linked clones allocate there: qemu-server `Qemu.pm:282-323`).
pub fn needs(major: u32, plan: &Plan, nodes: &[String], template_storages: &[String]) -> Vec<Need> {
    let mut out = vec![Need {
        path: "/".into(),
        privileges: vec!["Sys.Audit"],
        why: "read the cluster's status (GET /cluster/status; pve-manager API2/Cluster.pm:866-873)".into(),
        grant_on: "/".into(),
        propagate: false,
    }];
    for n in nodes {
        out.push(Need {
            path: format!("/nodes/{n}"),
            privileges: vec!["Sys.Audit"],
            why: "read the node's free CPU and memory for placement".into(),
            grant_on: "/nodes".into(),
            propagate: true,
        });
    }
    out.push(Need {
        path: format!("/vms/{}", plan.vm_template),
        privileges: vec!["VM.Audit", "VM.Clone"],
        why: "read and clone the VM template".into(),
        grant_on: format!("/vms/{}", plan.vm_template),
        propagate: false,
    });
    let mut guest: Vec<&'static str> = GUEST.to_vec();
    guest.push(agent_privilege(major));
    if plan.backup_storage.is_some() {
        // vzdump per guest, deleting its backups, and restoring over it with `force` (PVE 9.1 API schema's
        // permission blocks for `POST /nodes/{node}/vzdump`, `DELETE …/content/{volume}`, `POST …/lxc|qemu`).
        guest.push("VM.Backup");
    }
    guest.sort_unstable();
    let (path, why) = match &plan.pool {
        // Create and clone check VM.Allocate on the pool when `pool` is given, and pool roles apply to members.
        Some(pool) => (format!("/pool/{pool}"), format!("create its guests in pool {pool} and manage them there")),
        None => (format!("/vms/{}", plan.vmid_first), "create, configure, start, stop, snapshot and remove its guests".to_string()),
    };
    let grant_on = plan.pool.as_ref().map_or_else(|| "/vms".to_string(), |p| format!("/pool/{p}"));
    out.push(Need { path, privileges: guest, why, grant_on, propagate: true });
    let mut storage_need = |storage: &str, privileges: Vec<&'static str>, why: String| {
        let path = format!("/storage/{storage}");
        match out.iter_mut().find(|n| n.path == path) {
            Some(n) => {
                for p in privileges {
                    if !n.privileges.contains(&p) {
                        n.privileges.push(p);
                    }
                }
                n.privileges.sort_unstable();
                n.why = format!("{}; {why}", n.why);
            }
            None => out.push(Need { grant_on: path.clone(), path, privileges, why, propagate: false }),
        }
    };
    storage_need(&plan.storage, vec!["Datastore.AllocateSpace", "Datastore.Audit"], "allocate full clones and container root disks".into());
    if !plan.full_clone {
        for s in template_storages {
            storage_need(s, vec!["Datastore.AllocateSpace"], "allocate linked clones beside the template's disks".into());
        }
    }
    if let Some((s, _)) = plan.lxc_template.split_once(':') {
        storage_need(s, vec!["Datastore.Audit"], "find the container template on each node".into());
    }
    if let Some(s) = &plan.backup_storage {
        // `Datastore.Allocate` because the agent sends `prune-backups=keep-all=1` (the schema's vzdump permissions).
        storage_need(s, vec!["Datastore.Allocate", "Datastore.AllocateSpace"], "write backups (vzdump with prune-backups) and delete them".into());
    }
    let bridge = format!("/sdn/zones/localnetwork/{}", plan.bridge);
    out.push(Need {
        path: bridge.clone(),
        privileges: vec!["SDN.Use"],
        why: format!("attach guests to bridge {} (pve-guest-common GuestHelpers.pm:397-421)", plan.bridge),
        grant_on: bridge,
        propagate: false,
    });
    out
}

/// The commands that grant `missing` on `need.path` to the configured token (and its user, which a
/// privilege-separated token needs too): the role created or extended, then granted where `need` says.
/// `role` is the README role's current privileges when it exists.
pub fn fix(major: u32, token_id: &str, need: &Need, missing: &[String], role: Option<&[String]>) -> String {
    let user = token_id.split_once('!').map_or(token_id, |(u, _)| u);
    let role_cmd = match role {
        None => format!("pveum role add {ROLE} --privs \"{}\"", role_privileges(major).join(" ")),
        Some(have) => {
            let lacking: Vec<&str> = missing.iter().map(String::as_str).filter(|m| !have.iter().any(|h| h == m)).collect();
            if lacking.is_empty() {
                String::new()
            } else {
                format!("pveum role modify {ROLE} --append 1 --privs \"{}\"", lacking.join(" "))
            }
        }
    };
    let acl = format!(
        "pveum acl modify {} --roles {ROLE} --users {user} --tokens '{token_id}'{}",
        need.grant_on,
        if need.propagate { "" } else { " --propagate 0" }
    );
    if role_cmd.is_empty() {
        acl
    } else {
        format!("{role_cmd} && {acl}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_differs_between_majors() {
        assert!(role_privileges(9).contains(&"VM.GuestAgent.Audit") && !role_privileges(9).contains(&"VM.Monitor"));
        assert!(role_privileges(8).contains(&"VM.Monitor") && !role_privileges(8).contains(&"VM.GuestAgent.Audit"));
        assert_eq!(role_privileges(9).len(), 17);
    }

    #[test]
    fn fixes_create_or_extend_the_role_and_grant_it() {
        let need = Need { path: "/vms/10000".into(), privileges: vec!["VM.Snapshot"], why: String::new(), grant_on: "/vms".into(), propagate: true };
        let f = fix(9, "pvedeploy@pve!agent", &need, &["VM.Snapshot".into()], None);
        assert!(f.starts_with("pveum role add PVEDeploy --privs \"Datastore.AllocateSpace") && f.ends_with("pveum acl modify /vms --roles PVEDeploy --users pvedeploy@pve --tokens 'pvedeploy@pve!agent'"), "{f}");
        let f = fix(9, "pvedeploy@pve!agent", &need, &["VM.Snapshot".into()], Some(&["VM.Audit".into()]));
        assert!(f.starts_with("pveum role modify PVEDeploy --append 1 --privs \"VM.Snapshot\" && "), "{f}");
        let f = fix(9, "pvedeploy@pve!agent", &need, &["VM.Snapshot".into()], Some(&["VM.Snapshot".into()]));
        assert!(f.starts_with("pveum acl modify"), "{f}");
    }
}
