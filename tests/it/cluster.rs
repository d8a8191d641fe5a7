//! The agent on a cluster that behaves like a stock one (issue #20): a container template on one node only, full
//! clones that take real time, a guest agent that times out after its ping, a resource pool.

use std::time::Duration;

use pvedeploy_sim::ClusterSpec;
use serde_json::Value;

use crate::helpers::ADMIN;
use crate::provision::{agent_with, deploy, start_sim, start_sim_with, wait_until, Cluster};

const TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";

/// The simulator's own API with its admin token (what an operator sees).
async fn pve_get(cluster: &Cluster, path: &str) -> Value {
    let (id, secret) = cluster.sim.admin_token();
    let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let resp = client.get(format!("https://{}/api2/json{path}", cluster.sim.addr())).header("Authorization", format!("PVEAPIToken={id}={secret}")).send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json::<Value>().await.unwrap()["data"].clone()
}

async fn settled(app: &crate::helpers::TestApp, id: &str) -> Value {
    wait_until(app, id, "provisioned or failed", |d| d["status"] == "installing" || d["status"] == "failed").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_goes_to_the_node_that_has_its_template_or_the_reason_names_every_node() {
    // pve3 is the idlest node and would win on load; only pve1 (the busiest) holds the template.
    let spec = ClusterSpec { lxc_template_nodes: Some(vec!["pve1".into()]), ..ClusterSpec::three_nodes_uneven() };
    let cluster = start_sim(spec).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent_with(&cluster, dir.path(), Duration::from_secs(30), |_| {}).await;
    let (s, body) = app
        .post("/api/v1/deployments", Some(ADMIN), &serde_json::json!({"name": "tmpl-ct", "repo_url": "https://github.com/octo/app", "framework": "flask", "type": "lxc", "cpu": 1, "memory_mib": 512, "disk_gb": 4}))
        .await;
    assert_eq!(s, 202, "{body}");
    let d = settled(&app, body["id"].as_str().unwrap()).await;
    assert_eq!((d["status"].as_str(), d["proxmox_node"].as_str()), (Some("installing"), Some("pve1")), "{d}");
    app.stop().await;
    cluster.sim.shutdown().await;

    // The template on no node: placement refuses before anything is created, naming each node and what to do.
    let spec = ClusterSpec { lxc_template_nodes: Some(vec![]), ..ClusterSpec::three_nodes_uneven() };
    let cluster = start_sim(spec).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent_with(&cluster, dir.path(), Duration::from_secs(30), |_| {}).await;
    let id = deploy(&app, "tmpl-none", "lxc").await;
    let d = settled(&app, &id).await;
    assert_eq!(d["status"], "failed", "{d}");
    let error = d["error_message"].as_str().unwrap_or_default();
    for node in ["pve1", "pve2", "pve3"] {
        assert!(error.contains(&format!("{node}: the container template {TEMPLATE} is not on this node (download it: pveam download local ")), "{node} in {error}");
    }
    assert_eq!(pve_get(&cluster, "/cluster/resources?type=vm").await.as_array().map(|a| a.iter().filter(|g| g["template"] != 1).count()), Some(0), "nothing was created");
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_clones_onto_one_storage_copy_one_at_a_time() {
    // Each copy takes 1.2 s, so clone tasks that overlapped would share their start second.
    let cluster = start_sim_with(ClusterSpec::sandbox(), |t| t.clone_secs = 1.2).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent_with(&cluster, dir.path(), Duration::from_secs(30), |c| c.full_clone = true).await;
    let ids = [deploy(&app, "full-a", "vm").await, deploy(&app, "full-b", "vm").await, deploy(&app, "full-c", "vm").await];
    for id in &ids {
        let d = settled(&app, id).await;
        assert_eq!(d["status"], "installing", "{d}");
    }
    let tasks = pve_get(&cluster, "/nodes/pve1/tasks?typefilter=qmclone&limit=50").await;
    let mut spans: Vec<(u64, u64)> = tasks.as_array().unwrap().iter().map(|t| (t["starttime"].as_u64().unwrap(), t["endtime"].as_u64().unwrap())).collect();
    spans.sort();
    assert_eq!(spans.len(), 3, "{tasks}");
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "a full clone started before the previous copy ended: {spans:?}");
    }
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_agent_that_times_out_after_its_ping_is_asked_again() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    // The next three `network-get-interfaces` of any VM answer QEMU's "got timeout" after a good ping.
    cluster.sim.faults().agent_command_times_out(None, 3);
    let dir = tempfile::tempdir().unwrap();
    let app = agent_with(&cluster, dir.path(), Duration::from_secs(30), |_| {}).await;
    let id = deploy(&app, "qga-slow", "vm").await;
    let d = settled(&app, &id).await;
    assert_eq!(d["status"], "installing", "{d}");
    assert!(d["ip_address"].is_string(), "{d}");
    app.stop().await;
    cluster.sim.shutdown().await;
}

