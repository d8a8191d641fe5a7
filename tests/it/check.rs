//! `pvedeploy check` against a simulated fresh Proxmox VE install (`ClusterSpec::stock`): every problem with its
//! fix, then ready once the operator applied the fixes through the API as the README says; a token missing one
//! privilege; a hung Proxmox; and a VM deployment refused at request time without node SSH.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pvedeploy_sim::{ClusterSpec, SimConfig, SimHandle, Simulator};
use serde_json::{json, Value};

use crate::helpers::ADMIN;
use crate::provision::{agent_with, install_key, node_ssh_settings, start_sim};

const TEMPLATE: &str = "debian-12-standard_12.7-1_amd64.tar.zst";

/// The operator: the cluster's root token, over HTTPS with the certificate pinned.
pub struct Operator {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl Operator {
    pub fn new(sim: &SimHandle) -> Self {
        let (id, secret) = sim.admin_token();
        let cert = reqwest::Certificate::from_pem(sim.cert_pem().as_bytes()).unwrap();
        let http = reqwest::Client::builder().add_root_certificate(cert).timeout(Duration::from_secs(30)).build().unwrap();
        Operator { http, base: format!("https://localhost:{}/api2/json", sim.addr().port()), auth: format!("PVEAPIToken={id}={secret}") }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Value {
        let resp = self.http.request(method.clone(), format!("{}{path}", self.base)).header("Authorization", &self.auth).form(form).send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path} {form:?}: {status} {body}");
        body["data"].clone()
    }

    pub async fn get(&self, path: &str) -> Value {
        let resp = self.http.get(format!("{}{path}", self.base)).header("Authorization", &self.auth).send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "GET {path}: {status} {body}");
        body["data"].clone()
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        self.call(reqwest::Method::POST, path, form).await
    }

    pub async fn put(&self, path: &str, form: &[(&str, &str)]) -> Value {
        self.call(reqwest::Method::PUT, path, form).await
    }

