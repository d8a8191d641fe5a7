//! The agent's configuration: a TOML file, then `PVEDEPLOY_*` environment overrides, then CLI flags; parsed into typed values.

pub mod discord;
pub mod github;
pub mod secret;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::Scope;
use crate::core::limits::{Limits, RepoPolicy, RepoScheme};
pub use secret::Secret;

/// A configuration problem: names the field and the rule, so the operator knows what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config field `{field}` {rule}")]
    Invalid { field: String, rule: String },
}

fn invalid(field: impl Into<String>, rule: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), rule: rule.into() }
}

/// The file as written. Unknown keys are refused so a typo never silently does nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub database: DatabaseFile,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub repos: ReposFile,
    #[serde(default)]
    pub tokens: Vec<TokenFile>,
    #[serde(default)]
    pub api: ApiFile,
    #[serde(default)]
    pub proxmox: ProxmoxFile,
    #[serde(default)]
    pub export: ExportSection,
    #[serde(default)]
    pub github: github::GithubFile,
    #[serde(default)]
    pub discord: discord::DiscordFile,
}

/// `[export]`: where the Terraform exports are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSection {
    /// Directory of the per-deployment folders (default `<data_dir>/hcl-export`; env `PVEDEPLOY_EXPORT_DIR`).
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxmoxFile {
    /// `cluster` (default when `endpoint` is set), `sandbox` (default otherwise: the built-in simulator), or `none`.
    pub mode: Option<String>,
    /// `https://host:8006`
    pub endpoint: Option<String>,
    /// `user@realm!tokenname` of a privilege-separated API token.
    pub token_id: Option<String>,
    pub token_secret: Option<Secret<String>>,
    /// SHA-256 fingerprint of the cluster's certificate (`pvenode cert info`), `AA:BB:…`.
    pub fingerprint: Option<String>,
    /// Or a CA bundle (PEM) that signed the certificate.
    pub ca_file: Option<PathBuf>,
    /// The VM template to clone (a VM with a cloud-init drive and the guest agent enabled).
    pub vm_template: Option<u32>,
    /// `storage:vztmpl/file` for containers.
    pub lxc_template: Option<String>,
    /// Storage for full clones and container root filesystems (default `local-lvm`).
    pub storage: Option<String>,
    /// Bridge for container networks (default `vmbr0`).
    pub bridge: Option<String>,
    /// `[first, last]` VMIDs pvedeploy may use (default [10000, 19999]).
    pub vmid_range: Option<[u32; 2]>,
    /// Always full clones (default: linked clones where the template's storage allows).
    pub full_clone: Option<bool>,
    /// Only these nodes (default: all).
    pub nodes: Option<Vec<String>>,
    pub max_guests_per_node: Option<u32>,
    /// How long to wait for a started guest's IPv4 address (default 120).
    pub address_timeout_secs: Option<u64>,
    /// How often tasks, locks and addresses are polled (default 250).
    pub poll_interval_ms: Option<u64>,
    /// How long one Proxmox API call may take before it counts as unanswered (default 30).
    pub call_timeout_secs: Option<u64>,
    /// How long a Proxmox task (clone, create, start, delete, …) may run before it is stopped (default 300).
    pub task_timeout_secs: Option<u64>,
    /// How long one provisioning step may take, its retries after transient failures included (default 900).
    pub step_timeout_secs: Option<u64>,
    /// Static addresses for guests, `FIRST-LAST/PREFIX` (default: DHCP).
    pub address_pool: Option<String>,
    /// Gateway for static addresses.
    pub gateway: Option<String>,
    /// DNS server set through cloud-init (VMs).
    pub nameserver: Option<String>,
    /// The base cloud-init user-data (default: the shipped `cloud-init/user-data.yaml`).
    pub user_data_template: Option<PathBuf>,
    /// Storage that holds snippets (default `local`) and its directory on the nodes (default `/var/lib/vz/snippets`).
    pub snippets_storage: Option<String>,
    pub snippets_dir: Option<String>,
    /// How often the reconciler compares tagged guests with the store (default 300; 0 = only at start).
    pub reconcile_interval_secs: Option<u64>,
    /// Delete guests tagged `pvedeploy` that no deployment owns (default false: only report them).
    pub remove_orphans: Option<bool>,
    /// SSH to the nodes, for uploading cloud-init snippets (PVE has no API for that).
    pub node_ssh: Option<NodeSshFile>,
    /// Resource pool every guest is created in (`pool` on clone and create), so the token's ACL can be narrowed to
    /// `/pool/<name>` (default: none).
    pub pool: Option<String>,
    /// Least time between two guest-agent (or container `interfaces`) polls of one booting guest (default 1000).
    pub agent_poll_interval_ms: Option<u64>,
    /// Most guest-agent calls in flight per node at once (default 2; pvedaemon has 3 workers).
    pub agent_calls_per_node: Option<u32>,
    /// Backups through Proxmox VE's vzdump (`[proxmox.backups]`); off when absent.
    pub backups: Option<BackupsFile>,
}

