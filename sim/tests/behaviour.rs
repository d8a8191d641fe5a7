//! Cluster behaviour modelled on PVE: nodes, storage, clone, config, resize, power, agent, LXC,
//! snapshots, cloud-init, delete.

mod common;

use std::time::Duration;

use common::{enc, in_guest_pool, start, start_with};
use pvedeploy_sim::ClusterSpec;
use serde_json::Value;

#[tokio::test]
async fn nodes_storage_resources_nextid() {
    let s = start().await;
    let nodes = s.get("/nodes").await;
    let names: Vec<&str> = nodes.data().as_array().into_iter().flatten().filter_map(|n| n["node"].as_str()).collect();
    assert_eq!(names, ["pve1", "pve2"]);
    assert_eq!(nodes.data()[0]["status"], "online");
    assert!(s.handle.fingerprint_sha256().len() == 95 && s.handle.fingerprint_sha256().contains(':'));

    let st = s.get("/nodes/pve1/storage?content=vztmpl").await;
    assert_eq!(st.data().as_array().map(Vec::len), Some(1));
    let content = s.get("/nodes/pve2/storage/local/content?content=vztmpl").await;
    assert_eq!(content.data()[0]["volid"], "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst");
    let shared = s.get("/nodes/pve1/storage/shared/status").await;
    assert_eq!(shared.data()["shared"], 1);

    let res = s.get("/cluster/resources?type=vm").await;
    let t = &res.data()[0];
    assert_eq!((t["id"].as_str(), t["template"].as_u64(), t["type"].as_str()), (Some("qemu/9000"), Some(1), Some("qemu")));
    let res = s.get("/cluster/resources?type=storage").await;
    assert!(res.data().as_array().is_some_and(|a| a.iter().all(|r| r["type"] == "storage")));

    let next = s.get("/cluster/nextid").await;
    assert_eq!(next.data(), "100");
    let taken = s.get("/cluster/nextid?vmid=9000").await;
    assert_eq!(taken.status, 400);
    assert_eq!(taken.error("vmid"), "VM 9000 already exists");
    assert_eq!(s.get("/cluster/nextid?vmid=555").await.data(), "555");
    assert_eq!(s.get("/version").await.data()["version"], "9.1.1");
    assert_eq!(s.get("/cluster/status").await.data()[0]["type"], "cluster");
}

#[tokio::test]
async fn three_node_cluster_reports_different_load() {
    let s = start_with(|cfg| cfg.cluster = ClusterSpec::three_nodes_uneven()).await;
    let r = s.get("/cluster/resources?type=node").await;
    let cpu = |n: &str| r.data().as_array().into_iter().flatten().find(|x| x["node"] == n).map(|x| x["cpu"].as_f64().unwrap_or(9.0)).unwrap_or(9.0);
    assert!(cpu("pve1") > cpu("pve2") && cpu("pve2") > cpu("pve3"));
}

