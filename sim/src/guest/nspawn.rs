//! `NspawnBackend`: the `GuestBackend` that boots each started guest as a real Debian system.
//!
//! Per guest, under `<state_dir>/guests/<vmid>/`: `upper/` + `work/` (the guest's disk,
//! kept across stop/start, and across simulator runs for a guest a persistent simulator restored;
//! removed by `destroy`), `root/` (the overlay mount point, mounted only while running),
//! `console.log`, `cgroups` (the cgroup directories in use, for crash clean-up) and
//! `nspawn.pid`. An exclusive lock on `<state_dir>/guests/.lock` marks the owning simulator.
//! At start the simulator names the guests it knows (`set_aside`): any other guest directory is
//! renamed into `guests/.stale/` at once and cleared (processes, mounts, cgroups, files) in the
//! background (`clean_set_aside`), so a new guest reusing its VMID never inherits it and the API
//! does not wait for the clean-up.

use std::collections::HashMap;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

use crate::backend::{GuestBackend, GuestStart};

use super::cgroup::{GuestCgroup, Layout};
use super::detect::{self, Unavailable};
use super::image::{ensure_base_rootfs, ImageError};
use super::mounts::{
    is_mount_point, mount_overlay, mounts_of_type, remove_tree, unmount, unmount_all_under,
};
use super::rootfs::GuestRoot;
use super::seed::write_guest_files;
use super::supervisor::{teardown, LaunchSpec, Supervisor};

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("guest {0} is already running")]
    AlreadyRunning(u32),
    #[error("guest address {0} is not a loopback address (guests may only use 127.0.0.0/8)")]
    NotLoopback(Ipv4Addr),
    #[error("{0}:22 is already in use by another process (another simulator's guest?); guest addresses must be unique on the machine")]
    AddressInUse(Ipv4Addr),
    #[error("invalid hostname {0:?}")]
    BadHostname(String),
    #[error("guest {vmid}: {context}: {source}")]
    Io {
        vmid: u32,
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
}

struct Guest {
    ipv4: Ipv4Addr,
    sup: Supervisor,
}

/// Real systemd-nspawn guests. Create with [`NspawnBackend::detect`].
pub struct NspawnBackend {
    guests_dir: PathBuf,
    cache_dir: PathBuf,
    layout: Layout,
    /// Makes cgroup names unique per state directory (several simulators may run at once) and per
    /// run (a previous run's guest cleared in the background never shares a cgroup with a new one).
    instance: String,
    guests: Mutex<HashMap<u32, Guest>>,
    _lock: File,
}

