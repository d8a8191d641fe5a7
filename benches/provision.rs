//! Prints the agent's own overhead per deployment: time from request to guest-ready, with the
//! simulator's task delays set to zero (so what remains is the agent, the store and HTTP), for 1 and
//! for 50 concurrent deployments. Figures, never assertions.
//!
//! Run: `cargo bench --bench provision`.

use std::time::{Duration, Instant};

use pvedeploy::app::Application;
use pvedeploy::config::{ClusterSettings, Config, ProxmoxSetting, Secret, TrustSetting};
use pvedeploy_sim::{SimConfig, Simulator};
use serde_json::json;

const TOKEN: &str = "bench-admin-token-0123456789";

#[tokio::main]
async fn main() {
    let sim_dir = tempfile::tempdir().unwrap();
    let mut sim_cfg = SimConfig::sandbox(sim_dir.path().to_path_buf());
    sim_cfg.timing.clone_secs = 0.0;
    sim_cfg.timing.start_secs = 0.0;
    sim_cfg.timing.stop_secs = 0.0;
    sim_cfg.timing.agent_delay_secs = 0.0;
    sim_cfg.timing.task_secs = 0.0;
    sim_cfg.timing.worker_start_secs = 0.0;
    sim_cfg.cluster.nodes.iter_mut().for_each(|n| n.memory_bytes = 512 << 30);
    let sim = Simulator::start(sim_cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_data_dir(dir.path());
    config.admin_token = Some(Secret::new(TOKEN.into()));
    let (token_id, secret) = sim.admin_token();
    config.proxmox = ProxmoxSetting::Cluster(ClusterSettings {
        vmid_range: 100..=999_999,
        address_timeout: Duration::from_secs(60),
        poll_interval: Duration::from_millis(20),
        ..ClusterSettings::new(format!("https://{}", sim.addr()), token_id, Secret::new(secret), TrustSetting::Fingerprint(sim.fingerprint_sha256()), 9000)
    });
    let app = Application::build(config).await.unwrap();
    let base = format!("http://{}/api/v1", app.addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    let mut n = 0;
    for concurrency in [1usize, 50] {
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..concurrency {
            n += 1;
            let (client, base) = (client.clone(), base.clone());
            let name = format!("bench-{n}");
            handles.push(tokio::spawn(async move {
                let t = Instant::now();
                let body = json!({"name": name, "repo_url": "https://github.com/o/r", "framework": "flask", "type": if n % 2 == 0 { "lxc" } else { "vm" }});
                let d: serde_json::Value = client.post(format!("{base}/deployments")).bearer_auth(TOKEN).json(&body).send().await.unwrap().json().await.unwrap();
                let id = d["id"].as_str().unwrap().to_string();
                loop {
                    let d: serde_json::Value = client.get(format!("{base}/deployments/{id}")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
                    // Guest-ready = provisioning recorded the guest's address (the deploy that follows is not
                    // measured here: these API-only guests have no SSH, and VMs here have no node SFTP).
                    if d["ip_address"].is_string() {
                        return (t.elapsed(), true);
                    }
                    if d["status"] == "failed" {
                        return (t.elapsed(), false);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        let mut times = Vec::new();
        let mut failures = 0;
        for h in handles {
            let (t, ok) = h.await.unwrap();
            times.push(t);
            if !ok {
                failures += 1;
            }
        }
        times.sort();
        let mean = times.iter().sum::<Duration>().as_secs_f64() / times.len() as f64;
        println!(
            "{concurrency} concurrent: all guest-ready in {:.0} ms; per deployment mean {:.0} ms, max {:.0} ms (simulator task delays 0; agent poll interval 20 ms); failures {failures}",
            start.elapsed().as_secs_f64() * 1000.0,
            mean * 1000.0,
            times.last().unwrap().as_secs_f64() * 1000.0
        );
    }
    let _ = tx.send(());
    server.await.unwrap().unwrap();
    sim.shutdown().await;
}
