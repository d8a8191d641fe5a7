//! Backups through the API against the simulator's vzdump. Hostile cases first: a vzdump task that fails or hangs
//! (stopped at the backup deadline) fails the request and the schedule's run, saying why; a backup made in Proxmox
//! VE directly and a backup taken by hand are never pruned by a schedule's retention; a restore is refused unless the
//! guest is provably the deployment's. Then: a daily backup schedule with `keep-daily=2` over four simulated days
//! leaves two; backups by hand are listed and deleted; bad input is a 422 naming the field and changes nothing; the same
//! on a Proxmox Backup Server storage (its names in paths, hostile ones refused); restores into new deployments of a
//! container, a VM and real guests from both storage kinds.

use std::sync::Arc;

use pvedeploy::config::BackupSettings;
use pvedeploy::core::backup::Retention;
use pvedeploy::engine::schedules::ManualClock;
use serde_json::{json, Value};

use crate::helpers::{ADMIN, DEPLOYER, READER};
use crate::schedules::{cli, ms, on_sim, on_sim_with, wait_for, OnSim};

async fn guest(name: &str, retention: Retention) -> (Arc<ManualClock>, OnSim, String) {
    guest_with(name, BackupSettings { retention, ..BackupSettings::to("local") }).await
}

async fn guest_with(name: &str, settings: BackupSettings) -> (Arc<ManualClock>, OnSim, String) {
    let clock = Arc::new(ManualClock::new(ms("2030-01-01T00:10:00Z")));
    let sim = on_sim_with(&clock, name, |c| c.backups = Some(settings)).await;
    let path = format!("/api/v1/deployments/{}/backups", sim.id);
    (clock, sim, path)
}

/// Someone backs the guest up in Proxmox VE directly, at `at` (node time, seconds).
async fn operator_backup(sim: &OnSim, at: u64) -> String {
    let (_, node, vmid) = &sim.guest;
    sim.cluster.sim.set_clock(at);
    let req = pvedeploy::pve::VzdumpRequest { vmid: *vmid, storage: "local", compress: "0", notes: "by the operator" };
    let upid = sim.client.vzdump(node, &req).await.unwrap().unwrap();
    sim.client.wait_task(&upid, std::time::Duration::from_millis(50), std::time::Duration::from_secs(30)).await.unwrap();
    let stamp = time::OffsetDateTime::from_unix_timestamp(at as i64).unwrap().format(&time::macros::format_description!("[year]_[month]_[day]-[hour]_[minute]_[second]")).unwrap();
    format!("vzdump-lxc-{vmid}-{stamp}.tar")
}

/// Every backup of the guest on the storage, as Proxmox VE lists it (pvedeploy's and anyone else's).
async fn on_storage(sim: &OnSim) -> Vec<String> {
    let (_, node, vmid) = &sim.guest;
    let mut all: Vec<String> = sim.client.backup_volumes(node, "local", Some(*vmid)).await.unwrap().into_iter().map(|b| b.volid.trim_start_matches("local:backup/").to_string()).collect();
    all.sort();
    all
}

/// A vzdump task that fails: the request is a 502 with Proxmox VE's own reason, the task's log is in the
/// deployment's log, no backup is listed; a backup schedule's run is recorded as failed with the same reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_vzdump_fails_the_request_and_the_schedule_run_saying_why() {
    let (clock, sim, backups) = guest("failing", Retention::default()).await;
    let app = &sim.app;
    sim.cluster.sim.faults().fail_task("vzdump", "job errors");
    let (s, b) = app.post(&backups, Some(DEPLOYER), &json!({})).await;
    assert_eq!(s, 502, "{b}");
    assert!(b.to_string().contains("the backup failed"), "{b}");
    let (_, list) = app.get(&backups, Some(READER)).await;
    assert!(names(&list).is_empty(), "{list}");
    let (s, sched) = app.post("/api/v1/schedules", Some(DEPLOYER), &json!({"cron": "0 3 * * *", "action": "backup", "target": "failing"})).await;
    assert_eq!(s, 201, "{sched}");
    let at = ms("2030-01-01T03:00:00Z");
    sim.cluster.sim.set_clock((at / 1000) as u64);
    clock.set(at);
    let runs = format!("/api/v1/schedules/{}/runs", sched["id"].as_str().unwrap());
    let r = wait_for(app, &runs, "the backup run", |r| r["total"] == 1 && r["items"][0]["outcome"] != "running").await;
    assert_eq!(r["items"][0]["outcome"], "failed", "{r}");
    assert!(r["items"][0].to_string().contains("job errors"), "{r}");
    assert!(on_storage(&sim).await.is_empty());
    sim.app.stop().await;
}

/// A vzdump task that never ends: waited for with backoff up to the backup deadline (2 s here), then stopped
/// (`DELETE …/tasks/{upid}`), and the request is a 502 saying so; the task no longer runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_vzdump_is_stopped_at_the_backup_deadline() {
    let settings = BackupSettings { timeout: std::time::Duration::from_secs(2), ..BackupSettings::to("local") };
    let (_clock, sim, backups) = guest_with("hanging", settings).await;
    let app = &sim.app;
    sim.cluster.sim.faults().hang_task("vzdump");
    let (s, b) = app.post(&backups, Some(DEPLOYER), &json!({})).await;
    assert_eq!(s, 502, "{b}");
    let text = b.to_string();
    assert!(text.contains("still running after 2s") && text.contains("stopped it"), "{b}");
    let upid = text.split("task ").nth(1).and_then(|t| t.split(' ').next()).unwrap();
    let status = sim.client.task_status(&pvedeploy::pve::Upid::parse(upid).unwrap()).await.unwrap();
    assert!(!status.running, "the hung vzdump was stopped: {status:?}");
    sim.app.stop().await;
}

