//! Deploying the app onto its guest over SSH, one release at a time per deployment: boot (SSH with
//! the pinned host key, cloud-init finished), install, fetch, dependencies, build, start, health.
//! Each step is recorded on the release as it finishes; a crash marks the release interrupted and
//! the deployment resumes with a fresh release of the same commit. A failed redeploy leaves the
//! previous release serving.

pub mod guest;
pub mod scripts;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::keys::PrivateKey;

use self::guest::{GuestShell, ShellError};
use super::provision::ProvisionError;
use super::Engine;
use crate::core::deployment::{Deployment, DeploymentId, GuestType};
use crate::core::names::CommitSha;
use crate::core::release::{app_port, env_file, framework_env, health_answer_is_final, health_hint, DeployStep, EnvName, EnvValue, ReleaseId};
use crate::core::status::Status;
use crate::ssh::{HostKeyPin, Ssh, SshError, Target};
use crate::store::leases::Lease;
use crate::store::logs::Level;
use crate::store::now_millis;
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

/// Why a deploy stopped.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Ssh(#[from] SshError),
    #[error("step {} failed: {source}", step.as_str())]
    Step { step: DeployStep, source: ShellError },
    #[error("health check of {url} failed for {secs}s: {last}")]
    Health { url: String, secs: u64, last: String },
    /// The app answered its health check with a client error that waiting will not change.
    #[error("health check of {url}: the app answered HTTP {status} ({body}){}", hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default())]
    Refused { url: String, status: u16, body: String, hint: Option<String> },
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error("{0}")]
    Failed(String),
    /// The agent is shutting down or the deployment is being destroyed: stop without recording a failure.
    #[error("deploy interrupted: {0}")]
    Interrupted(&'static str),
}

