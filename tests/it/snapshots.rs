//! Snapshots through the API against the simulator: two snapshot schedules on one guest keep and prune only their own
//! (and both succeed at shared occurrences, through a lock held outside the agent), manual snapshots survive them,
//! rollback stops, rolls back and starts the guest, and bad input is a 422 that changes nothing.

use std::sync::Arc;
use pvedeploy::engine::schedules::ManualClock;
use serde_json::{json, Value};

use crate::helpers::{ADMIN, DEPLOYER, READER};
use crate::schedules::{cli, ms, on_sim, wait_for, OnSim};

/// A clock at 2030-01-01T00:10Z, an agent on it with a container deployment `name`, and its snapshots' path.
async fn guest(name: &str) -> (Arc<ManualClock>, OnSim, String) {
    let clock = Arc::new(ManualClock::new(ms("2030-01-01T00:10:00Z")));
    let sim = on_sim(&clock, name).await;
    let path = format!("/api/v1/deployments/{}/snapshots", sim.id);
    (clock, sim, path)
}

fn names(list: &Value, kind: &str) -> Vec<String> {
    list["items"].as_array().unwrap().iter().filter(|s| s["kind"] == kind).map(|s| s["name"].as_str().unwrap().to_string()).collect()
}

/// An hourly schedule keeping 3 and a daily one keeping 2 on one container over a simulated day and a half: every run
/// succeeds (at 03:00 both fire in the same second, and Proxmox answers the first two snapshot calls with the guest
/// locked by a backup), exactly 3 + 2 of theirs remain, and the snapshot taken by hand before is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_keep_3_and_daily_keep_2_on_one_guest_keep_exactly_their_own() {
    let (clock, sim, snapshots) = guest("twice").await;
    let app = &sim.app;
    let (s, manual) = app.post(&snapshots, Some(DEPLOYER), &json!({"name": "before-upgrade", "description": "by hand"})).await;
    assert_eq!(s, 201, "{manual}");
    assert_eq!((manual["kind"].as_str(), manual["taken_by"].as_str(), manual["description"].as_str()), (Some("manual"), Some("deployer via api"), Some("by hand")));
    let mut runs = Vec::new();
    for (cron, keep) in [("0 * * * *", 3), ("0 3 * * *", 2)] {
        let (s, sched) = app.post("/api/v1/schedules", Some(DEPLOYER), &json!({"cron": cron, "action": "snapshot", "keep": keep, "target": "twice"})).await;
        assert_eq!(s, 201, "{sched}");
        runs.push(format!("/api/v1/schedules/{}/runs", sched["id"].as_str().unwrap()));
    }
    let mut daily_runs = 0;
    for hour in 1..=36i64 {
        let at = ms("2030-01-01T00:00:00Z") + hour * 3_600_000;
        if hour == 3 {
            // The outside world first: a backup holds the guest's lock for the first two snapshot calls at 03:00.
            sim.cluster.sim.faults().fail_call(r"/snapshot$", Some("POST"), 500, "CT is locked (backup)", 2).unwrap();
        }
        clock.set(at);
        let occurrence = pvedeploy::core::schedule::Zone::UTC.rfc3339(at).replace("+00:00", "Z");
        let hourly = wait_for(app, &runs[0], "the hourly run", |r| r["items"][0]["occurrence"] == occurrence.as_str() && r["items"][0]["outcome"] != "running").await;
        assert_eq!(hourly["items"][0]["outcome"], "succeeded", "{hourly}");
        if hour % 24 == 3 {
            daily_runs += 1;
            let daily = wait_for(app, &runs[1], "the daily run", |r| r["total"] == daily_runs && r["items"][0]["outcome"] != "running").await;
            assert_eq!(daily["items"][0]["outcome"], "succeeded", "{daily}");
        }
    }
    let (_, list) = app.get(&snapshots, Some(READER)).await;
    // By schedule (the tag in the name): the hourly one's newest three, and the daily one's two (03:00 on both days).
    let mut by_tag = std::collections::BTreeMap::<String, Vec<String>>::new();
    for n in names(&list, "schedule") {
        let (tag, time) = n.strip_prefix("pvd-").unwrap().split_once('-').unwrap();
        by_tag.entry(tag.to_string()).or_default().push(time.to_string());
    }
    let mut kept: Vec<Vec<String>> = by_tag.into_values().collect();
    kept.sort_by_key(Vec::len);
    assert_eq!(kept, [vec!["20300101-030000", "20300102-030000"], vec!["20300102-100000", "20300102-110000", "20300102-120000"]], "{list}");
    assert_eq!(names(&list, "manual"), ["before-upgrade"], "{list}");
    assert!(list["items"].as_array().unwrap().iter().filter(|s| s["kind"] == "schedule").all(|s| s["taken_by"].as_str().unwrap().starts_with("schedule:")), "{list}");
    sim.app.stop().await;
}

