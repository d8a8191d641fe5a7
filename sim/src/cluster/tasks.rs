//! Worker tasks: UPIDs in PVE's format, status and logs, and the `/nodes/{node}/tasks` endpoints.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};

use super::state::epoch;
use crate::auth::Identity;
use crate::http::envelope::ApiError;
use crate::http::params::Params;

/// How a worker ended: `Ok(warnings)` or the error text (PVE's `TASK ERROR: …`).
pub type TaskResult = Result<u32, String>;

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct TaskProgress {
    log: Vec<String>,
    exitstatus: Option<String>,
    endtime: Option<u64>,
}

/// One task.
#[derive(Debug)]
pub struct Task {
    pub upid: String,
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: u64,
    pub task_type: String,
    pub id: String,
    pub userid: String,
    pub tokenid: Option<String>,
    progress: Mutex<TaskProgress>,
}

impl Task {
    fn progress(&self) -> MutexGuard<'_, TaskProgress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a line to the task log.
    pub fn log(&self, line: impl Into<String>) {
        self.progress().log.push(line.into());
    }

    pub fn is_running(&self) -> bool {
        self.progress().exitstatus.is_none()
    }

    /// `OK`, `WARNINGS: n` or the error text, once finished.
    pub fn exitstatus(&self) -> Option<String> {
        self.progress().exitstatus.clone()
    }

    fn finish(&self, result: TaskResult) {
        let mut p = self.progress();
        let (status, line) = match result {
            Ok(0) => ("OK".to_string(), "TASK OK".to_string()),
            Ok(n) => (format!("WARNINGS: {n}"), format!("TASK WARNINGS: {n}")),
            Err(e) => {
                let e = e.trim_end().replace('\n', " ");
                (e.clone(), format!("TASK ERROR: {e}"))
            }
        };
        p.log.push(line);
        p.exitstatus = Some(status);
        p.endtime = Some(epoch());
    }

    /// The UPID's fields; `user` is `user@realm` (status) or the full auth id (list).
    fn upid_fields(&self, user: String) -> serde_json::Map<String, Value> {
        let v = json!({
            "upid": self.upid,
            "node": self.node,
            "pid": self.pid,
            "pstart": self.pstart,
            "starttime": self.starttime,
            "type": self.task_type,
            "id": self.id,
            "user": user,
        });
        match v {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    fn status_json(&self) -> Value {
        let mut obj = self.upid_fields(self.userid.clone());
        let p = self.progress();
        obj.insert("status".into(), json!(if p.exitstatus.is_some() { "stopped" } else { "running" }));
        if let Some(t) = &self.tokenid {
            obj.insert("tokenid".into(), json!(t));
        }
        if let Some(e) = &p.exitstatus {
            obj.insert("exitstatus".into(), json!(e));
        }
        Value::Object(obj)
    }

    fn list_json(&self) -> Value {
        let user = match &self.tokenid {
            Some(t) => format!("{}!{t}", self.userid),
            None => self.userid.clone(),
        };
        let mut obj = self.upid_fields(user);
        let p = self.progress();
        if let Some(e) = &p.exitstatus {
            obj.insert("status".into(), json!(e));
        }
        if let Some(end) = p.endtime {
            obj.insert("endtime".into(), json!(end));
        }
        Value::Object(obj)
    }
}

/// All tasks of the cluster.
#[derive(Debug, Default)]
pub struct Tasks {
    list: Mutex<Vec<Arc<Task>>>,
}

impl Tasks {
    fn list(&self) -> MutexGuard<'_, Vec<Arc<Task>>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many tasks are still running.
    pub fn running(&self) -> usize {
        self.list().iter().filter(|t| t.is_running()).count()
    }

    /// Registers a new running task and returns it (its UPID is
    /// `UPID:node:PID:PSTART:STARTTIME:type:id:user@realm[!token]:`).
    pub fn create(&self, node: &str, task_type: &str, id: &str, ident: &Identity) -> Arc<Task> {
        let mut list = self.list();
        let pid = 100_000 + list.len() as u32 * 7 + rand::random::<u8>() as u32;
        let pstart = 1_000_000 + list.len() as u64 * 13;
        let starttime = epoch();
        let upid = format!(
            "UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{task_type}:{id}:{}:",
            ident.authid()
        );
        let task = Arc::new(Task::decoded(upid, TaskProgress::default()).expect("a UPID formatted here decodes"));
        list.push(task.clone());
        task
    }

    pub fn get(&self, upid: &str) -> Option<Arc<Task>> {
        self.list().iter().find(|t| t.upid == upid).cloned()
    }
}

/// Runs `work` as the task's worker on the tokio runtime; the task ends with its result, then `ended` runs.
pub fn run_worker<F, E>(task: Arc<Task>, work: F, ended: E)
where
    F: Future<Output = TaskResult> + Send + 'static,
    E: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let result = work.await;
        task.finish(result);
        ended.await;
    });
}

