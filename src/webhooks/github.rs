//! GitHub's webhook payloads as sent (wire types) and their conversion into the core's `PushEvent`; nothing else sees these shapes.

use serde::Deserialize;

use crate::core::names::CommitSha;
use crate::core::repo::RepoUrl;
use crate::core::validation::{FieldError, ValidationErrors};
use crate::core::preview::{HeadRepo, PrAction, PullRequestEvent};
use crate::core::webhook::{commit_or_none, skip_marker, PushEvent, PushedRef, RepoIdentity, MAX_LISTED_COMMITS};
pub use crate::core::webhook::parse_event_name;

/// A delivery, converted: what the door acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GithubEvent {
    Ping { hook_id: Option<i64>, repo: Option<String> },
    Push(PushEvent),
    /// A pull request event: previews (`engine::previews`).
    PullRequest(PullRequestEvent),
    /// Any other event: acknowledged, ignored.
    Other { repo: Option<String> },
}

/// The hook a delivery came through, from its headers (recorded only; they are not covered by the signature).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hook {
    /// `X-GitHub-Hook-ID`.
    pub id: Option<i64>,
    /// `X-GitHub-Hook-Installation-Target-Type`: `repository`, `organization`, `integration`, …
    pub target: Option<String>,
}

impl Hook {
    /// Values that are not what GitHub sends are left out.
    pub fn from_headers(id: Option<&str>, target: Option<&str>) -> Self {
        let id = id.and_then(|i| i.parse::<i64>().ok()).filter(|i| *i > 0);
        let target = target.filter(|t| !t.is_empty() && t.len() <= 32 && t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-')).map(str::to_owned);
        Hook { id, target }
    }
}

/// Why an event is acknowledged without acting, in words for the answer and the record.
pub fn not_acted_on(event: &str) -> String {
    format!("pvedeploy does not act on `{event}` events; subscribe the hook to push only")
}

impl GithubEvent {
    /// The `owner/repo` the payload names, if any.
    pub fn repo(&self) -> Option<&str> {
        match self {
            GithubEvent::Ping { repo, .. } | GithubEvent::Other { repo } => repo.as_deref(),
            GithubEvent::Push(p) => Some(&p.repo.full_name),
            GithubEvent::PullRequest(pr) => Some(&pr.repo.full_name),
        }
    }
}

#[derive(Deserialize)]
struct RepositoryWire {
    #[serde(default)]
    id: Option<i64>,
    full_name: String,
    #[serde(default)]
    clone_url: Option<String>,
    #[serde(default)]
    ssh_url: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
}

#[derive(Deserialize)]
struct NamedRepositoryWire {
    full_name: String,
}

#[derive(Deserialize)]
struct PusherWire {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct SenderWire {
    #[serde(default)]
    login: Option<String>,
}

#[derive(Deserialize)]
struct HeadCommitWire {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    message: String,
}

/// A pushed commit's files (GitHub's `commits[]`).
#[derive(Deserialize)]
struct CommitWire {
    #[serde(default)]
    added: Option<Vec<String>>,
    #[serde(default)]
    modified: Option<Vec<String>>,
    #[serde(default)]
    removed: Option<Vec<String>>,
}

/// The parts of a `push` payload pvedeploy reads (GitHub sends many more; they are ignored).
#[derive(Deserialize)]
struct PushWire {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    repository: RepositoryWire,
    #[serde(default)]
    pusher: Option<PusherWire>,
    #[serde(default)]
    sender: Option<SenderWire>,
    /// `null` when the push deleted the ref.
    #[serde(default)]
    head_commit: Option<HeadCommitWire>,
    #[serde(default)]
    commits: Vec<CommitWire>,
}

#[derive(Deserialize)]
struct HookWire {
    #[serde(default)]
    id: Option<i64>,
}

#[derive(Deserialize)]
struct PingWire {
    #[serde(default)]
    hook_id: Option<i64>,
    #[serde(default)]
    hook: Option<HookWire>,
    #[serde(default)]
    repository: Option<NamedRepositoryWire>,
}

#[derive(Deserialize)]
struct PullRequestHeadWire {
    sha: String,
    #[serde(rename = "ref")]
    git_ref: String,
    /// `null` when the head repository (a fork) was deleted.
    #[serde(default)]
    repo: Option<RepositoryWire>,
}

#[derive(Deserialize)]
struct PullRequestBaseWire {
    #[serde(rename = "ref")]
    git_ref: String,
}

#[derive(Deserialize)]
struct PullRequestBodyWire {
    head: PullRequestHeadWire,
    base: PullRequestBaseWire,
    #[serde(default)]
    merged: Option<bool>,
}

/// The parts of a `pull_request` payload pvedeploy reads.
#[derive(Deserialize)]
struct PullRequestWire {
    action: String,
    number: u64,
    pull_request: PullRequestBodyWire,
    repository: RepositoryWire,
    #[serde(default)]
    sender: Option<SenderWire>,
}

#[derive(Deserialize)]
struct AnyWire {
    #[serde(default)]
    repository: Option<NamedRepositoryWire>,
}

fn one(field: &str, rule: &'static str, message: impl Into<String>) -> ValidationErrors {
    ValidationErrors(vec![FieldError::new(field, rule, message)])
}

/// The JSON of a delivery: the raw body for `application/json`, or the `payload` field of a form
/// (GitHub's other content type). Called only after the signature over the raw body was verified.
pub fn payload_json<'a>(content_type: Option<&str>, body: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>, ValidationErrors> {
    let form = content_type.and_then(|c| c.parse::<mime::Mime>().ok()).is_some_and(|m| m.type_() == "application" && m.subtype() == "x-www-form-urlencoded");
    if !form {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    #[derive(Deserialize)]
    struct Form {
        payload: String,
    }
    let f: Form = serde_urlencoded::from_bytes(body).map_err(|_| one("payload", "required", "a form-encoded delivery must carry a `payload` field"))?;
    Ok(std::borrow::Cow::Owned(f.payload.into_bytes()))
}

/// Converts a verified delivery into a `GithubEvent`; a payload that is not what GitHub sends is refused naming the field.
pub fn parse(event: &str, json: &[u8]) -> Result<GithubEvent, ValidationErrors> {
    let invalid = |e: serde_json::Error| one("body", "github_payload", format!("is not a GitHub `{event}` payload: {e}"));
    match event {
        "push" => push(serde_json::from_slice(json).map_err(invalid)?).map(GithubEvent::Push),
        "ping" => {
            let p: PingWire = serde_json::from_slice(json).map_err(invalid)?;
            let repo = p.repository.map(|r| full_name(&r.full_name)).transpose()?;
            Ok(GithubEvent::Ping { hook_id: p.hook_id.or(p.hook.and_then(|h| h.id)), repo })
        }
        "pull_request" => pull_request(serde_json::from_slice(json).map_err(invalid)?).map(GithubEvent::PullRequest),
        _ => {
            // Best effort, for the record only: an unknown event may have any shape.
            let repo = serde_json::from_slice::<AnyWire>(json).ok().and_then(|a| a.repository).and_then(|r| full_name(&r.full_name).ok());
            Ok(GithubEvent::Other { repo })
        }
    }
}

/// `owner/repo` as GitHub writes it: two segments of letters, digits, `-`, `_`, `.`.
fn full_name(raw: &str) -> Result<String, ValidationErrors> {
    let ok = raw.len() <= 200
        && raw.split('/').count() == 2
        && raw.split('/').all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(one("repository.full_name", "full_name", "must be owner/repo"))
    }
}

/// The hosts of a repository's URLs (clone, SSH, web), lowercase, for matching deployments' URLs.
fn hosts(r: &RepositoryWire) -> Vec<String> {
    let mut hosts: Vec<String> =
        [&r.clone_url, &r.ssh_url, &r.html_url].into_iter().flatten().map(|u| RepoUrl::from_stored(u.clone()).host().to_owned()).filter(|h| !h.is_empty()).collect();
    hosts.dedup();
    hosts
}

/// A git ref as sent: 1-1024 characters, no control characters (what it may be deployed as is the core's decision).
fn raw_ref(raw: &str, field: &str) -> Result<String, FieldError> {
    if raw.is_empty() || raw.len() > 1024 || raw.chars().any(char::is_control) {
        return Err(FieldError::new(field, "git_ref", "must be a git ref (at most 1024 characters)"));
    }
    Ok(raw.to_owned())
}

fn pull_request(p: PullRequestWire) -> Result<PullRequestEvent, ValidationErrors> {
    let mut errs = ValidationErrors::default();
    let repo = errs.take(full_name(&p.repository.full_name).map_err(|mut e| e.0.remove(0)));
    let head_sha = errs.take(CommitSha::parse(&p.pull_request.head.sha).map_err(|e| e.for_field("pull_request.head.sha")));
    let head_ref = errs.take(raw_ref(&p.pull_request.head.git_ref, "pull_request.head.ref"));
    let base_ref = errs.take(raw_ref(&p.pull_request.base.git_ref, "pull_request.base.ref"));
    if p.action.is_empty() || p.action.len() > 64 || !p.action.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        errs.push(FieldError::new("action", "event_action", "must be a GitHub event action: 1-64 lowercase letters or underscores"));
    }
    let head_repo = match &p.pull_request.head.repo {
        None => Some(None),
        Some(r) => errs
            .take(full_name(&r.full_name).map_err(|_| FieldError::new("pull_request.head.repo.full_name", "full_name", "must be owner/repo")))
            .map(|full_name| Some(HeadRepo { id: r.id.filter(|i| *i > 0), full_name, clone_url: r.clone_url.clone() })),
    };
    let (Some(full_name), Some(head_sha), Some(head_ref), Some(base_ref), Some(head_repo)) = (repo, head_sha, head_ref, base_ref, head_repo) else { return Err(errs) };
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(PullRequestEvent {
        action: PrAction::parse(&p.action),
        number: p.number,
        repo: RepoIdentity { id: p.repository.id.filter(|i| *i > 0), full_name, hosts: hosts(&p.repository) },
        base_ref,
        head_sha,
        head_ref,
        head_repo,
        merged: p.pull_request.merged.unwrap_or(false),
        sender: p.sender.and_then(|s| s.login).map(|n| printable(&n)).unwrap_or_else(|| "unknown".into()),
    })
}

