//! PVE tasks: status, log, stop, and `wait_task`, which polls a UPID to its outcome (`OK`, `WARNINGS: n`, or a failure with the log's tail).

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::client::{decode, seg, PveClient};
use super::error::{is_lock_timeout, PveError};
use super::form::Form;
use super::lenient;
use super::upid::Upid;

/// How many log lines a `TaskFailed` carries.
const LOG_TAIL: u64 = 20;

/// `GET /nodes/{node}/tasks/{upid}/status`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    pub running: bool,
    /// Once stopped: `OK`, `WARNINGS: n`, or the error.
    pub exitstatus: Option<String>,
}

#[derive(Deserialize)]
struct WireTaskStatus {
    status: String,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    exitstatus: Option<String>,
}

/// A task that ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    Ok,
    /// Done, with this many warnings in the log.
    Warnings(u32),
}

impl TaskOutcome {
    /// `OK` → `Ok`, `WARNINGS: n` → `Warnings(n)`; anything else is a failure (`None`).
    pub fn from_exitstatus(exitstatus: &str) -> Option<TaskOutcome> {
        let s = exitstatus.trim();
        if s == "OK" {
            return Some(TaskOutcome::Ok);
        }
        s.strip_prefix("WARNINGS:").and_then(|n| n.trim().parse().ok()).map(TaskOutcome::Warnings)
    }
}

#[derive(Deserialize)]
struct LogLine {
    #[serde(default, deserialize_with = "lenient::text")]
    t: String,
}

fn task_path(upid: &Upid) -> String {
    format!("/nodes/{}/tasks/{}", seg(upid.node().as_str()), seg(upid.as_str()))
}

impl PveClient {
    /// `GET /nodes/{node}/tasks/{upid}/status` (the node comes from the UPID).
    pub async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, PveError> {
        let w: WireTaskStatus = self.get(&format!("{}/status", task_path(upid)), Form::new(), "task status").await?;
        Ok(TaskStatus { running: w.status == "running", exitstatus: w.exitstatus })
    }

    /// The last `limit` lines of the task's log.
    pub async fn task_log(&self, upid: &Upid, limit: u64) -> Result<Vec<String>, PveError> {
        let path = format!("{}/log", task_path(upid));
        let first = self.get_reply(&path, Form::new().set("start", 0).set("limit", limit)).await?;
        let reply = match first.total {
            Some(total) if total > limit => self.get_reply(&path, Form::new().set("start", total - limit).set("limit", limit)).await?,
            _ => first,
        };
        let lines: Vec<LogLine> = decode("task log", reply.data)?;
        Ok(lines.into_iter().map(|l| l.t).collect())
    }

    /// The newest task of `task_type` (`vzcreate`, `qmclone`, …) about guest `vmid` on `node`, running
    /// or ended (`GET /nodes/{node}/tasks?vmid=…&typefilter=…&source=all`; PVE lists newest first). For
    /// finding the task of a call whose answer was lost.
    pub async fn latest_task(&self, node: &crate::core::names::NodeName, vmid: crate::core::names::VmId, task_type: &str) -> Result<Option<Upid>, PveError> {
        #[derive(Deserialize)]
        struct Listed {
            upid: String,
        }
        let query = Form::new().set("vmid", vmid.get()).set("typefilter", task_type).set("source", "all").set("limit", 1);
        let listed: Vec<Listed> = self.get(&format!("/nodes/{}/tasks", seg(node.as_str())), query, "task list").await?;
        listed.into_iter().next().map(|l| Upid::parse(&l.upid)).transpose()
    }

    /// `DELETE /nodes/{node}/tasks/{upid}`: asks PVE to stop a running task.
    pub async fn task_stop(&self, upid: &Upid) -> Result<(), PveError> {
        self.delete(&task_path(upid), Form::new()).await
    }

    /// Polls the task every `poll` until it stops or `deadline` passes. `OK`/`WARNINGS: n` are
    /// success; anything else is `TaskFailed` with the exit status, the log's last lines and
    /// whether it was a lock timeout. Transient errors while polling are ridden out until the deadline.
    pub async fn wait_task(&self, upid: &Upid, poll: Duration, deadline: Duration) -> Result<TaskOutcome, PveError> {
        let started = Instant::now();
        let kind = upid.task_type();
        let mut gap = super::poll::PollDelay::around(poll, self.wait_times().expected(kind));
        let mut seen_running = false;
        loop {
            match self.task_status(upid).await {
                Ok(TaskStatus { running: false, exitstatus }) => {
                    let outcome = self.outcome(upid, exitstatus.unwrap_or_default()).await;
                    // Only a task seen under way says how long its kind takes (one found done says nothing).
                    if seen_running && outcome.is_ok() {
                        self.wait_times().observe(kind, started.elapsed());
                    }
                    return outcome;
                }
                Ok(_) => seen_running = true,
                Err(e) if e.is_retryable() && started.elapsed() < deadline => {
                    tracing::debug!(%upid, error = %e, "task status not readable, polling on");
                }
                Err(e) => return Err(e),
            }
            let waited = started.elapsed();
            if waited >= deadline {
                return Err(PveError::TaskDeadline { upid: upid.clone(), waited });
            }
            tokio::time::sleep(gap.next_delay_at(waited).min(deadline - waited)).await;
        }
    }

    async fn outcome(&self, upid: &Upid, exitstatus: String) -> Result<TaskOutcome, PveError> {
        if let Some(ok) = TaskOutcome::from_exitstatus(&exitstatus) {
            return Ok(ok);
        }
        let log_tail = self.task_log(upid, LOG_TAIL).await.unwrap_or_default();
        let lock_timeout = is_lock_timeout(&exitstatus) || log_tail.iter().any(|l| is_lock_timeout(l));
        Err(PveError::TaskFailed { exitstatus, log_tail, lock_timeout })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses() {
        assert_eq!(TaskOutcome::from_exitstatus("OK"), Some(TaskOutcome::Ok));
        assert_eq!(TaskOutcome::from_exitstatus("WARNINGS: 3"), Some(TaskOutcome::Warnings(3)));
        assert_eq!(TaskOutcome::from_exitstatus("WARNINGS:1"), Some(TaskOutcome::Warnings(1)));
        assert_eq!(TaskOutcome::from_exitstatus("unexpected status"), None);
        assert_eq!(TaskOutcome::from_exitstatus("clone failed: x"), None);
        assert_eq!(TaskOutcome::from_exitstatus(""), None);
    }
}