/// A restore is refused before anything changes unless the guest is provably the deployment's: with its mark gone
/// from the guest (someone else's guest now), 409 and the guest is not stopped; a restore while the deployment is
/// busy is a 409 too; only an admin may restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_is_refused_unless_the_guest_is_provably_ours() {
    let (_clock, sim, backups) = guest("guarded", Retention::default()).await;
    let (app, id) = (&sim.app, sim.id.as_str());
    let (_, node, vmid) = &sim.guest;
    // No real guest here: stopped behind the agent's back, its install fails (and the deployment with it) at once.
    let upid = sim.client.lxc_power(node, *vmid, pvedeploy::pve::PowerAction::Stop).await.unwrap();
    sim.client.wait_task(&upid, std::time::Duration::from_millis(50), std::time::Duration::from_secs(30)).await.unwrap();
    crate::provision::wait_until(app, id, "failed", |d| d["status"] == "failed").await;
    let (s, made) = app.post(&backups, Some(DEPLOYER), &json!({})).await;
    assert_eq!(s, 201, "{made}");
    let restore = format!("{backups}/{}/restore", made["name"].as_str().unwrap());
    assert_eq!(app.post(&restore, Some(DEPLOYER), &json!({})).await.0, 403, "restore needs admin");
    let (s, b) = app.post(&format!("{backups}/vzdump-lxc-{vmid}-2020_01_01-00_00_00.tar.zst/restore"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 404, "not one of its backups: {b}");
    // The guest loses pvedeploy's mark (tags and description) in Proxmox VE.
    let before = sim.client.lxc_config(node, *vmid).await.unwrap().rootfs;
    let update = pvedeploy::pve::LxcUpdate { delete: vec!["tags".into(), "description".into()], ..Default::default() };
    sim.client.lxc_update_config(node, *vmid, &update).await.unwrap();
    let (s, b) = app.post(&restore, Some(ADMIN), &json!({})).await;
    assert_eq!(s, 409, "{b}");
    let (_, d) = app.get(&format!("/api/v1/deployments/{id}"), Some(READER)).await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(sim.client.lxc_config(node, *vmid).await.unwrap().rootfs, before, "the guest's disk was not replaced");
    let (_, audit) = app.get("/api/v1/audit", Some(ADMIN)).await;
    assert!(!audit.to_string().contains("backup_restore"), "{audit}");
    sim.app.stop().await;
}

/// Every guest in the cluster whose config names deployment `id` in its tags or description.
async fn guests_marked_for(sim: &OnSim, id: &str) -> Vec<u32> {
    let all = sim.client.cluster_resources(None).await.unwrap();
    let mut out: Vec<u32> = all
        .iter()
        .filter_map(|r| r.vmid.map(|v| v.get()))
        .filter(|v| sim.cluster.sim.vm_config(*v).is_some_and(|c| c.get("tags").is_some_and(|t| t.contains(id)) || c.get("description").is_some_and(|t| t.contains(id))))
        .collect();
    out.sort();
    out
}

/// Takes a backup of the guest by hand and destroys the deployment (its backups outlive it); the backup's name.
async fn backed_up_and_destroyed(sim: &OnSim, backups: &str) -> String {
    let (app, id) = (&sim.app, sim.id.as_str());
    let (s, made) = app.post(backups, Some(DEPLOYER), &json!({})).await;
    assert_eq!(s, 201, "{made}");
    assert_eq!(app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await.0, 202);
    crate::provision::wait_until(app, id, "destroyed", |d| d["status"] == "destroyed").await;
    made["name"].as_str().unwrap().to_string()
}