#[tokio::test]
async fn linked_clone_rules_and_clone_lock() {
    let s = start().await;
    let r = s.post("/nodes/pve1/qemu/9000/clone", &[("newid", "100"), ("storage", "shared")]).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.reason, "parameter 'storage' not allowed for linked clones");
    assert_eq!(r.body["message"], "parameter 'storage' not allowed for linked clones\n");
    let r = s.post("/nodes/pve1/qemu/9000/clone", &[("newid", "100"), ("target", "pve2"), ("full", "1")]).await;
    assert_eq!(r.reason, "can't clone VM to node 'pve2' (VM uses local storage)");

    // linked clone: lock: clone while the task runs, base volume referenced afterwards
    let r = s.post("/nodes/pve1/qemu/9000/clone", &[("newid", "100"), ("name", "web1")]).await;
    assert_eq!(r.status, 200);
    let upid = r.data().clone();
    assert!(upid.as_str().unwrap_or_default().contains(":qmclone:9000:root@pam!pvedeploy:"));
    tokio::time::sleep(Duration::from_millis(60)).await;
    let locked = s.get("/nodes/pve1/qemu/100/config").await;
    assert_eq!(locked.data()["lock"], "clone");
    let put = s.put("/nodes/pve1/qemu/100/config", &[("cores", "4")]).await;
    assert_eq!(put.reason, "VM is locked (clone)");
    assert_eq!(s.wait("pve1", &upid).await, "OK");
    let cfg = s.get("/nodes/pve1/qemu/100/config").await;
    assert_eq!(cfg.data()["name"], "web1");
    // Drives are cloned in sorted key order (qemu-server `src/PVE/API2/Qemu.pm:4633`): the template's `efidisk0`
    // takes the clone's disk-0, `scsi0` disk-1.
    assert!(cfg.data()["scsi0"].as_str().unwrap_or_default().starts_with("local-lvm:base-9000-disk-0/vm-100-disk-1,"), "{cfg:?}");
    assert!(cfg.data()["efidisk0"].as_str().unwrap_or_default().starts_with("local-lvm:base-9000-disk-1/vm-100-disk-0,"), "{cfg:?}");
    assert!(cfg.data().get("lock").is_none() && cfg.data().get("template").is_none());
    assert_ne!(cfg.data()["net0"], s.get("/nodes/pve1/qemu/9000/config").await.data()["net0"]);

    // full clone onto shared storage, then to another node
    assert_eq!(s.clone_vm(101, &[("full", "1"), ("storage", "shared")]).await, "OK");
    let cfg = s.get("/nodes/pve1/qemu/101/config").await;
    assert!(cfg.data()["scsi0"].as_str().unwrap_or_default().starts_with("shared:101/vm-101-disk-1.qcow2,size=4G"), "{cfg:?}");
    let r = s.task("POST", "pve1", "/nodes/pve1/qemu/101/clone", &[("newid", "102"), ("target", "pve2")]).await;
    assert_eq!(r, "OK");
    assert_eq!(s.get("/nodes/pve2/qemu/102/config").await.status, 200);
    let gone = s.get("/nodes/pve1/qemu/102/config").await;
    assert_eq!(gone.reason, "Configuration file 'nodes/pve1/qemu-server/102.conf' does not exist");
}

#[tokio::test]
async fn config_digest_delete_pending_and_password_masking() {
    let s = start().await;
    assert_eq!(s.clone_vm(100, &[]).await, "OK");
    let cfg = s.get("/nodes/pve1/qemu/100/config").await;
    let digest = cfg.data()["digest"].as_str().unwrap_or_default().to_string();
    assert_eq!(digest.len(), 40);
    let r = s.put("/nodes/pve1/qemu/100/config", &[("cores", "4"), ("cipassword", "s3cret"), ("digest", &digest)]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = s.put("/nodes/pve1/qemu/100/config", &[("cores", "2"), ("digest", &digest)]).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.reason, "detected modified configuration - file changed by other user? Try again.");
    let cfg = s.get("/nodes/pve1/qemu/100/config").await;
    assert_eq!(cfg.data()["cores"], 4);
    assert_eq!(cfg.data()["cipassword"], "**********");
    assert!(s.handle.vm_config(100).and_then(|c| c.get("cipassword").cloned()).is_some_and(|p| p.starts_with("$5$")));
    let r = s.put("/nodes/pve1/qemu/100/config", &[("delete", "cipassword,tags")]).await;
    assert_eq!(r.status, 200);
    assert!(s.get("/nodes/pve1/qemu/100/config").await.data().get("cipassword").is_none());

    // POST config is asynchronous (qmconfig task)
    let r = s.post("/nodes/pve1/qemu/100/config", &[("memory", "4096")]).await;
    assert_eq!(s.wait("pve1", r.data()).await, "OK");

    // running: non-hotpluggable changes go to pending
    assert_eq!(s.task("POST", "pve1", "/nodes/pve1/qemu/100/status/start", &[]).await, "OK");
    let r = s.put("/nodes/pve1/qemu/100/config", &[("cores", "8"), ("ciuser", "admin")]).await;
    assert_eq!(r.status, 200);
    let pending = s.get("/nodes/pve1/qemu/100/pending").await;
    let cores = pending.data().as_array().into_iter().flatten().find(|e| e["key"] == "cores").cloned().unwrap_or(Value::Null);
    assert_eq!((cores["value"].as_u64(), cores["pending"].as_u64()), (Some(4), Some(8)));
    assert_eq!(s.get("/nodes/pve1/qemu/100/config?current=1").await.data()["cores"], 4);
    assert_eq!(s.get("/nodes/pve1/qemu/100/config").await.data()["cores"], 8);
}

