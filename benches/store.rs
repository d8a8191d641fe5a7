//! Prints what each hot store operation costs on the embedded engine (surrealkv, every commit synced):
//! wall time per operation from one task, and CPU per operation. Figures, never assertions.
//!
//! Run: `cargo bench --bench store`. Provisioning spends most of its own time in these calls, so
//! this is where its per-deployment overhead is decided.

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
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
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
        db.url = url;
    }
    println!("database: {}", db.url);
    let store = Store::open(&db).await.unwrap();
    let raw = RawSpec { name: Some("bench".into()), framework: Some("flask".into()), repo_url: Some("https://github.com/o/r".into()), ..RawSpec::default() };
    let spec = pvedeploy::core::deployment::Spec::parse(raw, &Limits::default(), &RepoPolicy::default()).unwrap();
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
}
