//! A model of what `terraform plan` does right after `terraform import` of an exported guest, built from the
//! bpg/proxmox provider's Go source at the pinned version (v0.111.1, `b22fe919`; facts and citations in
//! `hcl-export/schema/SOURCE-FACTS.md` and `bpg-source-facts.json`).
//!
//! Three steps, all pure:
//! - `read.rs` — the state the provider's Read puts in place after the importer (which sets only the id and
//!   `node_name`), from the guest's PVE config (`GET …/config`);
//! - `diff.rs` — the resource block of the exported `main.tf` as configuration, and the plan: each attribute
//!   compared the way Terraform plugin SDK v2 compares it (defaults, Computed, StateFunc, DiffSuppress,
//!   ForceNew), minus what `lifecycle { ignore_changes }` names;
//! - `schema.rs` — the table of every attribute and block the model knows, with the line of the provider's
//!   source each fact comes from.
//!
//! The model is deliberately small: it knows the attributes the export writes and those Read sets from the PVE
//! keys it understands. Anything else is an error, not a guess: an attribute in the HCL that the table lacks
//! ([`ModelError::UnknownAttribute`]) or a key in the PVE config it has no Read rule for
//! ([`ModelError::UnmodelledKey`]).

mod diff;
mod read;
mod schema;

use std::collections::BTreeMap;

use crate::core::deployment::GuestType;

/// A value in the model's trees: primitives as text, as the SDK's flatmap state holds them.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    List(Vec<String>),
    Blocks(Vec<Tree>),
}

/// One resource's (or block's) attributes by name.
type Tree = BTreeMap<String, Value>;

/// One attribute the plan would change: `cpu.0.type: "qemu64" → "x86-64-v2-AES"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Flat path as Terraform prints it (`disk.1.size`, `clone.#`).
    pub path: String,
    /// What Read put in state after the import (`""` when nothing).
    pub state: String,
    /// What the configuration asks for (after defaults and the attribute's StateFunc).
    pub config: String,
    /// Whether the change forces the guest to be destroyed and created again.
    pub replace: bool,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {:?} → {:?}{}", self.path, self.state, self.config, if self.replace { " (forces replacement)" } else { "" })
    }
}

/// The plan the provider would make after the import.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
}

impl Plan {
    /// "No changes. Your infrastructure matches the configuration."
    pub fn is_clean(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether any change forces a replacement.
    pub fn replaces(&self) -> bool {
        self.changes.iter().any(|c| c.replace)
    }

    /// The changes except the container's `timeout_*` attributes, which Read never fills in at this provider
    /// version (`container.go:1097-1128`, upstream fix bpg PR #3111 after 0.111.1): the first plan of every
    /// imported container adds them, and nothing the export writes can avoid it (writing them gives the same diff).
    pub fn beyond_container_timeouts(&self) -> Vec<&Change> {
        self.changes.iter().filter(|c| !(c.path.starts_with("timeout_") && !c.replace)).collect()
    }
}

/// Why the model cannot predict the plan: it is asked about something it does not know. Fix the model (with a
/// citation of the provider's source), or the export.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("main.tf does not parse as HCL: {0}")]
    Hcl(String),
    #[error("main.tf has no `resource \"{0}\"` block")]
    NoResource(&'static str),
    #[error("the export writes `{0}`, which the plan model does not know (add it to export/plan/schema.rs with its source)")]
    UnknownAttribute(String),
    #[error("`{path}` is written as {written}, the provider's schema has it as {schema}")]
    Shape { path: String, written: &'static str, schema: &'static str },
    #[error("the guest's PVE config has `{0}`, which the plan model has no Read rule for")]
    UnmodelledKey(String),
}

/// What the plan model needs to know about the guest besides its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported<'a> {
    pub kind: GuestType,
    pub node: &'a str,
    pub vmid: u32,
    /// `GET …/config`, every value as text.
    pub config: &'a BTreeMap<String, String>,
    /// `GET …/status/current` says `running`.
    pub running: bool,
}

/// The plan `terraform plan` would show for `main_tf`'s resource after `terraform import` of `guest`.
pub fn after_import(guest: &Imported<'_>, main_tf: &str) -> Result<Plan, ModelError> {
    let table = schema::table(guest.kind);
    let state = read::after_import(guest)?;
    let (config, ignored) = diff::configuration(main_tf, schema::resource_type(guest.kind), table)?;
    Ok(Plan { changes: diff::plan(table, &config, &state, &ignored) })
}

/// Every PVE config key of `config` that the model has no Read rule for (the export reports them as warnings:
/// the first plan after an import may show changes for them).
pub fn unmodelled_keys(kind: GuestType, vmid: u32, config: &BTreeMap<String, String>) -> Vec<String> {
    read::unmodelled(kind, vmid, config)
}

/// What an operator should know before adopting `guest`'s export, in words: each change the model predicts for the
/// first `terraform plan` after the import, the PVE keys it cannot account for, or why it could not check at all.
pub fn warnings(guest: &crate::export::LiveGuest, main_tf: &str) -> Vec<String> {
    let kind = guest.guest_type();
    let imported = Imported { kind, node: guest.node.as_str(), vmid: guest.vmid.get(), config: &guest.config, running: guest.running };
    let unmodelled = unmodelled_keys(kind, imported.vmid, &guest.config);
    if !unmodelled.is_empty() {
        return vec![format!(
            "Proxmox has {} on this guest, which the export does not describe: the first `terraform plan` after the import may show changes for it",
            unmodelled.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
        )];
    }
    match after_import(&imported, main_tf) {
        Err(e) => vec![format!("the export could not be checked against the provider's import: {e}")],
        Ok(plan) => {
            let mut out: Vec<String> = plan
                .beyond_container_timeouts()
                .into_iter()
                .map(|c| format!("the first `terraform plan` after the import will show `{c}`: the provider cannot read this value back as Proxmox has it"))
                .collect();
            if plan.changes.iter().any(|c| c.path.starts_with("timeout_")) {
                out.push("the first `terraform plan` after the import adds the provider's timeout_* defaults, which its Read does not fill in for containers (bpg#3110); apply it once, nothing is sent to Proxmox".into());
            }
            out
        }
    }
}

#[cfg(test)]
mod tests;
