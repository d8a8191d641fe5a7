//! What a simulator instance is made of: listen address, schema path, cluster shape, credentials, timing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::{ApiOnlyBackend, GuestBackend};
use crate::guest::{default_cache_dir, NspawnBackend, Unavailable};

const GIB: u64 = 1024 * 1024 * 1024;

/// Everything `Simulator::start` needs.
#[derive(Clone)]
pub struct SimConfig {
    /// HTTPS listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Path of PVE's `apidoc.json` (loaded at start, never compiled in).
    pub schema_path: PathBuf,
    /// Where storages keep files (`<state_dir>/nodes/<node>/storage/<storage>/…`, shared storages
    /// under `<state_dir>/shared/<storage>/…`).
    pub state_dir: PathBuf,
    pub cluster: ClusterSpec,
    pub tokens: Vec<TokenSpec>,
    pub users: Vec<UserSpec>,
    pub backend: Arc<dyn GuestBackend>,
    pub timing: Timing,
    /// Per-node SSH endpoints (SFTP into the node's storages, PVE paths); `None`: no SSH.
    pub node_ssh: Option<NodeSshConfig>,
    /// Keep the cluster (guests, volumes, snapshots, finished tasks, addresses) in `<state_dir>/cluster.json`
    /// across restarts, and start again what ran (see README.md, "Persistence"). Off: every start is a fresh
    /// install, as tests want.
    pub persistent: bool,
}

/// The per-node SSH endpoints: `root` logs in with one of `authorized_keys`, SFTP only.
/// Addresses are chosen by the simulator (loopback, port 22, distinct per node and per
/// simulator instance); read them with `SimHandle::node_ssh`.
#[derive(Debug, Clone)]
pub struct NodeSshConfig {
    /// OpenSSH `authorized_keys` text.
    pub authorized_keys: String,
}

impl SimConfig {
    /// Two nodes `pve1`, `pve2`; storages `local` (dir), `local-lvm` (lvmthin), `shared` (nfs,
    /// shared); VM template 9000 `debian12-cloud` on pve1/local-lvm; the Debian 12 LXC template on
    /// every node's `local`; one token `root@pam!pvedeploy` with full privileges and a random secret;
    /// user `root@pam` with a random password. Listens on `127.0.0.1:0`; API-only guests.
    pub fn sandbox(state_dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            schema_path: default_schema_path(),
            state_dir,
            cluster: ClusterSpec::sandbox(),
            tokens: vec![TokenSpec::full_access("root@pam!pvedeploy", &random_secret())],
            users: vec![UserSpec {
                userid: "root@pam".to_string(),
                password: random_hex(12),
                acl: vec![("/".to_string(), vec![ALL_PRIVS.to_string()])],
            }],
            backend: Arc::new(ApiOnlyBackend),
            timing: Timing::default(),
            node_ssh: None,
            persistent: false,
        }
    }

    /// The sandbox with the real setup: systemd-nspawn guests (state in `state_dir`, base image
    /// in `$PVEDEPLOY_CACHE_DIR`) and an SSH endpoint per node accepting `authorized_keys`.
    pub fn real(state_dir: PathBuf, authorized_keys: &str) -> Result<Self, Unavailable> {
        Ok(Self::sandbox(state_dir).with_real_guests()?.with_node_ssh(authorized_keys))
    }

    /// Uses [`NspawnBackend`] on this config's state dir; the error says why it cannot run here.
    pub fn with_real_guests(mut self) -> Result<Self, Unavailable> {
        self.backend = Arc::new(NspawnBackend::detect(&self.state_dir, &default_cache_dir())?);
        Ok(self)
    }

    /// Keeps the cluster in `<state_dir>/cluster.json` across restarts (`persistent`).
    pub fn persistent(mut self) -> Self {
        self.persistent = true;
        self
    }

    /// Runs an SSH endpoint per node (needs root and `sshd`; `Simulator::start` fails otherwise).
    pub fn with_node_ssh(mut self, authorized_keys: &str) -> Self {
        self.node_ssh = Some(NodeSshConfig { authorized_keys: authorized_keys.to_string() });
        self
    }
}

