//! The SSH executor: runs argument vectors and uploads files on guests and Proxmox nodes over russh, with pinned host keys, key login, timeouts, live output lines and a bounded number of sessions per host.
//!
//! ```text
//! Ssh::new(settings) ──connect(&Target)──► Connection ──run(&RemoteCommand, lines)──► Finished
//!                                                      └─upload(path, bytes, mode)  (SFTP, atomic)
//! ```
//! Everything here is async on tokio; the only blocking step (parsing a private key) runs on the
//! blocking pool ([`load_private_key`]). A remote shell string is only ever built by [`quote`].

mod connection;
mod error;
mod handler;
mod host_key;
mod lines;
pub mod quote;
mod sftp;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use tokio::sync::Semaphore;

pub use connection::{Connection, Finished, Output, RemoteCommand};
pub use error::SshError;
pub use host_key::{fingerprint, load_private_key, parse_public_key, HostKeyPin, KeyError};
pub use lines::{OutputLine, Stream, MAX_LINE, TRUNCATED};

use handler::{HandlerError, Pinned};

/// Who to talk to and how to know it is really them.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub user: String,
    /// The pinned host key: a server presenting any other key is refused ([`SshError::HostKeyMismatch`]).
    pub host_key: HostKeyPin,
    /// Our key for public-key login (the deployment's / agent's deploy key).
    pub client_key: Arc<PrivateKey>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("host_key", &self.host_key.fingerprint())
            .field("client_key", &fingerprint(self.client_key.public_key()))
            .finish()
    }
}

/// Limits for every connection made by one [`Ssh`].
#[derive(Debug, Clone)]
pub struct SshSettings {
    /// TCP connect + handshake + authentication.
    pub connect_timeout: Duration,
    /// Default per command, when [`RemoteCommand::timeout`] is `None`; also each SFTP request's limit.
    pub command_timeout: Duration,
    /// Session channels (commands, uploads) open at once per host address, across all connections
    /// of this `Ssh`; more wait their turn. Keep it ≤ OpenSSH's `MaxSessions` (10).
    pub max_sessions_per_host: usize,
    /// Also enforce each command's timeout on the host: the argv runs under coreutils
    /// `timeout --signal=HUP` (a few seconds later than ours), because OpenSSH refuses the `signal`
    /// request for root logins and closing a channel without a PTY does not stop a silent command.
    /// Turn it off only for hosts without coreutils (the command's argv[0] must then not be a builtin either way).
    pub enforce_remote_timeout: bool,
}

impl Default for SshSettings {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_secs(15), command_timeout: Duration::from_secs(600), max_sessions_per_host: 4, enforce_remote_timeout: true }
    }
}

/// The executor: settings and one semaphore per host address. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Ssh {
    settings: Arc<SshSettings>,
    hosts: Arc<Mutex<HashMap<SocketAddr, Arc<Semaphore>>>>,
}

impl Ssh {
    pub fn new(settings: SshSettings) -> Self {
        Self { settings: Arc::new(settings), hosts: Arc::default() }
    }

    pub fn settings(&self) -> &SshSettings {
        &self.settings
    }

    fn permits(&self, addr: SocketAddr) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts.entry(addr).or_insert_with(|| Arc::new(Semaphore::new(self.settings.max_sessions_per_host.max(1)))).clone()
    }

    /// Connects, checks the host key against the pinned one, and logs in with the client key,
    /// all within `connect_timeout`.
    pub async fn connect(&self, t: &Target) -> Result<Connection, SshError> {
        let addr = t.addr;
        let after = self.settings.connect_timeout;
        let handle = tokio::time::timeout(after, handshake(t)).await.map_err(|_| SshError::ConnectTimeout { addr, after })??;
        Ok(Connection::new(addr, handle, self.permits(addr), self.settings.clone()))
    }
}

async fn handshake(t: &Target) -> Result<client::Handle<Pinned>, SshError> {
    let addr = t.addr;
    let config = Arc::new(client::Config {
        // Detect a dead server: three unanswered keepalives 15 s apart end the session.
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    });
    let pinned = Pinned { expected: t.host_key.clone() };
    let mut handle = client::connect(config, addr, pinned).await.map_err(|e| match e {
        HandlerError::HostKey { got } => SshError::HostKeyMismatch { addr, expected_fingerprint: t.host_key.fingerprint(), got_fingerprint: got },
        HandlerError::Russh(e) => SshError::Connect { addr, message: e.to_string() },
    })?;
    let connect_err = |e: russh::Error| SshError::Connect { addr, message: e.to_string() };
    // Only RSA keys care which signature hash the server supports.
    let hash = match t.client_key.algorithm() {
        russh::keys::Algorithm::Rsa { .. } => handle.best_supported_rsa_hash().await.map_err(connect_err)?.flatten(),
        _ => None,
    };
    let key = PrivateKeyWithHashAlg::new(t.client_key.clone(), hash);
    let auth = handle.authenticate_publickey(t.user.clone(), key).await.map_err(connect_err)?;
    if !auth.success() {
        return Err(SshError::Auth { addr, user: t.user.clone() });
    }
    Ok(handle)
}
