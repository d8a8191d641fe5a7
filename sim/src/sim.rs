//! Starting a simulator instance and the handle tests and the agent's sandbox hold on to it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::auth::Auth;
use crate::backend::GuestBackend;
use crate::cluster::Cluster;
use crate::config::SimConfig;
use crate::faults::Faults;
use crate::node_ssh::NodeSshEndpoints;
use crate::http::{endpoint, ApiServer, SHUTDOWN_GRACE};
use crate::schema::load_schema;
use crate::tls::{H1TlsAcceptor, SelfSignedCert};

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Loads the schema, builds the cluster, generates the certificate and starts serving HTTPS.
    pub async fn start(cfg: SimConfig) -> anyhow::Result<SimHandle> {
        let schema = load_schema(&cfg.schema_path)?;
        std::fs::create_dir_all(&cfg.state_dir)?;
        let node_names: Vec<String> = cfg.cluster.nodes.iter().map(|n| n.name.clone()).collect();
        let cert = SelfSignedCert::generate(&node_names)?;
        let faults = Faults::default();
        let access = Arc::new(crate::auth::access::Access::new(cfg.cluster.pve_major));
        let cluster = Cluster::new(&cfg, faults.clone(), cert.fingerprint_sha256(), access.clone())?;
        // What the backend holds of guests this cluster does not know (a previous run's) is put aside before
        // the API listens, and cleared after it does.
        let known: std::collections::BTreeSet<u32> = cluster.state().guests.keys().copied().collect();
        cfg.backend.set_aside(&known);
        let auth = Auth::new(&cfg.tokens, &cfg.users, access);
        let admin = auth.admin_token();
        let node_ssh = match &cfg.node_ssh {
            Some(ssh) => NodeSshEndpoints::start(&cluster, ssh).await?,
            None => NodeSshEndpoints::default(),
        };
        let server = Arc::new(ApiServer { schema, auth, cluster: cluster.clone(), faults: faults.clone() });
        let acceptor = match H1TlsAcceptor::bind(cfg.listen, &cert).await {
            Ok(a) => a,
            Err(e) => {
                let mut node_ssh = node_ssh;
                node_ssh.stop().await;
                return Err(e);
            }
        };
        let addr = acceptor.socket_addr().ok_or_else(|| anyhow::anyhow!("listener has no socket address"))?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(endpoint(server), async { let _ = stop_rx.await; }, Some(SHUTDOWN_GRACE))
                .await;
        });
        let background = tokio::spawn(after_start(cluster.clone(), cfg.persistent));
        Ok(SimHandle {
            addr,
            cert,
            faults,
            admin,
            cluster,
            backend: cfg.backend.clone(),
            node_ssh,
            stop: Some(stop_tx),
            task: Some(task),
            background: Some(background),
        })
    }
}

/// How often a persistent simulator saves what changed outside calls and tasks (`SimHandle::set_vm_config`, …).
const SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Once the API listens: the restored cluster's running guests boot again (all at once), what a previous run left
/// is cleared, and a persistent simulator saves every `SAVE_EVERY` what changed.
async fn after_start(cluster: Arc<Cluster>, persistent: bool) {
    if cluster.restored {
        let running: Vec<u32> = cluster.state().guests.iter().filter(|(_, g)| g.running.is_some()).map(|(id, _)| *id).collect();
        let mut set = tokio::task::JoinSet::new();
        for vmid in running {
            let c = cluster.clone();
            set.spawn(async move { crate::cluster::power::resume(&c, vmid).await });
        }
        while set.join_next().await.is_some() {}
        cluster.save().await;
    }
    cluster.backend.clean_set_aside().await;
    while persistent {
        tokio::time::sleep(SAVE_EVERY).await;
        cluster.save().await;
    }
}