/// The least-privilege setup docs/configuration.md gives ("A Proxmox API token with least privilege", "Narrowed to
/// a pool"), read from the document itself so that the test follows what operators are told.
pub struct DocsSetup {
    pub role: String,
    pub privileges: Vec<String>,
    pub pool: String,
    /// (path, role, propagate) from each `pveum acl modify` of the pool block.
    pub acls: Vec<(String, String, bool)>,
}

pub fn docs_setup(major: u32) -> DocsSetup {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md")).unwrap();
    let joined = text.replace("\\\n", " ");
    let role_line = joined.lines().find(|l| l.starts_with("pveum role add ")).expect("the docs create a role");
    let role = role_line.split_whitespace().nth(3).unwrap().to_string();
    let quoted = role_line.split('"').nth(1).expect("the role's privileges in quotes");
    // "PVE 8: VM.Monitor in place of VM.GuestAgent.Audit", as the docs say.
    let privileges = quoted.split_whitespace().map(|p| if major < 9 && p == "VM.GuestAgent.Audit" { "VM.Monitor".to_string() } else { p.to_string() }).collect();
    let block = text.split("**Narrowed to a pool.**").nth(1).expect("the pool section").split("```sh").nth(1).unwrap().split("```").next().unwrap();
    let mut pool = String::new();
    let mut acls = Vec::new();
    for line in block.lines().map(|l| l.split('#').next().unwrap_or_default().trim()).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["pveum", "pool", "add", name] => pool = name.to_string(),
            ["pveum", "acl", "modify", path, rest @ ..] => {
                let after = |flag: &str| rest.iter().position(|w| *w == flag).map(|i| rest[i + 1].to_string());
                let propagate = after("-propagate").is_none_or(|p| p != "0");
                acls.push((path.to_string(), after("-role").expect("a role"), propagate));
            }
            other => panic!("an unexpected command in the docs' pool block: {other:?}"),
        }
    }
    assert!(!pool.is_empty() && !acls.is_empty(), "the pool block names a pool and its ACLs");
    DocsSetup { role, privileges, pool, acls }
}

/// An operator applies the docs' setup through the API: the role, the user and its
/// privilege-separated token, the pool, each ACL for both (a token gets the intersection of its and its user's).
/// Returns the token's id and secret.
pub async fn apply_docs_setup(op: &crate::check::Operator, setup: &DocsSetup) -> (String, String) {
    op.post("/access/roles", &[("roleid", &setup.role), ("privs", &setup.privileges.join(","))]).await;
    let secret = op.token("agent").await;
    op.post("/pools", &[("poolid", &setup.pool)]).await;
    for (path, role, propagate) in &setup.acls {
        op.put("/access/acl", &[("path", path), ("roles", role), ("users", "pvedeploy@pve"), ("tokens", "pvedeploy@pve!agent"), ("propagate", if *propagate { "1" } else { "0" })]).await;
    }
    ("pvedeploy@pve!agent".to_string(), secret)
}

