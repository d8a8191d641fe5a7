//! The command line's client for a running agent's HTTP API: `pvedeploy export`, `drift` and `schedule` go through
//! the agent (it holds the embedded database open), authenticated with a token that never appears in `ps`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::Secret;
use crate::core::deployment::DeploymentId;
use crate::core::names::AppName;

/// Why a command against the agent failed, phrased as what to do.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// A command-line argument is wrong: fix the named argument.
    #[error("argument {arg} {rule}")]
    Argument { arg: &'static str, rule: String },
    /// The agent did not answer: start it or point `--url` at it.
    #[error("cannot reach the agent at {url}: {cause}; is `pvedeploy serve` running there? (set --url or PVEDEPLOY_URL)")]
    Unreachable { url: String, cause: String },
    /// The token was refused: give one with the `read` scope.
    #[error("the agent refused the token ({status}): {message}; set PVEDEPLOY_TOKEN or --token-file to a token with the read scope")]
    Auth { status: u16, message: String },
    /// The agent answered with an error (404 no such deployment, 409 no guest, …).
    #[error("{message} (HTTP {status})")]
    Refused { status: u16, message: String },
    /// Writing the files failed.
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

fn arg(arg: &'static str, rule: impl Into<String>) -> RemoteError {
    RemoteError::Argument { arg, rule: rule.into() }
}

/// A running agent.
pub struct Remote {
    base: String,
    token: Secret<String>,
    http: reqwest::Client,
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
    pub generated_at: String,
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

#[derive(Debug, Deserialize)]
struct Page {
    items: Vec<Item>,
    next_offset: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct Item {
    name: String,
    status: String,
    #[serde(default)]
    proxmox_id: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ErrorJson {
    message: String,
}

/// The token: `--token-file`'s content, else `PVEDEPLOY_TOKEN`.
pub fn token(token_file: Option<&Path>, env_token: Option<String>) -> Result<Secret<String>, RemoteError> {
    let t = match token_file {
        Some(p) => std::fs::read_to_string(p).map_err(|e| arg("--token-file", format!("cannot be read ({}): {e}", p.display())))?.trim().to_owned(),
        None => env_token.map(|t| t.trim().to_owned()).ok_or_else(|| arg("--token-file", "is required when PVEDEPLOY_TOKEN is not set (an API token with the read scope)"))?,
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

impl Remote {
    pub fn new(url: &str, token: Secret<String>) -> Result<Remote, RemoteError> {
        let base = url.trim_end_matches('/');
        let rest = base.strip_prefix("http://").or_else(|| base.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            return Err(arg("--url", format!("must be an http:// or https:// URL of the agent, e.g. http://127.0.0.1:8080, got {url:?}")));
        }
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build().map_err(|e| arg("--url", e.to_string()))?;
        Ok(Remote { base: base.to_owned(), token, http })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, RemoteError> {
        let url = format!("{}/api/v1{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| RemoteError::Unreachable { url: self.base.clone(), cause: e.to_string() })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| RemoteError::Unreachable { url: self.base.clone(), cause: e.to_string() })?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&text).map_err(|e| RemoteError::Refused { status, message: format!("unexpected answer: {e}") });
        }
        let message = serde_json::from_str::<ErrorJson>(&text).map(|e| e.message).unwrap_or(text);
        Err(if status == 401 || status == 403 { RemoteError::Auth { status, message } } else { RemoteError::Refused { status, message } })
    }

    /// A POST (JSON body) or DELETE; answers the body as JSON (`null` for 204).
    async fn send<T: serde::de::DeserializeOwned>(&self, method: reqwest::Method, path: &str, body: Option<&serde_json::Value>) -> Result<T, RemoteError> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(self.token.expose());
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| RemoteError::Unreachable { url: self.base.clone(), cause: e.to_string() })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| RemoteError::Unreachable { url: self.base.clone(), cause: e.to_string() })?;
        if (200..300).contains(&status) {
            let text = if text.is_empty() { "null" } else { text.as_str() };
            return serde_json::from_str(text).map_err(|e| RemoteError::Refused { status, message: format!("unexpected answer: {e}") });
        }
        let message = serde_json::from_str::<ErrorJson>(&text).map(|e| e.message).unwrap_or(text);
        Err(if status == 401 || status == 403 { RemoteError::Auth { status, message } } else { RemoteError::Refused { status, message } })
    }

    /// Every schedule (all pages).
    pub async fn schedules(&self) -> Result<Vec<ScheduleJson>, RemoteError> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let page: SchedulePageJson = self.get(&format!("/schedules?limit=100&offset={offset}")).await?;
            out.extend(page.items);
            match page.next_offset {
                Some(n) => offset = n,
                None => return Ok(out),
            }
        }
    }

    /// Creates a schedule from the `POST /schedules` body; the agent validates it (422 names the field).
    pub async fn add_schedule(&self, body: &serde_json::Value) -> Result<ScheduleJson, RemoteError> {
        self.send(reqwest::Method::POST, "/schedules", Some(body)).await
    }

    pub async fn remove_schedule(&self, id: &str) -> Result<(), RemoteError> {
        if uuid::Uuid::try_parse(id).is_err() {
            return Err(arg("ID", format!("must be a schedule id (as `pvedeploy schedule list` shows), got {id:?}")));
        }
        self.send::<serde_json::Value>(reqwest::Method::DELETE, &format!("/schedules/{id}"), None).await.map(|_| ())
    }

    pub async fn export(&self, name: &str) -> Result<ExportJson, RemoteError> {
        self.get(&format!("/deployments/{}/terraform", percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC))).await
    }

    /// Names of the deployments that have a guest (not destroyed).
    pub async fn names_with_guests(&self) -> Result<Vec<String>, RemoteError> {
        let mut names = Vec::new();
        let mut offset = 0;
        loop {
            let page: Page = self.get(&format!("/deployments?limit=100&offset={offset}")).await?;
            names.extend(page.items.into_iter().filter(|i| i.status != "destroyed" && i.proxmox_id.is_some()).map(|i| i.name));
            match page.next_offset {
                Some(n) => offset = n,
                None => break,
            }
        }
        names.sort();
        Ok(names)
    }

    pub async fn drift(&self) -> Result<DriftJson, RemoteError> {
        self.get("/drift").await
    }
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
