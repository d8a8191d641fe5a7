//! Gives each guest its own cgroups (v1 hybrid `systemd` + `unified`, or pure v2).
//!
//! Without a host systemd, every nspawn would otherwise land in the caller's cgroup and
//! the guests' systemds would manage (and kill) each other's services.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Directory (inside each hierarchy) that holds all simulator cgroups.
const PARENT: &str = "pvesim";

/// The cgroup hierarchies nspawn cares about on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Pure cgroup v2 mounted on `/sys/fs/cgroup`.
    Unified,
    /// v1 with a named `systemd` hierarchy, plus cgroup2 on `unified` when present.
    Hybrid { unified: bool },
}

impl Layout {
    /// Reads `/proc/self/mountinfo`.
    pub fn detect() -> io::Result<Layout> {
        let info = std::fs::read_to_string("/proc/self/mountinfo")?;
        let mut v2_root = false;
        let mut v1_systemd = false;
        let mut v2_unified = false;
        for line in info.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(mp) = fields.get(4) else { continue };
            let Some(sep) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            let fstype = fields.get(sep + 1).copied().unwrap_or("");
            let super_opts = fields.get(sep + 3).copied().unwrap_or("");
            match (*mp, fstype) {
                ("/sys/fs/cgroup", "cgroup2") => v2_root = true,
                ("/sys/fs/cgroup/systemd", "cgroup") if super_opts.contains("name=systemd") => {
                    v1_systemd = true
                }
                ("/sys/fs/cgroup/unified", "cgroup2") => v2_unified = true,
                _ => {}
            }
        }
        if v2_root {
            Ok(Layout::Unified)
        } else if v1_systemd {
            Ok(Layout::Hybrid {
                unified: v2_unified,
            })
        } else {
            Err(io::Error::other(
                "no usable cgroup hierarchy: neither cgroup2 on /sys/fs/cgroup nor a name=systemd \
                 hierarchy on /sys/fs/cgroup/systemd",
            ))
        }
    }

    /// `<hierarchy>/pvesim/<name>` in every hierarchy.
    pub fn dirs_for(&self, name: &str) -> Vec<PathBuf> {
        self.roots()
            .into_iter()
            .map(|r| r.join(PARENT).join(name))
            .collect()
    }

    fn roots(&self) -> Vec<PathBuf> {
        match self {
            Layout::Unified => vec![PathBuf::from("/sys/fs/cgroup")],
            Layout::Hybrid { unified } => {
                let mut v = vec![PathBuf::from("/sys/fs/cgroup/systemd")];
                if *unified {
                    v.push(PathBuf::from("/sys/fs/cgroup/unified"));
                }
                v
            }
        }
    }
}

/// One guest's cgroup in every relevant hierarchy.
#[derive(Debug, Clone)]
pub struct GuestCgroup {
    dirs: Vec<PathBuf>,
}

impl GuestCgroup {
    /// Creates `pvesim/<name>` in each hierarchy. `name` must be unique on the machine.
    pub fn create(layout: &Layout, name: &str) -> io::Result<GuestCgroup> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad cgroup name {name:?}"),
            ));
        }
        let dirs = layout.dirs_for(name);
        for d in &dirs {
            std::fs::create_dir_all(d)?;
        }
        Ok(GuestCgroup { dirs })
    }

    /// Rebuilds a handle from directories recorded earlier (stale clean-up).
    pub fn from_dirs(dirs: Vec<PathBuf>) -> GuestCgroup {
        let dirs = dirs
            .into_iter()
            .filter(|d| {
                d.starts_with("/sys/fs/cgroup") && d.components().any(|c| c.as_os_str() == PARENT)
            })
            .collect();
        GuestCgroup { dirs }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// `cgroup.procs` paths, prepared for [`join_in_child`] (which must not allocate).
    pub fn procs_files(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .filter_map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).ok())
            .collect()
    }

    /// Every PID in this cgroup or its descendants, in any hierarchy.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for d in &self.dirs {
            collect_pids(d, &mut pids);
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs whatever is left inside, waiting up to `timeout` for it to be empty.
    pub fn kill_all(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            for pid in pids {
                // SAFETY: plain syscall; pids come from this guest's own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes the cgroup directories, deepest first. Fails if processes remain.
    pub fn remove(&self) -> io::Result<()> {
        for d in &self.dirs {
            remove_cgroup_tree(d)?;
        }
        Ok(())
    }
}

/// Moves the calling process into the given cgroups. Runs between fork and exec,
/// so it only uses async-signal-safe calls.
pub fn join_in_child(procs_files: &[CString]) -> io::Result<()> {
    for f in procs_files {
        // SAFETY: `f` is a valid C string; open/write/close are async-signal-safe.
        unsafe {
            let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = io::Error::last_os_error();
            libc::close(fd);
            if n != 1 {
                return Err(err);
            }
        }
    }
    Ok(())
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_pids(&e.path(), out);
            }
        }
    }
}

/// cgroupfs directories are removed with rmdir (their control files go with them).
fn remove_cgroup_tree(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path())?;
            }
        }
    }
    // A cgroup that just became empty can report EBUSY for a moment.
    let mut last = None;
    for _ in 0..20 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(io::Error::other(format!(
        "cannot remove cgroup {}: {}",
        dir.display(),
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_dirs_keeps_only_simulator_cgroups() {
        let g = GuestCgroup::from_dirs(vec![
            PathBuf::from("/sys/fs/cgroup/systemd/pvesim/abc-100"),
            PathBuf::from("/etc"),
            PathBuf::from("/sys/fs/cgroup/systemd/other"),
        ]);
        assert_eq!(
            g.dirs(),
            &[PathBuf::from("/sys/fs/cgroup/systemd/pvesim/abc-100")]
        );
    }
}