impl NspawnBackend {
    /// Checks that real guests can run here (root, tools, cgroups, overlayfs in the state
    /// dir), takes ownership of `<state_dir>/guests/` and clears what a crashed previous
    /// owner left behind. The base image is built or unpacked lazily on the first start
    /// (or up front with [`NspawnBackend::prepare`]).
    pub fn detect(state_dir: &Path, cache_dir: &Path) -> Result<Self, Unavailable> {
        let guests_dir = state_dir.join("guests");
        let state_err = |reason: String| Unavailable::StateDir {
            path: guests_dir.clone(),
            reason,
        };
        std::fs::create_dir_all(&guests_dir).map_err(|e| state_err(e.to_string()))?;
        let guests_dir = guests_dir
            .canonicalize()
            .map_err(|e| state_err(e.to_string()))?;
        let caps = detect::check(&guests_dir, cache_dir)?;
        let lock_path = guests_dir.join(".lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| state_err(e.to_string()))?;
        if lock.try_lock().is_err() {
            return Err(Unavailable::StateDirBusy(guests_dir));
        }
        let instance = format!(
            "{}-{:04x}",
            hex::encode(&Sha256::digest(guests_dir.as_os_str().as_encoded_bytes())[..4]),
            rand::random::<u16>()
        );
        let backend = NspawnBackend {
            guests_dir,
            cache_dir: cache_dir.to_path_buf(),
            layout: caps.layout,
            instance,
            guests: Mutex::new(HashMap::new()),
            _lock: lock,
        };
        sweep_orphans(&backend.guests_dir);
        Ok(backend)
    }

    /// Builds (first time: minutes) or unpacks the base image now rather than on first start.
    pub async fn prepare(&self) -> Result<PathBuf, ImageError> {
        ensure_base_rootfs(&self.cache_dir).await
    }

    /// `<state_dir>/guests/<vmid>`
    pub fn guest_dir(&self, vmid: u32) -> PathBuf {
        self.guests_dir.join(vmid.to_string())
    }

    fn cgroup_name(&self, vmid: u32) -> String {
        format!("{}-{vmid}", self.instance)
    }

    /// The cgroup directories guest `vmid` uses while running (gone once it stopped).
    pub fn cgroup_dirs(&self, vmid: u32) -> Vec<PathBuf> {
        self.layout.dirs_for(&self.cgroup_name(vmid))
    }

    /// `<state_dir>/guests/.stale`: previous runs' guests no cluster knows, waiting to be cleared.
    fn stale_dir(&self) -> PathBuf {
        self.guests_dir.join(".stale")
    }

    async fn start_guest(&self, g: GuestStart) -> Result<(), GuestError> {
        let vmid = g.vmid;
        if !g.ipv4.is_loopback() {
            return Err(GuestError::NotLoopback(g.ipv4));
        }
        if !valid_hostname(&g.hostname) {
            return Err(GuestError::BadHostname(g.hostname.clone()));
        }
        let base = ensure_base_rootfs(&self.cache_dir).await?;
        let mut guests = self.guests.lock().await;
        if let Some(existing) = guests.get(&vmid) {
            if existing.sup.is_running() {
                return Err(GuestError::AlreadyRunning(vmid));
            }
            guests.remove(&vmid);
        }
        // Guests share the host network: a second sshd on the same address would fail to
        // bind while is_up() happily greeted the first one.
        if tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect((g.ipv4, 22)),
        )
        .await
        .is_ok_and(|r| r.is_ok())
        {
            return Err(GuestError::AddressInUse(g.ipv4));
        }
        let io = |context: &'static str| {
            move |source| GuestError::Io {
                vmid,
                context,
                source,
            }
        };
        let dir = self.guest_dir(vmid);
        for d in ["upper", "work", "root"] {
            std::fs::create_dir_all(dir.join(d)).map_err(io("creating the guest directories"))?;
        }
        let root = dir.join("root");
        if is_mount_point(&root) {
            unmount(&root).map_err(io("unmounting a stale guest root"))?;
        }
        mount_overlay(&base, &dir.join("upper"), &dir.join("work"), &root)
            .map_err(io("mounting the overlay"))?;
        let cgroup = match self.prepare_mounted(&g, &dir) {
            Ok(c) => c,
            Err(e) => {
                let _ = unmount(&root);
                return Err(e);
            }
        };
        let spec = launch_spec(vmid, &dir, g.hostname.clone(), cgroup);
        match Supervisor::spawn(spec.clone()) {
            Ok(sup) => {
                tracing::info!(vmid, ipv4 = %g.ipv4, kind = ?g.kind, "guest booting");
                guests.insert(vmid, Guest { ipv4: g.ipv4, sup });
                Ok(())
            }
            Err(e) => {
                teardown(&spec);
                Err(GuestError::Io {
                    vmid,
                    context: "starting systemd-nspawn",
                    source: e,
                })
            }
        }
    }

    /// Writes the guest's files into the mounted overlay and creates its cgroups.
    fn prepare_mounted(&self, g: &GuestStart, dir: &Path) -> Result<GuestCgroup, GuestError> {
        let vmid = g.vmid;
        let io = |context: &'static str| {
            move |source| GuestError::Io {
                vmid,
                context,
                source,
            }
        };
        write_guest_files(&GuestRoot::new(dir.join("root")), g)
            .map_err(io("writing the guest's files"))?;
        let cgroup = GuestCgroup::create(&self.layout, &self.cgroup_name(vmid))
            .map_err(io("creating cgroups"))?;
        let listing: String = cgroup
            .dirs()
            .iter()
            .map(|d| format!("{}\n", d.display()))
            .collect();
        std::fs::write(dir.join("cgroups"), listing).map_err(io("recording cgroups"))?;
        Ok(cgroup)
    }

    async fn stop_guest(&self, vmid: u32) -> Result<(), GuestError> {
        let guest = self.guests.lock().await.remove(&vmid);
        if let Some(guest) = guest {
            guest.sup.stop().await;
        }
        // Whatever a crash or a failed start left behind.
        let dir = self.guest_dir(vmid);
        if dir.exists() {
            let spec = launch_spec(vmid, &dir, String::new(), read_cgroups_file(&dir));
            tokio::task::spawn_blocking(move || teardown(&spec))
                .await
                .map_err(|e| GuestError::Io {
                    vmid,
                    context: "teardown task",
                    source: std::io::Error::other(e),
                })?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl GuestBackend for NspawnBackend {
    fn describe(&self) -> String {
        format!(
            "systemd-nspawn guests (Debian 12, cloud-init; state {}, base image cache {})",
            self.guests_dir.display(),
            self.cache_dir.display()
        )
    }

    async fn start(&self, g: GuestStart) -> anyhow::Result<()> {
        Ok(self.start_guest(g).await?)
    }

    async fn stop(&self, vmid: u32) -> anyhow::Result<()> {
        Ok(self.stop_guest(vmid).await?)
    }

    async fn destroy(&self, vmid: u32) -> anyhow::Result<()> {
        self.stop_guest(vmid).await?;
        let dir = self.guest_dir(vmid);
        tokio::task::spawn_blocking(move || remove_tree(&dir)).await??;
        Ok(())
    }

    async fn is_up(&self, vmid: u32) -> bool {
        let ipv4 = match self.guests.lock().await.get(&vmid) {
            Some(g) if g.sup.is_running() => g.ipv4,
            _ => return false,
        };
        ssh_banner(SocketAddr::from((ipv4, 22)), Duration::from_secs(2)).await
    }

    /// Renames every guest directory whose VMID is not `known` into `guests/.stale/<vmid>-<ns>`
    /// (a rename: instant, whatever the directory holds). Where the rename fails the guest is
    /// cleared here and now, so a new guest never inherits it.
    fn set_aside(&self, known: &std::collections::BTreeSet<u32>) {
        let Ok(rd) = std::fs::read_dir(&self.guests_dir) else {
            return;
        };
        let stale = self.stale_dir();
        for e in rd.flatten() {
            let Some(vmid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if known.contains(&vmid) {
                continue;
            }
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let aside = stale.join(format!("{vmid}-{nanos}"));
            match std::fs::create_dir_all(&stale).and_then(|()| std::fs::rename(e.path(), &aside)) {
                Ok(()) => tracing::info!(vmid, dir = %aside.display(), "a previous run's guest no cluster knows is put aside to be cleared"),
                Err(err) => {
                    tracing::error!(vmid, error = %err, "putting a previous run's guest aside failed; clearing it now");
                    clear_guest_dir(vmid, &e.path());
                }
            }
        }
    }

    /// Kills, unmounts and removes the guests in `guests/.stale/`, one after the other.
    async fn clean_set_aside(&self) {
        let Ok(rd) = std::fs::read_dir(self.stale_dir()) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let vmid = name.split('-').next().and_then(|v| v.parse::<u32>().ok()).unwrap_or_default();
            let dir = e.path();
            if let Err(e) = tokio::task::spawn_blocking(move || clear_guest_dir(vmid, &dir)).await {
                tracing::error!(vmid, error = %e, "clearing a previous run's guest did not finish");
            }
        }
    }

    /// The overlay's upper layer: the guest's own files over the base image.
    fn disk_dir(&self, vmid: u32) -> Option<PathBuf> {
        Some(self.guest_dir(vmid).join("upper"))
    }

    async fn shutdown_all(&self) {
        let all: Vec<(u32, Guest)> = self.guests.lock().await.drain().collect();
        let mut set = tokio::task::JoinSet::new();
        for (_, g) in all {
            set.spawn(async move { g.sup.stop().await });
        }
        while set.join_next().await.is_some() {}
    }
}

impl Drop for NspawnBackend {
    /// Last resort when `shutdown_all` was not awaited (e.g. a failing test): stop every
    /// guest synchronously so no overlay stays mounted.
    fn drop(&mut self) {
        for (_, g) in self.guests.get_mut().drain() {
            g.sup.stop_blocking();
        }
    }
}

/// Whether an SSH server answers at `addr` with an `SSH-2.0-` banner.
pub async fn ssh_banner(addr: SocketAddr, timeout: Duration) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut buf = [0u8; 8];
        s.read_exact(&mut buf).await.ok()?;
        Some(buf.starts_with(b"SSH-2.0-"))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

fn launch_spec(vmid: u32, dir: &Path, hostname: String, cgroup: GuestCgroup) -> LaunchSpec {
    LaunchSpec {
        vmid,
        root: dir.join("root"),
        machine: format!("pvesim-{vmid}"),
        hostname,
        console_log: dir.join("console.log"),
        pid_file: dir.join("nspawn.pid"),
        cgroup,
    }
}

/// Tears down guests of *other* state dirs whose simulator died (a crashed test): overlays
/// mounted on `…/guests/<vmid>/root` whose `…/guests/.lock` nobody holds any more.
fn sweep_orphans(own_guests_dir: &Path) {
    let Ok(overlays) = mounts_of_type("overlay") else {
        return;
    };
    for root in overlays {
        if root.file_name() != Some(std::ffi::OsStr::new("root")) {
            continue;
        }
        let Some(dir) = root.parent() else { continue };
        let Some(vmid) = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(guests_dir) = dir.parent() else {
            continue;
        };
        if guests_dir == own_guests_dir
            || guests_dir.file_name() != Some(std::ffi::OsStr::new("guests"))
        {
            continue;
        }
        let Ok(lock) = File::options().write(true).open(guests_dir.join(".lock")) else {
            continue;
        };
        if lock.try_lock().is_ok() {
            tracing::warn!(vmid, dir = %dir.display(), "tearing down a guest left by a simulator that died");
            teardown(&launch_spec(
                vmid,
                dir,
                String::new(),
                read_cgroups_file(dir),
            ));
        }
    }
}

/// Kills what runs in a previous run's guest, unmounts it and removes its directory.
fn clear_guest_dir(vmid: u32, dir: &Path) {
    teardown(&launch_spec(vmid, dir, String::new(), read_cgroups_file(dir)));
    match unmount_all_under(dir).and_then(|()| remove_tree(dir)) {
        Ok(()) => tracing::info!(vmid, dir = %dir.display(), "removed a previous run's guest"),
        Err(err) => tracing::error!(vmid, error = %err, dir = %dir.display(), "clearing a previous run's guest"),
    }
}

fn read_cgroups_file(dir: &Path) -> GuestCgroup {
    let text = std::fs::read_to_string(dir.join("cgroups")).unwrap_or_default();
    GuestCgroup::from_dirs(
        text.lines()
            .filter(|l| !l.is_empty())
            .map(PathBuf::from)
            .collect(),
    )
}

/// RFC 1123 host name (labels of letters, digits and hyphens).
fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(valid_hostname("web-1.example"));
        assert!(!valid_hostname("-x"));
        assert!(!valid_hostname("a b"));
        assert!(!valid_hostname("x\nListenAddress 0.0.0.0"));
        assert!(!valid_hostname(""));
    }
}
