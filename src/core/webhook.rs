//! A push as the core sees it (`PushEvent`), which deployments it redeploys, the same-push rule (`same_push`), and what became of each delivery (`Outcome`, and whether a redelivery of it runs again).

use std::fmt;

use crate::core::deployment::{Deployment, DeploymentId};
use crate::core::glob::Glob;
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
    /// GitHub's numeric repository id (`repository.id`), which a rename keeps.
    pub id: Option<i64>,
    pub full_name: String,
    /// Lowercase `host` or `host:port`.
    pub hosts: Vec<String>,
}

impl RepoIdentity {
    /// Whether a deployment's repository is this one: same `owner/repo` (GitHub names are
    /// case-insensitive) on one of the push's hosts.
    pub fn matches(&self, url: &RepoUrl) -> bool {
        url.full_name().eq_ignore_ascii_case(&self.full_name) && self.on_host(url)
    }

    fn on_host(&self, url: &RepoUrl) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(url.host()))
    }

    /// Whether a deployment's repository is this one, given the repository id an earlier push to it carried
    /// (`bound`): once both ids are known they decide (a renamed repository still routes, a new repository under
    /// the old name does not); before, the name does.
    pub fn is(&self, url: &RepoUrl, bound: Option<i64>) -> bool {
        match (self.id, bound) {
            (Some(id), Some(bound)) => id == bound && self.on_host(url),
            _ => self.matches(url),
        }
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
            if let Ok(branch) = GitRef::parse_git(b) {
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
    /// The head commit (`head_commit.id`): for a tag, the commit it names (an annotated tag's `after` is the tag
    /// object).
    pub head: Option<CommitSha>,
    /// The skip marker in the head commit's message (`[skip ci]`, `[skip deploy]`, …), if any: nothing redeploys.
    pub skip_marker: Option<&'static str>,
    /// Every path the push's commits added, modified or removed (GitHub's `commits[].added/modified/removed`);
    /// `None` when the payload cannot tell (no commits listed, or GitHub's list may be cut short): path filters then
    /// let the push through.
    pub changed: Option<Vec<String>>,
}

/// The markers that keep a push from deploying when its head commit's message holds one (any case): GitHub Actions'
/// own (`[skip ci]`, `[ci skip]`, `[no ci]`, as "Skipping workflow runs" in GitHub's docs lists them) and ours.
pub const SKIP_MARKERS: [&str; 5] = ["[skip ci]", "[ci skip]", "[no ci]", "[skip deploy]", "[deploy skip]"];

/// The first skip marker in a commit message, if any.
pub fn skip_marker(message: &str) -> Option<&'static str> {
    let lower = message.to_ascii_lowercase();
    SKIP_MARKERS.into_iter().find(|m| lower.contains(m))
}

/// GitHub lists at most this many commits in a push payload; a list this long may have been cut short.
pub const MAX_LISTED_COMMITS: usize = 2048;

/// [`parse_event_name`]'s rule as a regular expression (for the OpenAPI document).
pub const EVENT_NAME_PATTERN: &str = "^[a-z_]{1,64}$";