/// `<crate>/data/apidoc.json` (the path, not the data, is compiled in).
pub fn default_schema_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data").join("apidoc.json")
}

/// The privilege name that stands for every privilege (like PVE's `Administrator` role).
pub const ALL_PRIVS: &str = "*";

/// An API token (`user@realm!name`) with its secret and ACL.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// `user@realm!name`
    pub id: String,
    pub secret: String,
    /// (path prefix, privileges); `"*"` means all privileges. The most specific matching path wins.
    pub acl: Vec<(String, Vec<String>)>,
}

impl TokenSpec {
    /// A token with every privilege on `/`.
    pub fn full_access(id: &str, secret: &str) -> Self {
        Self {
            id: id.to_string(),
            secret: secret.to_string(),
            acl: vec![("/".to_string(), vec![ALL_PRIVS.to_string()])],
        }
    }
}

/// A user who can log in with `POST /access/ticket`.
#[derive(Debug, Clone)]
pub struct UserSpec {
    /// `user@realm`
    pub userid: String,
    pub password: String,
    pub acl: Vec<(String, Vec<String>)>,
}

/// Durations of simulated work. Defaults are small so tests run fast.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Time a clone task spends copying disks (a full clone holds the storage lock meanwhile).
    pub clone_secs: f64,
    /// Time from `status/start` until the guest process runs (task ends).
    pub start_secs: f64,
    /// Time a stop/shutdown/reboot task takes.
    pub stop_secs: f64,
    /// After start, the guest agent (and LXC `interfaces`) answer only after this delay.
    pub agent_delay_secs: f64,
    /// How long a task waits for a storage lock before failing with PVE's timeout message.
    pub lock_timeout_secs: f64,
    /// Delay before a forked worker starts its locked section (the window clones race in).
    pub worker_start_secs: f64,
    /// Time other tasks (create, destroy, snapshot, resize, template, config) take.
    pub task_secs: f64,
    /// pveproxy delays every 401 by 3 s; 0 by default here so tests stay fast.
    pub unauthorized_delay_secs: f64,
    /// How long an agent call takes to answer "QEMU guest agent is not running": PVE waits for its 3 s
    /// `guest-ping` timeout (qemu-server `src/PVE/QemuServer/Agent.pm:82-89`); scaled down by ten like the others.
    pub agent_ping_timeout_secs: f64,
    /// How long a timed-out agent command takes (QMPClient's 5 s default, `src/PVE/QMPClient.pm:165-169`), scaled.
    pub agent_command_timeout_secs: f64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            clone_secs: 0.2,
            start_secs: 0.1,
            stop_secs: 0.05,
            agent_delay_secs: 2.0,
            lock_timeout_secs: 10.0,
            worker_start_secs: 0.02,
            task_secs: 0.05,
            unauthorized_delay_secs: 0.0,
            agent_ping_timeout_secs: 0.3,
            agent_command_timeout_secs: 0.5,
        }
    }
}

/// The simulated cluster's shape.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub name: String,
    pub nodes: Vec<NodeSpec>,
    pub storages: Vec<StorageSpec>,
    /// QEMU templates created at start.
    pub templates: Vec<TemplateSpec>,
    /// `vztmpl` volumes created at start, e.g. `local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`,
    /// on every node that has the storage.
    pub lxc_templates: Vec<String>,
    /// The nodes the `lxc_templates` were downloaded to (`None`: every node). A stock cluster has a template only
    /// on the nodes where an operator downloaded it: `local` is per node (pve-storage `Plugin.pm:37-39`).
    pub lxc_template_nodes: Option<Vec<String>>,
    /// The Proxmox VE major release modelled (8 or 9): `GET /version`, the privileges and built-in roles,
    /// and the agent endpoints' privilege (`VM.Monitor` on 8).
    pub pve_major: u8,
    /// Linux bridges on every node (`GET /nodes/{node}/network`); the installer makes `vmbr0`.
    pub bridges: Vec<String>,
}

/// One cluster node and its capacity.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    /// Memory already used by things other than guests.
    pub base_mem_used_bytes: u64,
    /// CPU load (0.0–1.0) not caused by guests.
    pub base_cpu_load: f64,
}

