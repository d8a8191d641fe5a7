//! Starts one simulator instance's per-node SSH endpoints ([`NodeSshd`]) with PVE's paths mapped.
//!
//! PVE has no API to upload cloud-init snippets, so the agent writes them over SFTP to the
//! node. Each node gets its own loopback address from the instance's pool (port 22, as on a
//! real node, and reported as the node's `ip` in `/cluster/status`), and sees:
//! `/var/lib/vz` → the node's `local` storage directory (so `local:snippets/x.yaml` is
//! `/var/lib/vz/snippets/x.yaml`), `/mnt/pve/<id>` → each shared file-based storage's
//! directory, and `/storage/<id>` → the node's local storage directories.
//!
//! Node SSH is asked for explicitly (`SimConfig::node_ssh`), so a machine that cannot run it
//! (not root, no `sshd`) makes `Simulator::start` fail with [`NodeSshError`] rather than
//! quietly leaving the endpoints out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cluster::storage::storage_dir;
use crate::cluster::Cluster;
use crate::config::NodeSshConfig;
use crate::guest::detect::which;
use crate::guest::{NodeSshd, NodeSshdError};

#[derive(Debug, thiserror::Error)]
pub enum NodeSshError {
    #[error("node SSH endpoints need root (bind mounts, cgroups, sshd's chroot); run as root or set SimConfig::node_ssh to None")]
    NotRoot,
    #[error("node SSH endpoints need OpenSSH's server: `sshd` not found (apt-get install openssh-server)")]
    NoSshd,
    #[error("no free loopback address left for node {0}'s SSH endpoint")]
    NoAddress(String),
    #[error(transparent)]
    Sshd(#[from] NodeSshdError),
}

/// Whether this machine can run node SSH endpoints (root and `sshd`).
pub fn check_available() -> Result<(), NodeSshError> {
    // SAFETY: plain syscall without arguments.
    if unsafe { libc::geteuid() } != 0 {
        return Err(NodeSshError::NotRoot);
    }
    which("sshd").map(|_| ()).ok_or(NodeSshError::NoSshd)
}

/// The running endpoints, by node name.
#[derive(Default)]
pub struct NodeSshEndpoints {
    servers: BTreeMap<String, NodeSshd>,
}

impl NodeSshEndpoints {
    /// Starts an endpoint for every node of `cluster`; on failure the ones already started stop.
    pub async fn start(cluster: &Arc<Cluster>, cfg: &NodeSshConfig) -> Result<Self, NodeSshError> {
        check_available()?;
        let mut me = Self::default();
        let nodes: Vec<String> = cluster.state().nodes.keys().cloned().collect();
        for node in nodes {
            let (ip, paths) = {
                let mut st = cluster.state();
                // A restored cluster's node keeps its address (already counted in use).
                let restored = st.nodes.get(&node).map(|n| n.ip).filter(|ip| ip.is_loopback() && st.used_ips.contains(ip));
                let ip = match restored {
                    Some(ip) => ip,
                    None => st.allocate_ip(None).ok_or_else(|| NodeSshError::NoAddress(node.clone()))?,
                };
                if let Some(n) = st.nodes.get_mut(&node) {
                    n.ip = ip;
                }
                let mut paths: Vec<(String, PathBuf)> = Vec::new();
                for spec in st.storages.values().filter(|s| s.kind.is_file_based()) {
                    if !st.storage_on_node(&spec.id, &node) {
                        continue;
                    }
                    let dir = storage_dir(&cluster.state_dir, spec, &node);
                    if spec.shared {
                        paths.push((format!("/mnt/pve/{}", spec.id), dir));
                    } else if spec.id == "local" {
                        paths.push(("/var/lib/vz".to_string(), dir));
                    }
                }
                (ip, paths)
            };
            let addr = SocketAddr::from((ip, 22));
            let borrowed: Vec<(&str, &std::path::Path)> = paths.iter().map(|(i, h)| (i.as_str(), h.as_path())).collect();
            let node_dir = cluster.state_dir.join("nodes").join(&node);
            std::fs::create_dir_all(node_dir.join("storage")).map_err(|source| NodeSshdError::Io {
                node: node.clone(),
                context: format!("creating {}", node_dir.display()),
                source,
            })?;
            match NodeSshd::start_with_paths(&node, addr, &node_dir, &cfg.authorized_keys, &borrowed).await {
                Ok(sshd) => {
                    me.servers.insert(node, sshd);
                }
                Err(e) => {
                    me.stop().await;
                    return Err(e.into());
                }
            }
        }
        Ok(me)
    }

    /// (address, host key line `ssh-ed25519 AAAA…`) of `node`'s endpoint.
    pub fn get(&self, node: &str) -> Option<(SocketAddr, String)> {
        self.servers.get(node).map(|s| (s.addr(), s.host_key_openssh()))
    }

    /// Stops every endpoint (sessions end, bind mounts go).
    pub async fn stop(&mut self) {
        let all = std::mem::take(&mut self.servers);
        for (_, sshd) in all {
            sshd.stop().await;
        }
    }
}
