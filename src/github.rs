//! Commit statuses and GitHub Deployments for every deploy of a commit, when a GitHub token is configured: an
//! observer of the engine's bus that never takes part in a deploy. Each deployment has a tracker that, when its
//! status changes (or its log grows while a deploy runs), reads its newest releases and tells GitHub what it has
//! not been told yet (`report::plan`): commit status `pending` → `success` / `failure` / `error` (context
//! `pvedeploy/<name>`), and a GitHub Deployment `in_progress` → `success` (with the app's URL) or `failure` /
//! `error`; the deployment that served before a new one turns `inactive`, and so does the last one when the
//! deployment is destroyed. Calls are bounded (`client::Policy`); each outcome is a line in the deployment's log.
//! A slow or failing GitHub delays only later reports of the same deployment, never a deploy.
//!
//! A pull request's preview (`engine::previews`) is reported on the base repository (where its pull request is, a
//! fork's commits included) as a transient, non-production environment, and after each deploy ends the pull request
//! has one comment saying where the preview is live (or where it failed), posted once and edited in place after; when
//! the preview is destroyed (its pull request closed, its TTL, its parent destroyed) the comment says it is gone and why.

pub mod client;
pub mod report;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::github::GithubApi;
use crate::core::deployment::{Deployment, DeploymentId};
use crate::core::status::Status;
use crate::engine::{Engine, Event};
use crate::store::logs::Level;
use crate::store::previews::PreviewRecord;
use crate::store::releases::Release;
use client::{Client, GithubError, Policy};
use report::{Phase, Post, Told};

/// The log step of the reporter's lines (its own lines do not wake it).
pub const LOG_STEP: &str = "github";
/// A tracker looks at most this often (log lines arrive in bursts).
const SETTLE: Duration = Duration::from_millis(250);
/// The newest releases a tracker looks at.
const RECENT: u32 = 5;

/// Follows the bus and reports deploys to GitHub.
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    client: Client,
    web_host: String,
    dashboard_url: Option<String>,
    trackers: Mutex<HashMap<String, Handle>>,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Releases created before this (milliseconds) are history: never reported.
    since: i64,
}

#[derive(Clone)]
struct Handle {
    wake: Arc<Notify>,
    /// A deploy runs or a release was told `pending` and not its end: log lines wake the tracker too.
    active: Arc<AtomicBool>,
}

impl Reporter {
    pub fn new(engine: Engine, api: &GithubApi) -> Reporter {
        Self::with_policy(engine, api, Policy::default())
    }

    pub fn with_policy(engine: Engine, api: &GithubApi, policy: Policy) -> Reporter {
        Reporter {
            inner: Arc::new(Inner {
                engine,
                client: Client::new(&api.api_base, api.token.clone(), api.token_file.clone(), policy),
                web_host: api.web_host.clone(),
                dashboard_url: api.dashboard_url.clone(),
                trackers: Mutex::default(),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
                since: crate::store::now_millis(),
            }),
        }
    }

    /// Starts following the bus.
    pub fn spawn(&self) {
        let mut events = self.inner.engine.bus().subscribe();
        let me = self.clone();
        self.inner.tasks.spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = me.inner.stop.cancelled() => return,
                    ev = events.recv() => ev,
                };
                match ev {
                    Ok(Event::Status { id, .. }) => me.wake(&id),
                    Ok(Event::Log(line)) if line.step != LOG_STEP => {
                        let handle = me.inner.trackers.lock().expect("trackers poisoned").get(&line.deployment).cloned();
                        if let Some(h) = handle.filter(|h| h.active.load(Ordering::Relaxed)) {
                            h.wake.notify_one();
                        }
                    }
                    Ok(Event::Log(_)) => {}
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "the GitHub reporter fell behind the bus; looking at every deployment it follows");
                        for h in me.inner.trackers.lock().expect("trackers poisoned").values() {
                            h.wake.notify_one();
                        }
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    /// Wakes the deployment's tracker, starting one if it has none.
    fn wake(&self, id: &DeploymentId) {
        let mut trackers = self.inner.trackers.lock().expect("trackers poisoned");
        if let Some(h) = trackers.get(id.as_str()) {
            h.wake.notify_one();
            return;
        }
        let handle = Handle { wake: Arc::new(Notify::new()), active: Arc::new(AtomicBool::new(true)) };
        handle.wake.notify_one();
        trackers.insert(id.to_string(), handle.clone());
        let tracker = Tracker { reporter: self.clone(), id: id.clone(), handle, told: HashMap::new(), live: None, preview: None };
        self.inner.tasks.spawn(tracker.run());
    }

