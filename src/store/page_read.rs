//! A page of deployments read straight from the embedded datastore: the index walked as keys, the page's records
//! read by id, no query text, no plan, no executor.
//!
//! `GET /deployments` runs four at a time in the API bench. Through SurrealQL (`list_deployments`' queries in
//! `deployments.rs`), SurrealDB 3.3.5 parses and plans the page and its count, walks the index, fetches each record
//! and converts every row to the SDK's values and then to JSON. `perf record --call-graph dwarf` on the release
//! agent serving first pages of the 100,000-deployment store: the executor (plan, index walk, fetch, per-row
//! filtering) about half of the agent's CPU per page, the conversions a fifth; about 5.8 ms of CPU a page.
//!
//! Here the walk is the executor's own (`surrealdb-core-3.3.5` `exec/index/iterator/btree.rs`:
//! `CompoundEqualIterator` and `compute_compound_key_range` over the index's `EntryFdOpenPrefix`, backwards for
//! `ORDER BY list_key DESC`; each entry's value is the record id, as `decode_record_ids` reads it), the records are
//! read as `fetch_and_filter_records_batch` reads them (`TableProvider::get_records`), the totals are the tally
//! records (`deployment_tally:[scope, shard]`), all in one read transaction: one snapshot for the page and its
//! total, as the SurrealQL path's single transaction gives. A listing by name prefix walks the keys of the
//! `name_listing` records (`[name, list_key]`), as `name_listing:[lo]..[hi]` does (`exec/operators/scan/count.rs`
//! `record_key_range`), reading their values only when a status or framework is asked.
//!
//! Each row is the stored record without `recent_events` and with `key` (its id), its values turned into JSON as
//! the SDK spells them (`row`, `json`): what `SELECT *, record::id(id) AS key OMIT recent_events` answers for a table
//! without computed fields, field permissions or read events (the same conditions as `record_read.rs`). `tests` compare every
//! filter, cursor and offset with the SurrealQL path, on both embedded engines and after a restart. When an index
//! this walk needs is not defined (a schema older than its migration), the answer is `None` and the caller asks
//! SurrealQL.

use std::borrow::Cow;
use std::ops::Bound;

use surrealdb_catalog::providers::{CachePolicy, DatabaseProvider, TableProvider};
use surrealdb_catalog::val::{convert_value_to_public_value, Array, RecordId, RecordIdKey, Strand, TableName, Value};
use surrealdb_catalog::{DatabaseId, IndexDefinition, NamespaceId, Record};
use surrealdb_core::kvs::Datastore;
use surrealdb_datastore::key::schema::{EntryFdOpenPrefix, EntryPrefix, RecordKey, RecordPrefix};
use surrealdb_datastore::index_state::filter_online_indexes;
use surrealdb_datastore::values::entry::IndexEntryValue;
use surrealdb_datastore::Transaction;
use surrealdb_kvs::key::{KVKeyDecode, KVRange, KVSubspace};
use surrealdb_kvs::value::KVValue;
use surrealdb_kvs::TransactionType;

use super::deployments::{LIST_SCOPE_ALL, TALLY_SHARDS};
use super::record_read::unavailable;
use super::StoreError;

/// What a page asks for, in the store's terms: the filter's values as stored, where it starts, how many rows
/// (one more than the page, so the caller knows whether another follows).
pub(crate) struct PageAsk<'a> {
    pub status: Option<&'a str>,
    pub framework: Option<&'a str>,
    /// The start and the (exclusive) end of a name prefix's range of names.
    pub name: Option<(&'a str, &'a str)>,
    /// Only rows whose `list_key` is below this one.
    pub after: Option<&'a str>,
    pub offset: u32,
    pub rows: u32,
    /// The tally scope of the status and framework (`tally_scope`), for the total without a name.
    pub scope: &'a str,
}

/// How many keys one step of a name prefix's walk reads: the executor's batch (`INDEX_BATCH_SIZE`).
const BATCH: u32 = 1000;

