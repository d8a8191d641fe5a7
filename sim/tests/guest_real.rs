//! Boots real systemd-nspawn guests (VM with cloud-init, LXC with root keys) and checks them over SSH.
//!
//! Skipped, with the reason printed, when this machine cannot run real guests (not root,
//! systemd-nspawn/debootstrap missing, no overlayfs) or has no OpenSSH client. The first
//! run builds the base image into `$PVEDEPLOY_CACHE_DIR` (default `/var/cache/pvedeploy`),
//! which takes a few minutes.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::openssh::{keygen, keyscan, mounted, openssh, Key};
use pvedeploy_sim::backend::{CloudInitSeed, GuestBackend, GuestKind, GuestStart};
use pvedeploy_sim::guest::{default_cache_dir, NspawnBackend};

/// The backend, or `None` (with the reason printed) when real guests cannot run here.
fn backend_or_skip(state: &Path) -> Option<NspawnBackend> {
    if Command::new("ssh").arg("-V").output().is_err() {
        eprintln!("SKIPPED: no OpenSSH client (apt-get install openssh-client)");
        return None;
    }
    match NspawnBackend::detect(state, &default_cache_dir()) {
        Ok(b) => Some(b),
        Err(why) => {
            eprintln!("SKIPPED: real guests unavailable: {why}");
            None
        }
    }
}

/// A temp dir and a backend with its state in `<tmp>/state`, base image ready; `None` = skip.
async fn setup() -> Option<(tempfile::TempDir, NspawnBackend)> {
    let tmp = tempfile::tempdir().unwrap();
    let b = backend_or_skip(&tmp.path().join("state"))?;
    b.prepare().await.expect("base image");
    Some((tmp, b))
}

/// A loopback address unlikely to collide with other test processes on this machine, and
/// outside the simulators' guest pool (127.77.0.0–127.99.255.255).
fn test_ip(n: u8) -> Ipv4Addr {
    let p = std::process::id();
    Ipv4Addr::new(127, 76, (p % 250) as u8 + 1, n)
}

