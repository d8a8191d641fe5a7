//! Recently read deployments with their status history, so the hot `GET /deployments/{id}` does not
//! run a query each time. Only for the embedded engines, where this process is the only writer.
//!
//! Coherence: every store write to a deployment or its events drops that entry after the write
//! returns, and bumps an epoch under the same lock. A read fills the cache only if no write happened
//! between its query and the fill (the epoch is unchanged), so a value read before a write can never
//! be put back after it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::deployments::Event;
use crate::core::deployment::{Deployment, DeploymentId};

/// At most this many deployments are kept (about 1–2 KB each): room for every live deployment of a large
/// agent. A full cache starts over (reads refill it).
const CAPACITY: usize = 16_384;

/// One cached deployment and its history, oldest event first.
pub type Detail = Arc<(Deployment, Vec<Event>)>;

#[derive(Default)]
pub struct DetailCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Bumped by every invalidation.
    epoch: u64,
    map: HashMap<DeploymentId, Detail>,
}

impl DetailCache {
    /// The epoch to pass to [`fill`](Self::fill), taken before reading the database.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    pub fn get(&self, id: &DeploymentId) -> Option<Detail> {
        self.lock().map.get(id).cloned()
    }

    /// Keeps `detail`, unless something was written since `epoch` was taken.
    pub fn fill(&self, epoch: u64, detail: Detail) {
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return;
        }
        if inner.map.len() >= CAPACITY {
            inner.map.clear();
        }
        inner.map.insert(detail.0.id.clone(), detail);
    }

    /// Drops `id` after a write to it (call once the write has returned, whether or not it succeeded).
    pub fn invalidate(&self, id: &DeploymentId) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.map.remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::deployment::{RawSpec, Spec};
    use crate::core::limits::{Limits, RepoPolicy};

    fn detail(name: &str) -> Detail {
        let raw = RawSpec { name: Some(name.into()), framework: Some("flask".into()), repo_url: Some("https://github.com/o/r".into()), ..RawSpec::default() };
        let spec = Spec::parse(raw, &Limits::default(), &RepoPolicy::default()).unwrap();
        Arc::new((Deployment::new(spec, 1), Vec::new()))
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let cache = DetailCache::default();
        let d = detail("a");
        let id = d.0.id.clone();
        let before = cache.epoch();
        cache.invalidate(&id); // a write lands while the read is in flight
        cache.fill(before, d.clone());
        assert!(cache.get(&id).is_none());
        cache.fill(cache.epoch(), d);
        assert!(cache.get(&id).is_some());
        cache.invalidate(&id);
        assert!(cache.get(&id).is_none());
    }
}