/// The page's rows (newest first) and the total, or `None` when the schema lacks an index the walk needs.
/// A failure of the datastore or of a key or value read in the walk is `Unavailable` (nothing was written); a
/// record that is not a deployment row is `Corrupt`.
pub(super) async fn deployments(kvs: &Datastore, ns: &str, db: &str, ask: &PageAsk<'_>) -> Result<Option<(Vec<serde_json::Value>, u64)>, StoreError> {
    let tx = kvs.transaction(TransactionType::Read).await.map_err(unavailable)?;
    let found = async {
        let Some(database) = tx.get_db_by_name(ns, db, None).await? else { return anyhow::Ok(None) };
        let (nsid, dbid) = (database.namespace_id, database.database_id);
        let keys = match ask.name {
            Some(range) => Some(name_walk(&tx, nsid, dbid, range, ask).await?),
            None => match index_walk(&tx, nsid, dbid, ask).await? {
                Some(ids) => Some((ids, tally(&tx, nsid, dbid, ask.scope).await?)),
                None => None,
            },
        };
        let Some((ids, total)) = keys else { return Ok(None) };
        let table = TableName::new("deployment");
        let rids: Vec<RecordId> = ids.into_iter().map(|key| RecordId { table: table.clone(), key }).collect();
        let records = tx.get_records(nsid, dbid, &rids, None, CachePolicy::ReadOnly).await?;
        Ok(Some((records, total)))
    }
    .await;
    // A read transaction holds its snapshot until it ends; how it ended is reported, not dropped.
    let ended = tx.cancel().await;
    drop(tx);
    let found = found.map_err(unavailable)?;
    ended.map_err(unavailable)?;
    let Some((records, total)) = found else { return Ok(None) };
    let mut rows = Vec::with_capacity(records.len());
    for record in records {
        if let Some(row) = row(record)? {
            rows.push(row);
        }
    }
    Ok(Some((rows, total)))
}

/// The ids of the page without a name: a backward walk of the index of the filter (migrations v10 and v14),
/// from its end or from below the cursor, skipping `offset` entries at the key-value layer.
async fn index_walk(tx: &Transaction, ns: NamespaceId, db: DatabaseId, ask: &PageAsk<'_>) -> anyhow::Result<Option<Vec<RecordIdKey>>> {
    let (index, prefix): (&str, Vec<Value>) = match (ask.status, ask.framework) {
        (None, None) => ("deployment_all_list", vec![Value::from(LIST_SCOPE_ALL)]),
        (Some(s), None) => ("deployment_status_list", vec![Value::from(s)]),
        (None, Some(f)) => ("deployment_framework_list", vec![Value::from(f)]),
        (Some(s), Some(f)) => ("deployment_status_framework_list", vec![Value::from(s), Value::from(f)]),
    };
    let table = TableName::new("deployment");
    let Some(ix) = tx.get_tb_index(ns, db, &table, index, None).await? else { return Ok(None) };
    // Only an index the executor would plan on (`index_state.rs` `filter_online_indexes`): while a build runs,
    // or after one failed, writes are queued beside the index instead of entering it, and its entries are not the
    // table's; the queries then scan the table.
    let online = filter_online_indexes(tx, ns, db, std::sync::Arc::from(vec![(*ix).clone()])).await?;
    if online.is_empty() || ix.prepare_remove {
        return Ok(None);
    }
    let range = entry_range(ns, db, &ix, &prefix, ask.after)?;
    let entries = tx.scanr_raw(range, ask.rows, ask.offset, None).await?;
    let mut ids = Vec::with_capacity(entries.len());
    for (_, value) in entries {
        ids.push(IndexEntryValue::kv_decode_value(&value, ())?.rid.key);
    }
    Ok(Some(ids))
}

/// The entries of index `ix` whose fields start with `prefix`, below `after` in the next field when given:
/// `compute_compound_key_range` for `LessThan` and for no range (`btree.rs`).
fn entry_range(ns: NamespaceId, db: DatabaseId, ix: &IndexDefinition, prefix: &[Value], after: Option<&str>) -> anyhow::Result<surrealdb_kvs::key::TypedRange<IndexEntryValue>> {
    let bound = |fd: &[Value]| EntryFdOpenPrefix { ns, db, tb: Cow::Borrowed(&ix.table_name), ix: ix.index_id, fd: Cow::Borrowed(fd) }.encode_bound();
    let without = bound(prefix)?;
    let keys = match after {
        Some(after) => {
            let mut fd = prefix.to_vec();
            fd.push(Value::from(after));
            (without..bound(&fd)?).into()
        }
        None => without.prefix_expect(),
    };
    Ok(EntryPrefix { ns, db, tb: Cow::Borrowed(&ix.table_name), ix: ix.index_id }.typed(keys))
}

