//! The OpenAPI spec checked by an independent tool: schemathesis against the live server, every phase (examples,
//! coverage, fuzzing and stateful: chains of operations linked by the ids they return), finds no 5xx and no
//! status, content type, header or body that the spec does not document, and no request valid under the spec
//! refused.

use std::process::Command;

use crate::helpers::{tool, TestApp, ADMIN};

/// What every answer is checked for: no 5xx; status, content type, headers and body as documented; a 405 naming
/// the allowed methods; a missing required header or a missing token refused. Left out: `use_after_free` and
/// `ensure_resource_availability`, which expect a deleted resource to be gone at once (a destroyed deployment is
/// kept, `destroying` then `destroyed`, as its history), and `negative_data_rejection` (poem reads an explicit
/// `null` as an absent optional field, which a document without `nullable` calls schema-violating).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,\
response_schema_conformance,unsupported_method,allow_header_conformance,missing_required_header,ignored_auth";

/// Loads `tests/fixtures/schemathesis/pvedeploy_hooks.py`, which makes schedules' targets through the API at `base`.
fn with_hooks(cmd: &mut Command, base: &str) {
    cmd.env("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schemathesis"))
        .env("SCHEMATHESIS_HOOKS", "pvedeploy_hooks")
        .env("PVEDEPLOY_ST_BASE", base)
        .env("PVEDEPLOY_ST_TOKEN", ADMIN);
}

/// The stateful phase ran scenarios (operations chained through the links schemathesis infers from the document
/// and from the `Location` headers it saw) and all passed.
fn assert_stateful_ran(stdout: &str) {
    let scenarios = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Scenarios:"))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no stateful phase in the report:\n{stdout}"));
    assert!(scenarios > 0, "the stateful phase ran no scenario:\n{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_nothing_undocumented() {
    let Some(st) = tool("schemathesis") else { return };
    let app = TestApp::spawn().await;
    app.create("seeded").await;
    let spec = app.url("/api/v1/openapi.json");
    let base = app.url("/api/v1");
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(st);
        cmd.args(["run", &spec, "--url", &base])
            .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
            .args(["--checks", CHECKS])
            // One worker: with several, hypothesis' lambda-source parsing races ("AST constructor
            // recursion depth mismatch") and reports a runtime error that is not about our API.
            .args(["--phases", "examples,coverage,fuzzing,stateful", "--max-examples", "40", "--workers", "1", "--request-timeout", "10"])
            // A followed log stream stays open until the deployment settles; the SSE test covers it.
            .args(["--exclude-operation-id", "deployment_logs"])
            // The change stream stays open until the client leaves; the dashboard test covers it.
            .args(["--exclude-operation-id", "events"]);
        // Unique names and live targets: the stateful phase then chains from deployments and schedules it made.
        with_hooks(&mut cmd, &base);
        cmd.output().expect("schemathesis runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found problems:\n{stdout}\n{stderr}");
    assert_stateful_ran(&stdout);
    assert!(!stdout.contains("No operations"), "{stdout}");
    app.stop().await;
}

/// No schema-valid request is refused (schemathesis' ST202, issue #22), in every phase: the document states every
/// rule the validators apply that a schema can carry (`api::spec`), and the rules no OpenAPI 3.0 document can state
/// (a name already taken, a schedule's target that must exist and not be destroyed, `keep` only with `snapshot`,
/// env names as object keys, `after` and `offset` together, a deliveries filter naming a deployment) are applied to
/// the generated requests by hooks (`tests/fixtures/schemathesis/pvedeploy_hooks.py`) rather than by leaving the
/// operations out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_schema_valid_request_refused() {
    let Some(st) = tool("schemathesis") else { return };
    let app = TestApp::spawn().await;
    app.create("seeded").await;
    let spec = app.url("/api/v1/openapi.json");
    let base = app.url("/api/v1");
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(st);
        cmd.args(["run", &spec, "--url", &base])
            .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
            .args(["--checks", "positive_data_acceptance", "--mode", "positive"])
            .args(["--phases", "examples,coverage,fuzzing,stateful", "--max-examples", "40", "--workers", "1", "--request-timeout", "10"]);
        for op in ["deployment_logs", "events"] {
            cmd.args(["--exclude-operation-id", op]);
        }
        with_hooks(&mut cmd, &base);
        cmd.output().expect("schemathesis runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found a schema-valid request refused:\n{stdout}\n{stderr}");
    assert_stateful_ran(&stdout);
    assert!(!stdout.contains("No operations"), "{stdout}");
    app.stop().await;
}
