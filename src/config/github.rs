//! The `[github]` section: webhook secrets, global and per repository, read from the file, a secret file or the environment;
//! and the API token (a file or the environment, never inline) with the API and web addresses commit statuses and
//! GitHub Deployments are posted to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{invalid, ConfigError, Secret};

/// `[github]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubFile {
    /// The secret of every repository without its own (also `PVEDEPLOY_GITHUB_WEBHOOK_SECRET`).
    pub webhook_secret: Option<Secret<String>>,
    /// Or a file holding it (a trailing newline is ignored).
    pub webhook_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub repos: Vec<GithubRepoFile>,
    /// A file holding the API token (fine-grained personal access token or GitHub App installation token) that
    /// posts commit statuses and deployments (also `PVEDEPLOY_GITHUB_TOKEN`); without one nothing is posted.
    pub token_file: Option<PathBuf>,
    /// GitHub's REST API (default `https://api.github.com`; GitHub Enterprise Server: `https://HOST/api/v3`).
    pub api_base: Option<String>,
    /// Where the repositories are (default `https://github.com`, or `https://HOST` for an `api_base` ending in
    /// `/api/v3`): deployments whose repository URL is on this host get statuses.
    pub web_url: Option<String>,
    /// The dashboard's address as people reach it (e.g. `https://deploy.example.com`): statuses link to
    /// `<dashboard_url>/#/deployments/<id>`. Without it they carry no link.
    pub dashboard_url: Option<String>,
}

/// `[[github.repos]]`: a repository with its own webhook secret.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubRepoFile {
    /// `owner/repo`, as GitHub's `repository.full_name`.
    pub full_name: String,
    pub webhook_secret: Option<Secret<String>>,
    pub webhook_secret_file: Option<PathBuf>,
}

/// The webhook secrets, parsed. No secret at all: the webhook endpoint is off.
#[derive(Debug, Clone, Default)]
pub struct GithubSettings {
    pub webhook_secret: Option<Secret<String>>,
    /// Lowercase `owner/repo` and its secret; a repository listed here accepts only its own secret.
    pub repo_secrets: Vec<(String, Secret<String>)>,
    /// Posting commit statuses and deployments; `None` without a token.
    pub api: Option<GithubApi>,
}

/// The GitHub REST API as this agent uses it: a token, where the API is, which repositories it serves.
#[derive(Debug, Clone)]
pub struct GithubApi {
    /// The token as read at start.
    pub token: Secret<String>,
    /// The file it came from: read again before each call, so a token that is replaced there (a GitHub App's
    /// installation token lasts an hour) is used from the next call on.
    pub token_file: Option<PathBuf>,
    /// No trailing slash.
    pub api_base: String,
    /// The repositories' host as it appears in repository URLs (`github.com`, `ghe.example.com`), lowercase.
    pub web_host: String,
    /// No trailing slash.
    pub dashboard_url: Option<String>,
}

pub const DEFAULT_API_BASE: &str = "https://api.github.com";

impl GithubSettings {
    pub fn webhooks_enabled(&self) -> bool {
        self.webhook_secret.is_some() || !self.repo_secrets.is_empty()
    }
}

/// Shortest secret accepted: GitHub signs with whatever it is given, so a guessable one is refused here.
pub const MIN_SECRET_LEN: usize = 16;

fn secret(field: &str, inline: Option<Secret<String>>, file: Option<&Path>) -> Result<Option<Secret<String>>, ConfigError> {
    let value = match (inline, file) {
        (None, None) => return Ok(None),
        (Some(s), None) => s,
        (None, Some(p)) => {
            let text = std::fs::read_to_string(p).map_err(|e| invalid(format!("{field}_file"), format!("cannot be read ({}): {e}", p.display())))?;
            Secret::new(text.trim_end_matches(['\n', '\r']).to_owned())
        }
        (Some(_), Some(_)) => return Err(invalid(field, format!("and {field}_file are exclusive: give one"))),
    };
    if value.expose().len() < MIN_SECRET_LEN {
        return Err(invalid(field, format!("must be at least {MIN_SECRET_LEN} characters (use a random value, e.g. `openssl rand -hex 32`)")));
    }
    Ok(Some(value))
}

