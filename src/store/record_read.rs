//! One record read straight from the embedded datastore's key-value layer: no query text, no plan, no executor.
//!
//! `GET /deployments/{id}` is the agent's hottest read. Through the SDK's `select`, SurrealDB 3.3.5 parses
//! `SELECT * FROM $what` (`surrealdb-3.3.5` `src/method/select.rs`, `surrealdb-core-3.3.5` `kvs/ds.rs`
//! `statements_for`), plans it, resolves the namespace and the database, runs the plan and converts its rows
//! (`exec/planner/select`, `exec/operators/fetch.rs`, `dbs/executor.rs`). Measured with `perf record --call-graph
//! dwarf` on the release agent reading spread ids of a 100,000-deployment store, the executor's part was about
//! 40% of the agent's CPU per read and the record's key-value read about 15%.
//!
//! Here the record is read as the executor's own `fetch_raw_record` reads it (`exec/operators/fetch.rs`): a read
//! transaction, the database's ids by name (`DatabaseProvider::get_db_by_name`: two point reads, as the
//! executor does them), `TableProvider::get_record`, and the stored value converted as the executor converts a row
//! (`surrealdb-expr-3.3.5` `val/mod.rs` `convert_value_to_public_value`). That is the same answer as
//! `SELECT * FROM ONLY <record>` for a table without computed fields, field permissions or read events, which holds
//! for every table of this schema (`migrations.rs` defines none; permissions do not apply to this process's
//! session, which has no user); `tests::the_direct_read_answers_what_select_does` compares the two on a stored
//! deployment and holds the table to having no computed field.

use surrealdb_catalog::providers::{DatabaseProvider, TableProvider};
use surrealdb_catalog::val::{convert_value_to_public_value, RecordIdKey, Strand, TableName, Value};
use surrealdb_core::kvs::Datastore;
use surrealdb_kvs::TransactionType;

use super::StoreError;

/// The record `table:⟨id⟩` (a string id) of database `db` in namespace `ns`, as JSON, or `None` when there is
/// none (or the namespace or database does not exist yet). Every failure is `Unavailable`: nothing was written.
pub(super) async fn read(kvs: &Datastore, ns: &str, db: &str, table: &str, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
    let tx = kvs.transaction(TransactionType::Read).await.map_err(unavailable)?;
    let found = async {
        let Some(database) = tx.get_db_by_name(ns, db, None).await? else { return Ok(None) };
        let table = TableName::new(table);
        let key = RecordIdKey::String(Strand::new(id));
        let record = tx.get_record(database.namespace_id, database.database_id, &table, &key, None).await?;
        anyhow::Ok(Some(record))
    }
    .await;
    // A read transaction holds its snapshot until it ends; how it ended is reported, not dropped.
    let ended = tx.cancel().await;
    // The transaction's read cache holds the record too; once it is gone the value is usually ours to move.
    drop(tx);
    let record = found.map_err(unavailable)?;
    ended.map_err(unavailable)?;
    let Some(record) = record else { return Ok(None) };
    let data = std::sync::Arc::try_unwrap(record).map(|r| r.data).unwrap_or_else(|shared| shared.data.clone());
    if matches!(data, Value::None) {
        return Ok(None);
    }
    let public = convert_value_to_public_value(data).map_err(|e| StoreError::Corrupt(format!("{table}:{id}: {e}")))?;
    Ok(Some(public.into_json_value()).filter(|v| !v.is_null()))
}

/// A failure of the datastore during a read: nothing was written, asking again is safe.
pub(super) fn unavailable(e: anyhow::Error) -> StoreError {
    StoreError::Unavailable(format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use crate::core::deployment::GuestType;

    /// The direct read answers exactly what `SELECT * FROM ONLY <record>` answers, for a deployment with its events,
    /// before and after the engine moved it from its memory table to a table on disk (a restart flushes), and for
    /// ids and tables that hold nothing; on the `mem://` engine too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_direct_read_answers_what_select_does() {
        let dir = tempfile::tempdir().unwrap();
        let urls = [format!("surrealkv://{}", dir.path().join("db").display()), "mem://".to_string()];
        for url in urls {
            let cfg = crate::config::DatabaseConfig { url: url.clone(), namespace: "t".into(), database: "t".into(), credentials: None };
            let store = crate::store::Store::open(&cfg).await.unwrap();
            let d = crate::export::hcl::tests::deployment("direct", GuestType::Vm, 100);
            store.create_deployment(&d, "created").await.unwrap();
            let same = |store: crate::store::Store, id: String, url: String| async move {
                let direct = store.stored_record("deployment", &id).await.unwrap();
                let selected = store.select_record("deployment", &id).await.unwrap();
                assert_eq!(direct, selected, "{url}: {id}");
                direct
            };
            let record = same(store.clone(), d.id.to_string(), url.clone()).await.expect("the record is found");
            assert_eq!(record["recent_events"].as_array().map(Vec::len), Some(1), "{record}");
            assert_eq!(same(store.clone(), "no-such-id".into(), url.clone()).await, None);
            assert_eq!(store.stored_record("no_such_table", "x").await.unwrap(), None);
            if url.starts_with("surrealkv://") {
                no_computed_field(&store).await;
                assert!(store.close(std::time::Duration::from_secs(10)).await, "closed");
                // A clean close flushes the memory table (surrealkv's `flush_on_close`, on by default), so the
                // read below finds the record in a table on disk.
                let tables = std::fs::read_dir(dir.path().join("db/sstables")).map(|d| d.count()).unwrap_or(0);
                assert!(tables > 0, "the record was flushed to a table on disk");
                let store = crate::store::Store::open(&cfg).await.unwrap();
                let again = same(store.clone(), d.id.to_string(), url.clone()).await;
                assert_eq!(again.as_ref(), Some(&record), "the same record after a restart");
                assert!(store.close(std::time::Duration::from_secs(10)).await, "closed again");
            }
        }
    }

    /// A computed field is evaluated by `SELECT` and not by the direct read: the one table read directly,
    /// `deployment`, has none at the latest schema.
    async fn no_computed_field(store: &crate::store::Store) {
        let info = store.run("INFO FOR TABLE deployment", serde_json::json!({})).await.unwrap();
        let fields = info[0][0]["fields"].as_object().cloned().unwrap_or_default();
        assert!(fields.len() > 10, "the table's fields are listed: {info:?}");
        for (name, def) in fields {
            let def = def.as_str().unwrap_or_default();
            assert!(!def.contains("COMPUTED") && !def.contains("<future>"), "deployment.{name} is computed at read: {def}");
        }
    }
}
