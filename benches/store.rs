//! Prints what each hot store operation costs on the embedded engine (surrealkv, every commit synced):
//! wall time per operation from one task, and CPU per operation. Figures, never assertions.
//!
//! Run: `cargo bench --bench store`. Provisioning spends most of its own time in these calls, so
//! this is where its per-deployment overhead is decided.
//!
//! Then reads by id spread over many stored deployments (`PVEDEPLOY_BENCH_STORED`, default 20,000): the
//! deployments written, the store closed and opened again (nothing in any cache), every id read once in a
//! spread-out order, from one task and from 16 at once: the database's share of `GET /deployments/{id}`,
//! without HTTP. `BENCH_DB_URL` sets the store URL (engine settings such as `block_size=` in its query; `{dir}`
//! in it stands for each part's fresh directory).

#[path = "shared/process.rs"]
mod process;
#[path = "shared/spread.rs"]
mod spread;

use std::time::{Duration, Instant};

use pvedeploy::config::Config;
use pvedeploy::core::deployment::{Deployment, RawSpec};
use pvedeploy::core::limits::{Limits, RepoPolicy};
use pvedeploy::core::provision::Progress;
use pvedeploy::core::status::Status;
use pvedeploy::store::logs::{Level, LogLine};
use pvedeploy::store::Store;

const N: u32 = 400;

/// On-CPU time of this whole process so far.
fn cpu() -> Duration {
    process::cpu_of_self()
}

async fn measure<F, Fut>(what: &str, mut op: F)
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..20 {
        op(i).await;
    }
    let (t, c) = (Instant::now(), cpu());
    for i in 0..N {
        op(1000 + i).await;
    }
    let (wall, cpu) = (t.elapsed() / N, (cpu() - c) / N);
    println!("{what:<58} {:>7.0} µs wall, {:>7.0} µs CPU per operation", wall.as_secs_f64() * 1e6, cpu.as_secs_f64() * 1e6);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Config::for_data_dir(dir.path()).database;
    if let Ok(url) = std::env::var("BENCH_DB_URL") {
        db.url = url.replace("{dir}", &dir.path().to_string_lossy());
    }
    println!("database: {}", db.url);
    let store = Store::open(&db).await.unwrap();
    let raw = RawSpec { name: Some("bench".into()), framework: Some("flask".into()), repo_url: Some("https://github.com/o/r".into()), ..RawSpec::default() };
    let spec = pvedeploy::core::deployment::Spec::parse(raw.clone(), &Limits::default(), &RepoPolicy::default()).unwrap();
    let d = Deployment::new(spec, pvedeploy::store::now_millis());
    store.create_deployment(&d, "bench").await.unwrap();
    let lease = store.acquire_lease(&d.id, "bench-agent", 60_000).await.unwrap().unwrap();
    let id = d.id.clone();

    println!("store operations on surrealkv ({N} each, one task):");
    measure("get_deployment (read by id)", |_| async { store.get_deployment(&id).await.unwrap().unwrap(); }).await;
    measure("append_log (one line)", |i| {
        let (store, id) = (&store, &id);
        async move {
            store.append_log(id, Level::Info, "bench", &format!("line {i}")).await.unwrap();
        }
    })
    .await;
    measure("save_progress under the lease (no line)", |_| async { store.save_progress(&lease, &Progress::default(), None).await.unwrap(); }).await;
    measure("save_progress under the lease, with the step's line", |i| {
        let line = LogLine::new(&id, Level::Info, "bench", &format!("step {i}"));
        let (store, lease) = (&store, &lease);
        async move {
            store.save_progress(lease, &Progress::default(), Some(&line)).await.unwrap();
        }
    })
    .await;
    let mut current = store.get_deployment(&id).await.unwrap().unwrap();
    let t = Instant::now();
    let c = cpu();
    for i in 0..N {
        current.error_message = Some(format!("note {i}"));
        current = store.save_deployment_leased(&current, Status::Pending, "bench", Some(&lease)).await.unwrap();
    }
    println!(
        "{:<58} {:>7.0} µs wall, {:>7.0} µs CPU per operation",
        "save_deployment_leased (whole record, revision check)",
        (t.elapsed() / N).as_secs_f64() * 1e6,
        ((cpu() - c) / N).as_secs_f64() * 1e6
    );
    measure("renew_lease", |_| async { store.renew_lease(&lease, 60_000).await.unwrap(); }).await;
    measure("load_progress", |_| async { store.load_progress(&id).await.unwrap(); }).await;
    drop(lease);
    assert!(store.close(Duration::from_secs(30)).await, "the store closes");

    let stored: usize = std::env::var("PVEDEPLOY_BENCH_STORED").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    spread_reads(&db, &raw, stored).await;
}