/// Rollback through the API: admin only; the deployment goes `deploying` and back to `running`, the guest's live state
/// is the snapshot again, and the audit log and the status history say who did it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_a_snapshot_through_the_api() {
    let (_clock, sim, snapshots) = guest("rewind").await;
    let (app, id) = (&sim.app, sim.id.as_str());
    // No real guest here: stopped behind the agent's back, its install fails (and the deployment with it) at once.
    let (kind, node, vmid) = &sim.guest;
    let upid = sim.client.lxc_power(node, *vmid, pvedeploy::pve::PowerAction::Stop).await.unwrap();
    sim.client.wait_task(&upid, std::time::Duration::from_millis(50), std::time::Duration::from_secs(30)).await.unwrap();
    crate::provision::wait_until(app, id, "failed", |d| d["status"] == "failed").await;
    for name in ["before", "after"] {
        assert_eq!(app.post(&snapshots, Some(DEPLOYER), &json!({"name": name})).await.0, 201);
    }
    let rollback = format!("{snapshots}/before/rollback");
    assert_eq!(app.post(&rollback, Some(DEPLOYER), &json!({})).await.0, 403, "rollback needs admin");
    let (s, missing) = app.post(&format!("{snapshots}/never-taken/rollback"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 404, "{missing}");
    let (s, accepted) = app.post(&rollback, Some(ADMIN), &json!({})).await;
    assert_eq!((s, accepted["status"].as_str()), (202, Some("deploying")), "{accepted}");
    let d = crate::provision::wait_until(app, id, "running again", |d| d["status"] == "running").await;
    let events: Vec<&str> = d["events"].as_array().unwrap().iter().filter_map(|e| e["message"].as_str()).collect();
    assert!(events.iter().any(|m| m.contains("rolling back to snapshot before")) && events.iter().any(|m| m.contains("rolled back to snapshot before")), "{d}");
    let live = sim.client.snapshot_list(*kind, node, *vmid).await.unwrap().into_iter().find(|s| s.is_current()).unwrap();
    assert_eq!(live.parent.as_deref(), Some("before"), "the live state is the snapshot's again");
    let (_, audit) = app.get("/api/v1/audit", Some(ADMIN)).await;
    assert!(audit.as_array().unwrap().iter().any(|e| e["action"] == "snapshot_rollback" && e["actor"] == "admin" && e.to_string().contains("name=before")), "{audit}");
    // Deleting: the snapshot goes, a second delete is a 404.
    assert_eq!(app.delete(&format!("{snapshots}/after"), Some(DEPLOYER)).await.0, 204);
    assert_eq!(app.delete(&format!("{snapshots}/after"), Some(DEPLOYER)).await.0, 404);
    sim.app.stop().await;
}

