//! Placement: which node a new guest goes to, from node figures and the request. Pure; no I/O.

use crate::core::names::NodeName;

/// What placement knows about one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLoad {
    pub node: NodeName,
    pub online: bool,
    /// CPU use as a fraction of all cores (0.0–1.0), as PVE reports it.
    pub cpu: f64,
    pub maxcpu: u32,
    /// Memory in use (running guests and the host), bytes. Stopped guests and templates reserve nothing.
    pub mem: u64,
    pub maxmem: u64,
    /// Guests on the node that are not templates.
    pub guests: u32,
    /// Why the template cannot be used on this node (`None`: it lives there, or on shared storage).
    pub template_missing: Option<String>,
    /// Memory (bytes) and cores of our own guests being created here that PVE does not count yet.
    pub pending_mem: u64,
    pub pending_cores: u32,
}

/// Operator limits on placement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlacementPolicy {
    /// Only these nodes; empty = all.
    pub allow: Vec<NodeName>,
    /// At most this many guests per node.
    pub max_guests_per_node: Option<u32>,
    /// Keep at least this fraction of each node's memory free (0.0–1.0).
    pub min_free_memory_fraction: f64,
}

/// Why no node fits; each node's reason, in node order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no node can take this guest: {}", .reasons.iter().map(|(n, r)| format!("{n}: {r}")).collect::<Vec<_>>().join("; "))]
pub struct NoNodeFits {
    pub reasons: Vec<(NodeName, String)>,
}

