//! Builds, caches and unpacks the Debian 12 base image every guest's overlay sits on.
//!
//! Recipe (bump [`BASE_IMAGE_VERSION`] whenever it changes):
//! `debootstrap --variant=minbase` with systemd, dbus, OpenSSH, sudo, CA certificates,
//! python3, iproute2, curl and git; the host's extra CAs; `apt-get upgrade`; cloud-init
//! (NoCloud, no network config, `C.UTF-8`); sshd that starts only once a per-guest
//! `ListenAddress` drop-in exists; a first-boot unit that generates missing SSH host keys;
//! empty machine-id, no host keys, no apt lists or caches.
//!
//! Cached as `<cache>/base-bookworm-v<N>.tar.zst` and unpacked once (read-only from then
//! on) into `<cache>/base-bookworm-v<N>.rootfs/`. Both are produced under an exclusive
//! lock on `<cache>/base-bookworm-v<N>.lock`, written to temporary names and renamed.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use tokio::process::Command;

use super::aptsources::{guest_sources, host_mirrors};
use super::cgroup::{GuestCgroup, Layout};
use super::mounts::remove_tree;
use super::rootfs::GuestRoot;
use super::supervisor::nspawn_command;

/// Version of the image recipe; part of every cache file name.
pub const BASE_IMAGE_VERSION: u32 = 1;

const SUITE: &str = "bookworm";
const DEBOOTSTRAP_INCLUDE: &str =
    "systemd,systemd-sysv,dbus,openssh-server,sudo,ca-certificates,python3,iproute2,curl,git";
const APT_INSTALL: &[&str] = &["cloud-init"];

/// Path of the per-guest sshd drop-in that holds `ListenAddress`; sshd does not start without it.
pub const SSHD_LISTEN_DROPIN: &str = "/etc/ssh/sshd_config.d/00-pvesim-listen.conf";

const CLOUD_CFG: &str = "\
# pvedeploy-sim: guests share the host network and minbase has no generated locales.
network: {config: disabled}
datasource_list: [ NoCloud, ConfigDrive, None ]
locale: C.UTF-8
";

const SSH_SERVICE_DROPIN: &str = "\
# pvedeploy-sim: guests share the host network, so sshd must never listen on 0.0.0.0:22.
[Unit]
ConditionPathExists=/etc/ssh/sshd_config.d/00-pvesim-listen.conf
";

const HOSTKEYS_UNIT: &str = "\
[Unit]
Description=Generate SSH host keys missing on first boot (pvedeploy-sim)
After=cloud-init.service
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
";

const JOURNALD_DROPIN: &str = "\
[Journal]
SystemMaxUse=32M
";

const POLICY_RC_D: &str = "#!/bin/sh\n# pvedeploy-sim image build: start no services\nexit 101\n";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} failed ({status}); see {log}:\n{tail}")]
    Command {
        what: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

/// `$PVEDEPLOY_CACHE_DIR`, or `/var/cache/pvedeploy`.
pub fn default_cache_dir() -> PathBuf {
    match std::env::var_os("PVEDEPLOY_CACHE_DIR") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from("/var/cache/pvedeploy"),
    }
}

fn stem() -> String {
    format!("base-{SUITE}-v{BASE_IMAGE_VERSION}")
}

/// `<cache>/base-bookworm-v<N>.tar.zst`
pub fn base_tarball(cache_dir: &Path) -> PathBuf {
    cache_dir.join(format!("{}.tar.zst", stem()))
}

/// `<cache>/base-bookworm-v<N>.rootfs` (the overlays' shared lower directory).
pub fn base_rootfs_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join(format!("{}.rootfs", stem()))
}

/// Returns the cached tarball, building it first if missing (a few minutes).
pub async fn ensure_base_image(cache_dir: &Path) -> Result<PathBuf, ImageError> {
    let tarball = base_tarball(cache_dir);
    if tarball.is_file() {
        return Ok(tarball);
    }
    let _lock = lock(cache_dir).await?;
    if tarball.is_file() {
        return Ok(tarball);
    }
    build(cache_dir, &tarball).await?;
    Ok(tarball)
}

