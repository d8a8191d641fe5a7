//! The API's wire types (OpenAPI objects) and their conversion from and to the core's types.

use poem_openapi::{Enum, Object};

use super::payload::FieldReader;
use crate::core::deployment::{Deployment, Framework, GuestType, RawSpec};
use crate::core::schedule::ScheduleAction;
use crate::core::status::Status;
use crate::core::validation::ValidationErrors;
use crate::core::log::LogLine;
use crate::core::status::Event;

/// A framework, as the API spells it. `remote` makes the one mapping to and from the core's `Framework`, checked
/// exhaustively both ways by the compiler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, serde::Serialize)]
#[oai(rename = "Framework", rename_all = "lowercase", remote = "Framework")]
#[serde(rename_all = "lowercase")]
pub enum FrameworkWire {
    Django,
    Flask,
    Fastapi,
    Laravel,
    Node,
    Nextjs,
    Static,
    Procfile,
}

/// A guest type, as the API spells it (mapped to and from the core's `GuestType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, serde::Serialize)]
#[oai(rename = "GuestType", rename_all = "lowercase", remote = "GuestType")]
#[serde(rename_all = "lowercase")]
pub enum GuestTypeWire {
    Vm,
    Lxc,
}

/// A deployment's lifecycle status, as the API spells it (mapped to and from the core's `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, serde::Serialize)]
#[oai(rename = "DeploymentStatus", rename_all = "lowercase", remote = "Status")]
#[serde(rename_all = "lowercase")]
pub enum StatusWire {
    Pending,
    Provisioning,
    Installing,
    Deploying,
    Running,
    Stopped,
    Failed,
    Destroying,
    Destroyed,
}

/// What a schedule does, as the API spells it (the core's `ScheduleAction` without its `keep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "ScheduleAction", rename_all = "lowercase")]
pub enum ScheduleActionWire {
    Redeploy,
    Snapshot,
    Backup,
    Stop,
    Start,
    Destroy,
    Reconcile,
    Drift,
}

impl From<&ScheduleAction> for ScheduleActionWire {
    fn from(a: &ScheduleAction) -> Self {
        match a {
            ScheduleAction::Redeploy => Self::Redeploy,
            ScheduleAction::Snapshot { .. } => Self::Snapshot,
            ScheduleAction::Backup => Self::Backup,
            ScheduleAction::Stop => Self::Stop,
            ScheduleAction::Start => Self::Start,
            ScheduleAction::Destroy => Self::Destroy,
            ScheduleAction::Reconcile => Self::Reconcile,
            ScheduleAction::Drift => Self::Drift,
        }
    }
}

