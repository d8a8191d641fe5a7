//! Discord's request signature: Ed25519 over `X-Signature-Timestamp` + raw body, with the application's public key; stale timestamps refused.

use ed25519_dalek::{Signature, VerifyingKey};

/// How old (or how far ahead) a signed timestamp may be.
pub const MAX_SKEW_SECS: i64 = 300;

/// Why a request's signature is refused (always answered 401, nothing done).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Signature-Ed25519 and X-Signature-Timestamp are required")]
    Missing,
    #[error("X-Signature-Ed25519 must be 128 hex digits")]
    Malformed,
    #[error("X-Signature-Timestamp must be Unix seconds within {MAX_SKEW_SECS} s of now")]
    Stale,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks `signature` (hex) over `timestamp` + `body`, and that `timestamp` is recent (`now` in Unix seconds).
pub fn verify(key: &VerifyingKey, signature: Option<&str>, timestamp: Option<&str>, body: &[u8], now: i64) -> Result<(), SignatureError> {
    let (Some(sig), Some(ts)) = (signature, timestamp) else { return Err(SignatureError::Missing) };
    let bytes: [u8; 64] = hex::decode(sig.trim()).ok().and_then(|b| b.try_into().ok()).ok_or(SignatureError::Malformed)?;
    let sig = Signature::from_bytes(&bytes);
    let mut message = Vec::with_capacity(ts.len() + body.len());
    message.extend_from_slice(ts.as_bytes());
    message.extend_from_slice(body);
    key.verify_strict(&message, &sig).map_err(|_| SignatureError::Mismatch)?;
    // Checked after the signature, so an attacker learns nothing about the clock from a forged request.
    let at: i64 = ts.trim().parse().map_err(|_| SignatureError::Stale)?;
    if (now - at).abs() > MAX_SKEW_SECS {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn keys() -> (SigningKey, VerifyingKey) {
        let s = SigningKey::from_bytes(&[7u8; 32]);
        let v = s.verifying_key();
        (s, v)
    }

    fn sign(s: &SigningKey, ts: &str, body: &[u8]) -> String {
        hex::encode(s.sign(&[ts.as_bytes(), body].concat()).to_bytes())
    }

    #[test]
    fn accepts_a_fresh_signature_and_refuses_everything_else() {
        let (s, v) = keys();
        let body = br#"{"type":1}"#;
        let sig = sign(&s, "1000", body);
        assert_eq!(verify(&v, Some(&sig), Some("1000"), body, 1000), Ok(()));
        assert_eq!(verify(&v, Some(&sig), Some("1000"), body, 1000 + MAX_SKEW_SECS), Ok(()));
        assert_eq!(verify(&v, None, Some("1000"), body, 1000), Err(SignatureError::Missing));
        assert_eq!(verify(&v, Some(&sig), None, body, 1000), Err(SignatureError::Missing));
        assert_eq!(verify(&v, Some("zz"), Some("1000"), body, 1000), Err(SignatureError::Malformed));
        assert_eq!(verify(&v, Some(&sig), Some("1000"), br#"{"type":2}"#, 1000), Err(SignatureError::Mismatch), "tampered body");
        assert_eq!(verify(&v, Some(&sig), Some("1001"), body, 1000), Err(SignatureError::Mismatch), "tampered timestamp");
        assert_eq!(verify(&v, Some(&sig), Some("1000"), body, 1000 + MAX_SKEW_SECS + 1), Err(SignatureError::Stale));
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert_eq!(verify(&v, Some(&sign(&other, "1000", body)), Some("1000"), body, 1000), Err(SignatureError::Mismatch), "another key");
    }
}
