//! Prints the service core's figures at 10,000 and 100,000 stored deployments: POST throughput, GET by id
//! with reads spread over every id and no warm-up (each read reaches the database), the first and the
//! last page of lists (keyset cursor), filtered and not, idle RSS after the writes, start to `/ready`
//! after `kill -9` and after a clean stop, how long a clean stop takes, and the binary size. Figures,
//! never assertions.
//!
//! Run: `cargo bench --bench api` (release profile); `PVEDEPLOY_BENCH_SIZES=10000` for one size. Load comes from this process over loopback,
//! so the agent and the load generator share the machine's cores. GETs are measured two ways: closed
//! loop (a fixed number of clients, each sending its next request when the last one answers: the most
//! the agent can serve, with the queueing that saturation brings) and open loop at a fixed offered
//! rate (the latency a client sees while the agent serves that rate). A request is measured until its whole
//! answer has arrived. `PVEDEPLOY_BENCH_SLOWEST=1` also prints each pass's slowest requests (which one, when
//! sent) and, for pages, the agent's own latency histogram of them: for finding where a tail comes from.

#[path = "shared/process.rs"]
mod process;
#[path = "shared/spread.rs"]
mod spread;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const TOKEN: &str = "bench-admin-token-0123456789";
/// Where the seeded deployments' repositories are: a closed local port.
const REPO_HOST: &str = "127.0.0.1:9";

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
    // The repositories live on a local port nothing listens on: the agent's `git ls-remote` check
    // (shared by concurrent requests, see `engine::source::Checks`) is refused at once, so the figures
    // are the agent's and not this machine's DNS resolver's.
    let config = data_dir.with_extension("toml");
    std::fs::write(&config, format!("[repos]\nallowed_hosts = [\"{REPO_HOST}\"]\nschemes = [\"http\"]\n")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pvedeploy"))
        .arg("--config")
        .arg(&config)
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

/// RSS and its parts: anonymous memory (the heap: what the agent holds) and file pages (the binary's
/// code as far as it ran, which the kernel can drop and read again).
fn rss_parts(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()).unwrap_or(0);
    format!("{:.1} MB (anonymous {:.1} MB, file {:.1} MB)", kib("VmRSS:") as f64 / 1024.0, kib("RssAnon:") as f64 / 1024.0, kib("RssFile:") as f64 / 1024.0)
}

/// Whether a measured request was answered `want` with its whole body: a request is done when the client has
/// all of its answer. (A client that drops a body before its end also makes its HTTP library close the
/// connection, so each of its next requests opens a new one; the pages' pass on a new connection for each request
/// measures a client like that.)
async fn answered(r: reqwest::Result<reqwest::Response>, want: u16) -> bool {
    match r {
        Ok(r) => r.status() == want && r.bytes().await.is_ok(),
        Err(_) => false,
    }
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
                lat.push((i, t - start, t.elapsed()));
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
    all.sort_by_key(|&(_, _, lat)| lat);
    if std::env::var_os("PVEDEPLOY_BENCH_SLOWEST").is_some() {
        // For finding where a tail comes from: the slowest requests, which one each was and when it was sent.
        let slowest: Vec<String> = all.iter().rev().take(6).map(|(i, at, lat)| format!("#{i} at {:.1} ms: {:.1} ms", at.as_secs_f64() * 1e3, lat.as_secs_f64() * 1e3)).collect();
        println!("  slowest: {}", slowest.join("; "));
    }
    let all: Vec<Duration> = all.into_iter().map(|(_, _, lat)| lat).collect();
    (wall, all, errors)
}

/// The most requests the open-loop pass has in flight, so at most this many connections: a client pool, as a
/// real load balancer or client library keeps one, well under the agent's per-address connection cap (128).
const OPEN_LOOP_CONNECTIONS: usize = 64;

