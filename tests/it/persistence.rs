//! State survives a restart on the same data dir; a data dir from a newer schema is refused.

use pvedeploy::app::Application;

use crate::helpers::{test_config, TestApp, ADMIN, READER};

#[tokio::test]
async fn deployments_logs_and_tokens_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_config(test_config(dir.path())).await;
    let d = app.create("keeper").await;
    let id = d["id"].as_str().unwrap().to_string();
    app.delete("/api/v1/deployments/keeper", Some(ADMIN)).await;
    app.create("other").await;
    app.stop().await;

    let app = TestApp::spawn_config(test_config(dir.path())).await;
    let (s, back) = app.get(&format!("/api/v1/deployments/{id}"), Some(READER)).await;
    assert_eq!(s, 200, "{back}");
    assert_eq!(back["status"], "destroyed");
    assert_eq!(back["events"].as_array().unwrap().len(), 3);
    let (_, logs) = app.get(&format!("/api/v1/deployments/{id}/logs"), Some(READER)).await;
    assert!(logs["lines"].as_array().unwrap().len() >= 3, "{logs}");
    assert_eq!(app.count_deployments().await, 2);
    app.stop().await;
}

/// A data dir left by an older binary (schema version 3: no webhooks, releases or schedules yet) is
/// upgraded at start, keeping what it held: its token still works, and the newer tables are there.
#[tokio::test]
async fn an_older_schema_is_upgraded_at_start_keeping_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    {
        let store = pvedeploy::store::Store::open_at_schema(&config.database, 3).await.unwrap();
        assert_eq!(pvedeploy::store::migrations::current_version(&store).await.unwrap(), 3);
        let h = pvedeploy::auth::hash_token("pvd_older_binary_token_0123456789abcdef");
        store.insert_token("from-v3", &h, &[pvedeploy::auth::Scope::Admin]).await.unwrap();
        assert!(store.close(std::time::Duration::from_secs(10)).await);
    }
    config.admin_token = None;
    let app = TestApp::spawn_config(config.clone()).await;
    let (s, body) = app.get("/api/v1/schedules", Some("pvd_older_binary_token_0123456789abcdef")).await;
    assert_eq!(s, 200, "the v3 token authenticates and the v6 table answers: {body}");
    app.stop().await;
    let store = pvedeploy::store::Store::open(&config.database).await.unwrap();
    assert_eq!(pvedeploy::store::migrations::current_version(&store).await.unwrap(), pvedeploy::store::migrations::LATEST);
}

#[tokio::test]
async fn a_newer_schema_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    {
        let store = pvedeploy::store::Store::open(&config.database).await.unwrap();
        pvedeploy::store::migrations::force_version(&store, 99).await.unwrap();
        assert!(store.close(std::time::Duration::from_secs(10)).await);
    }
    let err = match Application::build(config).await {
        Ok(_) => panic!("a newer schema must be refused"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("schema version 99") && err.contains("newer pvedeploy"), "{err}");
}

#[tokio::test]
async fn a_generated_admin_token_is_printed_once_and_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = pvedeploy::config::Config::for_data_dir(dir.path());
    config.admin_token = None;
    let app = Application::build(config.clone()).await.unwrap();
    let token = app.generated_admin_token.clone().expect("a token is generated on first start");
    app.close().await;
    let second = Application::build(config).await.unwrap();
    assert!(second.generated_admin_token.is_none(), "only on first start");
    let base = format!("http://{}", second.addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(second.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let r = reqwest::Client::new().get(format!("{base}/api/v1/deployments")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = tx.send(());
    h.await.unwrap().unwrap();
}
