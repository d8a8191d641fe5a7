//! The Discord door at the wire: interactions signed with a test Ed25519 key, a local HTTP server standing in for Discord's REST API.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{Body, EndpointExt, IntoResponse, Request, Response, Route, Server};
use pvedeploy::config::discord::{DiscordSettings, Snowflake};
use pvedeploy::config::Secret;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::helpers::{TestApp, ADMIN};

const APP: u64 = 900;
const GUILD: u64 = 901;
const CHANGER_ROLE: u64 = 902;
const CHANNEL: u64 = 903;
const ADA: u64 = 42;
const BOB: u64 = 43;

/// One request Discord's side received.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    body: Value,
}

#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
    /// The first this-many edits are answered 429 (Retry-After: 0), as Discord does when a webhook is hot.
    throttle_edits: Arc<AtomicUsize>,
}

#[poem::handler]
async fn discord_api(req: &Request, body: Body, rec: Data<&Recorder>) -> Response {
    let body: Value = serde_json::from_slice(&body.into_vec().await.unwrap_or_default()).unwrap_or(Value::Null);
    let call = Call { method: req.method().to_string(), path: req.uri().path().to_string(), body };
    let throttled = call.method == "PATCH" && rec.throttle_edits.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    rec.calls.lock().unwrap().push(call);
    if throttled {
        return Response::builder()
            .status(poem::http::StatusCode::TOO_MANY_REQUESTS)
            .header("retry-after", "0")
            .body(json!({"message": "You are being rate limited.", "retry_after": 0.0, "global": false}).to_string());
    }
    poem::web::Json(json!({"id": "1"})).into_response()
}

/// Discord's REST API, faked at the wire on 127.0.0.1; stopped on drop.
struct FakeDiscord {
    base: String,
    rec: Recorder,
    stop: Option<oneshot::Sender<()>>,
}

