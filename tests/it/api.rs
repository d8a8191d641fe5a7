//! Every endpoint of `/api/v1` through HTTP, and authentication (no token, wrong token, missing scope).

use serde_json::json;

use crate::helpers::{valid_request, TestApp, ADMIN, DEPLOYER, READER};

#[tokio::test]
async fn health_is_open_and_everything_else_is_closed() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/api/v1/health", None).await.0, 200);
    assert_eq!(app.get("/health", None).await.0, 200);
    for path in ["/api/v1/deployments", "/api/v1/status", "/api/v1/resources", "/api/v1/metrics", "/api/v1/ready", "/api/v1/audit"] {
        let (s, body) = app.get(path, None).await;
        assert_eq!(s, 401, "{path}: {body}");
        assert_eq!(body["error"], "unauthorized", "{path}");
        let (s, body) = app.get(path, Some("pvd_not-a-real-token-at-all")).await;
        assert_eq!(s, 401, "{path} wrong token: {body}");
    }
}

#[tokio::test]
async fn scopes_are_enforced() {
    let app = TestApp::spawn().await;
    // read cannot deploy
    let (s, body) = app.post("/api/v1/deployments", Some(READER), &valid_request("a1")).await;
    assert_eq!(s, 403, "{body}");
    assert!(body["message"].as_str().unwrap().contains("deploy"), "{body}");
    assert_eq!(app.count_deployments().await, 0, "a refused request stores nothing");
    // deploy can deploy and read, but not destroy (admin) nor read the audit log
    let (s, body) = app.post("/api/v1/deployments", Some(DEPLOYER), &valid_request("a2")).await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(app.get("/api/v1/deployments/a2", Some(DEPLOYER)).await.0, 200);
    assert_eq!(app.delete("/api/v1/deployments/a2", Some(DEPLOYER)).await.0, 403);
    assert_eq!(app.get("/api/v1/audit", Some(DEPLOYER)).await.0, 403);
    assert_eq!(app.get("/api/v1/deployments", Some(READER)).await.0, 200);
}

