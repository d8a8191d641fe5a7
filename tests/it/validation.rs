//! Every validation rule of `POST /deployments`, table-driven: 422 naming the field and rule, and nothing stored.

use serde_json::{json, Value};

use crate::helpers::{TestApp, ADMIN};

fn with(field: &str, value: Value) -> Value {
    let mut body = json!({ "name": "ok-app", "repo_url": "https://github.com/octo/app.git", "framework": "flask" });
    if value.is_null() {
        body.as_object_mut().unwrap().remove(field);
    } else {
        body[field] = value;
    }
    body
}

#[tokio::test]
async fn every_rule_is_a_422_naming_the_field_and_stores_nothing() {
    let app = TestApp::spawn().await;
    app.create("taken").await;
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        // (field, value (null = omitted), expected field, expected rule)
        ("name", Value::Null, "name", "required"),
        ("name", json!(""), "name", "dns_label"),
        ("name", json!("Upper"), "name", "dns_label"),
        ("name", json!("-lead"), "name", "dns_label"),
        ("name", json!("trail-"), "name", "dns_label"),
        ("name", json!("under_score"), "name", "dns_label"),
        ("name", json!("a".repeat(64)), "name", "dns_label"),
        ("name", json!("taken"), "name", "unique"),
        ("repo_url", Value::Null, "repo_url", "required"),
        ("repo_url", json!("http://github.com/o/r"), "repo_url", "scheme"),
        ("repo_url", json!("file:///etc/passwd"), "repo_url", "scheme"),
        ("repo_url", json!("ext::sh"), "repo_url", "scheme"),
        ("repo_url", json!("/srv/repo"), "repo_url", "scheme"),
        ("repo_url", json!("git@github.com:o/r.git"), "repo_url", "scheme"),
        ("repo_url", json!("-uhttps://github.com/o/r"), "repo_url", "not_option"),
        ("repo_url", json!("https://github.com/o/r x"), "repo_url", "no_whitespace"),
        ("repo_url", json!("https://github.com/o/r\n"), "repo_url", "no_whitespace"),
        ("repo_url", json!("https://u:p@github.com/o/r"), "repo_url", "no_credentials"),
        ("repo_url", json!("https://evil.example/o/r"), "repo_url", "allowed_host"),
        ("repo_url", json!("https://github.com/only-owner"), "repo_url", "path"),
        ("repo_url", json!("https://github.com/o/r?ref=x"), "repo_url", "path"),
        ("framework", Value::Null, "framework", "required"),
        ("framework", json!("rails"), "framework", "enum"),
        ("type", json!("kvm"), "type", "enum"),
        ("branch", json!("-x"), "branch", "git_ref"),
        ("branch", json!("--upload-pack=evil"), "branch", "git_ref"),
        ("branch", json!("a..b"), "branch", "git_ref"),
        ("branch", json!("a b"), "branch", "git_ref"),
        ("branch", json!("x.lock"), "branch", "git_ref"),
        ("branch", json!("a~1"), "branch", "git_ref"),
        ("branch", json!("a\nb"), "branch", "git_ref"),
        // Valid for git, refused by policy: shell metacharacters are never executed, but not accepted either.
        ("branch", json!("main;id"), "branch", "git_ref"),
        ("branch", json!("$(id)"), "branch", "git_ref"),
        ("branch", json!("`id`"), "branch", "git_ref"),
        ("cpu", json!(0), "cpu", "range"),
        ("cpu", json!(9), "cpu", "range"),
        ("cpu", json!(-1), "cpu", "range"),
        ("memory_mib", json!(511), "memory_mib", "range"),
        ("memory_mib", json!(16385), "memory_mib", "range"),
        ("disk_gb", json!(0), "disk_gb", "range"),
        ("disk_gb", json!(501), "disk_gb", "range"),
        ("node", json!("bad_node"), "node", "pve_node"),
        ("cpu", json!("2"), "cpu", "type"),
        ("cpu", json!(1.5), "cpu", "type"),
        ("name", json!(7), "name", "type"),
        ("auto_redeploy", json!("yes"), "auto_redeploy", "type"),
        ("nmae", json!("typo"), "nmae", "unknown_field"),
    ];
    let before = app.count_deployments().await;
    for (field, value, want_field, want_rule) in cases {
        let body = with(field, value.clone());
        let (s, resp) = app.post("/api/v1/deployments", Some(ADMIN), &body).await;
        assert_eq!(s, 422, "{field}={value}: {resp}");
        assert_eq!(resp["error"], "validation_failed");
        let fields = resp["fields"].as_array().unwrap();
        assert!(
            fields.iter().any(|f| f["field"] == want_field && f["rule"] == want_rule && !f["message"].as_str().unwrap().is_empty()),
            "{field}={value}: expected {want_field}/{want_rule} in {resp}"
        );
        assert_eq!(app.count_deployments().await, before, "{field}={value} stored something");
    }
    // several wrong fields are all named in one answer
    let (s, resp) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "X", "cpu": 99})).await;
    assert_eq!(s, 422);
    let named: Vec<&str> = resp["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!(named, ["name", "framework", "repo_url", "cpu"]);
}

/// An allowed host *name* that resolves into the agent's own network is refused (DNS cannot turn an allowed name
/// into loopback, the metadata service or the LAN), unless the operator allows that network (issue #22).
#[tokio::test]
async fn a_repository_name_resolving_to_loopback_is_refused_unless_its_network_is_allowed() {
    use pvedeploy::core::limits::{RepoPolicy, RepoScheme};
    let policy = |allow: &[&str]| RepoPolicy {
        allowed_hosts: vec!["localhost:9".into()],
        schemes: vec![RepoScheme::Http],
        allow_private: allow.iter().map(|n| pvedeploy::core::addresses::Cidr::parse(n).unwrap()).collect(),
    };
    let body = json!({"name": "loop", "repo_url": "http://localhost:9/o/r.git", "framework": "flask"});
    let app = TestApp::spawn_with(|c| c.repos = policy(&[])).await;
    let (s, b) = app.post("/api/v1/deployments", Some(ADMIN), &body).await;
    assert_eq!(s, 422, "{b}");
    assert_eq!((b["fields"][0]["field"].as_str(), b["fields"][0]["rule"].as_str()), (Some("repo_url"), Some("public_address")), "{b}");
    assert!(b["fields"][0]["message"].as_str().unwrap().contains("loopback"), "{b}");
    let (_, list) = app.get("/api/v1/deployments", Some(ADMIN)).await;
    assert_eq!(list["total"], 0, "nothing stored: {list}");
    app.stop().await;
    let app = TestApp::spawn_with(|c| c.repos = policy(&["127.0.0.0/8", "::1/128"])).await;
    let (s, b) = app.post("/api/v1/deployments", Some(ADMIN), &body).await;
    assert_eq!(s, 202, "allowed network: the request goes on (nothing answers at port 9, so the guest will try): {b}");
    app.stop().await;
}
