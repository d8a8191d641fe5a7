//! The rig for tests and benchmarks on real guests: the simulator with systemd-nspawn guests and
//! node SFTP, a git server of bare repositories over HTTP, and an agent configured against both.
//! Shared by `tests/it/deploy.rs` and `benches/deploy.rs` (included there by path).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvedeploy::config::github::GithubSettings;
use pvedeploy::config::{ClusterSettings, NodeSshSettings, ProxmoxSetting, Secret, TrustSetting};
use pvedeploy::core::limits::{RepoPolicy, RepoScheme};
use pvedeploy_sim::guest::{default_cache_dir, NspawnBackend};
use pvedeploy_sim::{node_ssh, SimConfig, SimHandle, Simulator};
use serde_json::Value;

use crate::helpers::{test_config, TestApp, ADMIN};

pub const WEBHOOK_SECRET: &str = "e2e-webhook-secret-0123456789";

/// Skips (prints why), or fails when `CI=true`: CI must run these.
pub fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and real guests cannot run here: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// The simulator with real guests; stops every guest and node sshd when dropped, even on failure.
pub struct RealSim {
    sim: Option<SimHandle>,
    _dir: tempfile::TempDir,
}

impl RealSim {
    pub fn sim(&self) -> &SimHandle {
        self.sim.as_ref().expect("running")
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.sim.take() {
            s.shutdown().await;
        }
    }
}

impl Drop for RealSim {
    fn drop(&mut self) {
        if let Some(s) = self.sim.take() {
            eprintln!("stopping the simulator's guests after a failure");
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(s.shutdown()));
        }
    }
}

