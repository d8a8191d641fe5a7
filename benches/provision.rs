//! Prints the agent's own overhead per deployment: time from request to guest-ready, for 1 and for 50
//! concurrent deployments, with the simulator's task delays at zero (what remains is the agent, the
//! store, HTTP and the simulator's own CPU) and with realistic delays (does 50 at once take about as
//! long as one?). Figures, never assertions.
//!
//! Run: `cargo bench --bench provision`.
//!
//! The simulator runs on its own runtime whose threads are named `sim`, so the CPU time the agent
//! spends (every other thread of this process, the load client included) is reported apart from the
//! simulator's. Guest-ready is seen on the `/events` stream (status `installing`: the address is
//! recorded), so the measurement itself adds no polling load.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pvedeploy::app::Application;
use pvedeploy::config::{ClusterSettings, Config, ProxmoxSetting, Secret, TrustSetting};
use pvedeploy_sim::{SimConfig, SimHandle, Simulator};
use serde_json::json;

const TOKEN: &str = "bench-admin-token-0123456789";

/// CPU time (on-CPU nanoseconds from `/proc/self/task/*/schedstat`) of the simulator's threads and of all others.
fn cpu_split() -> (Duration, Duration) {
    let (mut sim, mut rest) = (0u64, 0u64);
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let ns: u64 = std::fs::read_to_string(task.path().join("schedstat")).ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(0);
        if comm.trim() == "sim" {
            sim += ns;
        } else {
            rest += ns;
        }
    }
    (Duration::from_nanos(sim), Duration::from_nanos(rest))
}

struct Rig {
    /// The simulator's own runtime (threads named `sim`).
    sim_rt: tokio::runtime::Runtime,
    sim: Option<SimHandle>,
    _sim_dir: tempfile::TempDir,
    _dir: tempfile::TempDir,
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    client: reqwest::Client,
    /// Deployment id → when its status became `installing` (or `failed`: `false`).
    ready: tokio::sync::watch::Receiver<HashMap<String, (Instant, bool)>>,
}

impl Rig {
    /// A simulator (3 nodes) with `timing`, and an agent configured for it.
    async fn start(timing: impl FnOnce(&mut pvedeploy_sim::Timing)) -> Rig {
        Self::start_with(timing, |_| {}).await
    }

