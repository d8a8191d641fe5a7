//! Schedules with a hand-moved clock: validation (422, nothing stored), next runs across DST, catch-up
//! after downtime vs skip, one run per occurrence across two schedulers on one database, the TTL, and
//! snapshot retention against the simulator.

use std::sync::Arc;
use std::time::Duration;

use pvedeploy::config::Config;
use pvedeploy::core::command::{Actor, Door};
use pvedeploy::core::limits::{Limits, RepoPolicy};
use pvedeploy::core::schedule::RawSchedule;
use pvedeploy::engine::export::Exports;
use pvedeploy::engine::schedules::{ManualClock, Scheduler};
use pvedeploy::engine::Engine;
use pvedeploy::store::schedules::{Claimed, RunOutcome};
use pvedeploy::store::Store;
use serde_json::{json, Value};

use crate::helpers::{test_config, TestApp, ADMIN, DEPLOYER, READER};

pub(crate) fn ms(rfc: &str) -> i64 {
    (time::OffsetDateTime::parse(rfc, &time::format_description::well_known::Rfc3339).unwrap().unix_timestamp_nanos() / 1_000_000) as i64
}

async fn clocked(dir: &std::path::Path, clock: &Arc<ManualClock>) -> TestApp {
    TestApp::spawn_config_with_clock(test_config(dir), clock.clone()).await
}

/// Polls `path` until `pred` holds (the scheduler works in the background).
pub(crate) async fn wait_for(app: &TestApp, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        let (s, body) = app.get(path, Some(READER)).await;
        if s == 200 && pred(&body) {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never showed {what}: {last}");
}

fn outcomes(runs: &Value) -> Vec<(String, String)> {
    runs["items"].as_array().unwrap().iter().map(|r| (r["occurrence"].as_str().unwrap().to_string(), r["outcome"].as_str().unwrap().to_string())).collect()
}

#[tokio::test]
async fn invalid_schedules_are_refused_naming_the_field_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(ms("2030-01-01T00:00:00Z")));
    let app = clocked(dir.path(), &clock).await;
    let ok = json!({"cron": "0 3 * * *", "action": "drift", "target": "all"});
    let cases = [
        (json!({"cron": "0 25 * * *"}), vec![("cron", "cron_field")]),
        (json!({"cron": "0 3 * *"}), vec![("cron", "cron_fields")]),
        (json!({"cron": "0 3 * * MON-5"}), vec![("cron", "cron_field")]),
        (json!({"cron": "0 0 0 1 1 * 2020"}), vec![("cron", "never_fires")]),
        (json!({"timezone": "Europe/Atlantis"}), vec![("timezone", "iana_zone")]),
        (json!({"action": "reboot"}), vec![("action", "enum")]),
        (json!({"action": "snapshot"}), vec![("keep", "required")]),
        (json!({"action": "snapshot", "keep": 0}), vec![("keep", "range")]),
        (json!({"target": "no-such-app", "action": "redeploy"}), vec![("target", "exists")]),
        (json!({"cron": 5, "timezone": "Mars/Base", "action": "x"}), vec![("cron", "type"), ("timezone", "iana_zone"), ("action", "enum")]),
        (json!({"when": "daily"}), vec![("when", "unknown_field")]),
    ];
    for (change, want) in cases {
        let mut body = ok.clone();
        body.as_object_mut().unwrap().extend(change.as_object().unwrap().clone());
        let (s, b) = app.post("/api/v1/schedules", Some(DEPLOYER), &body).await;
        assert_eq!(s, 422, "{body} → {b}");
        let got: Vec<(String, String)> = b["fields"].as_array().unwrap().iter().map(|f| (f["field"].as_str().unwrap().into(), f["rule"].as_str().unwrap().into())).collect();
        let want: Vec<(String, String)> = want.into_iter().map(|(f, r)| (f.into(), r.into())).collect();
        assert_eq!(got, want, "{body} → {b}");
    }
    // Scopes: reading is not enough to create; a destroy schedule needs admin.
    assert_eq!(app.post("/api/v1/schedules", Some(READER), &ok).await.0, 403);
    let (_, d) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "preview", "repo_url": "https://github.com/octo/app", "framework": "flask"})).await;
    let destroy = json!({"cron": "0 18 * * 5", "action": "destroy", "target": "preview"});
    assert_eq!(app.post("/api/v1/schedules", Some(DEPLOYER), &destroy).await.0, 403);
    let (s, _) = app.get("/api/v1/schedules", Some(READER)).await;
    assert_eq!(s, 200);
    assert_eq!(app.get("/api/v1/schedules", Some(READER)).await.1["total"], 0, "nothing stored on rejection");
    let (s, created) = app.post("/api/v1/schedules", Some(ADMIN), &destroy).await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["target"], d["id"], "a name is stored as the deployment's id");
    app.stop().await;
}

