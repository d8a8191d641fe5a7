//! The privilege checks PVE makes in code besides the schema's, and pool membership, seen through a
//! privilege-separated token whose ACL is narrowed to a pool: a guest created or cloned with `pool` joins it and
//! leaves it when destroyed; a missing `Datastore.AllocateSpace`, `SDN.Use` or per-option privilege is a 403 in
//! PVE's words; `/cluster/resources` shows only what the token may audit.

mod common;

use common::{enc, Reply, Sim};
use serde_json::Value;

const TOKEN: &str = "deploy@pve!agent";
const TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";

/// The deploy token's calls.
struct Agent<'a> {
    sim: &'a Sim,
    auth: String,
}

impl Agent<'_> {
    async fn form(&self, method: &str, path: &str, params: &[(&str, &str)]) -> Reply {
        let body = params.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&");
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let req = self.sim.client.request(m, self.sim.url(path)).header("Authorization", &self.auth).header("Content-Type", "application/x-www-form-urlencoded").body(body);
        self.sim.send(req).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.sim.send(self.sim.client.get(self.sim.url(path)).header("Authorization", &self.auth)).await
    }

    /// A task-returning call that must be accepted; its exit status (polled with the operator's token).
    async fn task(&self, method: &str, path: &str, params: &[(&str, &str)]) -> String {
        let r = self.form(method, path, params).await;
        assert_eq!(r.status, 200, "{method} {path} {params:?}: {r:?}");
        self.sim.wait("pve1", r.data()).await
    }

    /// The token's privileges on `path` (`GET /access/permissions`).
    async fn privileges(&self, path: &str) -> Vec<String> {
        let r = self.get(&format!("/access/permissions?path={}", enc(path))).await;
        assert_eq!(r.status, 200, "{r:?}");
        r.data()[path].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
    }
}

/// As an operator on the sandbox cluster: pool `apps`, a role with what a deploy agent needs on its guests, user
/// `deploy@pve` and its privilege-separated token, both granted the role on the pool only, plus the template
/// (`PVETemplateUser`), `local-lvm` and `local` (`PVEDatastoreUser`) and bridge `vmbr0` (`PVESDNUser`).
async fn pool_agent(sim: &Sim) -> Agent<'_> {
    let ok = |r: Reply| assert_eq!(r.status, 200, "{r:?}");
    ok(sim.post("/pools", &[("poolid", "apps")]).await);
    let privs = "VM.Allocate,VM.Audit,VM.Config.CPU,VM.Config.Memory,VM.Config.Disk,VM.Config.Network,VM.Config.Cloudinit,VM.Config.Options,VM.PowerMgmt,Pool.Audit";
    ok(sim.post("/access/roles", &[("roleid", "Deploy"), ("privs", privs)]).await);
    ok(sim.post("/access/users", &[("userid", "deploy@pve")]).await);
    let t = sim.post("/access/users/deploy@pve/token/agent", &[("privsep", "1")]).await;
    let secret = t.data()["value"].as_str().expect("the token's secret").to_string();
    for (path, role) in [
        ("/pool/apps", "Deploy"),
        ("/vms/9000", "PVETemplateUser"),
        ("/storage/local-lvm", "PVEDatastoreUser"),
        ("/storage/local", "PVEDatastoreUser"),
        ("/sdn/zones/localnetwork/vmbr0", "PVESDNUser"),
    ] {
        ok(sim.put("/access/acl", &[("path", path), ("roles", role), ("users", "deploy@pve"), ("tokens", TOKEN)]).await);
    }
    Agent { sim, auth: format!("PVEAPIToken={TOKEN}={secret}") }
}

async fn acl(sim: &Sim, path: &str, role: &str, delete: bool) {
    let r = sim.put("/access/acl", &[("path", path), ("roles", role), ("tokens", TOKEN), ("delete", if delete { "1" } else { "0" })]).await;
    assert_eq!(r.status, 200, "{r:?}");
}

fn assert_403(r: &Reply, text: &str) {
    assert_eq!((r.status, r.reason.as_str()), (403, text), "{r:?}");
    assert_eq!(r.body["message"], format!("{text}\n"), "{r:?}");
}

