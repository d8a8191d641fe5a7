//! Faults injected on demand (latency, failing or hanging tasks, lock timeouts, a silent guest
//! agent, offline nodes, dropped connections, a cluster without quorum), from Rust through
//! [`Faults`] or over HTTP at `/_sim/faults`.

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

/// When a `drop_connection` rule closes the connection.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DropWhen {
    /// The call is not executed at all.
    Before,
    /// The call is executed (e.g. the clone task is started), then the answer is thrown away.
    After,
}

/// A rule for matching requests: `path` is a regex on the path below `/api2/json` (as for latency),
/// `method` (any if absent) is compared case-insensitively; `times` counts down with each matching
/// request and the rule disappears at 0 (default 1). `action` is what happens to the request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRule<A> {
    pub path: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(flatten)]
    pub action: A,
    #[serde(default = "one")]
    pub times: u32,
    #[serde(skip)]
    regex: Option<Arc<fancy_regex::Regex>>,
}

/// Close the TCP connection without any HTTP response (`{"when": "before" | "after"}`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct DropAction {
    pub when: DropWhen,
}

/// Answer with this HTTP status and PVE-style message instead of running the call
/// (`{"status": 503, "message": "…"}`): a proxy or daemon failing in front of the handler.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub message: String,
}

/// A rule closing the connection of matching requests.
pub type DropRule = CallRule<DropAction>;
/// A rule answering matching requests with an error status.
pub type FailRule = CallRule<Answer>;

fn one() -> u32 {
    1
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
    /// connections closed without an answer (first matching rule counts down)
    pub drop_connection: Vec<DropRule>,
    /// calls answered with an error status without running (first matching rule counts down)
    pub fail_call: Vec<FailRule>,
    /// every write (POST/PUT/DELETE) below `/api2/json` except `/access/ticket` fails like a node
    /// without quorum; reads keep working
    pub no_quorum: bool,
    /// guest-agent commands (not the ping) that time out, per VMID (`0`: any VM), counting down
    pub agent_command_timeouts: BTreeMap<u32, u32>,
}