/// Returns the unpacked base tree, unpacking (and if needed building) it first.
/// Nothing may modify this directory afterwards: it is the lower layer of live overlays.
pub async fn ensure_base_rootfs(cache_dir: &Path) -> Result<PathBuf, ImageError> {
    let dir = base_rootfs_dir(cache_dir);
    if dir.is_dir() {
        warn_once_if_cas_differ(&dir);
        return Ok(dir);
    }
    let tarball = ensure_base_image(cache_dir).await?;
    let _lock = lock(cache_dir).await?;
    if dir.is_dir() {
        return Ok(dir);
    }
    let started = Instant::now();
    let tmp = cache_dir.join(format!(
        "unpack-v{BASE_IMAGE_VERSION}-{}",
        std::process::id()
    ));
    remove_tree(&tmp).map_err(io_err(format!("removing {}", tmp.display())))?;
    std::fs::create_dir_all(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
    let log = cache_dir.join(format!("{}.unpack.log", stem()));
    let mut tar = Command::new("tar");
    tar.args([
        "--zstd",
        "-x",
        "-p",
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
        "-f",
    ])
    .arg(&tarball)
    .arg("-C")
    .arg(&tmp);
    run_logged(tar, "unpacking the base image", &log).await?;
    std::fs::rename(&tmp, &dir).map_err(io_err(format!(
        "renaming {} to {}",
        tmp.display(),
        dir.display()
    )))?;
    tracing::info!(dir = %dir.display(), secs = started.elapsed().as_secs_f64(), "base image unpacked");
    Ok(dir)
}

/// The base image carries the host's extra CAs as they were at build time; if they have
/// changed since, TLS through the intercepting proxy may fail inside guests.
fn warn_once_if_cas_differ(rootfs: &Path) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let host = Path::new("/usr/local/share/ca-certificates");
        let guest = rootfs.join("usr/local/share/ca-certificates");
        let Ok(rd) = std::fs::read_dir(host) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            if !name.to_string_lossy().ends_with(".crt") {
                continue;
            }
            if std::fs::read(e.path()).ok() != std::fs::read(guest.join(&name)).ok() {
                tracing::warn!(
                    ca = %e.path().display(),
                    rootfs = %rootfs.display(),
                    "host CA missing or different in the cached guest base image; delete the cache \
                     (base-*.tar.zst and base-*.rootfs) to rebuild it"
                );
            }
        }
    });
}

/// Holds `<cache>/base-bookworm-v<N>.lock` exclusively until dropped.
async fn lock(cache_dir: &Path) -> Result<File, ImageError> {
    std::fs::create_dir_all(cache_dir)
        .map_err(io_err(format!("creating {}", cache_dir.display())))?;
    let path = cache_dir.join(format!("{}.lock", stem()));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|e| ImageError::Io {
            context: "lock task".into(),
            source: io::Error::other(e),
        })?
        .map_err(io_err(format!("locking {}", path.display())))
}