/// `X-GitHub-Event`: 1–64 lowercase letters or underscores (`push`, `ping`, `pull_request`, …).
pub fn parse_event_name(raw: Option<&str>) -> Result<String, FieldError> {
    let field = "X-GitHub-Event";
    let raw = raw.ok_or_else(|| FieldError::new(field, "required", "is required (the GitHub event name)"))?;
    let ok = !raw.is_empty() && raw.len() <= 64 && raw.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(FieldError::new(field, "event_name", "must be a GitHub event name: 1-64 lowercase letters or underscores"))
    }
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
    /// The head commit's message holds a skip marker (`SKIP_MARKERS`).
    Marker,
    /// The deployment has path filters and no file the push changed matches one.
    Paths,
    BranchDeleted,
    NotABranch,
    NoDeployment,
    OtherBranch,
    AutoRedeployOff,
    Destroyed,
    /// The same push (repository, ref, before, after) came first in another delivery, and the deployment already
    /// is at, deploying or queued to deploy its commit: a copy (say from an organisation hook beside a repository hook).
    SamePush,
    /// Not an event pvedeploy acts on.
    Event,
    InvalidPayload,
    /// A pull request for a deployment without `previews`.
    PreviewsOff,
    /// A closed pull request that has no preview of this deployment.
    NoPreview,
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
    /// A pull request's preview deployment was made and its first deploy started (`core::preview`).
    PreviewCreated,
    /// A closed pull request's preview deployment is being destroyed.
    PreviewDestroyed,
    /// The engine refused (the detail holds its reason).
    Refused,
    /// The engine or the store failed (the detail holds why); redelivering is safe.
    Failed,
    /// The body was over the size limit: answered 413 before its signature could be checked, nothing kept but the
    /// headers' words.
    TooLarge,
    Ignored(Skip),
}

