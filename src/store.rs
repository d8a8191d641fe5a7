//! State in SurrealDB (embedded surrealkv, `mem://`, or a remote server): connection, migrations, one repository per aggregate.

pub mod addresses;
pub mod audit;
pub mod cache;
pub mod deliveries;
pub mod deployments;
pub mod env;
pub mod leases;
pub mod logs;
pub mod migrations;
mod page_read;
pub mod previews;
pub mod provision;
mod record_read;
pub mod releases;
pub mod schedules;
pub mod tokens;
pub mod trust;
pub mod vmids;

use serde::de::DeserializeOwned;
use std::sync::Arc;

use surrealdb::engine::any::Any;
use surrealdb::engine::local::Db;
use surrealdb::Surreal;

use crate::config::DatabaseConfig;

/// What went wrong talking to the store, phrased as what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database did not answer or failed; retrying later is safe (writes are transactional).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A unique value (e.g. a deployment name) is taken; do not retry with the same value.
    #[error("{what} is already taken")]
    Taken { what: String },
    /// Someone else changed the record since it was read; re-read and decide again.
    #[error("the record changed concurrently; re-read and retry")]
    Stale,
    /// A stored record could not be read back into the domain; the data needs attention.
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    /// The database refused or failed the statement in a way running it again does not fix (a rule of the schema,
    /// the query's text, a failure inside the engine whose outcome is unknown): the code or the data needs
    /// attention, and a write may need re-reading before anything else is done. Not safe to retry blindly.
    #[error("the database refused the request: {0}")]
    Refused(String),
    /// The data was written by a newer pvedeploy; run that version or newer.
    #[error("the database has schema version {found}, but this pvedeploy only knows versions up to {known}; run a newer pvedeploy")]
    NewerSchema { found: i64, known: i64 },
}

impl From<surrealdb::Error> for StoreError {
    fn from(e: surrealdb::Error) -> Self {
        let msg = e.to_string();
        // A unique value taken arrives here as text the repositories read themselves (`deliveries`, `deployments`).
        if is_taken(&msg) {
            return StoreError::Unavailable(msg);
        }
        unavailable_or_refused(&e, msg)
    }
}

/// An open database with the schema migrated to this binary's version.
#[derive(Clone)]
pub struct Store {
    conn: Conn,
    /// The embedded engine's lock file, held until the last handle is gone and the engine has shut down.
    lock_file: Option<std::path::PathBuf>,
    /// Deployments recently read, for embedded engines only: with a remote server other agents write too.
    pub(crate) cache: Option<std::sync::Arc<cache::DetailCache>>,
    /// Whether what the store holds may be acted on (an embedded store whose log repair dropped
    /// acknowledged writes may not).
    trust: std::sync::Arc<trust::Trust>,
    /// The embedded store's directory.
    dir: Option<std::path::PathBuf>,
}

/// The connection: for an embedded engine (`mem://`, `surrealkv://`) the store opens the datastore itself and serves
/// it to the SDK, so that one record can also be read from it without a query ([`Store::stored_record`]).
#[derive(Clone)]
enum Conn {
    /// `ns` and `database` are the names every query uses (`use_ns`, `use_db`), which a direct read names itself.
    Embedded { db: Surreal<Db>, kvs: Arc<surrealdb_core::kvs::Datastore>, ns: Arc<str>, database: Arc<str> },
    Remote(Surreal<Any>),
}

/// `$body` with `$db` bound to the SDK's handle, whichever engine serves it (the two handles are different types).
macro_rules! with_sdk {
    ($conn:expr, |$db:ident| $body:expr) => {
        match $conn {
            Conn::Embedded { db: $db, .. } => $body,
            Conn::Remote($db) => $body,
        }
    };
}

impl Store {
    /// Connects (creating the data dir for embedded engines), signs in when credentials are configured,
    /// selects the namespace and database, and applies pending migrations.
    pub async fn open(cfg: &DatabaseConfig) -> Result<Store, StoreError> {
        Self::open_at_schema(cfg, migrations::LATEST).await
    }

