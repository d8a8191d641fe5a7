//! Pull-request previews as the core sees them: a pull request event (`PullRequestEvent`), a preview's name
//! (`preview_name`: `<parent>-pr-<n>`, within the name rules), what an event means for one deployment of its
//! repository (`decide`), and the spec a preview runs with (`preview_spec`: the parent's, on the PR's head).

use std::fmt;

use sha2::{Digest, Sha256};

use crate::core::deployment::{Deployment, Spec};
use crate::core::limits::RepoPolicy;
use crate::core::names::{AppName, CommitSha, GitRef};
use crate::core::repo::RepoUrl;
use crate::core::status::Status;
use crate::core::webhook::{RepoIdentity, Skip};

/// The `action` of a `pull_request` event, as far as previews care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrAction {
    Opened,
    Reopened,
    /// New commits on the head branch (GitHub's `synchronize`).
    Synchronize,
    /// Closed, merged or not.
    Closed,
    /// Any other action (`labeled`, `edited`, `assigned`, …): nothing for previews to do.
    Other(String),
}

impl PrAction {
    pub fn parse(raw: &str) -> PrAction {
        match raw {
            "opened" => PrAction::Opened,
            "reopened" => PrAction::Reopened,
            "synchronize" => PrAction::Synchronize,
            "closed" => PrAction::Closed,
            other => PrAction::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            PrAction::Opened => "opened",
            PrAction::Reopened => "reopened",
            PrAction::Synchronize => "synchronize",
            PrAction::Closed => "closed",
            PrAction::Other(a) => a,
        }
    }
}

impl fmt::Display for PrAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The repository a pull request's head lives in (`pull_request.head.repo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadRepo {
    pub id: Option<i64>,
    /// `owner/repo`.
    pub full_name: String,
    /// Its `clone_url`, as sent (checked against the repository policy only when a preview is made of it).
    pub clone_url: Option<String>,
}

/// A `pull_request` delivery, converted from the door's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestEvent {
    pub action: PrAction,
    pub number: u64,
    /// The base repository (the payload's `repository`): the one deployments are made of.
    pub repo: RepoIdentity,
    /// The branch the pull request merges into (`pull_request.base.ref`).
    pub base_ref: String,
    /// The head commit (`pull_request.head.sha`).
    pub head_sha: CommitSha,
    /// The head branch (`pull_request.head.ref`), in the head repository.
    pub head_ref: String,
    /// `None` when GitHub sends `null`: the head repository (a fork) was deleted.
    pub head_repo: Option<HeadRepo>,
    pub merged: bool,
    /// Who sent it (GitHub login), bounded and printable.
    pub sender: String,
}

impl PullRequestEvent {
    /// Why the pull request's head is not the base repository (a fork, or a head repository deleted since), if it is not.
    pub fn fork(&self) -> Option<String> {
        let Some(head) = &self.head_repo else {
            return Some("its head repository was deleted (a fork's pull request)".into());
        };
        let same = match (head.id, self.repo.id) {
            (Some(h), Some(b)) => h == b,
            _ => head.full_name.eq_ignore_ascii_case(&self.repo.full_name),
        };
        (!same).then(|| format!("its head is in the fork {}", head.full_name))
    }
}

/// What a pull request event means for one deployment of its repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviewDecision {
    /// Make or redeploy the preview at this commit.
    Deploy(CommitSha),
    /// Destroy the preview, if this deployment has one for the pull request.
    Close,
    Skip(Skip),
    /// Refused, and why (recorded with the delivery).
    Refuse(String),
}

/// The decision for deployment `d` (of the event's repository).
pub fn decide(d: &Deployment, pr: &PullRequestEvent) -> PreviewDecision {
    if matches!(d.status, Status::Destroying | Status::Destroyed) {
        return PreviewDecision::Skip(Skip::Destroyed);
    }
    if pr.action == PrAction::Closed {
        // Whatever the options say now: a preview made earlier goes when its pull request closes.
        return PreviewDecision::Close;
    }
    if !d.spec.previews {
        return PreviewDecision::Skip(Skip::PreviewsOff);
    }
    if matches!(pr.action, PrAction::Other(_)) {
        return PreviewDecision::Skip(Skip::Event);
    }
    if pr.base_ref != d.spec.branch.as_str() {
        return PreviewDecision::Skip(Skip::OtherBranch);
    }
    if let Some(why) = pr.fork().filter(|_| !d.spec.previews_from_forks) {
        return PreviewDecision::Refuse(format!(
            "pull request #{} is not previewed: {why}, and `{}` does not allow previews from forks (previews_from_forks: \
             its code would run with the app's environment)",
            pr.number, d.spec.name
        ));
    }
    PreviewDecision::Deploy(pr.head_sha.clone())
}

