//! The deployment repository: create with a unique live name, read, list, and revision-checked saves with an event trail.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::leases::{Lease, CHECK_LEASE};
use super::{decode, Store, StoreError};
use crate::core::deployment::{Deployment, DeploymentId, Framework, GuestType, Spec};
use crate::core::names::{AppName, AppNamePrefix, CommitSha, GitRef, HealthPath, NodeName, StartCommand, VmId};
use crate::core::repo::RepoUrl;
use crate::core::status::Status;
use super::audit::AuditEntry;
use super::logs::LogLine;
pub use crate::core::listing::{DeploymentPage, Filter, PageStart};
pub use crate::core::status::Event;

/// The stored shape. Optional fields are omitted when empty (SurrealDB `option<T>` means absent, not null).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Row {
    #[serde(default, skip_serializing)]
    key: String,
    /// The id again, as a plain field: ids are UUIDv7, so this sorts by creation, and the list
    /// indexes end with it (the keyset cursor). Absent only in rows written before v10.
    #[serde(default)]
    list_key: String,
    /// `all` in every row: the equality column of the unfiltered list's index (`deployment_all_list`,
    /// migration v14), so that list is a capped walk like the filtered ones. Absent before v14.
    #[serde(default)]
    list_scope: String,
    name: String,
    guest_type: String,
    framework: String,
    repo_url: String,
    /// The repository's `owner/name` as pushes name it, lowercase (`RepoUrl::full_name`): the key of the index a
    /// push is routed by (`deployment_repo_name`, migration v20). Absent only in rows written before v20.
    #[serde(default)]
    repo_name: String,
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
    /// Absent: no path filters (and in rows written before v16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deploy_tags: Option<String>,
    /// Absent: previews off (and in rows written before v18).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previews: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previews_from_forks: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preview_ttl_hours: Option<i64>,
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
    /// The last [`RECENT_EVENTS`] status changes, oldest first, kept in the row so a GET by id is one
    /// record read. Part of a new row's content; a save carries them over from the stored row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recent_events: Option<Vec<Event>>,
}

/// How many status changes a deployment's row keeps (and a GET by id shows); the full history stays in
/// `deployment_event`.
pub const RECENT_EVENTS: usize = 100;

impl Row {
    /// A new deployment's row: its first status change is its only recent event.
    pub(super) fn created(d: &Deployment, message: &str, at: i64) -> Row {
        let mut row = Row::from(d);
        row.recent_events = Some(vec![Event { at, from: None, to: d.status.as_str().into(), message: message.into() }]);
        row
    }
}

impl From<&Deployment> for Row {
    fn from(d: &Deployment) -> Self {
        let s = &d.spec;
        Row {
            key: d.id.to_string(),
            list_key: d.id.to_string(),
            list_scope: LIST_SCOPE_ALL.into(),
            name: s.name.to_string(),
            guest_type: s.guest_type.as_str().into(),
            framework: s.framework.as_str().into(),
            repo_url: s.repo_url.to_string(),
            repo_name: s.repo_url.full_name().to_ascii_lowercase(),
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
            paths: (!s.paths.is_empty()).then(|| s.paths.iter().map(|p| p.as_str().to_string()).collect()),
            deploy_tags: s.deploy_tags.as_ref().map(|t| t.as_str().to_string()),
            previews: s.previews.then_some(true),
            previews_from_forks: s.previews_from_forks.then_some(true),
            preview_ttl_hours: s.previews.then_some(i64::from(s.preview_ttl_hours)),
            status: d.status.as_str().into(),
            proxmox_id: d.proxmox_id.map(|v| v.get().into()),
            proxmox_node: d.proxmox_node.as_ref().map(ToString::to_string),
            ip_address: d.ip_address.map(|ip| ip.to_string()),
            url: d.url.clone(),
            commit: d.commit.as_ref().map(ToString::to_string),
            error_message: d.error_message.clone(),
            terraform_output: d.terraform_output.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            deployed_at: d.deployed_at,
            revision: d.revision,
            recent_events: None,
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
                branch: GitRef::parse_git(&r.branch).map_err(|_| bad("branch"))?,
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
                paths: r.paths.iter().flatten().map(|p| crate::core::glob::Glob::parse(p)).collect::<Result<_, _>>().map_err(|_| bad("paths"))?,
                deploy_tags: r.deploy_tags.as_deref().map(crate::core::glob::Glob::parse).transpose().map_err(|_| bad("deploy_tags"))?,
                previews: r.previews.unwrap_or(false),
                previews_from_forks: r.previews_from_forks.unwrap_or(false),
                preview_ttl_hours: match r.preview_ttl_hours {
                    Some(t) => num(t, "preview_ttl_hours")?,
                    None => crate::core::deployment::PREVIEW_TTL_HOURS.0,
                },
            },
            status: Status::parse(&r.status).ok_or_else(|| bad("status"))?,
            proxmox_id: r.proxmox_id.map(|v| VmId::new(v as u64)).transpose().map_err(|_| bad("proxmox_id"))?,
            proxmox_node: r.proxmox_node.as_deref().map(NodeName::parse).transpose().map_err(|_| bad("proxmox_node"))?,
            ip_address: r.ip_address.as_deref().map(str::parse::<std::net::Ipv4Addr>).transpose().map_err(|_| bad("ip_address"))?,
            url: r.url,
            commit: r.commit.as_deref().map(CommitSha::parse).transpose().map_err(|_| bad("commit"))?,
            error_message: r.error_message,
            terraform_output: r.terraform_output,
            created_at: r.created_at,
            updated_at: r.updated_at,
            deployed_at: r.deployed_at,
            revision: r.revision,
        })
    }
}