    /// Waits for a task to end OK.
    pub async fn task(&self, upid: &Value) {
        let upid = upid.as_str().unwrap();
        let node = upid.split(':').nth(1).unwrap();
        for _ in 0..200 {
            let resp = self.http.get(format!("{}/nodes/{node}/tasks/{upid}/status", self.base)).header("Authorization", &self.auth).send().await.unwrap();
            let s: Value = resp.json().await.unwrap();
            if s["data"]["status"] == "stopped" {
                assert_eq!(s["data"]["exitstatus"], "OK", "{upid}: {s}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("task {upid} never ended");
    }

    /// `pveum user add pvedeploy@pve` and `pveum user token add pvedeploy@pve <name> --privsep 1`: the secret.
    pub async fn token(&self, name: &str) -> String {
        if name == "agent" {
            self.post("/access/users", &[("userid", "pvedeploy@pve")]).await;
        }
        let t = self.post(&format!("/access/users/pvedeploy@pve/token/{name}"), &[("privsep", "1")]).await;
        assert_eq!(t["full-tokenid"], format!("pvedeploy@pve!{name}"));
        t["value"].as_str().unwrap().to_string()
    }

    /// The README's role, granted on `/` to the user and its token (`pveum role add`, `pveum acl modify`).
    async fn grant(&self) {
        let privs = pvedeploy::core::check::privileges::role_privileges(9).join(",");
        self.post("/access/roles", &[("roleid", "PVEDeploy"), ("privs", &privs)]).await;
        self.put("/access/acl", &[("path", "/"), ("roles", "PVEDeploy"), ("users", "pvedeploy@pve"), ("tokens", "pvedeploy@pve!agent")]).await;
    }

    /// The rest the README tells an operator to do on a fresh cluster, through the API: snippets enabled on
    /// `local`, the container template downloaded on every node, a cloud-init VM template 9000.
    pub async fn prepare(&self, nodes: &[String]) {
        self.put("/storage/local", &[("content", "iso,vztmpl,backup,import,snippets")]).await;
        for n in nodes {
            let upid = self.post(&format!("/nodes/{n}/aplinfo"), &[("storage", "local"), ("template", TEMPLATE)]).await;
            self.task(&upid).await;
        }
        let upid = self
            .post(
                "/nodes/pve1/qemu",
                &[("vmid", "9000"), ("name", "debian12-cloud"), ("scsi0", "local-lvm:4"), ("ide2", "local-lvm:cloudinit"), ("agent", "1"), ("net0", "virtio,bridge=vmbr0"), ("memory", "2048")],
            )
            .await;
        self.task(&upid).await;
        let upid = self.post("/nodes/pve1/qemu/9000/template", &[]).await;
        if upid.is_string() {
            self.task(&upid).await;
        }
    }
}

/// A stock PVE 9 cluster with node SSH (its nodes authorize `key`); `None` (skipped) where node SSH cannot run.
async fn stock_sim(dir: &Path, key: &pvedeploy::keys::KeyPair) -> Option<SimHandle> {
    if let Err(why) = pvedeploy_sim::node_ssh::check_available() {
        crate::rig::skip(&why.to_string());
        return None;
    }
    let mut cfg = SimConfig::sandbox(dir.join("sim")).with_node_ssh(&key.public_openssh);
    cfg.cluster = ClusterSpec::stock(9);
    cfg.timing.task_secs = 0.02;
    Some(Simulator::start(cfg).await.expect("the simulator starts"))
}

/// The agent's `pvedeploy.toml` for `token` (the secret in the environment, as docs/configuration.md advises).
fn write_config(dir: &Path, sim: &SimHandle, token: &str) -> std::path::PathBuf {
    let ssh = node_ssh_settings(sim).expect("node ssh");
    let table = |m: &std::collections::BTreeMap<String, String>| m.iter().map(|(k, v)| format!("{k} = \"{v}\"")).collect::<Vec<_>>().join(", ");
    let text = format!(
        "data_dir = \"{}\"\n\n[proxmox]\nendpoint = \"https://{}\"\ntoken_id = \"{token}\"\nfingerprint = \"{}\"\nvm_template = 9000\nvmid_range = [10000, 10099]\n\n[proxmox.node_ssh]\nuser = \"root\"\nhost_keys = {{ {} }}\naddresses = {{ {} }}\n",
        dir.join("data").display(),
        sim.addr(),
        sim.fingerprint_sha256(),
        table(&ssh.host_keys),
        table(&ssh.addresses),
    );
    let path = dir.join(format!("{}.toml", token.replace(['@', '!'], "-")));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `pvedeploy check`: (exit code, stdout, how long it took).
fn check(config: &Path, secret: &str, timeout: Option<u64>) -> (i32, String, Duration) {
    let started = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pvedeploy"));
    cmd.arg("--config").arg(config).arg("check").env("PVEDEPLOY_PROXMOX_TOKEN_SECRET", secret).env_remove("PVEDEPLOY_PROXMOX_MODE");
    if let Some(t) = timeout {
        cmd.arg("--timeout").arg(t.to_string());
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("$ pvedeploy check\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), stdout, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_install_lists_every_problem_and_is_ready_after_the_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let key = pvedeploy::keys::generate_ed25519("pvedeploy-agent");
    let Some(sim) = stock_sim(dir.path(), &key).await else { return };
    install_key(&key, &dir.path().join("data"));
    let op = Operator::new(&sim);
    let secret = op.token("agent").await;
    let config = write_config(dir.path(), &sim, "pvedeploy@pve!agent");

    // 1. The token exists, nothing else: what its missing privileges hide is said too.
    let (code, out, _) = check(&config, &secret, None);
    assert_eq!(code, 1, "{out}");
    for expected in [
        "Proxmox VE 9.1.1",
        "role PVEDeploy does not exist",
        "fix: pveum role add PVEDeploy --privs \"Datastore.AllocateSpace Datastore.Audit SDN.Use Sys.Audit VM.Allocate VM.Audit VM.Clone",
        "the token lacks Sys.Audit on / ",
        "the token lacks VM.Allocate, VM.Audit, VM.Config.CPU, VM.Config.Cloudinit, VM.Config.Disk, VM.Config.Memory, VM.Config.Network, VM.Config.Options, VM.GuestAgent.Audit, VM.PowerMgmt, VM.Snapshot, VM.Snapshot.Rollback on /vms/10000",
        "fix: pveum acl modify /vms --roles PVEDeploy --users pvedeploy@pve --tokens 'pvedeploy@pve!agent'",
        "SDN.Use on /sdn/zones/localnetwork/vmbr0",
        "VM template 9000 is not visible: the token lacks VM.Audit on /vms/9000",
        "the token lacks Datastore.Audit|Datastore.AllocateSpace on /storage/local",
        "storage local lacks content type snippets",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }

    // 2. The role granted: the cluster's own gaps show.
    op.grant().await;
    let (code, out, _) = check(&config, &secret, None);
    assert_eq!(code, 1, "{out}");
    for expected in [
        "the token holds every privilege the agent needs on every path it touches (PVE 9 names)",
        "VM template 9000 does not exist",
        "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst is on no node",
        "pveam download local debian-12-standard_12.7-1_amd64.tar.zst (on pve1",
        "storage local lacks content type snippets (for cloud-init snippets): snippets still work",
        "pvesm set local --content iso,vztmpl,backup,import,snippets",
        "SFTP with the pinned host key and a test write into /var/lib/vz/snippets work on pve1, pve2",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }

    // 3. Everything else the README says, done through the API: ready.
    op.prepare(&sim.node_names()).await;
    let (code, out, _) = check(&config, &secret, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ready, with 1 warning(s)") && out.contains("VMs can only be placed on pve1"), "{out}");

    // A second token of the same user whose role lacks one privilege: exit 1, naming it and the command.
    let lacking = op.token("nosnap").await;
    let privs: Vec<&str> = pvedeploy::core::check::privileges::role_privileges(9).into_iter().filter(|p| *p != "VM.Snapshot").collect();
    op.post("/access/roles", &[("roleid", "PVEDeployNoSnap"), ("privs", &privs.join(","))]).await;
    op.put("/access/acl", &[("path", "/"), ("roles", "PVEDeployNoSnap"), ("tokens", "pvedeploy@pve!nosnap")]).await;
    let config = write_config(dir.path(), &sim, "pvedeploy@pve!nosnap");
    let (code, out, _) = check(&config, &lacking, None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the token lacks VM.Snapshot on /vms/10000"), "{out}");
    assert!(out.contains("fix: pveum acl modify /vms --roles PVEDeploy --users pvedeploy@pve --tokens 'pvedeploy@pve!nosnap'"), "{out}");
    assert_eq!(out.matches("[FAIL]").count(), 1, "only that privilege is missing:\n{out}");

    // Proxmox hangs: every call waits a minute; the check gives up at its deadline and exits 2.
    sim.faults().add_latency(".*", Duration::from_secs(60)).unwrap();
    let (code, out, took) = check(&config, &lacking, Some(3));
    assert_eq!(code, 2, "{out}");
    assert!(took < Duration::from_secs(8), "the check took {took:?} with a 3 s deadline");
    assert!(out.contains("no answer from Proxmox VE within the check's 3 s") && out.contains("could not check everything"), "{out}");
    eprintln!("hung Proxmox: exit 2 after {took:?} (deadline 3 s)");
    sim.faults().clear();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_pool_setup_passes_the_check_and_without_its_nodes_line_the_check_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = pvedeploy::keys::generate_ed25519("pvedeploy-agent");
    let Some(sim) = stock_sim(dir.path(), &key).await else { return };
    install_key(&key, &dir.path().join("data"));
    let op = Operator::new(&sim);
    op.prepare(&sim.node_names()).await;
    let setup = crate::cluster::docs_setup(9);
    let (token, secret) = crate::cluster::apply_docs_setup(&op, &setup).await;
    let config = write_config(dir.path(), &sim, &token);
    let text = std::fs::read_to_string(&config).unwrap().replace("vmid_range = [10000, 10099]\n", &format!("vmid_range = [10000, 10099]\npool = \"{}\"\n", setup.pool));
    std::fs::write(&config, text).unwrap();

    // Without the docs' `/nodes` line (as they read before this was tested): placement would see no node figures.
    let ids = "pvedeploy@pve!agent";
    op.put("/access/acl", &[("path", "/nodes"), ("roles", "PVEAuditor"), ("users", "pvedeploy@pve"), ("tokens", ids), ("delete", "1")]).await;
    let (code, out, _) = check(&config, &secret, None);
    assert_eq!(code, 1, "{out}");
    for node in ["pve1", "pve2"] {
        assert!(out.contains(&format!("[FAIL] privileges   the token lacks Sys.Audit on /nodes/{node}")), "{out}");
    }
    assert_eq!(out.matches("[FAIL]").count(), 2, "only that is missing:\n{out}");

    op.put("/access/acl", &[("path", "/nodes"), ("roles", "PVEAuditor"), ("users", "pvedeploy@pve"), ("tokens", ids)]).await;
    let (code, out, _) = check(&config, &secret, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("the token holds every privilege the agent needs on every path it touches (PVE 9 names)"), "{out}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_deployment_without_node_ssh_is_refused_at_request_time() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent_with(&cluster, dir.path(), Duration::from_secs(30), |s| s.node_ssh = None).await;
    let before = cluster.sim.mutating_calls();
    let (s, body) = app
        .post("/api/v1/deployments", Some(ADMIN), &json!({"name": "no-ssh", "repo_url": "https://github.com/octo/app", "framework": "flask", "type": "vm"}))
        .await;
    assert_eq!(s, 422, "{body}");
    let text = body.to_string();
    assert!(text.contains("\"type\"") && text.contains("[proxmox.node_ssh]") && text.contains("type lxc"), "{body}");
    assert_eq!(cluster.sim.mutating_calls(), before, "nothing was created");
    let (s, body) = app
        .post("/api/v1/deployments", Some(ADMIN), &json!({"name": "a-ct", "repo_url": "https://github.com/octo/app", "framework": "flask", "type": "lxc"}))
        .await;
    assert_eq!(s, 202, "containers need no node SSH: {body}");
    // The start check's checklist is in /ready.
    let ready = start_check_done(&app).await;
    assert!(ready["check"]["items"].as_array().is_some_and(|i| i.iter().any(|i| i["check"] == "node_ssh" && i["verdict"] == "problem")), "{ready}");
    app.stop().await;
    cluster.sim.shutdown().await;
}

/// Waits until the agent's check at start has ended (its reads are not a deployment's) and answers `/ready`.
pub async fn start_check_done(app: &crate::helpers::TestApp) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (_, r) = app.get("/api/v1/ready", Some(ADMIN)).await;
        if r["check"].is_object() {
            return r;
        }
        last = r;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the check at start never ended: {last}");
}