#[tokio::test]
async fn schedules_show_their_next_runs_across_a_dst_change_and_can_be_replaced_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(ms("2026-03-27T12:00:00Z")));
    let app = clocked(dir.path(), &clock).await;
    let (s, created) = app.post("/api/v1/schedules", Some(DEPLOYER), &json!({"cron": "30 2 * * *", "timezone": "Europe/Berlin", "action": "drift", "target": "all"})).await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let (_, got) = app.get(&format!("/api/v1/schedules/{id}"), Some(READER)).await;
    let runs: Vec<String> = got["next_runs"].as_array().unwrap().iter().map(|r| format!("{} = {}", r["utc"].as_str().unwrap(), r["local"].as_str().unwrap())).collect();
    expect_test::expect![[r#"
        [
            "2026-03-28T01:30:00Z = 2026-03-28T02:30:00+01:00",
            "2026-03-29T01:00:00Z = 2026-03-29T03:00:00+02:00",
            "2026-03-30T00:30:00Z = 2026-03-30T02:30:00+02:00",
            "2026-03-31T00:30:00Z = 2026-03-31T02:30:00+02:00",
            "2026-04-01T00:30:00Z = 2026-04-01T02:30:00+02:00",
        ]
    "#]]
    .assert_debug_eq(&runs);
    // Both day fields set: every 13th and every Friday, as cron(8) runs it.
    let (s, either) = app.post("/api/v1/schedules", Some(DEPLOYER), &json!({"cron": "0 0 13 * 5", "action": "drift", "target": "all"})).await;
    assert_eq!(s, 201, "{either}");
    let days: Vec<&str> = either["next_runs"].as_array().unwrap().iter().map(|r| r["utc"].as_str().unwrap()).collect();
    assert_eq!(days, ["2026-04-03T00:00:00Z", "2026-04-10T00:00:00Z", "2026-04-13T00:00:00Z", "2026-04-17T00:00:00Z", "2026-04-24T00:00:00Z"]);
    let (s, replaced) = app.put_json(&format!("/api/v1/schedules/{id}"), Some(DEPLOYER), &json!({"cron": "0 12 * * *", "action": "reconcile", "target": "all", "enabled": false})).await;
    assert_eq!(s, 200, "{replaced}");
    assert_eq!((replaced["action"].as_str(), replaced["enabled"].as_bool(), replaced["next_runs"].as_array().unwrap().len()), (Some("reconcile"), Some(false), 0));
    let (s, bad) = app.put_json(&format!("/api/v1/schedules/{id}"), Some(DEPLOYER), &json!({"cron": "0 12 * * *", "action": "drift", "target": "all", "timezone": "CEST"})).await;
    assert_eq!((s, bad["fields"][0]["field"].as_str()), (422, Some("timezone")));
    assert_eq!(app.get(&format!("/api/v1/schedules/{id}"), Some(READER)).await.1["action"], "reconcile", "a rejected replace changes nothing");
    assert_eq!(app.delete(&format!("/api/v1/schedules/{id}"), Some(DEPLOYER)).await.0, 204);
    assert_eq!(app.get(&format!("/api/v1/schedules/{id}"), Some(READER)).await.0, 404);
    app.stop().await;
}

#[tokio::test]
async fn a_run_missed_while_down_runs_once_with_catch_up_and_is_skipped_without() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(ms("2030-05-01T10:10:00Z")));
    let app = clocked(dir.path(), &clock).await;
    let hourly = |catch_up: bool| json!({"cron": "0 * * * *", "action": "drift", "target": "all", "catch_up": catch_up});
    let (_, a) = app.post("/api/v1/schedules", Some(DEPLOYER), &hourly(true)).await;
    let (_, b) = app.post("/api/v1/schedules", Some(DEPLOYER), &hourly(false)).await;
    let (a, b) = (a["id"].as_str().unwrap().to_string(), b["id"].as_str().unwrap().to_string());
    app.stop().await;

    // Down over 11:00, 12:00 and 13:00.
    clock.set(ms("2030-05-01T13:30:00Z"));
    let app = clocked(dir.path(), &clock).await;
    let settled = |r: &Value| r["total"] == 1 && r["items"][0]["outcome"] != "running";
    let runs_a = wait_for(&app, &format!("/api/v1/schedules/{a}/runs"), "the catch-up run", settled).await;
    let runs_b = wait_for(&app, &format!("/api/v1/schedules/{b}/runs"), "the skip", settled).await;
    assert_eq!(outcomes(&runs_a), [("2030-05-01T13:00:00Z".to_string(), "succeeded".to_string())], "{runs_a}");
    assert!(runs_a["items"][0]["message"].as_str().unwrap().contains("catch-up"), "{runs_a}");
    assert_eq!(outcomes(&runs_b), [("2030-05-01T13:00:00Z".to_string(), "skipped".to_string())], "{runs_b}");

    // The next hour runs on time for both, once.
    clock.set(ms("2030-05-01T14:00:05Z"));
    let two = |r: &Value| r["total"] == 2 && r["items"][0]["outcome"] != "running";
    let runs_a = wait_for(&app, &format!("/api/v1/schedules/{a}/runs"), "the 14:00 run", two).await;
    let runs_b = wait_for(&app, &format!("/api/v1/schedules/{b}/runs"), "the 14:00 run", two).await;
    assert_eq!(outcomes(&runs_a)[0], ("2030-05-01T14:00:00Z".to_string(), "succeeded".to_string()));
    assert_eq!(outcomes(&runs_b), [("2030-05-01T14:00:00Z".into(), "succeeded".into()), ("2030-05-01T13:00:00Z".into(), "skipped".into())]);
    assert_eq!(runs_b["items"][0]["message"], "0 deployments checked, no drift");
    let (_, sched) = app.get(&format!("/api/v1/schedules/{a}"), Some(READER)).await;
    assert_eq!(sched["last_occurrence"], "2030-05-01T14:00:00Z");
    app.stop().await;
}

