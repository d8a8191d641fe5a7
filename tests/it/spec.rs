//! The OpenAPI document tells the truth (issue #22): every field the validators check carries its rule (pattern,
//! length, range, enum), read from the configured limits the validators use, and requests generated from the
//! document alone (a fixed seed) are accepted.

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Map, Value};

use crate::helpers::{TestApp, ADMIN};

fn configured(c: &mut pvedeploy::config::Config) {
    c.limits.cpu = 2..=4;
    c.limits.memory_mib = 768..=2048;
    c.limits.disk_gb = 5..=50;
    c.limits.branch_pattern = pvedeploy::core::names::BranchPattern::parse("[a-z]+(/[a-z0-9]+)*").unwrap();
    // A host nothing answers on: the request-time `git ls-remote` cannot tell, so it does not refuse.
    c.repos = pvedeploy::core::limits::RepoPolicy {
        allowed_hosts: vec!["127.0.0.1:9".into()],
        schemes: vec![pvedeploy::core::limits::RepoScheme::Http],
        allow_private: vec![],
    };
}

/// The schema a property or parameter points at, `$ref`s (and poem's `allOf: [$ref]`) followed.
fn resolved<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let reference = schema["$ref"].as_str().or_else(|| schema["allOf"][0]["$ref"].as_str());
    match reference {
        Some(r) => doc.pointer(r.trim_start_matches('#')).expect("the reference exists"),
        None => schema,
    }
}

fn enum_of(doc: &Value, schema: &Value) -> Vec<String> {
    resolved(doc, schema)["enum"].as_array().map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

#[tokio::test]
async fn the_document_states_every_rule_the_validators_apply() {
    let app = TestApp::spawn_with(configured).await;
    let (s, doc) = app.get("/api/v1/openapi.json", None).await;
    assert_eq!(s, 200);
    let props = &doc["components"]["schemas"]["DeploymentRequest"]["properties"];
    for (field, key) in [
        ("name", "pattern"),
        ("name", "maxLength"),
        ("repo_url", "pattern"),
        ("repo_url", "maxLength"),
        ("branch", "pattern"),
        ("branch", "maxLength"),
        ("node", "pattern"),
        ("health_path", "pattern"),
        ("health_path", "maxLength"),
        ("start_command", "pattern"),
        ("start_command", "maxLength"),
        ("persistent_paths", "maxItems"),
        ("paths", "maxItems"),
        ("deploy_tags", "pattern"),
        ("health_timeout_secs", "maximum"),
        ("health_status", "minimum"),
    ] {
        assert!(props[field].get(key).is_some(), "DeploymentRequest.{field} lacks {key}: {}", props[field]);
    }
    // Sizes are the configured limits, not the defaults.
    for (field, lo, hi) in [("cpu", 2, 4), ("memory_mib", 768, 2048), ("disk_gb", 5, 50)] {
        assert_eq!((props[field]["minimum"].as_u64(), props[field]["maximum"].as_u64()), (Some(lo), Some(hi)), "{field}: {}", props[field]);
    }
    assert_eq!(props["branch"]["pattern"], "^(?:[a-z]+(/[a-z0-9]+)*)$");
    assert!(props["persistent_paths"]["items"]["pattern"].is_string() && props["paths"]["items"]["pattern"].is_string());
    // Enums: the framework and guest type of a request, a deployment's status, a schedule's action.
    assert_eq!(enum_of(&doc, &props["framework"]), ["django", "flask", "fastapi", "laravel", "node", "nextjs", "static", "procfile"]);
    assert_eq!(enum_of(&doc, &props["type"]), ["vm", "lxc"]);
    let view = &doc["components"]["schemas"]["DeploymentView"]["properties"];
    assert_eq!(enum_of(&doc, &view["status"]).len(), 9, "{}", view["status"]);
    assert_eq!(enum_of(&doc, &view["framework"]).len(), 8);
    let schedule = &doc["components"]["schemas"]["ScheduleRequest"]["properties"];
    assert_eq!(enum_of(&doc, &schedule["action"]), ["redeploy", "snapshot", "backup", "stop", "start", "destroy", "reconcile", "drift"]);
    assert!(schedule["cron"]["pattern"].is_string(), "{}", schedule["cron"]);
    assert!(schedule["timezone"]["enum"].as_array().is_some_and(|z| z.iter().any(|z| z == "Europe/Berlin")));
    assert_eq!(schedule["keep"]["maximum"], 100);
    assert_eq!(doc["components"]["schemas"]["ExpiryRequest"]["properties"]["ttl_seconds"]["maximum"], 31_536_000);
    assert_eq!(props["preview_ttl_hours"]["maximum"], 720);
    let restored_as = &doc["components"]["schemas"]["RestoreAsNew"]["properties"]["name"];
    assert_eq!((restored_as["pattern"].as_str(), restored_as["maxLength"].as_u64()), (Some(pvedeploy::core::names::AppName::PATTERN), Some(63)), "{restored_as}");
    assert_eq!(doc["components"]["schemas"]["RestoreAsNew"]["additionalProperties"], false, "a body's nested object is closed too");
    // A backup's name in a path: both forms (a file storage's archive, a Proxmox Backup Server snapshot).
    for (path, method) in [("/deployments/{id}/backups/{name}", "delete"), ("/deployments/{id}/backups/{name}/restore", "post")] {
        let ps = doc["paths"][path][method]["parameters"].as_array().unwrap();
        let name = &ps.iter().find(|p| p["name"] == "name").unwrap()["schema"];
        assert_eq!(name["pattern"].as_str(), Some(pvedeploy::core::backup::BackupId::NAME_PATTERN), "{path}: {name}");
        let re = regex::Regex::new(pvedeploy::core::backup::BackupId::NAME_PATTERN).unwrap();
        assert!(re.is_match("vzdump-lxc-10000-2030_01_02-03_00_00.tar.zst") && re.is_match("ct-10000-2030-01-02T03:00:00Z") && !re.is_match("ct/10000/2030-01-02T03:00:00Z"));
    }
    // Query parameters: the list filters are the enums, the page size the configured maximum.
    let params = doc["paths"]["/deployments"]["get"]["parameters"].as_array().unwrap();
    let param = |name: &str| &params.iter().find(|p| p["name"] == name).unwrap()["schema"];
    assert_eq!(enum_of(&doc, param("status")).len(), 9, "{}", param("status"));
    assert_eq!(enum_of(&doc, param("framework")).len(), 8);
    assert!(param("name")["pattern"].is_string());
    assert_eq!(param("limit")["maximum"], 100);
    // The deliveries' filters: an outcome from the list, an event name by its rule, a repository by its length.
    let params = doc["paths"]["/webhooks/deliveries"]["get"]["parameters"].as_array().unwrap();
    let param = |name: &str| &params.iter().find(|p| p["name"] == name).unwrap()["schema"];
    assert_eq!(enum_of(&doc, param("outcome")).len(), pvedeploy::core::webhook::Outcome::ALL.len(), "{}", param("outcome"));
    let event = regex::Regex::new(param("event")["pattern"].as_str().unwrap()).unwrap();
    for e in ["push", "pull_request", "ping", "Push", "push!", "", &"a".repeat(65)] {
        assert_eq!(event.is_match(e), pvedeploy::core::webhook::parse_event_name(Some(e)).is_ok(), "{e:?}");
    }
    assert_eq!((param("repo")["minLength"].as_u64(), param("repo")["maxLength"].as_u64()), (Some(1), Some(200)));
    // The 422 for a branch outside the configured pattern names the rule and the pattern.
    let (s, b) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "b", "repo_url": "http://127.0.0.1:9/o/r", "framework": "flask", "branch": "Main"})).await;
    assert_eq!((s, b["fields"][0]["field"].as_str(), b["fields"][0]["rule"].as_str()), (422, Some("branch"), Some("git_ref")), "{b}");
    assert!(b["fields"][0]["message"].as_str().unwrap().contains("[a-z]+(/[a-z0-9]+)*"), "{b}");
    app.stop().await;
}

