//! Test harness: a simulator on a free port, a reqwest client pinned to its certificate, and
//! helpers for PVE-style calls (token header, form bodies, task polling).
#![allow(dead_code)]

pub mod openssh;

use std::time::Duration;

use pvedeploy_sim::{SimConfig, SimHandle, Simulator, Timing};
use serde_json::Value;

pub struct Sim {
    pub handle: SimHandle,
    pub client: reqwest::Client,
    pub auth: String,
    _dir: tempfile::TempDir,
}

/// A reply: status, reason phrase, JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub reason: String,
    pub body: Value,
}

impl Reply {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    pub fn error(&self, key: &str) -> String {
        self.body["errors"][key].as_str().unwrap_or_default().to_string()
    }
}

pub fn fast_timing() -> Timing {
    Timing { agent_delay_secs: 0.3, ..Timing::default() }
}

pub async fn start() -> Sim {
    start_with(|_| {}).await
}

pub async fn start_with(tweak: impl FnOnce(&mut SimConfig)) -> Sim {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = SimConfig::sandbox(dir.path().to_path_buf());
    cfg.timing = fast_timing();
    tweak(&mut cfg);
    start_in(dir, cfg).await
}

/// Starts `cfg` (whose state lives in `dir`, removed when the `Sim` is dropped).
pub async fn start_in(dir: tempfile::TempDir, cfg: SimConfig) -> Sim {
    let token = cfg.tokens[0].clone();
    let handle = Simulator::start(cfg).await.expect("simulator starts");
    let cert = reqwest::Certificate::from_pem(handle.cert_pem().as_bytes()).expect("cert");
    let client = reqwest::Client::builder()
        .add_root_certificate(cert)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    Sim { handle, client, auth: format!("PVEAPIToken={}={}", token.id, token.secret), _dir: dir }
}

impl Sim {
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}/api2/json{path}", self.handle.addr().port())
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).to_string())
            .unwrap_or_else(|| resp.status().canonical_reason().unwrap_or_default().to_string());
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, reason, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path)).header("Authorization", &self.auth)).await
    }

    pub async fn form(&self, method: &str, path: &str, params: &[(&str, &str)]) -> Reply {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let body = params
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = self
            .client
            .request(m, self.url(path))
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req).await
    }

    pub async fn post(&self, path: &str, params: &[(&str, &str)]) -> Reply {
        self.form("POST", path, params).await
    }

    pub async fn put(&self, path: &str, params: &[(&str, &str)]) -> Reply {
        self.form("PUT", path, params).await
    }

    pub async fn json(&self, method: &str, path: &str, body: Value) -> Reply {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.send(self.client.request(m, self.url(path)).header("Authorization", &self.auth).json(&body)).await
    }

    /// Polls a task until it stops; returns its exitstatus.
    pub async fn wait(&self, node: &str, upid: &Value) -> String {
        let upid = upid.as_str().expect("UPID string").to_string();
        let path = format!("/nodes/{node}/tasks/{}/status", enc(&upid));
        for _ in 0..400 {
            let r = self.get(&path).await;
            assert_eq!(r.status, 200, "task status: {r:?}");
            if r.data()["status"] == "stopped" {
                return r.data()["exitstatus"].as_str().unwrap_or_default().to_string();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("task {upid} did not finish");
    }

    /// Runs a task-returning call and waits for it.
    pub async fn task(&self, method: &str, node: &str, path: &str, params: &[(&str, &str)]) -> String {
        let r = self.form(method, path, params).await;
        assert_eq!(r.status, 200, "{method} {path}: {r:?}");
        self.wait(node, r.data()).await
    }

    /// Full clone of the sandbox template.
    pub async fn clone_vm(&self, newid: u32, extra: &[(&str, &str)]) -> String {
        let id = newid.to_string();
        let mut params = vec![("newid", id.as_str())];
        params.extend_from_slice(extra);
        self.task("POST", "pve1", "/nodes/pve1/qemu/9000/clone", &params).await
    }
}

/// Whether `ip` lies in the simulators' guest address range (127.77.0.0–127.99.255.255).
pub fn in_guest_pool(ip: &str) -> bool {
    match ip.parse::<std::net::Ipv4Addr>() {
        Ok(a) => a.octets()[0] == 127 && (77..=99).contains(&a.octets()[1]) && a.octets()[3] != 0 && a.octets()[3] != 255,
        Err(_) => false,
    }
}

/// Percent-encodes everything but unreserved characters.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
