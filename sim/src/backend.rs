//! The seam between the simulated cluster and whatever runs started guests.

use std::net::Ipv4Addr;

/// Which PVE guest type a started guest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GuestKind {
    Qemu,
    Lxc,
}

/// Everything a backend needs to boot one guest.
#[derive(Debug, Clone)]
pub struct GuestStart {
    pub vmid: u32,
    pub node: String,
    pub kind: GuestKind,
    pub hostname: String,
    pub ipv4: Ipv4Addr,
    pub mac: String,
    /// NoCloud seed for VMs (meta-data and user-data text exactly as PVE would hand the guest); None for LXC.
    pub cloud_init: Option<CloudInitSeed>,
    /// LXC: the `ssh-public-keys` to install for root, as PVE's container setup writes /root/.ssh/authorized_keys.
    pub lxc_ssh_public_keys: Option<String>,
    /// LXC: the host key PVE wrote into the container at create time (private, public).
    pub lxc_host_key: Option<(String, String)>,
}

/// A NoCloud seed: what PVE writes to the cloud-init drive (`meta-data`, `user-data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudInitSeed {
    pub instance_id: String,
    pub meta_data: String,
    pub user_data: String,
}

/// Runs the guests the simulated cluster starts. Object-safe; used as `Arc<dyn GuestBackend>`.
#[async_trait::async_trait]
pub trait GuestBackend: Send + Sync + 'static {
    /// e.g. "api-only guests (no root)" / "systemd-nspawn guests".
    fn describe(&self) -> String;
    async fn start(&self, g: GuestStart) -> anyhow::Result<()>;
    /// Idempotent.
    async fn stop(&self, vmid: u32) -> anyhow::Result<()>;
    /// Stop + remove files, idempotent.
    async fn destroy(&self, vmid: u32) -> anyhow::Result<()>;
    /// Guest booted (sshd accepting); the sim's agent answers only when true AND the delay passed.
    async fn is_up(&self, vmid: u32) -> bool;
    async fn shutdown_all(&self);
    /// Called once as the simulator starts, before its API listens, with every VMID its cluster has: what the
    /// backend holds for any other VMID (a previous run's guest) belongs to no guest and must never reach a new
    /// guest given that VMID. Quick (it only puts things aside); [`GuestBackend::clean_set_aside`] removes them.
    fn set_aside(&self, _known: &std::collections::BTreeSet<u32>) {}
    /// Removes what `set_aside` put aside (processes, mounts, files); run in the background after start.
    async fn clean_set_aside(&self) {}
    /// Where the backend keeps the guest's disk as files (created on demand), if it does: vzdump archives
    /// them and a restore unpacks into them. API-only guests have none.
    fn disk_dir(&self, _vmid: u32) -> Option<std::path::PathBuf> {
        None
    }
}

/// A backend with no real system behind it: a started guest counts as "up" at once
/// (the simulator only asks `is_up` about guests it has started).
#[derive(Debug, Default, Clone, Copy)]
pub struct ApiOnlyBackend;

#[async_trait::async_trait]
impl GuestBackend for ApiOnlyBackend {
    fn describe(&self) -> String {
        "api-only guests (no root)".to_string()
    }

    async fn start(&self, _g: GuestStart) -> anyhow::Result<()> {
        Ok(())
    }

    async fn stop(&self, _vmid: u32) -> anyhow::Result<()> {
        Ok(())
    }

    async fn destroy(&self, _vmid: u32) -> anyhow::Result<()> {
        Ok(())
    }

    async fn is_up(&self, _vmid: u32) -> bool {
        true
    }

    async fn shutdown_all(&self) {}
}
