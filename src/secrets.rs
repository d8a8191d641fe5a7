//! Seals deployment secrets (environment variable values) at rest with AES-256-GCM under the
//! agent's secrets key, so neither the database nor its backups hold them in the clear.
//!
//! The key is 32 random bytes in `<data_dir>/keys/secrets.key` (mode 0600), created on first use,
//! or given as 64 hex digits in `PVEDEPLOY_SECRETS_KEY` (agents sharing a remote database must share it).

use std::io;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

use crate::config::Secret;

/// The sealing key; never printed.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<key>)")
    }
}

/// A sealed value could not be opened: wrong key (another agent's data dir?) or corrupted.
#[derive(Debug, thiserror::Error)]
#[error("a sealed secret could not be opened: the secrets key differs from the one that sealed it, or the record is corrupt")]
pub struct OpenError;

impl SecretBox {
    pub fn from_key(key: &[u8; 32]) -> Self {
        Self { cipher: Aes256Gcm::new_from_slice(key).expect("32 bytes is an AES-256 key") }
    }

    /// `PVEDEPLOY_SECRETS_KEY` (hex) when given, else the key file in `dir`, created on first use.
    pub fn load_or_create(dir: &Path, from_env: Option<&Secret<String>>) -> io::Result<Self> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if let Some(hexkey) = from_env {
            let bytes = hex::decode(hexkey.expose().trim()).ok().filter(|b| b.len() == 32);
            let key: [u8; 32] = bytes
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "PVEDEPLOY_SECRETS_KEY must be 64 hexadecimal digits (32 bytes)"))?;
            return Ok(Self::from_key(&key));
        }
        let path = dir.join("secrets.key");
        if path.exists() {
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("{} must not be readable by others (mode {mode:o}); chmod 600 it", path.display())));
            }
            let bytes = std::fs::read(&path)?;
            let key: [u8; 32] = bytes.try_into().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{} must hold exactly 32 bytes", path.display())))?;
            return Ok(Self::from_key(&key));
        }
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        io::Write::write_all(&mut f, &key)?;
        f.sync_all()?;
        Ok(Self::from_key(&key))
    }

    /// `base64(nonce || ciphertext+tag)`, bound to `context` (e.g. the deployment and variable name)
    /// so a sealed value cannot be moved to another record.
    pub fn seal(&self, context: &str, plaintext: &str) -> String {
        use base64::Engine as _;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let payload = aes_gcm::aead::Payload { msg: plaintext.as_bytes(), aad: context.as_bytes() };
        let ct = self.cipher.encrypt(&Nonce::from(nonce), payload).expect("encryption with a valid key cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    pub fn open(&self, context: &str, sealed: &str) -> Result<String, OpenError> {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD.decode(sealed).map_err(|_| OpenError)?;
        if raw.len() < 12 + 16 {
            return Err(OpenError);
        }
        let (nonce, ct) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| OpenError)?;
        let payload = aes_gcm::aead::Payload { msg: ct, aad: context.as_bytes() };
        let pt = self.cipher.decrypt(&Nonce::from(nonce), payload).map_err(|_| OpenError)?;
        String::from_utf8(pt).map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_in_its_context() {
        let b = SecretBox::from_key(&[7; 32]);
        let s = b.seal("dep/A", "hunter2");
        assert!(!s.contains("hunter2"));
        assert_ne!(s, b.seal("dep/A", "hunter2"), "fresh nonce every time");
        assert_eq!(b.open("dep/A", &s).unwrap(), "hunter2");
        assert!(b.open("dep/B", &s).is_err(), "bound to its record");
        assert!(SecretBox::from_key(&[8; 32]).open("dep/A", &s).is_err(), "another key");
        assert!(b.open("dep/A", "not base64!").is_err());
        assert_eq!(format!("{b:?}"), "SecretBox(<key>)");
    }

    #[test]
    fn the_key_file_is_created_once_with_strict_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::load_or_create(dir.path(), None).unwrap();
        let b = SecretBox::load_or_create(dir.path(), None).unwrap();
        assert_eq!(b.open("c", &a.seal("c", "v")).unwrap(), "v");
        assert_eq!(std::fs::metadata(dir.path().join("secrets.key")).unwrap().permissions().mode() & 0o777, 0o600);
        let env = Secret::new("00".repeat(32));
        assert!(SecretBox::load_or_create(dir.path(), Some(&env)).is_ok());
        assert!(SecretBox::load_or_create(dir.path(), Some(&Secret::new("abc".into()))).is_err());
    }
}