    /// As `start`, the agent's cluster settings changed by `tweak` last.
    async fn start_with(timing: impl FnOnce(&mut pvedeploy_sim::Timing), tweak: impl FnOnce(&mut ClusterSettings)) -> Rig {
        let sim_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("sim").enable_all().build().unwrap();
        let sim_dir = tempfile::tempdir().unwrap();
        let mut sim_cfg = SimConfig::sandbox(sim_dir.path().to_path_buf());
        timing(&mut sim_cfg.timing);
        // VMs need node SSH for their snippets (the agent refuses VM deployments without it): the sim's nodes
        // take the agent's deploy key, written where the agent looks for it.
        let key = pvedeploy::keys::generate_ed25519("pvedeploy-agent");
        pvedeploy_sim::node_ssh::check_available().expect("the provision bench needs sshd for the simulated nodes (.ci/run installs it)");
        sim_cfg = sim_cfg.with_node_ssh(&key.public_openssh);
        sim_cfg.cluster.nodes.iter_mut().for_each(|n| n.memory_bytes = 512 << 30);
        let sim = sim_rt.spawn(Simulator::start(sim_cfg)).await.unwrap().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::fs::write(keys.join("deploy_ed25519"), key.private_openssh.expose()).unwrap();
            std::fs::set_permissions(keys.join("deploy_ed25519"), std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::write(keys.join("deploy_ed25519.pub"), format!("{}\n", key.public_openssh)).unwrap();
        }
        let mut config = Config::for_data_dir(dir.path());
        config.admin_token = Some(Secret::new(TOKEN.into()));
        let (token_id, secret) = sim.admin_token();
        let mut cluster = ClusterSettings {
            vmid_range: 100..=999_999,
            address_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(250),
            ..ClusterSettings::new(format!("https://{}", sim.addr()), token_id, Secret::new(secret), TrustSetting::Fingerprint(sim.fingerprint_sha256()), 9000)
        };
        let (mut host_keys, mut addresses) = (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
        for node in sim.node_names() {
            let (addr, host_key) = sim.node_ssh(&node).expect("node SSH runs");
            addresses.insert(node.clone(), addr.ip().to_string());
            host_keys.insert(node, host_key);
        }
        cluster.node_ssh = Some(pvedeploy::config::NodeSshSettings { user: "root".into(), port: 22, host_keys, addresses });
        tweak(&mut cluster);
        config.proxmox = ProxmoxSetting::Cluster(cluster);
        let app = Application::build(config).await.unwrap();
        let base = format!("http://{}/api/v1", app.addr());
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        let client = reqwest::Client::new();
        let (tx, ready) = tokio::sync::watch::channel(HashMap::new());
        let events = client.get(format!("{base}/events")).bearer_auth(TOKEN).send().await.unwrap();
        tokio::spawn(async move {
            let mut body = events.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let event: String = buf.drain(..end + 2).collect();
                    let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else { continue };
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else { continue };
                    let (Some(id), Some(status)) = (v["deployment"].as_str(), v["status"].as_str()) else { continue };
                    if matches!(status, "installing" | "failed") {
                        let at = Instant::now();
                        tx.send_modify(|m| {
                            m.entry(id.to_string()).or_insert((at, status == "installing"));
                        });
                    }
                }
            }
        });
        Rig { sim_rt, sim: Some(sim), _sim_dir: sim_dir, _dir: dir, base, stop: Some(stop), server: Some(server), client, ready }
    }

    /// The agent's count of database queries sent so far (`pvedeploy_store_queries_total`).
    async fn store_queries(&self) -> u64 {
        let text = self.client.get(format!("{}/metrics", self.base)).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
        text.lines().find_map(|l| l.strip_prefix("pvedeploy_store_queries_total ")).and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// Deploys `names` at once, all of `kind` (`vm` or `lxc`) or alternating when `None`, and waits
    /// until each is guest-ready (or failed).
    async fn run(&self, names: &[String], kind: Option<&str>) -> Round {
        let start = Instant::now();
        let posts = names.iter().enumerate().map(|(i, name)| {
            let kind = kind.unwrap_or(if i % 2 == 0 { "vm" } else { "lxc" });
            let body = json!({"name": name, "repo_url": "https://github.com/o/r", "framework": "flask", "type": kind});
            let req = self.client.post(format!("{}/deployments", self.base)).bearer_auth(TOKEN).json(&body).send();
            async move {
                let t = Instant::now();
                let d: serde_json::Value = req.await.unwrap().json().await.unwrap();
                (d["id"].as_str().unwrap().to_string(), t)
            }
        });
        let started: Vec<(String, Instant)> = futures_util::future::join_all(posts).await;
        let mut ready = self.ready.clone();
        let seen = ready.wait_for(|m| started.iter().all(|(id, _)| m.contains_key(id))).await.unwrap().clone();
        let wall = start.elapsed();
        let mut times: Vec<Duration> = started.iter().map(|(id, t)| seen[id].0 - *t).collect();
        times.sort();
        let failures = started.iter().filter(|(id, _)| !seen[id].1).count();
        let last = started.iter().max_by_key(|(id, _)| seen[id].0).map(|(id, _)| id.clone()).unwrap_or_default();
        Round { times, failures, wall, last }
    }

    /// The deployment's log, each line with the milliseconds since the line before: where the time goes.
    async fn print_step_gaps(&self, name: &str) {
        let page: serde_json::Value =
            self.client.get(format!("{}/deployments/{name}/logs", self.base)).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
        let mut last: Option<time::OffsetDateTime> = None;
        for l in page["lines"].as_array().into_iter().flatten() {
            let ts = time::OffsetDateTime::parse(l["ts"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
            let gap = last.map(|p| (ts - p).as_seconds_f64() * 1000.0).unwrap_or(0.0);
            last = Some(ts);
            println!("    +{gap:6.1} ms  {}", l["text"].as_str().unwrap_or(""));
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.server.take().unwrap().await.unwrap().unwrap();
        let sim = self.sim.take().unwrap();
        self.sim_rt.spawn(sim.shutdown()).await.unwrap();
        let Rig { sim_rt, .. } = self;
        sim_rt.shutdown_background();
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-{i}")).collect()
}

/// How one round of deployments went.
struct Round {
    /// Each deployment's time from request to guest-ready, sorted.
    times: Vec<Duration>,
    failures: usize,
    /// Until the last one was ready.
    wall: Duration,
    /// The id of the one ready last.
    last: String,
}

fn summary(what: &str, Round { times, failures, wall, .. }: &Round) {
    let mean = times.iter().sum::<Duration>().as_secs_f64() / times.len() as f64;
    println!(
        "{what}: all guest-ready in {:.0} ms; per deployment mean {:.0} ms, max {:.0} ms; failures {failures}",
        wall.as_secs_f64() * 1000.0,
        mean * 1000.0,
        times.last().unwrap().as_secs_f64() * 1000.0
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        println!("== simulator task delays 0: what remains is overhead (half VMs, half containers)");
        let rig = Rig::start(|t| {
            t.clone_secs = 0.0;
            t.start_secs = 0.0;
            t.stop_secs = 0.0;
            t.agent_delay_secs = 0.0;
            t.task_secs = 0.0;
            t.worker_start_secs = 0.0;
        })
        .await;
        summary("first deployment after start (cold connections and caches)", &rig.run(&names("cold", 1), None).await);
        for round in 1..=3 {
            summary(&format!("1 deployment (warm, round {round})"), &rig.run(&names(&format!("one{round}"), 1), None).await);
        }
        println!("  where the time of the last one went (log lines; ms since the line before):");
        rig.print_step_gaps("one3-1").await;
        let ((sim0, agent0), q0) = (cpu_split(), rig.store_queries().await);
        let fifty = rig.run(&names("fifty", 50), None).await;
        let ((sim1, agent1), q1) = (cpu_split(), rig.store_queries().await);
        summary("50 concurrent", &fifty);
        println!(
            "  amortised: {:.1} ms of wall time per deployment (the 50 share 2 cores, so each one's own latency includes the others' work)",
            fifty.wall.as_secs_f64() * 1000.0 / 50.0
        );
        println!(
            "  CPU per deployment during the 50: agent {:.1} ms, simulator {:.1} ms (2 cores)",
            (agent1 - agent0).as_secs_f64() * 1000.0 / 50.0,
            (sim1 - sim0).as_secs_f64() * 1000.0 / 50.0
        );
        println!("  database queries per deployment during the 50 (each may hold several statements): {:.1}", (q1 - q0) as f64 / 50.0);
        rig.stop().await;

        println!("== realistic delays: clone 1.0 s, start 0.3 s, guest agent 1.0 s after start, other tasks 0.1 s");
        let rig = Rig::start(|t| {
            t.clone_secs = 1.0;
            t.start_secs = 0.3;
            t.agent_delay_secs = 1.0;
            t.task_secs = 0.1;
        })
        .await;
        let _ = rig.run(&names("warm", 2), None).await;
        let vm = rig.run(&names("single-vm", 1), Some("vm")).await;
        summary("1 VM", &vm);
        let ct = rig.run(&names("single-ct", 1), Some("lxc")).await;
        summary("1 container", &ct);
        println!("  where the time of the single VM went:");
        rig.print_step_gaps("single-vm-1").await;
        let many = rig.run(&names("many", 50), None).await;
        summary("50 concurrent (half VMs, half containers)", &many);
        println!("  where the time of the one ready last went:");
        rig.print_step_gaps(&many.last).await;
        let slowest = vm.wall.max(ct.wall);
        println!("  the 50 took {:.2}× the slowest single one ({:.0} ms)", many.wall.as_secs_f64() / slowest.as_secs_f64(), slowest.as_secs_f64() * 1000.0);
        rig.stop().await;

        println!("== 20 VMs booting on one node: the guest agent answers 3 s after start, 'not running' costs PVE's ping timeout (0.3 s)");
        let rig = Rig::start_with(
            |t| {
                t.clone_secs = 1.0;
                t.start_secs = 0.3;
                t.agent_delay_secs = 3.0;
                t.task_secs = 0.1;
            },
            |c| c.nodes = vec![pvedeploy::core::names::NodeName::parse("pve1").unwrap()],
        )
        .await;
        let sim = rig.sim.as_ref().unwrap();
        const AGENT: &str = "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces";
        let (calls0, agent0) = (sim.calls(), sim.calls_to("GET", AGENT));
        // Agent calls counted every 100 ms while the 20 boot: the most in any one second.
        let mut seen = vec![(Instant::now(), agent0)];
        let boot = names("boot", 20);
        let twenty = {
            let run = rig.run(&boot, Some("vm"));
            tokio::pin!(run);
            loop {
                tokio::select! {
                    r = &mut run => break r,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => seen.push((Instant::now(), sim.calls_to("GET", AGENT))),
                }
            }
        };
        let peak = seen
            .iter()
            .map(|(t, n)| seen.iter().rev().find(|(u, _)| u.duration_since(*t) <= Duration::from_secs(1)).map_or(0, |(_, m)| m - n))
            .max()
            .unwrap_or(0);
        summary("20 VMs on pve1", &twenty);
        let (calls, agent) = (sim.calls() - calls0, sim.calls_to("GET", AGENT) - agent0);
        println!("  Proxmox API calls per deployment: {:.1} (of which guest-agent interface polls {:.1})", calls as f64 / 20.0, agent as f64 / 20.0);
        println!("  peak guest-agent calls in one second against pve1: {peak} (20 guests booting; target ≤ 1 poll/s per guest, ≤ 20)");
        rig.stop().await;
    });
}