#[tokio::test]
async fn an_expired_deployment_is_destroyed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(ms("2030-01-01T00:00:00Z")));
    let app = clocked(dir.path(), &clock).await;
    let (_, d) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "pr-42", "repo_url": "https://github.com/octo/app", "framework": "flask"})).await;
    let id = d["id"].as_str().unwrap();
    assert_eq!(app.post("/api/v1/deployments/pr-42/expiry", Some(DEPLOYER), &json!({"ttl_seconds": 3600})).await.0, 403, "destroying needs admin");
    let (s, e) = app.post("/api/v1/deployments/pr-42/expiry", Some(ADMIN), &json!({"ttl_seconds": 0})).await;
    assert_eq!((s, e["fields"][0]["field"].as_str()), (422, Some("ttl_seconds")));
    let (s, e) = app.post("/api/v1/deployments/pr-42/expiry", Some(ADMIN), &json!({"ttl_seconds": 3600})).await;
    assert_eq!((s, e["expires_at"].as_str()), (200, Some("2030-01-01T01:00:00Z")), "{e}");
    assert_eq!(app.get("/api/v1/deployments/pr-42/expiry", Some(READER)).await.1["expires_at"], "2030-01-01T01:00:00Z");

    clock.set(ms("2030-01-01T00:59:59Z"));
    clock.set(ms("2030-01-01T01:00:00Z"));
    let gone = wait_for(&app, &format!("/api/v1/deployments/{id}"), "destroyed", |d| d["status"] == "destroyed").await;
    assert_eq!(gone["id"], id);
    assert!(app.get("/api/v1/deployments/pr-42/expiry", Some(READER)).await.1.get("expires_at").is_none(), "the expiry is used up");
    app.stop().await;
}

