//! The built-in sandbox across restarts: `pvedeploy serve` (no `[proxmox]`) stopped cleanly or killed with SIGKILL
//! and started again on the same data dir finds its cluster again: the deployment still `running`, its guest
//! booted again at the same address with the same host key, the app answering at the same URL, and a redeploy
//! working (the agent's pinned host key still matches).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::ADMIN;
use crate::rig::{http_body, skip, GitServer, Repo};

/// `pvedeploy serve` as its own process in `cwd` (config file there, data in `cwd/data`). Dropped, it stops the
/// process by its PID (SIGTERM, SIGKILL after 60 s) and unmounts whatever is still mounted under `cwd` (unless it
/// was killed on purpose and the test goes on).
struct Serve {
    child: Option<Child>,
    cwd: PathBuf,
    base: String,
    log: PathBuf,
    http: reqwest::Client,
    /// Killed on purpose: what it left mounted is the next serve's to take over.
    killed: bool,
}

impl Serve {
    /// Starts serve (its stderr into `cwd/serve-<n>.log`) and waits until its API answers.
    async fn start(cwd: &Path, port: u16, n: u32) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pvedeploy"));
        cmd.arg("serve");
        Serve::start_command(cmd, cwd, port, n).await
    }

    /// Starts serve in a mount namespace of its own where `hosts` is `/etc/hosts`: names only the agent resolves
    /// (the guests keep their own `/etc/hosts`). The bind mount goes away with the namespace.
    async fn start_with_hosts(cwd: &Path, port: u16, n: u32, hosts: &Path) -> Serve {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c", r#"mount --bind "$0" /etc/hosts && exec "$1" serve"#])
            .arg(hosts)
            .arg(env!("CARGO_BIN_EXE_pvedeploy"));
        Serve::start_command(cmd, cwd, port, n).await
    }

    async fn start_command(mut cmd: Command, cwd: &Path, port: u16, n: u32) -> Serve {
        let log = cwd.join(format!("serve-{n}.log"));
        let child = cmd
            .current_dir(cwd)
            .env("PVEDEPLOY_ADMIN_TOKEN", ADMIN)
            .env_remove("PVEDEPLOY_PROXMOX_MODE")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("pvedeploy serve starts");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).no_proxy().build().unwrap();
        let serve = Serve { child: Some(child), cwd: cwd.to_path_buf(), base: format!("http://127.0.0.1:{port}"), log, http, killed: false };
        let t = Instant::now();
        while serve.get("/api/v1/deployments").await.0 != 200 {
            assert!(t.elapsed() < Duration::from_secs(600), "serve's API never answered:\n{}", serve.log_tail());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        serve
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        match self.http.get(format!("{}{path}", self.base)).bearer_auth(ADMIN).send().await {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.http.post(format!("{}{path}", self.base)).bearer_auth(ADMIN).json(body).send().await.expect("serve answers");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Polls the deployment until `pred` holds (up to `limit`); panics with it and serve's log tail.
    async fn wait_for(&self, id: &str, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let t = Instant::now();
        loop {
            let (s, d) = self.get(&format!("/api/v1/deployments/{id}")).await;
            if s == 200 && pred(&d) {
                return d;
            }
            assert!(t.elapsed() < limit, "the deployment never became {what}: {d}\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Sends `signal` to the process and waits until it has exited.
    fn signal_and_wait(&mut self, signal: &str, limit: Duration) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let _ = Command::new("kill").args([signal, &child.id().to_string()]).status();
        let t = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if t.elapsed() > limit {
                self.child = Some(child);
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// SIGTERM: serve stops what it started (guests, node sshd, simulator) and saves the cluster.
    fn stop(mut self) {
        assert!(self.signal_and_wait("-TERM", Duration::from_secs(120)), "serve did not stop after SIGTERM:\n{}", self.log_tail());
    }

    /// SIGKILL: nothing is saved or stopped by serve itself.
    fn kill(mut self) {
        self.killed = true;
        assert!(self.signal_and_wait("-KILL", Duration::from_secs(30)), "serve outlived SIGKILL");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.is_some() && !self.signal_and_wait("-TERM", Duration::from_secs(60)) {
            self.signal_and_wait("-KILL", Duration::from_secs(30));
        }
        if !self.killed || std::thread::panicking() {
            unmount_under(&self.cwd);
        }
    }
}

/// Unmounts (lazily, deepest first) everything mounted under `dir`: what a killed serve's guests and node SSH
/// endpoints leave when the test fails before a restarted serve took them over.
fn unmount_under(dir: &Path) {
    let prefix = dir.to_string_lossy().into_owned();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", &p]).status();
    }
}

/// Whether this machine can run the sandbox with real guests and node SSH (root, nspawn, sshd).
fn real_sandbox_possible() -> bool {
    if let Err(why) = pvedeploy_sim::node_ssh::check_available() {
        skip(&why.to_string());
        return false;
    }
    let probe = tempfile::tempdir().unwrap();
    if let Err(why) = pvedeploy_sim::guest::NspawnBackend::detect(probe.path(), &pvedeploy_sim::guest::default_cache_dir()) {
        skip(&format!("real guests unavailable: {why}"));
        return false;
    }
    true
}

/// A working directory with serve's config: this port, the data in `./data`, deploys allowed from the git server.
fn workdir(git: &GitServer) -> (tempfile::TempDir, u16) {
    let cwd = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!("listen = \"127.0.0.1:{port}\"\ndata_dir = \"./data\"\n\n[repos]\nallowed_hosts = [\"{}\"]\nschemes = [\"http\"]\n", git.host);
    std::fs::write(cwd.path().join("pvedeploy.toml"), config).unwrap();
    (cwd, port)
}

/// Deploys the Express fixture as `name` in a container and waits until it runs: (id, URL, the deployment).
async fn deploy_express(serve: &Serve, name: &str, repo: &Repo) -> (String, String, Value) {
    let body = json!({"name": name, "repo_url": repo.url, "framework": "node", "type": "lxc", "memory_mib": 1024});
    let (s, e) = serve.post("/api/v1/deployments", &body).await;
    assert_eq!(s, 202, "{e}");
    let id = e["id"].as_str().unwrap().to_string();
    let d = serve.wait_for(&id, "running", Duration::from_secs(900), |d| d["status"] == "running" || d["status"] == "failed").await;
    assert_eq!(d["status"], "running", "{d}\n{}", serve.log_tail());
    let url = d["url"].as_str().expect("a running deployment has a URL").to_string();
    assert_eq!(http_body(&url).await, "hello from express v1\n");
    (id, url, d)
}

/// After a restart: the deployment is still running on the same guest at the same URL, the app answers there once
/// its guest has booted again, and a redeploy to a new commit works.
async fn recovered(serve: &Serve, id: &str, url: &str, before: &Value, repo: &Repo, started: Instant) {
    let (s, d) = serve.get(&format!("/api/v1/deployments/{id}")).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!((d["status"].as_str(), d["url"].as_str(), &d["proxmox_id"]), (Some("running"), Some(url), &before["proxmox_id"]), "{d}");
    let t = Instant::now();
    loop {
        let body = http_body(url).await;
        if body == "hello from express v1\n" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(300), "the app never answered again at {url}: {body}\n{}", serve.log_tail());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("restart → app answering again at {url}: {:.1} s", started.elapsed().as_secs_f64());
    repo.edit("server.js", "const VERSION_MARKER = \"v1\";", "const VERSION_MARKER = \"v2\";");
    let v2 = repo.commit("v2");
    let (s, r) = serve.post(&format!("/api/v1/deployments/{id}/redeploy"), &json!({})).await;
    assert_eq!(s, 202, "{r}");
    let d = serve.wait_for(id, "running v2", Duration::from_secs(600), |d| (d["status"] == "running" && d["commit"] == v2.as_str()) || d["status"] == "failed").await;
    assert_eq!(d["status"], "running", "the redeploy after the restart: {d}\n{}", serve.log_tail());
    assert_eq!(http_body(url).await, "hello from express v2\n");
}

/// How the first serve goes away.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Down {
    /// SIGTERM: serve stops its guests and saves the cluster.
    Stopped,
    /// SIGKILL: nothing of serve's own clean-up runs.
    Killed,
}

/// Deploys the Express app on a sandbox, takes serve down `how`, starts it again on the same data dir, and checks
/// the app is back at its URL and can be redeployed.
async fn comes_back_after(how: Down, name: &str) {
    if !real_sandbox_possible() {
        return;
    }
    let git = GitServer::start().await;
    let repo = git.repo("octo/express", "express");
    let (cwd, port) = workdir(&git);
    let serve = Serve::start(cwd.path(), port, 1).await;
    let (id, url, before) = deploy_express(&serve, name, &repo).await;
    match how {
        Down::Stopped => {
            serve.stop();
            assert!(http_body(&url).await.starts_with("<no answer"), "a stopped sandbox stops its guests");
        }
        Down::Killed => serve.kill(),
    }
    assert!(cwd.path().join("data/sandbox/cluster.json").is_file(), "the cluster is saved in the data dir");

    let started = Instant::now();
    let serve = Serve::start(cwd.path(), port, 2).await;
    eprintln!("{how:?}: restart → API answering: {:.1} s", started.elapsed().as_secs_f64());
    recovered(&serve, &id, &url, &before, &repo, started).await;
    serve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sandbox_stopped_and_started_again_serves_its_running_app_at_the_same_url() {
    comes_back_after(Down::Stopped, "express-restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sandbox_killed_with_sigkill_recovers_its_running_app_at_the_same_url() {
    comes_back_after(Down::Killed, "express-killed").await;
}

/// A repository named by a host that only the agent can resolve (issue #22, outbound policy): the agent resolves
/// `repo.pinned.test` once, checks the address against `[repos] allow_private`, and the guest's git connects to
/// that address (`deploy_app.sh fetch --resolve`, `http.curloptResolve`). The guest cannot resolve the name itself
/// (its `/etc/hosts` is the simulator's: `sim/src/guest/seed.rs` writes only `localhost` and its own name, and there
/// is no DNS on loopback), so the app running proves git used the checked address and asked no resolver: a name
/// that answered differently for the guest (DNS rebinding) would not be followed either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repository_host_only_the_agent_resolves_is_fetched_by_the_guest_from_the_address_the_agent_checked() {
    if !real_sandbox_possible() {
        return;
    }
    if Command::new("unshare").args(["--mount", "--propagation", "private", "true"]).status().map(|s| !s.success()).unwrap_or(true) {
        skip("no mount namespaces here (unshare --mount)");
        return;
    }
    let git = GitServer::start().await;
    let repo = git.repo("octo/express", "express");
    let git_port = git.host.rsplit(':').next().unwrap();
    let name = "repo.pinned.test";
    let pinned = Repo { url: repo.url.replace("127.0.0.1", name), bare: repo.bare.clone(), work: repo.work.clone(), full_name: repo.full_name.clone() };
    assert_ne!(pinned.url, repo.url);
    let cwd = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = \"./data\"\n\n[repos]\nallowed_hosts = [\"{name}:{git_port}\"]\nschemes = [\"http\"]\nallow_private = [\"127.0.0.0/8\"]\n"
    );
    std::fs::write(cwd.path().join("pvedeploy.toml"), config).unwrap();
    let hosts = cwd.path().join("agent-hosts");
    std::fs::write(&hosts, format!("{}\n127.0.0.1\t{name}\n", std::fs::read_to_string("/etc/hosts").unwrap_or_default())).unwrap();

    let serve = Serve::start_with_hosts(cwd.path(), port, 1, &hosts).await;
    let (id, url, _) = deploy_express(&serve, "express-pinned", &pinned).await;
    let (s, logs) = serve.get(&format!("/api/v1/deployments/{id}/logs?limit=1000")).await;
    assert_eq!(s, 200, "{logs}");
    let text = logs.to_string();
    assert!(text.contains(&format!("{name}:{git_port}:127.0.0.1")), "the guest's fetch carries the checked address: {text}");

    // A new commit reaches the guest the same way: the branch head asked from the guest, and the fetch, both pinned.
    repo.edit("server.js", "const VERSION_MARKER = \"v1\";", "const VERSION_MARKER = \"v2\";");
    let v2 = repo.commit("v2");
    let (s, r) = serve.post(&format!("/api/v1/deployments/{id}/redeploy"), &json!({})).await;
    assert_eq!(s, 202, "{r}");
    let d = serve.wait_for(&id, "running v2", Duration::from_secs(600), |d| (d["status"] == "running" && d["commit"] == v2.as_str()) || d["status"] == "failed").await;
    assert_eq!(d["status"], "running", "the redeploy through the pinned address: {d}\n{}", serve.log_tail());
    assert_eq!(http_body(&url).await, "hello from express v2\n");
    serve.stop();
}