/// Resident memory of this process, in MB.
fn rss_mb() -> f64 {
    process::rss_kib(std::process::id()) as f64 / 1024.0
}

/// `n` deployments written at 32 at once into a fresh store, the store opened again, every id read once in a
/// spread-out order (half from one task, half from 16 tasks).
async fn spread_reads(db: &pvedeploy::config::DatabaseConfig, raw: &RawSpec, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = db.clone();
    db.url = match std::env::var("BENCH_DB_URL") {
        Ok(url) => url.replace("{dir}", &dir.path().to_string_lossy()),
        Err(_) => Config::for_data_dir(dir.path()).database.url,
    };
    let store = std::sync::Arc::new(Store::open(&db).await.unwrap());
    let t = Instant::now();
    let mut ids = Vec::with_capacity(n);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let mut raw = raw.clone();
        raw.name = Some(format!("app-{i}"));
        let spec = pvedeploy::core::deployment::Spec::parse(raw, &Limits::default(), &RepoPolicy::default()).unwrap();
        let d = Deployment::new(spec, pvedeploy::store::now_millis());
        ids.push(d.id.clone());
        let store = store.clone();
        tasks.spawn(async move { store.create_deployment(&d, "bench").await.unwrap() });
        if tasks.len() >= 32 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    println!("\n{n} deployments written (32 at once): {:.1} s, RSS {:.1} MB", t.elapsed().as_secs_f64(), rss_mb());
    let store = std::sync::Arc::into_inner(store).expect("no other handle");
    let t = Instant::now();
    assert!(store.close(Duration::from_secs(60)).await, "the store closes");
    println!("closed in {:.0} ms", t.elapsed().as_secs_f64() * 1000.0);
    let t = Instant::now();
    let store = std::sync::Arc::new(Store::open(&db).await.unwrap());
    println!("opened again in {:.0} ms, RSS {:.1} MB", t.elapsed().as_secs_f64() * 1000.0, rss_mb());
    let ids = spread::shuffled(&ids);
    let half = ids.len() / 2;
    let (t, c) = (Instant::now(), cpu());
    for id in &ids[..half] {
        store.get_deployment_with_events(id).await.unwrap().unwrap();
    }
    let per = |d: Duration, k: usize| d.as_secs_f64() * 1e6 / k as f64;
    println!("read by id, {half} ids once each, one task: {:.0} µs wall, {:.0} µs CPU per read; RSS {:.1} MB", per(t.elapsed(), half), per(cpu() - c, half), rss_mb());
    let rest = std::sync::Arc::new(ids[half..].to_vec());
    let (t, c) = (Instant::now(), cpu());
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..16 {
        let (store, rest) = (store.clone(), rest.clone());
        tasks.spawn(async move {
            for id in rest.iter().skip(w).step_by(16) {
                store.get_deployment_with_events(id).await.unwrap().unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let k = rest.len();
    println!(
        "read by id, the other {k} once each, 16 tasks: {:.0} reads/s, {:.0} µs CPU per read; RSS {:.1} MB",
        k as f64 / t.elapsed().as_secs_f64(),
        per(cpu() - c, k),
        rss_mb()
    );
}