/// A restore into a new deployment whose Proxmox VE restore task fails: the new deployment ends `failed` with
/// Proxmox VE's reason, no guest carrying its mark is left (PVE removes a half-restored new guest; the agent
/// gives back its VMID), the old deployment stays `destroyed` with its backup still listed. Bad requests first: a
/// deployer may not, a wrong or taken name is a 422 naming `as_new.name`, an unknown field is refused, and none of
/// them records anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_into_a_new_deployment_whose_restore_task_fails_leaves_nothing_behind() {
    let (_clock, sim, backups) = guest("phoenix", Retention::default()).await;
    let (app, id) = (&sim.app, sim.id.as_str());
    let name = backed_up_and_destroyed(&sim, &backups).await;
    let restore = format!("{backups}/{name}/restore");
    assert_eq!(app.post(&restore, Some(DEPLOYER), &json!({"as_new": {"name": "phoenix-two"}})).await.0, 403, "admin only");
    for (body, field) in [
        (json!({"as_new": {"name": "Not A Name"}}), "as_new.name"),
        (json!({"as_new": {}}), "as_new.name"),
        (json!({"as_new": "phoenix-two"}), "as_new"),
        (json!({"as_new": {"name": "phoenix-two", "vmid": 5}}), "as_new.vmid"),
        (json!({"target": "elsewhere"}), "target"),
    ] {
        let (s, b) = app.post(&restore, Some(ADMIN), &body).await;
        assert_eq!((s, b["fields"][0]["field"].as_str()), (422, Some(field)), "{body} → {b}");
    }
    // A live deployment holds the name.
    crate::provision::deploy(app, "phoenix-taken", "lxc").await;
    let (s, b) = app.post(&restore, Some(ADMIN), &json!({"as_new": {"name": "phoenix-taken"}})).await;
    assert_eq!((s, b["fields"][0]["field"].as_str(), b["fields"][0]["rule"].as_str()), (422, Some("as_new.name"), Some("unique")), "{b}");
    let (_, audit) = app.get("/api/v1/audit", Some(ADMIN)).await;
    assert!(!audit.to_string().contains("backup_restore_new"), "nothing recorded: {audit}");

    sim.cluster.sim.faults().fail_task("vzrestore", "unable to restore CT - unexpected end of archive");
    let (s, d) = app.post(&restore, Some(ADMIN), &json!({"as_new": {"name": "phoenix-two"}})).await;
    assert_eq!((s, d["status"].as_str(), d["name"].as_str()), (202, Some("pending"), Some("phoenix-two")), "{d}");
    let new_id = d["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, id);
    let d = crate::provision::wait_until(app, &new_id, "failed", |d| d["status"] == "failed").await;
    assert!(d["error_message"].as_str().unwrap().contains("unexpected end of archive"), "{d}");
    assert!(d["proxmox_id"].is_null(), "{d}");
    assert!(guests_marked_for(&sim, &new_id).await.is_empty(), "no guest of the failed restore is left");
    let (_, old) = app.get(&format!("/api/v1/deployments/{id}"), Some(READER)).await;
    assert_eq!(old["status"], "destroyed", "{old}");
    let (_, list) = app.get(&backups, Some(READER)).await;
    assert_eq!(names(&list), [name.clone()], "{list}");
    sim.app.stop().await;
}

/// A destroyed deployment's backup restored into a new deployment, with a guest in the way: the operator restored
/// the same backup by hand at the VMID the deployment had (so that guest carries the old deployment's mark, not the
/// new one's). The new deployment is listed by the destroyed one's id, gets another VMID on the node holding the
/// backup, is ours from birth (its own tag and description, written by the restore call), has a new MAC, pins the
/// backed-up container's host key, and the operator's guest is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_deployments_backup_restores_into_a_new_deployment_that_is_ours_from_birth() {
    let (_clock, sim, backups) = guest("ashes", Retention::default()).await;
    let (app, id) = (&sim.app, sim.id.as_str());
    let (_, node, vmid) = sim.guest.clone();
    let name = backed_up_and_destroyed(&sim, &backups).await;
    let volid = format!("local:backup/{name}");
    // The operator restores the backup by hand at the old VMID.
    let upid = sim.client.restore_over(pvedeploy::pve::GuestType::Lxc, &node, vmid, &volid, Some("local")).await.unwrap();
    sim.client.wait_task(&upid, std::time::Duration::from_millis(50), std::time::Duration::from_secs(30)).await.unwrap();
    let operators = sim.cluster.sim.vm_config(vmid.get()).unwrap();
    assert!(operators.get("description").is_some_and(|t| t.contains(id)), "{operators:?}");

    let (s, d) = app.post(&format!("{backups}/{name}/restore"), Some(ADMIN), &json!({"as_new": {"name": "ashes-reborn"}})).await;
    assert_eq!(s, 202, "{d}");
    let new_id = d["id"].as_str().unwrap().to_string();
    // Provisioned: handed over to the deploy (which cannot reach an API-only guest here).
    let d = crate::provision::wait_until(app, &new_id, "provisioned", |d| d["events"].as_array().is_some_and(|e| e.iter().any(|e| e["to"] == "installing"))).await;
    let new_vmid = d["proxmox_id"].as_u64().unwrap() as u32;
    assert_ne!(new_vmid, vmid.get(), "the guest in the way was not taken: {d}");
    assert_eq!(d["proxmox_node"], node.as_str(), "{d}");
    assert_eq!((d["framework"].clone(), d["type"].clone()), (json!("flask"), json!("lxc")), "same spec: {d}");
    let config = sim.cluster.sim.vm_config(new_vmid).unwrap();
    assert!(config.get("tags").is_some_and(|t| t.split(';').any(|t| t == format!("pvedeploy-{new_id}"))), "{config:?}");
    assert!(config.get("description").is_some_and(|t| t.contains(&new_id) && !t.contains(id)), "{config:?}");
    assert_eq!(config.get("hostname").map(String::as_str), Some("ashes-reborn"));
    let mac = |c: &std::collections::BTreeMap<String, String>| c.get("net0").and_then(|n| n.split(',').find_map(|p| p.strip_prefix("hwaddr=").map(str::to_string)));
    assert_ne!(mac(&config), mac(&operators), "a new MAC");
    assert_eq!(sim.cluster.sim.vm_config(vmid.get()), Some(operators), "the operator's guest is untouched");
    let (_, logs) = app.get(&format!("/api/v1/deployments/{new_id}/logs?limit=500"), Some(ADMIN)).await;
    let text = logs.to_string();
    assert!(text.contains(&format!("restoring backup {volid} as {new_vmid} on {node}")), "{logs}");
    assert!(text.contains(&format!("pinned by deployment {id}")), "{logs}");
    // The destroyed deployment's backups are still listed by its id, and say so in its log.
    let (s, list) = app.get(&backups, Some(READER)).await;
    assert_eq!((s, names(&list)), (200, vec![name.clone()]), "{list}");
    let (_, old_logs) = app.get(&format!("/api/v1/deployments/{id}/logs?limit=500"), Some(ADMIN)).await;
    assert!(old_logs.to_string().contains(&format!("into new deployment {new_id}")), "{old_logs}");
    let (_, audit) = app.get("/api/v1/audit", Some(ADMIN)).await;
    assert!(audit.to_string().contains("backup_restore_new"), "{audit}");
    sim.app.stop().await;
}

