//! The command line's client for a running agent's HTTP API: every subcommand but `serve`, `recover`, `completions`
//! and `man` goes through the agent (it holds the embedded database open), authenticated with a token that never
//! appears in `ps`.

pub mod actions;
pub mod args;
pub mod backups;
pub mod deploy;
pub mod dotenv;
pub mod env;
pub mod follow;
pub mod list;
pub mod logs;
pub mod manual;
pub mod progress;
pub mod show;
pub mod snapshots;
pub mod sse;
pub mod steps;
pub mod table;
pub mod terminal;
pub mod terraform;
pub mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Config, Overrides, Secret};
use crate::core::deployment::DeploymentId;
use crate::core::names::{AppName, CommitSha};
use self::wire::{ErrorJson, FieldProblemJson};

/// How long one ordinary request may take, answer included.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stream's headers may take to arrive.
const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// A stream with no byte for this long is dead (the agent sends a keep-alive every 15 s).
pub const STREAM_IDLE: Duration = Duration::from_secs(45);

/// How to reach a running agent. The token comes from PVEDEPLOY_TOKEN or --token-file (never a flag value).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AgentArgs {
    /// The agent's URL [default: $PVEDEPLOY_URL, else http:// and the configured listen address, else http://127.0.0.1:8080].
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// File holding the API token [default: the PVEDEPLOY_TOKEN variable].
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// Where the agent's URL came from, so that a connection error can say which setting to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    Flag,
    Environment,
    ListenEnvironment,
    ConfigFile(String),
    Default,
}

impl fmt::Display for UrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlSource::Flag => f.write_str("given with --url"),
            UrlSource::Environment => f.write_str("from PVEDEPLOY_URL"),
            UrlSource::ListenEnvironment => f.write_str("from PVEDEPLOY_LISTEN, the agent's listen address"),
            UrlSource::ConfigFile(p) => write!(f, "from `listen` in the config file {p}"),
            UrlSource::Default => f.write_str("the default: no --url, PVEDEPLOY_URL or listen setting"),
        }
    }
}

/// Why a command against the agent failed, phrased as what to do.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// A command-line argument is wrong: fix the named argument. Nothing was sent.
    #[error("argument {arg} {rule}")]
    Argument { arg: String, rule: String },
    /// The agent did not answer: start it or point `--url` at it.
    #[error("cannot reach the agent at {url} ({from}): {cause}; is `pvedeploy serve` running there? (set --url or PVEDEPLOY_URL)")]
    Unreachable { url: String, from: UrlSource, cause: String },
    /// The token was refused (401) or lacks a scope (403).
    #[error("{}", auth_words(*status, message, need))]
    Auth { status: u16, message: String, need: Need },
    /// The request broke rules (422): every field with its rule.
    #[error("{}", invalid_words(need, message, fields))]
    Invalid { need: Need, message: String, fields: Vec<FieldProblemJson> },
    /// The agent answered, but Proxmox VE did not answer the agent in time (503 `proxmox_timeout`): Proxmox is slow or
    /// hung, not the agent; retrying later is safe.
    #[error("the agent answered, but Proxmox VE did not answer it in time (Proxmox is slow or hung; the agent is fine): {message}")]
    ProxmoxSlow { message: String },
    /// The agent answered with an error (404 no such deployment, 409 not in a status that allows it, …).
    #[error("{message} (HTTP {status})")]
    Refused { status: u16, message: String },
    /// A live stream kept failing: following stopped (the deployment goes on).
    #[error("lost the agent at {url} while following ({attempts} attempts, the last: {cause}); the deployment goes on: see `pvedeploy status`")]
    Lost { url: String, attempts: u32, cause: String },
    /// Writing the files failed.
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    /// The configuration that would say where the agent listens cannot be read: fix it, or name the agent with
    /// `--url` / `PVEDEPLOY_URL`. Nothing was sent (the token never goes to a guessed address).
    #[error("cannot find the agent's address: {0}; fix the configuration or give --url (or PVEDEPLOY_URL)")]
    Config(String),
}

impl RemoteError {
    /// The command line's exit code for this error: 2, a usage or connection problem (nothing was done, or the
    /// agent could not be followed); 1 only for writing files.
    pub fn exit_code(&self) -> u8 {
        match self {
            RemoteError::Write { .. } => 1,
            _ => 2,
        }
    }