/// The storage plugin types the simulator models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StorageKind {
    Dir,
    LvmThin,
    Nfs,
    /// A Proxmox Backup Server datastore (pve-storage `PBSPlugin.pm`): backups only, shared by every node.
    Pbs,
}

impl StorageKind {
    pub fn plugin_type(self) -> &'static str {
        match self {
            StorageKind::Dir => "dir",
            StorageKind::LvmThin => "lvmthin",
            StorageKind::Nfs => "nfs",
            StorageKind::Pbs => "pbs",
        }
    }

    /// File-based storages keep `qcow2` images in `<vmid>/` subdirectories.
    pub fn is_file_based(self) -> bool {
        matches!(self, StorageKind::Dir | StorageKind::Nfs)
    }
}

/// A storage definition (`storage.cfg` entry).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StorageSpec {
    pub id: String,
    pub kind: StorageKind,
    /// Content types: `images`, `rootdir`, `snippets`, `vztmpl`, `iso`, `backup`, `import`.
    pub content: Vec<String>,
    pub shared: bool,
    /// Capacity (per node for local storages; cluster-wide for shared ones).
    pub total_bytes: u64,
    /// Nodes that have it (`None`: all nodes).
    pub nodes: Option<Vec<String>>,
    /// Where a `pbs` storage's backups go (its `server`, `datastore`, `namespace`, …); `None` for other types.
    #[serde(default)]
    pub pbs: Option<PbsTarget>,
}

/// A `pbs` storage's connection (pve-storage `PBSPlugin.pm:42-82` `properties`/`options`). The password is kept
/// only as "given or not", as PVE keeps it apart in `/etc/pve/priv/storage/<id>.pw` (`pbs_set_password`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PbsTarget {
    pub server: String,
    /// 8007 unless given (`PBSPlugin.pm` `pbs_api_connect`).
    pub port: u16,
    pub datastore: String,
    pub namespace: Option<String>,
    pub username: Option<String>,
    pub fingerprint: Option<String>,
    pub password: bool,
}

/// A QEMU template with a cloud-init drive (`ide2`), one `scsi0` disk and `net0` on `vmbr0`.
#[derive(Debug, Clone)]
pub struct TemplateSpec {
    pub vmid: u32,
    pub name: String,
    pub node: String,
    pub storage: String,
    pub disk_gib: u64,
    pub cores: u32,
    pub memory_mib: u64,
    /// `agent: 1`
    pub agent: bool,
    pub tags: Option<String>,
    /// `cpu:` (the GUI's default for new VMs is `x86-64-v2-AES`); `None` leaves PVE's `kvm64`/`qemu64` default.
    pub cpu: Option<String>,
    /// `bios: ovmf`, `machine: q35` and an `efidisk0` with pre-enrolled keys, as the GUI makes a UEFI VM.
    pub uefi: bool,
    /// A second disk (`scsi1`) of this many GiB, as a template with a data disk has.
    pub data_disk_gib: Option<u64>,
}

impl ClusterSpec {
    /// The sandbox cluster: `pve1`, `pve2` (8 CPUs, 32 GiB each).
    pub fn sandbox() -> Self {
        Self {
            name: "pvedeploy-sim".to_string(),
            nodes: vec![
                NodeSpec::new("pve1", 8, 32 * GIB, 0.05, 2 * GIB),
                NodeSpec::new("pve2", 8, 32 * GIB, 0.05, 2 * GIB),
            ],
            storages: standard_storages(),
            templates: vec![TemplateSpec {
                vmid: 9000,
                name: "debian12-cloud".to_string(),
                node: "pve1".to_string(),
                storage: "local-lvm".to_string(),
                disk_gib: 4,
                cores: 2,
                memory_mib: 2048,
                agent: true,
                tags: None,
                // Shaped like a template made in the PVE 9 GUI: UEFI on q35 with the GUI's default CPU type and a data
                // disk, so that every export test meets the keys a real template has (issue #21).
                cpu: Some("x86-64-v2-AES".to_string()),
                uefi: true,
                data_disk_gib: Some(2),
            }],
            lxc_templates: vec!["local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".to_string()],
            lxc_template_nodes: None,
            pve_major: 9,
            bridges: vec!["vmbr0".to_string()],
        }
    }

