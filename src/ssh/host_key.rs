//! Pinned keys: parsing an OpenSSH public-key line (`ssh-ed25519 AAAA… comment`) into a key to pin, printing SHA256 fingerprints, and loading the client key off the async workers.

use std::sync::Arc;

use russh::keys::{PrivateKey, PublicKey};

use crate::config::Secret;

/// A key text that is not a usable key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The public-key line does not parse (expected `ssh-ed25519 AAAA… [comment]`).
    #[error("not an OpenSSH public key line (expected `<type> <base64> [comment]`): {0}")]
    Public(String),
    /// The private key does not parse (expected an unencrypted `OPENSSH PRIVATE KEY`); the text is never shown.
    #[error("not a usable OpenSSH private key: {0}")]
    Private(String),
}

/// Parses an OpenSSH public-key line (as in `authorized_keys` or a `.pub` file) into a key to pin.
/// Surrounding whitespace and a trailing comment are accepted.
pub fn parse_public_key(line: &str) -> Result<PublicKey, KeyError> {
    PublicKey::from_openssh(line.trim()).map_err(|e| KeyError::Public(e.to_string()))
}

pub use crate::core::host_key::{fingerprint, HostKeyPin};

/// Parses an OpenSSH private key on a blocking thread (an encrypted key's KDF would stall an async
/// worker), ready for [`super::Target::client_key`].
pub async fn load_private_key(openssh: Secret<String>) -> Result<Arc<PrivateKey>, KeyError> {
    tokio::task::spawn_blocking(move || PrivateKey::from_openssh(openssh.expose()).map(Arc::new).map_err(|e| KeyError::Private(e.to_string())))
        .await
        .map_err(|e| KeyError::Private(format!("key parsing task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_generated_pair_parses_and_its_fingerprint_is_openssh_style() {
        let pair = crate::keys::generate_ed25519("host");
        let public = parse_public_key(&format!("  {}\n", pair.public_openssh)).unwrap();
        let private = load_private_key(pair.private_openssh.clone()).await.unwrap();
        assert_eq!(private.public_key().key_data(), public.key_data());
        let fp = fingerprint(&public);
        assert!(fp.starts_with("SHA256:") && fp.len() == 7 + 43, "{fp}");
    }

    #[test]
    fn a_pin_is_a_key_or_a_fingerprint() {
        let pair = crate::keys::generate_ed25519("host");
        let key = parse_public_key(&pair.public_openssh).unwrap();
        let by_key = HostKeyPin::parse(&pair.public_openssh).unwrap();
        let by_fp = HostKeyPin::parse(&fingerprint(&key)).unwrap();
        assert!(by_key.matches(&key) && by_fp.matches(&key));
        assert_eq!(by_key.fingerprint(), by_fp.fingerprint());
        let other = parse_public_key(&crate::keys::generate_ed25519("other").public_openssh).unwrap();
        assert!(!by_key.matches(&other) && !by_fp.matches(&other));
        assert!(HostKeyPin::parse("SHA256:short").is_err());
    }

    #[tokio::test]
    async fn garbage_is_refused_without_echoing_a_private_key() {
        assert!(matches!(parse_public_key("ssh-ed25519 not-base64"), Err(KeyError::Public(_))));
        let err = load_private_key(Secret::new("-----BEGIN OPENSSH PRIVATE KEY-----\nsecretstuff\n".into())).await.unwrap_err();
        assert!(!err.to_string().contains("secretstuff"), "{err}");
    }
}