impl Outcome {
    pub const ALL: [Outcome; 24] = [
        Outcome::Received,
        Outcome::TooLarge,
        Outcome::Pong,
        Outcome::RedeployRequested,
        Outcome::Queued,
        Outcome::AlreadyAt,
        Outcome::PreviewCreated,
        Outcome::PreviewDestroyed,
        Outcome::Refused,
        Outcome::Failed,
        Outcome::Ignored(Skip::Tag),
        Outcome::Ignored(Skip::Marker),
        Outcome::Ignored(Skip::Paths),
        Outcome::Ignored(Skip::BranchDeleted),
        Outcome::Ignored(Skip::NotABranch),
        Outcome::Ignored(Skip::NoDeployment),
        Outcome::Ignored(Skip::OtherBranch),
        Outcome::Ignored(Skip::AutoRedeployOff),
        Outcome::Ignored(Skip::Destroyed),
        Outcome::Ignored(Skip::SamePush),
        Outcome::Ignored(Skip::Event),
        Outcome::Ignored(Skip::InvalidPayload),
        Outcome::Ignored(Skip::PreviewsOff),
        Outcome::Ignored(Skip::NoPreview),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Received => "received",
            Outcome::Pong => "pong",
            Outcome::RedeployRequested => "redeploy_requested",
            Outcome::Queued => "queued",
            Outcome::AlreadyAt => "already_at",
            Outcome::PreviewCreated => "preview_created",
            Outcome::PreviewDestroyed => "preview_destroyed",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
            Outcome::TooLarge => "too_large",
            Outcome::Ignored(s) => match s {
                Skip::Tag => "ignored_tag",
                Skip::Marker => "ignored_skip_marker",
                Skip::Paths => "ignored_paths",
                Skip::BranchDeleted => "ignored_branch_deleted",
                Skip::NotABranch => "ignored_not_a_branch",
                Skip::NoDeployment => "ignored_no_deployment",
                Skip::OtherBranch => "ignored_other_branch",
                Skip::AutoRedeployOff => "ignored_auto_redeploy_off",
                Skip::Destroyed => "ignored_destroyed",
                Skip::SamePush => "ignored_same_push",
                Skip::Event => "ignored_event",
                Skip::InvalidPayload => "ignored_invalid_payload",
                Skip::PreviewsOff => "ignored_previews_off",
                Skip::NoPreview => "ignored_no_preview",
            },
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether a delivery with this outcome did what it was sent for (or is doing it): GitHub's "Redeliver" of its
    /// GUID is then a duplicate and changes nothing. Every other outcome (refused, failed, too large, an invalid
    /// payload, ignored for a reason that may since have changed) is processed again when its GUID comes back, and
    /// recorded as a retry: running it again acts at most once, since none of them acted.
    pub fn acted(self) -> bool {
        matches!(self, Outcome::Received | Outcome::Pong | Outcome::RedeployRequested | Outcome::Queued | Outcome::AlreadyAt | Outcome::PreviewCreated | Outcome::PreviewDestroyed)
    }

    /// Which outcome sums up a delivery that concerned several deployments: the one with the most effect.
    fn weight(self) -> u8 {
        match self {
            Outcome::PreviewCreated | Outcome::PreviewDestroyed => 10,
            Outcome::RedeployRequested => 9,
            Outcome::Queued => 8,
            Outcome::AlreadyAt => 7,
            Outcome::Failed => 6,
            Outcome::Refused => 5,
            Outcome::Ignored(Skip::SamePush) => 4,
            Outcome::Ignored(Skip::AutoRedeployOff) | Outcome::Ignored(Skip::PreviewsOff) => 3,
            Outcome::Ignored(Skip::Destroyed) => 2,
            Outcome::Ignored(_) => 1,
            Outcome::Received | Outcome::Pong | Outcome::TooLarge => 0,
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
        PushedRef::Other(_) => Some(Skip::NotABranch),
        PushedRef::Tag(_) if push.deleted || push.after.is_none() => Some(Skip::Tag),
        PushedRef::Branch(_) if push.deleted || push.after.is_none() => Some(Skip::BranchDeleted),
        _ if push.skip_marker.is_some() => Some(Skip::Marker),
        _ => None,
    }
}

/// Whether a push touches a deployment's path filters: yes without filters, and when the push cannot tell which
/// files it changed (never drop a push on a guess).
pub fn touches(paths: &[Glob], changed: Option<&[String]>) -> bool {
    match changed {
        _ if paths.is_empty() => true,
        None => true,
        Some(files) => files.iter().any(|f| paths.iter().any(|p| p.matches(f))),
    }
}

/// The decision for each deployment of the pushed repository (deployments of other repositories are left out).
pub fn route(push: &PushEvent, deployments: &[Deployment]) -> Vec<(DeploymentId, Decision)> {
    route_bound(push, deployments, &std::collections::HashMap::new())
}

/// `route`, with the repository id each deployment was last pushed from (`bound`): see `RepoIdentity::is`.
pub fn route_bound(push: &PushEvent, deployments: &[Deployment], bound: &std::collections::HashMap<DeploymentId, i64>) -> Vec<(DeploymentId, Decision)> {
    deployments
        .iter()
        .filter(|d| push.repo.is(&d.spec.repo_url, bound.get(&d.id).copied()))
        .map(|d| {
            let decision = match (push_skip(push), &push.pushed_ref, &push.after) {
                (Some(skip), _, _) => Decision::Skip(skip),
                _ if matches!(d.status, Status::Destroying | Status::Destroyed) => Decision::Skip(Skip::Destroyed),
                (None, PushedRef::Tag(t), Some(after)) => match &d.spec.deploy_tags {
                    Some(pattern) if pattern.matches(t) && d.spec.auto_redeploy => Decision::Redeploy(push.head.clone().unwrap_or_else(|| after.clone())),
                    Some(pattern) if pattern.matches(t) => Decision::Skip(Skip::AutoRedeployOff),
                    _ => Decision::Skip(Skip::Tag),
                },
                (None, PushedRef::Branch(b), _) if *b != d.spec.branch => Decision::Skip(Skip::OtherBranch),
                _ if !d.spec.auto_redeploy => Decision::Skip(Skip::AutoRedeployOff),
                _ if !touches(&d.spec.paths, push.changed.as_deref()) => Decision::Skip(Skip::Paths),
                (None, _, Some(after)) => Decision::Redeploy(after.clone()),
                (None, _, None) => Decision::Skip(Skip::BranchDeleted),
            };
            (d.id.clone(), decision)
        })
        .collect()
}

/// What the store knew of a push's identity (repository, ref, before, after) when a delivery claimed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushClaim {
    /// This delivery is the first to carry the push (or its own earlier attempt was).
    First,
    /// Another delivery carried the same repository, ref, before and after first.
    SeenIn(DeliveryId),
}

/// Where a deployment is headed, as the engine knows it at the moment a push is routed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heading {
    /// The commit it serves, while it runs.
    pub live: Option<CommitSha>,
    /// The deploy in progress: `Some(Some(c))` deploys `c`; `Some(None)` deploys the branch head it read when it
    /// started (which may be older than the push being routed).
    pub deploying: Option<Option<CommitSha>>,
    /// The follow-up queued behind it: `Some(Some(c))` deploys `c`; `Some(None)` the branch head as it is when the
    /// follow-up starts, which is after any push already received.
    pub queued: Option<Option<CommitSha>>,
}

