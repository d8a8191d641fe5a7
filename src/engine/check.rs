//! Gathers the facts `core::check` judges: read-only calls to Proxmox VE (and an SFTP test write per node
//! when node SSH is configured), every one bounded by one deadline, so the check finishes in time even when
//! Proxmox hangs (what it could not read is "unchecked", never a guess). Runs for `pvedeploy check`, at
//! `serve` start (logged as one checklist) and behind `/ready`; deployments a problem makes certain to fail
//! are refused at request time.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};

use super::provision::Provisioner;
use super::Engine;
use crate::core::check::{self, privileges, Facts, GuestFacts, Plan, Read, Report, StorageFacts, TemplateFacts};
use crate::core::deployment::GuestType;
use crate::core::names::{NodeName, VmId};
use crate::core::validation::{FieldError, ValidationErrors};
use crate::pve::{PveClient, PveError, ResourceKind, ResourceType, RetryPolicy};

/// How long a whole check may take (the command line's default; `--timeout` changes it).
pub const CHECK_DEADLINE: Duration = Duration::from_secs(20);
/// At most this many nodes are read (each read concurrently).
const MAX_NODES: usize = 32;
/// At most this many guests' configs are read for their static addresses, this many at once.
const MAX_GUEST_READS: usize = 200;
const GUEST_READS_AT_ONCE: usize = 8;
/// A check result older than this is read again (in the background) when `/ready` asks.
const REFRESH_AFTER: Duration = Duration::from_secs(300);

/// The last check and whether one is running.
#[derive(Default)]
pub struct Checks {
    last: std::sync::Mutex<Option<(Instant, Report)>>,
    one: tokio::sync::Mutex<()>,
}

/// What the check compares the cluster with, from the provisioner's settings.
pub fn plan(prov: &Provisioner) -> Plan {
    let s = &prov.settings;
    Plan {
        token_id: prov.client.token_id().to_string(),
        vm_template: s.vm_template.get(),
        lxc_template: s.lxc_template.clone(),
        storage: s.storage.clone(),
        bridge: s.bridge.clone(),
        vmid_first: *s.vmid_range.start(),
        vmid_last: *s.vmid_range.end(),
        full_clone: s.full_clone,
        nodes: s.placement.allow.iter().map(|n| n.as_str().to_string()).collect(),
        address_pool: s.address_pool.clone(),
        node_ssh: prov.node_files.as_ref().map(|n| (n.storage.clone(), n.dir.clone())),
        // With `[proxmox] pool` the guests' privileges are checked on `/pool/<name>` instead of `/vms/<first id>`.
        pool: s.pool.as_ref().map(|p| p.to_string()),
        backup_storage: s.backups.as_ref().map(|b| b.storage.clone()),
    }
}

/// One read under the check's deadline: a 403 becomes `Denied` (the privileges item names its fix), anything
/// else that is not an answer becomes `Failed` with the reason.
async fn read<T>(started: Instant, deadline: Duration, fut: impl Future<Output = Result<T, PveError>>) -> Read<T> {
    let left = deadline.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, fut).await {
        Ok(Ok(v)) => Read::Got(v),
        Ok(Err(PveError::Forbidden { path, privilege })) => Read::Denied { path, privilege },
        Ok(Err(e)) => Read::Failed(e.to_string()),
        Err(_) => Read::Failed(format!("no answer from Proxmox VE within the check's {} s", deadline.as_secs())),
    }
}

