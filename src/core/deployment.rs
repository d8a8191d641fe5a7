//! A deployment: what was asked for (`Spec`, parsed from a raw request) and what exists (`Deployment`).

use crate::core::glob::Glob;
use std::fmt;
use std::net::Ipv4Addr;

use crate::core::limits::{Limits, RepoPolicy};
use crate::core::names::{AppName, CommitSha, GitRef, HealthPath, NodeName, StartCommand, VmId};
use crate::core::release::PersistentPath;
use crate::core::repo::RepoUrl;
use crate::core::spelling::string_enum;
use crate::core::status::Status;
use crate::core::validation::{FieldError, ValidationErrors};

/// Opaque deployment id (a UUIDv7, so ids sort by creation time).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeploymentId(String);

impl DeploymentId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// Accepts only the canonical hyphenated UUID form we hand out.
    pub fn parse(raw: &str) -> Option<Self> {
        let u = uuid::Uuid::try_parse(raw).ok()?;
        (u.hyphenated().to_string() == raw).then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_enum! {
    /// What a deployment's guest is: a QEMU VM or an LXC container.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum GuestType for "type" {
        Vm = "vm",
        Lxc = "lxc",
    }
}

string_enum! {
    /// How the app is built and started (`scripts/lib/frameworks.sh`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Framework for "framework" {
        Django = "django",
        Flask = "flask",
        Fastapi = "fastapi",
        Laravel = "laravel",
        Node = "node",
        Nextjs = "nextjs",
        Static = "static",
        Procfile = "procfile",
    }
}

/// A deployment request as any door hands it over, before parsing. Every field is optional so
/// that a missing field is reported like a wrong one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSpec {
    pub name: Option<String>,
    pub guest_type: Option<String>,
    pub framework: Option<String>,
    pub repo_url: Option<String>,
    pub branch: Option<String>,
    pub cpu: Option<i64>,
    pub memory_mib: Option<i64>,
    pub disk_gb: Option<i64>,
    pub node: Option<String>,
    pub auto_redeploy: Option<bool>,
    pub health_path: Option<String>,
    pub start_command: Option<String>,
    /// `None`: the framework's defaults (`release::default_persistent_paths`).
    pub persistent_paths: Option<Vec<String>>,
    pub health_timeout_secs: Option<i64>,
    pub health_status: Option<i64>,
    /// Path filters: a push redeploys only when it touches a file matching one (none: every push).
    pub paths: Option<Vec<String>>,
    /// Tags whose push deploys the tagged commit (none: tags never deploy).
    pub deploy_tags: Option<String>,
    /// Pull requests get a preview deployment `<name>-pr-<n>` (default false).
    pub previews: Option<bool>,
    /// Pull requests from forks get previews too (default false: their code would run with the app's environment).
    pub previews_from_forks: Option<bool>,
    /// A preview is destroyed this many hours after it was created, if its pull request has not closed by then.
    pub preview_ttl_hours: Option<i64>,
}

/// A deployment request that passed every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: AppName,
    pub guest_type: GuestType,
    pub framework: Framework,
    pub repo_url: RepoUrl,
    pub branch: GitRef,
    pub cpu: u32,
    pub memory_mib: u32,
    pub disk_gb: u32,
    /// A node the request pins; placement chooses when `None`.
    pub node: Option<NodeName>,
    pub auto_redeploy: bool,
    /// Where the health check asks the app (`/` by default).
    pub health_path: HealthPath,
    /// Starts the app instead of the framework's own command.
    pub start_command: Option<StartCommand>,
    /// Paths in a release whose data outlives releases (linked to `/srv/<app>/shared/data/…`).
    pub persistent_paths: Vec<PersistentPath>,
    /// How long the health check may wait for the app, in seconds (1-600, default 120).
    pub health_timeout_secs: u32,
    /// The status the health check must see; any 2xx or 3xx when `None`.
    pub health_status: Option<u16>,
    /// A push to the branch redeploys only when one of its files matches one of these (empty: every push).
    pub paths: Vec<Glob>,
    /// A pushed tag matching this deploys the tagged commit.
    pub deploy_tags: Option<Glob>,
    /// Pull requests against the branch get a preview deployment (`core::preview`).
    pub previews: bool,
    /// Pull requests from forks get previews too.
    pub previews_from_forks: bool,
    /// The TTL backstop: a preview is destroyed this long after it was created.
    pub preview_ttl_hours: u32,
}

