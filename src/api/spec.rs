//! The OpenAPI document as served: poem-openapi's, plus every rule the validators apply that JSON Schema can state
//! (patterns, lengths, ranges, enums, item counts), read from the same constants and configured limits the
//! validators read, so that a schema-driven client sends what the server accepts (issue #22). The request types are
//! documentation only (`payload::JsonObject` reads fields itself and answers a 422 naming each), so the rules are
//! added here, once, instead of being restated beside each field. Where a rule cannot be stated exactly without
//! look-around (git's ref rules, cron, a start command's bytes), the document states a subset: every value it
//! allows is accepted. What no schema can say (a name already taken, a deployment that must exist, a repository
//! that must answer, `keep` only with `snapshot`, `previews_from_forks` only with `previews`) is said in the fields' descriptions and answered with a 422.

use serde_json::{json, Value};

use crate::core::deployment::{HEALTH_STATUS, HEALTH_TIMEOUT_SECS, MAX_PATH_FILTERS, MAX_PERSISTENT_PATHS, PREVIEW_TTL_HOURS};
use crate::core::glob::Glob;
use crate::core::limits::{Limits, RepoPolicy, RepoScheme};
use crate::core::names::{AppName, AppNamePrefix, CommitSha, GitRef, HealthPath, NodeName, StartCommand};
use crate::core::release::PersistentPath;
use crate::core::schedule::CronExpr;

/// What the validators are configured with.
pub struct Facts<'a> {
    pub limits: &'a Limits,
    pub repos: &'a RepoPolicy,
    pub max_page_size: u32,
}

/// RFC 3339 UTC times from 2100 on, every day of which exists.
const FUTURE_TIME: &str = "^2[1-9][0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z$";

/// Rules on whole objects: (schema, constraints).
fn whole_object_rules() -> Vec<(&'static str, Value)> {
    // Exactly one of `expires_at` or `ttl_seconds` (unknown fields are refused, so counting members says it).
    vec![("ExpiryRequest", json!({ "minProperties": 1, "maxProperties": 1 }))]
}

/// The rules each object's fields carry: (schema, property, constraints).
fn object_rules(f: &Facts) -> Vec<(&'static str, &'static str, Value)> {
    let l = f.limits;
    let range = |r: &std::ops::RangeInclusive<u32>| json!({ "minimum": r.start(), "maximum": r.end() });
    vec![
        ("DeploymentRequest", "name", json!({ "pattern": AppName::PATTERN, "minLength": 1, "maxLength": AppName::MAX_LEN })),
        ("DeploymentRequest", "repo_url", json!({ "pattern": repo_url_pattern(f.repos), "maxLength": 2048 })),
        ("DeploymentRequest", "branch", json!({ "pattern": l.branch_pattern.schema_pattern(), "minLength": 1, "maxLength": GitRef::MAX_LEN })),
        ("DeploymentRequest", "cpu", range(&l.cpu)),
        ("DeploymentRequest", "memory_mib", range(&l.memory_mib)),
        ("DeploymentRequest", "disk_gb", range(&l.disk_gb)),
        ("DeploymentRequest", "node", json!({ "pattern": NodeName::PATTERN, "minLength": 1, "maxLength": 63 })),
        ("DeploymentRequest", "health_path", json!({ "pattern": HealthPath::PATTERN, "minLength": 1, "maxLength": HealthPath::MAX_LEN })),
        ("DeploymentRequest", "start_command", json!({ "pattern": StartCommand::PATTERN, "minLength": 1, "maxLength": StartCommand::MAX_LEN })),
        (
            "DeploymentRequest",
            "persistent_paths",
            json!({ "maxItems": MAX_PERSISTENT_PATHS, "items": { "pattern": PersistentPath::SCHEMA_PATTERN, "minLength": 1, "maxLength": PersistentPath::MAX_LEN } }),
        ),
        ("DeploymentRequest", "health_timeout_secs", range(&HEALTH_TIMEOUT_SECS.1)),
        ("DeploymentRequest", "health_status", range(&HEALTH_STATUS)),
        ("DeploymentRequest", "paths", json!({ "maxItems": MAX_PATH_FILTERS, "items": { "pattern": Glob::SCHEMA_PATTERN, "minLength": 1, "maxLength": Glob::MAX_LEN } })),
        ("DeploymentRequest", "preview_ttl_hours", range(&PREVIEW_TTL_HOURS.1)),
        ("DeploymentRequest", "deploy_tags", json!({ "pattern": Glob::SCHEMA_PATTERN, "minLength": 1, "maxLength": Glob::MAX_LEN })),
        ("RestoreAsNew", "name", json!({ "pattern": AppName::PATTERN, "minLength": 1, "maxLength": AppName::MAX_LEN })),
        ("SnapshotRequest", "name", json!({ "pattern": NEW_SNAPSHOT })),
        ("SnapshotRequest", "description", json!({ "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$", "maxLength": crate::core::snapshot::MAX_NOTE })),
        // Values: one line, at most 32 KiB (8,192 characters is what the document can promise: 4 bytes each at most).
        ("EnvRequest", "vars", json!({ "maxProperties": 200, "additionalProperties": { "type": "string", "pattern": "^[^\\x00\\r\\n]*$", "maxLength": 8192 } })),
        ("ScheduleRequest", "cron", json!({ "pattern": CronExpr::SCHEMA_PATTERN, "maxLength": 200 })),
        ("ScheduleRequest", "timezone", json!({ "enum": crate::core::schedule::Zone::names() })),
        ("ScheduleRequest", "keep", json!({ "minimum": 1, "maximum": crate::core::schedule::MAX_KEEP })),
        ("ExpiryRequest", "ttl_seconds", json!({ "minimum": 1, "maximum": super::schedules::MAX_TTL_SECS })),
        // "In the future": times from the year 2100 on (a subset; any later RFC 3339 time is accepted too).
        ("ExpiryRequest", "expires_at", json!({ "format": "date-time", "pattern": FUTURE_TIME })),
    ]
}

