//! Provisioning: drives a deployment's guest through the plan's steps against Proxmox VE, persisting
//! progress under the deployment's lease after every step, resuming after a crash, and cleaning up
//! (guest deleted, id released) when a step fails for good.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::core::addresses::{AddressPool, Addressing};
use crate::core::cloud_init::Template;
use crate::core::deployment::{Deployment, DeploymentId, GuestType};
use crate::core::names::{NodeName, VmId};
use crate::core::placement::{self, NodeLoad, NoNodeFits, PlacementPolicy};
use crate::core::host_key::HostKeyPin;
use crate::core::provision::Step;
use crate::pve::{
    guest_ipv4_on_mac, CloneRequest, GuestState, LxcCreate, LxcInterface, PowerAction, PveClient, PveError, QemuUpdate, ResourceKind, ResourceType, Upid,
};
use crate::store::leases::Lease;
use super::run::LeaseLost;
use crate::store::vmids::Claim;
use crate::store::provision::{StepSaved, StepWrite};
use crate::store::{Store, StoreError};

pub mod snippets;

/// A guest's config as Proxmox returns it, key by key.
pub type RawConfig = std::collections::BTreeMap<String, String>;

pub use crate::core::ownership::{tag_for, TAG};

/// What provisioning needs to know about the cluster, built from its configuration (`from_config`); the sandbox
/// describes itself as a configured cluster.
#[derive(Debug, Clone)]
pub struct ProvisionSettings {
    /// The VM template to clone.
    pub vm_template: VmId,
    /// `storage:vztmpl/…` for containers.
    pub lxc_template: String,
    /// Storage for full clones and container root filesystems.
    pub storage: String,
    pub bridge: String,
    /// Static addresses for guests; DHCP when `None`.
    pub address_pool: Option<AddressPool>,
    pub nameserver: Option<String>,
    /// The base cloud-init user-data that VM snippets are rendered from.
    pub user_data: Template,
    /// How often the reconciler runs (`None`: only at start) and whether it deletes orphans.
    pub reconcile_every: Option<Duration>,
    pub remove_orphans: bool,
    /// Ids we may use (VMs and containers share one id space).
    pub vmid_range: std::ops::RangeInclusive<u32>,
    /// Always full clones (otherwise linked when the template's storage allows).
    pub full_clone: bool,
    pub placement: PlacementPolicy,
    /// The user created in guests for deploying.
    pub deploy_user: String,
    /// The agent's public deploy key, authorized for `deploy_user` (VMs) / root (containers).
    pub deploy_public_key: String,
    pub task_deadline: Duration,
    /// How long one provisioning step may take, its retries after transient failures included.
    pub step_deadline: Duration,
    pub address_deadline: Duration,
    pub poll: Duration,
    /// How many times a clone hitting a storage lock timeout is retried.
    pub lock_retries: u32,
    /// Resource pool every guest is created in.
    pub pool: Option<crate::core::names::PoolName>,
    /// Least time between two address polls of one booting guest: each "agent not running" answer holds one of
    /// pvedaemon's 3 workers for PVE's 3 s guest-ping timeout (sim/STOCK-FACTS.md §4).
    pub agent_poll: Duration,
    /// Most guest-agent / `interfaces` calls in flight per node.
    pub agent_calls_per_node: u32,
    /// Where backups go and Proxmox VE's retention for them; `None`: backups are not configured.
    pub backups: Option<crate::config::BackupSettings>,
}

/// The user created in guests for deploying.
pub const DEPLOY_USER: &str = "deploy";
/// How many times a clone hitting a storage lock timeout is retried.
pub const LOCK_RETRIES: u32 = 5;

impl ProvisionSettings {
    /// A cluster's settings from its configuration (`[proxmox]`, or the sandbox's description of itself), VMs'
    /// user-data rendered from `user_data`. Refuses a template id outside Proxmox's range (the configuration
    /// checked it already).
    pub fn from_config(c: &crate::config::ClusterSettings, deploy_public_key: String, user_data: Template) -> Result<Self, crate::core::validation::FieldError> {
        Ok(Self {
            vm_template: VmId::new(c.vm_template.into())?,
            lxc_template: c.lxc_template.clone(),
            storage: c.storage.clone(),
            bridge: c.bridge.clone(),
            address_pool: c.address_pool.clone(),
            nameserver: c.nameserver.map(|n| n.to_string()),
            user_data,
            reconcile_every: c.reconcile_interval,
            remove_orphans: c.remove_orphans,
            vmid_range: c.vmid_range.clone(),
            full_clone: c.full_clone,
            placement: PlacementPolicy { allow: c.nodes.clone(), max_guests_per_node: c.max_guests_per_node, ..PlacementPolicy::default() },
            deploy_user: DEPLOY_USER.into(),
            deploy_public_key,
            task_deadline: c.task_timeout,
            step_deadline: c.step_timeout,
            address_deadline: c.address_timeout,
            poll: c.poll_interval,
            lock_retries: LOCK_RETRIES,
            pool: c.pool.clone(),
            agent_poll: c.agent_poll_interval,
            agent_calls_per_node: c.agent_calls_per_node,
            backups: c.backups.clone(),
        })
    }
}

