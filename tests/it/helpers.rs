//! Test harness: spawn the real application on an ephemeral port with a temporary data dir, and an HTTP client for it.

use std::path::Path;

use pvedeploy::app::Application;
use pvedeploy::auth::{hash_token, Scope};
use pvedeploy::config::{Config, ConfiguredToken, Secret};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN: &str = "test-admin-token-0123456789";
pub const READER: &str = "test-reader-token-0123456789";
pub const DEPLOYER: &str = "test-deployer-token-0123456789";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

pub fn test_config(data_dir: &Path) -> Config {
    let mut c = Config::for_data_dir(data_dir);
    c.admin_token = Some(Secret::new(ADMIN.to_string()));
    c.tokens = vec![
        ConfiguredToken { name: "reader".into(), sha256: hash_token(READER), scopes: vec![Scope::Read] },
        ConfiguredToken { name: "deployer".into(), sha256: hash_token(DEPLOYER), scopes: vec![Scope::Deploy] },
    ];
    c
}

impl TestApp {
    /// A fresh app on a fresh temporary data dir.
    pub async fn spawn() -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut app = Self::spawn_config(test_config(dir.path())).await;
        app._dir = Some(dir);
        app
    }

    /// A fresh app on a fresh temporary data dir, its configuration changed by `change` first.
    pub async fn spawn_with(change: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        change(&mut config);
        let mut app = Self::spawn_config(config).await;
        app._dir = Some(dir);
        app
    }

    pub async fn spawn_config(config: Config) -> TestApp {
        Self::spawn_config_with_clock(config, std::sync::Arc::new(pvedeploy::engine::schedules::SystemClock)).await
    }

    /// As `spawn_config`, the scheduler reading `clock` (a `ManualClock` the test moves).
    pub async fn spawn_config_with_clock(config: Config, clock: std::sync::Arc<dyn pvedeploy::engine::schedules::Clock>) -> TestApp {
        let app = Application::build_with_clock(config, clock).await.expect("the app builds");
        let base = format!("http://{}", app.addr());
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        TestApp { base, client: reqwest::Client::new(), stop: Some(tx), handle: Some(handle), _dir: None }
    }

    /// Graceful shutdown, waiting until the database is closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("server task").expect("server stopped cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut r = self.client.get(self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        send(r).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut r = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        send(r).await
    }

    pub async fn put_json(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut r = self.client.put(self.url(path)).json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        send(r).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut r = self.client.delete(self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        send(r).await
    }

    /// Creates a deployment with a valid request (fields overridden by `patch`) and returns its body.
    pub async fn create(&self, name: &str) -> Value {
        let (status, body) = self.post("/api/v1/deployments", Some(ADMIN), &valid_request(name)).await;
        assert_eq!(status, 202, "{body}");
        body
    }

    pub async fn count_deployments(&self) -> u64 {
        let (s, b) = self.get("/api/v1/deployments?limit=1", Some(ADMIN)).await;
        assert_eq!(s, 200, "{b}");
        b["total"].as_u64().expect("total")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub fn valid_request(name: &str) -> Value {
    json!({ "name": name, "repo_url": "https://github.com/octo/app.git", "framework": "flask" })
}

async fn send(r: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = r.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body read");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Finds a tool on PATH or in the CI cache venv; in CI a missing tool is a failure, elsewhere a skip.
pub fn tool(name: &str) -> Option<std::path::PathBuf> {
    let cache = std::path::PathBuf::from(std::env::var("PVEDEPLOY_CACHE_DIR").unwrap_or_else(|_| "/var/cache/pvedeploy".into()));
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([cache.join("py/bin"), cache.join("surreal/bin")]);
    for dir in candidates {
        let p = dir.join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{name} is required in CI (.ci/run installs it)");
    }
    eprintln!("SKIPPED: {name} is not installed (.ci/run installs it)");
    None
}


/// A python that can check JSON Schemas (the CI venv's, with jsonschema-rs; or any with jsonschema). Without one it
/// prints `SKIPPED` and answers `None`, or fails with `CI=true` (`.ci/run` installs it).
pub fn schema_python() -> Option<std::path::PathBuf> {
    let cache = std::path::PathBuf::from(std::env::var("PVEDEPLOY_CACHE_DIR").unwrap_or_else(|_| "/var/cache/pvedeploy".into()));
    let candidates = [Some(cache.join("py/bin/python")), tool("python3")];
    let imports = |p: &std::path::Path, module: &str| std::process::Command::new(p).args(["-c", &format!("import {module}")]).stderr(std::process::Stdio::null()).status().is_ok_and(|s| s.success());
    let found = candidates.into_iter().flatten().find(|p| p.is_file() && (imports(p, "jsonschema_rs") || imports(p, "jsonschema")));
    if found.is_none() {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "a python with jsonschema-rs is required in CI (.ci/run installs it)");
        eprintln!("SKIPPED: the schema check (no python with jsonschema-rs or jsonschema; .ci/run installs it)");
    }
    found
}

/// Serves `app` on 127.0.0.1 at a free port until the returned sender is dropped or fired (a stand-in for a
/// platform's API: Discord's, GitHub's); returns its address.
pub async fn serve_loopback(app: impl poem::Endpoint + 'static) -> (std::net::SocketAddr, oneshot::Sender<()>) {
    use poem::listener::{Acceptor, Listener};
    let acceptor = poem::listener::TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
        app,
        async move {
            let _ = rx.await;
        },
        Some(std::time::Duration::from_secs(1)),
    ));
    (addr, tx)
}
