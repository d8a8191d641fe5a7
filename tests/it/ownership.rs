//! Nothing foreign is touched, nothing hammers: the agent against a cluster with guests it did not make,
//! answers that never arrive, a lost quorum, hung tasks and migrated guests. Each test has a guest that
//! is not ours (no pvedeploy mark) in the way, and it must survive.

use std::time::{Duration, Instant};

use pvedeploy::config::Secret;
use pvedeploy::core::names::{NodeName, VmId};
use pvedeploy::pve::{CloneRequest, PowerAction, PveClient, PveConfig, TlsTrust};
use pvedeploy_sim::ClusterSpec;
use serde_json::{json, Value};

use crate::helpers::ADMIN;
use crate::provision::{agent_with, start_sim, wait_until, Cluster};

/// The range these tests give the agent: a guest at its start is in the way.
const FIRST: u32 = 10_000;

fn operator(cluster: &Cluster) -> PveClient {
    let (id, secret) = cluster.sim.admin_token();
    let trust = TlsTrust::parse_fingerprint(&cluster.sim.fingerprint_sha256()).unwrap();
    PveClient::new(PveConfig::new(cluster.sim.base_url(), id, Secret::new(secret), trust)).unwrap()
}

fn node(n: &str) -> NodeName {
    NodeName::parse(n).unwrap()
}

fn vmid(v: u32) -> VmId {
    VmId::new(v.into()).unwrap()
}

/// A running VM someone made by hand (a linked clone of the template, no pvedeploy mark at all).
async fn foreign_vm(pve: &PveClient, id: u32) {
    let req = CloneRequest { newid: vmid(id), name: Some(format!("someone-elses-{id}")), full: false, storage: None, target: None, description: Some("the operator's own VM".into()), pool: None };
    let upid = pve.qemu_clone(&node("pve1"), vmid(9000), &req).await.unwrap();
    pve.wait_task(&upid, Duration::from_millis(20), Duration::from_secs(30)).await.unwrap();
    let upid = pve.qemu_power(&node("pve1"), vmid(id), PowerAction::Start).await.unwrap();
    pve.wait_task(&upid, Duration::from_millis(20), Duration::from_secs(30)).await.unwrap();
}

fn foreign_is_intact(cluster: &Cluster, id: u32) {
    let config = cluster.sim.vm_config(id).unwrap_or_else(|| panic!("the foreign guest {id} was deleted"));
    assert_eq!(config.get("name").map(String::as_str), Some(format!("someone-elses-{id}").as_str()), "{config:?}");
    assert!(!config.contains_key("tags"), "the foreign guest was reconfigured: {config:?}");
}

async fn agent(cluster: &Cluster, dir: &std::path::Path, tweak: impl FnOnce(&mut pvedeploy::config::ClusterSettings)) -> crate::helpers::TestApp {
    agent_with(cluster, dir, Duration::from_secs(30), |c| {
        c.vmid_range = FIRST..=FIRST + 999;
        tweak(c);
    })
    .await
}

async fn deploy(app: &crate::helpers::TestApp, name: &str, guest_type: &str) -> String {
    let (s, body) = app
        .post("/api/v1/deployments", Some(ADMIN), &json!({"name": name, "repo_url": "https://github.com/octo/app", "framework": "flask", "type": guest_type, "cpu": 1, "memory_mib": 512, "disk_gb": 4}))
        .await;
    assert_eq!(s, 202, "{body}");
    body["id"].as_str().unwrap().to_string()
}

fn settled(d: &Value) -> bool {
    d["status"] == "installing" || d["status"] == "failed" || d["status"] == "running"
}

/// Provisioning handed the guest over to the deploy (which then fails here: the repository is not reachable).
fn provisioned(d: &Value) -> bool {
    d["events"].as_array().is_some_and(|e| e.iter().any(|e| e["to"] == "installing"))
}

