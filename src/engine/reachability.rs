//! Whether the agent can work with its Proxmox VE cluster right now: reachable, the API token accepted,
//! the certificate the pinned one. Probed for `/ready` (one `GET /version`, no retries, bounded, and
//! cached briefly so a readiness probe polling every second does not load the cluster).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Engine;
use crate::pve::{PveError, RetryPolicy};

/// How long one probe result is reused.
const CACHE_FOR: Duration = Duration::from_secs(5);
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reachability {
    Ok { version: String },
    /// No connection, or no answer within the probe's time.
    Unreachable { reason: String },
    /// TLS failed: the certificate is not the pinned one (or not signed by the configured CA).
    CertificateMismatch { reason: String },
    /// The API token was refused (wrong, expired or deleted).
    TokenRejected { reason: String },
    /// Proxmox answered with another error.
    Failing { reason: String },
}

impl Reachability {
    pub fn is_ok(&self) -> bool {
        matches!(self, Reachability::Ok { .. })
    }

    /// `ok`, `unreachable`, `certificate_mismatch`, `token_rejected` or `failing`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reachability::Ok { .. } => "ok",
            Reachability::Unreachable { .. } => "unreachable",
            Reachability::CertificateMismatch { .. } => "certificate_mismatch",
            Reachability::TokenRejected { .. } => "token_rejected",
            Reachability::Failing { .. } => "failing",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Reachability::Ok { .. } => None,
            Reachability::Unreachable { reason } | Reachability::CertificateMismatch { reason } | Reachability::TokenRejected { reason } | Reachability::Failing { reason } => Some(reason),
        }
    }

    fn of(e: PveError) -> Self {
        let reason = e.to_string();
        match e {
            PveError::Tls { .. } => Reachability::CertificateMismatch { reason },
            PveError::Unauthorized => Reachability::TokenRejected { reason },
            PveError::Transport { .. } | PveError::Timeout => Reachability::Unreachable { reason },
            _ => Reachability::Failing { reason },
        }
    }
}

/// The last probe, for `CACHE_FOR`.
#[derive(Default)]
pub struct Probe {
    last: Mutex<Option<(Instant, Reachability)>>,
    one: tokio::sync::Mutex<()>,
}

impl Engine {
    /// The cluster's reachability (`None` without a cluster).
    pub async fn proxmox_reachability(&self) -> Option<Reachability> {
        let prov = self.inner.provisioner.clone()?;
        let probe = &self.inner.probe;
        let cached = || probe.last.lock().expect("probe poisoned").as_ref().filter(|(at, _)| at.elapsed() < CACHE_FOR).map(|(_, r)| r.clone());
        if let Some(r) = cached() {
            return Some(r);
        }
        let _one = probe.one.lock().await;
        if let Some(r) = cached() {
            return Some(r);
        }
        let client = prov.client.clone().with_retry(RetryPolicy::NONE);
        let r = match tokio::time::timeout(PROBE_TIMEOUT, client.version()).await {
            Ok(Ok(v)) => Reachability::Ok { version: v.version },
            Ok(Err(e)) => Reachability::of(e),
            Err(_) => Reachability::Unreachable { reason: format!("no answer from Proxmox VE within {}s", PROBE_TIMEOUT.as_secs()) },
        };
        *probe.last.lock().expect("probe poisoned") = Some((Instant::now(), r.clone()));
        Some(r)
    }
}
