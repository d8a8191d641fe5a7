//! Runs one guest's `systemd-nspawn --boot`, restarts it on reboot (exit 133), stops it
//! by PID, and tears down its overlay and cgroups when it is gone.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::cgroup::{join_in_child, GuestCgroup};
use super::mounts::unmount;

/// nspawn's exit code when the guest rebooted.
const EXIT_REBOOT: i32 = 133;
/// How long an orderly shutdown may take before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// What to boot and where.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub vmid: u32,
    /// The mounted overlay (`G/root`).
    pub root: PathBuf,
    pub machine: String,
    pub hostname: String,
    pub console_log: PathBuf,
    pub pid_file: PathBuf,
    pub cgroup: GuestCgroup,
}

/// Handle on a running guest's supervisor task.
pub struct Supervisor {
    stop_tx: watch::Sender<bool>,
    done_rx: watch::Receiver<bool>,
    pid: Arc<AtomicI32>,
    spec: LaunchSpec,
}

impl Supervisor {
    /// Boots the guest (the first nspawn is spawned before this returns) and supervises it.
    pub fn spawn(spec: LaunchSpec) -> io::Result<Supervisor> {
        let child = launch(&spec)?;
        let pid = Arc::new(AtomicI32::new(child.id().map(|p| p as i32).unwrap_or(0)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(false);
        tokio::spawn(supervise(
            spec.clone(),
            child,
            stop_rx,
            done_tx,
            pid.clone(),
        ));
        Ok(Supervisor {
            stop_tx,
            done_rx,
            pid,
            spec,
        })
    }

    /// Whether the guest is still running (or rebooting).
    pub fn is_running(&self) -> bool {
        !*self.done_rx.borrow()
    }

    /// Orderly stop (SIGTERM to nspawn, SIGKILL after [`STOP_GRACE`]); returns once the
    /// overlay is unmounted and the cgroups are removed.
    pub async fn stop(&self) {
        let _ = self.stop_tx.send(true);
        let mut done = self.done_rx.clone();
        let finished = async move { done.wait_for(|d| *d).await.is_ok() };
        let finished = tokio::time::timeout(STOP_GRACE + Duration::from_secs(10), finished).await;
        if !matches!(finished, Ok(true)) {
            tracing::warn!(
                vmid = self.spec.vmid,
                "guest supervisor did not finish; cleaning up directly"
            );
            let spec = self.spec.clone();
            let _ = tokio::task::spawn_blocking(move || teardown(&spec)).await;
        }
    }

    /// Synchronous last-resort stop for `Drop`: SIGTERM, a short wait, then SIGKILL
    /// everything in the guest's cgroups, unmount, remove the cgroups.
    pub fn stop_blocking(&self) {
        let _ = self.stop_tx.send(true);
        let pid = self.pid.load(Ordering::SeqCst);
        // Signal only a PID that is still inside this guest's cgroup (never a reused one).
        if pid > 0 && self.spec.cgroup.pids().contains(&pid) {
            // SAFETY: plain syscall on a PID verified to belong to this guest.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline && !self.spec.cgroup.pids().is_empty() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        teardown(&self.spec);
    }
}

async fn supervise(
    spec: LaunchSpec,
    mut child: Child,
    mut stop_rx: watch::Receiver<bool>,
    done_tx: watch::Sender<bool>,
    pid: Arc<AtomicI32>,
) {
    loop {
        let status = tokio::select! {
            st = child.wait() => st,
            () = stop_requested(&mut stop_rx) => terminate(&mut child, spec.vmid).await,
        };
        pid.store(0, Ordering::SeqCst);
        let stopping = *stop_rx.borrow() || stop_rx.has_changed().is_err();
        match status {
            Ok(st) if st.code() == Some(EXIT_REBOOT) && !stopping => {
                tracing::info!(vmid = spec.vmid, "guest rebooted; starting it again");
                match launch(&spec) {
                    Ok(c) => {
                        pid.store(c.id().map(|p| p as i32).unwrap_or(0), Ordering::SeqCst);
                        child = c;
                    }
                    Err(e) => {
                        tracing::error!(vmid = spec.vmid, error = %e, "restarting the guest after reboot failed");
                        break;
                    }
                }
            }
            Ok(st) => {
                if stopping {
                    tracing::info!(vmid = spec.vmid, status = %st, "guest stopped");
                } else {
                    tracing::warn!(vmid = spec.vmid, status = %st, log = %spec.console_log.display(), "guest exited on its own");
                }
                break;
            }
            Err(e) => {
                tracing::error!(vmid = spec.vmid, error = %e, "waiting for the guest failed");
                break;
            }
        }
    }
    let s = spec.clone();
    let _ = tokio::task::spawn_blocking(move || teardown(&s)).await;
    let _ = done_tx.send(true);
}

/// Resolves once a stop is requested (or the handle is gone).
async fn stop_requested(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// SIGTERM to nspawn (orderly guest shutdown), then SIGKILL after the grace period.
async fn terminate(child: &mut Child, vmid: u32) -> io::Result<ExitStatus> {
    if let Some(pid) = child.id() {
        // SAFETY: the child has not been reaped yet, so its PID is still ours.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(st) => st,
        Err(_) => {
            tracing::warn!(vmid, "guest ignored SIGTERM for {STOP_GRACE:?}; killing it");
            child.start_kill()?;
            child.wait().await
        }
    }
}

/// Kills leftovers in the cgroups, unmounts the overlay, removes the cgroups. Idempotent.
pub fn teardown(spec: &LaunchSpec) {
    if !spec.cgroup.kill_all(Duration::from_secs(5)) {
        tracing::error!(vmid = spec.vmid, "processes remain in the guest's cgroups");
    }
    if let Err(e) = unmount(&spec.root) {
        tracing::error!(vmid = spec.vmid, error = %e, root = %spec.root.display(), "unmounting the guest root failed");
    }
    if let Err(e) = spec.cgroup.remove() {
        tracing::error!(vmid = spec.vmid, error = %e, "removing the guest's cgroups failed");
    }
    let _ = std::fs::remove_file(&spec.pid_file);
}

/// Spawns `systemd-nspawn --boot` in the guest's cgroups, console to the log file.
fn launch(spec: &LaunchSpec) -> io::Result<Child> {
    let mut log = File::options()
        .create(true)
        .append(true)
        .open(&spec.console_log)?;
    writeln!(log, "=== pvedeploy-sim: booting {} ===", spec.machine)?;
    let mut cmd = nspawn_command(&spec.root, &spec.machine, &spec.cgroup);
    cmd.arg("--boot")
        .arg(format!("--hostname={}", spec.hostname))
        .arg("--console=passive")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        // Own process group: a terminal's Ctrl-C must not reach nspawn (the guest's
        // systemd would treat SIGINT as ctrl-alt-del and reboot).
        .process_group(0)
        .kill_on_drop(false);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            // If the simulator dies, the guest shuts down instead of running on unowned.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    if let Some(pid) = child.id() {
        let _ = std::fs::write(&spec.pid_file, format!("{pid}\n"));
    }
    Ok(child)
}

/// `systemd-nspawn` on `root` with the flags every simulator container shares (host
/// network, no registration, no journal link), started inside `cgroup`.
pub fn nspawn_command(root: &Path, machine: &str, cgroup: &GuestCgroup) -> Command {
    let mut cmd = Command::new("systemd-nspawn");
    cmd.arg(format!("--directory={}", root.display()))
        .arg(format!("--machine={machine}"))
        .args([
            "--register=no",
            "--keep-unit",
            "--resolv-conf=copy-host",
            "--timezone=off",
            "--link-journal=no",
        ]);
    let procs = cgroup.procs_files();
    // SAFETY: only async-signal-safe calls (open/write/close) between fork and exec.
    unsafe {
        cmd.pre_exec(move || join_in_child(&procs));
    }
    cmd
}
