//! What the reconciler concludes from the guests Proxmox has and the guests our store records:
//! orphans (tagged as ours, owned by no deployment) and missing guests (recorded, gone). Pure.

use crate::core::deployment::GuestType;
use crate::core::names::{NodeName, VmId};

/// A guest on the cluster that carries our tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedGuest {
    pub node: NodeName,
    pub vmid: VmId,
    pub kind: GuestType,
    pub name: Option<String>,
    pub tags: Vec<String>,
}

/// A guest a deployment in the store says it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedGuest {
    pub deployment: String,
    pub name: String,
    pub node: Option<NodeName>,
    pub vmid: VmId,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Tagged guests no deployment owns or is creating.
    pub orphans: Vec<TaggedGuest>,
    /// Recorded guests Proxmox no longer has.
    pub missing: Vec<RecordedGuest>,
    /// Recorded guests found on another node (migrated): (record, node it is on now).
    pub moved: Vec<(RecordedGuest, NodeName)>,
}

/// Compares; `claimed` are VMIDs held by deployments still at work (a guest being created is not an orphan).
pub fn compare(guests: &[TaggedGuest], recorded: &[RecordedGuest], claimed: &[VmId]) -> Findings {
    let mut f = Findings::default();
    for g in guests {
        let owned = recorded.iter().any(|r| r.vmid == g.vmid) || claimed.contains(&g.vmid);
        if !owned {
            f.orphans.push(g.clone());
        }
    }
    for r in recorded {
        match guests.iter().find(|g| g.vmid == r.vmid) {
            None => f.missing.push(r.clone()),
            Some(g) if r.node.as_ref().is_some_and(|n| n != &g.node) => f.moved.push((r.clone(), g.node.clone())),
            Some(_) => {}
        }
    }
    f.orphans.sort_by_key(|g| g.vmid);
    f.missing.sort_by_key(|r| r.vmid);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(vmid: u32, node: &str) -> TaggedGuest {
        TaggedGuest { node: NodeName::parse(node).unwrap(), vmid: VmId::new(vmid.into()).unwrap(), kind: GuestType::Vm, name: None, tags: vec!["pvedeploy".into()] }
    }

    fn record(vmid: u32, node: &str) -> RecordedGuest {
        RecordedGuest { deployment: format!("d{vmid}"), name: format!("app{vmid}"), node: Some(NodeName::parse(node).unwrap()), vmid: VmId::new(vmid.into()).unwrap() }
    }

    #[test]
    fn orphans_missing_and_moved() {
        let guests = [guest(100, "pve1"), guest(101, "pve1"), guest(102, "pve2"), guest(103, "pve1")];
        let recorded = [record(100, "pve1"), record(102, "pve1"), record(104, "pve1")];
        let claimed = [VmId::new(103).unwrap()];
        let f = compare(&guests, &recorded, &claimed);
        assert_eq!(f.orphans.iter().map(|g| g.vmid.get()).collect::<Vec<_>>(), [101], "103 is being created");
        assert_eq!(f.missing.iter().map(|r| r.vmid.get()).collect::<Vec<_>>(), [104]);
        assert_eq!(f.moved.len(), 1);
        assert_eq!(f.moved[0].1.as_str(), "pve2");
    }
}
