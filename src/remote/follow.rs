//! Following a deployment live after a request (deploy, redeploy, rollback, stop, start, destroy) or for
//! `logs -f`: its log over the agent's SSE log stream, its status over `/events`, until the work has settled.
//! Every wait is bounded (the stream's idle limit, `--timeout`), reconnects back off and are capped, and Ctrl-C
//! only stops the watching.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::sse::StreamError;
use super::wire::{ChangeJson, DeploymentJson, LogLineJson};
use super::{Remote, RemoteError};

/// How following is shown and bounded (shared by deploy, redeploy, rollback, stop, start and destroy).
#[derive(clap::Args, Debug, Clone)]
pub struct FollowArgs {
    /// Print events as JSON lines (log lines, status changes, finished steps, the result) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Show each step's output as it arrives.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Do not follow: print what the agent accepted and exit 0.
    #[arg(long)]
    pub detach: bool,
    /// Stop watching after this many seconds (the deployment goes on); exit 2 then.
    #[arg(long, value_name = "SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
}

/// What was asked for, and so how the work should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    Deploy,
    Redeploy,
    Rollback,
    Start,
    Stop,
    Destroy,
}

impl Goal {
    /// The status the deployment ends in when the work went well.
    pub fn expected(self) -> &'static str {
        match self {
            Goal::Deploy | Goal::Redeploy | Goal::Rollback | Goal::Start => "running",
            Goal::Stop => "stopped",
            Goal::Destroy => "destroyed",
        }
    }

    pub fn verb(self) -> &'static str {
        match self {
            Goal::Deploy => "deploy",
            Goal::Redeploy => "redeploy",
            Goal::Rollback => "rollback",
            Goal::Start => "start",
            Goal::Stop => "stop",
            Goal::Destroy => "destroy",
        }
    }

    /// Whether a new release is the point (so an error message on the deployment means this one failed).
    pub fn releases(self) -> bool {
        matches!(self, Goal::Deploy | Goal::Redeploy | Goal::Rollback)
    }
}

/// The deployment as it was just before the request; `None` for a new one.
#[derive(Debug, Clone)]
pub struct Before {
    pub updated_at: String,
    pub error_message: Option<String>,
}

impl From<&DeploymentJson> for Before {
    fn from(d: &DeploymentJson) -> Self {
        Before { updated_at: d.updated_at.clone(), error_message: d.error_message.clone() }
    }
}

/// How following ended.
#[derive(Debug)]
pub enum End {
    /// The work is over; the deployment as it is now.
    Settled(DeploymentJson),
    /// Ctrl-C: watching stopped, the work goes on.
    Interrupted(Option<DeploymentJson>),
    /// `--timeout` passed: watching stopped, the work goes on.
    TimedOut(Option<DeploymentJson>),
}

/// Receives what following sees, as it arrives.
pub trait Sink {
    fn status(&mut self, status: &str);
    fn line(&mut self, line: &LogLineJson);
    /// Called every `tick_every` (a spinner's frame).
    fn tick(&mut self) {}
    fn tick_every(&self) -> Duration {
        Duration::from_millis(250)
    }
}

/// One deployment to follow from log cursor `after`.
pub struct Watch<'a> {
    pub remote: &'a Remote,
    pub id: String,
    /// `None`: done as soon as the deployment is not busy (a new deployment, `logs -f`).
    pub before: Option<Before>,
    pub after: i64,
    pub timeout: Duration,
}

/// How often the log and status are read while no stream is open (the work has not started, or a stop/start).
const POLL: Duration = Duration::from_secs(1);
/// Reconnect attempts in a row before giving up.
const MAX_ATTEMPTS: u32 = 8;

/// Delays between attempts: 0.5 s, doubling, at most 10 s; `MAX_ATTEMPTS` failures in a row end it.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// One more failure: how long to wait, or `None` when the attempts are spent.
    pub fn fail(&mut self) -> Option<Duration> {
        self.failures += 1;
        (self.failures <= MAX_ATTEMPTS).then(|| Duration::from_millis(500u64.saturating_mul(1 << (self.failures - 1).min(5))).min(Duration::from_secs(10)))
    }

    pub fn attempts(&self) -> u32 {
        self.failures
    }
}

/// Stops a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The next `log` event of the live log, or never when no stream is open.
async fn next_line(stream: &mut Option<super::sse::Stream>) -> Result<Option<LogLineJson>, StreamError> {
    let Some(s) = stream.as_mut() else { return std::future::pending().await };
    loop {
        match s.next().await? {
            None => return Ok(None),
            Some(e) if e.event == "log" => {
                if let Ok(l) = serde_json::from_str::<LogLineJson>(&e.data) {
                    return Ok(Some(l));
                }
            }
            Some(_) => {}
        }
    }
}

/// Reads `/events` into `tx` (status changes of `id`, and resyncs), reconnecting with backoff; it gives up quietly
/// after `MAX_ATTEMPTS` failures in a row (polling carries on without it).
async fn pump_events(remote: Remote, id: String, tx: mpsc::Sender<ChangeJson>) {
    let mut backoff = Backoff::default();
    loop {
        if let Ok(mut s) = remote.event_stream().await {
            while let Ok(Some(e)) = s.next().await {
                backoff.reset();
                let Ok(c) = serde_json::from_str::<ChangeJson>(&e.data) else { continue };
                if (c.kind == "resync" || c.deployment.as_deref() == Some(id.as_str())) && tx.send(c).await.is_err() {
                    return;
                }
            }
        }
        let Some(delay) = backoff.fail() else { return };
        tokio::time::sleep(delay).await;
        if tx.is_closed() {
            return;
        }
    }
}