    /// As `open`, applying migrations only up to `version`: a data dir as an older binary left it
    /// (the upgrade tests make one with it).
    #[doc(hidden)]
    pub async fn open_at_schema(cfg: &DatabaseConfig, version: i64) -> Result<Store, StoreError> {
        let url = durable_url(&cfg.url);
        let mut lock_file = None;
        let mut dir = None;
        if let Some(path) = url.strip_prefix("surrealkv://") {
            let path = path.split('?').next().unwrap_or(path);
            std::fs::create_dir_all(path).map_err(|e| StoreError::Unavailable(format!("cannot create {path}: {e}")))?;
            lock_file = Some(std::path::Path::new(path).join("LOCK"));
            dir = Some(std::path::PathBuf::from(path));
        }
        // An embedded engine belongs to this process alone (surrealkv holds a lock on its directory).
        let embedded = url.starts_with("surrealkv://") || url.starts_with("mem://");
        let conn = if embedded {
            open_embedded(&url, cfg).await?
        } else {
            Conn::Remote(surrealdb::engine::any::connect(url.as_str()).await?)
        };
        // The engine has replayed (and, if it had to, repaired) its log by now.
        let trust = match &dir {
            Some(d) => trust::check(d),
            None => trust::Trust::Trusted,
        };
        if let trust::Trust::Untrusted { reason } = &trust {
            tracing::error!(%reason, "the store cannot be trusted; starting read-only");
        }
        if let Some((user, pass)) = &cfg.credentials {
            let root = surrealdb::opt::auth::Root { username: user.clone(), password: pass.expose().clone() };
            with_sdk!(&conn, |db| db.signin(root).await.map(|_| ())?);
        }
        with_sdk!(&conn, |db| db.use_ns(cfg.namespace.as_str()).use_db(cfg.database.as_str()).await.map(|_| ())?);
        let cache = embedded.then(|| std::sync::Arc::new(cache::DetailCache::default()));
        let store = Store { conn, lock_file, cache, trust: std::sync::Arc::new(trust), dir };
        migrations::apply(&store, version).await?;
        Ok(store)
    }

    /// Runs `body` (statements, each ending in `;`) as one transaction and returns the body's answers:
    /// SurrealDB also answers for `BEGIN` and `COMMIT`, and those two answers are dropped here.
    pub(crate) async fn transaction(&self, body: &str, vars: serde_json::Value) -> Result<Vec<Vec<serde_json::Value>>, StoreError> {
        let mut rows = self.run(&format!("BEGIN TRANSACTION;\n{body}\nCOMMIT TRANSACTION;"), vars).await?;
        if rows.len() >= 2 {
            rows.pop();
            rows.remove(0);
        }
        Ok(rows)
    }

    /// Runs a page query and its count in one read transaction, so both see the same snapshot: a row
    /// committed between them would otherwise be counted in the total but missing from the page.
    /// Returns the page's rows and the total.
    pub(crate) async fn read_page(&self, page_sql: &str, count_sql: &str, vars: serde_json::Value) -> Result<(Vec<serde_json::Value>, u64), StoreError> {
        let mut rows = self.transaction(&format!("{page_sql};\n{count_sql};"), vars).await?.into_iter();
        let items = rows.next().unwrap_or_default();
        let total = rows.next().and_then(|r| r.into_iter().next()).and_then(|v| v.get("n").and_then(|n| n.as_u64())).unwrap_or(0);
        Ok((items, total))
    }

    /// Runs one query with bound variables and returns each statement's rows as JSON, failing on any statement error.
    /// Optimistic transactions that lost a write conflict are retried (up to 8 times, jittered);
    /// every query here is a whole transaction, so running it again is safe.
    pub(crate) async fn run(&self, sql: &str, vars: serde_json::Value) -> Result<Vec<Vec<serde_json::Value>>, StoreError> {
        let mut attempt = 0u32;
        loop {
            match self.run_once(sql, vars.clone()).await {
                Err(StoreError::Unavailable(m)) if attempt < 8 && m.contains("can be retried") => {
                    attempt += 1;
                    let jitter = rand::random::<u64>() % (5 << attempt.min(5));
                    tokio::time::sleep(std::time::Duration::from_millis(2 + jitter)).await;
                }
                other => return other,
            }
        }
    }