#[tokio::test]
async fn a_destroyed_deployments_schedules_are_disabled_and_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(ms("2030-03-01T00:10:00Z")));
    let app = clocked(dir.path(), &clock).await;
    let (_, d) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "short-lived", "repo_url": "https://github.com/octo/app", "framework": "flask"})).await;
    let id = d["id"].as_str().unwrap().to_string();
    let (s, sched) = app.post("/api/v1/schedules", Some(ADMIN), &json!({"cron": "0 * * * *", "action": "stop", "target": "short-lived"})).await;
    assert_eq!(s, 201, "{sched}");
    let sid = sched["id"].as_str().unwrap().to_string();
    let (s, _) = app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
    assert_eq!(s, 202);
    wait_for(&app, &format!("/api/v1/deployments/{id}"), "destroyed", |d| d["status"] == "destroyed").await;
    let (_, after) = app.get(&format!("/api/v1/schedules/{sid}"), Some(READER)).await;
    assert_eq!((after["enabled"].as_bool(), after["target_destroyed"].as_bool(), after["next_runs"].as_array().map(Vec::len)), (Some(false), Some(true), Some(0)), "kept, disabled: {after}");
    // Its next occurrences pass without a run.
    clock.set(ms("2030-03-01T01:00:05Z"));
    clock.set(ms("2030-03-01T02:00:05Z"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, runs) = app.get(&format!("/api/v1/schedules/{sid}/runs"), Some(READER)).await;
    assert_eq!(runs["total"], 0, "{runs}");
    app.stop().await;
}

/// Two agents' schedulers on one database: each occurrence is claimed and run by exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_one_database_run_each_occurrence_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Config::for_data_dir(dir.path()).database).await.unwrap();
    let clock = Arc::new(ManualClock::new(ms("2030-01-01T00:00:30Z")));
    let scheduler = |name: &str| {
        let engine = Engine::new(store.clone(), Limits::default(), RepoPolicy::default(), None, name.into());
        let exports = Exports::new(engine.clone(), dir.path().join(format!("export-{name}")), dir.path().join(name));
        Scheduler::new(engine, Some(exports), clock.clone())
    };
    let (a, b) = (scheduler("agent-a"), scheduler("agent-b"));
    let actor = Actor { name: "test".into(), door: Door::Api };
    let spec = a.parse(RawSchedule { cron: Some("* * * * *".into()), action: Some("drift".into()), target: Some("all".into()), ..Default::default() }).await.unwrap();
    let s = a.add(spec, &actor).await.unwrap();
    let mut claimed = Vec::new();
    for minute in 1..=6 {
        clock.set(ms("2030-01-01T00:00:00Z") + minute * 60_000 + 1_000);
        let (pa, pb) = tokio::join!(a.tick(), b.tick());
        let (pa, pb) = (pa.unwrap(), pb.unwrap());
        // A second pass of either finds nothing left to do.
        let (qa, qb) = tokio::join!(a.tick(), b.tick());
        assert!(qa.unwrap().started.is_empty() && qb.unwrap().started.is_empty(), "no double run");
        assert_eq!(pa.started.len() + pb.started.len(), 1, "minute {minute}: exactly one agent runs it ({pa:?} / {pb:?})");
        claimed.push(if pa.started.is_empty() { "b" } else { "a" });
        tokio::join!(a.settle(), b.settle());
    }
    let (runs, total) = store.schedule_runs(&s.id, 100, 0).await.unwrap();
    assert_eq!(total, 6, "{runs:?} claimed by {claimed:?}");
    assert!(runs.iter().all(|r| r.outcome == RunOutcome::Succeeded), "{runs:?}");
    let mut occ: Vec<i64> = runs.iter().map(|r| r.occurrence).collect();
    occ.dedup();
    assert_eq!(occ.len(), 6, "one record per occurrence");
}

/// A store in `dir` holding one every-minute drift schedule, added through a scheduler with no cluster.
async fn minutely_drift(dir: &std::path::Path) -> (Store, pvedeploy::core::schedule::Schedule) {
    let store = Store::open(&Config::for_data_dir(dir).database).await.unwrap();
    let clock = Arc::new(ManualClock::new(ms("2030-01-01T00:00:00Z")));
    let engine = Engine::new(store.clone(), Limits::default(), RepoPolicy::default(), None, "agent-a".into());
    let sched = Scheduler::new(engine, None, clock);
    let spec = sched.parse(RawSchedule { cron: Some("* * * * *".into()), action: Some("drift".into()), target: Some("all".into()), ..Default::default() }).await.unwrap();
    let s = sched.add(spec, &Actor { name: "test".into(), door: Door::Api }).await.unwrap();
    (store, s)
}

