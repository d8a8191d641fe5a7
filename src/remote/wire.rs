//! The agent's answers as the command line reads them (the API's JSON, lenient: unknown fields are ignored so a
//! newer agent still works), and what `--json` prints back.

use serde::{Deserialize, Serialize};

/// A deployment as `GET /deployments/{id}` (with `events`) or a list page shows it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DeploymentJson {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub guest_type: String,
    pub framework: String,
    pub repo_url: String,
    pub branch: String,
    pub cpu: u32,
    pub memory_mib: u32,
    pub disk_gb: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_redeploy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxmox_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxmox_node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terraform_output: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventJson>,
}

impl DeploymentJson {
    /// Work is under way (the agent's `Status::is_busy`).
    pub fn is_busy(&self) -> bool {
        is_busy(&self.status)
    }
}

/// The statuses in which work is under way and the live log stays open.
pub fn is_busy(status: &str) -> bool {
    crate::core::status::Status::parse(status).is_some_and(|s| s.is_busy())
}

/// One status change in a deployment's history.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EventJson {
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
    pub message: String,
}

/// One page of a list.
#[derive(Debug, Deserialize)]
pub struct PageJson<T> {
    pub items: Vec<T>,
    #[serde(default)]
    pub next_offset: Option<u32>,
    /// Lists paged by keyset (deployments).
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// One release: what was deployed, how long each step took, how it ended.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ReleaseJson {
    pub id: String,
    pub commit: String,
    pub status: String,
    pub trigger: String,
    pub step: String,
    #[serde(default)]
    pub timings: Vec<StepTimingJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StepTimingJson {
    pub step: String,
    pub ms: u64,
}

/// One line of a deployment's log (the `log` event of the live stream carries the same fields).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LogLineJson {
    pub seq: i64,
    pub ts: String,
    pub level: String,
    pub step: String,
    pub text: String,
}

#[derive(Debug, Deserialize)]
pub struct LogPageJson {
    pub lines: Vec<LogLineJson>,
    pub next_after: i64,
}

#[derive(Debug, Deserialize)]
pub struct EnvNamesJson {
    pub names: Vec<String>,
}

/// One event of `/events`: `status` (a deployment's new status) or `resync` (some were missed).
#[derive(Debug, Clone, Deserialize)]
pub struct ChangeJson {
    pub kind: String,
    #[serde(default)]
    pub deployment: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
}

/// Every error body; a 422 adds `fields`.
#[derive(Debug, Deserialize, Default)]
pub struct ErrorJson {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub fields: Vec<FieldProblemJson>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FieldProblemJson {
    pub field: String,
    pub rule: String,
    pub message: String,
}

/// Milliseconds since the epoch of an RFC 3339 time the agent wrote.
pub fn millis(rfc3339: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_with_short_fractions_parse() {
        assert_eq!(super::millis("2026-12-05T00:54:44.69Z"), Some(1_796_432_084_690));
        assert_eq!(super::millis("2026-12-05T00:54:44Z"), Some(1_796_432_084_000));
        assert_eq!(super::millis("yesterday"), None);
    }
}