/// A VM someone else made in the agent's VMID range, outside the pool: the agent must never touch it.
async fn foreign_guest(op: &crate::check::Operator) -> Value {
    let upid = op.post("/nodes/pve1/qemu", &[("vmid", "10000"), ("name", "someone-elses"), ("memory", "512"), ("net0", "virtio,bridge=vmbr0")]).await;
    op.task(&upid).await;
    op.get("/nodes/pve1/qemu/10000/config").await
}

/// The agent with the docs' token, its guests in the docs' pool, VMIDs from 10000.
async fn pool_agent(cluster: &Cluster, dir: &std::path::Path, setup: &DocsSetup, token: (String, String)) -> crate::helpers::TestApp {
    let pool = pvedeploy::core::names::PoolName::parse(&setup.pool).unwrap();
    agent_with(cluster, dir, Duration::from_secs(30), |c| {
        c.token_id = token.0;
        c.token_secret = pvedeploy::config::Secret::new(token.1);
        c.pool = Some(pool);
        c.vmid_range = 10_000..=10_099;
    })
    .await
}

/// The pool each guest of the cluster is in, as the operator sees it (`GET /cluster/resources`).
async fn pools_of(op: &crate::check::Operator) -> std::collections::BTreeMap<u64, Value> {
    let all = op.get("/cluster/resources?type=vm").await;
    all.as_array().unwrap().iter().map(|e| (e["vmid"].as_u64().unwrap(), e["pool"].clone())).collect()
}

/// A stock cluster of PVE `major`, prepared by the operator through the API as the README says, then the docs'
/// least-privilege role narrowed to the pool; `None` where node SSH cannot run (VMs need it).
async fn docs_cluster(major: u8) -> Option<(Cluster, crate::check::Operator, DocsSetup, (String, String), Value)> {
    let cluster = start_sim(ClusterSpec::stock(major)).await;
    if let Err(why) = pvedeploy_sim::node_ssh::check_available() {
        crate::rig::skip(&why.to_string());
        cluster.sim.shutdown().await;
        return None;
    }
    let op = crate::check::Operator::new(&cluster.sim);
    op.prepare(&cluster.sim.node_names()).await;
    let setup = docs_setup(u32::from(major));
    let token = apply_docs_setup(&op, &setup).await;
    let foreign = foreign_guest(&op).await;
    Some((cluster, op, setup, token, foreign))
}

/// A deployment requested and waited for until provisioned or failed: its id, its record and its log.
async fn deploy_settled(app: &crate::helpers::TestApp, name: &str, guest_type: &str) -> (String, Value, Value) {
    let id = deploy(app, name, guest_type).await;
    let d = settled(app, &id).await;
    let (_, logs) = app.get(&format!("/api/v1/deployments/{id}/logs"), Some(ADMIN)).await;
    (id, d, logs)
}