async fn build(cache_dir: &Path, tarball: &Path) -> Result<(), ImageError> {
    let started = Instant::now();
    // We hold the lock: leftovers of crashed builds are nobody's.
    if let Ok(rd) = std::fs::read_dir(cache_dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("build-v")
                || name.starts_with("unpack-v")
                || name.contains(".tar.zst.tmp")
            {
                let p = e.path();
                let res = if p.is_dir() {
                    remove_tree(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                res.map_err(io_err(format!("removing stale {}", p.display())))?;
            }
        }
    }
    let work = cache_dir.join(format!(
        "build-v{BASE_IMAGE_VERSION}-{}",
        std::process::id()
    ));
    let root = work.join("rootfs");
    std::fs::create_dir_all(&work).map_err(io_err(format!("creating {}", work.display())))?;
    let log = cache_dir.join(format!("{}.build.log", stem()));
    std::fs::write(&log, b"").map_err(io_err(format!("creating {}", log.display())))?;
    let mirrors = host_mirrors(SUITE);
    tracing::info!(mirror = %mirrors.main, log = %log.display(), "building the guest base image (a few minutes)");

    // debootstrap mounts /proc and /sys inside the target: a private mount namespace
    // makes those mounts vanish with it, even if it crashes.
    let mut deb = Command::new("unshare");
    deb.args([
        "--mount",
        "--propagation",
        "private",
        "debootstrap",
        "--variant=minbase",
    ])
    .arg(format!("--include={DEBOOTSTRAP_INCLUDE}"))
    .arg(SUITE)
    .arg(&root)
    .arg(&mirrors.main);
    run_logged(deb, "debootstrap", &log).await?;
    let t_debootstrap = started.elapsed();

    let g = GuestRoot::new(&root);
    let w = |rel: &str, content: &str, mode: u32| {
        g.write_file(rel, content.as_bytes(), mode)
            .map_err(io_err(format!("writing {rel} in the base image")))
    };
    w(
        "/etc/apt/sources.list.d/debian.sources",
        &guest_sources(&mirrors, SUITE),
        0o644,
    )?;
    g.remove_file("/etc/apt/sources.list")
        .map_err(io_err("removing sources.list"))?;
    w("/usr/sbin/policy-rc.d", POLICY_RC_D, 0o755)?;
    copy_host_cas(&g)?;

    let layout = Layout::detect().map_err(io_err("detecting the cgroup layout"))?;
    let cg_name = format!("build-{}", std::process::id());
    let cgroup =
        GuestCgroup::create(&layout, &cg_name).map_err(io_err("creating the build cgroup"))?;
    let steps: &[(&str, Vec<&str>)] = &[
        ("apt-get update", vec!["apt-get", "-q", "update"]),
        (
            "apt-get upgrade",
            vec![
                "apt-get",
                "-q",
                "-y",
                "-o",
                "Dpkg::Options::=--force-confold",
                "upgrade",
            ],
        ),
        ("apt-get install", {
            let mut v = vec!["apt-get", "-q", "-y", "--no-install-recommends", "install"];
            v.extend_from_slice(APT_INSTALL);
            v
        }),
        ("update-ca-certificates", vec!["update-ca-certificates"]),
        ("apt-get clean", vec!["apt-get", "clean"]),
    ];
    let mut result = Ok(());
    for (what, argv) in steps {
        result = run_in_image(&root, &cgroup, &cg_name, argv, what, &log).await;
        if result.is_err() {
            break;
        }
    }
    cgroup.kill_all(std::time::Duration::from_secs(5));
    if let Err(e) = cgroup.remove() {
        tracing::warn!(error = %e, "removing the build cgroup");
    }
    result?;
    let t_apt = started.elapsed();

    w("/etc/cloud/cloud.cfg.d/90-pvesim.cfg", CLOUD_CFG, 0o644)?;
    w(
        "/etc/systemd/system/ssh.service.d/pvesim.conf",
        SSH_SERVICE_DROPIN,
        0o644,
    )?;
    w(
        "/etc/systemd/system/pvesim-ssh-hostkeys.service",
        HOSTKEYS_UNIT,
        0o644,
    )?;
    w(
        "/etc/systemd/journald.conf.d/pvesim.conf",
        JOURNALD_DROPIN,
        0o644,
    )?;
    let wants = g
        .ensure_dir("/etc/systemd/system/multi-user.target.wants", 0o755)
        .map_err(io_err("creating multi-user.target.wants"))?;
    let link = wants.join("pvesim-ssh-hostkeys.service");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/etc/systemd/system/pvesim-ssh-hostkeys.service", &link)
        .map_err(io_err("enabling pvesim-ssh-hostkeys.service"))?;

    // Per-guest identity must not be baked in.
    for entry in std::fs::read_dir(root.join("etc/ssh"))
        .map_err(io_err("listing /etc/ssh"))?
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            std::fs::remove_file(entry.path()).map_err(io_err("removing a host key"))?;
        }
    }
    w("/etc/machine-id", "", 0o444)?;
    g.remove_file("/var/lib/dbus/machine-id")
        .map_err(io_err("removing dbus machine-id"))?;
    std::os::unix::fs::symlink("/etc/machine-id", root.join("var/lib/dbus/machine-id"))
        .map_err(io_err("linking dbus machine-id"))?;
    w("/etc/hostname", "localhost\n", 0o644)?;
    g.remove_file("/etc/resolv.conf")
        .map_err(io_err("removing resolv.conf"))?;
    g.remove_file("/usr/sbin/policy-rc.d")
        .map_err(io_err("removing policy-rc.d"))?;
    for dir in ["var/lib/apt/lists", "var/cache/apt"] {
        clear_dir_files(&root.join(dir))?;
    }

    let tmp = tarball.with_extension(format!("zst.tmp-{}", std::process::id()));
    let mut tar = Command::new("tar");
    tar.env("ZSTD_CLEVEL", "10")
        .env("ZSTD_NBTHREADS", "0")
        .args([
            "--zstd",
            "-c",
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "-f",
        ])
        .arg(&tmp)
        .arg("-C")
        .arg(&root)
        .arg(".");
    run_logged(tar, "packing the base image", &log).await?;
    std::fs::rename(&tmp, tarball).map_err(io_err(format!("renaming {}", tmp.display())))?;
    remove_tree(&work).map_err(io_err(format!("removing {}", work.display())))?;
    tracing::info!(
        tarball = %tarball.display(),
        debootstrap_s = t_debootstrap.as_secs_f64(),
        apt_s = (t_apt - t_debootstrap).as_secs_f64(),
        total_s = started.elapsed().as_secs_f64(),
        "guest base image built"
    );
    Ok(())
}

