//! A guest's pinned SSH host key: the OpenSSH public key the agent gave it, or the `SHA256:` fingerprint Proxmox
//! logged when it made a container's key. Parsed once, where it is learned, and carried as this type. Pure; no I/O.

use russh::keys::{HashAlg, PublicKey};

/// What a host must present: exactly this key, or a key with this `SHA256:` fingerprint (what
/// Proxmox logs when it makes a container's host key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPin {
    Key(PublicKey),
    Fingerprint(String),
}

/// A text that is neither an OpenSSH public-key line nor a `SHA256:` fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a host key to pin (expected `<type> <base64> [comment]` or `SHA256:` and 43 base64 characters): {0}")]
pub struct BadHostKey(pub String);

impl HostKeyPin {
    /// `ssh-ed25519 AAAA… [comment]`, or `SHA256:` followed by 43 characters of unpadded base64.
    pub fn parse(text: &str) -> Result<Self, BadHostKey> {
        let t = text.trim();
        match t.strip_prefix("SHA256:") {
            Some(b64) if b64.len() == 43 && b64.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/') => Ok(Self::Fingerprint(t.to_string())),
            Some(_) => Err(BadHostKey(format!("{t:?} is not a SHA256 fingerprint (SHA256: and 43 base64 characters)"))),
            None => PublicKey::from_openssh(t).map(Self::Key).map_err(|e| BadHostKey(e.to_string())),
        }
    }

    /// The text `parse` reads back: the key's OpenSSH line, or the fingerprint.
    pub fn to_text(&self) -> String {
        match self {
            Self::Key(k) => k.to_openssh().unwrap_or_else(|_| fingerprint(k)),
            Self::Fingerprint(f) => f.clone(),
        }
    }

    /// The pinned key's fingerprint.
    pub fn fingerprint(&self) -> String {
        match self {
            Self::Key(k) => fingerprint(k),
            Self::Fingerprint(f) => f.clone(),
        }
    }

    /// Whether `key` is the pinned one.
    pub fn matches(&self, key: &PublicKey) -> bool {
        match self {
            Self::Key(k) => k.key_data() == key.key_data(),
            Self::Fingerprint(f) => &fingerprint(key) == f,
        }
    }
}

/// `SHA256:…` (unpadded base64), the form `ssh-keygen -lf` and OpenSSH's messages print.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_reads_back_from_its_text() {
        let pair = crate::keys::generate_ed25519("guest");
        let key = HostKeyPin::parse(&pair.public_openssh).unwrap();
        assert_eq!(HostKeyPin::parse(&key.to_text()).unwrap(), key);
        let fp = HostKeyPin::parse(&key.fingerprint()).unwrap();
        assert_eq!(fp.to_text(), key.fingerprint());
        assert!(HostKeyPin::parse("SHA256:short").is_err() && HostKeyPin::parse("not a key").is_err());
    }
}
