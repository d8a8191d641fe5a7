//! `NodeSshd`: a real OpenSSH server per simulated node, SFTP-only and chrooted, so the
//! agent can upload cloud-init snippets the way it would to a PVE node.
//!
//! Design: `/usr/sbin/sshd -D -e` with its own config, ed25519 host key and
//! `authorized_keys` in `<node_dir>/sshd/` (the host key persists, so a pinned key stays
//! valid across simulator restarts). Key-only login as `root`; every session is forced into
//! `internal-sftp` (no shell, no forwarding) and chrooted. sshd demands a chroot whose every
//! path component is root-owned and not group/world-writable, which a state dir under
//! `/tmp` never is, so the chroot is a directory under `/run/pvedeploy-sim/` that holds
//! only bind mounts: `/storage` → `<node_dir>/storage`, plus any extra paths the caller
//! maps (e.g. `/var/lib/vz` → the node's `local` storage). sshd and its sessions run in
//! their own cgroup and are stopped by PID; the bind mounts are removed on stop.

use std::ffi::CString;
use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::process::{Child, Command};

use super::cgroup::{join_in_child, GuestCgroup, Layout};
use super::detect::which;
use super::image::tail;
use super::mounts::{remove_tree, unmount_all_under};
use super::nspawn::ssh_banner;

/// Where the chroot directories live (root-owned 0755 all the way up).
const CHROOT_PARENT: &str = "/run/pvedeploy-sim";

#[derive(Debug, thiserror::Error)]
pub enum NodeSshdError {
    #[error("node sshd address {0} is not an IPv4 loopback address (only 127.0.0.0/8 is allowed)")]
    NotLoopback(SocketAddr),
    #[error("invalid node name {0:?}")]
    BadNode(String),
    #[error("in-chroot path {0:?} must be absolute, without `..`, and not `/`")]
    BadPath(String),
    #[error("{0} is already in use by another process")]
    AddressInUse(SocketAddr),
    #[error("`sshd` not found (apt-get install openssh-server)")]
    NoSshd,
    #[error("node sshd for {node}: {context}: {source}")]
    Io {
        node: String,
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("node sshd for {node} did not come up on {addr}; its log {log}:\n{tail}")]
    NotUp {
        node: String,
        addr: SocketAddr,
        log: PathBuf,
        tail: String,
    },
}

/// A running per-node sshd. Stop it with [`NodeSshd::stop`]; dropping it also stops it.
pub struct NodeSshd {
    node: String,
    addr: SocketAddr,
    dir: PathBuf,
    chroot: PathBuf,
    host_key: String,
    child: Option<Child>,
    cgroup: GuestCgroup,
}

impl NodeSshd {
    /// Starts sshd for `node` on `addr` (IPv4 loopback), serving `<root_dir>/storage` as
    /// `/storage` over SFTP to `root` logging in with one of `authorized_keys`.
    pub async fn start(
        node: &str,
        addr: SocketAddr,
        root_dir: &Path,
        authorized_keys: &str,
    ) -> Result<NodeSshd, NodeSshdError> {
        Self::start_with_paths(node, addr, root_dir, authorized_keys, &[]).await
    }

    /// Like [`NodeSshd::start`], also mapping each `(path in the SFTP view, host directory)`,
    /// e.g. `("/var/lib/vz", <node>/storage/local)` or `("/mnt/pve/shared", <state>/shared/shared)`,
    /// so the agent can use the storage paths a real PVE node has.
    pub async fn start_with_paths(
        node: &str,
        addr: SocketAddr,
        root_dir: &Path,
        authorized_keys: &str,
        paths: &[(&str, &Path)],
    ) -> Result<NodeSshd, NodeSshdError> {
        let node_s = node.to_string();
        let io = |context: String| {
            let node = node_s.clone();
            move |source| NodeSshdError::Io {
                node,
                context,
                source,
            }
        };
        match addr {
            SocketAddr::V4(a) if a.ip().is_loopback() => {}
            _ => return Err(NodeSshdError::NotLoopback(addr)),
        }
        if node.is_empty() || !node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(NodeSshdError::BadNode(node.into()));
        }
        let mut binds: Vec<(String, PathBuf)> = vec![("/storage".into(), root_dir.join("storage"))];
        for (inside, host) in paths {
            let clean = inside.trim_end_matches('/');
            if !clean.starts_with('/')
                || clean.is_empty()
                || clean.split('/').any(|c| c == ".." || c == ".")
            {
                return Err(NodeSshdError::BadPath(inside.to_string()));
            }
            binds.push((clean.to_string(), host.to_path_buf()));
        }
        let sshd = which("sshd").ok_or(NodeSshdError::NoSshd)?;
        if tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
            .await
            .is_ok_and(|r| r.is_ok())
        {
            return Err(NodeSshdError::AddressInUse(addr));
        }

