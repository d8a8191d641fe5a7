//! Cloud-init snippets on the nodes: PVE has no API to upload them, so the agent writes them over
//! SFTP (the node's host key pinned) into the snippets storage's directory, and removes them at destroy.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use russh::keys::{PrivateKey, PublicKey};

use crate::core::deployment::DeploymentId;
use crate::core::names::NodeName;
use crate::pve::PveClient;
use crate::ssh::{HostKeyPin, Ssh, Target};

/// How to reach the nodes' snippet directories.
pub struct NodeFiles {
    pub ssh: Ssh,
    pub key: Arc<PrivateKey>,
    pub user: String,
    pub port: u16,
    /// Pinned host key per node.
    pub host_keys: BTreeMap<String, PublicKey>,
    /// Address per node, overriding `/cluster/status`.
    pub addresses: BTreeMap<String, String>,
    /// Storage id (`local`) and its snippets directory on the nodes (`/var/lib/vz/snippets`).
    pub storage: String,
    pub dir: String,
    /// SSH logins in flight per node (see `NODE_LOGINS`).
    pub logins: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

/// At most this many SSH logins to one node at once: OpenSSH's default `MaxStartups 10:30:100` (sshd_config(5),
/// MaxStartups) starts dropping unauthenticated connections at 10, so 20 VMs provisioned at once lost some of
/// their snippet uploads.
const NODE_LOGINS: usize = 4;

/// Attempts at a login the node dropped before it answered (a transient `Connect` error), with 250 ms, 500 ms between.
const LOGIN_ATTEMPTS: u32 = 3;

impl NodeFiles {
    /// The file name of a deployment's user-data snippet.
    pub fn file_name(id: &DeploymentId) -> String {
        format!("pvedeploy-{id}.yaml")
    }

    /// `user=local:snippets/pvedeploy-<id>.yaml`, for `cicustom`.
    pub fn cicustom(&self, id: &DeploymentId) -> String {
        format!("user={}:snippets/{}", self.storage, Self::file_name(id))
    }

    /// Logs in to `node` (host key pinned), at most `NODE_LOGINS` at once per node, retrying a dropped login
    /// `LOGIN_ATTEMPTS` times; the permit is held until the returned session is closed.
    async fn login(&self, client: &PveClient, node: &NodeName) -> Result<(crate::ssh::Connection, tokio::sync::OwnedSemaphorePermit), String> {
        let t = self.target(client, node).await?;
        let slots = self.logins.lock().expect("logins poisoned").entry(node.to_string()).or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(NODE_LOGINS))).clone();
        let permit = slots.acquire_owned().await.map_err(|_| "the node's login slots are closed".to_string())?;
        let mut attempt = 1;
        loop {
            match self.ssh.connect(&t).await {
                Ok(conn) => return Ok((conn, permit)),
                Err(e) if e.retry_safe() && attempt < LOGIN_ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(250 << (attempt - 1))).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    async fn target(&self, client: &PveClient, node: &NodeName) -> Result<Target, String> {
        let host_key = self
            .host_keys
            .get(node.as_str())
            .cloned()
            .ok_or_else(|| format!("no SSH host key is configured for node {node} ([proxmox.node_ssh] host_keys); refusing to upload to an unverified node"))?;
        let addr = match self.addresses.get(node.as_str()) {
            Some(a) => a.clone(),
            None => client
                .cluster_status()
                .await
                .map_err(|e| format!("cannot read node {node}'s address from /cluster/status: {e}"))?
                .into_iter()
                .find(|e| e.kind == "node" && e.name == node.as_str())
                .and_then(|e| e.ip)
                .ok_or_else(|| format!("node {node} has no address in /cluster/status; set [proxmox.node_ssh] addresses"))?,
        };
        let with_port = if addr.parse::<std::net::IpAddr>().is_ok() { SocketAddr::new(addr.parse().expect("checked"), self.port).to_string() } else { format!("{addr}:{}", self.port) };
        let sock = with_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve node {node}'s address {addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("node {node}'s address {addr} resolves to nothing"))?;
        Ok(Target { addr: sock, user: self.user.clone(), host_key: HostKeyPin::Key(host_key), client_key: self.key.clone() })
    }

    /// Writes the deployment's user-data (mode 0600: it holds the guest's host private key).
    pub async fn upload(&self, client: &PveClient, node: &NodeName, id: &DeploymentId, user_data: &str) -> Result<String, String> {
        let (conn, _permit) = self.login(client, node).await?;
        let path = format!("{}/{}", self.dir, Self::file_name(id));
        let r = conn.upload(&path, user_data.as_bytes(), 0o600).await.map_err(|e| e.to_string());
        conn.close().await;
        r.map(|()| self.cicustom(id))
    }

    /// Logs in to `node` with its host key pinned and writes, then removes, a test file in the snippets
    /// directory (for `pvedeploy check`).
    pub async fn probe(&self, client: &PveClient, node: &NodeName) -> Result<(), String> {
        let (conn, _permit) = self.login(client, node).await?;
        let path = format!("{}/.pvedeploy-check-{}", self.dir, uuid::Uuid::new_v4().simple());
        let written = conn.upload(&path, b"pvedeploy check\n", 0o600).await.map_err(|e| format!("cannot write {path}: {e}"));
        let removed = match &written {
            Ok(()) => conn.remove(&path).await.map_err(|e| format!("wrote {path} but cannot remove it: {e}")),
            Err(_) => Ok(()),
        };
        conn.close().await;
        written.and(removed)
    }

    /// Removes the snippet; a missing one is fine.
    pub async fn remove(&self, client: &PveClient, node: &NodeName, id: &DeploymentId) -> Result<(), String> {
        let (conn, _permit) = self.login(client, node).await?;
        let path = format!("{}/{}", self.dir, Self::file_name(id));
        let r = conn.remove(&path).await.map_err(|e| e.to_string());
        conn.close().await;
        r
    }
}
