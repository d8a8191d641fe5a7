//! Terraform export and drift against the Proxmox VE simulator: a VM and a container exported through the API,
//! every file parsed by an independent HCL2 parser (python-hcl2) and checked against the provider's schema,
//! drift after changes behind our back (memory, a description note, a deleted guest, a hand-edited file, a stray
//! `.tf` file, a deleted manifest), the archive on destroy, the `pvedeploy export` / `pvedeploy drift` commands
//! against the running agent, and drift with Proxmox stopped: answered within its deadline, every guest named.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use pvedeploy::config::Secret;
use pvedeploy::core::names::{NodeName, VmId};
use pvedeploy::pve::{PowerAction, PveClient, PveConfig, QemuUpdate, TlsTrust};
use pvedeploy_sim::ClusterSpec;
use serde_json::Value;

use crate::helpers::{tool, TestApp, ADMIN, READER};
use crate::provision::{agent_for, agent_with, deploy, start_sim, wait_until, Cluster};

const SCHEMA: &str = include_str!("../../hcl-export/schema/bpg-proxmox-schema.json");
/// The provider arguments the export writes (bpg docs/index.md); the schema file covers resources only.
const PROVIDER_ARGS: [&str; 2] = ["endpoint", "api_token"];

/// A client of the simulator with its admin token, standing for someone using the Proxmox UI.
fn behind_our_back(cluster: &Cluster) -> PveClient {
    let (id, secret) = cluster.sim.admin_token();
    let trust = TlsTrust::parse_fingerprint(&cluster.sim.fingerprint_sha256()).unwrap();
    PveClient::new(PveConfig::new(cluster.sim.base_url(), id, Secret::new(secret), trust)).unwrap()
}