/// The two queries behind a page of deployments, and their variables.
/// The value of `list_scope` in every row.
pub(super) const LIST_SCOPE_ALL: &str = "all";

struct ListQuery {
    page: String,
    count: String,
    vars: serde_json::Value,
}

impl ListQuery {
    fn new(f: &Filter, limit: u32, start: &PageStart) -> Self {
        if let Some(prefix) = &f.name {
            return Self::by_name(f, prefix, limit, start);
        }
        let mut conds = status_and_framework(f);
        // SurrealDB 3.3.5 caps an index walk at the page only on a compound index with an equality
        // prefix (`exec/operators/scan/index.rs`: a single-column range fetches whole batches of 1,000
        // records whatever the LIMIT): the unfiltered list walks `(list_scope, list_key)`.
        if conds.is_empty() {
            conds.push("list_scope = 'all'");
        }
        if matches!(start, PageStart::After(_)) {
            conds.push("list_key < $after");
        }
        let skip = if matches!(start, PageStart::Offset(_)) { "START $offset" } else { "" };
        let page = format!("{SELECT} deployment {} ORDER BY list_key DESC LIMIT $limit {skip}", where_clause(&conds));
        ListQuery { page, count: tally_query(), vars: Self::vars(f, limit, start) }
    }

    /// A listing by name prefix: the walk of the `name_listing` records whose names start with it (small
    /// records, next to each other: the ids of the matches, with their status and framework), sorted newest
    /// first in the query, and then only the page's deployments read; the count walks the same small records
    /// (a count of keys when no status or framework is asked). Cost grows with the matches, not with history.
    fn by_name(f: &Filter, prefix: &AppNamePrefix, limit: u32, start: &PageStart) -> Self {
        let mut conds = status_and_framework(f);
        const RANGE: &str = "name_listing:[$name_lo]..[$name_hi]";
        let count = format!("SELECT count() AS n FROM {RANGE} {} GROUP ALL", where_clause(&conds));
        if matches!(start, PageStart::After(_)) {
            conds.push("record::id(id)[1] < $after");
        }
        let keys = format!("array::slice(array::sort::desc((SELECT VALUE record::id(id)[1] FROM {RANGE} {})), $offset, $slice_end)", where_clause(&conds));
        let page = format!("{SELECT} array::map({keys}, |$k| type::record('deployment', $k)) ORDER BY list_key DESC");
        let mut vars = Self::vars(f, limit, start);
        vars["name_lo"] = json!(prefix.as_str());
        vars["name_hi"] = json!(prefix.upper_bound());
        let offset = match start { PageStart::Offset(n) => u64::from(*n), _ => 0 };
        vars["slice_end"] = json!(offset + u64::from(limit) + 1);
        ListQuery { page, count, vars }
    }

