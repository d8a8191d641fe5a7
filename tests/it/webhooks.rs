//! GitHub push webhooks through HTTP: signatures, size limit, events, routing to deployments, idempotency (duplicates, retries, copies), octokit's published examples, the deliveries list.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use pvedeploy::config::github::GithubSettings;
use pvedeploy::config::{Config, Secret};
use pvedeploy::core::limits::{RepoPolicy, RepoScheme};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{test_config, TestApp, ADMIN, READER};

pub(crate) const SECRET: &str = "test-webhook-secret-0123456789";
/// `octo/own` has its own secret; the global one does not speak for it.
const OWN_SECRET: &str = "own-repo-webhook-secret-0123456789";
/// The git server the test deployments name (never contacted: the redeploy itself is the engine's).
const GIT: &str = "http://127.0.0.1:9";
const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";
const C3: &str = "3333333333333333333333333333333333333333";
const ZERO: &str = "0000000000000000000000000000000000000000";

pub(crate) fn configure(c: &mut Config) {
    c.github = GithubSettings { webhook_secret: Some(Secret::new(SECRET.into())), repo_secrets: vec![("octo/own".into(), Secret::new(OWN_SECRET.into()))], api: None };
    c.repos = RepoPolicy { allowed_hosts: vec!["github.com".into(), "127.0.0.1:9".into()], schemes: vec![RepoScheme::Https, RepoScheme::Http], allow_private: vec![] };
}

async fn app() -> TestApp {
    TestApp::spawn_with(configure).await
}

pub(crate) fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// GitHub's numeric id of a repository: one per name here, as on GitHub (`octo/app` has the id of GitHub's examples).
fn repo_id(full_name: &str) -> i64 {
    match full_name {
        "octo/app" => 1296269,
        other => 1_000_000 + other.bytes().fold(0i64, |h, b| (h * 31 + i64::from(b)) % 1_000_000),
    }
}

/// A push payload shaped like GitHub's (deletions carry `head_commit: null` and an all-zero `after`).
fn push_body(repo: &str, git_ref: &str, before: &str, after: &str) -> String {
    let deleted = after == ZERO;
    let head = if deleted { Value::Null } else { json!({ "id": after, "message": "Update app.py", "author": { "name": "Mona", "username": "octocat" } }) };
    json!({
        "ref": git_ref, "before": before, "after": after,
        "created": before == ZERO, "deleted": deleted, "forced": false, "base_ref": null,
        "compare": format!("https://github.com/{repo}/compare/{before}...{after}"),
        "commits": if deleted { json!([]) } else { json!([head.clone()]) },
        "head_commit": head,
        "repository": {
            "id": repo_id(repo), "name": repo.split('/').nth(1).unwrap(), "full_name": repo, "private": false,
            "html_url": format!("{GIT}/{repo}"), "clone_url": format!("{GIT}/{repo}.git"),
            "ssh_url": format!("git@127.0.0.1:{repo}.git"), "default_branch": "main",
        },
        "pusher": { "name": "octocat", "email": "octocat@example.com" },
        "sender": { "login": "octocat", "id": 1 },
    })
    .to_string()
}

fn ping_body(repo: &str) -> String {
    json!({
        "zen": "Design for failure.", "hook_id": 4242,
        "hook": { "type": "Repository", "id": 4242, "name": "web", "active": true, "events": ["push"],
                  "config": { "content_type": "json", "url": "https://pvedeploy.example/webhooks/github", "insecure_ssl": "0" } },
        "repository": { "full_name": repo, "clone_url": format!("{GIT}/{repo}.git") },
        "sender": { "login": "octocat" },
    })
    .to_string()
}

/// Posts a delivery; `signature` is the whole `X-Hub-Signature-256` value (or none).
async fn post_raw(app: &TestApp, event: &str, guid: &str, body: &str, signature: Option<String>) -> (u16, Value) {
    post(app, event, guid, "application/json", body.as_bytes().to_vec(), signature, &[]).await
}