impl From<crate::store::StoreError> for DeployError {
    fn from(e: crate::store::StoreError) -> Self {
        DeployError::Provision(ProvisionError::from(e))
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

impl Engine {
    /// Deploys `wanted` onto the guest of `id` under `lease`, ending `running` (or, when this was
    /// the first deploy, `failed`; a failed redeploy keeps the previous release serving and `running`).
    pub(crate) async fn deploy_release(&self, id: &DeploymentId, lease: &Lease, trigger: Trigger, wanted: Wanted) -> Result<(), ProvisionError> {
        let Some(dep) = self.inner.deployer.get().cloned() else {
            self.log(id, Level::Warn, "deploy", "no SSH deployer is configured; the app is not installed").await;
            return Ok(());
        };
        let d = self.store().get_deployment(id).await?.ok_or_else(|| ProvisionError::Failed("the deployment vanished".into()))?;
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
            Err(DeployError::Provision(ProvisionError::LeaseLost)) => Err(ProvisionError::LeaseLost),
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

    async fn deploy_steps(&self, dep: &Deployer, d: Deployment, lease: &Lease, trigger: Trigger, wanted: Wanted) -> Result<(), DeployError> {
        let id = d.id.clone();
        let s = &dep.settings;
        let access = self.guest_access(dep, &d).await?;
        let env = self.env_plain(&id).await?;
        let mut d = d;
        if d.status != Status::Installing && d.status != Status::Deploying {
            d = self.leased_transition(d, Status::Deploying, &format!("{} started", trigger.as_str()), lease, |_| {}).await?;
        }
        let port = app_port(d.spec.framework);
        let name = d.spec.name.to_string();
        let mut timings: Vec<(String, u64)> = Vec::new();
        // The branch's head asked of the repository from the agent when it can answer: the release is
        // then known, and recorded, before the guest is reached, so a failure at boot or install is a
        // failed release too (with the step it failed in).
        let mut wanted = wanted;
        if matches!(wanted, Wanted::BranchHead) {
            if let super::source::Source::Found(c) = super::source::check(&d.spec, &self.inner.repos).await {
                wanted = Wanted::Commit(c);
            }
        }
        let mut early = match &wanted {
            Wanted::Commit(c) => Some(Release {
                deployment: id.clone(),
                id: ReleaseId::new(now_millis(), c),
                commit: c.as_str().to_string(),
                status: ReleaseStatus::Deploying,
                step: DeployStep::Boot,
                trigger,
                timings: vec![],
                error: None,
                created_at: now_millis(),
                finished_at: None,
            }),
            _ => None,
        };
        if let Some(r) = &early {
            self.store().save_release(r).await?;
        }

        let mut step_at = (DeployStep::Boot, Instant::now());
        let prepared: Result<(GuestShell<'_>, Deployment), DeployError> = async {
            // boot
            let conn = self.connect_when_up(dep, &id, &access).await?;
            let shell = GuestShell { conn, sudo: access.sudo, engine: self, id: &id, redact: env.iter().map(|(_, v)| v.expose().to_string()).collect() };
            if access.kind == GuestType::Vm {
                self.log(&id, Level::Info, "boot", "waiting for cloud-init to finish").await;
                match shell.root("boot", &["cloud-init", "status", "--wait"], None, s.boot_deadline).await {
                    Ok(_) => {}
                    // 2: finished with recoverable errors (e.g. a module not applicable in this guest).
                    Err(ShellError::Failed(f)) if f.exit_code == Some(2) => self.log(&id, Level::Warn, "boot", "cloud-init finished with warnings").await,
                    Err(e) => return Err(DeployError::Step { step: DeployStep::Boot, source: e }),
                }
            }
            timings.push(("boot".into(), step_at.1.elapsed().as_millis() as u64));

            // install: the scripts, then the runtime
            step_at = (DeployStep::Install, Instant::now());
            self.log(&id, Level::Info, "install", &format!("installing the {} runtime", d.spec.framework.as_str())).await;
            for (file, bytes, mode) in scripts::FILES {
                let path = scripts::on_guest(file);
                let mode = format!("{mode:o}");
                shell
                    .root("install", &["install", "-D", "-m", &mode, "-o", "root", "-g", "root", "/dev/stdin", &path], Some(bytes.to_vec()), s.step_timeout)
                    .await
                    .map_err(|e| DeployError::Step { step: DeployStep::Install, source: e })?;
            }
            let install = scripts::on_guest("install_framework.sh");
            let (ip, port_s) = (access.ip.to_string(), port.to_string());
            shell
                .root("install", &[&install, "--framework", d.spec.framework.as_str(), "--app", &name, "--port", &port_s, "--bind", &ip], None, s.step_timeout)
                .await
                .map_err(|e| DeployError::Step { step: DeployStep::Install, source: e })?;
            timings.push(("install".into(), step_at.1.elapsed().as_millis() as u64));
            let mut d = d;
            if d.status == Status::Installing {
                d = self.leased_transition(d, Status::Deploying, "runtime installed", lease, |_| {}).await?;
            }
            Ok((shell, d))
        }
        .await;
        let (shell, d) = match prepared {
            Ok(p) => p,
            Err(e) => {
                if let Some(r) = early.as_mut() {
                    r.step = step_at.0;
                    timings.push((step_at.0.as_str().to_string(), step_at.1.elapsed().as_millis() as u64));
                    r.timings = timings;
                    self.finish_release(r, ReleaseStatus::Failed, Some(format!("step {} failed", step_at.0.as_str()))).await;
                }
                return Err(e);
            }
        };
        let ip = access.ip.to_string();
        let port_s = port.to_string();

        let deploy_app = scripts::on_guest("deploy_app.sh");
        let (release_id, commit) = match (&wanted, &early) {
            (_, Some(r)) => (r.id.clone(), r.commit.clone()),
            (Wanted::Release(r), None) => {
                let prev = self.store().release(&id, r).await?.ok_or_else(|| DeployError::Failed(format!("release {r} is not known")))?;
                (r.clone(), prev.commit)
            }
            (Wanted::Commit(c), None) => (ReleaseId::new(now_millis(), c), c.as_str().to_string()),
            (Wanted::BranchHead, None) => {
                let c = self.resolve_branch(&shell, &d).await?;
                (ReleaseId::new(now_millis(), &c), c.as_str().to_string())
            }
        };
        let mut release = Release {
            deployment: id.clone(),
            id: release_id.clone(),
            commit: commit.clone(),
            status: ReleaseStatus::Deploying,
            step: DeployStep::Fetch,
            trigger,
            timings: timings.clone(),
            error: None,
            created_at: early.as_ref().map(|r| r.created_at).unwrap_or_else(now_millis),
            finished_at: None,
        };
        let rel = release_id.to_string();
        self.store().save_release(&release).await?;
        self.log(&id, Level::Info, "deploy", &format!("release {rel}: commit {commit}")).await;

        // One deadline for the whole start: the release answering on its own port, then its health check.
        let start_limit = Duration::from_secs(d.spec.health_timeout_secs.into());
        let start_secs = d.spec.health_timeout_secs.to_string();
        let steps: Vec<(DeployStep, Vec<String>, Option<Vec<u8>>)> = match &wanted {
            Wanted::Release(_) => vec![(DeployStep::Start, stage_argv(&deploy_app, &name, &rel, None, &start_secs), None)],
            _ => {
                let fw = d.spec.framework.as_str().to_string();
                let env_path = format!("/srv/{name}/shared/app.env");
                let launch = Launch { framework: &fw, port: &port_s, bind: &ip, start: d.spec.start_command.as_ref() };
                vec![
                    (DeployStep::Fetch, vec![deploy_app.clone(), "fetch".into(), "--app".into(), name.clone(), "--repo".into(), d.spec.repo_url.to_string(), "--commit".into(), commit.clone(), "--release".into(), rel.clone()], None),
                    (DeployStep::Dependencies, vec![deploy_app.clone(), "deps".into(), "--app".into(), name.clone(), "--release".into(), rel.clone(), "--framework".into(), fw.clone()], None),
                    // The environment file goes first, so build steps (migrations) see it.
                    (DeployStep::Build, vec!["install".into(), "-m".into(), "0640".into(), "-o".into(), "root".into(), "-g".into(), format!("app-{name}"), "/dev/stdin".into(), env_path], Some(env_file(&framework_env(d.spec.framework, &name, access.ip, &env)))),
                    (DeployStep::Build, build_argv(&deploy_app, &name, &rel, &fw, &d.spec.persistent_paths), None),
                    (DeployStep::Start, stage_argv(&deploy_app, &name, &rel, Some(launch), &start_secs), None),
                ]
            }
        };
        let mut current = None;
        let mut t = Instant::now();
        let mut candidate_port = None;
        let mut start_began = Instant::now();
        for (step, argv, stdin) in steps {
            if current.is_some_and(|c| c != step) {
                timings.push((current.map(DeployStep::as_str).unwrap_or_default().to_string(), t.elapsed().as_millis() as u64));
                release.timings = timings.clone();
                release.step = step;
                self.store().save_release(&release).await?;
                t = Instant::now();
            }
            current = Some(step);
            if step == DeployStep::Start {
                start_began = Instant::now();
            }
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            match shell.root(step.as_str(), &argv, stdin, s.step_timeout).await {
                Ok(out) if step == DeployStep::Start => candidate_port = out.iter().find_map(|l| candidate_port_of(l)),
                Ok(_) => {}
                Err(e) => {
                    release.step = step;
                    // The step it failed in counts too: its time is how long it took to fail.
                    timings.push((step.as_str().to_string(), t.elapsed().as_millis() as u64));
                    release.timings = timings;
                    self.finish_release(&mut release, ReleaseStatus::Failed, Some(format!("step {} failed", step.as_str()))).await;
                    return Err(DeployError::Step { step, source: e });
                }
            }
        }
        timings.push((current.map(DeployStep::as_str).unwrap_or_default().to_string(), t.elapsed().as_millis() as u64));
        let url = format!("http://{ip}:{port}");

        // health: the new release on its own port, while the old one keeps serving
        release.step = DeployStep::Health;
        release.timings = timings.clone();
        self.store().save_release(&release).await?;
        let t = Instant::now();
        let checked = match candidate_port {
            Some(p) => {
                let left = start_limit.saturating_sub(start_began.elapsed()).max(MIN_HEALTH_WAIT);
                self.health(dep, &id, &format!("http://{ip}:{p}"), &d.spec, left).await
            }
            None => Err(DeployError::Failed("the start step did not say on which port the new release answers".into())),
        };
        if let Err(e) = checked {
            timings.push(("health".into(), t.elapsed().as_millis() as u64));
            release.timings = timings;
            self.finish_release(&mut release, ReleaseStatus::Failed, Some(e.to_string())).await;
            self.discard(&shell, &id, &name, &deploy_app, &rel).await;
            return Err(e);
        }
        timings.push(("health".into(), t.elapsed().as_millis() as u64));

        // switch: the front serves the new release; the old one stops once nothing reaches it
        release.step = DeployStep::Switch;
        release.timings = timings.clone();
        self.store().save_release(&release).await?;
        let t = Instant::now();
        if let Err(e) = shell.root("switch", &[&deploy_app, "promote", "--app", &name, "--release", &rel], None, s.step_timeout).await {
            timings.push(("switch".into(), t.elapsed().as_millis() as u64));
            release.timings = timings;
            self.finish_release(&mut release, ReleaseStatus::Failed, Some("step switch failed".into())).await;
            self.discard(&shell, &id, &name, &deploy_app, &rel).await;
            return Err(DeployError::Step { step: DeployStep::Switch, source: e });
        }
        timings.push(("switch".into(), t.elapsed().as_millis() as u64));
        release.timings = timings.clone();
        release.status = ReleaseStatus::Active;
        release.finished_at = Some(now_millis());
        self.store().activate_release(&release).await?;

        let keep = s.keep_releases.to_string();
        if let Err(e) = shell.root("prune", &[&deploy_app, "prune", "--app", &name, "--keep", &keep], None, s.step_timeout).await {
            self.log(&id, Level::Warn, "prune", &format!("could not prune old releases: {e}")).await;
        }
        shell.conn.close().await;
        let summary: Vec<String> = timings.iter().map(|(n, ms)| format!("{n} {:.1}s", *ms as f64 / 1000.0)).collect();
        self.log(&id, Level::Info, "deploy", &format!("release {rel} is live at {url} ({})", summary.join(", "))).await;
        let at = now_millis();
        let url2 = url.clone();
        self.leased_transition(d, Status::Running, &format!("{} {rel} live", trigger.as_str()), lease, move |d| {
            d.url = Some(url2);
            d.commit = Some(commit);
            d.deployed_at = Some(at);
            d.error_message = None;
        })
        .await?;
        Ok(())
    }

    /// The guest's address, login and pinned host key, from the record and the provisioning progress.
    async fn guest_access(&self, dep: &Deployer, d: &Deployment) -> Result<GuestAccess, DeployError> {
        let ip: Ipv4Addr = d
            .ip_address
            .as_deref()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| DeployError::Failed("the guest has no known IPv4 address".into()))?;
        let progress = self.store().load_progress(&d.id).await?.unwrap_or_default();
        let pin = match progress.host_key.as_deref() {
            Some(k) => HostKeyPin::parse(k).map_err(|e| DeployError::Failed(format!("the recorded host key of the guest is unusable: {e}")))?,
            None => return Err(DeployError::Failed("the guest's host key was never recorded, so it cannot be verified; refusing to connect (recreate the deployment)".into())),
        };
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

    /// The newest commit of the deployment's branch, asked of the repository from the guest.
    async fn resolve_branch(&self, shell: &GuestShell<'_>, d: &Deployment) -> Result<CommitSha, DeployError> {
        let refname = format!("refs/heads/{}", d.spec.branch);
        let url = d.spec.repo_url.to_string();
        let argv = [
            "env", "GIT_TERMINAL_PROMPT=0", "git", "-c", "protocol.allow=never", "-c", "protocol.https.allow=always", "-c", "protocol.http.allow=always",
            "-c", "protocol.ssh.allow=always", "ls-remote", "--", &url, &refname,
        ];
        let out = shell
            .run("fetch", &argv, None, Duration::from_secs(120))
            .await
            .map_err(|e| DeployError::Step { step: DeployStep::Fetch, source: e })?;
        out.iter()
            .filter_map(|l| l.split_once('\t'))
            .find(|(_, r)| *r == refname)
            .and_then(|(sha, _)| CommitSha::parse(sha).ok())
            .ok_or_else(|| DeployError::Failed(format!("branch {} was not found in {url}", d.spec.branch)))
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
        let Ok(Some(d)) = self.store().get_deployment(id).await else { return };
        if let DeployError::Provision(ProvisionError::GuestLost { vmid }) = e {
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
            tracing::error!(deployment = %id, error = %err, "could not record the deploy failure");
        }
    }

    /// The deployment's guest is gone: nothing serves any more. The deployment forgets it (record,
    /// progress, VMID and address claims) and ends `failed` saying so; a redeploy provisions it again.
    async fn guest_lost(&self, d: Deployment, vmid: crate::core::names::VmId, lease: &Lease) {
        let id = d.id.clone();
        let forgotten: Result<(), crate::store::StoreError> = async {
            self.store().save_progress(lease, &crate::core::provision::Progress::default(), None).await?;
            self.store().release_vmid(vmid, &id).await?;
            self.store().release_addresses_of(&id).await
        }
        .await;
        if let Err(e) = forgotten {
            tracing::error!(deployment = %id, error = %e, "could not forget the lost guest");
            return;
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
            tracing::error!(deployment = %id, error = %e, "could not record the lost guest");
        }
    }

    /// The deployment's environment, opened; a value that cannot be opened stops the deploy.
    async fn env_plain(&self, id: &DeploymentId) -> Result<Vec<(EnvName, EnvValue)>, DeployError> {
        let sealed = self.store().env_sealed(id).await?;
        if sealed.is_empty() {
            return Ok(vec![]);
        }
        let secrets = self.inner.secrets.get().ok_or_else(|| DeployError::Failed("no secrets key is loaded to open the environment".into()))?;
        let mut out = Vec::with_capacity(sealed.len());
        for (n, s) in sealed {
            let name = EnvName::parse(&n).map_err(|e| DeployError::Failed(e.message))?;
            let value = secrets.open(&env_context(id, &n), &s).map_err(|e| DeployError::Failed(format!("{n}: {e}")))?;
            out.push((name.clone(), EnvValue::parse(&name, value).map_err(|e| DeployError::Failed(e.message))?));
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

    #[test]
    fn the_candidate_port_is_read_from_the_stage_line() {
        assert_eq!(candidate_port_of("candidate slot=b port=41234"), Some(41234));
        assert_eq!(candidate_port_of("candidate slot=a port=0"), None);
        assert_eq!(candidate_port_of("slot b on 10.0.0.5:41234"), None);
    }
}
