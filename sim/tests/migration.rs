//! Migration over the API (`qmigrate` / `vzmigrate`) and the `drop_connection` / `no_quorum`
//! faults, end to end through HTTPS.

mod common;

use std::time::{Duration, Instant};

use common::start;
use pvedeploy_sim::DropWhen;

#[tokio::test]
async fn qemu_offline_migration_moves_guest_and_disks() {
    let s = start().await;
    // A full clone: a linked clone's disk is a clone of the template's base volume on local storage,
    // which PVE refuses to migrate (see `a_linked_clone_on_local_storage_cannot_migrate`).
    assert_eq!(s.clone_vm(100, &[("full", "1")]).await, "OK");
    let r = s.post("/nodes/pve1/qemu/100/migrate", &[("target", "pve1")]).await;
    assert_eq!((r.status, r.error("target")), (400, "target is local node.".to_string()), "{r:?}");
    let r = s.post("/nodes/pve1/qemu/100/migrate", &[("target", "pve9")]).await;
    assert_eq!((r.status, r.reason.as_str()), (500, "no such cluster node 'pve9'"));
    let r = s.post("/nodes/pve1/qemu/100/migrate", &[("target", "pve2")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.data().as_str().unwrap_or_default().contains(":qmigrate:100:"), "{r:?}");
    assert_eq!(s.wait("pve1", r.data()).await, "OK");
    let gone = s.get("/nodes/pve1/qemu/100/config").await;
    assert_eq!(gone.reason, "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist");
    let cfg = s.get("/nodes/pve2/qemu/100/config").await;
    assert_eq!(cfg.status, 200);
    assert!(cfg.data()["lock"].is_null(), "{cfg:?}");
    // The template's efidisk0 sorts first and took disk-0 at the clone (qemu-server `API2/Qemu.pm:4633`).
    assert!(cfg.data()["scsi0"].as_str().unwrap_or_default().starts_with("local-lvm:vm-100-disk-1,"), "{cfg:?}");
    let content = s.get("/nodes/pve2/storage/local-lvm/content?vmid=100").await;
    let vols: Vec<&str> = content.data().as_array().unwrap().iter().filter_map(|v| v["volid"].as_str()).collect();
    for vol in ["local-lvm:vm-100-disk-0", "local-lvm:vm-100-disk-1", "local-lvm:vm-100-disk-2", "local-lvm:vm-100-cloudinit"] {
        assert!(vols.contains(&vol), "{vol} in {vols:?}");
    }
    let left = s.get("/nodes/pve1/storage/local-lvm/content?vmid=100").await;
    assert_eq!(left.data().as_array().map(Vec::len), Some(0), "{left:?}");
    let res = s.get("/cluster/resources?type=vm").await;
    let entry = res.data().as_array().unwrap().iter().find(|v| v["vmid"] == 100).cloned().unwrap_or_default();
    assert_eq!(entry["node"], "pve2", "{entry}");
}

#[tokio::test]
async fn running_vm_migrates_online_with_local_disks() {
    let s = start().await;
    assert_eq!(s.clone_vm(100, &[("full", "1")]).await, "OK");
    assert_eq!(s.task("POST", "pve1", "/nodes/pve1/qemu/100/status/start", &[]).await, "OK");
    let ip = s.handle.guest_ipv4(100);
    let r = s.post("/nodes/pve1/qemu/100/migrate", &[("target", "pve2")]).await;
    assert_eq!((r.status, r.reason.as_str()), (500, "can't migrate running VM without --online"));
    let status = s.task("POST", "pve1", "/nodes/pve1/qemu/100/migrate", &[("target", "pve2"), ("online", "1")]).await;
    assert_eq!(status, "migration aborted");
    assert!(s.handle.vm_config(100).unwrap().get("lock").is_none(), "the lock is gone after the failure");
    let status = s
        .task("POST", "pve1", "/nodes/pve1/qemu/100/migrate", &[("target", "pve2"), ("online", "1"), ("with-local-disks", "1")])
        .await;
    assert_eq!(status, "OK");
    let cur = s.get("/nodes/pve2/qemu/100/status/current").await;
    assert_eq!(cur.data()["status"], "running", "{cur:?}");
    assert_eq!(s.handle.guest_ipv4(100), ip, "the address stays");
}

#[tokio::test]
async fn container_restart_migration() {
    let s = start().await;
    let tmpl = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";
    let created = s.task("POST", "pve1", "/nodes/pve1/lxc", &[("vmid", "200"), ("ostemplate", tmpl), ("storage", "shared"), ("start", "1")]).await;
    assert_eq!(created, "OK");
    let r = s.post("/nodes/pve1/lxc/200/migrate", &[("target", "pve2")]).await;
    assert_eq!((r.status, r.reason.as_str()), (500, "can't migrate running container without --online or --restart"));
    let status = s.task("POST", "pve1", "/nodes/pve1/lxc/200/migrate", &[("target", "pve2"), ("restart", "1")]).await;
    assert_eq!(status, "OK");
    let cur = s.get("/nodes/pve2/lxc/200/status/current").await;
    assert_eq!(cur.data()["status"], "running", "{cur:?}");
    assert!(s.get("/nodes/pve2/lxc/200/config").await.data()["rootfs"].as_str().unwrap_or_default().starts_with("shared:"));
}

#[tokio::test]
async fn dropped_connections_before_and_after_the_call() {
    let s = start().await;
    let faults = s.handle.faults();
    faults.drop_connection(r"^/nodes/[^/]+/qemu/\d+/clone$", Some("POST"), DropWhen::After, 1).expect("rule");
    let sent = s
        .client
        .post(s.url("/nodes/pve1/qemu/9000/clone"))
        .header("Authorization", &s.auth)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("newid=100")
        .send()
        .await;
    assert!(sent.is_err(), "no answer expected: {sent:?}");
    // the clone ran anyway
    let t = Instant::now();
    while !s.handle.vm_config(100).is_some_and(|c| !c.contains_key("lock")) {
        assert!(t.elapsed() < Duration::from_secs(10), "the dropped clone never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // the rule is used up
    assert!(faults.snapshot().drop_connection.is_empty());
    assert_eq!(s.clone_vm(101, &[]).await, "OK");
    // before: the call never runs
    faults.drop_connection("/status/start$", None, DropWhen::Before, 1).expect("rule");
    let sent = s.client.post(s.url("/nodes/pve1/qemu/100/status/start")).header("Authorization", &s.auth).send().await;
    assert!(sent.is_err(), "no answer expected: {sent:?}");
    let tasks = s.get("/nodes/pve1/tasks?typefilter=qmstart&source=all").await;
    assert_eq!(tasks.body["total"], 0, "{tasks:?}");
    // the server is unaffected
    assert_eq!(s.get("/version").await.status, 200);
}

#[tokio::test]
async fn no_quorum_refuses_writes_and_serves_reads() {
    let s = start().await;
    s.handle.faults().set_no_quorum(true);
    let r = s.post("/nodes/pve1/qemu/9000/clone", &[("newid", "100")]).await;
    assert_eq!((r.status, r.reason.as_str()), (500, "cluster not ready - no quorum?"));
    assert_eq!(r.body["message"], "cluster not ready - no quorum?\n");
    assert_eq!(s.put("/nodes/pve1/qemu/9000/config", &[("name", "x")]).await.status, 500);
    // parameter errors come first: PVE dies inside the handler
    assert_eq!(s.post("/nodes/pve1/qemu/9000/clone", &[]).await.status, 400);
    assert_eq!(s.get("/nodes/pve1/qemu").await.status, 200);
    assert!(!s.handle.vm_exists(100));
    s.handle.faults().set_no_quorum(false);
    assert_eq!(s.clone_vm(100, &[]).await, "OK");
}

#[tokio::test]
async fn a_linked_clone_on_local_storage_cannot_migrate() {
    let s = start().await;
    assert_eq!(s.clone_vm(101, &[]).await, "OK");
    let status = s.task("POST", "pve1", "/nodes/pve1/qemu/101/migrate", &[("target", "pve2")]).await;
    assert_eq!(status, "migration aborted");
    assert!(s.handle.vm_exists(101));
    assert_eq!(s.handle.guest_node(101).as_deref(), Some("pve1"), "it stays where it was");
}
