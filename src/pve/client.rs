//! `PveClient`: the HTTP plumbing every endpoint shares — base URL, token header, TLS, per-call timeouts, retries with jittered backoff, PVE's envelopes and errors.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{is_lock_timeout, PveError};
use super::form::Form;
use super::lenient::{text_of, u64_of};
use super::tls::tls_cause;
use super::upid::Upid;
use super::PveConfig;

/// A Proxmox VE API client for one cluster endpoint. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct PveClient {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    http: reqwest::Client,
    /// `https://host:8006/api2/json`
    base: String,
    /// `PVEAPIToken=…` (marked sensitive: never printed by the HTTP stack).
    auth: HeaderValue,
    token_id: String,
    timeout: Duration,
    retry: RetryPolicy,
    /// How long tasks and other waits took lately (shared by clones of this client).
    wait_times: Arc<super::poll::WaitTimes>,
    /// Why every call but a GET is refused before it is sent, when it is (a read-only agent).
    changes_refused: Option<String>,
}

/// How often and how patiently retryable failures are retried: GETs on transport errors,
/// timeouts and 500–504; every call on PVE's lock timeouts, on connection failures and 595 (the
/// request never reached PVE, or pveproxy could not reach the node), and on lost quorum (refused
/// before doing anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in total, the first included (1 = never retry).
    pub attempts: u32,
    /// Delay before the first retry; doubles each time, with jitter (50–100 % of the step).
    pub base_delay: Duration,
    /// The longest wait between two tries.
    pub max_delay: Duration,
    /// No retry starts once this long has passed since the first try.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 5, base_delay: Duration::from_millis(500), max_delay: Duration::from_secs(300), deadline: Duration::from_secs(120) }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub const NONE: RetryPolicy = RetryPolicy { attempts: 1, base_delay: Duration::ZERO, max_delay: Duration::ZERO, deadline: Duration::ZERO };

    /// The jittered wait before retry number `retry` (1-based).
    pub fn delay(&self, retry: u32) -> Duration {
        let step = self.base_delay.saturating_mul(1u32 << retry.saturating_sub(1).min(16)).min(self.max_delay);
        step.mul_f64(rand::random_range(0.5..=1.0))
    }
}

/// A successful answer: `data` and, for lists that have it, `total`.
pub(crate) struct Reply {
    pub data: Value,
    pub total: Option<u64>,
}

impl fmt::Debug for PveClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PveClient")
            .field("base", &self.inner.base)
            .field("token_id", &self.inner.token_id)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Characters escaped inside one URL path segment.
const SEGMENT: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'/').add(b'?').add(b'<').add(b'>').add(b'`').add(b'{').add(b'}').add(b'\\').add(b'^').add(b'|');

/// One path segment, escaped.
pub(crate) fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