/// A VM and a container deployed with exactly the docs' role on the pool: both provisioned, both in the pool, the
/// VM someone else made in the VMID range untouched.
async fn the_docs_role_on_a_pool_deploys_both_kinds(major: u8) {
    let Some((cluster, op, setup, token, foreign)) = docs_cluster(major).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let app = pool_agent(&cluster, dir.path(), &setup, token).await;
    for guest_type in ["vm", "lxc"] {
        let (id, d, logs) = deploy_settled(&app, &format!("pool-{guest_type}"), guest_type).await;
        assert_eq!(d["status"], "installing", "PVE {major}, {guest_type}: {d}\n{logs}");
        let vmid = d["proxmox_id"].as_u64().unwrap();
        assert_ne!(vmid, 10000, "{d}");
        assert_eq!(pools_of(&op).await.get(&vmid), Some(&Value::from(setup.pool.clone())), "PVE {major}: the {guest_type} {vmid} is in the pool");
        let config = op.get(&format!("/nodes/{}/{}/{vmid}/config", d["proxmox_node"].as_str().unwrap(), if guest_type == "vm" { "qemu" } else { "lxc" })).await;
        assert!(config["tags"].as_str().unwrap_or_default().contains(&format!("pvedeploy-{id}")), "PVE {major}: tagged: {config}");
    }
    assert_eq!(op.get("/nodes/pve1/qemu/10000/config").await, foreign, "the foreign VM is as it was");
    assert_eq!(pools_of(&op).await.get(&10000), Some(&Value::Null), "and in no pool");
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_least_privilege_role_on_a_pool_deploys_a_vm_and_a_container_on_stock_pve_9() {
    the_docs_role_on_a_pool_deploys_both_kinds(9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_least_privilege_role_on_a_pool_deploys_a_vm_and_a_container_on_stock_pve_8() {
    the_docs_role_on_a_pool_deploys_both_kinds(8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privilege_taken_from_the_role_mid_way_fails_the_next_deployment_with_pves_403_naming_it_and_touches_nothing_else() {
    let Some((cluster, op, setup, token, foreign)) = docs_cluster(9).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let app = pool_agent(&cluster, dir.path(), &setup, token).await;
    let first = deploy(&app, "before", "vm").await;
    let first = settled(&app, &first).await;
    assert_eq!(first["status"], "installing", "{first}");
    let first_vmid = first["proxmox_id"].as_u64().unwrap();
    let first_config = op.get(&format!("/nodes/{}/qemu/{first_vmid}/config", first["proxmox_node"].as_str().unwrap())).await;

    // The operator narrows the role: `pveum role modify PVEDeploy -privs "<all but VM.PowerMgmt>"`.
    let without: Vec<&str> = setup.privileges.iter().map(String::as_str).filter(|p| *p != "VM.PowerMgmt").collect();
    op.put(&format!("/access/roles/{}", setup.role), &[("privs", &without.join(","))]).await;

    for guest_type in ["vm", "lxc"] {
        let (_, d, logs) = deploy_settled(&app, &format!("no-power-{guest_type}"), guest_type).await;
        assert_eq!(d["status"], "failed", "{d}\n{logs}");
        let error = d["error_message"].as_str().unwrap_or_default();
        let (_, after) = error.split_once("missing privilege VM.PowerMgmt on /vms/").unwrap_or_else(|| panic!("{guest_type}: {error}\n{logs}"));
        let vmid: u64 = after.parse().unwrap_or_else(|_| panic!("{error}"));
        assert!(![10000, first_vmid].contains(&vmid), "{d}");
        assert!(error.contains("provisioning failed at step start: Proxmox VE denied the call"), "{error}");
        assert!(logs.to_string().contains(&format!("removed guest {vmid}")), "its own half-made guest is removed: {logs}");
    }
    // The cluster holds what it held before: the template, the foreign VM, the first deployment's VM in the pool.
    let expected: std::collections::BTreeMap<u64, Value> = [(9000, Value::Null), (10000, Value::Null), (first_vmid, Value::from(setup.pool.clone()))].into();
    assert_eq!(pools_of(&op).await, expected);
    assert_eq!(op.get("/nodes/pve1/qemu/10000/config").await, foreign, "the foreign VM is as it was");
    let node = first["proxmox_node"].as_str().unwrap();
    assert_eq!(op.get(&format!("/nodes/{node}/qemu/{first_vmid}/config")).await, first_config, "the earlier deployment's VM is as it was");
    assert_eq!(op.get(&format!("/nodes/{node}/qemu/{first_vmid}/status/current")).await["status"], "running");
    let (_, d) = app.get(&format!("/api/v1/deployments/{}", first["id"].as_str().unwrap()), Some(ADMIN)).await;
    assert_ne!(d["status"], "failed", "{d}");
    app.stop().await;
    cluster.sim.shutdown().await;
}
