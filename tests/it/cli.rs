//! The `pvedeploy` binary itself: safe defaults with no configuration, a clear config error, graceful SIGTERM.

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
}