/// The hash a shortened preview name carries: 6 hex digits of SHA-256 over the parent's whole name.
fn short_hash(name: &str) -> String {
    hex::encode(&Sha256::digest(name.as_bytes())[..3])
}

/// `<parent>-pr-<number>`; when that is longer than a name may be, the parent part is cut and a hash of the whole
/// parent name keeps previews of two long names that share a beginning apart: `<cut parent>-<hash>-pr-<number>`.
pub fn preview_name(parent: &AppName, number: u64) -> AppName {
    let suffix = format!("-pr-{number}");
    let whole = format!("{}{suffix}", parent.as_str());
    if let Ok(name) = AppName::parse(&whole) {
        return name;
    }
    let tail = format!("-{}{suffix}", short_hash(parent.as_str()));
    let room = 63 - tail.len();
    let cut = parent.as_str()[..room.min(parent.as_str().len())].trim_end_matches('-');
    // A parent name is a DNS label, so its start is one too (at least one character before any hyphen).
    AppName::parse(&format!("{cut}{tail}")).expect("a cut DNS label, a hyphen, hex digits and -pr-<n> are a DNS label")
}

/// The spec of the preview of `pr` for the parent spec `parent`: the parent's, named `preview_name`, on the pull
/// request's head branch and repository (the parent's repository URL for a pull request from a branch of it), without
/// push redeploys (new commits come as `synchronize`), path filters, tag deploys or previews of its own.
pub fn preview_spec(parent: &Spec, pr: &PullRequestEvent, repos: &RepoPolicy) -> Result<Spec, String> {
    let repo_url = match pr.fork() {
        None => parent.repo_url.clone(),
        Some(_) => {
            let head = pr.head_repo.as_ref().ok_or("its head repository was deleted: there is nothing to deploy")?;
            let url = head.clone_url.as_deref().ok_or_else(|| format!("the fork {} has no clone URL in the payload", head.full_name))?;
            RepoUrl::parse(url, repos).map_err(|e| format!("the fork's repository URL {url} is refused: it {}", e.message))?
        }
    };
    let branch = GitRef::parse(&pr.head_ref).map_err(|e| format!("its head branch {:?} cannot be deployed: it {}", pr.head_ref, e.message))?;
    let mut spec = parent.clone();
    spec.name = preview_name(&parent.name, pr.number);
    spec.repo_url = repo_url;
    spec.branch = branch;
    spec.auto_redeploy = false;
    spec.paths = vec![];
    spec.deploy_tags = None;
    spec.previews = false;
    spec.previews_from_forks = false;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::deployment::RawSpec;
    use crate::core::limits::Limits;

    fn parent(name: &str, previews: bool, forks: bool) -> Deployment {
        let raw = RawSpec {
            name: Some(name.into()),
            repo_url: Some("https://github.com/octo/app".into()),
            framework: Some("flask".into()),
            paths: Some(vec!["api/**".into()]),
            deploy_tags: Some("v*".into()),
            previews: Some(previews),
            previews_from_forks: Some(forks),
            ..RawSpec::default()
        };
        Deployment::new(Spec::parse(raw, &Limits::default(), &RepoPolicy::default()).unwrap(), 0)
    }

    fn pr(action: &str, head: Option<(&str, i64)>) -> PullRequestEvent {
        PullRequestEvent {
            action: PrAction::parse(action),
            number: 7,
            repo: RepoIdentity { id: Some(1), full_name: "octo/app".into(), hosts: vec!["github.com".into()] },
            base_ref: "main".into(),
            head_sha: CommitSha::parse(&"a".repeat(40)).unwrap(),
            head_ref: "feature/x".into(),
            head_repo: head.map(|(n, id)| HeadRepo { id: Some(id), full_name: n.into(), clone_url: Some(format!("https://github.com/{n}.git")) }),
            merged: false,
            sender: "octocat".into(),
        }
    }

    #[test]
    fn forks_are_refused_unless_allowed_and_closes_always_reach_the_preview() {
        let same = Some(("octo/app", 1));
        let fork = Some(("mallory/app", 2));
        let sha = CommitSha::parse(&"a".repeat(40)).unwrap();
        let on = parent("web", true, false);
        for action in ["opened", "reopened", "synchronize"] {
            assert_eq!(decide(&on, &pr(action, same)), PreviewDecision::Deploy(sha.clone()), "{action}");
            let PreviewDecision::Refuse(why) = decide(&on, &pr(action, fork)) else { panic!("{action} from a fork") };
            assert!(why.contains("mallory/app") && why.contains("previews_from_forks"), "{why}");
            assert!(matches!(decide(&on, &pr(action, None)), PreviewDecision::Refuse(_)), "a deleted head repository is a fork");
        }
        assert_eq!(decide(&parent("web", true, true), &pr("opened", fork)), PreviewDecision::Deploy(sha));
        // a fork renamed to the base's name is still another repository: the ids decide
        assert!(matches!(decide(&on, &pr("opened", Some(("octo/app", 3)))), PreviewDecision::Refuse(_)));
        for (d, head) in [(&on, fork), (&parent("web", false, false), same)] {
            assert_eq!(decide(d, &pr("closed", head)), PreviewDecision::Close, "a close reaches a preview made before, whatever the options now");
        }
        let off = parent("web", false, false);
        assert_eq!(decide(&off, &pr("opened", same)), PreviewDecision::Skip(Skip::PreviewsOff));
        assert_eq!(decide(&on, &pr("labeled", same)), PreviewDecision::Skip(Skip::Event));
        let mut other_base = pr("opened", same);
        other_base.base_ref = "develop".into();
        assert_eq!(decide(&on, &other_base), PreviewDecision::Skip(Skip::OtherBranch));
        let mut gone = on.clone();
        gone.status = Status::Destroyed;
        assert_eq!(decide(&gone, &pr("closed", same)), PreviewDecision::Skip(Skip::Destroyed));
    }

    #[test]
    fn preview_names_pass_the_name_rules_however_long_the_parent() {
        let name = |s: &str| AppName::parse(s).unwrap();
        assert_eq!(preview_name(&name("web"), 12).as_str(), "web-pr-12");
        let fits = "a".repeat(63 - "-pr-7".len());
        assert_eq!(preview_name(&name(&fits), 7).as_str(), format!("{fits}-pr-7"));
        for parent in ["a".repeat(63), format!("{}-{}", "b".repeat(40), "c".repeat(22)), format!("x{}", "-y".repeat(31)), "a".repeat(62)] {
            for n in [1, 42, 99_999, u64::MAX] {
                let p = preview_name(&name(&parent), n);
                assert!(AppName::parse(p.as_str()).is_ok() && p.as_str().len() <= 63, "{p:?}");
                assert!(p.as_str().ends_with(&format!("-pr-{n}")), "{p:?}");
                assert!(!p.as_str().contains("--pr") && !p.as_str().contains("---"), "{p:?}");
            }
        }
        // two long parents with the same beginning get different previews
        let (one, two) = (format!("{}-one", "s".repeat(59)), format!("{}-two", "s".repeat(59)));
        assert_ne!(preview_name(&name(&one), 1), preview_name(&name(&two), 1));
        assert_eq!(preview_name(&name(&one), 1), preview_name(&name(&one), 1), "stable");
    }

    #[test]
    fn a_preview_is_the_parent_on_the_head_without_its_push_options() {
        let p = parent("web", true, true);
        let repos = RepoPolicy::default();
        let s = preview_spec(&p.spec, &pr("opened", Some(("octo/app", 1))), &repos).unwrap();
        assert_eq!((s.name.as_str(), s.repo_url.to_string(), s.branch.as_str()), ("web-pr-7", p.spec.repo_url.to_string(), "feature/x"));
        assert_eq!((s.auto_redeploy, s.paths.len(), s.deploy_tags.is_none(), s.previews, s.previews_from_forks), (false, 0, true, false, false));
        assert_eq!((s.framework, s.cpu, s.memory_mib, s.guest_type), (p.spec.framework, p.spec.cpu, p.spec.memory_mib, p.spec.guest_type));
        let s = preview_spec(&p.spec, &pr("opened", Some(("mallory/app", 2))), &repos).unwrap();
        assert_eq!(s.repo_url.full_name(), "mallory/app");
        // a fork on a host the policy does not allow, or a head branch we would not deploy: refused, saying why
        let mut elsewhere = pr("opened", Some(("mallory/app", 2)));
        elsewhere.head_repo.as_mut().unwrap().clone_url = Some("https://evil.example/mallory/app.git".into());
        assert!(preview_spec(&p.spec, &elsewhere, &repos).unwrap_err().contains("evil.example"));
        let mut odd = pr("opened", Some(("octo/app", 1)));
        odd.head_ref = "$(id)".into();
        assert!(preview_spec(&p.spec, &odd, &repos).unwrap_err().contains("head branch"));
    }
}