    /// Trying again later may work (the agent restarting, a dropped connection, 503).
    pub fn is_transient(&self) -> bool {
        match self {
            RemoteError::Unreachable { .. } | RemoteError::Lost { .. } | RemoteError::ProxmoxSlow { .. } => true,
            RemoteError::Refused { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// What an operation needs: its words for errors and the token scope the agent checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub what: &'static str,
    pub scope: &'static str,
}

impl Need {
    pub const fn read(what: &'static str) -> Need {
        Need { what, scope: "read" }
    }
    pub const fn deploy(what: &'static str) -> Need {
        Need { what, scope: "deploy" }
    }
    pub const fn admin(what: &'static str) -> Need {
        Need { what, scope: "admin" }
    }
}

fn auth_words(status: u16, message: &str, need: &Need) -> String {
    if status == 403 {
        // The agent names the scope between backticks; ours is the fallback.
        let scope = message.split('`').nth(1).filter(|s| ["read", "deploy", "admin"].contains(s)).unwrap_or(need.scope);
        format!(
            "the token lacks the `{scope}` scope, which {} needs (HTTP 403); use a token that has it in PVEDEPLOY_TOKEN or --token-file (scopes nest: read ⊂ deploy ⊂ admin)",
            need.what
        )
    } else {
        format!("the agent did not accept the token for {} (HTTP {status}: {message}); set PVEDEPLOY_TOKEN or --token-file to a valid API token", need.what)
    }
}

fn invalid_words(need: &Need, message: &str, fields: &[FieldProblemJson]) -> String {
    if fields.is_empty() {
        return format!("the agent refused {} (HTTP 422): {message}", need.what);
    }
    let mut s = format!("the agent refused {} (HTTP 422); nothing was changed:", need.what);
    for f in fields {
        s.push_str(&format!("\n  {}: {} [rule: {}]", f.field, f.message, f.rule));
    }
    s
}

pub(crate) fn arg(arg: impl Into<String>, rule: impl Into<String>) -> RemoteError {
    RemoteError::Argument { arg: arg.into(), rule: rule.into() }
}

/// A running agent.
#[derive(Clone)]
pub struct Remote {
    base: String,
    from: UrlSource,
    token: Secret<String>,
    http: reqwest::Client,
    /// For live streams: no total deadline (the follower bounds every wait itself).
    streams: reqwest::Client,
}

#[derive(Debug, Deserialize)]
pub struct ExportJson {
    pub deployment_id: String,
    pub name: String,
    pub resource: String,
    pub files: Vec<FileJson>,
    pub generated_at: String,
}

#[derive(Debug, Deserialize)]
pub struct FileJson {
    pub path: String,
    pub content: String,
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct DriftJson {
    pub checked: u64,
    pub differences: Vec<DriftItemJson>,
    /// Deployments that could not be checked (absent from agents older than this command line).
    #[serde(default)]
    pub unreadable: Vec<UnreadableJson>,
    pub generated_at: String,
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct UnreadableJson {
    pub deployment_id: String,
    pub deployment: String,
    pub part: String,
    pub guest: String,
    pub reason: String,
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct DriftItemJson {
    pub deployment_id: String,
    pub deployment: String,
    pub field: String,
    #[serde(default)]
    pub store: Option<String>,
    #[serde(default)]
    pub live: Option<String>,
    #[serde(default)]
    pub export: Option<String>,
    pub message: String,
}

/// A schedule as the agent shows it.
#[derive(Debug, Deserialize, serde::Serialize)]
pub struct ScheduleJson {
    pub id: String,
    pub cron: String,
    pub timezone: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
    pub target: String,
    pub enabled: bool,
    pub catch_up: bool,
    #[serde(default)]
    pub next_runs: Vec<NextRunJson>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct NextRunJson {
    pub utc: String,
    pub local: String,
}

#[derive(Debug, Deserialize)]
struct SchedulePageJson {
    items: Vec<ScheduleJson>,
    next_offset: Option<u32>,
}

/// The token: `--token-file`'s content, else `PVEDEPLOY_TOKEN`.
pub fn token(token_file: Option<&Path>, env_token: Option<String>) -> Result<Secret<String>, RemoteError> {
    let t = match token_file {
        Some(p) => std::fs::read_to_string(p).map_err(|e| arg("--token-file", format!("cannot be read ({}): {e}", p.display())))?.trim().to_owned(),
        None => env_token.map(|t| t.trim().to_owned()).ok_or_else(|| arg("--token-file", "is required when PVEDEPLOY_TOKEN is not set (an API token)"))?,
    };
    if t.is_empty() {
        return Err(arg("--token-file", "holds an empty token"));
    }
    Ok(Secret::new(t))
}

/// `NAME`: a deployment name or id.
pub fn deployment_arg(raw: &str) -> Result<String, RemoteError> {
    if DeploymentId::parse(raw).is_some() || AppName::parse(raw).is_ok() {
        Ok(raw.to_owned())
    } else {
        Err(arg("NAME", format!("must be a deployment name (a DNS label: lowercase letters, digits, hyphens) or id, got {raw:?}")))
    }
}

/// The agent's URL and where it came from: `--url`, else `PVEDEPLOY_URL`, else the configuration's listen address
/// (`PVEDEPLOY_LISTEN` or the config file), else the default.
pub fn agent_url(agent: &AgentArgs, config: Option<&Path>, env: &BTreeMap<String, String>) -> Result<(String, UrlSource), RemoteError> {
    if let Some(u) = &agent.url {
        return Ok((u.clone(), UrlSource::Flag));
    }
    if let Some(u) = env.get("PVEDEPLOY_URL").filter(|u| !u.is_empty()) {
        return Ok((u.clone(), UrlSource::Environment));
    }
    let over = Overrides { config: config.map(Path::to_path_buf), ..Overrides::default() };
    let default: std::net::SocketAddr = crate::config::DEFAULT_LISTEN.parse().expect("valid");
    let (listen, from) = match Config::load(&over, env) {
        Ok(c) if c.sources.iter().any(|s| s == "PVEDEPLOY_LISTEN from environment") => (c.listen, UrlSource::ListenEnvironment),
        Ok(c) if c.listen != default => {
            let file = c.sources.iter().find_map(|s| s.strip_prefix("config file ")).unwrap_or("pvedeploy.toml").to_owned();
            (c.listen, UrlSource::ConfigFile(file))
        }
        Ok(_) => (default, UrlSource::Default),
        // Never a silent fallback: the bearer token would go to whatever listens at the default address.
        Err(e) => return Err(RemoteError::Config(e.to_string())),
    };
    let host = if listen.ip().is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { listen.ip() };
    Ok((format!("http://{}", std::net::SocketAddr::new(host, listen.port())), from))
}

/// The agent named by the arguments (see `agent_url`), with the token; nothing is sent yet.
pub fn connect(agent: &AgentArgs, config: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Remote, RemoteError> {
    let (url, from) = agent_url(agent, config, env)?;
    let token = token(agent.token_file.as_deref(), env.get("PVEDEPLOY_TOKEN").cloned())?;
    Remote::new(&url, from, token)
}

/// The innermost cause of a request error, which is the one that says what happened ("Connection refused").
fn cause(e: &reqwest::Error) -> String {
    if e.is_timeout() && e.is_connect() {
        return format!("no connection within {} s", CONNECT_TIMEOUT.as_secs());
    }
    if e.is_timeout() {
        return format!("the agent sent no answer within {} s", CALL_TIMEOUT.as_secs());
    }
    let mut last: &dyn std::error::Error = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

impl Remote {
    pub fn new(url: &str, from: UrlSource, token: Secret<String>) -> Result<Remote, RemoteError> {
        let base = url.trim_end_matches('/');
        let rest = base.strip_prefix("http://").or_else(|| base.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            return Err(arg("--url", format!("must be an http:// or https:// URL of the agent, e.g. http://127.0.0.1:8080, got {url:?} ({from})")));
        }
        let http = reqwest::Client::builder().timeout(CALL_TIMEOUT).connect_timeout(CONNECT_TIMEOUT).build().map_err(|e| arg("--url", e.to_string()))?;
        let streams = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).build().map_err(|e| arg("--url", e.to_string()))?;
        Ok(Remote { base: base.to_owned(), from, token, http, streams })
    }

    /// The agent's URL as given.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, e: &reqwest::Error) -> RemoteError {
        RemoteError::Unreachable { url: self.base.clone(), from: self.from.clone(), cause: cause(e) }
    }

    fn refusal(status: u16, text: &str, need: Need) -> RemoteError {
        let body: Option<ErrorJson> = serde_json::from_str(text).ok();
        let message = body.as_ref().map(|b| b.message.clone()).unwrap_or_else(|| text.chars().take(500).collect());
        match status {
            401 | 403 => RemoteError::Auth { status, message, need },
            422 => RemoteError::Invalid { need, message, fields: body.map(|b| b.fields).unwrap_or_default() },
            503 if body.as_ref().is_some_and(|b| b.error == "proxmox_timeout") => RemoteError::ProxmoxSlow { message },
            _ => RemoteError::Refused { status, message },
        }
    }

    /// One request with an optional JSON body; the answer's body as JSON (`null` when empty).
    pub async fn call<T: serde::de::DeserializeOwned>(&self, method: reqwest::Method, path: &str, body: Option<&serde_json::Value>, need: Need) -> Result<T, RemoteError> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(self.token.expose());
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| self.unreachable(&e))?;
        if (200..300).contains(&status) {
            let text = if text.is_empty() { "null" } else { text.as_str() };
            return serde_json::from_str(text).map_err(|e| RemoteError::Refused { status, message: format!("unexpected answer from the agent: {e}") });
        }
        Err(Self::refusal(status, &text, need))
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str, need: Need) -> Result<T, RemoteError> {
        self.call(reqwest::Method::GET, path, None, need).await
    }

    /// Opens a Server-Sent Events stream (`GET`); its reads are bounded by `STREAM_IDLE`.
    pub async fn stream(&self, path: &str, need: Need) -> Result<sse::Stream, RemoteError> {
        let url = format!("{}/api/v1{path}", self.base);
        let req = self.streams.get(&url).bearer_auth(self.token.expose()).header(reqwest::header::ACCEPT, "text/event-stream");
        let resp = match tokio::time::timeout(STREAM_OPEN_TIMEOUT, req.send()).await {
            Ok(r) => r.map_err(|e| self.unreachable(&e))?,
            Err(_) => return Err(RemoteError::Unreachable { url: self.base.clone(), from: self.from.clone(), cause: "no answer in time".into() }),
        };
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let text = tokio::time::timeout(STREAM_OPEN_TIMEOUT, resp.text()).await.ok().and_then(Result::ok).unwrap_or_default();
            return Err(Self::refusal(status, &text, need));
        }
        Ok(sse::Stream::new(resp, STREAM_IDLE))
    }

    /// Every schedule (all pages).
    pub async fn schedules(&self) -> Result<Vec<ScheduleJson>, RemoteError> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let page: SchedulePageJson = self.get(&format!("/schedules?limit=100&offset={offset}"), Need::read("listing schedules")).await?;
            out.extend(page.items);
            match page.next_offset {
                Some(n) => offset = n,
                None => return Ok(out),
            }
        }
    }

    /// Creates a schedule from the `POST /schedules` body; the agent validates it (422 names the field).
    pub async fn add_schedule(&self, body: &serde_json::Value) -> Result<ScheduleJson, RemoteError> {
        self.call(reqwest::Method::POST, "/schedules", Some(body), Need::deploy("adding a schedule")).await
    }

    pub async fn remove_schedule(&self, id: &str) -> Result<(), RemoteError> {
        if uuid::Uuid::try_parse(id).is_err() {
            return Err(arg("ID", format!("must be a schedule id (as `pvedeploy schedule list` shows), got {id:?}")));
        }
        self.call::<serde_json::Value>(reqwest::Method::DELETE, &format!("/schedules/{id}"), None, Need::deploy("removing a schedule")).await.map(|_| ())
    }

    pub async fn export(&self, name: &str) -> Result<ExportJson, RemoteError> {
        self.get(&format!("/deployments/{}/terraform", segment(name)), Need::read("reading a Terraform export")).await
    }

    /// The deployments `export --all` asks for: every one with a guest, and every failed one without (a guest lost
    /// outside pvedeploy ends `failed` with no guest: the agent answers why there is nothing to export, and the
    /// command names it as skipped rather than leaving it out unsaid). Those still on the way to a guest are not asked.
    pub async fn names_to_export_all(&self) -> Result<Vec<String>, RemoteError> {
        let mut names: Vec<String> = self
            .deployments(&[])
            .await?
            .into_iter()
            .filter(|d| d.status != "destroyed" && (d.proxmox_id.is_some() || d.status == "failed"))
            .map(|d| d.name)
            .collect();
        names.sort();
        Ok(names)
    }

    pub async fn drift(&self) -> Result<DriftJson, RemoteError> {
        self.get("/drift", Need::read("the drift report")).await
    }

    /// Every deployment matching the query (`status`, `framework`), newest first; at most 100 pages.
    pub async fn deployments(&self, query: &[(&str, &str)]) -> Result<Vec<wire::DeploymentJson>, RemoteError> {
        let mut out = Vec::new();
        let mut after = String::new();
        let filter: String = query.iter().map(|(k, v)| format!("&{k}={}", segment(v))).collect();
        for _ in 0..100 {
            let page: wire::PageJson<wire::DeploymentJson> = self.get(&format!("/deployments?limit=100{after}{filter}"), Need::read("listing deployments")).await?;
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => after = format!("&after={}", segment(&c)),
                None => break,
            }
        }
        Ok(out)
    }

    /// One deployment (by id or name) with its status history.
    pub async fn deployment(&self, id_or_name: &str) -> Result<wire::DeploymentJson, RemoteError> {
        self.get(&format!("/deployments/{}", segment(id_or_name)), Need::read("reading a deployment")).await
    }

    pub async fn releases(&self, id: &str) -> Result<Vec<wire::ReleaseJson>, RemoteError> {
        self.get(&format!("/deployments/{}/releases", segment(id)), Need::read("reading releases")).await
    }

    /// Log lines after cursor `after`, at most `limit` (1–1000).
    pub async fn log_page(&self, id: &str, after: i64, limit: u32) -> Result<wire::LogPageJson, RemoteError> {
        self.get(&format!("/deployments/{}/logs?after={after}&limit={limit}", segment(id)), Need::read("reading the log")).await
    }

    /// The newest `n` lines (1–1000), oldest first; `next_after` is the newest line's cursor.
    pub async fn log_tail(&self, id: &str, n: u32) -> Result<wire::LogPageJson, RemoteError> {
        self.get(&format!("/deployments/{}/logs?tail={n}", segment(id)), Need::read("reading the log")).await
    }

    /// The live log after cursor `after`, until the deployment settles.
    pub async fn log_stream(&self, id: &str, after: i64) -> Result<sse::Stream, RemoteError> {
        self.stream(&format!("/deployments/{}/logs?follow=true&after={after}", segment(id)), Need::read("following the log")).await
    }

    /// Every deployment's status changes, live.
    pub async fn event_stream(&self) -> Result<sse::Stream, RemoteError> {
        self.stream("/events", Need::read("following status changes")).await
    }

    pub async fn create(&self, body: &serde_json::Value) -> Result<wire::DeploymentJson, RemoteError> {
        self.call(reqwest::Method::POST, "/deployments", Some(body), Need::deploy("creating a deployment")).await
    }

    /// `start`, `stop`, `redeploy` or `rollback`.
    pub async fn act(&self, id: &str, action: &'static str, need: Need) -> Result<wire::DeploymentJson, RemoteError> {
        self.call(reqwest::Method::POST, &format!("/deployments/{}/{action}", segment(id)), Some(&serde_json::json!({})), need).await
    }

    /// `redeploy` of one commit (`?commit=`; a parsed `CommitSha` is hex only, nothing to escape).
    pub async fn redeploy_commit(&self, id: &str, commit: &CommitSha) -> Result<wire::DeploymentJson, RemoteError> {
        let path = format!("/deployments/{}/redeploy?commit={}", segment(id), commit.as_str());
        self.call(reqwest::Method::POST, &path, Some(&serde_json::json!({})), Need::deploy("redeploying")).await
    }

    pub async fn destroy(&self, id: &str) -> Result<wire::DeploymentJson, RemoteError> {
        self.call(reqwest::Method::DELETE, &format!("/deployments/{}", segment(id)), None, Need::admin("destroying a deployment")).await
    }

    pub async fn env_names(&self, id: &str) -> Result<Vec<String>, RemoteError> {
        let names: wire::EnvNamesJson = self.get(&format!("/deployments/{}/env", segment(id)), Need::read("reading environment variable names")).await?;
        Ok(names.names)
    }

    /// Replaces the whole environment (the API's `PUT` semantics); answers the names now set.
    pub async fn put_env(&self, id: &str, vars: &BTreeMap<String, String>) -> Result<Vec<String>, RemoteError> {
        let body = serde_json::json!({ "vars": vars });
        let names: wire::EnvNamesJson = self.call(reqwest::Method::PUT, &format!("/deployments/{}/env", segment(id)), Some(&body), Need::deploy("setting environment variables")).await?;
        Ok(names.names)
    }
}

/// A path segment or query value, percent-encoded.
pub(crate) fn segment(s: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
}

/// Writes an export's files to `<out>/<name>/`, refusing any path that would leave that folder.
pub fn write_export(out: &Path, export: &ExportJson) -> Result<PathBuf, RemoteError> {
    let name = AppName::parse(&export.name).map_err(|_| RemoteError::Refused { status: 200, message: format!("the agent sent a bad name {:?}", export.name) })?;
    let folder = out.join(name.as_str());
    std::fs::create_dir_all(&folder).map_err(|source| RemoteError::Write { path: folder.clone(), source })?;
    for f in &export.files {
        let safe = !f.path.is_empty() && f.path.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) && !f.path.starts_with('.');
        if !safe {
            return Err(RemoteError::Refused { status: 200, message: format!("the agent sent a file with an unsafe path {:?}", f.path) });
        }
        let path = folder.join(&f.path);
        std::fs::write(&path, &f.content).map_err(|source| RemoteError::Write { path, source })?;
    }
    Ok(folder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_errors_name_the_missing_scope_and_what_needed_it() {
        let e = RemoteError::Auth { status: 403, message: "this token lacks the `admin` scope needed for this operation".into(), need: Need::admin("destroying a deployment") };
        assert_eq!(
            e.to_string(),
            "the token lacks the `admin` scope, which destroying a deployment needs (HTTP 403); use a token that has it in PVEDEPLOY_TOKEN or --token-file (scopes nest: read ⊂ deploy ⊂ admin)"
        );
        let e = RemoteError::Auth { status: 401, message: "a valid API token is required".into(), need: Need::read("listing deployments") };
        assert!(e.to_string().contains("did not accept the token for listing deployments (HTTP 401"), "{e}");
    }

    #[test]
    fn a_422_lists_every_field_with_its_rule() {
        let fields = vec![
            FieldProblemJson { field: "name".into(), rule: "dns_label".into(), message: "must be a DNS label".into() },
            FieldProblemJson { field: "cpu".into(), rule: "range".into(), message: "must be between 1 and 8".into() },
        ];
        let e = RemoteError::Invalid { need: Need::deploy("creating a deployment"), message: String::new(), fields };
        assert_eq!(
            e.to_string(),
            "the agent refused creating a deployment (HTTP 422); nothing was changed:\n  name: must be a DNS label [rule: dns_label]\n  cpu: must be between 1 and 8 [rule: range]"
        );
    }

    #[test]
    fn the_url_says_where_it_came_from() {
        let env = BTreeMap::new();
        let flag = AgentArgs { url: Some("http://a:1".into()), token_file: None };
        assert_eq!(agent_url(&flag, None, &env).unwrap(), ("http://a:1".into(), UrlSource::Flag));
        let env = BTreeMap::from([("PVEDEPLOY_URL".to_string(), "http://b:2".to_string())]);
        assert_eq!(agent_url(&AgentArgs::default(), None, &env).unwrap(), ("http://b:2".into(), UrlSource::Environment));
        let env = BTreeMap::from([("PVEDEPLOY_LISTEN".to_string(), "0.0.0.0:9000".to_string())]);
        assert_eq!(agent_url(&AgentArgs::default(), None, &env).unwrap(), ("http://127.0.0.1:9000".into(), UrlSource::ListenEnvironment));
        // A configuration that cannot be read is an error naming it, never the default address.
        let bad = BTreeMap::from([("PVEDEPLOY_LISTEN".to_string(), "not an address".to_string())]);
        let err = agent_url(&AgentArgs::default(), None, &bad).unwrap_err();
        assert!(matches!(err, RemoteError::Config(_)) && err.to_string().contains("--url"), "{err}");
        let e = RemoteError::Unreachable { url: "http://b:2".into(), from: UrlSource::Environment, cause: "Connection refused (os error 111)".into() };
        assert!(e.to_string().starts_with("cannot reach the agent at http://b:2 (from PVEDEPLOY_URL): Connection refused"), "{e}");
    }
}