    async fn run_once(&self, sql: &str, vars: serde_json::Value) -> Result<Vec<Vec<serde_json::Value>>, StoreError> {
        QUERIES_SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut resp = with_sdk!(&self.conn, |db| db.query(sql).bind(vars).await?);
        let n = resp.num_statements();
        // In a failed transaction every statement reports "not executed"; the cause is the other one.
        let mut errors: Vec<(usize, surrealdb::Error)> = resp.take_errors().into_iter().collect();
        errors.sort_by_key(|(i, e)| (e.to_string().contains("not executed due to a failed transaction"), *i));
        if let Some((_, e)) = errors.into_iter().next() {
            return Err(classify(e));
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let v: surrealdb::types::Value = resp.take(i)?;
            out.push(match v.into_json_value() {
                serde_json::Value::Array(a) => a,
                serde_json::Value::Null => vec![],
                other => vec![other],
            });
        }
        Ok(out)
    }

    /// One record by table and id, as `SELECT *` answers it (computed fields evaluated), as JSON (`None` when
    /// there is none); its `id` field is SurrealDB's.
    pub(crate) async fn select_record(&self, table: &str, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        QUERIES_SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rid = surrealdb::types::RecordId::new(table, id);
        let v: Option<surrealdb::types::Value> = with_sdk!(&self.conn, |db| db.select(rid).await).map_err(classify)?;
        Ok(v.map(|v| v.into_json_value()).filter(|v| !v.is_null()))
    }

    /// One record by table and id as it is stored, as JSON (`None` when there is none); its `id` field is
    /// SurrealDB's. For tables without computed fields (every table of this schema) the same answer as
    /// [`select_record`](Self::select_record); an embedded engine reads it from its key-value layer without a
    /// query (`record_read`), a remote server is asked by `select`.
    pub(crate) async fn stored_record(&self, table: &str, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        match &self.conn {
            Conn::Embedded { kvs, ns, database, .. } => {
                QUERIES_SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                record_read::read(kvs, ns, database, table, id).await
            }
            Conn::Remote(_) => self.select_record(table, id).await,
        }
    }