/// The most persistent paths a deployment takes.
pub const MAX_PERSISTENT_PATHS: usize = 20;

/// The range of `health_status` (an HTTP status).
pub const HEALTH_STATUS: std::ops::RangeInclusive<u32> = 100..=599;

/// The most path filters a deployment takes.
pub const MAX_PATH_FILTERS: usize = 20;

/// The default and the range of `health_timeout_secs`.
pub const HEALTH_TIMEOUT_SECS: (u32, std::ops::RangeInclusive<u32>) = (120, 1..=600);

pub const DEFAULT_BRANCH: &str = "main";

/// The default and the range of `preview_ttl_hours` (up to 30 days).
pub const PREVIEW_TTL_HOURS: (u32, std::ops::RangeInclusive<u32>) = (72, 1..=720);

impl Spec {
    /// Parses every field and reports every failure at once.
    pub fn parse(raw: RawSpec, limits: &Limits, repos: &RepoPolicy) -> Result<Spec, ValidationErrors> {
        let mut errs = ValidationErrors::default();
        let required = |field: &'static str, v: Option<String>| v.ok_or_else(|| FieldError::new(field, "required", "is required"));
        let name = errs.take(required("name", raw.name).and_then(|s| AppName::parse(&s)));
        let guest_type = errs.take(GuestType::parse(raw.guest_type.as_deref().unwrap_or("vm")));
        let framework = errs.take(required("framework", raw.framework).and_then(|s| Framework::parse(&s)));
        let repo_url = errs.take(required("repo_url", raw.repo_url).and_then(|s| RepoUrl::parse(&s, repos)));
        let branch = errs.take(GitRef::parse_with(raw.branch.as_deref().unwrap_or(DEFAULT_BRANCH), &limits.branch_pattern));
        // An omitted size is the default brought within the configured limits, so leaving it out is never wrong.
        let cpu = errs.take(in_range("cpu", raw.cpu.unwrap_or_else(|| within(1, &limits.cpu)), &limits.cpu, "CPU cores"));
        let memory_mib = errs.take(in_range("memory_mib", raw.memory_mib.unwrap_or_else(|| within(1024, &limits.memory_mib)), &limits.memory_mib, "MiB"));
        let disk_gb = errs.take(in_range("disk_gb", raw.disk_gb.unwrap_or_else(|| within(10, &limits.disk_gb)), &limits.disk_gb, "GB"));
        let health_path = errs.take(raw.health_path.as_deref().map(HealthPath::parse).unwrap_or_else(|| Ok(HealthPath::root())));
        let persistent_paths = match (raw.persistent_paths, framework) {
            (Some(paths), _) if paths.len() > MAX_PERSISTENT_PATHS => {
                errs.push(FieldError::new("persistent_paths", "count", format!("must hold at most {MAX_PERSISTENT_PATHS} paths")));
                None
            }
            (Some(paths), _) => {
                let parsed: Vec<Option<PersistentPath>> = paths
                    .iter()
                    .enumerate()
                    .map(|(i, p)| errs.take(PersistentPath::parse(p).map_err(|e| FieldError::new(format!("persistent_paths[{i}]"), e.rule, e.message))))
                    .collect();
                parsed.into_iter().collect::<Option<Vec<_>>>()
            }
            (None, Some(f)) => Some(crate::core::release::default_persistent_paths(f)),
            (None, None) => None,
        };
        let paths = match raw.paths {
            Some(paths) if paths.len() > MAX_PATH_FILTERS => {
                errs.push(FieldError::new("paths", "count", format!("must hold at most {MAX_PATH_FILTERS} patterns")));
                None
            }
            Some(paths) => {
                let parsed: Vec<Option<Glob>> =
                    paths.iter().enumerate().map(|(i, p)| errs.take(Glob::parse(p).map_err(|e| FieldError::new(format!("paths[{i}]"), e.rule, e.message)))).collect();
                parsed.into_iter().collect::<Option<Vec<_>>>()
            }
            None => Some(vec![]),
        };
        let deploy_tags = match raw.deploy_tags {
            Some(t) => errs.take(Glob::parse(&t).map_err(|e| FieldError::new("deploy_tags", e.rule, e.message))).map(Some),
            None => Some(None),
        };
        let preview_ttl_hours = errs.take(in_range("preview_ttl_hours", raw.preview_ttl_hours.unwrap_or(i64::from(PREVIEW_TTL_HOURS.0)), &PREVIEW_TTL_HOURS.1, "hours"));
        let previews = raw.previews.unwrap_or(false);
        let previews_from_forks = raw.previews_from_forks.unwrap_or(false);
        if previews_from_forks && !previews {
            errs.push(FieldError::new("previews_from_forks", "requires_previews", "needs `previews: true` (it only widens which pull requests get a preview)"));
        }
        let health_timeout_secs = errs.take(in_range("health_timeout_secs", raw.health_timeout_secs.unwrap_or(i64::from(HEALTH_TIMEOUT_SECS.0)), &HEALTH_TIMEOUT_SECS.1, "seconds"));
        let health_status = match raw.health_status {
            Some(s) => errs.take(in_range("health_status", s, &HEALTH_STATUS, "(an HTTP status)").map(|s| Some(s as u16))),
            None => Some(None),
        };
        let start_command = match raw.start_command {
            Some(c) => errs.take(StartCommand::parse(&c)).map(Some),
            None => Some(None),
        };
        let node = match raw.node {
            Some(n) => errs.take(NodeName::parse(&n)).map(Some),
            None => Some(None),
        };
        match (name, guest_type, framework, repo_url, branch, cpu, memory_mib, disk_gb, node, health_path, start_command, persistent_paths, health_timeout_secs, health_status, paths, deploy_tags, preview_ttl_hours) {
            (
                Some(name),
                Some(guest_type),
                Some(framework),
                Some(repo_url),
                Some(branch),
                Some(cpu),
                Some(memory_mib),
                Some(disk_gb),
                Some(node),
                Some(health_path),
                Some(start_command),
                Some(persistent_paths),
                Some(health_timeout_secs),
                Some(health_status),
                Some(paths),
                Some(deploy_tags),
                Some(preview_ttl_hours),
            ) if errs.is_empty() => Ok(Spec {
                name,
                guest_type,
                framework,
                repo_url,
                branch,
                cpu,
                memory_mib,
                disk_gb,
                node,
                auto_redeploy: raw.auto_redeploy.unwrap_or(true),
                health_path,
                start_command,
                persistent_paths,
                health_timeout_secs,
                health_status,
                paths,
                deploy_tags,
                previews,
                previews_from_forks,
                preview_ttl_hours,
            }),
            _ => Err(errs),
        }
    }
}

