//! The deployment repository: create with a unique live name, read, list, and revision-checked saves with an event trail.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::leases::{Lease, CHECK_LEASE};
use super::{decode, Store, StoreError};
use crate::core::deployment::{Deployment, DeploymentId, Framework, GuestType, Spec};
use crate::core::names::{AppName, GitRef, HealthPath, NodeName, StartCommand, VmId};
use crate::core::repo::RepoUrl;
use crate::core::status::Status;
use super::audit::AuditEntry;
use super::logs::LogLine;

/// The stored shape. Optional fields are omitted when empty (SurrealDB `option<T>` means absent, not null).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Row {
    #[serde(default, skip_serializing)]
    key: String,
    name: String,
    guest_type: String,
    framework: String,
    repo_url: String,
    branch: String,
    cpu: i64,
    memory_mib: i64,
    disk_gb: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    auto_redeploy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    health_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start_command: Option<String>,
    /// Absent in rows written before v8: the framework's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    persistent_paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    health_timeout_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    health_status: Option<i64>,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxmox_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxmox_node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    terraform_output: Option<String>,
    created_at: i64,
    updated_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployed_at: Option<i64>,
    revision: i64,
}

impl From<&Deployment> for Row {
    fn from(d: &Deployment) -> Self {
        let s = &d.spec;
        Row {
            key: d.id.to_string(),
            name: s.name.to_string(),
            guest_type: s.guest_type.as_str().into(),
            framework: s.framework.as_str().into(),
            repo_url: s.repo_url.to_string(),
            branch: s.branch.to_string(),
            cpu: s.cpu.into(),
            memory_mib: s.memory_mib.into(),
            disk_gb: s.disk_gb.into(),
            node: s.node.as_ref().map(ToString::to_string),
            auto_redeploy: s.auto_redeploy,
            health_path: Some(s.health_path.as_str().into()),
            start_command: s.start_command.as_ref().map(|c| c.as_str().to_string()),
            persistent_paths: Some(s.persistent_paths.iter().map(|p| p.as_str().to_string()).collect()),
            health_timeout_secs: Some(s.health_timeout_secs.into()),
            health_status: s.health_status.map(i64::from),
            status: d.status.as_str().into(),
            proxmox_id: d.proxmox_id.map(|v| v.get().into()),
            proxmox_node: d.proxmox_node.as_ref().map(ToString::to_string),
            ip_address: d.ip_address.clone(),
            url: d.url.clone(),
            commit: d.commit.clone(),
            error_message: d.error_message.clone(),
            terraform_output: d.terraform_output.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            deployed_at: d.deployed_at,
            revision: d.revision,
        }
    }
}

impl TryFrom<Row> for Deployment {
    type Error = StoreError;

    fn try_from(r: Row) -> Result<Self, StoreError> {
        let bad = |what: &str| StoreError::Corrupt(format!("deployment {}: bad {what}", r.key));
        let num = |v: i64, what: &str| u32::try_from(v).map_err(|_| bad(what));
        Ok(Deployment {
            id: DeploymentId::parse(&r.key).ok_or_else(|| bad("id"))?,
            spec: Spec {
                name: AppName::parse(&r.name).map_err(|_| bad("name"))?,
                guest_type: GuestType::parse(&r.guest_type).map_err(|_| bad("guest_type"))?,
                framework: Framework::parse(&r.framework).map_err(|_| bad("framework"))?,
                repo_url: RepoUrl::from_stored(r.repo_url.clone()),
                branch: GitRef::parse(&r.branch).map_err(|_| bad("branch"))?,
                cpu: num(r.cpu, "cpu")?,
                memory_mib: num(r.memory_mib, "memory_mib")?,
                disk_gb: num(r.disk_gb, "disk_gb")?,
                node: r.node.as_deref().map(NodeName::parse).transpose().map_err(|_| bad("node"))?,
                auto_redeploy: r.auto_redeploy,
                health_path: match r.health_path.as_deref() {
                    None => HealthPath::root(),
                    Some(p) => HealthPath::parse(p).map_err(|_| bad("health_path"))?,
                },
                start_command: r.start_command.as_deref().map(StartCommand::parse).transpose().map_err(|_| bad("start_command"))?,
                persistent_paths: match &r.persistent_paths {
                    Some(paths) => paths.iter().map(|p| crate::core::release::PersistentPath::parse(p)).collect::<Result<_, _>>().map_err(|_| bad("persistent_paths"))?,
                    None => crate::core::release::default_persistent_paths(Framework::parse(&r.framework).map_err(|_| bad("framework"))?),
                },
                health_timeout_secs: match r.health_timeout_secs {
                    Some(t) => num(t, "health_timeout_secs")?,
                    None => crate::core::deployment::HEALTH_TIMEOUT_SECS.0,
                },
                health_status: r.health_status.map(|s| u16::try_from(s).map_err(|_| bad("health_status"))).transpose()?,
            },
            status: Status::parse(&r.status).ok_or_else(|| bad("status"))?,
            proxmox_id: r.proxmox_id.map(|v| VmId::new(v as u64)).transpose().map_err(|_| bad("proxmox_id"))?,
            proxmox_node: r.proxmox_node.as_deref().map(NodeName::parse).transpose().map_err(|_| bad("proxmox_node"))?,
            ip_address: r.ip_address,
            url: r.url,
            commit: r.commit,
            error_message: r.error_message,
            terraform_output: r.terraform_output,
            created_at: r.created_at,
            updated_at: r.updated_at,
            deployed_at: r.deployed_at,
            revision: r.revision,
        })
    }
}

