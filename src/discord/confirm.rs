//! Pending `/destroy` and `/restore` confirmations: a short-lived nonce bound to one deployment and the user who asked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::discord::Snowflake;

/// How long the buttons of a `/destroy` stay valid.
pub const TTL: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    deployment: String,
    user: Snowflake,
    expires: Instant,
}

/// Why a button press is not honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmError {
    #[error("this confirmation has expired or was already used; run /destroy or /restore again")]
    Unknown,
    #[error("only the person who ran /destroy or /restore can confirm or cancel it")]
    OtherUser,
}

#[derive(Default)]
pub struct Confirmations {
    pending: Mutex<HashMap<String, Pending>>,
}

impl Confirmations {
    /// A fresh nonce for `user` destroying `deployment`.
    pub fn issue(&self, deployment: &str, user: Snowflake, now: Instant) -> String {
        let nonce = hex::encode(rand::random::<[u8; 12]>());
        let mut p = self.pending.lock().expect("confirmations poisoned");
        p.retain(|_, v| v.expires > now);
        p.insert(nonce.clone(), Pending { deployment: deployment.into(), user, expires: now + TTL });
        nonce
    }

    /// Takes the confirmation `nonce` if `user` issued it for `deployment` (any deployment when `None`)
    /// and it has not expired; a press by another user leaves it in place.
    pub fn take(&self, nonce: &str, deployment: Option<&str>, user: Snowflake, now: Instant) -> Result<String, ConfirmError> {
        let mut p = self.pending.lock().expect("confirmations poisoned");
        let found = p.get(nonce).filter(|v| v.expires > now && deployment.is_none_or(|d| d == v.deployment)).cloned().ok_or(ConfirmError::Unknown)?;
        if found.user != user {
            return Err(ConfirmError::OtherUser);
        }
        p.remove(nonce);
        Ok(found.deployment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_user_within_the_ttl_and_once() {
        let c = Confirmations::default();
        let t0 = Instant::now();
        let n = c.issue("dep-1", Snowflake(1), t0);
        assert_eq!(c.take(&n, Some("dep-1"), Snowflake(2), t0), Err(ConfirmError::OtherUser));
        assert_eq!(c.take(&n, Some("dep-2"), Snowflake(1), t0), Err(ConfirmError::Unknown), "bound to its deployment");
        assert_eq!(c.take(&n, Some("dep-1"), Snowflake(1), t0), Ok("dep-1".into()));
        assert_eq!(c.take(&n, Some("dep-1"), Snowflake(1), t0), Err(ConfirmError::Unknown), "used once");
        let n = c.issue("dep-1", Snowflake(1), t0);
        assert_eq!(c.take(&n, None, Snowflake(1), t0 + TTL + Duration::from_secs(1)), Err(ConfirmError::Unknown), "expired");
    }
}
