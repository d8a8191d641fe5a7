//! What GitHub is told about a release, decided from the release and the deployment alone (no I/O): the phase a
//! release is in, what has to be posted to bring GitHub from what it was told to that phase, and the words.

use crate::core::deployment::Deployment;
use crate::core::release::DeployStep;
use crate::store::releases::{Release, ReleaseStatus};

/// GitHub's description fields take at most this many characters.
pub const DESCRIPTION_MAX: usize = 140;

/// Where a release is, as GitHub hears it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Being deployed.
    Started,
    /// Live (or live and replaced since).
    Succeeded,
    /// The release failed in `step`. `infrastructure`: the guest could not be reached or prepared (`boot`,
    /// `install`), which is not the commit's fault (GitHub's `error`); otherwise the commit's code failed
    /// (`failure`).
    Failed { step: DeployStep, why: Option<String>, infrastructure: bool },
}

impl Phase {
    pub fn of(r: &Release) -> Phase {
        match r.status {
            ReleaseStatus::Deploying => Phase::Started,
            ReleaseStatus::Active | ReleaseStatus::Superseded => Phase::Succeeded,
            ReleaseStatus::Failed => Phase::Failed { step: r.step, why: r.error.clone(), infrastructure: matches!(r.step, DeployStep::Boot | DeployStep::Install) },
        }
    }

    pub fn is_final(&self) -> bool {
        !matches!(self, Phase::Started)
    }

    /// The commit status's state.
    pub fn commit_state(&self) -> &'static str {
        match self {
            Phase::Started => "pending",
            Phase::Succeeded => "success",
            Phase::Failed { infrastructure: true, .. } => "error",
            Phase::Failed { .. } => "failure",
        }
    }

    /// The deployment status's state: the commit status's, but `in_progress` while deploying.
    pub fn deployment_state(&self) -> &'static str {
        match self {
            Phase::Started => "in_progress",
            _ => self.commit_state(),
        }
    }

    /// The description both statuses carry.
    pub fn description(&self, r: &Release, d: &Deployment) -> String {
        let short = r.commit.short(7);
        let text = match self {
            Phase::Started => format!("Deploying {short} to {}", d.spec.name),
            Phase::Succeeded => match &d.url {
                Some(u) => format!("{short} is live at {u}"),
                None => format!("{short} is live"),
            },
            Phase::Failed { step, why, .. } => {
                let why = why.as_deref().filter(|w| !w.is_empty() && *w != format!("step {} failed", step.as_str()));
                match why {
                    Some(w) => format!("Failed at step {}: {w}", step.as_str()),
                    None => format!("Failed at step {}", step.as_str()),
                }
            }
        };
        clip(&text)
    }
}

/// `text` cut to `DESCRIPTION_MAX` characters (an ellipsis marks the cut), on one line.
pub fn clip(text: &str) -> String {
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.chars().count() <= DESCRIPTION_MAX {
        return one_line;
    }
    let mut out: String = one_line.chars().take(DESCRIPTION_MAX - 1).collect();
    out.push('…');
    out
}

/// What GitHub was told about a release so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Told {
    #[default]
    Nothing,
    /// `pending` / `in_progress`.
    Started,
    /// Its final state.
    Final,
}

