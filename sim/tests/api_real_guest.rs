//! Drives real systemd-nspawn guests end to end through the simulator's HTTPS API and node SSH, as the agent will.
//!
//! VM: clone template 9000, upload a cloud-init snippet over SFTP to pve1's
//! `/var/lib/vz/snippets/`, `cicustom` + `ciuser` + url-encoded `sshkeys` + `ipconfig0`, start,
//! read the address from the guest agent, SSH in with a pinned (cloud-init injected) host key,
//! stop, purge. LXC: create from the Debian 12 template with `ssh-public-keys`, start, read
//! `/interfaces`, SSH in as root, delete.
//!
//! Without root / systemd-nspawn / sshd / OpenSSH clients this prints `SKIPPED: reason` and
//! passes, unless `CI=true`: then a missing capability fails the test.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::openssh::{keygen, keyscan, mounted, openssh, Key};
use common::{enc, fast_timing, start_in, Sim};
use pvedeploy_sim::guest::{default_cache_dir, NspawnBackend};
use pvedeploy_sim::{node_ssh, SimConfig};
use serde_json::Value;

/// Skips (prints `SKIPPED: reason`), or fails when `CI=true`.
fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and real guests cannot run here: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// The simulator plus what the test needs to look behind it. Dropping it without
/// [`SimGuard::finish`] (a failed step) still stops every guest and node sshd.
struct SimGuard {
    sim: Option<Sim>,
    backend: Arc<NspawnBackend>,
    tmp: PathBuf,
}

impl SimGuard {
    fn sim(&self) -> &Sim {
        self.sim.as_ref().expect("simulator running")
    }

    async fn finish(mut self) {
        if let Some(sim) = self.sim.take() {
            sim.handle.shutdown().await;
        }
    }
}

impl Drop for SimGuard {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            eprintln!("cleaning up after a failed step: stopping guests and node sshd");
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(sim.handle.shutdown()));
        }
    }
}

