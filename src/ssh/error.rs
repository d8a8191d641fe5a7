//! `SshError`: every way talking to a guest or node over SSH fails, phrased as what the caller should do.

use std::net::SocketAddr;
use std::time::Duration;

use super::quote::QuoteError;

/// What went wrong over SSH. Each variant says whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The server presented a host key other than the pinned one: possibly an impostor. Never retry;
    /// nothing was sent. Re-pin only after checking the guest out of band.
    #[error("host key of {addr} does not match the pinned key: expected {expected_fingerprint}, got {got_fingerprint}; refusing to connect")]
    HostKeyMismatch { addr: SocketAddr, expected_fingerprint: String, got_fingerprint: String },
    /// No SSH session could be set up (refused, unreachable, reset, not an SSH server). Retrying is
    /// safe: nothing ran.
    #[error("cannot connect to {addr} over SSH: {message}")]
    Connect { addr: SocketAddr, message: String },
    /// Connecting, the handshake or authentication did not finish within `connect_timeout`. Retrying is safe.
    #[error("connecting to {addr} over SSH timed out after {after:?}")]
    ConnectTimeout { addr: SocketAddr, after: Duration },
    /// The server refused our key for `user`: the key is not in its `authorized_keys`. Fix that; retrying
    /// alone does not help.
    #[error("{addr} refused public-key login for user {user:?} (is the deploy key in its authorized_keys?)")]
    Auth { addr: SocketAddr, user: String },
    /// The command `program` (its argv[0]) ran longer than `after`; its channel was closed and the remote
    /// process group sent SIGHUP. It may have done part of its work: rerun only idempotent commands.
    #[error("command {program:?} on {addr} timed out after {after:?} and was stopped")]
    Timeout { addr: SocketAddr, program: String, after: Duration },
    /// The session or a channel broke (server gone, channel refused, connection reset). Reconnect; a
    /// command that was running may or may not have finished.
    #[error("SSH channel to {addr} failed: {message}")]
    Channel { addr: SocketAddr, message: String },
    /// An SFTP operation on `path` failed (no such directory, permission denied, no SFTP subsystem).
    #[error("SFTP on {addr} failed for {path}: {message}")]
    Sftp { addr: SocketAddr, path: String, message: String },
    /// The command cannot be expressed (empty argv, NUL byte): a caller bug, nothing was sent.
    #[error("invalid remote command: {0}")]
    InvalidCommand(#[from] QuoteError),
}

impl SshError {
    /// Whether running the same thing again may succeed (the problem was transient and nothing ran).
    pub fn retry_safe(&self) -> bool {
        matches!(self, SshError::Connect { .. } | SshError::ConnectTimeout { .. })
    }
}