/// A request to deploy a repository. Every rule (types included) is checked at once: a 422 names every wrong field.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct DeploymentRequest {
    /// A DNS label: 1-63 lowercase letters, digits or hyphens, not starting or ending with a hyphen; unique among live deployments.
    pub name: String,
    /// `https://` URL of the repository on an allowed host (default github.com); no credentials.
    pub repo_url: String,
    /// One of: django, flask, fastapi, laravel, node, nextjs, static, procfile.
    pub framework: FrameworkWire,
    /// `vm` (default) or `lxc`.
    #[oai(rename = "type")]
    pub guest_type: Option<GuestTypeWire>,
    /// Branch to deploy (default `main`); git check-ref-format rules, never starting with `-`.
    pub branch: Option<String>,
    /// CPU cores (default 1; limits 1-8 unless configured otherwise).
    pub cpu: Option<i64>,
    /// Memory in MiB (default 1024; limits 512-16384 unless configured otherwise).
    pub memory_mib: Option<i64>,
    /// Disk in GB (default 10; limits 1-500 unless configured otherwise).
    pub disk_gb: Option<i64>,
    /// Pin the deployment to this Proxmox node; placement chooses when absent.
    pub node: Option<String>,
    /// Redeploy automatically on a GitHub push to the branch (default true).
    pub auto_redeploy: Option<bool>,
    /// Path of the HTTP health check after each deploy (default `/`).
    pub health_path: Option<String>,
    /// Starts the app instead of the framework's own command: a command line like a Procfile's `web:`
    /// line, run on the guest as the app's user by `/bin/sh -c`, with the app's environment. 1-2048
    /// characters, no newline. Ignored for static and laravel (nginx and PHP-FPM serve those).
    pub start_command: Option<String>,
    /// Paths in the repository whose data outlives releases and rollbacks (each linked to
    /// `/srv/<name>/shared/data/<path>`; a trailing `/` for a directory; the app also gets `DATA_DIR`).
    /// Default: django `["db.sqlite3", "media/"]`, laravel `["storage/"]`, others none. At most 20.
    pub persistent_paths: Option<Vec<String>>,
    /// The start limit, in seconds (1-600, default 120): how long a new release may take to answer and pass its
    /// health check (one deadline for both), and how long the check waits after a start.
    pub health_timeout_secs: Option<i64>,
    /// The HTTP status the health check must see (100-599); any 2xx or 3xx when absent.
    pub health_status: Option<i64>,
    /// Path filters (at most 20, e.g. `["api/**", "requirements.txt"]`): a GitHub push to the branch redeploys only
    /// when one of its commits added, modified or removed a matching file (`*` any characters but `/`, `**` any, `?`
    /// one). Absent: every push.
    pub paths: Option<Vec<String>>,
    /// A tag pattern (e.g. `v*`): a GitHub push of a matching tag deploys the tagged commit. Absent: tags never deploy.
    pub deploy_tags: Option<String>,
    /// Pull-request previews (default false): a GitHub pull request against the branch gets a deployment
    /// `<name>-pr-<number>` of its head commit, redeployed on new commits and destroyed when it closes.
    pub previews: Option<bool>,
    /// Previews for pull requests from forks too (default false: their code would run with the app's environment).
    /// Needs `previews: true`.
    pub previews_from_forks: Option<bool>,
    /// A preview still up this many hours after it was made is destroyed (1-720, default 72).
    pub preview_ttl_hours: Option<i64>,
}

/// Reads a deployment request out of a JSON object; wrong types and unknown fields are field errors.
pub fn raw_spec(fields: &serde_json::Map<String, serde_json::Value>) -> (RawSpec, ValidationErrors) {
    let mut r = FieldReader::new(fields);
    let raw = RawSpec {
        name: r.string("name"),
        guest_type: r.string("type"),
        framework: r.string("framework"),
        repo_url: r.string("repo_url"),
        branch: r.string("branch"),
        cpu: r.integer("cpu"),
        memory_mib: r.integer("memory_mib"),
        disk_gb: r.integer("disk_gb"),
        node: r.string("node"),
        auto_redeploy: r.boolean("auto_redeploy"),
        health_path: r.string("health_path"),
        start_command: r.string("start_command"),
        persistent_paths: r.strings("persistent_paths"),
        health_timeout_secs: r.integer("health_timeout_secs"),
        health_status: r.integer("health_status"),
        paths: r.strings("paths"),
        deploy_tags: r.string("deploy_tags"),
        previews: r.boolean("previews"),
        previews_from_forks: r.boolean("previews_from_forks"),
        preview_ttl_hours: r.integer("preview_ttl_hours"),
    };
    (raw, r.finish())
}

/// A deployment as recorded.
#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(skip_serializing_if_is_none)]
pub struct DeploymentView {
    pub id: String,
    pub name: String,
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub guest_type: GuestTypeWire,
    pub framework: FrameworkWire,
    pub repo_url: String,
    pub branch: String,
    pub cpu: u32,
    pub memory_mib: u32,
    pub disk_gb: u32,
    /// The node the request pinned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub auto_redeploy: bool,
    pub health_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_command: Option<String>,
    pub persistent_paths: Vec<String>,
    pub health_timeout_secs: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_status: Option<u16>,
    /// Path filters for GitHub pushes (empty: every push).
    pub paths: Vec<String>,
    /// Tags whose push deploys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy_tags: Option<String>,
    /// Pull-request previews.
    pub previews: bool,
    pub previews_from_forks: bool,
    pub preview_ttl_hours: u32,
    /// pending, provisioning, installing, deploying, running, stopped, failed, destroying or destroyed.
    pub status: StatusWire,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxmox_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxmox_node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// Where the app answers once running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The commit deployed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Where this deployment's Terraform export lives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terraform_output: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<String>,
}

pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

impl From<&Deployment> for DeploymentView {
    fn from(d: &Deployment) -> Self {
        let s = &d.spec;
        DeploymentView {
            id: d.id.to_string(),
            name: s.name.to_string(),
            guest_type: s.guest_type.into(),
            framework: s.framework.into(),
            repo_url: s.repo_url.to_string(),
            branch: s.branch.to_string(),
            cpu: s.cpu,
            memory_mib: s.memory_mib,
            disk_gb: s.disk_gb,
            node: s.node.as_ref().map(ToString::to_string),
            auto_redeploy: s.auto_redeploy,
            health_path: s.health_path.as_str().into(),
            start_command: s.start_command.as_ref().map(|c| c.as_str().to_string()),
            persistent_paths: s.persistent_paths.iter().map(|p| p.as_str().to_string()).collect(),
            health_timeout_secs: s.health_timeout_secs,
            health_status: s.health_status,
            paths: s.paths.iter().map(|p| p.as_str().to_string()).collect(),
            deploy_tags: s.deploy_tags.as_ref().map(|t| t.as_str().to_string()),
            previews: s.previews,
            previews_from_forks: s.previews_from_forks,
            preview_ttl_hours: s.preview_ttl_hours,
            status: d.status.into(),
            proxmox_id: d.proxmox_id.map(|v| v.get()),
            proxmox_node: d.proxmox_node.as_ref().map(ToString::to_string),
            ip_address: d.ip_address.map(|ip| ip.to_string()),
            url: d.url.clone(),
            commit: d.commit.as_ref().map(ToString::to_string),
            error_message: d.error_message.clone(),
            terraform_output: d.terraform_output.clone(),
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
            deployed_at: d.deployed_at.map(rfc3339),
        }
    }
}

/// A deployment with its status history.
#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(skip_serializing_if_is_none)]
pub struct DeploymentDetail {
    #[oai(flatten)]
    #[serde(flatten)]
    pub deployment: DeploymentView,
    pub events: Vec<EventView>,
}

#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(skip_serializing_if_is_none)]
pub struct EventView {
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
    pub message: String,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        EventView { at: rfc3339(e.at), from: e.from.clone(), to: e.to.clone(), message: e.message.clone() }
    }
}

/// One page of deployments.
#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(skip_serializing_if_is_none)]
pub struct DeploymentPage {
    pub items: Vec<DeploymentView>,
    /// How many deployments match the filters in all.
    pub total: u64,
    pub limit: u32,
    pub offset: u32,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The offset of the next page when paging by `offset`; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u32>,
}

/// One line of a deployment's log.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct LogLineView {
    /// The read cursor: pass it as `after` to read on.
    pub seq: i64,
    pub ts: String,
    /// debug, info, warn or error.
    pub level: String,
    /// The pipeline step that wrote it (request, provision, install, deploy, health, destroy, …).
    pub step: String,
    pub text: String,
}

impl From<LogLine> for LogLineView {
    fn from(l: LogLine) -> Self {
        LogLineView { seq: l.seq, ts: rfc3339(l.ts), level: l.level.as_str().into(), step: l.step, text: l.text }
    }
}

#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct LogPage {
    pub lines: Vec<LogLineView>,
    /// Pass as `after` to get the lines that follow.
    pub next_after: i64,
}

#[cfg(test)]
mod tests {
    use poem_openapi::registry::Registry;
    use poem_openapi::types::{ToJSON, Type};

    use super::*;

    fn items<T: Type>() -> Vec<String> {
        let mut r = Registry::new();
        T::register(&mut r);
        r.schemas[&*T::name()].enum_items.iter().map(|v| v.as_str().unwrap().to_string()).collect()
    }