/// Sends `total` requests at `rate` per second whatever the answers (open loop) over at most
/// `OPEN_LOOP_CONNECTIONS` connections, each measured from when it was due to be sent, so a slow answer cannot
/// hide the requests queued behind it (a request waiting for a free connection counts that wait).
async fn open_loop<F, Fut>(total: usize, rate: f64, f: F) -> (Duration, Vec<Duration>, usize)
where
    F: Fn(usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let start = tokio::time::Instant::now();
    let due = |i: usize| start + Duration::from_secs_f64(i as f64 / rate);
    let pool = std::sync::Arc::new(tokio::sync::Semaphore::new(OPEN_LOOP_CONNECTIONS));
    let mut running = tokio::task::JoinSet::new();
    let mut sent = 0;
    while sent < total {
        tokio::time::sleep_until(due(sent)).await;
        let now = tokio::time::Instant::now();
        while sent < total && due(sent) <= now {
            let at = due(sent);
            let pool = pool.clone();
            let request = f(sent);
            running.spawn(async move {
                let _connection = pool.acquire_owned().await.expect("the pool is never closed");
                (request.await, at.elapsed())
            });
            sent += 1;
        }
    }
    let (mut lat, mut errors) = (Vec::with_capacity(total), 0);
    while let Some(done) = running.join_next().await {
        let (ok, took) = done.unwrap();
        errors += usize::from(!ok);
        lat.push(took);
    }
    let wall = start.elapsed();
    lat.sort();
    (wall, lat, errors)
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
    let path = dir.with_extension("lua");
    std::fs::write(&path, script).ok()?;
    let out = Command::new(wrk).args(["-t1", "-c16", "-d10s", "--latency", "-s"]).arg(&path).arg(base).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let pick = |key: &str| text.lines().find(|l| l.trim_start().starts_with(key)).map(|l| l.trim().to_string()).unwrap_or_default();
    Some(format!("{}; latency {}; {}; {}; non-2xx: {}", pick("Requests/sec:"), pick("50%"), pick("90%"), pick("99%"), pick("Non-2xx").trim_start_matches("Non-2xx or 3xx responses:").trim()))
}

/// The offered rate of the open-loop `GET` pass: the target's 5,000 req/s.
const GET_RATE: f64 = 5000.0;

/// Frameworks the seeded deployments cycle through; every third deployment is destroyed, so each
/// filter matches a share of the whole: framework 1/4, status `destroyed` 1/3, both 1/12 (the two
/// cycles are independent: 3 and 4 share no factor).
const FRAMEWORKS: [&str; 4] = ["flask", "node", "django", "static"];

