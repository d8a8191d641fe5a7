//! The OpenAPI spec checked by an independent tool: schemathesis against the live server finds no 5xx
//! and no status, content type, header or body that the spec does not document, and no request valid under the
//! spec refused.

use std::process::Command;

use crate::helpers::{tool, TestApp, ADMIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_nothing_undocumented() {
    let Some(st) = tool("schemathesis") else { return };
    let app = TestApp::spawn().await;
    app.create("seeded").await;
    let spec = app.url("/api/v1/openapi.json");
    let base = app.url("/api/v1");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .args(["run", &spec, "--url", &base])
            .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
            .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance"])
            // One worker: with several, hypothesis' lambda-source parsing races ("AST constructor
            // recursion depth mismatch") and reports a runtime error that is not about our API.
            .args(["--phases", "examples,coverage,fuzzing", "--max-examples", "40", "--workers", "1", "--request-timeout", "10"])
            // A followed log stream stays open until the deployment settles; the SSE test covers it.
            .args(["--exclude-operation-id", "deployment_logs"])
            // The change stream stays open until the client leaves; the dashboard test covers it.
            .args(["--exclude-operation-id", "events"])
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found problems:\n{stdout}\n{stderr}");
    assert!(!stdout.contains("No operations"), "{stdout}");
    app.stop().await;
}

/// No schema-valid request is refused (schemathesis' ST202, issue #22): the document states every rule the
/// validators apply that a schema can carry (`api::spec`). Left out are the operations whose remaining rules no
/// OpenAPI 3.0 document can state, each tested by its own module: a deployment name already taken
/// (`create_deployment`; `spec::requests_generated_from_the_document_are_accepted` sends unique ones), a schedule's
/// target that must exist and `keep` only with `snapshot` (`create_schedule`, `replace_schedule`), env names as
/// object keys (`put_env`: OpenAPI 3.0 has no `propertyNames`), `after` and `offset` together (`list_deployments`),
/// a deliveries filter naming a deployment that must exist (`list_webhook_deliveries`).
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
            .args(["--phases", "examples,coverage,fuzzing", "--max-examples", "40", "--workers", "1", "--request-timeout", "10"])
            .env("SCHEMATHESIS_HOOKS", "");
        for op in ["deployment_logs", "events", "create_deployment", "create_schedule", "replace_schedule", "put_env", "list_deployments", "list_webhook_deliveries"] {
            cmd.args(["--exclude-operation-id", op]);
        }
        cmd.output().expect("schemathesis runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found a schema-valid request refused:\n{stdout}\n{stderr}");
    assert!(!stdout.contains("No operations"), "{stdout}");
    app.stop().await;
}