/// Picks the node with the most free memory and CPU headroom that fits `cores` and `memory_bytes`.
/// `pinned` restricts the choice to one node (and reports why it does not fit).
pub fn choose(nodes: &[NodeLoad], cores: u32, memory_bytes: u64, pinned: Option<&NodeName>, policy: &PlacementPolicy) -> Result<NodeName, NoNodeFits> {
    let mut reasons = Vec::new();
    let mut best: Option<(f64, &NodeName)> = None;
    let mut sorted: Vec<&NodeLoad> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.node.cmp(&b.node));
    if let Some(p) = pinned {
        if !sorted.iter().any(|n| &n.node == p) {
            return Err(NoNodeFits { reasons: vec![(p.clone(), "no such node in the cluster".into())] });
        }
    }
    for n in sorted {
        if pinned.is_some_and(|p| p != &n.node) {
            continue;
        }
        let why_not = if !policy.allow.is_empty() && !policy.allow.contains(&n.node) {
            Some("not in the configured node allow-list".to_string())
        } else if !n.online {
            Some("offline".into())
        } else if let Some(why) = &n.template_missing {
            Some(why.clone())
        } else if n.maxmem == 0 {
            // `/cluster/resources` leaves a node's figures out without `Sys.Audit` on it (pve-manager
            // `PVE/API2Tools.pm:38-78`): nothing to place by, and "0 MiB free" would mislead.
            Some(format!("Proxmox gave no memory or CPU figures for it (the token lacks Sys.Audit on /nodes/{})", n.node))
        } else if policy.max_guests_per_node.is_some_and(|m| n.guests >= m) {
            Some(format!("already holds {} guests (limit {})", n.guests, policy.max_guests_per_node.unwrap_or(0)))
        } else {
            None
        };
        if let Some(r) = why_not {
            reasons.push((n.node.clone(), r));
            continue;
        }
        let reserve = (n.maxmem as f64 * policy.min_free_memory_fraction) as u64;
        let free_mem = n.maxmem.saturating_sub(n.mem).saturating_sub(n.pending_mem).saturating_sub(reserve);
        if free_mem < memory_bytes {
            reasons.push((n.node.clone(), format!("{} MiB free, {} MiB needed", free_mem >> 20, memory_bytes >> 20)));
            continue;
        }
        if cores > n.maxcpu {
            reasons.push((n.node.clone(), format!("has {} cores, {} requested", n.maxcpu, cores)));
            continue;
        }
        let free_cpu = (f64::from(n.maxcpu) * (1.0 - n.cpu.clamp(0.0, 1.0)) - f64::from(n.pending_cores)).max(0.0);
        let mem_frac = (free_mem - memory_bytes) as f64 / n.maxmem.max(1) as f64;
        let cpu_frac = free_cpu / f64::from(n.maxcpu.max(1));
        let score = 0.6 * mem_frac + 0.4 * cpu_frac;
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, &n.node));
        }
    }
    best.map(|(_, n)| n.clone()).ok_or(NoNodeFits { reasons })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn node(name: &str, cpu: f64, mem_used_gib: u64) -> NodeLoad {
        NodeLoad {
            node: NodeName::parse(name).unwrap(),
            online: true,
            cpu,
            maxcpu: 8,
            mem: mem_used_gib * GIB,
            maxmem: 32 * GIB,
            guests: 0,
            template_missing: None,
            pending_mem: 0,
            pending_cores: 0,
        }
    }

    #[test]
    fn picks_the_node_with_most_headroom() {
        let nodes = [node("pve1", 0.8, 28), node("pve2", 0.1, 4), node("pve3", 0.5, 16)];
        assert_eq!(choose(&nodes, 2, 2 * GIB, None, &PlacementPolicy::default()).unwrap().as_str(), "pve2");
    }

    #[test]
    fn pending_reservations_spread_concurrent_guests() {
        let mut nodes = [node("pve1", 0.1, 4), node("pve2", 0.1, 4)];
        nodes[0].pending_mem = 8 * GIB;
        nodes[0].pending_cores = 4;
        assert_eq!(choose(&nodes, 1, GIB, None, &PlacementPolicy::default()).unwrap().as_str(), "pve2");
    }

    #[test]
    fn offline_templateless_full_and_disallowed_nodes_are_skipped_with_reasons() {
        let mut a = node("a", 0.0, 0);
        a.online = false;
        let mut b = node("b", 0.0, 0);
        b.template_missing = Some("the template is not on this node".into());
        let c = node("c", 0.0, 31);
        let d = node("d", 0.0, 0);
        let policy = PlacementPolicy { allow: vec![NodeName::parse("a").unwrap(), NodeName::parse("b").unwrap(), NodeName::parse("c").unwrap()], ..Default::default() };
        let err = choose(&[a, b, c, d], 1, 2 * GIB, None, &policy).unwrap_err();
        let reasons: Vec<String> = err.reasons.iter().map(|(n, r)| format!("{n}: {r}")).collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(reasons[0].contains("offline") && reasons[1].contains("template") && reasons[2].contains("MiB free") && reasons[3].contains("allow-list"), "{reasons:?}");
    }

    #[test]
    fn a_node_without_figures_is_skipped_naming_the_missing_sys_audit() {
        let mut hidden = node("pve1", 0.0, 0);
        (hidden.maxmem, hidden.maxcpu) = (0, 0);
        let err = choose(&[hidden], 1, GIB, None, &PlacementPolicy::default()).unwrap_err();
        assert_eq!(err.reasons[0].1, "Proxmox gave no memory or CPU figures for it (the token lacks Sys.Audit on /nodes/pve1)");
    }

    #[test]
    fn a_pinned_node_is_used_or_explained() {
        let nodes = [node("pve1", 0.9, 20), node("pve2", 0.0, 0)];
        let p1 = NodeName::parse("pve1").unwrap();
        assert_eq!(choose(&nodes, 1, GIB, Some(&p1), &PlacementPolicy::default()).unwrap(), p1);
        let ghost = NodeName::parse("ghost").unwrap();
        assert!(choose(&nodes, 1, GIB, Some(&ghost), &PlacementPolicy::default()).unwrap_err().to_string().contains("no such node"));
    }

    #[test]
    fn limits_apply() {
        let mut n = node("pve1", 0.0, 0);
        n.guests = 5;
        let policy = PlacementPolicy { max_guests_per_node: Some(5), ..Default::default() };
        assert!(choose(&[n.clone()], 1, GIB, None, &policy).is_err());
        let policy = PlacementPolicy { min_free_memory_fraction: 0.99, ..Default::default() };
        n.guests = 0;
        assert!(choose(&[n], 1, GIB, None, &policy).is_err());
    }
}