/// `[proxmox.backups]`: where vzdump writes (a storage with content `backup`) and Proxmox VE's own retention
/// (`prune-backups`), applied after every backup; all `keep_*` zero or absent keeps every backup.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupsFile {
    pub storage: Option<String>,
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// `zstd` (default), `gzip`, `lzo` or `none`.
    pub compress: Option<String>,
    /// How long a backup or restore task may run before it is stopped (default 3600).
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSshFile {
    /// Login user on the nodes (default `root`); the agent's deploy key must be authorized for it.
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Each node's SSH host key (`ssh-ed25519 AAAA…`, from `/etc/ssh/ssh_host_ed25519_key.pub`), by node name.
    pub host_keys: BTreeMap<String, String>,
    /// Address to reach a node at, by node name (default: the node's address in `/cluster/status`).
    #[serde(default)]
    pub addresses: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseFile {
    /// `surrealkv://PATH` (default: `<data_dir>/db`), `mem://`, or `ws://host:port` / `wss://…`.
    pub url: Option<String>,
    pub namespace: Option<String>,
    pub database: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
    /// Accept a `sync=` other than `every` in a `surrealkv://` URL (a 2xx would then not mean stored).
    pub allow_weaker_sync: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub cpu: Option<[u32; 2]>,
    pub memory_mib: Option<[u32; 2]>,
    pub disk_gb: Option<[u32; 2]>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReposFile {
    pub allowed_hosts: Option<Vec<String>>,
    pub schemes: Option<Vec<String>>,
    /// Non-public networks (CIDR) an allowed host name may resolve into (default: none).
    pub allow_private: Option<Vec<String>>,
    /// A regular expression every requested branch name must match whole, on top of git's rules (default:
    /// ASCII letters, digits and `. _ - / @ +`).
    pub branch_pattern: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    pub name: String,
    /// The token itself (hashed at load and then forgotten) …
    pub token: Option<Secret<String>>,
    /// … or its SHA-256, hex, so the file holds no secret.
    pub sha256: Option<String>,
    pub scopes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiFile {
    pub max_page_size: Option<u32>,
    /// Largest request body under `/api/v1`, bytes (default 1048576).
    pub max_body_bytes: Option<u64>,
    /// A request's headers must arrive within this many seconds of its first byte (default 10).
    pub header_timeout_secs: Option<u64>,
    /// Connections open at once from one client address (default 128; behind a reverse proxy every client is the proxy).
    pub max_connections_per_client: Option<u32>,
}

/// Which Proxmox VE the agent talks to.
#[derive(Debug, Clone)]
pub enum ProxmoxSetting {
    /// No cluster: deployments are recorded but not provisioned.
    None,
    /// The built-in simulator (state under `<data_dir>/sandbox`), for trying pvedeploy on one machine.
    Sandbox,
    Cluster(ClusterSettings),
}

#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub endpoint: String,
    pub token_id: String,
    pub token_secret: Secret<String>,
    pub trust: TrustSetting,
    pub vm_template: u32,
    pub lxc_template: String,
    pub storage: String,
    pub bridge: String,
    pub vmid_range: std::ops::RangeInclusive<u32>,
    pub full_clone: bool,
    pub nodes: Vec<crate::core::names::NodeName>,
    pub max_guests_per_node: Option<u32>,
    pub address_timeout: std::time::Duration,
    pub poll_interval: std::time::Duration,
    pub call_timeout: std::time::Duration,
    pub task_timeout: std::time::Duration,
    pub step_timeout: std::time::Duration,
    pub address_pool: Option<crate::core::addresses::AddressPool>,
    pub nameserver: Option<std::net::IpAddr>,
    pub user_data_template: Option<PathBuf>,
    pub snippets_storage: String,
    pub snippets_dir: String,
    pub reconcile_interval: Option<std::time::Duration>,
    pub remove_orphans: bool,
    pub node_ssh: Option<NodeSshSettings>,
    pub pool: Option<crate::core::names::PoolName>,
    pub agent_poll_interval: std::time::Duration,
    pub agent_calls_per_node: u32,
    /// Backups (vzdump); `None`: not configured, the backup endpoints answer 409.
    pub backups: Option<BackupSettings>,
}

/// Where backups go and how many Proxmox VE keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSettings {
    pub storage: String,
    pub retention: crate::core::backup::Retention,
    /// vzdump's `compress`: `zstd`, `gzip`, `lzo` or `0`.
    pub compress: String,
    /// How long a vzdump or restore task may run; beyond it the task is stopped and the backup fails.
    pub timeout: std::time::Duration,
}

impl BackupSettings {
    /// Backups to `storage`, every one kept, zstd-compressed.
    pub fn to(storage: &str) -> Self {
        BackupSettings { storage: storage.into(), retention: crate::core::backup::Retention::default(), compress: "zstd".into(), timeout: std::time::Duration::from_secs(3600) }
    }
}

fn backup_settings(file: BackupsFile) -> Result<BackupSettings, ConfigError> {
    let storage = file.storage.ok_or_else(|| invalid("proxmox.backups.storage", "is required: a storage with content type `backup`"))?;
    if storage.is_empty() || !storage.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(invalid("proxmox.backups.storage", "must be a storage id (letters, digits, - _ .)"));
    }
    let keep = |field: &str, v: Option<u32>| match v {
        Some(n) if n > crate::core::backup::MAX_KEEP => Err(invalid(&format!("proxmox.backups.{field}"), format!("must be between 0 and {}", crate::core::backup::MAX_KEEP))),
        v => Ok(v.unwrap_or(0)),
    };
    let retention = crate::core::backup::Retention {
        last: keep("keep_last", file.keep_last)?,
        hourly: keep("keep_hourly", file.keep_hourly)?,
        daily: keep("keep_daily", file.keep_daily)?,
        weekly: keep("keep_weekly", file.keep_weekly)?,
        monthly: keep("keep_monthly", file.keep_monthly)?,
        yearly: keep("keep_yearly", file.keep_yearly)?,
    };
    let compress = match file.compress.as_deref() {
        None | Some("zstd") => "zstd",
        Some("gzip") => "gzip",
        Some("lzo") => "lzo",
        Some("none") => "0",
        Some(_) => return Err(invalid("proxmox.backups.compress", "must be one of: zstd, gzip, lzo, none")),
    };
    let timeout = match file.timeout_secs {
        None => 3600,
        Some(n @ 1..=604_800) => n,
        Some(_) => return Err(invalid("proxmox.backups.timeout_secs", "must be between 1 and 604800")),
    };
    Ok(BackupSettings { storage, retention, compress: compress.into(), timeout: std::time::Duration::from_secs(timeout) })
}