/// Which deployments a listing shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<Status>,
    pub framework: Option<Framework>,
    /// Substring of the name.
    pub name: Option<String>,
}

/// One recorded status change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at: i64,
    #[serde(default)]
    pub from: Option<String>,
    pub to: String,
    pub message: String,
}

const SELECT: &str = "SELECT *, record::id(id) AS key FROM";
/// A deployment's status history, oldest first.
const EVENTS: &str = "SELECT at, from, to, message FROM deployment_event WHERE deployment = $id ORDER BY at ASC";

fn rows_to_deployments(rows: Vec<serde_json::Value>) -> Result<Vec<Deployment>, StoreError> {
    rows.into_iter().map(|v| decode::<Row>(v).and_then(Deployment::try_from)).collect()
}

impl Store {
    /// Records a new deployment, claiming its name among live deployments atomically.
    pub async fn create_deployment(&self, d: &Deployment, message: &str) -> Result<(), StoreError> {
        self.create_requested_deployment(d, message, None, None).await
    }

    /// As `create_deployment`, with the request's audit entry and log line in the same transaction:
    /// a request is recorded whole (deployment, event, audit, line) or not at all, in one commit.
    pub async fn create_requested_deployment(&self, d: &Deployment, message: &str, audit: Option<&AuditEntry>, line: Option<&LogLine>) -> Result<(), StoreError> {
        let sql = format!(
            "CREATE type::record('name_claim', $name) CONTENT {{ deployment: $id }};
            CREATE type::record('deployment', $id) CONTENT $row;
            CREATE deployment_event CONTENT {{ deployment: $id, at: $at, to: $status, message: $message }};
            {}
            {}",
            if audit.is_some() { "CREATE audit CONTENT $audit RETURN NONE;" } else { "" },
            if line.is_some() { "CREATE log_line CONTENT $line RETURN NONE;" } else { "" },
        );
        let vars = json!({
            "name": d.spec.name.as_str(), "id": d.id.as_str(), "row": Row::from(d), "at": d.created_at,
            "status": d.status.as_str(), "message": message, "audit": audit, "line": line,
        });
        let result = self.transaction(&sql, vars).await;
        self.written(&d.id);
        match result {
            Err(StoreError::Taken { .. }) => Err(StoreError::Taken { what: format!("the name {:?}", d.spec.name.as_str()) }),
            Err(StoreError::Unavailable(m)) if m.contains("name_claim") && m.contains("exists") => {
                Err(StoreError::Taken { what: format!("the name {:?}", d.spec.name.as_str()) })
            }
            other => other.map(|_| ()),
        }
    }

