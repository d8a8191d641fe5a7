//! A push as the core sees it (`PushEvent`), which deployments it redeploys, and what became of each delivery (`Outcome`).

use std::fmt;

use crate::core::deployment::{Deployment, DeploymentId};
use crate::core::names::{CommitSha, GitRef};
use crate::core::repo::RepoUrl;
use crate::core::status::Status;
use crate::core::validation::FieldError;

/// A webhook delivery id (`X-GitHub-Delivery`, a GUID): 1–64 ASCII letters, digits or hyphens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryId(String);

impl DeliveryId {
    pub const FIELD: &'static str = "X-GitHub-Delivery";
    pub const RULE: &'static str = "must be a delivery GUID: 1-64 ASCII letters, digits or hyphens";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok = !raw.is_empty() && raw.len() <= 64 && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new(Self::FIELD, "delivery_id", Self::RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The repository a push names: `owner/repo` and the hosts of its URLs (clone, SSH, web).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoIdentity {
    pub full_name: String,
    /// Lowercase `host` or `host:port`.
    pub hosts: Vec<String>,
}

impl RepoIdentity {
    /// Whether a deployment's repository is this one: same `owner/repo` (GitHub names are
    /// case-insensitive) on one of the push's hosts.
    pub fn matches(&self, url: &RepoUrl) -> bool {
        url.full_name().eq_ignore_ascii_case(&self.full_name) && self.hosts.iter().any(|h| h.eq_ignore_ascii_case(url.host()))
    }
}

/// What a pushed ref is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushedRef {
    /// `refs/heads/<branch>`
    Branch(GitRef),
    /// `refs/tags/<tag>`
    Tag(String),
    /// Anything else (`refs/notes/…`, a branch name git would refuse).
    Other(String),
}

impl PushedRef {
    pub fn parse(raw: &str) -> Self {
        if let Some(b) = raw.strip_prefix("refs/heads/") {
            if let Ok(branch) = GitRef::parse(b) {
                return PushedRef::Branch(branch);
            }
        } else if let Some(t) = raw.strip_prefix("refs/tags/") {
            return PushedRef::Tag(t.to_owned());
        }
        PushedRef::Other(raw.to_owned())
    }
}

/// A push, converted from the door's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    pub repo: RepoIdentity,
    pub pushed_ref: PushedRef,
    /// The ref as sent (`refs/heads/main`), for the record.
    pub raw_ref: String,
    /// `None` when the ref was created by this push (all zeros).
    pub before: Option<CommitSha>,
    /// `None` when the ref was deleted (all zeros).
    pub after: Option<CommitSha>,
    pub deleted: bool,
    /// Who pushed (GitHub login), bounded and printable.
    pub pusher: String,
}

/// Parses a commit id where all zeros means "no commit" (a created or deleted ref).
pub fn commit_or_none(raw: &str, field: &str) -> Result<Option<CommitSha>, FieldError> {
    if !raw.is_empty() && raw.bytes().all(|b| b == b'0') && (raw.len() == 40 || raw.len() == 64) {
        return Ok(None);
    }
    CommitSha::parse(raw).map(Some).map_err(|e| e.for_field(field))
}

/// Why a push (or a deployment for it) leads to no redeploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skip {
    Tag,
    BranchDeleted,
    NotABranch,
    NoDeployment,
    OtherBranch,
    AutoRedeployOff,
    Destroyed,
    /// The same push (repository, ref, before, after) came in another delivery, which handled it.
    SamePush,
    /// Not an event pvedeploy acts on.
    Event,
    InvalidPayload,
}

/// What became of a delivery, or of one deployment it concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Recorded; the push is being routed.
    Received,
    /// A `ping` answered.
    Pong,
    /// The engine started a redeploy of the pushed commit.
    RedeployRequested,
    /// A redeploy was running; the engine queued this commit after it.
    Queued,
    /// The deployment already runs (or deploys) the pushed commit.
    AlreadyAt,
    /// The engine refused (the detail holds its reason).
    Refused,
    /// The engine or the store failed (the detail holds why); redelivering is safe.
    Failed,
    Ignored(Skip),
}