/// Errors in fault definitions.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("invalid latency path regex '{0}': {1}")]
    Regex(String, String),
    #[error("invalid drop_connection or fail_call path regex '{0}': {1}")]
    DropRegex(String, String),
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

    /// The next `times` guest-agent commands of `vmid` (or of any VM with `None`) time out after the agent
    /// answered its ping, as QEMU does for a guest busy booting (`VM N qga command '…' failed - got timeout`).
    pub fn agent_command_times_out(&self, vmid: Option<u32>, times: u32) {
        self.lock().agent_command_timeouts.insert(vmid.unwrap_or(0), times);
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

    /// Closes the connection of the next `times` requests whose path (below `/api2/json`) matches
    /// `path_regex` and whose method is `method` (any with `None`) without an HTTP response —
    /// before the call runs ([`DropWhen::Before`]) or after it ran ([`DropWhen::After`]).
    /// `times == 0` adds nothing.
    pub fn drop_connection(&self, path_regex: &str, method: Option<&str>, when: DropWhen, times: u32) -> Result<(), FaultError> {
        let rule = DropRule::new(path_regex, method.map(str::to_string), DropAction { when }, times)?;
        if rule.times > 0 {
            self.lock().drop_connection.push(rule);
        }
        Ok(())
    }

    /// The cluster loses (`true`) or regains quorum: while lost, every write answers 500
    /// `cluster not ready - no quorum?` (see `http.rs`).
    /// The next `times` calls of `method` (any if `None`) on a path matching `path_regex` are answered
    /// with `status` and `message` and not run (a 502/503 from pveproxy, a 500 from a daemon).
    pub fn fail_call(&self, path_regex: &str, method: Option<&str>, status: u16, message: &str, times: u32) -> Result<(), FaultError> {
        let rule = FailRule::new(path_regex, method.map(str::to_string), Answer { status, message: message.to_string() }, times)?;
        if rule.times > 0 {
            self.lock().fail_call.push(rule);
        }
        Ok(())
    }

    pub fn set_no_quorum(&self, no_quorum: bool) {
        self.lock().no_quorum = no_quorum;
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
        let drops = set
            .drop_connection
            .into_iter()
            .map(|r| DropRule::new(&r.path, r.method, r.action, r.times))
            .collect::<Result<Vec<_>, _>>()?;
        let fails = set
            .fail_call
            .into_iter()
            .map(|r| FailRule::new(&r.path, r.method, r.action, r.times))
            .collect::<Result<Vec<_>, _>>()?;
        let mut f = self.lock();
        f.latency.extend(latency);
        f.drop_connection.extend(drops.into_iter().filter(|r| r.times > 0));
        f.fail_call.extend(fails.into_iter().filter(|r| r.times > 0));
        f.no_quorum |= set.no_quorum;
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

    /// Whether this agent command of `vmid` times out (and counts the rule down).
    pub(crate) fn take_agent_timeout(&self, vmid: u32) -> bool {
        let mut f = self.lock();
        for key in [vmid, 0] {
            if let Some(n) = f.agent_command_timeouts.get_mut(&key).filter(|n| **n > 0) {
                *n -= 1;
                return true;
            }
        }
        false
    }

    pub(crate) fn node_offline(&self, node: &str) -> bool {
        self.lock().offline_nodes.contains(node)
    }

    pub(crate) fn no_quorum(&self) -> bool {
        self.lock().no_quorum
    }

    /// Whether (and when) this request's connection is to be dropped; counts the first matching
    /// rule down and removes it at 0.
    pub(crate) fn take_connection_drop(&self, method: &str, path: &str) -> Option<DropWhen> {
        take(&mut self.lock().drop_connection, method, path).map(|a| a.when)
    }

    /// The error this request is to be answered with instead of running, if any (counted down).
    pub(crate) fn take_call_failure(&self, method: &str, path: &str) -> Option<Answer> {
        take(&mut self.lock().fail_call, method, path)
    }
}

/// The action of the first rule matching the request, counting it down (removed at 0).
fn take<A: Clone>(rules: &mut Vec<CallRule<A>>, method: &str, path: &str) -> Option<A> {
    let idx = rules.iter().position(|r| r.matches(method, path))?;
    let rule = &mut rules[idx];
    rule.times = rule.times.saturating_sub(1);
    let action = rule.action.clone();
    if rule.times == 0 {
        rules.remove(idx);
    }
    Some(action)
}

impl<A> CallRule<A> {
    fn new(path: &str, method: Option<String>, action: A, times: u32) -> Result<Self, FaultError> {
        let regex = fancy_regex::Regex::new(path).map_err(|e| FaultError::DropRegex(path.to_string(), e.to_string()))?;
        Ok(Self { path: path.to_string(), method, action, times, regex: Some(Arc::new(regex)) })
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.times > 0
            && self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.regex.as_ref().is_some_and(|re| re.is_match(path).unwrap_or(false))
    }
}

impl LatencyRule {
    fn new(path: &str, ms: u64) -> Result<Self, FaultError> {
        let regex = fancy_regex::Regex::new(path).map_err(|e| FaultError::Regex(path.to_string(), e.to_string()))?;
        Ok(Self { path: path.to_string(), ms, regex: Some(Arc::new(regex)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_calls_count_down_and_round_trip_as_json() {
        let f = Faults::default();
        f.fail_call("^/cluster/resources$", Some("get"), 503, "Service Unavailable", 2).unwrap();
        assert_eq!(f.take_call_failure("POST", "/cluster/resources"), None, "another method");
        assert_eq!(f.take_call_failure("GET", "/cluster/resources").map(|a| a.status), Some(503));
        assert!(f.take_call_failure("GET", "/cluster/resources").is_some());
        assert_eq!(f.take_call_failure("GET", "/cluster/resources"), None, "used up");
        let set: FaultSet = serde_json::from_str(r#"{"fail_call": [{"path": "/clone$", "status": 502, "message": "Bad Gateway", "times": 1}]}"#).unwrap();
        f.merge(set).unwrap();
        assert_eq!(f.take_call_failure("POST", "/nodes/pve1/qemu/9000/clone"), Some(Answer { status: 502, message: "Bad Gateway".into() }));
    }

    #[test]
    fn drop_rules_count_down_and_disappear() {
        let f = Faults::default();
        f.drop_connection(r"^/nodes/[^/]+/qemu/\d+/clone$", Some("post"), DropWhen::After, 2).unwrap();
        assert_eq!(f.take_connection_drop("GET", "/nodes/pve1/qemu/9000/clone"), None, "method must match");
        assert_eq!(f.take_connection_drop("POST", "/nodes/pve1/qemu/9000/config"), None, "path must match");
        assert_eq!(f.take_connection_drop("POST", "/nodes/pve1/qemu/9000/clone"), Some(DropWhen::After));
        assert_eq!(f.snapshot().drop_connection[0].times, 1);
        assert_eq!(f.take_connection_drop("POST", "/nodes/pve1/qemu/9000/clone"), Some(DropWhen::After));
        assert!(f.snapshot().drop_connection.is_empty());
        assert_eq!(f.take_connection_drop("POST", "/nodes/pve1/qemu/9000/clone"), None);
        f.drop_connection("/status/start$", None, DropWhen::Before, 0).unwrap();
        assert!(f.snapshot().drop_connection.is_empty(), "times 0 adds nothing");
        assert!(matches!(f.drop_connection("(", None, DropWhen::Before, 1), Err(FaultError::DropRegex(..))));
    }

    #[test]
    fn first_matching_rule_counts_down() {
        let f = Faults::default();
        f.drop_connection("/clone$", None, DropWhen::Before, 1).unwrap();
        f.drop_connection("/clone$", None, DropWhen::After, 1).unwrap();
        assert_eq!(f.take_connection_drop("POST", "/nodes/pve1/qemu/9000/clone"), Some(DropWhen::Before));
        assert_eq!(f.take_connection_drop("POST", "/nodes/pve1/qemu/9000/clone"), Some(DropWhen::After));
        assert_eq!(f.take_connection_drop("POST", "/nodes/pve1/qemu/9000/clone"), None);
    }

    #[test]
    fn json_merge_snapshot_and_clear() {
        let f = Faults::default();
        let set: FaultSet = serde_json::from_str(
            r#"{"drop_connection": [{"path": "/clone$", "method": "POST", "when": "after", "times": 3},
                                    {"path": "/status/start$", "when": "before"}],
                "no_quorum": true}"#,
        )
        .unwrap();
        f.merge(set).unwrap();
        let snap = f.snapshot();
        assert!(snap.no_quorum && f.no_quorum());
        assert_eq!(snap.drop_connection.len(), 2);
        assert_eq!(snap.drop_connection[1].times, 1, "times defaults to 1");
        assert_eq!(snap.drop_connection[1].method, None);
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["drop_connection"][0]["when"], "after");
        assert_eq!(json["no_quorum"], true);
        // a snapshot merged back (what GET then POST does) keeps working
        let g = Faults::default();
        g.merge(serde_json::from_value(json).unwrap()).unwrap();
        assert_eq!(g.take_connection_drop("POST", "/nodes/pve1/qemu/9000/clone"), Some(DropWhen::After));
        // merging `no_quorum: false` does not clear it; set_no_quorum / clear do
        f.merge(FaultSet::default()).unwrap();
        assert!(f.no_quorum());
        f.set_no_quorum(false);
        assert!(!f.no_quorum());
        f.set_no_quorum(true);
        f.clear();
        assert!(!f.no_quorum() && f.snapshot().drop_connection.is_empty());
        let bad: FaultSet = serde_json::from_str(r#"{"drop_connection": [{"path": "(", "when": "before"}]}"#).unwrap();
        assert!(f.merge(bad).is_err());
        assert!(serde_json::from_str::<FaultSet>(r#"{"drop_connection": [{"path": "x", "when": "during"}]}"#).is_err());
    }
}