#[tokio::test]
async fn create_read_list_and_destroy() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .post(app.url("/api/v1/deployments"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "shop", "repo_url": "https://github.com/octo/shop", "framework": "django", "type": "lxc", "cpu": 2, "memory_mib": 2048, "disk_gb": 20, "branch": "release/1.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let created: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(created["status"], "pending");
    assert_eq!(created["type"], "lxc");
    assert_eq!(location, format!("/api/v1/deployments/{}", created["id"].as_str().unwrap()));

    // by id and by name
    let (s, by_id) = app.get(&location, Some(READER)).await;
    assert_eq!(s, 200);
    assert_eq!(by_id["name"], "shop");
    assert_eq!(by_id["branch"], "release/1.0");
    assert_eq!(by_id["events"][0]["to"], "pending");
    let (s, by_name) = app.get("/api/v1/deployments/shop", Some(READER)).await;
    assert_eq!((s, &by_name["id"]), (200, &created["id"]));
    assert_eq!(app.get("/api/v1/deployments/nope", Some(READER)).await.0, 404);

    // nothing pretends to have deployed: actions that need a guest are refused with a reason
    for action in ["start", "stop", "redeploy", "rollback"] {
        let (s, body) = app.post(&format!("/api/v1/deployments/shop/{action}"), Some(ADMIN), &json!({})).await;
        assert_eq!(s, 409, "{action}: {body}");
        assert!(body["message"].as_str().unwrap().contains(action), "{body}");
    }

    // list with filters and pagination
    app.create("blog").await;
    app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "api", "repo_url": "https://github.com/o/api", "framework": "node"})).await;
    let (_, page) = app.get("/api/v1/deployments?limit=2", Some(READER)).await;
    assert_eq!(page["total"], 3);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["items"][0]["name"], "api", "newest first");
    assert_eq!(page["next_offset"], 2);
    let (_, page2) = app.get("/api/v1/deployments?limit=2&offset=2", Some(READER)).await;
    assert_eq!(page2["items"][0]["name"], "shop");
    assert!(page2["next_offset"].is_null());
    let (_, f) = app.get("/api/v1/deployments?framework=node", Some(READER)).await;
    assert_eq!(f["total"], 1);
    let (_, f) = app.get("/api/v1/deployments?name=bl", Some(READER)).await;
    assert_eq!((&f["items"][0]["name"], &f["total"]), (&json!("blog"), &json!(1)), "names starting with the text");
    let (_, f) = app.get("/api/v1/deployments?name=lo", Some(READER)).await;
    assert_eq!(f["total"], 0, "a prefix, not a substring: {f}");
    let (s, body) = app.get("/api/v1/deployments?name=Blog", Some(READER)).await;
    assert_eq!((s, &body["fields"][0]["field"]), (422, &json!("name")), "{body}");
    // keyset paging: next_cursor leads on, wherever the list is
    let cursor = page["next_cursor"].as_str().expect("a cursor while more follow").to_string();
    let (_, by_cursor) = app.get(&format!("/api/v1/deployments?limit=2&after={cursor}"), Some(READER)).await;
    assert_eq!((&by_cursor["items"][0]["name"], by_cursor.get("next_cursor"), by_cursor.get("next_offset")), (&json!("shop"), None, None), "{by_cursor}");
    let (s, body) = app.get(&format!("/api/v1/deployments?after={cursor}&offset=2"), Some(READER)).await;
    assert_eq!((s, &body["fields"][0]["field"]), (422, &json!("after")), "{body}");
    let (s, body) = app.get("/api/v1/deployments?after=not-a-cursor", Some(READER)).await;
    assert_eq!((s, &body["fields"][0]["field"]), (422, &json!("after")), "{body}");
    let (_, f) = app.get("/api/v1/deployments?status=pending", Some(READER)).await;
    assert_eq!(f["total"], 3);
    let (s, body) = app.get("/api/v1/deployments?status=bogus", Some(READER)).await;
    assert_eq!((s, body["fields"][0]["field"].as_str()), (422, Some("status")));
    let (s, body) = app.get("/api/v1/deployments?limit=1000", Some(READER)).await;
    assert_eq!((s, body["fields"][0]["field"].as_str()), (422, Some("limit")));

    // destroy: 202, then destroyed; twice is harmless; the name is free again
    let (s, body) = app.delete("/api/v1/deployments/shop", Some(ADMIN)).await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(body["status"], "destroyed");
    assert_eq!(app.delete("/api/v1/deployments/shop", Some(ADMIN)).await.0, 202);
    let again = app.create("shop").await;
    assert_ne!(again["id"], created["id"]);
    let (_, old) = app.get(&location, Some(READER)).await;
    let trail: Vec<&str> = old["events"].as_array().unwrap().iter().map(|e| e["to"].as_str().unwrap()).collect();
    assert_eq!(trail, ["pending", "destroying", "destroyed"]);
    let (_, by_name) = app.get("/api/v1/deployments/shop", Some(READER)).await;
    assert_eq!(by_name["id"], again["id"], "the name resolves to the live deployment");

    // the audit log names who did what through which door
    let (s, audit) = app.get("/api/v1/audit", Some(ADMIN)).await;
    assert_eq!(s, 200);
    let actions: Vec<(&str, &str, &str)> =
        audit.as_array().unwrap().iter().map(|e| (e["actor"].as_str().unwrap(), e["door"].as_str().unwrap(), e["action"].as_str().unwrap())).collect();
    assert!(actions.contains(&("admin", "api", "destroy")), "{actions:?}");
    assert!(actions.contains(&("admin", "api", "deploy")), "{actions:?}");
}

