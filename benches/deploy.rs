//! Prints how long deploying the Flask sample takes, step by step: provision (request → guest with an
//! address), then the release's steps, for a first deploy; then push → new version serving (a signed
//! GitHub push until the app's address answers with the new body) for pushes with unchanged and with
//! changed requirements, beside what the framework's own install (a fresh venv and `pip install`, the
//! same pip cache, on the same guest) takes in the same run. Real guests (systemd-nspawn), real apt/pip.
//! Figures only.
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
    let (s, d) = app.post("/api/v1/deployments", Some(ADMIN), &json!({"name": "bench-flask", "repo_url": flask.url, "framework": "flask", "type": "lxc"})).await;
    assert_eq!(s, 202, "{d}");
    let id = d["id"].as_str().unwrap().to_string();
    let d = rig::wait_for(&app, &id, "running", Duration::from_secs(900), |d| d["status"] == "running" || d["status"] == "failed").await;
    let total = t.elapsed();
    assert_eq!(d["status"], "running", "{d}");
    let provision = match (event_at(&d, "pending"), event_at(&d, "installing")) {
        (Some(a), Some(b)) => (b - a).as_seconds_f64(),
        _ => f64::NAN,
    };
    println!("Flask sample in a container (simulator with real guests; first deploy includes apt and pip downloads)");
    println!("provision  {provision:>6.1}s   request → guest up with its address");
    let (_, rs) = app.get(&format!("/api/v1/deployments/{id}/releases"), Some(ADMIN)).await;
    print_release("deploy", &rs[0]);
    println!("total      {:>6.1}s   request → app answering", total.as_secs_f64());

    let url = d["url"].as_str().unwrap().to_string();
    let ip = d["ip_address"].as_str().unwrap().to_string();
    let mut head = d["commit"].as_str().unwrap().to_string();
    let mut version = 1;
    let mut rows: Vec<(&str, f64, String)> = vec![];
    for changed in [false, false, false, true, true] {
        version += 1;
        flask.edit("app.py", &format!("VERSION_MARKER = \"v{}\"", version - 1), &format!("VERSION_MARKER = \"v{version}\""));
        if changed {
            // A new line in requirements.txt: a new digest, so a fresh venv and pip install.
            let req = flask.work.join("requirements.txt");
            let text = std::fs::read_to_string(&req).unwrap();
            std::fs::write(&req, format!("{text}# v{version}\n")).unwrap();
        }
        let c = flask.commit(&format!("v{version}"));
        let want = format!("hello from flask v{version}\n");
        let t = Instant::now();
        let guid = format!("5e0c7a10-0000-4000-8000-{version:012}");
        assert_eq!(rig::push(&app, &flask, &head, &c, &guid).await, 202);
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).no_proxy().build().unwrap();
        loop {
            if let Ok(r) = client.get(&url).send().await {
                if r.text().await.is_ok_and(|b| b == want) {
                    break;
                }
            }
            assert!(t.elapsed() < Duration::from_secs(600), "v{version} never served");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let serving = t.elapsed().as_secs_f64();
        rig::wait_for(&app, &id, "settled", Duration::from_secs(60), |x| x["status"] == "running" && x["commit"] == c.as_str()).await;
        let (_, rs) = app.get(&format!("/api/v1/deployments/{id}/releases"), Some(ADMIN)).await;
        let steps: Vec<String> = rs[0]["timings"].as_array().unwrap().iter().map(|t| format!("{} {:.2}s", t["step"].as_str().unwrap(), t["ms"].as_f64().unwrap() / 1000.0)).collect();
        rows.push((if changed { "changed" } else { "unchanged" }, serving, steps.join(", ")));
        head = c;
    }
    // The framework's own install on the same guest and disk, as the app user, with the same pip cache: a fresh venv
    // and `pip install -r requirements.txt gunicorn` (what a changed push has to do).
    let own = own_install_ms(&data.path().join("keys/deploy_ed25519"), &ip, "bench-flask");
    println!();
    println!("push → new version serving (signed GitHub push until {url} answers the new body)");
    println!("{:<10} {:>8}   release steps", "deps", "serving");
    for (kind, secs, steps) in &rows {
        println!("{kind:<10} {secs:>7.2}s   {steps}");
    }
    let median = |k: &str| {
        let mut v: Vec<f64> = rows.iter().filter(|r| r.0 == k).map(|r| r.1).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    println!("median: unchanged {:.2}s (target ≤ 5 s), changed {:.2}s", median("unchanged"), median("changed"));
    match own {
        Some(ms) => println!("framework's own install on the same guest (python3 -m venv + pip install, warm pip cache): {:.2}s", ms as f64 / 1000.0),
        None => println!("framework's own install: could not be measured (ssh to the guest failed)"),
    }

    let (s, _) = app.delete(&format!("/api/v1/deployments/{id}"), Some(ADMIN)).await;
    assert_eq!(s, 202);
    rig::wait_for(&app, &id, "destroyed", Duration::from_secs(120), |x| x["status"] == "destroyed").await;
    app.stop().await;
    rig.stop().await;
    drop(server);
}

/// Milliseconds a fresh venv plus `pip install -r requirements.txt gunicorn` takes on the guest, as the
/// app user with its pip cache (the bench's own command over real OpenSSH with the agent's key).
fn own_install_ms(key: &std::path::Path, ip: &str, app: &str) -> Option<u64> {
    let script = format!(
        "set -e; cur=$(readlink -f /srv/{app}/current); rm -rf /srv/{app}/shared/home/own-venv; s=$(date +%s%N); \
         runuser -u app-{app} -- env PIP_CACHE_DIR=/srv/{app}/shared/cache/pip HOME=/srv/{app}/shared/home \
         sh -c \"python3 -m venv /srv/{app}/shared/home/own-venv && /srv/{app}/shared/home/own-venv/bin/pip install -q --disable-pip-version-check -r $cur/requirements.txt gunicorn\"; \
         e=$(date +%s%N); rm -rf /srv/{app}/shared/home/own-venv; echo $(( (e - s) / 1000000 ))"
    );
    let out = std::process::Command::new("ssh")
        .args(["-i"]).arg(key)
        .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes"])
        .arg(format!("root@{ip}"))
        .arg(script)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().lines().last()?.parse().ok()
}
