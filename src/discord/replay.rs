//! Interactions already answered, by id: a replayed interaction (the same signed body posted again within the
//! signature's 5-minute window) is answered once, and acts once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::discord::Snowflake;

/// How long an interaction id is remembered: an interaction token lives 15 minutes, and a signed body older than
/// 5 minutes is refused by the signature check before this is asked.
pub const REMEMBER: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
pub struct Seen {
    ids: Mutex<HashMap<Snowflake, Instant>>,
}

impl Seen {
    /// True the first time `id` is seen (within [`REMEMBER`]); forgets ids older than that.
    pub fn first(&self, id: Snowflake, now: Instant) -> bool {
        let mut ids = self.ids.lock().expect("seen interactions poisoned");
        ids.retain(|_, at| now.saturating_duration_since(*at) < REMEMBER);
        match ids.entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_answered_once() {
        let s = Seen::default();
        let t0 = Instant::now();
        assert!(s.first(Snowflake(1), t0));
        assert!(!s.first(Snowflake(1), t0), "replayed");
        assert!(s.first(Snowflake(2), t0), "another id");
        assert!(!s.first(Snowflake(1), t0 + REMEMBER - Duration::from_secs(1)));
    }
}
