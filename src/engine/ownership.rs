//! The one place that decides whether the agent may act on a guest. A guest is stopped, started,
//! snapshotted or deleted only through an [`OwnedGuest`], and the only way to get one is
//! [`Provisioner::guard`], which checks, immediately before the action:
//!
//! 1. this agent still holds the deployment's work lease ([`Fence::check`] renews it, so the call that
//!    follows runs inside a fresh lease period — a frozen agent whose successor took over stops here);
//! 2. our store's claim for the VMID belongs to this deployment (a rolled-back or foreign store fails);
//! 3. the guest on Proxmox carries this deployment's mark (`core::ownership`), read from its config.
//!
//! Every mutating call on an owned guest checks the fence again first (a shutdown can take a minute).

use std::time::Duration;

use super::provision::{pve_kind, ProvisionError, Provisioner, RawConfig};
use super::run::LEASE_TTL_MS;
use crate::core::deployment::{DeploymentId, GuestType};
use crate::core::names::{NodeName, VmId};
use crate::core::ownership::{self, NotOurs, Owner};
use crate::pve::{GuestState, PowerAction, PveError, ResourceKind, ResourceType};
use crate::store::leases::Lease;
use crate::store::{Store, StoreError};

/// The lease a piece of work holds, checked before every mutating Proxmox call.
#[derive(Clone)]
pub struct Fence {
    store: Store,
    lease: Lease,
}

impl Fence {
    pub fn new(store: Store, lease: Lease) -> Self {
        Self { store, lease }
    }

    pub fn deployment(&self) -> &DeploymentId {
        &self.lease.deployment
    }

    /// Renews the lease: `Ok` only while this agent still holds it, and then for a whole lease period.
    pub async fn check(&self) -> Result<(), ProvisionError> {
        match self.store.renew_lease(&self.lease, LEASE_TTL_MS).await {
            Ok(()) => Ok(()),
            Err(StoreError::Stale) => Err(super::run::LeaseLost.into()),
            Err(e) => Err(ProvisionError::Store(e)),
        }
    }
}

/// A guest proven to be the fenced deployment's (see the module doc). Not `Clone`: each action
/// guards afresh.
pub struct OwnedGuest {
    pub kind: GuestType,
    /// Where the guest is now (it may have been migrated since the record was written).
    pub node: NodeName,
    pub vmid: VmId,
    fence: Fence,
}

impl OwnedGuest {
    /// Checks the lease again before another mutating call on this guest.
    pub async fn still_ours(&self) -> Result<(), ProvisionError> {
        self.fence.check().await
    }
}

/// What the guard found at a VMID.
pub enum Found {
    Owned(OwnedGuest),
    /// No guest with that id exists anywhere in the cluster.
    Gone,
}

impl Provisioner {
    /// Checks lease, claim and mark (in that order) for the guest `vmid`, recorded on `node`. A guest
    /// that moved to another node is followed there. `NotOurs` when any check fails.
    pub async fn guard(&self, fence: &Fence, kind: GuestType, node: &NodeName, vmid: VmId) -> Result<Found, ProvisionError> {
        fence.check().await?;
        let holder = fence.store.vmid_owner(vmid).await?;
        let (node, config) = match self.locate(kind, node, vmid).await? {
            Located::At(node, config) => (node, config),
            Located::Nowhere => return Ok(Found::Gone),
            Located::OtherKind => return Err(ProvisionError::NotOurs(NotOurs::Foreign { vmid: vmid.get() })),
        };
        let owner = owner_of(&config);
        ownership::check(fence.deployment(), vmid.get(), holder.as_deref(), &owner).map_err(ProvisionError::NotOurs)?;
        Ok(Found::Owned(OwnedGuest { kind, node, vmid, fence: fence.clone() }))
    }

    /// Whose marks the guest at `vmid` carries, wherever it is (`None`: no such guest). For resolving a
    /// create whose outcome is unknown; acting still needs [`guard`](Self::guard).
    ///
    /// A guest the token may not read (403) is someone else's: the agent can read every guest it made (`VM.Audit`
    /// is in its role, on `/vms` or on the pool its guests join), and an ACL narrowed to a pool hides the cluster's
    /// other guests from `/cluster/resources`, so their ids are found only by a create that PVE refuses. One case
    /// reads the same: our own create whose answer was lost and whose task still runs, not yet in the pool
    /// (`add_vm_to_pool` comes at the end of the worker, qemu-server `API2/Qemu.pm:1553, 4710`); that guest is then
    /// an orphan with our mark, which reconciliation reports.
    pub async fn owner_at(&self, kind: GuestType, node: &NodeName, vmid: VmId) -> Result<Option<Owner>, ProvisionError> {
        let located = match self.locate(kind, node, vmid).await {
            Err(ProvisionError::Pve(PveError::Forbidden { .. })) => return Ok(Some(Owner::Unmarked)),
            other => other?,
        };
        Ok(match located {
            Located::At(_, config) => Some(owner_of(&config)),
            Located::Nowhere => None,
            // A guest of the other kind holds the id: certainly not the one we create.
            Located::OtherKind => Some(Owner::Unmarked),
        })
    }