/// A snapshot that exists (Proxmox VE's `pve-configid` rule), minus names starting with `c` so that `current`,
/// which is not a snapshot, is left out without look-around.
const EXISTING_SNAPSHOT: &str = "^[A-BD-Za-bd-z][A-Za-z0-9_-]{1,39}$";
/// A snapshot a user takes: as above, and not starting with `p` either (`pvd-…` names are the schedules').
const NEW_SNAPSHOT: &str = "^[A-BD-OQ-Za-bd-oq-z][A-Za-z0-9_-]{1,39}$";
/// A deployment id as `next_cursor` gives it (a canonical UUID).
const UUID: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

/// The rules each operation's query and path parameters carry: (operation id, parameter, constraints).
fn parameter_rules(f: &Facts) -> Vec<(&'static str, &'static str, Value)> {
    let page = json!({ "minimum": 1, "maximum": f.max_page_size });
    vec![
        ("list_deployments", "after", json!({ "pattern": UUID })),
        ("deployment_terraform", "format", json!({ "enum": ["json", "tar.gz"] })),
        ("list_webhook_deliveries", "limit", page.clone()),
        ("list_webhook_deliveries", "outcome", json!({ "enum": crate::core::webhook::Outcome::ALL.iter().map(|o| o.as_str()).collect::<Vec<_>>() })),
        ("list_webhook_deliveries", "event", json!({ "pattern": crate::core::webhook::EVENT_NAME_PATTERN })),
        ("list_webhook_deliveries", "repo", json!({ "minLength": 1, "maxLength": 200 })),
        ("get_webhook_delivery", "delivery", json!({ "pattern": "^[A-Za-z0-9-]{1,64}$" })),
        ("delete_snapshot", "name", json!({ "pattern": EXISTING_SNAPSHOT })),
        ("rollback_snapshot", "name", json!({ "pattern": EXISTING_SNAPSHOT })),
        ("delete_backup", "name", json!({ "pattern": crate::core::backup::BackupId::NAME_PATTERN })),
        ("restore_backup", "name", json!({ "pattern": crate::core::backup::BackupId::NAME_PATTERN })),
        ("list_deployments", "status", json!({ "$ref": "#/components/schemas/DeploymentStatus" })),
        ("list_deployments", "framework", json!({ "$ref": "#/components/schemas/Framework" })),
        ("list_deployments", "name", json!({ "pattern": AppNamePrefix::PATTERN, "minLength": 1, "maxLength": 63 })),
        ("list_deployments", "limit", page.clone()),
        ("list_schedules", "limit", page.clone()),
        ("list_schedule_runs", "limit", page.clone()),
        ("audit", "limit", page),
        ("redeploy_deployment", "commit", json!({ "pattern": CommitSha::PATTERN })),
        ("deployment_logs", "limit", json!({ "minimum": 1, "maximum": 1000 })),
        ("deployment_logs", "tail", json!({ "minimum": 1, "maximum": 1000 })),
    ]
}