/// Bad input is a 422 naming each field and its rule, and nothing is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_snapshot_requests_are_refused_naming_the_field_and_change_nothing() {
    let (_clock, sim, snapshots) = guest("strict").await;
    let app = &sim.app;
    let cases = [
        (json!({"name": "1st"}), vec![("name", "snapshot_name")]),
        (json!({"name": "has space"}), vec![("name", "snapshot_name")]),
        (json!({"name": "x".repeat(41)}), vec![("name", "snapshot_name")]),
        (json!({"name": "current"}), vec![("name", "reserved")]),
        (json!({"name": "pvd-mine"}), vec![("name", "reserved")]),
        (json!({"description": "no name"}), vec![("name", "required")]),
        (json!({"name": "ok-name", "description": "two\nlines"}), vec![("description", "one_line")]),
        (json!({"name": "-x", "description": "y".repeat(201)}), vec![("name", "snapshot_name"), ("description", "length")]),
        (json!({"name": 5}), vec![("name", "type")]),
    ];
    for (body, want) in cases {
        let (s, b) = app.post(&snapshots, Some(DEPLOYER), &body).await;
        assert_eq!(s, 422, "{body} → {b}");
        let got: Vec<(String, String)> = b["fields"].as_array().unwrap().iter().map(|f| (f["field"].as_str().unwrap().into(), f["rule"].as_str().unwrap().into())).collect();
        let want: Vec<(String, String)> = want.into_iter().map(|(f, r)| (f.into(), r.into())).collect();
        assert_eq!(got, want, "{body} → {b}");
    }
    assert_eq!(app.post(&snapshots, Some(READER), &json!({"name": "ok"})).await.0, 403);
    let (s, list) = app.get(&snapshots, Some(READER)).await;
    assert_eq!((s, list["items"].as_array().map(Vec::len)), (200, Some(0)), "nothing taken: {list}");
    let (s, b) = app.post(&format!("{snapshots}/current/rollback"), Some(ADMIN), &json!({})).await;
    assert_eq!((s, b["fields"][0]["field"].as_str(), b["fields"][0]["rule"].as_str()), (422, Some("name"), Some("reserved")), "{b}");

    // The same from the command line: names parsed before any request, a rollback not confirmed sends nothing.
    let out = |o: std::process::Output| (o.status.code(), String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string());
    let (code, _, err) = out(cli(app, DEPLOYER, &["snapshot", "take", "strict", "1bad"]));
    assert!(code == Some(2) && err.contains("not a snapshot name"), "{err}");
    let (code, said, err) = out(cli(app, DEPLOYER, &["snapshot", "take", "strict", "from-cli", "--description", "via the CLI"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(said.starts_with("from-cli\ttaken "), "{said}");
    let (_, listed, _) = out(cli(app, READER, &["snapshot", "list", "strict"]));
    assert!(listed.starts_with("from-cli\t") && listed.contains("\tdeployer via api\tmanual\tvia the CLI"), "{listed}");
    let (code, _, err) = out(cli(app, ADMIN, &["snapshot", "rollback", "strict", "from-cli"]));
    assert!(code == Some(2) && err.contains("--yes"), "{err}");
    assert_ne!(app.get(&format!("/api/v1/deployments/{}", sim.id), Some(READER)).await.1["status"], "deploying", "nothing rolled back");
    assert_eq!(out(cli(app, DEPLOYER, &["snapshot", "delete", "strict", "from-cli"])).0, Some(0));
    assert_eq!(app.get(&snapshots, Some(READER)).await.1["items"].as_array().map(Vec::len), Some(0));
    sim.app.stop().await;
}

/// The issue's must-show on a real guest (systemd-nspawn behind the simulator): an Express app in a container serving
/// v1 is snapshotted by hand, redeployed to v2 (serving v2), then rolled back to the snapshot: the deployment goes
/// `deploying`, then `running` once the health check passes, and the app serves v1 again — the guest's files are the
/// snapshot's again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_guest_rolled_back_to_a_snapshot_taken_before_a_redeploy_serves_the_old_version_again() {
    use crate::rig::{http_body, running_express, wait_for as wait_deployment, RunningExpress};
    use std::time::Duration;
    let Some(RunningExpress { app, rig, server: _server, express, data: _data, id, deployment: d }) = running_express("express-rewind", |_| {})
    .await
    else {
        return;
    };
    let (url, v1) = (d["url"].as_str().unwrap().to_string(), d["commit"].as_str().unwrap().to_string());
    assert_eq!(http_body(&url).await, "hello from express v1\n");
    let snapshots = format!("/api/v1/deployments/{id}/snapshots");
    let (s, made) = app.post(&snapshots, Some(DEPLOYER), &json!({"name": "before-v2"})).await;
    assert_eq!(s, 201, "{made}");
    let (_, listed) = app.get(&snapshots, Some(DEPLOYER)).await;
    assert_eq!(listed["items"][0]["commit"], v1.as_str(), "a snapshot records the commit the guest served: {listed}");

    express.edit("server.js", "const VERSION_MARKER = \"v1\";", "const VERSION_MARKER = \"v2\";");
    let v2 = express.commit("v2");
    let (s, r) = app.post(&format!("/api/v1/deployments/{id}/redeploy"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 202, "{r}");
    wait_deployment(&app, &id, "running v2", Duration::from_secs(600), |d| d["status"] == "running" && d["commit"] == v2.as_str()).await;
    assert_eq!(http_body(&url).await, "hello from express v2\n");

    let (s, accepted) = app.post(&format!("{snapshots}/before-v2/rollback"), Some(ADMIN), &json!({})).await;
    assert_eq!((s, accepted["status"].as_str()), (202, Some("deploying")), "{accepted}");
    let d = wait_deployment(&app, &id, "running after the rollback", Duration::from_secs(600), |d| d["status"] != "deploying").await;
    assert_eq!(d["status"], "running", "{d}");
    let url = d["url"].as_str().unwrap().to_string();
    assert_eq!(http_body(&url).await, "hello from express v1\n", "the snapshot's version serves again");
    assert_eq!(d["commit"], v1.as_str(), "the deployment says which commit the guest serves again: {d}");
    app.stop().await;
    rig.stop().await;
}