fn names(list: &Value) -> Vec<String> {
    list["items"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap().to_string()).collect()
}

/// A backup schedule at 03:00 every day with `keep_daily = 2`: each of four days' runs succeeds, and Proxmox VE's
/// retention leaves the last two days' backups; the vzdump task's log is in the deployment's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_backup_schedule_keeping_2_leaves_2_backups_after_4_simulated_days() {
    let (clock, sim, backups) = guest("keeper", Retention { daily: 2, ..Retention::default() }).await;
    let app = &sim.app;
    let vmid = sim.guest.2.get();
    // Before the schedule: the operator backs the guest up in Proxmox VE directly, and a deployer takes one by hand.
    let foreign = operator_backup(&sim, 1_893_456_000).await;
    sim.cluster.sim.set_clock(1_893_459_600);
    let (s, manual) = app.post(&backups, Some(DEPLOYER), &json!({})).await;
    assert_eq!((s, manual["taken_by"].as_str()), (201, Some("manual")), "{manual}");
    let manual = manual["name"].as_str().unwrap().to_string();
    let (s, sched) = app.post("/api/v1/schedules", Some(DEPLOYER), &json!({"cron": "0 3 * * *", "action": "backup", "target": "keeper"})).await;
    assert_eq!(s, 201, "{sched}");
    let runs = format!("/api/v1/schedules/{}/runs", sched["id"].as_str().unwrap());
    for day in 1..=4i64 {
        let at = ms("2030-01-01T03:00:00Z") + (day - 1) * 86_400_000;
        // The nodes' clock and the agent's move together: vzdump names the backup by the node's time.
        sim.cluster.sim.set_clock((at / 1000) as u64);
        clock.set(at);
        let r = wait_for(app, &runs, "the backup run", |r| r["total"] == day && r["items"][0]["outcome"] != "running").await;
        assert_eq!(r["items"][0]["outcome"], "succeeded", "day {day}: {r}");
    }
    let (s, list) = app.get(&backups, Some(READER)).await;
    assert_eq!(s, 200, "{list}");
    let scheduled = [format!("vzdump-lxc-{vmid}-2030_01_03-03_00_00.tar.zst"), format!("vzdump-lxc-{vmid}-2030_01_04-03_00_00.tar.zst")];
    assert_eq!(names(&list), [manual.clone(), scheduled[0].clone(), scheduled[1].clone()], "{list}");
    assert_eq!(list["items"][1]["taken_at"], "2030-01-03T03:00:00Z", "{list}");
    assert!(list["items"][1]["taken_by"].as_str().unwrap().starts_with("schedule:"), "{list}");
    // The operator's backup and the one taken by hand are still on the storage: the retention counted neither.
    assert_eq!(on_storage(&sim).await, [foreign, manual, scheduled[0].clone(), scheduled[1].clone()]);
    let (_, logs) = app.get(&format!("/api/v1/deployments/{}/logs?limit=1000", sim.id), Some(READER)).await;
    let text = logs.to_string();
    assert!(text.contains("retention keep-daily=2 over this schedule's 3 backup(s): 1 to delete") && text.contains(&format!("retention deleted local:backup/vzdump-lxc-{vmid}-2030_01_02-03_00_00.tar.zst")), "{logs}");
    assert!(text.contains("INFO: Finished Backup of VM"), "the vzdump task's log is copied: {logs}");
    sim.app.stop().await;
}

/// By hand: take (201), list, delete (204, then 404); a backup of the guest made in Proxmox VE directly (no pvedeploy
/// mark in its notes) is not listed and not deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_by_hand_are_listed_and_deleted_and_foreign_ones_left_alone() {
    let (_clock, sim, backups) = guest("byhand", Retention::default()).await;
    let app = &sim.app;
    let (_, node, vmid) = &sim.guest;
    // Someone backs the guest up in Proxmox VE directly.
    let foreign = operator_backup(&sim, 1_893_456_000).await;
    sim.cluster.sim.set_clock(1_893_459_600);
    let (s, made) = app.post(&backups, Some(DEPLOYER), &json!({})).await;
    assert_eq!(s, 201, "{made}");
    let name = made["name"].as_str().unwrap().to_string();
    assert!(name.ends_with(".tar.zst") && made["volid"] == format!("local:backup/{name}").as_str(), "{made}");
    let (_, list) = app.get(&backups, Some(READER)).await;
    assert_eq!(names(&list), [name.clone()], "only pvedeploy's own: {list}");
    assert_eq!(app.delete(&format!("{backups}/{foreign}"), Some(DEPLOYER)).await.0, 404, "not the deployment's");
    assert_eq!(app.delete(&format!("{backups}/{name}"), Some(DEPLOYER)).await.0, 204);
    assert_eq!(app.delete(&format!("{backups}/{name}"), Some(DEPLOYER)).await.0, 404);
    let left = sim.client.backup_volumes(node, "local", Some(*vmid)).await.unwrap();
    assert_eq!(left.iter().map(|b| b.volid.as_str()).collect::<Vec<_>>(), [format!("local:backup/{foreign}")], "the operator's backup stays");
    let (_, audit) = app.get("/api/v1/audit", Some(ADMIN)).await;
    assert!(audit.to_string().contains("backup_take") && audit.to_string().contains("backup_delete"), "{audit}");
    sim.app.stop().await;
}

