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
    DEFINE INDEX deployment_list ON deployment FIELDS list_key;
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
];

/// The schema version this binary writes.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

pub async fn current_version(store: &Store) -> Result<i64, StoreError> {
    let rows = store.run("SELECT VALUE version FROM ONLY type::record('schema_meta', 'current')", json!({})).await;
    match rows {
        Ok(r) => Ok(r.first().and_then(|s| s.first()).and_then(|v| v.as_i64()).unwrap_or(0)),
        // A fresh database has no schema_meta table yet.
        Err(StoreError::Unavailable(m)) if m.contains("does not exist") => Ok(0),
        Err(e) => Err(e),
    }
}

/// Brings the schema up to `target` (`LATEST` outside tests); refuses a database newer than this binary.
pub async fn apply(store: &Store, target: i64) -> Result<(), StoreError> {
    let found = current_version(store).await?;
    if found > LATEST {
        return Err(StoreError::NewerSchema { found, known: LATEST });
    }
    let target = target.clamp(0, LATEST);
    if found >= target {
        return Ok(());
    }
    // Every pending migration in one transaction: an upgrade is applied whole or not at all, and a
    // fresh database is ready after one commit instead of one per version.
    let pending = MIGRATIONS[found as usize..target as usize].concat();
    store
        .transaction(
            &format!("{pending}\nUPSERT type::record('schema_meta', 'current') CONTENT {{ version: $version, applied_at: $now }};"),
            json!({ "version": target, "now": super::now_millis() }),
        )
        .await?;
    tracing::info!(from = found, to = target, "applied database migrations");
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
        let running_flask = Filter { status: Some(Status::Running), framework: Some(Framework::Flask), name: None };
        let page = store.list_deployments(&running_flask, 10, &PageStart::First).await.unwrap();
        assert_eq!((page.total, page.items.len(), page.items[0].id.to_string()), (1, 1, ids[0].clone()));
        let (_, count_plan) = store.list_deployments_plan(&running_flask, &PageStart::First).await.unwrap();
        assert!(count_plan.to_string().contains("deployment_tally"), "the total is the tally: {count_plan}");
    }
}