/// The ids of the page by name prefix and how many match: a walk of the `name_listing` keys from `lo` up to
/// `hi` (their values read only to match a status or framework), keeping the `offset + rows` newest below the
/// cursor. Memory grows with the page and its offset (at most with the matches), not with the history.
async fn name_walk(tx: &Transaction, ns: NamespaceId, db: DatabaseId, (lo, hi): (&str, &str), ask: &PageAsk<'_>) -> anyhow::Result<(Vec<RecordIdKey>, u64)> {
    let table = TableName::new("name_listing");
    let bound = |name: &str| Cow::Owned(RecordIdKey::Array(Array(vec![Value::from(name)])));
    let mut range = RecordPrefix { ns, db, tb: Cow::Borrowed(&table) }.range_where((Bound::Included(bound(lo)), Bound::Excluded(bound(hi))))?;
    let filtered = ask.status.is_some() || ask.framework.is_some();
    let keep = ask.offset as usize + ask.rows as usize;
    // The newest `keep` list keys seen so far: a min-heap, its top the oldest kept. It grows with what is kept
    // (at most the matches), never reserved from the asked offset, which any reader may set to 2³² − 1.
    let mut newest: std::collections::BinaryHeap<std::cmp::Reverse<Strand>> = std::collections::BinaryHeap::with_capacity(keep.min(BATCH as usize) + 1);
    let mut total = 0u64;
    loop {
        let (batch, last) = if filtered {
            let pairs = surrealdb_datastore::util::scan(&mut range, tx, BATCH).await?;
            let n = pairs.len();
            let mut matched = Vec::with_capacity(n);
            for (key, value) in pairs {
                let record = decode_record(&key, &value)?;
                let is = |name: &str, want: &str| matches!(field(&record.data, name), Some(Value::String(s)) if s.as_str() == want);
                let wanted = ask.status.is_none_or(|s| is("status", s)) && ask.framework.is_none_or(|f| is("framework", f));
                if wanted {
                    matched.push(RecordKey::decode_key(&key)?.id.into_owned());
                }
            }
            (matched, n)
        } else {
            let keys = surrealdb_datastore::util::scan_keys(&mut range, tx, BATCH).await?;
            let n = keys.len();
            let mut ids = Vec::with_capacity(n);
            for key in keys {
                ids.push(RecordKey::decode_key(&key)?.id.into_owned());
            }
            (ids, n)
        };
        for id in batch {
            let RecordIdKey::Array(Array(parts)) = id else { anyhow::bail!("a name_listing id that is not [name, list_key]") };
            let Some(Value::String(list_key)) = parts.into_iter().nth(1) else { anyhow::bail!("a name_listing id without its list_key") };
            total += 1;
            if ask.after.is_some_and(|a| list_key.as_str() >= a) {
                continue;
            }
            newest.push(std::cmp::Reverse(list_key));
            if newest.len() > keep {
                newest.pop();
            }
        }
        if last < BATCH as usize {
            break;
        }
    }
    let mut kept: Vec<Strand> = newest.into_iter().map(|std::cmp::Reverse(k)| k).collect();
    kept.sort_unstable_by(|a, b| b.cmp(a));
    let ids = kept.into_iter().skip(ask.offset as usize).map(RecordIdKey::String).collect();
    Ok((ids, total))
}

/// The total of a tally scope: the sum of its shards' `n` (a missing shard counts nothing), read as
/// `deployment_tally:[scope, 0]..=[scope, last]` reads them.
async fn tally(tx: &Transaction, ns: NamespaceId, db: DatabaseId, scope: &str) -> anyhow::Result<u64> {
    let table = TableName::new("deployment_tally");
    let bound = |shard: u32| Cow::Owned(RecordIdKey::Array(Array(vec![Value::from(scope), Value::from(i64::from(shard))])));
    let mut range = RecordPrefix { ns, db, tb: Cow::Borrowed(&table) }.range_where((Bound::Included(bound(0)), Bound::Included(bound(TALLY_SHARDS - 1))))?;
    // The range holds at most `TALLY_SHARDS` records: one read.
    let mut sum = 0i64;
    for (key, value) in surrealdb_datastore::util::scan(&mut range, tx, TALLY_SHARDS).await? {
        match field(&decode_record(&key, &value)?.data, "n") {
            Some(Value::Number(n)) => sum += n.to_int(),
            None | Some(Value::None) => {}
            Some(other) => anyhow::bail!("a tally whose n is {other:?}"),
        }
    }
    Ok(sum.max(0) as u64)
}