/// Backups outlive their deployment: after a destroy they are still listed (a restore is refused: no guest); a destroy
/// with `purge_backups=true` (admin) deletes the deployment's own backups and leaves the operator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_outlive_their_deployment_unless_purged() {
    let (_clock, sim, backups) = guest("mortal", Retention::default()).await;
    let (app, id) = (&sim.app, sim.id.as_str());
    let foreign = operator_backup(&sim, 1_893_456_000).await;
    sim.cluster.sim.set_clock(1_893_459_600);
    let (s, made) = app.post(&backups, Some(DEPLOYER), &json!({})).await;
    assert_eq!(s, 201, "{made}");
    let name = made["name"].as_str().unwrap().to_string();
    assert_eq!(app.delete(&format!("/api/v1/deployments/{id}?purge_backups=true"), Some(DEPLOYER)).await.0, 403, "purging needs admin");
    assert_eq!(app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await.0, 202);
    crate::provision::wait_until(app, id, "destroyed", |d| d["status"] == "destroyed").await;
    let (s, list) = app.get(&backups, Some(READER)).await;
    assert_eq!((s, names(&list)), (200, vec![name.clone()]), "{list}");
    let (s, b) = app.post(&format!("{backups}/{name}/restore"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 409, "no guest to restore over: {b}");
    assert_eq!(on_storage(&sim).await, [foreign.clone(), name.clone()]);
    // Destroying again with purge_backups: the deployment's own backup goes, the operator's stays.
    assert_eq!(app.delete(&format!("/api/v1/deployments/{id}?purge_backups=true"), Some(ADMIN)).await.0, 202);
    let (_, list) = app.get(&backups, Some(READER)).await;
    assert!(names(&list).is_empty(), "{list}");
    assert_eq!(on_storage(&sim).await, [foreign]);
    let (_, audit) = app.get("/api/v1/audit", Some(ADMIN)).await;
    assert!(audit.to_string().contains("backup_purge"), "{audit}");
    sim.app.stop().await;
}

/// Bad input: a 422 naming `name` and its rule, a reader may not take one, and nothing is made or deleted; without
/// `[proxmox.backups]` the endpoints answer 409 saying what to configure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_backup_requests_are_refused_naming_the_field_and_change_nothing() {
    let (_clock, sim, backups) = guest("strict", Retention::default()).await;
    let app = &sim.app;
    for bad in ["not-a-backup", "vzdump-lxc-100-2030_01_01-00_00_00.tar.exe", "vzdump-lxc-100-2030_13_01.tar", "local%3Abackup%2Fvzdump-lxc-100-2030_01_01-00_00_00.tar"] {
        let (s, b) = app.delete(&format!("{backups}/{bad}"), Some(DEPLOYER)).await;
        assert_eq!((s, b["fields"][0]["field"].as_str(), b["fields"][0]["rule"].as_str()), (422, Some("name"), Some("backup_name")), "{bad} → {b}");
    }
    assert_eq!(app.post(&backups, Some(READER), &json!({})).await.0, 403);
    assert_eq!(app.get("/api/v1/deployments/no-such-app/backups", Some(READER)).await.0, 404);
    let (_, list) = app.get(&backups, Some(READER)).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "nothing made: {list}");
    let (_, node, vmid) = &sim.guest;
    assert!(sim.client.backup_volumes(node, "local", Some(*vmid)).await.unwrap().is_empty());

    // The same from the command line: names checked before any request, a restore not confirmed sends nothing.
    let out = |o: std::process::Output| (o.status.code(), String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string());
    let (code, _, err) = out(cli(app, DEPLOYER, &["backup", "delete", "strict", "not-a-backup"]));
    assert!(code == Some(2) && err.contains("is not a backup"), "{err}");
    let (code, said, err) = out(cli(app, DEPLOYER, &["backup", "take", "strict"]));
    assert_eq!(code, Some(0), "{err}");
    let name = said.split('\t').next().unwrap().to_string();
    assert!(name.starts_with(&format!("vzdump-lxc-{vmid}-")) && said.contains("\tmade "), "{said}");
    let (_, listed, _) = out(cli(app, READER, &["backup", "list", "strict"]));
    assert!(listed.starts_with(&format!("{name}\t")) && listed.trim_end().ends_with("\tmanual\t-"), "{listed}");
    let (code, _, err) = out(cli(app, ADMIN, &["backup", "restore", "strict", &name]));
    assert!(code == Some(2) && err.contains("--yes"), "{err}");
    assert_ne!(app.get(&format!("/api/v1/deployments/{}", sim.id), Some(READER)).await.1["status"], "deploying", "nothing restored");
    assert_eq!(out(cli(app, DEPLOYER, &["backup", "delete", "strict", &name])).0, Some(0));
    assert_eq!(app.get(&backups, Some(READER)).await.1["items"].as_array().map(Vec::len), Some(0));
    sim.app.stop().await;

    let clock = Arc::new(ManualClock::new(ms("2030-01-01T00:10:00Z")));
    let off = on_sim(&clock, "unconfigured").await;
    let (s, b) = off.app.post(&format!("/api/v1/deployments/{}/backups", off.id), Some(DEPLOYER), &json!({})).await;
    assert_eq!(s, 409, "{b}");
    assert!(b.to_string().contains("[proxmox.backups]"), "{b}");
    off.app.stop().await;
}