/// A running simulator.
pub struct SimHandle {
    addr: SocketAddr,
    cert: SelfSignedCert,
    faults: Faults,
    admin: (String, String),
    cluster: Arc<Cluster>,
    backend: Arc<dyn GuestBackend>,
    node_ssh: NodeSshEndpoints,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Restarting restored guests, clearing a previous run's, periodic saves (`after_start`).
    background: Option<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    /// `https://127.0.0.1:PORT/api2/json`
    pub fn base_url(&self) -> String {
        format!("https://{}/api2/json", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `AA:BB:…` (SHA-256 of the certificate, as `pvenode cert info` prints it).
    pub fn fingerprint_sha256(&self) -> String {
        self.cert.fingerprint_sha256()
    }

    pub fn cert_pem(&self) -> String {
        self.cert.cert_pem.clone()
    }

    /// Fault injection for this instance.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// (token id, secret) accepted by `/_sim/*` (the first full-access token of the config).
    pub fn admin_token(&self) -> (String, String) {
        self.admin.clone()
    }

    /// Sets a config key of a guest directly (no validation, no digest change checks).
    pub fn set_vm_config(&self, vmid: u32, key: &str, value: &str) {
        if let Some(g) = self.cluster.state().guests.get_mut(&vmid) {
            g.config.insert(key.to_string(), value.to_string());
        }
    }

    /// Sets the nodes' clock as vzdump reads it (backup names and times, and so `prune-backups`) to `at` seconds
    /// since the epoch; it stays there until set again. Tests move it to simulate days of backups.
    pub fn set_clock(&self, at: u64) {
        self.cluster.clock.set(at);
    }

    /// API calls served so far (each call that reached a schema method, whatever its answer).
    pub fn calls(&self) -> u64 {
        self.cluster.calls.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
    }

    /// Calls served of `method` on the schema path `path` (`/nodes/{node}/lxc`).
    pub fn calls_to(&self, method: &str, path: &str) -> u64 {
        self.cluster.calls.lock().unwrap_or_else(|p| p.into_inner()).get(&(method.to_string(), path.to_string())).copied().unwrap_or(0)
    }

    /// Calls served that can change something (every method but GET).
    pub fn mutating_calls(&self) -> u64 {
        self.cluster.calls.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|((m, _), _)| m != "GET").map(|(_, n)| n).sum()
    }

    /// Tasks still running.
    pub fn running_tasks(&self) -> usize {
        self.cluster.tasks.running()
    }

    /// The node a guest is on.
    pub fn guest_node(&self, vmid: u32) -> Option<String> {
        self.cluster.state().guests.get(&vmid).map(|g| g.node.clone())
    }

    /// The guest disappears at once, as when its config is deleted by hand on the node (`rm
    /// /etc/pve/nodes/…/<vmid>.conf`): no task, no stop; a running backend is stopped.
    pub async fn vanish(&self, vmid: u32) {
        let gone = self.cluster.state().guests.remove(&vmid);
        if let Some(g) = gone {
            if g.running.is_some() {
                let _ = self.backend.stop(vmid).await;
            }
        }
    }

    pub fn vm_exists(&self, vmid: u32) -> bool {
        self.cluster.state().guests.contains_key(&vmid)
    }

    /// A guest's config as stored (pending changes not applied).
    pub fn vm_config(&self, vmid: u32) -> Option<BTreeMap<String, String>> {
        self.cluster.state().guests.get(&vmid).map(|g| g.config.clone())
    }

    /// The IPv4 address the simulator gave a started guest.
    pub fn guest_ipv4(&self, vmid: u32) -> Option<std::net::Ipv4Addr> {
        self.cluster.state().guests.get(&vmid).and_then(|g| g.ipv4)
    }

    /// The directory of `storage` on `node` (snippets go to `<dir>/snippets/`).
    pub fn storage_dir(&self, node: &str, storage: &str) -> Option<std::path::PathBuf> {
        let st = self.cluster.state();
        let spec = st.storages.get(storage)?;
        Some(crate::cluster::storage::storage_dir(&self.cluster.state_dir, spec, node))
    }

    /// The cluster's node names.
    pub fn node_names(&self) -> Vec<String> {
        self.cluster.state().nodes.keys().cloned().collect()
    }

    /// `node`'s SSH endpoint: (address, host key line `ssh-ed25519 AAAA…` to pin), when
    /// `SimConfig::node_ssh` was set. Log in as `root`; SFTP only; `/var/lib/vz` is the node's
    /// `local` storage, `/mnt/pve/<id>` each shared storage.
    pub fn node_ssh(&self, node: &str) -> Option<(SocketAddr, String)> {
        self.node_ssh.get(node)
    }

    /// Whether the cluster was restored from a previous run (`SimConfig::persistent`).
    pub fn restored(&self) -> bool {
        self.cluster.restored
    }

    /// Stops all guests (`backend.shutdown_all`), the node SSH endpoints and the listener. A persistent
    /// simulator saves the cluster first: its guests count as running, to be started again at the next start.
    pub async fn shutdown(mut self) {
        if let Some(b) = self.background.take() {
            b.abort();
            let _ = b.await;
        }
        self.cluster.save().await;
        self.backend.shutdown_all().await;
        self.node_ssh.stop().await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
