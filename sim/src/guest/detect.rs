//! Decides whether this machine can run real guests, and says why not when it cannot.

use std::path::{Path, PathBuf};

use super::cgroup::Layout;
use super::image::base_tarball;
use super::mounts::{mount_overlay, remove_tree, unmount};

/// Why real guests are unavailable; the simulator then falls back to API-only guests.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("not running as root (real guests need mounts, cgroups and systemd-nspawn)")]
    NotRoot,
    #[error("`{tool}` not found in PATH (install the `{package}` package)")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("overlayfs is unavailable: {0}")]
    NoOverlay(String),
    #[error("no usable cgroup hierarchy: {0}")]
    NoCgroups(String),
    #[error("state directory {path} is unusable: {reason}")]
    StateDir { path: PathBuf, reason: String },
    #[error("state directory {0} is already used by another running simulator")]
    StateDirBusy(PathBuf),
}

/// What detection found out.
pub struct Capabilities {
    pub layout: Layout,
}

/// Checks privileges, tools, cgroups and a trial overlay mount inside `guests_dir`.
pub fn check(guests_dir: &Path, cache_dir: &Path) -> Result<Capabilities, Unavailable> {
    // SAFETY: plain syscall without arguments.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Unavailable::NotRoot);
    }
    let mut tools: Vec<(&'static str, &'static str)> = vec![
        ("systemd-nspawn", "systemd-container"),
        ("tar", "tar"),
        ("zstd", "zstd"),
        ("unshare", "util-linux"),
    ];
    if !base_tarball(cache_dir).is_file() {
        tools.push(("debootstrap", "debootstrap"));
    }
    for (tool, package) in tools {
        if which(tool).is_none() {
            return Err(Unavailable::MissingTool { tool, package });
        }
    }
    let layout = Layout::detect().map_err(|e| Unavailable::NoCgroups(e.to_string()))?;
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        return Err(Unavailable::NoOverlay(
            "the kernel lists no `overlay` filesystem".into(),
        ));
    }
    probe_overlay(guests_dir)?;
    Ok(Capabilities { layout })
}

/// Mounts and unmounts a tiny overlay where the guests' upper directories will live.
fn probe_overlay(guests_dir: &Path) -> Result<(), Unavailable> {
    let state_err = |reason: String| Unavailable::StateDir {
        path: guests_dir.to_path_buf(),
        reason,
    };
    let probe = guests_dir.join(".overlay-probe");
    remove_tree(&probe).map_err(|e| state_err(e.to_string()))?;
    for d in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir_all(probe.join(d)).map_err(|e| state_err(e.to_string()))?;
    }
    let res = mount_overlay(
        &probe.join("lower"),
        &probe.join("upper"),
        &probe.join("work"),
        &probe.join("merged"),
    );
    let res = match res {
        Ok(()) => unmount(&probe.join("merged"))
            .map_err(|e| Unavailable::NoOverlay(format!("unmounting the probe: {e}"))),
        Err(e) => Err(Unavailable::NoOverlay(format!(
            "mounting a trial overlay in {} failed: {e}",
            guests_dir.display()
        ))),
    };
    let _ = remove_tree(&probe);
    res
}

/// First executable named `tool` in `$PATH` (plus the sbin directories).
pub fn which(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|d| d.join(tool))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}
