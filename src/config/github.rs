//! The `[github]` section: webhook secrets, global and per repository, read from the file, a secret file or the environment.

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
}

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
    Ok(GithubSettings { webhook_secret, repo_secrets })
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
}
