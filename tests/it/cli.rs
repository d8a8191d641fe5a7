//! The `pvedeploy` binary itself: safe defaults with no configuration, a clear config error, graceful SIGTERM;
//! and the command line for people against a running agent — deploy (followed live, on real guests), list, status,
//! logs, env, redeploy, rollback, stop, start, destroy — its exit codes, words for errors, completions and man pages.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn serve(cwd: &std::path::Path, port: u16) -> (Running, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pvedeploy"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(cwd)
        .env_remove("PVEDEPLOY_ADMIN_TOKEN")
        .env_remove("RUST_LOG")
        .env("PVEDEPLOY_PROXMOX_MODE", "none")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pvedeploy starts");
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in [Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>, Box::new(child.stderr.take().unwrap())] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    (Running(child), rx)
}

fn wait_for(rx: &std::sync::mpsc::Receiver<String>, what: &str, seen: &mut Vec<String>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let hit = line.contains(what);
            seen.push(line);
            if hit {
                return true;
            }
        }
    }
    false
}

#[test]
fn serve_with_no_configuration_uses_safe_defaults_and_stops_gracefully_on_sigterm() {
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut running, rx) = serve(cwd.path(), port);
    let mut seen = Vec::new();
    assert!(wait_for(&rx, "serving the API", &mut seen), "{seen:#?}");
    // stdout and stderr arrive through separate pipes: the token line may trail the log
    assert!(seen.iter().any(|l| l.contains("pvd_")) || wait_for(&rx, "pvd_", &mut seen), "a generated admin token is printed once: {seen:#?}");
    let log = seen.join("\n");
    assert!(log.contains("no config file (defaults)"), "says what it uses: {log}");
    assert!(log.contains("data_dir=./data"), "{log}");
    let token = seen.iter().find_map(|l| l.trim().strip_prefix("pvd_")).map(|t| format!("pvd_{t}")).unwrap();
    assert!(cwd.path().join("data/db").is_dir(), "data lives in ./data");

    let status = Command::new("kill").args(["-TERM", &running.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let t = Instant::now();
    let exit = loop {
        if let Some(s) = running.0.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    assert!(wait_for(&rx, "database closed", &mut seen), "{seen:#?}");

    // restart on the same data dir: no new token, the old one still works
    let (_running, rx) = serve(cwd.path(), port);
    let mut seen = Vec::new();
    assert!(wait_for(&rx, "serving the API", &mut seen), "{seen:#?}");
    assert!(!seen.iter().any(|l| l.contains("pvd_")), "the token is printed only once");
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("http://127.0.0.1:{port}/api/v1/deployments"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}

#[test]
fn with_no_cluster_configured_serve_starts_the_sandbox() {
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pvedeploy"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(cwd.path())
        .env("PVEDEPLOY_ADMIN_TOKEN", "cli-sandbox-token-0123456789")
        .env_remove("PVEDEPLOY_PROXMOX_MODE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let running = Running(child);
    let mut seen = Vec::new();
    assert!(wait_for(&rx, "serving the API", &mut seen), "{seen:#?}");
    let log = seen.join("\n");
    assert!(log.contains("started the built-in Proxmox VE sandbox") && log.contains("fingerprint="), "{log}");
    let out = Command::new("curl")
        .args(["-s", "-H", "Authorization: Bearer cli-sandbox-token-0123456789"])
        .arg(format!("http://127.0.0.1:{port}/api/v1/ready"))
        .output()
        .unwrap();
    let ready = String::from_utf8_lossy(&out.stdout);
    assert!(ready.contains("sandbox https://127.0.0.1:"), "{ready}");
    // The sandbox starts as a fresh install (no container template anywhere) and prepares itself through the API:
    // a container deployment finds the template on a node and its guest is created.
    let curl = |args: &[&str]| -> serde_json::Value {
        let out = Command::new("curl").args(["-s", "-H", "Authorization: Bearer cli-sandbox-token-0123456789", "-H", "Content-Type: application/json"]).args(args).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)))
    };
    let body = r#"{"name": "sandbox-ct", "repo_url": "https://github.com/octo/app", "framework": "flask", "type": "lxc", "cpu": 1, "memory_mib": 512, "disk_gb": 4}"#;
    let created = curl(&["-d", body, &format!("http://127.0.0.1:{port}/api/v1/deployments")]);
    let id = created["id"].as_str().unwrap_or_else(|| panic!("{created}")).to_string();
    let mut d = serde_json::Value::Null;
    for _ in 0..300 {
        d = curl(&[&format!("http://127.0.0.1:{port}/api/v1/deployments/{id}")]);
        if !["pending", "provisioning"].contains(&d["status"].as_str().unwrap_or_default()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let reached_install = d["events"].as_array().unwrap().iter().any(|e| e["to"] == "installing");
    assert!(reached_install && d["proxmox_id"].is_u64(), "the container was created on the prepared sandbox: {d}");
    stop_gracefully(running);
}

/// SIGTERM and wait: the agent stops what it started (simulator, node sshd, guests) itself.
fn stop_gracefully(mut running: Running) {
    Command::new("kill").args(["-TERM", &running.0.id().to_string()]).status().unwrap();
    let t = Instant::now();
    while running.0.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(30), "did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_bad_config_file_is_refused_naming_the_field() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("pvedeploy.toml"), "[limits]\ncpu = [0, 4]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pvedeploy")).arg("serve").current_dir(cwd.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limits.cpu") && err.contains("min"), "{err}");
    assert!(!cwd.path().join("data").exists(), "nothing is created on rejection");

    // A client command with that config and no --url says why it has no address; it never guesses one (the token
    // would go to whatever listens at 127.0.0.1:8080).
    let out = Command::new(env!("CARGO_BIN_EXE_pvedeploy"))
        .arg("list")
        .current_dir(cwd.path())
        .env("PVEDEPLOY_TOKEN", "a-token-that-must-not-travel")
        .env_remove("PVEDEPLOY_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot find the agent's address") && err.contains("limits.cpu") && err.contains("--url"), "{err}");
}