    /// A page of deployments and its total from an embedded engine's key-value layer without a query
    /// (`page_read`); `None` for a remote server, or when the schema lacks an index the walk needs: ask SurrealQL.
    pub(super) async fn direct_page(&self, ask: &page_read::PageAsk<'_>) -> Result<Option<(Vec<serde_json::Value>, u64)>, StoreError> {
        match &self.conn {
            Conn::Embedded { kvs, ns, database, .. } => {
                let page = page_read::deployments(kvs, ns, database, ask).await?;
                // A fallback to the queries is counted by them.
                if page.is_some() {
                    QUERIES_SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(page)
            }
            Conn::Remote(_) => Ok(None),
        }
    }

    /// Drops this handle and, for the embedded engine, waits (up to `limit`) until the engine has
    /// flushed and released its lock: the last handle's drop shuts it down in the background.
    /// Returns whether the database is closed. Other clones of this handle must be dropped first.
    pub async fn close(self, limit: std::time::Duration) -> bool {
        let Store { conn, lock_file, .. } = self;
        drop(conn);
        let Some(lock) = lock_file else { return true };
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let free = std::fs::File::open(&lock).map(|f| f.try_lock().is_ok()).unwrap_or(true);
            if free {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Whether what the store holds may be acted on; the reason when not.
    pub fn untrusted(&self) -> Option<&str> {
        match &*self.trust {
            trust::Trust::Trusted => None,
            trust::Trust::Untrusted { reason } => Some(reason),
        }
    }

    /// The embedded store's directory (`None` for `mem://` and remote servers).
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        self.run("RETURN 1", serde_json::json!({})).await.is_ok()
    }
}

/// Opens an embedded datastore the way the SDK's `connect` does (`surrealdb-engine-local-3.3.5` `lib.rs` `connect`:
/// the builder with default engine options and no timeouts, maintenance tasks started only after the version
/// check and bootstrap) and serves it to the SDK (`Surreal::unstable_from_datastore`, `native.rs`), keeping a handle
/// for direct reads. No credentials are set on the datastore (the SDK's `connect` sets none without a root user in
/// its configuration), and no live-query notifications: without them the engine does not preallocate its
/// 15,000-slot notification channel, 2.4 MB of an idle agent's heap (`surrealdb-cnf` `NOTIFICATIONS_CHANNEL_SIZE`;
/// measured with heaptrack). The path is the SDK's own reading of the URL (`__into_endpoint`), so `mem://` and
/// `surrealkv://dir?options` open what `connect` would have opened.
async fn open_embedded(url: &str, cfg: &DatabaseConfig) -> Result<Conn, StoreError> {
    let path = surrealdb::engine::any::__into_endpoint(url)?.path;
    let caps = surrealdb::opt::capabilities::Capabilities::new().with_live_query_notifications(false);
    let failed = |e: anyhow::Error| StoreError::Unavailable(format!("cannot open {url}: {e:#}"));
    let kvs = surrealdb_core::kvs::Datastore::builder()
        .with_engine_options(embedded_engine_options())
        .with_query_timeout(None)
        .with_transaction_timeout(None)
        .with_auth(false)
        .with_capabilities(caps.into())
        .without_maintenance_tasks()
        .build_with_path(&path)
        .await
        .map_err(failed)?;
    // A datastore that cannot be used is shut down before the error is returned: its engine's threads would
    // otherwise hold the directory's lock until the process ends, and a retry in this process would fail.
    let ready = match kvs.check_version().await {
        Ok(_) => kvs.bootstrap().await,
        Err(e) => Err(e),
    };
    if let Err(e) = ready {
        if let Err(closing) = kvs.shutdown().await {
            tracing::error!(error = %format!("{closing:#}"), "closing the datastore that failed to open failed");
        }
        return Err(failed(e));
    }
    kvs.start_maintenance_tasks();
    let db = Surreal::<Db>::unstable_from_datastore(Arc::clone(&kvs), None).await?;
    Ok(Conn::Embedded { db, kvs, ns: Arc::from(cfg.namespace.as_str()), database: Arc::from(cfg.database.as_str()) })
}

/// The embedded engine's background jobs, paced for one process that owns its store. SurrealDB's defaults
/// (`surrealdb-core-3.3.5` `options.rs`) suit nodes sharing one store: each job takes a lease every time it wakes,
/// a written and synced commit even with nothing to do (`tasklease.rs` `check_lease`: a lease of twice the
/// interval is renewed once half of it is gone), and the node writes a heartbeat every 3 s. An idle agent
/// synced its store 40 times a minute (`strace -f -e fsync`), forever. Here:
/// - the heartbeat every 10 s: the expiry scan archives a node silent for 30 s (`ds.rs` `expire_nodes`), and a
///   heartbeat that comes late marks it active again (`update_node` replaces the row);
/// - index compaction, async events and the graph fold wake when a commit queues work for them
///   (`kvs/tasks/mod.rs`, `triggers`), so their timed passes are only a sweep, every 5 minutes;
/// - changefeed cleanup, resuming an unfinished index build and reclaiming removed data, every 5 minutes: no
///   table here has a changefeed, migrations build their indexes before the agent serves (`DEFINE INDEX`
///   without `CONCURRENTLY` waits for its build), and removed data waits out a 10-minute grace anyway;
/// - no purge of RPC sessions (a zero interval leaves the job out, `kvs/tasks/mod.rs` `slots`): an embedded
///   store serves no SurrealDB RPC sessions.
///
/// What is left: a heartbeat every 10 s and a lease per job every 5 minutes, about 7 synced commits a minute.
/// Leases are not released at a stop and every start is a new node, so after a restart these jobs' timed and
/// woken passes wait until the last process's leases (twice the interval) expire: up to 10 minutes. Nothing
/// here queues work for them (plain and unique indexes queue no compaction, `surrealdb-idx` `index.rs`; no
/// async event, graph edge or changefeed is defined); a COUNT or full-text index, an async event or a
/// changefeed added later would wait that long after each restart.
fn embedded_engine_options() -> surrealdb_core::options::EngineOptions {
    use std::time::Duration;
    const SWEEP: Duration = Duration::from_secs(300);
    surrealdb_core::options::EngineOptions::default()
        .with_node_membership_refresh_interval(Duration::from_secs(10))
        .with_index_compaction_interval(SWEEP)
        .with_event_processing_interval(SWEEP)
        .with_graph_fold_interval(SWEEP)
        .with_changefeed_gc_interval(SWEEP)
        .with_index_build_resume_interval(SWEEP)
        .with_reclaim_interval(SWEEP)
        .with_rpc_session_gc_interval(Duration::ZERO)
}

/// The embedded engine's in-memory table, flushed to disk when full: what a crash replays at most.
/// 4 MiB rather than 8: idle RSS after 100,000 writes 94.9 MB against 109.4 (with `BLOCK_CACHE_BYTES`
/// halved too; `cargo bench --bench api`, docs/benchmarks.md), `POST` at 32 writers 171–194 req/s in two
/// runs against 187 (within this machine's noise; the writers meet short write stalls while a full table is
/// flushed, which the engine logs).
pub const MEMTABLE_BYTES: u64 = 4 << 20;
/// The embedded engine's block cache. 8 MiB rather than 16: spread reads by id at 100,000 stored
/// deployments miss it either way (their rows alone are ~64 MB); `GET` throughput was unchanged.
pub const BLOCK_CACHE_BYTES: u64 = 8 << 20;

/// SurrealKV syncs every commit by default (`sync=every`); we say so explicitly so a changed
/// upstream default cannot weaken durability unnoticed. Its memory is capped too (the defaults follow
/// the host's RAM: a 1 GiB memtable and RAM/2 − 1 GiB of cache on 24 GiB): `MEMTABLE_BYTES` of memtable
/// (what a crash replays at most) and `BLOCK_CACHE_BYTES` of block cache bound what the engine holds
/// (figures in `docs/benchmarks.md`, with `crate::memory`'s allocator settings); values in the URL win.
fn durable_url(url: &str) -> String {
    if !url.starts_with("surrealkv://") {
        return url.to_owned();
    }
    let mut out = url.to_owned();
    for (key, value) in [("sync", "every".to_string()), ("max_memtable_size", MEMTABLE_BYTES.to_string()), ("block_cache_capacity", BLOCK_CACHE_BYTES.to_string())] {
        let query = out.split_once('?').map(|(_, q)| q.to_owned()).unwrap_or_default();
        if !query.split('&').any(|kv| kv.split('=').next() == Some(key)) {
            let sep = if out.contains('?') { '&' } else { '?' };
            out = format!("{out}{sep}{key}={value}");
        }
    }
    out
}

/// A statement's error, as what the caller can do about it.
fn classify(e: surrealdb::Error) -> StoreError {
    let msg = e.to_string();
    if is_taken(&msg) {
        StoreError::Taken { what: "the value".into() }
    } else {
        unavailable_or_refused(&e, msg)
    }
}

/// A record or unique index entry that exists already (SurrealDB reports a unique index's as `internal`).
fn is_taken(msg: &str) -> bool {
    msg.contains("already exists") || msg.contains("already contains")
}

/// `Refused` for what the database will refuse again whatever the moment: the statement's parameters or size
/// (`validation`), a value it cannot (de)serialize, its configuration, permissions. Everything else stays
/// `Unavailable`: a lost connection, a write conflict, a timeout, a statement not run because another failed, our
/// own `THROW`s (which the repositories read), and SurrealDB's `internal` kind, which also carries storage failures
/// such as a full disk (answered 503, retry once space is back: `tests/it/disk.rs`).
fn unavailable_or_refused(e: &surrealdb::Error, msg: String) -> StoreError {
    if e.is_validation() || e.is_serialization() || e.is_configuration() || e.is_not_allowed() {
        StoreError::Refused(msg)
    } else {
        StoreError::Unavailable(msg)
    }
}

pub(crate) fn decode<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Queries this process has sent to the database (a query may hold several statements).
static QUERIES_SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many queries this process has sent to the database so far (for `/metrics`).
pub fn queries_sent() -> u64 {
    QUERIES_SENT.load(std::sync::atomic::Ordering::Relaxed)
}

/// Milliseconds since the Unix epoch: the store's timestamp unit.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn surrealkv_urls_sync_every_commit() {
        let caps = "max_memtable_size=4194304&block_cache_capacity=8388608";
        assert_eq!(super::durable_url("surrealkv://d/db"), format!("surrealkv://d/db?sync=every&{caps}"));
        assert_eq!(super::durable_url("surrealkv://d/db?x=1"), format!("surrealkv://d/db?x=1&sync=every&{caps}"));
        assert_eq!(super::durable_url("surrealkv://d/db?sync=1s"), format!("surrealkv://d/db?sync=1s&{caps}"));
        assert_eq!(super::durable_url("surrealkv://d/db?max_memtable_size=8388608"), "surrealkv://d/db?max_memtable_size=8388608&sync=every&block_cache_capacity=8388608");
        assert_eq!(super::durable_url("mem://"), "mem://");
    }