    pub async fn get_deployment(&self, id: &DeploymentId) -> Result<Option<Deployment>, StoreError> {
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(id)) {
            return Ok(Some(hit.0.clone()));
        }
        let sql = format!("{SELECT} type::record('deployment', $id)");
        let rows = self.run(&sql, json!({ "id": id.as_str() })).await?;
        Ok(rows_to_deployments(rows.into_iter().next().unwrap_or_default())?.into_iter().next())
    }

    /// The live deployment holding `name`, or else the most recent one that had it.
    pub async fn get_deployment_by_name(&self, name: &AppName) -> Result<Option<Deployment>, StoreError> {
        let sql = format!(
            "LET $claim = (SELECT VALUE deployment FROM ONLY type::record('name_claim', $name));
             IF $claim != NONE {{ {SELECT} type::record('deployment', $claim) }}
             ELSE {{ {SELECT} deployment WHERE name = $name ORDER BY created_at DESC LIMIT 1 }};"
        );
        let rows = self.run(&sql, json!({ "name": name.as_str() })).await?;
        Ok(rows_to_deployments(rows.into_iter().nth(1).unwrap_or_default())?.into_iter().next())
    }

    /// A page of deployments, newest first, and how many match in all.
    pub async fn list_deployments(&self, f: &Filter, limit: u32, offset: u32) -> Result<(Vec<Deployment>, u64), StoreError> {
        let mut conds = Vec::new();
        if f.status.is_some() {
            conds.push("status = $status");
        }
        if f.framework.is_some() {
            conds.push("framework = $framework");
        }
        if f.name.is_some() {
            conds.push("string::contains(name, $name)");
        }
        let cond = if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) };
        let page = format!("{SELECT} deployment {cond} ORDER BY created_at DESC LIMIT $limit START $offset");
        let count = format!("SELECT count() AS n FROM deployment {cond} GROUP ALL");
        let vars = json!({
            "status": f.status.map(|s| s.as_str()),
            "framework": f.framework.map(|s| s.as_str()),
            "name": f.name,
            "limit": limit,
            "offset": offset,
        });
        let (rows, total) = self.read_page(&page, &count, vars).await?;
        Ok((rows_to_deployments(rows)?, total))
    }

    /// Writes `d` if the stored revision is still `d.revision`, bumping it; records `message` as an
    /// event when the status changed; releases the name when the deployment is destroyed.
    /// Returns the saved deployment (with the new revision) or `Stale`.
    pub async fn save_deployment(&self, d: &Deployment, previous: Status, message: &str) -> Result<Deployment, StoreError> {
        self.save_deployment_leased(d, previous, message, None).await
    }

    /// As `save_deployment`, and only while `lease` (when given) is still held: a stale worker's write is refused.
    pub async fn save_deployment_leased(&self, d: &Deployment, previous: Status, message: &str, lease: Option<&Lease>) -> Result<Deployment, StoreError> {
        let write = DeploymentWrite { d, previous, message };
        let check = if lease.is_some() { CHECK_LEASE } else { "" };
        let sql = format!("{check}\n{}", write.statements());
        let mut vars = write.vars();
        vars.insert("lease_dep".into(), json!(d.id.as_str()));
        vars.insert("lease_token".into(), json!(lease.map(|l| l.token.as_str())));
        let result = self.transaction(&sql, serde_json::Value::Object(vars)).await;
        self.written(&d.id);
        match result {
            Ok(_) => Ok(write.saved()),
            Err(StoreError::Unavailable(m)) if m.contains("stale revision") || m.contains("lease lost") => Err(StoreError::Stale),
            Err(e) => Err(e),
        }
    }

    /// Records that the deployment's guest `vmid` is now on `node` (migrated). A narrow `SET`, like
    /// `set_terraform_output`: it neither checks nor bumps the revision, and only applies while the record
    /// still has that guest. A save that read the record before writes the old node back; the reconciler
    /// follows the guest again at its next run, and every action on the guest finds it wherever it is
    /// (`Provisioner::guard`). Returns whether anything changed.
    pub async fn set_guest_node(&self, id: &DeploymentId, vmid: VmId, node: &NodeName) -> Result<bool, StoreError> {
        let result = self
            .run(
                "UPDATE type::record('deployment', $id) SET proxmox_node = $node WHERE proxmox_id = $vmid AND proxmox_node != $node RETURN VALUE record::id(id)",
                json!({ "id": id.as_str(), "vmid": vmid.get(), "node": node.as_str() }),
            )
            .await;
        self.written(id);
        let rows = result?;
        Ok(rows.into_iter().next().is_some_and(|r| !r.is_empty()))
    }

    /// Records where the deployment's Terraform export lives. A narrow `SET` of this one field: it neither checks
    /// nor bumps the revision, so it never makes the engine's revision-checked saves stale. A save that read the
    /// record before this update writes the old reference back; the exporter runs after every save's status event
    /// and sets it again, so the field converges. Returns whether anything changed.
    pub async fn set_terraform_output(&self, id: &DeploymentId, reference: &str) -> Result<bool, StoreError> {
        let result = self
            .run(
                "UPDATE type::record('deployment', $id) SET terraform_output = $reference WHERE terraform_output != $reference RETURN VALUE record::id(id)",
                json!({ "id": id.as_str(), "reference": reference }),
            )
            .await;
        self.written(id);
        let rows = result?;
        Ok(rows.into_iter().next().is_some_and(|r| !r.is_empty()))
    }

    /// Every deployment that is not destroyed and has a guest, oldest first.
    pub async fn deployments_with_guests(&self) -> Result<Vec<Deployment>, StoreError> {
        let sql = format!("{SELECT} deployment WHERE status != 'destroyed' AND proxmox_id != NONE ORDER BY created_at ASC");
        let rows = self.run(&sql, json!({})).await?;
        rows_to_deployments(rows.into_iter().next().unwrap_or_default())
    }

    /// Deployments whose work was interrupted (pending, provisioning, installing, deploying, destroying), in one query.
    pub async fn unfinished_deployments(&self) -> Result<Vec<(DeploymentId, Status)>, StoreError> {
        let rows = self
            .run("SELECT record::id(id) AS key, status FROM deployment WHERE status IN ['pending', 'provisioning', 'installing', 'deploying', 'destroying']", json!({}))
            .await?;
        Ok(rows
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| Some((DeploymentId::parse(v.get("key")?.as_str()?)?, Status::parse(v.get("status")?.as_str()?)?)))
            .collect())
    }

    /// Every guest a deployment that is not destroyed says it has (for the reconciler).
    pub async fn recorded_guests(&self) -> Result<Vec<crate::core::reconcile::RecordedGuest>, StoreError> {
        let rows = self
            .run("SELECT record::id(id) AS key, name, proxmox_id, proxmox_node FROM deployment WHERE proxmox_id != NONE AND status != 'destroyed'", json!({}))
            .await?;
        Ok(rows
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| {
                Some(crate::core::reconcile::RecordedGuest {
                    deployment: v.get("key")?.as_str()?.to_string(),
                    name: v.get("name")?.as_str()?.to_string(),
                    node: v.get("proxmox_node").and_then(|n| n.as_str()).and_then(|n| NodeName::parse(n).ok()),
                    vmid: VmId::new(v.get("proxmox_id")?.as_u64()?).ok()?,
                })
            })
            .collect())
    }

    /// One deployment and its status history in one round trip.
    /// A deployment and its status history (from the cache when the engine is embedded).
    pub async fn get_deployment_with_events(&self, id: &DeploymentId) -> Result<Option<super::cache::Detail>, StoreError> {
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(id)) {
            return Ok(Some(hit));
        }
        let epoch = self.cache.as_ref().map(|c| c.epoch());
        let sql = format!(
            "{SELECT} type::record('deployment', $id);
             {EVENTS};"
        );
        let mut rows = self.run(&sql, json!({ "id": id.as_str() })).await?.into_iter();
        let Some(d) = rows_to_deployments(rows.next().unwrap_or_default())?.into_iter().next() else { return Ok(None) };
        let events = rows.next().unwrap_or_default().into_iter().map(decode).collect::<Result<_, _>>()?;
        let detail = std::sync::Arc::new((d, events));
        if let (Some(cache), Some(epoch)) = (&self.cache, epoch) {
            cache.fill(epoch, detail.clone());
        }
        Ok(Some(detail))
    }

    /// Drops `id` from the read cache; every write to a deployment or its events calls this once it returned.
    pub(super) fn written(&self, id: &DeploymentId) {
        if let Some(c) = &self.cache {
            c.invalidate(id);
        }
    }

    /// The status history of one deployment, oldest first.
    pub async fn deployment_events(&self, id: &DeploymentId) -> Result<Vec<Event>, StoreError> {
        let rows = self
            .run(EVENTS, json!({ "id": id.as_str() }))
            .await?;
        rows.into_iter().next().unwrap_or_default().into_iter().map(decode).collect()
    }

    /// Counts by status and the times from creation to first `running`, for the monitoring figures.
    pub async fn deployment_stats(&self) -> Result<Stats, StoreError> {
        // Deploy figures come from the releases, one per deploy attempt: how long each took from its
        // start to its end, and how many ended live against how many failed. (A deployment's
        // `deployed_at - created_at` counted provisioning once and moved on every redeploy.)
        let sql = "SELECT status, count() AS n FROM deployment GROUP BY status;
                   SELECT VALUE finished_at - created_at FROM release WHERE finished_at != NONE AND status IN ['active', 'superseded'];
                   SELECT count() AS n FROM release WHERE finished_at != NONE AND status = 'failed' GROUP ALL;";
        let mut rows = self.run(sql, json!({})).await?.into_iter();
        let mut by_status = Vec::new();
        for v in rows.next().unwrap_or_default() {
            if let (Some(s), Some(n)) = (v.get("status").and_then(|s| s.as_str()).and_then(Status::parse), v.get("n").and_then(|n| n.as_u64())) {
                by_status.push((s, n));
            }
        }
        let mut durations: Vec<i64> = rows.next().unwrap_or_default().into_iter().filter_map(|v| v.as_i64()).collect();
        durations.sort_unstable();
        let deploys_failed = rows.next().unwrap_or_default().first().and_then(|v| v.get("n")).and_then(|n| n.as_u64()).unwrap_or(0);
        Ok(Stats { by_status, deploy_durations_ms: durations, deploys_failed })
    }
}