/// A record as stored under `key`, its id taken from the key (`exec/operators/scan/pipeline.rs` `decode_record`).
fn decode_record(key: &[u8], value: &[u8]) -> anyhow::Result<Record> {
    let decoded = RecordKey::decode_key(key)?;
    Record::kv_decode_value(value, RecordId { table: decoded.tb.into_owned(), key: decoded.id.into_owned() })
}

/// Field `name` of a stored object.
fn field<'v>(data: &'v Value, name: &str) -> Option<&'v Value> {
    match data {
        Value::Object(o) => o.get(name),
        _ => None,
    }
}

/// A stored deployment as a list row: without its recent events, with its id as `key`; `None` for an id whose
/// record is gone (an online index's entry is written in the record's transaction, so this does not happen;
/// skipped as the executor skips it). The record's `id` (`deployment:⟨…⟩`) is left out: a row is read by its `key`.
fn row(record: std::sync::Arc<Record>) -> Result<Option<serde_json::Value>, StoreError> {
    let data = std::sync::Arc::try_unwrap(record).map(|r| r.data).unwrap_or_else(|shared| shared.data.clone());
    let Value::Object(object) = data else { return Ok(None) };
    let mut out = serde_json::Map::with_capacity(object.len());
    for (name, value) in object.0 {
        match (name.as_str(), value) {
            ("recent_events", _) => {}
            ("id", Value::RecordId(rid)) => match rid.key {
                RecordIdKey::String(s) => {
                    out.insert("key".into(), serde_json::Value::String(s.into_string()));
                }
                other => return Err(StoreError::Corrupt(format!("a deployment whose id is {other:?}"))),
            },
            (_, value) => {
                out.insert(name.into_string(), json(value)?);
            }
        }
    }
    if !out.contains_key("key") {
        return Err(StoreError::Corrupt("a deployment without its id".into()));
    }
    Ok(Some(serde_json::Value::Object(out)))
}

/// A stored value as JSON, as `convert_value_to_public_value(v)?.into_json_value()` makes it (`surrealdb-types-3.3.5`
/// `value/into_json.rs`), without building the SDK's value first for the kinds a deployment holds (none, null,
/// booleans, integers, strings, arrays, objects); any other kind goes through that conversion.
fn json(value: Value) -> Result<serde_json::Value, StoreError> {
    Ok(match value {
        Value::None | Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(b),
        Value::Number(surrealdb_catalog::val::Number::Int(i)) => serde_json::Value::Number(i.into()),
        Value::String(s) => serde_json::Value::String(s.into_string()),
        Value::Array(Array(items)) => serde_json::Value::Array(items.into_iter().map(json).collect::<Result<_, _>>()?),
        Value::Object(object) => {
            let mut out = serde_json::Map::with_capacity(object.len());
            for (name, value) in object.0 {
                out.insert(name.into_string(), json(value)?);
            }
            serde_json::Value::Object(out)
        }
        other => convert_value_to_public_value(other).map_err(|e| StoreError::Corrupt(format!("a deployment row: {e}")))?.into_json_value(),
    })
}

#[cfg(test)]
mod tests {
    use crate::core::deployment::{DeploymentId, Framework, GuestType};
    use crate::core::listing::{Filter, PageStart};
    use crate::core::names::AppNamePrefix;
    use crate::core::status::Status;
    use crate::store::Store;

