//! Commit statuses and GitHub Deployments against a local server standing in for GitHub's REST API that records every
//! request; each is checked against GitHub's own description of the operation (`tests/fixtures/github-openapi/`, from
//! `@octokit/openapi`). On real deploys (when real guests can run here), and on the engine's own records and events
//! without guests (everywhere): a successful deploy, failed ones, the fix, the destroy; then a GitHub that hangs, fails,
//! refuses and rate-limits: the deploys go on, and the retries stop where the policy says.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poem::web::Data;
use poem::{Body, EndpointExt, IntoResponse, Request, Response, Route};
use pvedeploy::config::github::GithubApi;
use pvedeploy::config::{Config, Secret};
use pvedeploy::core::deployment::{Deployment, RawSpec, Spec};
use pvedeploy::core::limits::{Limits, RepoPolicy};
use pvedeploy::core::names::CommitSha;
use pvedeploy::core::release::{DeployStep, ReleaseId};
use pvedeploy::core::status::Status;
use pvedeploy::engine::Engine;
use pvedeploy::github::client::Policy;
use pvedeploy::github::Reporter;
use pvedeploy::pve::RetryPolicy;
use pvedeploy::store::logs::Level;
use pvedeploy::store::releases::{Release, ReleaseStatus, Trigger};
use pvedeploy::store::previews::PreviewRecord;
use pvedeploy::store::{now_millis, Store};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::helpers::{TestApp, ADMIN};
use crate::rig::{agent_with, start_real_sim, wait_for, GitServer, RealSim, Repo};

const TOKEN: &str = "github_pat_11TESTTOKEN0123456789";
const DASHBOARD: &str = "https://deploy.example.com";

/// How the fake GitHub answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ok,
    /// 500 to everything.
    Down,
    /// A primary rate limit: 403, `x-ratelimit-remaining: 0`, reset an hour from now.
    Limited,
    /// Never answers.
    Hangs,
    /// A 403 that is no rate limit (a token without the permission).
    Forbidden,
    /// A secondary rate limit once (429, `retry-after: 1`), then `Ok`.
    SlowDownOnce,
    /// 404 to everything (what GitHub answers for a comment deleted since).
    NotFound,
}

/// One request GitHub's side received.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
    mode: Mode,
}

impl Call {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
    mode: Arc<Mutex<Mode>>,
    next_id: Arc<AtomicU64>,
}

#[poem::handler]
async fn github_api(req: &Request, body: Body, rec: Data<&Recorder>) -> Response {
    let bytes = body.into_vec().await.unwrap_or_default();
    let mode = {
        let mut m = rec.mode.lock().unwrap();
        let now = *m;
        if now == Mode::SlowDownOnce {
            *m = Mode::Ok;
        }
        now
    };
    let headers = req.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
    let call = Call { method: req.method().to_string(), path: req.uri().path().to_string(), headers, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null), mode };
    let deployments = call.path.ends_with("/deployments");
    rec.calls.lock().unwrap().push(call);
    let json_answer = |status: u16, body: Value| Response::builder().status(poem::http::StatusCode::from_u16(status).unwrap()).content_type("application/json; charset=utf-8").body(body.to_string());
    match mode {
        Mode::Ok if deployments => json_answer(201, json!({"id": rec.next_id.fetch_add(1, Ordering::SeqCst), "url": "https://api.github.com/repos/o/r/deployments/1"})),
        Mode::Ok => json_answer(201, json!({"id": 1, "state": "ok"})),
        Mode::Down => json_answer(500, json!({"message": "Server Error"})),
        Mode::Limited => {
            let reset = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
            let mut r = json_answer(403, json!({"message": "API rate limit exceeded for user ID 1.", "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}));
            for (k, v) in [("x-ratelimit-limit", "5000".to_string()), ("x-ratelimit-remaining", "0".into()), ("x-ratelimit-used", "5000".into()), ("x-ratelimit-reset", reset.to_string()), ("x-ratelimit-resource", "core".into())] {
                r.headers_mut().insert(k, v.parse().unwrap());
            }
            r
        }
        Mode::NotFound => json_answer(404, json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest/issues/comments#update-an-issue-comment"})),
        Mode::Forbidden => json_answer(403, json!({"message": "Resource not accessible by personal access token", "documentation_url": "https://docs.github.com/rest/commits/statuses#create-a-commit-status"})),
        Mode::SlowDownOnce => {
            let mut r = json_answer(429, json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}));
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
            r
        }
        Mode::Hangs => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            ().into_response()
        }
    }
}

/// GitHub's REST API faked at the wire on 127.0.0.1; stopped on drop.
struct FakeGithub {
    base: String,
    rec: Recorder,
    stop: Option<oneshot::Sender<()>>,
}

impl FakeGithub {
    async fn start() -> FakeGithub {
        let rec = Recorder { calls: Arc::default(), mode: Arc::new(Mutex::new(Mode::Ok)), next_id: Arc::new(AtomicU64::new(1)) };
        let (addr, tx) = crate::helpers::serve_loopback(Route::new().at("/*path", github_api).data(rec.clone())).await;
        FakeGithub { base: format!("http://{addr}"), rec, stop: Some(tx) }
    }

    fn set(&self, mode: Mode) {
        *self.rec.mode.lock().unwrap() = mode;
    }

    fn calls(&self) -> Vec<Call> {
        self.rec.calls.lock().unwrap().clone()
    }

