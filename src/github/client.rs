//! The GitHub REST client: bearer token, GitHub's media type and API version, bounded retries with backoff, and
//! GitHub's rate-limit headers honoured. A call never takes longer than `Policy::deadline`.
//!
//! Rate limits follow GitHub's "Rate limits for the REST API", section "Exceeding the rate limit"
//! (<https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api?apiVersion=2022-11-28#exceeding-the-rate-limit>,
//! source `content/rest/using-the-rest-api/rate-limits-for-the-rest-api.md` in github/docs): a 403 or 429 with
//! `retry-after` waits that many seconds; with `x-ratelimit-remaining: 0` it waits until `x-ratelimit-reset` (UTC
//! epoch seconds); a secondary limit with neither waits at least a minute, longer each time, and gives up after a
//! few tries. A 403 that is none of these is a permission problem and is not retried.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::wire;
use crate::config::Secret;

/// Why a call to GitHub did not succeed; the token is never part of it.
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    /// GitHub could not be reached or kept failing (5xx, timeouts) for every try: a later call may work.
    #[error("GitHub unreachable after {tries} tries: {last}")]
    Unreachable { tries: u32, last: String },
    /// GitHub's rate limit holds for longer than a call may wait: nothing is sent until it lifts.
    #[error("GitHub rate limit: no calls for {}s more", .wait.as_secs())]
    RateLimited { wait: Duration },
    /// GitHub refused the call (a token without the permission, a repository it cannot see, a body it rejects):
    /// fix the token or the repository; retrying does not help.
    #[error("GitHub answered {status}: {message}")]
    Refused { status: u16, message: String },
    /// A success whose body was not what GitHub documents.
    #[error("GitHub's answer could not be read: {0}")]
    BadAnswer(String),
}

/// How hard one call tries.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Tries in all, the first included.
    pub tries: u32,
    /// Backoff after a 5xx or a failed connection: from `backoff.base_delay`, doubling, capped, jittered.
    pub backoff: crate::pve::RetryPolicy,
    /// One request's limit (a hung GitHub costs this per try).
    pub request_timeout: Duration,
    /// The longest rate-limit wait honoured within a call; a longer one ends the call (`RateLimited`).
    pub max_wait: Duration,
    /// No try starts after this long since the first.
    pub deadline: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            tries: 4,
            backoff: crate::pve::RetryPolicy { attempts: 4, base_delay: Duration::from_secs(1), max_delay: Duration::from_secs(30), deadline: Duration::from_secs(120) },
            request_timeout: Duration::from_secs(10),
            max_wait: Duration::from_secs(60),
            deadline: Duration::from_secs(120),
        }
    }
}

/// What to do after an answer that was not a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Try again after at least this long (GitHub said so, or backoff).
    RetryAfter(Duration),
    /// Transient: try again after the backoff.
    Backoff,
    /// Do not try again.
    Stop,
}

/// GitHub's answer `status` with its headers and error message read as its rate-limit rules say; `now_epoch` is
/// the current UTC time in seconds, `retry` the 1-based number of the retry this would be.
pub fn verdict(status: u16, headers: &HeaderMap, message: &str, now_epoch: u64, retry: u32) -> Verdict {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if status == 403 || status == 429 {
        if let Some(secs) = header("retry-after").and_then(|v| v.parse::<u64>().ok()) {
            return Verdict::RetryAfter(Duration::from_secs(secs));
        }
        if header("x-ratelimit-remaining") == Some("0") {
            let reset = header("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok()).unwrap_or(now_epoch + 60);
            return Verdict::RetryAfter(Duration::from_secs(reset.saturating_sub(now_epoch).max(1)));
        }
        if status == 429 || message.to_ascii_lowercase().contains("rate limit") {
            // A secondary limit without either header: a minute, doubling with each retry.
            return Verdict::RetryAfter(Duration::from_secs(60u64 << retry.saturating_sub(1).min(4)));
        }
        return Verdict::Stop;
    }
    if matches!(status, 500 | 502 | 503 | 504) {
        return Verdict::Backoff;
    }
    Verdict::Stop
}

/// GitHub's REST API for one token.
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// The last good token, and the file to read it again from (before each call).
    token: Mutex<Secret<String>>,
    token_file: Option<std::path::PathBuf>,
    policy: Policy,
    /// No call is sent before this instant: a rate limit that outlasted a call's patience holds every later call.
    gate: Mutex<Option<Instant>>,
}