    fn vars(f: &Filter, limit: u32, start: &PageStart) -> serde_json::Value {
        json!({
            "status": f.status.map(|s| s.as_str()),
            "framework": f.framework.map(|s| s.as_str()),
            "scope": tally_scope(f.status, f.framework),
            "after": match start { PageStart::After(id) => Some(id.as_str()), _ => None },
            "offset": match start { PageStart::Offset(n) => *n, _ => 0 },
            // One more than asked: whether another page follows, without counting.
            "limit": limit.saturating_add(1),
        })
    }
}


/// The conditions of a filter's status and framework (its variables `$status` and `$framework`); both the
/// deployments and their `name_listing` records carry those two fields.
fn status_and_framework(f: &Filter) -> Vec<&'static str> {
    let mut conds = Vec::new();
    if f.status.is_some() {
        conds.push("status = $status");
    }
    if f.framework.is_some() {
        conds.push("framework = $framework");
    }
    conds
}

/// `WHERE` and the conditions joined by `AND`; nothing without any.
fn where_clause(conds: &[&str]) -> String {
    if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) }
}

/// A deployment's row as every list and lookup decodes it: without the up to 100 recent events it carries, which
/// only a single read asks for (`get_deployment_with_events`, from the key-value layer: `record_read.rs`). A page
/// of 100 would otherwise convert up to 10,000 events to throw away.
const SELECT: &str = "SELECT *, record::id(id) AS key OMIT recent_events FROM";

/// Each total is kept as this many tallies (`deployment_tally:[scope, shard]`), each write adding to
/// one picked at random: two concurrent writes conflict (and one retries) only when they pick the same
/// shard, and a total is the sum of at most this many records, whatever the table holds.
pub const TALLY_SHARDS: u32 = 64;

/// The tally scope of a listing filter without a name: `all`, `s:<status>`, `f:<framework>` or both.
pub(super) fn tally_scope(status: Option<Status>, framework: Option<Framework>) -> String {
    match (status, framework) {
        (None, None) => "all".into(),
        (Some(s), None) => format!("s:{}", s.as_str()),
        (None, Some(f)) => format!("f:{}", f.as_str()),
        (Some(s), Some(f)) => format!("s:{}|f:{}", s.as_str(), f.as_str()),
    }
}

/// The total of a tally scope (`$scope`), as a row `{ n }`.
fn tally_query() -> String {
    format!("SELECT math::sum(n) AS n FROM deployment_tally:[$scope, 0]..=[$scope, {}] GROUP ALL", TALLY_SHARDS - 1)
}

/// Adds one to each of a new deployment's four tallies (`$tally_scopes`, shard `$shard`).
pub(super) const TALLY_CREATED: &str = "FOR $scope IN $tally_scopes { UPSERT type::record('deployment_tally', [$scope, $shard]) SET n += 1 RETURN NONE; };";

/// Lists a new deployment (`$name`, `$id`, `$status`, `$framework`) for listings by name prefix: its
/// `name_listing` record (migration v22), whose id `[name, list_key]` orders the walk of a prefix.
pub(super) const LISTED_CREATED: &str = "CREATE type::record('name_listing', [$name, $id]) CONTENT { status: $status, framework: $framework } RETURN NONE;";

/// The four scopes a deployment with this status and framework is counted in.
pub(super) fn tally_scopes(status: Status, framework: Framework) -> [String; 4] {
    [tally_scope(None, None), tally_scope(Some(status), None), tally_scope(None, Some(framework)), tally_scope(Some(status), Some(framework))]
}

/// A shard for this write's tallies: the next in turn, so writes in flight together (up to
/// `TALLY_SHARDS` of them) each count in a shard of their own and never conflict over a tally.
/// Chosen at random, two of 32 concurrent writers shared a shard often enough that 1–3 creates in
/// 10,000 lost the conflict eight times running and were answered 503 (`cargo bench --bench api`).
pub(super) fn tally_shard() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % TALLY_SHARDS
}

/// A deployment's status history, oldest first.
const EVENTS: &str = "SELECT at, from, to, message FROM deployment_event WHERE deployment = $id ORDER BY at ASC";