    /// Waits until a recorded call satisfies `pred` (or panics with what was recorded).
    async fn wait_for(&self, what: &str, pred: impl Fn(&Call) -> bool) -> Call {
        for _ in 0..1200 {
            if let Some(c) = self.calls().into_iter().find(|c| pred(c)) {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("GitHub never received {what}; it received: {:#?}", self.calls());
    }

    /// Every request so far checked against GitHub's description (`validate.py`); panics naming the bad ones.
    fn check_against_the_description(&self) {
        let calls = self.calls();
        let requests: Vec<Value> = calls.iter().map(|c| json!({"method": c.method, "path": c.path, "body": c.body})).collect();
        let Some(verdicts) = described(&requests) else { return };
        assert_eq!(verdicts.len(), calls.len());
        let bad: Vec<String> = calls.iter().zip(&verdicts).filter(|(_, v)| v["errors"] != json!([])).map(|(c, v)| format!("{} {} {}: {}", c.method, c.path, c.body, v["errors"])).collect();
        assert!(bad.is_empty(), "requests GitHub's description does not allow:\n{}", bad.join("\n"));
        for c in &calls {
            assert_eq!(c.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()), "{c:?}");
            assert_eq!((c.header("accept"), c.header("x-github-api-version")), (Some("application/vnd.github+json"), Some("2022-11-28")), "{c:?}");
            assert!(c.header("user-agent").is_some_and(|u| u.starts_with("pvedeploy/")), "GitHub requires a User-Agent: {c:?}");
        }
    }
}

/// `validate.py`'s verdict on each request (`None` without a python that checks schemas: skipped).
fn described(requests: &[Value]) -> Option<Vec<Value>> {
    let python = crate::helpers::schema_python()?;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github-openapi");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(requests).unwrap()).unwrap();
    let out = std::process::Command::new(python).arg(fixtures.join("validate.py")).arg(fixtures.join("operations.json")).arg(file.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn the_description_check_refuses_what_github_does_not_document() {
    let bad = [
        json!({"method": "POST", "path": "/repos/o/r/statuses/abc", "body": {"state": "done", "context": "pvedeploy/web"}}),
        json!({"method": "POST", "path": "/repos/o/r/statuses/abc", "body": {"state": "success", "environment": "web"}}),
        json!({"method": "POST", "path": "/repos/o/r/deployments", "body": {"environment": "web"}}),
        json!({"method": "POST", "path": "/repos/o/r/deployments/x/statuses", "body": {"state": "in_progress"}}),
        json!({"method": "POST", "path": "/repos/o/r/deployments/1/statuses", "body": {"state": "superseded"}}),
        json!({"method": "PUT", "path": "/repos/o/r/deployments", "body": {"ref": "main"}}),
        json!({"method": "POST", "path": "/repos/o/r/check-runs", "body": {}}),
    ];
    let good = json!({"method": "POST", "path": "/repos/o/r/deployments/7/statuses", "body": {"state": "inactive", "description": "Replaced by 1234567"}});
    let Some(verdicts) = described(&[bad.to_vec(), vec![good]].concat()) else { return };
    for (r, v) in bad.iter().zip(&verdicts) {
        assert_ne!(v["errors"], json!([]), "{r} passed the check");
    }
    assert_eq!(verdicts[bad.len()]["errors"], json!([]), "{}", verdicts[bad.len()]);
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Real guests, a git server with one Flask repository `full_name`, the fake GitHub, and an agent reporting to it
/// (the repository's host is its "github.com"). `None` when real guests cannot run here (skipped).
struct World {
    rig: RealSim,
    server: GitServer,
    repo: Repo,
    fake: FakeGithub,
    app: TestApp,
    data: tempfile::TempDir,
}

impl World {
    async fn start(full_name: &str) -> Option<World> {
        let data = tempfile::tempdir().unwrap();
        let key = pvedeploy::keys::load_or_create_deploy_key(&data.path().join("keys")).unwrap();
        let rig = start_real_sim(&key.public_openssh).await?;
        let server = GitServer::start().await;
        let repo = server.repo(full_name, "flask");
        let fake = FakeGithub::start().await;
        let gh = GithubApi { token: Secret::new(TOKEN.into()), token_file: None, api_base: fake.base.clone(), web_host: server.host.clone(), dashboard_url: Some(DASHBOARD.into()) };
        let app = agent_with(rig.sim(), data.path(), &server.host, move |c| c.github.api = Some(gh)).await;
        Some(World { rig, server, repo, fake, app, data })
    }
}

fn statuses_of<'a>(calls: &'a [Call], full_name: &str, sha: &str) -> Vec<&'a Call> {
    calls.iter().filter(|c| c.path == format!("/repos/{full_name}/statuses/{sha}")).collect()
}

/// The GitHub Deployment made for `sha` (its id from the fake's numbering) and its statuses' states, in order.
fn deployment_of(calls: &[Call], full_name: &str, sha: &str) -> (u64, Vec<String>) {
    let creates: Vec<&Call> = calls.iter().filter(|c| c.path == format!("/repos/{full_name}/deployments") && c.mode == Mode::Ok).collect();
    let index = creates.iter().position(|c| c.body["ref"] == sha).unwrap_or_else(|| panic!("no deployment of {sha}: {calls:#?}"));
    let id = index as u64 + 1;
    let states = calls.iter().filter(|c| c.path == format!("/repos/{full_name}/deployments/{id}/statuses")).map(|c| c.body["state"].as_str().unwrap().to_owned()).collect();
    (id, states)
}

async fn log_text(app: &TestApp, id: &str) -> Vec<String> {
    let (s, logs) = app.get(&format!("/api/v1/deployments/{id}/logs?limit=1000"), Some(ADMIN)).await;
    assert_eq!(s, 200, "{logs}");
    logs["lines"].as_array().unwrap().iter().filter(|l| l["step"] == "github").map(|l| l["text"].as_str().unwrap().to_owned()).collect()
}

/// Waits (bounded) until the deployment's log has a GitHub line satisfying `pred`.
async fn wait_for_log(app: &TestApp, id: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let lines = log_text(app, id).await;
        if let Some(l) = lines.iter().find(|l| pred(l)) {
            return l.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(300), "the log never said {what}: {lines:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_successful_and_a_failed_deploy_are_reported_as_github_describes_them() {
    let Some(World { rig, server: _server, repo, fake, app, data: _data }) = World::start("octo/statuses").await else { return };

    let (s, d) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "gh-web", "repo_url": repo.url, "framework": "flask", "type": "lxc", "memory_mib": 1024})).await;
    assert_eq!(s, 202, "{d}");
    let id = d["id"].as_str().unwrap().to_string();
    let d = wait_for(&app, &id, "running", Duration::from_secs(900), |d| d["status"] == "running" || d["status"] == "failed").await;
    assert_eq!(d["status"], "running", "{d}");
    let (v1, url) = (d["commit"].as_str().unwrap().to_string(), d["url"].as_str().unwrap().to_string());
    let page = format!("{DASHBOARD}/#/deployments/{id}");