    /// The guest's node and config: on `node`, or wherever `/cluster/resources` lists it now. A guest of
    /// the other kind at that id is someone else's.
    async fn locate(&self, kind: GuestType, node: &NodeName, vmid: VmId) -> Result<Located, ProvisionError> {
        match self.locate_once(kind, node, vmid).await? {
            // PVE writes a new guest's config, marks included, only when its create or clone task ends;
            // until then the config holds just its lock: pve-container `src/PVE/API2/LXC.pm` create_vm
            // takes `create_and_lock_config` (`lock: create`, removed with `remove_lock($vmid, 'create')`),
            // qemu-server `src/PVE/API2/Qemu.pm` clone_vm writes "# qmclone temporary file\nlock: clone\n"
            // (both at the commits in sim/README.md). Whose it is can only be told once the lock is gone.
            Located::At(node, config) if matches!(config.get("lock").map(String::as_str), Some("create" | "clone")) && owner_of(&config) == Owner::Unmarked => {
                match self.wait_unlocked(kind, &node, vmid).await {
                    Ok(config) => Ok(Located::At(node, config)),
                    Err(ProvisionError::Pve(PveError::NotFound { .. })) => Ok(Located::Nowhere),
                    Err(e) => Err(e),
                }
            }
            other => Ok(other),
        }
    }

    async fn locate_once(&self, kind: GuestType, node: &NodeName, vmid: VmId) -> Result<Located, ProvisionError> {
        match self.client.guest_config_raw(pve_kind(kind), node, vmid).await {
            Ok(config) => return Ok(Located::At(node.clone(), config)),
            Err(PveError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let resources = self.client.cluster_resources(Some(ResourceKind::Vm)).await?;
        let Some(found) = resources.into_iter().find(|r| r.vmid == Some(vmid)) else { return Ok(Located::Nowhere) };
        let same_kind = matches!((found.kind, kind), (ResourceType::Qemu, GuestType::Vm) | (ResourceType::Lxc, GuestType::Lxc));
        let Some(now_on) = found.node.filter(|_| same_kind) else { return Ok(Located::OtherKind) };
        match self.client.guest_config_raw(pve_kind(kind), &now_on, vmid).await {
            Ok(config) => Ok(Located::At(now_on, config)),
            // Gone between the two reads.
            Err(PveError::NotFound { .. }) => Ok(Located::Nowhere),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts an owned guest unless it runs; `None` when nothing had to be done.
    pub async fn start_owned(&self, g: &OwnedGuest) -> Result<Option<crate::pve::Upid>, ProvisionError> {
        let kind = pve_kind(g.kind);
        if self.client.guest_current(kind, &g.node, g.vmid).await?.status == GuestState::Running {
            return Ok(None);
        }
        g.fence.check().await?;
        Ok(Some(self.client.guest_power(kind, &g.node, g.vmid, PowerAction::Start).await?))
    }

    /// Shuts an owned guest down, then stops it hard if it has not stopped after `graceful` (guests
    /// without a working agent or ACPI never shut down by request). A stopped guest is left alone.
    pub async fn stop_owned(&self, g: &OwnedGuest, graceful: Duration) -> Result<(), ProvisionError> {
        let (c, kind) = (&self.client, pve_kind(g.kind));
        if c.guest_current(kind, &g.node, g.vmid).await?.status != GuestState::Running {
            return Ok(());
        }
        g.fence.check().await?;
        let shutdown = PowerAction::Shutdown { timeout_secs: Some(graceful.as_secs() as u32), force_stop: true };
        let upid = c.guest_power(kind, &g.node, g.vmid, shutdown).await?;
        if self.wait_task_for(&upid, graceful + Duration::from_secs(30)).await.is_err() {
            g.fence.check().await?;
            let upid = c.guest_power(kind, &g.node, g.vmid, PowerAction::Stop).await?;
            self.wait_task_for(&upid, self.settings.task_deadline).await?;
        }
        Ok(())
    }

    /// Stops (hard, after a bounded shutdown) and deletes an owned guest with purge.
    pub async fn remove_owned(&self, g: &OwnedGuest, graceful: Duration) -> Result<(), ProvisionError> {
        self.stop_owned(g, graceful).await?;
        g.fence.check().await?;
        let upid = self.client.guest_delete(pve_kind(g.kind), &g.node, g.vmid, true, true).await?;
        self.wait_task_for(&upid, self.settings.task_deadline).await
    }
}

/// Where a VMID's guest is.
enum Located {
    At(NodeName, RawConfig),
    Nowhere,
    /// A guest of the other kind (a container where we look for a VM, or the reverse).
    OtherKind,
}

/// The marks in a guest's config (`tags` `;`-separated as PVE stores them, `description` decoded).
pub fn owner_of(config: &RawConfig) -> Owner {
    let tags = config.get("tags").map(|t| crate::pve::lenient::split_tags(t)).unwrap_or_default();
    Owner::of(&tags, config.get("description").map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_come_from_the_config_as_proxmox_returns_it() {
        let id = DeploymentId::parse("01900000-0000-7000-8000-000000000001").unwrap();
        let config: RawConfig = [("tags".to_string(), format!("pvedeploy;{}", ownership::tag_for(&id))), ("name".into(), "web".into())].into();
        assert!(owner_of(&config).is(&id));
        let foreign: RawConfig = [("tags".to_string(), "pvedeploy".to_string()), ("description".into(), "my own VM".into())].into();
        assert_eq!(owner_of(&foreign), Owner::Unmarked);
    }
}
