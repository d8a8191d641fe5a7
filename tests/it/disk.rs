//! The disk misbehaves under the agent process: a torn write-ahead-log tail, random bytes in the middle
//! of it, a full disk. Every request answered 2xx before a `kill -9` or a disk fault is there after the
//! restart, every 503 left nothing behind, and a store that lost acknowledged writes is never acted on:
//! the agent starts read-only and makes no changing call to Proxmox.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pvedeploy_sim::ClusterSpec;
use serde_json::{json, Value};

use crate::crash::{get, spawn_agent, wait_ready, Agent, TOKEN};
use crate::provision::start_sim;

/// An agent process with no Proxmox (`mode = none`): only the store is under test.
fn spawn_plain(data: &Path, port: u16) -> Agent {
    let child: Child = Command::new(env!("CARGO_BIN_EXE_pvedeploy"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .env("PVEDEPLOY_ADMIN_TOKEN", TOKEN)
        .env("PVEDEPLOY_PROXMOX_MODE", "none")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Agent(child)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The newest write-ahead-log segment of the embedded store under `data`.
fn newest_wal(data: &Path) -> PathBuf {
    let mut wals: Vec<PathBuf> = std::fs::read_dir(data.join("db/wal")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "wal")).collect();
    wals.sort();
    wals.pop().expect("a WAL segment")
}

/// POSTs a deployment named `name`; its id on 202, else the status.
async fn create(client: &reqwest::Client, base: &str, name: &str) -> Result<String, u16> {
    let body = json!({"name": name, "repo_url": "https://github.com/octo/app", "framework": "flask"});
    match client.post(format!("{base}/deployments")).bearer_auth(TOKEN).json(&body).send().await {
        Ok(r) if r.status() == 202 => Ok(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()),
        Ok(r) => Err(r.status().as_u16()),
        Err(_) => Err(0),
    }
}

/// Every acknowledged deployment answers.
async fn all_there(client: &reqwest::Client, base: &str, acked: &[String]) {
    let mut missing = vec![];
    for id in acked {
        if status_of(client, base, id).await != 200 {
            missing.push(id.clone());
        }
    }
    assert!(missing.is_empty(), "{} of {} acknowledged deployments are gone: {missing:?}", missing.len(), acked.len());
}

async fn status_of(client: &reqwest::Client, base: &str, id_or_name: &str) -> u16 {
    client.get(format!("{base}/deployments/{id_or_name}")).bearer_auth(TOKEN).send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_log_tail_loses_no_acknowledged_write_and_later_writes_stay_durable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let client = reqwest::Client::new();
    let mut acked = vec![];

    let agent = spawn_plain(&data, port);
    wait_ready(&client, &base).await;
    for i in 0..30 {
        acked.push(create(&client, &base, &format!("before-{i}")).await.expect("202"));
    }
    drop(agent); // kill -9
    // What a power loss in the middle of an append leaves: the start of a record that never finished.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(newest_wal(&data)).unwrap();
    f.write_all(&[0x5a, 0x11, 0x7c, 0x03, 0x20, 0x00, 0x01, 0xde, 0xad]).unwrap();
    drop(f);

    let agent = spawn_plain(&data, port);
    wait_ready(&client, &base).await;
    let ready = get(&client, &format!("{base}/ready")).await.unwrap();
    assert_eq!(ready["store"], "ok", "a torn tail is an unfinished write, not lost data: {ready}");
    let accepted = std::fs::read_to_string(data.join("db/wal-repair-report.accepted")).expect("the repair was reported and accepted");
    assert!(accepted.contains("complete_records_dropped=0"), "{accepted}");
    for i in 0..20 {
        acked.push(create(&client, &base, &format!("after-{i}")).await.expect("202 after the repair"));
    }
    drop(agent); // kill -9 again: the writes after the repair must be on disk, not in a deleted file

    let _agent = spawn_plain(&data, port);
    wait_ready(&client, &base).await;
    all_there(&client, &base, &acked).await;
}

/// The write that fills the engine's in-memory table lands in the next one while its log record stays
/// in the segment the flush retires: found with 10,000 creates and a restart (one missing). A small
/// table makes many such turns in a few hundred requests; a `kill -9` after them must lose none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_fill_the_memory_table_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let client = reqwest::Client::new();
    // 64 KiB tables: a turn every few requests (the default is 4 MiB, a turn every ~1,000).
    let url = format!("surrealkv://{}?max_memtable_size=65536", data.join("db").display());
    let spawn = || {
        let child: Child = Command::new(env!("CARGO_BIN_EXE_pvedeploy"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(&data)
            .env("PVEDEPLOY_ADMIN_TOKEN", TOKEN)
            .env("PVEDEPLOY_PROXMOX_MODE", "none")
            .env("PVEDEPLOY_DATABASE_URL", &url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Agent(child)
    };
    let mut acked = vec![];
    for round in 0..3 {
        let agent = spawn();
        wait_ready(&client, &base).await;
        all_there(&client, &base, &acked).await;
        for i in 0..120 {
            acked.push(create(&client, &base, &format!("r{round}-{i}")).await.expect("202"));
        }
        drop(agent); // kill -9
    }
    let _agent = spawn();
    wait_ready(&client, &base).await;
    all_there(&client, &base, &acked).await;
}

/// Runs `mount`/`umount` and says whether it worked.
fn sh(args: &[&str]) -> bool {
    Command::new(args[0]).args(&args[1..]).status().is_ok_and(|s| s.success())
}

/// A small tmpfs, unmounted when dropped (also when the test fails).
struct SmallDisk(PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if !sh(&["umount", "-l", self.0.to_str().unwrap()]) {
            eprintln!("could not unmount {}", self.0.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_no_acknowledged_write_and_keeps_no_refused_one() {
    if !nix_root() {
        return crate::rig::skip("mounting a tmpfs needs root");
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("disk");
    std::fs::create_dir_all(&mnt).unwrap();
    assert!(sh(&["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt.to_str().unwrap()]), "mount tmpfs");
    let disk = SmallDisk(mnt.clone());
    let data = mnt.join("data");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let client = reqwest::Client::new();
    let (mut acked, mut refused) = (vec![], vec![]);

    let agent = spawn_plain(&data, port);
    wait_ready(&client, &base).await;
    let t = Instant::now();
    let mut i = 0;
    while refused.len() < 10 {
        let name = format!("fill-{i}");
        match create(&client, &base, &name).await {
            Ok(id) => acked.push(id),
            Err(503) => refused.push(name),
            Err(s) => panic!("{name}: HTTP {s} (a full disk must answer 503)"),
        }
        i += 1;
        // A bound on the loop, not a speed target: it fills after a few hundred, however slow the machine.
        assert!(t.elapsed() < Duration::from_secs(1200), "the 2 MB disk never filled after {i} deployments");
    }
    eprintln!("{} deployments stored before the disk was full; {} answered 503 ({:.1}s)", acked.len(), refused.len(), t.elapsed().as_secs_f64());
    // Space comes back; the agent goes on.
    assert!(sh(&["mount", "-o", "remount,size=64m", mnt.to_str().unwrap()]), "grow tmpfs");
    let t = Instant::now();
    let mut after = 0;
    while after < 20 {
        match create(&client, &base, &format!("after-{after}")).await {
            Ok(id) => {
                acked.push(id);
                after += 1;
            }
            Err(s) => {
                assert!(s == 503 && t.elapsed() < Duration::from_secs(30), "HTTP {s} after space came back");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    eprintln!("20 more stored after space came back ({:.1}s)", t.elapsed().as_secs_f64());
    drop(agent); // kill -9

    let agent = spawn_plain(&data, port);
    wait_ready(&client, &base).await;
    all_there(&client, &base, &acked).await;
    let mut stored = vec![];
    for name in &refused {
        if status_of(&client, &base, name).await != 404 {
            stored.push(name.clone());
        }
    }
    assert!(stored.is_empty(), "answered 503 but stored anyway: {stored:?}");
    drop(agent);
    drop(disk);
}

/// The simulator and an agent process on a fresh data dir, ready.
struct SimAgent {
    cluster: crate::provision::Cluster,
    dir: tempfile::TempDir,
    port: u16,
    base: String,
    client: reqwest::Client,
    agent: Agent,
}

async fn sim_agent() -> SimAgent {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let client = reqwest::Client::new();
    let agent = spawn_agent(&cluster, dir.path(), port);
    wait_ready(&client, &base).await;
    SimAgent { cluster, dir, port, base, client, agent }
}

/// Waits until deployment `id` has its guest (provisioning done); returns it.
async fn provisioned(client: &reqwest::Client, base: &str, id: &str) -> Value {
    let t = Instant::now();
    loop {
        let d = get(client, &format!("{base}/deployments/{id}")).await.unwrap();
        if d["proxmox_id"].is_u64() && (d["status"] == "installing" || d["status"] == "running") {
            return d;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "{d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn nix_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_lost_acknowledged_writes_starts_read_only_and_touches_nothing() {
    let SimAgent { cluster, dir, port, base, client, agent } = sim_agent().await;
    let mut ids = vec![];
    for i in 0..4 {
        ids.push(create(&client, &base, &format!("kept-{i}")).await.expect("202"));
    }
    // Provisioned: guests exist on the cluster that the store must not forget.
    for id in &ids {
        provisioned(&client, &base, id).await;
    }
    drop(agent); // kill -9
    // 512 random bytes in the middle of the log: acknowledged records after them are lost.
    let wal = newest_wal(&dir.path().join("data"));
    let len = std::fs::metadata(&wal).unwrap().len();
    let mut bytes = std::fs::read(&wal).unwrap();
    let mid = (len / 2) as usize;
    for (k, b) in bytes[mid..mid + 512].iter_mut().enumerate() {
        *b = (k as u8).wrapping_mul(151).wrapping_add(7);
    }
    std::fs::write(&wal, bytes).unwrap();

    let before = cluster.sim.mutating_calls();
    let _agent = spawn_agent(&cluster, dir.path(), port);
    wait_ready(&client, &base).await;
    let ready = client.get(format!("{base}/ready")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready to act");
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["store"], "read-only", "{ready}");
    assert!(ready["store_reason"].as_str().unwrap_or_default().contains("pvedeploy recover"), "{ready}");
    // Reads answer; changes are refused, naming why.
    let (s, list) = {
        let r = client.get(format!("{base}/deployments")).bearer_auth(TOKEN).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(s, 200, "{list}");
    let r = client.post(format!("{base}/deployments")).bearer_auth(TOKEN).json(&json!({"name": "new-one", "repo_url": "https://github.com/octo/app", "framework": "flask"})).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("read-only"));
    for id in &ids {
        let r = client.delete(format!("{base}/deployments/{id}")).bearer_auth(TOKEN).send().await.unwrap();
        assert!(r.status() == 503 || r.status() == 404, "{}", r.status());
    }
    // Resuming, reconciling and destroying would all call Proxmox; nothing did.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(cluster.sim.mutating_calls(), before, "a read-only agent changed something on the cluster");
    drop(_agent);

    // The operator rebuilds from the cluster and confirms; the agent then starts trusted, knowing every guest.
    let out = recover(&cluster, dir.path(), true);
    assert!(out.contains("the store is read-only"), "{out}");
    assert_eq!(cluster.sim.mutating_calls(), before, "recover only reads the cluster");
    let _agent = spawn_agent(&cluster, dir.path(), port);
    wait_ready(&client, &base).await;
    let ready: Value = client.get(format!("{base}/ready")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["store"], "ok", "{ready}");
    for id in &ids {
        assert_eq!(status_of(&client, &base, id).await, 200, "deployment {id} is known again");
    }
}

/// Runs `pvedeploy recover` on the agent's data dir (the agent stopped); returns what it printed.
fn recover(cluster: &crate::provision::Cluster, dir: &Path, confirm: bool) -> String {
    let (_, secret) = cluster.sim.admin_token();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pvedeploy"));
    cmd.arg("--config").arg(dir.join("pvedeploy.toml")).arg("recover").arg("--data-dir").arg(dir.join("data"));
    if confirm {
        cmd.arg("--confirm");
    }
    let out = cmd.env("PVEDEPLOY_PROXMOX_TOKEN_SECRET", secret).env_remove("PVEDEPLOY_PROXMOX_MODE").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "recover failed: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_rebuilds_a_deleted_store_from_the_guests_marks() {
    let SimAgent { cluster, dir, port, base, client, agent } = sim_agent().await;
    let mut made = vec![];
    for (name, kind) in [("lost-vm", "vm"), ("lost-ct", "lxc")] {
        let body = json!({"name": name, "type": kind, "repo_url": "https://github.com/octo/app", "framework": "flask", "memory_mib": 768, "health_path": "/up"});
        let r: Value = client.post(format!("{base}/deployments")).bearer_auth(TOKEN).json(&body).send().await.unwrap().json().await.unwrap();
        made.push(r["id"].as_str().unwrap().to_string());
    }
    let mut before = vec![];
    for id in &made {
        before.push(provisioned(&client, &base, id).await);
    }
    drop(agent); // kill -9
    std::fs::remove_dir_all(dir.path().join("data/db")).unwrap();

    let calls = cluster.sim.mutating_calls();
    let plan = recover(&cluster, dir.path(), false);
    assert!(plan.contains("restore") && plan.contains("lost-vm") && plan.contains("lost-ct") && plan.contains("--confirm"), "{plan}");
    let done = recover(&cluster, dir.path(), true);
    assert!(done.contains("recorded 2 deployment(s)"), "{done}");
    assert_eq!(cluster.sim.mutating_calls(), calls, "recover only reads the cluster");

    let _agent = spawn_agent(&cluster, dir.path(), port);
    wait_ready(&client, &base).await;
    for b in &before {
        let d = get(&client, &format!("{base}/deployments/{}", b["id"].as_str().unwrap())).await.unwrap();
        for field in ["name", "type", "framework", "repo_url", "memory_mib", "health_path", "proxmox_id", "proxmox_node"] {
            assert_eq!(d[field], b[field], "{field}: {d}");
        }
    }
    // Listed again, by name prefix too (the recovery writes their `name_listing` records).
    let listed = get(&client, &format!("{base}/deployments?name=lost-")).await.unwrap();
    assert_eq!((listed["total"].as_u64(), listed["items"].as_array().map(Vec::len)), (Some(2), Some(2)), "{listed}");
    // The reconciler finds every marked guest owned again.
    let report = get(&client, &format!("{base}/reconcile")).await.unwrap();
    assert_eq!(report["orphans"].as_array().map(Vec::len), Some(0), "{report}");
}
