//! Faults injected on demand (latency, failing or hanging tasks, lock timeouts, a silent guest
//! agent, offline nodes), from Rust through [`Faults`] or over HTTP at `/_sim/faults`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which guests' agents never answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AgentSilence {
    #[default]
    None,
    All,
    Vmids(BTreeSet<u32>),
}

/// A latency rule: requests whose path (below `/api2/json`) matches `path` wait `ms` first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyRule {
    pub path: String,
    pub ms: u64,
    #[serde(skip)]
    regex: Option<Arc<fancy_regex::Regex>>,
}

/// The whole fault set (also the JSON shape of `/_sim/faults`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultSet {
    pub latency: Vec<LatencyRule>,
    /// task type (`qmclone`, `qmstart`, `vzcreate`, …) → error message the task ends with
    pub fail_task: BTreeMap<String, String>,
    /// task types whose tasks never finish
    pub hang_task: BTreeSet<String>,
    /// storages whose lock always times out (`*` for all)
    pub lock_timeout: BTreeSet<String>,
    pub agent_silent: AgentSilence,
    pub offline_nodes: BTreeSet<String>,
}

/// Errors in fault definitions.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("invalid latency path regex '{0}': {1}")]
    Regex(String, String),
}

/// A cloneable handle on one simulator's faults.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<FaultSet>>,
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, FaultSet> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delay every API call whose path (e.g. `/nodes/pve1/qemu/100/clone`) matches `path_regex`.
    pub fn add_latency(&self, path_regex: &str, delay: Duration) -> Result<(), FaultError> {
        let rule = LatencyRule::new(path_regex, delay.as_millis() as u64)?;
        self.lock().latency.push(rule);
        Ok(())
    }

    /// Tasks of this type (e.g. `qmclone`) fail with `message` instead of doing their work.
    pub fn fail_task(&self, task_type: &str, message: &str) {
        self.lock().fail_task.insert(task_type.to_string(), message.to_string());
    }

    /// Tasks of this type start but never finish.
    pub fn hang_task(&self, task_type: &str) {
        self.lock().hang_task.insert(task_type.to_string());
    }

    /// Storage locks on `storage` (or on every storage with `None`) time out at once.
    pub fn force_lock_timeout(&self, storage: Option<&str>) {
        self.lock().lock_timeout.insert(storage.unwrap_or("*").to_string());
    }

    /// The guest agent of `vmid` (or of every VM with `None`) never answers.
    pub fn agent_never_answers(&self, vmid: Option<u32>) {
        let mut f = self.lock();
        match (vmid, &mut f.agent_silent) {
            (None, s) => *s = AgentSilence::All,
            (Some(_), AgentSilence::All) => {}
            (Some(v), AgentSilence::Vmids(set)) => {
                set.insert(v);
            }
            (Some(v), s) => *s = AgentSilence::Vmids(BTreeSet::from([v])),
        }
    }

    /// Takes a node offline (`true`) or brings it back.
    pub fn set_node_offline(&self, node: &str, offline: bool) {
        let mut f = self.lock();
        if offline {
            f.offline_nodes.insert(node.to_string());
        } else {
            f.offline_nodes.remove(node);
        }
    }

    /// Removes every fault.
    pub fn clear(&self) {
        *self.lock() = FaultSet::default();
    }

    /// A copy of the current faults.
    pub fn snapshot(&self) -> FaultSet {
        self.lock().clone()
    }

    /// Adds the faults in `set` to the current ones (the `/_sim/faults` POST body).
    pub fn merge(&self, set: FaultSet) -> Result<(), FaultError> {
        let latency = set
            .latency
            .into_iter()
            .map(|r| LatencyRule::new(&r.path, r.ms))
            .collect::<Result<Vec<_>, _>>()?;
        let mut f = self.lock();
        f.latency.extend(latency);
        f.fail_task.extend(set.fail_task);
        f.hang_task.extend(set.hang_task);
        f.lock_timeout.extend(set.lock_timeout);
        f.offline_nodes.extend(set.offline_nodes);
        match set.agent_silent {
            AgentSilence::None => {}
            AgentSilence::All => f.agent_silent = AgentSilence::All,
            AgentSilence::Vmids(v) => match &mut f.agent_silent {
                AgentSilence::All => {}
                AgentSilence::Vmids(existing) => existing.extend(v),
                slot => *slot = AgentSilence::Vmids(v),
            },
        }
        Ok(())
    }

    pub(crate) fn latency_for(&self, path: &str) -> Duration {
        let f = self.lock();
        let ms: u64 = f
            .latency
            .iter()
            .filter(|r| r.regex.as_ref().is_some_and(|re| re.is_match(path).unwrap_or(false)))
            .map(|r| r.ms)
            .sum();
        Duration::from_millis(ms)
    }

    pub(crate) fn task_failure(&self, task_type: &str) -> Option<String> {
        self.lock().fail_task.get(task_type).cloned()
    }

    pub(crate) fn task_hangs(&self, task_type: &str) -> bool {
        self.lock().hang_task.contains(task_type)
    }

    pub(crate) fn lock_times_out(&self, storage: &str) -> bool {
        let f = self.lock();
        f.lock_timeout.contains("*") || f.lock_timeout.contains(storage)
    }

    pub(crate) fn agent_silent(&self, vmid: u32) -> bool {
        match &self.lock().agent_silent {
            AgentSilence::None => false,
            AgentSilence::All => true,
            AgentSilence::Vmids(v) => v.contains(&vmid),
        }
    }

    pub(crate) fn node_offline(&self, node: &str) -> bool {
        self.lock().offline_nodes.contains(node)
    }
}

impl LatencyRule {
    fn new(path: &str, ms: u64) -> Result<Self, FaultError> {
        let regex = fancy_regex::Regex::new(path).map_err(|e| FaultError::Regex(path.to_string(), e.to_string()))?;
        Ok(Self { path: path.to_string(), ms, regex: Some(Arc::new(regex)) })
    }
}