/// Follows until the work has settled, Ctrl-C, or the timeout; everything seen goes to `sink`.
pub async fn watch(w: Watch<'_>, sink: &mut dyn Sink) -> Result<End, RemoteError> {
    let deadline = Instant::now() + w.timeout;
    let (tx, mut changes) = mpsc::channel::<ChangeJson>(64);
    let _pump = AbortOnDrop(tokio::spawn(pump_events(w.remote.clone(), w.id.clone(), tx)));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut tick = tokio::time::interval(sink.tick_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    let mut after = w.after;
    let mut logs: Option<super::sse::Stream> = None;
    let mut backoff = Backoff::default();
    let mut last: Option<DeploymentJson> = None;
    let mut seen_busy = false;
    let mut error_seen = false;
    // When to read the deployment next (at once; after a failure, after the backoff).
    let mut check_at = Some(Instant::now());
    let mut poll_at = Instant::now() + POLL;

    loop {
        if check_at.is_some_and(|t| Instant::now() >= t) {
            check_at = None;
            match w.remote.deployment(&w.id).await {
                Ok(d) => {
                    backoff.reset();
                    sink.status(&d.status);
                    let busy = d.is_busy();
                    seen_busy |= busy;
                    let settled = !busy
                        && match &w.before {
                            None => true,
                            Some(b) => seen_busy || error_seen || d.updated_at != b.updated_at,
                        };
                    if settled {
                        drop(logs.take());
                        drain(w.remote, &w.id, &mut after, sink).await?;
                        return Ok(End::Settled(d));
                    }
                    if busy && logs.is_none() {
                        match w.remote.log_stream(&w.id, after).await {
                            Ok(s) => logs = Some(s),
                            Err(e) if e.is_transient() => {
                                check_at = Some(Instant::now() + retry(&mut backoff, w.remote, &e.to_string())?);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    last = Some(d);
                }
                Err(e) if e.is_transient() => {
                    check_at = Some(Instant::now() + retry(&mut backoff, w.remote, &e.to_string())?);
                }
                Err(e) => return Err(e),
            }
        }
        tokio::select! {
            _ = &mut ctrl_c => return Ok(End::Interrupted(last)),
            _ = tokio::time::sleep_until(deadline) => return Ok(End::TimedOut(last)),
            Some(c) = changes.recv() => {
                if let Some(s) = &c.status {
                    sink.status(s);
                }
                check_at.get_or_insert_with(Instant::now);
            }
            r = next_line(&mut logs) => match r {
                Ok(Some(line)) => {
                    backoff.reset();
                    after = after.max(line.seq);
                    error_seen |= line.level == "error";
                    sink.line(&line);
                }
                Ok(None) => {
                    // The agent ends the live log when the deployment settles (or when it never started).
                    logs = None;
                    check_at.get_or_insert_with(Instant::now);
                }
                Err(e) => {
                    logs = None;
                    check_at = Some(Instant::now() + retry(&mut backoff, w.remote, &format!("the live log stopped: {e}"))?);
                }
            },
            _ = tick.tick() => {
                sink.tick();
                if logs.is_none() && Instant::now() >= poll_at {
                    poll_at = Instant::now() + POLL;
                    match w.remote.log_page(&w.id, after, 1000).await {
                        Ok(page) => {
                            for line in &page.lines {
                                after = after.max(line.seq);
                                error_seen |= line.level == "error";
                                sink.line(line);
                            }
                        }
                        Err(e) if e.is_transient() => {}
                        Err(e) => return Err(e),
                    }
                    check_at.get_or_insert_with(Instant::now);
                }
            }
        }
    }
}

fn retry(backoff: &mut Backoff, remote: &Remote, cause: &str) -> Result<Duration, RemoteError> {
    backoff.fail().ok_or_else(|| RemoteError::Lost { url: remote.base().to_string(), attempts: backoff.attempts(), cause: cause.to_string() })
}

/// Reads what is left of the log after `after` (at most 100 pages).
async fn drain(remote: &Remote, id: &str, after: &mut i64, sink: &mut dyn Sink) -> Result<(), RemoteError> {
    for _ in 0..100 {
        let page = remote.log_page(id, *after, 1000).await?;
        for line in &page.lines {
            *after = (*after).max(line.seq);
            sink.line(line);
        }
        if page.lines.len() < 1000 {
            break;
        }
    }
    Ok(())
}

/// The log's end cursor now (so that following shows only what comes next): the newest line's.
pub async fn log_end(remote: &Remote, id: &str) -> Result<i64, RemoteError> {
    Ok(remote.log_tail(id, 1).await?.next_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_runs_out() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = std::iter::from_fn(|| b.fail()).map(|d| d.as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
        b.reset();
        assert_eq!(b.fail(), Some(Duration::from_millis(500)));
    }

    #[test]
    fn goals_know_their_end() {
        assert_eq!(Goal::Stop.expected(), "stopped");
        assert_eq!(Goal::Destroy.expected(), "destroyed");
        assert!(Goal::Rollback.releases() && !Goal::Start.releases());
    }
}
