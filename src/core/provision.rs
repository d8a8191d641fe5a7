//! The steps of provisioning a guest, as data: which step comes next for a VM or a container, and
//! what each step has learned (`Progress`, one variant per step). The engine persists a `Progress` after every
//! step, so work resumes from the last persisted step after a crash. Pure; no I/O.

use std::net::Ipv4Addr;

use crate::core::deployment::GuestType;
use crate::core::host_key::HostKeyPin;
use crate::core::names::{NodeName, VmId};
use crate::core::spelling::string_enum;

string_enum! {
    /// One step. Each is safe to run again after a crash: the engine checks what exists before acting.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Step {
        /// Choose the node.
        Place = "place",
        /// Claim a VMID in our store (atomically), starting from the cluster's next free id.
        ReserveId = "reserve_id",
        /// Clone the VM template, or create the container. Intent (node, vmid) is persisted first.
        Create = "create",
        /// Wait for the clone/create task and for the guest's config lock to clear.
        AwaitCreate = "await_create",
        /// VM: render the user-data (deploy user, a fresh host key) and upload it to the node as a snippet.
        Snippet = "snippet",
        /// VM: cores, memory, cloud-init (user, keys, network, the snippet), agent, tags.
        Configure = "configure",
        /// VM: grow the boot disk to the requested size (absolute size, so repeating is harmless).
        Resize = "resize",
        Start = "start",
        AwaitStart = "await_start",
        /// Poll the guest agent (VM) or the container's interfaces until the guest's IPv4 address appears.
        AwaitAddress = "await_address",
        Done = "done",
    }
}

impl Step {
    pub fn next(self, kind: GuestType) -> Step {
        use Step::*;
        match (self, kind) {
            (Place, _) => ReserveId,
            (ReserveId, _) => Create,
            (Create, _) => AwaitCreate,
            (AwaitCreate, GuestType::Vm) => Snippet,
            (Snippet, _) => Configure,
            (AwaitCreate, GuestType::Lxc) => Start,
            (Configure, _) => Resize,
            (Resize, _) => Start,
            (Start, _) => AwaitStart,
            (AwaitStart, _) => AwaitAddress,
            (AwaitAddress, _) | (Done, _) => Done,
        }
    }

    /// Whether a guest may exist on Proxmox once this step has begun.
    pub fn guest_may_exist(self) -> bool {
        !matches!(self, Step::Place | Step::ReserveId)
    }
}

/// Where the guest of a provisioning is: its node and id, and the static address reserved for it (when a pool
/// is configured; DHCP otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestAt {
    pub node: NodeName,
    pub vmid: VmId,
    pub static_ip: Option<Ipv4Addr>,
}

/// What provisioning has done and learned so far: the step to run next, carrying exactly what that step
/// has. Persisted after every step (see `store::provision`), so work resumes where it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Nothing chosen yet.
    Place,
    /// Placed; the address (kept across a retry: an address is claimed once per deployment) and how
    /// often an id someone else claimed first was chosen again.
    ReserveId { node: NodeName, static_ip: Option<Ipv4Addr>, attempts: u32 },
    /// Intent persisted before the create call; `attempts` counts storage-lock retries (a retried
    /// create checks what exists first).
    Create { guest: GuestAt, attempts: u32 },
    /// The clone or create task (none when a guest made before was found without it).
    AwaitCreate { guest: GuestAt, task: Option<String>, attempts: u32 },
    /// VM: the snippet with a fresh host key comes next.
    Snippet { guest: GuestAt },
    /// How the agent will know the guest on first contact (`None`: it cannot, and deploys refuse it).
    Configure { guest: GuestAt, host_key: Option<HostKeyPin> },
    Resize { guest: GuestAt, host_key: Option<HostKeyPin> },
    Start { guest: GuestAt, host_key: Option<HostKeyPin> },
    /// The start task (none when the guest was already running).
    AwaitStart { guest: GuestAt, host_key: Option<HostKeyPin>, task: Option<String> },
    AwaitAddress { guest: GuestAt, host_key: Option<HostKeyPin> },
    /// Provisioned. `ip` is `None` only for a guest `pvedeploy recover` found without a readable address.
    Ready { guest: GuestAt, host_key: Option<HostKeyPin>, ip: Option<Ipv4Addr> },
}

