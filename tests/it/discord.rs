//! The Discord door at the wire: interactions signed with a test Ed25519 key, a local HTTP server standing in for Discord's REST API.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use poem::web::Data;
use poem::{Body, EndpointExt, IntoResponse, Request, Response, Route};
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
    /// The JSON body, or a multipart body's `payload_json`.
    body: Value,
    /// A multipart body's file parts: (field name, file name, content).
    files: Vec<(String, String, String)>,
}

/// A `multipart/form-data` body as Discord reads a message with files: `payload_json` and `files[n]` parts.
fn parts(content_type: &str, body: &[u8]) -> (Value, Vec<(String, String, String)>) {
    let boundary = content_type.split("boundary=").nth(1).expect("a boundary").trim_matches('"');
    let text = String::from_utf8_lossy(body);
    let (mut payload, mut files) = (Value::Null, vec![]);
    for part in text.split(&format!("--{boundary}")).skip(1) {
        let Some((head, content)) = part.split_once("\r\n\r\n") else { continue };
        let content = content.strip_suffix("\r\n").unwrap_or(content);
        let attr = |name: &str| head.split(&format!("{name}=\"")).nth(1).and_then(|r| r.split('"').next()).map(str::to_string);
        match (attr("name"), attr("filename")) {
            (Some(n), None) if n == "payload_json" => payload = serde_json::from_str(content).expect("payload_json is JSON"),
            (Some(n), Some(f)) => files.push((n, f, content.to_string())),
            _ => {}
        }
    }
    (payload, files)
}

#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
    /// The first this-many edits are answered 429 (Retry-After: 0), as Discord does when a webhook is hot.
    throttle_edits: Arc<AtomicUsize>,
}

#[poem::handler]
async fn discord_api(req: &Request, body: Body, rec: Data<&Recorder>) -> Response {
    let bytes = body.into_vec().await.unwrap_or_default();
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (body, files) = if content_type.starts_with("multipart/form-data") { parts(&content_type, &bytes) } else { (serde_json::from_slice(&bytes).unwrap_or(Value::Null), vec![]) };
    let call = Call { method: req.method().to_string(), path: req.uri().path().to_string(), body, files };
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
        let (addr, tx) = crate::helpers::serve_loopback(Route::new().at("/*path", discord_api).data(rec.clone())).await;
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

/// A fresh interaction id, as Discord gives every interaction its own snowflake (a string).
fn snowflake() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1_180_000_000_000_000_000);
    NEXT.fetch_add(1, Ordering::SeqCst).to_string()
}

fn member(user: u64, name: &str, roles: &[u64]) -> Value {
    json!({"user": {"id": user.to_string(), "username": name, "discriminator": "0"}, "roles": roles.iter().map(|r| r.to_string()).collect::<Vec<_>>()})
}

/// A slash command as Discord sends it from a guild.
fn command(token: &str, user: u64, roles: &[u64], name: &str, options: Value) -> Value {
    json!({
        "type": 2, "id": snowflake(), "application_id": APP.to_string(), "token": token, "version": 1,
        "guild_id": GUILD.to_string(), "channel_id": "77", "member": member(user, if user == ADA { "ada" } else { "bob" }, roles),
        "data": {"id": "555", "name": name, "type": 1, "options": options},
    })
}