/// Raw figures behind `/status` and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub by_status: Vec<(Status, u64)>,
    /// How long each deploy that went live took (a release's start to its end), sorted ascending.
    pub deploy_durations_ms: Vec<i64>,
    /// Deploys (releases) that ended failed.
    pub deploys_failed: u64,
}

impl Store {
    /// Live deployments (not `destroyed`) whose repository URL mentions `full_name`, case-insensitive:
    /// a coarse pre-filter; the caller matches host and name exactly (`RepoIdentity::matches`).
    pub async fn deployments_mentioning_repo(&self, full_name: &str) -> Result<Vec<Deployment>, StoreError> {
        let sql = format!("{SELECT} deployment WHERE status != 'destroyed' AND string::contains(string::lowercase(repo_url), $needle) ORDER BY created_at ASC");
        let rows = self.run(&sql, json!({ "needle": full_name.to_ascii_lowercase() })).await?;
        rows_to_deployments(rows.into_iter().next().unwrap_or_default())
    }
}

/// A revision-checked save of one deployment, as statements to run inside a transaction (the caller
/// adds the lease check): writes `d` if the stored revision is still `d.revision`, records `message` as an
/// event when the status changed from `previous`, and releases the name when the deployment is destroyed.
/// Its variables are `id`, `row`, `rev`, `name`, `at`, `from`, `to` and `message`.
pub(crate) struct DeploymentWrite<'a> {
    pub d: &'a Deployment,
    pub previous: Status,
    pub message: &'a str,
}