fn sizes() -> Vec<usize> {
    std::env::var("PVEDEPLOY_BENCH_SIZES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("PVEDEPLOY_BENCH_SIZES: comma-separated counts"))
        .collect()
}

/// Walks a list by cursor to its end; returns every id (newest first), the cursor that yields the last
/// page, and the latency of each page.
async fn walk(client: &reqwest::Client, base: &str, filter: &str) -> (Vec<String>, Option<String>, Vec<Duration>) {
    let (mut ids, mut after, mut last_cursor, mut lat) = (Vec::new(), None::<String>, None, Vec::new());
    loop {
        let url = match &after {
            Some(c) => format!("{base}/deployments?limit=100{filter}&after={c}"),
            None => format!("{base}/deployments?limit=100{filter}"),
        };
        let t = Instant::now();
        let page: serde_json::Value = client.get(url).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
        lat.push(t.elapsed());
        ids.extend(page["items"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => {
                last_cursor = Some(c.to_string());
                after = last_cursor.clone();
            }
            None => break,
        }
    }
    lat.sort();
    (ids, last_cursor, lat)
}

/// The same page request `n` times, 4 at a time: its latency distribution.
async fn repeat(client: &reqwest::Client, url: String, n: usize) -> (Duration, Vec<Duration>, usize) {
    let c = client.clone();
    let metrics = url.split("/deployments").next().unwrap().to_string() + "/metrics";
    let diagnose = std::env::var_os("PVEDEPLOY_BENCH_SLOWEST").is_some();
    let before = if diagnose { agent_buckets(client, &metrics).await } else { Vec::new() };
    let out = load(n, 4, move |_| {
        let c = c.clone();
        let url = url.clone();
        async move { answered(c.get(url).bearer_auth(TOKEN).send().await, 200).await }
    })
    .await;
    if diagnose {
        // The agent's own histogram of the same requests: a tail there is the agent's, not the network's or ours.
        let after = agent_buckets(client, &metrics).await;
        let d: Vec<String> = after.iter().zip(&before).map(|((le, a), (_, b))| format!("≤{le}: {}", a - b)).collect();
        println!("  agent's own timing of list_deployments: {}", d.join(", "));
    }
    out
}

/// The agent's `list_deployments` latency histogram from `/metrics`: (bucket bound, count).
async fn agent_buckets(client: &reqwest::Client, url: &str) -> Vec<(String, u64)> {
    let text = client.get(url).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("pvedeploy_http_request_duration_seconds_bucket{operation=\"list_deployments\",le=\""))
        .filter_map(|l| {
            let (le, n) = l.split_once("\"} ")?;
            Some((le.to_string(), n.trim().parse().ok()?))
        })
        .collect()
}

async fn run_size(client: &reqwest::Client, seed: usize) {
    let temp = tempfile::tempdir().unwrap();
    // For working on the read path: `PVEDEPLOY_BENCH_SEEDED=<dir>` keeps each size's store in `<dir>/<size>`
    // and, when it is there from an earlier run, starts the agent on it instead of seeding again. The
    // figures that need the writes (POST, RSS after them) are then not measured; quote full runs only.
    let kept = std::env::var_os("PVEDEPLOY_BENCH_SEEDED").map(|d| std::path::PathBuf::from(d).join(seed.to_string()));
    let seeded = kept.as_ref().is_some_and(|d| d.join("seeded").exists());
    let data = kept.clone().unwrap_or_else(|| temp.path().join("data"));
    if !seeded && data.exists() {
        // A seeding that did not finish: start again from an empty store.
        std::fs::remove_dir_all(&data).unwrap();
    }
    std::fs::create_dir_all(&data).unwrap();
    let dir = data.as_path();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let n = format!("{seed}");
    println!("\n== {n} stored deployments ==");

    let (agent, took) = start_agent(client, port, dir).await;
    let pid = agent.0.id();
    println!("start to /ready: {:.0} ms ({})", took.as_secs_f64() * 1000.0, if seeded { "a store seeded before, PVEDEPLOY_BENCH_SEEDED" } else { "fresh data dir" });
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("idle RSS after start: {:.1} MB", process::rss_kib(pid) as f64 / 1024.0);
    if !seeded {
        seed_deployments(client, &base, seed, pid).await;
        if let Some(d) = &kept {
            std::fs::write(d.join("seeded"), "").unwrap();
        }
    }

    read_figures(client, &base, seed, pid, dir, agent, port).await;
}

/// Seeds `seed` deployments by `POST` (a `DELETE` after every third) and prints the figures of the writes.
async fn seed_deployments(client: &reqwest::Client, base: &str, seed: usize, pid: u32) {
    let n = format!("{seed}");
    let c = client.clone();
    let b = base.to_string();
    let (wall, lat, errors) = load(seed, 32, move |i| {
        let c = c.clone();
        let b = b.clone();
        async move {
            let body = json!({"name": format!("app-{i}"), "repo_url": format!("http://{REPO_HOST}/octo/app"), "framework": FRAMEWORKS[i % 4]});
            let created = answered(c.post(format!("{b}/deployments")).bearer_auth(TOKEN).json(&body).send().await, 202).await;
            if i % 3 == 2 && created {
                return answered(c.delete(format!("{b}/deployments/app-{i}")).bearer_auth(TOKEN).send().await, 202).await;
            }
            created
        }
    })
    .await;
    report(&format!("POST /deployments (seeding {n}, concurrency 32; a DELETE after every third)"), wall, &lat, errors);
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!("idle RSS 5 s after {n} writes: {}", rss_parts(pid));
    // The engine may still be compacting what the writes left 5 s later; what the agent settles at:
    tokio::time::sleep(Duration::from_secs(25)).await;
    println!("idle RSS 30 s after {n} writes: {}", rss_parts(pid));
}

/// Everything after the writes: the walk, the reads by id, the pages, the restarts.
async fn read_figures(client: &reqwest::Client, base: &str, seed: usize, pid: u32, dir: &std::path::Path, agent: Agent, port: u16) {
    let base = base.to_string();
    let n = format!("{seed}");

    let (ids, _, lat) = walk(client, &base, "").await;
    println!(
        "walk of the whole list by cursor ({} pages of 100, one at a time): p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
        lat.len(),
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        pct(&lat, 100.0)
    );
    assert_eq!(ids.len(), seed, "every deployment listed once");
    let ids = std::sync::Arc::new(spread::shuffled(&ids));
    let half = ids.len() / 2;
    {
        // Every deployment read once, in a spread-out order, nothing read before: each read reaches the
        // database. Half of them closed loop (the most the agent serves), the other half open loop at
        // the target rate (the latency a client sees while the agent serves it).
        let c = client.clone();
        let b = base.clone();
        let first = ids.clone();
        let (agent_cpu, bench_cpu) = (process::cpu_of(pid), process::cpu_of_self());
        let (wall, lat, errors) = load(half, 16, move |i| {
            let c = c.clone();
            let url = format!("{b}/deployments/{}", first[i]);
            async move { answered(c.get(url).bearer_auth(TOKEN).send().await, 200).await }
        })
        .await;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / half as f64;
        let (agent_cpu, bench_cpu) = (per(process::cpu_of(pid) - agent_cpu), per(process::cpu_of_self() - bench_cpu));
        report(&format!("GET /deployments/{{id}}, {half} of the {n} read once in a spread-out order (from the database; closed loop, concurrency 16)"), wall, &lat, errors);
        println!("  CPU per GET: agent {agent_cpu:.0} µs, load generator {bench_cpu:.0} µs (2 cores shared)");
        let (c, b, rest) = (client.clone(), base.clone(), ids.clone());
        let (wall, lat, errors) = open_loop(ids.len() - half, GET_RATE, move |i| {
            let request = c.get(format!("{b}/deployments/{}", rest[half + i])).bearer_auth(TOKEN).send();
            async move { answered(request.await, 200).await }
        })
        .await;
        report(&format!("GET /deployments/{{id}}, the other {} read once (from the database; open loop at {GET_RATE} req/s offered)", ids.len() - half), wall, &lat, errors);
    }
    let filters = [
        ("", "no filter"),
        ("&status=destroyed", "status"),
        ("&framework=node", "framework"),
        ("&status=destroyed&framework=static", "status and framework"),
        ("&name=app-99", "name prefix"),
    ];
    for (filter, what) in filters {
        let (wall, lat, errors) = repeat(client, format!("{base}/deployments?limit=100{filter}"), 400).await;
        report(&format!("first page of 100, {what}"), wall, &lat, errors);
        let (found, cursor, _) = walk(client, &base, filter).await;
        if let Some(cursor) = cursor {
            let (wall, lat, errors) = repeat(client, format!("{base}/deployments?limit=100{filter}&after={cursor}"), 400).await;
            report(&format!("last page of 100 (by cursor, {} matching), {what}", found.len()), wall, &lat, errors);
        }
    }
    {
        // A client that keeps no connection (a script's one-shot request, `curl` in a loop): a TCP connection opened
        // and closed for each page.
        let one_shot = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let (wall, lat, errors) = repeat(&one_shot, format!("{base}/deployments?limit=100"), 400).await;
        report("first page of 100, no filter, a new connection for each request", wall, &lat, errors);
    }
    {
        let offset = seed.saturating_sub(100);
        let (wall, lat, errors) = repeat(client, format!("{base}/deployments?limit=100&offset={offset}"), 40).await;
        report(&format!("last page of 100 by offset={offset} (the documented slow way)"), wall, &lat, errors);
    }
    if let Some(out) = wrk_get(&base, &ids, dir) {
        println!("GET /deployments/{{id}} with wrk, 1 thread, 16 connections, 10 s, the agent's read cache in play: {out}");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!("idle RSS after the reads: {}", rss_parts(pid));
    drop(agent); // SIGKILL

    let (mut agent, took) = start_agent(client, port, dir).await;
    println!("start to /ready after kill -9 following {n} writes: {:.0} ms", took.as_secs_f64() * 1000.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    // SAFETY: signals our own child, still running (it is reaped just below).
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    let _ = agent.0.wait();
    println!("clean stop (SIGTERM to exit, store closed): {:.0} ms", t.elapsed().as_secs_f64() * 1000.0);
    let (mut agent, took) = start_agent(client, port, dir).await;
    println!("start to /ready after a clean stop: {:.0} ms", took.as_secs_f64() * 1000.0);
    // SAFETY: as above.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    let _ = agent.0.wait();
}

#[tokio::main]
async fn main() {
    let exe = env!("CARGO_BIN_EXE_pvedeploy");
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    for seed in sizes() {
        run_size(&client, seed).await;
    }
    let size = std::fs::metadata(exe).map(|m| m.len()).unwrap_or(0);
    println!("\nbinary size ({exe}): {:.1} MB", size as f64 / 1e6);
}
