//! GitHub's REST request and answer bodies for the five operations the reporter uses, as GitHub's OpenAPI
//! description (`@octokit/openapi` 23.0.2, vendored in `tests/fixtures/github-openapi/`) defines them.

use serde::{Deserialize, Serialize};

/// `repos/create-commit-status`: `POST /repos/{owner}/{repo}/statuses/{sha}`.
#[derive(Debug, Serialize)]
pub struct CommitStatus<'a> {
    /// `error`, `failure`, `pending` or `success`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_url: Option<&'a str>,
    pub description: &'a str,
    pub context: &'a str,
}

/// `repos/create-deployment`: `POST /repos/{owner}/{repo}/deployments`.
#[derive(Debug, Serialize)]
pub struct NewDeployment<'a> {
    /// The commit, so GitHub never resolves a branch that moved on since.
    #[serde(rename = "ref")]
    pub git_ref: &'a str,
    pub task: &'static str,
    /// Never merge anything into the ref: pvedeploy deploys exactly this commit.
    pub auto_merge: bool,
    /// Empty: the deploy runs already, whatever other checks say (and ours is `pending` meanwhile, which
    /// GitHub would otherwise count against it with a 409).
    pub required_contexts: Vec<String>,
    pub payload: serde_json::Value,
    pub environment: &'a str,
    pub description: &'a str,
    pub transient_environment: bool,
    pub production_environment: bool,
}

/// The part of GitHub's `deployment` answer the reporter reads.
#[derive(Debug, Deserialize)]
pub struct CreatedDeployment {
    pub id: u64,
}

/// `repos/create-deployment-status`: `POST /repos/{owner}/{repo}/deployments/{deployment_id}/statuses`.
#[derive(Debug, Serialize)]
pub struct DeploymentStatus<'a> {
    /// `in_progress`, `success`, `failure`, `error` or `inactive` (of GitHub's seven).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment_url: Option<&'a str>,
    pub description: &'a str,
}

/// `issues/create-comment` (`POST /repos/{owner}/{repo}/issues/{issue_number}/comments`) and `issues/update-comment`
/// (`PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}`): a pull request's comment is an issue comment.
#[derive(Debug, Serialize)]
pub struct IssueComment<'a> {
    pub body: &'a str,
}

/// The part of GitHub's `issue-comment` answer the reporter reads.
#[derive(Debug, Deserialize)]
pub struct CreatedComment {
    pub id: u64,
}

/// GitHub's error body (`basic-error`): its `message` says what was wrong.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: String,
}