        let dir = root_dir.join("sshd");
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        set_mode(&dir, 0o700).map_err(io("chmod sshd dir".into()))?;
        let host_key_path = dir.join("ssh_host_ed25519_key");
        if !host_key_path.exists() {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", ""])
                .arg("-C")
                .arg(format!("root@{node}"))
                .arg("-f")
                .arg(&host_key_path)
                .stdin(Stdio::null())
                .status()
                .await
                .map_err(io("running ssh-keygen".into()))?;
            if !st.success() {
                return Err(NodeSshdError::Io {
                    node: node.into(),
                    context: "generating the host key".into(),
                    source: io::Error::other(st.to_string()),
                });
            }
        }
        let pub_line = std::fs::read_to_string(host_key_path.with_extension("pub"))
            .map_err(io("reading the host key".into()))?;
        let host_key = pub_line
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let ak_path = dir.join("authorized_keys");
        std::fs::write(&ak_path, authorized_keys).map_err(io("writing authorized_keys".into()))?;
        set_mode(&ak_path, 0o600).map_err(io("chmod authorized_keys".into()))?;

        // The chroot: root-owned, 0755, only bind mounts inside.
        let root_canon = root_dir
            .canonicalize()
            .map_err(io(format!("resolving {}", root_dir.display())))?;
        let tag = hex::encode(&Sha256::digest(root_canon.as_os_str().as_bytes())[..4]);
        let name = format!("sshd-{tag}-{node}");
        let chroot = Path::new(CHROOT_PARENT).join(&name);
        let layout = Layout::detect().map_err(io("detecting cgroups".into()))?;
        sweep_orphans(&layout);
        remove_tree(&chroot).map_err(io(format!("clearing a stale {}", chroot.display())))?;
        std::fs::create_dir_all(&chroot).map_err(io(format!("creating {}", chroot.display())))?;
        for d in [Path::new(CHROOT_PARENT), chroot.as_path()] {
            set_mode(d, 0o755).map_err(io(format!("chmod {}", d.display())))?;
        }
        std::fs::write(owner_file(&chroot), format!("{}\n", std::process::id()))
            .map_err(io("recording the owner".into()))?;
        let cgroup = GuestCgroup::create(&layout, &name).map_err(io("creating a cgroup".into()))?;
        let mut me = NodeSshd {
            node: node.into(),
            addr,
            dir: dir.clone(),
            chroot: chroot.clone(),
            host_key,
            child: None,
            cgroup,
        };

        for (inside, host) in &binds {
            std::fs::create_dir_all(host).map_err(io(format!("creating {}", host.display())))?;
            let target = chroot.join(inside.trim_start_matches('/'));
            std::fs::create_dir_all(&target)
                .map_err(io(format!("creating {}", target.display())))?;
            bind_mount(host, &target).map_err(io(format!(
                "bind-mounting {} on {}",
                host.display(),
                target.display()
            )))?;
        }