#[tokio::test]
async fn resize_grows_only() {
    let s = start().await;
    assert_eq!(s.clone_vm(100, &[("full", "1")]).await, "OK");
    assert_eq!(s.task("PUT", "pve1", "/nodes/pve1/qemu/100/resize", &[("disk", "scsi0"), ("size", "+6G")]).await, "OK");
    let cfg = s.get("/nodes/pve1/qemu/100/config").await;
    assert!(cfg.data()["scsi0"].as_str().unwrap_or_default().ends_with("size=10G"), "{cfg:?}");
    assert_eq!(s.task("PUT", "pve1", "/nodes/pve1/qemu/100/resize", &[("disk", "scsi0"), ("size", "32G")]).await, "OK");
    let shrink = s.task("PUT", "pve1", "/nodes/pve1/qemu/100/resize", &[("disk", "scsi0"), ("size", "8G")]).await;
    assert_eq!(shrink, "shrinking disks is not supported");
    let bad = s.put("/nodes/pve1/qemu/100/resize", &[("disk", "scsi0"), ("size", "+6GB")]).await;
    assert_eq!(bad.error("size"), "value does not match the regex pattern");
}

#[tokio::test]
async fn start_agent_and_interfaces() {
    let s = start().await;
    assert_eq!(s.clone_vm(100, &[]).await, "OK");
    let r = s.post("/nodes/pve1/qemu/100/agent/ping", &[]).await;
    assert_eq!(r.reason, "VM 100 is not running");
    assert_eq!(s.task("POST", "pve1", "/nodes/pve1/qemu/100/status/start", &[]).await, "OK");
    assert_eq!(s.get("/nodes/pve1/qemu/100/status/current").await.data()["status"], "running");
    let r = s.get("/nodes/pve1/qemu/100/agent/network-get-interfaces").await;
    assert_eq!((r.status, r.reason.as_str()), (500, "QEMU guest agent is not running"));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let r = s.post("/nodes/pve1/qemu/100/agent/ping", &[]).await;
    assert_eq!(r.status, 200);
    let r = s.get("/nodes/pve1/qemu/100/agent/network-get-interfaces").await;
    let eth0 = &r.data()["result"][1];
    assert_eq!(eth0["name"], "eth0");
    let mac = s.get("/nodes/pve1/qemu/100/config").await.data()["net0"].as_str().unwrap_or_default()[7..24].to_lowercase();
    assert_eq!(eth0["hardware-address"], mac.as_str());
    let ip = eth0["ip-addresses"][0]["ip-address"].as_str().unwrap_or_default().to_string();
    assert!(in_guest_pool(&ip), "{ip}");
    assert_eq!(s.handle.guest_ipv4(100).map(|i| i.to_string()), Some(ip));
    assert_eq!(s.get("/nodes/pve1/qemu/100/agent/get-osinfo").await.data()["result"]["id"], "debian");

    // agent disabled → not configured
    s.handle.set_vm_config(100, "agent", "0");
    assert_eq!(s.post("/nodes/pve1/qemu/100/agent/ping", &[]).await.reason, "No QEMU guest agent configured");

    // delete refuses while running
    let r = s.form("DELETE", "/nodes/pve1/qemu/100", &[]).await;
    assert_eq!(r.reason, "VM 100 is running - destroy failed");
    assert_eq!(s.task("POST", "pve1", "/nodes/pve1/qemu/100/status/shutdown", &[]).await, "OK");
    assert_eq!(s.task("POST", "pve1", "/nodes/pve1/qemu/100/status/shutdown", &[]).await, "VM 100 not running");
    let r = s.form("DELETE", "/nodes/pve1/qemu/100?purge=1&destroy-unreferenced-disks=1", &[]).await;
    assert_eq!(s.wait("pve1", r.data()).await, "OK");
    assert!(!s.handle.vm_exists(100));
}