/// Reads every fact, all under `deadline`.
pub async fn gather(prov: &Provisioner, plan: &Plan, deadline: Duration) -> Facts {
    let started = Instant::now();
    // One try per call: the deadline, not the retry policy, bounds the check.
    let client = prov.client.clone().with_retry(RetryPolicy::NONE);
    let c = &client;
    let (user, token) = plan.token_id.split_once('!').unwrap_or((plan.token_id.as_str(), ""));
    let (version, roles, privsep, nodes, resources) = tokio::join!(
        read(started, deadline, async { c.version().await.map(|v| v.version) }),
        read(started, deadline, c.roles()),
        read(started, deadline, c.token_privsep(user, token)),
        read(started, deadline, async { c.nodes().await.map(|ns| ns.into_iter().take(MAX_NODES).map(|n| (n.node.as_str().to_string(), n.online)).collect::<Vec<_>>()) }),
        read(started, deadline, c.cluster_resources(Some(ResourceKind::Vm))),
    );
    let template = match &resources {
        Read::Got(list) => match list.iter().find(|r| r.vmid.map(VmId::get) == Some(plan.vm_template) && r.kind == ResourceType::Qemu) {
            Some(r) => match r.node.clone() {
                Some(node) => read(started, deadline, template_facts(c, node, plan.vm_template)).await.map_got(Some),
                None => Read::Failed(format!("guest {} has no node in /cluster/resources", plan.vm_template)),
            },
            None => Read::Got(None),
        },
        other => other.as_ref().map_got(|_| None),
    };
    let mut facts = Facts {
        version,
        privsep: match privsep {
            Read::Got(p) => Some(p),
            _ => None,
        },
        roles,
        nodes,
        template,
        permissions: BTreeMap::new(),
        storages: BTreeMap::new(),
        lxc_template: BTreeMap::new(),
        bridges: BTreeMap::new(),
        node_ssh: None,
        guests: Read::Failed(String::new()),
    };
    let targets: Vec<String> = check::target_nodes(plan, &facts).into_iter().take(MAX_NODES).collect();
    let template_storages = match &facts.template {
        Read::Got(Some(t)) => t.disk_storages.clone(),
        _ => vec![],
    };
    let needs = privileges::needs(check::major(&facts), plan, &targets, &template_storages);
    let perms = futures_util::future::join_all(needs.iter().map(|n| async move { (n.path.clone(), read(started, deadline, c.permissions_on(&n.path)).await) }));
    let per_node = futures_util::future::join_all(targets.iter().map(|n| node_facts(prov, c, plan, n.clone(), started, deadline)));
    let guests = guest_facts(c, plan, resources, started, deadline);
    let (perms, per_node, guests) = tokio::join!(perms, per_node, guests);
    facts.permissions = perms.into_iter().collect();
    let mut ssh = BTreeMap::new();
    for (n, storages, lxc, bridges, probe) in per_node {
        facts.storages.insert(n.clone(), storages);
        facts.lxc_template.insert(n.clone(), lxc);
        facts.bridges.insert(n.clone(), bridges);
        if let Some(p) = probe {
            ssh.insert(n, p);
        }
    }
    facts.node_ssh = prov.node_files.as_ref().map(|_| ssh);
    facts.guests = guests;
    facts
}

trait MapGot<T> {
    fn map_got<U>(self, f: impl FnOnce(T) -> U) -> Read<U>;
}

impl<T> MapGot<T> for Read<T> {
    fn map_got<U>(self, f: impl FnOnce(T) -> U) -> Read<U> {
        match self {
            Read::Got(t) => Read::Got(f(t)),
            Read::Denied { path, privilege } => Read::Denied { path, privilege },
            Read::Failed(why) => Read::Failed(why),
        }
    }
}

async fn template_facts(c: &PveClient, node: NodeName, vmid: u32) -> Result<TemplateFacts, PveError> {
    let id = VmId::new(vmid.into()).map_err(|e| PveError::Config(e.message))?;
    let cfg = c.qemu_config(&node, id).await?;
    let disk_key = |k: &str| ["ide", "sata", "scsi", "virtio", "efidisk", "tpmstate"].iter().any(|p| k.strip_prefix(p).is_some_and(|n| n.chars().all(|c| c.is_ascii_digit())));
    let mut cloud_init = false;
    let mut disk_storages = BTreeSet::new();
    for (_, v) in cfg.raw.iter().filter(|(k, _)| disk_key(k)) {
        let volume = v.split(',').next().unwrap_or_default();
        if volume.contains("cloudinit") {
            cloud_init = true;
        } else if !v.contains("media=cdrom") && volume != "none" {
            if let Some((storage, _)) = volume.split_once(':') {
                disk_storages.insert(storage.to_string());
            }
        }
    }
    let agent = cfg.raw.get("agent").is_some_and(|a| a.split(',').any(|p| p == "1" || p == "enabled=1"));
    Ok(TemplateFacts {
        node: node.as_str().to_string(),
        is_template: cfg.raw.get("template").is_some_and(|t| t == "1"),
        cloud_init,
        agent,
        disk_storages: disk_storages.into_iter().collect(),
    })
}