/// `default` brought within `range`.
fn within(default: u32, range: &std::ops::RangeInclusive<u32>) -> i64 {
    i64::from(default.clamp(*range.start(), *range.end()))
}

fn in_range(field: &'static str, v: i64, range: &std::ops::RangeInclusive<u32>, unit: &str) -> Result<u32, FieldError> {
    match u32::try_from(v) {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(FieldError::new(field, "range", format!("must be between {} and {} {unit}", range.start(), range.end()))),
    }
}

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// A deployment as recorded: the spec plus everything learned while realising it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: DeploymentId,
    pub spec: Spec,
    pub status: Status,
    pub proxmox_id: Option<VmId>,
    pub proxmox_node: Option<NodeName>,
    /// The guest's IPv4 address, once known.
    pub ip_address: Option<Ipv4Addr>,
    pub url: Option<String>,
    /// The commit the live release serves.
    pub commit: Option<CommitSha>,
    pub error_message: Option<String>,
    pub terraform_output: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub deployed_at: Option<Millis>,
    /// Bumped on every write; a write based on an older revision is refused (optimistic concurrency).
    pub revision: i64,
}

impl Deployment {
    pub fn new(spec: Spec, now: Millis) -> Self {
        Self {
            id: DeploymentId::generate(),
            spec,
            status: Status::Pending,
            proxmox_id: None,
            proxmox_node: None,
            ip_address: None,
            url: None,
            commit: None,
            error_message: None,
            terraform_output: None,
            created_at: now,
            updated_at: now,
            deployed_at: None,
            revision: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawSpec {
        RawSpec {
            name: Some("app".into()),
            framework: Some("flask".into()),
            repo_url: Some("https://github.com/o/r".into()),
            ..RawSpec::default()
        }
    }

    #[test]
    fn defaults_fill_the_optional_fields() {
        let s = Spec::parse(raw(), &Limits::default(), &RepoPolicy::default()).unwrap();
        assert_eq!((s.guest_type, s.branch.as_str(), s.cpu, s.memory_mib, s.disk_gb), (GuestType::Vm, "main", 1, 1024, 10));
    }

    #[test]
    fn a_start_command_is_one_line() {
        let with = |c: &str| Spec::parse(RawSpec { start_command: Some(c.into()), ..raw() }, &Limits::default(), &RepoPolicy::default());
        let s = with("gunicorn -b \"$BIND:$PORT\" 'app:create()' $(never-run-here)").unwrap();
        assert_eq!(s.start_command.unwrap().as_str(), "gunicorn -b \"$BIND:$PORT\" 'app:create()' $(never-run-here)");
        for bad in ["", "  ", "a\nb", "a\rb", "a\0b", &"x".repeat(2049)] {
            let e = with(bad).unwrap_err();
            assert_eq!((e.0[0].field.as_str(), e.0[0].rule), ("start_command", "start_command"), "{bad:?}");
        }
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let r = RawSpec { name: Some("Bad_Name".into()), cpu: Some(99), memory_mib: Some(1), guest_type: Some("kvm".into()), ..RawSpec::default() };
        let e = Spec::parse(r, &Limits::default(), &RepoPolicy::default()).unwrap_err();
        let fields: Vec<&str> = e.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["name", "type", "framework", "repo_url", "cpu", "memory_mib"]);
    }

    #[test]
    fn previews_are_off_by_default_and_their_options_are_checked() {
        let s = Spec::parse(raw(), &Limits::default(), &RepoPolicy::default()).unwrap();
        assert_eq!((s.previews, s.previews_from_forks, s.preview_ttl_hours), (false, false, 72));
        let with = |p: Option<bool>, f: Option<bool>, ttl: Option<i64>| Spec::parse(RawSpec { previews: p, previews_from_forks: f, preview_ttl_hours: ttl, ..raw() }, &Limits::default(), &RepoPolicy::default());
        let s = with(Some(true), Some(true), Some(720)).unwrap();
        assert_eq!((s.previews, s.previews_from_forks, s.preview_ttl_hours), (true, true, 720));
        for (p, f, ttl, field) in [(Some(true), None, Some(0), "preview_ttl_hours"), (Some(true), None, Some(721), "preview_ttl_hours"), (Some(true), None, Some(-1), "preview_ttl_hours"), (None, Some(true), None, "previews_from_forks"), (Some(false), Some(true), None, "previews_from_forks")] {
            let e = with(p, f, ttl).unwrap_err();
            assert_eq!(e.0.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(), [field], "{p:?} {f:?} {ttl:?}");
        }
    }
}
