//! End to end on real guests: apps deployed from local git repositories (bare repositories served
//! over HTTP stand in for GitHub) onto the simulator's systemd-nspawn guests over SSH, then
//! redeployed (by API and by a signed GitHub push), broken, rolled back, given secrets, destroyed.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{TestApp, ADMIN, READER};
use crate::rig::{agent, git, http_body, push, push_via, start_real_sim, wait_for, GitServer, Load, Repo};

const CANARY: &str = "canary-5f1e$(touch /tmp/pwned)`id`'q\"";

async fn releases(app: &TestApp, id: &str) -> Vec<Value> {
    let (s, r) = app.get(&format!("/api/v1/deployments/{id}/releases"), Some(READER)).await;
    assert_eq!(s, 200, "{r}");
    r.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flask_on_a_vm_and_express_in_a_container_deploy_redeploy_break_roll_back_and_go() {
    let data = tempfile::tempdir().unwrap();
    let key = pvedeploy::keys::load_or_create_deploy_key(&data.path().join("keys")).unwrap();
    let Some(rig) = start_real_sim(&key.public_openssh).await else { return };
    let server = GitServer::start().await;
    let flask = server.repo("octo/flask", "flask");
    let express = server.repo("octo/express", "express");
    let app = agent(rig.sim(), data.path(), &server.host).await;

    // first deploys: a Flask app on a VM, an Express app in a container, at the same time
    let started = Instant::now();
    let (s, f) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "flask-e2e", "repo_url": flask.url, "framework": "flask", "type": "vm", "memory_mib": 1024})).await;
    assert_eq!(s, 202, "{f}");
    let (s, e) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "express-e2e", "repo_url": express.url, "framework": "node", "type": "lxc", "memory_mib": 1024})).await;
    assert_eq!(s, 202, "{e}");
    let (fid, eid) = (f["id"].as_str().unwrap().to_string(), e["id"].as_str().unwrap().to_string());
    let f = wait_for(&app, &fid, "running", Duration::from_secs(900), |d| d["status"] == "running" || d["status"] == "failed").await;
    assert_eq!(f["status"], "running", "{f}");
    let e = wait_for(&app, &eid, "running", Duration::from_secs(900), |d| d["status"] == "running" || d["status"] == "failed").await;
    assert_eq!(e["status"], "running", "{e}");
    eprintln!("first deploys of both apps: {:.1}s", started.elapsed().as_secs_f64());
    let (furl, eurl) = (f["url"].as_str().unwrap().to_string(), e["url"].as_str().unwrap().to_string());
    assert_eq!(http_body(&furl).await, "hello from flask v1\n");
    assert_eq!(http_body(&eurl).await, "hello from express v1\n");
    assert_eq!(f["commit"], git(&flask.work, &["rev-parse", "HEAD"]).trim());
    let first = releases(&app, &fid).await;
    let steps: Vec<&str> = first[0]["timings"].as_array().unwrap().iter().map(|t| t["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["boot", "install", "fetch", "dependencies", "build", "start", "health", "switch"], "{first:?}");

    // a secret reaches the app literally and nowhere else
    let (s, names) = app.put_json(&format!("/api/v1/deployments/{fid}/env"), Some(ADMIN), &json!({"vars": {"APP_SECRET": CANARY}})).await;
    assert_eq!((s, &names["names"]), (200, &json!(["APP_SECRET"])), "{names}");
    let (s, bad) = app.put_json(&format!("/api/v1/deployments/{fid}/env"), Some(ADMIN), &json!({"vars": {"1BAD": "x", "OK": "a\nb"}})).await;
    assert_eq!(s, 422, "{bad}");
    let fields: Vec<&str> = bad["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["env.1BAD", "env.OK"], "{bad}");

    // redeploy v2 through the API
    flask.edit("app.py", "VERSION_MARKER = \"v1\"", "VERSION_MARKER = \"v2\"");
    let v2 = flask.commit("v2");
    let (s, r) = app.post(&format!("/api/v1/deployments/{fid}/redeploy"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 202, "{r}");
    let f = wait_for(&app, &fid, "running v2", Duration::from_secs(600), |d| d["status"] == "running" && d["commit"] == v2.as_str()).await;
    assert_eq!(http_body(&furl).await, "hello from flask v2\n");
    assert_eq!(http_body(&format!("{furl}/env/APP_SECRET")).await, CANARY, "the value reached the app byte for byte");
    assert!(f["error_message"].is_null(), "{f}");
    // Unchanged requirements: v2 links v1's venv instead of building one.
    let (_, logs) = app.get(&format!("/api/v1/deployments/{fid}/logs?tail=200"), Some(ADMIN)).await;
    assert!(logs.to_string().contains("reusing the venv of an earlier release"), "{logs}");

    // the canary is nowhere: not in logs, not in API answers, not in the database's log records
    for path in [format!("/api/v1/deployments/{fid}"), format!("/api/v1/deployments/{fid}/logs?limit=1000"), format!("/api/v1/deployments/{fid}/env"), format!("/api/v1/deployments/{fid}/releases"), "/api/v1/audit?limit=100".into()] {
        let (_, v) = app.get(&path, Some(ADMIN)).await;
        assert!(!v.to_string().contains("canary-5f1e"), "{path} shows the secret");
    }

    // Express v2 arrives by a signed GitHub push
    let before = git(&express.work, &["rev-parse", "HEAD"]).trim().to_string();
    express.edit("server.js", "const VERSION_MARKER = \"v1\";", "const VERSION_MARKER = \"v2\";");
    let ev2 = express.commit("v2");
    assert_eq!(push(&app, &express, &before, &ev2, "9f0c2c1e-6f4e-11ef-9a8b-000000000001").await, 202);
    wait_for(&app, &eid, "running v2", Duration::from_secs(600), |d| d["status"] == "running" && d["commit"] == ev2.as_str()).await;
    assert_eq!(http_body(&eurl).await, "hello from express v2\n");
    // Unchanged package.json and lockfile: v2 links v1's node_modules instead of installing again.
    let (_, logs) = app.get(&format!("/api/v1/deployments/{eid}/logs?tail=300"), Some(ADMIN)).await;
    assert!(logs.to_string().contains("reusing the node_modules of an earlier release"), "{logs}");

    // a burst of three pushes while redeploys run: the first starts, the newest replaces the queued one
    let mut commits = vec![ev2.clone()];
    for (n, v) in ["v3", "v4", "v5"].into_iter().enumerate() {
        let prev = format!("v{}", n + 2);
        express.edit("server.js", &format!("const VERSION_MARKER = \"{prev}\";"), &format!("const VERSION_MARKER = \"{v}\";"));
        let c = express.commit(v);
        let guid = format!("9f0c2c1e-6f4e-11ef-9a8b-00000000001{n}");
        assert_eq!(push(&app, &express, commits.last().unwrap(), &c, &guid).await, 202);
        // the next push goes out once this one was handed to the engine, so arrival order is commit order
        let t = Instant::now();
        loop {
            let (_, d) = app.get(&format!("/api/v1/webhooks/deliveries/{guid}"), Some(READER)).await;
            if d["outcome"].is_string() && d["outcome"] != "received" {
                let expected = if n == 0 { "redeploy_requested" } else { "queued" };
                assert!(d.to_string().contains(expected), "{d}");
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "{d}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        commits.push(c);
    }
    let (v3, v4, v5) = (commits[1].clone(), commits[2].clone(), commits[3].clone());
    wait_for(&app, &eid, "running v5", Duration::from_secs(600), |d| d["status"] == "running" && d["commit"] == v5.as_str()).await;
    assert_eq!(http_body(&eurl).await, "hello from express v5\n");
    let deployed: Vec<String> = releases(&app, &eid).await.iter().map(|r| r["commit"].as_str().unwrap().to_string()).collect();
    assert!(deployed.contains(&v3) && deployed.contains(&v5), "{deployed:?}");
    assert!(!deployed.contains(&v4), "v4 was replaced by v5 while queued: {deployed:?}");
    // Each release says what asked for it: the first deploy, then pushes.
    let triggers: Vec<String> = releases(&app, &eid).await.iter().map(|r| r["trigger"].as_str().unwrap().to_string()).collect();
    assert_eq!(triggers.last().map(String::as_str), Some("deploy"), "{triggers:?}");
    assert!(triggers[..triggers.len() - 1].iter().all(|t| t == "push"), "{triggers:?}");

    // a broken commit: the redeploy fails, is recorded, and v2 keeps answering
    flask.edit("app.py", "import os\n", "import os\nraise RuntimeError(\"broken on purpose\")\n");
    let broken = flask.commit("broken");
    let (s, _) = app.post(&format!("/api/v1/deployments/{fid}/redeploy"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 202);
    let f = wait_for(&app, &fid, "done with the broken commit", Duration::from_secs(600), |d| d["error_message"].is_string()).await;
    assert_eq!(f["status"], "running", "the previous release serves: {f}");
    assert_eq!(f["commit"], v2.as_str());
    assert!(f["error_message"].as_str().unwrap().contains("failed at step"), "{f}");
    let rs = releases(&app, &fid).await;
    assert_eq!((rs[0]["commit"].as_str(), rs[0]["status"].as_str()), (Some(broken.as_str()), Some("failed")), "{rs:?}");
    assert_eq!(rs[0]["trigger"], "api", "asked through the HTTP API: {rs:?}");
    let timed: Vec<&str> = rs[0]["timings"].as_array().unwrap().iter().map(|t| t["step"].as_str().unwrap()).collect();
    assert_eq!(timed.last().copied(), rs[0]["step"].as_str(), "the step it failed in is timed too: {rs:?}");
    assert_eq!(http_body(&furl).await, "hello from flask v2\n");

    // rollback to the release before v2
    let (s, r) = app.post(&format!("/api/v1/deployments/{fid}/rollback"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 202, "{r}");
    let v1 = first[0]["commit"].as_str().unwrap().to_string();
    wait_for(&app, &fid, "rolled back", Duration::from_secs(300), |d| d["status"] == "running" && d["commit"] == v1.as_str()).await;
    assert_eq!(http_body(&furl).await, "hello from flask v1\n");

    // stop and start the container; its app comes back by itself
    let (s, _) = app.post(&format!("/api/v1/deployments/{eid}/stop"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 202);
    wait_for(&app, &eid, "stopped", Duration::from_secs(120), |d| d["status"] == "stopped").await;
    let (s, _) = app.post(&format!("/api/v1/deployments/{eid}/start"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 202);
    wait_for(&app, &eid, "running again", Duration::from_secs(120), |d| d["status"] == "running").await;
    // `running` after a start means the app answers (its health check passed), not just the guest.
    assert_eq!(http_body(&eurl).await, "hello from express v5\n");

    // destroy both
    for id in [&fid, &eid] {
        let (s, _) = app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
        assert_eq!(s, 202);
    }
    for id in [&fid, &eid] {
        let d = wait_for(&app, id, "destroyed", Duration::from_secs(180), |d| d["status"] == "destroyed").await;
        assert!(d["proxmox_id"].is_null());
    }
    assert!(http_body(&furl).await.starts_with("<no answer"));
    app.stop().await;
    rig.stop().await;
    drop(server);
}

/// Waits until the newest release is `commit` and has ended `status`; returns it.
async fn release_ended(app: &TestApp, id: &str, commit: &str, status: &str, limit: Duration) -> Value {
    let started = Instant::now();
    loop {
        let rs = releases(app, id).await;
        if rs.first().is_some_and(|r| r["commit"] == commit && r["status"] != "deploying") {
            assert_eq!(rs[0]["status"], status, "{rs:?}");
            return rs[0].clone();
        }
        assert!(started.elapsed() < limit, "release {commit} never ended: {rs:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn releases_switch_under_load_without_losing_a_request_good_or_bad() {
    let data = tempfile::tempdir().unwrap();
    let key = pvedeploy::keys::load_or_create_deploy_key(&data.path().join("keys")).unwrap();
    let Some(rig) = start_real_sim(&key.public_openssh).await else { return };
    let server = GitServer::start().await;
    let flask = server.repo("octo/flask-load", "flask");
    let app = agent(rig.sim(), data.path(), &server.host).await;
    // A start limit of 20 s for the whole start (answering, then the health check).
    let (s, d) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "steady", "repo_url": flask.url, "framework": "flask", "type": "lxc", "health_timeout_secs": 20})).await;
    assert_eq!(s, 202, "{d}");
    let id = d["id"].as_str().unwrap().to_string();
    let d = wait_for(&app, &id, "running", Duration::from_secs(900), |d| d["status"] == "running" || d["status"] == "failed").await;
    assert_eq!(d["status"], "running", "{d}");
    let url = d["url"].as_str().unwrap().to_string();
    let v1 = git(&flask.work, &["rev-parse", "HEAD"]).trim().to_string();
    let load = Load::start(&url);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A good push: v2 takes over.
    flask.edit("app.py", "VERSION_MARKER = \"v1\"", "VERSION_MARKER = \"v2\"");
    let v2 = flask.commit("v2");
    assert_eq!(push(&app, &flask, &v1, &v2, "7d1c0a52-0000-4000-8000-000000000001").await, 202);
    let r = release_ended(&app, &id, &v2, "active", Duration::from_secs(600)).await;
    let steps: Vec<&str> = r["timings"].as_array().unwrap().iter().map(|t| t["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["boot", "install", "fetch", "dependencies", "build", "start", "health", "switch"], "{r}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A push that does not even compile: it never serves.
    flask.edit("app.py", "VERSION_MARKER = \"v2\"\n", "VERSION_MARKER = \"v2\"\ndef broken(:\n");
    let syntax = flask.commit("syntax error");
    assert_eq!(push(&app, &flask, &v2, &syntax, "7d1c0a52-0000-4000-8000-000000000002").await, 202);
    release_ended(&app, &id, &syntax, "failed", Duration::from_secs(600)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A push that hangs at import: given up at the start limit, and it never serves either.
    flask.edit("app.py", "def broken(:\n", "");
    flask.edit("app.py", "import os\n", "import os\nimport time\ntime.sleep(3600)\n");
    let hang = flask.commit("hangs at import");
    let pushed = Instant::now();
    assert_eq!(push(&app, &flask, &syntax, &hang, "7d1c0a52-0000-4000-8000-000000000003").await, 202);
    let r = release_ended(&app, &id, &hang, "failed", Duration::from_secs(600)).await;
    eprintln!("the release that hangs at import was given up {:.1}s after its push: {} {}", pushed.elapsed().as_secs_f64(), r["error"], r["timings"]);
    let d = wait_for(&app, &id, "settled", Duration::from_secs(60), |d| d["status"] == "running").await;
    assert_eq!(d["commit"], v2.as_str(), "{d}");

    // A rollback to v1 under the same load.
    let (s, r) = app.post(&format!("/api/v1/deployments/{id}/rollback"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 202, "{r}");
    wait_for(&app, &id, "rolled back", Duration::from_secs(300), |d| d["status"] == "running" && d["commit"] == v1.as_str()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let report = load.finish().await;
    eprintln!("{} requests at 10/s across a good push, a syntax error, a hang at import and a rollback: {} lost", report.sent, report.lost.len());
    assert!(report.lost.is_empty(), "lost requests: {:?}", report.lost);
    // What answered went v1 → v2 → v1, and nothing else ever answered.
    let mut seen: Vec<&str> = report.bodies.iter().map(String::as_str).collect();
    seen.dedup();
    assert_eq!(seen, ["hello from flask v1\n", "hello from flask v2\n", "hello from flask v1\n"], "{seen:?}");
    let (s, _) = app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
    assert_eq!(s, 202);
    wait_for(&app, &id, "destroyed", Duration::from_secs(180), |d| d["status"] == "destroyed").await;
    app.stop().await;
    rig.stop().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn django_a_php_app_and_a_static_site_in_containers() {
    let data = tempfile::tempdir().unwrap();
    let key = pvedeploy::keys::load_or_create_deploy_key(&data.path().join("keys")).unwrap();
    let Some(rig) = start_real_sim(&key.public_openssh).await else { return };
    let server = GitServer::start().await;
    let django = server.repo("octo/django", "django");
    let site = server.repo("octo/site", "static");
    // PHP-FPM, nginx and composer as for Laravel; the app itself has no dependencies (packagist.org is unreachable here)
    let php = server.repo("octo/php", "laravel");
    // Django as `startproject` leaves it: DEBUG on, no ALLOWED_HOSTS (only localhost may ask), and the
    // middleware that checks the Host header (startproject's list starts with these two).
    let stock = server.repo("octo/django-stock", "django");
    stock.edit("mysite/settings.py", "DEBUG = False\nALLOWED_HOSTS = [\"*\"]", "DEBUG = True\nALLOWED_HOSTS = []");
    stock.edit("mysite/settings.py", "MIDDLEWARE = []", "MIDDLEWARE = [\"django.middleware.security.SecurityMiddleware\", \"django.middleware.common.CommonMiddleware\"]");
    stock.commit("as startproject leaves it");
    let app = agent(rig.sim(), data.path(), &server.host).await;
    let (s, d) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "django-stock", "repo_url": stock.url, "framework": "django", "type": "lxc"})).await;
    assert_eq!(s, 202, "{d}");
    let stock_id = d["id"].as_str().unwrap().to_string();
    let mut ids = vec![];
    for (name, repo, fw) in [("django-e2e", &django, "django"), ("static-e2e", &site, "static"), ("php-e2e", &php, "laravel")] {
        let (s, d) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": name, "repo_url": repo.url, "framework": fw, "type": "lxc"})).await;
        assert_eq!(s, 202, "{d}");
        ids.push(d["id"].as_str().unwrap().to_string());
    }
    for (id, body) in ids.iter().zip(["hello from django v1", "hello from static v1", "hello from laravel-php v1"]) {
        let d = wait_for(&app, id, "running", Duration::from_secs(900), |d| d["status"] == "running" || d["status"] == "failed").await;
        assert_eq!(d["status"], "running", "{d}");
        let got = http_body(d["url"].as_str().unwrap()).await;
        assert!(got.contains(body), "{got}");
    }
    // Django's SQLite database (its default place, next to manage.py) survives a redeploy and a rollback.
    let (did, durl) = {
        let (_, d) = app.get(&format!("/api/v1/deployments/{}", ids[0]), Some(ADMIN)).await;
        (ids[0].clone(), d["url"].as_str().unwrap().to_string())
    };
    assert_eq!(http_body(&format!("{durl}/count")).await, "1\n");
    assert_eq!(http_body(&format!("{durl}/count")).await, "2\n");
    django.edit("mysite/urls.py", "VERSION_MARKER = \"v1\"", "VERSION_MARKER = \"v2\"");
    let v2 = django.commit("v2");
    let (s, r) = app.post(&format!("/api/v1/deployments/{did}/redeploy"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 202, "{r}");
    wait_for(&app, &did, "running v2", Duration::from_secs(600), |d| d["status"] == "running" && d["commit"] == v2.as_str()).await;
    assert_eq!(http_body(&durl).await, "hello from django v2\n");
    assert_eq!(http_body(&format!("{durl}/count")).await, "3\n", "the data outlived the release");
    let (s, r) = app.post(&format!("/api/v1/deployments/{did}/rollback"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 202, "{r}");
    wait_for(&app, &did, "rolled back", Duration::from_secs(300), |d| d["status"] == "running" && d["commit"] != v2.as_str()).await;
    assert_eq!(http_body(&durl).await, "hello from django v1\n");
    assert_eq!(http_body(&format!("{durl}/count")).await, "4\n", "and the rollback");
    let (_, d) = app.get(&format!("/api/v1/deployments/{did}"), Some(ADMIN)).await;
    assert_eq!(d["persistent_paths"], json!(["db.sqlite3", "media/"]), "Django's defaults");

    // A PHP release with unchanged composer.json and composer.lock copies the earlier release's vendor.
    let pid = ids[2].clone();
    php.edit("app/Version.php", "v1", "v2");
    let pv2 = php.commit("v2");
    let (s, r) = app.post(&format!("/api/v1/deployments/{pid}/redeploy"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 202, "{r}");
    let d = wait_for(&app, &pid, "running v2", Duration::from_secs(600), |d| d["status"] == "running" && d["commit"] == pv2.as_str()).await;
    assert!(http_body(d["url"].as_str().unwrap()).await.contains("hello from laravel-php v2"));
    let (_, logs) = app.get(&format!("/api/v1/deployments/{pid}/logs?tail=300"), Some(ADMIN)).await;
    assert!(logs.to_string().contains("reusing the vendor of an earlier release"), "{logs}");

    // The stock project's 400 ends the health check at once, saying why and what to change.
    let d = wait_for(&app, &stock_id, "failed", Duration::from_secs(900), |d| d["status"] == "failed" || d["status"] == "running").await;
    let why = d["error_message"].as_str().unwrap_or_default();
    assert!(why.contains("HTTP 400") && why.contains("ALLOWED_HOSTS"), "{d}");
    // A first release that failed its check does not keep serving (nothing to fall back to).
    let stock_url = format!("http://{}:8000/", d["ip_address"].as_str().unwrap());
    assert!(http_body(&stock_url).await.starts_with("<no answer"), "the failed release's unit was stopped");
    ids.push(stock_id);
    for id in &ids {
        let (s, _) = app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
        assert_eq!(s, 202);
        wait_for(&app, id, "destroyed", Duration::from_secs(180), |d| d["status"] == "destroyed").await;
    }
    app.stop().await;
    rig.stop().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_or_branch_that_does_not_exist_is_refused_before_anything_is_created() {
    let server = GitServer::start().await;
    let repo = server.repo("octo/there", "flask");
    let host = server.host.clone();
    let app = TestApp::spawn_with(|c| c.repos = pvedeploy::core::limits::RepoPolicy { allowed_hosts: vec![host], schemes: vec![pvedeploy::core::limits::RepoScheme::Http], allow_private: vec![] }).await;
    let missing = format!("http://{}/octo/nowhere.git", server.host);
    let cases = [(missing.as_str(), "main", "repo_url"), (repo.url.as_str(), "no-such-branch", "branch")];
    for (url, branch, field) in cases {
        let (s, e) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "checked", "repo_url": url, "branch": branch, "framework": "flask"})).await;
        assert_eq!((s, e["fields"][0]["field"].as_str(), e["fields"][0]["rule"].as_str()), (422, Some(field), Some("exists")), "{url} {branch}: {e}");
    }
    assert_eq!(app.count_deployments().await, 0, "nothing recorded, nothing provisioned");
    let (s, d) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "checked", "repo_url": repo.url, "framework": "flask"})).await;
    assert_eq!(s, 202, "{d}");
    app.stop().await;
}

/// Waits until a webhook delivery has been handled (its outcome is no longer `received`).
async fn delivery(app: &TestApp, guid: &str) -> Value {
    let t = Instant::now();
    loop {
        let (s, d) = app.get(&format!("/api/v1/webhooks/deliveries/{guid}"), Some(READER)).await;
        assert_eq!(s, 200, "{d}");
        if d["outcome"] != "received" {
            return d;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Commits the static site's page with `from` replaced by `to` in the working copy only (the served branch does not
/// have it until the test publishes it); returns the commit.
fn unpublished_commit(repo: &Repo, from: &str, to: &str) -> String {
    repo.edit("index.html", from, to);
    git(&repo.work, &["add", "-A"]);
    git(&repo.work, &["-c", "user.name=Test", "-c", "user.email=test@example.invalid", "commit", "--quiet", "-m", to]);
    git(&repo.work, &["rev-parse", "HEAD"]).trim().to_string()
}

/// Points the served branch at `commit`, as a (force) push does.
fn publish(repo: &Repo, commit: &str) {
    git(&repo.work, &["push", "--quiet", "--force", "origin", &format!("{commit}:refs/heads/main")]);
    git(&repo.bare, &["update-server-info"]);
}

/// Where pushes act: a delivery refused before the guest existed, redelivered with its GUID, acts once; the copy of a
/// push from an organisation hook does not act again and is not a redelivery; the force-push flip X→A, A→B, B→A,
/// A→B (the last repeating the second's before→after) ends deployed at the branch head.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_redelivered_copied_and_flipped_end_at_the_branch_head() {
    let data = tempfile::tempdir().unwrap();
    let key = pvedeploy::keys::load_or_create_deploy_key(&data.path().join("keys")).unwrap();
    let Some(rig) = start_real_sim(&key.public_openssh).await else { return };
    let server = GitServer::start().await;
    let site = server.repo("octo/flip", "static");
    let x = git(&site.work, &["rev-parse", "HEAD"]).trim().to_string();
    let a = unpublished_commit(&site, "static v1", "static v2");
    let b = unpublished_commit(&site, "static v2", "static v3");
    let app = agent(rig.sim(), data.path(), &server.host).await;
    let (s, d) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "flip-e2e", "repo_url": site.url, "framework": "static", "type": "lxc"})).await;
    assert_eq!(s, 202, "{d}");
    let id = d["id"].as_str().unwrap().to_string();

    // a push while the deployment has no guest yet is refused: nothing acted
    const P: &str = "4b1d0000-0000-4000-8000-000000000001";
    assert_eq!(push(&app, &site, &x, &a, P).await, 202);
    let p = delivery(&app, P).await;
    assert_eq!(p["outcome"], "refused", "{p}");
    let d = wait_for(&app, &id, "running", Duration::from_secs(900), |d| d["status"] == "running" || d["status"] == "failed").await;
    assert_eq!((d["status"].as_str(), d["commit"].as_str()), (Some("running"), Some(x.as_str())), "{d}");
    let url = d["url"].as_str().unwrap().to_string();

    // GitHub's "Redeliver" of it (same GUID, same body) is processed again and acts; once more, it is a duplicate
    publish(&site, &a);
    assert_eq!(push(&app, &site, &x, &a, P).await, 202);
    let p = delivery(&app, P).await;
    assert_eq!((p["outcome"].as_str(), p["retries"].as_i64(), p["earlier"][0]["outcome"].as_str()), (Some("redeploy_requested"), Some(1), Some("refused")), "{p}");
    wait_for(&app, &id, "running A", Duration::from_secs(600), |d| d["status"] == "running" && d["commit"] == a.as_str()).await;
    assert!(http_body(&url).await.contains("hello from static v2"));
    assert_eq!(push(&app, &site, &x, &a, P).await, 200, "it acted: a duplicate now");
    assert_eq!(delivery(&app, P).await["redeliveries"], 1);
    let at_a = releases(&app, &id).await.iter().filter(|r| r["commit"] == a.as_str()).count();
    assert_eq!(at_a, 1, "the redelivered push acted once");

    // A→B through the repository hook, then the organisation hook's copy of it: the copy does not act again
    const Q: &str = "4b1d0000-0000-4000-8000-000000000002";
    const Q_COPY: &str = "4b1d0000-0000-4000-8000-000000000003";
    publish(&site, &b);
    assert_eq!(push_via(&app, &site, &a, &b, Q, Some(("101", "repository"))).await, 202);
    assert_eq!(delivery(&app, Q).await["outcome"], "redeploy_requested");
    assert_eq!(push_via(&app, &site, &a, &b, Q_COPY, Some(("202", "organization"))).await, 202);
    let copy = delivery(&app, Q_COPY).await;
    assert_eq!((copy["outcome"].as_str(), copy["same_push_as"].as_str(), copy["redeliveries"].as_i64()), (Some("ignored_same_push"), Some(Q), Some(0)), "{copy}");
    assert_eq!((copy["hook_id"].as_i64(), copy["hook_target"].as_str()), (Some(202), Some("organization")), "{copy}");

    // force pushes back to A, then to B again: the last repeats Q's before→after and must not be dropped
    const R: &str = "4b1d0000-0000-4000-8000-000000000004";
    const S: &str = "4b1d0000-0000-4000-8000-000000000005";
    publish(&site, &a);
    assert_eq!(push(&app, &site, &b, &a, R).await, 202);
    assert!(["redeploy_requested", "queued"].contains(&delivery(&app, R).await["outcome"].as_str().unwrap()));
    publish(&site, &b);
    assert_eq!(push(&app, &site, &a, &b, S).await, 202);
    let s_d = delivery(&app, S).await;
    // R's redeploy is still running when S arrives (it was sent a git push later), so S follows it
    assert_eq!(s_d["outcome"], "queued", "{s_d}");
    assert_eq!(s_d["same_push_as"], Q, "{s_d}");
    assert!(s_d["detail"].as_str().unwrap().contains("branch head"), "{s_d}");
    let at_b = |rs: &[Value]| rs.iter().filter(|r| r["commit"] == b.as_str()).count();
    let before_s = at_b(&releases(&app, &id).await);

    // the end: S's redeploy of the branch head ran after everything before it, and it deployed B
    let started = Instant::now();
    loop {
        let rs = releases(&app, &id).await;
        if at_b(&rs) > before_s && rs[0]["commit"] == b.as_str() && rs[0]["status"] == "active" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "never deployed the branch head after S: {rs:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let d = wait_for(&app, &id, "running B", Duration::from_secs(60), |d| d["status"] == "running").await;
    assert_eq!(d["commit"], b.as_str(), "{d}");
    assert!(http_body(&url).await.contains("hello from static v3"));
    let (_, audit) = app.get("/api/v1/audit?limit=100", Some(ADMIN)).await;
    assert!(!audit.to_string().contains(&format!("delivery={Q_COPY}")), "the copy never asked the engine: {audit}");
    let (s, _) = app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
    assert_eq!(s, 202);
    wait_for(&app, &id, "destroyed", Duration::from_secs(300), |d| d["status"] == "destroyed").await;
    rig.stop().await;
}