/// A pattern for the repository URLs the policy accepts: an allowed scheme (http or https; ssh forms are left
/// out, a subset) and host, then `owner/repo[/…]` of segments that cannot be `.`, `..` or option-like.
fn repo_url_pattern(p: &RepoPolicy) -> String {
    let schemes: Vec<&str> = p.schemes.iter().filter(|s| **s != RepoScheme::Ssh).map(|s| s.as_str()).collect();
    let escape = |h: &str| h.chars().map(|c| if matches!(c, '.' | '[' | ']') { format!("\\{c}") } else { c.to_string() }).collect::<String>();
    let hosts: Vec<String> = p.allowed_hosts.iter().map(|h| escape(h)).collect();
    let segment = "[A-Za-z0-9_~][A-Za-z0-9_.~-]{0,99}";
    if schemes.is_empty() {
        // ssh only: `ssh://git@host/owner/repo`.
        return format!("^ssh://git@(?:{})/{segment}(?:/{segment})+$", hosts.join("|"));
    }
    format!("^(?:{})://(?:{})/{segment}(?:/{segment})+$", schemes.join("|"), hosts.join("|"))
}

/// Adds every constraint of `rule` to `schema` (into `items` for an array's items).
fn merge(schema: &mut Value, rule: &Value) {
    let (Some(target), Some(rule)) = (schema.as_object_mut(), rule.as_object()) else { return };
    for (k, v) in rule {
        if k == "items" {
            if let Some(items) = target.get_mut("items") {
                merge(items, v);
            }
        } else if k == "$ref" {
            // A parameter typed by a named enum: the reference replaces the plain string type.
            target.retain(|key, _| key != "type" && key != "format");
            target.insert(k.clone(), v.clone());
        } else {
            target.insert(k.clone(), v.clone());
        }
    }
}

/// Every unsigned integer (poem writes `format: uint32`, never a minimum) starts at 0: a negative `offset` is not a
/// number the server parses.
fn unsigned_from_zero(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let max = match m.get("format").and_then(Value::as_str) {
                Some("uint32") => Some(u64::from(u32::MAX)),
                Some("uint16") => Some(u64::from(u16::MAX)),
                Some("uint64") => Some(u64::MAX),
                _ => None,
            };
            if let Some(max) = max {
                m.entry("minimum").or_insert(json!(0));
                m.entry("maximum").or_insert(json!(max));
            }
            m.values_mut().for_each(unsigned_from_zero);
        }
        Value::Array(a) => a.iter_mut().for_each(unsigned_from_zero),
        _ => {}
    }
}

/// Every JSON request body is read by `payload::FieldReader`, which refuses a field it does not know: each body's
/// object says so (`additionalProperties: false`).
fn closed_request_bodies(v: &mut Value) {
    let mut bodies = Vec::new();
    for item in v["paths"].as_object().into_iter().flat_map(|p| p.values()) {
        for op in item.as_object().into_iter().flat_map(|m| m.values()) {
            for media in op["requestBody"]["content"].as_object().into_iter().flat_map(|c| c.values()) {
                if let Some(r) = media["schema"]["$ref"].as_str() {
                    bodies.push(r.trim_start_matches('#').to_string());
                }
            }
        }
    }
    // The objects a body holds (`as_new` of a restore) are read field by field too: closed as well.
    let mut seen = std::collections::HashSet::new();
    while let Some(pointer) = bodies.pop() {
        if !seen.insert(pointer.clone()) {
            continue;
        }
        if let Some(Value::Object(schema)) = v.pointer_mut(&pointer) {
            if let Some(Value::Object(props)) = schema.get("properties") {
                let mut refs = Vec::new();
                props.values().for_each(|p| refs_in(p, &mut refs));
                bodies.extend(refs);
                schema.entry("additionalProperties").or_insert(json!(false));
            }
        }
    }
}

/// The schemas a property refers to, directly or through `allOf`/`anyOf`/`oneOf` (an optional object) or `items`.
fn refs_in(v: &Value, out: &mut Vec<String>) {
    if let Some(r) = v["$ref"].as_str() {
        out.push(r.trim_start_matches('#').to_string());
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        v[key].as_array().into_iter().flatten().for_each(|x| refs_in(x, out));
    }
    if v.get("items").is_some() {
        refs_in(&v["items"], out);
    }
}

/// `doc` (poem-openapi's JSON) with the validators' rules added; the places a rule names but the document lacks.
pub fn with_rules(doc: &str, facts: &Facts) -> (String, Vec<String>) {
    let mut v: Value = serde_json::from_str(doc).expect("poem-openapi writes JSON");
    let mut missing = Vec::new();
    for (schema, rule) in whole_object_rules() {
        match v.pointer_mut(&format!("/components/schemas/{schema}")) {
            Some(p) => merge(p, &rule),
            None => missing.push(schema.to_string()),
        }
    }
    for (schema, field, rule) in object_rules(facts) {
        match v.pointer_mut(&format!("/components/schemas/{schema}/properties/{field}")) {
            Some(p) => merge(p, &rule),
            None => missing.push(format!("{schema}.{field}")),
        }
    }
    unsigned_from_zero(&mut v);
    closed_request_bodies(&mut v);
    for (op, param, rule) in parameter_rules(facts) {
        let found = v["paths"].as_object_mut().into_iter().flat_map(|paths| paths.values_mut()).flat_map(|item| item.as_object_mut().into_iter().flat_map(|m| m.values_mut())).find(|o| o["operationId"] == op);
        let schema = found.and_then(|o| o["parameters"].as_array_mut()).and_then(|ps| ps.iter_mut().find(|p| p["name"] == param)).and_then(|p| p.get_mut("schema"));
        match schema {
            Some(s) => merge(s, &rule),
            None => missing.push(format!("{op}?{param}")),
        }
    }
    (serde_json::to_string(&v).expect("a JSON value prints"), missing)
}

