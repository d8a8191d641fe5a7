//! `PveError`: every way a Proxmox VE call fails, phrased as what the caller should do, and the mapping from PVE's HTTP answers.

use std::collections::BTreeMap;
use std::time::Duration;

use super::upid::Upid;

/// What went wrong talking to Proxmox VE.
#[derive(Debug, thiserror::Error)]
pub enum PveError {
    /// The configuration is unusable (bad endpoint, token id, fingerprint or CA bundle); fix it.
    #[error("invalid Proxmox VE client configuration: {0}")]
    Config(String),
    /// The network or HTTP layer failed. `retry_safe`: the request never reached PVE, so sending
    /// it again cannot do anything twice; otherwise PVE may have acted (re-read before retrying a write).
    #[error("cannot reach Proxmox VE: {message}")]
    Transport { retry_safe: bool, message: String },
    /// No answer within the per-call timeout. For writes PVE may still have acted.
    #[error("Proxmox VE did not answer within the call timeout")]
    Timeout,
    /// The TLS handshake failed (e.g. the certificate's fingerprint is not the pinned one); check
    /// the configured trust. Never retried.
    #[error("TLS with Proxmox VE failed: {message}")]
    Tls { message: String },
    /// The API token was rejected (wrong id or secret, expired, deleted); fix the credentials.
    #[error("Proxmox VE rejected the API token (401)")]
    Unauthorized,
    /// The token lacks `privilege` on `path` (from PVE's `Permission check failed (/vms/100, VM.Config.Disk)`);
    /// grant it. When PVE names no privilege, `privilege` holds PVE's text and `path` may be empty.
    #[error("Proxmox VE denied the call: missing privilege {privilege} on {path}")]
    Forbidden { path: String, privilege: String },
    /// The guest, snapshot, task, storage or volume does not exist.
    #[error("not found on Proxmox VE: {message}")]
    NotFound { message: String },
    /// PVE rejected parameters (400): parameter name → PVE's message. A client or input bug.
    #[error("Proxmox VE rejected the parameters: {}", render_errors(.errors))]
    Invalid { errors: BTreeMap<String, String> },
    /// A config or storage lock is held (`VM is locked (clone)`) or could not be had in time
    /// (`can't lock file … got timeout`); retry later.
    #[error("locked on Proxmox VE: {message}")]
    Locked { message: String },
    /// The VMID is taken (also the clone race: `unable to create VM 101: config file already exists`);
    /// pick another id.
    #[error("VMID {vmid} already exists on Proxmox VE")]
    AlreadyExists { vmid: u32 },
    /// The QEMU guest agent does not answer (yet), or the VM is not running; wait and retry.
    #[error("the QEMU guest agent is not running")]
    AgentNotRunning,
    /// The guest agent answered its ping but not the command within QEMU's limit (`VM 100 qga command
    /// 'guest-network-get-interfaces' failed - got timeout`: qemu-server `src/PVE/QMPClient.pm:165-176,499-505`,
    /// 5 s); the guest is busy booting. Ask again.
    #[error("the QEMU guest agent did not answer in time: {message}")]
    AgentTimeout { message: String },
    /// The VM has no guest agent configured (`agent: 0`); enable it in the config.
    #[error("no QEMU guest agent is configured for this VM")]
    AgentNotConfigured,
    /// A task ended with an error. `lock_timeout`: it failed on a lock timeout (retry the whole
    /// operation, e.g. the clone, after cleaning up).
    #[error("Proxmox VE task failed: {exitstatus}")]
    TaskFailed { exitstatus: String, log_tail: Vec<String>, lock_timeout: bool },
    /// `wait_task` gave up while the task was still running; keep waiting or stop it.
    #[error("Proxmox VE task {upid} still running after {waited:?}")]
    TaskDeadline { upid: Upid, waited: Duration },
    /// The cluster lost quorum: `/etc/pve` is read-only and PVE refuses every write before doing
    /// anything (pve-cluster `PVE::Cluster::check_cfs_quorum`: `cluster not ready - no quorum?`). Retry later.
    #[error("the Proxmox VE cluster has no quorum: {message}")]
    NoQuorum { message: String },
    /// This client was built to change nothing (the agent is read-only); the call was not sent.
    #[error("not sent: this agent changes nothing on Proxmox VE now ({reason})")]
    ChangesRefused { reason: String },
    /// Any other error PVE answered with (status and PVE's message).
    #[error("Proxmox VE error {status}: {message}")]
    Server { status: u16, message: String },
    /// PVE's answer could not be read as `what`; a client bug or an unsupported PVE version.
    #[error("unexpected Proxmox VE answer for {what}: {message}")]
    Decode { what: String, message: String },
}

