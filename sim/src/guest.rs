//! Real-guest backend: boots simulated VMs and containers as systemd-nspawn Debian guests.
//!
//! How a guest is made (see `/work/shared/notes/guests.md` for the measurements):
//!
//! * [`image`] builds one Debian 12 base tree with `debootstrap --variant=minbase`
//!   (systemd, OpenSSH, sudo, python3, curl, git, cloud-init, the host's extra CAs),
//!   caches it as `$PVEDEPLOY_CACHE_DIR/base-bookworm-v<N>.tar.zst` and unpacks it once
//!   into a read-only shared tree next to the tarball.
//! * Each guest lives in `<state_dir>/guests/<vmid>/`: an overlay (`lower` = base,
//!   `upper`, `work`) mounted on `root/` ([`mounts`]), its own cgroups ([`cgroup`]),
//!   per-guest files written into the overlay before boot without following guest
//!   symlinks ([`rootfs`], [`seed`]), and a supervised `systemd-nspawn --boot`
//!   ([`supervisor`]) that restarts on exit code 133 (a guest reboot).
//! * Guests share the host network; each owns one loopback address and its sshd listens
//!   only on `<ipv4>:22`.
//! * [`NspawnBackend`] implements [`crate::backend::GuestBackend`]; [`NodeSshd`] runs a
//!   real OpenSSH server per simulated node so the agent can upload snippets over SFTP.

mod aptsources;
mod cgroup;
pub(crate) mod detect;
pub mod image;
mod mounts;
mod nodesshd;
mod nspawn;
mod rootfs;
mod seed;
mod supervisor;

pub use detect::Unavailable;
pub use image::{
    default_cache_dir, ensure_base_image, ensure_base_rootfs, ImageError, BASE_IMAGE_VERSION,
};
pub use nodesshd::{NodeSshd, NodeSshdError};
pub use nspawn::{ssh_banner, GuestError, NspawnBackend};

/// Builds (or finds) the cached base image and unpacks it, printing what it did.
///
/// Meant for `pvedeploy-sim --prepare-base`, so CI can pay the one-off build cost in
/// its own step. Uses `$PVEDEPLOY_CACHE_DIR` (default `/var/cache/pvedeploy`).
pub async fn prepare_base_cli() -> anyhow::Result<()> {
    let cache_dir = default_cache_dir();
    let started = std::time::Instant::now();
    let tarball = ensure_base_image(&cache_dir).await?;
    let rootfs = ensure_base_rootfs(&cache_dir).await?;
    println!(
        "base image ready: {} (unpacked at {}) in {:.1} s",
        tarball.display(),
        rootfs.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