#[tokio::test]
async fn lxc_create_start_interfaces() {
    let s = start().await;
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAbc me@laptop";
    let r = s.post("/nodes/pve2/lxc", &[
        ("vmid", "200"),
        ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
        ("hostname", "ct1"),
        ("ssh-public-keys", key),
        ("net0", "name=eth0,bridge=vmbr0,ip=dhcp"),
        ("rootfs", "local-lvm:8"),
        ("unprivileged", "1"),
        ("features", "nesting=1"),
        ("cores", "2"),
        ("memory", "1024"),
        ("swap", "0"),
        ("tags", "app"),
        ("start", "1"),
    ]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.data().as_str().unwrap_or_default().contains(":vzcreate:200:"));
    assert_eq!(s.wait("pve2", r.data()).await, "OK");
    let upid = r.data().as_str().unwrap().to_string();
    let log = s.get(&format!("/nodes/pve2/tasks/{}/log", upid.replace(':', "%3A").replace('@', "%40").replace('!', "%21"))).await;
    let lines: Vec<&str> = log.data().as_array().unwrap().iter().filter_map(|l| l["t"].as_str()).collect();
    let done = lines.iter().find(|l| l.starts_with("done: SHA256:")).unwrap_or_else(|| panic!("no host key fingerprint in {lines:?}"));
    assert!(done.ends_with(" root@ct1") && done.len() == "done: SHA256: root@ct1".len() + 43, "{done}");
    let cfg = s.get("/nodes/pve2/lxc/200/config").await;
    assert_eq!(cfg.data()["rootfs"], "local-lvm:vm-200-disk-0,size=8G");
    assert_eq!(cfg.data()["memory"], 1024);
    assert!(cfg.data()["net0"].as_str().unwrap_or_default().contains("hwaddr=BC:24:11:"));
    // Running, not configured yet: lo, and eth0 with only its link-local IPv6 (pve-container LXC.pm:1262-1302).
    let early = s.get("/nodes/pve2/lxc/200/interfaces").await;
    assert_eq!(early.data()[0]["name"], "lo", "{early:?}");
    assert!(early.data()[1]["inet"].is_null() && early.data()[1]["ip-addresses"][0]["ip-address-type"] == "inet6", "{early:?}");
    tokio::time::sleep(Duration::from_millis(350)).await;
    let ifs = s.get("/nodes/pve2/lxc/200/interfaces").await;
    assert_eq!(ifs.data()[1]["ip-addresses"][0]["ip-address-type"], "inet", "{ifs:?}");
    assert_eq!(ifs.data()[1]["name"], "eth0");
    let inet = ifs.data()[1]["inet"].as_str().unwrap_or_default();
    assert!(inet.ends_with("/8") && in_guest_pool(inet.trim_end_matches("/8")), "{inet}");
    assert_eq!(s.get("/nodes/pve2/lxc").await.data()[0]["status"], "running");

    let again = s.post("/nodes/pve1/lxc", &[("vmid", "200"), ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst")]).await;
    assert_eq!(again.reason, "CT 200 already exists on node 'pve2'");
    // A template missing on the node: the API answers a task, which fails and leaves nothing behind
    // (pve-container `src/PVE/API2/LXC.pm:616-629`, `src/PVE/LXC/Create.pm:645-646`).
    let missing = s.post("/nodes/pve1/lxc", &[("vmid", "201"), ("ostemplate", "local:vztmpl/nope.tar.zst")]).await;
    assert_eq!(missing.status, 200, "{missing:?}");
    assert_eq!(s.wait("pve1", missing.data()).await, "unable to create CT 201 - can't find file 'local:vztmpl/nope.tar.zst'");
    assert_eq!(s.get("/nodes/pve1/lxc/201/config").await.status, 500);
    let left = s.get("/nodes/pve1/storage/local-lvm/content?vmid=201").await;
    assert_eq!(left.data().as_array().map(Vec::len), Some(0), "{left:?}");
}

#[tokio::test]
async fn snapshots_list_rollback_delete() {
    let s = start().await;
    assert_eq!(s.clone_vm(100, &[]).await, "OK");
    assert_eq!(s.task("POST", "pve1", "/nodes/pve1/qemu/100/snapshot", &[("snapname", "before"), ("description", "clean")]).await, "OK");
    assert_eq!(s.put("/nodes/pve1/qemu/100/config", &[("cores", "6")]).await.status, 200);
    let list = s.get("/nodes/pve1/qemu/100/snapshot").await;
    let names: Vec<&str> = list.data().as_array().into_iter().flatten().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["before", "current"]);
    assert_eq!(list.data()[1]["parent"], "before");
    let dup = s.post("/nodes/pve1/qemu/100/snapshot", &[("snapname", "before")]).await;
    assert_eq!(dup.reason, "snapshot name 'before' already used");
    assert_eq!(s.task("POST", "pve1", "/nodes/pve1/qemu/100/snapshot/before/rollback", &[]).await, "OK");
    assert_eq!(s.get("/nodes/pve1/qemu/100/config").await.data()["cores"], 2);
    assert_eq!(s.task("DELETE", "pve1", "/nodes/pve1/qemu/100/snapshot/before", &[]).await, "OK");
    assert_eq!(s.get("/nodes/pve1/qemu/100/snapshot").await.data().as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn cloudinit_dump_network_meta_and_snippets() {
    let s = start().await;
    assert_eq!(s.clone_vm(100, &[("name", "web1")]).await, "OK");
    let r = s.put("/nodes/pve1/qemu/100/config", &[("ipconfig0", "ip=127.77.50.5/8,gw=127.0.0.1"), ("searchdomain", "example.com"), ("ciuser", "root")]).await;
    assert_eq!(r.status, 200);
    let user = s.get("/nodes/pve1/qemu/100/cloudinit/dump?type=user").await;
    assert_eq!(
        user.data(),
        "#cloud-config\nhostname: web1\nmanage_etc_hosts: true\nfqdn: web1.example.com\nuser: root\ndisable_root: False\nchpasswd:\n  expire: False\npackage_upgrade: true\n"
    );
    let net = s.get("/nodes/pve1/qemu/100/cloudinit/dump?type=network").await;
    let net = net.data().as_str().unwrap_or_default().to_string();
    assert!(net.starts_with("version: 1\nconfig:\n    - type: physical\n      name: eth0\n      mac_address: 'bc:24:11:"), "{net}");
    assert!(net.contains("      - type: static\n        address: '127.77.50.5'\n        netmask: '255.0.0.0'\n        gateway: '127.0.0.1'\n"), "{net}");
    let meta = s.get("/nodes/pve1/qemu/100/cloudinit/dump?type=meta").await;
    assert!(meta.data().as_str().unwrap_or_default().starts_with("instance-id: "));

    // a snippet written to the storage's directory shows up as content
    let dir = s.handle.storage_dir("pve1", "local").expect("local storage");
    std::fs::write(dir.join("snippets/user.yaml"), "#cloud-config\nruncmd: [true]\n").expect("write snippet");
    let content = s.get("/nodes/pve1/storage/local/content?content=snippets").await;
    assert_eq!(content.data()[0]["volid"], "local:snippets/user.yaml");
    let r = s.put("/nodes/pve1/qemu/100/config", &[("cicustom", "user=local:snippets/user.yaml")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(s.task("POST", "pve1", "/nodes/pve1/qemu/100/status/start", &[]).await, "OK");
    let bad = s.put("/nodes/pve1/qemu/100/config", &[("cicustom", &format!("user={}", "local:snippets/missing.yaml"))]).await;
    assert_eq!(bad.status, 200);
    let _ = enc;
}

fn multipart(fields: &[(&str, &str)], file: (&str, &[u8])) -> (String, Vec<u8>) {
    let boundary = "----pvesimBoundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes());
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"filename\"; filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n", file.0).as_bytes(),
    );
    body.extend_from_slice(file.1);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn upload_takes_iso_vztmpl_import_only() {
    let s = start().await;
    let send = |fields: Vec<(&'static str, &'static str)>, name: &'static str| {
        let (ct, body) = multipart(&fields, (name, b"ISO-DATA"));
        s.client.post(s.url("/nodes/pve1/storage/local/upload")).header("Authorization", &s.auth).header("Content-Type", ct).body(body)
    };
    let r = s.send(send(vec![("content", "snippets")], "user.yaml")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error("content"), "value 'snippets' does not have a value in the enumeration 'iso, vztmpl, import'");
    let r = s.send(send(vec![("content", "iso")], "notes.txt")).await;
    assert_eq!(r.error("filename"), "wrong file extension");
    let r = s.send(send(vec![("content", "iso"), ("checksum", "abc")], "x.iso")).await;
    assert_eq!(r.error("checksum-algorithm"), "missing property - 'checksum' requires this property");
    let r = s.send(send(vec![("content", "iso")], "debian 12.iso")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.data().as_str().unwrap_or_default().contains(":imgcopy::"));
    assert_eq!(s.wait("pve1", r.data()).await, "OK");
    let content = s.get("/nodes/pve1/storage/local/content?content=iso").await;
    assert_eq!(content.data()[0]["volid"], "local:iso/debian_12.iso");
    assert_eq!(content.data()[0]["size"], 8);
}

#[tokio::test]
async fn lxc_snapshots_templates_and_already_exists() {
    let s = start().await;
    let tmpl = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";
    assert_eq!(s.task("POST", "pve1", "/nodes/pve1/lxc", &[("vmid", "300"), ("ostemplate", tmpl), ("hostname", "ct3")]).await, "OK");
    assert_eq!(s.get("/nodes/pve1/lxc/300/config").await.data()["rootfs"], "local:300/vm-300-disk-0.qcow2,size=4G");
    assert_eq!(s.task("POST", "pve1", "/nodes/pve1/lxc/300/snapshot", &[("snapname", "s1")]).await, "OK");
    let list = s.get("/nodes/pve1/lxc/300/snapshot").await;
    assert_eq!((list.data()[0]["name"].as_str(), list.data()[1]["name"].as_str()), (Some("s1"), Some("current")));
    assert_eq!(s.task("POST", "pve1", "/nodes/pve1/lxc/300/snapshot/s1/rollback", &[]).await, "OK");
    assert_eq!(s.task("DELETE", "pve1", "/nodes/pve1/lxc/300/snapshot/s1", &[]).await, "OK");
    let r = s.post("/nodes/pve1/lxc/300/status/stop", &[]).await;
    assert_eq!(r.reason, "CT 300 not running");

    // POST /nodes/{node}/qemu on a taken VMID
    let r = s.post("/nodes/pve2/qemu", &[("vmid", "300"), ("name", "x")]).await;
    assert_eq!((r.status, r.reason.as_str()), (500, "CT 300 already exists on node 'pve1'"));

    // templates: LXC synchronously, QEMU as a task (disks become base volumes)
    assert_eq!(s.post("/nodes/pve1/lxc/300/template", &[]).await.status, 200);
    assert_eq!(s.get("/nodes/pve1/lxc/300/config").await.data()["template"], 1);
    assert_eq!(s.clone_vm(100, &[("full", "1")]).await, "OK");
    assert_eq!(s.task("POST", "pve1", "/nodes/pve1/qemu/100/template", &[]).await, "OK");
    let cfg = s.get("/nodes/pve1/qemu/100/config").await;
    assert!(cfg.data()["scsi0"].as_str().unwrap_or_default().starts_with("local-lvm:base-100-disk-1,"), "{cfg:?}");
    let r = s.post("/nodes/pve1/qemu/100/status/start", &[]).await;
    assert_eq!(s.wait("pve1", r.data()).await, "you can't start a vm if it's a template");
}
