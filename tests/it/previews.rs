//! Pull-request previews through the real webhook endpoint, with signed `pull_request` payloads from octokit's published
//! examples (`@octokit/webhooks-examples` 7.6.1, `tests/fixtures/octokit-webhooks`), as GitHub sends them: a preview
//! made on `opened`, moved on `synchronize`, destroyed on `closed`; forks refused unless allowed; a deployment that
//! merely has a preview's name left alone; the TTL backstop. Without a cluster (runs everywhere): a preview stays
//! `pending` here, and what a real deploy does with it is in `github.rs` (`a_preview_…_on_real_guests`).

use std::sync::Arc;
use std::time::Duration;

use pvedeploy::core::deployment::{Deployment, RawSpec, Spec};
use pvedeploy::engine::schedules::ManualClock;
use pvedeploy::store::{now_millis, Store};
use serde_json::{json, Value};

use crate::helpers::{test_config, TestApp, ADMIN, READER};
use crate::webhooks::{configure, deliver, settled};

const REPO: &str = "https://github.com/Codertocat/Hello-World";
const V2: &str = "2222222222222222222222222222222222222222";
const V3: &str = "3333333333333333333333333333333333333333";

/// octokit's `pull_request` example for `action` (the first one with it), unchanged.
fn example(action: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/octokit-webhooks/examples.json");
    let all: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    all["pull_request"].as_array().unwrap().iter().find(|e| e["action"] == action).unwrap_or_else(|| panic!("no {action} example")).clone()
}

/// The example for `action` at head commit `sha` (what GitHub sends after new commits).
fn at(action: &str, sha: &str) -> String {
    let mut e = example(action);
    e["pull_request"]["head"]["sha"] = sha.into();
    e.to_string()
}

/// The example for `action`, its head in the fork `mallory/Hello-World` (another repository: another id).
fn from_fork(action: &str) -> String {
    let mut e = example(action);
    let head = &mut e["pull_request"]["head"];
    head["label"] = "mallory:changes".into();
    head["user"]["login"] = "mallory".into();
    for (k, v) in [("id", json!(99_000_001)), ("name", json!("Hello-World")), ("full_name", json!("mallory/Hello-World")), ("fork", json!(true)), ("clone_url", json!("https://github.com/mallory/Hello-World.git")), ("html_url", json!("https://github.com/mallory/Hello-World"))] {
        head["repo"][k] = v;
    }
    e.to_string()
}

/// Deployments recorded as a request would record them (a request first asks github.com whether the repository
/// exists, and tests do not depend on reaching it), then the app on that store.
async fn app_with(dir: &std::path::Path, deployments: &[RawSpec], clock: Option<Arc<ManualClock>>) -> (TestApp, Vec<String>) {
    let mut config = test_config(dir);
    configure(&mut config);
    let store = Store::open(&config.database).await.unwrap();
    let mut ids = vec![];
    for raw in deployments {
        let d = Deployment::new(Spec::parse(raw.clone(), &config.limits, &config.repos).unwrap(), now_millis());
        store.create_deployment(&d, "created").await.unwrap();
        ids.push(d.id.to_string());
    }
    assert!(store.close(Duration::from_secs(10)).await);
    let app = match clock {
        Some(c) => TestApp::spawn_config_with_clock(config, c).await,
        None => TestApp::spawn_config(config).await,
    };
    (app, ids)
}

fn parent(name: &str, previews: bool, forks: bool) -> RawSpec {
    RawSpec {
        name: Some(name.into()),
        framework: Some("static".into()),
        repo_url: Some(REPO.into()),
        branch: Some("master".into()),
        previews: Some(previews),
        previews_from_forks: forks.then_some(true),
        ..RawSpec::default()
    }
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    app.get(path, Some(READER)).await
}

/// Delivers and waits for the outcome; asserts the door's answer (202 `accepted`).
async fn handled(app: &TestApp, guid: &str, body: &str) -> Value {
    let (s, said) = deliver(app, "pull_request", guid, body).await;
    assert_eq!((s, said["status"].as_str()), (202, Some("accepted")), "{said}");
    settled(app, guid).await
}

