//! Deploying the app onto its guest over SSH, one release at a time per deployment: boot (SSH with
//! the pinned host key, cloud-init finished), install, fetch, dependencies, build, start, health.
//! Each step is recorded on the release as it finishes; a crash marks the release interrupted and
//! the deployment resumes with a fresh release of the same commit. A failed redeploy leaves the
//! previous release serving.

#[cfg(test)]
mod argv_fuzz;
pub mod guest;
pub mod scripts;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::keys::PrivateKey;

use self::guest::{GuestShell, ShellError};
use super::provision::ProvisionError;
use super::run::{LeaseLost, Unsaved};
use super::source::{Pin, Pinning};
use super::Engine;
use crate::core::deployment::{Deployment, DeploymentId, GuestType};
use crate::core::names::CommitSha;
use crate::core::release::{app_port, env_file, framework_env, health_answer_is_final, health_hint, DeployStep, EnvName, EnvValue, ReleaseId};
use crate::core::status::Status;
use crate::ssh::{Ssh, SshError, Target};
use crate::store::leases::Lease;
use crate::store::logs::Level;
use crate::store::now_millis;
use crate::store::StoreError;
use crate::store::releases::{Release, ReleaseStatus, Trigger};

/// How deploys behave; the defaults suit real guests and the sandbox alike.
#[derive(Debug, Clone)]
pub struct DeploySettings {
    /// How long a new guest may take to answer SSH and finish cloud-init.
    pub boot_deadline: Duration,
    /// Per-command limit for installs, fetches and builds.
    pub step_timeout: Duration,
    /// Releases kept on the guest (the active one always among them).
    pub keep_releases: u32,
    /// The login user on VM guests (containers: root).
    pub deploy_user: String,
}

impl Default for DeploySettings {
    fn default() -> Self {
        Self {
            boot_deadline: Duration::from_secs(300),
            step_timeout: Duration::from_secs(1800),
            keep_releases: 5,
            deploy_user: "deploy".into(),
        }
    }
}

/// What deploys need beyond the engine: SSH and the agent's key.
pub struct Deployer {
    pub ssh: Ssh,
    pub client_key: Arc<PrivateKey>,
    pub settings: DeploySettings,
    http: reqwest::Client,
}

impl Deployer {
    pub fn new(ssh: Ssh, client_key: Arc<PrivateKey>, settings: DeploySettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .expect("a plain HTTP client builds");
        Self { ssh, client_key, settings, http }
    }
}

/// Which code a deploy puts live.
#[derive(Debug, Clone)]
pub enum Wanted {
    /// The newest commit of the deployment's branch.
    BranchHead,
    Commit(CommitSha),
    /// An earlier release, already on the guest (rollback).
    Release(ReleaseId),
}

/// How a new release starts: what `deploy_app.sh stage` records for it.
struct Launch<'a> {
    framework: &'a str,
    port: &'a str,
    bind: &'a str,
    start: Option<&'a crate::core::names::StartCommand>,
}

/// The shortest health check after a slow start (the start may use up most of the deadline).
const MIN_HEALTH_WAIT: Duration = Duration::from_secs(5);

/// `deploy_app.sh stage` for a release: a new one with how it starts (its own start command as one
/// argument, run by the script as a Procfile line: `/bin/sh -c` as the app user), or an earlier one
/// (rollback) from what was recorded when it was first staged.
fn stage_argv(deploy_app: &str, app: &str, release: &str, launch: Option<Launch<'_>>, start_timeout: &str) -> Vec<String> {
    let mut argv: Vec<String> = [deploy_app, "stage", "--app", app, "--release", release].map(String::from).to_vec();
    if let Some(l) = launch {
        argv.extend(["--framework", l.framework, "--port", l.port, "--bind", l.bind].map(String::from));
        if let Some(c) = l.start {
            argv.extend(["--start-command".to_string(), c.as_str().to_string()]);
        }
    }
    argv.extend(["--start-timeout".to_string(), start_timeout.to_string()]);
    argv
}

/// The internal port in the stage step's `candidate slot=S port=P` line.
fn candidate_port_of(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("candidate slot=")?;
    let (_, port) = rest.split_once(" port=")?;
    port.trim().parse().ok().filter(|p| *p > 0)
}

/// `deploy_app.sh build` for a release, with one `--persist PATH` per path whose data outlives releases.
fn build_argv(deploy_app: &str, app: &str, release: &str, framework: &str, persistent: &[crate::core::release::PersistentPath]) -> Vec<String> {
    let mut argv: Vec<String> = [deploy_app, "build", "--app", app, "--release", release, "--framework", framework].map(String::from).to_vec();
    for p in persistent {
        argv.extend(["--persist".to_string(), p.as_str().to_string()]);
    }
    argv
}