    // the first deploy: commit status pending → success, a deployment in_progress → success at the app's URL
    let success = |sha: String| move |c: &Call| c.path.ends_with(&format!("/statuses/{sha}")) && c.body["state"] == "success";
    fake.wait_for("the commit status success of v1", success(v1.clone())).await;
    let calls = fake.calls();
    let v1_statuses = statuses_of(&calls, &repo.full_name, &v1);
    let states: Vec<&str> = v1_statuses.iter().map(|c| c.body["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["pending", "success"], "{v1_statuses:#?}");
    for c in &v1_statuses {
        assert_eq!((c.body["context"].as_str(), c.body["target_url"].as_str()), (Some("pvedeploy/gh-web"), Some(page.as_str())), "{c:?}");
    }
    assert_eq!(v1_statuses[1].body["description"], format!("{} is live at {url}", &v1[..7]));
    let create = calls.iter().find(|c| c.path == format!("/repos/{}/deployments", repo.full_name)).unwrap();
    assert_eq!((create.body["ref"].as_str(), create.body["environment"].as_str(), &create.body["required_contexts"]), (Some(v1.as_str()), Some("gh-web"), &json!([])), "{create:?}");
    let first = fake.wait_for("deployment 1 success", |c| c.path.ends_with("/deployments/1/statuses") && c.body["state"] == "success").await;
    assert_eq!((first.body["environment_url"].as_str(), first.body["log_url"].as_str()), (Some(url.as_str()), Some(page.as_str())), "{first:?}");
    assert_eq!(deployment_of(&fake.calls(), &repo.full_name, &v1), (1, vec!["in_progress".to_string(), "success".to_string()]));

    // a broken commit: failure, with the step it failed in; the previous release keeps serving
    repo.edit("app.py", "import os\n", "import os\nraise RuntimeError(\"broken on purpose\")\n");
    let broken = repo.commit("broken");
    let (s, _) = app.post(&format!("/api/v1/deployments/{id}/redeploy"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 202);
    let failed = |sha: String| move |c: &Call| c.path.ends_with(&format!("/statuses/{sha}")) && c.body["state"] == "failure";
    let f = fake.wait_for("the commit status failure of the broken commit", failed(broken.clone())).await;
    let description = f.body["description"].as_str().unwrap();
    assert!(description.starts_with("Failed at step ") && description.chars().count() <= 140, "{description}");
    let d = wait_for(&app, &id, "done with the broken commit", Duration::from_secs(60), |d| d["error_message"].is_string()).await;
    assert_eq!((d["status"].as_str(), d["commit"].as_str()), (Some("running"), Some(v1.as_str())), "{d}");
    let step = d["error_message"].as_str().unwrap().split("failed at step ").nth(1).unwrap().split([' ', ';', ':']).next().unwrap().to_string();
    assert!(description.starts_with(&format!("Failed at step {step}")), "{description} names the step of {d}");
    let calls = fake.calls();
    let states: Vec<&str> = statuses_of(&calls, &repo.full_name, &broken).iter().map(|c| c.body["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["pending", "failure"]);
    let (n, states) = deployment_of(&calls, &repo.full_name, &broken);
    assert_eq!(states, ["in_progress", "failure"], "deployment {n}");

    // fixed: success, and the deployment that served until now turns inactive
    repo.edit("app.py", "raise RuntimeError(\"broken on purpose\")\n", "");
    let fixed = repo.commit("fixed");
    let (s, _) = app.post(&format!("/api/v1/deployments/{id}/redeploy"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 202);
    fake.wait_for("the commit status success of the fix", success(fixed.clone())).await;
    // The deployment's own status is a separate call that may land just after the commit status: wait for it too.
    let (n, _) = deployment_of(&fake.calls(), &repo.full_name, &fixed);
    fake.wait_for("the fix's deployment status success", move |c: &Call| c.path.ends_with(&format!("/deployments/{n}/statuses")) && c.body["state"] == "success").await;
    let (n, states) = deployment_of(&fake.calls(), &repo.full_name, &fixed);
    assert_eq!(states, ["in_progress", "success"], "deployment {n}");
    fake.wait_for("deployment 1 inactive", |c| c.path.ends_with("/deployments/1/statuses") && c.body["state"] == "inactive").await;
    assert_eq!(deployment_of(&fake.calls(), &repo.full_name, &v1).1, ["in_progress", "success", "inactive"]);

    // each call's outcome is in the deployment's log; the token is in none of it
    let lines = log_text(&app, &id).await;
    assert!(lines.iter().any(|l| l.contains(&format!("commit status failure on {}@{}", repo.full_name, &broken[..7]))), "{lines:#?}");
    for path in [format!("/api/v1/deployments/{id}/logs?limit=1000"), format!("/api/v1/deployments/{id}"), "/api/v1/audit?limit=100".into()] {
        let (_, v) = app.get(&path, Some(ADMIN)).await;
        assert!(!v.to_string().contains(TOKEN), "{path} shows the GitHub token");
    }

    // destroyed: its live deployment turns inactive
    let (s, _) = app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
    assert_eq!(s, 202);
    wait_for(&app, &id, "destroyed", Duration::from_secs(180), |d| d["status"] == "destroyed").await;
    let (n, _) = deployment_of(&fake.calls(), &repo.full_name, &fixed);
    fake.wait_for("the last deployment inactive", |c| c.path.ends_with(&format!("/deployments/{n}/statuses")) && c.body["state"] == "inactive").await;
    fake.check_against_the_description();
    app.stop().await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_github_that_hangs_fails_or_rate_limits_never_holds_up_a_deploy_and_is_not_hammered() {
    let Some(World { rig, server: _server, repo, fake, app, data: _data }) = World::start("octo/hostile").await else { return };
    let per_path = |calls: &[Call], path: &str| calls.iter().filter(|c| c.path == path).count();

    // GitHub hangs: the first deploy reaches running all the same; each call gave up after its tries
    fake.set(Mode::Hangs);
    let (s, d) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "gh-hostile", "repo_url": repo.url, "framework": "flask", "type": "lxc", "memory_mib": 1024})).await;
    assert_eq!(s, 202, "{d}");
    let id = d["id"].as_str().unwrap().to_string();
    let d = wait_for(&app, &id, "running", Duration::from_secs(900), |d| d["status"] == "running" || d["status"] == "failed").await;
    assert_eq!(d["status"], "running", "{d}");
    let v1 = d["commit"].as_str().unwrap().to_string();
    let statuses = format!("/repos/{}/statuses/{v1}", repo.full_name);
    let line = wait_for_log(&app, &id, "the final commit status given up", |l| l.contains("could not post commit status success")).await;
    assert!(line.contains("unreachable after 4 tries"), "{line}");
    let calls = fake.calls();
    assert_eq!(per_path(&calls, &statuses), 8, "pending and success, 4 tries each: {calls:#?}");
    assert_eq!(per_path(&calls, &format!("/repos/{}/deployments", repo.full_name)), 4, "one deployment asked for, 4 tries");
    assert!(calls.iter().all(|c| !c.path.contains("/deployments/") ), "no deployment was made, so no status of one was sent: {calls:#?}");

    // GitHub answers 500: the redeploy goes live; every call tried exactly 4 times
    fake.set(Mode::Down);
    repo.edit("app.py", "VERSION_MARKER = \"v1\"", "VERSION_MARKER = \"v2\"");
    let v2 = repo.commit("v2");
    let (s, _) = app.post(&format!("/api/v1/deployments/{id}/redeploy"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 202);
    wait_for(&app, &id, "running v2", Duration::from_secs(600), |d| d["status"] == "running" && d["commit"] == v2.as_str()).await;
    let line = wait_for_log(&app, &id, "the commit status of v2 given up", |l| l.contains(&format!("could not post commit status success on {}@{}", repo.full_name, &v2[..7]))).await;
    assert!(line.contains("HTTP 500"), "{line}");
    let calls = fake.calls();
    assert_eq!(per_path(&calls, &format!("/repos/{}/statuses/{v2}", repo.full_name)), 8, "{calls:#?}");

    // rate-limited (403, x-ratelimit-remaining 0, reset in an hour: longer than a call waits): one request, then
    // nothing is sent until the reset, and the redeploy goes live all the same
    fake.set(Mode::Limited);
    let before = fake.calls().len();
    repo.edit("app.py", "VERSION_MARKER = \"v2\"", "VERSION_MARKER = \"v3\"");
    let v3 = repo.commit("v3");
    let (s, _) = app.post(&format!("/api/v1/deployments/{id}/redeploy"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 202);
    wait_for(&app, &id, "running v3", Duration::from_secs(600), |d| d["status"] == "running" && d["commit"] == v3.as_str()).await;
    let line = wait_for_log(&app, &id, "the commit status of v3 skipped", |l| l.contains(&format!("could not post commit status success on {}@{}", repo.full_name, &v3[..7]))).await;
    assert!(line.contains("rate limit"), "{line}");
    let limited: Vec<Call> = fake.calls().into_iter().skip(before).collect();
    assert_eq!(limited.len(), 1, "one request met the rate limit, none followed it: {limited:#?}");
    assert_eq!(crate::rig::http_body(d["url"].as_str().unwrap()).await, "hello from flask v3\n");
    fake.check_against_the_description();
    app.stop().await;
    rig.stop().await;
}

// ---- The reporter against the engine's own events, without guests (runs everywhere) ----

const REPO: &str = "octo/app";
const LIVE_URL: &str = "http://10.0.0.5:8000";

/// Calls tried three times within a few seconds, so the hostile cases end quickly.
fn quick() -> Policy {
    Policy {
        tries: 3,
        backoff: RetryPolicy { attempts: 3, base_delay: Duration::from_millis(20), max_delay: Duration::from_millis(100), deadline: Duration::from_secs(10) },
        request_timeout: Duration::from_millis(500),
        max_wait: Duration::from_secs(5),
        deadline: Duration::from_secs(10),
    }
}

/// An engine without a cluster over its own store, and a reporter following it that posts to `fake`.
struct Engined {
    engine: Engine,
    /// The engine's store, written as the engine would (the engine keeps its own store to itself).
    store: Store,
    reporter: Reporter,
    _dir: tempfile::TempDir,
}

impl Engined {
    async fn start(fake: &FakeGithub, policy: Policy) -> Engined {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Config::for_data_dir(dir.path()).database).await.unwrap();
        let engine = Engine::new(store.clone(), Limits::default(), RepoPolicy::default(), None, "agent-github".into());
        let api = GithubApi { token: Secret::new(TOKEN.into()), token_file: None, api_base: fake.base.clone(), web_host: "github.com".into(), dashboard_url: Some(DASHBOARD.into()) };
        let reporter = Reporter::with_policy(engine.clone(), &api, policy);
        reporter.spawn();
        Engined { engine, store, reporter, _dir: dir }
    }

    /// A deployment of `repo_url`, recorded and provisioned (`installing`) as the engine leaves it before its first deploy.
    async fn deployment(&self, name: &str, repo_url: &str) -> Deployment {
        let raw = RawSpec { name: Some(name.into()), repo_url: Some(repo_url.into()), framework: Some("flask".into()), ..RawSpec::default() };
        let repos = RepoPolicy { allowed_hosts: vec!["github.com".into(), "gitlab.com".into()], ..RepoPolicy::default() };
        let d = Deployment::new(Spec::parse(raw, &Limits::default(), &repos).unwrap(), now_millis());
        self.store.create_deployment(&d, "created").await.unwrap();
        let d = self.engine.transition(d, Status::Provisioning, "provisioning").await.unwrap();
        self.engine.transition(d, Status::Installing, "guest ready").await.unwrap()
    }

    /// What `engine::deploy` writes and publishes while deploying `commit`: the deployment `deploying`, a release
    /// deploying step by step with log lines, then the release's end and the deployment back to `running` (the
    /// error noted when it failed, the URL when it went live). `failed_at`: the step it fails in, and why.
    async fn deploy(&self, d: Deployment, commit: &str, failed_at: Option<(DeployStep, &str)>) -> Deployment {
        let id = d.id.clone();
        let d = if d.status == Status::Installing { d } else { self.engine.transition(d, Status::Deploying, "redeploy started").await.unwrap() };
        let c = CommitSha::parse(commit).unwrap();
        let mut r = Release { deployment: id.clone(), id: ReleaseId::new(now_millis(), &c), commit: c.clone(), status: ReleaseStatus::Deploying, step: DeployStep::Boot, trigger: Trigger::Push, timings: vec![], error: None, created_at: now_millis(), finished_at: None };
        self.store.save_release(&r).await.unwrap();
        if d.status == Status::Installing {
            self.engine.transition(d, Status::Deploying, "runtime installed").await.unwrap();
        }
        for step in [DeployStep::Boot, DeployStep::Install, DeployStep::Fetch, DeployStep::Dependencies, DeployStep::Build, DeployStep::Start, DeployStep::Health, DeployStep::Switch] {
            r.step = step;
            self.store.save_release(&r).await.unwrap();
            self.engine.log(&id, Level::Info, step.as_str(), &format!("{} …", step.as_str())).await;
            if let Some((at, why)) = failed_at.filter(|(at, _)| *at == step) {
                r.status = ReleaseStatus::Failed;
                r.error = Some(why.into());
                r.finished_at = Some(now_millis());
                self.store.save_release(&r).await.unwrap();
                let msg = format!("deploy failed at step {}: {why}", at.as_str());
                self.engine.log(&id, Level::Error, at.as_str(), &msg).await;
                let mut back = self.store.get_deployment(&id).await.unwrap().unwrap();
                back.error_message = Some(msg.clone());
                let to = if back.url.is_some() { Status::Running } else { Status::Failed };
                return self.engine.transition(back, to, &msg).await.unwrap();
            }
        }
        r.status = ReleaseStatus::Active;
        r.finished_at = Some(now_millis());
        self.store.activate_release(&r).await.unwrap();
        let mut d = self.store.get_deployment(&id).await.unwrap().unwrap();
        d.url = Some(LIVE_URL.into());
        d.commit = Some(CommitSha::parse(commit).unwrap());
        d.error_message = None;
        self.engine.transition(d, Status::Running, "live").await.unwrap()
    }

    /// The deployment's `github` log lines.
    async fn github_log(&self, d: &Deployment) -> Vec<String> {
        let lines = self.store.read_log(&d.id, 0, 1000).await.unwrap();
        lines.into_iter().filter(|l| l.step == pvedeploy::github::LOG_STEP).map(|l| l.text).collect()
    }

    /// Waits (bounded) until the deployment's log has a GitHub line satisfying `pred`.
    async fn wait_for_log(&self, d: &Deployment, what: &str, pred: impl Fn(&str) -> bool) -> String {
        for _ in 0..600 {
            if let Some(l) = self.github_log(d).await.into_iter().find(|l| pred(l)) {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the log never said {what}: {:#?}", self.github_log(d).await);
    }
}

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_and_deployments_follow_the_engine_s_deploys_as_github_describes_them() {
    let fake = FakeGithub::start().await;
    let w = Engined::start(&fake, Policy::default()).await;
    let d = w.deployment("web", "https://github.com/octo/app.git").await;
    let page = format!("{DASHBOARD}/#/deployments/{}", d.id);
    let (v1, broken, guest, fixed) = (sha('1'), sha('2'), sha('3'), sha('4'));

    // a successful deploy: commit status pending → success, a deployment in_progress → success at the app's URL
    let d = w.deploy(d, &v1, None).await;
    fake.wait_for("deployment 1 success", |c| c.path.ends_with("/deployments/1/statuses") && c.body["state"] == "success").await;
    let calls = fake.calls();
    let v1_statuses = statuses_of(&calls, REPO, &v1);
    let states: Vec<&str> = v1_statuses.iter().map(|c| c.body["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["pending", "success"], "{v1_statuses:#?}");
    for c in &v1_statuses {
        assert_eq!((c.body["context"].as_str(), c.body["target_url"].as_str()), (Some("pvedeploy/web"), Some(page.as_str())), "{c:?}");
    }
    assert_eq!(v1_statuses[0].body["description"], "Deploying 1111111 to web");
    assert_eq!(v1_statuses[1].body["description"], format!("1111111 is live at {LIVE_URL}"));
    let create = calls.iter().find(|c| c.path == format!("/repos/{REPO}/deployments")).unwrap();
    assert_eq!((create.body["ref"].as_str(), create.body["environment"].as_str(), &create.body["required_contexts"], &create.body["auto_merge"]), (Some(v1.as_str()), Some("web"), &json!([]), &json!(false)), "{create:?}");
    assert_eq!(deployment_of(&calls, REPO, &v1), (1, vec!["in_progress".to_string(), "success".to_string()]));
    let live = calls.iter().find(|c| c.path.ends_with("/deployments/1/statuses") && c.body["state"] == "success").unwrap();
    assert_eq!((live.body["environment_url"].as_str(), live.body["log_url"].as_str()), (Some(LIVE_URL), Some(page.as_str())), "{live:?}");
    // seen only once it was live, the deploy is still told its start in words of the start
    let started = calls.iter().find(|c| c.path.ends_with("/deployments/1/statuses") && c.body["state"] == "in_progress").unwrap();
    assert_eq!((started.body["description"].as_str(), started.body.get("environment_url")), (Some("Deploying 1111111 to web"), None), "{started:?}");

    // the commit's code fails (build): failure, naming the step and why; the earlier deployment stays live
    let d = w.deploy(d, &broken, Some((DeployStep::Build, "pip install: No matching distribution found for flask==99"))).await;
    let f = fake.wait_for("the commit status failure", |c| c.path.ends_with(&format!("/statuses/{broken}")) && c.body["state"] == "failure").await;
    assert_eq!(f.body["description"], "Failed at step build: pip install: No matching distribution found for flask==99");
    fake.wait_for("deployment 2 failure", |c| c.path.ends_with("/deployments/2/statuses") && c.body["state"] == "failure").await;
    let calls = fake.calls();
    assert_eq!(statuses_of(&calls, REPO, &broken).iter().map(|c| c.body["state"].as_str().unwrap()).collect::<Vec<_>>(), ["pending", "failure"]);
    assert_eq!(deployment_of(&calls, REPO, &broken), (2, vec!["in_progress".to_string(), "failure".to_string()]));
    let failed = calls.iter().find(|c| c.path.ends_with("/deployments/2/statuses") && c.body["state"] == "failure").unwrap();
    assert!(failed.body.get("environment_url").is_none(), "a failed deployment has no URL: {failed:?}");
    assert!(!calls.iter().any(|c| c.path.ends_with("/deployments/1/statuses") && c.body["state"] == "inactive"), "a failure replaces nothing");

    // the guest could not be reached: error, not the commit's fault
    let d = w.deploy(d, &guest, Some((DeployStep::Boot, "the guest did not answer SSH within 300s"))).await;
    let e = fake.wait_for("the commit status error", |c| c.path.ends_with(&format!("/statuses/{guest}")) && c.body["state"] != "pending").await;
    assert_eq!((e.body["state"].as_str(), e.body["description"].as_str()), (Some("error"), Some("Failed at step boot: the guest did not answer SSH within 300s")));
    fake.wait_for("deployment 3 error", |c| c.path.ends_with("/deployments/3/statuses") && c.body["state"] == "error").await;

    // fixed: success, and the deployment that served until now turns inactive
    let d = w.deploy(d, &fixed, None).await;
    fake.wait_for("deployment 1 inactive", |c| c.path.ends_with("/deployments/1/statuses") && c.body["state"] == "inactive").await;
    let calls = fake.calls();
    assert_eq!(deployment_of(&calls, REPO, &v1).1, ["in_progress", "success", "inactive"]);
    assert_eq!(deployment_of(&calls, REPO, &fixed), (4, vec!["in_progress".to_string(), "success".to_string()]));

    // destroyed: its live deployment turns inactive
    let d = w.engine.transition(d, Status::Destroying, "destroy requested").await.unwrap();
    let d = w.engine.transition(d, Status::Destroyed, "destroyed").await.unwrap();
    fake.wait_for("deployment 4 inactive", |c| c.path.ends_with("/deployments/4/statuses") && c.body["state"] == "inactive").await;

    // every call's outcome is in the deployment's log, and the token in none of it
    let lines = w.github_log(&d).await;
    for want in [format!("commit status pending on {REPO}@1111111 (pvedeploy/web)"), format!("commit status failure on {REPO}@2222222"), format!("deployment 1 on {REPO} is inactive")] {
        assert!(lines.iter().any(|l| l.contains(&want)), "{want}: {lines:#?}");
    }
    assert!(lines.iter().all(|l| !l.contains(TOKEN)), "{lines:#?}");

    // a deployment whose repository is not on the configured GitHub is never reported
    let before = fake.calls().len();
    let other = w.deployment("elsewhere", "https://gitlab.com/octo/app.git").await;
    w.deploy(other, &sha('5'), None).await;
    let d2 = w.deployment("probe", "https://github.com/octo/probe.git").await;
    w.deploy(d2, &sha('6'), None).await;
    fake.wait_for("the probe's success", |c| c.path == format!("/repos/octo/probe/statuses/{}", sha('6')) && c.body["state"] == "success").await;
    assert!(fake.calls()[before..].iter().all(|c| c.path.starts_with("/repos/octo/probe/")), "{:#?}", &fake.calls()[before..]);

    fake.check_against_the_description();
    w.reporter.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_that_fails_refuses_or_rate_limits_is_tried_as_the_policy_says_and_logged() {
    let fake = FakeGithub::start().await;
    let w = Engined::start(&fake, quick()).await;
    let per_path = |path: &str| fake.calls().iter().filter(|c| c.path == path).count();

    // 500 to everything: each call tried exactly 3 times, given up, logged; no deployment, so no deployment status
    fake.set(Mode::Down);
    let d = w.deployment("down", "https://github.com/octo/app.git").await;
    let d = w.deploy(d, &sha('a'), None).await;
    let line = w.wait_for_log(&d, "the final commit status given up", |l| l.contains("could not post commit status success")).await;
    assert!(line.contains("unreachable after 3 tries") && line.contains("HTTP 500") && line.contains("the deploy is not affected"), "{line}");
    assert_eq!(per_path(&format!("/repos/{REPO}/statuses/{}", sha('a'))), 6, "pending and success, 3 tries each");
    assert_eq!(per_path(&format!("/repos/{REPO}/deployments")), 3);
    assert!(fake.calls().iter().all(|c| !c.path.contains("/deployments/")), "{:#?}", fake.calls());

    // hangs: each try ends at the request timeout, the call after 3 tries
    fake.set(Mode::Hangs);
    let d = w.deploy(d, &sha('b'), None).await;
    let line = w.wait_for_log(&d, "the hung commit status given up", |l| l.contains(&format!("could not post commit status success on {REPO}@bbbbbbb"))).await;
    assert!(line.contains("unreachable after 3 tries"), "{line}");
    assert_eq!(per_path(&format!("/repos/{REPO}/statuses/{}", sha('b'))), 6);

    // a 403 that is no rate limit: tried once, the log says which permission
    fake.set(Mode::Forbidden);
    let d = w.deploy(d, &sha('c'), None).await;
    let line = w.wait_for_log(&d, "the refused commit status", |l| l.contains(&format!("could not post commit status success on {REPO}@ccccccc"))).await;
    assert!(line.contains("403") && line.contains("Commit statuses: write"), "{line}");
    assert_eq!(per_path(&format!("/repos/{REPO}/statuses/{}", sha('c'))), 2, "pending and success, once each");

    // a secondary rate limit with retry-after: waited out, then the call goes through
    fake.set(Mode::SlowDownOnce);
    let d = w.deploy(d, &sha('d'), None).await;
    w.wait_for_log(&d, "the commit status after the wait", |l| l.contains(&format!("commit status success on {REPO}@ddddddd"))).await;
    let pending: Vec<Call> = fake.calls().into_iter().filter(|c| c.path == format!("/repos/{REPO}/statuses/{}", sha('d')) && c.body["state"] == "pending").collect();
    assert_eq!(pending.iter().map(|c| c.mode).collect::<Vec<_>>(), [Mode::SlowDownOnce, Mode::Ok], "{pending:#?}");

    // the primary rate limit, reset in an hour (longer than a call waits): one request, then nothing is sent
    fake.set(Mode::Limited);
    let before = fake.calls().len();
    let d = w.deploy(d, &sha('e'), None).await;
    let line = w.wait_for_log(&d, "the commit status skipped", |l| l.contains(&format!("could not post commit status success on {REPO}@eeeeeee"))).await;
    assert!(line.contains("rate limit"), "{line}");
    let limited = &fake.calls()[before..];
    assert_eq!(limited.len(), 1, "one request met the rate limit, none followed it: {limited:#?}");

    let lines = w.github_log(&d).await;
    assert!(lines.iter().all(|l| !l.contains(TOKEN)), "{lines:#?}");
    fake.check_against_the_description();
    w.reporter.shutdown(Duration::from_secs(5)).await;
}

// ---- Pull-request previews: the comment, and a preview's whole life on real guests ----

/// A deployment that is the preview of pull request #`number` of `repo` (what `engine::previews` records).
async fn as_preview(w: &Engined, parent: &Deployment, preview: &Deployment, repo: &str, number: u64, head: &str) {
    let now = now_millis();
    let rec = PreviewRecord { parent: parent.id.clone(), number, repo: repo.into(), deployment: preview.id.clone(), head_sha: head.into(), comment_id: None, ended: None, created_at: now, updated_at: now };
    w.store.save_preview(&rec).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_s_pull_request_gets_one_comment_edited_in_place_after_each_deploy() {
    let fake = FakeGithub::start().await;
    let w = Engined::start(&fake, Policy::default()).await;
    // the preview of pull request #7 of octo/app, made from the fork mallory/app
    let parent = w.deployment("web", "https://github.com/octo/app.git").await;
    let d = w.deployment("web-pr-7", "https://github.com/mallory/app.git").await;
    as_preview(&w, &parent, &d, REPO, 7, &sha('1')).await;

    // the first deploy: statuses and the GitHub Deployment on the pull request's repository (a transient, non-production
    // environment), and one comment with the preview's URL
    let d = w.deploy(d, &sha('1'), None).await;
    let posted = fake.wait_for("the preview comment", |c| c.method == "POST" && c.path == format!("/repos/{REPO}/issues/7/comments")).await;
    let body = posted.body["body"].as_str().unwrap();
    assert!(body.starts_with(pvedeploy::github::report::PREVIEW_MARK) && body.contains(&format!("**web-pr-7** is live at {LIVE_URL} with `1111111`")), "{body}");
    assert!(body.contains(&format!("{DASHBOARD}/#/deployments/{}", d.id)), "{body}");
    let calls = fake.calls();
    assert_eq!(statuses_of(&calls, REPO, &sha('1')).iter().map(|c| c.body["state"].as_str().unwrap()).collect::<Vec<_>>(), ["pending", "success"]);
    let create = calls.iter().find(|c| c.path == format!("/repos/{REPO}/deployments")).unwrap();
    assert_eq!((&create.body["environment"], &create.body["transient_environment"], &create.body["production_environment"]), (&json!("web-pr-7"), &json!(true), &json!(false)), "{create:?}");
    assert!(calls.iter().all(|c| !c.path.starts_with("/repos/mallory/")), "nothing goes to the fork: {calls:#?}");

    // a failed deploy, then a fixed one: the same comment edited each time, never a second one
    let d = w.deploy(d, &sha('2'), Some((DeployStep::Build, "pip install: No matching distribution found for flask==99"))).await;
    let edited = fake.wait_for("the comment edited with the failure", |c| c.method == "PATCH" && c.body["body"].as_str().is_some_and(|b| b.contains("`2222222`"))).await;
    assert_eq!(edited.path, format!("/repos/{REPO}/issues/comments/1"));
    assert!(edited.body["body"].as_str().unwrap().contains("failed at step build: pip install: No matching distribution found for flask==99"), "{edited:?}");
    w.deploy(d.clone(), &sha('3'), None).await;
    let edited = fake.wait_for("the comment edited with the fix", |c| c.method == "PATCH" && c.body["body"].as_str().is_some_and(|b| b.contains("`3333333`"))).await;
    assert!(edited.body["body"].as_str().unwrap().contains(&format!("is live at {LIVE_URL}")), "{edited:?}");
    let posts = fake.calls().iter().filter(|c| c.path.ends_with("/issues/7/comments")).count();
    assert_eq!(posts, 1, "one comment per pull request");
    let lines = w.github_log(&d).await;
    assert!(lines.iter().any(|l| l.contains(&format!("comment 1 posted on pull request #7 of {REPO}"))), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains(&format!("comment 1 on pull request #7 of {REPO} updated"))), "{lines:#?}");
    fake.check_against_the_description();
    w.reporter.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_preview_s_comment_says_it_is_gone_and_why_and_a_deleted_one_is_not_posted_again() {
    let fake = FakeGithub::start().await;
    let w = Engined::start(&fake, Policy::default()).await;
    let admin = pvedeploy::core::command::Actor { name: "admin".into(), door: pvedeploy::core::command::Door::Api };
    let parent = w.deployment("web", "https://github.com/octo/app.git").await;
    let d = w.deployment("web-pr-7", "https://github.com/octo/app.git").await;
    as_preview(&w, &parent, &d, REPO, 7, &sha('1')).await;
    let d = w.deploy(d, &sha('1'), None).await;
    fake.wait_for("the preview comment", |c| c.method == "POST" && c.path == format!("/repos/{REPO}/issues/7/comments")).await;
    w.wait_for_log(&d, "the comment remembered", |l| l.contains("comment 1 posted on pull request #7")).await;

    // its parent is destroyed: the preview goes with it, and the one comment is edited to say so
    w.engine.act(parent.id.as_str(), pvedeploy::core::command::Action::Destroy, &admin).await.unwrap();
    let gone = fake.wait_for("the comment edited to say the preview is gone", |c| c.method == "PATCH" && c.body["body"].as_str().is_some_and(|b| b.contains("is gone"))).await;
    assert_eq!(gone.path, format!("/repos/{REPO}/issues/comments/1"));
    let body = gone.body["body"].as_str().unwrap();
    assert!(body.starts_with(pvedeploy::github::report::PREVIEW_MARK) && body.contains("**web-pr-7** is gone: its parent deployment web was destroyed."), "{body}");
    assert!(!body.contains(LIVE_URL), "a gone preview's URL is not offered: {body}");
    fake.wait_for("its GitHub deployment inactive", |c| c.path.ends_with("/deployments/1/statuses") && c.body["state"] == "inactive").await;
    assert_eq!(w.store.get_deployment(&d.id).await.unwrap().unwrap().status, Status::Destroyed);
    w.wait_for_log(&d, "the comment edit", |l| l.contains(&format!("comment 1 on pull request #7 of {REPO} says the preview is gone"))).await;
    assert_eq!(fake.calls().iter().filter(|c| c.path.ends_with("/issues/7/comments")).count(), 1, "edited, never posted anew");

    // a preview destroyed by hand whose comment was deleted on GitHub: the edit meets a 404, nothing is posted instead
    let shop = w.deployment("shop", "https://github.com/octo/app.git").await;
    let e = w.deployment("shop-pr-8", "https://github.com/octo/app.git").await;
    as_preview(&w, &shop, &e, REPO, 8, &sha('2')).await;
    let e = w.deploy(e, &sha('2'), None).await;
    fake.wait_for("the second preview's comment", |c| c.method == "POST" && c.path == format!("/repos/{REPO}/issues/8/comments")).await;
    w.wait_for_log(&e, "the comment remembered", |l| l.contains("comment 1 posted on pull request #8")).await;
    fake.set(Mode::NotFound);
    let before = fake.calls().len();
    w.engine.act(e.id.as_str(), pvedeploy::core::command::Action::Destroy, &admin).await.unwrap();
    w.wait_for_log(&e, "the deleted comment", |l| l.contains("comment 1 on pull request #8 was deleted; nothing to edit")).await;
    let after: Vec<Call> = fake.calls()[before..].to_vec();
    assert!(after.iter().any(|c| c.method == "PATCH" && c.body["body"].as_str().is_some_and(|b| b.contains("**shop-pr-8** is gone: it was destroyed by admin via api."))), "{after:#?}");
    assert!(after.iter().all(|c| c.method != "POST" || !c.path.contains("/comments")), "no comment posted anew: {after:#?}");
    assert_eq!(w.store.get_deployment(&shop.id).await.unwrap().unwrap().status, Status::Installing, "a preview's destroy leaves its parent alone");
    fake.check_against_the_description();
    w.reporter.shutdown(Duration::from_secs(5)).await;
}

/// Commits the work tree on `branch` and pushes it; returns the commit.
fn commit_on(repo: &Repo, branch: &str, message: &str) -> String {
    let git = |args: &[&str]| crate::rig::git(&repo.work, args);
    git(&["add", "-A"]);
    git(&["-c", "user.name=Test", "-c", "user.email=test@example.invalid", "commit", "--quiet", "-m", message]);
    git(&["push", "--quiet", "origin", branch]);
    crate::rig::git(&repo.bare, &["update-server-info"]);
    git(&["rev-parse", "HEAD"]).trim().to_string()
}

/// octokit's `pull_request` example for `action`, as GitHub would send it for pull request #5 of `repo` from its
/// branch `feature` at `head` into `main`.
fn pull_request_of(repo: &Repo, action: &str, head: &str, merged: bool) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/octokit-webhooks/examples.json");
    let all: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut e = all["pull_request"].as_array().unwrap().iter().find(|e| e["action"] == action).unwrap().clone();
    let web = repo.url.trim_end_matches(".git").to_string();
    for at in ["/repository", "/pull_request/head/repo", "/pull_request/base/repo"] {
        let r = e.pointer_mut(at).unwrap();
        for (k, v) in [("id", json!(4711)), ("full_name", json!(repo.full_name)), ("clone_url", json!(repo.url)), ("html_url", json!(web)), ("name", json!(repo.full_name.split('/').nth(1).unwrap()))] {
            r[k] = v;
        }
    }
    e["number"] = 5.into();
    e["pull_request"]["number"] = 5.into();
    e["pull_request"]["merged"] = merged.into();
    e["pull_request"]["head"]["ref"] = "feature".into();
    e["pull_request"]["head"]["sha"] = head.into();
    e["pull_request"]["base"]["ref"] = "main".into();
    e.to_string()
}

async fn deliver_signed(app: &TestApp, guid: &str, body: &str) {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(crate::rig::WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let r = app
        .client
        .post(app.url("/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", guid)
        .header("x-hub-signature-256", format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{guid}");
    let started = Instant::now();
    loop {
        let (s, d) = app.get(&format!("/api/v1/webhooks/deliveries/{guid}"), Some(ADMIN)).await;
        assert_eq!(s, 200, "{d}");
        if d["outcome"] != "received" {
            assert!(["preview_created", "redeploy_requested", "queued", "preview_destroyed"].contains(&d["outcome"].as_str().unwrap()), "{d}");
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{guid} not handled: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_preview_is_deployed_on_opened_redeployed_on_synchronize_and_destroyed_on_closed_on_real_guests() {
    let data = tempfile::tempdir().unwrap();
    let key = pvedeploy::keys::load_or_create_deploy_key(&data.path().join("keys")).unwrap();
    let Some(rig) = start_real_sim(&key.public_openssh).await else { return };
    let server = GitServer::start().await;
    let repo = server.repo("octo/previews", "flask");
    let fake = FakeGithub::start().await;
    // the parent, recorded as a request records it (the agent takes it up at start like any pending deployment)
    {
        let mut c = pvedeploy::config::Config::for_data_dir(data.path());
        c.repos = RepoPolicy { allowed_hosts: vec![server.host.clone()], schemes: vec![pvedeploy::core::limits::RepoScheme::Http], allow_private: vec![] };
        let raw = RawSpec { name: Some("gh-prev".into()), repo_url: Some(repo.url.clone()), framework: Some("flask".into()), guest_type: Some("lxc".into()), previews: Some(true), ..RawSpec::default() };
        let d = Deployment::new(Spec::parse(raw, &Limits::default(), &c.repos).unwrap(), now_millis());
        let store = Store::open(&c.database).await.unwrap();
        store.create_deployment(&d, "created").await.unwrap();
        assert!(store.close(Duration::from_secs(10)).await);
    }
    let gh = GithubApi { token: Secret::new(TOKEN.into()), token_file: None, api_base: fake.base.clone(), web_host: server.host.clone(), dashboard_url: Some(DASHBOARD.into()) };
    let app = agent_with(rig.sim(), data.path(), &server.host, move |c| c.github.api = Some(gh)).await;
    crate::rig::git(&repo.work, &["checkout", "-q", "-b", "feature"]);
    repo.edit("app.py", "VERSION_MARKER = \"v1\"", "VERSION_MARKER = \"v2\"");
    let v2 = commit_on(&repo, "feature", "v2");

    // opened: gh-prev-pr-5 runs the pull request's head
    deliver_signed(&app, "real-pr-opened", &pull_request_of(&repo, "opened", &v2, false)).await;
    let d = wait_for(&app, "gh-prev-pr-5", "running", Duration::from_secs(900), |d| d["status"] == "running" || d["status"] == "failed").await;
    assert_eq!((d["status"].as_str(), d["commit"].as_str()), (Some("running"), Some(v2.as_str())), "{d}");
    let id = d["id"].as_str().unwrap().to_string();
    let url = d["url"].as_str().unwrap().to_string();
    assert_eq!(crate::rig::http_body(&url).await, "hello from flask v2\n");
    let posted = fake.wait_for("the preview comment", |c| c.method == "POST" && c.path == "/repos/octo/previews/issues/5/comments").await;
    assert!(posted.body["body"].as_str().unwrap().contains(&url), "{posted:?}");

    // synchronize: redeployed to the new head
    repo.edit("app.py", "VERSION_MARKER = \"v2\"", "VERSION_MARKER = \"v3\"");
    let v3 = commit_on(&repo, "feature", "v3");
    deliver_signed(&app, "real-pr-sync", &pull_request_of(&repo, "synchronize", &v3, false)).await;
    let d = wait_for(&app, &id, "running v3", Duration::from_secs(600), |d| d["commit"] == v3.as_str() && d["status"] == "running").await;
    assert_eq!(crate::rig::http_body(d["url"].as_str().unwrap()).await, "hello from flask v3\n");
    fake.wait_for("the comment edited", |c| c.method == "PATCH" && c.path == "/repos/octo/previews/issues/comments/1" && c.body["body"].as_str().is_some_and(|b| b.contains(&v3[..7]))).await;

    // closed (merged): destroyed, its guest gone; the parent is untouched
    deliver_signed(&app, "real-pr-closed", &pull_request_of(&repo, "closed", &v3, true)).await;
    wait_for(&app, &id, "destroyed", Duration::from_secs(300), |d| d["status"] == "destroyed").await;
    let (_, parent) = app.get("/api/v1/deployments/gh-prev", Some(ADMIN)).await;
    assert!(!["destroying", "destroyed"].contains(&parent["status"].as_str().unwrap()), "the parent is not touched: {parent}");
    assert_ne!(parent["id"].as_str(), Some(id.as_str()));
    fake.check_against_the_description();
    app.stop().await;
    rig.stop().await;
}