/// A name for the audit log: printable, at most 100 characters.
fn printable(raw: &str) -> String {
    raw.chars().filter(|c| !c.is_control()).take(100).collect()
}

fn push(w: PushWire) -> Result<PushEvent, ValidationErrors> {
    let mut errs = ValidationErrors::default();
    let repo = errs.take(full_name(&w.repository.full_name).map_err(|mut e| e.0.remove(0)));
    let before = errs.take(commit_or_none(&w.before, "before"));
    let after = errs.take(commit_or_none(&w.after, "after"));
    if w.git_ref.is_empty() || w.git_ref.len() > 1024 || w.git_ref.chars().any(char::is_control) {
        errs.push(FieldError::new("ref", "git_ref", "must be a git ref such as refs/heads/main (at most 1024 characters)"));
    }
    let (Some(full_name), Some(before), Some(after)) = (repo, before, after) else { return Err(errs) };
    if !errs.is_empty() {
        return Err(errs);
    }
    let hosts = hosts(&w.repository);
    let pusher = w.pusher.and_then(|p| p.name).or(w.sender.and_then(|s| s.login)).map(|n| printable(&n)).unwrap_or_else(|| "unknown".into());
    let skip_marker = w.head_commit.as_ref().and_then(|c| skip_marker(&c.message));
    let head = match w.head_commit.as_ref().and_then(|c| c.id.as_deref()) {
        Some(id) => Some(CommitSha::parse(id).map_err(|e| ValidationErrors(vec![e.for_field("head_commit.id")]))?),
        None => None,
    };
    // No commits listed (a ref created at a known commit, a force push back) or a list GitHub may have cut short:
    // the files are unknown.
    // A commit without its file lists leaves them unknown too.
    let listed = !w.commits.is_empty() && w.commits.len() < MAX_LISTED_COMMITS && w.commits.iter().all(|c| c.added.is_some() && c.modified.is_some() && c.removed.is_some());
    let changed = listed.then(|| {
        let mut files: Vec<String> = w.commits.into_iter().flat_map(|c| c.added.into_iter().chain(c.modified).chain(c.removed).flatten()).collect();
        files.sort();
        files.dedup();
        files
    });
    Ok(PushEvent {
        repo: RepoIdentity { id: w.repository.id.filter(|i| *i > 0), full_name, hosts },
        pushed_ref: PushedRef::parse(&w.git_ref),
        raw_ref: w.git_ref,
        before,
        after,
        deleted: w.deleted,
        pusher,
        head,
        skip_marker,
        changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like GitHub's own push payload (abridged: fields pvedeploy ignores are kept to show they are ignored).
    const PUSH: &str = r#"{
      "ref": "refs/heads/main",
      "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
      "after": "76ae82c7b1a177c8d03f9e96e0adf2466113728f",
      "created": false, "deleted": false, "forced": false, "base_ref": null,
      "compare": "https://github.com/Octo/App/compare/6113728f27ae...76ae82c7b1a1",
      "commits": [], "head_commit": {"id": "76ae82c7b1a177c8d03f9e96e0adf2466113728f", "message": "Update README"},
      "repository": {"id": 1296269, "name": "App", "full_name": "Octo/App", "private": false,
        "html_url": "https://github.com/Octo/App", "clone_url": "https://github.com/Octo/App.git",
        "ssh_url": "git@github.com:Octo/App.git", "default_branch": "main"},
      "pusher": {"name": "octocat", "email": "octocat@github.com"},
      "sender": {"login": "octocat", "id": 1}
    }"#;

    #[test]
    fn a_github_push_converts() {
        let GithubEvent::Push(p) = parse("push", PUSH.as_bytes()).unwrap() else { panic!() };
        assert_eq!(p.repo.full_name, "Octo/App");
        assert_eq!(p.repo.hosts, ["github.com"]);
        assert!(matches!(&p.pushed_ref, PushedRef::Branch(b) if b.as_str() == "main"));
        assert_eq!(p.after.unwrap().as_str(), "76ae82c7b1a177c8d03f9e96e0adf2466113728f");
        assert_eq!(p.pusher, "octocat");
        assert_eq!((p.skip_marker, p.changed), (None, None), "no commits listed: the files are unknown");
    }

    #[test]
    fn the_head_commit_s_skip_marker_and_the_changed_files_are_read() {
        let body = PUSH.replace("\"message\": \"Update README\"", "\"message\": \"Update README\\n\\n[Skip CI]\"").replace(
            "\"commits\": []",
            r#""commits": [{"id": "1", "message": "a", "added": ["api/new.py"], "modified": ["README.md"], "removed": []},
                           {"id": "2", "message": "b", "added": [], "modified": ["api/new.py"], "removed": ["old.txt"]}]"#,
        );
        let GithubEvent::Push(p) = parse("push", body.as_bytes()).unwrap() else { panic!() };
        assert_eq!(p.skip_marker, Some("[skip ci]"));
        assert_eq!(p.changed.unwrap(), ["README.md", "api/new.py", "old.txt"]);
        // a commit without its file lists: the files are unknown
        let body = PUSH.replace("\"commits\": []", r#""commits": [{"id": "1", "message": "a", "added": ["x"], "modified": [], "removed": []}, {"id": "2", "message": "b"}]"#);
        let GithubEvent::Push(p) = parse("push", body.as_bytes()).unwrap() else { panic!() };
        assert_eq!(p.changed, None);
        // a deleted branch has no head commit
        let GithubEvent::Push(p) = parse("push", PUSH.replace("\"head_commit\": {\"id\": \"76ae82c7b1a177c8d03f9e96e0adf2466113728f\", \"message\": \"Update README\"}", "\"head_commit\": null").as_bytes()).unwrap() else { panic!() };
        assert_eq!(p.skip_marker, None);
    }

    #[test]
    fn a_branch_deletion_has_no_after() {
        let body = PUSH.replace("\"deleted\": false", "\"deleted\": true").replace("76ae82c7b1a177c8d03f9e96e0adf2466113728f\",\n      \"created", "0000000000000000000000000000000000000000\",\n      \"created");
        let GithubEvent::Push(p) = parse("push", body.as_bytes()).unwrap() else { panic!() };
        assert!(p.deleted && p.after.is_none());
    }

    #[test]
    fn wrong_payloads_name_the_field() {
        let e = parse("push", PUSH.replace("\"after\": \"76ae", "\"after\": \"XYae").as_bytes()).unwrap_err();
        assert_eq!(e.0[0].field, "after");
        let e = parse("push", b"[1]").unwrap_err();
        assert_eq!(e.0[0].field, "body");
        assert_eq!(parse("ping", br#"{"zen": "x", "hook_id": 42}"#).unwrap(), GithubEvent::Ping { hook_id: Some(42), repo: None });
        assert_eq!(parse("issues", b"not json").unwrap(), GithubEvent::Other { repo: None });
        assert!(parse_event_name(Some("pull_request")).is_ok());
        assert_eq!(parse_event_name(Some("Push!")).unwrap_err().field, "X-GitHub-Event");
    }

    #[test]
    fn form_encoded_deliveries_carry_the_json_in_payload() {
        let body = serde_urlencoded::to_string([("payload", "{\"hook_id\":7}")]).unwrap();
        let json = payload_json(Some("application/x-www-form-urlencoded"), body.as_bytes()).unwrap();
        assert_eq!(parse("ping", &json).unwrap(), GithubEvent::Ping { hook_id: Some(7), repo: None });
    }
}