impl FakeDiscord {
    async fn start() -> FakeDiscord {
        let rec = Recorder::default();
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
        let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let app = Route::new().at("/*path", discord_api).data(rec.clone());
        tokio::spawn(Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
            app,
            async move {
                let _ = rx.await;
            },
            Some(Duration::from_secs(1)),
        ));
        FakeDiscord { base: format!("http://{addr}/api/v10"), rec, stop: Some(tx) }
    }

    fn calls(&self) -> Vec<Call> {
        self.rec.calls.lock().unwrap().clone()
    }

    /// Waits until a recorded call satisfies `pred` (or panics with what was recorded).
    async fn wait_for(&self, what: &str, pred: impl Fn(&Call) -> bool) -> Call {
        self.wait_for_secs(what, pred, 60).await
    }

    async fn wait_for_secs(&self, what: &str, pred: impl Fn(&Call) -> bool, secs: u64) -> Call {
        for _ in 0..secs * 10 {
            if let Some(c) = self.calls().into_iter().find(|c| pred(c)) {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Discord never received {what}; it received: {:#?}", self.calls());
    }
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[42u8; 32])
}

fn settings(fake: &FakeDiscord) -> DiscordSettings {
    DiscordSettings {
        // a bot token for registration and notifications; the gateway stays off (it would leave loopback)
        bot_token: Some(Secret::new("test-bot-token".into())),
        application_id: Some(Snowflake(APP)),
        public_key: Some(signing_key().verifying_key().to_bytes()),
        guild_ids: vec![Snowflake(GUILD)],
        read_roles: vec![],
        change_roles: vec![Snowflake(CHANGER_ROLE)],
        notify_channel_id: Some(Snowflake(CHANNEL)),
        api_base: fake.base.clone(),
        gateway: false,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn sign_at(key: &SigningKey, ts: i64, body: &str) -> (String, String) {
    let ts = ts.to_string();
    (hex::encode(key.sign(format!("{ts}{body}").as_bytes()).to_bytes()), ts)
}

/// Posts `body` to the interactions endpoint with the given signature headers.
async fn post_raw(app: &TestApp, body: &str, sig: Option<(String, String)>) -> (u16, Value) {
    let mut r = app.client.post(app.url("/discord/interactions")).header("content-type", "application/json").body(body.to_string());
    if let Some((s, ts)) = sig {
        r = r.header("X-Signature-Ed25519", s).header("X-Signature-Timestamp", ts);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn post_signed(app: &TestApp, body: &Value) -> (u16, Value) {
    let text = body.to_string();
    post_raw(app, &text, Some(sign_at(&signing_key(), now(), &text))).await
}

fn member(user: u64, name: &str, roles: &[u64]) -> Value {
    json!({"user": {"id": user.to_string(), "username": name, "discriminator": "0"}, "roles": roles.iter().map(|r| r.to_string()).collect::<Vec<_>>()})
}

/// A slash command as Discord sends it from a guild.
fn command(token: &str, user: u64, roles: &[u64], name: &str, options: Value) -> Value {
    json!({
        "type": 2, "id": "1000", "application_id": APP.to_string(), "token": token, "version": 1,
        "guild_id": GUILD.to_string(), "channel_id": "77", "member": member(user, if user == ADA { "ada" } else { "bob" }, roles),
        "data": {"id": "555", "name": name, "type": 1, "options": options},
    })
}

fn button(token: &str, user: u64, custom_id: &str) -> Value {
    json!({
        "type": 3, "id": "1001", "application_id": APP.to_string(), "token": token, "version": 1,
        "guild_id": GUILD.to_string(), "channel_id": "77", "member": member(user, if user == ADA { "ada" } else { "bob" }, &[CHANGER_ROLE]),
        "message": {"id": "88"}, "data": {"custom_id": custom_id, "component_type": 2},
    })
}

fn deploy_options(name: &str, repo: &str) -> Value {
    json!([
        {"name": "name", "type": 3, "value": name},
        {"name": "repo", "type": 3, "value": repo},
        {"name": "framework", "type": 3, "value": "flask"},
        {"name": "type", "type": 3, "value": "lxc"},
        {"name": "cpu", "type": 4, "value": 2},
    ])
}

fn edits_of<'a>(calls: &'a [Call], token: &str) -> Vec<&'a Call> {
    let path = format!("/api/v10/webhooks/{APP}/{token}/messages/@original");
    calls.iter().filter(|c| c.method == "PATCH" && c.path == path).collect()
}

async fn audit(app: &TestApp) -> Vec<Value> {
    let (s, a) = app.get("/api/v1/audit", Some(ADMIN)).await;
    assert_eq!(s, 200, "{a}");
    a.as_array().unwrap().clone()
}

#[tokio::test]
async fn signatures_are_checked_before_anything_and_refusals_change_nothing() {
    let fake = FakeDiscord::start().await;
    let app = TestApp::spawn_with(|c| c.discord = settings(&fake)).await;

    // commands are registered per guild at start, from the one table
    let reg = fake.wait_for("the command registration", |c| c.method == "PUT").await;
    assert_eq!(reg.path, format!("/api/v10/applications/{APP}/guilds/{GUILD}/commands"));
    let names: Vec<&str> = reg.body.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["deploy", "status", "list", "logs", "redeploy", "rollback", "stop", "start", "destroy", "resources", "snapshot", "restore"]);

    // PING
    let (s, b) = post_signed(&app, &json!({"type": 1, "id": "1", "application_id": APP.to_string(), "token": "t", "version": 1})).await;
    assert_eq!((s, b), (200, json!({"type": 1})));

    // what Discord's endpoint check sends, and worse: every one 401, nothing done
    let deploy = command("tok-x", ADA, &[CHANGER_ROLE], "deploy", deploy_options("sneaky", "https://github.com/octo/app")).to_string();
    let other_key = SigningKey::from_bytes(&[7u8; 32]);
    let tampered = deploy.replace("sneaky", "sneakier");
    let cases: Vec<(&str, &str, Option<(String, String)>)> = vec![
        ("bad signature", &deploy, Some(sign_at(&other_key, now(), &deploy))),
        ("missing headers", &deploy, None),
        ("tampered body", &tampered, Some(sign_at(&signing_key(), now(), &deploy))),
        ("stale timestamp", &deploy, Some(sign_at(&signing_key(), now() - 301, &deploy))),
        ("malformed signature", &deploy, Some(("not-hex".into(), now().to_string()))),
    ];
    let huge = format!("{{\"type\":1,\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    let (s, _) = post_raw(&app, &huge, Some(sign_at(&signing_key(), now(), &huge))).await;
    assert_eq!(s, 413, "bodies over 64 KiB are refused before they are read");
    for (what, body, sig) in cases {
        let (s, b) = post_raw(&app, body, sig).await;
        assert_eq!(s, 401, "{what}: {b}");
        assert_eq!(b["error"], "unauthorized", "{what}");
    }

    // signed, but refused by the server-side checks: answered at once, ephemeral
    let refusals = [
        ("no change role", command("t1", BOB, &[], "deploy", deploy_options("nope", "https://github.com/octo/app")), "roles allowed to change"),
        ("wrong guild", {
            let mut c = command("t2", ADA, &[CHANGER_ROLE], "deploy", deploy_options("nope", "https://github.com/octo/app"));
            c["guild_id"] = json!("12345");
            c
        }, "not set up for this server"),
        ("direct message", json!({"type": 2, "id": "3", "application_id": APP.to_string(), "token": "t3", "user": {"id": ADA.to_string(), "username": "ada"}, "data": {"name": "list"}}), "direct messages"),
    ];
    for (what, body, says) in refusals {
        let (s, b) = post_signed(&app, &body).await;
        assert_eq!(s, 200, "{what}: {b}");
        assert_eq!((b["type"].as_u64(), b["data"]["flags"].as_u64()), (Some(4), Some(64)), "{what}: {b}");
        assert!(b["data"]["content"].as_str().unwrap().contains(says), "{what}: {b}");
    }

    // a wrong request reads like the API's 422, with Discord's option names
    let bad = json!([{"name": "name", "type": 3, "value": "Bad_Name"}, {"name": "framework", "type": 3, "value": "flask"}, {"name": "repo", "type": 3, "value": "ftp://x"}, {"name": "memory", "type": 4, "value": 1}]);
    let (s, b) = post_signed(&app, &command("t4", ADA, &[CHANGER_ROLE], "deploy", bad)).await;
    assert_eq!((s, b["type"].as_u64(), b["data"]["flags"].as_u64()), (200, Some(4), Some(64)), "{b}");
    let content = b["data"]["content"].as_str().unwrap();
    let (s, api) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "Bad_Name", "framework": "flask", "repo_url": "ftp://x", "memory_mib": 1})).await;
    assert_eq!(s, 422);
    for f in api["fields"].as_array().unwrap() {
        assert!(content.contains(f["message"].as_str().unwrap()), "{content}\nmissing: {f}");
    }
    assert!(content.contains("`repo`") && content.contains("`memory`"), "{content}");

    // nothing happened: no deployment, nothing audited, no follow-up sent
    assert_eq!(app.count_deployments().await, 0);
    assert!(audit(&app).await.iter().all(|e| e["door"] != "discord"));
    assert!(fake.calls().iter().all(|c| c.method == "PUT"), "{:#?}", fake.calls());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_from_discord_is_followed_in_the_same_message() {
    // a real guest: the deployment really reaches `running` and the message ends with its URL
    let dir = tempfile::tempdir().unwrap();
    let key = pvedeploy::keys::load_or_create_deploy_key(&dir.path().join("keys")).unwrap();
    let Some(rig) = crate::rig::start_real_sim(&key.public_openssh).await else { return };
    let server = crate::rig::GitServer::start().await;
    let repo = server.repo("octo/chat", "flask");
    let fake = FakeDiscord::start().await;
    fake.rec.throttle_edits.store(1, Ordering::SeqCst);
    let discord = settings(&fake);
    let app = crate::rig::agent_with(rig.sim(), dir.path(), &server.host, move |c| c.discord = discord).await;

    let (s, b) = post_signed(&app, &command("tok-deploy", ADA, &[CHANGER_ROLE], "deploy", deploy_options("chat-app", &repo.url))).await;
    assert_eq!((s, b), (200, json!({"type": 5})), "deferred at once");

    // the same message is edited as the deployment moves, and ends with where the app answers
    let done = |c: &Call| c.method == "PATCH" && c.body["content"].as_str().is_some_and(|t| t.contains("🟢 running") || t.contains("failed"));
    let last = fake.wait_for_secs("an edit showing the deployment running", done, 900).await;
    let content = last.body["content"].as_str().unwrap();
    assert!(content.contains("🟢 running at http://"), "{content}");
    assert!(content.contains(&format!("🚀 Deploying **chat-app** — {} @ main (flask on lxc)", repo.url)) && content.contains("✅ provisioning"), "{content}");
    let url = content.split("🟢 running at ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert_eq!(crate::rig::http_body(&url).await, "hello from flask v1\n");
    assert_eq!(last.body["allowed_mentions"], json!({"parse": []}));
    let calls = fake.calls();
    let edits = edits_of(&calls, "tok-deploy");
    assert!(edits.len() >= 2, "the throttled first edit was sent again after Retry-After: {edits:#?}");
    assert_eq!(edits[0].body, edits[1].body, "the 429'd edit is retried as it was");
    assert!(edits[0].body["content"].as_str().unwrap().contains("⏳ pending"), "{:#?}", edits[0]);

    // the API sees the same deployment, audited with the Discord user
    let (s, d) = app.get("/api/v1/deployments/chat-app", Some(ADMIN)).await;
    assert_eq!(s, 200);
    assert_eq!((d["status"].as_str(), d["type"].as_str(), d["cpu"].as_u64()), (Some("running"), Some("lxc"), Some(2)), "{d}");
    let entry = audit(&app).await.into_iter().find(|e| e["action"] == "deploy").expect("audited");
    assert_eq!((entry["actor"].as_str(), entry["door"].as_str()), (Some("discord:42 ada"), Some("discord")));

    // the channel was told
    let note = fake.wait_for("a notification", |c| c.method == "POST" && c.path == format!("/api/v10/channels/{CHANNEL}/messages")).await;
    assert!(note.body["content"].as_str().unwrap().starts_with("🆕 **chat-app** created"), "{note:?}");

    // /status and /logs read the same deployment
    let (_, b) = post_signed(&app, &command("tok-status", BOB, &[], "status", json!([{"name": "name", "type": 3, "value": "chat-app"}]))).await;
    assert_eq!(b, json!({"type": 5}));
    let st = fake.wait_for("the /status reply", |c| c.path.contains("tok-status")).await;
    assert!(st.body["content"].as_str().unwrap().contains("**chat-app** is running"), "{st:?}");
    assert_eq!(st.body["embeds"][0]["title"], "chat-app");
    let (s, _) = app.delete("/api/v1/deployments/chat-app", Some(ADMIN)).await;
    assert_eq!(s, 202);
    crate::rig::wait_for(&app, d["id"].as_str().unwrap(), "destroyed", Duration::from_secs(180), |d| d["status"] == "destroyed").await;
    app.stop().await;
    rig.stop().await;
    drop(server);
}

#[tokio::test]
async fn destroy_waits_for_the_same_users_confirmation() {
    let fake = FakeDiscord::start().await;
    let app = TestApp::spawn_with(|c| c.discord = settings(&fake)).await;
    let created = app.create("doomed").await;
    let id = created["id"].as_str().unwrap();

    let (s, b) = post_signed(&app, &command("tok-destroy", ADA, &[CHANGER_ROLE], "destroy", json!([{"name": "name", "type": 3, "value": "doomed"}]))).await;
    assert_eq!((s, b), (200, json!({"type": 5})));
    let ask = fake.wait_for("the confirmation question", |c| c.path.contains("tok-destroy")).await;
    assert!(ask.body["content"].as_str().unwrap().contains("Destroy **doomed**"), "{ask:?}");
    let buttons = ask.body["components"][0]["components"].as_array().unwrap().clone();
    let confirm = buttons[0]["custom_id"].as_str().unwrap().to_string();
    assert!(confirm.starts_with(&format!("destroy:{id}:")), "{confirm}");
    assert_eq!(buttons[0]["style"], 4);

    // nothing happened yet
    let (_, d) = app.get(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
    assert_eq!(d["status"], "pending");

    // another member with the role cannot confirm it
    let (s, b) = post_signed(&app, &button("tok-bob", BOB, &confirm)).await;
    assert_eq!((s, b["type"].as_u64(), b["data"]["flags"].as_u64()), (200, Some(4), Some(64)), "{b}");
    assert!(b["data"]["content"].as_str().unwrap().contains("only the person who ran /destroy"), "{b}");
    let (_, d) = app.get(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
    assert_eq!(d["status"], "pending", "still untouched");
    assert!(audit(&app).await.iter().all(|e| e["action"] != "destroy"));

    // the same user confirms: the message is updated in place and the deployment is destroyed
    let (s, b) = post_signed(&app, &button("tok-destroy", ADA, &confirm)).await;
    assert_eq!((s, b), (200, json!({"type": 6})));
    let done = fake.wait_for("the destroy answer", |c| c.path.contains("tok-destroy") && c.body["content"].as_str().is_some_and(|t| t.contains("Destroying"))).await;
    assert_eq!(done.body["components"], json!([]), "the buttons are gone");
    crate::provision::wait_until(&app, id, "destroyed", |d| d["status"] == "destroyed").await;
    let entry = audit(&app).await.into_iter().find(|e| e["action"] == "destroy").expect("audited");
    assert_eq!((entry["actor"].as_str(), entry["door"].as_str()), (Some("discord:42 ada"), Some("discord")));

    // the buttons work once
    let (_, b) = post_signed(&app, &button("tok-destroy", ADA, &confirm)).await;
    assert!(b["data"]["content"].as_str().unwrap().contains("expired or was already used"), "{b}");

    // an error found in the background is shown to the caller only: the public "thinking…" goes away
    let (_, b) = post_signed(&app, &command("tok-ghost", ADA, &[CHANGER_ROLE], "stop", json!([{"name": "name", "type": 3, "value": "ghost"}]))).await;
    assert_eq!(b, json!({"type": 5}));
    let note = fake.wait_for("the private follow-up", |c| c.method == "POST" && c.path == format!("/api/v10/webhooks/{APP}/tok-ghost")).await;
    assert_eq!(note.body["flags"], 64, "{note:?}");
    assert!(note.body["content"].as_str().unwrap().contains("No deployment is named `ghost`"), "{note:?}");
    assert!(fake.calls().iter().any(|c| c.method == "DELETE" && c.path.ends_with("/tok-ghost/messages/@original")));
    app.stop().await;
}
