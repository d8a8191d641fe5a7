//! Drift: compares what the store recorded, what the live guest has and what the export on disk says, and names
//! every difference (a field, its three values, a sentence) — memory or cores changed behind our back, a guest
//! deleted, tags removed, an export edited by hand or missing.

use super::live::{LiveGuest, Summary};
use crate::core::deployment::Deployment;
use crate::core::status::Status;

/// What Proxmox said about the deployment's guest.
#[derive(Debug, Clone)]
pub enum LiveState {
    Present(Box<LiveGuest>),
    /// Proxmox answered that the guest does not exist.
    Missing,
    /// Proxmox could not be asked; nothing is known.
    Unreadable(String),
}

/// What the export folder holds.
#[derive(Debug, Clone)]
pub enum ExportState {
    Missing,
    Present {
        /// The figures the export was written with.
        written: Summary,
        /// Files whose content no longer hashes to what was written.
        edited: Vec<String>,
        /// Files that were written and are gone.
        removed: Vec<String>,
    },
}

/// One difference between the store, the live guest and the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub deployment_id: String,
    pub deployment: String,
    /// `memory_mib`, `cores`, `disk_gb`, `tags`, `started`, `guest`, `export`, `export:<file>`.
    pub field: String,
    pub store: Option<String>,
    pub live: Option<String>,
    pub export: Option<String>,
    pub message: String,
}

/// Every difference for one deployment that has a guest; `required_tags` are the tags every guest of ours carries.
pub fn compare(d: &Deployment, required_tags: &[String], live: &LiveState, export: &ExportState) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut push = |field: &str, store: Option<String>, live: Option<String>, export: Option<String>, message: String| {
        out.push(Difference { deployment_id: d.id.to_string(), deployment: d.spec.name.to_string(), field: field.into(), store, live, export, message })
    };
    let guest = match (d.proxmox_node.as_ref(), d.proxmox_id) {
        (Some(n), Some(v)) => format!("{n}/{v}"),
        _ => return out,
    };
    let written = match export {
        ExportState::Present { written, .. } => Some(written),
        ExportState::Missing => None,
    };
    match export {
        ExportState::Missing => push("export", Some(guest.clone()), None, None, format!("the Terraform export of {} is missing; it is rewritten at the next change, or run `pvedeploy export {}`", d.spec.name, d.spec.name)),
        ExportState::Present { edited, removed, .. } => {
            for f in edited {
                push(&format!("export:{f}"), None, None, Some("edited".into()), format!("{f} of the export was edited by hand since pvedeploy wrote it"));
            }
            for f in removed {
                push(&format!("export:{f}"), None, None, Some("missing".into()), format!("{f} of the export was removed since pvedeploy wrote it"));
            }
        }
    }
    let g = match live {
        LiveState::Present(g) => g,
        LiveState::Missing => {
            push("guest", Some(guest.clone()), None, written.map(|w| format!("{}/{}", w.node, w.vmid)), format!("guest {guest} of {} no longer exists on Proxmox: it was deleted behind pvedeploy's back", d.spec.name));
            return out;
        }
        LiveState::Unreadable(why) => {
            push("guest", Some(guest.clone()), None, None, format!("could not read guest {guest} from Proxmox, so its drift is unknown: {why}"));
            return out;
        }
    };
    let mut figure = |field: &str, unit: &str, store: Option<u64>, live: Option<u64>, export: Option<u64>| {
        let present: Vec<u64> = [store, live, export].into_iter().flatten().collect();
        if present.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        let show = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        let message = format!("{field} differs for {}: store {} {unit}, live {} {unit}, export {} {unit}", d.spec.name, show(store), show(live), show(export));
        push(field, store.map(|v| v.to_string()), live.map(|v| v.to_string()), export.map(|v| v.to_string()), message);
    };
    figure("memory_mib", "MiB", Some(d.spec.memory_mib.into()), Some(g.memory_mib), written.map(|w| w.memory_mib));
    figure("cores", "cores", Some(d.spec.cpu.into()), Some(g.cores.into()), written.map(|w| u64::from(w.cores)));
    figure("disk_gb", "GiB", Some(d.spec.disk_gb.into()), g.disk.as_ref().map(|x| x.size_gib), written.and_then(|w| w.disk_gib));

    let required = required_tags;
    let missing: Vec<&String> = required.iter().filter(|t| !g.tags.contains(t)).collect();
    let export_tags = written.map(|w| w.tags.join(";"));
    if !missing.is_empty() || export_tags.as_ref().is_some_and(|t| *t != g.tags.join(";")) {
        let what = if missing.is_empty() {
            "the guest's tags differ from the export's".to_string()
        } else {
            format!("the guest lost its tag(s) {}: the reconciler cannot tell it is ours", missing.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", "))
        };
        out.push(Difference {
            deployment_id: d.id.to_string(),
            deployment: d.spec.name.to_string(),
            field: "tags".into(),
            store: Some(required.join(";")),
            live: Some(g.tags.join(";")),
            export: export_tags,
            message: format!("{} ({})", what, d.spec.name),
        });
    }
    let expected_running = match d.status {
        Status::Stopped => Some(false),
        Status::Installing | Status::Deploying | Status::Running => Some(true),
        _ => None,
    };
    let written_running = written.map(|w| w.running);
    if expected_running.is_some_and(|e| e != g.running) || written_running.is_some_and(|w| w != g.running) {
        let word = |b: bool| if b { "running" } else { "stopped" }.to_string();
        out.push(Difference {
            deployment_id: d.id.to_string(),
            deployment: d.spec.name.to_string(),
            field: "started".into(),
            store: expected_running.map(word),
            live: Some(word(g.running)),
            export: written_running.map(word),
            message: format!("guest {guest} of {} is {} on Proxmox", d.spec.name, word(g.running)),
        });
    }
    out
}