    /// A table's field definitions are shared by every transaction, keyed by the stamp each `DEFINE` and
    /// `REMOVE FIELD` renews (`vendor/surrealdb-datastore/PATCHES.md`): a read after a change sees the change,
    /// and two stores in one process (same namespace and database ids, same table) never see each other's.
    /// A computed field is what a read evaluates from the definitions, so it shows which ones a read used.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_field_changed_is_seen_by_the_next_read_and_only_in_its_own_store() {
        use serde_json::json;
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let mut stores = Vec::new();
        for d in &dirs {
            let url = format!("surrealkv://{}", d.path().join("db").display());
            let cfg = crate::config::DatabaseConfig { url, namespace: "t".into(), database: "t".into(), credentials: None };
            stores.push(super::Store::open(&cfg).await.unwrap());
        }
        let (a, b) = (&stores[0], &stores[1]);
        for s in [a, b] {
            s.run("DEFINE TABLE probe SCHEMALESS; CREATE probe:one SET n = 1;", json!({})).await.unwrap();
        }
        let c = |s: &super::Store| {
            let s = s.clone();
            async move { s.select_record("probe", "one").await.unwrap().unwrap().get("c").cloned() }
        };
        // Both read once with no field defined: each store's (empty) definitions are now shared.
        assert_eq!((c(a).await, c(b).await), (None, None));
        a.run("DEFINE FIELD c ON probe COMPUTED n + 1;", json!({})).await.unwrap();
        assert_eq!(c(a).await, Some(json!(2)), "the definition made after a read is used by the next one");
        assert_eq!(c(b).await, None, "the other store has no such field");
        b.run("DEFINE FIELD c ON probe COMPUTED n + 100;", json!({})).await.unwrap();
        assert_eq!((c(a).await, c(b).await), (Some(json!(2)), Some(json!(101))), "each store its own definition");
        a.run("DEFINE FIELD OVERWRITE c ON probe COMPUTED n + 10;", json!({})).await.unwrap();
        assert_eq!(c(a).await, Some(json!(11)), "an overwritten definition replaces the shared one");
        a.run("REMOVE FIELD c ON probe;", json!({})).await.unwrap();
        assert_eq!((c(a).await, c(b).await), (None, Some(json!(101))), "a removed definition is gone from reads");
        // A change inside a transaction that fails is not seen by anyone.
        let failed = a.run("BEGIN; DEFINE FIELD c ON probe COMPUTED n + 1000; THROW 'no'; COMMIT;", json!({})).await;
        assert!(failed.is_err());
        assert_eq!(c(a).await, None, "a rolled-back definition is not used");
        drop(stores);
    }

    /// What the caller can do follows from the error: our own `THROW`s (which the repositories read, e.g. a lease
    /// lost) and a record that exists stay what they were; a statement the database refuses by its text is
    /// `Refused`, never "retry is safe".
    #[tokio::test]
    async fn errors_say_whether_a_retry_can_help() {
        use super::{Store, StoreError};
        let cfg = crate::config::DatabaseConfig { url: "mem://".into(), namespace: "t".into(), database: "t".into(), credentials: None };
        let store = Store::open(&cfg).await.unwrap();
        let run = |sql: &'static str| {
            let store = store.clone();
            async move { store.run(sql, serde_json::json!({})).await.map(|_| ()) }
        };
        let thrown = run("THROW 'lease lost'").await;
        assert!(matches!(&thrown, Err(StoreError::Unavailable(m)) if m.contains("lease lost")), "{thrown:?}");
        run("CREATE thing:one").await.unwrap();
        let taken = run("CREATE thing:one").await;
        assert!(matches!(taken, Err(StoreError::Taken { .. })), "{taken:?}");
        // (A value the schema refuses is not told apart: SurrealDB reports it in the kind that also carries storage
        // failures such as a full disk, which stay `Unavailable`.)
        let refused = run("SELEC * FROM thing").await;
        assert!(matches!(&refused, Err(StoreError::Refused(m)) if m.contains("Parse error")), "{refused:?}");
    }

    /// An embedded store in `dir/db`, the URL's `options` appended.
    fn surrealkv_in(dir: &std::path::Path, options: &str) -> crate::config::DatabaseConfig {
        let url = format!("surrealkv://{}{options}", dir.join("db").display());
        crate::config::DatabaseConfig { url, namespace: "t".into(), database: "t".into(), credentials: None }
    }

    /// An idle store writes nothing until its first heartbeat, 10 s after its background jobs start
    /// (`embedded_engine_options`): no job takes a lease before 5 minutes. With SurrealDB's defaults the
    /// write-ahead log grew within 6 s (heartbeats every 3 s, three leases renewed every 5 s, each a synced commit).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_store_does_not_write() {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let cfg = surrealkv_in(dir.path(), "");
        // The jobs start inside `open`, so the window ends 9 s after `open` was called, before the heartbeat.
        let called = Instant::now();
        let store = super::Store::open(&cfg).await.unwrap();
        let window = Duration::from_secs(9).checked_sub(called.elapsed()).filter(|w| *w >= Duration::from_secs(3));
        let window = window.unwrap_or_else(|| panic!("opening took {:?}: too little of the 9 s left to watch", called.elapsed()));
        let wal = |dir: &std::path::Path| -> i64 { std::fs::read_dir(dir.join("db/wal")).unwrap().map(|e| e.unwrap().metadata().unwrap().len() as i64).sum() };
        let before = wal(dir.path());
        tokio::time::sleep(window).await;
        let after = wal(dir.path());
        assert!(store.close(Duration::from_secs(10)).await, "closed");
        assert_eq!(after, before, "the write-ahead log changed by {} bytes in {window:?} idle", after - before);
    }

    /// Every record written is found by id after a restart, and an id never written is not, once the engine holds
    /// them in tables of many blocks with one bloom filter per block (`vendor/surrealkv/PATCHES.md` 9: a table's
    /// filters are laid out per block instead of per 2 KiB, and read in place). A filter that answered "absent"
    /// for a key it holds would lose that record here. 64 KiB memory tables turn over every few batches, so the
    /// records end in several flushed and compacted tables.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_in_tables_of_many_blocks_are_all_found_after_a_restart() {
        use serde_json::json;
        let dir = tempfile::tempdir().unwrap();
        let cfg = surrealkv_in(dir.path(), "?max_memtable_size=65536");
        let store = super::Store::open(&cfg).await.unwrap();
        let (batches, per_batch) = (12, 250);
        for b in 0..batches {
            // About 600 bytes a record: 150 KB a batch, 1.8 MB in all.
            store
                .run("FOR $i IN $from..$to { CREATE type::record('probe', $i) SET pad = string::repeat('x', 600) RETURN NONE; }", json!({ "from": b * per_batch, "to": (b + 1) * per_batch }))
                .await
                .unwrap();
        }
        assert!(store.close(std::time::Duration::from_secs(10)).await, "closed");
        let store = super::Store::open(&cfg).await.unwrap();
        let total = batches * per_batch;
        let mut missing = vec![];
        for i in 0..total {
            let got = store.run("SELECT VALUE record::id(id) FROM ONLY type::record('probe', $i)", json!({ "i": i })).await.unwrap();
            if got[0][0].as_i64() != Some(i as i64) {
                missing.push(i);
            }
        }
        assert!(missing.is_empty(), "{} of {total} records not found by id after the restart: {:?}", missing.len(), &missing[..missing.len().min(10)]);
        let never = store.run("SELECT VALUE record::id(id) FROM ONLY type::record('probe', $i)", json!({ "i": total + 7 })).await.unwrap();
        assert!(never[0].first().is_none_or(|v| v.is_null()), "an id never written is absent: {never:?}");
        let largest = std::fs::read_dir(dir.path().join("db/sstables")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).max().unwrap_or(0);
        assert!(largest > 2 * 65_536, "the records are in a table of several 64 KiB blocks (largest {largest} bytes)");
    }
}