pub fn parse(file: GithubFile, env: &BTreeMap<String, String>) -> Result<GithubSettings, ConfigError> {
    let from_env = env.get("PVEDEPLOY_GITHUB_WEBHOOK_SECRET").map(|s| Secret::new(s.clone()));
    let webhook_secret = match from_env {
        Some(s) => secret("PVEDEPLOY_GITHUB_WEBHOOK_SECRET", Some(s), None)?,
        None => secret("github.webhook_secret", file.webhook_secret, file.webhook_secret_file.as_deref())?,
    };
    let mut repo_secrets: Vec<(String, Secret<String>)> = Vec::new();
    for (i, r) in file.repos.into_iter().enumerate() {
        let field = |f: &str| format!("github.repos[{i}].{f}");
        let name = r.full_name.to_ascii_lowercase();
        let ok = name.split('/').count() == 2
            && name.split('/').all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')));
        if !ok {
            return Err(invalid(field("full_name"), "must be owner/repo (letters, digits, '-', '_', '.')"));
        }
        if repo_secrets.iter().any(|(n, _)| *n == name) {
            return Err(invalid(field("full_name"), "must be unique: this repository is listed twice"));
        }
        let s = secret(&field("webhook_secret"), r.webhook_secret, r.webhook_secret_file.as_deref())?
            .ok_or_else(|| invalid(field("webhook_secret"), "is required (or webhook_secret_file)"))?;
        repo_secrets.push((name, s));
    }
    let api = api(file.token_file.as_deref(), file.api_base, file.web_url, file.dashboard_url, env)?;
    Ok(GithubSettings { webhook_secret, repo_secrets, api })
}

/// An `https://` URL (plain `http://` only on loopback, for tests), without a trailing slash.
fn base_url(field: &str, raw: &str) -> Result<String, ConfigError> {
    let url = raw.trim_end_matches('/');
    let ok = url.starts_with("https://") || url.starts_with("http://127.") || url.starts_with("http://localhost") || url.starts_with("http://[::1]");
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or("");
    if !ok || rest.is_empty() || rest.contains(['?', '#', '@']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(field, "must be an https:// URL without credentials, query or fragment (plain http only on loopback, for tests)"));
    }
    Ok(url.to_owned())
}

fn api(token_file: Option<&Path>, api_base: Option<String>, web_url: Option<String>, dashboard_url: Option<String>, env: &BTreeMap<String, String>) -> Result<Option<GithubApi>, ConfigError> {
    let token = match (env.get("PVEDEPLOY_GITHUB_TOKEN"), token_file) {
        (Some(t), _) => Some(("PVEDEPLOY_GITHUB_TOKEN", t.trim().to_owned(), None)),
        (None, Some(p)) => {
            let text = std::fs::read_to_string(p).map_err(|e| invalid("github.token_file", format!("cannot be read ({}): {e}", p.display())))?;
            Some(("github.token_file", text.trim().to_owned(), Some(p.to_path_buf())))
        }
        (None, None) => None,
    };
    let api_base = base_url("github.api_base", api_base.as_deref().unwrap_or(DEFAULT_API_BASE))?;
    let web_url = match web_url {
        Some(w) => base_url("github.web_url", &w)?,
        None if api_base == DEFAULT_API_BASE => "https://github.com".to_owned(),
        None => match api_base.strip_suffix("/api/v3") {
            Some(host) => host.to_owned(),
            None => return Err(invalid("github.web_url", "is required when github.api_base is not GitHub's or a GitHub Enterprise Server's (…/api/v3)")),
        },
    };
    let dashboard_url = dashboard_url.map(|d| base_url("github.dashboard_url", &d)).transpose()?;
    let Some((field, token, token_file)) = token else { return Ok(None) };
    let token = parse_token(&token).ok_or_else(|| invalid(field, "must hold one token without spaces (a fine-grained personal access token or an installation token)"))?;
    let web_host = web_url.split_once("://").map(|(_, r)| r).unwrap_or(&web_url).split('/').next().unwrap_or("").to_ascii_lowercase();
    Ok(Some(GithubApi { token, token_file, api_base, web_host, dashboard_url }))
}

