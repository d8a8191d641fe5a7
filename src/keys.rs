//! SSH key pairs: the agent's own deploy key (kept on disk with mode 0600, never returned by the API)
//! and a fresh ed25519 host key for every guest, injected at provisioning so the guest is verified on first contact.

use std::io;
use std::path::Path;

use rand::RngCore;
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;

use crate::config::Secret;

/// An OpenSSH key pair.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// OpenSSH private key (PEM-like `-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub private_openssh: Secret<String>,
    /// `ssh-ed25519 AAAA… comment`
    pub public_openssh: String,
}

pub fn generate_ed25519(comment: &str) -> KeyPair {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let pair = Ed25519Keypair::from_seed(&seed);
    let key = PrivateKey::new(KeypairData::from(pair), comment).expect("an ed25519 key pair is always valid");
    let private = key.to_openssh(LineEnding::LF).expect("encoding an unencrypted key cannot fail").to_string();
    let public = key.public_key().to_openssh().expect("encoding a public key cannot fail");
    KeyPair { private_openssh: Secret::new(private), public_openssh: public }
}

/// The agent's deploy key in `dir` (`deploy_ed25519`, mode 0600, and `.pub`), created on first use.
pub fn load_or_create_deploy_key(dir: &Path) -> io::Result<KeyPair> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let private_path = dir.join("deploy_ed25519");
    let public_path = dir.join("deploy_ed25519.pub");
    if private_path.exists() {
        let mode = std::fs::metadata(&private_path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("{} must not be readable by others (mode {mode:o}); chmod 600 it", private_path.display())));
        }
        let private = std::fs::read_to_string(&private_path)?;
        let key = PrivateKey::from_openssh(&private).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let public = key.public_key().to_openssh().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        return Ok(KeyPair { private_openssh: Secret::new(private), public_openssh: public });
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let pair = generate_ed25519("pvedeploy-agent");
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&private_path)?;
    io::Write::write_all(&mut f, pair.private_openssh.expose().as_bytes())?;
    f.sync_all()?;
    std::fs::write(&public_path, format!("{}\n", pair.public_openssh))?;
    Ok(pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_and_differ() {
        let a = generate_ed25519("guest-100");
        let b = generate_ed25519("guest-101");
        assert!(a.public_openssh.starts_with("ssh-ed25519 ") && a.public_openssh.ends_with(" guest-100"));
        assert_ne!(a.public_openssh, b.public_openssh);
        assert!(a.private_openssh.expose().contains("OPENSSH PRIVATE KEY"));
        assert!(!format!("{a:?}").contains("PRIVATE KEY"), "Debug never shows the private key");
    }

    #[test]
    fn the_deploy_key_is_created_once_with_strict_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let first = load_or_create_deploy_key(&keys).unwrap();
        let second = load_or_create_deploy_key(&keys).unwrap();
        assert_eq!(first.public_openssh, second.public_openssh);
        let mode = std::fs::metadata(keys.join("deploy_ed25519")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(keys.join("deploy_ed25519"), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create_deploy_key(&keys).is_err(), "a world-readable key is refused");
    }
}
