//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw body under the configured secrets, compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::github::GithubSettings;
use crate::config::Secret;

/// Why a signature is refused; the caller answers 401 for every variant and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request has no X-Hub-Signature-256 header")]
    Missing,
    #[error("only an X-Hub-Signature (SHA-1) header was sent; SHA-1 signatures are not accepted, X-Hub-Signature-256 is required")]
    Sha1Only,
    #[error("X-Hub-Signature-256 must be `sha256=` followed by 64 lowercase hexadecimal digits")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body under any configured webhook secret")]
    Mismatch,
}

/// Which secret a valid signature was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// The global secret: valid for repositories without their own secret.
    Global,
    /// The secret of this repository (lowercase `owner/repo`), valid for it alone.
    Repo(String),
}

impl Signer {
    /// Whether this signer may speak for `repo` (`None`: the payload names no repository, e.g. an
    /// organisation's ping). A repository with its own secret accepts only that secret.
    pub fn covers(&self, repo: Option<&str>, keys: &WebhookKeys) -> bool {
        match (self, repo) {
            (_, None) => true,
            (Signer::Repo(name), Some(r)) => name.eq_ignore_ascii_case(r),
            (Signer::Global, Some(r)) => !keys.repos.iter().any(|(name, _)| name.eq_ignore_ascii_case(r)),
        }
    }
}

/// The secrets a delivery may be signed with.
#[derive(Clone, Default)]
pub struct WebhookKeys {
    global: Option<Secret<String>>,
    repos: Vec<(String, Secret<String>)>,
}

impl WebhookKeys {
    pub fn new(settings: &GithubSettings) -> Option<Self> {
        settings.webhooks_enabled().then(|| Self { global: settings.webhook_secret.clone(), repos: settings.repo_secrets.clone() })
    }

    /// Checks the signature header against every configured secret, each in constant time, before
    /// anything reads the body. The loop does not stop at a match, so timing says nothing about which
    /// secret matched (a handful of secrets: a handful of HMACs).
    pub fn verify(&self, sha256_header: Option<&str>, sha1_present: bool, body: &[u8]) -> Result<Signer, SignatureError> {
        let header = match sha256_header {
            Some(h) => h,
            None if sha1_present => return Err(SignatureError::Sha1Only),
            None => return Err(SignatureError::Missing),
        };
        let hex_digits = header.strip_prefix("sha256=").ok_or(SignatureError::Malformed)?;
        if hex_digits.len() != 64 || !hex_digits.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(SignatureError::Malformed);
        }
        let presented = hex::decode(hex_digits).map_err(|_| SignatureError::Malformed)?;
        let candidates = self.global.iter().map(|s| (Signer::Global, s)).chain(self.repos.iter().map(|(n, s)| (Signer::Repo(n.clone()), s)));
        let mut found = None;
        for (signer, secret) in candidates {
            if matches(secret, body, &presented) && found.is_none() {
                found = Some(signer);
            }
        }
        found.ok_or(SignatureError::Mismatch)
    }
}

fn matches(secret: &Secret<String>, body: &[u8], presented: &[u8]) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else { return false };
    mac.update(body);
    mac.verify_slice(presented).is_ok()
}

/// `sha256=<hex>` for `body` under `secret`: what GitHub sends (tests and tools sign with it).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(global: Option<&str>, repos: &[(&str, &str)]) -> WebhookKeys {
        WebhookKeys::new(&GithubSettings {
            webhook_secret: global.map(|s| Secret::new(s.to_string())),
            repo_secrets: repos.iter().map(|(n, s)| (n.to_string(), Secret::new(s.to_string()))).collect(),
            api: None,
        })
        .unwrap()
    }

    /// GitHub's documented test vector (docs: "Validating webhook deliveries").
    #[test]
    fn githubs_test_vector_verifies() {
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign("It's a Secret to Everybody", b"Hello, World!"), expected);
        let k = keys(Some("It's a Secret to Everybody"), &[]);
        assert_eq!(k.verify(Some(expected), false, b"Hello, World!"), Ok(Signer::Global));
        assert_eq!(k.verify(Some(expected), false, b"Hello, World?"), Err(SignatureError::Mismatch));
    }

    #[test]
    fn bad_headers_are_refused() {
        let k = keys(Some("It's a Secret to Everybody"), &[]);
        let body = b"Hello, World!";
        assert_eq!(k.verify(None, false, body), Err(SignatureError::Missing));
        assert_eq!(k.verify(None, true, body), Err(SignatureError::Sha1Only));
        let upper = "sha256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17";
        for bad in ["", "sha256=", "sha1=01f5f0f2a8e4d4d0f1c1d4d0f1c1d4d0f1c1d4d0", "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", upper, "sha256=zz"] {
            assert_eq!(k.verify(Some(bad), false, body), Err(SignatureError::Malformed), "{bad:?}");
        }
        assert_eq!(k.verify(Some(&sign("another secret value", body)), false, body), Err(SignatureError::Mismatch));
    }

    #[test]
    fn a_repository_with_its_own_secret_accepts_only_it() {
        let k = keys(Some("global-secret-0123"), &[("octo/app", "app-secret-0123456")]);
        let body = b"{}";
        let by_repo = k.verify(Some(&sign("app-secret-0123456", body)), false, body).unwrap();
        assert_eq!(by_repo, Signer::Repo("octo/app".into()));
        assert!(by_repo.covers(Some("Octo/App"), &k));
        assert!(!by_repo.covers(Some("octo/other"), &k), "a repository's secret cannot speak for another");
        let global = k.verify(Some(&sign("global-secret-0123", body)), false, body).unwrap();
        assert!(global.covers(Some("octo/other"), &k));
        assert!(!global.covers(Some("octo/app"), &k), "the global secret cannot speak for a repository with its own");
    }
}