/// A token as a file or the environment holds it: one header value, printable ASCII without spaces (GitHub's are
/// `ghp_…`, `github_pat_…`, `ghs_…`), surrounding whitespace ignored.
pub fn parse_token(text: &str) -> Option<Secret<String>> {
    let t = text.trim();
    (!t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic())).then(|| Secret::new(t.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_toml(t: &str) -> Result<GithubSettings, ConfigError> {
        parse(toml::from_str(t).unwrap(), &BTreeMap::new())
    }

    #[test]
    fn secrets_parse_and_never_print() {
        let s = parse_toml("webhook_secret = 'global-secret-0123456789'\n[[repos]]\nfull_name = 'Octo/App'\nwebhook_secret = 'repo-secret-0123456789'").unwrap();
        assert!(s.webhooks_enabled());
        assert_eq!(s.repo_secrets[0].0, "octo/app");
        let shown = format!("{s:?}");
        assert!(!shown.contains("global-secret") && !shown.contains("repo-secret"), "{shown}");
        assert!(!parse_toml("").unwrap().webhooks_enabled());
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_toml("webhook_secret = 'short'").unwrap_err().to_string();
        assert!(e.contains("github.webhook_secret") && !e.contains("short'"), "{e}");
        let e = parse_toml("[[repos]]\nfull_name = 'nope'\nwebhook_secret = 'repo-secret-0123456789'").unwrap_err().to_string();
        assert!(e.contains("github.repos[0].full_name"), "{e}");
        let e = parse_toml("[[repos]]\nfull_name = 'o/r'").unwrap_err().to_string();
        assert!(e.contains("github.repos[0].webhook_secret"), "{e}");
        let env = BTreeMap::from([("PVEDEPLOY_GITHUB_WEBHOOK_SECRET".to_string(), "env-secret-0123456789".to_string())]);
        assert!(parse(GithubFile::default(), &env).unwrap().webhook_secret.is_some());
    }

    #[test]
    fn secret_files_lose_their_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "file-secret-0123456789\n").unwrap();
        let s = parse(GithubFile { webhook_secret_file: Some(p), ..GithubFile::default() }, &BTreeMap::new()).unwrap();
        assert_eq!(s.webhook_secret.unwrap().expose(), "file-secret-0123456789");
    }

    #[test]
    fn the_token_comes_from_a_file_or_the_environment_and_never_prints() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "github_pat_11AAAA0123456789\n").unwrap();
        let file = |extra: &str| -> GithubFile { toml::from_str(&format!("token_file = '{}'\n{extra}", p.display())).unwrap() };
        let s = parse(file(""), &BTreeMap::new()).unwrap();
        let api = s.api.clone().unwrap();
        assert_eq!((api.token.expose().as_str(), api.api_base.as_str(), api.web_host.as_str()), ("github_pat_11AAAA0123456789", DEFAULT_API_BASE, "github.com"));
        assert!(!format!("{s:?}").contains("github_pat_"), "{s:?}");
        // GitHub Enterprise Server: the web host follows from the API base.
        let s = parse(file("api_base = 'https://ghe.example.com/api/v3/'\ndashboard_url = 'https://deploy.example.com/'"), &BTreeMap::new()).unwrap().api.unwrap();
        assert_eq!((s.api_base.as_str(), s.web_host.as_str(), s.dashboard_url.as_deref()), ("https://ghe.example.com/api/v3", "ghe.example.com", Some("https://deploy.example.com")));
        let env = BTreeMap::from([("PVEDEPLOY_GITHUB_TOKEN".to_string(), "ghs_fromtheenv".to_string())]);
        assert_eq!(parse(GithubFile::default(), &env).unwrap().api.unwrap().token.expose(), "ghs_fromtheenv");
        assert!(parse(GithubFile::default(), &BTreeMap::new()).unwrap().api.is_none());
        for (extra, field) in [("api_base = 'http://api.example.com'", "github.api_base"), ("api_base = 'https://git.example.com/api'", "github.web_url"), ("dashboard_url = 'https://u:p@x'", "github.dashboard_url")] {
            let e = parse(file(extra), &BTreeMap::new()).unwrap_err().to_string();
            assert!(e.contains(field), "{extra}: {e}");
        }
        let env = BTreeMap::from([("PVEDEPLOY_GITHUB_TOKEN".to_string(), "two words".to_string())]);
        let e = parse(GithubFile::default(), &env).unwrap_err().to_string();
        assert!(e.contains("PVEDEPLOY_GITHUB_TOKEN") && !e.contains("two words"), "{e}");
    }
}
