//! The built-in sandbox: when no Proxmox cluster is configured, `serve` starts the Proxmox VE simulator
//! in-process (real systemd-nspawn guests when the machine allows, API-only guests otherwise) as a freshly
//! installed PVE 9 cluster, and prepares it through the API exactly as docs/configuration.md tells an operator to.
//! The cluster persists in `<data_dir>/sandbox` (the simulator's `cluster.json` and the guests' disks): a restarted
//! `serve` finds its guests again, running ones started anew at the same addresses with the same host keys.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use pvedeploy_sim::{ApiOnlyBackend, GuestBackend, SimConfig, SimHandle, Simulator};

use crate::config::{BackupSettings, ClusterSettings, Secret, TrustSetting};

/// A running simulator and the credentials to talk to it like a real cluster.
pub struct Sandbox {
    handle: SimHandle,
    /// `https://127.0.0.1:PORT`
    pub endpoint: String,
    pub token_id: String,
    pub token_secret: Secret<String>,
    /// SHA-256 of its self-signed certificate, `AA:BB:…` (pinned like a real cluster's).
    pub fingerprint: String,
    /// What backs started guests.
    pub guests: String,
    /// The nodes' SFTP endpoints for snippets (with real guests on a machine that can run them).
    pub node_ssh: Option<crate::config::NodeSshSettings>,
}

