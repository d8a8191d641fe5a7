//! Prints the service core's figures: POST and GET throughput and latency with 10,000 stored deployments,
//! time from process start to `/ready`, idle RSS and binary size. Figures, never assertions.
//!
//! Run: `cargo bench --bench api` (release profile). Load comes from this process over loopback,
//! so the agent and the load generator share the machine's cores. GETs are measured two ways: closed
//! loop (a fixed number of clients, each sending its next request when the last one answers: the most
//! the agent can serve, with the queueing that saturation brings) and open loop at a fixed offered
//! rate (the latency a client sees while the agent serves that rate).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const TOKEN: &str = "bench-admin-token-0123456789";
const SEED: usize = 10_000;

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `pvedeploy serve` on `port` over `data_dir` and waits for `/ready`; the agent and the time it took.
async fn start_agent(client: &reqwest::Client, port: u16, data_dir: &std::path::Path) -> (Agent, Duration) {
    let t0 = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_pvedeploy"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .env("PVEDEPLOY_ADMIN_TOKEN", TOKEN)
        .env("PVEDEPLOY_PROXMOX_MODE", "none")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start pvedeploy");
    let agent = Agent(child);
    loop {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/api/v1/ready")).bearer_auth(TOKEN).send().await {
            if r.status() == 200 {
                return (agent, t0.elapsed());
            }
        }
        if t0.elapsed() > Duration::from_secs(30) {
            panic!("not ready after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

async fn load<F, Fut>(total: usize, concurrency: usize, f: F) -> (Duration, Vec<Duration>, usize)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..concurrency {
        let f = f.clone();
        let next = next.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                if !f(i).await {
                    errors += 1;
                }
                lat.push(t.elapsed());
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::with_capacity(total);
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let wall = start.elapsed();
    all.sort();
    (wall, all, errors)
}

/// Load at a fixed offered rate over `connections` connections (as wrk2 does): request `i` is due at
/// `i / rate` s whatever happened to the earlier ones and waits for a free connection if need be; its
/// latency counts from that due time, so a stall shows as queueing instead of slowing the load down
/// (no coordinated omission). Returns wall time, sorted latencies, errors.
async fn paced<F, Fut>(rate: u32, total: usize, connections: usize, f: F) -> (Duration, Vec<Duration>, usize)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(connections));
    let mut running = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut i = 0;
    while i < total {
        tick.tick().await;
        let now = start.elapsed();
        while i < total {
            let due = Duration::from_secs_f64(i as f64 / f64::from(rate));
            if due > now {
                break;
            }
            let f = f.clone();
            let due_at = start + due;
            let slots = slots.clone();
            running.spawn(async move {
                let _slot = slots.acquire_owned().await.expect("never closed");
                let ok = f(i).await;
                (due_at.elapsed(), ok)
            });
            i += 1;
        }
    }
    let mut all = Vec::with_capacity(total);
    let mut errors = 0;
    while let Some(r) = running.join_next().await {
        let (lat, ok) = r.unwrap();
        all.push(lat);
        errors += usize::from(!ok);
    }
    let wall = start.elapsed();
    all.sort();
    (wall, all, errors)
}

fn report(what: &str, wall: Duration, lat: &[Duration], errors: usize) {
    println!(
        "{what}: {} requests in {:.2} s = {:.0} req/s; p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; errors {errors}",
        lat.len(),
        wall.as_secs_f64(),
        lat.len() as f64 / wall.as_secs_f64(),
        pct(lat, 50.0),
        pct(lat, 99.0),
        pct(lat, 100.0)
    );
}

/// The same GET load from `wrk` (a C load generator that costs the agent far less CPU than an
/// in-process client), when it is installed: requests/s and latency percentiles.
fn wrk_get(base: &str, ids: &[String], dir: &std::path::Path) -> Option<String> {
    let wrk = ["/usr/bin/wrk", "/usr/local/bin/wrk"].into_iter().find(|p| std::path::Path::new(p).exists())?;
    let list: Vec<String> = ids.iter().map(|i| format!("\"{i}\"")).collect();
    let script = format!(
        "ids = {{{}}}\ni = 0\nrequest = function()\n  i = i + 1\n  return wrk.format(\"GET\", \"/api/v1/deployments/\" .. ids[(i % #ids) + 1], {{[\"Authorization\"] = \"Bearer {TOKEN}\"}})\nend\n",
        list.join(",")
    );
    let path = dir.join("get.lua");
    std::fs::write(&path, script).ok()?;
    let out = Command::new(wrk).args(["-t1", "-c16", "-d10s", "--latency", "-s"]).arg(&path).arg(base).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let pick = |key: &str| text.lines().find(|l| l.trim_start().starts_with(key)).map(|l| l.trim().to_string()).unwrap_or_default();
    Some(format!("{}; latency {}; {}; {}; non-2xx: {}", pick("Requests/sec:"), pick("50%"), pick("90%"), pick("99%"), pick("Non-2xx").trim_start_matches("Non-2xx or 3xx responses:").trim()))
}

#[tokio::main]
async fn main() {
    let exe = env!("CARGO_BIN_EXE_pvedeploy");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();

    let (agent, took) = start_agent(&client, port, dir.path()).await;
    let pid = agent.0.id();
    println!("start to /ready: {:.0} ms (fresh data dir)", took.as_secs_f64() * 1000.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("idle RSS after start: {:.1} MB", rss_kib(pid) as f64 / 1024.0);

    let c = client.clone();
    let b = base.clone();
    let (wall, lat, errors) = load(SEED, 32, move |i| {
        let c = c.clone();
        let b = b.clone();
        async move {
            let body = json!({"name": format!("app-{i}"), "repo_url": "https://github.com/octo/app", "framework": "flask"});
            c.post(format!("{b}/deployments")).bearer_auth(TOKEN).json(&body).send().await.map(|r| r.status() == 202).unwrap_or(false)
        }
    })
    .await;
    report("POST /deployments (seeding 10,000, concurrency 32)", wall, &lat, errors);

    let ids: Vec<String> = {
        let mut ids = Vec::new();
        let mut offset = 0;
        loop {
            let page: serde_json::Value =
                client.get(format!("{base}/deployments?limit=100&offset={offset}")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
            let items = page["items"].as_array().unwrap();
            ids.extend(items.iter().map(|d| d["id"].as_str().unwrap().to_string()));
            match page["next_offset"].as_u64() {
                Some(n) => offset = n,
                None => break,
            }
        }
        ids
    };
    println!("stored deployments: {}", ids.len());
    let ids = std::sync::Arc::new(ids);
    {
        // Every deployment read once: each read goes to the database (and fills the agent's read cache).
        let c = client.clone();
        let b = base.clone();
        let ids = ids.clone();
        let (wall, lat, errors) = load(ids.len(), 16, move |i| {
            let c = c.clone();
            let url = format!("{b}/deployments/{}", ids[i]);
            async move { c.get(url).bearer_auth(TOKEN).send().await.map(|r| r.status() == 200).unwrap_or(false) }
        })
        .await;
        report("GET /deployments/{id}, first read of each of the 10,000 (concurrency 16)", wall, &lat, errors);
    }
    for concurrency in [16, 64] {
        let c = client.clone();
        let b = base.clone();
        let ids = ids.clone();
        let (wall, lat, errors) = load(40_000, concurrency, move |i| {
            let c = c.clone();
            let url = format!("{b}/deployments/{}", ids[(i * 7919) % ids.len()]);
            async move { c.get(url).bearer_auth(TOKEN).send().await.map(|r| r.status() == 200).unwrap_or(false) }
        })
        .await;
        report(&format!("GET /deployments/{{id}} (10,000 stored, read before, concurrency {concurrency})"), wall, &lat, errors);
    }
    {
        let rate = 5_000u32;
        let c = client.clone();
        let b = base.clone();
        let ids = ids.clone();
        let (wall, lat, errors) = paced(rate, rate as usize * 10, 16, move |i| {
            let c = c.clone();
            let url = format!("{b}/deployments/{}", ids[(i * 7919) % ids.len()]);
            async move { c.get(url).bearer_auth(TOKEN).send().await.map(|r| r.status() == 200).unwrap_or(false) }
        })
        .await;
        report(&format!("GET /deployments/{{id}} (10,000 stored, read before) offered at {rate} req/s over 16 connections for 10 s, latency from each request's due time"), wall, &lat, errors);
    }
    if let Some(out) = wrk_get(&base, &ids, dir.path()) {
        println!("GET /deployments/{{id}} (10,000 stored) with wrk, 1 thread, 16 connections, 10 s: {out}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("idle RSS after load: {:.1} MB", rss_kib(pid) as f64 / 1024.0);
    drop(agent);

    // Restarts on the same data dir with 10,000 stored deployments: first after the SIGKILL above (the
    // write-ahead log is replayed), then after a clean stop (SIGTERM: everything flushed on the way out).
    for how in ["after SIGKILL, write-ahead log replayed", "after a clean stop (SIGTERM)"] {
        let (mut agent, took) = start_agent(&client, port, dir.path()).await;
        println!("start to /ready: {:.0} ms (10,000 stored deployments, {how})", took.as_secs_f64() * 1000.0);
        // SAFETY: signals our own child, still running (it is reaped only below).
        unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
        let _ = agent.0.wait();
    }
    let size = std::fs::metadata(exe).map(|m| m.len()).unwrap_or(0);
    println!("binary size ({exe}): {:.1} MB", size as f64 / 1e6);
}
