//! Wiring: opens the store, prepares tokens and the engine, binds the listener, serves until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::api::ApiState;
use crate::auth::{generate_token, hash_token, Scope, TokenEntry, TokenRegistry};
use crate::config::{Config, ProxmoxSetting, TrustSetting};
use crate::engine::provision::{ProvisionSettings, Provisioner};
use crate::pve::{PveClient, PveConfig, TlsTrust};
use crate::engine::export::Exports;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::store::Store;

pub struct Application {
    #[cfg(feature = "sandbox")]
    sandbox: Option<crate::sandbox::Sandbox>,
    addr: SocketAddr,
    acceptor: tokio::net::TcpListener,
    /// The listener's limits (`[api]`).
    http: crate::server::Limits,
    /// The doors that answer HTTP (the API's state holds the engine).
    doors: crate::server::routes::Doors,
    /// Commit statuses and GitHub Deployments, when a GitHub token is configured.
    github: Option<crate::github::Reporter>,
    /// A token generated on first start (shown once); `None` when one was configured or already existed.
    pub generated_admin_token: Option<String>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        Self::build_with_clock(config, Arc::new(crate::engine::schedules::SystemClock)).await
    }

    /// As `build`, with the clock the scheduler reads (tests move a `ManualClock` by hand).
    pub async fn build_with_clock(config: Config, clock: Arc<dyn crate::engine::schedules::Clock>) -> anyhow::Result<Application> {
        let started = Instant::now();
        let store = Store::open(&config.database).await.with_context(|| format!("opening the database at {}", redact_url(&config.database.url)))?;
        let (tokens, generated_admin_token) = prepare_tokens(&store, &config).await?;
        let acceptor = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let addr = acceptor.local_addr().context("the listener has no socket address")?;
        if !addr.ip().is_loopback() {
            // Tokens travel in plain HTTP here; beyond this machine they need TLS in front.
            tracing::warn!(listen = %addr, "listening beyond loopback without TLS: bearer tokens and webhook bodies cross the network in clear; put a TLS reverse proxy in front (docs/operations.md, \"TLS in front\")");
        }
        #[cfg(feature = "sandbox")]
        let mut sandbox = None;
        let deploy_key = || crate::keys::load_or_create_deploy_key(&config.data_dir.join("keys")).context("the agent's deploy key");
        let (proxmox, provisioner) = match &config.proxmox {
            ProxmoxSetting::None => (None, None),
            ProxmoxSetting::Cluster(c) => {
                let client = refuse_if_read_only(cluster_client(c)?, &store);
                let prov = cluster_provisioner(c, client, &deploy_key()?).await?;
                (Some(format!("cluster {}", c.endpoint)), Some(prov))
            }
            #[cfg(feature = "sandbox")]
            ProxmoxSetting::Sandbox => {
                let key = deploy_key()?;
                let s = crate::sandbox::Sandbox::start(&config.data_dir, &key.public_openssh).await?;
                tracing::info!(endpoint = %s.endpoint, fingerprint = %s.fingerprint, guests = %s.guests, "started the built-in Proxmox VE sandbox");
                let desc = format!("sandbox {}", s.endpoint);
                // The sandbox describes itself as a configured cluster, and is reached as one.
                let c = s.cluster();
                let client = refuse_if_read_only(cluster_client(&c)?, &store);
                let prov = cluster_provisioner(&c, client, &key).await?;
                sandbox = Some(s);
                (Some(desc), Some(prov))
            }
            #[cfg(not(feature = "sandbox"))]
            ProxmoxSetting::Sandbox => anyhow::bail!("this build has no sandbox (built without the `sandbox` feature): configure [proxmox] or set mode = \"none\""),
        };
        let agent_id = agent_id(&config.data_dir).context("the agent id")?;
        let deployer = match &provisioner {
            Some(p) => {
                let key = crate::ssh::load_private_key(deploy_key()?.private_openssh).await.context("the agent's deploy key")?;
                let settings = crate::engine::deploy::DeploySettings { deploy_user: p.settings.deploy_user.clone(), ..Default::default() };
                Some(crate::engine::deploy::Deployer::new(crate::ssh::Ssh::new(crate::ssh::SshSettings::default()), key, settings))
            }
            None => None,
        };
        let secrets_env = std::env::var("PVEDEPLOY_SECRETS_KEY").ok().map(crate::config::Secret::new);
        let secrets = crate::secrets::SecretBox::load_or_create(&config.data_dir.join("keys"), secrets_env.as_ref()).context("the secrets key")?;
        let engine = Engine::new(store, config.limits.clone(), config.repos.clone(), provisioner, agent_id);
        engine.set_secrets(secrets);
        if let Some(d) = deployer {
            engine.set_deployer(d);
        }
        let resumed = engine.resume_unfinished().await?;
        if resumed > 0 {
            tracing::info!(resumed, "resuming unfinished work");
        }
        engine.spawn_reconciler();
        let exports = Exports::new(engine.clone(), config.export_dir.clone(), config.data_dir.clone());
        let webhooks = crate::webhooks::WebhookDoor::new(engine.clone(), &config.github);
        if webhooks.enabled() {
            tracing::info!(path = crate::webhooks::PATH, "GitHub webhooks enabled");
        }
        let unrouted = webhooks.resume().await?;
        if unrouted > 0 {
            tracing::info!(unrouted, "routing webhook pushes left unrouted at the last stop");
        }
        let schedules = crate::engine::schedules::Scheduler::new(engine.clone(), Some(exports.clone()), clock);
        let discord = crate::discord::DiscordDoor::new(engine.clone(), schedules.clone(), &config.discord);
        let github = config.github.api.as_ref().map(|api| {
            tracing::info!(api = %api.api_base, host = %api.web_host, "GitHub commit statuses and deployments enabled");
            crate::github::Reporter::new(engine.clone(), api)
        });
        let api = ApiState { engine, exports, tokens, metrics: Arc::new(Metrics::default()), max_page_size: config.max_page_size, max_body_bytes: config.max_body_bytes, started, proxmox, schedules };
        let doors = crate::server::routes::Doors { api, webhooks, discord };
        Ok(Application {
            #[cfg(feature = "sandbox")]
            sandbox,
            addr,
            acceptor,
            http: config.http,
            doors,
            github,
            generated_admin_token,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Closes without serving (releases the listener and the database).
    pub async fn close(self) {
        let store = self.doors.api.engine.store().clone();
        #[cfg(feature = "sandbox")]
        if let Some(s) = self.sandbox {
            s.stop().await;
        }
        drop(self.doors);
        store.close(Duration::from_secs(10)).await;
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
    /// (up to 10 s), waits for background work to reach a persisted point, and closes the database.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let engine = self.doors.api.engine.clone();
        // The cluster is checked in the background and the checklist logged; the API serves meanwhile.
        engine.spawn_start_check();
        // Terraform exports follow every change from now on (after a sweep for changes made while we were down).
        let keeper = self.doors.api.exports.spawn_keeper();
        let webhooks = self.doors.webhooks.clone();
        // Schedules: a pass at once (runs missed while down are caught up or skipped), then at every due time.
        let scheduler = self.doors.api.schedules.spawn();
        // The bot, command registration and notifications start with the server (and stop before the engine).
        let discord = self.doors.discord.clone();
        discord.start();
        // Deploys are reported to GitHub from now on (the reporter only follows the bus).
        let github = self.github.clone();
        if let Some(g) = &github {
            g.spawn();
        }
        // Free heap memory goes back to the system once a burst of requests is over.
        crate::memory::spawn_trimmer();
        let routes = crate::server::routes::all(self.doors);
        crate::server::serve(self.acceptor, routes, self.http, shutdown, Duration::from_secs(10)).await?;
        webhooks.shutdown(Duration::from_secs(10)).await;
        drop(webhooks);
        discord.shutdown(Duration::from_secs(10)).await;
        drop(discord);
        scheduler.stop().await;
        engine.shutdown(Duration::from_secs(20)).await;
        if let Some(g) = github {
            g.shutdown(Duration::from_secs(5)).await;
        }
        keeper.stop().await;
        #[cfg(feature = "sandbox")]
        if let Some(s) = self.sandbox {
            s.stop().await;
            tracing::info!("sandbox stopped");
        }
        let store = engine.store().clone();
        drop(engine);
        if store.close(Duration::from_secs(10)).await {
            tracing::info!("stopped; database closed");
        } else {
            tracing::warn!("stopped, but the database did not close within 10 s");
        }
        Ok(())
    }
}

/// The configured cluster's provisioner: its settings from `[proxmox]` and SFTP to the nodes when configured.
async fn cluster_provisioner(c: &crate::config::ClusterSettings, client: PveClient, key: &crate::keys::KeyPair) -> anyhow::Result<Provisioner> {
    let user_data = match &c.user_data_template {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            crate::core::cloud_init::Template::parse(&text).with_context(|| format!("the user-data template {}", p.display()))?
        }
        None => crate::core::cloud_init::Template::default_template(),
    };
    let settings = ProvisionSettings::from_config(c, key.public_openssh.clone(), user_data).map_err(|e| anyhow::anyhow!(e.message))?;
    let mut prov = Provisioner::new(client, settings);
    prov.node_files = match &c.node_ssh {
        Some(n) => Some(node_files(n, &c.snippets_storage, &c.snippets_dir, key).await?),
        None => None,
    };
    Ok(prov)
}

/// The configured cluster's API client: its endpoint, token, pinned trust and call timeout.
fn cluster_client(c: &crate::config::ClusterSettings) -> anyhow::Result<PveClient> {
    let trust = match &c.trust {
        TrustSetting::Fingerprint(f) => TlsTrust::parse_fingerprint(f)?,
        TrustSetting::CaFile(p) => TlsTrust::CaBundlePem(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
    };
    let mut pve = PveConfig::new(&c.endpoint, &c.token_id, c.token_secret.clone(), trust);
    pve.timeout = c.call_timeout;
    Ok(PveClient::new(pve)?)
}

/// A read-only agent's Proxmox client sends no changing call at all, whatever path asks for one.
fn refuse_if_read_only(client: PveClient, store: &Store) -> PveClient {
    match store.untrusted() {
        Some(why) => client.with_changes_refused(why),
        None => client,
    }
}

/// Loads the accepted tokens: configured ones, stored ones, `PVEDEPLOY_ADMIN_TOKEN`, or a generated admin token on first start.
async fn prepare_tokens(store: &Store, config: &Config) -> anyhow::Result<(TokenRegistry, Option<String>)> {
    let mut entries = store.tokens().await?;
    let mut generated = None;
    if let Some(admin) = &config.admin_token {
        let h = hash_token(admin.expose());
        if !entries.iter().any(|e| e.sha256 == h) {
            store.insert_token("admin", &h, &[Scope::Admin]).await?;
            entries.push(TokenEntry { name: "admin".into(), sha256: h, scopes: vec![Scope::Admin] });
            tracing::info!("stored the admin token given in PVEDEPLOY_ADMIN_TOKEN (hash only)");
        }
    } else if entries.is_empty() && config.tokens.is_empty() {
        let t = generate_token();
        let h = hash_token(&t);
        store.insert_token("admin", &h, &[Scope::Admin]).await?;
        entries.push(TokenEntry { name: "admin".into(), sha256: h, scopes: vec![Scope::Admin] });
        generated = Some(t);
    }
    entries.extend(config.tokens.iter().map(|t| TokenEntry { name: t.name.clone(), sha256: t.sha256, scopes: t.scopes.clone() }));
    Ok((TokenRegistry::new(entries), generated))
}

/// This agent's stable identity (`<data_dir>/agent-id`, created once): leases it held before a crash are its own again.
fn agent_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("agent-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        _ => {
            std::fs::create_dir_all(data_dir)?;
            let id = format!("agent-{}", uuid::Uuid::new_v4());
            std::fs::write(&path, &id)?;
            Ok(id)
        }
    }
}