#[tokio::test]
async fn a_deployment_carries_its_own_start_command() {
    let app = TestApp::spawn().await;
    let mut body = crate::helpers::valid_request("procs");
    body["start_command"] = serde_json::json!("gunicorn -b \"0.0.0.0:$PORT\" 'app:create()'");
    let (s, d) = app.post("/api/v1/deployments", Some(ADMIN), &body).await;
    assert_eq!(s, 202, "{d}");
    let (_, got) = app.get(&format!("/api/v1/deployments/{}", d["id"].as_str().unwrap()), Some(READER)).await;
    assert_eq!(got["start_command"], body["start_command"], "{got}");
    let mut bad = crate::helpers::valid_request("procs2");
    bad["start_command"] = serde_json::json!("run\nrm -rf /");
    let (s, e) = app.post("/api/v1/deployments", Some(ADMIN), &bad).await;
    assert_eq!((s, e["fields"][0]["field"].as_str()), (422, Some("start_command")), "{e}");
    assert_eq!(app.count_deployments().await, 1, "a rejected request stores nothing");
    // Paths whose data outlives releases: inside the release only, named by index when wrong.
    let mut kept = crate::helpers::valid_request("kept");
    kept["persistent_paths"] = serde_json::json!(["data/", "../../etc/passwd"]);
    let (s, e) = app.post("/api/v1/deployments", Some(ADMIN), &kept).await;
    assert_eq!((s, e["fields"][0]["field"].as_str()), (422, Some("persistent_paths[1]")), "{e}");
    kept["persistent_paths"] = serde_json::json!(["data/", "uploads"]);
    let (s, d) = app.post("/api/v1/deployments", Some(ADMIN), &kept).await;
    assert_eq!((s, &d["persistent_paths"]), (202, &serde_json::json!(["data/", "uploads"])), "{d}");
    let (_, d) = app.get(&format!("/api/v1/deployments/{}", got["id"].as_str().unwrap()), Some(READER)).await;
    assert_eq!(d["persistent_paths"], serde_json::json!([]), "a flask app keeps nothing unless it says so");
    assert_eq!((d["health_timeout_secs"].as_u64(), d["health_status"].as_u64()), (Some(120), None), "the health check's defaults: {d}");
    // The health check's patience and expected status, per deployment, checked by field.
    let mut checked = crate::helpers::valid_request("checked");
    checked["health_timeout_secs"] = serde_json::json!(0);
    checked["health_status"] = serde_json::json!(42);
    let (s, e) = app.post("/api/v1/deployments", Some(ADMIN), &checked).await;
    let fields: Vec<&str> = e["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!((s, fields), (422, vec!["health_timeout_secs", "health_status"]), "{e}");
    checked["health_timeout_secs"] = serde_json::json!(30);
    checked["health_status"] = serde_json::json!(204);
    let (s, d) = app.post("/api/v1/deployments", Some(ADMIN), &checked).await;
    assert_eq!((s, d["health_timeout_secs"].as_u64(), d["health_status"].as_u64()), (202, Some(30), Some(204)), "{d}");
}

#[tokio::test]
async fn logs_status_resources_metrics_ready_and_spec() {
    let app = TestApp::spawn().await;
    let d = app.create("logs").await;
    let id = d["id"].as_str().unwrap();
    // the request line is written synchronously, the pipeline's line soon after
    let mut lines = serde_json::Value::Null;
    for _ in 0..50 {
        let (s, body) = app.get(&format!("/api/v1/deployments/{id}/logs"), Some(READER)).await;
        assert_eq!(s, 200);
        lines = body;
        if lines["lines"].as_array().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let texts: Vec<&str> = lines["lines"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap()).collect();
    assert!(texts[0].contains("requested by admin"), "{texts:?}");
    assert!(texts[1].contains("stays pending"), "{texts:?}");
    let after = lines["lines"][0]["seq"].as_i64().unwrap();
    let (_, rest) = app.get(&format!("/api/v1/deployments/{id}/logs?after={after}"), Some(READER)).await;
    assert_eq!(rest["lines"].as_array().unwrap().len(), texts.len() - 1);
    // The newest lines, oldest first (what `tail` shows).
    let (s, last) = app.get(&format!("/api/v1/deployments/{id}/logs?tail=1"), Some(READER)).await;
    assert_eq!(s, 200);
    assert_eq!(last["lines"].as_array().unwrap().len(), 1);
    assert_eq!(last["lines"][0], lines["lines"][texts.len() - 1], "{last}");
    for bad in ["tail=0", "tail=1001", &format!("tail=2&after={after}")] {
        let (s, e) = app.get(&format!("/api/v1/deployments/{id}/logs?{bad}"), Some(READER)).await;
        assert_eq!((s, e["fields"][0]["field"].as_str()), (422, Some("tail")), "{bad}: {e}");
    }

    let (s, st) = app.get("/api/v1/status", Some(READER)).await;
    assert_eq!(s, 200);
    assert_eq!(st["total"], 1);
    assert!(st["by_status"].as_array().unwrap().iter().any(|c| c["status"] == "pending" && c["count"] == 1));
    assert!(st["success_rate"].is_null());
    assert_eq!(st["resources"]["available"], false);

    let (s, r) = app.get("/api/v1/resources", Some(READER)).await;
    assert_eq!(s, 200);
    assert!(r["reason"].as_str().unwrap().contains("Proxmox"));

    let (s, ready) = app.get("/api/v1/ready", Some(READER)).await;
    assert_eq!((s, &ready["database"]), (200, &json!(true)));

    let (s, m) = app.get("/api/v1/metrics", Some(READER)).await;
    assert_eq!(s, 200);
    let m = m.as_str().unwrap();
    assert!(m.contains("pvedeploy_deployments{status=\"pending\"} 1"), "{m}");
    let queries = m.lines().find_map(|l| l.strip_prefix("pvedeploy_store_queries_total ")).and_then(|n| n.parse::<u64>().ok());
    assert!(queries.is_some_and(|n| n > 0), "the database queries sent are counted: {m}");
    assert!(m.contains("pvedeploy_http_requests_total{method=\"POST\",operation=\"create_deployment\",status=\"202\"} 1"), "{m}");
    assert!(m.contains("pvedeploy_http_request_duration_seconds_bucket{operation=\"get_deployment\"") || m.contains("operation=\"deployment_logs\""), "{m}");

    let (s, spec) = app.get("/api/v1/openapi.json", None).await;
    assert_eq!(s, 200);
    assert!(spec["paths"]["/deployments/{id}/logs"]["get"]["responses"]["200"]["content"]["text/event-stream"].is_object(), "{spec}");
    // The docs page shows the document served, rules included, not the one poem-openapi generates; it is rendered
    // per request (not held in memory), twice to the same page.
    let served = app.client.get(app.url("/api/v1/openapi.json")).send().await.unwrap().text().await.unwrap();
    let docs = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let page = docs.text().await.unwrap();
    assert!(page.contains("swagger"));
    assert!(page.contains(&served), "the docs page embeds the served document");
    let again = app.client.get(app.url("/docs/")).send().await.unwrap().text().await.unwrap();
    assert_eq!(page, again);
}

#[tokio::test]
async fn malformed_json_is_a_400_that_stores_nothing() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .post(app.url("/api/v1/deployments"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");
    let (s, body) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "x", "repo_url": "https://github.com/o/r", "framework": "flask", "cpu": "two"})).await;
    assert_eq!(s, 422, "a wrong type is a rule broken, named like any other: {body}");
    assert_eq!((body["fields"][0]["field"].as_str(), body["fields"][0]["rule"].as_str()), (Some("cpu"), Some("type")));
    let (s, body) = app.post("/api/v1/deployments", Some(ADMIN), &json!([1, 2])).await;
    assert_eq!((s, body["error"].as_str()), (400, Some("bad_request")), "{body}");
    assert_eq!(app.count_deployments().await, 0);
}
