//! Terraform export: every deployment's guest as importable HCL for the bpg/proxmox provider, and drift between the store, the live guest and the export.
//!
//! - `live.rs` — the live guest (`LiveGuest`), built at the edge from Proxmox's config map and the deployment record;
//! - `hcl.rs` — renders a `LiveGuest` into `main.tf`, `variables.tf`, `terraform.tfvars`, `imports.tf` (pure, deterministic);
//! - `align.rs` — `terraform fmt`'s alignment of `=` in runs of attributes (pure);
//! - `plan.rs` — a model of the provider's import and first plan, from its source (pure);
//! - `drift.rs` — compares store, live guest and export on disk, one `Difference` per field (pure);
//! - `dir.rs` — the export directory on disk: atomic writes, a manifest of what was written, the archive (the only I/O here).

pub mod align;
pub mod dir;
pub mod drift;
pub mod hcl;
pub mod live;
pub mod plan;

pub use dir::{ExportDir, ExportIoError, OnDisk};
pub use drift::Difference;
pub use live::{LiveGuest, Origin, Summary};

/// One generated file: its path inside the export folder and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFile {
    pub path: String,
    pub content: String,
}

impl ExportFile {
    /// SHA-256 of the content, hex: what the manifest records so that hand edits show up.
    pub fn sha256(&self) -> String {
        sha256_hex(self.content.as_bytes())
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
