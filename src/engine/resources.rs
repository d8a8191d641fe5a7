//! The cluster's resource figures (nodes and storages, used and total), read from Proxmox and cached briefly.

use std::time::{Duration, Instant};

use super::Engine;
use crate::pve::{PveError, ResourceType};

/// How long figures are reused before Proxmox is asked again.
pub const CACHE_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
pub struct NodeFigures {
    pub node: String,
    pub online: bool,
    /// Cores in use (PVE's CPU fraction × cores).
    pub cpu_used: f64,
    pub cpu_total: u32,
    pub memory_used: u64,
    pub memory_total: u64,
    pub disk_used: u64,
    pub disk_total: u64,
    /// Guests that are not templates.
    pub guests: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StorageFigures {
    pub node: String,
    pub storage: String,
    pub shared: bool,
    pub used: u64,
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterFigures {
    pub nodes: Vec<NodeFigures>,
    pub storages: Vec<StorageFigures>,
    /// Milliseconds since the epoch.
    pub as_of: i64,
}

/// Why there are no figures.
#[derive(Debug, thiserror::Error)]
pub enum FiguresError {
    #[error("no Proxmox cluster is configured")]
    NotConfigured,
    #[error(transparent)]
    Pve(#[from] PveError),
}

impl Engine {
    /// Nodes and storages with used and total capacity, at most `CACHE_FOR` old.
    pub async fn cluster_figures(&self) -> Result<ClusterFigures, FiguresError> {
        let prov = self.inner.provisioner.as_ref().ok_or(FiguresError::NotConfigured)?;
        if let Some((at, figures)) = self.inner.figures.lock().await.clone() {
            if at.elapsed() < CACHE_FOR {
                return Ok(figures);
            }
        }
        let resources = prov.client.cluster_resources(None).await?;
        let mut nodes: Vec<NodeFigures> = resources
            .iter()
            .filter(|r| r.kind == ResourceType::Node)
            .filter_map(|r| {
                let node = r.node.clone()?;
                let guests = resources
                    .iter()
                    .filter(|g| matches!(g.kind, ResourceType::Qemu | ResourceType::Lxc) && !g.template && g.node.as_ref() == Some(&node))
                    .count() as u32;
                Some(NodeFigures {
                    node: node.to_string(),
                    online: r.status.as_deref() == Some("online"),
                    cpu_used: r.cpu * r.maxcpu,
                    cpu_total: r.maxcpu as u32,
                    memory_used: r.mem,
                    memory_total: r.maxmem,
                    disk_used: r.disk,
                    disk_total: r.maxdisk,
                    guests,
                })
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        let mut storages: Vec<StorageFigures> = resources
            .iter()
            .filter(|r| r.kind == ResourceType::Storage)
            .filter_map(|r| {
                Some(StorageFigures { node: r.node.as_ref()?.to_string(), storage: r.storage.clone()?, shared: r.shared, used: r.disk, total: r.maxdisk })
            })
            .collect();
        storages.sort_by(|a, b| (&a.node, &a.storage).cmp(&(&b.node, &b.storage)));
        let figures = ClusterFigures { nodes, storages, as_of: crate::store::now_millis() };
        *self.inner.figures.lock().await = Some((Instant::now(), figures.clone()));
        Ok(figures)
    }
}
