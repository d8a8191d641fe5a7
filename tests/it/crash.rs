//! Crash safety: the agent process is killed with SIGKILL at each step boundary of a provisioning and
//! restarted on the same data dir; the deployment resumes and no guest exists that the store does not know.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pvedeploy_sim::ClusterSpec;
use serde_json::{json, Value};

use crate::provision::{start_sim, Cluster};

pub(crate) const TOKEN: &str = "crash-admin-token-0123456789";

pub(crate) struct Agent(pub(crate) Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn spawn_agent(cluster: &Cluster, dir: &std::path::Path, port: u16) -> Agent {
    let (token_id, secret) = cluster.sim.admin_token();
    let config = format!(
        "[proxmox]\nendpoint = \"https://{}\"\ntoken_id = \"{token_id}\"\nfingerprint = \"{}\"\nvm_template = 9000\nvmid_range = [100, 8999]\naddress_timeout_secs = 60\n",
        cluster.sim.addr(),
        cluster.sim.fingerprint_sha256()
    );
    let mut config = config;
    // The nodes' SFTP endpoints (snippets with the guest's host key), as a real cluster is configured.
    if let Some(n) = crate::provision::node_ssh_settings(&cluster.sim) {
        crate::provision::install_key(&cluster.agent_key, &dir.join("data"));
        let table = |m: &std::collections::BTreeMap<String, String>| m.iter().map(|(k, v)| format!("{k} = \"{v}\"")).collect::<Vec<_>>().join(", ");
        config.push_str(&format!("\n[proxmox.node_ssh]\nhost_keys = {{ {} }}\naddresses = {{ {} }}\n", table(&n.host_keys), table(&n.addresses)));
    }
    std::fs::write(dir.join("pvedeploy.toml"), config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pvedeploy"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(dir.join("pvedeploy.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("PVEDEPLOY_ADMIN_TOKEN", TOKEN)
        .env("PVEDEPLOY_PROXMOX_TOKEN_SECRET", secret)
        .env_remove("PVEDEPLOY_PROXMOX_MODE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Agent(child)
}

pub(crate) async fn get(client: &reqwest::Client, url: &str) -> Option<Value> {
    let r = client.get(url).bearer_auth(TOKEN).send().await.ok()?;
    r.json().await.ok()
}

pub(crate) async fn wait_ready(client: &reqwest::Client, base: &str) {
    let t = Instant::now();
    while get(client, &format!("{base}/ready")).await.is_none() {
        assert!(t.elapsed() < Duration::from_secs(30), "agent not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills the agent once the deployment's log contains `marker`, restarts it, and checks the outcome.
async fn kill_when(marker: &str, slow_path: Option<&str>) {
    kill_when_then(marker, slow_path, None).await
}

/// As `kill_when`; with `old_shape`, the data dir is then turned into what an agent of schema v12 left at that
/// point (its provisioning progress in the flat shape, at step `old_shape`) before the restart upgrades it.
async fn kill_when_then(marker: &str, slow_path: Option<&str>, old_shape: Option<&str>) {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    if let Some(p) = slow_path {
        cluster.sim.faults().add_latency(p, Duration::from_millis(1500)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let client = reqwest::Client::new();
    let agent = spawn_agent(&cluster, dir.path(), port);
    wait_ready(&client, &base).await;
    let body = json!({"name": "crashy", "repo_url": "https://github.com/octo/app", "framework": "flask", "disk_gb": 12});
    let created: Value = client.post(format!("{base}/deployments")).bearer_auth(TOKEN).json(&body).send().await.unwrap().json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let t = Instant::now();
    loop {
        let logs = get(&client, &format!("{base}/deployments/{id}/logs")).await.unwrap_or_default();
        if logs.to_string().contains(marker) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "never reached {marker:?}: {logs}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(agent); // SIGKILL
    cluster.sim.faults().clear();
    if let Some(step) = old_shape {
        as_v12_left_it(&dir.path().join("data"), &id, step).await;
    }

    let _agent = spawn_agent(&cluster, dir.path(), port);
    wait_ready(&client, &base).await;
    let t = Instant::now();
    let d = loop {
        let d = get(&client, &format!("{base}/deployments/{id}")).await.unwrap();
        if d["status"] == "installing" || d["status"] == "failed" {
            break d;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "did not settle after restart ({marker}): {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(d["status"], "installing", "killed at {marker:?}: {d}");
    let vmid = d["proxmox_id"].as_u64().unwrap() as u32;
    let guests: Vec<u32> = (100..200).filter(|v| cluster.sim.vm_exists(*v)).collect();
    assert_eq!(guests, vec![vmid], "killed at {marker:?}: exactly the one guest the store knows");
    let cfg = cluster.sim.vm_config(vmid).unwrap();
    assert!(cfg["scsi0"].contains("size=12G"), "{cfg:?}");
    let logs = get(&client, &format!("{base}/deployments/{id}/logs")).await.unwrap();
    assert!(logs.to_string().contains("resuming at"), "the restart resumed rather than starting over: {logs}");
}

/// Rewrites the deployment's provisioning progress into the flat shape schema v12 wrote (every field at the top,
/// the task as `upid`, the address as `ipv4`, the last step `done`) and marks the data dir v12.
async fn as_v12_left_it(data: &std::path::Path, id: &str, step: &str) {
    use pvedeploy::core::provision::Progress;
    let cfg = pvedeploy::config::Config::for_data_dir(data).database;
    let store = pvedeploy::store::Store::open(&cfg).await.unwrap();
    let id = pvedeploy::core::deployment::DeploymentId::parse(id).unwrap();
    let p = store.load_progress(&id).await.unwrap().expect("progress was saved");
    let mut row = json!({ "step": p.step().as_str(), "attempts": p.attempts() });
    if let Some(node) = p.node() {
        row["node"] = json!(node.to_string());
    }
    if let Some(g) = p.guest() {
        row["vmid"] = json!(g.vmid.get());
        if let Some(a) = g.static_ip {
            row["static_ip"] = json!(a);
        }
    }
    if let Some(k) = p.host_key() {
        row["host_key"] = json!(k.to_text());
    }
    match &p {
        Progress::AwaitCreate { task: Some(t), .. } | Progress::AwaitStart { task: Some(t), .. } => row["upid"] = json!(t),
        Progress::Ready { ip: Some(ip), .. } => row["ipv4"] = json!(ip),
        _ => {}
    }
    assert_eq!(row["step"], step, "killed at the step the test means: {row}");
    store.write_raw_progress(&id, row).await.unwrap();
    pvedeploy::store::migrations::force_version(&store, 12).await.unwrap();
    assert!(store.close(Duration::from_secs(10)).await);
}

/// A data dir an agent of schema v12 left mid-clone (progress in the old shape, its task as `upid`) is upgraded
/// at start and the clone it was waiting for is followed to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_in_flight_in_the_v12_shape_resumes_after_the_upgrade() {
    kill_when_then("cloning the template", Some("/tasks/"), Some("await_create")).await;
}

/// The same mid-resize, the guest's pinned host key (when node SSH runs here) in the old shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resize_in_the_v12_shape_resumes_after_the_upgrade() {
    kill_when_then("configured", Some("/resize"), Some("resize")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_the_clone_then_restart_resumes_without_a_stray_guest() {
    kill_when("cloning the template", Some("/tasks/")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_the_guest_was_created() {
    kill_when("guest 1", Some("/config")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_the_resize_then_restart_resumes() {
    kill_when("configured", Some("/resize")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_starting_then_restart_resumes() {
    kill_when("starting guest", Some("/agent/")).await;
}
