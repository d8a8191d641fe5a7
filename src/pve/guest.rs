//! What QEMU VMs and LXC containers share: their type, run state, status and list entries, power actions and destroy.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::core::names::{NodeName, VmId};

use super::client::{seg, PveClient};
use super::error::PveError;
use super::form::Form;
use super::lenient;
use super::upid::Upid;

/// A guest's kind, as it appears in API paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestType {
    Qemu,
    Lxc,
}

impl GuestType {
    /// `qemu` / `lxc`
    pub fn as_str(self) -> &'static str {
        match self {
            GuestType::Qemu => "qemu",
            GuestType::Lxc => "lxc",
        }
    }
}

/// `/nodes/{node}/{qemu|lxc}/{vmid}`
pub(crate) fn guest_path(kind: GuestType, node: &NodeName, vmid: VmId) -> String {
    format!("/nodes/{}/{}/{vmid}", seg(node.as_str()), kind.as_str())
}

/// Whether a guest runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum GuestState {
    Running,
    Stopped,
    /// A state this client does not know (kept as PVE wrote it).
    Unknown(String),
}

impl From<String> for GuestState {
    fn from(s: String) -> Self {
        match s.as_str() {
            "running" => GuestState::Running,
            "stopped" => GuestState::Stopped,
            _ => GuestState::Unknown(s),
        }
    }
}

impl Default for GuestState {
    fn default() -> Self {
        GuestState::Unknown(String::new())
    }
}

/// `GET …/status/current`
#[derive(Debug, Clone, Deserialize)]
pub struct GuestStatus {
    #[serde(default)]
    pub status: GuestState,
    /// `clone`, `create`, `backup`, `snapshot`, … while an operation holds the guest.
    #[serde(default)]
    pub lock: Option<String>,
    /// QEMU's own view (`running`, `paused`, `prelaunch`, …); QEMU only.
    #[serde(default)]
    pub qmpstatus: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    pub uptime: u64,
    #[serde(default, deserialize_with = "lenient::bool01")]
    pub template: bool,
    /// The guest agent is enabled in the config (QEMU only).
    #[serde(default, deserialize_with = "lenient::bool01")]
    pub agent: bool,
    #[serde(default, deserialize_with = "lenient::num_f64")]
    pub cpus: f64,
    #[serde(default, deserialize_with = "lenient::num_f64")]
    pub cpu: f64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    pub maxmem: u64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    pub mem: u64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    pub maxdisk: u64,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub pid: Option<u64>,
    #[serde(default, deserialize_with = "lenient::tags")]
    pub tags: Vec<String>,
}

/// One entry of `GET /nodes/{node}/qemu` or `/nodes/{node}/lxc`.
#[derive(Debug, Clone, Deserialize)]
pub struct GuestSummary {
    #[serde(deserialize_with = "lenient::vmid")]
    pub vmid: VmId,
    #[serde(default, deserialize_with = "lenient::opt_text")]
    pub name: Option<String>,
    #[serde(default)]
    pub status: GuestState,
    #[serde(default, deserialize_with = "lenient::bool01")]
    pub template: bool,
    #[serde(default, deserialize_with = "lenient::tags")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default, deserialize_with = "lenient::num_f64")]
    pub cpus: f64,
    #[serde(default, deserialize_with = "lenient::num_f64")]
    pub cpu: f64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    pub maxmem: u64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    pub mem: u64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    pub maxdisk: u64,
    #[serde(default, deserialize_with = "lenient::num_u64")]
    pub uptime: u64,
}

/// A power action; each answers a task id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Start,
    /// Immediate stop (like pulling the plug).
    Stop,
    /// ACPI shutdown (QEMU) / clean shutdown (LXC); after `timeout_secs`, stop if `force_stop`.
    Shutdown { timeout_secs: Option<u32>, force_stop: bool },
    Reboot,
}

impl PowerAction {
    fn endpoint(self) -> &'static str {
        match self {
            PowerAction::Start => "start",
            PowerAction::Stop => "stop",
            PowerAction::Shutdown { .. } => "shutdown",
            PowerAction::Reboot => "reboot",
        }
    }

    fn form(self) -> Form {
        match self {
            PowerAction::Shutdown { timeout_secs, force_stop } => Form::new().opt("timeout", timeout_secs).flag_if("forceStop", force_stop),
            _ => Form::new(),
        }
    }
}

impl PveClient {
    pub(crate) async fn guest_list(&self, kind: GuestType, node: &NodeName) -> Result<Vec<GuestSummary>, PveError> {
        let path = format!("/nodes/{}/{}", seg(node.as_str()), kind.as_str());
        self.get(&path, Form::new(), &format!("{} list", kind.as_str())).await
    }

    pub(crate) async fn guest_current(&self, kind: GuestType, node: &NodeName, vmid: VmId) -> Result<GuestStatus, PveError> {
        let path = format!("{}/status/current", guest_path(kind, node, vmid));
        self.get(&path, Form::new(), "guest status").await
    }

    /// `GET …/config` with every value as text (numbers and booleans included).
    pub(crate) async fn guest_config_raw(&self, kind: GuestType, node: &NodeName, vmid: VmId) -> Result<BTreeMap<String, String>, PveError> {
        let path = format!("{}/config", guest_path(kind, node, vmid));
        let map: serde_json::Map<String, serde_json::Value> = self.get(&path, Form::new(), "guest config").await?;
        Ok(map.iter().filter_map(|(k, v)| lenient::text_of(v).map(|t| (k.clone(), t))).collect())
    }

    pub(crate) async fn guest_power(&self, kind: GuestType, node: &NodeName, vmid: VmId, action: PowerAction) -> Result<Upid, PveError> {
        let path = format!("{}/status/{}", guest_path(kind, node, vmid), action.endpoint());
        self.post_task(&path, action.form()).await
    }

    pub(crate) async fn guest_delete(
        &self,
        kind: GuestType,
        node: &NodeName,
        vmid: VmId,
        purge: bool,
        destroy_unreferenced_disks: bool,
    ) -> Result<Upid, PveError> {
        let query = Form::new().flag_if("purge", purge).flag_if("destroy-unreferenced-disks", destroy_unreferenced_disks);
        self.delete_task(&guest_path(kind, node, vmid), query).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_reads_pves_shapes() {
        let s: GuestStatus = serde_json::from_value(json!({
            "status": "running", "qmpstatus": "running", "agent": 1, "template": "", "uptime": "12",
            "cpus": 2, "maxmem": 2147483648u64, "pid": 4242, "tags": "web;prod", "ha": {"managed": 0}
        }))
        .unwrap();
        assert_eq!(s.status, GuestState::Running);
        assert!(s.agent && !s.template);
        assert_eq!((s.uptime, s.pid, s.tags.len()), (12, Some(4242), 2));
        let s: GuestStatus = serde_json::from_value(json!({"status": "paused-ish"})).unwrap();
        assert_eq!(s.status, GuestState::Unknown("paused-ish".into()));
    }

    #[test]
    fn power_forms() {
        assert_eq!(PowerAction::Shutdown { timeout_secs: Some(30), force_stop: true }.form().encode(), "timeout=30&forceStop=1");
        assert_eq!(PowerAction::Shutdown { timeout_secs: None, force_stop: false }.form().encode(), "");
        assert!(PowerAction::Start.form().is_empty());
    }
}