fn target<'a>(d: &'a Value, id: &str) -> &'a Value {
    d["targets"].as_array().unwrap().iter().find(|t| t["deployment"] == id).unwrap_or_else(|| panic!("no target {id}: {d}"))
}

#[tokio::test]
async fn a_pull_request_s_preview_is_made_on_opened_moved_on_synchronize_and_destroyed_on_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (app, ids) = app_with(dir.path(), &[parent("hello", true, false)], None).await;
    let parent_id = &ids[0];
    let opened = example("opened");
    let head = opened["pull_request"]["head"]["sha"].as_str().unwrap().to_string();

    // opened: `hello-pr-2`, the parent's spec on the head branch, at the head commit, with its TTL
    let d = handled(&app, "pr-opened-1", &opened.to_string()).await;
    assert_eq!((d["outcome"].as_str(), d["ref"].as_str(), d["after"].as_str()), (Some("preview_created"), Some("refs/pull/2/head"), Some(head.as_str())), "{d}");
    assert_eq!(target(&d, parent_id)["outcome"], "preview_created");
    assert!(d["detail"].as_str().unwrap().contains("hello-pr-2"), "{d}");
    let (s, p) = get(&app, "/api/v1/deployments/hello-pr-2").await;
    assert_eq!(s, 200, "{p}");
    assert_eq!((p["repo_url"].as_str(), p["branch"].as_str(), p["framework"].as_str()), (Some(REPO), Some("changes"), Some("static")), "{p}");
    assert_eq!((&p["auto_redeploy"], &p["previews"], &p["status"]), (&json!(false), &json!(false), &json!("pending")), "{p}");
    let preview_id = p["id"].as_str().unwrap().to_string();
    let created = time::OffsetDateTime::parse(p["created_at"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
    let (_, e) = get(&app, "/api/v1/deployments/hello-pr-2/expiry").await;
    let expires = time::OffsetDateTime::parse(e["expires_at"].as_str().expect("the TTL backstop is set"), &time::format_description::well_known::Rfc3339).unwrap();
    let ttl = expires - created;
    assert!(ttl >= time::Duration::hours(72) - time::Duration::seconds(2) && ttl <= time::Duration::hours(72) + time::Duration::seconds(2), "72 h by default: {ttl}");
    let (_, log) = get(&app, &format!("/api/v1/deployments/{parent_id}/logs")).await;
    assert!(log["lines"].as_array().unwrap().iter().any(|l| l["step"] == "preview" && l["text"].as_str().unwrap().contains("preview_created")), "{log}");

    // the same GUID again acted already: a duplicate, nothing made twice
    let (s, said) = deliver(&app, "pull_request", "pr-opened-1", &opened.to_string()).await;
    assert_eq!((s, said["status"].as_str()), (200, Some("duplicate")), "{said}");

    // new commits (synchronize): the preview is moved to the new head; still provisioning here (no cluster), so its
    // first deploy deploys it
    let d = handled(&app, "pr-sync-1", &at("synchronize", V2)).await;
    assert_eq!((d["outcome"].as_str(), d["after"].as_str()), (Some("queued"), Some(V2)), "{d}");
    assert!(d["detail"].as_str().unwrap().contains(&format!("its first deploy deploys {V2}")), "{d}");
    let d = handled(&app, "pr-reopened-1", &at("reopened", V3)).await;
    assert_eq!(d["outcome"], "queued", "a reopen while a preview lives moves it too: {d}");
    let (_, all) = get(&app, "/api/v1/deployments?limit=100").await;
    assert_eq!(all["items"].as_array().unwrap().iter().filter(|d| d["name"] == "hello-pr-2").count(), 1, "one preview: {all}");

    // closed (not merged): the preview is destroyed, its expiry is gone; the parent is untouched
    let d = handled(&app, "pr-closed-1", &at("closed", V3)).await;
    assert_eq!(d["outcome"], "preview_destroyed", "{d}");
    let (_, p) = get(&app, &format!("/api/v1/deployments/{preview_id}")).await;
    assert_eq!(p["status"], "destroyed", "{p}");
    assert!(get(&app, &format!("/api/v1/deployments/{preview_id}/expiry")).await.1.get("expires_at").is_none());
    assert_eq!(get(&app, &format!("/api/v1/deployments/{parent_id}")).await.1["status"], "pending");
    // closed again (GitHub redelivers, or a second hook): nothing left to destroy
    let d = handled(&app, "pr-closed-2", &at("closed", V3)).await;
    assert_eq!((d["outcome"].as_str(), target(&d, parent_id)["detail"].as_str()), (Some("ignored_no_preview"), Some("its preview is destroyed already")), "{d}");

    // reopened after the close: a new preview of the same name
    let d = handled(&app, "pr-reopened-2", &at("reopened", V3)).await;
    assert_eq!(d["outcome"], "preview_created", "{d}");
    let (_, p) = get(&app, "/api/v1/deployments/hello-pr-2").await;
    assert_ne!(p["id"].as_str().unwrap(), preview_id, "{p}");
    let audits = app.get("/api/v1/audit?limit=100", Some(ADMIN)).await.1;
    assert!(audits.as_array().unwrap().iter().any(|a| a["action"] == "webhook_preview" && a["actor"] == "github:Codertocat"), "{audits}");
    app.stop().await;
}

/// The example for `action` as pull request #`n`.
fn numbered(action: &str, n: u64) -> String {
    let mut e = example(action);
    e["number"] = n.into();
    e["pull_request"]["number"] = n.into();
    e.to_string()
}

async fn log_lines(app: &TestApp, id: &str) -> Vec<String> {
    let (_, log) = get(app, &format!("/api/v1/deployments/{id}/logs?limit=1000")).await;
    log["lines"].as_array().unwrap().iter().map(|l| format!("{}: {}", l["step"].as_str().unwrap(), l["text"].as_str().unwrap())).collect()
}

#[tokio::test]
async fn destroying_a_parent_destroys_its_live_previews_with_it_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let (app, ids) = app_with(dir.path(), &[parent("hello", true, false), parent("other", true, false)], None).await;
    let (hello, other) = (&ids[0], &ids[1]);
    // two pull requests previewed by both deployments of the repository; #3 closes, so its preview is gone already
    assert_eq!(handled(&app, "parent-opened-2", &numbered("opened", 2)).await["outcome"], "preview_created");
    assert_eq!(handled(&app, "parent-opened-3", &numbered("opened", 3)).await["outcome"], "preview_created");
    assert_eq!(handled(&app, "parent-closed-3", &numbered("closed", 3)).await["outcome"], "preview_destroyed");
    let id_of = |name: &'static str| {
        let app = &app;
        async move { get(app, &format!("/api/v1/deployments/{name}")).await.1["id"].as_str().unwrap().to_string() }
    };
    let (pr2, pr3, other2) = (id_of("hello-pr-2").await, id_of("hello-pr-3").await, id_of("other-pr-2").await);
    let closed_lines = log_lines(&app, &pr3).await.len();

    // the parent is destroyed: its live preview goes with it, saying why, its TTL backstop removed
    let (s, d) = app.delete(&format!("/api/v1/deployments/{hello}"), Some(ADMIN)).await;
    assert_eq!(s, 202, "{d}");
    crate::schedules::wait_for(&app, &format!("/api/v1/deployments/{hello}"), "the parent destroyed", |d| d["status"] == "destroyed").await;
    let (_, p) = get(&app, &format!("/api/v1/deployments/{pr2}")).await;
    assert_eq!(p["status"], "destroyed", "the parent is recorded destroyed only once its previews' destroys are: {p}");
    let lines = log_lines(&app, &pr2).await;
    assert!(lines.iter().any(|l| l == "preview: destroying: its parent deployment hello was destroyed"), "{lines:#?}");
    assert!(get(&app, &format!("/api/v1/deployments/{pr2}/expiry")).await.1.get("expires_at").is_none());
    let lines = log_lines(&app, hello).await;
    assert!(lines.iter().any(|l| l == "destroy: destroying its 1 preview(s) with it: hello-pr-2"), "{lines:#?}");
    let audits = app.get("/api/v1/audit?limit=100", Some(ADMIN)).await.1;
    assert!(audits.as_array().unwrap().iter().any(|a| a["action"] == "destroy" && a["target"] == pr2.as_str() && a["actor"] == "preview"), "{audits}");

    // the preview destroyed earlier is not touched again; another deployment's preview of the same pull request stays
    assert_eq!(log_lines(&app, &pr3).await.len(), closed_lines, "{:#?}", log_lines(&app, &pr3).await);
    assert_eq!(get(&app, &format!("/api/v1/deployments/{other2}")).await.1["status"], "pending");
    assert_eq!(get(&app, &format!("/api/v1/deployments/{other}")).await.1["status"], "pending");

    // the pull request closes later: the destroyed parent is not asked, the other deployment's preview goes
    let d = handled(&app, "parent-closed-2", &numbered("closed", 2)).await;
    assert!(d["targets"].as_array().unwrap().iter().all(|t| t["deployment"] != hello.as_str()), "{d}");
    assert_eq!(target(&d, other)["outcome"], "preview_destroyed", "{d}");
    app.stop().await;
}

