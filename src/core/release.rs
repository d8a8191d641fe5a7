//! Releases and the deploy plan, as data: a release's id, the steps that take a provisioned guest
//! (or a running app) to a new release, the port each framework serves on, and environment
//! variable names and values that are safe to hand to a guest. Pure; no I/O.

use std::fmt;

use crate::core::deployment::Framework;
use crate::core::names::CommitSha;
use crate::core::validation::FieldError;

/// `20261126T004512Z-1a2b3c4`: when the release was made and the commit it holds; sorts by time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReleaseId(String);

impl ReleaseId {
    pub fn new(now_millis: i64, commit: &CommitSha) -> Self {
        let t = chrono_like(now_millis);
        Self(format!("{t}-{}", &commit.as_str()[..7]))
    }

    /// Accepts only what `new` makes (the guest scripts check the same pattern).
    pub fn parse(raw: &str) -> Option<Self> {
        let (t, sha) = raw.split_once('-')?;
        let t_ok = t.len() == 16 && t.as_bytes()[8] == b'T' && t.ends_with('Z') && t[..8].bytes().chain(t[9..15].bytes()).all(|b| b.is_ascii_digit());
        let sha_ok = (7..=40).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        (t_ok && sha_ok).then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time in milliseconds (UTC; civil-from-days, Howard Hinnant).
fn chrono_like(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// One step of deploying a release. Each can run again after a crash (the guest scripts are idempotent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeployStep {
    /// Wait until the guest answers SSH (with the pinned host key) and cloud-init has finished.
    Boot,
    /// Upload the installer scripts and install the framework's runtime.
    Install,
    /// Clone or fetch the repository at the exact commit into the release directory.
    Fetch,
    /// Install the app's dependencies (pip, composer, npm).
    Dependencies,
    /// Framework build steps (collectstatic, migrations, `npm run build`, caches).
    Build,
    /// Start the release beside the serving one (the other slot) until it answers HTTP on its own port.
    Start,
    /// HTTP check of the started release, on its own port, until it passes or the start deadline passes.
    Health,
    /// Point the front (the app's address) at the release that passed, then stop the one it replaced.
    Switch,
}

impl DeployStep {
    pub const ALL: [DeployStep; 8] = [Self::Boot, Self::Install, Self::Fetch, Self::Dependencies, Self::Build, Self::Start, Self::Health, Self::Switch];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Boot => "boot",
            Self::Install => "install",
            Self::Fetch => "fetch",
            Self::Dependencies => "dependencies",
            Self::Build => "build",
            Self::Start => "start",
            Self::Health => "health",
            Self::Switch => "switch",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The step after this one; `None` after the switch.
    pub fn next(self) -> Option<Self> {
        let i = Self::ALL.iter().position(|s| *s == self)?;
        Self::ALL.get(i + 1).copied()
    }
}

/// The port each framework's app serves on (on the guest's own address).
pub fn app_port(f: Framework) -> u16 {
    match f {
        Framework::Django | Framework::Flask | Framework::Fastapi | Framework::Procfile => 8000,
        Framework::Node | Framework::Nextjs => 3000,
        Framework::Laravel | Framework::Static => 80,
    }
}

/// What one health-check answer means: with an expected status, only that status passes; otherwise
/// any success or redirect does.
pub fn health_passes(status: u16, expected: Option<u16>) -> bool {
    match expected {
        Some(e) => status == e,
        None => (200..400).contains(&status),
    }
}

/// Whether a health-check answer will not change by waiting: a client error (4xx) other than a
/// timeout or a rate limit comes from the app itself, deciding on the request.
pub fn health_answer_is_final(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 408 | 425 | 429)
}

/// What to do about an app answering its health check with `status`, in words, per framework.
pub fn health_hint(f: Framework, status: u16, path: &str) -> Option<String> {
    Some(match (f, status) {
        (Framework::Django, 400) => "Django refuses the guest's address as Host (ALLOWED_HOSTS). In settings.py, read it from the \
             environment: `ALLOWED_HOSTS = os.environ.get(\"DJANGO_ALLOWED_HOSTS\", \"\").split(\",\")` (the agent sets \
             DJANGO_ALLOWED_HOSTS to the guest's address unless the deployment sets it; if it does, include that address), \
             or list the address there"
            .to_string(),
        (Framework::Laravel, 400 | 419) => "Laravel refused the request: check APP_URL and the trusted hosts/proxies for the guest's address".to_string(),
        (Framework::Static, 403 | 404) => "nginx found nothing to serve there: the site needs an index.html at the top of the repository or in its build output (dist/, build/, …)".to_string(),
        (_, 404) => format!("the app has no page at the health path {path}: set the deployment's health_path to one that answers 200"),
        (_, 401 | 403) => format!("the health path {path} needs a login: set the deployment's health_path to a public page"),
        (_, 405) => format!("the health path {path} does not answer GET: set the deployment's health_path to a page that does"),
        _ => return None,
    })
}

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most 128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnvName(String);

impl EnvName {
    pub const RULE: &'static str = "must match [A-Za-z_][A-Za-z0-9_]* and be at most 128 characters";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let mut chars = raw.chars();
        let ok = raw.len() <= 128
            && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new(format!("env.{}", printable(raw)), "env_name", Self::RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An environment variable value: any text without NUL, CR or LF (one line of the env file), at most 32 KiB.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvValue(String);

impl EnvValue {
    pub const RULE: &'static str = "must be at most 32768 bytes without NUL, carriage return or newline characters";

    pub fn parse(name: &EnvName, raw: String) -> Result<Self, FieldError> {
        if raw.len() <= 32_768 && !raw.contains(['\0', '\r', '\n']) {
            Ok(Self(raw))
        } else {
            Err(FieldError::new(format!("env.{}", name.as_str()), "env_value", Self::RULE))
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnvValue(<redacted>)")
    }
}

/// The env file the guest scripts read: `NAME=value` lines, literal, sorted by name.
/// A path inside a release whose data outlives releases (`/srv/<app>/shared/data/<path>`, linked in):
/// relative, `[A-Za-z0-9._-]` components, no `.` or `..`, at most 200 characters; a trailing `/` marks a
/// directory. The rule `check_persist` in `scripts/lib/contract.sh` applies on the guest too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PersistentPath(String);

impl PersistentPath {
    pub const RULE: &'static str = "must be a relative path of [A-Za-z0-9._-] components without . or .., at most 200 characters (a trailing / for a directory)";
    pub const MAX_LEN: usize = 200;
    /// A subset of `RULE` a JSON Schema can state: components not starting with `.` (so never `.` or `..`).
    pub const SCHEMA_PATTERN: &'static str = "^[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*/?$";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let body = raw.strip_suffix('/').unwrap_or(raw);
        let ok = !body.is_empty()
            && raw.len() <= Self::MAX_LEN
            && body.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new("persistent_paths", "persistent_path", Self::RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What keeps its data across releases when a deployment does not say: Django's default SQLite file and
/// `media/`, Laravel's `storage/`.
pub fn default_persistent_paths(f: Framework) -> Vec<PersistentPath> {
    let paths: &[&str] = match f {
        Framework::Django => &["db.sqlite3", "media/"],
        Framework::Laravel => &["storage/"],
        _ => &[],
    };
    paths.iter().map(|p| PersistentPath((*p).into())).collect()
}

/// Where an app's data outlives releases (exported to the app as `DATA_DIR`).
pub fn data_dir(app: &str) -> String {
    format!("/srv/{app}/shared/data")
}

/// What the agent adds to an app's environment unless the deployment sets it: `DATA_DIR` (where data
/// outlives releases) and, for Django, `DJANGO_ALLOWED_HOSTS` with the guest's address (a settings.py that
/// reads it then accepts the requests the health check and users make).
pub fn framework_env(f: Framework, app: &str, ip: std::net::Ipv4Addr, set: &[(EnvName, EnvValue)]) -> Vec<(EnvName, EnvValue)> {
    let mut out = set.to_vec();
    if !set.iter().any(|(n, _)| n.as_str() == "DATA_DIR") {
        out.push((EnvName("DATA_DIR".into()), EnvValue(data_dir(app))));
    }
    if f == Framework::Django && !set.iter().any(|(n, _)| n.as_str() == "DJANGO_ALLOWED_HOSTS") {
        let name = EnvName("DJANGO_ALLOWED_HOSTS".into());
        out.push((name, EnvValue(format!("{ip},localhost,127.0.0.1"))));
    }
    out
}

pub fn env_file(vars: &[(EnvName, EnvValue)]) -> Vec<u8> {
    let mut sorted: Vec<&(EnvName, EnvValue)> = vars.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (n, v) in sorted {
        out.extend_from_slice(n.as_str().as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.expose().as_bytes());
        out.push(b'\n');
    }
    out
}

fn printable(raw: &str) -> String {
    raw.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// What started a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The first deploy after provisioning.
    Deploy,
    /// A GitHub push.
    Push,
    /// A redeploy asked through the HTTP API (or the dashboard).
    Api,
    Discord,
    Schedule,
    Cli,
    Rollback,
    /// A redeploy asked by the agent itself, or recorded before triggers named their door.
    Redeploy,
}

impl Trigger {
    pub const ALL: [Trigger; 8] = [Self::Deploy, Self::Push, Self::Api, Self::Discord, Self::Schedule, Self::Cli, Self::Rollback, Self::Redeploy];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Deploy => "deploy",
            Trigger::Push => "push",
            Trigger::Api => "api",
            Trigger::Discord => "discord",
            Trigger::Schedule => "schedule",
            Trigger::Cli => "cli",
            Trigger::Rollback => "rollback",
            Trigger::Redeploy => "redeploy",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// A redeploy's trigger, from the door it was asked through.
    pub fn redeploy_via(door: crate::core::command::Door) -> Self {
        use crate::core::command::Door;
        match door {
            Door::Api => Trigger::Api,
            Door::Webhook => Trigger::Push,
            Door::Discord => Trigger::Discord,
            Door::Schedule => Trigger::Schedule,
            Door::Cli => Trigger::Cli,
            Door::System => Trigger::Redeploy,
        }
    }

    /// Any deploy after the first (what a notice calls "redeployed").
    pub fn is_redeploy(self) -> bool {
        !matches!(self, Trigger::Deploy | Trigger::Rollback)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseStatus {
    Deploying,
    Active,
    Failed,
    /// Was active; another release replaced it (it can be rolled back to).
    Superseded,
}

impl ReleaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploying => "deploying",
            Self::Active => "active",
            Self::Failed => "failed",
            Self::Superseded => "superseded",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [Self::Deploying, Self::Active, Self::Failed, Self::Superseded].into_iter().find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub deployment: crate::core::deployment::DeploymentId,
    pub id: ReleaseId,
    pub commit: String,
    pub status: ReleaseStatus,
    /// The step to run next (while deploying) or the one it ended at.
    pub step: DeployStep,
    pub trigger: Trigger,
    /// Milliseconds spent in each finished step, in order.
    pub timings: Vec<(String, u64)>,
    pub error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_health_answers_and_their_hints() {
        assert!(health_answer_is_final(400) && health_answer_is_final(404) && health_answer_is_final(403));
        assert!(!health_answer_is_final(429) && !health_answer_is_final(408) && !health_answer_is_final(502) && !health_answer_is_final(200));
        assert!(health_hint(Framework::Django, 400, "/").unwrap().contains("ALLOWED_HOSTS"));
        assert!(health_hint(Framework::Flask, 404, "/healthz").unwrap().contains("/healthz"));
        assert_eq!(health_hint(Framework::Flask, 418, "/"), None);
    }

    #[test]
    fn django_gets_its_allowed_hosts_unless_the_deployment_sets_them() {
        let ip = std::net::Ipv4Addr::new(127, 77, 0, 5);
        let added = framework_env(Framework::Django, "shop", ip, &[]);
        assert_eq!(String::from_utf8(env_file(&added)).unwrap(), "DATA_DIR=/srv/shop/shared/data\nDJANGO_ALLOWED_HOSTS=127.77.0.5,localhost,127.0.0.1\n");
        let (hosts, data) = (EnvName::parse("DJANGO_ALLOWED_HOSTS").unwrap(), EnvName::parse("DATA_DIR").unwrap());
        let own = vec![(hosts.clone(), EnvValue::parse(&hosts, "example.com".into()).unwrap()), (data.clone(), EnvValue::parse(&data, "/data".into()).unwrap())];
        assert_eq!(framework_env(Framework::Django, "shop", ip, &own), own);
        assert_eq!(framework_env(Framework::Flask, "shop", ip, &[]).len(), 1, "DATA_DIR only");
    }

    #[test]
    fn an_expected_status_is_the_only_pass() {
        assert!(health_passes(200, None) && health_passes(302, None) && !health_passes(404, None) && !health_passes(500, None));
        assert!(health_passes(204, Some(204)) && !health_passes(200, Some(204)));
        assert!(health_passes(401, Some(401)), "an app behind a login can say so");
    }

    #[test]
    fn persistent_paths_stay_inside_the_release() {
        for ok in ["db.sqlite3", "media/", "var/uploads", "storage/"] {
            assert_eq!(PersistentPath::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "/", "/etc/passwd", "../up", "a/../b", "a//b", "./x", "a b", "-/x/..", &"a".repeat(201)] {
            assert!(PersistentPath::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(default_persistent_paths(Framework::Django).iter().map(PersistentPath::as_str).collect::<Vec<_>>(), ["db.sqlite3", "media/"]);
    }

    #[test]
    fn release_ids_sort_by_time_and_round_trip() {
        let c = CommitSha::parse("1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d").unwrap();
        let a = ReleaseId::new(1_795_653_912_000, &c); // date -u -d @1795653912: Thu Nov 26 00:45:12 UTC 2026
        assert_eq!(a.as_str(), "20261126T004512Z-1a2b3c4");
        assert_eq!(ReleaseId::new(0, &c).as_str(), "19700101T000000Z-1a2b3c4");
        assert_eq!(ReleaseId::parse(a.as_str()), Some(a.clone()));
        assert!(ReleaseId::new(1_795_653_913_000, &c) > a);
        for bad in ["", "x", "20261126T184512Z-", "20261126T184512Z-XYZ1234", "20261126184512Z-1a2b3c4", "../etc-1a2b3c4"] {
            assert_eq!(ReleaseId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn steps_in_order() {
        let mut s = Some(DeployStep::Boot);
        let mut seen = vec![];
        while let Some(st) = s {
            seen.push(st.as_str());
            assert_eq!(DeployStep::parse(st.as_str()), Some(st));
            s = st.next();
        }
        assert_eq!(seen, ["boot", "install", "fetch", "dependencies", "build", "start", "health", "switch"]);
    }

    #[test]
    fn env_names_and_values() {
        assert!(EnvName::parse("DATABASE_URL").is_ok());
        assert!(EnvName::parse("_x1").is_ok());
        for bad in ["", "1A", "A-B", "A B", "A=B", "ÄB", &"A".repeat(129)] {
            let e = EnvName::parse(bad).unwrap_err();
            assert_eq!(e.rule, "env_name", "{bad}");
        }
        let n = EnvName::parse("SECRET").unwrap();
        assert!(EnvValue::parse(&n, "a$(id)`x` 'q' \"d\" \\n  ".into()).is_ok(), "shell-looking text is just text");
        for bad in ["a\nb", "a\rb", "a\0b"] {
            assert_eq!(EnvValue::parse(&n, bad.into()).unwrap_err().field, "env.SECRET");
        }
        assert_eq!(format!("{:?}", EnvValue::parse(&n, "hunter2".into()).unwrap()), "EnvValue(<redacted>)");
    }

    #[test]
    fn env_file_is_sorted_literal_lines() {
        let v = |n: &str, x: &str| (EnvName::parse(n).unwrap(), EnvValue::parse(&EnvName::parse(n).unwrap(), x.into()).unwrap());
        let f = env_file(&[v("B", "$(id)"), v("A", " spaced ")]);
        assert_eq!(String::from_utf8(f).unwrap(), "A= spaced \nB=$(id)\n");
    }
}