    /// Every page the direct walk answers is the page the queries answer: each filter (none, status, framework,
    /// both, name prefixes with and without them, a prefix nothing matches), from the start, after cursors that
    /// match the filter or not (and one past every id), at offsets inside and beyond the matches, at three sizes;
    /// on both embedded engines, with totals moved by status changes, and again after a restart (surrealkv).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_direct_walk_answers_what_the_queries_do() {
        let dir = tempfile::tempdir().unwrap();
        for url in [format!("surrealkv://{}", dir.path().join("db").display()), "mem://".to_string()] {
            let cfg = crate::config::DatabaseConfig { url: url.clone(), namespace: "t".into(), database: "t".into(), credentials: None };
            let store = Store::open(&cfg).await.unwrap();
            let frameworks = [Framework::Flask, Framework::Node, Framework::Static];
            let statuses = [Status::Running, Status::Failed, Status::Destroyed];
            let mut ids = Vec::new();
            for i in 0..60u32 {
                let name = match i % 3 {
                    0 => format!("alpha-{i}"),
                    1 => format!("alp-{i}"),
                    _ => format!("beta-{i}"),
                };
                let mut d = crate::export::hcl::tests::deployment(&name, GuestType::Vm, 100 + i);
                d.id = DeploymentId::generate();
                d.proxmox_id = None;
                d.status = Status::Pending;
                d.spec.framework = frameworks[(i as usize / 2) % 3];
                store.create_deployment(&d, "created").await.unwrap();
                if i % 4 != 0 {
                    let stored = store.get_deployment(&d.id).await.unwrap().unwrap();
                    let mut moved = stored.clone();
                    moved.status = statuses[(i as usize / 4) % 3];
                    store.save_deployment(&moved, Status::Pending, "moved").await.unwrap();
                }
                ids.push(d.id);
            }
            let ask = |after| super::PageAsk { status: None, framework: None, name: None, after, offset: 0, rows: 8, scope: "all" };
            let (rows, total) = store.direct_page(&ask(None)).await.unwrap().expect("the direct walk answers");
            assert_eq!((rows.len(), total), (8, 60), "{url}");
            compare(&store, &ids, &url).await;
            // A status index the walk needs is gone (a schema older than its migration): the queries answer.
            if url.starts_with("mem://") {
                store.run("REMOVE INDEX deployment_status_list ON deployment", serde_json::json!({})).await.unwrap();
                let running = super::PageAsk { status: Some("running"), scope: "s:running", ..ask(None) };
                assert!(store.direct_page(&running).await.unwrap().is_none(), "no walk without its index");
                let f = Filter { status: Some(Status::Running), ..Filter::default() };
                let direct = store.list_deployments(&f, 5, &PageStart::First).await.unwrap();
                let queried = store.list_deployments_by_query(&f, 5, &PageStart::First).await.unwrap();
                assert_eq!((direct.items, direct.total, direct.more), (queried.items, queried.total, queried.more));
            } else {
                assert!(store.close(std::time::Duration::from_secs(10)).await, "closed");
                let store = Store::open(&cfg).await.unwrap();
                compare(&store, &ids, &format!("{url} after a restart")).await;
                assert!(store.close(std::time::Duration::from_secs(10)).await, "closed again");
            }
        }
    }

    async fn compare(store: &Store, ids: &[DeploymentId], what: &str) {
        let prefix = |p: &str| Some(AppNamePrefix::parse(p).unwrap());
        let names = [None, prefix("a"), prefix("alp"), prefix("alpha-"), prefix("beta-1"), prefix("zzz")];
        let past_every_id = DeploymentId::parse("ffffffff-ffff-7fff-bfff-ffffffffffff").unwrap();
        let starts = [
            PageStart::First,
            PageStart::After(ids[45].clone()),
            PageStart::After(ids[10].clone()),
            PageStart::After(ids[0].clone()),
            PageStart::After(past_every_id),
            PageStart::Offset(0),
            PageStart::Offset(7),
            PageStart::Offset(59),
            PageStart::Offset(500),
            // Any reader may ask it: nothing is reserved from it.
            PageStart::Offset(u32::MAX),
        ];
        let mut compared = 0;
        for name in &names {
            for status in [None, Some(Status::Running), Some(Status::Pending)] {
                for framework in [None, Some(Framework::Node)] {
                    let f = Filter { status, framework, name: name.clone() };
                    for start in &starts {
                        for limit in [1, 7, 100] {
                            let direct = store.list_deployments(&f, limit, start).await.unwrap();
                            let queried = store.list_deployments_by_query(&f, limit, start).await.unwrap();
                            let ids = |p: &crate::core::listing::DeploymentPage| p.items.iter().map(|d| d.spec.name.to_string()).collect::<Vec<_>>();
                            assert_eq!(
                                (&direct.items, direct.total, direct.more),
                                (&queried.items, queried.total, queried.more),
                                "{what}: {f:?} from {start:?}, {limit}: {:?} against {:?}",
                                ids(&direct),
                                ids(&queried)
                            );
                            compared += usize::from(!queried.items.is_empty());
                        }
                    }
                }
            }
        }
        assert!(compared > 300, "{what}: most of the pages compared hold deployments ({compared})");
    }
}
