//! The built-in sandbox: when no Proxmox cluster is configured, `serve` starts the Proxmox VE simulator
//! in-process (real systemd-nspawn guests when the machine allows, API-only guests otherwise).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use pvedeploy_sim::{ApiOnlyBackend, GuestBackend, SimConfig, SimHandle, Simulator};

use crate::config::Secret;

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
        let mut cfg = SimConfig::sandbox(state_dir.clone());
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

    /// Stops every guest and the simulator.
    pub async fn stop(self) {
        self.handle.shutdown().await;
    }
}