/// On a real guest (systemd-nspawn behind the simulator): an Express app in a container serving v1 is backed up,
/// redeployed to v2 (serving v2), then restored in place from the backup: the deployment goes `deploying`, then
/// `running` once the health check passes, and the app serves v1 again — the guest's files came back from the
/// archive, with its host key (the agent reaches it over SSH again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_guest_restored_in_place_from_its_backup_serves_the_backed_up_version_again() {
    use crate::rig::{http_body, running_express, wait_for as wait_deployment, RunningExpress};
    use std::time::Duration;
    let Some(RunningExpress { app, rig, server: _server, express, data: _data, id, deployment: d }) = running_express("express-restore", |c| {
        if let pvedeploy::config::ProxmoxSetting::Cluster(cs) = &mut c.proxmox {
            cs.backups = Some(BackupSettings::to("local"));
        }
    })
    .await
    else {
        return;
    };
    let (url, v1) = (d["url"].as_str().unwrap().to_string(), d["commit"].as_str().unwrap().to_string());
    assert_eq!(http_body(&url).await, "hello from express v1\n");
    let backups = format!("/api/v1/deployments/{id}/backups");
    let (s, made) = app.post(&backups, Some(DEPLOYER), &json!({})).await;
    assert_eq!(s, 201, "{made}");
    let name = made["name"].as_str().unwrap().to_string();
    assert!(made["size_bytes"].as_u64().unwrap() > 0, "{made}");

    express.edit("server.js", "const VERSION_MARKER = \"v1\";", "const VERSION_MARKER = \"v2\";");
    let v2 = express.commit("v2");
    let (s, r) = app.post(&format!("/api/v1/deployments/{id}/redeploy"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 202, "{r}");
    wait_deployment(&app, &id, "running v2", Duration::from_secs(600), |d| d["status"] == "running" && d["commit"] == v2.as_str()).await;
    assert_eq!(http_body(&url).await, "hello from express v2\n");

    let (s, accepted) = app.post(&format!("{backups}/{name}/restore"), Some(ADMIN), &json!({})).await;
    assert_eq!((s, accepted["status"].as_str()), (202, Some("deploying")), "{accepted}");
    let d = wait_deployment(&app, &id, "running after the restore", Duration::from_secs(600), |d| d["status"] != "deploying").await;
    assert_eq!(d["status"], "running", "{d}");
    assert_eq!(http_body(&url).await, "hello from express v1\n", "the backed-up version serves again");
    assert_eq!(d["commit"], v1.as_str(), "the deployment says which commit the guest serves again: {d}");
    let (_, logs) = app.get(&format!("/api/v1/deployments/{id}/logs?limit=1000"), Some(ADMIN)).await;
    assert!(logs.to_string().contains(&format!("guest {} restored from local:backup/{name}", d["proxmox_id"])), "{logs}");
    let (_, audit) = app.get("/api/v1/audit", Some(ADMIN)).await;
    assert!(audit.to_string().contains("backup_restore"), "{audit}");
    app.stop().await;
    rig.stop().await;
}

/// The must-show: on a real guest (systemd-nspawn behind the simulator), an Express app in a container
/// serving v1 is backed up; the branch moves on to v2; the deployment is destroyed; its backup, listed by the
/// destroyed deployment's id, is restored into a new deployment from the command line (`backup restore … --as`).
/// The new deployment gets a VMID claimed afresh and its own address, its guest is reached over SSH with the backed-up
/// container's host key, the commit the backup served (v1, not the branch's head) is deployed and health-checked,
/// and the app serves v1 at the new deployment's URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_destroyed_real_guest_deployments_backup_restored_into_a_new_deployment_serves_the_app() {
    real_guest_restored_as_new("local", "express-gone").await;
}

/// The same from a Proxmox Backup Server storage the operator added: the guest's files come back from the PBS
/// snapshot (named `ct-<vmid>-<UTC time>` in the command line).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_destroyed_real_guest_deployments_pbs_backup_restored_into_a_new_deployment_serves_the_app() {
    real_guest_restored_as_new("pbs", "express-pbs").await;
}