/// One call to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Post {
    CommitStatus(&'static str),
    /// A GitHub Deployment for the release's commit.
    CreateDeployment,
    DeploymentStatus(&'static str),
    /// The deployment that served before this release is `inactive` now.
    InactivatePrevious,
}

/// The calls that bring GitHub from `told` to `phase`, in order; and what GitHub has been told after them.
pub fn plan(told: Told, phase: &Phase) -> (Vec<Post>, Told) {
    let mut posts = Vec::new();
    if told == Told::Final {
        return (posts, told);
    }
    if told == Told::Nothing {
        posts.extend([Post::CommitStatus("pending"), Post::CreateDeployment, Post::DeploymentStatus("in_progress")]);
    }
    if !phase.is_final() {
        return (posts, Told::Started);
    }
    posts.push(Post::CommitStatus(phase.commit_state()));
    posts.push(Post::DeploymentStatus(phase.deployment_state()));
    if *phase == Phase::Succeeded {
        posts.push(Post::InactivatePrevious);
    }
    (posts, Told::Final)
}

/// The first line of every preview comment: how a reader (and pvedeploy) tells it from others.
pub const PREVIEW_MARK: &str = "<!-- pvedeploy preview -->";

/// The pull request comment that shows preview `d` after release `r` ended in `phase` (a comment is Markdown):
/// the URL when it is live, the failing step otherwise; `page` the deployment's dashboard page.
pub fn preview_comment(d: &Deployment, r: &Release, phase: &Phase, page: Option<&str>) -> String {
    let short = r.commit.short(7);
    let name = d.spec.name.as_str();
    let state = match (phase, &d.url) {
        (Phase::Succeeded, Some(url)) => format!("**{name}** is live at {url} with `{short}`."),
        (Phase::Succeeded, None) => format!("**{name}** is live with `{short}`."),
        (Phase::Started, _) => format!("**{name}** is deploying `{short}`."),
        (Phase::Failed { step, why, .. }, _) => {
            let why = why.as_deref().map(|w| format!(": {}", clip(w))).unwrap_or_default();
            format!("**{name}** could not deploy `{short}`: it failed at step {}{why}.", step.as_str())
        }
    };
    let page = page.map(|p| format!(" Logs: {p}")).unwrap_or_default();
    format!("{PREVIEW_MARK}\n### pvedeploy preview\n\n{state}{page}\n\nThis comment is updated on each deploy; the preview is destroyed when the pull request closes.\n")
}

/// The comment of preview `d` once it is destroyed: gone, and `why` (kept by the engine) when known.
pub fn preview_gone_comment(d: &Deployment, why: Option<&str>, page: Option<&str>) -> String {
    let name = d.spec.name.as_str();
    let why = why.map(|w| format!(": {}", clip(w))).unwrap_or_default();
    let page = page.map(|p| format!(" Logs: {p}")).unwrap_or_default();
    format!("{PREVIEW_MARK}\n### pvedeploy preview\n\n**{name}** is gone{why}. Its guest is deleted and its URL no longer answers.{page}\n")
}

/// `owner` and `repo` of a deployment's repository when it is on GitHub's host `web_host`.
pub fn github_repo(repo_url: &crate::core::repo::RepoUrl, web_host: &str) -> Option<(String, String)> {
    if !repo_url.host().eq_ignore_ascii_case(web_host) {
        return None;
    }
    let (owner, repo) = repo_url.full_name().split_once('/')?;
    (!owner.is_empty() && !repo.is_empty() && !repo.contains('/')).then(|| (owner.to_owned(), repo.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::deployment::{RawSpec, Spec};
    use crate::core::limits::{Limits, RepoPolicy};
    use crate::core::release::ReleaseId;
    use crate::store::releases::Trigger;

    fn release(status: ReleaseStatus, step: DeployStep, error: Option<&str>) -> Release {
        let c = crate::core::names::CommitSha::parse("0123456789abcdef0123456789abcdef01234567").unwrap();
        Release { deployment: crate::core::deployment::DeploymentId::generate(), id: ReleaseId::new(1, &c), commit: c, status, step, trigger: Trigger::Push, timings: vec![], error: error.map(String::from), created_at: 1, finished_at: None }
    }

    fn deployment() -> Deployment {
        let raw = RawSpec { name: Some("web".into()), repo_url: Some("https://github.com/octo/app.git".into()), framework: Some("flask".into()), ..RawSpec::default() };
        Deployment::new(Spec::parse(raw, &Limits::default(), &RepoPolicy::default()).unwrap(), 0)
    }

    #[test]
    fn a_deploy_is_told_pending_then_its_end() {
        let started = Phase::of(&release(ReleaseStatus::Deploying, DeployStep::Fetch, None));
        let (posts, told) = plan(Told::Nothing, &started);
        assert_eq!(posts, [Post::CommitStatus("pending"), Post::CreateDeployment, Post::DeploymentStatus("in_progress")]);
        assert_eq!(plan(told, &started), (vec![], Told::Started), "told once");
        let (posts, told) = plan(told, &Phase::Succeeded);
        assert_eq!(posts, [Post::CommitStatus("success"), Post::DeploymentStatus("success"), Post::InactivatePrevious]);
        assert_eq!(plan(told, &Phase::Succeeded), (vec![], Told::Final));
        // a release that ended before it was seen running is told the whole sequence
        let failed = Phase::of(&release(ReleaseStatus::Failed, DeployStep::Build, Some("step build failed")));
        let (posts, _) = plan(Told::Nothing, &failed);
        assert_eq!(posts, [Post::CommitStatus("pending"), Post::CreateDeployment, Post::DeploymentStatus("in_progress"), Post::CommitStatus("failure"), Post::DeploymentStatus("failure")]);
    }

    #[test]
    fn failures_name_their_step_and_the_guest_s_are_errors() {
        let d = deployment();
        let r = release(ReleaseStatus::Failed, DeployStep::Health, Some("health check of http://10.0.0.5:41234/ failed for 30s: HTTP 500"));
        let p = Phase::of(&r);
        assert_eq!((p.commit_state(), p.deployment_state()), ("failure", "failure"));
        assert_eq!(p.description(&r, &d), "Failed at step health: health check of http://10.0.0.5:41234/ failed for 30s: HTTP 500");
        let r = release(ReleaseStatus::Failed, DeployStep::Build, Some("step build failed"));
        assert_eq!(Phase::of(&r).description(&r, &d), "Failed at step build");
        let r = release(ReleaseStatus::Failed, DeployStep::Boot, Some("x".repeat(300).as_str()));
        let p = Phase::of(&r);
        assert_eq!((p.commit_state(), p.deployment_state()), ("error", "error"));
        assert_eq!(p.description(&r, &d).chars().count(), DESCRIPTION_MAX);
        let mut live = d.clone();
        live.url = Some("http://10.0.0.5:8000".into());
        let r = release(ReleaseStatus::Active, DeployStep::Switch, None);
        assert_eq!(Phase::of(&r).description(&r, &live), "0123456 is live at http://10.0.0.5:8000");
        assert_eq!(Phase::Started.description(&r, &live), "Deploying 0123456 to web");
    }

    #[test]
    fn a_preview_comment_says_where_it_is_live_or_where_it_failed() {
        let mut d = deployment();
        d.url = Some("http://10.0.0.9:8000".into());
        let page = Some("https://deploy.example.com/#/deployments/x");
        let live = preview_comment(&d, &release(ReleaseStatus::Active, DeployStep::Switch, None), &Phase::Succeeded, page);
        assert!(live.starts_with(PREVIEW_MARK) && live.contains("**web** is live at http://10.0.0.9:8000 with `0123456`") && live.contains(page.unwrap()), "{live}");
        let r = release(ReleaseStatus::Failed, DeployStep::Build, Some("pip install failed"));
        let failed = preview_comment(&d, &r, &Phase::of(&r), None);
        assert!(failed.contains("failed at step build: pip install failed") && !failed.contains("Logs:"), "{failed}");
        let gone = preview_gone_comment(&d, Some("the pull request was merged"), page);
        assert!(gone.starts_with(PREVIEW_MARK) && gone.contains("**web** is gone: the pull request was merged.") && gone.contains(page.unwrap()), "{gone}");
        assert!(preview_gone_comment(&d, None, None).contains("**web** is gone. "));
    }

    #[test]
    fn only_repositories_on_the_configured_host_are_reported() {
        let url = |u: &str| crate::core::repo::RepoUrl::from_stored(u.into());
        assert_eq!(github_repo(&url("https://github.com/Octo/App.git"), "github.com"), Some(("Octo".into(), "App".into())));
        assert_eq!(github_repo(&url("git@github.com:octo/app.git"), "github.com"), Some(("octo".into(), "app".into())));
        assert_eq!(github_repo(&url("https://gitlab.com/octo/app.git"), "github.com"), None);
        assert_eq!(github_repo(&url("https://github.com/group/sub/app.git"), "github.com"), None);
        assert_eq!(github_repo(&url("http://127.0.0.1:9418/octo/app.git"), "127.0.0.1:9418"), Some(("octo".into(), "app".into())));
    }
}