/// Why provisioning (or an action on a guest) stopped, each variant saying what can be done about it.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// Proxmox refused or failed a call; `PveError::is_transient` says whether running the step again may help.
    #[error(transparent)]
    Pve(#[from] PveError),
    /// The database failed; `StoreError` says whether a retry is safe.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No node can take the guest: free resources, or ask for less.
    #[error(transparent)]
    NoNode(#[from] NoNodeFits),
    /// Another agent took the lease: stop quietly, it carries on.
    #[error(transparent)]
    LeaseLost(#[from] LeaseLost),
    /// The deployment's guest no longer exists anywhere in the cluster (deleted outside pvedeploy).
    #[error("guest {vmid} no longer exists on the cluster (deleted outside pvedeploy?)")]
    GuestLost { vmid: VmId },
    /// The guest is not provably this deployment's: nothing was done to it.
    #[error(transparent)]
    NotOurs(#[from] crate::core::ownership::NotOurs),
    /// The deployment's status does not allow the change (it changed meanwhile): re-read and decide again.
    #[error(transparent)]
    Illegal(#[from] crate::core::status::IllegalTransition),
    /// The deployment's record is gone from the store: there is nothing left to provision.
    #[error("the deployment vanished from the store")]
    Vanished,
    /// The deployment or its guest is busy, or has no guest to act on: try again when that changes.
    #[error("{0}")]
    NotNow(String),
    /// `[proxmox] vmid_range` is not a range of guest ids: fix the configuration.
    #[error("the configured VMID range is not valid: {0}")]
    BadRange(String),
    /// Every id of the configured range is in use: widen `[proxmox] vmid_range` or destroy deployments.
    #[error("no free VMID left in the configured range {range}")]
    NoFreeId { range: String },
    /// Every address of the pool is claimed: grow the pool or destroy deployments.
    #[error("no free address left in the pool {pool} ({size} addresses, all claimed)")]
    NoFreeAddress { pool: String, size: u64 },
    /// Guests outside our records hold id after id: keep other tools out of `[proxmox] vmid_range`.
    #[error("gave up after {tried} VMIDs were found held by guests that are not ours (the last: {last})")]
    IdsTakenOutside { tried: u32, last: VmId },
    /// A step kept failing transiently until its retries were spent: provision again once Proxmox is well.
    #[error("step {} gave up after {tries} tries in {secs}s; the last Proxmox VE answer: {last}", step.as_str().replace('_', " "))]
    GaveUp { step: Step, tries: u32, secs: u64, last: PveError },
    /// A Proxmox task ran past the task deadline (and was stopped, or could not be): check the node's load and storage.
    #[error("Proxmox VE task {upid} still running after {secs}s (the task deadline); {stopped}")]
    TaskOverran { upid: String, secs: u64, stopped: String },
    /// The guest stayed locked past the task deadline: see what holds the lock on Proxmox.
    #[error("guest {vmid} is still locked ({lock}) after {waited:?}")]
    StillLocked { vmid: VmId, lock: String, waited: Duration },
    /// The VM has no disk to grow: fix the template.
    #[error("VM {vmid} has no boot disk to resize")]
    NoBootDisk { vmid: VmId },
    /// The guest exited while booting: see its console.
    #[error("guest {vmid} stopped while booting (it exited; see its console on {node})")]
    StoppedWhileBooting { vmid: VmId, node: NodeName },
    /// The guest never reported an address: check its network (and, for VMs, the guest agent).
    #[error("guest {vmid} reported no IPv4 address within {secs}s ({last})")]
    NoAddress { vmid: VmId, secs: u64, last: String },
    /// The cloud-init snippet could not be written to the node: check `[proxmox.node_ssh]`.
    #[error("uploading the cloud-init snippet: {0}")]
    Snippet(String),
}

impl ProvisionError {
    fn from_store(e: StoreError) -> Self {
        match e {
            StoreError::Stale => ProvisionError::LeaseLost(LeaseLost),
            e => ProvisionError::Store(e),
        }
    }
}

/// The id chosen for a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdChoice {
    /// Already claimed by this deployment (before a crash).
    Held(VmId),
    /// Free when chosen: claim it with the step's commit.
    ToClaim(VmId),
}

/// Talks to one cluster on behalf of the engine.
pub struct Provisioner {
    pub client: PveClient,
    pub settings: ProvisionSettings,
    /// Snippet uploads to the nodes; without it VMs get Proxmox's generated user-data and no pinned host key.
    pub node_files: Option<snippets::NodeFiles>,
    /// Memory (bytes) and cores of guests we are creating, per node, that PVE does not count yet.
    pending: Mutex<HashMap<String, (NodeName, u64, u32)>>,
    /// Ids this agent claimed (or is claiming) for provisionings still running, by deployment: Proxmox's
    /// next free id does not know them until the guest exists, so sibling tasks skip them here.
    claiming: Mutex<HashMap<String, u32>>,
    /// Ids found held by guests outside our records (a create answered "already exists" and the guest
    /// there is not ours): later choices skip them until the cluster read shows them gone.
    taken_outside: Mutex<HashMap<u32, Instant>>,
    /// Where placement last saw the VM template (saves reading the cluster again to clone it).
    template_seen: Mutex<Option<NodeName>>,
    /// Full clones are serialized per storage, each for the whole of its copy task (many copies at once only
    /// share the storage's bandwidth and time out together).
    full_clone_locks: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Guest-agent calls in flight per node (see `ProvisionSettings::agent_calls_per_node`).
    agent_slots: Mutex<HashMap<NodeName, Arc<tokio::sync::Semaphore>>>,
    /// Which nodes hold the container template, as last read (see `lxc_template_reach`).
    lxc_reach: tokio::sync::Mutex<Option<(Instant, Arc<TemplateReach>)>>,
    /// The cluster as placement last read it (see `cluster_view`), the read in flight, and a count of
    /// provisionings ended (a read that overlaps one is not kept).
    view: Mutex<Option<(Instant, Arc<ClusterView>)>>,
    view_read: tokio::sync::Mutex<()>,
    view_generation: std::sync::atomic::AtomicU64,
}

/// How long placements share one read of the cluster.
const VIEW_FOR: Duration = Duration::from_secs(1);

/// How often a wait for a booting guest (its address, its SSH) checks that the guest still runs.
pub const LIVENESS_EVERY: Duration = Duration::from_secs(2);

/// How long an id found taken outside our records is skipped without the cluster read saying so.
const TAKEN_FOR: Duration = Duration::from_secs(30);

/// How long a read of which nodes hold the container template is reused (templates are downloaded rarely).
const REACH_FOR: Duration = Duration::from_secs(30);

/// Per node: `None` when the container template is there, else why it is not.
type TemplateReach = std::collections::BTreeMap<NodeName, Option<String>>;

/// Why one look for a guest's address found none.
enum AddressRead {
    /// Not yet (the agent is not up, or busy); look again.
    NotYet(String),
    /// Looking again cannot help.
    Fatal(ProvisionError),
}

/// Held while a full clone's copy runs: the next full clone onto the same storage waits for it.
pub struct CloneSlot(#[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>);

/// What placement reads from the cluster.
struct ClusterView {
    resources: Vec<crate::pve::ClusterResource>,
    template_node: Option<NodeName>,
    template_storage_shared: bool,
}

impl Provisioner {
    pub fn new(client: PveClient, settings: ProvisionSettings) -> Self {
        Self { client, settings, node_files: None, pending: Mutex::new(HashMap::new()), claiming: Mutex::new(HashMap::new()), taken_outside: Mutex::default(), template_seen: Mutex::new(None),
            full_clone_locks: tokio::sync::Mutex::new(HashMap::new()),
            agent_slots: Mutex::default(),
            lxc_reach: tokio::sync::Mutex::new(None),
            view: Mutex::new(None),
            view_read: tokio::sync::Mutex::new(()),
            view_generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Chooses a node for `d` from live figures plus our own in-flight reservations.
    pub async fn place(&self, d: &Deployment) -> Result<NodeName, ProvisionError> {
        let (view, shared) = self.cluster_view(false).await?;
        let reach = match d.spec.guest_type {
            GuestType::Lxc => Some(self.lxc_template_reach(&view).await),
            GuestType::Vm => None,
        };
        match self.place_in(d, &view, reach.as_deref()) {
            // A shared view may predate a guest that went away: look again before giving up.
            Err(ProvisionError::NoNode(_)) if shared => self.place_in(d, &self.cluster_view(true).await?.0, reach.as_deref()),
            other => other,
        }
    }

    /// Which online nodes hold the container template: on shared storage every node that has the storage;
    /// on local storage (stock `local` is per node, pve-storage `Plugin.pm:37-39`) the nodes whose
    /// `GET /nodes/{node}/storage/{storage}/content?content=vztmpl` lists it. One call per node, reused for
    /// `REACH_FOR`; a node that cannot be asked counts as lacking it, with the reason.
    async fn lxc_template_reach(&self, view: &ClusterView) -> Arc<TemplateReach> {
        let mut cached = self.lxc_reach.lock().await;
        if let Some((_, reach)) = cached.as_ref().filter(|(at, _)| at.elapsed() < REACH_FOR) {
            return reach.clone();
        }
        let template = &self.settings.lxc_template;
        let storage = template.split_once(':').map_or(template.as_str(), |(s, _)| s);
        let mut reach = TemplateReach::new();
        for r in view.resources.iter().filter(|r| r.kind == ResourceType::Node && r.status.as_deref() == Some("online")) {
            let Some(node) = r.node.clone() else { continue };
            let entry = view.resources.iter().find(|s| s.kind == ResourceType::Storage && s.storage.as_deref() == Some(storage) && s.node.as_ref() == Some(&node));
            let why_not = match entry {
                None => Some(format!("has no storage '{storage}' for the container template {template}")),
                Some(_) => match self.client.storage_content(&node, storage, Some("vztmpl")).await {
                    Ok(items) if items.iter().any(|i| &i.volid == template) => None,
                    Ok(_) => Some(format!("the container template {template} is not on this node (download it: pveam download {storage} {})", template.rsplit('/').next().unwrap_or(template))),
                    Err(e) => Some(format!("could not list its container templates: {e}")),
                },
            };
            reach.insert(node, why_not);
        }
        let reach = Arc::new(reach);
        *cached = Some((Instant::now(), reach.clone()));
        reach
    }

    /// The cluster as placement sees it. Placements that overlap share one read (at most `VIEW_FOR`
    /// old, and never older than the last provisioning that ended): every guest created since that read
    /// is still counted in `pending`, so sharing it neither misses nor double-counts a guest.
    async fn cluster_view(&self, fresh: bool) -> Result<(Arc<ClusterView>, bool), ProvisionError> {
        let young = || self.view.lock().expect("view poisoned").as_ref().filter(|(at, _)| at.elapsed() < VIEW_FOR).map(|(_, v)| v.clone());
        if !fresh {
            if let Some(v) = young() {
                return Ok((v, true));
            }
        }
        // One read at a time: placements that arrive meanwhile take its result.
        let _one = self.view_read.lock().await;
        if !fresh {
            if let Some(v) = young() {
                return Ok((v, true));
            }
        }
        let generation = self.view_generation.load(std::sync::atomic::Ordering::SeqCst);
        let resources = self.client.cluster_resources(None).await?;
        let template_node = resources
            .iter()
            .find(|r| r.vmid == Some(self.settings.vm_template) && r.template)
            .and_then(|r| r.node.clone());
        *self.template_seen.lock().expect("template_seen poisoned") = template_node.clone();
        let template_storage_shared = self.template_on_shared_storage(&resources).await;
        let view = Arc::new(ClusterView { resources, template_node, template_storage_shared });
        let mut cached = self.view.lock().expect("view poisoned");
        // Kept only if no provisioning ended while it was read (its guest may be missing from it).
        if self.view_generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
            *cached = Some((Instant::now(), view.clone()));
        }
        Ok((view, false))
    }

    fn place_in(&self, d: &Deployment, view: &ClusterView, lxc_reach: Option<&TemplateReach>) -> Result<NodeName, ProvisionError> {
        let ClusterView { resources, template_node, template_storage_shared } = view;
        let template_storage_shared = *template_storage_shared;
        // Our reservations as they are now (a shared view's own copy may be older).
        let pending = self.pending.lock().expect("pending poisoned").clone();
        let mut loads = Vec::new();
        for r in resources.iter().filter(|r| r.kind == ResourceType::Node) {
            let Some(node) = r.node.clone() else { continue };
            let template_missing = match (d.spec.guest_type, lxc_reach) {
                (GuestType::Lxc, Some(reach)) => reach.get(&node).cloned().unwrap_or_else(|| Some("not online when the container template was looked for".into())),
                (GuestType::Lxc, None) => None,
                (GuestType::Vm, _) if template_storage_shared || template_node.as_ref() == Some(&node) => None,
                (GuestType::Vm, _) => Some("the VM template is not reachable from this node (local storage elsewhere)".into()),
            };
            let guests = resources.iter().filter(|g| matches!(g.kind, ResourceType::Qemu | ResourceType::Lxc) && !g.template && g.node.as_ref() == Some(&node)).count() as u32;
            let (pending_mem, pending_cores) = pending.values().filter(|(n, _, _)| n == &node).fold((0, 0), |(m, c), (_, pm, pc)| (m + pm, c + pc));
            loads.push(NodeLoad {
                online: r.status.as_deref() == Some("online"),
                cpu: r.cpu,
                maxcpu: r.maxcpu as u32,
                mem: r.mem,
                maxmem: r.maxmem,
                guests,
                template_missing,
                pending_mem,
                pending_cores,
                node,
            });
        }
        let mem = u64::from(d.spec.memory_mib) << 20;
        let node = placement::choose(&loads, d.spec.cpu, mem, d.spec.node.as_ref(), &self.settings.placement)?;
        self.pending.lock().expect("pending poisoned").insert(d.id.to_string(), (node.clone(), mem, d.spec.cpu));
        Ok(node)
    }

    async fn template_on_shared_storage(&self, resources: &[crate::pve::ClusterResource]) -> bool {
        let Some(t) = resources.iter().find(|r| r.vmid == Some(self.settings.vm_template)) else { return false };
        let Some(node) = &t.node else { return false };
        let Ok(cfg) = self.client.qemu_config(node, self.settings.vm_template).await else { return false };
        let Some(storage) = boot_disk(&cfg.raw).and_then(|(_, v)| v.split(':').next().map(String::from)) else { return false };
        resources.iter().any(|r| r.kind == ResourceType::Storage && r.storage.as_deref() == Some(storage.as_str()) && r.shared)
    }

    pub fn forget_pending(&self, id: &DeploymentId) {
        self.pending.lock().expect("pending poisoned").remove(id.as_str());
        self.claiming.lock().expect("claiming poisoned").remove(id.as_str());
        // Its guest now counts in Proxmox's own figures (or is gone): the next placement reads them.
        self.view_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *self.view.lock().expect("view poisoned") = None;
    }

    /// The id to give `id`'s guest: the lowest in the configured range that no guest in the cluster
    /// holds (placement's read of `/cluster/resources`, shared and at most a second old, so usually no
    /// extra call), that is not claimed in the store, not being claimed by another task of this agent,
    /// and not found taken outside our records lately (see `note_taken`). It is held for this
    /// deployment in `claiming` until provisioning ends, so concurrent deployments take consecutive ids
    /// without colliding; the claim itself is committed with the step (see `StepWrite::claim`), and a
    /// collision with another agent there just means choosing again.
    ///
    /// A run resumed after a crash first looks for an id the deployment already holds.
    pub async fn choose_id(&self, store: &Store, id: &DeploymentId, resumed: bool) -> Result<IdChoice, ProvisionError> {
        let bad = |e: crate::core::validation::FieldError| ProvisionError::BadRange(e.message);
        if resumed {
            if let Some(vmid) = store.vmid_held_by(id).await? {
                return Ok(IdChoice::Held(vmid));
            }
        }
        let (start, end) = (*self.settings.vmid_range.start(), *self.settings.vmid_range.end());
        let (view, _) = self.cluster_view(false).await?;
        let in_cluster: std::collections::BTreeSet<u32> = view.resources.iter().filter_map(|r| r.vmid.map(|v| v.get())).collect();
        let (from_id, end_id) = (VmId::new(start.into()).map_err(bad)?, VmId::new(end.into()).map_err(bad)?);
        let claimed: std::collections::BTreeSet<u32> = store.claimed_vmids(from_id, end_id, 100_000).await?.into_iter().collect();
        let candidate = {
            let outside: std::collections::BTreeSet<u32> = {
                let mut outside = self.taken_outside.lock().expect("taken_outside poisoned");
                // Only to cover the shared read's staleness: after that, the read itself says.
                outside.retain(|_, at| at.elapsed() < TAKEN_FOR);
                outside.keys().copied().collect()
            };
            let mut taken_here = self.claiming.lock().expect("claiming poisoned");
            taken_here.remove(id.as_str());
            let c = (start..=end).find(|c| !in_cluster.contains(c) && !claimed.contains(c) && !outside.contains(c) && !taken_here.values().any(|v| v == c));
            if let Some(c) = c {
                taken_here.insert(id.to_string(), c);
            }
            c
        };
        let Some(candidate) = candidate else {
            return Err(ProvisionError::NoFreeId { range: format!("{:?}", self.settings.vmid_range) });
        };
        Ok(IdChoice::ToClaim(VmId::new(candidate.into()).map_err(bad)?))
    }

    /// Remembers that a guest outside our records holds `vmid` (later choices skip it).
    pub fn note_taken(&self, vmid: VmId) {
        self.taken_outside.lock().expect("taken_outside poisoned").insert(vmid.get(), Instant::now());
        self.claiming.lock().expect("claiming poisoned").retain(|_, v| *v != vmid.get());
    }

    /// Forgets the id this agent was about to claim for `id` (another agent claimed it first).
    pub fn drop_choice(&self, id: &DeploymentId) {
        self.claiming.lock().expect("claiming poisoned").remove(id.as_str());
    }

    /// Claims the lowest free static address when a pool is configured (`None`: DHCP).
    pub async fn reserve_address(&self, store: &Store, id: &DeploymentId) -> Result<Option<Ipv4Addr>, ProvisionError> {
        let Some(pool) = &self.settings.address_pool else { return Ok(None) };
        for a in pool.addresses() {
            match store.claim_address(a, id).await? {
                Claim::Claimed | Claim::Taken { by_us: true } => return Ok(Some(a)),
                Claim::Taken { by_us: false } => continue,
            }
        }
        Err(ProvisionError::NoFreeAddress { pool: pool.to_string(), size: pool.size() as u64 })
    }

    /// DHCP, or the static settings of `reserved`.
    pub fn addressing(&self, reserved: Option<Ipv4Addr>) -> Addressing {
        match (&self.settings.address_pool, reserved) {
            (Some(pool), Some(a)) => pool.addressing(a),
            _ => Addressing::Dhcp,
        }
    }

    /// The `SHA256:` fingerprint of the ed25519 host key Proxmox made for a new container, from the
    /// create task's log (`Creating SSH host key 'ssh_host_ed25519_key' …` then `done: SHA256:… root@host`).
    pub async fn container_host_key(&self, upid: &str) -> Result<Option<HostKeyPin>, ProvisionError> {
        let upid = Upid::parse(upid)?;
        let lines = self.client.task_log(&upid, 5000).await?;
        Ok(ed25519_fingerprint_from_log(&lines).and_then(|fp| HostKeyPin::parse(&fp).ok()))
    }

    /// The task that created our container `vmid` (its log has the host key's fingerprint), found when
    /// the create's answer was lost or the agent crashed after sending it. VMs need none: their host
    /// key is the agent's own, in the snippet.
    pub async fn creation_task(&self, kind: GuestType, node: &NodeName, vmid: VmId) -> Result<Option<String>, ProvisionError> {
        match kind {
            GuestType::Vm => Ok(None),
            GuestType::Lxc => Ok(self.client.latest_task(node, vmid, "vzcreate").await?.map(|u| u.as_str().to_owned())),
        }
    }

    /// The restore task that made guest `vmid` from a backup, when Proxmox still lists it.
    pub async fn restore_task(&self, kind: GuestType, node: &NodeName, vmid: VmId) -> Result<Option<String>, ProvisionError> {
        let task = match kind {
            GuestType::Vm => "qmrestore",
            GuestType::Lxc => "vzrestore",
        };
        Ok(self.client.latest_task(node, vmid, task).await?.map(|u| u.as_str().to_owned()))
    }

    /// Starts the clone (VM) or create (container) task.
    /// Sends the clone (VM) or create (container) call. A full clone also returns its `CloneSlot`: keep it until
    /// the clone's task has ended, so that full clones onto one storage copy one at a time.
    pub async fn create(&self, d: &Deployment, node: &NodeName, vmid: VmId, addressing: &Addressing) -> Result<(Upid, Option<CloneSlot>), PveError> {
        let s = &self.settings;
        // The mark is written by the create call itself: no moment exists in which the guest is ours but unmarked.
        let description = crate::core::ownership::description_for(&d.id, &d.spec);
        match d.spec.guest_type {
            GuestType::Vm => {
                let template_node = self.template_node().await?;
                let full = s.full_clone;
                let req = CloneRequest {
                    newid: vmid,
                    name: Some(d.spec.name.to_string()),
                    full,
                    storage: full.then(|| s.storage.clone()),
                    target: (&template_node != node).then(|| node.clone()),
                    description: Some(description),
                    pool: s.pool.clone(),
                };
                let slot = self.clone_slot(GuestType::Vm).await;
                let upid = self.client.qemu_clone(&template_node, s.vm_template, &req).await?;
                Ok((upid, slot))
            }
            GuestType::Lxc => {
                let req = LxcCreate {
                    vmid,
                    ostemplate: s.lxc_template.clone(),
                    hostname: d.spec.name.to_string(),
                    cores: d.spec.cpu,
                    memory_mib: d.spec.memory_mib.into(),
                    swap_mib: 512,
                    rootfs: format!("{}:{}", s.storage, d.spec.disk_gb),
                    net0: format!("name=eth0,bridge={},{}", s.bridge, addressing.ip_settings()),
                    ssh_public_keys: Some(s.deploy_public_key.clone()),
                    password: None,
                    unprivileged: true,
                    // systemd in Debian 12 containers needs nesting for its sandboxing (PVE's own default for new CTs).
                    features: Some("nesting=1".to_string()),
                    // PVE checks tags given at create on `/vms/<vmid>` alone (pve-guest-common `GuestHelpers.pm:314-347`,
                    // `check_vm_perm` without the pool), where an ACL narrowed to the pool grants nothing yet: with a
                    // pool they go on after the create task, when the container is a member ([`Self::tag_container`]).
                    tags: if s.pool.is_some() { vec![] } else { vec![TAG.into(), tag_for(&d.id)] },
                    start: false,
                    description: Some(description),
                    pool: s.pool.clone(),
                };
                Ok((self.client.lxc_create(node, &req).await?, None))
            }
        }
    }

    /// Restores `backup` as the deployment's new guest `vmid` on `node` (instead of `create`): the new name, the
    /// deployment's mark (tags, as `create` gives them, and the description) and, for a container, its own `net0`
    /// (a new MAC, the deployment's addressing) are given to the restore call itself, over the backed-up config.
    pub async fn restore_new(&self, d: &Deployment, node: &NodeName, vmid: VmId, addressing: &Addressing, backup: &crate::core::backup::BackupId) -> Result<Upid, PveError> {
        let s = &self.settings;
        let description = crate::core::ownership::description_for(&d.id, &d.spec);
        // As at create: under a pool, a container's tags go on once it is a member (`tag_container`).
        let tags: Vec<String> = if s.pool.is_some() && d.spec.guest_type == GuestType::Lxc { vec![] } else { vec![TAG.into(), tag_for(&d.id)] };
        let net0 = format!("name=eth0,bridge={},{}", s.bridge, addressing.ip_settings());
        let req = crate::pve::RestoreNew {
            vmid,
            volid: backup.as_str(),
            storage: &s.storage,
            name: d.spec.name.as_str(),
            description: &description,
            tags: &tags,
            net0: (d.spec.guest_type == GuestType::Lxc).then_some(net0.as_str()),
            pool: s.pool.as_ref(),
        };
        self.client.restore_new(pve_kind(d.spec.guest_type), node, &req).await
    }

    /// The storage's full-clone slot, waited for, when `kind` is a VM and clones are full; `None` otherwise.
    pub async fn clone_slot(&self, kind: GuestType) -> Option<CloneSlot> {
        if kind != GuestType::Vm || !self.settings.full_clone {
            return None;
        }
        let lock = self.full_clone_locks.lock().await.entry(self.settings.storage.clone()).or_default().clone();
        // A holder keeps it for one clone task at most (`task_deadline`); past twice that, go on without it.
        match tokio::time::timeout(self.settings.task_deadline * 2, lock.lock_owned()).await {
            Ok(guard) => Some(CloneSlot(guard)),
            Err(_) => {
                tracing::warn!(storage = %self.settings.storage, "waited longer than two task deadlines for the full-clone slot; cloning without it");
                None
            }
        }
    }

    async fn template_node(&self) -> Result<NodeName, PveError> {
        // Placement just read the cluster; a template that moved since then makes the clone fail clearly.
        if let Some(node) = self.template_seen.lock().expect("template_seen poisoned").clone() {
            return Ok(node);
        }
        let resources = self.client.cluster_resources(Some(ResourceKind::Vm)).await?;
        resources
            .into_iter()
            .find(|r| r.vmid == Some(self.settings.vm_template))
            .and_then(|r| r.node)
            .ok_or_else(|| PveError::NotFound { message: format!("VM template {} is not in the cluster", self.settings.vm_template) })
    }

    /// Waits until the guest's config has no lock (PVE holds `lock: clone` until the clone is done) and
    /// returns that config.
    pub async fn wait_unlocked(&self, kind: GuestType, node: &NodeName, vmid: VmId) -> Result<RawConfig, ProvisionError> {
        let started = Instant::now();
        let mut gap = crate::pve::PollDelay::up_to(self.settings.poll);
        loop {
            let mut config = self.client.guest_config_raw(pve_kind(kind), node, vmid).await?;
            let Some(lock) = config.remove("lock") else { return Ok(config) };
            if started.elapsed() > self.settings.task_deadline {
                return Err(ProvisionError::StillLocked { vmid, lock, waited: started.elapsed() });
            }
            tokio::time::sleep(gap.next_delay()).await;
        }
    }

    /// Puts our tags on a container created into a pool (sent without them, see [`Self::create`]); a container that
    /// has them already is left alone. Its description already marks it as ours.
    pub async fn tag_container(&self, d: &Deployment, node: &NodeName, vmid: VmId, config: &RawConfig) -> Result<(), PveError> {
        let wanted = vec![TAG.to_string(), tag_for(&d.id)];
        let has = config.get("tags").map(|t| crate::pve::lenient::split_tags(t)).unwrap_or_default();
        if self.settings.pool.is_none() || wanted.iter().all(|t| has.contains(t)) {
            return Ok(());
        }
        let update = crate::pve::LxcUpdate { tags: wanted, ..Default::default() };
        self.client.lxc_update_config(node, vmid, &update).await
    }

    /// Sets cores, memory, cloud-init (deploy user and key, network), the agent and tags on a cloned VM.
    pub async fn configure_vm(&self, d: &Deployment, node: &NodeName, vmid: VmId, addressing: &Addressing, cicustom: Option<String>) -> Result<(), PveError> {
        let s = &self.settings;
        let update = QemuUpdate {
            cores: Some(d.spec.cpu),
            memory_mib: Some(d.spec.memory_mib.into()),
            ciuser: Some(s.deploy_user.clone()),
            sshkeys: Some(s.deploy_public_key.clone()),
            ipconfig0: Some(addressing.ip_settings()),
            cicustom,
            nameserver: s.nameserver.clone(),
            agent: Some(true),
            tags: vec![TAG.into(), tag_for(&d.id)],
            ..QemuUpdate::default()
        };
        self.client.qemu_update_config(node, vmid, &update).await
    }

    /// Grows the boot disk to the requested size; a disk already that large is left alone. `known` is
    /// the guest's config when it was read since the clone (disks do not change in between).
    pub async fn resize_vm(&self, d: &Deployment, node: &NodeName, vmid: VmId, known: Option<&RawConfig>) -> Result<Option<Upid>, ProvisionError> {
        let read;
        let raw = match known {
            Some(raw) => raw,
            None => {
                read = self.client.qemu_config(node, vmid).await?.raw;
                &read
            }
        };
        let (disk, value) = boot_disk(raw).ok_or(ProvisionError::NoBootDisk { vmid })?;
        let current = disk_size_bytes(&value).unwrap_or(0);
        let wanted = u64::from(d.spec.disk_gb) << 30;
        if current >= wanted {
            return Ok(None);
        }
        Ok(self.client.qemu_resize(node, vmid, &disk, &format!("{}G", d.spec.disk_gb)).await?)
    }

    /// Starts the guest unless it already runs (`surely_stopped`: it was created by this run, so there is
    /// nothing to ask). `None` when nothing had to be done.
    pub async fn start(&self, kind: GuestType, node: &NodeName, vmid: VmId, surely_stopped: bool) -> Result<Option<Upid>, PveError> {
        let kind = pve_kind(kind);
        if !surely_stopped && self.client.guest_current(kind, node, vmid).await?.status == GuestState::Running {
            return Ok(None);
        }
        self.client.guest_power(kind, node, vmid, PowerAction::Start).await.map(Some)
    }

    /// Whether the guest still runs: `Ok(())`, or why waiting for it further is pointless (it stopped
    /// — it died during boot — or it no longer exists). A read only; transient read errors are not a verdict.
    pub async fn still_running(&self, kind: GuestType, node: &NodeName, vmid: VmId) -> Result<(), ProvisionError> {
        match self.client.guest_current(pve_kind(kind), node, vmid).await {
            Ok(s) if s.status == GuestState::Stopped => Err(ProvisionError::StoppedWhileBooting { vmid, node: node.clone() }),
            Ok(_) => Ok(()),
            // Not on its node: gone only if the cluster lists it nowhere (a migrated guest is followed elsewhere).
            Err(PveError::NotFound { .. }) => match self.client.cluster_resources(Some(crate::pve::ResourceKind::Vm)).await {
                Ok(all) if all.iter().any(|r| r.vmid == Some(vmid)) => Ok(()),
                Ok(_) => Err(ProvisionError::GuestLost { vmid }),
                Err(_) => Ok(()),
            },
            Err(e) if e.is_transient() || e.is_retryable() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Polls until the guest reports an IPv4 address (guest agent for VMs, interfaces for containers).
    /// `known` is the guest's config when it was read since the clone (its `net0` MAC does not change).
    pub async fn await_address(&self, kind: GuestType, node: &NodeName, vmid: VmId, known: Option<&RawConfig>) -> Result<Ipv4Addr, ProvisionError> {
        let started = Instant::now();
        // How long guests of this kind took to report an address after their start task ended.
        let wait_kind = match kind {
            GuestType::Vm => "address:qemu",
            GuestType::Lxc => "address:lxc",
        };
        // Paced: the first look at once (a container with a static address has it already), then at most one
        // poll per `agent_poll`, aimed at when guests of this kind usually answer.
        let mut gap = crate::pve::PollDelay::around(self.settings.poll.max(self.settings.agent_poll), self.client.wait_times().expected(wait_kind));
        let mut polls = 0u32;
        let mut last_problem = String::from("no address reported yet");
        let mut net0_mac: Option<String> = known.and_then(|c| c.get("net0")).and_then(|n| mac_of(n));
        let mut last_liveness = Instant::now();
        let slots = self.agent_slots(node);
        loop {
            let remaining = self.settings.address_deadline.saturating_sub(started.elapsed());
            // At most `agent_calls_per_node` agent calls in flight on this node, across all booting guests.
            let found = match tokio::time::timeout(remaining, slots.acquire()).await {
                Ok(Ok(_permit)) => match self.read_address(kind, node, vmid, &mut net0_mac).await {
                    Ok(found) => found,
                    Err(AddressRead::NotYet(why)) => {
                        last_problem = why;
                        None
                    }
                    Err(AddressRead::Fatal(e)) => return Err(e),
                },
                Ok(Err(_)) | Err(_) => {
                    last_problem = format!("no guest-agent slot on {node} came free");
                    None
                }
            };
            polls += 1;
            if let Some(ip) = found {
                // A guest that had its address at the first look says nothing about how long it takes.
                if polls > 1 {
                    self.client.wait_times().observe(wait_kind, started.elapsed());
                }
                return Ok(ip);
            }
            if started.elapsed() > self.settings.address_deadline {
                return Err(ProvisionError::NoAddress { vmid, secs: self.settings.address_deadline.as_secs(), last: last_problem });
            }
            // A guest that died during boot never reports one: look every `LIVENESS_EVERY`, not at the deadline.
            if last_liveness.elapsed() >= LIVENESS_EVERY {
                last_liveness = Instant::now();
                self.still_running(kind, node, vmid).await?;
            }
            tokio::time::sleep(gap.next_delay_at(started.elapsed()).max(self.settings.agent_poll)).await;
        }
    }

    /// The node's guest-agent call slots.
    fn agent_slots(&self, node: &NodeName) -> Arc<tokio::sync::Semaphore> {
        let mut slots = self.agent_slots.lock().expect("agent slots poisoned");
        slots.entry(node.clone()).or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.settings.agent_calls_per_node.max(1) as usize))).clone()
    }

    /// One look for the guest's address: the guest agent's interfaces (VMs) or the container's `interfaces`,
    /// the address on `net0`'s MAC (read once, from the config, when not known yet).
    async fn read_address(&self, kind: GuestType, node: &NodeName, vmid: VmId, net0_mac: &mut Option<String>) -> Result<Option<Ipv4Addr>, AddressRead> {
        if net0_mac.is_none() {
            *net0_mac = self.client.guest_config_raw(pve_kind(kind), node, vmid).await.ok().and_then(|c| c.get("net0").and_then(|n| mac_of(n)));
        }
        let answer = match kind {
            GuestType::Vm => self.client.qemu_agent_interfaces(node, vmid).await.map(|ifaces| guest_ipv4_on_mac(&ifaces, net0_mac.as_deref())),
            GuestType::Lxc => self.client.lxc_interfaces(node, vmid).await.map(|ifaces| LxcInterface::ipv4_on_mac(&ifaces, net0_mac.as_deref())),
        };
        match answer {
            Ok(found) => Ok(found),
            Err(PveError::AgentNotRunning) => Err(AddressRead::NotYet("the QEMU guest agent is not running".into())),
            // Includes the agent's own timeout after a good ping (`AgentTimeout`): the guest is busy booting.
            Err(e) if e.is_retryable() => Err(AddressRead::NotYet(e.to_string())),
            Err(e) => Err(AddressRead::Fatal(e.into())),
        }
    }

    /// Waits for a task up to `deadline`; a task still running then is stopped
    /// (`DELETE /nodes/{node}/tasks/{upid}`) before the error is returned, so nothing we started runs on unseen.
    pub async fn wait_task_for(&self, upid: &Upid, deadline: Duration) -> Result<(), ProvisionError> {
        wait_or_stop(&self.client, upid, self.settings.poll, deadline).await
    }
}

/// `wait_task`, stopping the task when it outlives `deadline`.
async fn wait_or_stop(client: &PveClient, upid: &Upid, poll: Duration, deadline: Duration) -> Result<(), ProvisionError> {
    match client.wait_task(upid, poll, deadline).await {
        Ok(_) => Ok(()),
        Err(PveError::TaskDeadline { upid, waited }) => {
            let stopped = match client.task_stop(&upid).await {
                Ok(()) => "stopped it".to_string(),
                Err(e) => format!("could not stop it: {e}"),
            };
            Err(ProvisionError::TaskOverran { upid: upid.to_string(), secs: waited.as_secs(), stopped })
        }
        Err(e) => Err(e.into()),
    }
}

/// The MAC of a `net0` value (`virtio=BC:24:11:…,bridge=vmbr0` or `…,macaddr=…`).
fn mac_of(net0: &str) -> Option<String> {
    net0.split(',').find_map(|part| {
        let (k, v) = part.split_once('=')?;
        let is_mac = v.len() == 17 && v.split(':').count() == 6;
        (is_mac && matches!(k, "virtio" | "e1000" | "e1000e" | "rtl8139" | "vmxnet3" | "macaddr" | "hwaddr")).then(|| v.to_string())
    })
}

/// The ed25519 fingerprint in a container create task's log, as PVE prints it.
pub fn ed25519_fingerprint_from_log(lines: &[String]) -> Option<String> {
    let at = lines.iter().position(|l| l.starts_with("Creating SSH host key 'ssh_host_ed25519_key'"))?;
    let done = lines[at + 1..].iter().find(|l| l.starts_with("done: "))?;
    let fp = done.strip_prefix("done: ")?.split_whitespace().next()?;
    let b64 = fp.strip_prefix("SHA256:")?;
    (b64.len() == 43 && b64.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')).then(|| fp.to_string())
}

/// The client's name for a guest kind.
pub(crate) fn pve_kind(kind: GuestType) -> crate::pve::GuestType {
    match kind {
        GuestType::Vm => crate::pve::GuestType::Qemu,
        GuestType::Lxc => crate::pve::GuestType::Lxc,
    }
}

/// The boot disk's key and value (`scsi0`, `local-lvm:vm-100-disk-0,size=4G`), skipping CD-ROMs and cloud-init drives.
pub fn boot_disk(raw: &std::collections::BTreeMap<String, String>) -> Option<(String, String)> {
    for key in ["scsi0", "virtio0", "sata0", "ide0"] {
        if let Some(v) = raw.get(key) {
            if !v.contains("media=cdrom") && !v.contains("cloudinit") {
                return Some((key.to_string(), v.clone()));
            }
        }
    }
    None
}

/// `size=32G` (or K/M/T; a bare number is bytes) from a disk property string.
pub fn disk_size_bytes(value: &str) -> Option<u64> {
    let size = value.split(',').find_map(|p| p.strip_prefix("size="))?;
    let (num, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(size.len()));
    let n: f64 = num.parse().ok()?;
    let mult = match unit.trim_end_matches("iB").trim_end_matches('B') {
        "" => 1u64,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    Some((n * mult as f64) as u64)
}

/// The waiting parts of a step share one policy: how long a task may run.
/// A task outliving the deadline is stopped.
pub async fn wait(client: &PveClient, upid: &str, s: &ProvisionSettings) -> Result<(), ProvisionError> {
    wait_or_stop(client, &Upid::parse(upid)?, s.poll, s.task_deadline).await
}

/// Commits a whole step under the lease (see [`StepWrite`]); a claimed id someone else holds is
/// `Store(Taken)`, for the caller to choose again.
pub async fn commit(store: &Store, lease: &Lease, step: StepWrite<'_>) -> Result<StepSaved, ProvisionError> {
    store.save_step(lease, step).await.map_err(ProvisionError::from_store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_host_key_from_the_task_log() {
        let log: Vec<String> = [
            "extracting archive '/var/lib/vz/template/cache/debian-12-standard_12.7-1_amd64.tar.zst'",
            "Creating SSH host key 'ssh_host_rsa_key' - this may take some time ...",
            "done: SHA256:MO4wvFqzdGXQrlCQgt53eMwYktHGnzBLVaaaaaaaaaa root@ct",
            "Creating SSH host key 'ssh_host_ed25519_key' - this may take some time ...",
            "done: SHA256:gVOdbEVZ39HBjwCAdx9dC9Xd3F+ZmXnEoTaTT+X8QsY root@ct",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(ed25519_fingerprint_from_log(&log).as_deref(), Some("SHA256:gVOdbEVZ39HBjwCAdx9dC9Xd3F+ZmXnEoTaTT+X8QsY"));
        assert_eq!(ed25519_fingerprint_from_log(&log[..3]), None);
        assert_eq!(ed25519_fingerprint_from_log(&[log[3].clone(), "done: SHA256:short root@ct".into()]), None);
    }

    #[test]
    fn disk_sizes() {
        assert_eq!(disk_size_bytes("local-lvm:vm-100-disk-0,size=4G"), Some(4 << 30));
        assert_eq!(disk_size_bytes("local-lvm:vm-100-disk-0,discard=on,size=512M"), Some(512 << 20));
        assert_eq!(disk_size_bytes("local-lvm:vm-100-disk-0"), None);
    }

    #[test]
    fn boot_disk_skips_cloudinit_and_cdrom() {
        let raw = [("ide2", "local-lvm:vm-100-cloudinit,media=cdrom"), ("scsi0", "local-lvm:vm-100-disk-0,size=4G")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(boot_disk(&raw).unwrap().0, "scsi0");
    }
}
