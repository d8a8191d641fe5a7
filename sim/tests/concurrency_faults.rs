//! Races PVE shows (clones on the same `nextid`, storage lock contention) and injected faults.

mod common;

use std::time::{Duration, Instant};

use common::{start, start_with};
use serde_json::json;

#[tokio::test]
async fn ten_clones_on_nextid_race_like_pve() {
    let s = start().await;
    let mut handles = Vec::new();
    for i in 0..10 {
        let client = s.client.clone();
        let auth = s.auth.clone();
        let base = s.url("");
        handles.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 3)).await;
            let next: serde_json::Value = client
                .get(format!("{base}/cluster/nextid"))
                .header("Authorization", &auth)
                .send()
                .await
                .expect("nextid")
                .json()
                .await
                .expect("json");
            let id = next["data"].as_str().unwrap_or_default().to_string();
            let resp = client
                .post(format!("{base}/nodes/pve1/qemu/9000/clone"))
                .header("Authorization", &auth)
                .form(&[("newid", id.as_str()), ("full", "1")])
                .send()
                .await
                .expect("clone");
            let status = resp.status().as_u16();
            let reason = resp.extensions().get::<hyper::ext::ReasonPhrase>().map(|r| String::from_utf8_lossy(r.as_bytes()).to_string());
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            (id, status, reason, body["data"].clone())
        }));
    }
    let mut ok = 0;
    let mut sync_conflicts = 0;
    let mut task_conflicts = 0;
    for h in handles {
        let (id, status, reason, upid) = h.await.expect("join");
        if status == 500 {
            assert_eq!(reason.as_deref(), Some(format!("unable to create VM {id}: config file already exists").as_str()));
            sync_conflicts += 1;
            continue;
        }
        assert_eq!(status, 200);
        match s.wait("pve1", &upid).await.as_str() {
            "OK" => ok += 1,
            other => {
                assert_eq!(other, format!("unable to create VM {id}: config file already exists"));
                task_conflicts += 1;
            }
        }
    }
    assert!(ok >= 1, "at least one clone wins");
    assert!(sync_conflicts + task_conflicts >= 1, "the same nextid handed to concurrent callers collides");
    assert_eq!(ok + sync_conflicts + task_conflicts, 10);
}

#[tokio::test]
async fn concurrent_full_clones_contend_for_the_storage_lock() {
    let s = start_with(|cfg| {
        cfg.timing.clone_secs = 1.0;
        cfg.timing.lock_timeout_secs = 0.3;
    })
    .await;
    let a = s.post("/nodes/pve1/qemu/9000/clone", &[("newid", "100"), ("full", "1")]).await;
    let b = s.post("/nodes/pve1/qemu/9000/clone", &[("newid", "101"), ("full", "1")]).await;
    let (ra, rb) = tokio::join!(s.wait("pve1", a.data()), s.wait("pve1", b.data()));
    let mut results = [ra, rb];
    results.sort();
    assert_eq!(results[0], "OK");
    assert_eq!(results[1], "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout");
    assert!(!s.handle.vm_exists(101) || !s.handle.vm_exists(100), "the failed clone is cleaned up");
}

#[tokio::test]
async fn fault_lock_timeout_and_failing_task() {
    let s = start().await;
    s.handle.faults().force_lock_timeout(Some("shared"));
    let r = s.clone_vm(100, &[("full", "1"), ("storage", "shared")]).await;
    assert_eq!(r, "clone failed: cfs-lock 'storage-shared' error: got lock request timeout");
    s.handle.faults().fail_task("qmstart", "start failed: QEMU exited with code 1");
    assert_eq!(s.clone_vm(101, &[]).await, "OK");
    let r = s.task("POST", "pve1", "/nodes/pve1/qemu/101/status/start", &[]).await;
    assert_eq!(r, "start failed: QEMU exited with code 1");
    let log = s.get(&format!("/nodes/pve1/tasks/{}/log", common::enc(
        s.get("/nodes/pve1/tasks?typefilter=qmstart").await.data()[0]["upid"].as_str().unwrap_or_default()
    ))).await;
    assert_eq!(log.data().as_array().and_then(|l| l.last()).map(|l| l["t"].clone()), Some(json!("TASK ERROR: start failed: QEMU exited with code 1")));
}

#[tokio::test]
async fn fault_latency_and_hanging_task() {
    let s = start().await;
    s.handle.faults().add_latency("^/cluster/nextid$", Duration::from_millis(300)).expect("regex");
    let t = Instant::now();
    assert_eq!(s.get("/cluster/nextid").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(s.get("/version").await.status, 200);
    assert!(t.elapsed() < Duration::from_millis(300));

    s.handle.faults().hang_task("qmclone");
    let r = s.post("/nodes/pve1/qemu/9000/clone", &[("newid", "100")]).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let st = s.get(&format!("/nodes/pve1/tasks/{}/status", common::enc(r.data().as_str().unwrap_or_default()))).await;
    assert_eq!(st.data()["status"], "running");
    assert!(st.data().get("exitstatus").is_none());
}

#[tokio::test]
async fn fault_agent_never_answers() {
    let s = start().await;
    assert_eq!(s.clone_vm(100, &[]).await, "OK");
    s.handle.faults().agent_never_answers(Some(100));
    assert_eq!(s.task("POST", "pve1", "/nodes/pve1/qemu/100/status/start", &[]).await, "OK");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = s.post("/nodes/pve1/qemu/100/agent/ping", &[]).await;
    assert_eq!((r.status, r.reason.as_str()), (500, "QEMU guest agent is not running"));
}

#[tokio::test]
async fn fault_node_offline_and_control_endpoint() {
    let s = start().await;
    let (id, secret) = s.handle.admin_token();
    let admin = format!("PVEAPIToken={id}={secret}");
    let url = format!("https://localhost:{}/_sim/faults", s.handle.addr().port());
    let r = s.client.post(&url).json(&json!({"offline_nodes": ["pve2"]})).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 401, "control endpoint needs the admin token");
    let r = s.client.post(&url).header("Authorization", &admin).json(&json!({"offline_nodes": ["pve2"]})).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 200);

    let nodes = s.get("/nodes").await;
    assert_eq!(nodes.data()[1]["status"], "offline");
    let r = s.get("/nodes/pve2/qemu").await;
    assert_eq!((r.status, r.reason.as_str()), (595, "No route to host"));
    let r = s.get("/nodes/pve9/qemu").await;
    assert_eq!(r.status, 500);
    assert!(r.reason.starts_with("hostname lookup 'pve9' failed"));

    let r = s.client.delete(&url).header("Authorization", &admin).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(s.get("/nodes/pve2/qemu").await.status, 200);
}