impl Heading {
    /// Whether the deployment ends at `commit` without being asked again: the last thing it will do (the queued
    /// follow-up, else the deploy in progress, else what it serves) is that commit.
    pub fn reaches(&self, commit: &CommitSha) -> bool {
        let is = |c: &Option<CommitSha>| c.as_ref() == Some(commit);
        match (&self.queued, &self.deploying) {
            (Some(None), _) => true,
            (Some(queued), _) => is(queued),
            (None, Some(deploying)) => is(deploying),
            (None, None) => is(&self.live),
        }
    }
}

/// What a push asks of one deployment once the same-push rule has looked at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushAction {
    /// Redeploy the pushed commit.
    Redeploy(CommitSha),
    /// A copy of a push first carried by `first` (another hook delivering the same push), and the deployment already
    /// is at, deploying or queued to deploy its commit: asking again would change nothing.
    Copy { first: DeliveryId },
    /// The same before→after as the push first carried by `first`, while the deployment is headed elsewhere: either
    /// the branch really moved along that pair again (a force push undone and redone, a branch deleted and made again
    /// at one commit) or this is a late copy of a push the branch has since moved past. Which one cannot be told from
    /// the payload; the branch's head, read when the redeploy starts, is right in both cases.
    BranchHead { first: DeliveryId },
}