/// A task as a persistent simulator keeps it across restarts: its UPID (which says everything else, as PVE's
/// `upid_decode` in pve-common `src/PVE/Tools.pm` reads it) and its progress.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SavedTask {
    pub upid: String,
    #[serde(flatten)]
    progress: TaskProgress,
}

/// What PVE reports for a task whose worker is gone without writing its last log line: pve-common
/// `src/PVE/Tools.pm` `upid_read_status` answers `unexpected status` when the log's last line is not `TASK OK`,
/// `TASK WARNINGS: n` or `TASK ERROR: …`, and pve-manager's task list shows a task whose process no longer runs
/// as stopped with that status.
pub const INTERRUPTED: &str = "unexpected status";

/// How many of the newest tasks a persistent simulator keeps.
pub const KEPT_TASKS: usize = 1000;

impl Tasks {
    /// The newest [`KEPT_TASKS`] tasks, as saved.
    pub fn saved(&self) -> Vec<SavedTask> {
        let list = self.list();
        list.iter()
            .skip(list.len().saturating_sub(KEPT_TASKS))
            .map(|t| SavedTask { upid: t.upid.clone(), progress: t.progress().clone() })
            .collect()
    }

    /// Puts saved tasks back; one that was still running when the simulator stopped ended without a status
    /// ([`INTERRUPTED`]), its work undone. A UPID that does not decode is dropped with an error.
    pub fn restore(&self, saved: Vec<SavedTask>) {
        let mut list = self.list();
        for SavedTask { upid, mut progress } in saved {
            if progress.exitstatus.is_none() {
                tracing::warn!(upid = %upid, "a task was running when the simulator stopped; it ends with \"unexpected status\"");
                progress.exitstatus = Some(INTERRUPTED.to_string());
                progress.endtime = Some(epoch());
            }
            match Task::decoded(upid.clone(), progress) {
                Some(task) => list.push(Arc::new(task)),
                None => tracing::error!(upid = %upid, "a saved task's UPID does not decode; it is dropped"),
            }
        }
    }
}

impl Task {
    /// The task a UPID names (`UPID:node:PID:PSTART:STARTTIME:type:id:user@realm[!token]:`, read as pve-common
    /// `src/PVE/Tools.pm` `upid_decode` does; the id may hold colons, as a volume id does), with `progress`.
    fn decoded(upid: String, progress: TaskProgress) -> Option<Task> {
        let body = upid.strip_prefix("UPID:")?.strip_suffix(':')?;
        let mut front = body.splitn(6, ':');
        let (node, pid, pstart, starttime, task_type, rest) =
            (front.next()?, front.next()?, front.next()?, front.next()?, front.next()?, front.next()?);
        let (id, authid) = rest.rsplit_once(':')?;
        let hex = |s: &str| u64::from_str_radix(s, 16).ok();
        let (userid, tokenid) = match authid.split_once('!') {
            Some((u, t)) => (u.to_string(), Some(t.to_string())),
            None => (authid.to_string(), None),
        };
        Some(Task {
            node: node.to_string(),
            pid: u32::try_from(hex(pid)?).ok()?,
            pstart: hex(pstart)?,
            starttime: hex(starttime)?,
            task_type: task_type.to_string(),
            id: id.to_string(),
            userid,
            tokenid,
            progress: Mutex::new(progress),
            upid,
        })
    }
}