async fn real_guest_restored_as_new(storage: &str, app_name: &str) {
    use crate::rig::{http_body, running_express, wait_for as wait_deployment, RunningExpress};
    use std::time::Duration;
    let Some(RunningExpress { app, rig, server: _server, express, data: _data, id, deployment: d }) = running_express(app_name, |c| {
        if let pvedeploy::config::ProxmoxSetting::Cluster(cs) = &mut c.proxmox {
            cs.backups = Some(BackupSettings::to(storage));
        }
    })
    .await
    else {
        return;
    };
    if storage == "pbs" {
        crate::check::Operator::new(rig.sim()).post("/storage", &[("storage", "pbs"), ("type", "pbs"), ("server", "pbs.example.com"), ("datastore", "store1"), ("username", "backup@pbs"), ("password", "secret")]).await;
    }
    let (v1, old_url) = (d["commit"].as_str().unwrap().to_string(), d["url"].as_str().unwrap().to_string());
    assert_eq!(http_body(&old_url).await, "hello from express v1\n");
    let backups = format!("/api/v1/deployments/{id}/backups");
    let (s, made) = app.post(&backups, Some(DEPLOYER), &json!({})).await;
    assert_eq!(s, 201, "{made}");
    let name = made["name"].as_str().unwrap().to_string();
    let volid = made["volid"].as_str().unwrap().to_string();
    assert!(volid.starts_with(&format!("{storage}:backup/")), "{made}");

    express.edit("server.js", "const VERSION_MARKER = \"v1\";", "const VERSION_MARKER = \"v2\";");
    express.commit("v2");
    assert_eq!(app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await.0, 202);
    wait_deployment(&app, &id, "destroyed", Duration::from_secs(300), |d| d["status"] == "destroyed").await;
    let (s, list) = app.get(&backups, Some(READER)).await;
    assert_eq!((s, names(&list)), (200, vec![name.clone()]), "listed by the destroyed deployment's id: {list}");

    let reborn = format!("{app_name}-reborn");
    let out = cli(&app, ADMIN, &["backup", "restore", &id, &name, "--as", &reborn]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{said} {}", String::from_utf8_lossy(&out.stderr));
    let new_id = said.split('\t').next().unwrap().to_string();
    let d = wait_deployment(&app, &new_id, "running", Duration::from_secs(900), |d| d["status"] == "running" || d["status"] == "failed").await;
    assert_eq!(d["status"], "running", "{d}");
    assert_eq!(d["name"], reborn.as_str(), "{d}");
    assert_eq!(d["commit"].as_str(), Some(v1.as_str()), "the commit the backup served, not the branch's head: {d}");
    // A VMID claimed afresh from the agent's range: the destroyed guest's id was given back, so it may be the same.
    assert!(d["proxmox_id"].is_u64() && d["id"] != id.as_str(), "{d}");
    let url = d["url"].as_str().unwrap().to_string();
    assert_eq!(http_body(&url).await, "hello from express v1\n", "the restored deployment serves the app");
    let (_, logs) = app.get(&format!("/api/v1/deployments/{new_id}/logs?limit=1000"), Some(ADMIN)).await;
    assert!(logs.to_string().contains(&format!("restoring backup {volid} as {}", d["proxmox_id"])), "{logs}");
    app.stop().await;
    rig.stop().await;
}

/// A Proxmox Backup Server storage as the backup storage, added by the operator through the API (`pvesm add pbs`):
/// a backup by hand and a daily schedule's backups go there, named as PBS names them (UTC) and listed with
/// `<ct|vm>-<vmid>-<UTC time>` names and format `pbs-ct`; the schedule's retention deletes only its own; a path with
/// the name's `:` percent-encoded names the same backup; one is restored into a new deployment by that name, one is
/// deleted; a file storage's name is not one of these backups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_to_a_proxmox_backup_server_storage_are_listed_pruned_restored_and_deleted() {
    let (clock, sim, backups) = guest_with("vault", BackupSettings { retention: Retention { daily: 2, ..Retention::default() }, ..BackupSettings::to("pbs") }).await;
    let app = &sim.app;
    let vmid = sim.guest.2.get();
    crate::check::Operator::new(&sim.cluster.sim)
        .post("/storage", &[("storage", "pbs"), ("type", "pbs"), ("server", "pbs.example.com"), ("datastore", "store1"), ("username", "backup@pbs"), ("password", "secret"), ("content", "backup")])
        .await;
    sim.cluster.sim.set_clock(1_893_459_600);
    let (s, manual) = app.post(&backups, Some(DEPLOYER), &json!({})).await;
    assert_eq!(s, 201, "{manual}");
    let manual_name = format!("ct-{vmid}-2030-01-01T01:00:00Z");
    assert_eq!((manual["name"].as_str(), manual["volid"].as_str(), manual["format"].as_str()), (Some(manual_name.as_str()), Some(format!("pbs:backup/ct/{vmid}/2030-01-01T01:00:00Z").as_str()), Some("pbs-ct")), "{manual}");
    assert_eq!((manual["taken_at"].as_str(), manual["taken_by"].as_str()), (Some("2030-01-01T01:00:00Z"), Some("manual")), "{manual}");
    let (s, sched) = app.post("/api/v1/schedules", Some(DEPLOYER), &json!({"cron": "0 3 * * *", "action": "backup", "target": "vault"})).await;
    assert_eq!(s, 201, "{sched}");
    let runs = format!("/api/v1/schedules/{}/runs", sched["id"].as_str().unwrap());
    for day in 1..=3i64 {
        let at = ms("2030-01-01T03:00:00Z") + (day - 1) * 86_400_000;
        sim.cluster.sim.set_clock((at / 1000) as u64);
        clock.set(at);
        let r = wait_for(app, &runs, "the backup run", |r| r["total"] == day && r["items"][0]["outcome"] != "running").await;
        assert_eq!(r["items"][0]["outcome"], "succeeded", "day {day}: {r}");
    }
    let (_, list) = app.get(&backups, Some(READER)).await;
    let kept = [format!("ct-{vmid}-2030-01-02T03:00:00Z"), format!("ct-{vmid}-2030-01-03T03:00:00Z")];
    assert_eq!(names(&list), [manual_name.clone(), kept[0].clone(), kept[1].clone()], "the retention kept 2 of the schedule's 3 and the manual one: {list}");
    let (_, logs) = app.get(&format!("/api/v1/deployments/{}/logs?limit=1000", sim.id), Some(READER)).await;
    assert!(logs.to_string().contains(&format!("retention deleted pbs:backup/ct/{vmid}/2030-01-01T03:00:00Z")), "{logs}");
    // Hostile names: a file storage's name, a path-like one, an impossible time; none is found or acts.
    for bad in ["vzdump-lxc-100-2030_01_01-03_00_00.tar.zst", "ct-100-2030-02-30T03:00:00Z", "ct-100-..", "ct-100-2030-01-01T03%3A00%3A00"] {
        let (s, b) = app.delete(&format!("{backups}/{bad}"), Some(DEPLOYER)).await;
        assert!(s == 422 || s == 404, "{bad}: {s} {b}");
    }
    let (s, b) = app.delete(&format!("{backups}/ct%2F{vmid}%2F2030-01-02T03:00:00Z"), Some(DEPLOYER)).await;
    assert!(s == 422 || s == 404, "a `/` in the name never names a backup: {s} {b}");
    // The `:` percent-encoded is the same name: deleting the manual one.
    assert_eq!(app.delete(&format!("{backups}/{}", manual_name.replace(':', "%3A")), Some(DEPLOYER)).await.0, 204);
    // Restored into a new deployment by its PBS name.
    let (s, d) = app.post(&format!("{backups}/{}/restore", kept[1]), Some(ADMIN), &json!({"as_new": {"name": "vault-copy"}})).await;
    assert_eq!(s, 202, "{d}");
    let new_id = d["id"].as_str().unwrap().to_string();
    let d = crate::provision::wait_until(app, &new_id, "provisioned", |d| d["events"].as_array().is_some_and(|e| e.iter().any(|e| e["to"] == "installing"))).await;
    let new_vmid = d["proxmox_id"].as_u64().unwrap() as u32;
    let config = sim.cluster.sim.vm_config(new_vmid).unwrap();
    assert!(config.get("tags").is_some_and(|t| t.split(';').any(|t| t == format!("pvedeploy-{new_id}"))), "{config:?}");
    assert_eq!(config.get("hostname").map(String::as_str), Some("vault-copy"));
    let (_, logs) = app.get(&format!("/api/v1/deployments/{new_id}/logs?limit=500"), Some(ADMIN)).await;
    assert!(logs.to_string().contains(&format!("restoring backup pbs:backup/ct/{vmid}/2030-01-03T03:00:00Z as {new_vmid}")), "{logs}");
    let (_, list) = app.get(&backups, Some(READER)).await;
    assert_eq!(names(&list), kept, "{list}");
    // The command line names them the same way.
    let out = cli(app, READER, &["backup", "list", "vault"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(&kept[0]), "{text} {}", String::from_utf8_lossy(&out.stderr));
    sim.app.stop().await;
}

/// A destroyed VM deployment's backup restored into a new deployment: Proxmox VE restores it as a new VM (`archive`
/// with `unique=1`: a new MAC) at another VMID from the agent's range, named and marked as the new deployment by the
/// restore call, and provisioning goes on to the deploy as for any new VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_vm_deployments_backup_restores_into_a_new_vm_deployment() {
    let (_clock, sim, _) = guest("vm-host", Retention::default()).await;
    let app = &sim.app;
    let id = crate::provision::deploy(app, "vmsafe", "vm").await;
    let d = crate::provision::wait_until(app, &id, "a guest", |d| d["proxmox_id"].is_u64() && d["status"] != "provisioning").await;
    let old_vmid = d["proxmox_id"].as_u64().unwrap() as u32;
    let old_mac = sim.cluster.sim.vm_config(old_vmid).unwrap().get("net0").cloned().unwrap_or_default();
    let backups = format!("/api/v1/deployments/{id}/backups");
    sim.cluster.sim.set_clock(1_893_459_600);
    let (s, made) = app.post(&backups, Some(DEPLOYER), &json!({})).await;
    assert_eq!(s, 201, "{made}");
    let name = made["name"].as_str().unwrap().to_string();
    assert!(name.starts_with(&format!("vzdump-qemu-{old_vmid}-")) && made["format"].as_str().is_some_and(|f| f.starts_with("vma")), "{made}");
    assert_eq!(app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await.0, 202);
    crate::provision::wait_until(app, &id, "destroyed", |d| d["status"] == "destroyed").await;
    let (s, d) = app.post(&format!("{backups}/{name}/restore"), Some(ADMIN), &json!({"as_new": {"name": "vmsafe-again"}})).await;
    assert_eq!(s, 202, "{d}");
    let new_id = d["id"].as_str().unwrap().to_string();
    let d = crate::provision::wait_until(app, &new_id, "provisioned", |d| d["events"].as_array().is_some_and(|e| e.iter().any(|e| e["to"] == "installing"))).await;
    assert_eq!(d["type"], "vm", "{d}");
    let new_vmid = d["proxmox_id"].as_u64().unwrap() as u32;
    let config = sim.cluster.sim.vm_config(new_vmid).unwrap();
    assert_eq!(config.get("name").map(String::as_str), Some("vmsafe-again"), "{config:?}");
    assert!(config.get("tags").is_some_and(|t| t.split(';').any(|t| t == format!("pvedeploy-{new_id}"))), "{config:?}");
    assert!(config.get("description").is_some_and(|t| t.contains(&new_id) && !t.contains(&id)), "{config:?}");
    let mac = |net: &str| net.split(',').next().and_then(|m| m.split_once('=')).map(|(_, mac)| mac.to_string());
    assert_ne!(config.get("net0").and_then(|n| mac(n)), mac(&old_mac), "unique: a new MAC");
    let (_, logs) = app.get(&format!("/api/v1/deployments/{new_id}/logs?limit=500"), Some(ADMIN)).await;
    assert!(logs.to_string().contains(&format!("restoring backup local:backup/{name} as {new_vmid}")), "{logs}");
    sim.app.stop().await;
}