    /// Stops following; calls in flight are abandoned (what they would have said is not posted).
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait()).await.is_err() {
            tracing::warn!("the GitHub reporter did not stop within {grace:?}");
        }
    }
}

/// One deployment's reports: what GitHub was told of each recent release, and its GitHub Deployment.
struct Tracker {
    reporter: Reporter,
    id: DeploymentId,
    handle: Handle,
    /// Release run (`run_key`) → what GitHub was told, and the GitHub Deployment made for it.
    told: HashMap<String, (Told, Option<u64>)>,
    /// The GitHub Deployment of the release that serves.
    live: Option<u64>,
    /// The deployment's preview record, once read (a deployment is recorded a moment before it is known as a preview,
    /// so a look that finds none asks again the next time).
    preview: Option<PreviewRecord>,
}

/// One run of a release: its id and when the run began (a rollback runs an earlier release again, as a new run).
fn run_key(r: &Release) -> String {
    format!("{}@{}", r.id, r.created_at)
}

/// Where a report goes.
struct Target<'a> {
    owner: &'a str,
    repo: &'a str,
    context: String,
    environment: String,
    page: Option<String>,
    /// A preview's environment: transient, not production.
    transient: bool,
}

impl Tracker {
    async fn run(mut self) {
        let stop = self.reporter.inner.stop.clone();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.handle.wake.notified() => {}
            }
            let ended = tokio::select! {
                _ = stop.cancelled() => return,
                ended = self.look() => ended,
            };
            if ended {
                self.reporter.inner.trackers.lock().expect("trackers poisoned").remove(self.id.as_str());
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(SETTLE) => {}
            }
        }
    }

    /// Reads the deployment and its newest releases and posts what GitHub was not told; `true` once the
    /// deployment is destroyed (the tracker ends).
    async fn look(&mut self) -> bool {
        let inner = self.reporter.inner.clone();
        let store = inner.engine.store();
        // The releases first, then the deployment: a release read active was made so in the same
        // transaction as the deployment went live at its URL (`Store::go_live`), so the deployment read
        // after it has that URL.
        let releases = match store.releases(&self.id, RECENT).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(deployment = %self.id, error = %e, "the GitHub reporter could not read the releases");
                return false;
            }
        };
        let d = match store.get_deployment(&self.id).await {
            Ok(Some(d)) => d,
            Ok(None) => return true,
            Err(e) => {
                tracing::warn!(deployment = %self.id, error = %e, "the GitHub reporter could not read the deployment");
                return false;
            }
        };
        if self.preview.is_none() {
            match store.preview_of(&self.id).await {
                Ok(p) => self.preview = p,
                Err(e) => {
                    tracing::warn!(deployment = %self.id, error = %e, "the GitHub reporter could not read whether this is a preview");
                    return false;
                }
            }
        }
        let preview = self.preview.clone();
        // A preview's reports go to its pull request's repository (a fork's commits are visible there too).
        let on_github = report::github_repo(&d.spec.repo_url, &inner.web_host);
        let repo = match &preview {
            Some(p) => on_github.and_then(|_| p.repo.split_once('/').map(|(o, r)| (o.to_owned(), r.to_owned()))),
            None => on_github,
        };
        let Some((owner, repo)) = repo else {
            // Not a repository on the configured GitHub: nothing to tell, ever.
            self.handle.active.store(false, Ordering::Relaxed);
            return d.status == Status::Destroyed;
        };
        let target = Target {
            owner: &owner,
            repo: &repo,
            context: format!("pvedeploy/{}", d.spec.name),
            environment: d.spec.name.to_string(),
            page: inner.dashboard_url.as_ref().map(|u| format!("{u}/#/deployments/{}", d.id)),
            transient: preview.is_some(),
        };
        if d.status == Status::Destroyed {
            if let Some(gh) = self.live.take() {
                self.deployment_status(&target, &d, gh, "inactive", "The deployment was destroyed", None).await;
            }
            if preview.is_some() {
                self.comment_gone(&target, &d).await;
            }
            return true;
        }
        let fresh: Vec<&Release> = releases.iter().rev().filter(|r| r.created_at >= inner.since).collect();
        let mut ended = None;
        for r in &fresh {
            let phase = Phase::of(r);
            let (told, gh) = self.told.get(&run_key(r)).copied().unwrap_or_default();
            let (posts, next) = report::plan(told, &phase);
            let mut gh = gh;
            for post in posts {
                gh = self.post(&target, &d, r, &phase, post, gh).await;
            }
            if told != Told::Final && next == Told::Final {
                ended = Some((*r, phase));
            }
            self.told.insert(run_key(r), (next, gh));
        }
        if let (Some((r, phase)), true) = (ended, preview.is_some()) {
            self.comment(&target, &d, r, &phase).await;
        }
        // Only the releases still among the newest are remembered.
        self.told.retain(|k, _| releases.iter().any(|r| run_key(r) == *k));
        let open = self.told.values().any(|(t, _)| *t == Told::Started);
        self.handle.active.store(open || matches!(d.status, Status::Pending | Status::Provisioning | Status::Installing | Status::Deploying), Ordering::Relaxed);
        false
    }

    /// Makes one call; returns the release's GitHub Deployment (made by this call, or as it was).
    async fn post(&mut self, t: &Target<'_>, d: &Deployment, r: &Release, phase: &Phase, post: Post, gh: Option<u64>) -> Option<u64> {
        let client = &self.reporter.inner.client;
        let short = r.commit.short(7);
        // A release first seen after it ended is told its start too: that status speaks of the start, not the end.
        let said = match post {
            Post::CommitStatus("pending") | Post::CreateDeployment | Post::DeploymentStatus("in_progress") => Phase::Started,
            _ => phase.clone(),
        };
        let description = said.description(r, d);
        match post {
            Post::CommitStatus(state) => {
                let body = wire::CommitStatus { state, target_url: t.page.as_deref(), description: &description, context: &t.context };
                let outcome = client.create_commit_status(t.owner, t.repo, r.commit.as_str(), &body).await;
                self.say(outcome.map(|_| format!("commit status {state} on {}/{}@{short} ({})", t.owner, t.repo, t.context)), &format!("commit status {state} on {}/{}@{short}", t.owner, t.repo)).await;
                gh
            }
            Post::CreateDeployment => {
                let payload = serde_json::json!({ "pvedeploy": { "deployment": d.id.as_str(), "release": r.id.as_str() } });
                let body = wire::NewDeployment {
                    git_ref: r.commit.as_str(),
                    task: "deploy",
                    auto_merge: false,
                    required_contexts: vec![],
                    payload,
                    environment: &t.environment,
                    description: &report::clip(&format!("pvedeploy release {}", r.id)),
                    transient_environment: t.transient,
                    production_environment: !t.transient,
                };
                let made = client.create_deployment(t.owner, t.repo, &body).await;
                let id = made.as_ref().ok().copied();
                self.say(made.map(|n| format!("deployment {n} of {short} to environment {} created on {}/{}", t.environment, t.owner, t.repo)), &format!("a GitHub deployment of {short}")).await;
                id
            }
            Post::DeploymentStatus(state) => {
                let Some(n) = gh else { return None };
                let url = (said == Phase::Succeeded).then_some(d.url.as_deref()).flatten();
                self.deployment_status(t, d, n, state, &description, url).await;
                gh
            }
            Post::InactivatePrevious => {
                if let Some(prev) = self.live.filter(|p| Some(*p) != gh) {
                    let text = format!("Replaced by {short}");
                    self.deployment_status(t, d, prev, "inactive", &text, None).await;
                }
                if gh.is_some() {
                    self.live = gh;
                }
                gh
            }
        }
    }

    async fn deployment_status(&self, t: &Target<'_>, _d: &Deployment, gh: u64, state: &'static str, description: &str, environment_url: Option<&str>) {
        let body = wire::DeploymentStatus { state, log_url: t.page.as_deref(), environment_url, description };
        let outcome = self.reporter.inner.client.create_deployment_status(t.owner, t.repo, gh, &body).await;
        self.say(outcome.map(|_| format!("deployment {gh} on {}/{} is {state}", t.owner, t.repo)), &format!("deployment status {state} of deployment {gh}")).await;
    }

    /// The preview's comment on its pull request: edited in place when it was posted before (posted again if it was
    /// deleted), else posted and remembered.
    async fn comment(&self, t: &Target<'_>, d: &Deployment, r: &Release, phase: &Phase) {
        let inner = &self.reporter.inner;
        let store = inner.engine.store();
        // Read afresh: the comment may have been posted for an earlier preview of the same pull request.
        let rec = match store.preview_of(&self.id).await {
            Ok(Some(rec)) => rec,
            Ok(None) => return,
            Err(e) => {
                inner.engine.log(&self.id, Level::Warn, LOG_STEP, &format!("GitHub: the preview comment was not posted: {e}")).await;
                return;
            }
        };
        let text = report::preview_comment(d, r, phase, t.page.as_deref());
        let body = wire::IssueComment { body: &text };
        let n = rec.number;
        if let Some(id) = rec.comment_id {
            match inner.client.update_comment(t.owner, t.repo, id, &body).await {
                Ok(()) => return self.say(Ok(format!("comment {id} on pull request #{n} of {}/{} updated", t.owner, t.repo)), "").await,
                // Deleted on GitHub: a new one is posted.
                Err(GithubError::Refused { status: 404, .. }) => {}
                Err(e) => return self.say(Err(e), &format!("the preview comment {id} on pull request #{n}")).await,
            }
        }
        match inner.client.create_comment(t.owner, t.repo, n, &body).await {
            Ok(id) => {
                if let Err(e) = store.set_preview_comment(&self.id, id).await {
                    inner.engine.log(&self.id, Level::Warn, LOG_STEP, &format!("GitHub: comment {id} was posted but not remembered ({e}); the next deploy posts another")).await;
                }
                self.say(Ok(format!("comment {id} posted on pull request #{n} of {}/{}", t.owner, t.repo)), "").await;
            }
            Err(e) => self.say(Err(e), &format!("the preview comment on pull request #{n}")).await,
        }
    }

    /// The destroyed preview's comment, edited to say it is gone and why. Only this preview's own comment: when a newer
    /// preview of the same pull request took the record over, the comment is that one's. A comment never posted, or
    /// deleted on GitHub, is not posted now (a comment only to say nothing is there would be noise).
    async fn comment_gone(&self, t: &Target<'_>, d: &Deployment) {
        let inner = &self.reporter.inner;
        let rec = match inner.engine.store().preview_of(&self.id).await {
            Ok(Some(rec)) => rec,
            Ok(None) => return,
            Err(e) => {
                inner.engine.log(&self.id, Level::Warn, LOG_STEP, &format!("GitHub: the preview comment was not edited to say it is gone: {e}")).await;
                return;
            }
        };
        let Some(id) = rec.comment_id else { return };
        let text = report::preview_gone_comment(d, rec.ended.as_deref(), t.page.as_deref());
        let n = rec.number;
        match inner.client.update_comment(t.owner, t.repo, id, &wire::IssueComment { body: &text }).await {
            Ok(()) => self.say(Ok(format!("comment {id} on pull request #{n} of {}/{} says the preview is gone", t.owner, t.repo)), "").await,
            Err(GithubError::Refused { status: 404, .. }) => {
                inner.engine.log(&self.id, Level::Info, LOG_STEP, &format!("GitHub: comment {id} on pull request #{n} was deleted; nothing to edit")).await;
            }
            Err(e) => self.say(Err(e), &format!("that the preview is gone (comment {id} on pull request #{n})")).await,
        }
    }

    /// The call's outcome in the deployment's log.
    async fn say(&self, outcome: Result<String, GithubError>, what: &str) {
        let engine = &self.reporter.inner.engine;
        match outcome {
            Ok(done) => engine.log(&self.id, Level::Info, LOG_STEP, &format!("GitHub: {done}")).await,
            Err(e) => engine.log(&self.id, Level::Warn, LOG_STEP, &format!("GitHub: could not post {what}: {e} (the deploy is not affected)")).await,
        }
    }
}