#[cfg(test)]
mod tests {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    use super::*;

    /// Strings matching `pattern` (whole), from a fixed seed.
    fn samples(pattern: &str, n: usize) -> Vec<String> {
        let inner = pattern.strip_prefix('^').and_then(|p| p.strip_suffix('$')).expect("anchored");
        let strategy = proptest::string::string_regex(inner).expect("proptest reads the pattern");
        let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &[22; 32]));
        (0..n).map(|_| strategy.new_tree(&mut runner).expect("a value").current()).collect()
    }

    fn check(pattern: &str, max: usize, accepts: impl Fn(&str) -> bool) {
        let re = regex::Regex::new(pattern).expect("the pattern compiles");
        for s in samples(pattern, 2000) {
            assert!(re.is_match(&s));
            if s.chars().count() <= max {
                assert!(accepts(&s), "{pattern} matches {s:?}, which the validator refuses");
            }
        }
    }

    /// Every value a stated pattern allows (within its stated length) is accepted by the validator it describes.
    #[test]
    fn what_the_document_allows_the_validators_accept() {
        let limits = Limits::default();
        check(AppName::PATTERN, AppName::MAX_LEN, |s| AppName::parse(s).is_ok());
        check(AppNamePrefix::PATTERN, 63, |s| AppNamePrefix::parse(s).is_ok());
        check(CommitSha::PATTERN, 64, |s| CommitSha::parse(s).is_ok());
        check(HealthPath::PATTERN, HealthPath::MAX_LEN, |s| HealthPath::parse(s).is_ok());
        check(StartCommand::PATTERN, StartCommand::MAX_LEN, |s| StartCommand::parse(s).is_ok());
        check(NodeName::PATTERN, 63, |s| NodeName::parse(s).is_ok());
        check(PersistentPath::SCHEMA_PATTERN, PersistentPath::MAX_LEN, |s| PersistentPath::parse(s).is_ok());
        check(&limits.branch_pattern.schema_pattern(), GitRef::MAX_LEN, |s| GitRef::parse_with(s, &limits.branch_pattern).is_ok());
        check(Glob::SCHEMA_PATTERN, Glob::MAX_LEN, |s| Glob::parse(s).is_ok());
        check(CronExpr::SCHEMA_PATTERN, 200, |s| CronExpr::parse(s).is_ok());
        let policy = RepoPolicy { allowed_hosts: vec!["github.com".into(), "127.0.0.1:9418".into()], ..RepoPolicy::default() };
        check(&repo_url_pattern(&policy), 2048, |s| crate::core::repo::RepoUrl::parse(s, &policy).is_ok());
        check(EXISTING_SNAPSHOT, 40, |s| crate::core::snapshot::SnapshotName::parse_existing(s).is_ok());
        check(NEW_SNAPSHOT, 40, |s| crate::core::snapshot::SnapshotName::parse(s).is_ok());
        check(crate::core::backup::BackupId::NAME_PATTERN, 80, |s| crate::core::backup::BackupId::on_storage("pbs", s, "name").is_ok());
        check(UUID, 36, |s| crate::core::deployment::DeploymentId::parse(s).is_some());
        check(FUTURE_TIME, 20, |s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok());
        for z in crate::core::schedule::Zone::names() {
            assert!(crate::core::schedule::Zone::parse(z).is_ok(), "{z}");
        }
    }

    /// The default branch pattern's schema subset keeps out what git refuses even though its characters pass.
    #[test]
    fn the_branch_subset_keeps_out_what_git_refuses() {
        let re = regex::Regex::new(crate::core::names::BranchPattern::DEFAULT_SCHEMA).unwrap();
        for bad in ["a..b", "x.lock", "-x", "@", "a/", "/a", ".a", "a.", "a//b", "main;id", "$(id)", "`id`"] {
            assert!(!re.is_match(bad), "{bad}");
        }
        for good in ["main", "release/1.2", "v1.2.3", "feature/x_y-z", "user@host", "a+b"] {
            assert!(re.is_match(good), "{good}");
        }
    }
}
