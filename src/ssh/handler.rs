//! The russh client handler: accepts the server only when it presents exactly the pinned host key (no certificates, no trust on first use).

use russh::client;
use russh::keys::{PublicKey, PublicKeyOrCertificate};

use super::host_key::HostKeyPin;

use super::host_key::fingerprint;

/// Why the handshake stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandlerError {
    #[error("host key mismatch: got {got}")]
    HostKey { got: String },
    #[error(transparent)]
    Russh(#[from] russh::Error),
}

/// Pins one host key.
pub(crate) struct Pinned {
    pub(crate) expected: HostKeyPin,
}

impl client::Handler for Pinned {
    type Error = HandlerError;

    async fn check_server_key(&mut self, server: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        match server {
            // Compare the wire encoding: algorithm and key bytes, the comment plays no part.
            PublicKeyOrCertificate::PublicKey { key, .. } if self.expected.matches(key) => Ok(true),
            PublicKeyOrCertificate::PublicKey { key, .. } => Err(HandlerError::HostKey { got: fingerprint(key) }),
            PublicKeyOrCertificate::Certificate(cert) => {
                Err(HandlerError::HostKey { got: format!("a host certificate for {} (only pinned plain keys are accepted)", fingerprint(&PublicKey::from(cert.public_key().clone()))) })
            }
        }
    }
}