async fn post(app: &TestApp, event: &str, guid: &str, content_type: &str, body: Vec<u8>, signature: Option<String>, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut r = app.client.post(app.url("/webhooks/github")).header("content-type", content_type).header("x-github-event", event).header("x-github-delivery", guid).body(body);
    if let Some(s) = signature {
        r = r.header("x-hub-signature-256", s);
    }
    for (name, value) in headers {
        r = r.header(*name, *value);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A signed delivery in GitHub's other content type: the JSON in a form's `payload` field.
pub(crate) async fn deliver_form(app: &TestApp, event: &str, guid: &str, json: &str) -> (u16, Value) {
    let form = serde_urlencoded::to_string([("payload", json)]).unwrap();
    let signature = sign(SECRET, form.as_bytes());
    post(app, event, guid, "application/x-www-form-urlencoded", form.into_bytes(), Some(signature), &[]).await
}

/// A signed delivery through a given hook (`X-GitHub-Hook-ID`, `X-GitHub-Hook-Installation-Target-Type`).
async fn deliver_via(app: &TestApp, hook: &str, target: &str, event: &str, guid: &str, body: &str) -> (u16, Value) {
    let headers = [("x-github-hook-id", hook), ("x-github-hook-installation-target-type", target)];
    post(app, event, guid, "application/json", body.as_bytes().to_vec(), Some(sign(SECRET, body.as_bytes())), &headers).await
}

pub(crate) async fn deliver(app: &TestApp, event: &str, guid: &str, body: &str) -> (u16, Value) {
    post_raw(app, event, guid, body, Some(sign(SECRET, body.as_bytes()))).await
}

/// Waits until a delivery has been handled (its outcome is no longer `received`).
pub(crate) async fn settled(app: &TestApp, guid: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, d) = app.get(&format!("/api/v1/webhooks/deliveries/{guid}"), Some(READER)).await;
        assert_eq!(s, 200, "{d}");
        if d["outcome"] != "received" {
            return d;
        }
        assert!(Instant::now() < deadline, "delivery {guid} still not handled: {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn deliveries(app: &TestApp, query: &str) -> Value {
    let (s, page) = app.get(&format!("/api/v1/webhooks/deliveries{query}"), Some(READER)).await;
    assert_eq!(s, 200, "{page}");
    page
}

/// Audit entries written through the webhook door: one per time the engine was asked.
async fn webhook_audits(app: &TestApp) -> Vec<Value> {
    let (s, all) = app.get("/api/v1/audit?limit=100", Some(ADMIN)).await;
    assert_eq!(s, 200, "{all}");
    all.as_array().unwrap().iter().filter(|e| e["door"] == "webhook").cloned().collect()
}

async fn deployment(app: &TestApp, name: &str, repo: &str, branch: &str, auto: bool) -> String {
    let req = json!({ "name": name, "repo_url": format!("{GIT}/{repo}.git"), "framework": "flask", "branch": branch, "auto_redeploy": auto });
    let (s, d) = app.post("/api/v1/deployments", Some(ADMIN), &req).await;
    assert_eq!(s, 202, "{d}");
    d["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_ping_is_answered_and_its_hook_recorded() {
    let app = app().await;
    let (s, body) = deliver(&app, "ping", "ping-0001", &ping_body("octo/app")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!((body["status"].as_str(), body["hook_id"].as_i64()), (Some("pong"), Some(4242)));
    let page = deliveries(&app, "?event=ping").await;
    assert_eq!(page["total"], 1);
    assert_eq!((page["items"][0]["outcome"].as_str(), page["items"][0]["hook_id"].as_i64()), (Some("pong"), Some(4242)));
}

#[tokio::test]
async fn bad_signatures_are_refused_and_nothing_is_recorded() {
    let app = app().await;
    let body = push_body("octo/app", "refs/heads/main", C1, C2);
    let good = sign(SECRET, body.as_bytes());
    let tampered = body.replace(C2, C3);
    let sha1_only = app
        .client
        .post(app.url("/webhooks/github"))
        .header("x-github-event", "push")
        .header("x-github-delivery", "sha1-only")
        .header("x-hub-signature", "sha1=01f5f0f2a8e4d4d0f1c1d4d0f1c1d4d0f1c1d4d0")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(sha1_only.status(), 401);
    let said: Value = sha1_only.json().await.unwrap();
    assert!(said["message"].as_str().unwrap().contains("SHA-1"), "{said}");
    for (guid, case, sent, signature) in [
        ("missing", &body, None),
        ("malformed", &body, Some("sha256=not-hex".to_string())),
        ("uppercase prefix", &body, Some(good.replace("sha256=", "SHA256="))),
        ("sha1 in the sha256 header", &body, Some("sha1=01f5f0f2a8e4d4d0f1c1d4d0f1c1d4d0f1c1d4d0".to_string())),
        ("wrong secret", &body, Some(sign("not-the-secret-0123456789", body.as_bytes()))),
        ("tampered body", &tampered, Some(good.clone())),
        ("another repository's secret", &body, Some(sign(OWN_SECRET, body.as_bytes()))),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (case, sent, signature))| (format!("bad-{i}"), case, sent, signature))
    {
        let (s, said) = post_raw(&app, "push", &guid, sent, signature).await;
        assert_eq!(s, 401, "{case}: {said}");
        assert_eq!(said["error"], "unauthorized", "{case}");
        assert!(!said.to_string().contains(SECRET), "{case}: the answer never shows a secret");
    }
    // a repository with its own secret refuses the global one
    let own = push_body("octo/own", "refs/heads/main", C1, C2);
    let (s, said) = deliver(&app, "push", "own-with-global", &own).await;
    assert_eq!(s, 401, "{said}");
    assert_eq!(deliveries(&app, "").await["total"], 0, "a refused delivery is not recorded");
    assert!(webhook_audits(&app).await.is_empty());
    // … and accepts its own
    let (s, said) = post_raw(&app, "push", "own-with-own", &own, Some(sign(OWN_SECRET, own.as_bytes()))).await;
    assert_eq!(s, 202, "{said}");
}

/// A push whose head commit's message pads it to about `bytes` (a large push lists many commits; this is simpler).
fn padded_push(after: &str, bytes: usize) -> String {
    let mut push: Value = serde_json::from_str(&push_body("octo/app", "refs/heads/main", C1, after)).unwrap();
    push["head_commit"]["message"] = Value::String("x".repeat(bytes));
    push.to_string()
}

#[tokio::test]
async fn a_5_mb_push_is_accepted_as_json_and_as_a_form() {
    let app = app().await;
    let (s, said) = deliver(&app, "push", "big-json", &padded_push(C2, 5_000_000)).await;
    assert_eq!((s, said["status"].as_str()), (202, Some("accepted")), "{said}");
    // percent-encoding makes the form larger than the JSON (an `x` stays one byte, punctuation takes three)
    let (s, said) = deliver_form(&app, "push", "big-form", &padded_push(C3, 5_000_000)).await;
    assert_eq!((s, said["status"].as_str()), (202, Some("accepted")), "{said}");
    for guid in ["big-json", "big-form"] {
        let d = settled(&app, guid).await;
        assert_eq!((d["outcome"].as_str(), d["ref"].as_str()), (Some("ignored_no_deployment"), Some("refs/heads/main")), "{d}");
        assert!(d.to_string().len() < 10_000, "the record keeps no body: {} bytes", d.to_string().len());
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_with_413_and_recorded_without_the_body() {
    let app = app().await;
    let cap = pvedeploy::webhooks::MAX_BODY_BYTES;
    assert!(cap >= 25_000_000, "GitHub's cap is 25 MB: {cap}");
    // at the cap exactly: read whole and answered (a signed body that is not a push payload)
    let (s, said) = deliver(&app, "push", "at-cap", &"x".repeat(cap)).await;
    assert_eq!((s, said["fields"][0]["field"].as_str()), (422, Some("body")), "{said}");
    // one byte over, declared in Content-Length: refused before it is read
    let big = "x".repeat(cap + 1);
    let (s, said) = deliver(&app, "push", "too-big", &big).await;
    assert_eq!(s, 413, "{said}");
    assert_eq!(said["error"], "payload_too_large");
    let d = settled(&app, "too-big").await;
    assert_eq!((d["outcome"].as_str(), d["event"].as_str(), d["body_bytes"].as_u64()), (Some("too_large"), Some("push"), Some(cap as u64 + 1)), "{d}");
    assert!(d["detail"].as_str().unwrap().contains("signature could not be checked"), "{d}");
    assert!(d.to_string().len() < 5_000, "no body kept: {d}");
    // without a Content-Length (chunked), the stream is cut at the limit
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..cap / (64 * 1024) + 1).map(|_| Ok(vec![b'x'; 64 * 1024])).collect();
    let resp = app
        .client
        .post(app.url("/webhooks/github"))
        .header("x-github-event", "push")
        .header("x-github-delivery", "too-big-chunked")
        .header("x-hub-signature-256", sign(SECRET, b""))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let d = settled(&app, "too-big-chunked").await;
    assert_eq!(d["outcome"], "too_large", "{d}");
    assert!(d["body_bytes"].as_u64().unwrap() > cap as u64, "{d}");
    // a 413 did not act: when GitHub redelivers that GUID (with a body it can take), it is processed as a retry
    let (s, said) = deliver(&app, "push", "too-big", &push_body("octo/app", "refs/heads/main", C1, C2)).await;
    assert_eq!(s, 202, "{said}");
    let d = settled(&app, "too-big").await;
    assert_eq!((d["outcome"].as_str(), d["retries"].as_i64(), d["earlier"][0]["outcome"].as_str()), (Some("ignored_no_deployment"), Some(1), Some("too_large")), "{d}");
    assert_eq!(d["body_bytes"], Value::Null, "{d}");
    // without GitHub's delivery headers there is nothing to record it under
    let (s, _) = post(&app, "push", "not a guid", "application/json", big.into_bytes(), None, &[]).await;
    assert_eq!(s, 413);
    assert_eq!(deliveries(&app, "?outcome=too_large").await["total"], 1, "the chunked one; the retried one moved on");
}

#[tokio::test]
async fn without_a_secret_the_endpoint_is_off() {
    let app = TestApp::spawn().await;
    let body = ping_body("octo/app");
    let (s, said) = deliver(&app, "ping", "off-0001", &body).await;
    assert_eq!(s, 404, "{said}");
    assert_eq!(said["error"], "not_configured");
}

#[tokio::test]
async fn headers_are_checked_after_the_signature() {
    let app = app().await;
    let body = ping_body("octo/app");
    let (s, said) = deliver(&app, "ping", "not a guid!", &body).await;
    assert_eq!(s, 422, "{said}");
    assert_eq!((said["fields"][0]["field"].as_str(), said["fields"][0]["rule"].as_str()), (Some("X-GitHub-Delivery"), Some("delivery_id")));
    let (s, said) = deliver(&app, "Push!", "guid-0001", &body).await;
    assert_eq!((s, said["fields"][0]["field"].as_str()), (422, Some("X-GitHub-Event")));
    // a signed body that is not a push payload is recorded and refused naming the field
    let bad = push_body("octo/app", "refs/heads/main", C1, C2).replace(C2, "not-a-commit");
    let (s, said) = deliver(&app, "push", "bad-payload", &bad).await;
    assert_eq!((s, said["fields"][0]["field"].as_str()), (422, Some("after")), "{said}");
    assert_eq!(settled(&app, "bad-payload").await["outcome"], "ignored_invalid_payload");
}

#[tokio::test]
async fn other_events_and_unknown_repositories_are_acknowledged_and_ignored() {
    let app = app().await;
    let (s, said) = deliver(&app, "issues", "issues-0001", &json!({"action": "opened", "repository": {"full_name": "octo/app"}}).to_string()).await;
    assert_eq!(s, 202, "{said}");
    assert_eq!(said["status"], "ignored");
    assert!(said["message"].as_str().unwrap().contains("issues"), "{said}");
    let d = settled(&app, "issues-0001").await;
    assert_eq!((d["outcome"].as_str(), d["repo"].as_str()), (Some("ignored_event"), Some("octo/app")));

    let (s, said) = deliver(&app, "push", "nobody-0001", &push_body("octo/nobody", "refs/heads/main", C1, C2)).await;
    assert_eq!(s, 202, "{said}");
    assert_eq!(said["status"], "accepted");
    let d = settled(&app, "nobody-0001").await;
    assert_eq!(d["outcome"], "ignored_no_deployment", "{d}");
    assert_eq!((d["ref"].as_str(), d["before"].as_str(), d["after"].as_str(), d["pusher"].as_str()), (Some("refs/heads/main"), Some(C1), Some(C2), Some("octocat")));
}

#[tokio::test]
async fn a_push_to_a_tracked_branch_asks_the_engine_for_each_deployment() {
    let app = app().await;
    let web = deployment(&app, "web", "octo/app", "main", true).await;
    let web2 = deployment(&app, "web2", "octo/app", "main", true).await;
    deployment(&app, "elsewhere", "octo/other", "main", true).await;
    // GitHub names are case-insensitive; the URL host must match too
    let (s, said) = deliver(&app, "push", "tracked-0001", &push_body("Octo/App", "refs/heads/main", C1, C2)).await;
    assert_eq!(s, 202, "{said}");
    let d = settled(&app, "tracked-0001").await;
    // Today's engine cannot redeploy a deployment that was never deployed: its refusal is the outcome.
    assert_eq!(d["outcome"], "refused", "{d}");
    assert!(d["detail"].as_str().unwrap().contains("redeploy"), "{d}");
    let mut targets: Vec<&str> = d["targets"].as_array().unwrap().iter().map(|t| t["deployment"].as_str().unwrap()).collect();
    targets.sort();
    let mut expected = vec![web.as_str(), web2.as_str()];
    expected.sort();
    assert_eq!(targets, expected, "each deployment of the repository and branch, no other");
    let audits = webhook_audits(&app).await;
    assert_eq!(audits.len(), 2, "{audits:?}");
    assert!(audits.iter().all(|a| a["actor"] == "github:octocat" && a["detail"].as_str().unwrap().contains(C2)), "{audits:?}");
    let (_, log) = app.get("/api/v1/deployments/web/logs", Some(READER)).await;
    assert!(log["lines"].as_array().unwrap().iter().any(|l| l["step"] == "webhook" && l["text"].as_str().unwrap().contains(C2)), "{log}");
    // the list finds it by deployment (id or name)
    assert_eq!(deliveries(&app, "?deployment=web").await["total"], 1);
    assert_eq!(deliveries(&app, &format!("?deployment={web2}")).await["total"], 1);
    assert_eq!(deliveries(&app, "?deployment=elsewhere").await["total"], 0);
}

#[tokio::test]
async fn tags_deletions_other_branches_and_opted_out_deployments_never_redeploy() {
    let app = app().await;
    deployment(&app, "web", "octo/app", "main", true).await;
    deployment(&app, "quiet", "octo/quiet", "main", false).await;
    let gone = deployment(&app, "gone", "octo/gone", "main", true).await;
    let (s, _) = app.delete(&format!("/api/v1/deployments/{gone}"), Some(ADMIN)).await;
    assert_eq!(s, 202);
    for (guid, body, outcome) in [
        ("tag-0001", push_body("octo/app", "refs/tags/v1.0", ZERO, C2), "ignored_tag"),
        ("delete-0001", push_body("octo/app", "refs/heads/main", C1, ZERO), "ignored_branch_deleted"),
        ("other-0001", push_body("octo/app", "refs/heads/dev", C1, C2), "ignored_other_branch"),
        ("quiet-0001", push_body("octo/quiet", "refs/heads/main", C1, C2), "ignored_auto_redeploy_off"),
        ("gone-0001", push_body("octo/gone", "refs/heads/main", C1, C2), "ignored_no_deployment"),
        ("skip-0001", push_body("octo/app", "refs/heads/main", C1, C2).replace("Update app.py", "Fix typo\\n\\n[skip ci]"), "ignored_skip_marker"),
        ("skip-0002", push_body("octo/app", "refs/heads/main", C1, C2).replace("Update app.py", "[Skip Deploy] docs only"), "ignored_skip_marker"),
    ] {
        let (s, said) = deliver(&app, "push", guid, &body).await;
        assert_eq!(s, 202, "{guid}: {said}");
        assert_eq!(settled(&app, guid).await["outcome"], outcome, "{guid}");
    }
    assert!(webhook_audits(&app).await.is_empty(), "the engine was never asked");
    let d = settled(&app, "delete-0001").await;
    assert_eq!(d["after"], Value::Null, "a deletion has no commit to deploy: {d}");
    let d = settled(&app, "skip-0001").await;
    assert!(d["detail"].as_str().unwrap().contains("`[skip ci]`"), "{d}");
    // the same push without the marker (another GUID) deploys
    let (s, _) = deliver(&app, "push", "noskip-0001", &push_body("octo/app", "refs/heads/main", C1, C3)).await;
    assert_eq!(s, 202);
    assert_ne!(settled(&app, "noskip-0001").await["outcome"], "ignored_skip_marker");
}

/// A push whose one commit changed `files`; `head` is the head commit GitHub names (for a tag: the tagged commit).
fn push_with(git_ref: &str, after: &str, head: &str, files: &[&str]) -> String {
    let mut v: Value = serde_json::from_str(&push_body("octo/app", git_ref, C1, after)).unwrap();
    v["head_commit"]["id"] = head.into();
    v["commits"] = json!([{ "id": head, "message": "Update", "added": [], "modified": files, "removed": [] }]);
    v.to_string()
}

#[tokio::test]
async fn path_filters_and_tag_patterns_decide_which_pushes_reach_the_engine() {
    let app = app().await;
    // patterns it would read differently are refused, naming the field
    let bad = json!({ "name": "api", "repo_url": format!("{GIT}/octo/app.git"), "framework": "flask", "paths": ["api/**", "/abs/**"], "deploy_tags": "!v*" });
    let (s, e) = app.post("/api/v1/deployments", Some(ADMIN), &bad).await;
    let fields: Vec<&str> = e["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!((s, fields), (422, vec!["paths[1]", "deploy_tags"]), "{e}");
    let req = json!({ "name": "api", "repo_url": format!("{GIT}/octo/app.git"), "framework": "flask", "paths": ["api/**", "requirements.txt"], "deploy_tags": "v*" });
    let (s, d) = app.post("/api/v1/deployments", Some(ADMIN), &req).await;
    assert_eq!(s, 202, "{d}");
    assert_eq!((&d["paths"], &d["deploy_tags"]), (&json!(["api/**", "requirements.txt"]), &json!("v*")), "{d}");

    // a push that touches none of the paths: left alone; one that touches one: the engine is asked
    let (s, _) = deliver(&app, "push", "paths-0001", &push_with("refs/heads/main", C2, C2, &["docs/index.md", "README.md"])).await;
    assert_eq!(s, 202);
    assert_eq!(settled(&app, "paths-0001").await["outcome"], "ignored_paths");
    assert!(webhook_audits(&app).await.is_empty(), "the engine was not asked");
    let (s, _) = deliver(&app, "push", "paths-0002", &push_with("refs/heads/main", C3, C3, &["README.md", "api/v1/views.py"])).await;
    assert_eq!(s, 202);
    assert_ne!(settled(&app, "paths-0002").await["outcome"], "ignored_paths");
    assert_eq!(webhook_audits(&app).await.len(), 1);

    // a tag matching `v*` deploys the commit it names (an annotated tag's `after` is the tag object); another is a tag
    let (s, _) = deliver(&app, "push", "tag-v1", &push_with("refs/tags/v1.0.0", C2, C3, &[])).await;
    assert_eq!(s, 202);
    assert_ne!(settled(&app, "tag-v1").await["outcome"], "ignored_tag");
    let audits = webhook_audits(&app).await;
    assert_eq!(audits.len(), 2, "{audits:#?}");
    assert!(audits.iter().any(|a| a.to_string().contains(&format!("ref=refs/tags/v1.0.0 commit={C3}"))), "{audits:#?}");
    let (s, _) = deliver(&app, "push", "tag-rel", &push_with("refs/tags/release-1", C2, C3, &[])).await;
    assert_eq!(s, 202);
    assert_eq!(settled(&app, "tag-rel").await["outcome"], "ignored_tag");
}

#[tokio::test]
async fn a_renamed_repository_keeps_routing_by_its_id_and_a_new_one_under_the_old_name_does_not() {
    let app = app().await;
    deployment(&app, "web", "octo/app", "main", true).await;
    // the first push (repository id 1296269) is routed by name, and its id remembered
    let (s, _) = deliver(&app, "push", "named-0001", &push_body("octo/app", "refs/heads/main", C1, C2)).await;
    assert_eq!(s, 202);
    assert_ne!(settled(&app, "named-0001").await["outcome"], "ignored_no_deployment");
    assert_eq!(webhook_audits(&app).await.len(), 1);
    // renamed on GitHub: same id, new name (and URLs)
    let mut renamed: Value = serde_json::from_str(&push_body("octo/shop", "refs/heads/main", C2, C3)).unwrap();
    renamed["repository"]["id"] = repo_id("octo/app").into();
    let (s, _) = deliver(&app, "push", "renamed-0001", &renamed.to_string()).await;
    assert_eq!(s, 202);
    let d = settled(&app, "renamed-0001").await;
    assert_ne!(d["outcome"], "ignored_no_deployment", "{d}");
    assert_eq!(webhook_audits(&app).await.len(), 2, "the engine was asked for the renamed repository's push");
    // another repository (another id) now named like the old one: not this deployment's
    let mut other: Value = serde_json::from_str(&push_body("octo/app", "refs/heads/main", C1, C3)).unwrap();
    other["repository"]["id"] = 777.into();
    let (s, _) = deliver(&app, "push", "impostor-0001", &other.to_string()).await;
    assert_eq!(s, 202);
    assert_eq!(settled(&app, "impostor-0001").await["outcome"], "ignored_no_deployment");
    assert_eq!(webhook_audits(&app).await.len(), 2);
}

#[tokio::test]
async fn a_guid_that_acted_is_a_duplicate_even_when_it_arrives_twice_at_once() {
    let app = app().await;
    let ping = ping_body("octo/app");
    let (s, _) = deliver(&app, "ping", "guid-seq", &ping).await;
    assert_eq!(s, 200);
    let (s, said) = deliver(&app, "ping", "guid-seq", &ping).await;
    assert_eq!((s, said["status"].as_str()), (200, Some("duplicate")), "{said}");
    assert!(said["message"].as_str().unwrap().contains("`pong`"), "{said}");

    let (a, b) = tokio::join!(deliver(&app, "ping", "guid-par", &ping), deliver(&app, "ping", "guid-par", &ping));
    let mut statuses = [a.1["status"].as_str().unwrap().to_owned(), b.1["status"].as_str().unwrap().to_owned()];
    statuses.sort();
    assert_eq!(statuses, ["duplicate", "pong"], "{a:?} {b:?}");

    let seq = settled(&app, "guid-seq").await;
    let par = settled(&app, "guid-par").await;
    assert_eq!((seq["redeliveries"].as_i64(), par["redeliveries"].as_i64()), (Some(1), Some(1)));
    assert_eq!((seq["retries"].as_i64(), par["retries"].as_i64()), (Some(0), Some(0)));
    assert_eq!(deliveries(&app, "").await["total"], 2, "one record per GUID");
}

#[tokio::test]
async fn a_guid_that_did_not_act_is_processed_again_and_recorded_as_a_retry() {
    let app = app().await;
    deployment(&app, "web", "octo/app", "main", true).await;
    // refused (this engine cannot redeploy a deployment that was never deployed): GitHub's "Redeliver" runs it again
    let body = push_body("octo/app", "refs/heads/main", C1, C2);
    let (s, _) = deliver(&app, "push", "retry-push", &body).await;
    assert_eq!(s, 202);
    assert_eq!(settled(&app, "retry-push").await["outcome"], "refused");
    let (s, said) = deliver(&app, "push", "retry-push", &body).await;
    assert_eq!((s, said["status"].as_str()), (202, Some("accepted")), "{said}");
    assert!(said["message"].as_str().unwrap().contains("retry 1"), "{said}");
    let d = settled(&app, "retry-push").await;
    assert_eq!((d["outcome"].as_str(), d["retries"].as_i64(), d["redeliveries"].as_i64()), (Some("refused"), Some(1), Some(0)), "{d}");
    assert_eq!(d["earlier"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(d["earlier"][0]["outcome"], "refused", "{d}");
    assert!(d["same_push_as"].is_null(), "its own claim, not another delivery's: {d}");
    assert_eq!(webhook_audits(&app).await.len(), 2, "the engine was asked once per attempt");
    // an invalid payload is processed again too (and is still invalid)
    let bad = body.replace(C2, "not-a-commit");
    for _ in 0..2 {
        let (s, said) = deliver(&app, "push", "retry-bad", &bad).await;
        assert_eq!(s, 422, "{said}");
    }
    let d = settled(&app, "retry-bad").await;
    assert_eq!((d["outcome"].as_str(), d["retries"].as_i64()), (Some("ignored_invalid_payload"), Some(1)), "{d}");
    // Two redeliveries at once: never two attempts at the same time. When they overlap, one runs and the other is a
    // duplicate; when the first has already ended `refused`, the second is one more retry. Each attempt that ran
    // asked the engine exactly once.
    let (a, b) = tokio::join!(deliver(&app, "push", "retry-push", &body), deliver(&app, "push", "retry-push", &body));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert!(statuses == [200, 202] || statuses == [202, 202], "{a:?} {b:?}");
    let ran = statuses.iter().filter(|s| **s == 202).count() as i64;
    let d = settled(&app, "retry-push").await;
    assert_eq!((d["retries"].as_i64(), d["redeliveries"].as_i64()), (Some(1 + ran), Some(2 - ran)), "{d}");
    assert_eq!(webhook_audits(&app).await.len() as i64, 2 + ran, "one engine request per attempt that ran");
}

#[tokio::test]
async fn the_same_push_through_another_hook_is_recorded_as_what_it_is() {
    let app = app().await;
    deployment(&app, "web", "octo/app", "main", true).await;
    // a repository hook and an organisation hook both deliver one push
    let body = push_body("octo/app", "refs/heads/main", C1, C2);
    deliver_via(&app, "101", "repository", "push", "repo-hook-0001", &body).await;
    let first = settled(&app, "repo-hook-0001").await;
    deliver_via(&app, "202", "organization", "push", "org-hook-0001", &body).await;
    let copy = settled(&app, "org-hook-0001").await;
    assert_eq!((first["hook_id"].as_i64(), first["hook_target"].as_str()), (Some(101), Some("repository")), "{first}");
    assert_eq!((copy["hook_id"].as_i64(), copy["hook_target"].as_str()), (Some(202), Some("organization")), "{copy}");
    assert_eq!(copy["same_push_as"], "repo-hook-0001", "{copy}");
    assert!(first["same_push_as"].is_null(), "{first}");
    assert_eq!((first["redeliveries"].as_i64(), copy["redeliveries"].as_i64()), (Some(0), Some(0)), "another GUID is not a redelivery");
    // The first was refused (this engine cannot redeploy a never-deployed deployment), so the deployment is not
    // headed to C2 and the copy asks for the branch head: nothing is lost. (On real guests, where the first acts,
    // the copy is `ignored_same_push`: tests/it/deploy.rs.)
    assert_eq!(copy["outcome"], "refused", "{copy}");
    let audits = webhook_audits(&app).await;
    let asked = |guid: &str, commit: &str| audits.iter().any(|a| a["detail"].as_str().is_some_and(|d| d.contains(&format!("delivery={guid} ")) && d.contains(&format!("commit={commit} "))));
    assert!(asked("repo-hook-0001", C2) && asked("org-hook-0001", "branch-head"), "{audits:?}");
}

/// X→A, A→B, B→A, then A→B again: the last repeats the second's before→after and was dropped as the same push.
#[tokio::test]
async fn a_force_push_flip_is_never_dropped_as_the_same_push() {
    let app = app().await;
    deployment(&app, "web", "octo/app", "main", true).await;
    for (guid, before, after) in [("flip-1", C1, C2), ("flip-2", C2, C3), ("flip-3", C3, C2), ("flip-4", C2, C3)] {
        let (s, said) = deliver(&app, "push", guid, &push_body("octo/app", "refs/heads/main", before, after)).await;
        assert_eq!(s, 202, "{said}");
        settled(&app, guid).await;
    }
    let last = settled(&app, "flip-4").await;
    assert_ne!(last["outcome"], "ignored_same_push", "{last}");
    assert_eq!(last["same_push_as"], "flip-2", "{last}");
    assert!(last["targets"][0]["detail"].as_str().unwrap().contains("branch head"), "{last}");
    assert_eq!(webhook_audits(&app).await.len(), 4, "the engine was asked for every push");
}

#[tokio::test]
async fn a_push_recorded_but_not_routed_before_a_stop_is_routed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    configure(&mut config);
    let app = TestApp::spawn_config(config.clone()).await;
    deployment(&app, "web", "octo/app", "main", true).await;
    app.stop().await;
    {
        // what a crash between the 202 and the routing leaves behind
        use pvedeploy::core::webhook::{DeliveryId, Outcome};
        use pvedeploy::store::deliveries::DeliveryRecord;
        let store = pvedeploy::store::Store::open(&config.database).await.unwrap();
        let mut record = DeliveryRecord::received(DeliveryId::parse("crashed-0001").unwrap(), "push".into(), None, None);
        record.repo = Some("octo/app".into());
        record.repo_hosts = vec!["127.0.0.1:9".into()];
        record.git_ref = Some("refs/heads/main".into());
        record.before = Some(C1.into());
        record.after = Some(C2.into());
        record.pusher = Some("octocat".into());
        assert_eq!(record.outcome, Outcome::Received);
        store.record_delivery(&record).await.unwrap();
        assert!(store.close(Duration::from_secs(10)).await);
    }
    let app = TestApp::spawn_config(config).await;
    let d = settled(&app, "crashed-0001").await;
    assert_eq!(d["outcome"], "refused", "routed after the restart: {d}");
    assert_eq!(webhook_audits(&app).await.len(), 1);
    // it was refused: GitHub's redelivery of it runs it again, as a retry
    let (s, _) = deliver(&app, "push", "crashed-0001", &push_body("octo/app", "refs/heads/main", C1, C2)).await;
    assert_eq!(s, 202);
    assert_eq!(settled(&app, "crashed-0001").await["retries"], 1);
    app.stop().await;
}

#[tokio::test]
async fn the_deliveries_list_filters_and_paginates() {
    let app = app().await;
    deliver(&app, "ping", "list-1", &ping_body("octo/app")).await;
    deliver(&app, "push", "list-2", &push_body("octo/app", "refs/tags/v1", ZERO, C1)).await;
    deliver(&app, "push", "list-3", &push_body("octo/other", "refs/heads/main", C1, C2)).await;
    for g in ["list-2", "list-3"] {
        settled(&app, g).await;
    }
    let all = deliveries(&app, "?limit=2").await;
    assert_eq!((all["total"].as_u64(), all["items"].as_array().unwrap().len(), all["next_offset"].as_u64()), (Some(3), 2, Some(2)));
    let rest = deliveries(&app, "?limit=2&offset=2").await;
    assert_eq!((rest["items"].as_array().unwrap().len(), rest.get("next_offset")), (1, None));
    assert_eq!(deliveries(&app, "?repo=OCTO/APP").await["total"], 2);
    assert_eq!(deliveries(&app, "?event=push").await["total"], 2);
    assert_eq!(deliveries(&app, "?outcome=ignored_tag").await["items"][0]["delivery"], "list-2");
    assert_eq!(deliveries(&app, "?event=push&repo=octo/other&outcome=ignored_no_deployment").await["total"], 1);
    for (query, field) in [("?outcome=bogus", "outcome"), ("?limit=0", "limit"), ("?deployment=nope", "deployment"), ("?event=Nope!", "event")] {
        let (s, said) = app.get(&format!("/api/v1/webhooks/deliveries{query}"), Some(READER)).await;
        assert_eq!((s, said["fields"][0]["field"].as_str()), (422, Some(field)), "{query}: {said}");
    }
    assert_eq!(app.get("/api/v1/webhooks/deliveries", None).await.0, 401);
    assert_eq!(app.get("/api/v1/webhooks/deliveries/no-such-delivery", Some(READER)).await.0, 404);
    let (_, spec) = app.get("/api/v1/openapi.json", None).await;
    assert!(spec["paths"]["/webhooks/deliveries"]["get"].is_object() && spec["paths"]["/webhooks/deliveries/{delivery}"]["get"].is_object());
    assert!(spec["info"]["description"].as_str().unwrap().contains("POST /webhooks/github"), "the receiver is described in the spec");
}

/// Figures, not assertions: how fast the endpoint answers a signed push (recorded, routed in the background).
/// Multi-threaded, as `serve` runs: the background routing must not share the one thread of a
/// default test runtime with the client and the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_response_latency_figures() {
    let app = app().await;
    deployment(&app, "web", "octo/app", "main", true).await;
    let mut times = Vec::new();
    for i in 0..200u32 {
        let after = format!("{i:040x}");
        let body = push_body("octo/app", "refs/heads/main", C1, &after);
        let start = Instant::now();
        let (s, said) = deliver(&app, "push", &format!("latency-{i}"), &body).await;
        times.push(start.elapsed());
        assert_eq!(s, 202, "{said}");
    }
    figures("push to a tracked branch, 200 back to back (earlier pushes still being routed)", times);
    let mut times = Vec::new();
    for i in 0..100u32 {
        let after = format!("{:040x}", 1000 + i);
        let body = push_body("octo/app", "refs/heads/main", C1, &after);
        let start = Instant::now();
        let (s, said) = deliver(&app, "push", &format!("latency-alone-{i}"), &body).await;
        times.push(start.elapsed());
        assert_eq!(s, 202, "{said}");
        settled(&app, &format!("latency-alone-{i}")).await;
    }
    figures("push to a tracked branch, one at a time", times);
    let mut times = Vec::new();
    for i in 0..200u32 {
        let body = ping_body("octo/app");
        let start = Instant::now();
        let (s, said) = deliver(&app, "ping", &format!("latency-ping-{i}"), &body).await;
        times.push(start.elapsed());
        assert_eq!(s, 200, "{said}");
    }
    figures("ping (signature and one recorded write only)", times);
}

fn figures(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let p = |q: f64| times[((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
    eprintln!("FIGURES webhook {what} (n={}, client-side, loopback): p50 {:?}, p99 {:?}, max {:?}", times.len(), p(0.50), p(0.99), times[times.len() - 1]);
}

/// Every `push`, `ping` and `pull_request` example octokit publishes (`@octokit/webhooks-examples` 7.6.1, vendored in
/// `tests/fixtures/octokit-webhooks` with its schema), unchanged, as JSON and as a form, through the door: parsed and
/// routed as GitHub means them. The examples are first checked against `@octokit/webhooks-schemas`.
#[tokio::test]
async fn octokits_published_examples_are_parsed_and_routed_as_github_means_them() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/octokit-webhooks");
    let examples: Value = serde_json::from_slice(&std::fs::read(fixtures.join("examples.json")).unwrap()).unwrap();
    let count = |e: &str| examples[e].as_array().map_or(0, Vec::len);
    assert_eq!((count("push"), count("ping"), count("pull_request")), (7, 4, 29), "the vendored 7.6.1 examples");
    check_against_octokits_schemas(&fixtures);

    // A deployment of the examples' repository on their branch, recorded as a request would record it (a request
    // would first ask github.com whether the repository exists, and tests do not depend on reaching it).
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    configure(&mut config);
    let id = {
        use pvedeploy::core::deployment::{Deployment, RawSpec, Spec};
        let raw = RawSpec {
            name: Some("hello".into()),
            framework: Some("static".into()),
            repo_url: Some("https://github.com/Codertocat/Hello-World".into()),
            branch: Some("master".into()),
            ..RawSpec::default()
        };
        let spec = Spec::parse(raw, &config.limits, &config.repos).unwrap();
        let d = Deployment::new(spec, pvedeploy::store::now_millis());
        let store = pvedeploy::store::Store::open(&config.database).await.unwrap();
        store.create_deployment(&d, "created").await.unwrap();
        assert!(store.close(Duration::from_secs(10)).await);
        d.id.to_string()
    };
    let app = TestApp::spawn_config(config).await;

    for event in ["push", "ping", "pull_request"] {
        for (i, example) in examples[event].as_array().unwrap().iter().enumerate() {
            let json = example.to_string();
            for (form, guid) in [(false, format!("octokit-{event}-{i}-json")), (true, format!("octokit-{event}-{i}-form"))] {
                let guid = guid.replace('_', "-");
                let (s, said) = if form { deliver_form(&app, event, &guid, &json).await } else { deliver(&app, event, &guid, &json).await };
                let what = format!("{event}[{i}] {}", if form { "as a form" } else { "as JSON" });
                let d = settled(&app, &guid).await;
                assert_eq!(d["repo"], example["repository"]["full_name"], "{what}: {d}");
                match event {
                    "ping" => {
                        assert_eq!((s, said["status"].as_str()), (200, Some("pong")), "{what}: {said}");
                        assert_eq!((d["outcome"].as_str(), &d["hook_id"]), (Some("pong"), &example["hook_id"]), "{what}: {d}");
                    }
                    "push" => {
                        assert_eq!((s, said["status"].as_str()), (202, Some("accepted")), "{what}: {said}");
                        assert_eq!((&d["ref"], &d["pusher"]), (&example["ref"], &example["pusher"]["name"]), "{what}: {d}");
                        let git_ref = example["ref"].as_str().unwrap();
                        if git_ref.starts_with("refs/tags/") {
                            assert_eq!(d["outcome"], "ignored_tag", "{what}: {d}");
                        } else {
                            // a branch the deployment tracks: the engine was asked (and refused: it was never deployed)
                            assert_eq!(git_ref, "refs/heads/master");
                            assert_eq!(d["after"], example["after"], "{what}: {d}");
                            assert_eq!((d["outcome"].as_str(), d["targets"][0]["deployment"].as_str()), (Some("refused"), Some(id.as_str())), "{what}: {d}");
                        }
                    }
                    _ => {
                        // the deployment has no previews: every pull request is acknowledged and recorded ignored, saying
                        // why (the actions previews act on reach the engine, the others are decided from the payload)
                        let (number, action) = (example["number"].as_u64().unwrap(), example["action"].as_str().unwrap());
                        let (answer, outcome) = match action {
                            "opened" | "reopened" | "synchronize" => ("accepted", "ignored_previews_off"),
                            "closed" => ("accepted", "ignored_no_preview"),
                            _ => ("ignored", "ignored_event"),
                        };
                        assert_eq!((s, said["status"].as_str()), (202, Some(answer)), "{what}: {said}");
                        assert_eq!(d["outcome"], outcome, "{what}: {d}");
                        if answer == "accepted" {
                            assert_eq!(d["targets"][0]["deployment"].as_str(), Some(id.as_str()), "{what}: {d}");
                        }
                        assert!(d["detail"].as_str().unwrap().contains(&format!("#{number} `{action}`")), "{what}: {d}");
                        assert_eq!((d["ref"].as_str(), &d["after"]), (Some(format!("refs/pull/{number}/head").as_str()), &example["pull_request"]["head"]["sha"]), "{what}: {d}");
                    }
                }
            }
        }
    }
    assert_eq!(deliveries(&app, "").await["total"], 80);
    app.stop().await;
}

/// The examples against octokit's schemas (draft-07), with the CI venv's python: all valid but three recorded in
/// 2019, which lack only properties GitHub added since (the fixtures' README).
fn check_against_octokits_schemas(fixtures: &std::path::Path) {
    let Some(python) = crate::helpers::schema_python() else { return };
    let out = std::process::Command::new(&python).arg(fixtures.join("validate.py")).arg(fixtures.join("examples.json")).arg(fixtures.join("schema.json")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let errors: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut invalid = vec![];
    for (event, per_example) in errors.as_object().unwrap() {
        for (i, errs) in per_example.as_array().unwrap().iter().enumerate() {
            let errs: Vec<&str> = errs.as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
            if !errs.is_empty() {
                invalid.push(format!("{event}[{i}]"));
                // (`head.repo` is "a repository or null": a repository missing properties matches neither)
                let missing_only = errs.iter().all(|e| e.contains("is a required property") || (e.contains("/repo: ") && e.contains("is not valid under any of the")));
                assert!(missing_only, "{event}[{i}] breaks octokit's schema beyond missing properties: {errs:?}");
            }
        }
    }
    invalid.sort();
    assert_eq!(invalid, ["ping[0]", "pull_request[0]", "push[0]"], "valid against @octokit/webhooks-schemas 7.6.1 but the three stale ones");
}