/// Parses one file with python-hcl2; `None` when the tool is absent outside CI.
fn parse_hcl2(python: &Path, file: &Path) -> Value {
    let out = Command::new(python)
        .args(["-c", "import hcl2, json, sys; print(json.dumps(hcl2.load(open(sys.argv[1]))))"])
        .arg(file)
        .output()
        .expect("python runs");
    assert!(out.status.success(), "python-hcl2 rejects {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn unquote(s: &str) -> &str {
    s.trim_matches('"')
}

/// Every attribute and block of a python-hcl2 body against the schema's `arguments`.
fn walk(body: &Value, args: &Value, at: &str, problems: &mut Vec<String>) {
    for (key, value) in body.as_object().unwrap() {
        // `lifecycle` is Terraform's meta-argument, valid in every resource (not in a provider's schema).
        if key.starts_with("__") || (key == "lifecycle" && !at.contains('.')) {
            continue;
        }
        let is_block = value.as_array().is_some_and(|a| a.iter().all(|b| b.get("__is_block__") == Some(&Value::Bool(true))) && !a.is_empty());
        match (args.get(key.as_str()), is_block) {
            (None, _) => problems.push(format!("{at}.{key} is not in the schema")),
            (Some(a), true) if a["block"] == true => {
                for b in value.as_array().unwrap() {
                    walk(b, &a["attributes"], &format!("{at}.{key}"), problems);
                }
            }
            (Some(a), false) if a["block"] != true => {}
            (Some(_), _) => problems.push(format!("{at}.{key}: block/attribute mismatch with the schema")),
        }
    }
}

/// Writes the API's files into `dir`, parses each with python-hcl2 and checks main.tf against the schema.
fn check_files(python: Option<&Path>, dir: &Path, export: &Value) {
    std::fs::create_dir_all(dir).unwrap();
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    for f in export["files"].as_array().unwrap() {
        let path = dir.join(f["path"].as_str().unwrap());
        std::fs::write(&path, f["content"].as_str().unwrap()).unwrap();
        let Some(python) = python else { continue };
        let parsed = parse_hcl2(python, &path);
        if f["path"] == "main.tf" {
            let mut problems = Vec::new();
            for r in parsed["resource"].as_array().unwrap() {
                for (kind, named) in r.as_object().unwrap() {
                    let args = &schema[unquote(kind)]["arguments"];
                    assert!(args.is_object(), "{kind} is in the schema");
                    for body in named.as_object().unwrap().values() {
                        walk(body, args, unquote(kind), &mut problems);
                    }
                }
            }
            for p in parsed["provider"].as_array().unwrap() {
                for body in p.as_object().unwrap().values() {
                    for key in body.as_object().unwrap().keys().filter(|k| !k.starts_with("__")) {
                        if !PROVIDER_ARGS.contains(&key.as_str()) {
                            problems.push(format!("provider.{key} is not documented"));
                        }
                    }
                }
            }
            assert!(problems.is_empty(), "{problems:#?}");
            assert!(!parsed["resource"].as_array().unwrap().is_empty());
        }
        if f["path"] == "terraform.tfvars" {
            assert!(parsed.get("proxmox_api_token").is_none(), "no secret in tfvars: {parsed}");
        }
    }
}

fn main_tf(export: &Value) -> String {
    export["files"].as_array().unwrap().iter().find(|f| f["path"] == "main.tf").unwrap()["content"].as_str().unwrap().to_owned()
}

async fn drift(app: &TestApp) -> Vec<Value> {
    let (s, report) = app.get("/api/v1/drift", Some(READER)).await;
    assert_eq!(s, 200, "{report}");
    report["differences"].as_array().unwrap().clone()
}

fn has(diffs: &[Value], deployment: &str, field: &str) -> Option<Value> {
    diffs.iter().find(|d| d["deployment"] == deployment && d["field"] == field).cloned()
}

/// Polls until `pred` holds for the drift report (the exporter works in the background).
async fn drift_until(app: &TestApp, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut last = Vec::new();
    for _ in 0..300 {
        last = drift(app).await;
        if pred(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("drift never showed {what}: {last:#?}");
}

fn cli(app: &TestApp, args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pvedeploy"))
        .args(args)
        .args(["--url", &app.base])
        .current_dir(cwd)
        .env("PVEDEPLOY_TOKEN", READER)
        .env_remove("PVEDEPLOY_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("pvedeploy runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_parse_match_the_schema_follow_the_guest_and_report_drift() {
    // python-hcl2 lives in the CI venv (.ci/run); a python on PATH without it does not count.
    let cache = std::path::PathBuf::from(std::env::var("PVEDEPLOY_CACHE_DIR").unwrap_or_else(|_| "/var/cache/pvedeploy".into()));
    let venv = cache.join("py/bin/python");
    let python = if venv.is_file() { Some(venv) } else { tool("python") };
    let python = python.filter(|p| Command::new(p).args(["-c", "import hcl2"]).status().is_ok_and(|s| s.success()));
    if python.is_none() && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("python-hcl2 is required in CI (.ci/run installs it)");
    }
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let app = agent_for(&cluster, dir.path(), Duration::from_secs(30)).await;
    let vm = deploy(&app, "tf-vm", "vm").await;
    let ct = deploy(&app, "tf-ct", "lxc").await;
    let provisioned = |d: &Value| d["status"] == "installing" || d["status"] == "failed";
    let vm_d = wait_until(&app, &vm, "provisioned", provisioned).await;
    let ct_d = wait_until(&app, &ct, "provisioned", provisioned).await;
    assert_eq!((vm_d["status"].as_str(), ct_d["status"].as_str()), (Some("installing"), Some("installing")));
    let vm_id = vm_d["proxmox_id"].as_u64().unwrap() as u32;
    let ct_id = ct_d["proxmox_id"].as_u64().unwrap() as u32;
    let work = tempfile::tempdir().unwrap();

    // the export through the API: four files, valid HCL2, only documented attributes, live values
    for (id, name, kind) in [(&vm, "tf-vm", "proxmox_virtual_environment_vm"), (&ct, "tf-ct", "proxmox_virtual_environment_container")] {
        let (s, export) = app.get(&format!("/api/v1/deployments/{id}/terraform"), Some(READER)).await;
        assert_eq!(s, 200, "{export}");
        assert_eq!(export["resource"], format!("{kind}.{name}"));
        let paths: Vec<&str> = export["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
        assert_eq!(paths, ["main.tf", "variables.tf", "terraform.tfvars", "imports.tf"]);
        check_files(python.as_deref(), &work.path().join(name), &export);
        let main = main_tf(&export);
        assert!(main.contains("dedicated = 1024") && main.contains("cores = 2"), "{main}");
        // the kept copy on disk is the same bytes, and the record points at it
        let on_disk = dir.path().join("hcl-export").join(name).join("main.tf");
        for _ in 0..100 {
            if std::fs::read_to_string(&on_disk).is_ok_and(|t| t == main) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(std::fs::read_to_string(&on_disk).unwrap(), main, "the kept export matches a fresh render");
        let d = wait_until(&app, id, "recorded", |d| d["terraform_output"].is_string()).await;
        assert_eq!(d["terraform_output"], format!("hcl-export/{name}"));
    }
    let (s, vm_export) = app.get("/api/v1/deployments/tf-vm/terraform", Some(READER)).await;
    assert_eq!(s, 200);
    let vm_main = main_tf(&vm_export);
    assert!(vm_main.contains(&format!("id = \"pve1/{vm_id}\"")) || vm_export.to_string().contains(&format!("pve1/{vm_id}")));
    // no clone block: the provider cannot read it back, it would replace the VM (bpg#1988)
    assert!(!vm_main.contains("clone {"), "{vm_main}");
    // the guest has our cloud-init snippet: its user-data (deploy user, host key) is referenced, not re-declared
    assert!(vm_main.contains("user_data_file_id") && vm_main.contains("local:snippets/pvedeploy-"), "{vm_main}");

    // the tarball holds the same files under one folder
    let resp = app.client.get(app.url(&format!("/api/v1/deployments/{ct}/terraform.tar.gz"))).bearer_auth(READER).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/gzip");
    let bytes = resp.bytes().await.unwrap();
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    for entry in archive.entries().unwrap() {
        let mut e = entry.unwrap();
        let mut text = String::new();
        e.read_to_string(&mut text).unwrap();
        assert!(!text.is_empty());
        names.push(e.path().unwrap().display().to_string());
    }
    assert_eq!(names, ["tf-ct/main.tf", "tf-ct/variables.tf", "tf-ct/terraform.tfvars", "tf-ct/imports.tf"]);

    // bad requests: named field, 404, scope
    let (s, b) = app.get(&format!("/api/v1/deployments/{vm}/terraform?format=zip"), Some(READER)).await;
    assert_eq!((s, b["fields"][0]["field"].as_str()), (422, Some("format")), "{b}");
    let (s, _) = app.get("/api/v1/deployments/nope/terraform", Some(READER)).await;
    assert_eq!(s, 404);
    let (s, _) = app.get("/api/v1/drift", None).await;
    assert_eq!(s, 401);

    // everything agrees at first
    let diffs = drift_until(&app, "no differences", |d| d.is_empty()).await;
    assert!(diffs.is_empty());

    // memory changed in "the Proxmox UI": drift names memory with all three values
    let pve = behind_our_back(&cluster);
    let node = NodeName::parse("pve1").unwrap();
    pve.qemu_update_config(&node, VmId::new(vm_id.into()).unwrap(), &QemuUpdate { memory_mib: Some(2048), ..QemuUpdate::default() }).await.unwrap();
    let diffs = drift_until(&app, "memory", |d| has(d, "tf-vm", "memory_mib").is_some()).await;
    let m = has(&diffs, "tf-vm", "memory_mib").unwrap();
    assert_eq!((m["store"].as_str(), m["live"].as_str(), m["export"].as_str()), (Some("1024"), Some("2048"), Some("1024")), "{m}");

    // an export file edited by hand
    let ct_main = dir.path().join("hcl-export/tf-ct/main.tf");
    let edited = std::fs::read_to_string(&ct_main).unwrap().replace("dedicated = 1024", "dedicated = 4096");
    std::fs::write(&ct_main, edited).unwrap();
    let diffs = drift_until(&app, "the edit", |d| has(d, "tf-ct", "export:main.tf").is_some()).await;
    assert!(has(&diffs, "tf-ct", "export:main.tf").unwrap()["message"].as_str().unwrap().contains("edited by hand"));

    // the CLI: export --all writes both folders; drift exits 1 and names memory; bad input names the argument
    let cwd = tempfile::tempdir().unwrap();
    let out = cli(&app, &["export", "--all", "--out", "tf"], cwd.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for name in ["tf-vm", "tf-ct"] {
        for f in ["main.tf", "variables.tf", "terraform.tfvars", "imports.tf"] {
            assert!(cwd.path().join("tf").join(name).join(f).is_file(), "{name}/{f}");
        }
    }
    let out = cli(&app, &["export", "tf-vm"], cwd.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(cwd.path().join("hcl-export/tf-vm/main.tf").is_file(), "default --out is ./hcl-export");
    let out = cli(&app, &["drift"], cwd.path());
    assert_eq!(out.status.code(), Some(1), "differences exist: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tf-vm\tmemory_mib") && text.contains("tf-ct\texport:main.tf"), "{text}");
    let out = cli(&app, &["export", "Bad_Name"], cwd.path());
    assert_eq!(out.status.code(), Some(2), "a usage problem");
    assert!(String::from_utf8_lossy(&out.stderr).contains("argument NAME"), "{}", String::from_utf8_lossy(&out.stderr));

    // a note added to the VM's description in "the Proxmox UI": not one of the fixed figures, reported all the same,
    // naming the file and the attribute, with the lines as written and as they would be now
    let vmid = VmId::new(vm_id.into()).unwrap();
    let description = pve.qemu_config(&node, vmid).await.unwrap().description.unwrap_or_default();
    let noted = format!("{description}\nnote: moved to rack 4");
    pve.qemu_update_config(&node, vmid, &QemuUpdate { description: Some(noted), ..QemuUpdate::default() }).await.unwrap();
    let diffs = drift_until(&app, "the description", |d| has(d, "tf-vm", "live:main.tf").is_some_and(|x| x["live"].as_str().is_some_and(|l| l.contains("moved to rack 4")))).await;
    let m = has(&diffs, "tf-vm", "live:main.tf").unwrap();
    assert!(m["message"].as_str().unwrap().contains("description"), "{m}");
    assert!(m["export"].as_str().unwrap().starts_with("description = ") && !m["export"].as_str().unwrap().contains("rack 4"), "{m}");

    // a stray .tf file in the VM's folder; then its manifest deleted with the .tf files still there
    let folder = dir.path().join("hcl-export/tf-vm");
    std::fs::write(folder.join("stray.tf"), "resource \"null_resource\" \"x\" {}\n").unwrap();
    let diffs = drift_until(&app, "the stray file", |d| has(d, "tf-vm", "export:stray.tf").is_some()).await;
    let stray = has(&diffs, "tf-vm", "export:stray.tf").unwrap();
    assert!(stray["message"].as_str().unwrap().contains("pvedeploy did not write it: Terraform reads it"), "{stray}");
    std::fs::remove_file(folder.join(".pvedeploy-export.json")).unwrap();
    let diffs = drift_until(&app, "the lost manifest", |d| has(d, "tf-vm", "export").is_some()).await;
    let lost = has(&diffs, "tf-vm", "export").unwrap()["message"].as_str().unwrap().to_owned();
    assert!(lost.contains("its manifest .pvedeploy-export.json was deleted") && lost.contains("main.tf") && lost.contains("stray.tf"), "{lost}");

    // the VM deleted behind our back: drift reports the guest gone, the export answers 409
    let upid = pve.qemu_power(&node, vmid, PowerAction::Stop).await.unwrap();
    pve.wait_task(&upid, Duration::from_millis(50), Duration::from_secs(30)).await.unwrap();
    let upid = pve.qemu_delete(&node, vmid, true, true).await.unwrap();
    pve.wait_task(&upid, Duration::from_millis(50), Duration::from_secs(30)).await.unwrap();
    let diffs = drift_until(&app, "the deleted guest", |d| has(d, "tf-vm", "guest").is_some()).await;
    assert!(has(&diffs, "tf-vm", "guest").unwrap()["message"].as_str().unwrap().contains("no longer exists"));
    let (s, b) = app.get(&format!("/api/v1/deployments/{vm}/terraform"), Some(READER)).await;
    assert_eq!(s, 409, "{b}");
    // export --all writes the container's files and exits 1, naming the VM it skipped and why
    let out = cli(&app, &["export", "--all", "--out", "all"], cwd.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a skipped deployment is a failure: {stderr}");
    assert!(cwd.path().join("all/tf-ct/main.tf").is_file(), "{stderr}");
    // Why: the guest is gone from Proxmox, or (once the agent has noticed the lost guest and dropped it from the
    // record) the deployment has no guest any more; either way it is named as skipped.
    assert!(stderr.contains("skipped tf-vm") && (stderr.contains("Proxmox no longer has it") || stderr.contains("has no guest to export")), "{stderr}");
    assert!(stderr.contains("wrote 1 of 2 export(s); not written: tf-vm ("), "{stderr}");

    // destroy: the container's export moves to the archive, and the record follows it
    let (s, _) = app.delete(&format!("/api/v1/deployments/{ct}"), Some(ADMIN)).await;
    assert_eq!(s, 202);
    wait_until(&app, &ct, "destroyed", |d| d["status"] == "destroyed").await;
    let archived = format!("hcl-export/.archive/tf-ct-{ct}");
    let d = wait_until(&app, &ct, "archived", |d| d["terraform_output"] == archived.as_str()).await;
    assert_eq!(d["terraform_output"], archived.as_str());
    assert!(dir.path().join(&archived).join("main.tf").is_file());
    assert!(!dir.path().join("hcl-export/tf-ct").exists());
    let (s, _) = app.get(&format!("/api/v1/deployments/{ct}/terraform"), Some(READER)).await;
    assert_eq!(s, 409, "a destroyed deployment has no guest to export");
    let _ = ct_id;
    app.stop().await;
    cluster.sim.shutdown().await;
}

#[test]
fn the_cli_names_the_wrong_argument_and_drift_exits_2_when_it_cannot_check() {
    let cwd = tempfile::tempdir().unwrap();
    let run = |args: &[&str], token: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pvedeploy"));
        c.args(args).current_dir(cwd.path()).env_remove("PVEDEPLOY_URL").env_remove("PVEDEPLOY_TOKEN").env_remove("RUST_LOG");
        if let Some(t) = token {
            c.env("PVEDEPLOY_TOKEN", t);
        }
        c.output().unwrap()
    };
    let out = run(&["drift", "--url", "ftp://127.0.0.1:1"], Some(READER));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("argument --url"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["drift", "--url", "http://127.0.0.1:1"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-file"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["export", "--url", "http://127.0.0.1:1"], Some(READER));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("argument NAME"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["drift", "--url", "http://127.0.0.1:1"], Some(READER));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the agent"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A TCP relay in front of the simulator that can be frozen: connections are accepted and kept, and no byte passes
/// either way — Proxmox stopped (SIGSTOP) as the network sees it. (The simulator runs inside this test process, so it
/// cannot be stopped itself.)
struct Relay {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// While it lives, the relay passes nothing; dropped (also when the test fails), it passes again: the SIGCONT.
struct Frozen<'a>(&'a Relay);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.0.frozen.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    let ((ri, wi), (ro, wo)) = (inbound.into_split(), outbound.into_split());
                    tokio::join!(pump(ri, wo, flag.clone()), pump(ro, wi, flag));
                });
            }
        });
        Relay { addr, frozen, task }
    }

    fn freeze(&self) -> Frozen<'_> {
        self.frozen.store(true, Ordering::SeqCst);
        Frozen(self)
    }
}

async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, frozen: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The contract of `GET /drift` (issue #21): an answer within 35 s whatever Proxmox does.
const DRIFT_ANSWER_BOUND: Duration = Duration::from_secs(35);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_proxmox_stopped_drift_answers_in_time_and_names_every_guest_it_could_not_check() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let relay = Relay::start(cluster.sim.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("https://{}", relay.addr);
    let app = agent_with(&cluster, dir.path(), Duration::from_secs(30), |s| s.endpoint = endpoint).await;
    let names = ["hung-a", "hung-b", "hung-c"];
    let mut ids = Vec::new();
    for (name, kind) in names.iter().zip(["lxc", "lxc", "vm"]) {
        ids.push(deploy(&app, name, kind).await);
    }
    for id in &ids {
        wait_until(&app, id, "provisioned", |d| d["proxmox_id"].is_u64() && (d["status"] == "installing" || d["status"] == "failed")).await;
    }
    let (s, report) = app.get("/api/v1/drift", Some(READER)).await;
    assert_eq!(s, 200, "{report}");
    assert!(report["unreadable"].as_array().unwrap().is_empty(), "everything can be read before: {report}");

    let frozen = relay.freeze();
    let t = Instant::now();
    let (s, report) = app.get("/api/v1/drift", Some(READER)).await;
    let took = t.elapsed();
    assert_eq!(s, 200, "{report}");
    assert!(took < DRIFT_ANSWER_BOUND, "GET /drift took {took:?} with Proxmox stopped");
    eprintln!("GET /api/v1/drift with Proxmox stopped answered in {took:?}");
    let unreadable = report["unreadable"].as_array().unwrap();
    let mut named: Vec<&str> = unreadable.iter().map(|u| u["deployment"].as_str().unwrap()).collect();
    named.sort();
    assert_eq!(named, names, "{report}");
    for u in unreadable {
        assert_eq!(u["part"], "guest", "{u}");
        assert!(u["reason"].as_str().unwrap().contains("deadline"), "the reason says why: {u}");
        assert!(u["guest"].as_str().unwrap().contains('/'), "{u}");
    }
    assert!(
        report["differences"].as_array().unwrap().iter().all(|d| d["field"] != "guest"),
        "an unreadable guest is no difference: {report}"
    );

    // the command line: exit 2, each guest named with the reason
    let cwd = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let out = cli(&app, &["drift"], cwd.path());
    eprintln!("pvedeploy drift with Proxmox stopped took {:?}", t.elapsed());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "could not check: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    for name in names {
        assert!(stdout.contains(&format!("{name}\tunreadable:guest\tcould not check the guest of {name}")), "{stdout}");
    }
    assert!(stdout.contains("could not check 3: hung-a, hung-b, hung-c"), "{stdout}");

    // an export now: the agent answers that Proxmox is slow, and the command line says so (not "cannot reach the agent")
    let out = cli(&app, &["export", "hung-a"], cwd.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Proxmox VE did not answer it in time") && !stderr.contains("cannot reach the agent"), "{stderr}");

    // Proxmox continued: everything can be read again
    drop(frozen);
    let (s, report) = app.get("/api/v1/drift", Some(READER)).await;
    assert_eq!(s, 200, "{report}");
    assert!(report["unreadable"].as_array().unwrap().is_empty(), "{report}");
    app.stop().await;
    cluster.sim.shutdown().await;
}
