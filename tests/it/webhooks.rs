//! GitHub push webhooks through HTTP: signatures, size limit, events, routing to deployments, idempotency, the deliveries list.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use pvedeploy::config::github::GithubSettings;
use pvedeploy::config::{Config, Secret};
use pvedeploy::core::limits::{RepoPolicy, RepoScheme};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{test_config, TestApp, ADMIN, READER};

const SECRET: &str = "test-webhook-secret-0123456789";
/// `octo/own` has its own secret; the global one does not speak for it.
const OWN_SECRET: &str = "own-repo-webhook-secret-0123456789";
/// The git server the test deployments name (never contacted: the redeploy itself is the engine's).
const GIT: &str = "http://127.0.0.1:9";
const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";
const C3: &str = "3333333333333333333333333333333333333333";
const ZERO: &str = "0000000000000000000000000000000000000000";

fn configure(c: &mut Config) {
    c.github = GithubSettings { webhook_secret: Some(Secret::new(SECRET.into())), repo_secrets: vec![("octo/own".into(), Secret::new(OWN_SECRET.into()))] };
    c.repos = RepoPolicy { allowed_hosts: vec!["github.com".into(), "127.0.0.1:9".into()], schemes: vec![RepoScheme::Https, RepoScheme::Http] };
}

async fn app() -> TestApp {
    TestApp::spawn_with(configure).await
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
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
            "id": 1296269, "name": repo.split('/').nth(1).unwrap(), "full_name": repo, "private": false,
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
    let mut r = app.client.post(app.url("/webhooks/github")).header("content-type", "application/json").header("x-github-event", event).header("x-github-delivery", guid).body(body.to_owned());
    if let Some(s) = signature {
        r = r.header("x-hub-signature-256", s);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn deliver(app: &TestApp, event: &str, guid: &str, body: &str) -> (u16, Value) {
    post_raw(app, event, guid, body, Some(sign(SECRET, body.as_bytes()))).await
}

/// Waits until a delivery has been handled (its outcome is no longer `received`).
async fn settled(app: &TestApp, guid: &str) -> Value {
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

#[tokio::test]
async fn bodies_over_the_limit_are_refused_with_413() {
    let app = app().await;
    let big = "x".repeat(pvedeploy::webhooks::MAX_BODY_BYTES + 1);
    let (s, said) = deliver(&app, "push", "too-big", &big).await;
    assert_eq!(s, 413, "{said}");
    assert_eq!(said["error"], "payload_too_large");
    // without a Content-Length (chunked), the stream is cut at the limit
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..17).map(|_| Ok(vec![b'x'; 64 * 1024])).collect();
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
    assert_eq!(deliveries(&app, "").await["total"], 0);
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
    ] {
        let (s, said) = deliver(&app, "push", guid, &body).await;
        assert_eq!(s, 202, "{guid}: {said}");
        assert_eq!(settled(&app, guid).await["outcome"], outcome, "{guid}");
    }
    assert!(webhook_audits(&app).await.is_empty(), "the engine was never asked");
    let d = settled(&app, "delete-0001").await;
    assert_eq!(d["after"], Value::Null, "a deletion has no commit to deploy: {d}");
}

#[tokio::test]
async fn a_delivery_guid_acts_once_even_when_it_arrives_twice_at_once() {
    let app = app().await;
    deployment(&app, "web", "octo/app", "main", true).await;
    let first = push_body("octo/app", "refs/heads/main", C1, C2);
    let (s, _) = deliver(&app, "push", "guid-seq", &first).await;
    assert_eq!(s, 202);
    let (s, said) = deliver(&app, "push", "guid-seq", &first).await;
    assert_eq!((s, said["status"].as_str()), (200, Some("duplicate")), "{said}");

    let second = push_body("octo/app", "refs/heads/main", C2, C3);
    let (a, b) = tokio::join!(deliver(&app, "push", "guid-par", &second), deliver(&app, "push", "guid-par", &second));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 202], "{a:?} {b:?}");

    let seq = settled(&app, "guid-seq").await;
    let par = settled(&app, "guid-par").await;
    assert_eq!((seq["redeliveries"].as_i64(), par["redeliveries"].as_i64()), (Some(1), Some(1)));
    assert_eq!(deliveries(&app, "").await["total"], 2, "one record per GUID");
    assert_eq!(webhook_audits(&app).await.len(), 2, "the engine was asked once per GUID");
}

#[tokio::test]
async fn the_same_push_in_another_delivery_is_a_no_op() {
    let app = app().await;
    deployment(&app, "web", "octo/app", "main", true).await;
    // e.g. a repository hook and an organisation hook both deliver one push
    let body = push_body("octo/app", "refs/heads/main", C1, C2);
    deliver(&app, "push", "repo-hook-0001", &body).await;
    settled(&app, "repo-hook-0001").await;
    deliver(&app, "push", "org-hook-0001", &body).await;
    let d = settled(&app, "org-hook-0001").await;
    assert_eq!(d["outcome"], "ignored_same_push", "{d}");
    assert!(d["detail"].as_str().unwrap().contains("repo-hook-0001"), "{d}");
    assert_eq!(webhook_audits(&app).await.len(), 1);
    // a later push back to the same commit (another `before`) is a new push
    deliver(&app, "push", "back-0001", &push_body("octo/app", "refs/heads/main", C3, C2)).await;
    assert_eq!(settled(&app, "back-0001").await["outcome"], "refused");
    assert_eq!(webhook_audits(&app).await.len(), 2);
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
        let now = pvedeploy::store::now_millis();
        let record = DeliveryRecord {
            delivery: DeliveryId::parse("crashed-0001").unwrap(),
            event: "push".into(),
            repo: Some("octo/app".into()),
            repo_hosts: vec!["127.0.0.1:9".into()],
            git_ref: Some("refs/heads/main".into()),
            before: Some(C1.into()),
            after: Some(C2.into()),
            pusher: Some("octocat".into()),
            hook_id: None,
            received_at: now,
            updated_at: now,
            outcome: Outcome::Received,
            detail: None,
            targets: vec![],
            redeliveries: 0,
        };
        store.record_delivery(&record).await.unwrap();
        assert!(store.close(Duration::from_secs(10)).await);
    }
    let app = TestApp::spawn_config(config).await;
    let d = settled(&app, "crashed-0001").await;
    assert_eq!(d["outcome"], "refused", "routed after the restart: {d}");
    assert_eq!(webhook_audits(&app).await.len(), 1);
    // GitHub's redelivery of it is still a duplicate
    let (s, _) = deliver(&app, "push", "crashed-0001", &push_body("octo/app", "refs/heads/main", C1, C2)).await;
    assert_eq!(s, 200);
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
