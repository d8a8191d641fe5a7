//! The agent's own thin, typed Proxmox VE REST client: only the endpoints pvedeploy uses, over one HTTP stack (reqwest + rustls).
//!
//! - **Wire**: form-encoded request bodies with booleans as `0`/`1` (accepted by PVE 7, 8 and 9);
//!   responses decoded leniently (`0`/`1`/`true`/`"1"` booleans, numbers as strings and back),
//!   unknown enum values kept as `Unknown(String)`.
//! - **Auth**: API tokens only (`Authorization: PVEAPIToken=user@realm!name=secret`); the secret never prints.
//! - **TLS**: a pinned SHA-256 certificate fingerprint or a CA bundle ([`TlsTrust`]); nothing else,
//!   no "accept any certificate" switch.
//! - **Failures**: every call has a timeout; idempotent calls (GETs) are retried with jittered
//!   backoff, writes only when PVE answered with a lock timeout (the write did not happen);
//!   [`PveError`]'s variants say what the caller should do.
//! - **Tasks**: mutating calls return a [`Upid`]; [`PveClient::wait_task`] polls it to an outcome.

mod access;
mod backups;
mod client;
mod cluster;
mod error;
mod form;
mod guest;
pub(crate) mod lenient;
mod lxc;
mod network;
mod poll;
mod qemu;
mod snapshots;
mod tasks;
mod tls;
mod upid;

use std::time::Duration;

use crate::config::Secret;

pub use access::Role;
pub use backups::{BackupVolume, RestoreNew, VzdumpRequest};
pub use client::{PveClient, RetryPolicy};
pub use network::Interface;
pub use cluster::{ClusterResource, ClusterStatusEntry, NodeInfo, NodeStatus, ResourceKind, ResourceType, StorageInfo, Version, Volume};
pub use error::PveError;
pub use form::encode_sshkeys;
pub use guest::{GuestState, GuestStatus, GuestSummary, GuestType, PowerAction};
pub use lxc::{LxcConfig, LxcCreate, LxcInterface, LxcUpdate};
pub use qemu::{first_guest_ipv4, guest_ipv4_on_mac, AgentInterface, CloneRequest, CloudInitKind, QemuConfig, QemuUpdate};
pub use snapshots::Snapshot;
pub use tasks::{TaskOutcome, TaskStatus};
pub use tls::TlsTrust;
pub use poll::PollDelay;
pub use upid::Upid;

/// How to reach one Proxmox VE cluster.
#[derive(Debug, Clone)]
pub struct PveConfig {
    /// `https://host:8006` (a trailing `/api2/json` is accepted too); the client appends `/api2/json`.
    pub endpoint: String,
    /// `user@realm!name`
    pub token_id: String,
    pub token_secret: Secret<String>,
    pub trust: TlsTrust,
    /// Per HTTP call (each retry gets its own); default 30 s.
    pub timeout: Duration,
}

impl PveConfig {
    /// The default per-call timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A config with the default timeout.
    pub fn new(endpoint: impl Into<String>, token_id: impl Into<String>, token_secret: Secret<String>, trust: TlsTrust) -> Self {
        Self { endpoint: endpoint.into(), token_id: token_id.into(), token_secret, trust, timeout: Self::DEFAULT_TIMEOUT }
    }
}