pub async fn start_real_sim(agent_public_key: &str) -> Option<RealSim> {
    // With RUST_LOG set, the agent's and the simulator's logs show up in the test output.
    if std::env::var_os("RUST_LOG").is_some() {
        pvedeploy::telemetry::init();
    }
    if let Err(why) = node_ssh::check_available() {
        skip(&why.to_string());
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let backend = match NspawnBackend::detect(&state, &default_cache_dir()) {
        Ok(b) => Arc::new(b),
        Err(why) => {
            skip(&format!("real guests unavailable: {why}"));
            return None;
        }
    };
    backend.prepare().await.expect("the guest base image");
    let mut cfg = SimConfig::sandbox(state).with_node_ssh(agent_public_key);
    cfg.backend = backend;
    cfg.timing.clone_secs = 0.3;
    cfg.timing.start_secs = 0.2;
    cfg.timing.agent_delay_secs = 0.5;
    cfg.timing.task_secs = 0.1;
    cfg.timing.stop_secs = 0.2;
    let sim = Simulator::start(cfg).await.expect("the simulator starts");
    Some(RealSim { sim: Some(sim), _dir: dir })
}

/// A directory of bare repositories served over git's "dumb" HTTP protocol by a child process.
pub struct GitServer {
    root: tempfile::TempDir,
    child: Child,
    /// `127.0.0.1:PORT`
    pub host: String,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GitServer {
    pub async fn start() -> GitServer {
        let root = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 serves the repositories");
        let host = format!("127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(&host).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        GitServer { root, child, host }
    }

    /// A new repository `owner/name` holding the fixture app `fixture`, pushed; returns it.
    pub fn repo(&self, owner_name: &str, fixture: &str) -> Repo {
        let bare = self.root.path().join(format!("{owner_name}.git"));
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "--quiet", "--bare", "--initial-branch=main"]);
        let work = self.root.path().join(format!("work-{}", owner_name.replace('/', "-")));
        copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps").join(fixture), &work);
        git(&work, &["init", "--quiet", "--initial-branch=main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        let r = Repo { bare, work, url: format!("http://{}/{owner_name}.git", self.host), full_name: owner_name.to_string() };
        r.commit("v1");
        r
    }
}

pub struct Repo {
    pub bare: PathBuf,
    pub work: PathBuf,
    pub url: String,
    pub full_name: String,
}

impl Repo {
    /// Commits the working tree as it is and pushes it; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["-c", "user.name=Test", "-c", "user.email=test@example.invalid", "commit", "--quiet", "-m", message]);
        git(&self.work, &["push", "--quiet", "origin", "main"]);
        git(&self.bare, &["update-server-info"]);
        git(&self.work, &["rev-parse", "HEAD"]).trim().to_string()
    }

    pub fn edit(&self, file: &str, from: &str, to: &str) {
        let p = self.work.join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").current_dir(dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// An agent against the simulator like against a real cluster (pinned TLS, API token, node SSH
/// with pinned host keys), allowed to deploy from the local git server.
pub async fn agent(sim: &SimHandle, data: &Path, git_host: &str) -> TestApp {
    agent_with(sim, data, git_host, |_| {}).await
}

/// An Express app deployed in a container on a real guest (systemd-nspawn behind the simulator) and running v1, with
/// everything that keeps it up: the setup of the real-guest snapshot and backup tests. `None` where real guests
/// cannot run here.
pub struct RunningExpress {
    pub app: TestApp,
    pub rig: RealSim,
    pub server: GitServer,
    pub express: Repo,
    pub data: tempfile::TempDir,
    pub id: String,
    /// The deployment as it was once running.
    pub deployment: Value,
}

/// Deploys the Express fixture as `name` onto a real guest, the agent configured by `tweak`; waits until it runs.
pub async fn running_express(name: &str, tweak: impl FnOnce(&mut pvedeploy::config::Config)) -> Option<RunningExpress> {
    let data = tempfile::tempdir().unwrap();
    let key = pvedeploy::keys::load_or_create_deploy_key(&data.path().join("keys")).unwrap();
    let rig = start_real_sim(&key.public_openssh).await?;
    let server = GitServer::start().await;
    let express = server.repo("octo/express", "express");
    let app = agent_with(rig.sim(), data.path(), &server.host, tweak).await;
    let body = serde_json::json!({"name": name, "repo_url": express.url, "framework": "node", "type": "lxc", "memory_mib": 1024});
    let (s, e) = app.post("/api/v1/deployments", Some(ADMIN), &body).await;
    assert_eq!(s, 202, "{e}");
    let id = e["id"].as_str().unwrap().to_string();
    let deployment = wait_for(&app, &id, "running", Duration::from_secs(900), |d| d["status"] == "running" || d["status"] == "failed").await;
    assert_eq!(deployment["status"], "running", "{deployment}");
    Some(RunningExpress { app, rig, server, express, data, id, deployment })
}

/// As `agent`, with the configuration changed by `tweak` first.
pub async fn agent_with(sim: &SimHandle, data: &Path, git_host: &str, tweak: impl FnOnce(&mut pvedeploy::config::Config)) -> TestApp {
    let mut c = test_config(data);
    let (token_id, secret) = sim.admin_token();
    let mut cs = ClusterSettings::new(format!("https://{}", sim.addr()), token_id, Secret::new(secret), TrustSetting::Fingerprint(sim.fingerprint_sha256()), 9000);
    cs.vmid_range = 100..=999_999;
    // Generous: a loaded CI machine boots nspawn guests slowly (real clusters default to 120 s).
    cs.address_timeout = Duration::from_secs(300);
    cs.poll_interval = Duration::from_millis(100);
    let (mut host_keys, mut addresses) = (BTreeMap::new(), BTreeMap::new());
    for node in sim.node_names() {
        let (addr, key) = sim.node_ssh(&node).expect("node SSH runs");
        addresses.insert(node.clone(), addr.ip().to_string());
        host_keys.insert(node, key);
    }
    cs.node_ssh = Some(NodeSshSettings { user: "root".into(), port: 22, host_keys, addresses });
    c.proxmox = ProxmoxSetting::Cluster(cs);
    c.repos = RepoPolicy { allowed_hosts: vec![git_host.to_string()], schemes: vec![RepoScheme::Http], allow_private: vec![] };
    c.github = GithubSettings { webhook_secret: Some(Secret::new(WEBHOOK_SECRET.into())), repo_secrets: vec![], api: None };
    tweak(&mut c);
    TestApp::spawn_config(c).await
}

/// Polls until `pred` holds, for up to `limit`; panics with the state and the log tail.
pub async fn wait_for(app: &TestApp, id: &str, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (s, d) = app.get(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
        assert_eq!(s, 200, "{d}");
        if pred(&d) {
            return d;
        }
        if started.elapsed() > limit {
            let (_, logs) = app.get(&format!("/api/v1/deployments/{id}/logs?limit=200"), Some(ADMIN)).await;
            let lines: Vec<String> = logs["lines"].as_array().map(|a| a.iter().map(|l| format!("[{}] {}", l["step"], l["text"].as_str().unwrap_or(""))).collect()).unwrap_or_default();
            panic!("deployment never became {what} within {limit:?}: {d}\nlog:\n{}", lines.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn http_body(url: &str) -> String {
    let c = reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy().build().unwrap();
    match c.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => format!("<no answer: {e}>"),
    }
}


/// A steady load on an app: a GET every 100 ms, each on a new connection (as separate visitors would
/// arrive), each in its own task so a slow answer does not slow the rate. Every answer that is not a
/// 200, or no answer at all, is a lost request.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<LoadReport>,
}

#[derive(Debug, Default)]
pub struct LoadReport {
    pub sent: u32,
    /// Each 200's body, in the order the requests were sent.
    pub bodies: Vec<String>,
    /// What each lost request saw.
    pub lost: Vec<String>,
}

impl Load {
    pub fn start(url: &str) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (url, flag) = (url.to_string(), stop.clone());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).pool_max_idle_per_host(0).no_proxy().build().unwrap();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut inflight = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                tick.tick().await;
                let (c, u) = (client.clone(), url.clone());
                inflight.push(tokio::spawn(async move {
                    match c.get(&u).send().await {
                        Ok(r) if r.status() == 200 => Ok(r.text().await.unwrap_or_default()),
                        Ok(r) => Err(format!("HTTP {}", r.status())),
                        Err(e) => Err(format!("{e:?}")),
                    }
                }));
            }
            let mut report = LoadReport::default();
            for t in inflight {
                report.sent += 1;
                match t.await.unwrap() {
                    Ok(b) => report.bodies.push(b),
                    Err(e) => report.lost.push(e),
                }
            }
            report
        });
        Load { stop, task }
    }

    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// Delivers a signed GitHub push of `before..after` to `repo` as delivery `guid`; returns the HTTP status.
pub async fn push(app: &TestApp, repo: &Repo, before: &str, after: &str, guid: &str) -> u16 {
    push_via(app, repo, before, after, guid, None).await
}

/// As `push`, through a hook: its id and what it belongs to (`repository`, `organization`).
pub async fn push_via(app: &TestApp, repo: &Repo, before: &str, after: &str, guid: &str, hook: Option<(&str, &str)>) -> u16 {
    let (body, sig) = signed_push(repo, before, after);
    let mut req = app
        .client
        .post(app.url("/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", guid)
        .header("x-hub-signature-256", sig);
    if let Some((id, target)) = hook {
        req = req.header("x-github-hook-id", id).header("x-github-hook-installation-target-type", target);
    }
    req.body(body).send().await.unwrap().status().as_u16()
}

fn signed_push(repo: &Repo, before: &str, after: &str) -> (String, String) {
    use hmac::{Hmac, Mac};
    let body = serde_json::json!({
        "ref": "refs/heads/main", "before": before, "after": after, "created": false, "deleted": false, "forced": false,
        "repository": { "full_name": repo.full_name, "clone_url": repo.url, "html_url": repo.url.trim_end_matches(".git") },
        "pusher": { "name": "octocat" }, "sender": { "login": "octocat" },
        "head_commit": { "id": after, "message": "v2" }, "commits": [],
    })
    .to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    (body, format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
}