impl Sandbox {
    /// Starts the simulator with its state under `<data_dir>/sandbox`. With real guests, each node also
    /// runs an SFTP endpoint (for cloud-init snippets) that accepts `agent_public_key`.
    pub async fn start(data_dir: &Path, agent_public_key: &str) -> anyhow::Result<Sandbox> {
        let state_dir = data_dir.join("sandbox");
        std::fs::create_dir_all(&state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
        // sshd and nspawn want absolute paths; the default data dir is relative (./data).
        let state_dir = state_dir.canonicalize().with_context(|| format!("resolving {}", state_dir.display()))?;
        let mut cfg = SimConfig::sandbox(state_dir.clone()).persistent();
        // A stock install (no snippets content, no templates): `prepare` does the rest through the API.
        cfg.cluster = pvedeploy_sim::ClusterSpec { name: cfg.cluster.name.clone(), ..pvedeploy_sim::ClusterSpec::stock(9) };
        let mut real = false;
        let backend: Arc<dyn GuestBackend> =
            match pvedeploy_sim::guest::NspawnBackend::detect(&state_dir, &pvedeploy_sim::guest::default_cache_dir()) {
                Ok(b) => {
                    let b = Arc::new(b);
                    // Build (first time: minutes) or unpack the guest base image now, not at the first start.
                    let prep = b.clone();
                    tokio::spawn(async move {
                        match prep.prepare().await {
                            Ok(p) => tracing::info!(base = %p.display(), "sandbox guest base image ready"),
                            Err(e) => tracing::error!(error = %e, "sandbox guest base image unavailable; starting guests will fail"),
                        }
                    });
                    real = true;
                    b
                }
                Err(why) => {
                    tracing::warn!(reason = %why, "sandbox guests are API-only (no real systems behind them)");
                    Arc::new(ApiOnlyBackend)
                }
            };
        cfg.backend = backend.clone();
        if real {
            match pvedeploy_sim::node_ssh::check_available() {
                Ok(()) => cfg = cfg.with_node_ssh(agent_public_key),
                Err(why) => tracing::warn!(reason = %why, "sandbox nodes run no SSH endpoint (snippet uploads unavailable)"),
            }
        }
        let token = cfg.tokens.first().cloned().context("the sandbox has a token")?;
        let handle = Simulator::start(cfg).await.context("starting the Proxmox VE simulator")?;
        if handle.restored() {
            tracing::info!(state = %state_dir.display(), "the sandbox cluster was restored; its running guests start again in the background");
        }
        if let Err(e) = prepare(&handle).await {
            handle.shutdown().await;
            return Err(e.context("preparing the sandbox cluster through its API"));
        }
        let mut host_keys = std::collections::BTreeMap::new();
        let mut addresses = std::collections::BTreeMap::new();
        for node in handle.node_names() {
            if let Some((addr, key)) = handle.node_ssh(&node) {
                addresses.insert(node.clone(), addr.ip().to_string());
                host_keys.insert(node, key);
            }
        }
        let node_ssh = (!host_keys.is_empty()).then(|| crate::config::NodeSshSettings { user: "root".into(), port: 22, host_keys, addresses });
        Ok(Sandbox {
            node_ssh,
            endpoint: format!("https://{}", handle.addr()),
            token_id: token.id.clone(),
            token_secret: Secret::new(token.secret.clone()),
            fingerprint: handle.fingerprint_sha256(),
            guests: backend.describe(),
            handle,
        })
    }

    /// The sandbox as a configured cluster (`cluster_settings`), with its nodes' SFTP endpoints.
    pub fn cluster(&self) -> ClusterSettings {
        cluster_settings(self.endpoint.clone(), self.token_id.clone(), self.token_secret.clone(), self.fingerprint.clone(), self.node_ssh.clone())
    }

    /// Stops every guest and the simulator.
    pub async fn stop(self) {
        self.handle.shutdown().await;
    }
}

/// A simulator prepared as `prepare` does, as a configured cluster: how to reach it (its token, its pinned
/// certificate), what `prepare` made on it (the VM template, the container template, snippets on `local`), where
/// guests and backups go, and the agent's defaults for the rest. The agent then treats it exactly as a cluster
/// from `[proxmox]`.
pub fn cluster_settings(endpoint: String, token_id: String, token_secret: Secret<String>, fingerprint: String, node_ssh: Option<crate::config::NodeSshSettings>) -> ClusterSettings {
    let mut c = ClusterSettings::new(endpoint, token_id, token_secret, TrustSetting::Fingerprint(fingerprint), VM_TEMPLATE);
    c.lxc_template = format!("{FILE_STORAGE}:vztmpl/{LXC_TEMPLATE}");
    c.storage = GUEST_STORAGE.into();
    // The sandbox is the agent's alone: every id Proxmox allows for guests.
    c.vmid_range = 100..=999_999;
    c.backups = Some(BackupSettings::to(FILE_STORAGE));
    c.snippets_storage = FILE_STORAGE.into();
    c.snippets_dir = "/var/lib/vz/snippets".into();
    c.node_ssh = node_ssh;
    c
}

/// The container template the sandbox downloads on every node, and the VM template's id.
const LXC_TEMPLATE: &str = "debian-12-standard_12.7-1_amd64.tar.zst";
const VM_TEMPLATE: u32 = 9000;
/// A stock install's storages (`ClusterSpec::stock`): `local` (a directory: templates, snippets, backups) and
/// `local-lvm` (LVM-thin: guest disks).
const FILE_STORAGE: &str = "local";
const GUEST_STORAGE: &str = "local-lvm";

/// What an operator does on a fresh cluster before the agent can deploy (docs/configuration.md): enable snippets
/// on `local` (`pvesm set local --content …,snippets`), download the container template on every node (`pveam
/// download local …`), and make the cloud-init VM template 9000 (`qm create` shaped as the PVE 9 GUI makes a UEFI
/// VM, with a cloud-init drive and the guest agent, then `qm template`). Every call goes through the API, with
/// the simulator's root token and its pinned certificate. A restored sandbox has done it all before (or part of
/// it, when stopped halfway): each step looks first and does only what is missing.
async fn prepare(sim: &SimHandle) -> anyhow::Result<()> {
    let api = Api::new(sim)?;
    api.call(reqwest::Method::PUT, &format!("/storage/{FILE_STORAGE}"), &[("content", "iso,vztmpl,backup,import,snippets")]).await?;
    for node in sim.node_names() {
        let have = api.call(reqwest::Method::GET, &format!("/nodes/{node}/storage/{FILE_STORAGE}/content?content=vztmpl"), &[]).await?;
        let volid = format!("{FILE_STORAGE}:vztmpl/{LXC_TEMPLATE}");
        if have.as_array().is_some_and(|v| v.iter().any(|c| c["volid"] == volid.as_str())) {
            continue;
        }
        let upid = api.call(reqwest::Method::POST, &format!("/nodes/{node}/aplinfo"), &[("storage", FILE_STORAGE), ("template", LXC_TEMPLATE)]).await?;
        api.task(&upid).await?;
    }
    let vms = api.call(reqwest::Method::GET, "/nodes/pve1/qemu", &[]).await?;
    let existing = vms.as_array().and_then(|v| v.iter().find(|g| g["vmid"].as_u64() == Some(u64::from(VM_TEMPLATE))).cloned());
    if let Some(vm) = existing {
        if vm["template"] != 1 {
            let upid = api.call(reqwest::Method::POST, &format!("/nodes/pve1/qemu/{VM_TEMPLATE}/template"), &[]).await?;
            if upid.is_string() {
                api.task(&upid).await?;
            }
        }
        return Ok(());
    }
    let vmid = VM_TEMPLATE.to_string();
    let disk = |rest: &str| format!("{GUEST_STORAGE}:{rest}");
    let (efidisk, boot_disk, data_disk, cloudinit) = (disk("1,efitype=4m,pre-enrolled-keys=1"), disk("4"), disk("2"), disk("cloudinit"));
    let template = [
        ("vmid", vmid.as_str()),
        ("name", "debian12-cloud"),
        ("ostype", "l26"),
        ("bios", "ovmf"),
        ("machine", "q35"),
        ("efidisk0", efidisk.as_str()),
        ("cpu", "x86-64-v2-AES"),
        ("cores", "2"),
        ("memory", "2048"),
        ("scsihw", "virtio-scsi-pci"),
        ("scsi0", boot_disk.as_str()),
        ("scsi1", data_disk.as_str()),
        ("ide2", cloudinit.as_str()),
        ("boot", "order=scsi0"),
        ("serial0", "socket"),
        ("vga", "serial0"),
        ("agent", "1"),
        ("net0", "virtio,bridge=vmbr0"),
    ];
    let upid = api.call(reqwest::Method::POST, "/nodes/pve1/qemu", &template).await?;
    api.task(&upid).await?;
    let upid = api.call(reqwest::Method::POST, &format!("/nodes/pve1/qemu/{VM_TEMPLATE}/template"), &[]).await?;
    if upid.is_string() {
        api.task(&upid).await?;
    }
    Ok(())
}

/// The simulator's API as the operator uses it.
struct Api {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl Api {
    fn new(sim: &SimHandle) -> anyhow::Result<Api> {
        let cert = reqwest::Certificate::from_pem(sim.cert_pem().as_bytes()).context("the simulator's certificate")?;
        let http = reqwest::Client::builder().add_root_certificate(cert).timeout(std::time::Duration::from_secs(30)).build().context("an HTTP client")?;
        let (id, secret) = sim.admin_token();
        Ok(Api { http, base: format!("https://localhost:{}/api2/json", sim.addr().port()), auth: format!("PVEAPIToken={id}={secret}") })
    }

    /// One call; its `data`, or the status and PVE's message.
    async fn call(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> anyhow::Result<serde_json::Value> {
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.base)).header("Authorization", &self.auth);
        if !form.is_empty() {
            req = req.form(form);
        }
        let resp = req.send().await.with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        anyhow::ensure!(status.is_success(), "{method} {path}: {status} {body}");
        Ok(body["data"].clone())
    }

    /// Waits for a task to end OK.
    async fn task(&self, upid: &serde_json::Value) -> anyhow::Result<()> {
        let upid = upid.as_str().context("a task id")?;
        let node = upid.split(':').nth(1).context("the task's node")?;
        let path = format!("/nodes/{node}/tasks/{upid}/status");
        for _ in 0..600 {
            let st = self.call(reqwest::Method::GET, &path, &[]).await?;
            if st["status"] == "stopped" {
                anyhow::ensure!(st["exitstatus"] == "OK", "task {upid} ended {}", st["exitstatus"]);
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        anyhow::bail!("task {upid} did not end within 30 s")
    }
}