impl Client {
    pub fn new(base: &str, token: Secret<String>, token_file: Option<std::path::PathBuf>, policy: Policy) -> Client {
        let http = reqwest::Client::builder()
            .timeout(policy.request_timeout)
            .connect_timeout(policy.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // GitHub requires a User-Agent.
            .user_agent(concat!("pvedeploy/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Client { http, base: base.trim_end_matches('/').to_owned(), token: Mutex::new(token), token_file, policy, gate: Mutex::new(None) }
    }

    /// The token to send: the file's current one when it reads as a token, else the last good one.
    fn token(&self) -> String {
        let mut last = self.token.lock().expect("token poisoned");
        if let Some(p) = &self.token_file {
            match std::fs::read_to_string(p).ok().and_then(|t| crate::config::github::parse_token(&t)) {
                Some(t) => *last = t,
                None => tracing::warn!(file = %p.display(), "the GitHub token file cannot be read as a token; using the last one read"),
            }
        }
        last.expose().clone()
    }

    /// `repos/create-commit-status`.
    pub async fn create_commit_status(&self, owner: &str, repo: &str, sha: &str, body: &wire::CommitStatus<'_>) -> Result<(), GithubError> {
        self.call::<_, serde_json::Value>(Method::POST, &format!("/repos/{owner}/{repo}/statuses/{sha}"), body).await.map(|_| ())
    }

    /// `repos/create-deployment`; GitHub's id of the new deployment.
    pub async fn create_deployment(&self, owner: &str, repo: &str, body: &wire::NewDeployment<'_>) -> Result<u64, GithubError> {
        self.call::<_, wire::CreatedDeployment>(Method::POST, &format!("/repos/{owner}/{repo}/deployments"), body).await.map(|d| d.id)
    }

    /// `repos/create-deployment-status`.
    pub async fn create_deployment_status(&self, owner: &str, repo: &str, deployment: u64, body: &wire::DeploymentStatus<'_>) -> Result<(), GithubError> {
        self.call::<_, serde_json::Value>(Method::POST, &format!("/repos/{owner}/{repo}/deployments/{deployment}/statuses"), body).await.map(|_| ())
    }

    /// `issues/create-comment` on pull request `number`; GitHub's id of the new comment.
    pub async fn create_comment(&self, owner: &str, repo: &str, number: u64, body: &wire::IssueComment<'_>) -> Result<u64, GithubError> {
        self.call::<_, wire::CreatedComment>(Method::POST, &format!("/repos/{owner}/{repo}/issues/{number}/comments"), body).await.map(|c| c.id)
    }

    /// `issues/update-comment`.
    pub async fn update_comment(&self, owner: &str, repo: &str, comment: u64, body: &wire::IssueComment<'_>) -> Result<(), GithubError> {
        self.call::<_, serde_json::Value>(Method::PATCH, &format!("/repos/{owner}/{repo}/issues/comments/{comment}"), body).await.map(|_| ())
    }

    /// The gate's remaining wait, if it is closed.
    fn gated(&self) -> Option<Duration> {
        let gate = self.gate.lock().expect("gate poisoned");
        gate.and_then(|until| until.checked_duration_since(Instant::now())).filter(|d| !d.is_zero())
    }

    fn close_gate(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut gate = self.gate.lock().expect("gate poisoned");
        if gate.is_none_or(|g| g < until) {
            *gate = Some(until);
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(&self, method: Method, path: &str, body: &B) -> Result<T, GithubError> {
        let started = Instant::now();
        let mut last = String::new();
        for attempt in 1..=self.policy.tries {
            if let Some(wait) = self.gated() {
                if started.elapsed() + wait > self.policy.deadline || wait > self.policy.max_wait {
                    return Err(GithubError::RateLimited { wait });
                }
                tokio::time::sleep(wait).await;
            }
            let req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(self.token())
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28")
                .json(body);
            let wait = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    let bytes = resp.bytes().await.map_err(|e| GithubError::BadAnswer(e.without_url().to_string()))?;
                    return serde_json::from_slice(&bytes).map_err(|e| GithubError::BadAnswer(e.to_string()));
                }
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let message = resp.json::<wire::ErrorBody>().await.unwrap_or_default().message;
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                    last = format!("HTTP {}{}", status.as_u16(), if message.is_empty() { String::new() } else { format!(" ({})", message.chars().take(200).collect::<String>()) });
                    match verdict(status.as_u16(), &headers, &message, now, attempt) {
                        Verdict::Stop => return Err(GithubError::Refused { status: status.as_u16(), message: refusal(status, message) }),
                        Verdict::Backoff => self.policy.backoff.delay(attempt),
                        Verdict::RetryAfter(wait) => {
                            if wait > self.policy.max_wait || started.elapsed() + wait > self.policy.deadline {
                                self.close_gate(wait);
                                return Err(GithubError::RateLimited { wait });
                            }
                            self.close_gate(wait);
                            wait
                        }
                    }
                }
                Err(e) => {
                    last = e.without_url().to_string();
                    self.policy.backoff.delay(attempt)
                }
            };
            if attempt == self.policy.tries || started.elapsed() + wait > self.policy.deadline {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        Err(GithubError::Unreachable { tries: self.policy.tries, last })
    }
}

/// GitHub's refusal in words, with what to do for the usual ones.
fn refusal(status: StatusCode, message: String) -> String {
    let hint = match status.as_u16() {
        401 => "; the token is wrong or expired",
        403 | 404 => "; the token lacks the permission for this repository (Commit statuses: write, Deployments: write, and Pull requests: write for preview comments)",
        _ => "",
    };
    format!("{}{hint}", if message.is_empty() { status.canonical_reason().unwrap_or("refused").to_owned() } else { message.chars().take(300).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn rate_limits_are_read_as_github_documents_them() {
        let now = 1_700_000_000;
        // retry-after first
        assert_eq!(verdict(403, &headers(&[("retry-after", "7"), ("x-ratelimit-remaining", "0")]), "", now, 1), Verdict::RetryAfter(Duration::from_secs(7)));
        assert_eq!(verdict(429, &headers(&[("retry-after", "0")]), "", now, 1), Verdict::RetryAfter(Duration::ZERO));
        // primary limit: until the reset
        let reset = (now + 1800).to_string();
        assert_eq!(verdict(403, &headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &reset)]), "API rate limit exceeded", now, 1), Verdict::RetryAfter(Duration::from_secs(1800)));
        // secondary limit without headers: a minute, then longer
        assert_eq!(verdict(403, &headers(&[("x-ratelimit-remaining", "12")]), "You have exceeded a secondary rate limit", now, 1), Verdict::RetryAfter(Duration::from_secs(60)));
        assert_eq!(verdict(429, &HeaderMap::new(), "", now, 2), Verdict::RetryAfter(Duration::from_secs(120)));
        // a 403 that is no rate limit is a permission problem
        assert_eq!(verdict(403, &headers(&[("x-ratelimit-remaining", "4999")]), "Resource not accessible by personal access token", now, 1), Verdict::Stop);
        for s in [500, 502, 503, 504] {
            assert_eq!(verdict(s, &HeaderMap::new(), "", now, 1), Verdict::Backoff);
        }
        for s in [400, 401, 404, 409, 422] {
            assert_eq!(verdict(s, &HeaderMap::new(), "", now, 1), Verdict::Stop);
        }
    }

    #[test]
    fn the_default_policy_is_capped() {
        let p = Policy::default();
        assert!(p.tries <= 4 && p.deadline <= Duration::from_secs(120) && p.max_wait <= Duration::from_secs(60));
        assert!((1..=p.tries).all(|n| p.backoff.delay(n) <= Duration::from_secs(30)));
    }
}