/// A page from its rows (one more than `limit` when another page follows) and its total.
fn page_of(rows: Vec<serde_json::Value>, total: u64, limit: u32) -> Result<DeploymentPage, StoreError> {
    let mut items = rows_to_deployments(rows)?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    Ok(DeploymentPage { items, total, more })
}

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
        self.create_deployment_from(d, message, audit, line, None).await
    }

    /// As `create_requested_deployment`; with `restore`, the deployment's guest is to be restored from a backup
    /// (`super::provision::RestoreRow`, in the same transaction).
    pub(super) async fn create_deployment_from(&self, d: &Deployment, message: &str, audit: Option<&AuditEntry>, line: Option<&LogLine>, restore: Option<serde_json::Value>) -> Result<(), StoreError> {
        let sql = format!(
            "CREATE type::record('name_claim', $name) CONTENT {{ deployment: $id }};
            CREATE type::record('deployment', $id) CONTENT $row;
            CREATE deployment_event CONTENT {{ deployment: $id, at: $at, to: $status, message: $message }};
            {TALLY_CREATED}
            {LISTED_CREATED}
            {}
            {}
            {}",
            if audit.is_some() { "CREATE audit CONTENT $audit RETURN NONE;" } else { "" },
            if line.is_some() { "CREATE log_line CONTENT $line RETURN NONE;" } else { "" },
            if restore.is_some() { "CREATE type::record('restore_source', $id) CONTENT $restore RETURN NONE;" } else { "" },
        );
        let vars = json!({
            "name": d.spec.name.as_str(), "id": d.id.as_str(), "row": Row::created(d, message, d.created_at), "at": d.created_at,
            "status": d.status.as_str(), "message": message, "audit": audit, "line": line, "restore": restore,
            "tally_scopes": tally_scopes(d.status, d.spec.framework), "shard": tally_shard(), "framework": d.spec.framework.as_str(),
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
    ///
    /// Costs: without a name, the page is a backward walk of the index matching the filter (see
    /// migration v10) that stops after `limit + 1` rows, and the total is read from a
    /// maintained counter; with a name, both walk the small `name_listing` records of the names
    /// starting with it and only the page's rows are read (cost grows with the matches, not with
    /// history). `PageStart::Offset` also walks the skipped rows.
    ///
    /// An embedded engine answers from its key-value layer without a query (`page_read.rs`: the same walks);
    /// a remote server is asked the queries.
    pub async fn list_deployments(&self, f: &Filter, limit: u32, start: &PageStart) -> Result<DeploymentPage, StoreError> {
        let upper = f.name.as_ref().map(|p| p.upper_bound());
        let ask = super::page_read::PageAsk {
            status: f.status.map(|s| s.as_str()),
            framework: f.framework.map(|s| s.as_str()),
            name: f.name.as_ref().zip(upper.as_deref()).map(|(p, hi)| (p.as_str(), hi)),
            after: match start { PageStart::After(id) => Some(id.as_str()), _ => None },
            offset: match start { PageStart::Offset(n) => *n, _ => 0 },
            rows: limit.saturating_add(1),
            scope: &tally_scope(f.status, f.framework),
        };
        let (rows, total) = match self.direct_page(&ask).await? {
            Some(page) => page,
            None => return self.list_deployments_by_query(f, limit, start).await,
        };
        page_of(rows, total, limit)
    }

    /// [`list_deployments`](Self::list_deployments) through SurrealQL, whatever the engine: the remote path, and
    /// what the tests compare the direct walk with.
    #[doc(hidden)]
    pub async fn list_deployments_by_query(&self, f: &Filter, limit: u32, start: &PageStart) -> Result<DeploymentPage, StoreError> {
        let q = ListQuery::new(f, limit, start);
        let (rows, total) = self.read_page(&q.page, &q.count, q.vars).await?;
        page_of(rows, total, limit)
    }

    /// How the database plans the page and the count of `list_deployments` (SurrealDB's `EXPLAIN`):
    /// the tests hold that each filter walks its own index and each total is a counter.
    #[doc(hidden)]
    pub async fn list_deployments_plan(&self, f: &Filter, start: &PageStart) -> Result<(serde_json::Value, serde_json::Value), StoreError> {
        let q = ListQuery::new(f, 100, start);
        let mut rows = self.run(&format!("{} EXPLAIN;\n{} EXPLAIN;", q.page, q.count), q.vars).await?.into_iter();
        let mut plan = || serde_json::Value::Array(rows.next().unwrap_or_default());
        Ok((plan(), plan()))
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
        write.outcome(result)
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

    /// A deployment and its status history (from the cache when the engine is embedded).
    pub async fn get_deployment_with_events(&self, id: &DeploymentId) -> Result<Option<super::cache::Detail>, StoreError> {
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(id)) {
            return Ok(Some(hit));
        }
        let epoch = self.cache.as_ref().map(|c| c.epoch());
        // One record read from the key-value layer, without a query (`store/record_read.rs`); the row carries
        // its recent events.
        let Some(v) = self.stored_record("deployment", id.as_str()).await? else { return Ok(None) };
        let mut row: Row = decode(v)?;
        row.key = id.to_string();
        let recent = row.recent_events.take();
        let d = Deployment::try_from(row)?;
        // Migration v10 gave every row its events, and every write keeps them.
        let events = recent.unwrap_or_default();
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

    /// Counts by status and the deploy figures, for `/status` and `/metrics`: both from maintained
    /// tallies and bounded index walks, so their cost does not grow with history.
    pub async fn deployment_stats(&self) -> Result<Stats, StoreError> {
        // Each status's count is read from its tallies (migration v10), not counted over every deployment;
        // the deploy figures from the release tallies and the newest releases (migration v13).
        let counts: String = Status::ALL
            .iter()
            .map(|s| format!("LET $scope = '{}';\n{};\n", tally_scope(Some(*s), None), tally_query()))
            .collect();
        let mut rows = self.run(&counts, json!({})).await?.into_iter();
        let mut by_status = Vec::new();
        for s in Status::ALL {
            let _let = rows.next();
            let n = rows.next().unwrap_or_default().first().and_then(|v| v.get("n")).and_then(|n| n.as_u64()).unwrap_or(0);
            if n > 0 {
                by_status.push((s, n));
            }
        }
        Ok(Stats { by_status, deploys: self.release_stats().await? })
    }
}

/// Raw figures behind `/status` and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub by_status: Vec<(Status, u64)>,
    /// Deploy outcomes and durations (a release's start to its end).
    pub deploys: super::releases::ReleaseStats,
}

impl Store {
    /// Live deployments (not `destroyed`) of a repository named `full_name` (`owner/name`, case-insensitive) on any
    /// host, oldest first; the caller matches the host (`RepoIdentity::matches`). A walk of the `repo_name` index
    /// (migration v20), so a push costs what its repository's deployments cost, not a scan of every deployment.
    pub async fn deployments_of_repo(&self, full_name: &str) -> Result<Vec<Deployment>, StoreError> {
        let rows = self.run(&repo_query(""), json!({ "name": full_name.to_ascii_lowercase() })).await?;
        let mut found = rows_to_deployments(rows.into_iter().next().unwrap_or_default())?;
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(found)
    }

    /// How the database plans `deployments_of_repo` (SurrealDB's `EXPLAIN`).
    #[doc(hidden)]
    pub async fn explain_repo_query(&self, full_name: &str) -> Result<serde_json::Value, StoreError> {
        let rows = self.run(&repo_query("EXPLAIN"), json!({ "name": full_name.to_ascii_lowercase() })).await?;
        Ok(serde_json::Value::Array(rows.into_iter().next().unwrap_or_default()))
    }
}

/// The deployments of one repository by the `repo_name` index; the few it finds are sorted by the caller (an
/// `ORDER BY` here would make the planner walk the creation index instead).
fn repo_query(explain: &str) -> String {
    format!("{SELECT} deployment WHERE repo_name = $name AND status != 'destroyed' {explain}")
}

/// A revision-checked save of one deployment, as statements to run inside a transaction (the caller
/// adds the lease check): writes `d` if the stored revision is still `d.revision`, records `message` as an
/// event when the status changed from `previous`, and releases the name when the deployment is destroyed.
/// Its variables are `id`, `row`, `rev`, `name`, `at`, `from`, `to`, `message`, `framework`, `shard` and `keep_from`.
pub(crate) struct DeploymentWrite<'a> {
    pub d: &'a Deployment,
    pub previous: Status,
    pub message: &'a str,
}

impl DeploymentWrite<'_> {
    pub(crate) fn statements(&self) -> String {
        // The row's recent events are kept across the `CONTENT` write (one write of the record), with
        // this change added to them when it is one.
        let (event, recent) = if self.previous != self.d.status {
            (
                "CREATE deployment_event CONTENT { deployment: $id, at: $at, from: $from, to: $to, message: $message };",
                "array::slice(array::push($tally_before.recent_events ?? [], { at: $at, from: $from, to: $to, message: $message }), $keep_from)",
            )
        } else {
            ("", "$tally_before.recent_events")
        };
        let release = if self.d.status == Status::Destroyed { "DELETE type::record('name_claim', $name) WHERE deployment = $id;" } else { "" };
        // The tallies follow the status as stored, whatever the caller believed it was.
        format!(
            "LET $tally_before = (SELECT status, recent_events FROM ONLY type::record('deployment', $id));
             LET $updated = (UPDATE type::record('deployment', $id) CONTENT object::extend($row, {{ recent_events: {recent} }}) WHERE revision = $rev RETURN VALUE id);
             IF array::len($updated) = 0 {{ THROW 'stale revision' }};
             IF $tally_before.status != $to {{
                 FOR $scope IN [string::concat('s:', $tally_before.status), string::concat('s:', $tally_before.status, '|f:', $framework)] {{
                     UPSERT type::record('deployment_tally', [$scope, $shard]) SET n -= 1 RETURN NONE;
                 }};
                 FOR $scope IN [string::concat('s:', $to), string::concat('s:', $to, '|f:', $framework)] {{
                     UPSERT type::record('deployment_tally', [$scope, $shard]) SET n += 1 RETURN NONE;
                 }};
                 UPSERT type::record('name_listing', [$name, $id]) CONTENT {{ status: $to, framework: $framework }} RETURN NONE;
             }};
             {event}
             {release}"
        )
    }

    /// The deployment as saved when the transaction holding this write committed; `Stale` when its
    /// revision or the lease it was made under was no longer current.
    pub(crate) fn outcome<T>(&self, result: Result<T, StoreError>) -> Result<Deployment, StoreError> {
        match result {
            Ok(_) => Ok(self.saved()),
            Err(StoreError::Unavailable(m)) if m.contains("stale revision") || m.contains("lease lost") => Err(StoreError::Stale),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn vars(&self) -> serde_json::Map<String, serde_json::Value> {
        let d = self.d;
        let serde_json::Value::Object(vars) = json!({
            "id": d.id.as_str(), "row": Row::from(&self.saved()), "rev": d.revision, "name": d.spec.name.as_str(),
            "at": d.updated_at, "from": self.previous.as_str(), "to": d.status.as_str(), "message": self.message,
            "framework": d.spec.framework.as_str(), "shard": tally_shard(), "keep_from": -(RECENT_EVENTS as i64),
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

#[cfg(test)]
mod tests {
    /// The rows every list and lookup reads (`SELECT`) come without the events the record keeps: a page converts
    /// none of them, while the record itself (`select`) keeps them all.
    #[tokio::test]
    async fn list_rows_leave_the_recent_events_out_and_the_record_keeps_them() {
        use crate::core::deployment::GuestType;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("surrealkv://{}", dir.path().join("db").display());
        let cfg = crate::config::DatabaseConfig { url, namespace: "t".into(), database: "t".into(), credentials: None };
        let store = super::super::Store::open(&cfg).await.unwrap();
        let d = crate::export::hcl::tests::deployment("rows", GuestType::Vm, 100);
        store.create_deployment(&d, "created").await.unwrap();
        let rows = store.run(&format!("{} deployment", super::SELECT), serde_json::json!({})).await.unwrap();
        let row = &rows[0][0];
        assert_eq!(row.get("key").and_then(|k| k.as_str()), Some(d.id.as_str()));
        assert!(row.get("recent_events").is_none(), "a list row carries no events: {row}");
        let record = store.select_record("deployment", d.id.as_str()).await.unwrap().unwrap();
        assert_eq!(record["recent_events"].as_array().map(Vec::len), Some(1), "the record keeps its events: {record}");
    }
}