/// A database URL without any password, for logs.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://[redacted]@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// SFTP access to the nodes' snippet directory, with each node's host key pinned.
async fn node_files(n: &crate::config::NodeSshSettings, storage: &str, dir: &str, key: &crate::keys::KeyPair) -> anyhow::Result<crate::engine::provision::snippets::NodeFiles> {
    let mut host_keys = std::collections::BTreeMap::new();
    for (node, k) in &n.host_keys {
        host_keys.insert(node.clone(), crate::ssh::parse_public_key(k).with_context(|| format!("the SSH host key of node {node}"))?);
    }
    Ok(crate::engine::provision::snippets::NodeFiles {
        ssh: crate::ssh::Ssh::new(crate::ssh::SshSettings { connect_timeout: Duration::from_secs(15), command_timeout: Duration::from_secs(60), ..Default::default() }),
        key: crate::ssh::load_private_key(key.private_openssh.clone()).await.context("the agent's deploy key")?,
        user: n.user.clone(),
        port: n.port,
        host_keys,
        addresses: n.addresses.clone(),
        storage: storage.to_string(),
        dir: dir.to_string(),
        logins: Default::default(),
    })
}

/// What `pvedeploy check` found: the report, or why there was no cluster to check.
pub enum Checked {
    Report(crate::core::check::Report),
    NoCluster(&'static str),
}

/// `pvedeploy check`: checks the configured cluster from this machine, as `serve` would at start, under
/// `deadline`. Opens no store (the agent may be running); sends Proxmox only reads (the client refuses
/// anything else) and, with node SSH configured, writes and removes a test file in each node's snippets
/// directory.
pub async fn check(config: Config, deadline: Duration) -> anyhow::Result<Checked> {
    let c = match &config.proxmox {
        ProxmoxSetting::Cluster(c) => c,
        ProxmoxSetting::Sandbox => return Ok(Checked::NoCluster("no [proxmox] cluster is configured: the built-in sandbox is prepared by `serve` itself and checked at its start (GET /api/v1/ready shows the checklist)")),
        ProxmoxSetting::None => return Ok(Checked::NoCluster("[proxmox] mode = \"none\": there is no cluster to check")),
    };
    let client = cluster_client(c)?.with_changes_refused("pvedeploy check only reads the cluster");
    let key = crate::keys::load_or_create_deploy_key(&config.data_dir.join("keys")).context("the agent's deploy key")?;
    let prov = cluster_provisioner(c, client, &key).await?;
    Ok(Checked::Report(crate::engine::check::run(&prov, deadline).await))
}

/// What `pvedeploy recover` found, and how many records it wrote (`None` without `--confirm`).
pub struct Recovered {
    pub plan: crate::engine::recover::RecoverPlan,
    pub recorded: Option<usize>,
    /// Why the store was untrusted when recover started, if it was.
    pub was_untrusted: Option<String>,
}

/// `pvedeploy recover`: compares the configured cluster's marked guests with the store (GETs only:
/// the client refuses every other call) and, with `confirm`, records what the store lost and marks it
/// trusted again. Needs the agent stopped (the embedded store is this process's alone).
pub async fn recover(config: Config, confirm: bool) -> anyhow::Result<Recovered> {
    let ProxmoxSetting::Cluster(c) = &config.proxmox else {
        anyhow::bail!("recover reads the guests of a configured Proxmox cluster ([proxmox] endpoint); the sandbox and mode = \"none\" have none to read");
    };
    let store = Store::open(&config.database).await.with_context(|| format!("opening the database at {} (is the agent still running?)", redact_url(&config.database.url)))?;
    let was_untrusted = store.untrusted().map(String::from);
    let client = cluster_client(c)?.with_changes_refused("pvedeploy recover only reads the cluster");
    let key = crate::keys::load_or_create_deploy_key(&config.data_dir.join("keys")).context("the agent's deploy key")?;
    // Recover only reads: VMs' user-data is never rendered.
    let settings = ProvisionSettings::from_config(c, key.public_openssh, crate::core::cloud_init::Template::default_template()).map_err(|e| anyhow::anyhow!(e.message))?;
    let prov = Provisioner::new(client, settings);
    let engine = Engine::new(store.clone(), config.limits.clone(), config.repos.clone(), Some(prov), agent_id(&config.data_dir)?);
    let plan = engine.recover_plan().await?;
    let recorded = if confirm { Some(engine.recover_apply(&plan).await?) } else { None };
    drop(engine);
    if !store.close(Duration::from_secs(10)).await {
        tracing::warn!("the database did not close within 10 s");
    }
    Ok(Recovered { plan, recorded, was_untrusted })
}