async fn logs(app: &crate::helpers::TestApp, id: &str) -> String {
    let (_, l) = app.get(&format!("/api/v1/deployments/{id}/logs?limit=500"), Some(ADMIN)).await;
    l.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_clone_never_removes_a_guest_that_is_not_ours() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let pve = operator(&cluster);
    foreign_vm(&pve, FIRST).await;
    // A backup job holds the template (PVE: `VM is locked (backup)` from the clone's `check_lock`).
    cluster.sim.set_vm_config(9000, "lock", "backup");
    let dir = tempfile::tempdir().unwrap();
    let app = agent(&cluster, dir.path(), |_| {}).await;
    let id = deploy(&app, "blocked", "vm").await;
    let d = wait_until(&app, &id, "failed", |d| d["status"] == "failed").await;
    assert!(d["error_message"].as_str().unwrap().contains("locked (backup)"), "{d}");
    foreign_is_intact(&cluster, FIRST);
    let l = logs(&app, &id).await;
    assert!(!l.contains(&format!("removed guest {FIRST}")), "{l}");
    // The id in the way was skipped: the cluster's own list said it was taken.
    assert!(!l.contains(&format!("as {FIRST} on")), "{l}");
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_guest_at_the_start_of_the_range_is_skipped_without_extra_calls() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    foreign_vm(&operator(&cluster), FIRST).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent(&cluster, dir.path(), |_| {}).await;
    // The cluster check at start reads the cluster too; only the deployment's calls are counted.
    crate::check::start_check_done(&app).await;
    let before = cluster.sim.calls();
    let id = deploy(&app, "skips", "lxc").await;
    let d = wait_until(&app, &id, "provisioned", settled).await;
    assert_eq!(d["proxmox_id"], FIRST + 1, "{d}");
    let calls = cluster.sim.calls() - before;
    // A container's provisioning: placement's read, create, its status polls, start, interfaces.
    let creates = cluster.sim.calls_to("POST", "/nodes/{node}/lxc");
    assert_eq!(creates, 1, "one create, never one on the foreign id");
    assert!(calls < 40, "{calls} Proxmox calls");
    foreign_is_intact(&cluster, FIRST);
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_timed_out_with_a_foreign_guest_in_the_way_takes_another_id() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let pve = operator(&cluster);
    // The container create's answer takes longer than the agent waits for it: its outcome is unknown.
    cluster.sim.faults().add_latency("^/nodes/[^/]+/lxc$", Duration::from_millis(2500)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = agent(&cluster, dir.path(), |c| c.call_timeout = Duration::from_secs(1)).await;
    let id = deploy(&app, "unknown", "lxc").await;
    // Meanwhile somebody else makes a guest at the id the agent chose (its create then fails in PVE).
    tokio::time::sleep(Duration::from_millis(400)).await;
    foreign_vm(&pve, FIRST).await;
    cluster.sim.faults().clear();
    let d = wait_until(&app, &id, "provisioned", settled).await;
    assert!(provisioned(&d), "{d}\n{}", logs(&app, &id).await);
    assert_eq!(d["proxmox_id"], FIRST + 1, "{d}");
    foreign_is_intact(&cluster, FIRST);
    let l = logs(&app, &id).await;
    assert!(l.contains(&format!("VMID {FIRST} is held by a guest that is not ours")), "{l}");
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_on_create_is_resolved_by_our_mark() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    foreign_vm(&operator(&cluster), FIRST).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent(&cluster, dir.path(), |_| {}).await;
    // The create happens, its answer is lost: one guest, ours, and provisioning goes on.
    cluster.sim.faults().drop_connection("^/nodes/[^/]+/lxc$", Some("POST"), pvedeploy_sim::DropWhen::After, 1).unwrap();
    let id = deploy(&app, "dropped-after", "lxc").await;
    let d = wait_until(&app, &id, "provisioned", settled).await;
    assert!(provisioned(&d), "{d}\n{}", logs(&app, &id).await);
    assert_eq!(cluster.sim.calls_to("POST", "/nodes/{node}/lxc"), 1, "not created twice");
    assert!(logs(&app, &id).await.contains("with this deployment's mark; continuing"));
    // The create never reached PVE: it is sent again.
    cluster.sim.faults().drop_connection("^/nodes/[^/]+/lxc$", Some("POST"), pvedeploy_sim::DropWhen::Before, 1).unwrap();
    let id2 = deploy(&app, "dropped-before", "lxc").await;
    let d2 = wait_until(&app, &id2, "provisioned", settled).await;
    assert!(provisioned(&d2), "{d2}\n{}", logs(&app, &id2).await);
    assert_ne!(d["proxmox_id"], d2["proxmox_id"]);
    foreign_is_intact(&cluster, FIRST);
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_quorum_is_ridden_out_with_backoff() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent(&cluster, dir.path(), |_| {}).await;
    cluster.sim.faults().set_no_quorum(true);
    let id = deploy(&app, "quorum", "lxc").await;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let refused = cluster.sim.calls_to("POST", "/nodes/{node}/lxc");
    cluster.sim.faults().set_no_quorum(false);
    let d = wait_until(&app, &id, "provisioned", settled).await;
    assert!(provisioned(&d), "{d}\n{}", logs(&app, &id).await);
    // Backoff from 1 s: no more than one create a second while the cluster refused writes.
    assert!(refused as f64 <= t.elapsed().as_secs_f64().ceil() + 1.0, "{refused} creates in {:?}", t.elapsed());
    assert!(refused >= 2, "the refused create was sent again: {refused}");
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroying_a_failed_deployment_never_touches_the_guest_now_at_its_old_id() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent(&cluster, dir.path(), |_| {}).await;
    cluster.sim.faults().fail_task("vzcreate", "not enough free space on storage 'local-lvm'");
    let a = deploy(&app, "victim-a", "lxc").await;
    let failed = wait_until(&app, &a, "failed", |d| d["status"] == "failed").await;
    assert_eq!(failed["proxmox_id"], Value::Null, "{failed}");
    cluster.sim.faults().clear();
    let b = deploy(&app, "victim-b", "lxc").await;
    let d = wait_until(&app, &b, "provisioned", settled).await;
    let taken = d["proxmox_id"].as_u64().unwrap() as u32;
    assert_eq!(taken, FIRST, "victim-a's id was released and given to victim-b");
    let (s, body) = app.delete(&format!("/api/v1/deployments/{a}"), Some(ADMIN)).await;
    assert_eq!(s, 202, "{body}");
    wait_until(&app, &a, "destroyed", |d| d["status"] == "destroyed").await;
    assert!(cluster.sim.vm_exists(taken), "victim-b's guest survives victim-a's destroy");
    let l = logs(&app, &a).await;
    assert!(!l.contains(&format!("removed guest {taken}")), "{l}");
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_task_is_stopped_and_its_guest_keeps_its_id_until_it_is_gone() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent(&cluster, dir.path(), |c| c.task_timeout = Duration::from_secs(2)).await;
    cluster.sim.faults().hang_task("vzstart");
    cluster.sim.faults().hang_task("vzdestroy");
    let a = deploy(&app, "hung", "lxc").await;
    let failed = wait_until(&app, &a, "failed", |d| d["status"] == "failed").await;
    let l = logs(&app, &a).await;
    assert!(l.contains("still running after 2s (the task deadline); stopped it"), "{l}");
    assert!(cluster.sim.vm_exists(FIRST), "the delete hung too: the guest is still there");
    assert_eq!(failed["proxmox_id"], FIRST, "the record keeps the guest it could not remove: {failed}");
    assert_eq!(cluster.sim.running_tasks(), 0, "every hung task was stopped");
    cluster.sim.faults().clear();
    // While that guest exists its id is not given to anyone else.
    let b = deploy(&app, "next", "lxc").await;
    let d = wait_until(&app, &b, "provisioned", settled).await;
    assert_eq!(d["proxmox_id"], FIRST + 1, "{d}");
    // Destroying the failed deployment removes its guest now, and frees the id.
    let (s, _) = app.delete(&format!("/api/v1/deployments/{a}"), Some(ADMIN)).await;
    assert_eq!(s, 202);
    wait_until(&app, &a, "destroyed", |d| d["status"] == "destroyed").await;
    assert!(!cluster.sim.vm_exists(FIRST));
    assert!(cluster.sim.vm_exists(FIRST + 1));
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_guest_is_followed_to_its_new_node() {
    let mut spec = ClusterSpec::sandbox();
    for t in &mut spec.templates {
        t.storage = "shared".into();
    }
    let cluster = start_sim(spec).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent(&cluster, dir.path(), |c| c.storage = "shared".into()).await;
    let id = deploy(&app, "moving", "lxc").await;
    let d = wait_until(&app, &id, "provisioned", settled).await;
    let (from, guest) = (d["proxmox_node"].as_str().unwrap().to_string(), d["proxmox_id"].as_u64().unwrap());
    let to = if from == "pve1" { "pve2" } else { "pve1" };
    // The operator migrates it (restart migration: the container is running).
    let (token_id, secret) = cluster.sim.admin_token();
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let r = http
        .post(format!("{}/nodes/{from}/lxc/{guest}/migrate", cluster.sim.base_url()))
        .header("Authorization", format!("PVEAPIToken={token_id}={secret}"))
        .form(&[("target", to), ("restart", "1")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let t = Instant::now();
    while cluster.sim.guest_node(guest as u32).as_deref() != Some(to) {
        assert!(t.elapsed() < Duration::from_secs(30), "the migration never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The reconciler reports it and follows it once the deployment's work in flight (the deploy) lets go.
    let t = Instant::now();
    loop {
        let (s, r) = app.post("/api/v1/reconcile", Some(ADMIN), &json!({})).await;
        assert_eq!(s, 200, "{r}");
        let (_, now) = app.get(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
        if now["proxmox_node"] == to {
            break;
        }
        assert_eq!(r["moved"][0]["node"], to, "{r}");
        assert!(t.elapsed() < Duration::from_secs(120), "the record never followed the guest: {now}\n{r}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (_, audit) = app.get("/api/v1/audit", Some(ADMIN)).await;
    assert!(audit.to_string().contains("guest_moved"), "{audit}");
    // Destroy finds it where it is now.
    let (s, _) = app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
    assert_eq!(s, 202);
    wait_until(&app, &id, "destroyed", |d| d["status"] == "destroyed").await;
    assert!(!cluster.sim.vm_exists(guest as u32), "the migrated guest was removed where it is");
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_created_in_the_same_second_have_different_tags() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent(&cluster, dir.path(), |_| {}).await;
    let (a, b) = tokio::join!(deploy(&app, "twin-a", "lxc"), deploy(&app, "twin-b", "lxc"));
    let da = wait_until(&app, &a, "provisioned", settled).await;
    let db = wait_until(&app, &b, "provisioned", settled).await;
    let tags = |d: &Value| cluster.sim.vm_config(d["proxmox_id"].as_u64().unwrap() as u32).unwrap()["tags"].clone();
    let (ta, tb) = (tags(&da), tags(&db));
    assert_ne!(ta, tb);
    assert!(ta.contains(&format!("pvedeploy-{a}")), "{ta}");
    assert!(tb.contains(&format!("pvedeploy-{b}")), "{tb}");
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_says_why_proxmox_cannot_be_used() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent(&cluster, dir.path(), |_| {}).await;
    let (s, r) = app.get("/api/v1/ready", Some(ADMIN)).await;
    assert_eq!((s, r["proxmox_state"].as_str()), (200, Some("ok")), "{r}");
    app.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let app = agent(&cluster, dir.path(), |c| c.token_secret = Secret::new("00000000-0000-0000-0000-000000000000".into())).await;
    let (s, r) = app.get("/api/v1/ready", Some(ADMIN)).await;
    assert_eq!((s, r["proxmox_state"].as_str()), (503, Some("token_rejected")), "{r}");
    assert!(r["proxmox_reason"].as_str().unwrap().contains("401"), "{r}");
    app.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let app = agent(&cluster, dir.path(), |c| c.trust = pvedeploy::config::TrustSetting::Fingerprint(["AB"; 32].join(":"))).await;
    let (s, r) = app.get("/api/v1/ready", Some(ADMIN)).await;
    assert_eq!((s, r["proxmox_state"].as_str()), (503, Some("certificate_mismatch")), "{r}");
    app.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let app = agent(&cluster, dir.path(), |c| c.endpoint = "https://127.0.0.1:9".into()).await;
    let (s, r) = app.get("/api/v1/ready", Some(ADMIN)).await;
    assert_eq!((s, r["proxmox_state"].as_str()), (503, Some("unreachable")), "{r}");
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_call_says_it_is_waiting() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    cluster.sim.faults().add_latency("^/nodes/[^/]+/lxc$", Duration::from_secs(11)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = agent(&cluster, dir.path(), |_| {}).await;
    let id = deploy(&app, "slow", "lxc").await;
    let t = Instant::now();
    loop {
        if logs(&app, &id).await.contains("still waiting on Proxmox VE: step create running for 10s") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no word while the create was slow: {}", logs(&app, &id).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.sim.faults().clear();
    let d = wait_until(&app, &id, "provisioned", settled).await;
    assert!(provisioned(&d), "{d}");
    app.stop().await;
    cluster.sim.shutdown().await;
}

/// An agent process on a shared remote database (stopped by `Drop`, even when the test fails).
struct AgentProcess(std::process::Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // A stopped process must be continued to die cleanly.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGCONT) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const AGENT_TOKEN: &str = "frozen-admin-token-0123456789";

fn agent_process(cluster: &Cluster, dir: &std::path::Path, db_port: u16, port: u16) -> AgentProcess {
    let (token_id, secret) = cluster.sim.admin_token();
    let config = format!(
        "[database]\nurl = \"ws://127.0.0.1:{db_port}\"\nusername = \"root\"\n\n[proxmox]\nendpoint = \"https://{}\"\ntoken_id = \"{token_id}\"\nfingerprint = \"{}\"\nvm_template = 9000\nvmid_range = [{FIRST}, {}]\ncall_timeout_secs = 10\naddress_timeout_secs = 60\n",
        cluster.sim.addr(),
        cluster.sim.fingerprint_sha256(),
        FIRST + 999
    );
    std::fs::write(dir.join("pvedeploy.toml"), config).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pvedeploy"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(dir.join("pvedeploy.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("PVEDEPLOY_ADMIN_TOKEN", AGENT_TOKEN)
        .env("PVEDEPLOY_PROXMOX_TOKEN_SECRET", secret)
        .env("PVEDEPLOY_DATABASE_PASSWORD", "frozen-test-pass")
        .env_remove("PVEDEPLOY_PROXMOX_MODE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    AgentProcess(child)
}

async fn wait_listening(port: u16) {
    let t = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(t.elapsed() < Duration::from_secs(60), "the agent never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The frozen-agent case: agent A is stopped (SIGSTOP) while its container create is in flight, its
/// lease runs out, agent B takes the deployment over and builds the guest; A is continued, its call has
/// timed out — and it must not touch B's guest (the lease is checked before every mutating call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_never_touches_what_its_successor_built() {
    let Some(surreal) = crate::helpers::tool("surreal") else { return };
    let db_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut db = std::process::Command::new(surreal)
        .args(["start", "--bind", &format!("127.0.0.1:{db_port}"), "--user", "root", "--pass", "frozen-test-pass", "--log", "warn", "memory"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(db_port).await;
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    cluster.sim.faults().add_latency("^/nodes/[^/]+/lxc$", Duration::from_secs(20)).unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let port_a = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let a = agent_process(&cluster, dir_a.path(), db_port, port_a);
    wait_listening(port_a).await;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("http://127.0.0.1:{port_a}/api/v1/deployments"))
        .bearer_auth(AGENT_TOKEN)
        .json(&json!({"name": "frozen", "repo_url": "https://github.com/octo/app", "framework": "flask", "type": "lxc", "memory_mib": 512, "disk_gb": 4}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    // A sends its create (it sleeps in the simulator for 20 s), and is frozen.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    unsafe { libc::kill(a.0.id() as i32, libc::SIGSTOP) };
    cluster.sim.faults().clear();
    // B starts on the same database and takes over once A's lease has run out (at most 30 s).
    let port_b = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _b = agent_process(&cluster, dir_b.path(), db_port, port_b);
    let t = Instant::now();
    let guest = loop {
        let d: Option<Value> = match http.get(format!("http://127.0.0.1:{port_b}/api/v1/deployments/{id}")).bearer_auth(AGENT_TOKEN).send().await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        if let Some(v) = d.as_ref().and_then(|d| d["proxmox_id"].as_u64()) {
            break v as u32;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "B never built the guest: {d:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(cluster.sim.vm_exists(guest));
    // A wakes up: its create's answer is long overdue.
    unsafe { libc::kill(a.0.id() as i32, libc::SIGCONT) };
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(cluster.sim.vm_exists(guest), "the frozen agent deleted its successor's guest");
    let logs: Value = http.get(format!("http://127.0.0.1:{port_b}/api/v1/deployments/{id}/logs?limit=500")).bearer_auth(AGENT_TOKEN).send().await.unwrap().json().await.unwrap();
    assert!(!logs.to_string().contains(&format!("removed guest {guest}")), "{logs}");
    drop(a);
    let _ = db.kill();
    let _ = db.wait();
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deployments_of_one_name_keep_both_archived_exports() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent(&cluster, dir.path(), |_| {}).await;
    let mut archives = Vec::new();
    for _ in 0..2 {
        let id = deploy(&app, "same-name", "lxc").await;
        wait_until(&app, &id, "exported", |d| d["terraform_output"] == "hcl-export/same-name").await;
        let (s, _) = app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
        assert_eq!(s, 202);
        let archived = format!("hcl-export/.archive/same-name-{id}");
        wait_until(&app, &id, "archived", |d| d["terraform_output"] == archived.as_str()).await;
        archives.push(archived);
    }
    for a in &archives {
        assert!(dir.path().join(a).join("main.tf").is_file(), "{a} was overwritten");
    }
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_within_a_bounded_budget_that_names_the_last_answer() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent(&cluster, dir.path(), |_| {}).await;
    let faults = cluster.sim.faults();
    // pveproxy answering 503 to a read and to a write, twice each: ridden out.
    faults.fail_call("^/cluster/resources$", Some("GET"), 503, "Service Unavailable", 2).unwrap();
    faults.fail_call("^/nodes/[^/]+/lxc$", Some("POST"), 503, "Service Unavailable", 2).unwrap();
    let id = deploy(&app, "bumpy", "lxc").await;
    let d = wait_until(&app, &id, "provisioned", settled).await;
    assert!(provisioned(&d), "{d}\n{}", logs(&app, &id).await);
    assert_eq!(cluster.sim.calls_to("POST", "/nodes/{node}/lxc"), 3, "two refused creates, then the one that worked");
    // A daemon that keeps failing the create: a bounded number of tries, then the last answer in words.
    faults.fail_call("^/nodes/[^/]+/lxc$", Some("POST"), 500, "storage 'local-lvm' is not online", 100).unwrap();
    let before = cluster.sim.calls_to("POST", "/nodes/{node}/lxc");
    let id = deploy(&app, "doomed", "lxc").await;
    let d = wait_until(&app, &id, "failed", |d| d["status"] == "failed").await;
    let tries = cluster.sim.calls_to("POST", "/nodes/{node}/lxc") - before;
    assert_eq!(tries, 3, "a plain 500 is tried three times");
    let why = d["error_message"].as_str().unwrap();
    assert!(why.contains("gave up after 3 tries") && why.contains("storage 'local-lvm' is not online"), "{why}");
    app.stop().await;
    cluster.sim.shutdown().await;
}

/// A lost or rolled-back database: an agent whose store knows nothing of the guests another store made
/// (the same as a store restored from an old backup). It must neither remove those guests as orphans
/// nor build on their ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_store_forgot_our_guests_never_touches_them() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let before = tempfile::tempdir().unwrap();
    let app = agent(&cluster, before.path(), |_| {}).await;
    let id = deploy(&app, "remembered", "lxc").await;
    let d = wait_until(&app, &id, "provisioned", settled).await;
    let guest = d["proxmox_id"].as_u64().unwrap() as u32;
    app.stop().await;
    // The same cluster, a store with none of it: every tagged guest looks like an orphan.
    let after = tempfile::tempdir().unwrap();
    let app = agent(&cluster, after.path(), |c| c.remove_orphans = true).await;
    let (s, r) = app.post("/api/v1/reconcile", Some(ADMIN), &json!({})).await;
    assert_eq!(s, 200, "{r}");
    assert!(r["orphans"].to_string().contains(&guest.to_string()), "reported: {r}");
    assert_eq!(r["removed"], json!([]), "never removed: {r}");
    assert!(r["errors"].to_string().contains("does not know"), "{r}");
    assert!(cluster.sim.vm_exists(guest));
    // A new deployment takes another id, and the old guest stays as it was.
    let other = deploy(&app, "newcomer", "lxc").await;
    let o = wait_until(&app, &other, "provisioned", settled).await;
    assert_ne!(o["proxmox_id"].as_u64().unwrap() as u32, guest);
    assert!(cluster.sim.vm_config(guest).unwrap()["tags"].contains(&format!("pvedeploy-{id}")));
    app.stop().await;
    cluster.sim.shutdown().await;
}