impl Progress {
    pub fn new() -> Self {
        Progress::Place
    }

    /// The step this progress is at.
    pub fn step(&self) -> Step {
        match self {
            Progress::Place => Step::Place,
            Progress::ReserveId { .. } => Step::ReserveId,
            Progress::Create { .. } => Step::Create,
            Progress::AwaitCreate { .. } => Step::AwaitCreate,
            Progress::Snippet { .. } => Step::Snippet,
            Progress::Configure { .. } => Step::Configure,
            Progress::Resize { .. } => Step::Resize,
            Progress::Start { .. } => Step::Start,
            Progress::AwaitStart { .. } => Step::AwaitStart,
            Progress::AwaitAddress { .. } => Step::AwaitAddress,
            Progress::Ready { .. } => Step::Done,
        }
    }

    /// The guest's place and id, from the step that chose its id on (a guest may exist there).
    pub fn guest(&self) -> Option<&GuestAt> {
        match self {
            Progress::Place | Progress::ReserveId { .. } => None,
            Progress::Create { guest, .. }
            | Progress::AwaitCreate { guest, .. }
            | Progress::Snippet { guest }
            | Progress::Configure { guest, .. }
            | Progress::Resize { guest, .. }
            | Progress::Start { guest, .. }
            | Progress::AwaitStart { guest, .. }
            | Progress::AwaitAddress { guest, .. }
            | Progress::Ready { guest, .. } => Some(guest),
        }
    }

    /// The node chosen, once placed.
    pub fn node(&self) -> Option<&NodeName> {
        match self {
            Progress::ReserveId { node, .. } => Some(node),
            other => other.guest().map(|g| &g.node),
        }
    }

    /// The guest's pinned host key, once known.
    pub fn host_key(&self) -> Option<&HostKeyPin> {
        match self {
            Progress::Configure { host_key, .. }
            | Progress::Resize { host_key, .. }
            | Progress::Start { host_key, .. }
            | Progress::AwaitStart { host_key, .. }
            | Progress::AwaitAddress { host_key, .. }
            | Progress::Ready { host_key, .. } => host_key.as_ref(),
            _ => None,
        }
    }

    /// How often the current step was retried (lock timeouts, ids taken by others); 0 where not counted.
    pub fn attempts(&self) -> u32 {
        match self {
            Progress::ReserveId { attempts, .. } | Progress::Create { attempts, .. } | Progress::AwaitCreate { attempts, .. } => *attempts,
            _ => 0,
        }
    }

    /// The same step, marked as tried at least once (a retried step checks what exists first).
    pub fn tried(self) -> Self {
        match self {
            Progress::ReserveId { node, static_ip, attempts } => Progress::ReserveId { node, static_ip, attempts: attempts.max(1) },
            Progress::Create { guest, attempts } => Progress::Create { guest, attempts: attempts.max(1) },
            Progress::AwaitCreate { guest, task, attempts } => Progress::AwaitCreate { guest, task, attempts: attempts.max(1) },
            other => other,
        }
    }

    /// The step a progress is at, for logs.
    pub fn describe(&self) -> String {
        match (self, self.guest()) {
            (Progress::Place, _) => "choosing a node".into(),
            (Progress::ReserveId { node, .. }, _) => format!("placed on {node}; reserving a VMID"),
            (p, Some(g)) => format!("{} (guest {} on {})", p.step().as_str().replace('_', " "), g.vmid, g.node),
            (p, None) => p.step().as_str().replace('_', " "),
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(kind: GuestType) -> Vec<&'static str> {
        let mut s = Step::Place;
        let mut out = vec![s.as_str()];
        while s != Step::Done {
            s = s.next(kind);
            out.push(s.as_str());
        }
        out
    }

    #[test]
    fn vm_and_container_paths() {
        assert_eq!(walk(GuestType::Vm), ["place", "reserve_id", "create", "await_create", "snippet", "configure", "resize", "start", "await_start", "await_address", "done"]);
        assert_eq!(walk(GuestType::Lxc), ["place", "reserve_id", "create", "await_create", "start", "await_start", "await_address", "done"]);
        for s in Step::ALL {
            assert_eq!(Step::parse(s.as_str()), Some(s));
        }
    }
}
