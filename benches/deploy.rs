//! Prints how long deploying the Flask sample takes, step by step: provision (request → guest with an
//! address), then the release's boot, install, fetch, dependencies, build, start and health, for a first
//! deploy and for a redeploy of a new commit. Real guests (systemd-nspawn), real apt/pip. Figures only.
//!
//! Run (as root, like the end-to-end tests; the agent's own CPU time is negligible here, so the debug
//! profile is fine): `cargo bench --profile dev --bench deploy`.

#[path = "../tests/it/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../tests/it/rig.rs"]
#[allow(dead_code)]
mod rig;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use helpers::ADMIN;

fn event_at(d: &Value, to: &str) -> Option<time::OffsetDateTime> {
    let e = d["events"].as_array()?.iter().find(|e| e["to"] == to)?;
    time::OffsetDateTime::parse(e["at"].as_str()?, &time::format_description::well_known::Rfc3339).ok()
}

fn print_release(label: &str, r: &Value) {
    let steps: Vec<String> = r["timings"].as_array().unwrap().iter().map(|t| format!("{} {:.1}s", t["step"].as_str().unwrap(), t["ms"].as_f64().unwrap() / 1000.0)).collect();
    let total: f64 = r["timings"].as_array().unwrap().iter().map(|t| t["ms"].as_f64().unwrap()).sum::<f64>() / 1000.0;
    println!("{label:<10} {total:>6.1}s   {}", steps.join(", "));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let data = tempfile::tempdir().unwrap();
    let key = pvedeploy::keys::load_or_create_deploy_key(&data.path().join("keys")).unwrap();
    let Some(rig) = rig::start_real_sim(&key.public_openssh).await else {
        println!("deploy bench skipped: real guests are not available on this machine");
        return;
    };
    let server = rig::GitServer::start().await;
    let flask = server.repo("bench/flask", "flask");
    let app = rig::agent(rig.sim(), data.path(), &server.host).await;

    let t = Instant::now();
    let (s, d) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "bench-flask", "repo_url": flask.url, "framework": "flask", "type": "vm"})).await;
    assert_eq!(s, 202, "{d}");
    let id = d["id"].as_str().unwrap().to_string();
    let d = rig::wait_for(&app, &id, "running", Duration::from_secs(900), |d| d["status"] == "running" || d["status"] == "failed").await;
    let total = t.elapsed();
    assert_eq!(d["status"], "running", "{d}");
    let provision = match (event_at(&d, "pending"), event_at(&d, "installing")) {
        (Some(a), Some(b)) => (b - a).as_seconds_f64(),
        _ => f64::NAN,
    };
    println!("Flask sample on a VM (simulator with real guests; first deploy includes apt and pip downloads)");
    println!("provision  {provision:>6.1}s   request → guest up with its address");
    let (_, rs) = app.get(&format!("/api/v1/deployments/{id}/releases"), Some(ADMIN)).await;
    print_release("deploy", &rs[0]);
    println!("total      {:>6.1}s   request → app answering", total.as_secs_f64());

    flask.edit("app.py", "VERSION_MARKER = \"v1\"", "VERSION_MARKER = \"v2\"");
    flask.commit("v2");
    let t = Instant::now();
    let (s, _) = app.post(&format!("/api/v1/deployments/{id}/redeploy"), Some(ADMIN), &json!({})).await;
    assert_eq!(s, 202);
    let first_commit = d["commit"].clone();
    rig::wait_for(&app, &id, "redeployed", Duration::from_secs(600), |x| x["status"] == "running" && x["commit"] != first_commit).await;
    let (_, rs) = app.get(&format!("/api/v1/deployments/{id}/releases"), Some(ADMIN)).await;
    print_release("redeploy", &rs[0]);
    println!("total      {:>6.1}s   request → new commit answering", t.elapsed().as_secs_f64());

    let (s, _) = app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
    assert_eq!(s, 202);
    rig::wait_for(&app, &id, "destroyed", Duration::from_secs(120), |x| x["status"] == "destroyed").await;
    app.stop().await;
    rig.stop().await;
    drop(server);
}
