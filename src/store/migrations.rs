//! Versioned schema migrations, applied in order at start; a database newer than this binary is refused.

use serde_json::json;

use super::{Store, StoreError};

/// Each entry upgrades the schema from version `n - 1` to `n` (its index + 1). Append only.
const MIGRATIONS: &[&str] = &[
    // v1: deployments, their names, logs, events, audit, tokens.
    r#"
    DEFINE TABLE deployment SCHEMAFULL;
    DEFINE FIELD name ON deployment TYPE string;
    DEFINE FIELD guest_type ON deployment TYPE string ASSERT $value IN ['vm', 'lxc'];
    DEFINE FIELD framework ON deployment TYPE string;
    DEFINE FIELD repo_url ON deployment TYPE string;
    DEFINE FIELD branch ON deployment TYPE string;
    DEFINE FIELD cpu ON deployment TYPE int;
    DEFINE FIELD memory_mib ON deployment TYPE int;
    DEFINE FIELD disk_gb ON deployment TYPE int;
    DEFINE FIELD node ON deployment TYPE option<string>;
    DEFINE FIELD auto_redeploy ON deployment TYPE bool;
    DEFINE FIELD status ON deployment TYPE string;
    DEFINE FIELD proxmox_id ON deployment TYPE option<int>;
    DEFINE FIELD proxmox_node ON deployment TYPE option<string>;
    DEFINE FIELD ip_address ON deployment TYPE option<string>;
    DEFINE FIELD url ON deployment TYPE option<string>;
    DEFINE FIELD commit ON deployment TYPE option<string>;
    DEFINE FIELD error_message ON deployment TYPE option<string>;
    DEFINE FIELD terraform_output ON deployment TYPE option<string>;
    DEFINE FIELD created_at ON deployment TYPE int;
    DEFINE FIELD updated_at ON deployment TYPE int;
    DEFINE FIELD deployed_at ON deployment TYPE option<int>;
    DEFINE FIELD revision ON deployment TYPE int;
    DEFINE INDEX deployment_status ON deployment FIELDS status;
    DEFINE INDEX deployment_name ON deployment FIELDS name;
    DEFINE INDEX deployment_created ON deployment FIELDS created_at;

    DEFINE TABLE name_claim SCHEMAFULL;
    DEFINE FIELD deployment ON name_claim TYPE string;

    DEFINE TABLE log_line SCHEMAFULL;
    DEFINE FIELD deployment ON log_line TYPE string;
    DEFINE FIELD seq ON log_line TYPE int;
    DEFINE FIELD ts ON log_line TYPE int;
    DEFINE FIELD level ON log_line TYPE string ASSERT $value IN ['debug', 'info', 'warn', 'error'];
    DEFINE FIELD step ON log_line TYPE string;
    DEFINE FIELD text ON log_line TYPE string;
    DEFINE INDEX log_line_dep ON log_line FIELDS deployment, seq;

    DEFINE TABLE deployment_event SCHEMAFULL;
    DEFINE FIELD deployment ON deployment_event TYPE string;
    DEFINE FIELD at ON deployment_event TYPE int;
    DEFINE FIELD from ON deployment_event TYPE option<string>;
    DEFINE FIELD to ON deployment_event TYPE string;
    DEFINE FIELD message ON deployment_event TYPE string;
    DEFINE INDEX deployment_event_dep ON deployment_event FIELDS deployment, at;

    DEFINE TABLE audit SCHEMAFULL;
    DEFINE FIELD at ON audit TYPE int;
    DEFINE FIELD actor ON audit TYPE string;
    DEFINE FIELD door ON audit TYPE string;
    DEFINE FIELD action ON audit TYPE string;
    DEFINE FIELD target ON audit TYPE option<string>;
    DEFINE FIELD detail ON audit TYPE string;
    DEFINE INDEX audit_at ON audit FIELDS at;

    DEFINE TABLE api_token SCHEMAFULL;
    DEFINE FIELD name ON api_token TYPE string;
    DEFINE FIELD sha256 ON api_token TYPE string;
    DEFINE FIELD scopes ON api_token TYPE array<string>;
    DEFINE FIELD created_at ON api_token TYPE int;
    DEFINE INDEX api_token_sha ON api_token FIELDS sha256 UNIQUE;
    "#,
    // v2: provisioning — VMID claims, work leases, the persisted step of each provisioning.
    r#"
    DEFINE TABLE vmid_claim SCHEMAFULL;
    DEFINE FIELD deployment ON vmid_claim TYPE string;
    DEFINE FIELD at ON vmid_claim TYPE int;
    DEFINE INDEX vmid_claim_dep ON vmid_claim FIELDS deployment;

    DEFINE TABLE lease SCHEMAFULL;
    DEFINE FIELD holder ON lease TYPE string;
    DEFINE FIELD token ON lease TYPE string;
    DEFINE FIELD expires_at ON lease TYPE int;

    DEFINE TABLE provision SCHEMAFULL;
    DEFINE FIELD state ON provision TYPE object FLEXIBLE;
    DEFINE FIELD updated_at ON provision TYPE int;
    "#,
    // v3: static address claims.
    r#"
    DEFINE TABLE ip_claim SCHEMAFULL;
    DEFINE FIELD deployment ON ip_claim TYPE string;
    DEFINE FIELD at ON ip_claim TYPE int;
    DEFINE INDEX ip_claim_dep ON ip_claim FIELDS deployment;
    "#,
    // v4: GitHub webhook deliveries (one record per delivery GUID) and claims on pushes already handled.
    r#"
    DEFINE TABLE webhook_delivery SCHEMAFULL;
    DEFINE FIELD delivery ON webhook_delivery TYPE string;
    DEFINE FIELD event ON webhook_delivery TYPE string;
    DEFINE FIELD repo ON webhook_delivery TYPE option<string>;
    DEFINE FIELD repo_hosts ON webhook_delivery TYPE array<string>;
    DEFINE FIELD git_ref ON webhook_delivery TYPE option<string>;
    DEFINE FIELD before_commit ON webhook_delivery TYPE option<string>;
    DEFINE FIELD after_commit ON webhook_delivery TYPE option<string>;
    DEFINE FIELD pusher ON webhook_delivery TYPE option<string>;
    DEFINE FIELD hook_id ON webhook_delivery TYPE option<int>;
    DEFINE FIELD received_at ON webhook_delivery TYPE int;
    DEFINE FIELD updated_at ON webhook_delivery TYPE int;
    DEFINE FIELD outcome ON webhook_delivery TYPE string;
    DEFINE FIELD detail ON webhook_delivery TYPE option<string>;
    DEFINE FIELD deployments ON webhook_delivery TYPE array<string>;
    DEFINE FIELD targets ON webhook_delivery TYPE array<object>;
    DEFINE FIELD targets[*].deployment ON webhook_delivery TYPE string;
    DEFINE FIELD targets[*].outcome ON webhook_delivery TYPE string;
    DEFINE FIELD targets[*].detail ON webhook_delivery TYPE option<string>;
    DEFINE FIELD redeliveries ON webhook_delivery TYPE int;
    DEFINE INDEX webhook_delivery_guid ON webhook_delivery FIELDS delivery UNIQUE;
    DEFINE INDEX webhook_delivery_received ON webhook_delivery FIELDS received_at;

    DEFINE TABLE push_claim SCHEMAFULL;
    DEFINE FIELD delivery ON push_claim TYPE string;
    DEFINE FIELD at ON push_claim TYPE int;
    "#,
    // v5: deploying apps — the health check path, releases, sealed environment variables.
    r#"
    DEFINE FIELD health_path ON deployment TYPE option<string>;

    DEFINE TABLE release SCHEMAFULL;
    DEFINE FIELD deployment ON release TYPE string;
    DEFINE FIELD release_id ON release TYPE string;
    DEFINE FIELD commit ON release TYPE string;
    DEFINE FIELD status ON release TYPE string ASSERT $value IN ['deploying', 'active', 'failed', 'superseded'];
    DEFINE FIELD step ON release TYPE string;
    DEFINE FIELD trigger ON release TYPE string;
    DEFINE FIELD timings ON release TYPE object FLEXIBLE;
    DEFINE FIELD error ON release TYPE option<string>;
    DEFINE FIELD created_at ON release TYPE int;
    DEFINE FIELD finished_at ON release TYPE option<int>;
    DEFINE INDEX release_dep ON release FIELDS deployment, created_at;

    DEFINE TABLE env_var SCHEMAFULL;
    DEFINE FIELD deployment ON env_var TYPE string;
    DEFINE FIELD name ON env_var TYPE string;
    DEFINE FIELD sealed ON env_var TYPE string;
    DEFINE FIELD updated_at ON env_var TYPE int;
    DEFINE INDEX env_var_dep ON env_var FIELDS deployment;
    "#,
    // v6: schedules, their runs (each run record is the claim on its occurrence), deployment expiry times.
    r#"
    DEFINE TABLE schedule SCHEMAFULL;
    DEFINE FIELD cron ON schedule TYPE string;
    DEFINE FIELD timezone ON schedule TYPE string;
    DEFINE FIELD action ON schedule TYPE string;
    DEFINE FIELD keep ON schedule TYPE option<int>;
    DEFINE FIELD target ON schedule TYPE string;
    DEFINE FIELD enabled ON schedule TYPE bool;
    DEFINE FIELD catch_up ON schedule TYPE bool;
    DEFINE FIELD created_by ON schedule TYPE string;
    DEFINE FIELD created_at ON schedule TYPE int;
    DEFINE FIELD updated_at ON schedule TYPE int;
    DEFINE FIELD last_occurrence ON schedule TYPE option<int>;
    DEFINE INDEX schedule_created ON schedule FIELDS created_at;

    DEFINE TABLE schedule_run SCHEMAFULL;
    DEFINE FIELD schedule ON schedule_run TYPE string;
    DEFINE FIELD occurrence ON schedule_run TYPE int;
    DEFINE FIELD agent ON schedule_run TYPE string;
    DEFINE FIELD token ON schedule_run TYPE string;
    DEFINE FIELD started_at ON schedule_run TYPE int;
    DEFINE FIELD ended_at ON schedule_run TYPE option<int>;
    DEFINE FIELD expires_at ON schedule_run TYPE int;
    DEFINE FIELD outcome ON schedule_run TYPE string ASSERT $value IN ['running', 'succeeded', 'failed', 'skipped'];
    DEFINE FIELD message ON schedule_run TYPE string;
    DEFINE INDEX schedule_run_schedule ON schedule_run FIELDS schedule, occurrence;

    DEFINE TABLE deployment_expiry SCHEMAFULL;
    DEFINE FIELD deployment ON deployment_expiry TYPE string;
    DEFINE FIELD expires_at ON deployment_expiry TYPE int;
    DEFINE FIELD set_by ON deployment_expiry TYPE string;
    DEFINE FIELD set_at ON deployment_expiry TYPE int;
    DEFINE INDEX deployment_expiry_at ON deployment_expiry FIELDS expires_at;
    "#,
    // v7: a deployment's own start command.
    r#"
    DEFINE FIELD start_command ON deployment TYPE option<string>;
    "#,
    // v8: paths whose data outlives releases.
    r#"
    DEFINE FIELD persistent_paths ON deployment TYPE option<array<string>>;
    "#,
    // v9: the health check's patience and expected status, per deployment.
    r#"
    DEFINE FIELD health_timeout_secs ON deployment TYPE option<int>;
    DEFINE FIELD health_status ON deployment TYPE option<int>;
    "#,
    // v10: a GET by id is one record read (the row keeps its last 100 status changes); lists walk an index per filter from their start or from a cursor: `list_key` (the id as a
    // field; ids are UUIDv7, so it sorts by creation) ends each of them. Totals are tallies kept in the
    // same transactions as the deployments (see `store::deployments::TALLY_SHARDS`), started here
    // from what the table holds.
    r#"
    DEFINE FIELD list_key ON deployment TYPE string DEFAULT '';
    DEFINE FIELD recent_events ON deployment TYPE option<array<object>>;
    DEFINE FIELD recent_events[*].at ON deployment TYPE int;
    DEFINE FIELD recent_events[*].from ON deployment TYPE option<string>;
    DEFINE FIELD recent_events[*].to ON deployment TYPE string;
    DEFINE FIELD recent_events[*].message ON deployment TYPE string;
    UPDATE deployment SET list_key = record::id(id),
        recent_events = array::reverse((SELECT at, from, to, message FROM deployment_event WHERE deployment = record::id($parent.id) ORDER BY at DESC LIMIT 100))
        RETURN NONE;
    -- The unfiltered list's index was `deployment_list ON deployment FIELDS list_key` here; v14 replaced it
    -- (SurrealDB cannot define and remove one index in one transaction, which a fresh database's upgrade is).
    DEFINE INDEX deployment_status_list ON deployment FIELDS status, list_key;
    DEFINE INDEX deployment_framework_list ON deployment FIELDS framework, list_key;
    DEFINE INDEX deployment_status_framework_list ON deployment FIELDS status, framework, list_key;
    DEFINE INDEX deployment_name_list ON deployment FIELDS name, list_key;

    DEFINE TABLE deployment_tally SCHEMAFULL;
    DEFINE FIELD n ON deployment_tally TYPE int DEFAULT 0;
    FOR $g IN (SELECT status, framework, count() AS n FROM deployment GROUP BY status, framework) {
        FOR $scope IN ['all', string::concat('s:', $g.status), string::concat('f:', $g.framework), string::concat('s:', $g.status, '|f:', $g.framework)] {
            UPSERT type::record('deployment_tally', [$scope, 0]) SET n += $g.n RETURN NONE;
        };
    };
    "#,
    // v11: webhook deliveries say which hook sent them, which delivery first carried the same push, how often a GUID
    // was processed again (and what its earlier attempts led to), and a refused body's size.
    r#"
    DEFINE FIELD hook_target ON webhook_delivery TYPE option<string>;
    DEFINE FIELD same_push_as ON webhook_delivery TYPE option<string>;
    DEFINE FIELD body_bytes ON webhook_delivery TYPE option<int>;
    DEFINE FIELD retries ON webhook_delivery TYPE int DEFAULT 0;
    DEFINE FIELD earlier ON webhook_delivery TYPE array<object> DEFAULT [];
    DEFINE FIELD earlier[*].outcome ON webhook_delivery TYPE string;
    DEFINE FIELD earlier[*].detail ON webhook_delivery TYPE option<string>;
    DEFINE FIELD earlier[*].at ON webhook_delivery TYPE int;
    UPDATE webhook_delivery SET retries = 0, earlier = [] RETURN NONE;
    "#,
    // v12: a schedule whose target deployment was destroyed is kept for the record and marked so (issue #23);
    // schedules disabled by a destroy before this version are marked from their target's status.
    r#"
    DEFINE FIELD target_destroyed ON schedule TYPE bool DEFAULT false;
    UPDATE schedule SET target_destroyed = false RETURN NONE;
    FOR $s IN (SELECT id, target FROM schedule WHERE target != 'all' AND enabled = false) {
        IF (SELECT VALUE status FROM ONLY type::record('deployment', $s.target)) = 'destroyed' {
            UPDATE $s.id SET target_destroyed = true RETURN NONE;
        };
    };
    "#,
    // v13: the deploy figures of `/status` and `/metrics` cost the same whatever the history holds: each
    // finished release is counted once in `release_tally:[ok|failed, shard]` by the write that finishes it
    // (`store::releases::COUNT_FINISH`), started here from what the table holds, and the duration quantiles
    // walk the newest finished releases of a status backward on `release_done`.
    r#"
    DEFINE TABLE IF NOT EXISTS release_tally SCHEMAFULL;
    DEFINE FIELD IF NOT EXISTS n ON release_tally TYPE int DEFAULT 0;
    DEFINE FIELD IF NOT EXISTS sum_ms ON release_tally TYPE int DEFAULT 0;
    -- A recount (applied again to a store marked older, it counts once).
    DELETE release_tally RETURN NONE;
    FOR $g IN (SELECT outcome, count() AS n, math::sum(ms) AS ms FROM (
        SELECT IF status = 'failed' { 'failed' } ELSE { 'ok' } AS outcome, finished_at - created_at AS ms
        FROM release WHERE finished_at != NONE AND status IN ['active', 'superseded', 'failed']
    ) GROUP BY outcome) {
        UPSERT type::record('release_tally', [$g.outcome, 0]) SET n += $g.n, sum_ms += $g.ms RETURN NONE;
    };
    -- After the count: a query in the transaction that defines an index reads it, and it is not filled yet.
    DEFINE INDEX IF NOT EXISTS release_done ON release FIELDS status, finished_at;
    "#,
    // v14: the unfiltered list walks a compound index like the filtered ones, so it stops after a page:
    // SurrealDB caps a walk at the LIMIT only on a compound index with an equality prefix (see
    // `store::deployments::ListQuery`); every row gets the same `list_scope`.
    r#"
    DEFINE FIELD IF NOT EXISTS list_scope ON deployment TYPE string DEFAULT 'all';
    REMOVE INDEX IF EXISTS deployment_list ON deployment;
    DEFINE INDEX IF NOT EXISTS deployment_all_list ON deployment FIELDS list_scope, list_key;
    -- After the index: an index defined in a transaction is built from the rows as they were before it.
    UPDATE deployment SET list_scope = 'all' RETURN NONE;
    "#,
    // v15: provisioning progress is one shape per step (`core::provision::Progress`, `store::provision`): the task
    // waited for is `task` (was `upid`), the guest's address `ip` (was `ipv4`), the last step `ready` (was `done`).
    // Fields a step does not have were never written for it, so the rest of a row reads as it is.
    r#"
    UPDATE provision SET state.task = state.upid, state.ip = state.ipv4, state.upid = NONE, state.ipv4 = NONE RETURN NONE;
    UPDATE provision SET state.step = 'ready' WHERE state.step = 'done' RETURN NONE;
    "#,
    // v16: a deployment's path filters and the tags that deploy it (issue #24).
    r#"
    DEFINE FIELD IF NOT EXISTS paths ON deployment TYPE option<array<string>>;
    DEFINE FIELD IF NOT EXISTS deploy_tags ON deployment TYPE option<string>;
    "#,
    // v17: the GitHub repository id a deployment was pushed from (its record id is the deployment's), so a rename
    // keeps routing (issue #24).
    r#"
    DEFINE TABLE IF NOT EXISTS repo_binding SCHEMAFULL;
    DEFINE FIELD IF NOT EXISTS repo_id ON repo_binding TYPE int;
    DEFINE FIELD IF NOT EXISTS full_name ON repo_binding TYPE string;
    DEFINE FIELD IF NOT EXISTS at ON repo_binding TYPE int;
    DEFINE INDEX IF NOT EXISTS repo_binding_repo ON repo_binding FIELDS repo_id;
    "#,
    // v18: pull-request previews (issue #24): a deployment's preview options, and one record per pull request and
    // parent deployment (its record id `<parent>_<number>`) naming the preview deployment, the head commit it is to
    // run and the PR comment that shows it.
    r#"
    DEFINE FIELD IF NOT EXISTS previews ON deployment TYPE option<bool>;
    DEFINE FIELD IF NOT EXISTS previews_from_forks ON deployment TYPE option<bool>;
    DEFINE FIELD IF NOT EXISTS preview_ttl_hours ON deployment TYPE option<int>;
    DEFINE TABLE IF NOT EXISTS preview SCHEMAFULL;
    DEFINE FIELD IF NOT EXISTS parent ON preview TYPE string;
    DEFINE FIELD IF NOT EXISTS number ON preview TYPE int;
    DEFINE FIELD IF NOT EXISTS repo ON preview TYPE string;
    DEFINE FIELD IF NOT EXISTS deployment ON preview TYPE string;
    DEFINE FIELD IF NOT EXISTS head_sha ON preview TYPE string;
    DEFINE FIELD IF NOT EXISTS comment_id ON preview TYPE option<int>;
    DEFINE FIELD IF NOT EXISTS created_at ON preview TYPE int;
    DEFINE FIELD IF NOT EXISTS updated_at ON preview TYPE int;
    DEFINE INDEX IF NOT EXISTS preview_deployment ON preview FIELDS deployment UNIQUE;
    "#,
    // v19: where a deployment restored from a backup comes from (its record id is the deployment's; issue #23).
    r#"
    DEFINE TABLE IF NOT EXISTS restore_source SCHEMAFULL;
    DEFINE FIELD IF NOT EXISTS backup ON restore_source TYPE string;
    DEFINE FIELD IF NOT EXISTS from ON restore_source TYPE string;
    DEFINE FIELD IF NOT EXISTS node ON restore_source TYPE string;
    DEFINE FIELD IF NOT EXISTS host_key ON restore_source TYPE option<string>;
    DEFINE FIELD IF NOT EXISTS commit ON restore_source TYPE option<string>;
    "#,
    // v20: pushes are routed by an index on the repository's `owner/name` (lowercase; `RepoUrl::full_name`), not by a
    // scan of every deployment's URL (issue #18). Rows written before it get the name from their URL: the path after
    // `scheme://authority/` or `user@host:`, without a trailing `.git` or `/` (as `RepoUrl::from_stored` reads it).
    r#"
    DEFINE FIELD IF NOT EXISTS repo_name ON deployment TYPE string DEFAULT '';
    DEFINE INDEX IF NOT EXISTS deployment_repo_name ON deployment FIELDS repo_name;
    -- After the index: an index defined in a transaction is built from the rows as they were before it.
    UPDATE deployment SET repo_name = string::replace(
        string::replace(string::lowercase(repo_url), <regex> "^[a-z][a-z0-9+.-]*://[^/]*/|^[^@:/]*@[^:/]*:", ''),
        <regex> "([.]git)?/*$", ''
    ) RETURN NONE;
    "#,
    // v21: a parent's previews are found to destroy them with it, and why a preview ended is kept for its pull
    // request's comment; a pull request delivery keeps its event, so one not handled before a stop is handled at the
    // next start (issue #24).
    r#"
    DEFINE FIELD IF NOT EXISTS ended ON preview TYPE option<string>;
    DEFINE INDEX IF NOT EXISTS preview_parent ON preview FIELDS parent;
    DEFINE FIELD IF NOT EXISTS pull_request ON webhook_delivery TYPE option<string>;
    "#,
    // v22: a listing by name prefix walks `name_listing`, one small record per deployment whose id is its
    // `[name, list_key]` and which carries its status and framework, kept in the transactions that create a
    // deployment or change its status (`store::deployments::ListQuery`). Walking `deployment_name_list` read
    // every matching deployment whole, twice (page and count): 1,111 matches cost 132–182 ms at 100,000
    // stored. That index is no longer read; it stays: a fresh database applies v10 and this in one transaction,
    // in which SurrealDB cannot define and remove one index (see v14), and the rebuilds recorded for v10 and
    // v14 name it.
    r#"
    DEFINE TABLE IF NOT EXISTS name_listing SCHEMAFULL;
    DEFINE FIELD IF NOT EXISTS status ON name_listing TYPE string;
    DEFINE FIELD IF NOT EXISTS framework ON name_listing TYPE string;
    FOR $d IN (SELECT name, list_key, status, framework FROM deployment) {
        UPSERT type::record('name_listing', [$d.name, $d.list_key]) CONTENT { status: $d.status, framework: $d.framework } RETURN NONE;
    };
    "#,
];

/// The schema version this binary writes.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

pub async fn current_version(store: &Store) -> Result<i64, StoreError> {
    let rows = store.run("SELECT VALUE version FROM ONLY type::record('schema_meta', 'current')", json!({})).await;
    match rows {
        Ok(r) => Ok(r.first().and_then(|s| s.first()).and_then(|v| v.as_i64()).unwrap_or(0)),
        // A fresh database has no schema_meta table yet.
        Err(StoreError::Unavailable(m) | StoreError::Refused(m)) if m.contains("does not exist") => Ok(0),
        Err(e) => Err(e),
    }
}

/// Indexes a migration fills from values it writes in the same transaction, by the version that
/// defines them. SurrealDB 3.3.5 builds an index defined in a transaction from the rows as they were
/// before it: v10 sets `list_key` on every row and then defines the list indexes, so on a database that
/// held deployments before v10 they were built with no `list_key` (and a cursor walk returned rows
/// twice). They are rebuilt after the commit that applies their version, and once more by v14 for
/// stores that went through v10 before this was known.
const REBUILDS: &[(i64, &[(&str, &str)])] = &[(10, V10_LIST_INDEXES), (14, V10_LIST_INDEXES)];

const V10_LIST_INDEXES: &[(&str, &str)] = &[
    ("deployment_status_list", "deployment"),
    ("deployment_framework_list", "deployment"),
    ("deployment_status_framework_list", "deployment"),
    ("deployment_name_list", "deployment"),
];

/// Brings the schema up to `target` (`LATEST` outside tests); refuses a database newer than this binary.
pub async fn apply(store: &Store, target: i64) -> Result<(), StoreError> {
    let found = current_version(store).await?;
    if found > LATEST {
        return Err(StoreError::NewerSchema { found, known: LATEST });
    }
    let target = target.clamp(0, LATEST);
    if found < target {
        // Every pending migration in one transaction: an upgrade is applied whole or not at all, and a
        // fresh database is ready after one commit instead of one per version. The indexes to rebuild
        // are recorded in the same commit, so a stop before they are rebuilt resumes at the next start.
        let pending = MIGRATIONS[found as usize..target as usize].concat();
        let mut rebuild: Vec<[&str; 2]> = if found == 0 {
            Vec::new() // a fresh database: no row was written before its indexes
        } else {
            REBUILDS.iter().filter(|(v, _)| found < *v && *v <= target).flat_map(|(_, ix)| ix.iter().map(|(i, t)| [*i, *t])).collect()
        };
        rebuild.sort_unstable();
        rebuild.dedup();
        store
            .transaction(
                &format!("{pending}\nUPSERT type::record('schema_meta', 'current') CONTENT {{ version: $version, applied_at: $now, indexes_to_rebuild: $rebuild }};"),
                json!({ "version": target, "now": super::now_millis(), "rebuild": rebuild }),
            )
            .await?;
        tracing::info!(from = found, to = target, "applied database migrations");
    }
    rebuild_pending(store).await
}

/// Rebuilds the indexes the last upgrade recorded (see `REBUILDS`), then clears the record.
async fn rebuild_pending(store: &Store) -> Result<(), StoreError> {
    let rows = store.run("SELECT VALUE indexes_to_rebuild FROM ONLY type::record('schema_meta', 'current')", json!({})).await?;
    // The array's elements, one `[index, table]` pair each (absent before any upgrade recorded one).
    let pending: Vec<(String, String)> = rows
        .into_iter()
        .next()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| Some((p.get(0)?.as_str()?.to_string(), p.get(1)?.as_str()?.to_string())))
        .collect();
    for (index, table) in &pending {
        // Names from `REBUILDS` only: a value read back that is not one of them is refused, not run.
        if !REBUILDS.iter().any(|(_, ix)| ix.iter().any(|(i, t)| i == index && t == table)) {
            return Err(StoreError::Corrupt(format!("schema_meta asks to rebuild an unknown index {index} on {table}")));
        }
        store.run(&format!("REBUILD INDEX {index} ON {table}"), json!({})).await?;
        tracing::info!(%index, %table, "rebuilt an index filled by a migration");
    }
    if !pending.is_empty() {
        store.run("UPDATE type::record('schema_meta', 'current') SET indexes_to_rebuild = [] RETURN NONE", json!({})).await?;
    }
    Ok(())
}

