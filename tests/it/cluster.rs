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
