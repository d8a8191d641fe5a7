//! The simulated cluster: its state, tasks and locks, and the dispatch of validated API calls to
//! the handlers that model PVE's behaviour.

pub mod access;
pub mod addresses;
pub mod agent;
pub mod appliances;
pub mod backups;
pub mod cloudinit;
pub mod config_update;
pub mod disks;
pub mod locks;
pub mod lxc;
pub mod migrate;
pub mod nodes;
pub mod perms;
pub mod persist;
pub mod power;
pub mod qemu;
pub mod snapshots;
pub mod state;
pub mod storage;
pub mod tasks;

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth::Identity;
use crate::backend::{GuestBackend, GuestKind};
use crate::config::{SimConfig, Timing};
use crate::faults::Faults;
use crate::http::envelope::ApiError;
use crate::http::params::Params;
use state::{ClusterState, Guest, NodeState};
use tasks::{Task, TaskResult, Tasks};

/// The cluster behind the API.
pub struct Cluster {
    state: Mutex<ClusterState>,
    pub tasks: Tasks,
    pub locks: locks::StorageLocks,
    pub faults: Faults,
    pub backend: Arc<dyn GuestBackend>,
    pub timing: Timing,
    pub state_dir: PathBuf,
    pub name: String,
    pub fingerprint: String,
    pub started: Instant,
    /// Users, tokens, roles, ACLs and pools (shared with authentication).
    pub access: Arc<crate::auth::access::Access>,
    /// Linux bridges on every node.
    pub bridges: Vec<String>,
    /// API calls served, by method and schema path (tests count what a client sent).
    pub calls: Mutex<std::collections::BTreeMap<(String, String), u64>>,
    /// The nodes' clock as vzdump reads it (`backups::Clock`).
    pub clock: backups::Clock,
    /// Where a persistent simulator keeps the cluster (`SimConfig::persistent`).
    persister: Option<persist::Persister>,
    /// Whether the cluster was restored from a previous run's file.
    pub restored: bool,
}

/// A validated API call.
pub struct ApiCall {
    pub method: String,
    /// The schema's templated path.
    pub path: String,
    pub params: Params,
    pub ident: Identity,
    /// The file of a `multipart/form-data` upload.
    pub upload: Option<crate::http::params::UploadedFile>,
}

/// A handler's answer: `data`, optionally with PVE's `total`.
pub struct Reply {
    pub data: Value,
    pub total: Option<usize>,
}

impl From<Value> for Reply {
    fn from(data: Value) -> Self {
        Reply { data, total: None }
    }
}

impl Cluster {
    /// Builds the cluster from the config: nodes, storages, templates, container templates.
    pub fn new(cfg: &SimConfig, faults: Faults, fingerprint: String, access: Arc<crate::auth::access::Access>) -> anyhow::Result<Arc<Self>> {
        let mut st = ClusterState::default();
        for (i, n) in cfg.cluster.nodes.iter().enumerate() {
            let nodeid = i as u32 + 1;
            st.nodes.insert(n.name.clone(), NodeState { spec: n.clone(), nodeid, ip: Ipv4Addr::new(10, 77, 0, 10 + nodeid as u8) });
        }
        for s in &cfg.cluster.storages {
            st.storages.insert(s.id.clone(), s.clone());
        }
        for t in &cfg.cluster.templates {
            qemu::install_template(&mut st, t).map_err(|e| anyhow::anyhow!("template {}: {e}", t.vmid))?;
        }
        let tasks = Tasks::default();
        let persister = cfg.persistent.then(|| persist::Persister::new(&cfg.state_dir));
        let saved = match &persister {
            Some(p) => p.load()?,
            None => None,
        };
        let restored = saved.is_some();
        if let Some(saved) = saved {
            saved.apply(&mut st, &tasks);
        }
        storage::prepare_dirs(&cfg.state_dir, &st, &cfg.cluster.lxc_templates, cfg.cluster.lxc_template_nodes.as_deref())?;
        Ok(Arc::new(Self {
            state: Mutex::new(st),
            tasks,
            locks: locks::StorageLocks::default(),
            faults,
            backend: cfg.backend.clone(),
            timing: cfg.timing.clone(),
            state_dir: cfg.state_dir.clone(),
            name: cfg.cluster.name.clone(),
            fingerprint,
            started: Instant::now(),
            access,
            bridges: cfg.cluster.bridges.clone(),
            calls: Mutex::default(),
            clock: backups::Clock::default(),
            persister,
            restored,
        }))
    }