impl PveClient {
    /// Checks the config and builds the HTTP client (no request is sent).
    pub fn new(cfg: PveConfig) -> Result<Self, PveError> {
        let base = base_url(&cfg.endpoint)?;
        check_token_id(&cfg.token_id)?;
        let secret = cfg.token_secret.expose();
        if secret.is_empty() || secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PveError::Config("the API token secret is empty or contains whitespace".to_string()));
        }
        let mut auth = HeaderValue::from_str(&format!("PVEAPIToken={}={}", cfg.token_id, secret))
            .map_err(|_| PveError::Config("the API token id or secret holds characters not allowed in a header".to_string()))?;
        auth.set_sensitive(true);
        if cfg.timeout.is_zero() {
            return Err(PveError::Config("the call timeout must be positive".to_string()));
        }
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(cfg.trust.client_config()?)
            .http1_only()
            .connect_timeout(cfg.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("pvedeploy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PveError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner { http, base, auth, token_id: cfg.token_id, timeout: cfg.timeout, retry: RetryPolicy::default(), wait_times: Arc::default(), changes_refused: None }),
        })
    }

    /// The same client with another retry policy.
    pub fn with_retry(self, retry: RetryPolicy) -> Self {
        let mut inner = (*self.inner).clone();
        inner.retry = retry;
        Self { inner: Arc::new(inner) }
    }

    /// The same client refusing every call but a GET, for `reason`, before anything is sent: what a
    /// read-only agent holds, so no path can change the cluster.
    pub fn with_changes_refused(self, reason: &str) -> Self {
        let mut inner = (*self.inner).clone();
        inner.changes_refused = Some(reason.to_string());
        Self { inner: Arc::new(inner) }
    }

    /// How long tasks and other waits took lately, for polling around when the next is due.
    pub fn wait_times(&self) -> &super::poll::WaitTimes {
        &self.inner.wait_times
    }

    /// `https://host:8006/api2/json`
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    pub fn token_id(&self) -> &str {
        &self.inner.token_id
    }

    /// GET, parameters in the query string; decoded as `T` (`what` names it in errors).
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str, query: Form, what: &str) -> Result<T, PveError> {
        decode(what, self.call(Method::GET, path, &query).await?.data)
    }

    /// GET keeping PVE's `total`.
    pub(crate) async fn get_reply(&self, path: &str, query: Form) -> Result<Reply, PveError> {
        self.call(Method::GET, path, &query).await
    }

    /// POST, form-encoded body; `data` raw.
    pub(crate) async fn post(&self, path: &str, body: Form) -> Result<Value, PveError> {
        Ok(self.call(Method::POST, path, &body).await?.data)
    }

    /// POST, form-encoded body, answering a task id.
    pub(crate) async fn post_task(&self, path: &str, body: Form) -> Result<Upid, PveError> {
        upid_of(self.post(path, body).await?)
    }

    /// PUT, form-encoded body; `data` is returned raw (`null` or a task id, depending on the version).
    pub(crate) async fn put(&self, path: &str, body: Form) -> Result<Value, PveError> {
        Ok(self.call(Method::PUT, path, &body).await?.data)
    }

    /// DELETE, parameters in the query string, answering a task id.
    pub(crate) async fn delete_task(&self, path: &str, query: Form) -> Result<Upid, PveError> {
        upid_of(self.call(Method::DELETE, path, &query).await?.data)
    }

    /// DELETE answering nothing of interest.
    pub(crate) async fn delete(&self, path: &str, query: Form) -> Result<(), PveError> {
        self.call(Method::DELETE, path, &query).await.map(|_| ())
    }

    /// One API call with the retry policy applied.
    async fn call(&self, method: Method, path: &str, params: &Form) -> Result<Reply, PveError> {
        let idempotent = method == Method::GET;
        if let (false, Some(reason)) = (idempotent, &self.inner.changes_refused) {
            return Err(PveError::ChangesRefused { reason: reason.clone() });
        }
        let retry = &self.inner.retry;
        let started = std::time::Instant::now();
        let mut attempt = 1;
        loop {
            match self.attempt(&method, path, params).await {
                Err(e) if attempt < retry.attempts && should_retry(&e, idempotent) => {
                    // Never more than one write a second, whatever the policy's first step.
                    let wait = if idempotent { retry.delay(attempt) } else { retry.delay(attempt).max(Duration::from_secs(1)) };
                    if started.elapsed() + wait > retry.deadline {
                        return Err(e);
                    }
                    tracing::debug!(%method, path, attempt, error = %e, "retrying Proxmox VE call");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn attempt(&self, method: &Method, path: &str, params: &Form) -> Result<Reply, PveError> {
        let in_query = *method == Method::GET || *method == Method::DELETE;
        let mut url = format!("{}{path}", self.inner.base);
        if in_query && !params.is_empty() {
            url.push('?');
            url.push_str(&params.encode());
        }
        let mut req = self
            .inner
            .http
            .request(method.clone(), &url)
            .header(AUTHORIZATION, self.inner.auth.clone())
            .timeout(self.inner.timeout);
        if !in_query && !params.is_empty() {
            req = req.header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(params.encode());
        }
        let resp = req.send().await.map_err(transport_error)?;
        let status = resp.status();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
        let bytes = resp.bytes().await.map_err(transport_error)?;
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            let body = body.ok_or_else(|| PveError::decode(format!("{method} {path}"), "the body is not JSON"))?;
            return Ok(Reply { data: body.get("data").cloned().unwrap_or(Value::Null), total: body.get("total").and_then(u64_of) });
        }
        let message = body
            .as_ref()
            .and_then(|b| b.get("message"))
            .and_then(Value::as_str)
            .filter(|m| !m.trim().is_empty())
            .map(str::to_string)
            .or(reason)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or_default().to_string());
        let errors: BTreeMap<String, String> = body
            .as_ref()
            .and_then(|b| b.get("errors"))
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), text_of(v).unwrap_or_default().trim_end().to_string())).collect())
            .unwrap_or_default();
        Err(PveError::from_response(status.as_u16(), &message, errors))
    }
}

fn should_retry(e: &PveError, idempotent: bool) -> bool {
    match e {
        PveError::Transport { retry_safe, .. } => *retry_safe || idempotent,
        PveError::Timeout => idempotent,
        // PVE gave up waiting for the lock before doing anything
        PveError::Locked { message } => is_lock_timeout(message),
        PveError::Server { status, .. } => idempotent && matches!(status, 500..=504),
        // A write refused for lost quorum did nothing: sending it again is safe.
        PveError::NoQuorum { .. } => true,
        _ => false,
    }
}

fn transport_error(e: reqwest::Error) -> PveError {
    if let Some(message) = tls_cause(&e) {
        return PveError::Tls { message };
    }
    if e.is_timeout() {
        return PveError::Timeout;
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    PveError::Transport { retry_safe: e.is_connect(), message }
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, data: Value) -> Result<T, PveError> {
    serde_json::from_value(data).map_err(|e| PveError::decode(what, e))
}

pub(crate) fn upid_of(data: Value) -> Result<Upid, PveError> {
    match data {
        Value::String(s) => Upid::parse(&s),
        other => Err(PveError::decode("task id", format!("expected a UPID string, got {other}"))),
    }
}

/// `https://host:8006[/][api2/json]` → `https://host:8006/api2/json`.
fn base_url(endpoint: &str) -> Result<String, PveError> {
    let trimmed = endpoint.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/api2/json").unwrap_or(trimmed);
    let url = reqwest::Url::parse(trimmed).map_err(|e| PveError::Config(format!("endpoint '{endpoint}': {e}")))?;
    if url.scheme() != "https" {
        return Err(PveError::Config(format!("endpoint '{endpoint}' must use https://")));
    }
    if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(PveError::Config(format!("endpoint '{endpoint}' must be https://host[:port] without credentials or query")));
    }
    Ok(format!("{trimmed}/api2/json"))
}

