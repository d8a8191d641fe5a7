//! The steps of provisioning a guest, as data: which step comes next for a VM or a container, and
//! what has been learned so far. The engine persists a `Progress` after every step, so work resumes
//! from the last persisted step after a crash. Pure; no I/O.

use std::net::Ipv4Addr;

use crate::core::deployment::GuestType;
use crate::core::names::{NodeName, VmId};

/// One step. Each is safe to run again after a crash: the engine checks what exists before acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Choose the node.
    Place,
    /// Claim a VMID in our store (atomically), starting from the cluster's next free id.
    ReserveId,
    /// Clone the VM template, or create the container. Intent (node, vmid) is persisted first.
    Create,
    /// Wait for the clone/create task and for the guest's config lock to clear.
    AwaitCreate,
    /// VM: render the user-data (deploy user, a fresh host key) and upload it to the node as a snippet.
    Snippet,
    /// VM: cores, memory, cloud-init (user, keys, network, the snippet), agent, tags.
    Configure,
    /// VM: grow the boot disk to the requested size (absolute size, so repeating is harmless).
    Resize,
    Start,
    AwaitStart,
    /// Poll the guest agent (VM) or the container's interfaces until the guest's IPv4 address appears.
    AwaitAddress,
    Done,
}

impl Step {
    pub const ALL: [Step; 11] = [
        Step::Place,
        Step::ReserveId,
        Step::Create,
        Step::AwaitCreate,
        Step::Snippet,
        Step::Configure,
        Step::Resize,
        Step::Start,
        Step::AwaitStart,
        Step::AwaitAddress,
        Step::Done,
    ];

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

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Place => "place",
            Step::ReserveId => "reserve_id",
            Step::Create => "create",
            Step::AwaitCreate => "await_create",
            Step::Snippet => "snippet",
            Step::Configure => "configure",
            Step::Resize => "resize",
            Step::Start => "start",
            Step::AwaitStart => "await_start",
            Step::AwaitAddress => "await_address",
            Step::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<Step> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether a guest may exist on Proxmox once this step has begun.
    pub fn guest_may_exist(self) -> bool {
        !matches!(self, Step::Place | Step::ReserveId)
    }
}

/// What provisioning has done and learned so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub step: Step,
    pub node: Option<NodeName>,
    pub vmid: Option<VmId>,
    /// The task being waited for (clone, create, start).
    pub upid: Option<String>,
    pub ipv4: Option<Ipv4Addr>,
    /// The static address reserved for the guest (when a pool is configured).
    pub static_ip: Option<Ipv4Addr>,
    /// How the agent will know the guest on first contact: its OpenSSH public host key (injected
    /// through cloud-init) or the `SHA256:` fingerprint Proxmox logged when it made the container's key.
    pub host_key: Option<String>,
    /// How many times the current step was retried (lock timeouts, ids taken by others).
    pub attempts: u32,
}

impl Progress {
    pub fn new() -> Self {
        Self { step: Step::Place, node: None, vmid: None, upid: None, ipv4: None, static_ip: None, host_key: None, attempts: 0 }
    }

    /// Moves to the step after this one.
    pub fn advance(&mut self, kind: GuestType) {
        self.step = self.step.next(kind);
        self.attempts = 0;
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