/// How the agent reaches the nodes over SSH (SFTP) to upload snippets.
#[derive(Debug, Clone)]
pub struct NodeSshSettings {
    pub user: String,
    pub port: u16,
    /// Pinned host key per node, OpenSSH public-key text.
    pub host_keys: BTreeMap<String, String>,
    pub addresses: BTreeMap<String, String>,
}

impl ClusterSettings {
    /// A cluster with the documented defaults for everything but how to reach it and what to clone.
    pub fn new(endpoint: String, token_id: String, token_secret: Secret<String>, trust: TrustSetting, vm_template: u32) -> Self {
        ClusterSettings {
            endpoint,
            token_id,
            token_secret,
            trust,
            vm_template,
            lxc_template: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
            storage: "local-lvm".into(),
            bridge: "vmbr0".into(),
            vmid_range: 10_000..=19_999,
            full_clone: false,
            nodes: vec![],
            max_guests_per_node: None,
            address_timeout: std::time::Duration::from_secs(120),
            poll_interval: std::time::Duration::from_millis(250),
            call_timeout: std::time::Duration::from_secs(30),
            task_timeout: std::time::Duration::from_secs(300),
            step_timeout: std::time::Duration::from_secs(900),
            address_pool: None,
            nameserver: None,
            user_data_template: None,
            snippets_storage: "local".into(),
            snippets_dir: "/var/lib/vz/snippets".into(),
            reconcile_interval: Some(std::time::Duration::from_secs(300)),
            remove_orphans: false,
            node_ssh: None,
            pool: None,
            agent_poll_interval: std::time::Duration::from_secs(1),
            agent_calls_per_node: 2,
            backups: None,
        }
    }
}

/// How the cluster's TLS certificate is verified; there is deliberately no "accept anything".
#[derive(Debug, Clone)]
pub enum TrustSetting {
    Fingerprint(String),
    CaFile(PathBuf),
}

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: String,
    pub namespace: String,
    pub database: String,
    pub credentials: Option<(String, Secret<String>)>,
}

/// An API token from configuration, already hashed.
#[derive(Debug, Clone)]
pub struct ConfiguredToken {
    pub name: String,
    pub sha256: [u8; 32],
    pub scopes: Vec<Scope>,
}

/// The parsed configuration: every value valid, every default applied.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub limits: Limits,
    pub repos: RepoPolicy,
    pub tokens: Vec<ConfiguredToken>,
    pub admin_token: Option<Secret<String>>,
    pub max_page_size: u32,
    /// Largest request body under `/api/v1`, bytes; larger ones are answered 413 before they are read whole.
    pub max_body_bytes: usize,
    /// The HTTP listener's header-read timeout and connection caps.
    pub http: crate::server::Limits,
    pub proxmox: ProxmoxSetting,
    /// Where Terraform exports are written (`<data_dir>/hcl-export` by default).
    pub export_dir: PathBuf,
    /// GitHub webhook secrets; none configured turns the webhook endpoint off.
    pub github: github::GithubSettings,
    /// The Discord door (bot, interactions endpoint, notifications); off when nothing is configured.
    pub discord: discord::DiscordSettings,
    /// Where each value came from, for the start-up log line.
    pub sources: Vec<String>,
}

/// Overrides from the command line; they win over the file and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_CONFIG_FILE: &str = "pvedeploy.toml";

impl Config {
    /// Loads `--config` (or `pvedeploy.toml` when present), applies the environment, then the flags.
    pub fn load(over: &Overrides, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let mut sources = Vec::new();
        let file = match &over.config {
            Some(path) => {
                sources.push(format!("config file {}", path.display()));
                read_file(path)?
            }
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                sources.push(format!("config file {DEFAULT_CONFIG_FILE}"));
                read_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => {
                sources.push("no config file (defaults)".into());
                FileConfig::default()
            }
        };
        Self::from_parts(file, over, env, sources)
    }