    /// What `Serialized` writes with `serde` is the JSON poem-openapi builds (`ToJSON`) for the answers sent that
    /// way: a deployment with every optional field and with none, every status, framework and guest type, a page
    /// with and without its cursors, a detail with events with and without `from`.
    #[test]
    fn serde_writes_what_poem_openapi_builds() {
        use crate::api::serialized::tests::same_json;
        let bare = DeploymentView::from(&crate::export::hcl::tests::deployment("bare", GuestType::Vm, 100));
        // Every field by name: a field added to the type is not compiled here until the test gives it a value.
        let full = DeploymentView {
            id: "0190f3a2-7c4e-7a1b-9c3d-2e4f5a6b7c8e".into(),
            name: "full".into(),
            guest_type: GuestTypeWire::Lxc,
            framework: FrameworkWire::Django,
            repo_url: "https://github.com/octo/shop".into(),
            branch: "main".into(),
            cpu: 2,
            memory_mib: 2048,
            disk_gb: 16,
            node: Some("pve2".into()),
            auto_redeploy: false,
            health_path: "/healthz".into(),
            start_command: Some("gunicorn app:app".into()),
            persistent_paths: vec!["media/".into(), "db.sqlite3".into()],
            health_timeout_secs: 300,
            health_status: Some(204),
            paths: vec!["src/**".into()],
            deploy_tags: Some("v*".into()),
            previews: true,
            previews_from_forks: true,
            preview_ttl_hours: 24,
            status: StatusWire::Running,
            proxmox_id: Some(101),
            proxmox_node: Some("pve1".into()),
            ip_address: Some("127.0.3.7".into()),
            url: Some("http://127.0.3.7/".into()),
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            error_message: Some("a \"quoted\" line\nand another ✓".into()),
            terraform_output: Some("exports/full.tf".into()),
            created_at: rfc3339(1_700_000_000_000),
            updated_at: rfc3339(1_700_000_000_001),
            deployed_at: Some(rfc3339(1_700_000_000_123)),
        };
        let none_optional = DeploymentView { proxmox_id: None, proxmox_node: None, ..bare.clone() };
        for view in [&bare, &full, &none_optional] {
            same_json(view);
        }
        let mut views = vec![bare.clone(), full.clone()];
        for s in Status::ALL {
            views.push(DeploymentView { status: s.into(), ..bare.clone() });
        }
        for f in Framework::ALL {
            views.push(DeploymentView { framework: f.into(), ..full.clone() });
        }
        for g in GuestType::ALL {
            views.push(DeploymentView { guest_type: g.into(), ..bare.clone() });
        }
        let page = DeploymentPage { items: views, total: 100_000, limit: 100, offset: 0, next_cursor: Some("0190f3a2-7c4e-7a1b-9c3d-2e4f5a6b7c8d".into()), next_offset: Some(100) };
        same_json(&page);
        same_json(&DeploymentPage { items: vec![], total: 0, limit: 20, offset: 40, next_cursor: None, next_offset: None });
        let events = vec![
            EventView { at: rfc3339(0), from: None, to: "pending".into(), message: "created".into() },
            EventView { at: rfc3339(1_700_000_000_000), from: Some("pending".into()), to: "provisioning".into(), message: "placed on pve1".into() },
        ];
        same_json(&DeploymentDetail { deployment: full, events });
        same_json(&DeploymentDetail { deployment: bare, events: vec![] });
    }

    /// Each wire enum spells every core variant as the core does, and has no other item.
    #[test]
    fn wire_enums_spell_the_core_names() {
        let name = |v: Option<serde_json::Value>| v.unwrap().as_str().unwrap().to_string();
        assert_eq!(items::<FrameworkWire>(), Framework::ALL.map(|f| f.as_str()));
        assert!(Framework::ALL.iter().all(|f| name(FrameworkWire::from(*f).to_json()) == f.as_str()));
        assert_eq!(items::<GuestTypeWire>(), GuestType::ALL.map(|g| g.as_str()));
        assert!(GuestType::ALL.iter().all(|g| name(GuestTypeWire::from(*g).to_json()) == g.as_str()));
        assert_eq!(items::<StatusWire>(), Status::ALL.map(|s| s.as_str()));
        assert!(Status::ALL.iter().all(|s| name(StatusWire::from(*s).to_json()) == s.as_str()));
        assert_eq!(items::<ScheduleActionWire>(), ScheduleAction::NAMES);
        for n in ScheduleAction::NAMES {
            let a = ScheduleAction::parse(n, (n == "snapshot").then_some(1)).unwrap();
            assert_eq!(name(ScheduleActionWire::from(&a).to_json()), n);
        }
    }
}
