//! The simulator rejects what PVE rejects (with PVE's wording) and accepts what PVE accepts.

mod common;

use common::{enc, start, start_with};
use pvedeploy_sim::TokenSpec;
use serde_json::json;

const UNKNOWN: &str = "property is not defined in schema and the schema does not allow additional properties";

#[tokio::test]
async fn unknown_parameter_is_a_400_with_errors() {
    let s = start().await;
    let r = s.post("/nodes/pve1/qemu/9000/clone", &[("newid", "100"), ("fullclone", "1")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.reason, "Parameter verification failed.");
    assert_eq!(r.error("fullclone"), UNKNOWN);
    assert_eq!(r.body["data"], serde_json::Value::Null);
    assert_eq!(r.body["message"], "Parameter verification failed.\n");
}

#[tokio::test]
async fn boolean_sent_as_true_fails_in_forms_but_json_true_is_fine() {
    let s = start().await;
    let r = s.post("/nodes/pve1/qemu/9000/clone", &[("newid", "100"), ("full", "true")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error("full"), "type check ('boolean') failed - got 'true'");

    let r = s.json("POST", "/nodes/pve1/qemu/9000/clone", json!({"newid": 100, "full": true})).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.data().as_str().unwrap_or_default().starts_with("UPID:pve1:"));

    // a JSON string "true" is as wrong as the form value
    let r = s.json("POST", "/nodes/pve1/qemu/9000/clone", json!({"newid": 101, "full": "true"})).await;
    assert_eq!(r.error("full"), "type check ('boolean') failed - got 'true'");
}

#[tokio::test]
async fn bad_net0_values_are_rejected_like_pve() {
    let s = start().await;
    assert_eq!(s.clone_vm(100, &[("full", "1")]).await, "OK");
    let r = s.put("/nodes/pve1/qemu/100/config", &[("net0", "virtio=BC:24:11:00:00:0Z,bridge=vmbr0")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.error("net0"),
        "invalid format - format error\nnet0.macaddr: invalid format - value does not look like a valid unicast MAC address\n\n"
    );
    let r = s.put("/nodes/pve1/qemu/100/config", &[("net0", "model=virtio2,bridge=vmbr0")]).await;
    assert!(r.error("net0").contains("net0.model: value 'virtio2' does not have a value in the enumeration 'e1000, "), "{r:?}");
    let r = s.put("/nodes/pve1/qemu/100/config", &[("net0", "virtio,bridge=vmbr0,speed=10")]).await;
    assert_eq!(r.error("net0"), "invalid format - invalid key in comma-separated list property: speed\n");
    let r = s.put("/nodes/pve1/qemu/100/config", &[("net99", "virtio,bridge=vmbr0")]).await;
    assert_eq!(r.error("net99"), UNKNOWN);
    // good ones
    let r = s.put("/nodes/pve1/qemu/100/config", &[("net1", "virtio,bridge=vmbr0,firewall=yes")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let cfg = s.get("/nodes/pve1/qemu/100/config").await;
    let net1 = cfg.data()["net1"].as_str().unwrap_or_default().to_string();
    assert!(net1.starts_with("virtio=BC:24:11:"), "{net1}");
}

#[tokio::test]
async fn unencoded_sshkeys_fail_and_encoded_ones_work() {
    let s = start().await;
    assert_eq!(s.clone_vm(100, &[]).await, "OK");
    let raw = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG+x/y=z user@host";
    let r = s.put("/nodes/pve1/qemu/100/config", &[("sshkeys", raw)]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error("sshkeys"), format!("invalid format - invalid urlencoded string: {raw}\n"));

    // percent-encoded (as PVE wants it), comment with spaces and + / =
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG+x/y+Qz0b1W2= deploy key for web+db/1=ok";
    let encoded = enc(key);
    let r = s.put("/nodes/pve1/qemu/100/config", &[("sshkeys", &encoded), ("ciuser", "deploy")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let cfg = s.get("/nodes/pve1/qemu/100/config").await;
    assert_eq!(cfg.data()["sshkeys"], encoded.as_str());
    let dump = s.get("/nodes/pve1/qemu/100/cloudinit/dump?type=user").await;
    let user = dump.data().as_str().unwrap_or_default();
    assert!(user.contains(&format!("ssh_authorized_keys:\n  - {key}\n")), "{user}");
    assert!(user.starts_with("#cloud-config\nhostname: "), "{user}");
    assert!(user.contains("user: deploy\n") && user.contains("chpasswd:\n  expire: False\nusers:\n  - default\npackage_upgrade: true\n"), "{user}");

    // encoded, but not a key at all
    let r = s.put("/nodes/pve1/qemu/100/config", &[("sshkeys", &enc("hello world"))]).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.reason, "SSH public key validation error");
}

#[tokio::test]
async fn vm_name_with_underscore_is_not_a_dns_name() {
    let s = start().await;
    let r = s.post("/nodes/pve1/qemu/9000/clone", &[("newid", "100"), ("name", "web_1")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error("name"), "invalid format - value does not look like a valid DNS name\n");
    let r = s.post("/nodes/pve1/qemu/9000/clone", &[("newid", "100"), ("name", "web-1")]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn numbers_enums_patterns_and_required_parameters() {
    let s = start().await;
    let r = s.post("/nodes/pve1/qemu/9000/clone", &[]).await;
    assert_eq!(r.error("newid"), "property is missing and it is not optional");
    let r = s.post("/nodes/pve1/qemu/9000/clone", &[("newid", "99")]).await;
    // PVE checks the format before minimum/maximum
    assert_eq!(r.error("newid"), "invalid format - value does not look like a valid VM ID\n");
    let r = s.put("/nodes/pve1/qemu/9000/config", &[("cores", "0")]).await;
    assert_eq!(r.error("cores"), "value must have a minimum value of 1");
    let r = s.post("/nodes/pve1/qemu/9000/clone", &[("newid", "abc")]).await;
    assert_eq!(r.error("newid"), "type check ('integer') failed - got 'abc'");
    let r = s.post("/nodes/pve1/qemu/9000/clone", &[("newid", "100"), ("format", "vdi")]).await;
    assert_eq!(r.error("format"), "value 'vdi' does not have a value in the enumeration 'raw, qcow2, vmdk'");
    let r = s.get("/nodes/pve1/qemu/9000/cloudinit/dump?type=vendor").await;
    assert_eq!(r.error("type"), "value 'vendor' does not have a value in the enumeration 'user, network, meta'");
    let r = s.get("/nodes/pve1/qemu/abc/config").await;
    assert_eq!(r.error("vmid"), "type check ('integer') failed - got 'abc'");
}

#[tokio::test]
async fn property_strings_lxc_ipconfig_and_tags() {
    let s = start().await;
    assert_eq!(s.clone_vm(100, &[]).await, "OK");
    let r = s.put("/nodes/pve1/qemu/100/config", &[("ipconfig0", "ip=10.0.0.5")]).await;
    assert_eq!(
        r.error("ipconfig0"),
        "invalid format - format error\nipconfig0.ip: invalid format - value does not look like a valid ipv4 network configuration\n\n"
    );
    let r = s.put("/nodes/pve1/qemu/100/config", &[("ipconfig0", "ip=127.77.9.9/8,gw=127.0.0.1"), ("tags", "web;prod"), ("agent", "enabled=yes")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = s.put("/nodes/pve1/qemu/100/config", &[("tags", "web!")]).await;
    assert_eq!(r.error("tags"), "invalid format - invalid characters in tag\n");
    let r = s.put("/nodes/pve1/qemu/100/config", &[("scsi1", "local-lvm:2,discard=maybe")]).await;
    assert!(r.error("scsi1").contains("scsi1.discard: value 'maybe' does not have a value in the enumeration 'ignore, on'"), "{r:?}");
    let r = s.put("/nodes/pve1/qemu/100/config", &[("cicustom", "user=local:snippets/u.yaml,foo=bar")]).await;
    assert_eq!(r.error("cicustom"), "invalid format - invalid key in comma-separated list property: foo\n");

    let r = s.post("/nodes/pve1/lxc", &[
        ("vmid", "200"),
        ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
        ("net0", "name=eth0,bridge=vmbr0,ip=dhcp,firewall=maybe"),
    ]).await;
    assert_eq!(r.error("net0"), "invalid format - format error\nnet0.firewall: type check ('boolean') failed - got 'maybe'\n");
    let r = s.post("/nodes/pve1/lxc", &[
        ("vmid", "200"),
        ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
        ("net0", "bridge=vmbr0,ip=dhcp"),
    ]).await;
    assert_eq!(r.error("net0"), "invalid format - format error\nnet0.name: property is missing and it is not optional\n");
    let r = s.post("/nodes/pve1/lxc", &[
        ("vmid", "200"),
        ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
        ("features", "nesting=1,docker=1"),
    ]).await;
    assert_eq!(r.error("features"), "invalid format - invalid key in comma-separated list property: docker\n");
}

#[tokio::test]
async fn unknown_path_is_501_not_implemented() {
    let s = start().await;
    let r = s.get("/foo").await;
    assert_eq!(r.status, 501);
    assert_eq!(r.reason, "Method 'GET /foo' not implemented");
    let r = s.form("DELETE", "/version", &[]).await;
    assert_eq!(r.reason, "Method 'DELETE /version' not implemented");
}

#[tokio::test]
async fn wrong_token_is_401() {
    let s = start().await;
    let (id, _) = s.handle.admin_token();
    let resp = s.client.get(s.url("/version")).header("Authorization", format!("PVEAPIToken={id}=wrong")).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    let resp = s.client.get(s.url("/version")).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    let r = s.get("/version").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data()["release"], "9.1");
}

#[tokio::test]
async fn token_without_privilege_is_403() {
    let s = start_with(|cfg| {
        cfg.tokens.push(TokenSpec {
            id: "deploy@pve!ro".into(),
            secret: "5ecr3t".into(),
            acl: vec![("/vms".into(), vec!["VM.Audit".into()]), ("/vms/100".into(), vec!["VM.Audit".into(), "VM.PowerMgmt".into()])],
        })
    })
    .await;
    let get = |path: &str| s.client.get(s.url(path)).header("Authorization", "PVEAPIToken=deploy@pve!ro=5ecr3t");
    let r = s.send(get("/nodes/pve1/qemu/9000/config")).await;
    assert_eq!(r.status, 200);
    let r = s
        .send(
            s.client
                .post(s.url("/nodes/pve1/qemu/9000/clone"))
                .header("Authorization", "PVEAPIToken=deploy@pve!ro=5ecr3t")
                .form(&[("newid", "100")]),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.reason, "Permission check failed (/vms/9000, VM.Clone)");
    let r = s
        .send(
            s.client
                .put(s.url("/nodes/pve1/qemu/9000/resize"))
                .header("Authorization", "PVEAPIToken=deploy@pve!ro=5ecr3t")
                .form(&[("disk", "scsi0"), ("size", "+1G")]),
        )
        .await;
    assert_eq!(r.reason, "Permission check failed (/vms/9000, VM.Config.Disk)");
    let r = s.send(get("/nodes/pve1/status")).await;
    assert_eq!(r.reason, "Permission check failed (/nodes/pve1, Sys.Audit)");
}

#[tokio::test]
async fn ticket_writes_need_the_csrf_token() {
    let s = start_with(|cfg| cfg.users[0].password = "pw-123".into()).await;
    let r = s.send(s.client.post(s.url("/access/ticket")).form(&[("username", "root@pam"), ("password", "wrong")])).await;
    assert_eq!(r.status, 401);
    let r = s.send(s.client.post(s.url("/access/ticket")).form(&[("username", "root"), ("realm", "pam"), ("password", "pw-123")])).await;
    assert_eq!(r.status, 200, "{r:?}");
    let ticket = r.data()["ticket"].as_str().unwrap_or_default().to_string();
    let csrf = r.data()["CSRFPreventionToken"].as_str().unwrap_or_default().to_string();
    assert!(ticket.starts_with("PVE:root@pam:"));
    let cookie = format!("PVEAuthCookie={}", enc(&ticket));
    let r = s.send(s.client.get(s.url("/nodes")).header("Cookie", &cookie)).await;
    assert_eq!(r.status, 200);
    let r = s.send(s.client.post(s.url("/nodes/pve1/qemu/9000/clone")).header("Cookie", &cookie).form(&[("newid", "100")])).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.reason, "Permission denied - invalid csrf token");
    let r = s
        .send(
            s.client
                .post(s.url("/nodes/pve1/qemu/9000/clone"))
                .header("Cookie", &cookie)
                .header("CSRFPreventionToken", &csrf)
                .form(&[("newid", "100")]),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
}
