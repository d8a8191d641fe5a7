//! A persistent simulator (`SimConfig::persistent`) started again on its state dir is the same cluster: guests,
//! configs, snapshots, running state, addresses, next VMID and tasks. A simulator without it (the default, as
//! every other test starts one) is a fresh install whatever the state dir holds, and a saved cluster that cannot be
//! read stops the start with an error naming the file.

mod common;

use std::path::Path;

use common::{fast_timing, start_in};
use pvedeploy_sim::{SimConfig, Simulator};

fn persistent(state: &Path) -> SimConfig {
    let mut cfg = SimConfig::sandbox(state.to_path_buf()).persistent();
    cfg.timing = fast_timing();
    cfg
}

#[tokio::test]
async fn a_persistent_simulator_started_again_is_the_same_cluster() {
    let state = tempfile::tempdir().unwrap();
    let tmpl = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";
    let s = start_in(tempfile::tempdir().unwrap(), persistent(state.path())).await;
    assert!(!s.handle.restored());
    assert_eq!(s.task("POST", "pve1", "/nodes/pve1/lxc", &[("vmid", "100"), ("ostemplate", tmpl), ("hostname", "ct1")]).await, "OK");
    let started = s.post("/nodes/pve1/lxc/100/status/start", &[]).await;
    assert_eq!(s.wait("pve1", started.data()).await, "OK");
    assert_eq!(s.task("POST", "pve1", "/nodes/pve1/lxc/100/snapshot", &[("snapname", "before")]).await, "OK");
    let ip = s.handle.guest_ipv4(100).expect("a started guest has an address");
    // A task that is still running when the simulator goes away.
    s.handle.faults().hang_task("vzshutdown");
    let hung = s.post("/nodes/pve1/lxc/100/status/shutdown", &[]).await;
    assert_eq!(hung.status, 200, "{hung:?}");
    s.handle.shutdown().await;

    let s = start_in(tempfile::tempdir().unwrap(), persistent(state.path())).await;
    assert!(s.handle.restored());
    assert_eq!(s.get("/nodes/pve1/lxc/100/status/current").await.data()["status"], "running");
    assert_eq!(s.handle.guest_ipv4(100), Some(ip), "a restored guest keeps its address");
    assert_eq!(s.get("/nodes/pve1/lxc/100/config").await.data()["hostname"], "ct1");
    let snaps = s.get("/nodes/pve1/lxc/100/snapshot").await;
    assert!(snaps.data().as_array().unwrap().iter().any(|x| x["name"] == "before"), "{snaps:?}");
    assert_eq!(s.get("/cluster/nextid").await.data(), "101", "VMIDs in use stay in use");
    let path = |upid: &serde_json::Value| format!("/nodes/pve1/tasks/{}/status", common::enc(upid.as_str().unwrap()));
    let done = s.get(&path(started.data())).await;
    assert_eq!((done.data()["status"].as_str(), done.data()["exitstatus"].as_str()), (Some("stopped"), Some("OK")), "{done:?}");
    let cut = s.get(&path(hung.data())).await;
    assert_eq!((cut.data()["status"].as_str(), cut.data()["exitstatus"].as_str()), (Some("stopped"), Some("unexpected status")), "{cut:?}");
    s.handle.shutdown().await;

    // Without `persistent` the same state dir gives a fresh install.
    let mut fresh = SimConfig::sandbox(state.path().to_path_buf());
    fresh.timing = fast_timing();
    let s = start_in(tempfile::tempdir().unwrap(), fresh).await;
    assert!(!s.handle.restored() && !s.handle.vm_exists(100));
    s.handle.shutdown().await;

    // A torn file is refused by name; nothing starts on half a cluster.
    let file = state.path().join("cluster.json");
    let text = std::fs::read(&file).unwrap();
    std::fs::write(&file, &text[..text.len() / 2]).unwrap();
    let err = match Simulator::start(persistent(state.path())).await {
        Ok(_) => panic!("a simulator started on a torn cluster file"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&file.display().to_string()) && err.contains("move the file away"), "{err}");
}
