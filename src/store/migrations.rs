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