/// Runs `cmd`; returns (status ok, stdout+stderr).
fn output(mut cmd: Command) -> (bool, String) {
    let out = cmd.output().expect("running an OpenSSH client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn ssh(key: &Key, known_hosts: &Path, user_host: &str, command: &str) -> (bool, String) {
    let mut cmd = openssh("ssh", key, known_hosts);
    cmd.arg(user_host).arg(command);
    output(cmd)
}

fn guest(
    vmid: u32,
    kind: GuestKind,
    hostname: &str,
    ipv4: Ipv4Addr,
    cloud_init: Option<CloudInitSeed>,
    lxc_ssh_public_keys: Option<String>,
) -> GuestStart {
    GuestStart {
        vmid,
        node: "pve1".into(),
        kind,
        hostname: hostname.into(),
        ipv4,
        mac: format!("BC:24:11:00:{:02X}:{:02X}", vmid / 256 % 256, vmid % 256),
        cloud_init,
        lxc_ssh_public_keys,
        lxc_host_key: None,
    }
}

async fn wait_up(b: &NspawnBackend, vmid: u32, limit: Duration) -> Duration {
    let t0 = Instant::now();
    while !b.is_up(vmid).await {
        assert!(
            t0.elapsed() < limit,
            "guest {vmid} not answering SSH after {limit:?}; see its console.log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t0.elapsed()
}

fn assert_torn_down(b: &NspawnBackend, vmid: u32) {
    let root = b.guest_dir(vmid).join("root");
    assert!(
        !mounted(&root),
        "overlay still mounted on {}",
        root.display()
    );
    for d in b.cgroup_dirs(vmid) {
        assert!(!d.exists(), "cgroup {} still exists", d.display());
    }
}

fn user_data(user_key: &Key, host_key: &Key) -> String {
    let host_private = std::fs::read_to_string(&host_key.private).unwrap();
    let indented: String = host_private.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "#cloud-config\nhostname: vm-real\nmanage_etc_hosts: true\n\
         users:\n  - name: deploy\n    shell: /bin/bash\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    \
         ssh_authorized_keys:\n      - {}\n\
         ssh_keys:\n  ed25519_private: |\n{indented}  ed25519_public: {}\n\
         write_files:\n  - path: /etc/pvesim-test\n    content: written-by-cloud-init\n\
         runcmd:\n  - [touch, /root/runcmd-ran]\n",
        user_key.public, host_key.public
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_with_cloud_init_boots_and_accepts_ssh() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(b) = backend_or_skip(&tmp.path().join("state")) else {
        return;
    };
    let t = Instant::now();
    b.prepare().await.expect("base image");
    eprintln!("base image ready in {:.1} s", t.elapsed().as_secs_f64());

    let user = keygen(tmp.path(), "user");
    let host = keygen(tmp.path(), "hostkey");
    let ip = test_ip(10);
    let vmid = 9101;
    let seed = CloudInitSeed {
        instance_id: "iid-9101-a".into(),
        meta_data: "instance-id: iid-9101-a\nlocal-hostname: vm-real\n".into(),
        user_data: user_data(&user, &host),
    };
    let t = Instant::now();
    b.start(guest(
        vmid,
        GuestKind::Qemu,
        "vm-real",
        ip,
        Some(seed),
        None,
    ))
    .await
    .expect("start");
    let up = wait_up(&b, vmid, Duration::from_secs(60)).await;
    eprintln!("VM boot-to-SSH: {:.2} s", up.as_secs_f64());

    let kh = tmp.path().join("known_hosts");
    std::fs::write(&kh, format!("{ip} {}\n", host.public)).unwrap();
    let (ok, out) = ssh(
        &user,
        &kh,
        &format!("deploy@{ip}"),
        "cloud-init status --wait >/dev/null; cloud-init status",
    );
    assert!(ok, "ssh as deploy failed: {out}");
    assert!(out.contains("status: done"), "cloud-init not done: {out}");
    eprintln!(
        "VM cloud-init done: {:.2} s after start",
        t.elapsed().as_secs_f64()
    );
    let (ok, out) = ssh(
        &user,
        &kh,
        &format!("deploy@{ip}"),
        "sudo systemctl is-system-running --wait; hostname; cat /etc/pvesim-test; sudo test -e /root/runcmd-ran && echo runcmd-ok",
    );
    assert!(ok, "checks failed: {out}");
    for want in ["running", "vm-real", "written-by-cloud-init", "runcmd-ok"] {
        assert!(out.contains(want), "missing {want:?} in: {out}");
    }
    let scanned = keyscan(ip);
    assert_eq!(
        scanned,
        format!("{ip} {}", strip_comment(&host.public)),
        "ssh-keyscan must return the injected key"
    );

    // A reboot inside the guest makes nspawn exit 133; the backend boots it again.
    let _ = ssh(&user, &kh, &format!("deploy@{ip}"), "sudo systemctl reboot");
    let t = Instant::now();
    while b.is_up(vmid).await {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "guest did not go down for its reboot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let up = wait_up(&b, vmid, Duration::from_secs(60)).await;
    eprintln!("VM reboot-to-SSH: {:.2} s", up.as_secs_f64());
    let (ok, out) = ssh(
        &user,
        &kh,
        &format!("deploy@{ip}"),
        "cloud-init status --wait; cat /proc/1/comm",
    );
    assert!(ok && out.contains("status: done"), "after reboot: {out}");

    let t = Instant::now();
    b.stop(vmid).await.expect("stop");
    eprintln!("VM stop: {:.2} s", t.elapsed().as_secs_f64());
    assert!(!b.is_up(vmid).await);
    assert_torn_down(&b, vmid);
    b.stop(vmid).await.expect("stop is idempotent");
    b.destroy(vmid).await.expect("destroy");
    assert!(!b.guest_dir(vmid).exists());
}

/// User-data exactly as PVE generates it from `ciuser`/`cipassword`/`sshkeys` (default
/// user renamed, `package_upgrade: true`): the agent's path when it uses no `cicustom`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_with_pve_generated_user_data_gets_a_sudo_user() {
    let Some((tmp, b)) = setup().await else {
        return;
    };
    let user = keygen(tmp.path(), "ciuser");
    let ip = test_ip(60);
    let vmid = 9105;
    let user_data = format!(
        "#cloud-config\nhostname: vm-pve\nmanage_etc_hosts: true\nfqdn: vm-pve\nuser: deploy\n\
         password: $5$abcdefgh$XSWy6gGpH1zSD6aTjkW8d0UWsmoBJgZS5pA8GqF6ys3\n\
         ssh_authorized_keys:\n  - {}\nchpasswd:\n  expire: False\nusers:\n  - default\npackage_upgrade: true\n",
        user.public
    );
    let t = Instant::now();
    b.start(guest(
        vmid,
        GuestKind::Qemu,
        "vm-pve",
        ip,
        Some(CloudInitSeed {
            instance_id: "0123456789abcdef0123456789abcdef01234567".into(),
            meta_data: "instance-id: 0123456789abcdef0123456789abcdef01234567\n".into(),
            user_data,
        }),
        None,
    ))
    .await
    .expect("start");
    wait_up(&b, vmid, Duration::from_secs(60)).await;
    let kh = tmp.path().join("known_hosts");
    std::fs::write(&kh, format!("{}\n", keyscan(ip))).unwrap();
    let (ok, out) = ssh(
        &user,
        &kh,
        &format!("deploy@{ip}"),
        "cloud-init status --wait >/dev/null; cloud-init status; sudo -n true && echo sudo-ok; hostname",
    );
    eprintln!(
        "PVE-style VM cloud-init (with package_upgrade) done: {:.2} s after start",
        t.elapsed().as_secs_f64()
    );
    assert!(ok, "ssh as the renamed default user failed: {out}");
    for want in ["status: done", "sudo-ok", "vm-pve"] {
        assert!(out.contains(want), "missing {want:?} in: {out}");
    }
    b.destroy(vmid).await.expect("destroy");
    assert_torn_down(&b, vmid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_gets_root_keys_and_fresh_host_keys() {
    let Some((tmp, b)) = setup().await else {
        return;
    };
    let user = keygen(tmp.path(), "root-user");
    let ip = test_ip(20);
    let vmid = 9102;
    b.start(guest(
        vmid,
        GuestKind::Lxc,
        "ct-real",
        ip,
        None,
        Some(format!("{}\n", user.public)),
    ))
    .await
    .expect("start");
    let up = wait_up(&b, vmid, Duration::from_secs(60)).await;
    eprintln!("LXC boot-to-SSH: {:.2} s", up.as_secs_f64());
    let clash = b
        .start(guest(
            vmid + 100,
            GuestKind::Lxc,
            "ct-clash",
            ip,
            None,
            None,
        ))
        .await;
    let err = clash
        .expect_err("a second guest on the same address must be refused")
        .to_string();
    assert!(err.contains("already in use"), "{err}");
    let scanned = keyscan(ip);
    assert!(
        scanned.starts_with(&format!("{ip} ssh-ed25519 ")),
        "no ed25519 host key: {scanned:?}"
    );
    let kh = tmp.path().join("known_hosts");
    std::fs::write(&kh, format!("{scanned}\n")).unwrap();
    let (ok, out) = ssh(
        &user,
        &kh,
        &format!("root@{ip}"),
        "systemctl is-system-running --wait; hostname; test -e /etc/cloud/cloud-init.disabled && echo ci-off; \
         test -e /var/lib/cloud/instance || echo no-instance",
    );
    assert!(ok, "ssh as root failed: {out}");
    for want in ["running", "ct-real", "ci-off", "no-instance"] {
        assert!(out.contains(want), "missing {want:?} in: {out}");
    }
    // The host's extra CAs are trusted inside (pip/npm behind the TLS-intercepting proxy).
    for ca in std::fs::read_dir("/usr/local/share/ca-certificates")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = ca.file_name().to_string_lossy().replace(".crt", ".pem");
        let (ok, out) = ssh(
            &user,
            &kh,
            &format!("root@{ip}"),
            &format!("test -e /etc/ssl/certs/{name}"),
        );
        assert!(ok, "host CA {name} missing in the guest: {out}");
    }
    // What an app binds on the guest's address is reachable from the host.
    let (ok, out) = ssh(
        &user,
        &kh,
        &format!("root@{ip}"),
        &format!("systemd-run --unit=web python3 -m http.server 8080 --bind {ip} --directory /etc"),
    );
    assert!(ok, "starting a web server failed: {out}");
    let t = Instant::now();
    loop {
        if std::net::TcpStream::connect((ip, 8080)).is_ok() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "app on {ip}:8080 not reachable"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    b.destroy(vmid).await.expect("destroy");
    assert_torn_down(&b, vmid);
    assert!(!b.guest_dir(vmid).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_backend_tears_guests_down() {
    let Some((tmp, b)) = setup().await else {
        return;
    };
    let vmid = 9103;
    b.start(guest(
        vmid,
        GuestKind::Lxc,
        "ct-drop",
        test_ip(30),
        None,
        None,
    ))
    .await
    .expect("start");
    wait_up(&b, vmid, Duration::from_secs(60)).await;
    let root = b.guest_dir(vmid).join("root");
    let cgroups = b.cgroup_dirs(vmid);
    drop(b); // no shutdown_all: the synchronous Drop must clean up
    assert!(!mounted(&root), "overlay still mounted after drop");
    for d in cgroups {
        assert!(!d.exists(), "cgroup {} left after drop", d.display());
    }
    // A new owner of the same state dir whose cluster knows no guest puts the last run's disk
    // aside at once (a new guest with that VMID starts clean) and clears it in the background.
    let again =
        NspawnBackend::detect(&tmp.path().join("state"), &default_cache_dir()).expect("re-detect");
    again.set_aside(&std::collections::BTreeSet::new());
    assert!(!again.is_up(vmid).await);
    assert!(
        !again.guest_dir(vmid).exists(),
        "a previous run's guest disk survived"
    );
    again.clean_set_aside().await;
    let stale = tmp.path().join("state").join("guests").join(".stale");
    let left = std::fs::read_dir(&stale).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "the set-aside guest was cleared");
}

fn strip_comment(public: &str) -> String {
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `sftp -b batch` as root.
fn sftp(key: &Key, known_hosts: &Path, host: &str, batch: &str, dir: &Path) -> (bool, String) {
    let batch_file = dir.join("sftp-batch");
    std::fs::write(&batch_file, batch).unwrap();
    let mut cmd = openssh("sftp", key, known_hosts);
    cmd.arg("-b").arg(&batch_file).arg(format!("root@{host}"));
    output(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sshd_accepts_sftp_uploads_into_the_node_storage_only() {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: not root (the node sshd needs bind mounts and cgroups)");
        return;
    }
    if Command::new("sftp").arg("-h").output().is_err() || !Path::new("/usr/sbin/sshd").exists() {
        eprintln!(
            "SKIPPED: needs /usr/sbin/sshd and the sftp client (openssh-server, openssh-client)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let node_dir = tmp.path().join("state/nodes/pve1");
    let shared = tmp.path().join("state/shared/shared");
    std::fs::create_dir_all(node_dir.join("storage/local/snippets")).unwrap();
    let agent = keygen(tmp.path(), "agent");
    let stranger = keygen(tmp.path(), "stranger");
    let addr: std::net::SocketAddr = (test_ip(40), 22).into();
    let sshd = pvedeploy_sim::guest::NodeSshd::start_with_paths(
        "pve1",
        addr,
        &node_dir,
        &format!("{}\n", agent.public),
        &[
            ("/var/lib/vz", &node_dir.join("storage/local")),
            ("/mnt/pve/shared", &shared),
        ],
    )
    .await
    .expect("node sshd");
    let kh = tmp.path().join("known_hosts");
    std::fs::write(&kh, format!("{}\n", sshd.known_hosts_line())).unwrap();
    assert_eq!(
        keyscan(test_ip(40)),
        sshd.known_hosts_line(),
        "keyscan returns the pinned key"
    );

    let local = tmp.path().join("user.yaml");
    std::fs::write(&local, "#cloud-config\n").unwrap();
    let host = test_ip(40).to_string();
    let (ok, out) = sftp(
        &agent,
        &kh,
        &host,
        &format!(
            "put {0} /storage/local/snippets/a.yaml\nput {0} /var/lib/vz/snippets/b.yaml\nmkdir /mnt/pve/shared/snippets\nput {0} /mnt/pve/shared/snippets/c.yaml\n",
            local.display()
        ),
        tmp.path(),
    );
    assert!(ok, "sftp upload failed: {out}");
    for p in [
        node_dir.join("storage/local/snippets/a.yaml"),
        node_dir.join("storage/local/snippets/b.yaml"),
        shared.join("snippets/c.yaml"),
    ] {
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "#cloud-config\n",
            "{}",
            p.display()
        );
    }
    // Chrooted: the host's /etc is out of reach.
    let (ok, _) = sftp(
        &agent,
        &kh,
        &host,
        &format!("put {} /etc/pvesim-escape\n", local.display()),
        tmp.path(),
    );
    assert!(!ok);
    assert!(!Path::new("/etc/pvesim-escape").exists());
    // No shell, and no login with another key.
    let (_, out) = ssh(&agent, &kh, &format!("root@{host}"), "id");
    assert!(!out.contains("uid="), "got a shell: {out}");
    let (ok, _) = sftp(&stranger, &kh, &host, "ls /storage\n", tmp.path());
    assert!(!ok, "a key not in authorized_keys logged in");

    let pinned = sshd.host_key_openssh();
    sshd.stop().await;
    assert!(
        !pvedeploy_sim::guest::ssh_banner(addr, Duration::from_secs(1)).await,
        "sshd still answering"
    );
    assert!(std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .all(|l| !l.contains("pvedeploy-sim/sshd-")));
    // The host key persists across restarts.
    let again = pvedeploy_sim::guest::NodeSshd::start("pve1", addr, &node_dir, "")
        .await
        .expect("restart");
    assert_eq!(again.host_key_openssh(), pinned);
    again.stop().await;
}

/// Set in the child process of `a_crashed_simulator_leaves_nothing_behind`: its state dir.
const CRASH_CHILD_ENV: &str = "PVESIM_TEST_CRASH_CHILD_STATE";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_simulator_leaves_nothing_behind() {
    if let Some(state) = std::env::var_os(CRASH_CHILD_ENV) {
        // Child: start a guest and a node sshd, then die without any clean-up.
        let state = PathBuf::from(state);
        let b = NspawnBackend::detect(&state, &default_cache_dir()).expect("detect in child");
        b.start(guest(
            9104,
            GuestKind::Lxc,
            "ct-crash",
            test_ip(50),
            None,
            None,
        ))
        .await
        .expect("start in child");
        wait_up(&b, 9104, Duration::from_secs(60)).await;
        let _sshd = pvedeploy_sim::guest::NodeSshd::start(
            "pve1",
            (test_ip(51), 22).into(),
            &state.join("nodes/pve1"),
            "",
        )
        .await
        .expect("node sshd in child");
        std::process::abort();
    }
    let Some((tmp, b)) = setup().await else {
        return;
    };
    drop(b);
    let child_state = tmp.path().join("child-state");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_crashed_simulator_leaves_nothing_behind",
            "--nocapture",
        ])
        .env(CRASH_CHILD_ENV, &child_state)
        .status()
        .unwrap();
    assert!(!status.success(), "the child should have aborted");
    let child_guests = child_state.canonicalize().unwrap().join("guests");
    let root = child_guests.join("9104/root");
    assert!(
        mounted(&root),
        "the crashed child's overlay should still be mounted before the sweep"
    );

    // Any new backend (other state dir) and any new node sshd sweep what the dead process left.
    let other =
        NspawnBackend::detect(&tmp.path().join("state"), &default_cache_dir()).expect("detect");
    assert!(!mounted(&root), "orphaned overlay not swept");
    let cgroups = std::fs::read_to_string(child_guests.join("9104/cgroups")).unwrap();
    for d in cgroups.lines() {
        assert!(!Path::new(d).exists(), "orphaned cgroup {d} not swept");
    }
    let sshd = pvedeploy_sim::guest::NodeSshd::start(
        "pve2",
        (test_ip(52), 22).into(),
        &tmp.path().join("nodes/pve2"),
        "",
    )
    .await
    .expect("node sshd");
    // Only the crashed child's chroot counts: other tests run node sshds in parallel.
    use sha2::Digest;
    let child_node_dir = child_state.canonicalize().unwrap().join("nodes/pve1");
    let tag = hex::encode(&sha2::Sha256::digest(child_node_dir.as_os_str().as_encoded_bytes())[..4]);
    let child_chroot = format!("pvedeploy-sim/sshd-{tag}-pve1");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leftovers: Vec<&str> = info.lines().filter(|l| l.contains(&child_chroot)).collect();
    assert!(
        leftovers.is_empty(),
        "orphaned node sshd mounts: {leftovers:?}"
    );
    sshd.stop().await;
    drop(other);
}