    /// A persistent simulator writes the cluster to disk if it changed since the last write (off the async
    /// threads; saves never overlap). A failed write is logged and retried at the next save.
    pub async fn save(self: &Arc<Self>) {
        if self.persister.is_none() {
            return;
        }
        let c = self.clone();
        let _ = tokio::task::spawn_blocking(move || c.save_now()).await;
    }

    /// `save`, on the calling thread.
    pub fn save_now(&self) {
        let Some(p) = &self.persister else { return };
        let capture = || {
            let mut saved = persist::Saved::of_state(&self.state());
            saved.tasks = self.tasks.saved();
            saved
        };
        if let Err(e) = p.save(capture) {
            tracing::error!(error = %e, "the simulator could not save its cluster; retrying at the next change");
        }
    }

    /// The state; never held across an `.await`.
    pub fn state(&self) -> MutexGuard<'_, ClusterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `node` exists.
    pub fn has_node(&self, node: &str) -> bool {
        self.state().nodes.contains_key(node)
    }

    /// Sleeps for a simulated duration.
    pub async fn pause(secs: f64) {
        if secs > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        }
    }

    /// Forks a worker: registers the task, applies task faults, runs `work` in the background and
    /// returns the UPID.
    pub fn spawn_task<F, Fut>(self: &Arc<Self>, node: &str, task_type: &str, id: &str, ident: &Identity, work: F) -> String
    where
        F: FnOnce(Arc<Cluster>, Arc<Task>) -> Fut,
        Fut: Future<Output = TaskResult> + Send + 'static,
    {
        let task = self.tasks.create(node, task_type, id, ident);
        let upid = task.upid.clone();
        if self.faults.task_hangs(task_type) {
            return upid;
        }
        if let Some(message) = self.faults.task_failure(task_type) {
            let secs = self.timing.task_secs;
            let c = self.clone();
            let (task_type, id) = (task_type.to_string(), id.to_string());
            tasks::run_worker(task, async move {
                Cluster::pause(secs).await;
                // A failed create removes the guest it had registered (pve-container `API2/LXC.pm`
                // create_vm and qemu-server `API2/Qemu.pm` create_vm destroy the config on error).
                if matches!(task_type.as_str(), "vzcreate" | "qmcreate") {
                    if let Ok(vmid) = id.parse::<u32>() {
                        let mut st = c.state();
                        if st.guests.get(&vmid).is_some_and(|g| g.config.get("lock").map(String::as_str) == Some("create")) {
                            st.guests.remove(&vmid);
                        }
                    }
                }
                // So does a failed restore as a new guest (`API2/LXC.pm:616-629` at 94f5585, `destroy_config`); a
                // guest overwritten with `force` keeps its config and lock (`backups/restore.rs`). A new one has
                // nothing but the lock in its config yet.
                if matches!(task_type.as_str(), "vzrestore" | "qmrestore") {
                    if let Ok(vmid) = id.parse::<u32>() {
                        let mut st = c.state();
                        if st.guests.get(&vmid).is_some_and(|g| g.config.len() == 1 && g.config.get("lock").map(String::as_str) == Some("create")) {
                            st.guests.remove(&vmid);
                        }
                    }
                }
                Err(message)
            }, self.clone().saved_after());
            return upid;
        }
        let fut = work(self.clone(), task.clone());
        tasks::run_worker(task, fut, self.clone().saved_after());
        upid
    }

    /// Saves once a task has ended (its work and its status).
    async fn saved_after(self: Arc<Self>) {
        self.save().await;
    }

    /// Counts one call of `method` on the schema path `path` (it passed authentication and routing).
    pub fn count_call(&self, method: &str, path: &str) {
        *self.calls.lock().unwrap_or_else(|p| p.into_inner()).entry((method.to_string(), path.to_string())).or_default() += 1;
    }

    /// Dispatches a validated call to its handler.
    pub async fn dispatch(self: &Arc<Self>, call: ApiCall) -> Result<Reply, ApiError> {
        let p = &call.params;
        let node = p.str("node").unwrap_or_default();
        let m = call.method.as_str();
        let reply: Reply = match (m, call.path.as_str()) {
            ("GET", "/version") => nodes::version(self.access.major).into(),
            ("GET", "/access/permissions") => access::permissions(&call)?.into(),
            ("POST", "/access/users") => access::create_user(&call)?.into(),
            ("POST", "/access/users/{userid}/token/{tokenid}") => access::create_token(&call)?.into(),
            ("GET", "/access/users/{userid}/token/{tokenid}") => access::token_info(&call)?.into(),
            ("GET", "/access/roles") => access::roles(&call)?.into(),
            ("POST", "/access/roles") => access::create_role(&call)?.into(),
            ("PUT", "/access/roles/{roleid}") => access::update_role(&call)?.into(),
            ("PUT", "/access/acl") => access::update_acl(&call)?.into(),
            ("GET", "/pools") => access::pools(&call)?.into(),
            ("POST", "/pools") => access::create_pool(&call)?.into(),
            ("PUT", "/pools") => access::update_pool(self, &call)?.into(),
            ("POST", "/storage") => backups::pbs::create(self, &call)?.into(),
            ("PUT", "/storage/{storage}") => storage::update(self, &call)?.into(),
            ("GET", "/nodes/{node}/aplinfo") => appliances::list().into(),
            ("POST", "/nodes/{node}/aplinfo") => appliances::download(self, &node, &call)?.into(),
            ("GET", "/nodes/{node}/network") => nodes::network(self, &node, p).into(),
            ("GET", "/nodes") => nodes::list(self, &self.state()).into(),
            ("GET", "/nodes/{node}") => json!([{"name": "qemu"}, {"name": "lxc"}, {"name": "storage"}, {"name": "tasks"}, {"name": "status"}]).into(),
            ("GET", "/nodes/{node}/status") => nodes::status(self, &self.state(), &node)?.into(),
            ("GET", "/cluster/status") => nodes::cluster_status(self, &self.state()).into(),
            ("GET", "/cluster/resources") => {
                let all = nodes::resources(self, &self.state(), p);
                perms::visible_resources(&call.ident, &self.access, all, p.str("type").as_deref()).into()
            }
            ("GET", "/cluster/nextid") => nodes::nextid(&self.state(), p)?.into(),
            ("GET", "/nodes/{node}/storage") => storage::list(&self.state(), &self.state_dir, &node, p).into(),
            ("GET", "/nodes/{node}/storage/{storage}/status") => storage::status(&self.state(), &self.state_dir, &node, p)?.into(),
            ("POST", "/nodes/{node}/storage/{storage}/upload") => storage::upload(self, &node, &call)?.into(),
            ("GET", "/nodes/{node}/storage/{storage}/content") => storage::content(&self.state(), &self.state_dir, &node, p, &call.ident)?.into(),
            ("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}") => backups::delete_volume(self, &node, &call)?.into(),
            ("POST", "/nodes/{node}/vzdump") => backups::vzdump(self, &node, &call)?.into(),
            ("GET", "/nodes/{node}/tasks") => {
                let (data, total) = tasks::list(&self.tasks, &node, p);
                Reply { data, total: Some(total) }
            }
            ("GET", "/nodes/{node}/tasks/{upid}") => json!([{"name": "log"}, {"name": "status"}]).into(),
            ("GET", "/nodes/{node}/tasks/{upid}/status") => tasks::status(&self.tasks, &node, p)?.into(),
            ("GET", "/nodes/{node}/tasks/{upid}/log") => {
                let (data, total) = tasks::log(&self.tasks, &node, p)?;
                Reply { data, total: Some(total) }
            }
            ("DELETE", "/nodes/{node}/tasks/{upid}") => tasks::stop(&self.tasks, &node, p)?.into(),

            ("GET", "/nodes/{node}/qemu") => perms::visible_guests(&call.ident, qemu::list(self, &node, p)).into(),
            ("POST", "/nodes/{node}/qemu") => qemu::create(self, &node, &call)?.into(),
            ("GET", "/nodes/{node}/qemu/{vmid}/config") => config_update::get_config(self, &node, GuestKind::Qemu, p)?.into(),
            ("GET", "/nodes/{node}/qemu/{vmid}/pending") => config_update::pending(self, &node, GuestKind::Qemu, p)?.into(),
            ("POST", "/nodes/{node}/qemu/{vmid}/config") => config_update::update_async(self, &node, GuestKind::Qemu, &call)?.into(),
            ("PUT", "/nodes/{node}/qemu/{vmid}/config") => config_update::update_sync(self, &node, GuestKind::Qemu, &call)?.into(),
            ("POST", "/nodes/{node}/qemu/{vmid}/clone") => qemu::clone(self, &node, &call)?.into(),
            ("POST", "/nodes/{node}/qemu/{vmid}/migrate") => migrate::migrate(self, &node, GuestKind::Qemu, &call)?.into(),
            ("PUT", "/nodes/{node}/qemu/{vmid}/resize") => config_update::resize(self, &node, GuestKind::Qemu, &call)?.into(),
            ("POST", "/nodes/{node}/qemu/{vmid}/template") => power::template(self, &node, GuestKind::Qemu, &call)?.into(),
            ("DELETE", "/nodes/{node}/qemu/{vmid}") => power::destroy(self, &node, GuestKind::Qemu, &call)?.into(),
            ("GET", "/nodes/{node}/qemu/{vmid}/status/current") => power::current(self, &node, GuestKind::Qemu, p)?.into(),
            ("POST", "/nodes/{node}/qemu/{vmid}/status/start") => power::start(self, &node, GuestKind::Qemu, &call)?.into(),
            ("POST", "/nodes/{node}/qemu/{vmid}/status/stop") => power::stop(self, &node, GuestKind::Qemu, &call, "qmstop")?.into(),
            ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown") => power::stop(self, &node, GuestKind::Qemu, &call, "qmshutdown")?.into(),
            ("POST", "/nodes/{node}/qemu/{vmid}/status/reboot") => power::reboot(self, &node, GuestKind::Qemu, &call)?.into(),
            ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping") => agent::ping(self, &node, p).await?.into(),
            ("GET", "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces") => agent::interfaces(self, &node, p).await?.into(),
            ("GET", "/nodes/{node}/qemu/{vmid}/agent/get-osinfo") => agent::osinfo(self, &node, p).await?.into(),
            ("GET", "/nodes/{node}/qemu/{vmid}/cloudinit/dump") => cloudinit::dump(self, &node, p)?.into(),
            ("GET", "/nodes/{node}/qemu/{vmid}/cloudinit") => cloudinit::pending_list(self, &node, p)?.into(),
            ("PUT", "/nodes/{node}/qemu/{vmid}/cloudinit") => cloudinit::regenerate(self, &node, p)?.into(),
            ("GET", "/nodes/{node}/qemu/{vmid}/snapshot") => snapshots::list(self, &node, GuestKind::Qemu, p)?.into(),
            ("POST", "/nodes/{node}/qemu/{vmid}/snapshot") => snapshots::create(self, &node, GuestKind::Qemu, &call)?.into(),
            ("POST", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback") => snapshots::rollback(self, &node, GuestKind::Qemu, &call)?.into(),
            ("DELETE", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}") => snapshots::delete(self, &node, GuestKind::Qemu, &call)?.into(),

            ("GET", "/nodes/{node}/lxc") => perms::visible_guests(&call.ident, lxc::list(self, &node)).into(),
            ("POST", "/nodes/{node}/lxc") => lxc::create(self, &node, &call)?.into(),
            ("GET", "/nodes/{node}/lxc/{vmid}/config") => config_update::get_config(self, &node, GuestKind::Lxc, p)?.into(),
            ("GET", "/nodes/{node}/lxc/{vmid}/pending") => config_update::pending(self, &node, GuestKind::Lxc, p)?.into(),
            ("PUT", "/nodes/{node}/lxc/{vmid}/config") => config_update::update_sync(self, &node, GuestKind::Lxc, &call)?.into(),
            ("PUT", "/nodes/{node}/lxc/{vmid}/resize") => config_update::resize(self, &node, GuestKind::Lxc, &call)?.into(),
            ("POST", "/nodes/{node}/lxc/{vmid}/migrate") => migrate::migrate(self, &node, GuestKind::Lxc, &call)?.into(),
            ("POST", "/nodes/{node}/lxc/{vmid}/template") => power::template(self, &node, GuestKind::Lxc, &call)?.into(),
            ("DELETE", "/nodes/{node}/lxc/{vmid}") => power::destroy(self, &node, GuestKind::Lxc, &call)?.into(),
            ("GET", "/nodes/{node}/lxc/{vmid}/status/current") => power::current(self, &node, GuestKind::Lxc, p)?.into(),
            ("POST", "/nodes/{node}/lxc/{vmid}/status/start") => power::start(self, &node, GuestKind::Lxc, &call)?.into(),
            ("POST", "/nodes/{node}/lxc/{vmid}/status/stop") => power::stop(self, &node, GuestKind::Lxc, &call, "vzstop")?.into(),
            ("POST", "/nodes/{node}/lxc/{vmid}/status/shutdown") => power::stop(self, &node, GuestKind::Lxc, &call, "vzshutdown")?.into(),
            ("POST", "/nodes/{node}/lxc/{vmid}/status/reboot") => power::reboot(self, &node, GuestKind::Lxc, &call)?.into(),
            ("GET", "/nodes/{node}/lxc/{vmid}/interfaces") => agent::lxc_interfaces(self, &node, p).await?.into(),
            ("GET", "/nodes/{node}/lxc/{vmid}/snapshot") => snapshots::list(self, &node, GuestKind::Lxc, p)?.into(),
            ("POST", "/nodes/{node}/lxc/{vmid}/snapshot") => snapshots::create(self, &node, GuestKind::Lxc, &call)?.into(),
            ("POST", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback") => snapshots::rollback(self, &node, GuestKind::Lxc, &call)?.into(),
            ("DELETE", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}") => snapshots::delete(self, &node, GuestKind::Lxc, &call)?.into(),
            (m, path) => {
                return Err(ApiError::NotImplemented(format!(
                    "Method '{m} {path}' not implemented (pvedeploy-sim models a subset of the PVE API; see its README)"
                )))
            }
        };
        Ok(reply)
    }

    /// Runs a closure on a guest of this node and type, with PVE's "does not exist" error.
    pub fn with_guest<T>(&self, node: &str, vmid: u32, kind: GuestKind, f: impl FnOnce(&Guest) -> T) -> Result<T, ApiError> {
        let st = self.state();
        let g = st.guest_on(node, vmid, kind).map_err(ApiError::server)?;
        Ok(f(g))
    }
}