    pub fn from_parts(file: FileConfig, over: &Overrides, env: &BTreeMap<String, String>, mut sources: Vec<String>) -> Result<Config, ConfigError> {
        let pick = |flag: Option<String>, var: &str, file: Option<String>, sources: &mut Vec<String>| -> Option<String> {
            if flag.is_some() {
                sources.push(format!("{var} from command line"));
                return flag;
            }
            if let Some(v) = env.get(var) {
                sources.push(format!("{var} from environment"));
                return Some(v.clone());
            }
            file
        };
        let listen_raw = pick(over.listen.clone(), "PVEDEPLOY_LISTEN", file.listen.clone(), &mut sources).unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr = listen_raw.parse().map_err(|_| invalid("listen", format!("must be ADDRESS:PORT, got {listen_raw:?}")))?;
        let data_dir = pick(
            over.data_dir.as_ref().map(|p| p.display().to_string()),
            "PVEDEPLOY_DATA_DIR",
            file.data_dir.as_ref().map(|p| p.display().to_string()),
            &mut sources,
        )
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("./data"));
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let url = pick(over.database_url.clone(), "PVEDEPLOY_DATABASE_URL", file.database.url.clone(), &mut sources)
            .unwrap_or_else(|| format!("surrealkv://{}", data_dir.join("db").display()));
        if !["surrealkv://", "mem://", "ws://", "wss://"].iter().any(|p| url.starts_with(p)) {
            return Err(invalid("database.url", "must start with surrealkv://, mem://, ws:// or wss://"));
        }
        if url.starts_with("surrealkv://") {
            let sync = url.split_once('?').map(|(_, q)| q).unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("sync="));
            if let Some(mode) = sync.filter(|m| *m != "every") {
                if file.database.allow_weaker_sync != Some(true) {
                    return Err(invalid(
                        "database.url",
                        &format!("sync={mode} weakens durability (an answered write could be lost in a crash); remove it (every commit is synced), or set database.allow_weaker_sync = true to force it"),
                    ));
                }
            }
        }
        let password = env.get("PVEDEPLOY_DATABASE_PASSWORD").map(|p| Secret::new(p.clone())).or(file.database.password);
        let credentials = match (file.database.username, password) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            _ => return Err(invalid("database.username", "and database.password must be given together")),
        };
        let database = DatabaseConfig {
            url,
            namespace: file.database.namespace.unwrap_or_else(|| "pvedeploy".into()),
            database: file.database.database.unwrap_or_else(|| "pvedeploy".into()),
            credentials,
        };

        let range = |field: &str, v: Option<[u32; 2]>, default: std::ops::RangeInclusive<u32>| match v {
            None => Ok(default),
            Some([lo, hi]) if lo >= 1 && lo <= hi => Ok(lo..=hi),
            Some(_) => Err(invalid(format!("limits.{field}"), "must be [min, max] with 1 <= min <= max")),
        };
        let d = Limits::default();
        let limits = Limits {
            cpu: range("cpu", file.limits.cpu, d.cpu)?,
            memory_mib: range("memory_mib", file.limits.memory_mib, d.memory_mib)?,
            disk_gb: range("disk_gb", file.limits.disk_gb, d.disk_gb)?,
            branch_pattern: match file.repos.branch_pattern.as_deref() {
                None => d.branch_pattern,
                Some(p) => crate::core::names::BranchPattern::parse(p).map_err(|rule| invalid("repos.branch_pattern", rule))?,
            },
        };

        let mut repos = RepoPolicy::default();
        if let Some(hosts) = file.repos.allowed_hosts {
            if hosts.is_empty() || hosts.iter().any(|h| h.is_empty() || h.chars().any(|c| c.is_whitespace() || c == '/')) {
                return Err(invalid("repos.allowed_hosts", "must be a non-empty list of host names (host or host:port)"));
            }
            // Hosts are matched exactly: a pattern would be a literal that never matches, and silently.
            if let Some(h) = hosts.iter().find(|h| h.contains(['*', '?', '[', ']'])) {
                return Err(invalid("repos.allowed_hosts", format!("{h:?}: wildcards are not supported; list each host (host or host:port)")));
            }
            repos.allowed_hosts = hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect();
        }
        if let Some(schemes) = file.repos.schemes {
            let parsed: Option<Vec<RepoScheme>> = schemes.iter().map(|s| RepoScheme::parse(s)).collect();
            match parsed {
                Some(p) if !p.is_empty() => repos.schemes = p,
                _ => return Err(invalid("repos.schemes", "must be a non-empty list of: https, http, ssh")),
            }
        }
        if let Some(nets) = file.repos.allow_private {
            repos.allow_private = nets
                .iter()
                .enumerate()
                .map(|(i, n)| crate::core::addresses::Cidr::parse(n).map_err(|rule| invalid(format!("repos.allow_private[{i}]"), rule)))
                .collect::<Result<_, _>>()?;
        }

        let mut tokens = Vec::new();
        for (i, t) in file.tokens.into_iter().enumerate() {
            let field = |f: &str| format!("tokens[{i}].{f}");
            if t.name.is_empty() {
                return Err(invalid(field("name"), "must not be empty"));
            }
            let sha256 = match (t.token, t.sha256) {
                (Some(tok), None) => {
                    if tok.expose().len() < 16 {
                        return Err(invalid(field("token"), "must be at least 16 characters"));
                    }
                    crate::auth::hash_token(tok.expose())
                }
                (None, Some(h)) => {
                    let bytes = hex::decode(&h).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
                    bytes.ok_or_else(|| invalid(field("sha256"), "must be 64 hexadecimal digits"))?
                }
                _ => return Err(invalid(field("token"), "exactly one of `token` or `sha256` must be given")),
            };
            let scopes: Option<Vec<Scope>> = t.scopes.iter().map(|s| Scope::parse(s)).collect();
            let scopes = scopes.filter(|s| !s.is_empty()).ok_or_else(|| invalid(field("scopes"), "must be a non-empty list of: read, deploy, admin"))?;
            // Two entries for one secret would leave its scopes to their order (the last won); two of one
            // name would make audit lines ambiguous.
            if let Some(same) = tokens.iter().position(|c: &ConfiguredToken| c.sha256 == sha256) {
                return Err(invalid(field("token"), format!("is the same secret as tokens[{same}]; give each token its own secret")));
            }
            if let Some(same) = tokens.iter().position(|c: &ConfiguredToken| c.name == t.name) {
                return Err(invalid(field("name"), format!("is already the name of tokens[{same}]; token names must be unique")));
            }
            tokens.push(ConfiguredToken { name: t.name, sha256, scopes });
        }
        let admin_token = env.get("PVEDEPLOY_ADMIN_TOKEN").map(|t| Secret::new(t.clone()));
        if let Some(t) = &admin_token {
            if t.expose().len() < 16 {
                return Err(invalid("PVEDEPLOY_ADMIN_TOKEN", "must be at least 16 characters"));
            }
        }
        let max_page_size = file.api.max_page_size.unwrap_or(100);
        if !(1..=1000).contains(&max_page_size) {
            return Err(invalid("api.max_page_size", "must be between 1 and 1000"));
        }
        let proxmox = proxmox_setting(file.proxmox, env)?;
        let export_dir = match env.get("PVEDEPLOY_EXPORT_DIR").map(PathBuf::from).or(file.export.dir) {
            None => data_dir.join("hcl-export"),
            Some(d) if d.as_os_str().is_empty() => return Err(invalid("export.dir", "must not be empty")),
            Some(d) if d.components().any(|c| c == std::path::Component::ParentDir) => {
                return Err(invalid("export.dir", "must not contain `..`; give the directory itself"))
            }
            Some(d) => d,
        };
        let github = github::parse(file.github, env)?;
        let discord = discord::parse(file.discord, env)?;
        let max_body_bytes = match file.api.max_body_bytes {
            None => 1 << 20,
            Some(n @ 1024..=104_857_600) => n as usize,
            Some(_) => return Err(invalid("api.max_body_bytes", "must be between 1024 and 104857600 (100 MiB)")),
        };
        let http = crate::server::Limits {
            header_read: std::time::Duration::from_secs(match file.api.header_timeout_secs {
                None => 10,
                Some(n @ 1..=300) => n,
                Some(_) => return Err(invalid("api.header_timeout_secs", "must be between 1 and 300")),
            }),
            per_client: match file.api.max_connections_per_client {
                None => 128,
                Some(n @ 1..=65_535) => n as usize,
                Some(_) => return Err(invalid("api.max_connections_per_client", "must be between 1 and 65535")),
            },
            ..crate::server::Limits::default()
        };
        Ok(Config { listen, data_dir, database, limits, repos, tokens, admin_token, max_page_size, max_body_bytes, http, proxmox, export_dir, github, discord, sources })
    }

    /// A configuration for tests and throwaway runs: defaults, the given data dir, port 0, no Proxmox.
    pub fn for_data_dir(data_dir: &Path) -> Config {
        let over = Overrides { data_dir: Some(data_dir.to_owned()), listen: Some("127.0.0.1:0".into()), ..Overrides::default() };
        let env = BTreeMap::from([("PVEDEPLOY_PROXMOX_MODE".to_string(), "none".to_string())]);
        Self::from_parts(FileConfig::default(), &over, &env, Vec::new()).expect("defaults are valid")
    }
}