/// Marks the database as written by a future version (tests of the refusal path).
#[doc(hidden)]
pub async fn force_version(store: &Store, version: i64) -> Result<(), StoreError> {
    store.run("UPSERT type::record('schema_meta', 'current') CONTENT { version: $v, applied_at: 0 }", json!({ "v": version })).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::config::DatabaseConfig;
    use crate::core::deployment::Framework;
    use crate::core::status::Status;
    use crate::store::deployments::{Filter, PageStart};
    use crate::store::Store;

    /// v10 on a database that already holds deployments (as v9 wrote them): they gain their list key,
    /// list newest first, page by cursor, and are counted by the new counters.
    #[tokio::test]
    async fn v10_indexes_and_counts_deployments_written_before_it() {
        let cfg = DatabaseConfig { url: "mem://".into(), namespace: "t".into(), database: "t".into(), credentials: None };
        let store = Store::open_at_schema(&cfg, 9).await.unwrap();
        let ids: Vec<String> = (0..5).map(|_| crate::core::deployment::DeploymentId::generate().to_string()).collect();
        for (i, id) in ids.iter().enumerate() {
            let row = json!({
                "name": format!("old-{i}"), "guest_type": "lxc", "framework": if i % 2 == 0 { "flask" } else { "node" },
                "repo_url": "https://github.com/o/r", "branch": "main", "cpu": 1, "memory_mib": 512, "disk_gb": 8,
                "auto_redeploy": false, "status": if i < 2 { "running" } else { "pending" }, "created_at": 1_000 + i as i64,
                "updated_at": 1_000 + i as i64, "revision": 0,
            });
            store.run("CREATE type::record('deployment', $id) CONTENT $row RETURN NONE", json!({ "id": id, "row": row })).await.unwrap();
        }
        for (at, to) in [(1_000, "pending"), (1_001, "running")] {
            store
                .run("CREATE deployment_event CONTENT { deployment: $id, at: $at, to: $to, message: 'before v10' } RETURN NONE", json!({ "id": ids[0], "at": at, "to": to }))
                .await
                .unwrap();
        }
        super::apply(&store, super::LATEST).await.unwrap();
        let id0 = crate::core::deployment::DeploymentId::parse(&ids[0]).unwrap();
        let detail = store.get_deployment_with_events(&id0).await.unwrap().unwrap();
        let trail: Vec<&str> = detail.1.iter().map(|e| e.to.as_str()).collect();
        assert_eq!(trail, ["pending", "running"], "the row keeps the history written before it, oldest first");
        let all = store.list_deployments(&Filter::default(), 2, &PageStart::First).await.unwrap();
        assert_eq!((all.total, all.more), (5, true));
        let listed: Vec<String> = all.items.iter().map(|d| d.id.to_string()).collect();
        assert_eq!(listed, vec![ids[4].clone(), ids[3].clone()], "newest first");
        let rest = store.list_deployments(&Filter::default(), 10, &PageStart::After(all.items[1].id.clone())).await.unwrap();
        assert_eq!(rest.items.iter().map(|d| d.id.to_string()).collect::<Vec<_>>(), vec![ids[2].clone(), ids[1].clone(), ids[0].clone()]);
        assert!(!rest.more);
        // Walked by cursor one row at a time, a status filter returns each of its rows once, newest first.
        let pending = Filter { status: Some(Status::Pending), ..Filter::default() };
        let (mut walked, mut start) = (Vec::new(), PageStart::First);
        loop {
            let page = store.list_deployments(&pending, 1, &start).await.unwrap();
            walked.extend(page.items.iter().map(|d| d.id.to_string()));
            match (page.more, page.items.last()) {
                (true, Some(last)) if walked.len() <= 5 => start = PageStart::After(last.id.clone()),
                _ => break,
            }
        }
        assert_eq!(walked, vec![ids[4].clone(), ids[3].clone(), ids[2].clone()]);
        let running_flask = Filter { status: Some(Status::Running), framework: Some(Framework::Flask), name: None };
        let page = store.list_deployments(&running_flask, 10, &PageStart::First).await.unwrap();
        assert_eq!((page.total, page.items.len(), page.items[0].id.to_string()), (1, 1, ids[0].clone()));
        let (_, count_plan) = store.list_deployments_plan(&running_flask, &PageStart::First).await.unwrap();
        assert!(count_plan.to_string().contains("deployment_tally"), "the total is the tally: {count_plan}");
        // v22 lists them by name prefix too, with their status as stored.
        let named = |p: &str, status: Option<Status>| Filter { name: Some(crate::core::names::AppNamePrefix::parse(p).unwrap()), status, framework: None };
        let page = store.list_deployments(&named("old-", None), 3, &PageStart::First).await.unwrap();
        assert_eq!((page.total, page.more), (5, true));
        assert_eq!(page.items.iter().map(|d| d.id.to_string()).collect::<Vec<_>>(), vec![ids[4].clone(), ids[3].clone(), ids[2].clone()]);
        let rest = store.list_deployments(&named("old-", None), 3, &PageStart::After(page.items[2].id.clone())).await.unwrap();
        assert_eq!(rest.items.iter().map(|d| d.id.to_string()).collect::<Vec<_>>(), vec![ids[1].clone(), ids[0].clone()]);
        let running = store.list_deployments(&named("old", Some(Status::Running)), 10, &PageStart::First).await.unwrap();
        assert_eq!((running.total, running.items.len()), (2, 2));
        assert_eq!(store.list_deployments(&named("old-3", None), 10, &PageStart::Offset(0)).await.unwrap().total, 1);
    }

    /// v13 on releases as v12 wrote them: the finished ones are counted in the new tallies (once each,
    /// by outcome, with the live ones' durations summed); v14 replaces the unfiltered list's index.
    #[tokio::test]
    async fn v13_counts_the_releases_written_before_it() {
        let cfg = DatabaseConfig { url: "mem://".into(), namespace: "t".into(), database: "t".into(), credentials: None };
        let store = Store::open_at_schema(&cfg, 12).await.unwrap();
        // As v10 to v13 left the unfiltered list's index (v10 no longer defines it).
        store.run("DEFINE INDEX deployment_list ON deployment FIELDS list_key", json!({})).await.unwrap();
        let rows = [("active", Some(1_500)), ("superseded", Some(2_500)), ("superseded", Some(4_000)), ("failed", Some(300)), ("deploying", None)];
        for (i, (status, took)) in rows.into_iter().enumerate() {
            let mut row = json!({
                "deployment": "d", "release_id": format!("r{i}"), "commit": "0123456789abcdef0123456789abcdef01234567", "status": status,
                "step": "health", "trigger": "push", "timings": {}, "created_at": 10_000 * i as i64,
            });
            if let Some(t) = took {
                row["finished_at"] = json!(10_000 * i as i64 + t);
            }
            store.run("CREATE type::record('release', $key) CONTENT $row RETURN NONE", json!({ "key": format!("d_r{i}"), "row": row })).await.unwrap();
        }
        super::apply(&store, super::LATEST).await.unwrap();
        let stats = store.release_stats().await.unwrap();
        assert_eq!((stats.succeeded, stats.failed, stats.succeeded_ms_sum), (3, 1, 8_000));
        assert_eq!(stats.recent_durations_ms, [1_500, 2_500, 4_000]);
        let info = store.run("INFO FOR TABLE deployment", json!({})).await.unwrap();
        let indexes = info[0][0]["indexes"].as_object().unwrap();
        assert!(indexes.contains_key("deployment_all_list") && !indexes.contains_key("deployment_list"), "v14 replaced the index: {indexes:?}");
    }

    /// An upgrade that rewrites more rows than the engine's in-memory table holds commits (its one
    /// transaction gets a table of its own size) and is there after a restart replays it. Before the
    /// surrealkv patch (`vendor/surrealkv/PATCHES.md`, 6) it failed with "Memtable arena is full" after
    /// its log record was written, so an agent with many deployments could not start after an upgrade.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upgrade_larger_than_the_memtable_commits_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        // 64 KiB tables; v14 rewrites every deployment row (about 1 KiB each) in one transaction.
        let url = format!("surrealkv://{}?max_memtable_size=65536", dir.path().join("db").display());
        let cfg = DatabaseConfig { url, namespace: "t".into(), database: "t".into(), credentials: None };
        let store = Store::open_at_schema(&cfg, 13).await.unwrap();
        // Rows as v13 wrote them (no `list_scope`), each with a few status changes (about 1 KiB).
        let events: Vec<serde_json::Value> = (0..5).map(|k| json!({ "at": k, "to": "pending", "message": "x".repeat(150) })).collect();
        for i in 0..300 {
            let id = crate::core::deployment::DeploymentId::generate().to_string();
            let row = json!({
                "name": format!("app-{i}"), "guest_type": "lxc", "framework": "flask", "repo_url": "https://github.com/o/r", "branch": "main",
                "cpu": 1, "memory_mib": 512, "disk_gb": 8, "auto_redeploy": false, "status": "pending", "created_at": i, "updated_at": i,
                "revision": 0, "list_key": id, "recent_events": events,
            });
            store.run("CREATE type::record('deployment', $id) CONTENT $row RETURN NONE", json!({ "id": id, "row": row })).await.unwrap();
        }
        store.run("UPSERT deployment_tally:['all', 0] SET n = 300 RETURN NONE", json!({})).await.unwrap();
        super::apply(&store, super::LATEST).await.unwrap();
        assert!(store.close(std::time::Duration::from_secs(10)).await, "closed");
        let store = Store::open_at_schema(&cfg, super::LATEST).await.unwrap();
        assert_eq!(super::current_version(&store).await.unwrap(), super::LATEST);
        let page = store.list_deployments(&Filter::default(), 500, &PageStart::First).await.unwrap();
        assert_eq!((page.total, page.items.len()), (300, 300), "every row is on the unfiltered list's new index");
    }

    /// v20 on deployments as v19 wrote them (no `repo_name`): each gets the repository name `RepoUrl::from_stored`
    /// reads from its URL, whatever form the URL has, and pushes find them by the new index (`EXPLAIN` says so).
    #[tokio::test]
    async fn v20_names_the_repository_of_deployments_written_before_it() {
        use crate::core::repo::RepoUrl;
        let cfg = DatabaseConfig { url: "mem://".into(), namespace: "t".into(), database: "t".into(), credentials: None };
        let store = Store::open_at_schema(&cfg, 19).await.unwrap();
        let urls = [
            "https://github.com/Owner/Repo",
            "https://github.com/owner/repo.git",
            "https://github.com/owner/repo/",
            "https://github.com/owner/repo.git/",
            "HTTPS://GitHub.com/owner/repo.github.io",
            "ssh://git@github.com/owner/repo.git",
            "git@github.com:owner/repo.git",
            "https://gitlab.example:8443/group/sub/repo.git",
            "https://github.com/other/repo",
        ];
        let mut ids = vec![];
        for (i, url) in urls.iter().enumerate() {
            let id = crate::core::deployment::DeploymentId::generate().to_string();
            let row = json!({
                "name": format!("app-{i}"), "guest_type": "lxc", "framework": "flask", "repo_url": url, "branch": "main",
                "cpu": 1, "memory_mib": 512, "disk_gb": 8, "auto_redeploy": false, "status": "pending", "created_at": i, "updated_at": i,
                "revision": 0, "list_key": id, "list_scope": "all",
            });
            store.run("CREATE type::record('deployment', $id) CONTENT $row RETURN NONE", json!({ "id": id, "row": row })).await.unwrap();
            ids.push(id);
        }
        super::apply(&store, super::LATEST).await.unwrap();
        for (url, id) in urls.iter().zip(&ids) {
            let got = store.run("SELECT VALUE repo_name FROM ONLY type::record('deployment', $id)", json!({ "id": id })).await.unwrap();
            let want = RepoUrl::from_stored(url.to_string()).full_name().to_ascii_lowercase();
            assert_eq!(got[0][0].as_str(), Some(want.as_str()), "{url}");
        }
        let found: Vec<String> = store.deployments_of_repo("OWNER/repo").await.unwrap().iter().map(|d| d.spec.name.to_string()).collect();
        assert_eq!(found, ["app-0", "app-1", "app-2", "app-3", "app-5", "app-6"], "oldest first, every URL form");
        let plan = store.explain_repo_query("owner/repo").await.unwrap().to_string();
        assert!(plan.contains("deployment_repo_name"), "the push walks the index: {plan}");
    }

    /// v15 on provisioning progress as v14 wrote it (one flat object, whatever the step): every step's row reads back
    /// as the typed state it was, the task, the address and the host key (a key line or a fingerprint) included.
    #[tokio::test]
    async fn v15_reads_progress_written_in_the_flat_shape() {
        use crate::core::host_key::HostKeyPin;
        use crate::core::names::{NodeName, VmId};
        use crate::core::provision::{GuestAt, Progress};
        let cfg = DatabaseConfig { url: "mem://".into(), namespace: "t".into(), database: "t".into(), credentials: None };
        let store = Store::open_at_schema(&cfg, 12).await.unwrap();
        let key = crate::keys::generate_ed25519("web").public_openssh;
        let fp = HostKeyPin::parse(&key).unwrap().fingerprint();
        let upid = "UPID:pve1:00001234:00005678:6752A1B2:qmclone:101:root@pam!deploy:";
        let node = NodeName::parse("pve1").unwrap();
        let at = |vmid: u32, static_ip: Option<&str>| GuestAt { node: node.clone(), vmid: VmId::new(vmid.into()).unwrap(), static_ip: static_ip.map(|a| a.parse().unwrap()) };
        let cases = [
            (json!({ "step": "place", "attempts": 0 }), Progress::Place),
            (json!({ "step": "reserve_id", "node": "pve1", "static_ip": "10.0.0.5", "attempts": 2 }), Progress::ReserveId { node: node.clone(), static_ip: Some("10.0.0.5".parse().unwrap()), attempts: 2 }),
            (json!({ "step": "create", "node": "pve1", "vmid": 101, "static_ip": "10.0.0.5", "attempts": 1 }), Progress::Create { guest: at(101, Some("10.0.0.5")), attempts: 1 }),
            (json!({ "step": "await_create", "node": "pve1", "vmid": 101, "upid": upid, "attempts": 0 }), Progress::AwaitCreate { guest: at(101, None), task: Some(upid.into()), attempts: 0 }),
            (json!({ "step": "snippet", "node": "pve1", "vmid": 102, "attempts": 0 }), Progress::Snippet { guest: at(102, None) }),
            (json!({ "step": "configure", "node": "pve1", "vmid": 102, "host_key": key, "attempts": 0 }), Progress::Configure { guest: at(102, None), host_key: Some(HostKeyPin::parse(&key).unwrap()) }),
            (json!({ "step": "resize", "node": "pve1", "vmid": 102, "attempts": 0 }), Progress::Resize { guest: at(102, None), host_key: None }),
            (json!({ "step": "start", "node": "pve1", "vmid": 103, "host_key": fp, "attempts": 0 }), Progress::Start { guest: at(103, None), host_key: Some(HostKeyPin::Fingerprint(fp.clone())) }),
            (json!({ "step": "await_start", "node": "pve1", "vmid": 103, "upid": upid, "host_key": fp, "attempts": 0 }), Progress::AwaitStart { guest: at(103, None), host_key: Some(HostKeyPin::Fingerprint(fp.clone())), task: Some(upid.into()) }),
            (json!({ "step": "await_address", "node": "pve1", "vmid": 104, "attempts": 0 }), Progress::AwaitAddress { guest: at(104, None), host_key: None }),
            (json!({ "step": "done", "node": "pve1", "vmid": 105, "ipv4": "10.0.0.9", "static_ip": "10.0.0.9", "host_key": key, "attempts": 0 }), Progress::Ready { guest: at(105, Some("10.0.0.9")), host_key: Some(HostKeyPin::parse(&key).unwrap()), ip: Some("10.0.0.9".parse().unwrap()) }),
            // `pvedeploy recover` wrote `done` without an address or a key when it could read neither.
            (json!({ "step": "done", "node": "pve1", "vmid": 106, "attempts": 0 }), Progress::Ready { guest: at(106, None), host_key: None, ip: None }),
        ];
        let mut ids = vec![];
        for (row, _) in &cases {
            let id = crate::core::deployment::DeploymentId::generate();
            store.run("UPSERT type::record('provision', $id) CONTENT { state: $state, updated_at: 1 } RETURN NONE", json!({ "id": id.as_str(), "state": row })).await.unwrap();
            ids.push(id);
        }
        super::apply(&store, super::LATEST).await.unwrap();
        for ((row, want), id) in cases.iter().zip(&ids) {
            assert_eq!(store.load_progress(id).await.unwrap().as_ref(), Some(want), "{row}");
        }
        let raw = store.run("SELECT VALUE state FROM ONLY type::record('provision', $id)", json!({ "id": ids[10].as_str() })).await.unwrap();
        let state = &raw[0][0];
        assert_eq!((state["step"].as_str(), state.get("ipv4"), state["ip"].as_str()), (Some("ready"), None, Some("10.0.0.9")), "{state}");
    }
}