type NodeFacts = (String, Read<Vec<StorageFacts>>, Read<bool>, Read<Vec<String>>, Option<Result<(), String>>);

async fn node_facts(prov: &Provisioner, c: &PveClient, plan: &Plan, node: String, started: Instant, deadline: Duration) -> NodeFacts {
    let Ok(name) = NodeName::parse(&node) else {
        let why = format!("'{node}' is not a node name");
        return (node.clone(), Read::Failed(why.clone()), Read::Failed(why.clone()), Read::Failed(why), None);
    };
    let (storage, _) = plan.lxc_template.split_once(':').unwrap_or(("local", ""));
    let (storages, lxc, bridges, probe) = tokio::join!(
        read(started, deadline, async {
            c.storages(&name).await.map(|l| l.into_iter().map(|s| StorageFacts { id: s.storage, kind: s.kind, content: s.content, shared: s.shared, enabled: s.enabled, active: s.active }).collect::<Vec<_>>())
        }),
        read(started, deadline, async { c.storage_content(&name, storage, Some("vztmpl")).await.map(|v| v.iter().any(|v| v.volid == plan.lxc_template)) }),
        read(started, deadline, c.bridges(&name)),
        async {
            let files = prov.node_files.as_ref()?;
            let left = deadline.saturating_sub(started.elapsed());
            Some(match tokio::time::timeout(left, files.probe(c, &name)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no SFTP answer within the check's {} s", deadline.as_secs())),
            })
        },
    );
    (node, storages, lxc, bridges, probe)
}

/// The cluster's guests (ours by their `pvedeploy-<id>` tag) and, with an address pool, their static addresses.
async fn guest_facts(c: &PveClient, plan: &Plan, resources: Read<Vec<crate::pve::ClusterResource>>, started: Instant, deadline: Duration) -> Read<Vec<GuestFacts>> {
    let list = match resources {
        Read::Got(l) => l,
        other => return other.map_got(|_| vec![]),
    };
    let ours = |tags: &[String]| tags.iter().any(|t| t.starts_with(crate::core::ownership::TAG) && t.len() > crate::core::ownership::TAG.len());
    let mut guests: Vec<GuestFacts> = list
        .iter()
        .filter(|r| matches!(r.kind, ResourceType::Qemu | ResourceType::Lxc))
        .filter_map(|r| {
            Some(GuestFacts { vmid: r.vmid?.get(), node: r.node.as_ref()?.as_str().to_string(), name: r.name.clone(), ours: ours(&r.tags), template: r.template, addresses: vec![] })
        })
        .collect();
    if plan.address_pool.is_some() {
        let kinds: BTreeMap<u32, ResourceType> = list.iter().filter_map(|r| Some((r.vmid?.get(), r.kind.clone()))).collect();
        let work: Vec<(u32, String, Option<ResourceType>)> =
            guests.iter().filter(|g| !g.ours && !g.template).take(MAX_GUEST_READS).map(|g| (g.vmid, g.node.clone(), kinds.get(&g.vmid).cloned())).collect();
        let reads = stream::iter(work.into_iter().map(|(vmid, node, kind)| {
            async move {
                let (Ok(node), Ok(id)) = (NodeName::parse(&node), VmId::new(vmid.into())) else { return (vmid, vec![]) };
                let raw = match kind {
                    Some(ResourceType::Lxc) => read(started, deadline, async { c.lxc_config(&node, id).await.map(|c| c.raw) }).await,
                    _ => read(started, deadline, async { c.qemu_config(&node, id).await.map(|c| c.raw) }).await,
                };
                let addrs = match raw {
                    Read::Got(raw) => raw.iter().filter(|(k, _)| k.starts_with("ipconfig") || k.starts_with("net")).filter_map(|(_, v)| static_ipv4(v)).collect(),
                    _ => vec![],
                };
                (vmid, addrs)
            }
        }))
        .buffer_unordered(GUEST_READS_AT_ONCE)
        .collect::<Vec<_>>()
        .await;
        for (vmid, addrs) in reads {
            if let Some(g) = guests.iter_mut().find(|g| g.vmid == vmid) {
                g.addresses = addrs;
            }
        }
    }
    Read::Got(guests)
}

