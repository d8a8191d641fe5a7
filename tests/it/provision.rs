//! Provisioning against the Proxmox VE simulator (schema validation on): VM and LXC deployments
//! reaching a guest with a known address, placement, concurrency, failures cleaned up, destroy.

use std::time::Duration;

use pvedeploy::config::{ClusterSettings, ProxmoxSetting, Secret, TrustSetting};
use pvedeploy_sim::{ClusterSpec, SimConfig, SimHandle, Simulator};
use serde_json::{json, Value};

use crate::helpers::{test_config, TestApp, ADMIN};

pub struct Cluster {
    pub sim: SimHandle,
    _dir: tempfile::TempDir,
    /// The agent's deploy key: the nodes' SFTP endpoints (when this machine can run them) authorize it,
    /// and `agent_with` installs it in the agent's data dir.
    pub agent_key: pvedeploy::keys::KeyPair,
}

pub async fn start_sim(spec: ClusterSpec) -> Cluster {
    start_sim_with(spec, |_| {}).await
}

/// As `start_sim`, with the simulator's timing changed by `timing` last.
pub async fn start_sim_with(spec: ClusterSpec, timing: impl FnOnce(&mut pvedeploy_sim::Timing)) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SimConfig::sandbox(dir.path().to_path_buf());
    cfg.cluster = spec;
    cfg.timing.clone_secs = 0.3;
    cfg.timing.start_secs = 0.2;
    cfg.timing.agent_delay_secs = 0.5;
    cfg.timing.task_secs = 0.1;
    timing(&mut cfg.timing);
    let agent_key = pvedeploy::keys::generate_ed25519("pvedeploy-agent");
    if pvedeploy_sim::node_ssh::check_available().is_ok() {
        cfg = cfg.with_node_ssh(&agent_key.public_openssh);
    }
    let sim = Simulator::start(cfg).await.expect("simulator starts");
    Cluster { sim, _dir: dir, agent_key }
}

/// An agent configured against `cluster` like against a real one (pinned fingerprint, API token).
pub async fn agent_for(cluster: &Cluster, data_dir: &std::path::Path, address_timeout: Duration) -> TestApp {
    agent_with(cluster, data_dir, address_timeout, |_| {}).await
}

pub async fn agent_with(cluster: &Cluster, data_dir: &std::path::Path, address_timeout: Duration, tweak: impl FnOnce(&mut ClusterSettings)) -> TestApp {
    agent_configured(cluster, data_dir, address_timeout, tweak, |_| {}).await
}

/// As `agent_with`, the whole configuration changed by `config` last.
pub async fn agent_configured(
    cluster: &Cluster,
    data_dir: &std::path::Path,
    address_timeout: Duration,
    tweak: impl FnOnce(&mut ClusterSettings),
    config: impl FnOnce(&mut pvedeploy::config::Config),
) -> TestApp {
    let mut c = test_config(data_dir);
    install_key(&cluster.agent_key, data_dir);
    let (token_id, secret) = cluster.sim.admin_token();
    c.proxmox = ProxmoxSetting::Cluster(ClusterSettings {
        vmid_range: 100..=999_999,
        address_timeout,
        poll_interval: Duration::from_millis(50),
        ..ClusterSettings::new(format!("https://{}", cluster.sim.addr()), token_id, Secret::new(secret), TrustSetting::Fingerprint(cluster.sim.fingerprint_sha256()), 9000)
    });
    if let ProxmoxSetting::Cluster(s) = &mut c.proxmox {
        s.node_ssh = node_ssh_settings(&cluster.sim);
        tweak(s);
    }
    config(&mut c);
    TestApp::spawn_config(c).await
}

/// Writes `key` as the agent's deploy key in `data_dir/keys` (as the agent would have made it).
pub fn install_key(key: &pvedeploy::keys::KeyPair, data_dir: &std::path::Path) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = data_dir.join("keys");
    if dir.join("deploy_ed25519").exists() {
        return;
    }
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dir.join("deploy_ed25519")).unwrap();
    std::io::Write::write_all(&mut f, key.private_openssh.expose().as_bytes()).unwrap();
    std::fs::write(dir.join("deploy_ed25519.pub"), format!("{}\n", key.public_openssh)).unwrap();
}