        let config = sshd_config(addr, &host_key_path, &ak_path, &chroot);
        let config_path = dir.join("sshd_config");
        std::fs::write(&config_path, config).map_err(io("writing sshd_config".into()))?;
        std::fs::create_dir_all("/run/sshd").map_err(io("creating /run/sshd".into()))?;
        let log = dir.join("sshd.log");
        let log_file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io("opening the log".into()))?;
        let mut cmd = Command::new(&sshd);
        cmd.args(["-D", "-e", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                log_file.try_clone().map_err(io("dup log".into()))?,
            ))
            .stderr(Stdio::from(log_file))
            .process_group(0)
            .kill_on_drop(false);
        let procs = me.cgroup.procs_files();
        // SAFETY: only async-signal-safe calls (open/write/close/prctl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                join_in_child(&procs)?;
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        me.child = Some(
            cmd.spawn()
                .map_err(io(format!("starting {}", sshd.display())))?,
        );

        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let exited = me
                .child
                .as_mut()
                .map(|c| matches!(c.try_wait(), Ok(Some(_))))
                .unwrap_or(true);
            if !exited && ssh_banner(addr, Duration::from_millis(500)).await {
                tracing::info!(node, %addr, "node sshd up");
                return Ok(me);
            }
            if exited || tokio::time::Instant::now() >= deadline {
                me.stop().await;
                return Err(NodeSshdError::NotUp {
                    node: node.into(),
                    addr,
                    tail: tail(&log, 2000),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The host's public key, `ssh-ed25519 AAAA…` (pin it; it persists in `<node_dir>/sshd/`).
    pub fn host_key_openssh(&self) -> String {
        self.host_key.clone()
    }

    /// A `known_hosts` line for this server (`[ip]:port` form when the port is not 22).
    pub fn known_hosts_line(&self) -> String {
        let host = if self.addr.port() == 22 {
            self.addr.ip().to_string()
        } else {
            format!("[{}]:{}", self.addr.ip(), self.addr.port())
        };
        format!("{host} {}", self.host_key)
    }

    /// Replaces the keys allowed to log in (read by sshd on every connection).
    pub fn set_authorized_keys(&self, authorized_keys: &str) -> io::Result<()> {
        let p = self.dir.join("authorized_keys");
        std::fs::write(&p, authorized_keys)?;
        set_mode(&p, 0o600)
    }

    /// Stops sshd (SIGTERM, SIGKILL after 5 s), ends its sessions, removes the bind mounts.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                // SAFETY: not yet reaped, so the PID is still our child.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
        let cgroup = self.cgroup.clone();
        let chroot = self.chroot.clone();
        let node = self.node.clone();
        let _ = tokio::task::spawn_blocking(move || cleanup(&node, &cgroup, &chroot)).await;
    }
}

impl Drop for NodeSshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // start_kill sends SIGKILL to the (unreaped) child; sessions go with the cgroup.
            let _ = child.start_kill();
            let _ = child.try_wait();
        }
        cleanup(&self.node, &self.cgroup, &self.chroot);
    }
}

fn cleanup(node: &str, cgroup: &GuestCgroup, chroot: &Path) {
    cgroup.kill_all(Duration::from_secs(5));
    if let Err(e) = unmount_all_under(chroot).and_then(|()| remove_tree(chroot)) {
        tracing::error!(node, error = %e, chroot = %chroot.display(), "cleaning the node sshd chroot");
    }
    if let Err(e) = cgroup.remove() {
        tracing::error!(node, error = %e, "removing the node sshd cgroup");
    }
    let _ = std::fs::remove_file(owner_file(chroot));
}

/// `/run/pvedeploy-sim/<name>.owner`: the PID of the simulator process that owns `<name>`.
fn owner_file(chroot: &Path) -> PathBuf {
    chroot.with_extension("owner")
}

/// Cleans node sshd chroots and cgroups whose owning process is gone (a crashed test).
fn sweep_orphans(layout: &Layout) {
    let Ok(rd) = std::fs::read_dir(CHROOT_PARENT) else {
        return;
    };
    for e in rd.flatten() {
        let path = e.path();
        if path.extension() != Some(std::ffi::OsStr::new("owner")) {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the PID exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if alive {
            continue;
        }
        let chroot = path.with_extension("");
        let Some(name) = chroot
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        tracing::warn!(chroot = %chroot.display(), pid, "cleaning a node sshd left by a process that died");
        cleanup(
            &name,
            &GuestCgroup::from_dirs(layout.dirs_for(&name)),
            &chroot,
        );
    }
}

fn sshd_config(addr: SocketAddr, host_key: &Path, authorized_keys: &Path, chroot: &Path) -> String {
    format!(
        "# pvedeploy-sim node sshd: key-only root login, SFTP only, chrooted.\n\
         ListenAddress {addr}\n\
         HostKey {}\n\
         PidFile none\n\
         AuthorizedKeysFile {}\n\
         StrictModes no\n\
         PubkeyAuthentication yes\n\
         AuthenticationMethods publickey\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n\
         AllowUsers root\n\
         UsePAM no\n\
         PermitTTY no\n\
         PermitTunnel no\n\
         AllowTcpForwarding no\n\
         AllowStreamLocalForwarding no\n\
         AllowAgentForwarding no\n\
         X11Forwarding no\n\
         PrintMotd no\n\
         Subsystem sftp internal-sftp\n\
         ChrootDirectory {}\n\
         ForceCommand internal-sftp -d /storage -u 022\n",
        host_key.display(),
        authorized_keys.display(),
        chroot.display()
    )
}

fn bind_mount(src: &Path, target: &Path) -> io::Result<()> {
    let s = CString::new(src.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let t = CString::new(target.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: valid NUL-terminated paths; no filesystem type or data for a bind mount.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}