/// `ip=10.0.0.5/24` in a property string.
fn static_ipv4(value: &str) -> Option<Ipv4Addr> {
    value.split(',').find_map(|p| p.strip_prefix("ip=")).and_then(|ip| ip.split('/').next()).and_then(|ip| ip.parse().ok())
}

/// Runs the whole check against `prov` under `deadline`.
pub async fn run(prov: &Provisioner, deadline: Duration) -> Report {
    let plan = plan(prov);
    let facts = gather(prov, &plan, deadline).await;
    check::evaluate(&plan, &facts)
}

impl Engine {
    /// Checks the cluster now (one check at a time; a caller arriving meanwhile gets that one's result) and
    /// keeps the report for `/ready` and request-time refusals. `None` without a cluster.
    pub async fn check_cluster(&self, deadline: Duration) -> Option<Report> {
        let prov = self.inner.provisioner.clone()?;
        let asked = Instant::now();
        let _one = self.inner.checks.one.lock().await;
        if let Some((at, r)) = self.inner.checks.last.lock().expect("checks poisoned").as_ref() {
            if *at >= asked {
                return Some(r.clone());
            }
        }
        let report = run(&prov, deadline).await;
        *self.inner.checks.last.lock().expect("checks poisoned") = Some((Instant::now(), report.clone()));
        Some(report)
    }

    /// The last check's report, if one ran; one older than five minutes is renewed in the background.
    pub fn last_check(&self) -> Option<Report> {
        let last = self.inner.checks.last.lock().expect("checks poisoned").clone();
        if last.as_ref().is_some_and(|(at, _)| at.elapsed() > REFRESH_AFTER) && self.inner.checks.one.try_lock().is_ok() {
            let engine = self.clone();
            self.inner.tasks.spawn(async move { engine.check_cluster(CHECK_DEADLINE).await });
        }
        last.map(|(_, r)| r)
    }

    /// At `serve` start: checks the cluster in the background and logs the checklist (the API serves meanwhile).
    pub fn spawn_start_check(&self) {
        if self.inner.provisioner.is_none() {
            return;
        }
        let engine = self.clone();
        self.inner.tasks.spawn(async move {
            let Some(report) = engine.check_cluster(CHECK_DEADLINE).await else { return };
            let text = report.render();
            match report.exit_code() {
                0 => tracing::info!("Proxmox VE check at start:\n{text}"),
                1 => tracing::warn!("Proxmox VE check at start found problems (the API serves; deployments they make certain to fail are refused):\n{text}"),
                _ => tracing::warn!("Proxmox VE check at start could not check everything:\n{text}"),
            }
        });
    }

    /// Refuses a deployment that would certainly fail: a VM without node SSH (its host key could never be
    /// pinned), or one a problem of the last check blocks. Names the field `type` and says what to do.
    pub(crate) fn refuse_doomed(&self, kind: GuestType) -> Result<(), super::EngineError> {
        let Some(prov) = self.inner.provisioner.as_deref() else { return Ok(()) };
        let refuse = |message: String| Err(super::EngineError::Invalid(ValidationErrors(vec![FieldError::new("type", "cluster_ready", message)])));
        if kind == GuestType::Vm && prov.node_files.is_none() {
            return refuse(
                "a VM cannot be deployed on this cluster: no [proxmox.node_ssh] is configured, so the VM's SSH host key could never be pinned and the deploy would refuse to connect; configure [proxmox.node_ssh] (docs/configuration.md), or deploy a container (type lxc)".into(),
            );
        }
        let last = self.inner.checks.last.lock().expect("checks poisoned").as_ref().map(|(_, r)| r.clone());
        if let Some(item) = last.as_ref().and_then(|r| r.refusal(kind)) {
            return refuse(format!("the cluster check found: {} (fix: {})", item.text, item.fix.as_deref().unwrap_or("see pvedeploy check")));
        }
        Ok(())
    }
}