fn button(token: &str, user: u64, custom_id: &str) -> Value {
    json!({
        "type": 3, "id": snowflake(), "application_id": APP.to_string(), "token": token, "version": 1,
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
    assert_eq!(
        names,
        ["deploy", "status", "list", "logs", "redeploy", "rollback", "stop", "start", "destroy", "resources", "snapshot", "restore", "backup", "restore-backup", "snapshots", "backups", "schedules", "unschedule"]
    );

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
    // the finished message carries buttons: the logs, a rollback, and a link (style 5) to the app
    let row = &last.body["components"][0]["components"];
    let (_, made) = app.get("/api/v1/deployments/chat-app", Some(ADMIN)).await;
    let made = made["id"].as_str().unwrap().to_string();
    assert_eq!((row[0]["custom_id"].as_str(), row[1]["custom_id"].as_str()), (Some(format!("logs:{made}").as_str()), Some(format!("rollback:{made}").as_str())), "{row}");
    assert_eq!((row[2]["style"].as_u64(), row[2]["url"].as_str()), (Some(5), Some(url.as_str())), "{row}");
    // its Logs button answers the presser privately; many lines come as a file
    let (s, b) = post_signed(&app, &button("tok-logs-button", BOB, row[0]["custom_id"].as_str().unwrap())).await;
    assert_eq!((s, b), (200, json!({"type": 5, "data": {"flags": 64}})));
    let logs = fake.wait_for("the Logs button's answer", |c| c.path.contains("tok-logs-button")).await;
    assert!(logs.body["content"].as_str().unwrap().contains("log lines of **chat-app**"), "{logs:?}");
    let (_, b) = post_signed(&app, &command("tok-all-logs", ADA, &[], "logs", json!([{"name": "name", "type": 3, "value": "chat-app"}, {"name": "lines", "type": 4, "value": 500}]))).await;
    assert_eq!(b, json!({"type": 5, "data": {"flags": 64}}));
    let all = fake.wait_for("the long /logs answer", |c| c.path.contains("tok-all-logs")).await;
    assert_eq!(all.files.len(), 1, "{all:?}");
    assert_eq!((all.files[0].0.as_str(), all.files[0].1.as_str()), ("files[0]", "logs-chat-app.txt"));
    assert_eq!(all.body["attachments"], json!([{"id": 0, "filename": "logs-chat-app.txt"}]));
    assert!(all.files[0].2.lines().count() > 20 && all.body["content"].as_str().unwrap().chars().count() <= 2000, "{all:?}");
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
    assert_eq!(b, json!({"type": 5, "data": {"flags": 64}}), "a read is private unless shared");
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

/// An option being typed, as Discord sends it from a guild (`APPLICATION_COMMAND_AUTOCOMPLETE`, type 4): the
/// focused option carries `focused: true` and what was typed so far.
fn autocomplete(user: u64, roles: &[u64], command: &str, option: &str, typed: &str) -> Value {
    json!({
        "type": 4, "id": snowflake(), "application_id": APP.to_string(), "token": "tok-autocomplete", "version": 1,
        "guild_id": GUILD.to_string(), "channel_id": "77", "locale": "en-US", "app_permissions": "0",
        "member": member(user, if user == ADA { "ada" } else { "bob" }, roles),
        "data": {"id": "556", "name": command, "type": 1, "version": "1", "options": [{"name": option, "type": 3, "value": typed, "focused": true}]},
    })
}

/// The values of an autocomplete answer (type 8), after checking its shape.
fn choices(b: &Value) -> Vec<String> {
    assert_eq!(b["type"], 8, "{b}");
    let list = b["data"]["choices"].as_array().unwrap_or_else(|| panic!("{b}"));
    assert!(list.len() <= 25);
    list.iter()
        .map(|c| {
            let (name, value) = (c["name"].as_str().unwrap(), c["value"].as_str().unwrap());
            assert!((1..=100).contains(&name.chars().count()) && !value.is_empty(), "{c}");
            value.to_string()
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn autocomplete_offers_matching_names_the_caller_may_act_on() {
    let fake = FakeDiscord::start().await;
    let app = TestApp::spawn_with(|c| c.discord = settings(&fake)).await;
    for n in ["web-shop", "db", "my-web", "web-api"] {
        app.create(n).await;
    }
    let gone = app.create("gone-web").await;
    let (s, _) = app.delete("/api/v1/deployments/gone-web", Some(ADMIN)).await;
    assert_eq!(s, 202);
    crate::provision::wait_until(&app, gone["id"].as_str().unwrap(), "destroyed", |d| d["status"] == "destroyed").await;

    // a reader typing in /logs: the names that start with it, then those that contain it; nothing else
    let (s, b) = post_signed(&app, &autocomplete(BOB, &[], "logs", "name", "web")).await;
    assert_eq!(s, 200, "{b}");
    let got = choices(&b);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(sorted(got[..2].to_vec()), ["web-api", "web-shop"], "prefixes first: {got:?}");
    assert_eq!(sorted(got[2..].to_vec()), ["gone-web", "my-web"], "{got:?}");
    for c in b["data"]["choices"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        assert!(name.starts_with(c["value"].as_str().unwrap()) && (name.contains("pending") || name.contains("destroyed")), "each shown with its status: {c}");
    }
    let (_, b) = post_signed(&app, &autocomplete(BOB, &[], "status", "name", "WEB-S")).await;
    assert_eq!(choices(&b), ["web-shop"], "case-insensitive");
    let (_, b) = post_signed(&app, &autocomplete(BOB, &[], "logs", "name", "nothing-like-it")).await;
    assert!(choices(&b).is_empty());

    // a change command: only to members with the change role, and never a destroyed deployment
    let (_, b) = post_signed(&app, &autocomplete(ADA, &[CHANGER_ROLE], "destroy", "name", "web")).await;
    assert_eq!(sorted(choices(&b)), ["my-web", "web-api", "web-shop"]);
    let (_, b) = post_signed(&app, &autocomplete(BOB, &[], "destroy", "name", "web")).await;
    assert!(choices(&b).is_empty(), "a reader is offered nothing to destroy: {b}");
    let mut elsewhere = autocomplete(ADA, &[CHANGER_ROLE], "logs", "name", "web");
    elsewhere["guild_id"] = json!("12345");
    let (_, b) = post_signed(&app, &elsewhere).await;
    assert!(choices(&b).is_empty(), "another server is offered nothing: {b}");

    // schedules, by what they do and to what; a destroy schedule (admin only in the API) is not offered to /unschedule
    let mut ids = vec![];
    for body in [
        json!({"cron": "0 3 * * *", "action": "redeploy", "target": "web-shop"}),
        json!({"cron": "0 4 * * *", "action": "snapshot", "keep": 3, "target": "db"}),
        json!({"cron": "0 18 * * 5", "action": "destroy", "target": "web-api"}),
    ] {
        let (s, b) = app.post("/api/v1/schedules", Some(ADMIN), &body).await;
        assert_eq!(s, 201, "{b}");
        ids.push(b["id"].as_str().unwrap().to_string());
    }
    let (_, b) = post_signed(&app, &autocomplete(ADA, &[CHANGER_ROLE], "unschedule", "schedule", "web")).await;
    assert_eq!(choices(&b), [ids[0].clone()]);
    assert!(b["data"]["choices"][0]["name"].as_str().unwrap().starts_with("redeploy web-shop at 0 3 * * *"), "{b}");
    let (_, b) = post_signed(&app, &autocomplete(ADA, &[CHANGER_ROLE], "unschedule", "schedule", "")).await;
    assert_eq!(sorted(choices(&b)), sorted(ids[..2].to_vec()));
    let (_, b) = post_signed(&app, &autocomplete(BOB, &[], "unschedule", "schedule", "")).await;
    assert!(choices(&b).is_empty());

    // the registered options ask Discord for it; none of this called Discord back
    let reg = fake.wait_for("the command registration", |c| c.method == "PUT").await;
    let logs = reg.body.as_array().unwrap().iter().find(|c| c["name"] == "logs").unwrap();
    assert_eq!(logs["options"][0]["autocomplete"], true, "{logs}");
    assert!(fake.calls().iter().all(|c| !c.path.contains("/webhooks/") && !c.path.contains("/interactions/")), "{:#?}", fake.calls());
    app.stop().await;
}

const LONG_TOKEN: &str = "test-long-named-token-0123456789";

#[tokio::test]
async fn reads_are_private_unless_shared() {
    let fake = FakeDiscord::start().await;
    let app = TestApp::spawn_with(|c| {
        c.discord = settings(&fake);
        // a token with a long name: the line recording its request is longer than a message can show in full
        c.tokens.push(pvedeploy::config::ConfiguredToken { name: format!("ci-{}", "x".repeat(400)), sha256: pvedeploy::auth::hash_token(LONG_TOKEN), scopes: vec![pvedeploy::auth::Scope::Deploy] });
    })
    .await;
    app.create("quiet").await;
    let name = |n: &str| json!({"name": "name", "type": 3, "value": n});
    let public = json!({"name": "public", "type": 5, "value": true});
    let private_deferral = json!({"type": 5, "data": {"flags": 64}});

    // /logs: deferred privately, completed by editing that private message
    let (s, b) = post_signed(&app, &command("tok-logs", BOB, &[], "logs", json!([name("quiet")]))).await;
    assert_eq!((s, &b), (200, &private_deferral));
    let e = fake.wait_for("the /logs answer", |c| c.path.contains("tok-logs")).await;
    assert_eq!((e.method.as_str(), e.path.as_str()), ("PATCH", format!("/api/v10/webhooks/{APP}/tok-logs/messages/@original").as_str()));
    assert!(e.body["content"].as_str().unwrap().contains("log lines of **quiet**"), "{e:?}");
    assert!(e.files.is_empty(), "a few lines fit in the message");

    // public:true shares it: deferred in the open
    let (_, b) = post_signed(&app, &command("tok-logs-public", BOB, &[], "logs", json!([name("quiet"), public]))).await;
    assert_eq!(b, json!({"type": 5}));
    let e = fake.wait_for("the shared /logs answer", |c| c.path.contains("tok-logs-public")).await;
    assert_eq!(e.method, "PATCH");
    assert!(e.body["content"].as_str().unwrap().contains("log lines of **quiet**") && e.body.get("flags").is_none(), "{e:?}");

    // /status and /list are private by default too
    for (token, cmd, opts) in [("tok-status", "status", json!([name("quiet")])), ("tok-list", "list", json!([])), ("tok-summary", "status", json!([]))] {
        let (_, b) = post_signed(&app, &command(token, BOB, &[], cmd, opts)).await;
        assert_eq!(b, private_deferral, "/{cmd}");
    }

    // a shared read of a deployment that does not exist: refused privately at once, nothing is shown in the channel
    let (s, b) = post_signed(&app, &command("tok-ghost-public", BOB, &[], "logs", json!([name("ghost"), public]))).await;
    assert_eq!((s, b["type"].as_u64(), b["data"]["flags"].as_u64()), (200, Some(4), Some(64)), "{b}");
    assert!(b["data"]["content"].as_str().unwrap().contains("No deployment is named `ghost`"), "{b}");
    // a private read of it is told in its private message
    let (_, b) = post_signed(&app, &command("tok-ghost", BOB, &[], "logs", json!([name("ghost")]))).await;
    assert_eq!(b, private_deferral);
    let e = fake.wait_for("the private not-found answer", |c| c.path.contains("tok-ghost/")).await;
    assert_eq!(e.method, "PATCH", "the private message is edited, not deleted and followed up: {e:?}");
    assert!(e.body["content"].as_str().unwrap().contains("No deployment is named `ghost`"));

    // logs longer than a message come as a file: `files[0]` of a multipart body, named in `attachments`
    let (s, made) = app.post("/api/v1/deployments", Some(LONG_TOKEN), &crate::helpers::valid_request("chatty")).await;
    assert_eq!(s, 202, "{made}");
    let (_, b) = post_signed(&app, &command("tok-chatty", BOB, &[], "logs", json!([name("chatty")]))).await;
    assert_eq!(b, private_deferral);
    let e = fake.wait_for("the long /logs answer", |c| c.path.contains("tok-chatty")).await;
    assert_eq!(e.files.len(), 1, "{e:?}");
    assert_eq!((e.files[0].0.as_str(), e.files[0].1.as_str()), ("files[0]", "logs-chatty.txt"));
    assert_eq!(e.body["attachments"], json!([{"id": 0, "filename": "logs-chatty.txt"}]));
    assert!(e.files[0].2.lines().any(|l| l.contains("requested by") && l.contains(&"x".repeat(400))), "the whole line is in the file: {e:?}");
    assert!(e.body["content"].as_str().unwrap().chars().count() <= 2000);
    assert!(fake.calls().iter().all(|c| !c.path.contains("tok-ghost-public")), "{:#?}", fake.calls());
    app.stop().await;
}

#[tokio::test]
async fn an_expired_confirmation_is_disabled_and_a_replayed_interaction_acts_once() {
    let fake = FakeDiscord::start().await;
    let app = TestApp::spawn_with(|c| c.discord = settings(&fake)).await;
    let created = app.create("twice").await;
    let id = created["id"].as_str().unwrap();

    // a confirmation the agent no longer holds (its two minutes passed, or the agent restarted): the message's
    // buttons are disabled in place (UPDATE_MESSAGE), nothing else happens
    let stale = "0123456789abcdef01234567";
    let mut press = button("tok-stale", ADA, &format!("destroy:{id}:{stale}"));
    press["message"] = json!({
        "id": "88", "channel_id": "77", "type": 20, "content": "⚠️ Destroy **twice**? …", "flags": 0,
        "author": {"id": APP.to_string(), "username": "pvedeploy", "discriminator": "0", "bot": true},
        "components": [{"type": 1, "components": [
            {"type": 2, "style": 4, "label": "Destroy twice", "custom_id": format!("destroy:{id}:{stale}")},
            {"type": 2, "style": 2, "label": "Cancel", "custom_id": format!("cancel:{stale}")},
        ]}],
    });
    let (s, b) = post_signed(&app, &press).await;
    assert_eq!((s, b["type"].as_u64()), (200, Some(7)), "{b}");
    assert!(b["data"]["content"].as_str().unwrap().contains("expired"), "{b}");
    let buttons = b["data"]["components"][0]["components"].as_array().unwrap();
    assert_eq!(buttons.len(), 2);
    assert!(buttons.iter().all(|x| x["disabled"] == true), "{b}");
    assert_eq!(buttons[0]["custom_id"], format!("destroy:{id}:{stale}"));
    let (_, d) = app.get(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
    assert_eq!(d["status"], "pending");

    // the same signed /destroy delivered twice is answered once: one question
    let ask = command("tok-twice", ADA, &[CHANGER_ROLE], "destroy", json!([{"name": "name", "type": 3, "value": "twice"}]));
    let (_, b) = post_signed(&app, &ask).await;
    assert_eq!(b, json!({"type": 5}));
    let (s, again) = post_signed(&app, &ask).await;
    assert_eq!((s, again["type"].as_u64(), again["data"]["flags"].as_u64()), (200, Some(4), Some(64)), "{again}");
    assert!(again["data"]["content"].as_str().unwrap().contains("already answered"), "{again}");
    let question = fake.wait_for("the question", |c| c.path.contains("tok-twice") && c.body["content"].as_str().is_some_and(|t| t.contains("cannot be undone"))).await;
    let confirm = question.body["components"][0]["components"][0]["custom_id"].as_str().unwrap().to_string();

    // the same button press delivered twice acts once
    let press = button("tok-twice", ADA, &confirm);
    let (_, b) = post_signed(&app, &press).await;
    assert_eq!(b, json!({"type": 6}));
    let (_, again) = post_signed(&app, &press).await;
    assert!(again["data"]["content"].as_str().unwrap().contains("already answered"), "{again}");
    fake.wait_for("the destroy answer", |c| c.path.contains("tok-twice") && c.body["content"].as_str().is_some_and(|t| t.contains("Destroying"))).await;
    crate::provision::wait_until(&app, id, "destroyed", |d| d["status"] == "destroyed").await;
    assert_eq!(audit(&app).await.iter().filter(|e| e["action"] == "destroy").count(), 1);
    let calls = fake.calls();
    let questions = calls.iter().filter(|c| c.body["content"].as_str().is_some_and(|t| t.contains("cannot be undone"))).count();
    assert_eq!(questions, 1, "{calls:#?}");
    app.stop().await;
}

#[tokio::test]
async fn registered_commands_carry_the_cores_limits() {
    use pvedeploy::core::limits::Limits;
    let fake = FakeDiscord::start().await;
    let limits = Limits { cpu: 1..=6, memory_mib: 768..=4096, disk_gb: 4..=80, ..Limits::default() };
    let (configured, discord) = (limits.clone(), settings(&fake));
    let app = TestApp::spawn_with(move |c| {
        c.discord = discord;
        c.limits = configured;
    })
    .await;
    let reg = fake.wait_for("the command registration", |c| c.method == "PUT").await;
    let cmds = reg.body.as_array().unwrap().clone();
    let cmd = |n: &str| cmds.iter().find(|c| c["name"] == n).unwrap_or_else(|| panic!("/{n}")).clone();
    let opt = |c: &str, o: &str| cmd(c)["options"].as_array().unwrap().iter().find(|x| x["name"] == o).unwrap_or_else(|| panic!("/{c} {o}")).clone();

    // the bounds Discord enforces are the agent's own
    for (o, range) in [("cpu", &limits.cpu), ("memory", &limits.memory_mib), ("disk", &limits.disk_gb)] {
        let x = opt("deploy", o);
        assert_eq!((x["min_value"].as_u64(), x["max_value"].as_u64()), (Some(u64::from(*range.start())), Some(u64::from(*range.end()))), "{x}");
    }
    assert_eq!(opt("deploy", "name")["max_length"].as_u64(), Some(pvedeploy::core::names::AppName::MAX_LEN as u64));
    assert_eq!(opt("deploy", "repo")["max_length"].as_u64(), Some(pvedeploy::core::repo::RepoUrl::MAX_LEN as u64));
    assert_eq!(opt("deploy", "branch")["max_length"].as_u64(), Some(pvedeploy::core::names::GitRef::MAX_LEN as u64));
    assert_eq!(opt("logs", "name")["max_length"].as_u64(), Some(pvedeploy::core::names::AppName::MAX_LEN as u64));
    // and one past each is what the API refuses, naming the field
    let base = crate::helpers::valid_request("bounds");
    for (field, value) in [
        ("cpu", json!(*limits.cpu.end() + 1)),
        ("memory_mib", json!(*limits.memory_mib.start() - 1)),
        ("disk_gb", json!(*limits.disk_gb.end() + 1)),
        ("name", json!("a".repeat(pvedeploy::core::names::AppName::MAX_LEN + 1))),
    ] {
        let mut body = base.clone();
        body[field] = value;
        let (s, e) = app.post("/api/v1/deployments", Some(ADMIN), &body).await;
        assert_eq!(s, 422, "{field}: {e}");
        assert_eq!(e["fields"][0]["field"], field, "{e}");
    }
    // within them it is accepted
    let mut body = base.clone();
    body["cpu"] = json!(*limits.cpu.end());
    body["memory_mib"] = json!(*limits.memory_mib.start());
    body["disk_gb"] = json!(*limits.disk_gb.end());
    let (s, e) = app.post("/api/v1/deployments", Some(ADMIN), &body).await;
    assert_eq!(s, 202, "{e}");

    // the change commands are hidden from members without Manage Server until an admin grants them; reads are not
    for c in &cmds {
        let name = c["name"].as_str().unwrap();
        let change = ["deploy", "redeploy", "rollback", "stop", "start", "destroy", "snapshot", "restore", "backup", "restore-backup", "unschedule"].contains(&name);
        assert_eq!(c.get("default_member_permissions").and_then(Value::as_str), change.then_some("32"), "/{name}");
        // reads can be shared; every option naming a deployment or a schedule is completed as typed
        assert_eq!(c["options"].as_array().unwrap().iter().any(|o| o["name"] == "public" && o["type"] == 5), !change, "/{name}");
        for o in c["options"].as_array().unwrap() {
            let names_one = (o["name"] == "name" && name != "deploy") || o["name"] == "schedule" || o["name"] == "backup";
            assert_eq!(o.get("autocomplete").is_some(), names_one, "/{name} {o}");
        }
    }
    app.stop().await;
}

/// `/restore-backup` against the simulator's vzdump: the backup is suggested as it is typed (to the change role only),
/// a bad name is refused privately naming the option, a restore over the guest waits for its asker's button (another
/// member's press and a second press change nothing), and a restore into a new deployment asks nothing and overwrites
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_restored_from_discord_over_the_guest_once_confirmed_or_into_a_new_deployment() {
    use pvedeploy::config::BackupSettings;
    let fake = FakeDiscord::start().await;
    let clock = Arc::new(pvedeploy::engine::schedules::ManualClock::new(crate::schedules::ms("2030-01-01T00:10:00Z")));
    let discord = settings(&fake);
    let sim = crate::schedules::on_sim_configured(&clock, "vault", |c| c.backups = Some(BackupSettings::to("local")), move |c| c.discord = discord).await;
    let (app, id) = (&sim.app, sim.id.as_str());
    let (_, node, vmid) = &sim.guest;
    // No real guest here: stopped behind the agent's back, its install fails at once (a restore needs it settled).
    let upid = sim.client.lxc_power(node, *vmid, pvedeploy::pve::PowerAction::Stop).await.unwrap();
    sim.client.wait_task(&upid, Duration::from_millis(50), Duration::from_secs(30)).await.unwrap();
    crate::provision::wait_until(app, id, "failed", |d| d["status"] == "failed").await;
    let (s, made) = app.post(&format!("/api/v1/deployments/{id}/backups"), Some(crate::helpers::DEPLOYER), &json!({})).await;
    assert_eq!(s, 201, "{made}");
    let file = made["name"].as_str().unwrap().to_string();

    // suggestions: the deployment's backups for the change role, nothing without it, nothing for an unknown deployment
    let typing = |user: u64, roles: &[u64], name: &str, typed: &str| {
        let mut a = autocomplete(user, roles, "restore-backup", "backup", typed);
        a["data"]["options"] = json!([{"name": "name", "type": 3, "value": name}, {"name": "backup", "type": 3, "value": typed, "focused": true}]);
        a
    };
    let (_, b) = post_signed(app, &typing(ADA, &[CHANGER_ROLE], "vault", "vzdump")).await;
    assert_eq!(choices(&b), [file.clone()], "{b}");
    let (_, b) = post_signed(app, &typing(ADA, &[CHANGER_ROLE], "vault", "nothing-like-it")).await;
    assert!(choices(&b).is_empty(), "{b}");
    let (_, b) = post_signed(app, &typing(BOB, &[], "vault", "")).await;
    assert!(choices(&b).is_empty(), "no change role, no suggestions: {b}");
    let (_, b) = post_signed(app, &typing(ADA, &[CHANGER_ROLE], "ghost", "")).await;
    assert!(choices(&b).is_empty(), "{b}");

    // a bad backup name or new name: refused at once, privately, naming the option; nothing asked, nothing done
    let restore = |token: &str, user: u64, extra: Value| {
        let mut options = vec![json!({"name": "name", "type": 3, "value": "vault"})];
        options.extend(extra.as_array().unwrap().iter().cloned());
        command(token, user, &[CHANGER_ROLE], "restore-backup", Value::Array(options))
    };
    for (extra, option) in [
        (json!([{"name": "backup", "type": 3, "value": "../../etc/passwd"}]), "`backup`"),
        (json!([{"name": "backup", "type": 3, "value": file}, {"name": "new_name", "type": 3, "value": "Not A Name"}]), "`new_name`"),
    ] {
        let (s, b) = post_signed(app, &restore("tok-bad", ADA, extra)).await;
        assert_eq!((s, b["type"].as_u64(), b["data"]["flags"].as_u64()), (200, Some(4), Some(64)), "{b}");
        assert!(b["data"]["content"].as_str().unwrap().contains(option), "{b}");
    }
    // a backup the deployment does not have: said privately
    let (_, b) = post_signed(app, &restore("tok-none", ADA, json!([{"name": "backup", "type": 3, "value": format!("vzdump-lxc-{vmid}-2020_01_01-00_00_00.tar.zst")}]))).await;
    assert_eq!(b, json!({"type": 5}));
    let none = fake.wait_for("the refusal", |c| c.path.contains("tok-none") && c.method == "POST").await;
    assert!(none.body["content"].as_str().unwrap().contains("has no backup"), "{none:?}");

    // over the guest: a question with a button only the asker can press
    let (_, b) = post_signed(app, &restore("tok-restore", ADA, json!([{"name": "backup", "type": 3, "value": file}]))).await;
    assert_eq!(b, json!({"type": 5}));
    let ask = fake.wait_for("the confirmation question", |c| c.path.contains("tok-restore")).await;
    assert!(ask.body["content"].as_str().unwrap().contains(&format!("Restore **vault** from backup `{file}`")), "{ask:?}");
    let confirm = ask.body["components"][0]["components"][0]["custom_id"].as_str().unwrap().to_string();
    assert!(confirm.starts_with("restore-backup:"), "{confirm}");
    let (_, b) = post_signed(app, &button("tok-bob", BOB, &confirm)).await;
    assert!(b["data"]["content"].as_str().unwrap().contains("only the person who ran"), "{b}");
    let (_, d) = app.get(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
    assert_eq!(d["status"], "failed", "untouched: {d}");
    assert!(audit(app).await.iter().all(|e| e["action"] != "backup_restore"));
    let (s, b) = post_signed(app, &button("tok-restore", ADA, &confirm)).await;
    assert_eq!((s, b), (200, json!({"type": 6})));
    let done = fake.wait_for("the restore answer", |c| c.path.contains("tok-restore") && c.body["content"].as_str().is_some_and(|t| t.contains("Restoring **vault**"))).await;
    assert_eq!(done.body["components"], json!([]), "the buttons are gone");
    let entry = audit(app).await.into_iter().find(|e| e["action"] == "backup_restore").expect("audited");
    assert_eq!((entry["actor"].as_str(), entry["door"].as_str()), (Some("discord:42 ada"), Some("discord")));
    assert!(entry["detail"].as_str().unwrap().contains(&file), "{entry}");
    let (_, b) = post_signed(app, &button("tok-restore", ADA, &confirm)).await;
    assert!(b["data"]["content"].as_str().unwrap().contains("expired or was already used"), "works once: {b}");
    crate::provision::wait_until(app, id, "the restore ended", |d| d["events"].as_array().is_some_and(|e| e.iter().any(|e| e["to"] == "deploying")) && d["status"] != "deploying").await;

    // into a new deployment: no question, nothing overwritten
    let (_, b) = post_signed(app, &restore("tok-new", ADA, json!([{"name": "backup", "type": 3, "value": file}, {"name": "new_name", "type": 3, "value": "vault-two"}]))).await;
    assert_eq!(b, json!({"type": 5}));
    let said = fake.wait_for("the new deployment", |c| c.path.contains("tok-new") && c.body["content"].as_str().is_some_and(|t| t.contains("vault-two"))).await;
    assert!(said.body["content"].as_str().unwrap().contains("into the new deployment **vault-two**"), "{said:?}");
    assert!(said.body.get("components").is_none_or(|c| c == &json!([])), "no buttons: {said:?}");
    let (s, d) = app.get("/api/v1/deployments/vault-two", Some(ADMIN)).await;
    assert_eq!((s, d["framework"].as_str(), d["type"].as_str()), (200, Some("flask"), Some("lxc")), "{d}");
    assert_ne!(d["id"].as_str(), Some(id));
    let entry = audit(app).await.into_iter().find(|e| e["action"] == "backup_restore_new").expect("audited");
    assert_eq!(entry["actor"], "discord:42 ada");
    // the same name again: taken, refused naming the option
    let (_, b) = post_signed(app, &restore("tok-taken", ADA, json!([{"name": "backup", "type": 3, "value": file}, {"name": "new_name", "type": 3, "value": "vault-two"}]))).await;
    assert_eq!(b, json!({"type": 5}));
    let taken = fake.wait_for("the refusal", |c| c.path.contains("tok-taken") && c.method == "POST").await;
    assert!(taken.body["content"].as_str().unwrap().contains("`new_name` must be unique"), "{taken:?}");
    sim.app.stop().await;
}