/// What a crash between the 202 and the handling leaves: a pull request delivery recorded `received`. The restarted
/// agent handles it from the event kept with it; one recorded by an older version (no event kept) is marked failed, so
/// GitHub's "Redeliver" of it runs it again; neither is lost, and the one that acted is not acted on twice.
#[tokio::test]
async fn a_pull_request_acknowledged_but_not_handled_before_a_crash_is_handled_at_the_next_start() {
    use pvedeploy::core::webhook::{DeliveryId, Outcome};
    use pvedeploy::store::deliveries::DeliveryRecord;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    configure(&mut config);
    {
        let store = Store::open(&config.database).await.unwrap();
        let d = Deployment::new(Spec::parse(parent("hello", true, false), &config.limits, &config.repos).unwrap(), now_millis());
        store.create_deployment(&d, "created").await.unwrap();
        let opened = numbered("opened", 2);
        let Ok(pvedeploy::webhooks::github::GithubEvent::PullRequest(pr)) = pvedeploy::webhooks::github::parse("pull_request", opened.as_bytes()) else { panic!("not a pull request") };
        for (guid, kept) in [("crashed-pr-1", Some(pr.clone())), ("crashed-pr-old", None)] {
            let mut record = DeliveryRecord::received(DeliveryId::parse(guid).unwrap(), "pull_request".into(), None, None);
            record.repo = Some(pr.repo.full_name.clone());
            record.repo_hosts = pr.repo.hosts.clone();
            record.git_ref = Some("refs/pull/2/head".into());
            record.after = Some(pr.head_sha.as_str().into());
            record.pusher = Some(pr.sender.clone());
            record.pull_request = kept;
            assert_eq!(record.outcome, Outcome::Received);
            store.record_delivery(&record).await.unwrap();
        }
        // read back as written
        assert_eq!(store.get_delivery(&DeliveryId::parse("crashed-pr-1").unwrap()).await.unwrap().unwrap().pull_request, Some(pr));
        assert!(store.close(Duration::from_secs(10)).await);
    }
    let app = TestApp::spawn_config(config).await;
    let d = settled(&app, "crashed-pr-1").await;
    assert_eq!(d["outcome"], "preview_created", "handled after the restart: {d}");
    assert_eq!(get(&app, "/api/v1/deployments/hello-pr-2").await.0, 200);
    let d = settled(&app, "crashed-pr-old").await;
    assert_eq!(d["outcome"], "failed", "{d}");
    assert!(d["detail"].as_str().unwrap().contains("redeliver it from GitHub"), "{d}");
    // GitHub's "Redeliver": the failed one runs again (the preview is there: moved to the same head), the one that
    // acted is a duplicate
    let (s, said) = deliver(&app, "pull_request", "crashed-pr-old", &numbered("opened", 2)).await;
    assert_eq!((s, said["status"].as_str()), (202, Some("accepted")), "{said}");
    let d = settled(&app, "crashed-pr-old").await;
    assert_eq!((d["retries"].as_u64(), d["outcome"].as_str()), (Some(1), Some("queued")), "{d}");
    let (s, said) = deliver(&app, "pull_request", "crashed-pr-1", &numbered("opened", 2)).await;
    assert_eq!((s, said["status"].as_str()), (200, Some("duplicate")), "{said}");
    let (_, all) = get(&app, "/api/v1/deployments?limit=100").await;
    assert_eq!(all["items"].as_array().unwrap().iter().filter(|d| d["name"] == "hello-pr-2").count(), 1, "one preview: {all}");
    app.stop().await;
}