/// A page of runs and its total come from one snapshot: while runs are being recorded, a reader never
/// sees a total that counts a run the page leaves out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_runs_and_its_total_agree_while_runs_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (store, s) = minutely_drift(dir.path()).await;
    let writer = {
        let (store, id) = (store.clone(), s.id.clone());
        tokio::spawn(async move {
            for minute in 1..=150i64 {
                let t = ms("2030-01-01T00:00:00Z") + minute * 60_000;
                store.claim_occurrence(&id, t, "agent-a", t, 30_000, RunOutcome::Skipped, "").await.unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let (items, total) = store.schedule_runs(&s.id, 1000, 0).await.unwrap();
        assert_eq!(items.len() as u64, total, "a page of every run has as many items as its total says");
        reads += 1;
    }
    writer.await.unwrap();
    assert_eq!(store.schedule_runs(&s.id, 1000, 0).await.unwrap().1, 150);
    assert!(reads > 0);
}

/// The same schedule never runs twice at once: an occurrence due while a run is live is recorded as skipped.
#[tokio::test]
async fn an_occurrence_due_while_the_previous_run_is_live_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (store, s) = minutely_drift(dir.path()).await;
    let t0 = ms("2030-01-01T00:01:00Z");
    let Claimed::Run(claim) = store.claim_occurrence(&s.id, t0, "agent-a", t0, 30_000, RunOutcome::Running, "").await.unwrap() else { panic!("the first claim runs") };
    assert_eq!(store.claim_occurrence(&s.id, t0, "agent-b", t0, 30_000, RunOutcome::Running, "").await.unwrap(), Claimed::Handled, "claimed once");
    let t1 = t0 + 60_000;
    // The next minute comes while the first run is still live (its claim renewed up to now).
    store.renew_run(&claim, t1 + 30_000).await.unwrap();
    assert_eq!(store.claim_occurrence(&s.id, t1, "agent-b", t1, 30_000, RunOutcome::Running, "").await.unwrap(), Claimed::Busy);
    let (runs, _) = store.schedule_runs(&s.id, 10, 0).await.unwrap();
    assert_eq!((runs[0].outcome, runs[0].message.contains("still running")), (RunOutcome::Skipped, true), "{runs:?}");
    // The holder stopped without finishing: once its claim expires, the next occurrence runs and the old one is closed as failed.
    let t2 = t1 + 60_000; // no renewal since t1: expired
    assert!(matches!(store.claim_occurrence(&s.id, t2, "agent-b", t2, 30_000, RunOutcome::Running, "").await.unwrap(), Claimed::Run(_)));
    let (runs, _) = store.schedule_runs(&s.id, 10, 0).await.unwrap();
    let first_run = runs.iter().find(|r| r.occurrence == t0).unwrap();
    assert_eq!(first_run.outcome, RunOutcome::Failed, "{runs:?}");
}

/// An agent on a hand-moved clock in front of a simulated cluster, with one container deployment `name` that has a
/// guest, and a Proxmox client of the test's own to look at (and change) that guest behind the agent's back.
pub(crate) struct OnSim {
    pub cluster: crate::provision::Cluster,
    pub app: TestApp,
    pub id: String,
    pub client: pvedeploy::pve::PveClient,
    pub guest: (pvedeploy::pve::GuestType, pvedeploy::core::names::NodeName, pvedeploy::core::names::VmId),
    _dir: tempfile::TempDir,
}

pub(crate) async fn on_sim(clock: &Arc<ManualClock>, name: &str) -> OnSim {
    on_sim_with(clock, name, |_| {}).await
}

/// [`on_sim`] with the cluster settings changed by `tweak` first.
pub(crate) async fn on_sim_with(clock: &Arc<ManualClock>, name: &str, tweak: impl FnOnce(&mut pvedeploy::config::ClusterSettings)) -> OnSim {
    on_sim_configured(clock, name, tweak, |_| {}).await
}

/// [`on_sim_with`], the rest of the agent's configuration changed by `configure` (a door, say).
pub(crate) async fn on_sim_configured(
    clock: &Arc<ManualClock>,
    name: &str,
    tweak: impl FnOnce(&mut pvedeploy::config::ClusterSettings),
    configure: impl FnOnce(&mut pvedeploy::config::Config),
) -> OnSim {
    use crate::provision::{deploy, install_key, node_ssh_settings, start_sim, wait_until};
    use pvedeploy::config::{ClusterSettings, ProxmoxSetting, Secret, TrustSetting};
    let cluster = start_sim(pvedeploy_sim::ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(dir.path());
    install_key(&cluster.agent_key, dir.path());
    let (token_id, secret) = cluster.sim.admin_token();
    let endpoint = format!("https://{}", cluster.sim.addr());
    let mut settings = ClusterSettings {
        vmid_range: 100..=999_999,
        address_timeout: Duration::from_secs(30),
        poll_interval: Duration::from_millis(50),
        node_ssh: node_ssh_settings(&cluster.sim),
        ..ClusterSettings::new(endpoint.clone(), token_id.clone(), Secret::new(secret.clone()), TrustSetting::Fingerprint(cluster.sim.fingerprint_sha256()), 9000)
    };
    tweak(&mut settings);
    c.proxmox = ProxmoxSetting::Cluster(settings);
    configure(&mut c);
    let app = TestApp::spawn_config_with_clock(c, clock.clone()).await;
    let id = deploy(&app, name, "lxc").await;
    let d = wait_until(&app, &id, "a guest", |d| d["proxmox_id"].is_u64() && d["status"] != "provisioning").await;
    let (vmid, node) = (d["proxmox_id"].as_u64().unwrap() as u32, d["proxmox_node"].as_str().unwrap().to_string());
    let trust = pvedeploy::pve::TlsTrust::parse_fingerprint(&cluster.sim.fingerprint_sha256()).unwrap();
    let client = pvedeploy::pve::PveClient::new(pvedeploy::pve::PveConfig::new(endpoint, token_id, Secret::new(secret), trust)).unwrap();
    let guest = (pvedeploy::pve::GuestType::Lxc, pvedeploy::core::names::NodeName::parse(&node).unwrap(), pvedeploy::core::names::VmId::new(vmid.into()).unwrap());
    OnSim { cluster, app, id, client, guest, _dir: dir }
}

/// Proxmox is slow to delete the guest, so the deployment stays `destroying` while a stop and a snapshot schedule
/// come due: neither acts on it (each run recorded as skipped, saying why, not as failed); once the destroy ends both
/// are kept, disabled and marked `target_destroyed` in `GET /schedules`, and their later occurrences run nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_due_while_their_deployment_is_being_destroyed_do_not_act_and_end_disabled() {
    let clock = Arc::new(ManualClock::new(ms("2030-01-01T00:10:00Z")));
    let sim = on_sim(&clock, "doomed").await;
    let (cluster, app, id, client, (kind, node, vmid)) = (&sim.cluster, &sim.app, &sim.id, &sim.client, sim.guest.clone());
    let mut sids = Vec::new();
    for body in [json!({"cron": "0 * * * *", "action": "stop", "target": "doomed"}), json!({"cron": "0 * * * *", "action": "snapshot", "keep": 2, "target": "doomed"})] {
        let (s, sched) = app.post("/api/v1/schedules", Some(DEPLOYER), &body).await;
        assert_eq!(s, 201, "{sched}");
        sids.push(sched["id"].as_str().unwrap().to_string());
    }
    // The outside world misbehaves first: deleting a container takes Proxmox 4 s.
    cluster.sim.faults().add_latency(r"^/nodes/[^/]+/lxc/\d+$", Duration::from_secs(4)).unwrap();
    assert_eq!(app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await.0, 202);
    wait_for(&app, &format!("/api/v1/deployments/{id}"), "destroying", |d| d["status"] == "destroying").await;
    clock.set(ms("2030-01-01T01:00:02Z"));
    for sid in &sids {
        let runs = wait_for(&app, &format!("/api/v1/schedules/{sid}/runs"), "the 01:00 run", |r| r["total"] == 1 && r["items"][0]["outcome"] != "running").await;
        assert_eq!(outcomes(&runs), [("2030-01-01T01:00:00Z".to_string(), "skipped".to_string())], "{runs}");
        assert!(runs["items"][0]["message"].as_str().unwrap().contains("being destroyed"), "{runs}");
    }
    assert!(client.snapshot_list(kind, &node, vmid).await.map(|l| l.iter().all(|s| s.is_current())).unwrap_or(true), "no snapshot was taken");
    wait_for(&app, &format!("/api/v1/deployments/{id}"), "destroyed", |d| d["status"] == "destroyed").await;
    let listed = wait_for(&app, "/api/v1/schedules", "both marked", |p| p["items"].as_array().unwrap().iter().all(|s| s["target_destroyed"] == true)).await;
    for s in listed["items"].as_array().unwrap() {
        assert_eq!((s["enabled"].as_bool(), s["next_runs"].as_array().map(Vec::len)), (Some(false), Some(0)), "{s}");
    }
    clock.set(ms("2030-01-01T02:00:02Z"));
    clock.set(ms("2030-01-01T03:00:02Z"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for sid in &sids {
        assert_eq!(app.get(&format!("/api/v1/schedules/{sid}/runs"), Some(READER)).await.1["total"], 1, "nothing ran after the destroy");
    }
    sim.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_schedule_keeps_the_newest_and_leaves_other_snapshots_alone() {
    let clock = Arc::new(ManualClock::new(ms("2030-01-01T00:10:00Z")));
    let sim = on_sim(&clock, "snappy").await;
    let (app, client, (kind, node, vmid)) = (&sim.app, &sim.client, sim.guest.clone());
    let upid = client.snapshot_create(kind, &node, vmid, "before-upgrade", Some("made by hand")).await.unwrap();
    client.wait_task(&upid, Duration::from_millis(50), Duration::from_secs(30)).await.unwrap();

    let (s, sched) = app.post("/api/v1/schedules", Some(DEPLOYER), &json!({"cron": "0 * * * *", "action": "snapshot", "keep": 2, "target": "snappy"})).await;
    assert_eq!(s, 201, "{sched}");
    let runs = format!("/api/v1/schedules/{}/runs", sched["id"].as_str().unwrap());
    for hour in 1..=4 {
        clock.set(ms("2030-01-01T00:00:00Z") + hour * 3_600_000);
        let occurrence = format!("2030-01-01T{hour:02}:00:00Z");
        let page = wait_for(&app, &runs, "the snapshot run", |r| r["total"] == hour && r["items"][0]["occurrence"] == occurrence.as_str() && r["items"][0]["outcome"] != "running").await;
        assert_eq!(page["items"][0]["outcome"], "succeeded", "{page}");
    }
    let mut names: Vec<String> = client.snapshot_list(kind, &node, vmid).await.unwrap().into_iter().filter(|s| !s.is_current()).map(|s| s.name).collect();
    names.sort();
    let tag = pvedeploy::core::snapshot::schedule_tag(sched["id"].as_str().unwrap());
    assert_eq!(names, ["before-upgrade".to_string(), format!("pvd-{tag}-20300101-030000"), format!("pvd-{tag}-20300101-040000")]);
    sim.app.stop().await;
}

pub(crate) fn cli(app: &TestApp, token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pvedeploy"))
        .args(args)
        .args(["--url", &app.base])
        .env("PVEDEPLOY_TOKEN", token)
        .env_remove("PVEDEPLOY_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("pvedeploy runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_lists_and_removes_schedules_through_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(ms("2030-01-01T00:00:00Z")));
    let app = clocked(dir.path(), &clock).await;
    let add = |args: Vec<&str>| {
        let mut all = vec!["schedule", "add"];
        all.extend(args);
        cli(&app, DEPLOYER, &all)
    };
    let bad = add(vec!["--cron", "0 3 * * *", "--action", "drift", "--timezone", "Moon/Tranquility"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("timezone") && err.contains("HTTP 422"), "{err}");
    let ok = add(vec!["--cron", "0 3 * * *", "--action", "drift", "--timezone", "Asia/Tokyo"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let out = String::from_utf8_lossy(&ok.stdout).to_string();
    let id = out.split('\t').next().unwrap().to_string();
    assert!(out.contains("next run 2030-01-02T03:00:00+09:00"), "{out}");
    let list = cli(&app, READER, &["schedule", "list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.starts_with(&format!("{id}\t0 3 * * *\tAsia/Tokyo\tdrift\tall\tnext 2030-01-02T03:00:00+09:00")), "{listed}");
    assert!(!cli(&app, READER, &["schedule", "remove", &id]).status.success(), "removing needs the deploy scope");
    assert!(cli(&app, DEPLOYER, &["schedule", "remove", &id]).status.success());
    assert_eq!(app.get("/api/v1/schedules", Some(READER)).await.1["total"], 0);
    app.stop().await;
}