/// The same-push rule, for one deployment that `route` says the push redeploys.
///
/// It never loses a push: a push is left alone only when the deployment will end at its commit anyway (`Heading::
/// reaches`), and every other repeat of an earlier before→after pair redeploys the branch head. No time window is
/// involved, so neither a slow copy nor a quick undo-and-redo changes the answer.
pub fn same_push(claim: &PushClaim, heading: &Heading, commit: CommitSha) -> PushAction {
    match claim {
        PushClaim::First => PushAction::Redeploy(commit),
        PushClaim::SeenIn(first) if heading.reaches(&commit) => PushAction::Copy { first: first.clone() },
        PushClaim::SeenIn(first) => PushAction::BranchHead { first: first.clone() },
    }
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
            repo: RepoIdentity { id: Some(1296269), full_name: "Octo/App".into(), hosts: vec!["github.com".into()] },
            pushed_ref: PushedRef::parse(r),
            raw_ref: r.into(),
            before: None,
            after: commit_or_none(after, "after").unwrap(),
            deleted: after == ZERO,
            pusher: "octocat".into(),
            head: None,
            skip_marker: None,
            changed: None,
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
    fn a_skip_marker_in_the_head_commit_skips_the_push() {
        for (message, marker) in [
            ("Fix typo [skip ci]", Some("[skip ci]")),
            ("docs: README\n\n[CI SKIP]", Some("[ci skip]")),
            ("[skip deploy] wip", Some("[skip deploy]")),
            ("[no ci]", Some("[no ci]")),
            ("skip ci", None),
            ("[skip  ci]", None),
            ("[skip-ci]", None),
            ("", None),
        ] {
            assert_eq!(skip_marker(message), marker, "{message:?}");
        }
        let main = [deployment("https://github.com/octo/app", "main", true)];
        let mut p = push("refs/heads/main", A);
        p.skip_marker = skip_marker("Update [skip deploy]");
        assert_eq!(push_skip(&p), Some(Skip::Marker));
        assert_eq!(decisions(&p, &main), [Decision::Skip(Skip::Marker)]);
        // a deleted branch stays a deletion, whatever its message said
        let mut gone = push("refs/heads/main", ZERO);
        gone.skip_marker = Some("[skip ci]");
        assert_eq!(push_skip(&gone), Some(Skip::BranchDeleted));
    }

    #[test]
    fn path_filters_let_through_only_pushes_that_touch_them() {
        let mut d = deployment("https://github.com/octo/app", "main", true);
        d.spec.paths = vec![Glob::parse("api/**").unwrap(), Glob::parse("requirements.txt").unwrap()];
        let main = [d];
        let with = |files: Option<&[&str]>| {
            let mut p = push("refs/heads/main", A);
            p.changed = files.map(|f| f.iter().map(|s| s.to_string()).collect());
            decisions(&p, &main)
        };
        let redeploy = [Decision::Redeploy(CommitSha::parse(A).unwrap())];
        assert_eq!(with(Some(&["docs/index.md", "README.md"])), [Decision::Skip(Skip::Paths)]);
        assert_eq!(with(Some(&[])), [Decision::Skip(Skip::Paths)], "a push that changed nothing touches nothing");
        assert_eq!(with(Some(&["README.md", "api/v1/views.py"])), redeploy);
        assert_eq!(with(Some(&["requirements.txt"])), redeploy);
        assert_eq!(with(None), redeploy, "files unknown: deployed rather than lost");
        // without filters every push deploys
        assert!(touches(&[], Some(&["docs/x".to_string()])));
    }

    #[test]
    fn a_matching_tag_deploys_its_commit() {
        let mut d = deployment("https://github.com/octo/app", "main", true);
        d.spec.deploy_tags = Some(Glob::parse("v*").unwrap());
        let mut off = d.clone();
        off.spec.auto_redeploy = false;
        let tagged = sha('c');
        let mut p = push("refs/tags/v1.2.0", A);
        p.head = Some(tagged.clone());
        assert_eq!(decisions(&p, &[d.clone()]), [Decision::Redeploy(tagged.clone())], "the tagged commit, not the tag object");
        assert_eq!(decisions(&p, &[off]), [Decision::Skip(Skip::AutoRedeployOff)]);
        p.head = None;
        assert_eq!(decisions(&p, &[d.clone()]), [Decision::Redeploy(CommitSha::parse(A).unwrap())]);
        assert_eq!(decisions(&push("refs/tags/release-1", A), &[d.clone()]), [Decision::Skip(Skip::Tag)]);
        assert_eq!(decisions(&push("refs/tags/v1.2.0", ZERO), &[d.clone()]), [Decision::Skip(Skip::Tag)], "a deleted tag deploys nothing");
        // a deployment without a tag pattern ignores tags
        assert_eq!(decisions(&push("refs/tags/v1.2.0", A), &[deployment("https://github.com/octo/app", "main", true)]), [Decision::Skip(Skip::Tag)]);
    }

    #[test]
    fn once_its_id_is_known_a_renamed_repository_still_routes_and_a_new_one_under_the_old_name_does_not() {
        let d = deployment("https://github.com/octo/app.git", "main", true);
        let bound = std::collections::HashMap::from([(d.id.clone(), 1296269)]);
        let mut renamed = push("refs/heads/main", A);
        renamed.repo.full_name = "octo/shop".into();
        assert!(route(&renamed, &[d.clone()]).is_empty(), "by name, before the id is known");
        assert_eq!(route_bound(&renamed, &[d.clone()], &bound).len(), 1);
        let mut impostor = push("refs/heads/main", A);
        impostor.repo.id = Some(4242);
        assert!(route_bound(&impostor, &[d.clone()], &bound).is_empty());
        // without an id in the push (a resumed record), the name decides
        let mut unnumbered = push("refs/heads/main", A);
        unnumbered.repo.id = None;
        assert_eq!(route_bound(&unnumbered, &[d.clone()], &bound).len(), 1);
        // the id never carries a push to another host
        renamed.repo.hosts = vec!["ghe.example".into()];
        assert!(route_bound(&renamed, &[d], &bound).is_empty());
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

    fn sha(c: char) -> CommitSha {
        CommitSha::parse(&c.to_string().repeat(40)).unwrap()
    }

    fn at(c: char) -> Option<CommitSha> {
        Some(sha(c))
    }

    #[test]
    fn a_copy_is_left_alone_only_when_the_deployment_ends_at_its_commit_anyway() {
        let first = PushClaim::SeenIn(DeliveryId::parse("repo-hook-1").unwrap());
        let copy = PushAction::Copy { first: DeliveryId::parse("repo-hook-1").unwrap() };
        let head = PushAction::BranchHead { first: DeliveryId::parse("repo-hook-1").unwrap() };
        // the first delivery of a push redeploys its commit, whatever the deployment does
        assert_eq!(same_push(&PushClaim::First, &Heading { live: at('a'), ..Heading::default() }, sha('a')), PushAction::Redeploy(sha('a')));
        // a copy while the commit serves, deploys, or is queued: nothing to ask
        for heading in [
            Heading { live: at('a'), ..Heading::default() },
            Heading { live: at('e'), deploying: Some(at('a')), queued: None },
            Heading { live: at('e'), deploying: Some(at('b')), queued: Some(at('a')) },
            Heading { live: None, deploying: Some(None), queued: Some(None) },
        ] {
            assert_eq!(same_push(&first, &heading, sha('a')), copy, "{heading:?}");
        }
        // a repeat while the deployment is headed elsewhere, or the head read earlier: the branch head
        for heading in [
            Heading::default(),
            Heading { live: at('e'), ..Heading::default() },
            Heading { live: at('e'), deploying: Some(None), queued: None },
            Heading { live: at('a'), deploying: Some(at('b')), queued: None },
            Heading { live: at('a'), deploying: Some(at('a')), queued: Some(at('b')) },
        ] {
            assert_eq!(same_push(&first, &heading, sha('a')), head, "{heading:?}");
        }
    }

    /// The defect this rule replaces: X→A, A→B, B→A, then A→B again was dropped as a copy of the second push
    /// while the deployment's queued follow-up was A and the branch at B.
    #[test]
    fn a_force_push_flip_ends_at_the_branch_head() {
        let second = PushClaim::SeenIn(DeliveryId::parse("push-2").unwrap());
        let after_flip_back = Heading { live: at('e'), deploying: Some(at('b')), queued: Some(at('a')) };
        assert_eq!(same_push(&second, &after_flip_back, sha('b')), PushAction::BranchHead { first: DeliveryId::parse("push-2").unwrap() });
        // and a late copy of the first push, after the branch moved on, does not take the deployment back
        let moved_on = Heading { live: at('a'), deploying: Some(at('b')), queued: None };
        let first = PushClaim::SeenIn(DeliveryId::parse("push-1").unwrap());
        assert_eq!(same_push(&first, &moved_on, sha('a')), PushAction::BranchHead { first: DeliveryId::parse("push-1").unwrap() });
    }

    #[test]
    fn only_deliveries_that_did_not_act_run_again() {
        let again: Vec<&str> = Outcome::ALL.into_iter().filter(|o| !o.acted()).map(Outcome::as_str).collect();
        assert!(again.contains(&"refused") && again.contains(&"failed") && again.contains(&"ignored_invalid_payload") && again.contains(&"too_large"), "{again:?}");
        for o in [Outcome::Received, Outcome::Pong, Outcome::RedeployRequested, Outcome::Queued, Outcome::AlreadyAt] {
            assert!(o.acted(), "{o}");
        }
    }
}
