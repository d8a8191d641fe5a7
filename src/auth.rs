//! API tokens: generation, SHA-256 hashing, constant-time verification, and scopes.

use std::sync::{Arc, RwLock};

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

crate::core::spelling::string_enum! {
    /// What a token may do. `admin` includes `deploy`, which includes `read`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum Scope {
        Read = "read",
        Deploy = "deploy",
        Admin = "admin",
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl Principal {
    pub fn allows(&self, needed: Scope) -> bool {
        self.scopes.iter().any(|s| *s >= needed)
    }
}

/// One known token, by hash only.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub name: String,
    pub sha256: [u8; 32],
    pub scopes: Vec<Scope>,
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token: `pvd_` + 32 random bytes in hex.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("pvd_{}", hex::encode(bytes))
}

/// The tokens the agent accepts. Verification hashes the presented token and compares it with
/// every known hash in constant time, so neither the comparison nor the lookup leaks a prefix.
#[derive(Debug, Clone, Default)]
pub struct TokenRegistry {
    entries: Arc<RwLock<Vec<TokenEntry>>>,
}

impl TokenRegistry {
    pub fn new(entries: Vec<TokenEntry>) -> Self {
        Self { entries: Arc::new(RwLock::new(entries)) }
    }

    pub fn add(&self, e: TokenEntry) {
        self.entries.write().expect("token registry poisoned").push(e);
    }

    pub fn verify(&self, presented: &str) -> Option<Principal> {
        let h = hash_token(presented);
        let entries = self.entries.read().expect("token registry poisoned");
        let mut found: Option<&TokenEntry> = None;
        for e in entries.iter() {
            if bool::from(e.sha256.ct_eq(&h)) {
                found = Some(e);
            }
        }
        found.map(|e| Principal { name: e.name.clone(), scopes: e.scopes.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest() {
        let p = Principal { name: "x".into(), scopes: vec![Scope::Deploy] };
        assert!(p.allows(Scope::Read) && p.allows(Scope::Deploy) && !p.allows(Scope::Admin));
    }

    #[test]
    fn verifies_by_hash() {
        let t = generate_token();
        let reg = TokenRegistry::new(vec![TokenEntry { name: "a".into(), sha256: hash_token(&t), scopes: vec![Scope::Read] }]);
        assert_eq!(reg.verify(&t).unwrap().name, "a");
        assert!(reg.verify("pvd_wrong").is_none());
        assert!(t.starts_with("pvd_") && t.len() == 68);
    }
}