/// Copies `/usr/local/share/ca-certificates/**/*.crt` into the image.
fn copy_host_cas(g: &GuestRoot) -> Result<(), ImageError> {
    fn walk(dir: &Path, rel: &str, g: &GuestRoot) -> Result<(), ImageError> {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            let rel = format!("{rel}/{name}");
            if p.is_dir() {
                walk(&p, &rel, g)?;
            } else if name.ends_with(".crt") {
                let bytes =
                    std::fs::read(&p).map_err(io_err(format!("reading {}", p.display())))?;
                g.write_file(&rel, &bytes, 0o644)
                    .map_err(io_err(format!("copying {}", p.display())))?;
            }
        }
        Ok(())
    }
    walk(
        Path::new("/usr/local/share/ca-certificates"),
        "/usr/local/share/ca-certificates",
        g,
    )
}

/// Removes regular files (recursively) but keeps directories, like `apt-get clean` does.
fn clear_dir_files(dir: &Path) -> Result<(), ImageError> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let ft = e.file_type().map_err(io_err("stat"))?;
        if ft.is_dir() {
            clear_dir_files(&e.path())?;
        } else if e.file_name() != "lock" {
            std::fs::remove_file(e.path())
                .map_err(io_err(format!("removing {}", e.path().display())))?;
        }
    }
    Ok(())
}

/// Runs one command inside the image (not booted) with nspawn, in the build cgroup.
async fn run_in_image(
    root: &Path,
    cgroup: &GuestCgroup,
    cg_name: &str,
    argv: &[&str],
    what: &str,
    log: &Path,
) -> Result<(), ImageError> {
    let mut cmd = nspawn_command(root, &format!("pvesim-{cg_name}"), cgroup);
    cmd.args([
        "--quiet",
        "--pipe",
        "--setenv=DEBIAN_FRONTEND=noninteractive",
        "--",
    ])
    .args(argv);
    run_logged(cmd, what, log).await
}

/// Runs `cmd` with stdout and stderr appended to `log`; fails with the log's tail.
async fn run_logged(mut cmd: Command, what: &str, log: &Path) -> Result<(), ImageError> {
    use std::io::Write;
    let mut f = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err(format!("opening {}", log.display())))?;
    let _ = writeln!(f, "\n=== {what}: {:?}", cmd.as_std());
    let out = f.try_clone().map_err(io_err("dup log"))?;
    let err = f.try_clone().map_err(io_err("dup log"))?;
    let started = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .status()
        .await
        .map_err(io_err(format!("starting {what}")))?;
    let _ = writeln!(
        f,
        "=== {what}: {status} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if status.success() {
        Ok(())
    } else {
        Err(ImageError::Command {
            what: what.into(),
            status: status.to_string(),
            log: log.to_path_buf(),
            tail: tail(log, 4000),
        })
    }
}

/// The last `max` bytes of a file, lossily decoded.
pub(super) fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