// ---- the command line for people, against a running agent ----

use serde_json::{json, Value};

use crate::helpers::{TestApp, ADMIN, DEPLOYER, READER};
use crate::rig::{agent, git, http_body, start_real_sim, GitServer};

/// What one run of the command line gave.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn text(&self) -> String {
        format!("exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }

    /// Neither stream holds a terminal control code (stdout and stderr are pipes here).
    fn assert_plain(&self) {
        assert!(!self.stdout.contains('\x1b') && !self.stderr.contains('\x1b'), "control codes in piped output:\n{}", self.text());
        assert!(!self.stdout.contains('\r'), "carriage returns in piped output:\n{}", self.text());
    }
}

/// Runs `pvedeploy ARGS` with `envs` (the token, say) in `cwd`, standard input closed, killed after `limit`.
async fn run_in(cwd: &std::path::Path, args: &[&str], envs: &[(&str, &str)], limit: Duration) -> Out {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pvedeploy"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("PVEDEPLOY_URL")
        .env_remove("PVEDEPLOY_TOKEN")
        .env_remove("PVEDEPLOY_LISTEN")
        .env_remove("COLUMNS")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("pvedeploy runs");
    let out = tokio::time::timeout(limit, child.wait_with_output()).await.unwrap_or_else(|_| panic!("pvedeploy {args:?} took longer than {limit:?}")).unwrap();
    Out { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into_owned(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

/// `pvedeploy ARGS --url BASE` with an admin token (and `envs`), from an empty folder.
async fn cli(base: &str, args: &[&str], envs: &[(&str, &str)], limit: Duration) -> Out {
    cli_as(base, ADMIN, args, envs, limit).await
}

async fn cli_as(base: &str, token: &str, args: &[&str], envs: &[(&str, &str)], limit: Duration) -> Out {
    let dir = tempfile::tempdir().unwrap();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--url", base]);
    let mut envs = envs.to_vec();
    envs.push(("PVEDEPLOY_TOKEN", token));
    run_in(dir.path(), &all, &envs, limit).await
}

const QUICK: Duration = Duration::from_secs(30);
const DEPLOY: Duration = Duration::from_secs(960);

/// The URL of `… is running at URL`.
fn running_url(out: &Out) -> String {
    out.stdout.lines().find_map(|l| l.split_once(" is running at ").map(|(_, u)| u.trim().to_string())).unwrap_or_else(|| panic!("no URL:\n{}", out.text()))
}

/// Every stdout line is one JSON object; the events in order.
fn json_lines(out: &Out) -> Vec<Value> {
    out.stdout.lines().map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{}", out.text()))).collect()
}

const CANARY: &str = "cli-canary-7d2f$(id)`x`";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_deploys_a_real_app_to_its_url_and_manages_it_from_the_terminal() {
    let data = tempfile::tempdir().unwrap();
    let key = pvedeploy::keys::load_or_create_deploy_key(&data.path().join("keys")).unwrap();
    let Some(rig) = start_real_sim(&key.public_openssh).await else { return };
    let server = GitServer::start().await;
    let flask = server.repo("octo/cliflask", "flask");
    let app = agent(rig.sim(), data.path(), &server.host).await;
    let base = app.base.clone();

    // deploy, followed: one line per step, then the URL; the secret comes from the environment and is never shown
    let out = cli(
        &base,
        &["deploy", "cli-flask", "--repo", &flask.url, "--framework", "flask", "--type", "lxc", "--env", "APP_SECRET", "--env", "MODE=demo", "--timeout", "900"],
        &[("APP_SECRET", CANARY)],
        DEPLOY,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.text());
    out.assert_plain();
    for step in ["provision", "boot", "install", "fetch", "dependencies", "build", "start", "health"] {
        assert!(out.stdout.lines().any(|l| l.starts_with("  ok ") && l.split_whitespace().nth(1) == Some(step)), "step {step}:\n{}", out.text());
    }
    assert!(out.stdout.contains("environment: APP_SECRET, MODE (values not shown)"), "{}", out.text());
    assert!(!out.stdout.contains("cli-canary") && !out.stderr.contains("cli-canary"), "the value is never echoed");
    let url = running_url(&out);
    assert_eq!(http_body(&url).await, "hello from flask v1\n", "the URL answers");
    assert_eq!(http_body(&format!("{url}/env/APP_SECRET")).await, CANARY, "the value reached the app literally");
    let v1 = git(&flask.work, &["rev-parse", "HEAD"]).trim().to_string();
    assert!(out.stdout.contains(&format!("commit {v1}")), "{}", out.text());

    // status: facts, URL, releases with step timings
    let out = cli(&base, &["status", "cli-flask"], &[], QUICK).await;
    assert_eq!(out.code, 0, "{}", out.text());
    out.assert_plain();
    assert!(out.stdout.starts_with("cli-flask  running\n") && out.stdout.contains(&url), "{}", out.text());
    assert!(out.stdout.contains("releases (newest first):") && out.stdout.contains("boot ") && out.stdout.contains("health "), "{}", out.text());
    let out = cli(&base, &["status", "cli-flask", "--json"], &[], QUICK).await;
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!((v["deployment"]["url"].as_str(), v["releases"][0]["commit"].as_str()), (Some(url.as_str()), Some(v1.as_str())));

    // logs: the tail, and -f on a settled deployment ends by itself
    let out = cli(&base, &["logs", "cli-flask", "--tail", "3"], &[], QUICK).await;
    assert_eq!((out.code, out.stdout.lines().count()), (0, 3), "{}", out.text());
    assert!(out.stdout.contains(" is live at "), "{}", out.text());
    let out = cli(&base, &["logs", "cli-flask", "-f"], &[], QUICK).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(out.stdout.contains("requested by") && out.stderr.contains("nothing more to follow"), "{}", out.text());

    // list, filtered, and as JSON
    let out = cli(&base, &["list"], &[], QUICK).await;
    assert!(out.stdout.lines().next().unwrap_or("").starts_with("NAME"), "{}", out.text());
    assert!(out.stdout.lines().any(|l| l.starts_with("cli-flask ") && l.contains("running") && l.contains(&url)), "{}", out.text());
    let out = cli(&base, &["list", "--status", "failed"], &[], QUICK).await;
    assert!(!out.stdout.contains("cli-flask"), "{}", out.text());
    let out = cli(&base, &["list", "--json", "--framework", "flask"], &[], QUICK).await;
    let items: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(items.len(), 1);

    // env: names only; a set or unset that would drop a variable (values are write-only) is refused
    let out = cli(&base, &["env", "list", "cli-flask"], &[], QUICK).await;
    assert_eq!(out.stdout, "APP_SECRET\nMODE\n", "{}", out.text());
    let out = cli(&base, &["env", "set", "cli-flask", "OTHER=1"], &[], QUICK).await;
    assert_eq!(out.code, 2, "{}", out.text());
    assert!(out.stderr.contains("--replace") && out.stderr.contains("APP_SECRET, MODE"), "{}", out.text());
    let out = cli(&base, &["env", "set", "cli-flask", "APP_SECRET", "MODE=demo2", "OTHER=1"], &[("APP_SECRET", CANARY)], QUICK).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(!out.stdout.contains("cli-canary") && !out.stdout.contains("demo2"), "values are never echoed: {}", out.text());
    let out = cli(&base, &["env", "unset", "cli-flask", "OTHER"], &[], QUICK).await;
    assert_eq!(out.code, 2, "{}", out.text());
    assert!(out.stderr.contains("--env-file") && out.stderr.contains("APP_SECRET, MODE"), "{}", out.text());
    let keep = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(keep.path(), format!("APP_SECRET='{CANARY}'\nMODE=demo\n")).unwrap();
    let out = cli(&base, &["env", "unset", "cli-flask", "OTHER", "--env-file", keep.path().to_str().unwrap()], &[], QUICK).await;
    assert_eq!(out.code, 0, "{}", out.text());
    let out = cli(&base, &["env", "list", "cli-flask", "--json"], &[], QUICK).await;
    assert_eq!(serde_json::from_str::<Value>(&out.stdout).unwrap(), json!(["APP_SECRET", "MODE"]));

    // redeploy v2 with --json: every line is an event, the last one the result
    flask.edit("app.py", "VERSION_MARKER = \"v1\"", "VERSION_MARKER = \"v2\"");
    let v2 = flask.commit("v2");
    let out = cli(&base, &["redeploy", "cli-flask", "--json"], &[], DEPLOY).await;
    assert_eq!(out.code, 0, "{}", out.text());
    out.assert_plain();
    let events = json_lines(&out);
    assert_eq!(events[0]["event"], "accepted", "{}", out.text());
    assert!(events.iter().any(|e| e["event"] == "step" && e["step"] == "dependencies" && e["result"] == "done"), "{}", out.text());
    assert!(events.iter().any(|e| e["event"] == "log"), "{}", out.text());
    let result = events.last().unwrap();
    assert_eq!((result["event"].as_str(), result["ok"].as_bool(), result["commit"].as_str()), (Some("result"), Some(true), Some(v2.as_str())), "{result}");
    assert_eq!(http_body(&url).await, "hello from flask v2\n");
    assert_eq!(http_body(&format!("{url}/env/APP_SECRET")).await, CANARY, "the file's value reached the app");

    // rollback to v1, followed like a deploy
    let out = cli(&base, &["rollback", "cli-flask"], &[], DEPLOY).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(out.stdout.starts_with("Rolling cli-flask back") && out.stdout.contains(&format!("commit {v1}")), "{}", out.text());
    assert_eq!(http_body(&url).await, "hello from flask v1\n");

    // redeploy one exact commit: v2, while the branch has moved on to v3
    flask.edit("app.py", "VERSION_MARKER = \"v2\"", "VERSION_MARKER = \"v3\"");
    flask.commit("v3");
    let out = cli(&base, &["redeploy", "cli-flask", "--commit", &v2], &[], DEPLOY).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert_eq!(http_body(&url).await, "hello from flask v2\n", "{}", out.text());

    // stop and start
    let out = cli(&base, &["stop", "cli-flask"], &[], Duration::from_secs(180)).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(out.stdout.contains("cli-flask is stopped"), "{}", out.text());
    let out = cli(&base, &["start", "cli-flask"], &[], Duration::from_secs(180)).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(out.stdout.contains("cli-flask is running at"), "{}", out.text());

    // destroy: refused without --yes when standard input is not a terminal, nothing done; then with --yes
    let out = cli(&base, &["destroy", "cli-flask"], &[], QUICK).await;
    assert_eq!(out.code, 2, "{}", out.text());
    assert!(out.stderr.contains("--yes") && out.stderr.contains("not a terminal"), "{}", out.text());
    let (_, d) = app.get("/api/v1/deployments/cli-flask", Some(READER)).await;
    assert_eq!(d["status"], "running", "{d}");
    let out = cli(&base, &["destroy", "cli-flask", "--yes"], &[], Duration::from_secs(300)).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(out.stdout.contains("cli-flask is destroyed"), "{}", out.text());
    assert!(http_body(&url).await.starts_with("<no answer"));

    app.stop().await;
    rig.stop().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_a_failing_app_ends_with_its_failing_step_exit_code_and_last_lines() {
    let data = tempfile::tempdir().unwrap();
    let key = pvedeploy::keys::load_or_create_deploy_key(&data.path().join("keys")).unwrap();
    let Some(rig) = start_real_sim(&key.public_openssh).await else { return };
    let server = GitServer::start().await;
    let broken = server.repo("octo/clibroken", "flask");
    broken.edit("app.py", "import os\n", "import os\nraise RuntimeError(\"broken on purpose\")\n");
    broken.commit("broken");
    let app = agent(rig.sim(), data.path(), &server.host).await;
    let base = app.base.clone();

    let out = cli(&base, &["deploy", "cli-broken", "--repo", &broken.url, "--framework", "flask", "--type", "lxc", "--timeout", "900"], &[], DEPLOY).await;
    assert_eq!(out.code, 1, "{}", out.text());
    out.assert_plain();
    assert!(out.stdout.lines().any(|l| l.starts_with("  failed start ")), "the failing step's line:\n{}", out.text());
    assert!(out.stdout.contains("cli-broken: deploy failed at step start (exit code 1)"), "{}", out.text());
    let tail: Vec<&str> = out.stdout.lines().skip_while(|l| *l != "  last output:").skip(1).take_while(|l| l.starts_with("    ")).collect();
    assert!(tail.iter().any(|l| l.contains("HaltServer") || l.contains("did not answer HTTP")), "last lines:\n{}", out.text());
    assert!(out.stdout.contains("full log: pvedeploy logs cli-broken"), "{}", out.text());

    // the same as JSON lines: every line parses, the result names the step, the exit code and the last lines
    let out = cli(&base, &["deploy", "cli-broken-json", "--repo", &broken.url, "--framework", "flask", "--type", "lxc", "--json"], &[], DEPLOY).await;
    assert_eq!(out.code, 1, "{}", out.text());
    out.assert_plain();
    let events = json_lines(&out);
    assert!(events.iter().any(|e| e["event"] == "step" && e["step"] == "start" && e["result"] == "failed"), "{}", out.text());
    let result = events.last().unwrap();
    assert_eq!(result["event"], "result", "{result}");
    assert_eq!((result["ok"].as_bool(), result["status"].as_str(), result["failed_step"].as_str(), result["exit_code"].as_i64()), (Some(false), Some("failed"), Some("start"), Some(1)), "{result}");
    assert!(!result["last_lines"].as_array().unwrap().is_empty(), "{result}");

    app.stop().await;
    rig.stop().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_checks_arguments_before_any_request_and_says_what_the_agent_refused() {
    // An agent with no cluster: deployments are recorded and stay pending.
    let app = TestApp::spawn().await;
    let base = app.base.clone();
    let nowhere = format!("http://127.0.0.1:{}", free_port());

    // arguments are parsed into the core's types first: nothing is sent (the URL answers nothing anyway)
    let out = cli(&nowhere, &["deploy", "Bad_Name", "--repo", "https://github.com/octo/app.git", "--framework", "flask"], &[], QUICK).await;
    assert_eq!(out.code, 2, "{}", out.text());
    assert!(out.stderr.contains("<NAME>") && out.stderr.contains("DNS label"), "{}", out.text());
    let out = cli(&nowhere, &["deploy", "ok", "--repo", "https://github.com/octo/app.git", "--framework", "rails"], &[], QUICK).await;
    assert!(out.code == 2 && out.stderr.contains("--framework") && out.stderr.contains("flask"), "{}", out.text());
    let out = cli(&nowhere, &["deploy", "ok", "--repo", "https://github.com/octo/app.git", "--framework", "flask", "--env", "1BAD=secret-xyz"], &[], QUICK).await;
    assert!(out.code == 2 && out.stderr.contains("--env") && out.stderr.contains("1BAD") && !out.stderr.contains("secret-xyz"), "{}", out.text());
    let out = cli(&nowhere, &["deploy", "ok", "--repo", "https://github.com/octo/app.git", "--framework", "flask", "--start-command", "run\nrm"], &[], QUICK).await;
    assert!(out.code == 2 && out.stderr.contains("--start-command") && out.stderr.contains("newline"), "{}", out.text());
    let out = cli(&nowhere, &["deploy", "ok", "--repo", "https://github.com/octo/app.git", "--framework", "flask", "--persist", "../etc"], &[], QUICK).await;
    assert!(out.code == 2 && out.stderr.contains("--persist") && out.stderr.contains("relative path"), "{}", out.text());
    // the GitHub options: each bad value names its argument, nothing is sent
    let deploy = |extra: &[&str]| {
        let mut args = vec!["deploy", "ok", "--repo", "https://github.com/octo/app.git", "--framework", "flask"];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let twenty_one: Vec<String> = (0..21).flat_map(|i| ["--paths".to_string(), format!("dir{i}/**")]).collect();
    let many: Vec<&str> = twenty_one.iter().map(String::as_str).collect();
    for (extra, arg, said) in [
        (vec!["--paths", "/etc/**"], "--paths", "no leading /"),
        (vec!["--paths", "api/**", "--paths", "../x"], "--paths", "no leading / or !"),
        (vec!["--paths", "a b"], "--paths", "without spaces"),
        (many, "--paths", "at most 20 patterns"),
        (vec!["--deploy-tags", "v[0-9]*"], "--deploy-tags", "no [ ]"),
        (vec!["--previews-from-forks"], "--previews-from-forks", "--previews"),
        (vec!["--preview-ttl-hours", "24"], "--preview-ttl-hours", "--previews"),
        (vec!["--previews", "--preview-ttl-hours", "0"], "--preview-ttl-hours", "1..=720"),
        (vec!["--previews", "--preview-ttl-hours", "721"], "--preview-ttl-hours", "1..=720"),
        (vec!["--previews", "--preview-ttl-hours", "soon"], "--preview-ttl-hours", "soon"),
        (vec!["--previews=yes"], "--previews", "yes"),
    ] {
        let args = deploy(&extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cli(&nowhere, &args, &[], QUICK).await;
        assert_eq!(out.code, 2, "{extra:?}: {}", out.text());
        assert!(out.stderr.contains(arg) && out.stderr.contains(said) && !out.stderr.contains("cannot reach"), "{extra:?}: {}", out.text());
    }

    let out = cli(&nowhere, &["redeploy", "shop", "--commit", "abc"], &[], QUICK).await;
    assert!(out.code == 2 && out.stderr.contains("--commit") && out.stderr.contains("40 or 64"), "{}", out.text());
    let out = cli(&nowhere, &["redeploy", "shop", "--commit", &"a".repeat(40)], &[], QUICK).await;
    assert!(out.code == 2 && out.stderr.contains(&format!("cannot reach the agent at {nowhere}")), "a valid commit goes to the agent: {}", out.text());

    // an unreachable agent: which URL, and where it came from
    let out = cli(&nowhere, &["list"], &[], QUICK).await;
    assert_eq!(out.code, 2, "{}", out.text());
    assert!(out.stderr.contains(&format!("cannot reach the agent at {nowhere} (given with --url)")), "{}", out.text());
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["list"], &[("PVEDEPLOY_TOKEN", ADMIN), ("PVEDEPLOY_URL", &nowhere)], QUICK).await;
    assert!(out.stderr.contains(&format!("cannot reach the agent at {nowhere} (from PVEDEPLOY_URL)")), "{}", out.text());
    let port = nowhere.rsplit(':').next().unwrap();
    std::fs::write(dir.path().join("pvedeploy.toml"), format!("listen = \"127.0.0.1:{port}\"\n")).unwrap();
    let out = run_in(dir.path(), &["status", "shop"], &[("PVEDEPLOY_TOKEN", ADMIN)], QUICK).await;
    assert!(out.stderr.contains("(from `listen` in the config file pvedeploy.toml)"), "{}", out.text());
    let out = run_in(dir.path(), &["list"], &[], QUICK).await;
    assert!(out.code == 2 && out.stderr.contains("PVEDEPLOY_TOKEN"), "{}", out.text());

    // a 422 names every field and its rule; nothing is created
    let out = cli(&base, &["deploy", "cli-bad", "--repo", "ftp://example.com/octo/app.git", "--framework", "flask", "--cpu", "99"], &[], QUICK).await;
    assert_eq!(out.code, 2, "{}", out.text());
    assert!(out.stderr.contains("HTTP 422") && out.stderr.contains("  repo_url: ") && out.stderr.contains("  cpu: ") && out.stderr.contains("[rule: range]"), "{}", out.text());
    assert_eq!(app.count_deployments().await, 0);

    // 403 names the scope that is missing; 401 says the token was not accepted
    let out = cli_as(&base, READER, &["deploy", "cli-r", "--repo", "https://github.com/octo/app.git", "--framework", "flask"], &[], QUICK).await;
    assert!(out.code == 2 && out.stderr.contains("lacks the `deploy` scope, which creating a deployment needs"), "{}", out.text());
    let out = cli_as(&base, "not-a-token-0123456789", &["list"], &[], QUICK).await;
    assert!(out.code == 2 && out.stderr.contains("did not accept the token"), "{}", out.text());

    // the GitHub options reach the agent as the API's fields
    let out = cli_as(&base, DEPLOYER, &["deploy", "cli-gh", "--repo", "https://github.com/octo/app.git", "--framework", "flask", "--paths", "api/**", "--paths", "requirements.txt", "--deploy-tags", "v*", "--previews", "--previews-from-forks", "--preview-ttl-hours", "24", "--detach"], &[], QUICK).await;
    assert_eq!(out.code, 0, "{}", out.text());
    let (_, d) = app.get("/api/v1/deployments/cli-gh", Some(ADMIN)).await;
    assert_eq!(
        (&d["paths"], &d["deploy_tags"], &d["previews"], &d["previews_from_forks"], &d["preview_ttl_hours"]),
        (&json!(["api/**", "requirements.txt"]), &json!("v*"), &json!(true), &json!(true), &json!(24)),
        "{d}"
    );
    let out = cli_as(&base, DEPLOYER, &["deploy", "cli-plain", "--repo", "https://github.com/octo/app.git", "--framework", "flask", "--detach"], &[], QUICK).await;
    assert_eq!(out.code, 0, "{}", out.text());
    let (_, d) = app.get("/api/v1/deployments/cli-plain", Some(ADMIN)).await;
    assert_eq!((&d["paths"], &d["previews"], &d["preview_ttl_hours"]), (&json!([]), &json!(false), &json!(72)), "the defaults: {d}");

    // detach: accepted, exit 0; following a deployment that stays pending is bounded by --timeout (exit 2)
    let out = cli_as(&base, DEPLOYER, &["deploy", "cli-detached", "--repo", "https://github.com/octo/app.git", "--framework", "flask", "--detach"], &[], QUICK).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(out.stdout.starts_with("Deploying cli-detached (flask in a VM)"), "{}", out.text());
    let t = Instant::now();
    let out = cli(&base, &["deploy", "cli-pending", "--repo", "https://github.com/octo/app.git", "--framework", "django", "--type", "lxc", "--env", "A=1", "--timeout", "2"], &[], QUICK).await;
    assert_eq!(out.code, 2, "{}", out.text());
    out.assert_plain();
    assert!(t.elapsed() < Duration::from_secs(15) && out.stderr.contains("Stopped watching after") && out.stderr.contains("cli-pending is pending"), "{}", out.text());
    let out = cli(&base, &["deploy", "cli-pending-json", "--repo", "https://github.com/octo/app.git", "--framework", "flask", "--json", "--timeout", "1"], &[], QUICK).await;
    let events = json_lines(&out);
    assert_eq!((events.first().unwrap()["event"].as_str(), events.last().unwrap()["event"].as_str()), (Some("accepted"), Some("timed_out")), "{}", out.text());

    // list, filtered; status; logs; env — on what the agent recorded
    let out = cli_as(&base, READER, &["list", "--status", "pending", "--framework", "django"], &[], QUICK).await;
    assert_eq!(out.code, 0, "{}", out.text());
    let rows: Vec<&str> = out.stdout.lines().skip(1).collect();
    assert!(rows.len() == 1 && rows[0].starts_with("cli-pending ") && rows[0].contains(" django "), "{}", out.text());
    let out = run_in(dir.path(), &["list", "--url", &base], &[("PVEDEPLOY_TOKEN", READER), ("COLUMNS", "40")], QUICK).await;
    assert!(out.stdout.lines().all(|l| l.chars().count() <= 40) && out.stdout.contains("cli-detached"), "fitted to COLUMNS:\n{}", out.text());
    let out = cli_as(&base, READER, &["status", "cli-pending"], &[], QUICK).await;
    assert!(out.code == 0 && out.stdout.starts_with("cli-pending  pending") && out.stdout.contains("releases: none yet"), "{}", out.text());
    let out = cli_as(&base, READER, &["logs", "cli-pending"], &[], QUICK).await;
    assert!(out.stdout.contains("request ") && out.stdout.contains("requested by"), "{}", out.text());
    let out = cli_as(&base, READER, &["env", "list", "cli-pending"], &[], QUICK).await;
    assert_eq!(out.stdout, "A\n", "the deploy's --env was set: {}", out.text());
    let out = cli_as(&base, READER, &["status", "nope"], &[], QUICK).await;
    assert!(out.code == 2 && out.stderr.contains("no deployment \"nope\"") && out.stderr.contains("HTTP 404"), "{}", out.text());

    // destroy without --yes, standard input not a terminal: refused before any request; the deployment stays
    let out = cli(&base, &["destroy", "cli-pending"], &[], QUICK).await;
    assert_eq!(out.code, 2, "{}", out.text());
    assert!(out.stderr.contains("argument --yes is required to destroy cli-pending when standard input is not a terminal"), "{}", out.text());
    let (_, d) = app.get("/api/v1/deployments/cli-pending", Some(ADMIN)).await;
    assert_eq!(d["status"], "pending", "{d}");
    let out = cli_as(&base, DEPLOYER, &["destroy", "cli-pending", "--yes", "--detach"], &[], QUICK).await;
    assert!(out.code == 2 && out.stderr.contains("lacks the `admin` scope, which destroying a deployment needs"), "{}", out.text());
    let out = cli(&base, &["destroy", "cli-pending", "--yes"], &[], QUICK).await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(out.stdout.contains("cli-pending is destroyed"), "{}", out.text());
    app.stop().await;
}

#[test]
fn completions_and_man_pages_come_from_the_command_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_pvedeploy")).args(args).current_dir(dir.path()).output().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        for word in ["deploy", "rollback", "destroy", "completions", "django"] {
            assert!(text.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = run(&["man"]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && page.contains(".TH pvedeploy 1") && page.contains("deploy"), "{page}");
    let out = run(&["man", "deploy"]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH pvedeploy-deploy 1") && page.contains("\\-\\-framework"), "{page}");
    let out = run(&["man", "--dir", "pages"]);
    assert!(out.status.success(), "{out:?}");
    for f in ["pvedeploy.1", "pvedeploy-deploy.1", "pvedeploy-env-set.1", "pvedeploy-logs.1"] {
        assert!(dir.path().join("pages").join(f).is_file(), "{f}");
    }
    let out = run(&["man", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
}