/// Values for one schema from the document alone: an enum's items, an integer in its range, a string from its
/// pattern within its length, a short array of such strings.
struct Generator {
    runner: TestRunner,
}

impl Generator {
    fn string(&mut self, pattern: &str, max: Option<u64>) -> String {
        let inner = pattern.strip_prefix('^').and_then(|p| p.strip_suffix('$')).unwrap_or(pattern);
        let strategy = proptest::string::string_regex(inner).expect("the pattern is a regular expression");
        loop {
            let s = strategy.new_tree(&mut self.runner).unwrap().current();
            if max.is_none_or(|m| s.chars().count() as u64 <= m) && !s.is_empty() {
                return s;
            }
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        use proptest::prelude::Rng;
        self.runner.rng().next_u64() % n
    }

    fn value(&mut self, doc: &Value, schema: &Value) -> Value {
        let schema = resolved(doc, schema);
        if let Some(items) = schema["enum"].as_array() {
            return items[self.below(items.len() as u64) as usize].clone();
        }
        match schema["type"].as_str() {
            Some("integer") => {
                let (lo, hi) = (schema["minimum"].as_i64().expect("a range"), schema["maximum"].as_i64().expect("a range"));
                json!(lo + self.below((hi - lo + 1) as u64) as i64)
            }
            Some("boolean") => json!(self.below(2) == 1),
            Some("string") => json!(self.string(schema["pattern"].as_str().expect("a pattern"), schema["maxLength"].as_u64())),
            Some("array") => {
                let n = self.below(schema["maxItems"].as_u64().expect("maxItems").min(3) + 1);
                Value::Array((0..n).map(|_| self.value(doc, &schema["items"])).collect())
            }
            other => panic!("no generator for {other:?}: {schema}"),
        }
    }
}

/// 150 requests made from the document (required fields always, each optional one half the time) are all
/// accepted: what a schema-driven client sends, the server takes.
#[tokio::test]
async fn requests_generated_from_the_document_are_accepted() {
    let app = TestApp::spawn_with(configured).await;
    let (_, doc) = app.get("/api/v1/openapi.json", None).await;
    let request = &doc["components"]["schemas"]["DeploymentRequest"];
    let required: Vec<&str> = request["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let mut g = Generator { runner: TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &[22; 32])) };
    let mut names = std::collections::HashSet::new();
    let mut sent = 0;
    while sent < 150 {
        let mut body = Map::new();
        for (field, schema) in request["properties"].as_object().unwrap() {
            if required.contains(&field.as_str()) || g.below(2) == 1 {
                body.insert(field.clone(), g.value(&doc, schema));
            }
        }
        // `previews_from_forks` only with `previews` is a rule OpenAPI 3.0 cannot state (no dependent fields): said in
        // the field's description and answered with a 422 naming it (`previews::` tests it).
        if body.get("previews_from_forks") == Some(&Value::Bool(true)) && body.get("previews") != Some(&Value::Bool(true)) {
            continue;
        }
        // Unique among live deployments is a rule no schema states: each generated name is used once.
        if !names.insert(body["name"].as_str().unwrap().to_string()) {
            continue;
        }
        let body = Value::Object(body);
        let (s, answer) = app.post("/api/v1/deployments", Some(ADMIN), &body).await;
        assert_eq!(s, 202, "a request valid under the document was refused:\n{body:#}\n{answer:#}");
        sent += 1;
    }
    app.stop().await;
}