/// `user@realm!name`
fn check_token_id(id: &str) -> Result<(), PveError> {
    let ok = id.split_once('!').is_some_and(|(user, name)| {
        user.split_once('@').is_some_and(|(u, realm)| !u.is_empty() && !realm.is_empty())
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }) && !id.chars().any(|c| c.is_whitespace() || c == '=');
    if ok {
        Ok(())
    } else {
        Err(PveError::Config(format!("API token id '{id}' is not of the form user@realm!name")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::pve::TlsTrust;

    fn cfg(endpoint: &str, token_id: &str, secret: &str) -> PveConfig {
        PveConfig::new(endpoint, token_id, Secret::new(secret.to_string()), TlsTrust::Fingerprint([7; 32]))
    }

    #[test]
    fn endpoints_and_token_ids_are_checked() {
        let c = PveClient::new(cfg("https://pve.example:8006/", "root@pam!deploy", "s3cret-uuid")).unwrap();
        assert_eq!(c.base_url(), "https://pve.example:8006/api2/json");
        let c = PveClient::new(cfg("https://127.0.0.1:8006/api2/json", "a@pve!t_1", "x")).unwrap();
        assert_eq!(c.base_url(), "https://127.0.0.1:8006/api2/json");
        for (endpoint, id, secret) in [
            ("http://pve:8006", "root@pam!t", "x"),
            ("pve:8006", "root@pam!t", "x"),
            ("https://u:p@pve:8006", "root@pam!t", "x"),
            ("https://pve:8006", "root@pam", "x"),
            ("https://pve:8006", "root!t", "x"),
            ("https://pve:8006", "root@pam!", "x"),
            ("https://pve:8006", "root@pam!t=x", "x"),
            ("https://pve:8006", "root@pam!t", ""),
            ("https://pve:8006", "root@pam!t", "a b"),
        ] {
            assert!(matches!(PveClient::new(cfg(endpoint, id, secret)), Err(PveError::Config(_))), "{endpoint} {id} {secret}");
        }
    }

    #[test]
    fn the_secret_never_prints() {
        let c = PveClient::new(cfg("https://pve:8006", "root@pam!deploy", "top-secret-value")).unwrap();
        let shown = format!("{c:?} {:?}", cfg("https://pve:8006", "root@pam!deploy", "top-secret-value"));
        assert!(!shown.contains("top-secret-value"), "{shown}");
        assert!(shown.contains("root@pam!deploy"));
        assert!(c.inner.auth.is_sensitive());
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let p = RetryPolicy { attempts: 5, base_delay: Duration::from_millis(100), max_delay: Duration::from_millis(300), deadline: Duration::from_secs(1) };
        for _ in 0..50 {
            let d1 = p.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100), "{d1:?}");
            let d2 = p.delay(2);
            assert!(d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(200), "{d2:?}");
            assert!(p.delay(10) <= Duration::from_millis(300));
        }
    }

    #[test]
    fn only_safe_failures_are_retried() {
        let transport = |retry_safe| PveError::Transport { retry_safe, message: String::new() };
        assert!(should_retry(&transport(true), false));
        assert!(!should_retry(&transport(false), false));
        assert!(should_retry(&transport(false), true));
        assert!(should_retry(&PveError::Timeout, true));
        assert!(!should_retry(&PveError::Timeout, false));
        let lock = PveError::Locked { message: "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout".into() };
        assert!(should_retry(&lock, false));
        assert!(!should_retry(&PveError::Locked { message: "VM is locked (clone)".into() }, true));
        assert!(should_retry(&PveError::Server { status: 503, message: String::new() }, true));
        assert!(!should_retry(&PveError::Server { status: 503, message: String::new() }, false));
        assert!(should_retry(&PveError::Server { status: 500, message: String::new() }, true), "a GET is idempotent");
        assert!(!should_retry(&PveError::Server { status: 500, message: String::new() }, false), "a write answered 500 may have acted");
        assert!(should_retry(&PveError::NoQuorum { message: "cluster not ready - no quorum?".into() }, false));
        assert!(!should_retry(&PveError::Tls { message: String::new() }, true));
        assert!(!should_retry(&PveError::Unauthorized, true));
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(seg("UPID:pve1:0000:01:02:qmclone:100:root@pam!tok:"), "UPID:pve1:0000:01:02:qmclone:100:root@pam!tok:");
        assert_eq!(seg("a/b c%"), "a%2Fb%20c%25");
    }
}