#[tokio::test]
async fn a_fork_s_pull_request_is_refused_unless_the_deployment_allows_forks() {
    let dir = tempfile::tempdir().unwrap();
    let (app, ids) = app_with(dir.path(), &[parent("hello", true, false), parent("open", true, true)], None).await;
    let d = handled(&app, "fork-opened-1", &from_fork("opened")).await;
    // `hello` refuses and says why; `open` allows forks and previews the fork's repository
    let refused = target(&d, &ids[0]);
    assert_eq!(refused["outcome"], "refused", "{d}");
    let why = refused["detail"].as_str().unwrap();
    assert!(why.contains("mallory/Hello-World") && why.contains("previews_from_forks"), "{why}");
    assert_eq!(get(&app, "/api/v1/deployments/hello-pr-2").await.0, 404, "nothing made for the refusing deployment");
    assert_eq!(target(&d, &ids[1])["outcome"], "preview_created", "{d}");
    let (_, p) = get(&app, "/api/v1/deployments/open-pr-2").await;
    assert_eq!((p["repo_url"].as_str(), p["branch"].as_str()), (Some("https://github.com/mallory/Hello-World.git"), Some("changes")), "{p}");

    // with only the refusing deployment, the delivery is recorded refused, with why
    let dir2 = tempfile::tempdir().unwrap();
    let (app2, _) = app_with(dir2.path(), &[parent("hello", true, false)], None).await;
    let d = handled(&app2, "fork-opened-2", &from_fork("opened")).await;
    assert_eq!(d["outcome"], "refused", "{d}");
    assert!(d["detail"].as_str().unwrap().contains("pull request #2 `opened`") && d["detail"].as_str().unwrap().contains("fork"), "{d}");
    // its synchronize is refused the same way; its close finds nothing to destroy
    assert_eq!(handled(&app2, "fork-sync-2", &from_fork("synchronize")).await["outcome"], "refused");
    assert_eq!(handled(&app2, "fork-closed-2", &from_fork("closed")).await["outcome"], "ignored_no_preview");
    // a refusal did not act: GitHub's "Redeliver" of it is processed again (and refused again)
    let (s, said) = deliver(&app2, "pull_request", "fork-opened-2", &from_fork("opened")).await;
    assert_eq!((s, said["status"].as_str()), (202, Some("accepted")), "{said}");
    app.stop().await;
    app2.stop().await;
}