/// Why a deploy stopped, each variant saying what can be done about it.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// SSH to the guest failed; `SshError` says whether a retry may help.
    #[error("{0}")]
    Ssh(#[from] SshError),
    /// A step on the guest failed: its output says why (fix the app or its settings, and redeploy).
    #[error("step {} failed: {source}", step.as_str())]
    Step { step: DeployStep, source: ShellError },
    #[error("health check of {url} failed for {secs}s: {last}")]
    Health { url: String, secs: u64, last: String },
    /// The app answered its health check with a client error that waiting will not change.
    #[error("health check of {url}: the app answered HTTP {status} ({body}){}", hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default())]
    Refused { url: String, status: u16, body: String, hint: Option<String> },
    /// The database failed; `StoreError` says whether a retry is safe.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another agent took the work over: stop quietly, it carries on.
    #[error(transparent)]
    LeaseLost(#[from] LeaseLost),
    /// The deployment's status does not allow the change (it changed meanwhile).
    #[error(transparent)]
    Illegal(#[from] crate::core::status::IllegalTransition),
    /// The guest is gone from the cluster: the deployment forgets it, and a redeploy provisions a new one.
    #[error("guest {vmid} no longer exists on the cluster (deleted outside pvedeploy?)")]
    GuestLost { vmid: crate::core::names::VmId },
    /// Proxmox says the guest cannot be waited for (it stopped while booting, or reading it failed): see the guest.
    #[error(transparent)]
    Guest(ProvisionError),
    /// The guest's address was never learned: provision it again.
    #[error("the guest has no known IPv4 address")]
    NoAddress,
    /// The guest's host key was never recorded: it cannot be verified, so the deployment must be created again.
    #[error("the guest's host key was never recorded, so it cannot be verified; refusing to connect (recreate the deployment)")]
    NoHostKey,
    /// A rollback asked for a release this deployment never had.
    #[error("release {0} is not known")]
    UnknownRelease(ReleaseId),
    /// The stage script did not say where the new release answers (a script and agent out of step): reinstall.
    #[error("the start step did not say on which port the new release answers")]
    NoCandidatePort,
    /// The repository's host resolves into a network the outbound policy refuses, or does not resolve at the agent:
    /// the guest is only ever told to fetch from an address the agent checked (fix DNS, or `[repos] allow_private`).
    #[error("{0}")]
    Source(String),
    /// The repository has no such branch: push it, or change the deployment's branch.
    #[error("branch {branch} was not found in {url}")]
    NoBranch { branch: String, url: String },
    /// The environment cannot be opened: load the agent's secrets key, or set the variable again.
    #[error("{0}")]
    Env(String),
    /// The agent is shutting down or the deployment is being destroyed: stop without recording a failure.
    #[error("deploy interrupted: {0}")]
    Interrupted(&'static str),
}

impl From<Unsaved> for DeployError {
    fn from(e: Unsaved) -> Self {
        match e {
            Unsaved::LeaseLost(l) => DeployError::LeaseLost(l),
            Unsaved::Illegal(t) => DeployError::Illegal(t),
            Unsaved::Store(e) => DeployError::Store(e),
        }
    }
}

impl From<ProvisionError> for DeployError {
    fn from(e: ProvisionError) -> Self {
        match e {
            ProvisionError::LeaseLost(l) => DeployError::LeaseLost(l),
            ProvisionError::Store(e) => DeployError::Store(e),
            ProvisionError::GuestLost { vmid } => DeployError::GuestLost { vmid },
            e => DeployError::Guest(e),
        }
    }
}

impl DeployError {
    fn step(&self) -> Option<DeployStep> {
        match self {
            DeployError::Step { step, .. } => Some(*step),
            DeployError::Health { .. } | DeployError::Refused { .. } => Some(DeployStep::Health),
            _ => None,
        }
    }

    /// The failure in words, with the exit code and the last output lines.
    pub fn report(&self) -> String {
        match self {
            DeployError::Step { step, source: ShellError::Failed(f) } => {
                let code = f.exit_code.map(|c| format!("exit code {c}")).or_else(|| f.signal.as_ref().map(|s| format!("signal {s}"))).unwrap_or_default();
                format!("step {} failed ({}, {code}); last output:\n{}", step.as_str(), f.program, f.tail.join("\n"))
            }
            other => other.to_string(),
        }
    }
}

/// The guest side of a deployment, from its record and its provisioning progress.
struct GuestAccess {
    target: Target,
    sudo: bool,
    ip: Ipv4Addr,
    kind: GuestType,
    /// Where the guest is on Proxmox (to tell a guest that is gone or stopped from one still booting).
    guest: Option<(crate::core::names::NodeName, crate::core::names::VmId)>,
}

/// A release on its way to live: its record, how long each finished step took (saved on the release as each
/// step ends, so a failure says where it stopped), and when its start began (the health check's deadline counts
/// from it).
struct Rollout {
    release: Release,
    timings: Vec<(String, u64)>,
    start_began: Instant,
}

impl Rollout {
    fn took(&mut self, step: &str, since: Instant) {
        self.timings.push((step.to_string(), since.elapsed().as_millis() as u64));
    }
}

/// A release record as it begins, at `step`.
fn fresh_release(id: &DeploymentId, release: ReleaseId, commit: CommitSha, trigger: Trigger, step: DeployStep, timings: Vec<(String, u64)>) -> Release {
    Release { deployment: id.clone(), id: release, commit, status: ReleaseStatus::Deploying, step, trigger, timings, error: None, created_at: now_millis(), finished_at: None }
}

/// The commands that build and start `release` on the guest, each with its step and stdin: fetch, dependencies,
/// the environment file then the build, and the start beside the serving release; a rollback only starts it.
fn release_steps(d: &Deployment, access: &GuestAccess, env: &[(EnvName, EnvValue)], wanted: &Wanted, release: &Release, pin: Option<&Pin>) -> Vec<(DeployStep, Vec<String>, Option<Vec<u8>>)> {
    let deploy_app = scripts::on_guest("deploy_app.sh");
    let (name, rel, commit) = (d.spec.name.to_string(), release.id.to_string(), release.commit.to_string());
    let start_secs = d.spec.health_timeout_secs.to_string();
    if let Wanted::Release(_) = wanted {
        return vec![(DeployStep::Start, stage_argv(&deploy_app, &name, &rel, None, &start_secs), None)];
    }
    let (ip, port_s) = (access.ip.to_string(), app_port(d.spec.framework).to_string());
    let fw = d.spec.framework.as_str().to_string();
    let env_path = format!("/srv/{name}/shared/app.env");
    let launch = Launch { framework: &fw, port: &port_s, bind: &ip, start: d.spec.start_command.as_ref() };
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    vec![
        (DeployStep::Fetch, fetch_argv(&deploy_app, &name, d.spec.repo_url.as_str(), &commit, &rel, pin), None),
        (DeployStep::Dependencies, words(&[deploy_app.as_str(), "deps", "--app", &name, "--release", &rel, "--framework", &fw]), None),
        // The environment file goes first, so build steps (migrations) see it.
        (
            DeployStep::Build,
            words(&["install", "-m", "0640", "-o", "root", "-g", &format!("app-{name}"), "/dev/stdin", &env_path]),
            Some(env_file(&framework_env(d.spec.framework, &name, access.ip, env))),
        ),
        (DeployStep::Build, build_argv(&deploy_app, &name, &rel, &fw, &d.spec.persistent_paths), None),
        (DeployStep::Start, stage_argv(&deploy_app, &name, &rel, Some(launch), &start_secs), None),
    ]
}

/// `deploy_app.sh fetch`: the repository URL one argv element, and the address the agent checked for its host
/// (`--resolve host:port:address`, which the script hands to git as `http.curloptResolve`).
fn fetch_argv(deploy_app: &str, name: &str, repo: &str, commit: &str, release: &str, pin: Option<&Pin>) -> Vec<String> {
    let mut argv: Vec<String> = [deploy_app, "fetch", "--app", name, "--repo", repo, "--commit", commit, "--release", release].map(String::from).to_vec();
    if let Some(p) = pin {
        argv.extend(["--resolve".to_string(), p.entry()]);
    }
    argv
}

/// The guest's `git ls-remote` for the branch's head: no prompts, the policy's protocols, and when the agent
/// checked the host's address, pinned to it with no redirects.
fn guest_ls_remote_argv(url: &str, refname: &str, pin: Option<&Pin>) -> Vec<String> {
    let mut argv: Vec<String> = [
        "env", "GIT_TERMINAL_PROMPT=0", "git", "-c", "protocol.allow=never", "-c", "protocol.https.allow=always", "-c", "protocol.http.allow=always",
        "-c", "protocol.ssh.allow=always",
    ]
    .map(String::from)
    .to_vec();
    if let Some(p) = pin {
        argv.extend(["-c".to_string(), "http.followRedirects=false".to_string(), "-c".to_string(), p.git_config()]);
    }
    argv.extend(["ls-remote", "--", url, refname].map(String::from));
    argv
}

impl Engine {
    /// Deploys `wanted` onto the guest of `id` under `lease`, ending `running` (or, when this was
    /// the first deploy, `failed`; a failed redeploy keeps the previous release serving and `running`).
    pub(crate) async fn deploy_release(&self, id: &DeploymentId, lease: &Lease, trigger: Trigger, wanted: Wanted) -> Result<(), ProvisionError> {
        let Some(dep) = self.inner.deployer.get().cloned() else {
            self.log(id, Level::Warn, "deploy", "no SSH deployer is configured; the app is not installed").await;
            return Ok(());
        };
        let d = self.store().get_deployment(id).await?.ok_or(ProvisionError::Vanished)?;
        // A destroy requested since the work began waits for this lease: hand over to it.
        if d.status == Status::Destroying {
            self.log(id, Level::Info, "deploy", "destroy requested; not deploying").await;
            return Ok(());
        }
        let started = Instant::now();
        match self.deploy_steps(&dep, d, lease, trigger, wanted).await {
            Ok(()) => {
                tracing::info!(deployment = %id, elapsed_ms = started.elapsed().as_millis() as u64, "deployed");
                Ok(())
            }
            Err(DeployError::LeaseLost(l)) => Err(ProvisionError::LeaseLost(l)),
            Err(DeployError::Interrupted(why)) => {
                self.log(id, Level::Info, "deploy", &format!("deploy stopped: {why}")).await;
                Ok(())
            }
            Err(e) => {
                self.deploy_failed(id, lease, &e).await;
                Ok(())
            }
        }
    }

    /// `deploy_release` for work with nobody to answer: how it stopped, when not deployed or recorded as failed, is
    /// said in the log (another agent taking over is not a failure).
    pub(crate) async fn deploy_release_or_say(&self, id: &DeploymentId, lease: &Lease, trigger: Trigger, wanted: Wanted) {
        match self.deploy_release(id, lease, trigger, wanted).await {
            Ok(()) => {}
            Err(ProvisionError::LeaseLost(_)) => tracing::warn!(deployment = %id, "another agent took over this deployment"),
            Err(e) => {
                tracing::error!(deployment = %id, error = %e, "the deploy could not run");
                self.log(id, Level::Error, "deploy", &format!("the deploy could not run: {e}")).await;
            }
        }
    }

    /// Deploys `wanted` onto the guest, phase by phase: prepare the guest (boot, install), record the release,
    /// build it beside the serving one (fetch, dependencies, build, start), check its health, switch to it.
    async fn deploy_steps(&self, dep: &Deployer, d: Deployment, lease: &Lease, trigger: Trigger, wanted: Wanted) -> Result<(), DeployError> {
        let id = d.id.clone();
        let access = self.guest_access(dep, &d).await?;
        let env = self.env_plain(&id).await?;
        let mut d = d;
        if d.status != Status::Installing && d.status != Status::Deploying {
            d = self.leased_transition(d, Status::Deploying, &format!("{} started", trigger.as_str()), lease, |_| {}).await?;
        }
        // The branch's head asked of the repository from the agent when it can answer: the release is
        // then known, and recorded, before the guest is reached, so a failure at boot or install is a
        // failed release too (with the step it failed in).
        let mut wanted = wanted;
        if matches!(wanted, Wanted::BranchHead) {
            if let super::source::Source::Found(c) = super::source::check(&d.spec, &self.inner.repos).await {
                wanted = Wanted::Commit(c);
            }
        }
        let early = match &wanted {
            Wanted::Commit(c) => Some(fresh_release(&id, ReleaseId::new(now_millis(), c), c.clone(), trigger, DeployStep::Boot, vec![])),
            _ => None,
        };
        if let Some(r) = &early {
            self.store().save_release(r).await?;
        }
        let mut timings = Vec::new();
        let mut step_at = (DeployStep::Boot, Instant::now());
        let (shell, d) = match self.prepare_guest(dep, &id, d, lease, &access, &env, &mut timings, &mut step_at).await {
            Ok(prepared) => prepared,
            Err(e) => {
                if let Some(release) = early {
                    let (step, since) = step_at;
                    self.release_failed(&mut Rollout { release, timings, start_began: Instant::now() }, step, since, format!("step {} failed", step.as_str())).await;
                }
                return Err(e);
            }
        };
        let mut r = self.record_release(&shell, &d, &wanted, early, trigger, timings).await?;
        let candidate = self.build_release(dep, &shell, &d, &access, &env, &wanted, &mut r).await?;
        self.check_release(dep, &shell, &d, &access, candidate, &mut r).await?;
        self.switch_release(dep, &shell, &d, &mut r).await?;
        self.go_live(dep, shell, d, lease, trigger, r, &access).await
    }

    /// Boot (SSH with the pinned host key, cloud-init finished on VMs) and install (the scripts, the runtime).
    /// `step_at` says which step ran since when, for a failure's record.
    #[allow(clippy::too_many_arguments)]
    async fn prepare_guest<'a>(
        &'a self,
        dep: &Deployer,
        id: &'a DeploymentId,
        d: Deployment,
        lease: &Lease,
        access: &GuestAccess,
        env: &[(EnvName, EnvValue)],
        timings: &mut Vec<(String, u64)>,
        step_at: &mut (DeployStep, Instant),
    ) -> Result<(GuestShell<'a>, Deployment), DeployError> {
        let s = &dep.settings;
        let conn = self.connect_when_up(dep, id, access).await?;
        let shell = GuestShell { conn, sudo: access.sudo, engine: self, id, redact: env.iter().map(|(_, v)| v.expose().to_string()).collect() };
        if access.kind == GuestType::Vm {
            self.log(id, Level::Info, "boot", "waiting for cloud-init to finish").await;
            match shell.root("boot", &["cloud-init", "status", "--wait"], None, s.boot_deadline).await {
                Ok(_) => {}
                // 2: finished with recoverable errors (e.g. a module not applicable in this guest).
                Err(ShellError::Failed(f)) if f.exit_code == Some(2) => self.log(id, Level::Warn, "boot", "cloud-init finished with warnings").await,
                Err(e) => return Err(DeployError::Step { step: DeployStep::Boot, source: e }),
            }
        }
        timings.push(("boot".into(), step_at.1.elapsed().as_millis() as u64));

        // install: the scripts, then the runtime
        *step_at = (DeployStep::Install, Instant::now());
        let installing = |e| DeployError::Step { step: DeployStep::Install, source: e };
        self.log(id, Level::Info, "install", &format!("installing the {} runtime", d.spec.framework.as_str())).await;
        for (file, bytes, mode) in scripts::FILES {
            let path = scripts::on_guest(file);
            let mode = format!("{mode:o}");
            let argv = ["install", "-D", "-m", &mode, "-o", "root", "-g", "root", "/dev/stdin", &path];
            shell.root("install", &argv, Some(bytes.to_vec()), s.step_timeout).await.map_err(installing)?;
        }
        let install = scripts::on_guest("install_framework.sh");
        let (ip, port) = (access.ip.to_string(), app_port(d.spec.framework).to_string());
        let argv = [install.as_str(), "--framework", d.spec.framework.as_str(), "--app", d.spec.name.as_str(), "--port", &port, "--bind", &ip];
        shell.root("install", &argv, None, s.step_timeout).await.map_err(installing)?;
        timings.push(("install".into(), step_at.1.elapsed().as_millis() as u64));
        let mut d = d;
        if d.status == Status::Installing {
            d = self.leased_transition(d, Status::Deploying, "runtime installed", lease, |_| {}).await?;
        }
        Ok((shell, d))
    }

    /// Records the release being deployed: the one recorded before the guest was reached, an earlier one
    /// (rollback), or a new one of the commit (the branch's head asked of the repository from the guest).
    async fn record_release(&self, shell: &GuestShell<'_>, d: &Deployment, wanted: &Wanted, early: Option<Release>, trigger: Trigger, timings: Vec<(String, u64)>) -> Result<Rollout, DeployError> {
        let id = &d.id;
        let (release_id, commit) = match (wanted, &early) {
            (_, Some(r)) => (r.id.clone(), r.commit.clone()),
            (Wanted::Release(r), None) => {
                let prev = self.store().release(id, r).await?.ok_or_else(|| DeployError::UnknownRelease(r.clone()))?;
                (r.clone(), prev.commit)
            }
            (Wanted::Commit(c), None) => (ReleaseId::new(now_millis(), c), c.clone()),
            (Wanted::BranchHead, None) => {
                let c = self.resolve_branch(shell, d).await?;
                (ReleaseId::new(now_millis(), &c), c)
            }
        };
        let mut release = fresh_release(id, release_id, commit, trigger, DeployStep::Fetch, timings.clone());
        if let Some(r) = &early {
            release.created_at = r.created_at;
        }
        self.store().save_release(&release).await?;
        self.log(id, Level::Info, "deploy", &format!("release {}: commit {}", release.id, release.commit)).await;
        Ok(Rollout { release, timings, start_began: Instant::now() })
    }

    /// Fetch, dependencies, build and start (`deploy_app.sh stage`: beside the serving release), or only the
    /// start of an earlier release (rollback). Returns the internal port the new release answers on.
    #[allow(clippy::too_many_arguments)]
    async fn build_release(&self, dep: &Deployer, shell: &GuestShell<'_>, d: &Deployment, access: &GuestAccess, env: &[(EnvName, EnvValue)], wanted: &Wanted, r: &mut Rollout) -> Result<Option<u16>, DeployError> {
        let timeout = dep.settings.step_timeout;
        let (mut current, mut t, mut candidate_port) = (None, Instant::now(), None);
        let pin = match wanted {
            Wanted::Release(_) => None,
            _ => match self.repo_pin(d).await {
                Ok(pin) => pin,
                Err(e) => {
                    self.release_failed(r, DeployStep::Fetch, t, format!("step {} failed: {e}", DeployStep::Fetch.as_str())).await;
                    return Err(e);
                }
            },
        };
        for (step, argv, stdin) in release_steps(d, access, env, wanted, &r.release, pin.as_ref()) {
            if current.is_some_and(|c| c != step) {
                r.took(current.map(DeployStep::as_str).unwrap_or_default(), t);
                self.release_at(r, step).await?;
                t = Instant::now();
            }
            current = Some(step);
            if step == DeployStep::Start {
                r.start_began = Instant::now();
            }
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            match shell.root(step.as_str(), &argv, stdin, timeout).await {
                Ok(out) if step == DeployStep::Start => candidate_port = out.iter().find_map(|l| candidate_port_of(l)),
                Ok(_) => {}
                Err(e) => {
                    // The step it failed in counts too: its time is how long it took to fail.
                    self.release_failed(r, step, t, format!("step {} failed", step.as_str())).await;
                    return Err(DeployError::Step { step, source: e });
                }
            }
        }
        r.took(current.map(DeployStep::as_str).unwrap_or_default(), t);
        Ok(candidate_port)
    }

    /// health: the new release on its own port, while the old one keeps serving; one deadline for the whole
    /// start (the release answering on its own port, then its health check). A release that fails it is stopped.
    async fn check_release(&self, dep: &Deployer, shell: &GuestShell<'_>, d: &Deployment, access: &GuestAccess, candidate: Option<u16>, r: &mut Rollout) -> Result<(), DeployError> {
        self.release_at(r, DeployStep::Health).await?;
        let t = Instant::now();
        let checked = match candidate {
            Some(p) => {
                let start_limit = Duration::from_secs(d.spec.health_timeout_secs.into());
                let left = start_limit.saturating_sub(r.start_began.elapsed()).max(MIN_HEALTH_WAIT);
                self.health(dep, &d.id, &format!("http://{}:{p}", access.ip), &d.spec, left).await
            }
            None => Err(DeployError::NoCandidatePort),
        };
        if let Err(e) = checked {
            self.release_failed(r, DeployStep::Health, t, e.to_string()).await;
            self.discard(shell, &d.id, d.spec.name.as_str(), &scripts::on_guest("deploy_app.sh"), &r.release.id.to_string()).await;
            return Err(e);
        }
        r.took("health", t);
        Ok(())
    }

    /// switch: the front serves the new release; the old one stops once nothing reaches it.
    async fn switch_release(&self, dep: &Deployer, shell: &GuestShell<'_>, d: &Deployment, r: &mut Rollout) -> Result<(), DeployError> {
        self.release_at(r, DeployStep::Switch).await?;
        let t = Instant::now();
        let (deploy_app, name, rel) = (scripts::on_guest("deploy_app.sh"), d.spec.name.as_str(), r.release.id.to_string());
        if let Err(e) = shell.root("switch", &[&deploy_app, "promote", "--app", name, "--release", &rel], None, dep.settings.step_timeout).await {
            self.release_failed(r, DeployStep::Switch, t, "step switch failed".into()).await;
            self.discard(shell, &d.id, name, &deploy_app, &rel).await;
            return Err(DeployError::Step { step: DeployStep::Switch, source: e });
        }
        r.took("switch", t);
        Ok(())
    }

    /// The release is live: recorded active, old releases pruned, the deployment `running` at its URL.
    #[allow(clippy::too_many_arguments)]
    async fn go_live(&self, dep: &Deployer, shell: GuestShell<'_>, d: Deployment, lease: &Lease, trigger: Trigger, r: Rollout, access: &GuestAccess) -> Result<(), DeployError> {
        let Rollout { mut release, timings, .. } = r;
        release.timings = timings.clone();
        release.status = ReleaseStatus::Active;
        release.finished_at = Some(now_millis());
        let (id, name, rel) = (&d.id, d.spec.name.to_string(), release.id.to_string());
        let keep = dep.settings.keep_releases.to_string();
        let deploy_app = scripts::on_guest("deploy_app.sh");
        if let Err(e) = shell.root("prune", &[&deploy_app, "prune", "--app", &name, "--keep", &keep], None, dep.settings.step_timeout).await {
            self.log(id, Level::Warn, "prune", &format!("could not prune old releases: {e}")).await;
        }
        shell.conn.close().await;
        let url = format!("http://{}:{}", access.ip, app_port(d.spec.framework));
        let summary: Vec<String> = timings.iter().map(|(n, ms)| format!("{n} {:.1}s", *ms as f64 / 1000.0)).collect();
        self.log(id, Level::Info, "deploy", &format!("release {rel} is live at {url} ({})", summary.join(", "))).await;
        // The release turns active in the same transaction as the deployment turns running at its commit
        // and URL: whoever reads the one (the GitHub reporter) reads the other.
        let (from, mut live, commit) = (d.status, d, release.commit.clone());
        super::run::moved(&mut live, Status::Running, move |d| {
            d.url = Some(url);
            d.commit = Some(commit);
            d.deployed_at = Some(now_millis());
            d.error_message = None;
        })?;
        let saved = self.store().go_live(&release, &live, from, &format!("{} {rel} live", trigger.as_str()), lease).await.map_err(Unsaved::fenced)?;
        self.publish_status(&saved);
        Ok(())
    }

    /// Moves the release on to `step`, saved with the timings so far.
    async fn release_at(&self, r: &mut Rollout, step: DeployStep) -> Result<(), DeployError> {
        r.release.step = step;
        r.release.timings = r.timings.clone();
        self.store().save_release(&r.release).await?;
        Ok(())
    }

    /// Records the release failed at `step`, which ran since `since`, with `error`.
    async fn release_failed(&self, r: &mut Rollout, step: DeployStep, since: Instant, error: String) {
        r.release.step = step;
        r.took(step.as_str(), since);
        r.release.timings = r.timings.clone();
        self.finish_release(&mut r.release, ReleaseStatus::Failed, Some(error)).await;
    }

    /// The guest's address, login and pinned host key, from the record and the provisioning progress.
    async fn guest_access(&self, dep: &Deployer, d: &Deployment) -> Result<GuestAccess, DeployError> {
        let ip = d.ip_address.ok_or(DeployError::NoAddress)?;
        let progress = self.store().load_progress(&d.id).await?.unwrap_or_default();
        let pin = progress.host_key().cloned().ok_or(DeployError::NoHostKey)?;
        let (user, sudo) = match d.spec.guest_type {
            GuestType::Vm => (dep.settings.deploy_user.clone(), true),
            GuestType::Lxc => ("root".to_string(), false),
        };
        Ok(GuestAccess {
            target: Target { addr: SocketAddr::new(ip.into(), 22), user, host_key: pin, client_key: dep.client_key.clone() },
            sudo,
            ip,
            kind: d.spec.guest_type,
            guest: d.proxmox_node.clone().zip(d.proxmox_id),
        })
    }

    /// Connects once the guest's SSH answers (a new guest takes a moment); a wrong host key fails at once.
    async fn connect_when_up(&self, dep: &Deployer, id: &DeploymentId, g: &GuestAccess) -> Result<crate::ssh::Connection, DeployError> {
        let started = Instant::now();
        let mut said = false;
        let mut last_liveness = Instant::now();
        loop {
            // A guest that is gone or stopped never answers: say so now, not at the boot deadline.
            if let (Some(prov), Some((node, vmid))) = (self.inner.provisioner.as_deref(), &g.guest) {
                if last_liveness.elapsed() >= super::provision::LIVENESS_EVERY {
                    last_liveness = Instant::now();
                    prov.still_running(g.kind, node, *vmid).await?;
                }
            }
            match dep.ssh.connect(&g.target).await {
                Ok(c) => {
                    self.log(id, Level::Info, "boot", &format!("connected to {} as {} (host key verified)", g.target.addr, g.target.user)).await;
                    return Ok(c);
                }
                Err(e @ SshError::HostKeyMismatch { .. }) => return Err(e.into()),
                // Refused logins are retried too: cloud-init may still be creating the deploy user.
                Err(_) if self.inner.stop.is_cancelled() => return Err(DeployError::Interrupted("the agent is stopping; it resumes at the next start")),
                Err(_) if matches!(self.store().get_deployment(id).await, Ok(Some(d)) if d.status == Status::Destroying) => {
                    return Err(DeployError::Interrupted("the deployment is being destroyed"))
                }
                Err(e) if started.elapsed() < dep.settings.boot_deadline => {
                    if !said {
                        self.log(id, Level::Info, "boot", &format!("waiting for SSH on {} ({e})", g.target.addr)).await;
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The address the guest's git must connect to for the repository: resolved and checked here, at the agent,
    /// so the guest never resolves the host itself (DNS rebinding between the check and the fetch).
    async fn repo_pin(&self, d: &Deployment) -> Result<Option<Pin>, DeployError> {
        match super::source::pin(&d.spec.repo_url, &self.inner.repos).await {
            Pinning::Pinned(p) => Ok(Some(p)),
            Pinning::NotNeeded => Ok(None),
            Pinning::Refused(e) => Err(DeployError::Source(e.message)),
            Pinning::Unresolved(why) => Err(DeployError::Source(format!("{why}; the guest fetches only from an address the agent resolved and checked"))),
        }
    }

    /// The newest commit of the deployment's branch, asked of the repository from the guest.
    async fn resolve_branch(&self, shell: &GuestShell<'_>, d: &Deployment) -> Result<CommitSha, DeployError> {
        let refname = format!("refs/heads/{}", d.spec.branch);
        let url = d.spec.repo_url.to_string();
        let pin = self.repo_pin(d).await?;
        let argv = guest_ls_remote_argv(&url, &refname, pin.as_ref());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = shell
            .run("fetch", &argv, None, Duration::from_secs(120))
            .await
            .map_err(|e| DeployError::Step { step: DeployStep::Fetch, source: e })?;
        out.iter()
            .filter_map(|l| l.split_once('\t'))
            .find(|(_, r)| *r == refname)
            .and_then(|(sha, _)| CommitSha::parse(sha).ok())
            .ok_or_else(|| DeployError::NoBranch { branch: d.spec.branch.to_string(), url: url.clone() })
    }

    /// Waits for the app to answer `path` with a success or a redirect. An answer that waiting cannot
    /// change (a 4xx from the app, three times in a row) ends the wait at once with the status, the
    /// first lines of the body and what to do about it.
    pub(crate) async fn health(&self, dep: &Deployer, id: &DeploymentId, url: &str, spec: &crate::core::deployment::Spec, deadline: Duration) -> Result<(), DeployError> {
        let (path, framework, expected) = (spec.health_path.as_str(), spec.framework, spec.health_status);
        let target = format!("{url}{path}");
        let wants = expected.map(|s| format!(" (expecting HTTP {s})")).unwrap_or_default();
        self.log(id, Level::Info, "health", &format!("checking {target}{wants}")).await;
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        let mut same_final = (0u16, 0u32);
        while started.elapsed() < deadline {
            match dep.http.get(&target).send().await {
                Ok(r) if crate::core::release::health_passes(r.status().as_u16(), expected) => {
                    self.log(id, Level::Info, "health", &format!("{target} answered {}", r.status().as_u16())).await;
                    return Ok(());
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    last = format!("HTTP {status}");
                    same_final = if health_answer_is_final(status) && same_final.0 == status { (status, same_final.1 + 1) } else { (status, u32::from(health_answer_is_final(status))) };
                    if same_final.1 >= 3 {
                        let body = r.text().await.unwrap_or_default();
                        let head: String = body.lines().filter(|l| !l.trim().is_empty()).take(5).collect::<Vec<_>>().join(" | ").chars().take(400).collect();
                        return Err(DeployError::Refused { url: target, status, body: head, hint: health_hint(framework, status, path) });
                    }
                }
                Err(e) => {
                    last = e.to_string();
                    same_final = (0, 0);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(DeployError::Health { url: target, secs: deadline.as_secs(), last })
    }

    /// After a failed check or switch: stops the release where it was staged. What serves is never touched
    /// (the script refuses to discard the live release); a failure to stop is logged, not hidden.
    async fn discard(&self, shell: &GuestShell<'_>, id: &DeploymentId, name: &str, deploy_app: &str, rel: &str) {
        match shell.root("health", &[deploy_app, "discard", "--app", name, "--release", rel], None, Duration::from_secs(120)).await {
            Ok(_) => self.log(id, Level::Info, "health", &format!("release {rel} stopped; it never served")).await,
            Err(e) => self.log(id, Level::Error, "health", &format!("could not stop release {rel} where it was started: {e}")).await,
        }
    }

    async fn finish_release(&self, r: &mut Release, status: ReleaseStatus, error: Option<String>) {
        r.status = status;
        r.error = error;
        r.finished_at = Some(now_millis());
        if let Err(e) = self.store().save_release(r).await {
            tracing::error!(deployment = %r.deployment, error = %e, "could not record the release's outcome");
        }
    }

    /// Records a failed deploy: `failed` when nothing serves, else back to `running` with the error noted.
    async fn deploy_failed(&self, id: &DeploymentId, lease: &Lease, e: &DeployError) {
        let report = e.report();
        self.log(id, Level::Error, e.step().map(DeployStep::as_str).unwrap_or("deploy"), &format!("deploy failed: {report}")).await;
        let d = match self.store().get_deployment(id).await {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(err) => {
                tracing::error!(deployment = %id, error = %err, "could not read the deployment to record the deploy failure");
                return self.log(id, Level::Error, "deploy", &format!("could not record the deploy failure: reading the deployment failed: {err}")).await;
            }
        };
        if let DeployError::GuestLost { vmid } = e {
            return self.guest_lost(d, *vmid, lease).await;
        }
        let serving = matches!(self.store().releases(id, 50).await, Ok(rs) if rs.iter().any(|r| r.status == ReleaseStatus::Active));
        let step = e.step().map(DeployStep::as_str).unwrap_or("deploy");
        let (to, msg) = if serving {
            (Status::Running, format!("deploy failed at step {step}; the previous release keeps serving: {report}"))
        } else {
            (Status::Failed, format!("deploy failed at step {step}: {report}"))
        };
        let m2 = msg.clone();
        if let Err(err) = self.record_end_of_work(d, to, &msg, lease, move |d| d.error_message = Some(m2)).await {
            self.unrecorded(id, "the deploy failure", &err).await;
        }
    }

    /// The deployment's guest is gone: nothing serves any more. The deployment forgets it (record,
    /// progress, VMID and address claims) and ends `failed` saying so; a redeploy provisions it again.
    async fn guest_lost(&self, d: Deployment, vmid: crate::core::names::VmId, lease: &Lease) {
        let id = d.id.clone();
        let forgotten: Result<(), StoreError> = async {
            self.store().save_progress(lease, &crate::core::provision::Progress::default(), None).await?;
            self.store().release_vmid(vmid, &id).await?;
            self.store().release_addresses_of(&id).await
        }
        .await;
        if let Err(e) = forgotten {
            tracing::error!(deployment = %id, error = %e, "could not forget the lost guest");
            let line = format!("guest {vmid} is gone, but the deployment could not forget it ({e}); its claims stay held until a destroy");
            return self.log(&id, Level::Error, "deploy", &line).await;
        }
        let msg = format!("its guest {vmid} no longer exists on the cluster (deleted outside pvedeploy?); redeploy to provision a new one");
        let m2 = msg.clone();
        let result = self
            .record_end_of_work(d, Status::Failed, &msg, lease, move |d| {
                d.error_message = Some(m2);
                d.proxmox_id = None;
                d.proxmox_node = None;
                d.ip_address = None;
                d.url = None;
            })
            .await;
        if let Err(e) = result {
            self.unrecorded(&id, "the lost guest", &e).await;
        }
    }

    /// A failure that could not be recorded on the deployment, said in its log (and the agent's); quiet when
    /// another agent took the work over, which records its own outcome.
    async fn unrecorded(&self, id: &DeploymentId, what: &str, e: &Unsaved) {
        tracing::error!(deployment = %id, error = %e, "could not record {what}");
        if !matches!(e, Unsaved::LeaseLost(_)) {
            self.log(id, Level::Error, "deploy", &format!("could not record {what}: {e}")).await;
        }
    }

    /// The deployment's environment, opened; a value that cannot be opened stops the deploy.
    async fn env_plain(&self, id: &DeploymentId) -> Result<Vec<(EnvName, EnvValue)>, DeployError> {
        let sealed = self.store().env_sealed(id).await?;
        if sealed.is_empty() {
            return Ok(vec![]);
        }
        let secrets = self.inner.secrets.get().ok_or_else(|| DeployError::Env("no secrets key is loaded to open the environment".into()))?;
        let mut out = Vec::with_capacity(sealed.len());
        for (n, s) in sealed {
            let name = EnvName::parse(&n).map_err(|e| DeployError::Env(e.message))?;
            let value = secrets.open(&env_context(id, &n), &s).map_err(|e| DeployError::Env(format!("{n}: {e}")))?;
            out.push((name.clone(), EnvValue::parse(&name, value).map_err(|e| DeployError::Env(e.message))?));
        }
        Ok(out)
    }
}

/// What a sealed env value is bound to.
pub fn env_context(id: &DeploymentId, name: &str) -> String {
    format!("env/{id}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_command_reaches_the_script_as_one_argument() {
        let launch = |start| Launch { framework: "flask", port: "8000", bind: "10.0.0.5", start };
        let plain = stage_argv("/opt/d.sh", "web", "r1", Some(launch(None)), "30");
        assert_eq!(plain[plain.len() - 4..], ["--bind", "10.0.0.5", "--start-timeout", "30"]);
        let cmd = crate::core::names::StartCommand::parse("gunicorn -b \"0.0.0.0:$PORT\" app:app; $(id) `id`").unwrap();
        let argv = stage_argv("/opt/d.sh", "web", "r1", Some(launch(Some(&cmd))), "30");
        assert_eq!(argv.len(), plain.len() + 2);
        assert_eq!(argv[argv.len() - 4..argv.len() - 2], ["--start-command", cmd.as_str()]);
        // A rollback stages an earlier release as it was recorded.
        assert_eq!(stage_argv("/opt/d.sh", "web", "r0", None, "9"), ["/opt/d.sh", "stage", "--app", "web", "--release", "r0", "--start-timeout", "9"]);
    }

    /// `deploy_app.sh fetch` takes the agent's pin as its contract says, and refuses anything else there with exit 2
    /// naming `--resolve`, before it touches anything.
    #[test]
    fn the_fetch_script_takes_the_pin_and_refuses_a_malformed_one() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/deploy_app.sh");
        let run = |resolve: &str| {
            let pin = Pin::new("git.example".into(), 443, "140.82.112.3".parse().unwrap());
            let mut argv = fetch_argv(script, "web", "https://git.example/o/r.git", "0123456789abcdef0123456789abcdef01234567", "20260101T000000Z-0123456", Some(&pin));
            *argv.last_mut().unwrap() = resolve.to_string();
            std::process::Command::new("bash").args(&argv).output().unwrap()
        };
        for bad in ["git.example:443:140.82.112.3;id", "git.example:443:$(id)", "git.example:443", "git.example:443:evil.example", "git example:443:1.2.3.4"] {
            let out = run(bad);
            assert_eq!(out.status.code(), Some(2), "{bad}");
            assert!(String::from_utf8_lossy(&out.stderr).contains("--resolve"), "{bad}: {}", String::from_utf8_lossy(&out.stderr));
        }
        for good in ["git.example:443:140.82.112.3", "git.example:443:[2001:db8::1]"] {
            let out = run(good);
            assert_ne!(out.status.code(), Some(2), "{good}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }

    #[test]
    fn the_candidate_port_is_read_from_the_stage_line() {
        assert_eq!(candidate_port_of("candidate slot=b port=41234"), Some(41234));
        assert_eq!(candidate_port_of("candidate slot=a port=0"), None);
        assert_eq!(candidate_port_of("slot b on 10.0.0.5:41234"), None);
    }
}
