//! Backups through vzdump: `POST /nodes/{node}/vzdump` (pve-manager `PVE/API2/VZDump.pm:37-180`), the backup
//! volumes of a storage (`GET …/storage/{storage}/content?content=backup`), `DELETE …/content/{volume}` (pve-storage
//! `API2/Storage/Content.pm:452-540`), and restores over an existing guest: `POST /nodes/{node}/lxc` with
//! `ostemplate` + `restore=1` + `force=1` (pve-container `src/PVE/API2/LXC.pm:240-636`, a `vzrestore` task) and
//! `POST /nodes/{node}/qemu` with `archive` + `force=1` (qemu-server `src/PVE/API2/Qemu.pm:1260-1600`, `qmrestore`).

use crate::core::names::{NodeName, VmId};

use super::client::{seg, upid_of, PveClient};
use super::error::PveError;
use super::form::Form;
use super::upid::Upid;

/// One backup volume as the storage lists it (`content=backup`).
pub type BackupVolume = super::Volume;

/// One vzdump of one guest.
#[derive(Debug, Clone)]
pub struct VzdumpRequest<'a> {
    pub vmid: VmId,
    pub storage: &'a str,
    /// `zstd`, `gzip`, `lzo` or `0`.
    pub compress: &'a str,
    /// Written into the backup's notes (no `{{…}}` variables).
    pub notes: &'a str,
}

/// A restore of a backup as a new guest: `POST /nodes/{node}/lxc` with `ostemplate` + `restore=1`, or `POST
/// /nodes/{node}/qemu` with `archive`, without `force` (a guest at `vmid` fails it). The parameters given here are
/// merged over the backed-up configuration (pve-container `LXC/Create.pm:527-580` `sanitize_and_merge_config`: a
/// backed-up key is kept only when not given; qemu-server `QemuServer.pm:6794-6803` `restore_merge_config`), so
/// the new guest's name and pvedeploy's mark are written by the restore call itself.
#[derive(Debug, Clone)]
pub struct RestoreNew<'a> {
    pub vmid: VmId,
    pub volid: &'a str,
    /// Where the guest's disks go (a container's root file system; a VM's disks).
    pub storage: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub tags: &'a [String],
    /// A container's `net0` as given (no `hwaddr`: PVE draws a new MAC, `parse_lxc_network`); a VM gets
    /// `unique=1` instead (new MACs, `QemuServer.pm:6728-6733`) and its network from the configure step.
    pub net0: Option<&'a str>,
    pub pool: Option<&'a crate::core::names::PoolName>,
}

impl PveClient {
    /// Restores backup `req.volid` as a new guest (a `vzrestore` / `qmrestore` task).
    pub async fn restore_new(&self, kind: super::GuestType, node: &NodeName, req: &RestoreNew<'_>) -> Result<Upid, PveError> {
        let form = Form::new().set("vmid", &req.vmid.to_string()).set("storage", req.storage).set("description", req.description).list("tags", req.tags, ";").opt("pool", req.pool);
        let form = match kind {
            super::GuestType::Lxc => form.set("ostemplate", req.volid).set("restore", "1").set("hostname", req.name).opt("net0", req.net0),
            super::GuestType::Qemu => form.set("archive", req.volid).set("name", req.name).set("unique", "1"),
        };
        self.post_task(&format!("/nodes/{}/{}", seg(node.as_str()), kind.as_str()), form).await
    }

    /// `POST /nodes/{node}/vzdump` in `snapshot` mode with `prune-backups=keep-all=1`: vzdump prunes nothing (its
    /// pruning takes the guest's whole group on the storage, backups pvedeploy did not make included,
    /// `PVE/VZDump.pm:1246-1277` at pve-manager 14a22df), and, unlike `remove=0` alone, no retention configured on the
    /// storage turns into a "max backup limit" that fails the backup (`VZDump.pm:953-990`; keep-all forces `remove`
    /// off, `VZDump.pm:709-712`). pvedeploy applies the retention to its own backups itself. `None` when Proxmox VE
    /// answered `OK` without a task: the guest is on another node (`API2/VZDump.pm:96-118`).
    pub async fn vzdump(&self, node: &NodeName, req: &VzdumpRequest<'_>) -> Result<Option<Upid>, PveError> {
        let form = Form::new()
            .set("vmid", &req.vmid.to_string())
            .set("storage", req.storage)
            .set("mode", "snapshot")
            .set("compress", req.compress)
            .set("prune-backups", "keep-all=1")
            .set("notes-template", req.notes);
        match self.post(&format!("/nodes/{}/vzdump", seg(node.as_str())), form).await? {
            serde_json::Value::String(s) if s == "OK" => Ok(None),
            other => upid_of(other).map(Some),
        }
    }

    /// The backups on `storage` (of `vmid` when given), as the node sees the storage.
    pub async fn backup_volumes(&self, node: &NodeName, storage: &str, vmid: Option<VmId>) -> Result<Vec<BackupVolume>, PveError> {
        let path = format!("/nodes/{}/storage/{}/content", seg(node.as_str()), seg(storage));
        let vmid = vmid.map(|v| v.to_string());
        self.get(&path, Form::new().set("content", "backup").opt("vmid", vmid.as_deref()), "backup list").await
    }

    /// Restores backup `volid` over guest `vmid` on `node` (`force=1`: the guest's volumes are replaced), a
    /// `vzrestore` / `qmrestore` task. A container's root file system goes to `storage` (pve-container defaults it to
    /// `local`, `LXC.pm:321`); a VM's disks go back to the storages they were on when `storage` is `None`.
    pub async fn restore_over(&self, kind: super::GuestType, node: &NodeName, vmid: VmId, volid: &str, storage: Option<&str>) -> Result<Upid, PveError> {
        let form = Form::new().set("vmid", &vmid.to_string()).set("force", "1").opt("storage", storage);
        let form = match kind {
            super::GuestType::Lxc => form.set("ostemplate", volid).set("restore", "1"),
            super::GuestType::Qemu => form.set("archive", volid),
        };
        self.post_task(&format!("/nodes/{}/{}", seg(node.as_str()), kind.as_str()), form).await
    }

    /// `DELETE /nodes/{node}/storage/{storage}/content/{volume}` (an `imgdel` task).
    pub async fn volume_delete(&self, node: &NodeName, storage: &str, volid: &str) -> Result<Upid, PveError> {
        let path = format!("/nodes/{}/storage/{}/content/{}", seg(node.as_str()), seg(storage), seg(volid));
        self.delete_task(&path, Form::new()).await
    }
}