#[tokio::test]
async fn a_deployment_merely_named_like_a_preview_is_never_adopted_nor_destroyed() {
    let dir = tempfile::tempdir().unwrap();
    let squatter = RawSpec { name: Some("hello-pr-2".into()), ..parent("x", false, false) };
    let (app, ids) = app_with(dir.path(), &[parent("hello", true, false), squatter], None).await;
    let d = handled(&app, "squat-opened", &example("opened").to_string()).await;
    let t = target(&d, &ids[0]);
    assert_eq!(t["outcome"], "refused", "{d}");
    assert!(t["detail"].as_str().unwrap().contains("is not this pull request's preview"), "{d}");
    assert!(d["targets"].as_array().unwrap().iter().all(|t| t["deployment"] != ids[1].as_str() || t["outcome"] == "ignored_previews_off"), "{d}");
    let d = handled(&app, "squat-closed", &example("closed").to_string()).await;
    assert_eq!(d["outcome"], "ignored_no_preview", "{d}");
    let (_, p) = get(&app, &format!("/api/v1/deployments/{}", ids[1])).await;
    assert_eq!((p["name"].as_str(), p["status"].as_str()), (Some("hello-pr-2"), Some("pending")), "{p}");
    app.stop().await;
}

#[tokio::test]
async fn a_deployment_without_previews_acknowledges_pull_requests_and_makes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (app, ids) = app_with(dir.path(), &[parent("hello", false, false)], None).await;
    for (guid, action) in [("off-opened", "opened"), ("off-sync", "synchronize"), ("off-reopened", "reopened")] {
        let d = handled(&app, guid, &example(action).to_string()).await;
        assert_eq!((d["outcome"].as_str(), target(&d, &ids[0])["outcome"].as_str()), (Some("ignored_previews_off"), Some("ignored_previews_off")), "{d}");
        assert!(d["detail"].as_str().unwrap().contains("previews: true"), "{d}");
    }
    let (_, all) = get(&app, "/api/v1/deployments?limit=100").await;
    assert_eq!(all["total"], 1, "{all}");
    app.stop().await;
}