fn render_errors(errors: &BTreeMap<String, String>) -> String {
    errors.iter().map(|(k, v)| format!("{k}: {}", v.trim_end())).collect::<Vec<_>>().join("; ")
}

impl PveError {
    /// The condition is transient: the same call may succeed later. For writes that failed with
    /// `Timeout` or `Transport { retry_safe: false }`, PVE may have acted already.
    pub fn is_retryable(&self) -> bool {
        match self {
            PveError::Transport { .. }
            | PveError::Timeout
            | PveError::Locked { .. }
            | PveError::AgentNotRunning
            | PveError::AgentTimeout { .. }
            | PveError::NoQuorum { .. } => true,
            PveError::TaskFailed { lock_timeout, .. } => *lock_timeout,
            PveError::Server { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }

    /// Worth trying the same step again after a backoff: nothing was done (a lost quorum, a 5xx from
    /// the proxy, a connection refused) or the outcome is unknown and the step checks what exists first
    /// (a timeout, a dropped connection). Plain 500s are included: PVE answers most failures so, some
    /// of them passing (`got timeout` from pmxcfs); the step's budget bounds the deterministic ones.
    pub fn is_transient(&self) -> bool {
        match self {
            PveError::Transport { .. } | PveError::Timeout | PveError::NoQuorum { .. } => true,
            PveError::Server { status, .. } => (500..=599).contains(status),
            PveError::TaskFailed { lock_timeout, .. } => *lock_timeout,
            _ => false,
        }
    }

    /// A lock could not be had in time, synchronously or as the task's failure.
    pub fn is_lock_timeout(&self) -> bool {
        match self {
            PveError::Locked { message } => is_lock_timeout(message),
            PveError::TaskFailed { lock_timeout, .. } => *lock_timeout,
            _ => false,
        }
    }

    /// The new VMID was taken, synchronously or as a failed clone/create task (PVE's race between
    /// `nextid` and the worker taking the config lock); retry with another id.
    pub fn is_vmid_taken(&self) -> bool {
        match self {
            PveError::AlreadyExists { .. } => true,
            PveError::TaskFailed { exitstatus, .. } => exitstatus.contains("already exists"),
            _ => false,
        }
    }

    pub(crate) fn decode(what: impl Into<String>, message: impl std::fmt::Display) -> Self {
        PveError::Decode { what: what.into(), message: message.to_string() }
    }

    /// Maps an HTTP error answer: status, PVE's message (body `message` or reason phrase) and the
    /// per-parameter `errors` of a 400.
    pub(crate) fn from_response(status: u16, message: &str, errors: BTreeMap<String, String>) -> Self {
        let message = message.trim_end().to_string();
        match status {
            400 if !errors.is_empty() => PveError::Invalid { errors },
            400 => PveError::Invalid { errors: BTreeMap::from([(String::new(), message)]) },
            401 => PveError::Unauthorized,
            403 => forbidden(&message),
            404 => PveError::NotFound { message },
            // pveproxy could not connect to the node it proxies to: the call never ran there
            595 => PveError::Transport { retry_safe: true, message: format!("{status} {message}") },
            596 => PveError::Transport { retry_safe: false, message: format!("{status} {message}") },
            _ => from_die(status, message),
        }
    }
}

/// Classifies a handler's `die` (PVE answers 500 with the message).
fn from_die(status: u16, message: String) -> PveError {
    let lower = message.to_ascii_lowercase();
    if lower.contains("no quorum") {
        return PveError::NoQuorum { message };
    }
    if is_lock_timeout(&message) || lower.contains(" is locked") {
        return PveError::Locked { message };
    }
    if lower.contains("guest agent is not running") {
        return PveError::AgentNotRunning;
    }
    // `VM <id> qga command 'guest-<cmd>' failed - got timeout` (PVE 9; `qmp command` on older releases).
    if (lower.contains("qga command") || lower.contains("qmp command")) && lower.contains("got timeout") {
        return PveError::AgentTimeout { message };
    }
    if lower.contains("no qemu guest agent configured") {
        return PveError::AgentNotConfigured;
    }
    if lower.contains("already exists") {
        if let Some(vmid) = vmid_in(&message) {
            return PveError::AlreadyExists { vmid };
        }
    }
    if lower.contains("does not exist") || lower.starts_with("no such ") {
        return PveError::NotFound { message };
    }
    PveError::Server { status, message }
}

/// `Permission check failed (/vms/100, VM.Config.Disk)` → path and privilege.
fn forbidden(message: &str) -> PveError {
    let inner = message
        .find('(')
        .and_then(|start| message.rfind(')').filter(|end| *end > start).map(|end| &message[start + 1..end]));
    match inner.and_then(|i| i.rsplit_once(", ")) {
        Some((path, privilege)) if path.starts_with('/') => {
            PveError::Forbidden { path: path.trim().to_string(), privilege: privilege.trim().to_string() }
        }
        _ => PveError::Forbidden { path: String::new(), privilege: inner.unwrap_or(message).trim().to_string() },
    }
}

/// PVE's lock-timeout wordings: `can't lock file '…' - got timeout` (flock),
/// `cfs-lock 'storage-x' error: got lock request timeout` (cluster file system),
/// `can't acquire lock '…' - got timeout`.
pub(crate) fn is_lock_timeout(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    (m.contains("can't lock file") || m.contains("cfs-lock") || m.contains("can't acquire lock") || m.contains("trying to acquire"))
        && m.contains("timeout")
}

/// The VMID in `VM 100 already exists on node 'x'`, `CT 100 …`, `unable to create VM 100: …`.
fn vmid_in(message: &str) -> Option<u32> {
    let words: Vec<&str> = message.split(|c: char| c.is_whitespace() || c == ':').collect();
    words
        .windows(2)
        .find(|w| matches!(w[0], "VM" | "CT") && w[1].parse::<u32>().is_ok())
        .and_then(|w| w[1].parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn die(msg: &str) -> PveError {
        PveError::from_response(500, msg, BTreeMap::new())
    }

    #[test]
    fn forbidden_names_path_and_privilege() {
        match PveError::from_response(403, "Permission check failed (/vms/100, VM.Config.Disk)\n", BTreeMap::new()) {
            PveError::Forbidden { path, privilege } => {
                assert_eq!(path, "/vms/100");
                assert_eq!(privilege, "VM.Config.Disk");
            }
            other => panic!("{other:?}"),
        }
        match PveError::from_response(403, "Permission check failed (/, Sys.Audit|Sys.Modify)", BTreeMap::new()) {
            PveError::Forbidden { path, privilege } => assert_eq!((path.as_str(), privilege.as_str()), ("/", "Sys.Audit|Sys.Modify")),
            other => panic!("{other:?}"),
        }
        match PveError::from_response(403, "Permission check failed", BTreeMap::new()) {
            PveError::Forbidden { path, privilege } => assert_eq!((path.as_str(), privilege.as_str()), ("", "Permission check failed")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dies_are_classified() {
        assert!(matches!(die("can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout\n"), PveError::Locked { .. }));
        assert!(die("cfs-lock 'storage-shared' error: got lock request timeout").is_lock_timeout());
        assert!(!die("VM is locked (clone)").is_lock_timeout());
        assert!(matches!(die("VM is locked (clone)"), PveError::Locked { .. }));
        assert!(matches!(die("unable to create VM 101: config file already exists"), PveError::AlreadyExists { vmid: 101 }));
        assert!(matches!(die("VM 9000 already exists on node 'pve1'"), PveError::AlreadyExists { vmid: 9000 }));
        assert!(matches!(die("Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist"), PveError::NotFound { .. }));
        assert!(matches!(die("no such task"), PveError::NotFound { .. }));
        assert!(matches!(die("QEMU guest agent is not running"), PveError::AgentNotRunning));
        let timeout = die("VM 100 qga command 'guest-network-get-interfaces' failed - got timeout");
        assert!(matches!(timeout, PveError::AgentTimeout { .. }) && timeout.is_retryable() && !timeout.is_lock_timeout(), "{timeout:?}");
        assert!(matches!(die("No QEMU guest agent configured"), PveError::AgentNotConfigured));
        assert!(matches!(die("something else"), PveError::Server { status: 500, .. }));
        assert!(matches!(PveError::from_response(401, "", BTreeMap::new()), PveError::Unauthorized));
        assert!(matches!(PveError::from_response(595, "No route to host", BTreeMap::new()), PveError::Transport { retry_safe: true, .. }));
        let invalid = PveError::from_response(400, "Parameter verification failed.", BTreeMap::from([("cores".into(), "bad".into())]));
        assert!(matches!(invalid, PveError::Invalid { ref errors } if errors["cores"] == "bad"));
    }

    #[test]
    fn task_failures_say_what_to_do() {
        let lock = PveError::TaskFailed { exitstatus: "clone failed: x".into(), log_tail: vec![], lock_timeout: true };
        assert!(lock.is_retryable() && lock.is_lock_timeout() && !lock.is_vmid_taken());
        let taken = PveError::TaskFailed {
            exitstatus: "clone failed: unable to create VM 101: config file already exists".into(),
            log_tail: vec![],
            lock_timeout: false,
        };
        assert!(taken.is_vmid_taken() && !taken.is_retryable());
    }
}