impl DeploymentWrite<'_> {
    pub(crate) fn statements(&self) -> String {
        let event = if self.previous != self.d.status {
            "CREATE deployment_event CONTENT { deployment: $id, at: $at, from: $from, to: $to, message: $message };"
        } else {
            ""
        };
        let release = if self.d.status == Status::Destroyed { "DELETE type::record('name_claim', $name) WHERE deployment = $id;" } else { "" };
        format!(
            "LET $updated = (UPDATE type::record('deployment', $id) CONTENT $row WHERE revision = $rev RETURN AFTER);
             IF array::len($updated) = 0 {{ THROW 'stale revision' }};
             {event}
             {release}"
        )
    }

    pub(crate) fn vars(&self) -> serde_json::Map<String, serde_json::Value> {
        let d = self.d;
        let serde_json::Value::Object(vars) = json!({
            "id": d.id.as_str(), "row": Row::from(&self.saved()), "rev": d.revision, "name": d.spec.name.as_str(),
            "at": d.updated_at, "from": self.previous.as_str(), "to": d.status.as_str(), "message": self.message,
        }) else {
            unreachable!("json! of an object literal is an object")
        };
        vars
    }

    /// The deployment as stored once the write commits (its revision bumped).
    pub(crate) fn saved(&self) -> Deployment {
        let mut next = self.d.clone();
        next.revision = self.d.revision + 1;
        next
    }
}