/// A simulator with real guests and node SSH (agent key authorized), or `None` = skipped.
async fn start_real(agent_key: impl FnOnce(&Path) -> String) -> Option<SimGuard> {
    for (tool, package) in [("ssh", "openssh-client"), ("sftp", "openssh-client"), ("ssh-keyscan", "openssh-client"), ("ssh-keygen", "openssh-client")] {
        if Command::new(tool).arg("-V").output().is_err() {
            skip(&format!("no `{tool}` (apt-get install {package})"));
            return None;
        }
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
    let t = Instant::now();
    backend.prepare().await.expect("base image");
    eprintln!("base image ready in {:.1} s", t.elapsed().as_secs_f64());
    let tmp = dir.path().to_path_buf();
    let authorized = agent_key(&tmp);
    let mut cfg = SimConfig::sandbox(state).with_node_ssh(&authorized);
    cfg.backend = backend.clone();
    cfg.timing = fast_timing();
    let sim = start_in(dir, cfg).await;
    Some(SimGuard { sim: Some(sim), backend, tmp })
}

/// Runs `cmd`; returns (success, stdout, stderr).
fn run(mut cmd: Command) -> (bool, String, String) {
    let out = cmd.output().expect("running an OpenSSH client");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

fn ssh(key: &Key, known_hosts: &Path, user_host: &str, command: &str) -> (bool, String, String) {
    let mut cmd = openssh("ssh", key, known_hosts);
    cmd.arg(user_host).arg(command);
    run(cmd)
}

/// A `known_hosts` line for `addr` (`[ip]:port` when not on 22).
fn known_hosts_line(addr: SocketAddr, key: &str) -> String {
    if addr.port() == 22 {
        format!("{} {key}", addr.ip())
    } else {
        format!("[{}]:{} {key}", addr.ip(), addr.port())
    }
}

/// Runs a task-returning call and waits for the task; panics unless it ends `OK`.
async fn task_ok(s: &Sim, method: &str, path: &str, params: &[(&str, &str)]) -> Duration {
    let t = Instant::now();
    let exit = s.task(method, "pve1", path, params).await;
    assert_eq!(exit, "OK", "{method} {path}");
    t.elapsed()
}

/// Polls `f` every 250 ms until it returns `Some`, up to `limit`.
async fn poll<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t = Instant::now();
    loop {
        if let Some(v) = f().await {
            return (v, t.elapsed());
        }
        assert!(t.elapsed() < limit, "{what}: nothing after {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// eth0's IPv4 from a QGA `network-get-interfaces` reply.
fn agent_ipv4(data: &Value) -> Option<Ipv4Addr> {
    data["result"]
        .as_array()?
        .iter()
        .filter(|i| i["name"] != "lo")
        .flat_map(|i| i["ip-addresses"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["ip-address-type"] == "ipv4")
        .find_map(|a| a["ip-address"].as_str()?.parse().ok())
}

fn user_data(user: &Key, host: &Key) -> String {
    let private = std::fs::read_to_string(&host.private).unwrap();
    let indented: String = private.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "#cloud-config\nusers:\n  - name: deploy\n    shell: /bin/bash\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    \
         ssh_authorized_keys:\n      - {}\n\
         ssh_keys:\n  ed25519_private: |\n{indented}  ed25519_public: {}\n",
        user.public, host.public
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_through_the_api_with_a_snippet_uploaded_over_sftp() {
    let mut agent = None;
    let Some(guard) = start_real(|tmp| {
        let k = keygen(tmp, "agent");
        let line = format!("{}\n", k.public);
        agent = Some(k);
        line
    })
    .await
    else {
        return;
    };
    let agent = agent.expect("agent key");
    let s = guard.sim();
    let tmp = guard.tmp.clone();
    let t_all = Instant::now();

    // Clone template 9000 to the next free id.
    let vmid: u32 = s.get("/cluster/nextid").await.data().as_str().and_then(|v| v.parse().ok()).expect("nextid");
    let id = vmid.to_string();
    let took = task_ok(s, "POST", "/nodes/pve1/qemu/9000/clone", &[("newid", &id), ("name", "api-real"), ("full", "0")]).await;
    eprintln!("clone {vmid}: {:.2} s", took.as_secs_f64());

    // Upload the user-data snippet over SFTP to pve1, pinning its host key.
    let user = keygen(&tmp, "deploy");
    let host = keygen(&tmp, "guest-host");
    let (node_addr, node_key) = s.handle.node_ssh("pve1").expect("pve1 has an SSH endpoint");
    assert!(node_addr.ip().is_loopback(), "{node_addr}");
    let (other_addr, _) = s.handle.node_ssh("pve2").expect("pve2 has an SSH endpoint");
    assert_ne!(node_addr, other_addr, "nodes need distinct SSH addresses");
    let status = s.get("/cluster/status").await;
    let pve1 = status.data().as_array().into_iter().flatten().find(|n| n["name"] == "pve1").cloned().unwrap_or_default();
    assert_eq!(pve1["ip"], node_addr.ip().to_string(), "/cluster/status reports the node's SSH address");
    let node_kh = tmp.join("known_hosts.node");
    std::fs::write(&node_kh, format!("{}\n", known_hosts_line(node_addr, &node_key))).unwrap();
    let local = tmp.join("user-data.yaml");
    std::fs::write(&local, user_data(&user, &host)).unwrap();
    let batch = tmp.join("sftp-batch");
    std::fs::write(&batch, format!("put {} /var/lib/vz/snippets/{vmid}.yaml\n", local.display())).unwrap();
    let mut sftp = openssh("sftp", &agent, &node_kh);
    sftp.arg("-P").arg(node_addr.port().to_string()).arg("-b").arg(&batch).arg(format!("root@{}", node_addr.ip()));
    let (ok, out, err) = run(sftp);
    assert!(ok, "sftp upload failed: {out}{err}");
    let on_disk = s.handle.storage_dir("pve1", "local").expect("local").join(format!("snippets/{vmid}.yaml"));
    assert_eq!(std::fs::read_to_string(&on_disk).unwrap(), user_data(&user, &host), "snippet landed in local storage");
    let listed = s.get("/nodes/pve1/storage/local/content?content=snippets").await;
    let volid = format!("local:snippets/{vmid}.yaml");
    assert!(listed.data().as_array().into_iter().flatten().any(|v| v["volid"] == volid.as_str()), "{listed:?}");

    // cicustom + ciuser + url-encoded sshkeys + DHCP, through the config API.
    let sshkeys = enc(&format!("{}\n", user.public));
    let r = s
        .put(
            &format!("/nodes/pve1/qemu/{vmid}/config"),
            &[("cicustom", &format!("user={volid}")), ("ciuser", "deploy"), ("sshkeys", &sshkeys), ("ipconfig0", "ip=dhcp"), ("agent", "1")],
        )
        .await;
    assert_eq!(r.status, 200, "config: {r:?}");

    let t_start = Instant::now();
    let took = task_ok(s, "POST", &format!("/nodes/pve1/qemu/{vmid}/status/start"), &[]).await;
    eprintln!("start task: {:.2} s", took.as_secs_f64());
    let (ip, took) = poll("agent network-get-interfaces", Duration::from_secs(90), move || async move {
        let r = s.get(&format!("/nodes/pve1/qemu/{vmid}/agent/network-get-interfaces")).await;
        if r.status == 200 { agent_ipv4(r.data()) } else { None }
    })
    .await;
    eprintln!("agent reported {ip} after {:.2} s", took.as_secs_f64());
    assert!(ip.is_loopback() && ip != Ipv4Addr::LOCALHOST, "{ip}");

    // SSH in with the injected host key pinned.
    let kh = tmp.join("known_hosts.vm");
    std::fs::write(&kh, format!("{ip} {}\n", host.public)).unwrap();
    let deploy = format!("deploy@{ip}");
    let (ok, out, err) = ssh(&user, &kh, &deploy, "cloud-init status --wait");
    assert!(ok && out.contains("status: done"), "cloud-init status --wait: {out}{err}");
    eprintln!("cloud-init done {:.2} s after start", t_start.elapsed().as_secs_f64());
    let (_, out, err) = ssh(&user, &kh, &deploy, "sudo -n systemctl is-system-running --wait");
    let state = out.trim();
    assert!(state == "running" || state == "degraded", "is-system-running: {out}{err}");
    eprintln!("VM system state: {state}");
    let (ok, out, err) = ssh(&user, &kh, &deploy, "sudo -n id -u");
    assert!(ok && out.trim() == "0", "passwordless sudo: {out}{err}");
    assert_eq!(keyscan(ip), format!("{ip} {}", host.public), "ssh-keyscan returns the injected host key");

    // Stop, purge, and the guest's overlay is gone.
    let root = guard.backend.guest_dir(vmid).join("root");
    assert!(mounted(&root), "overlay mounted while running");
    let took = task_ok(s, "POST", &format!("/nodes/pve1/qemu/{vmid}/status/stop"), &[]).await;
    eprintln!("stop: {:.2} s", took.as_secs_f64());
    assert!(!mounted(&root), "overlay still mounted after stop");
    task_ok(s, "DELETE", &format!("/nodes/pve1/qemu/{vmid}?purge=1"), &[]).await;
    assert!(!mounted(&root) && !guard.backend.guest_dir(vmid).exists(), "guest files left after purge");
    assert!(!s.handle.vm_exists(vmid));
    eprintln!("VM flow total: {:.2} s", t_all.elapsed().as_secs_f64());
    guard.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lxc_through_the_api_with_root_keys() {
    let Some(guard) = start_real(|tmp| format!("{}\n", keygen(tmp, "agent").public)).await else {
        return;
    };
    let s = guard.sim();
    let root_key = keygen(&guard.tmp, "ct-root");
    let t_all = Instant::now();
    let vmid: u32 = s.get("/cluster/nextid").await.data().as_str().and_then(|v| v.parse().ok()).expect("nextid");
    let id = vmid.to_string();
    let took = task_ok(
        s,
        "POST",
        "/nodes/pve1/lxc",
        &[
            ("vmid", &id),
            ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
            ("hostname", "ct-api"),
            ("ssh-public-keys", &format!("{}\n", root_key.public)),
            ("net0", "name=eth0,bridge=vmbr0,ip=dhcp"),
            ("rootfs", "local-lvm:4"),
            ("unprivileged", "1"),
        ],
    )
    .await;
    eprintln!("create CT {vmid}: {:.2} s", took.as_secs_f64());
    task_ok(s, "POST", &format!("/nodes/pve1/lxc/{vmid}/status/start"), &[]).await;
    let (ip, took) = poll("lxc interfaces", Duration::from_secs(90), move || async move {
        let r = s.get(&format!("/nodes/pve1/lxc/{vmid}/interfaces")).await;
        r.data()
            .as_array()?
            .iter()
            .find(|i| i["name"] == "eth0")?["inet"]
            .as_str()?
            .split('/')
            .next()?
            .parse::<Ipv4Addr>()
            .ok()
    })
    .await;
    eprintln!("CT reported {ip} after {:.2} s", took.as_secs_f64());
    let scanned = keyscan(ip);
    assert!(scanned.starts_with(&format!("{ip} ssh-ed25519 ")), "keyscan: {scanned:?}");
    let kh = guard.tmp.join("known_hosts.ct");
    std::fs::write(&kh, format!("{scanned}\n")).unwrap();
    let (_, out, err) = ssh(&root_key, &kh, &format!("root@{ip}"), "systemctl is-system-running --wait");
    let state = out.trim();
    assert!(state == "running" || state == "degraded", "is-system-running: {out}{err}");
    eprintln!("CT system state: {state}");
    let (ok, out, _) = ssh(&root_key, &kh, &format!("root@{ip}"), "hostname");
    assert!(ok && out.trim() == "ct-api", "hostname: {out}");

    let root = guard.backend.guest_dir(vmid).join("root");
    task_ok(s, "POST", &format!("/nodes/pve1/lxc/{vmid}/status/stop"), &[]).await;
    task_ok(s, "DELETE", &format!("/nodes/pve1/lxc/{vmid}?purge=1"), &[]).await;
    assert!(!mounted(&root) && !guard.backend.guest_dir(vmid).exists(), "CT files left after delete");
    eprintln!("LXC flow total: {:.2} s", t_all.elapsed().as_secs_f64());
    guard.finish().await;
}

/// The address a started container reports on `eth0`.
async fn ct_address(s: &Sim, vmid: u32) -> Ipv4Addr {
    poll("lxc interfaces", Duration::from_secs(90), move || async move {
        let r = s.get(&format!("/nodes/pve1/lxc/{vmid}/interfaces")).await;
        r.data().as_array()?.iter().find(|i| i["name"] == "eth0")?["inet"].as_str()?.split('/').next()?.parse::<Ipv4Addr>().ok()
    })
    .await
    .0
}

/// A backup of a running real container carries its files: the container is destroyed, restored from the backup
/// under a new VMID, and answers with the same host key and the file written before the backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_container_has_the_files_of_its_backup() {
    let Some(guard) = start_real(|tmp| format!("{}\n", keygen(tmp, "agent").public)).await else {
        return;
    };
    let s = guard.sim();
    let root_key = keygen(&guard.tmp, "ct-root");
    let params = [
        ("vmid", "150"),
        ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
        ("hostname", "ct-backup"),
        ("net0", "name=eth0,bridge=vmbr0,ip=dhcp"),
        ("rootfs", "local-lvm:4"),
        ("start", "1"),
    ];
    let keys = format!("{}\n", root_key.public);
    let mut with_keys = params.to_vec();
    with_keys.push(("ssh-public-keys", &keys));
    task_ok(s, "POST", "/nodes/pve1/lxc", &with_keys).await;
    let ip = ct_address(s, 150).await;
    let scanned = keyscan(ip);
    let kh = guard.tmp.join("known_hosts.backup");
    std::fs::write(&kh, format!("{scanned}\n")).unwrap();
    let (ok, out, err) = ssh(&root_key, &kh, &format!("root@{ip}"), "systemctl is-system-running --wait >/dev/null; echo served-by-v1 > /root/marker && sync");
    assert!(ok, "{out}{err}");
    let took = task_ok(s, "POST", "/nodes/pve1/vzdump", &[("vmid", "150"), ("storage", "local"), ("compress", "zstd")]).await;
    eprintln!("vzdump of a running CT: {:.2} s", took.as_secs_f64());
    let list = s.get("/nodes/pve1/storage/local/content?content=backup&vmid=150").await;
    let volid = list.data()[0]["volid"].as_str().expect("a backup volume").to_string();
    task_ok(s, "POST", "/nodes/pve1/lxc/150/status/stop", &[]).await;
    task_ok(s, "DELETE", "/nodes/pve1/lxc/150?purge=1", &[]).await;

    task_ok(s, "POST", "/nodes/pve1/lxc", &[("vmid", "151"), ("ostemplate", &volid), ("restore", "1"), ("storage", "local-lvm"), ("start", "1")]).await;
    let ip = ct_address(s, 151).await;
    let rescanned = keyscan(ip);
    assert_eq!(rescanned.split_whitespace().nth(2), scanned.split_whitespace().nth(2), "the host key came back with the files");
    std::fs::write(&kh, format!("{rescanned}\n")).unwrap();
    let (ok, out, err) = ssh(&root_key, &kh, &format!("root@{ip}"), "cat /root/marker");
    assert!(ok && out.trim() == "served-by-v1", "restored files: {out}{err}");
    task_ok(s, "POST", "/nodes/pve1/lxc/151/status/stop", &[]).await;
    task_ok(s, "DELETE", "/nodes/pve1/lxc/151?purge=1", &[]).await;
    guard.finish().await;
}