impl Outcome {
    pub const ALL: [Outcome; 17] = [
        Outcome::Received,
        Outcome::Pong,
        Outcome::RedeployRequested,
        Outcome::Queued,
        Outcome::AlreadyAt,
        Outcome::Refused,
        Outcome::Failed,
        Outcome::Ignored(Skip::Tag),
        Outcome::Ignored(Skip::BranchDeleted),
        Outcome::Ignored(Skip::NotABranch),
        Outcome::Ignored(Skip::NoDeployment),
        Outcome::Ignored(Skip::OtherBranch),
        Outcome::Ignored(Skip::AutoRedeployOff),
        Outcome::Ignored(Skip::Destroyed),
        Outcome::Ignored(Skip::SamePush),
        Outcome::Ignored(Skip::Event),
        Outcome::Ignored(Skip::InvalidPayload),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Received => "received",
            Outcome::Pong => "pong",
            Outcome::RedeployRequested => "redeploy_requested",
            Outcome::Queued => "queued",
            Outcome::AlreadyAt => "already_at",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
            Outcome::Ignored(s) => match s {
                Skip::Tag => "ignored_tag",
                Skip::BranchDeleted => "ignored_branch_deleted",
                Skip::NotABranch => "ignored_not_a_branch",
                Skip::NoDeployment => "ignored_no_deployment",
                Skip::OtherBranch => "ignored_other_branch",
                Skip::AutoRedeployOff => "ignored_auto_redeploy_off",
                Skip::Destroyed => "ignored_destroyed",
                Skip::SamePush => "ignored_same_push",
                Skip::Event => "ignored_event",
                Skip::InvalidPayload => "ignored_invalid_payload",
            },
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Which outcome sums up a delivery that concerned several deployments: the one with the most effect.
    fn weight(self) -> u8 {
        match self {
            Outcome::RedeployRequested => 9,
            Outcome::Queued => 8,
            Outcome::AlreadyAt => 7,
            Outcome::Failed => 6,
            Outcome::Refused => 5,
            Outcome::Ignored(Skip::SamePush) => 4,
            Outcome::Ignored(Skip::AutoRedeployOff) => 3,
            Outcome::Ignored(Skip::Destroyed) => 2,
            Outcome::Ignored(_) => 1,
            Outcome::Received | Outcome::Pong => 0,
        }
    }

    /// The delivery's outcome from its deployments' outcomes (none: no deployment tracks the repository).
    pub fn summary(targets: impl IntoIterator<Item = Outcome>) -> Outcome {
        targets.into_iter().max_by_key(|o| o.weight()).unwrap_or(Outcome::Ignored(Skip::NoDeployment))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a push means for one deployment of its repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Ask the engine to redeploy this commit.
    Redeploy(CommitSha),
    Skip(Skip),
}

/// Whether a push redeploys anything at all, before looking at deployments.
pub fn push_skip(push: &PushEvent) -> Option<Skip> {
    match &push.pushed_ref {
        PushedRef::Tag(_) => Some(Skip::Tag),
        PushedRef::Other(_) => Some(Skip::NotABranch),
        PushedRef::Branch(_) if push.deleted || push.after.is_none() => Some(Skip::BranchDeleted),
        PushedRef::Branch(_) => None,
    }
}

/// The decision for each deployment of the pushed repository (deployments of other repositories are left out).
pub fn route(push: &PushEvent, deployments: &[Deployment]) -> Vec<(DeploymentId, Decision)> {
    deployments
        .iter()
        .filter(|d| push.repo.matches(&d.spec.repo_url))
        .map(|d| {
            let decision = match (push_skip(push), &push.pushed_ref, &push.after) {
                (Some(skip), _, _) => Decision::Skip(skip),
                _ if matches!(d.status, Status::Destroying | Status::Destroyed) => Decision::Skip(Skip::Destroyed),
                (None, PushedRef::Branch(b), _) if *b != d.spec.branch => Decision::Skip(Skip::OtherBranch),
                _ if !d.spec.auto_redeploy => Decision::Skip(Skip::AutoRedeployOff),
                (None, _, Some(after)) => Decision::Redeploy(after.clone()),
                (None, _, None) => Decision::Skip(Skip::BranchDeleted),
            };
            (d.id.clone(), decision)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::deployment::{RawSpec, Spec};
    use crate::core::limits::{Limits, RepoPolicy};

    const A: &str = "1111111111111111111111111111111111111111";
    const ZERO: &str = "0000000000000000000000000000000000000000";

    fn deployment(repo: &str, branch: &str, auto: bool) -> Deployment {
        let raw = RawSpec {
            name: Some("app".into()),
            framework: Some("flask".into()),
            repo_url: Some(repo.into()),
            branch: Some(branch.into()),
            auto_redeploy: Some(auto),
            ..RawSpec::default()
        };
        Deployment::new(Spec::parse(raw, &Limits::default(), &RepoPolicy::default()).unwrap(), 0)
    }

    fn push(r: &str, after: &str) -> PushEvent {
        PushEvent {
            repo: RepoIdentity { full_name: "Octo/App".into(), hosts: vec!["github.com".into()] },
            pushed_ref: PushedRef::parse(r),
            raw_ref: r.into(),
            before: None,
            after: commit_or_none(after, "after").unwrap(),
            deleted: after == ZERO,
            pusher: "octocat".into(),
        }
    }

    fn decisions(p: &PushEvent, ds: &[Deployment]) -> Vec<Decision> {
        route(p, ds).into_iter().map(|(_, d)| d).collect()
    }

    #[test]
    fn a_push_to_the_tracked_branch_redeploys_the_pushed_commit() {
        let ds = [deployment("https://github.com/octo/app.git", "main", true), deployment("https://github.com/octo/other", "main", true)];
        assert_eq!(decisions(&push("refs/heads/main", A), &ds), [Decision::Redeploy(CommitSha::parse(A).unwrap())]);
    }

    #[test]
    fn everything_else_is_skipped_with_its_reason() {
        let main = [deployment("https://github.com/octo/app", "main", true)];
        assert_eq!(decisions(&push("refs/heads/dev", A), &main), [Decision::Skip(Skip::OtherBranch)]);
        assert_eq!(decisions(&push("refs/tags/v1", A), &main), [Decision::Skip(Skip::Tag)]);
        assert_eq!(decisions(&push("refs/heads/main", ZERO), &main), [Decision::Skip(Skip::BranchDeleted)]);
        assert_eq!(decisions(&push("refs/notes/x", A), &main), [Decision::Skip(Skip::NotABranch)]);
        let off = [deployment("https://github.com/octo/app", "main", false)];
        assert_eq!(decisions(&push("refs/heads/main", A), &off), [Decision::Skip(Skip::AutoRedeployOff)]);
        let mut gone = deployment("https://github.com/octo/app", "main", true);
        gone.status = Status::Destroying;
        assert_eq!(decisions(&push("refs/heads/main", A), &[gone]), [Decision::Skip(Skip::Destroyed)]);
    }

    #[test]
    fn the_host_must_match_too() {
        let mut p = push("refs/heads/main", A);
        p.repo.hosts = vec!["ghe.example".into()];
        assert!(route(&p, &[deployment("https://github.com/octo/app", "main", true)]).is_empty());
    }

    #[test]
    fn delivery_ids_and_outcomes() {
        assert!(DeliveryId::parse("72d3162e-cc78-11e3-81ab-4c9367dc0958").is_ok());
        for bad in ["", "a b", "x/../y", &"a".repeat(65), "é"] {
            assert_eq!(DeliveryId::parse(bad).unwrap_err().field, "X-GitHub-Delivery");
        }
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::summary([Outcome::Ignored(Skip::OtherBranch), Outcome::Refused]), Outcome::Refused);
        assert_eq!(Outcome::summary([]), Outcome::Ignored(Skip::NoDeployment));
    }
}