fn proxmox_setting(file: ProxmoxFile, env: &BTreeMap<String, String>) -> Result<ProxmoxSetting, ConfigError> {
    let pick = |var: &str, v: Option<String>| env.get(var).cloned().or(v);
    let endpoint = pick("PVEDEPLOY_PROXMOX_ENDPOINT", file.endpoint);
    let mode = pick("PVEDEPLOY_PROXMOX_MODE", file.mode).unwrap_or_else(|| if endpoint.is_some() { "cluster".into() } else { "sandbox".into() });
    match mode.as_str() {
        "none" => Ok(ProxmoxSetting::None),
        "sandbox" => Ok(ProxmoxSetting::Sandbox),
        "cluster" => {
            let endpoint = endpoint.ok_or_else(|| invalid("proxmox.endpoint", "is required in cluster mode"))?;
            if !endpoint.starts_with("https://") || endpoint.chars().any(char::is_whitespace) {
                return Err(invalid("proxmox.endpoint", "must be an https:// URL such as https://pve1.example:8006"));
            }
            let token_id = pick("PVEDEPLOY_PROXMOX_TOKEN_ID", file.token_id).ok_or_else(|| invalid("proxmox.token_id", "is required in cluster mode"))?;
            let (user, name) = token_id.split_once('!').ok_or_else(|| invalid("proxmox.token_id", "must be user@realm!tokenname"))?;
            if !user.contains('@') || name.is_empty() {
                return Err(invalid("proxmox.token_id", "must be user@realm!tokenname"));
            }
            let token_secret = env
                .get("PVEDEPLOY_PROXMOX_TOKEN_SECRET")
                .map(|s| Secret::new(s.clone()))
                .or(file.token_secret)
                .ok_or_else(|| invalid("proxmox.token_secret", "is required in cluster mode (or PVEDEPLOY_PROXMOX_TOKEN_SECRET)"))?;
            let trust = match (pick("PVEDEPLOY_PROXMOX_FINGERPRINT", file.fingerprint), file.ca_file) {
                (Some(f), None) => {
                    let hex: String = f.chars().filter(|c| *c != ':').collect();
                    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err(invalid("proxmox.fingerprint", "must be a SHA-256 fingerprint: 32 hex bytes, optionally colon-separated"));
                    }
                    TrustSetting::Fingerprint(f)
                }
                (None, Some(p)) => TrustSetting::CaFile(p),
                _ => return Err(invalid("proxmox.fingerprint", "exactly one of fingerprint or ca_file must be given (certificates are always verified)")),
            };
            let vm_template = file.vm_template.ok_or_else(|| invalid("proxmox.vm_template", "is required in cluster mode (the VMID of a cloud-init VM template)"))?;
            if !(100..=999_999_999).contains(&vm_template) {
                return Err(invalid("proxmox.vm_template", "must be a VMID between 100 and 999999999"));
            }
            let vmid_range = match file.vmid_range {
                None => 10_000..=19_999,
                Some([a, b]) if (100..=999_999_999).contains(&a) && a <= b && b <= 999_999_999 => a..=b,
                Some(_) => return Err(invalid("proxmox.vmid_range", "must be [first, last] with 100 <= first <= last <= 999999999")),
            };
            // The agent creates and destroys guests in its range; the template it clones must never be one of them.
            if vmid_range.contains(&vm_template) {
                return Err(invalid(
                    "proxmox.vm_template",
                    format!("must lie outside proxmox.vmid_range ({}-{}): the agent creates and removes guests there", vmid_range.start(), vmid_range.end()),
                ));
            }
            let nodes = file
                .nodes
                .unwrap_or_default()
                .iter()
                .map(|n| crate::core::names::NodeName::parse(n).map_err(|e| invalid("proxmox.nodes", e.message)))
                .collect::<Result<Vec<_>, _>>()?;
            let address_pool = match file.address_pool {
                None if file.gateway.is_some() => return Err(invalid("proxmox.gateway", "needs proxmox.address_pool (DHCP brings its own gateway)")),
                None => None,
                Some(p) => Some(crate::core::addresses::AddressPool::parse(&p, file.gateway.as_deref()).map_err(|e| {
                    invalid(if e.starts_with("gateway") { "proxmox.gateway" } else { "proxmox.address_pool" }, e)
                })?),
            };
            let nameserver = file
                .nameserver
                .map(|n| n.parse::<std::net::IpAddr>().map_err(|_| invalid("proxmox.nameserver", "must be an IP address")))
                .transpose()?;
            if let Some(p) = &file.user_data_template {
                let text = std::fs::read_to_string(p).map_err(|e| invalid("proxmox.user_data_template", format!("cannot read {}: {e}", p.display())))?;
                crate::core::cloud_init::Template::parse(&text).map_err(|e| invalid("proxmox.user_data_template", e.to_string()))?;
            }
            let snippets_storage = file.snippets_storage.unwrap_or_else(|| "local".into());
            if snippets_storage.is_empty() || !snippets_storage.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                return Err(invalid("proxmox.snippets_storage", "must be a storage id (letters, digits, - _ .)"));
            }
            let snippets_dir = file.snippets_dir.unwrap_or_else(|| if snippets_storage == "local" { "/var/lib/vz/snippets".into() } else { format!("/mnt/pve/{snippets_storage}/snippets") });
            if !snippets_dir.starts_with('/') || snippets_dir.contains("..") {
                return Err(invalid("proxmox.snippets_dir", "must be an absolute path without '..'"));
            }
            let node_ssh = match file.node_ssh {
                None => None,
                Some(n) => {
                    for (node, key) in &n.host_keys {
                        crate::core::names::NodeName::parse(node).map_err(|e| invalid("proxmox.node_ssh.host_keys", e.message))?;
                        if russh::keys::PublicKey::from_openssh(key.trim()).is_err() {
                            return Err(invalid("proxmox.node_ssh.host_keys", format!("{node}: must be an OpenSSH public key such as 'ssh-ed25519 AAAA…'")));
                        }
                    }
                    Some(NodeSshSettings { user: n.user.unwrap_or_else(|| "root".into()), port: n.port.unwrap_or(22), host_keys: n.host_keys, addresses: n.addresses })
                }
            };
            let d = ClusterSettings::new(endpoint, token_id, token_secret, trust, vm_template);
            Ok(ProxmoxSetting::Cluster(ClusterSettings {
                lxc_template: file.lxc_template.unwrap_or(d.lxc_template.clone()),
                storage: file.storage.unwrap_or(d.storage.clone()),
                bridge: file.bridge.unwrap_or(d.bridge.clone()),
                vmid_range,
                full_clone: file.full_clone.unwrap_or(d.full_clone),
                nodes,
                max_guests_per_node: file.max_guests_per_node,
                address_timeout: std::time::Duration::from_secs(match file.address_timeout_secs {
                    None => 120,
                    Some(n @ 1..=3600) => n,
                    Some(_) => return Err(invalid("proxmox.address_timeout_secs", "must be between 1 and 3600")),
                }),
                poll_interval: std::time::Duration::from_millis(match file.poll_interval_ms {
                    None => 250,
                    Some(n @ 10..=10_000) => n,
                    Some(_) => return Err(invalid("proxmox.poll_interval_ms", "must be between 10 and 10000")),
                }),
                call_timeout: std::time::Duration::from_secs(match file.call_timeout_secs {
                    None => 30,
                    Some(n @ 1..=600) => n,
                    Some(_) => return Err(invalid("proxmox.call_timeout_secs", "must be between 1 and 600")),
                }),
                task_timeout: std::time::Duration::from_secs(match file.task_timeout_secs {
                    None => 300,
                    Some(n @ 1..=86_400) => n,
                    Some(_) => return Err(invalid("proxmox.task_timeout_secs", "must be between 1 and 86400")),
                }),
                step_timeout: std::time::Duration::from_secs(match file.step_timeout_secs {
                    None => 900,
                    Some(n @ 10..=86_400) => n,
                    Some(_) => return Err(invalid("proxmox.step_timeout_secs", "must be between 10 and 86400")),
                }),
                address_pool,
                nameserver,
                user_data_template: file.user_data_template,
                snippets_storage,
                snippets_dir,
                reconcile_interval: match file.reconcile_interval_secs {
                    None => d.reconcile_interval,
                    Some(0) => None,
                    Some(n @ 10..=86_400) => Some(std::time::Duration::from_secs(n)),
                    Some(_) => return Err(invalid("proxmox.reconcile_interval_secs", "must be 0 (only at start) or between 10 and 86400")),
                },
                remove_orphans: file.remove_orphans.unwrap_or(false),
                node_ssh,
                pool: match file.pool.as_deref() {
                    None => None,
                    Some(p) => Some(crate::core::names::PoolName::parse(p).map_err(|e| invalid("proxmox.pool", e.message))?),
                },
                agent_poll_interval: std::time::Duration::from_millis(match file.agent_poll_interval_ms {
                    None => 1000,
                    Some(n @ 100..=60_000) => n,
                    Some(_) => return Err(invalid("proxmox.agent_poll_interval_ms", "must be between 100 and 60000")),
                }),
                agent_calls_per_node: match file.agent_calls_per_node {
                    None => 2,
                    Some(n @ 1..=64) => n,
                    Some(_) => return Err(invalid("proxmox.agent_calls_per_node", "must be between 1 and 64")),
                },
                backups: file.backups.map(backup_settings).transpose()?,
                ..d
            }))
        }
        _ => Err(invalid("proxmox.mode", "must be one of: cluster, sandbox, none")),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    toml::from_str(&text).map_err(|e| ConfigError::Syntax { path: path.to_owned(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(toml_text).map_err(|e| ConfigError::Syntax { path: "t".into(), message: e.to_string() })?;
        Config::from_parts(file, &Overrides::default(), &BTreeMap::new(), vec![])
    }

    #[test]
    fn defaults_are_safe() {
        let c = parse("").unwrap();
        assert!(c.listen.ip().is_loopback());
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert!(c.database.url.starts_with("surrealkv://"));
    }

    #[test]
    fn a_weaker_sync_is_refused_unless_forced() {
        let e = parse("[database]\nurl = 'surrealkv://d/db?sync=1s'").unwrap_err().to_string();
        assert!(e.contains("database.url") && e.contains("allow_weaker_sync"), "{e}");
        assert!(parse("[database]\nurl = 'surrealkv://d/db?sync=never'\nallow_weaker_sync = true").is_ok());
        assert!(parse("[database]\nurl = 'surrealkv://d/db?sync=every'").is_ok());
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse("listen = 'nope'").unwrap_err().to_string();
        assert!(e.contains("`listen`"), "{e}");
        let e = parse("[limits]\ncpu = [4, 2]").unwrap_err().to_string();
        assert!(e.contains("limits.cpu"), "{e}");
        let e = parse("[[tokens]]\nname='x'\ntoken='short'\nscopes=['read']").unwrap_err().to_string();
        assert!(e.contains("tokens[0].token"), "{e}");
        let e = parse("bogus = 1").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        for bad in ["''", "'(unclosed'"] {
            let e = parse(&format!("[repos]\nbranch_pattern = {bad}")).unwrap_err().to_string();
            assert!(e.contains("repos.branch_pattern"), "{e}");
        }
        let c = parse("[repos]\nbranch_pattern = '[a-z]+'").unwrap();
        assert!(c.limits.branch_pattern.matches("main") && !c.limits.branch_pattern.matches("release/1"));
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let file: FileConfig = toml::from_str("listen = '127.0.0.1:1'").unwrap();
        let env = BTreeMap::from([("PVEDEPLOY_LISTEN".to_string(), "127.0.0.1:2".to_string())]);
        let c = Config::from_parts(file, &Overrides::default(), &env, vec![]).unwrap();
        assert_eq!(c.listen.port(), 2);
        let over = Overrides { listen: Some("127.0.0.1:3".into()), ..Overrides::default() };
        let c = Config::from_parts(FileConfig::default(), &over, &env, vec![]).unwrap();
        assert_eq!(c.listen.port(), 3);
    }

    #[test]
    fn proxmox_modes() {
        assert!(matches!(parse("").unwrap().proxmox, ProxmoxSetting::Sandbox));
        let c = parse("[proxmox]\nendpoint='https://pve:8006'\ntoken_id='a@pve!t'\ntoken_secret='s3cret-value'\nfingerprint='AB'").unwrap_err().to_string();
        assert!(c.contains("proxmox.fingerprint"), "{c}");
        let fp = vec!["AB"; 32].join(":");
        let c = parse(&format!("[proxmox]\nendpoint='https://pve:8006'\ntoken_id='a@pve!t'\ntoken_secret='s3cret-value'\nfingerprint='{fp}'\nvm_template=9000")).unwrap();
        assert!(matches!(c.proxmox, ProxmoxSetting::Cluster(_)));
        assert!(!format!("{c:?}").contains("s3cret-value"));
        let e = parse("[proxmox]\nendpoint='http://pve:8006'").unwrap_err().to_string();
        assert!(e.contains("proxmox.endpoint"), "{e}");
        let e = parse("[proxmox]\nmode='x'").unwrap_err().to_string();
        assert!(e.contains("proxmox.mode"), "{e}");
    }

    #[test]
    fn tokens_hosts_and_the_template_are_checked_against_each_other() {
        let t = |name: &str, secret: &str, scope: &str| format!("[[tokens]]\nname='{name}'\ntoken='{secret}'\nscopes=['{scope}']\n");
        let e = parse(&format!("{}{}", t("reader", "same-secret-0123456789", "read"), t("admin", "same-secret-0123456789", "admin"))).unwrap_err().to_string();
        assert!(e.contains("tokens[1].token") && e.contains("tokens[0]"), "one secret, two scopes: {e}");
        let e = parse(&format!("{}{}", t("ci", "first-secret-0123456789", "read"), t("ci", "other-secret-0123456789", "read"))).unwrap_err().to_string();
        assert!(e.contains("tokens[1].name") && e.contains("unique"), "{e}");
        let e = parse("[repos]\nallowed_hosts=['*']").unwrap_err().to_string();
        assert!(e.contains("repos.allowed_hosts") && e.contains("wildcards"), "{e}");
        let e = parse("[repos]\nallowed_hosts=['*.example.com']").unwrap_err().to_string();
        assert!(e.contains("repos.allowed_hosts"), "{e}");
        let fp = vec!["AB"; 32].join(":");
        let e = parse(&format!("[proxmox]\nendpoint='https://pve:8006'\ntoken_id='a@pve!t'\ntoken_secret='s3cret-value'\nfingerprint='{fp}'\nvm_template=10500\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("proxmox.vm_template") && e.contains("10000-19999"), "the template inside the agent's range: {e}");
    }

    #[test]
    fn cluster_extras_are_checked_by_field() {
        let fp = vec!["AB"; 32].join(":");
        let base = format!("[proxmox]\nendpoint='https://pve:8006'\ntoken_id='a@pve!t'\ntoken_secret='s3cret-value'\nfingerprint='{fp}'\nvm_template=9000\n");
        let ok = parse(&format!("{base}address_pool='10.0.0.10-10.0.0.20/24'\ngateway='10.0.0.1'\nnameserver='10.0.0.2'\n[proxmox.node_ssh]\nhost_keys={{pve1='ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb8VYNA0lN3i6eRNgwmEotTuPxHVOKXfBp5MqqnXwU9 root@pve1'}}\n")).unwrap();
        let ProxmoxSetting::Cluster(c) = ok.proxmox else { panic!() };
        assert_eq!(c.address_pool.unwrap().size(), 11);
        assert_eq!((c.call_timeout.as_secs(), c.task_timeout.as_secs(), c.step_timeout.as_secs()), (30, 300, 900), "the documented defaults");
        assert_eq!(c.node_ssh.unwrap().user, "root");
        for (extra, field) in [
            ("address_pool='10.0.0.20-10.0.0.10/24'", "proxmox.address_pool"),
            ("address_pool='10.0.0.10-10.0.0.20/24'\ngateway='10.9.0.1'", "proxmox.gateway"),
            ("gateway='10.0.0.1'", "proxmox.gateway"),
            ("nameserver='dns'", "proxmox.nameserver"),
            ("snippets_dir='relative/x'", "proxmox.snippets_dir"),
            ("reconcile_interval_secs=5", "proxmox.reconcile_interval_secs"),
            ("call_timeout_secs=0", "proxmox.call_timeout_secs"),
            ("task_timeout_secs=0", "proxmox.task_timeout_secs"),
            ("step_timeout_secs=5", "proxmox.step_timeout_secs"),
            ("user_data_template='/nonexistent/user-data.yaml'", "proxmox.user_data_template"),
            ("[proxmox.node_ssh]\nhost_keys={pve1='not a key'}", "proxmox.node_ssh.host_keys"),
        ] {
            let e = parse(&format!("{base}{extra}\n")).unwrap_err().to_string();
            assert!(e.contains(field), "{extra}: {e}");
        }
    }

    #[test]
    fn backups_are_off_unless_configured_and_checked_by_field() {
        let fp = vec!["AB"; 32].join(":");
        let base = format!("[proxmox]\nendpoint='https://pve:8006'\ntoken_id='a@pve!t'\ntoken_secret='s3cret-value'\nfingerprint='{fp}'\nvm_template=9000\n");
        let ProxmoxSetting::Cluster(c) = parse(&base).unwrap().proxmox else { panic!() };
        assert_eq!(c.backups, None);
        let ProxmoxSetting::Cluster(c) = parse(&format!("{base}[proxmox.backups]\nstorage='pbs-1'\nkeep_daily=7\nkeep_weekly=4\ncompress='none'\n")).unwrap().proxmox else { panic!() };
        let b = c.backups.unwrap();
        assert_eq!((b.storage.as_str(), b.retention.prune_backups().as_deref(), b.compress.as_str(), b.timeout.as_secs()), ("pbs-1", Some("keep-daily=7,keep-weekly=4"), "0", 3600));
        for (extra, field) in [
            ("keep_daily=7", "proxmox.backups.storage"),
            ("storage='a b'", "proxmox.backups.storage"),
            ("storage='local'\nkeep_daily=10001", "proxmox.backups.keep_daily"),
            ("storage='local'\ncompress='xz'", "proxmox.backups.compress"),
            ("storage='local'\ntimeout_secs=0", "proxmox.backups.timeout_secs"),
            ("storage='local'\nkeep_all=1", "keep_all"),
        ] {
            let e = parse(&format!("{base}[proxmox.backups]\n{extra}\n")).unwrap_err().to_string();
            assert!(e.contains(field), "{extra}: {e}");
        }
    }

    #[test]
    fn the_export_dir_defaults_under_the_data_dir_and_is_checked() {
        assert_eq!(parse("").unwrap().export_dir, PathBuf::from("./data/hcl-export"));
        assert_eq!(parse("[export]\ndir = '/srv/tf'").unwrap().export_dir, PathBuf::from("/srv/tf"));
        let e = parse("[export]\ndir = ''").unwrap_err().to_string();
        assert!(e.contains("export.dir"), "{e}");
        let e = parse("[export]\ndirectory = 'x'").unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        let env = BTreeMap::from([("PVEDEPLOY_EXPORT_DIR".to_string(), "/tmp/tf".to_string())]);
        let c = Config::from_parts(FileConfig::default(), &Overrides::default(), &env, vec![]).unwrap();
        assert_eq!(c.export_dir, PathBuf::from("/tmp/tf"));
    }

    #[test]
    fn tokens_are_hashed_and_never_printed() {
        let c = parse("[[tokens]]\nname='ci'\ntoken='0123456789abcdef-secret'\nscopes=['read','deploy']").unwrap();
        assert!(!format!("{c:?}").contains("0123456789abcdef-secret"));
        assert_eq!(c.tokens[0].scopes, vec![Scope::Read, Scope::Deploy]);
    }
}
