//! Snapshots of VMs and containers: list, create, rollback, delete.

use serde::Deserialize;

use crate::core::names::{NodeName, VmId};

use super::client::{seg, PveClient};
use super::error::PveError;
use super::form::Form;
use super::guest::{guest_path, GuestType};
use super::lenient;
use super::upid::Upid;

/// One entry of `GET …/snapshot`. PVE lists the live state too, as `current` ("You are here!").
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Snapshot {
    pub name: String,
    #[serde(default, deserialize_with = "lenient::text")]
    pub description: String,
    #[serde(default)]
    pub parent: Option<String>,
    /// Unix seconds (absent for `current`).
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub snaptime: Option<u64>,
    /// Includes RAM (QEMU).
    #[serde(default, deserialize_with = "lenient::bool01")]
    pub vmstate: bool,
}

impl Snapshot {
    /// The `current` pseudo-entry (the live state, not a snapshot).
    pub fn is_current(&self) -> bool {
        self.name == "current"
    }
}

fn snapshot_path(kind: GuestType, node: &NodeName, vmid: VmId) -> String {
    format!("{}/snapshot", guest_path(kind, node, vmid))
}

impl PveClient {
    /// `GET …/{qemu|lxc}/{vmid}/snapshot` (the `current` entry included; see [`Snapshot::is_current`]).
    pub async fn snapshot_list(&self, kind: GuestType, node: &NodeName, vmid: VmId) -> Result<Vec<Snapshot>, PveError> {
        self.get(&snapshot_path(kind, node, vmid), Form::new(), "snapshot list").await
    }

    /// `POST …/snapshot` (`name`: PVE's `pve-configid`, e.g. `before-deploy-3`).
    pub async fn snapshot_create(
        &self,
        kind: GuestType,
        node: &NodeName,
        vmid: VmId,
        name: &str,
        description: Option<&str>,
    ) -> Result<Upid, PveError> {
        let form = Form::new().set("snapname", name).opt("description", description);
        self.post_task(&snapshot_path(kind, node, vmid), form).await
    }

    /// `POST …/snapshot/{name}/rollback`
    pub async fn snapshot_rollback(&self, kind: GuestType, node: &NodeName, vmid: VmId, name: &str) -> Result<Upid, PveError> {
        let path = format!("{}/{}/rollback", snapshot_path(kind, node, vmid), seg(name));
        self.post_task(&path, Form::new()).await
    }

    /// `DELETE …/snapshot/{name}`
    pub async fn snapshot_delete(&self, kind: GuestType, node: &NodeName, vmid: VmId, name: &str) -> Result<Upid, PveError> {
        let path = format!("{}/{}", snapshot_path(kind, node, vmid), seg(name));
        self.delete_task(&path, Form::new()).await
    }
}