#[tokio::test]
async fn a_preview_left_open_is_destroyed_by_its_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(now_millis()));
    let short = RawSpec { preview_ttl_hours: Some(1), ..parent("hello", true, false) };
    let (app, ids) = app_with(dir.path(), &[short], Some(clock.clone())).await;
    assert_eq!(handled(&app, "ttl-opened", &example("opened").to_string()).await["outcome"], "preview_created");
    let (_, e) = get(&app, "/api/v1/deployments/hello-pr-2/expiry").await;
    let expires = time::OffsetDateTime::parse(e["expires_at"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
    let (_, p) = get(&app, "/api/v1/deployments/hello-pr-2").await;
    let id = p["id"].as_str().unwrap().to_string();
    clock.set((expires.unix_timestamp_nanos() / 1_000_000) as i64);
    crate::schedules::wait_for(&app, &format!("/api/v1/deployments/{id}"), "destroyed by its TTL", |d| d["status"] == "destroyed").await;
    assert_eq!(get(&app, &format!("/api/v1/deployments/{}", ids[0])).await.1["status"], "pending", "the parent stays");
    // its pull request closes later: nothing left to destroy
    assert_eq!(handled(&app, "ttl-closed", &example("closed").to_string()).await["outcome"], "ignored_no_preview");
    app.stop().await;
}

#[tokio::test]
async fn the_preview_options_are_checked_at_the_api_naming_the_field() {
    let app = TestApp::spawn_with(configure).await;
    let base = json!({"name": "web", "repo_url": "http://127.0.0.1:9/octo/app.git", "framework": "flask"});
    let with = |extra: Value| {
        let mut b = base.clone();
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    for (extra, field, rule) in [
        (json!({"previews": true, "preview_ttl_hours": 0}), "preview_ttl_hours", "range"),
        (json!({"previews": true, "preview_ttl_hours": 721}), "preview_ttl_hours", "range"),
        (json!({"previews": "yes"}), "previews", "type"),
        (json!({"previews_from_forks": true}), "previews_from_forks", "requires_previews"),
    ] {
        let (s, e) = app.post("/api/v1/deployments", Some(ADMIN), &with(extra.clone())).await;
        assert_eq!((s, e["fields"][0]["field"].as_str(), e["fields"][0]["rule"].as_str()), (422, Some(field), Some(rule)), "{extra}: {e}");
    }
    let (_, all) = get(&app, "/api/v1/deployments").await;
    assert_eq!(all["total"], 0, "a refused request stores nothing");
    let (s, d) = app.post("/api/v1/deployments", Some(ADMIN), &with(json!({"previews": true, "previews_from_forks": true, "preview_ttl_hours": 24}))).await;
    assert_eq!(s, 202, "{d}");
    assert_eq!((&d["previews"], &d["previews_from_forks"], &d["preview_ttl_hours"]), (&json!(true), &json!(true), &json!(24)), "{d}");
    let (_, d) = get(&app, "/api/v1/deployments/web").await;
    assert_eq!((&d["previews"], &d["preview_ttl_hours"]), (&json!(true), &json!(24)), "read back from the store: {d}");
    app.stop().await;
}