#[tokio::test]
async fn a_clone_into_a_pool_joins_it_and_leaves_it_when_destroyed() {
    let sim = common::start().await;
    let agent = pool_agent(&sim).await;
    assert!(agent.privileges("/vms/150").await.is_empty(), "nothing on a guest that does not exist");

    // Without `pool` the token has no VM.Allocate on /vms/150: the schema's `or` fails bare.
    let r = agent.form("POST", "/nodes/pve1/qemu/9000/clone", &[("newid", "150")]).await;
    assert_403(&r, "Permission check failed");
    // A pool that does not exist: VM.Allocate on it is missing too (schema before code).
    let r = agent.form("POST", "/nodes/pve1/qemu/9000/clone", &[("newid", "150"), ("pool", "nope")]).await;
    assert_403(&r, "Permission check failed");

    assert_eq!(agent.task("POST", "/nodes/pve1/qemu/9000/clone", &[("newid", "150"), ("pool", "apps"), ("name", "web")]).await, "OK");
    let privs = agent.privileges("/vms/150").await;
    assert!(privs.contains(&"VM.Config.CPU".to_string()) && privs.contains(&"VM.PowerMgmt".to_string()), "the pool's role applies to its member: {privs:?}");
    let r = agent.form("PUT", "/nodes/pve1/qemu/150/config", &[("cores", "2"), ("ipconfig0", "ip=dhcp"), ("tags", "pvedeploy")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let resources = agent.get("/cluster/resources?type=vm").await;
    let ids: Vec<(u64, Value)> = resources.data().as_array().unwrap().iter().map(|e| (e["vmid"].as_u64().unwrap(), e["pool"].clone())).collect();
    assert_eq!(ids, vec![(150, Value::from("apps")), (9000, Value::Null)], "only the template and the pool's member, with its pool");

    // A VM made by someone else outside the pool is invisible and untouchable.
    assert_eq!(sim.clone_vm(151, &[]).await, "OK");
    assert!(!agent.get("/cluster/resources").await.data().as_array().unwrap().iter().any(|e| e["vmid"] == 151));
    assert!(!agent.get("/nodes/pve1/qemu").await.data().as_array().unwrap().iter().any(|e| e["vmid"] == 151));
    // The schema's check (any VM.Config.* on the guest) comes before the code's.
    assert_403(&agent.form("PUT", "/nodes/pve1/qemu/151/config", &[("cores", "2")]).await, "Permission check failed (/vms/151, VM.Config.Disk|VM.Config.CDROM|VM.Config.CPU|VM.Config.Memory|VM.Config.Network|VM.Config.HWType|VM.Config.Options|VM.Config.Cloudinit)");
    assert_403(&agent.form("DELETE", "/nodes/pve1/qemu/151", &[]).await, "Permission check failed (/vms/151, VM.Allocate)");

    assert_eq!(agent.task("DELETE", "/nodes/pve1/qemu/150", &[]).await, "OK");
    assert!(agent.privileges("/vms/150").await.is_empty(), "destroy took it out of the pool");
    // Its VMID reused outside the pool is not the pool's.
    assert_eq!(sim.clone_vm(150, &[]).await, "OK");
    assert!(agent.privileges("/vms/150").await.is_empty());
}

#[tokio::test]
async fn clone_and_config_checks_name_the_missing_privilege_and_path() {
    let sim = common::start().await;
    let agent = pool_agent(&sim).await;
    let clone = [("newid", "150"), ("pool", "apps")];

    // The template's disks live on local-lvm: a linked clone allocates there.
    acl(&sim, "/storage/local-lvm", "PVEDatastoreUser", true).await;
    assert_403(&agent.form("POST", "/nodes/pve1/qemu/9000/clone", &clone).await, "Permission check failed (/storage/local-lvm, Datastore.AllocateSpace)");
    // A full clone onto another storage needs it there instead.
    let r = agent.form("POST", "/nodes/pve1/qemu/9000/clone", &[("newid", "150"), ("pool", "apps"), ("full", "1"), ("storage", "shared")]).await;
    assert_403(&r, "Permission check failed (/storage/shared, Datastore.AllocateSpace)");
    acl(&sim, "/storage/local-lvm", "PVEDatastoreUser", false).await;

    // net0 is on vmbr0.
    acl(&sim, "/sdn/zones/localnetwork/vmbr0", "PVESDNUser", true).await;
    assert_403(&agent.form("POST", "/nodes/pve1/qemu/9000/clone", &clone).await, "Permission check failed (/sdn/zones/localnetwork/vmbr0, SDN.Use)");
    acl(&sim, "/sdn/zones/localnetwork/vmbr0", "PVESDNUser", false).await;
    assert_eq!(agent.task("POST", "/nodes/pve1/qemu/9000/clone", &clone).await, "OK");

    // Config PUT: each option's privilege on the guest (qemu-server `$check_vm_modify_config_perm`).
    let config = "/nodes/pve1/qemu/150/config";
    assert_eq!(agent.form("PUT", config, &[("memory", "1024"), ("name", "web"), ("cicustom", "user=local:snippets/150.yaml")]).await.status, 200);
    let r = agent.form("PUT", config, &[("args", "-no-reboot")]).await;
    assert_eq!((r.status, r.reason.as_str()), (500, "only root can set 'args' config"), "{r:?}");
    assert_403(&agent.form("PUT", config, &[("vga", "std")]).await, "Permission check failed (/vms/150, VM.Config.HWType)");
    assert_403(&agent.form("PUT", config, &[("net1", "virtio,bridge=vmbr1")]).await, "Permission check failed (/sdn/zones/localnetwork/vmbr1, SDN.Use)");
    assert_403(&agent.form("PUT", config, &[("net1", "virtio,bridge=vmbr1,tag=5")]).await, "Permission check failed (/sdn/zones/localnetwork/vmbr1/5, SDN.Use)");
    assert_403(&agent.form("PUT", config, &[("scsi2", "shared:2")]).await, "Permission check failed (/storage/shared, Datastore.AllocateSpace)");
    // The role lacks VM.Config.CDROM, which a cloud-init drive needs besides VM.Config.Cloudinit.
    assert_403(&agent.form("PUT", config, &[("ide0", "local-lvm:cloudinit")]).await, "Permission check failed (/vms/150, VM.Config.CDROM)");
    assert_eq!(agent.form("PUT", config, &[("scsi2", "local-lvm:2")]).await.status, 200, "a new disk on a storage it may allocate on");

}

#[tokio::test]
async fn a_container_created_into_a_pool_cannot_carry_tags_the_pool_does_not_grant_yet() {
    let sim = common::start().await;
    let agent = pool_agent(&sim).await;
    let base = [("vmid", "160"), ("ostemplate", TEMPLATE), ("rootfs", "local-lvm:4"), ("net0", "name=eth0,bridge=vmbr0,ip=dhcp"), ("hostname", "ct"), ("pool", "apps")];

    // Create's permission check is in code (`user => 'all'` in the schema): the pool must exist first.
    let mut nope = base.to_vec();
    nope.retain(|(k, _)| *k != "pool");
    nope.push(("pool", "nope"));
    assert_403(&agent.form("POST", "/nodes/pve1/lxc", &nope).await, "Permission check failed (pool 'nope' does not exist)");
    // Without `pool`, VM.Allocate on /vms/160 is missing: the bare message.
    let unpooled: Vec<_> = base.iter().copied().filter(|(k, _)| *k != "pool").collect();
    assert_403(&agent.form("POST", "/nodes/pve1/lxc", &unpooled).await, "Permission check failed");

    // `tags` are checked on /vms/160 alone (pve-guest-common `assert_tag_permissions`), where a new guest has
    // nothing yet: a container with tags cannot be created into the pool with a pool-only ACL.
    let tagged = [&base[..], &[("tags", "pvedeploy")]].concat();
    assert_403(&agent.form("POST", "/nodes/pve1/lxc", &tagged).await, "Permission check failed (/vms/160, VM.Config.Options)");
    // Feature flags other than nesting are root's.
    let r = agent.form("POST", "/nodes/pve1/lxc", &[&base[..], &[("features", "keyctl=1")]].concat()).await;
    assert_403(&r, "Permission check failed (changing feature flags (except nesting) is only allowed for root@pam)");
    // The root disk's storage needs Datastore.AllocateSpace.
    let mut shared = base.to_vec();
    shared.retain(|(k, _)| *k != "rootfs");
    shared.push(("rootfs", "shared:4"));
    assert_403(&agent.form("POST", "/nodes/pve1/lxc", &shared).await, "Permission check failed (/storage/shared, Datastore.AllocateSpace)");

    assert_eq!(agent.task("POST", "/nodes/pve1/lxc", &[&base[..], &[("features", "nesting=1"), ("unprivileged", "1")]].concat()).await, "OK");
    // A member now: the tags go on with a config PUT.
    let r = agent.form("PUT", "/nodes/pve1/lxc/160/config", &[("tags", "pvedeploy")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(agent.task("POST", "/nodes/pve1/lxc/160/status/start", &[]).await, "OK");
    assert_eq!(agent.task("POST", "/nodes/pve1/lxc/160/status/stop", &[]).await, "OK");
    assert_eq!(agent.task("DELETE", "/nodes/pve1/lxc/160", &[]).await, "OK");
    assert!(agent.privileges("/vms/160").await.is_empty(), "destroy took it out of the pool");
}

#[tokio::test]
async fn cluster_resources_hide_what_the_token_may_not_audit() {
    let sim = common::start().await;
    let agent = pool_agent(&sim).await;
    let all = agent.get("/cluster/resources").await;
    let entries = all.data().as_array().unwrap();
    let node = entries.iter().find(|e| e["type"] == "node").expect("nodes are always listed");
    assert!(node.get("maxcpu").is_none() && node["status"] == "online", "no Sys.Audit on the node: no figures: {node}");
    let storages: Vec<&str> = entries.iter().filter(|e| e["type"] == "storage").filter_map(|e| e["storage"].as_str()).collect();
    assert!(storages.contains(&"local-lvm") && !storages.contains(&"shared"), "{storages:?}");
    assert!(entries.iter().any(|e| e["type"] == "pool" && e["pool"] == "apps"), "the pool, with Pool.Audit on it");
    assert_403(&agent.get("/cluster/status").await, "Permission check failed (/, Sys.Audit)");
}