/// The nodes' SFTP endpoints with their host keys pinned, when the simulator runs them.
pub fn node_ssh_settings(sim: &SimHandle) -> Option<pvedeploy::config::NodeSshSettings> {
    let (mut host_keys, mut addresses) = (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
    for node in sim.node_names() {
        let (addr, key) = sim.node_ssh(&node)?;
        addresses.insert(node.clone(), addr.ip().to_string());
        host_keys.insert(node, key);
    }
    Some(pvedeploy::config::NodeSshSettings { user: "root".into(), port: 22, host_keys, addresses })
}

/// Polls a deployment until `pred` holds (or panics with its last state).
pub async fn wait_until(app: &TestApp, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        let (s, d) = app.get(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
        assert_eq!(s, 200, "{d}");
        if pred(&d) {
            return d;
        }
        last = d;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, logs) = app.get(&format!("/api/v1/deployments/{id}/logs"), Some(ADMIN)).await;
    panic!("deployment never became {what}: {last}\nlogs: {logs}");
}

pub async fn deploy(app: &TestApp, name: &str, guest_type: &str) -> String {
    let (s, body) = app
        .post("/api/v1/deployments", Some(ADMIN), &json!({"name": name, "repo_url": "https://github.com/octo/app", "framework": "flask", "type": guest_type, "cpu": 2, "memory_mib": 1024, "disk_gb": 10}))
        .await;
    assert_eq!(s, 202, "{body}");
    body["id"].as_str().unwrap().to_string()
}

fn provisioned(d: &Value) -> bool {
    d["status"] == "installing" || d["status"] == "failed"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_deployment_reaches_a_guest_with_an_address() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent_for(&cluster, dir.path(), Duration::from_secs(30)).await;
    let id = deploy(&app, "vm-one", "vm").await;
    let d = wait_until(&app, &id, "provisioned", provisioned).await;
    assert_eq!(d["status"], "installing", "{d}");
    let vmid = d["proxmox_id"].as_u64().unwrap() as u32;
    assert_eq!(d["proxmox_node"], "pve1", "the template's storage is local to pve1");
    let ip = d["ip_address"].as_str().unwrap();
    assert_eq!(Some(ip.parse().unwrap()), cluster.sim.guest_ipv4(vmid), "the address the guest really has");
    let cfg = cluster.sim.vm_config(vmid).unwrap();
    assert_eq!(cfg.get("cores").map(String::as_str), Some("2"));
    assert_eq!(cfg.get("memory").map(String::as_str), Some("1024"));
    assert!(cfg.get("tags").unwrap().contains("pvedeploy"), "{cfg:?}");
    assert!(cfg.get("scsi0").unwrap().contains("size=10G"), "{cfg:?}");
    assert_eq!(cfg.get("ciuser").map(String::as_str), Some("deploy"));
    let deploy_key = std::fs::read_to_string(dir.path().join("keys/deploy_ed25519.pub")).unwrap();
    let sshkeys = percent_decode(cfg.get("sshkeys").unwrap());
    assert_eq!(sshkeys.trim(), deploy_key.trim(), "the deploy key arrives intact");
    let events: Vec<&str> = d["events"].as_array().unwrap().iter().map(|e| e["to"].as_str().unwrap()).collect();
    assert_eq!(events.first(), Some(&"pending"));
    assert!(events.contains(&"provisioning") && events.ends_with(&["installing"]), "{events:?}");

    // the resource view reads the cluster: both nodes, their capacity, the new guest on pve1
    let (s, r) = app.get("/api/v1/resources", Some(ADMIN)).await;
    assert_eq!(s, 200);
    assert_eq!(r["available"], true, "{r}");
    let nodes: Vec<&str> = r["nodes"].as_array().unwrap().iter().map(|n| n["node"].as_str().unwrap()).collect();
    assert_eq!(nodes, ["pve1", "pve2"]);
    assert_eq!(r["nodes"][0]["guests"], 1, "{r}");
    assert!(r["nodes"][0]["memory_total_bytes"].as_u64().unwrap() > 0);
    assert!(r["storages"].as_array().unwrap().iter().any(|s| s["storage"] == "local-lvm"), "{r}");
    let (_, st) = app.get("/api/v1/status", Some(ADMIN)).await;
    assert_eq!(st["resources"]["available"], true);

    // destroy removes the guest and releases the name
    let (s, _) = app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
    assert_eq!(s, 202);
    wait_until(&app, &id, "destroyed", |d| d["status"] == "destroyed").await;
    assert!(!cluster.sim.vm_exists(vmid), "the guest is gone");
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lxc_deployment_reaches_a_guest_with_an_address() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent_for(&cluster, dir.path(), Duration::from_secs(30)).await;
    let id = deploy(&app, "ct-one", "lxc").await;
    let d = wait_until(&app, &id, "provisioned", provisioned).await;
    assert_eq!(d["status"], "installing", "{d}");
    let vmid = d["proxmox_id"].as_u64().unwrap() as u32;
    assert_eq!(Some(d["ip_address"].as_str().unwrap().parse().unwrap()), cluster.sim.guest_ipv4(vmid));
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_addresses_come_from_the_pool_and_return_to_it() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let pool = pvedeploy::core::addresses::AddressPool::parse("127.78.4.10-127.78.4.11/24", Some("127.78.4.1")).unwrap();
    let app = agent_with(&cluster, dir.path(), Duration::from_secs(30), |c| c.address_pool = Some(pool)).await;
    let vm = deploy(&app, "static-vm", "vm").await;
    let vm = wait_until(&app, &vm, "provisioned", provisioned).await;
    let ct = deploy(&app, "static-ct", "lxc").await;
    let ct = wait_until(&app, &ct, "provisioned", provisioned).await;
    assert_eq!((vm["status"].as_str(), ct["status"].as_str()), (Some("installing"), Some("installing")), "{vm}\n{ct}");
    assert_eq!(vm["ip_address"], "127.78.4.10");
    assert_eq!(ct["ip_address"], "127.78.4.11");
    let vmid = vm["proxmox_id"].as_u64().unwrap() as u32;
    assert_eq!(cluster.sim.vm_config(vmid).unwrap().get("ipconfig0").map(String::as_str), Some("ip=127.78.4.10/24,gw=127.78.4.1"));

    // the pool is exhausted: the third fails clearly and leaves nothing behind
    let third = deploy(&app, "static-3", "lxc").await;
    let third = wait_until(&app, &third, "failed", |d| d["status"] == "failed").await;
    assert!(third["error_message"].as_str().unwrap().contains("no free address left in the pool 127.78.4.10-127.78.4.11/24"), "{third}");

    // destroying returns the address: the next deployment gets it again
    let (s, _) = app.delete(&format!("/api/v1/deployments/{}", vm["id"].as_str().unwrap()), Some(ADMIN)).await;
    assert_eq!(s, 202);
    wait_until(&app, vm["id"].as_str().unwrap(), "destroyed", |d| d["status"] == "destroyed").await;
    let again = deploy(&app, "static-4", "vm").await;
    let again = wait_until(&app, &again, "provisioned", provisioned).await;
    assert_eq!(again["ip_address"], "127.78.4.10", "{again}");
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_host_key_is_pinned_from_proxmox_create_log() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent_for(&cluster, dir.path(), Duration::from_secs(30)).await;
    let id = deploy(&app, "ct-key", "lxc").await;
    wait_until(&app, &id, "provisioned", provisioned).await;
    let (_, logs) = app.get(&format!("/api/v1/deployments/{id}/logs"), Some(ADMIN)).await;
    let text = logs.to_string();
    assert!(text.contains("container host key SHA256:"), "{logs}");
    app.stop().await;
    cluster.sim.shutdown().await;
}

/// A client of the simulator with its admin token, acting "behind pvedeploy's back".
fn operator(cluster: &Cluster) -> pvedeploy::pve::PveClient {
    let (id, secret) = cluster.sim.admin_token();
    let trust = pvedeploy::pve::TlsTrust::parse_fingerprint(&cluster.sim.fingerprint_sha256()).unwrap();
    pvedeploy::pve::PveClient::new(pvedeploy::pve::PveConfig::new(cluster.sim.base_url(), id, Secret::new(secret), trust)).unwrap()
}

/// Clones the template as `vmid` on pve1 with `tags`, as an operator would by hand.
async fn hand_made_guest(pve: &pvedeploy::pve::PveClient, vmid: u32, tags: &[&str]) {
    use pvedeploy::core::names::{NodeName, VmId};
    let node = NodeName::parse("pve1").unwrap();
    let id = VmId::new(vmid.into()).unwrap();
    let req = pvedeploy::pve::CloneRequest { newid: id, name: Some(format!("hand-{vmid}")), full: false, storage: None, target: None, description: None, pool: None };
    let upid = pve.qemu_clone(&node, VmId::new(9000).unwrap(), &req).await.unwrap();
    pve.wait_task(&upid, Duration::from_millis(50), Duration::from_secs(30)).await.unwrap();
    let update = pvedeploy::pve::QemuUpdate { tags: tags.iter().map(|t| t.to_string()).collect(), ..Default::default() };
    pve.qemu_update_config(&node, id, &update).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_reports_orphans_and_missing_guests_and_removes_only_provably_ours() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent_with(&cluster, dir.path(), Duration::from_secs(30), |c| c.remove_orphans = false).await;
    let pve = operator(&cluster);
    let id = deploy(&app, "kept", "vm").await;
    let kept = wait_until(&app, &id, "provisioned", provisioned).await;
    let gone = deploy(&app, "gone", "lxc").await;
    let gone = wait_until(&app, &gone, "provisioned", provisioned).await;
    let done = deploy(&app, "done", "lxc").await;
    wait_until(&app, &done, "provisioned", provisioned).await;
    let (s, _) = app.delete(&format!("/api/v1/deployments/{done}"), Some(ADMIN)).await;
    assert_eq!(s, 202);
    wait_until(&app, &done, "destroyed", |d| d["status"] == "destroyed").await;
    // Only the shared tag: someone's guest that looks like ours, never provably ours.
    hand_made_guest(&pve, 4242, &["pvedeploy"]).await;
    hand_made_guest(&pve, 4343, &["other"]).await;
    // Marked for a deployment this store records as destroyed: a leftover of ours.
    let done_tag = format!("pvedeploy-{done}");
    hand_made_guest(&pve, 4444, &["pvedeploy", &done_tag]).await;
    // Marked for a deployment this store does not know (a restored database, another agent's store).
    hand_made_guest(&pve, 4545, &["pvedeploy", "pvedeploy-01900000-0000-7000-8000-000000000abc"]).await;
    // the container is deleted behind our back
    let ct = pvedeploy::core::names::VmId::new(gone["proxmox_id"].as_u64().unwrap()).unwrap();
    let node = pvedeploy::core::names::NodeName::parse(gone["proxmox_node"].as_str().unwrap()).unwrap();
    let upid = pve.lxc_power(&node, ct, pvedeploy::pve::PowerAction::Stop).await.unwrap();
    pve.wait_task(&upid, Duration::from_millis(50), Duration::from_secs(30)).await.unwrap();
    let upid = pve.lxc_delete(&node, ct, true, true).await.unwrap();
    pve.wait_task(&upid, Duration::from_millis(50), Duration::from_secs(30)).await.unwrap();

    let (s, r) = app.post("/api/v1/reconcile", Some(crate::helpers::READER), &json!({})).await;
    assert_eq!(s, 403, "running it is for admins: {r}");
    let (s, r) = app.post("/api/v1/reconcile", Some(ADMIN), &json!({})).await;
    assert_eq!(s, 200, "{r}");
    let orphans: Vec<u64> = r["orphans"].as_array().unwrap().iter().map(|g| g["vmid"].as_u64().unwrap()).collect();
    assert_eq!(orphans, [4242, 4444, 4545], "the tagged guests nobody owns: {r}");
    let missing: Vec<&str> = r["missing"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(missing, ["gone"], "{r}");
    assert_eq!(r["removed"], json!([]), "reporting only, by default");
    assert!(cluster.sim.vm_exists(4242));
    let (s, last) = app.get("/api/v1/reconcile", Some(crate::helpers::READER)).await;
    assert_eq!((s, &last["orphans"]), (200, &r["orphans"]));
    assert!(cluster.sim.vm_exists(kept["proxmox_id"].as_u64().unwrap() as u32));
    app.stop().await;

    // Configured to remove orphans: only the guest provably ours goes.
    let app = agent_with(&cluster, dir.path(), Duration::from_secs(30), |c| c.remove_orphans = true).await;
    // (the agent's own run at start may have removed it already: runs never overlap)
    let (s, r) = app.post("/api/v1/reconcile", Some(ADMIN), &json!({})).await;
    assert_eq!(s, 200, "{r}");
    let orphans: Vec<u64> = r["orphans"].as_array().unwrap().iter().map(|g| g["vmid"].as_u64().unwrap()).collect();
    assert_eq!(orphans, [4242, 4545], "{r}");
    let errors = r["errors"].to_string();
    assert!(errors.contains("4242") && errors.contains("no deployment's mark"), "{r}");
    assert!(errors.contains("4545") && errors.contains("does not know"), "{r}");
    assert!(!cluster.sim.vm_exists(4444), "a destroyed deployment's leftover is removed");
    assert!(cluster.sim.vm_exists(4242), "never a guest with only the shared tag");
    assert!(cluster.sim.vm_exists(4545), "never a guest of a deployment this store does not know");
    assert!(cluster.sim.vm_exists(4343), "never a guest without our tag");
    assert!(cluster.sim.vm_exists(kept["proxmox_id"].as_u64().unwrap() as u32), "never a guest a deployment owns");
    let (_, audit) = app.get("/api/v1/audit", Some(ADMIN)).await;
    assert!(audit.to_string().contains("remove_orphan"), "{audit}");
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_prefers_the_node_with_most_headroom() {
    let mut spec = ClusterSpec::three_nodes_uneven();
    for t in &mut spec.templates {
        t.storage = "shared".into(); // reachable from every node
    }
    let cluster = start_sim(spec).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent_for(&cluster, dir.path(), Duration::from_secs(30)).await;
    let id = deploy(&app, "placed", "vm").await;
    let d = wait_until(&app, &id, "provisioned", provisioned).await;
    assert_eq!(d["status"], "installing", "{d}");
    assert_eq!(d["proxmox_node"], "pve3", "pve1 is 85% busy, pve2 40%, pve3 5% with twice the memory");
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_deployments_get_distinct_ids_and_no_user_visible_conflict() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent_for(&cluster, dir.path(), Duration::from_secs(60)).await;
    let ids = futures_util::future::join_all((0..10).map(|i| {
        let app = &app;
        async move { deploy(app, &format!("many-{i}"), if i % 3 == 0 { "lxc" } else { "vm" }).await }
    }))
    .await;
    let mut vmids = Vec::new();
    for id in &ids {
        let d = wait_until(&app, id, "provisioned", provisioned).await;
        assert_eq!(d["status"], "installing", "{d}");
        vmids.push(d["proxmox_id"].as_u64().unwrap());
    }
    vmids.sort_unstable();
    vmids.dedup();
    assert_eq!(vmids.len(), 10, "distinct VMIDs");
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_never_answers_fails_clearly_and_the_guest_is_removed() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    cluster.sim.faults().agent_never_answers(None);
    let dir = tempfile::tempdir().unwrap();
    let app = agent_for(&cluster, dir.path(), Duration::from_secs(3)).await;
    let id = deploy(&app, "silent", "vm").await;
    let d = wait_until(&app, &id, "failed", |d| d["status"] == "failed").await;
    let msg = d["error_message"].as_str().unwrap();
    assert!(msg.contains("no IPv4 address") && msg.contains("guest agent"), "{msg}");
    let (_, logs) = app.get(&format!("/api/v1/deployments/{id}/logs"), Some(ADMIN)).await;
    let text = logs.to_string();
    assert!(text.contains("removed guest"), "{text}");
    for vmid in 100..120 {
        assert!(!cluster.sim.vm_exists(vmid), "guest {vmid} left behind");
    }
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_lock_timeout_is_retried_to_success() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    cluster.sim.faults().force_lock_timeout(None);
    let dir = tempfile::tempdir().unwrap();
    // full clones take the storage lock (linked clones of a template do not)
    let app = agent_with(&cluster, dir.path(), Duration::from_secs(30), |s| s.full_clone = true).await;
    let id = deploy(&app, "locked", "vm").await;
    // let the first attempt hit the lock, then lift the fault
    let mut saw_retry = false;
    for _ in 0..100 {
        let (_, logs) = app.get(&format!("/api/v1/deployments/{id}/logs"), Some(ADMIN)).await;
        if logs.to_string().contains("storage lock timeout") {
            saw_retry = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.sim.faults().clear();
    assert!(saw_retry, "the lock timeout was seen and retried");
    let d = wait_until(&app, &id, "provisioned", provisioned).await;
    assert_eq!(d["status"], "installing", "{d}");
    app.stop().await;
    cluster.sim.shutdown().await;
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroying_a_deployment_while_it_provisions_removes_its_guest() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    cluster.sim.faults().add_latency("/agent/", Duration::from_millis(700)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = agent_for(&cluster, dir.path(), Duration::from_secs(30)).await;
    let id = deploy(&app, "half-made", "vm").await;
    wait_until(&app, &id, "created", |d| d["proxmox_id"].is_u64()).await;
    let (s, _) = app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
    assert_eq!(s, 202);
    let d = wait_until(&app, &id, "destroyed", |d| d["status"] == "destroyed" || d["status"] == "failed").await;
    assert_eq!(d["status"], "destroyed", "{d}");
    for vmid in 100..120 {
        assert!(!cluster.sim.vm_exists(vmid), "guest {vmid} left behind");
    }
    // Provisioning saw the destroy at its next step and handed over, rather than running to the end.
    let (_, log) = app.get(&format!("/api/v1/deployments/{id}/logs?limit=500"), Some(ADMIN)).await;
    let texts: Vec<&str> = log["lines"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap()).collect();
    assert!(texts.iter().any(|t| t.contains("destroy requested; stopping provisioning")), "{texts:?}");
    assert!(!texts.iter().any(|t| t.contains("is up at")), "no step ran after the destroy was seen: {texts:?}");
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_deleted_while_the_deploy_waits_for_it_fails_the_deploy_with_that_reason() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    // A repository the agent can read: the release is known, and recorded, before the guest is reached.
    let server = crate::rig::GitServer::start().await;
    let repo = server.repo("octo/vanishing", "flask");
    let host = server.host.clone();
    let app = agent_configured(&cluster, dir.path(), Duration::from_secs(30), |_| {}, |c| {
        c.repos = pvedeploy::core::limits::RepoPolicy { allowed_hosts: vec![host], schemes: vec![pvedeploy::core::limits::RepoScheme::Http], allow_private: vec![] };
    })
    .await;
    let (s, body) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "vanishing", "repo_url": repo.url, "framework": "flask", "type": "lxc"})).await;
    assert_eq!(s, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    // The simulator's API-only guests never answer SSH: the deploy waits at boot (up to minutes).
    let d = wait_until(&app, &id, "installing", |d| d["status"] == "installing").await;
    let lost = d["proxmox_id"].as_u64().unwrap() as u32;
    // Its config is deleted by hand on the node: the guest is simply gone.
    cluster.sim.vanish(lost).await;
    let d = wait_until(&app, &id, "failed", |d| d["status"] == "failed").await;
    let why = d["error_message"].as_str().unwrap();
    assert!(why.contains(&format!("guest {lost} no longer exists")), "told why, not at the boot deadline: {why}");
    assert_eq!(d["proxmox_id"], Value::Null, "the lost guest is forgotten: {d}");
    // The first deploy that failed at boot is a failed release, timed up to its failure.
    let (_, rs) = app.get(&format!("/api/v1/deployments/{id}/releases"), Some(ADMIN)).await;
    let head = crate::rig::git(&repo.work, &["rev-parse", "HEAD"]);
    let first = &rs[0];
    assert_eq!((first["status"].as_str(), first["step"].as_str(), first["commit"].as_str()), (Some("failed"), Some("boot"), Some(head.trim())), "{rs}");
    assert_eq!(first["timings"][0]["step"], "boot", "{rs}");
    // A redeploy provisions it again, on a new guest.
    let (s, r) = app.post(&format!("/api/v1/deployments/{id}/redeploy"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 202, "{r}");
    let d = wait_until(&app, &id, "provisioned again", |d| d["status"] == "installing" && d["proxmox_id"].is_u64()).await;
    assert!(cluster.sim.vm_exists(d["proxmox_id"].as_u64().unwrap() as u32), "{d}");
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_dies_while_booting_fails_provisioning_with_that_reason() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    // The VM's address comes from its guest agent, which never answers: provisioning waits for it.
    cluster.sim.faults().agent_never_answers(None);
    let dir = tempfile::tempdir().unwrap();
    let app = agent_for(&cluster, dir.path(), Duration::from_secs(60)).await;
    let id = deploy(&app, "dies-at-boot", "vm").await;
    let pve = operator(&cluster);
    let d = wait_until(&app, &id, "started", |d| d["proxmox_id"].is_u64()).await;
    let (node, vmid) = (pvedeploy::core::names::NodeName::parse(d["proxmox_node"].as_str().unwrap()).unwrap(), pvedeploy::core::names::VmId::new(d["proxmox_id"].as_u64().unwrap()).unwrap());
    // It starts, then exits (as a guest whose kernel panics does).
    let t = std::time::Instant::now();
    loop {
        let (_, logs) = app.get(&format!("/api/v1/deployments/{id}/logs"), Some(ADMIN)).await;
        if logs.to_string().contains("starting guest") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let upid = pve.qemu_power(&node, vmid, pvedeploy::pve::PowerAction::Stop).await.unwrap();
    pve.wait_task(&upid, Duration::from_millis(20), Duration::from_secs(30)).await.unwrap();
    let d = wait_until(&app, &id, "failed", |d| d["status"] == "failed").await;
    let why = d["error_message"].as_str().unwrap();
    assert!(why.contains("stopped while booting"), "told why, not at the address deadline: {why}");
    app.stop().await;
    cluster.sim.shutdown().await;
}