fn parse_upid_node(upid: &str) -> Option<&str> {
    let mut parts = upid.split(':');
    (parts.next()? == "UPID").then_some(())?;
    parts.next()
}

fn find_task(tasks: &Tasks, node: &str, upid: &str) -> Result<Arc<Task>, ApiError> {
    if parse_upid_node(upid).is_none() {
        return Err(ApiError::server(format!("unable to parse worker upid '{upid}'")));
    }
    match tasks.get(upid) {
        Some(t) if t.node == node => Ok(t),
        _ => Err(ApiError::server("no such task")),
    }
}

/// `GET /nodes/{node}/tasks/{upid}/status`
pub fn status(tasks: &Tasks, node: &str, p: &Params) -> Result<Value, ApiError> {
    Ok(find_task(tasks, node, &p.need("upid")?)?.status_json())
}

/// `GET /nodes/{node}/tasks/{upid}/log` → (`[{n, t}]`, total)
pub fn log(tasks: &Tasks, node: &str, p: &Params) -> Result<(Value, usize), ApiError> {
    let task = find_task(tasks, node, &p.need("upid")?)?;
    let start = p.u64("start").unwrap_or(0) as usize;
    let limit = p.u64("limit").unwrap_or(50) as usize;
    let prog = task.progress();
    let total = prog.log.len();
    let lines: Vec<Value> = prog
        .log
        .iter()
        .enumerate()
        .skip(start)
        .take(if limit == 0 { usize::MAX } else { limit })
        .map(|(i, t)| json!({"n": i + 1, "t": t}))
        .collect();
    Ok((Value::Array(lines), total))
}

/// `DELETE /nodes/{node}/tasks/{upid}` (stop a task)
pub fn stop(tasks: &Tasks, node: &str, p: &Params) -> Result<Value, ApiError> {
    let task = find_task(tasks, node, &p.need("upid")?)?;
    if task.is_running() {
        task.finish(Err("received interrupt".to_string()));
    }
    Ok(Value::Null)
}

/// `GET /nodes/{node}/tasks` (newest first) → (list, total)
pub fn list(tasks: &Tasks, node: &str, p: &Params) -> (Value, usize) {
    let vmid = p.str("vmid");
    let typefilter = p.str("typefilter");
    let errors_only = p.bool("errors").unwrap_or(false);
    let source = p.str("source").unwrap_or_else(|| "archive".to_string());
    let userfilter = p.str("userfilter");
    let start = p.u64("start").unwrap_or(0) as usize;
    let limit = p.u64("limit").unwrap_or(50) as usize;
    let all = tasks.list();
    let selected: Vec<Value> = all
        .iter()
        .rev()
        .filter(|t| t.node == node)
        .filter(|t| vmid.as_ref().is_none_or(|v| &t.id == v))
        .filter(|t| typefilter.as_ref().is_none_or(|f| &t.task_type == f))
        .filter(|t| userfilter.as_ref().is_none_or(|u| t.userid.contains(u.as_str())))
        .filter(|t| match source.as_str() {
            "active" => t.is_running(),
            "archive" => !t.is_running(),
            _ => true,
        })
        .filter(|t| !errors_only || t.exitstatus().is_some_and(|s| s != "OK"))
        .map(|t| t.list_json())
        .collect();
    let total = selected.len();
    (Value::Array(selected.into_iter().skip(start).take(limit).collect()), total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_upid_decodes_as_pve_reads_it() {
        let upid = "UPID:pve1:000186A5:000F4240:6752C2A0:imgdel:local:backup/vzdump-lxc-100.tar.zst:root@pam!pvedeploy:";
        let t = Task::decoded(upid.into(), TaskProgress::default()).expect("decodes");
        assert_eq!(
            (t.node.as_str(), t.pid, t.pstart, t.task_type.as_str(), t.id.as_str(), t.userid.as_str(), t.tokenid.as_deref()),
            ("pve1", 0x186A5, 0xF4240, "imgdel", "local:backup/vzdump-lxc-100.tar.zst", "root@pam", Some("pvedeploy"))
        );
        assert!(Task::decoded("UPID:pve1:xyz:".into(), TaskProgress::default()).is_none());
    }
}