    /// A freshly installed cluster of `major` (8 or 9) on the default ext4/LVM layout, as sim/STOCK-FACTS.md
    /// §1-§3 describe it: nodes `pve1`, `pve2`; `local` (dir: `iso,vztmpl,backup`, plus `import` on 9; pve-installer
    /// `Proxmox/Install/StorageConfig.pm:50-62`, commit ec1d5ee) and `local-lvm` (lvmthin: `images,rootdir`);
    /// no `snippets` content and so no snippets directory (pve-storage `Plugin.pm:1951-2013`); no VM template
    /// and no container template downloaded on any node; `vmbr0` on each node; only the built-in roles. The
    /// operator prepares it through the API (users, tokens, roles, ACLs, `PUT /storage/{id}`, `POST
    /// /nodes/{node}/aplinfo`, a template VM), as the README tells them to.
    pub fn stock(major: u8) -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let local = if major >= 9 { strings(&["iso", "vztmpl", "backup", "import"]) } else { strings(&["iso", "vztmpl", "backup"]) };
        Self {
            name: "pve-stock".to_string(),
            nodes: vec![NodeSpec::new("pve1", 8, 32 * GIB, 0.05, 2 * GIB), NodeSpec::new("pve2", 8, 32 * GIB, 0.05, 2 * GIB)],
            // `local-lvm` is the sandbox's: lvmthin, `images,rootdir`, per node.
            storages: std::iter::once(StorageSpec { id: "local".to_string(), kind: StorageKind::Dir, content: local, shared: false, total_bytes: 100 * GIB, nodes: None, pbs: None })
                .chain(standard_storages().into_iter().filter(|s| s.id == "local-lvm"))
                .collect(),
            templates: vec![],
            lxc_templates: vec!["local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".to_string()],
            lxc_template_nodes: Some(vec![]),
            pve_major: major,
            bridges: vec!["vmbr0".to_string()],
        }
    }

    /// Three nodes with different load for placement tests: `pve1` busy (CPU 85 %, 28 of 32 GiB
    /// used), `pve2` medium (CPU 40 %, 12 of 32 GiB), `pve3` idle (CPU 5 %, 2 of 64 GiB).
    pub fn three_nodes_uneven() -> Self {
        Self {
            nodes: vec![
                NodeSpec::new("pve1", 8, 32 * GIB, 0.85, 28 * GIB),
                NodeSpec::new("pve2", 8, 32 * GIB, 0.40, 12 * GIB),
                NodeSpec::new("pve3", 16, 64 * GIB, 0.05, 2 * GIB),
            ],
            ..Self::sandbox()
        }
    }
}

impl NodeSpec {
    pub fn new(name: &str, cpus: u32, memory_bytes: u64, base_cpu_load: f64, base_mem_used_bytes: u64) -> Self {
        Self { name: name.to_string(), cpus, memory_bytes, base_mem_used_bytes, base_cpu_load }
    }
}

fn standard_storages() -> Vec<StorageSpec> {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        StorageSpec {
            id: "local".to_string(),
            kind: StorageKind::Dir,
            content: strings(&["iso", "vztmpl", "snippets", "images", "rootdir", "backup"]),
            shared: false,
            total_bytes: 100 * GIB,
            nodes: None,
            pbs: None,
        },
        StorageSpec {
            id: "local-lvm".to_string(),
            kind: StorageKind::LvmThin,
            content: strings(&["images", "rootdir"]),
            shared: false,
            total_bytes: 400 * GIB,
            nodes: None,
            pbs: None,
        },
        StorageSpec {
            id: "shared".to_string(),
            kind: StorageKind::Nfs,
            content: strings(&["images", "rootdir", "snippets"]),
            shared: true,
            total_bytes: 2048 * GIB,
            nodes: None,
            pbs: None,
        },
    ]
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::Rng::fill(&mut rand::rng(), buf.as_mut_slice());
    hex::encode(buf)
}

/// A token secret shaped like PVE's (a UUID).
pub fn random_secret() -> String {
    let h = random_hex(16);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}
