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

/// At most this many deployments are kept, about 1 KB each: the deployments a dashboard or a script keeps
/// reading stay here, while a read of any other deployment goes to the database, which serves it fast too
/// (`GET` by id over all of 100,000 stored, none cached: about 8,000–11,000 req/s, p99 ≤ 4.5 ms on 2 cores,
/// `cargo bench --bench api`). 16,384 before: full after such a pass, the cache held 17 MB of the agent's
/// 43.5 MB of anonymous memory. A full cache drops the deployment it has kept longest for each new one (first
/// in, first out).
const CAPACITY: usize = 4_096;

/// One cached deployment and its history, oldest event first.
pub type Detail = Arc<(Deployment, Vec<Event>)>;

pub struct DetailCache {
    inner: Mutex<Inner>,
}

impl Default for DetailCache {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

struct Inner {
    /// Bumped by every invalidation.
    epoch: u64,
    /// Where each kept deployment is in `slots`.
    index: HashMap<DeploymentId, usize>,
    /// The kept deployments, taken in turn by new ones: the slot under `hand` holds the one kept longest.
    /// Grows to `capacity` as deployments are read; an invalidated deployment leaves its slot empty.
    slots: Vec<Option<Detail>>,
    /// The slot the next new deployment takes.
    hand: usize,
    capacity: usize,
}

impl DetailCache {
    fn with_capacity(capacity: usize) -> Self {
        assert!(capacity > 0, "a cache keeps at least one deployment");
        Self { inner: Mutex::new(Inner { epoch: 0, index: HashMap::new(), slots: Vec::new(), hand: 0, capacity }) }
    }

    /// The epoch to pass to [`fill`](Self::fill), taken before reading the database.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    pub fn get(&self, id: &DeploymentId) -> Option<Detail> {
        let inner = self.lock();
        inner.index.get(id).and_then(|&at| inner.slots[at].clone())
    }

    /// Keeps `detail`, unless something was written since `epoch` was taken. When full, the deployment kept
    /// longest makes room: one entry, so no read waits while a whole cache is freed (clearing 16,384 entries
    /// at once held every reader for about 40 ms: `cargo bench --bench api`, docs/benchmarks.md).
    pub fn fill(&self, epoch: u64, detail: Detail) {
        // Declared before the lock is taken, so what it holds is freed after the lock is released.
        let dropped: Option<Detail>;
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return;
        }
        let id = detail.0.id.clone();
        if let Some(&at) = inner.index.get(&id) {
            dropped = inner.slots[at].replace(detail);
            drop(inner);
            drop(dropped);
            return;
        }
        let at = inner.hand;
        inner.hand = (at + 1) % inner.capacity;
        if at == inner.slots.len() {
            inner.slots.push(Some(detail));
            dropped = None;
        } else {
            dropped = inner.slots[at].replace(detail);
            if let Some(old) = &dropped {
                inner.index.remove(&old.0.id);
            }
        }
        inner.index.insert(id, at);
        drop(inner);
        drop(dropped);
    }

    /// Drops `id` after a write to it (call once the write has returned, whether or not it succeeded).
    pub fn invalidate(&self, id: &DeploymentId) {
        let mut inner = self.lock();
        inner.epoch += 1;
        let dropped = inner.index.remove(id).and_then(|at| inner.slots[at].take());
        drop(inner);
        drop(dropped);
    }

    /// How many deployments are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        let inner = self.lock();
        debug_assert_eq!(inner.index.len(), inner.slots.iter().flatten().count());
        inner.index.len()
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

    #[test]
    fn a_full_cache_drops_the_deployment_kept_longest_and_no_more() {
        let cache = DetailCache::with_capacity(3);
        let ds: Vec<Detail> = (0..6).map(|i| detail(&format!("d{i}"))).collect();
        let kept = |cache: &DetailCache| ds.iter().map(|d| cache.get(&d.0.id).is_some()).collect::<Vec<_>>();
        for d in &ds[..3] {
            cache.fill(cache.epoch(), d.clone());
        }
        assert_eq!(kept(&cache), [true, true, true, false, false, false]);
        cache.fill(cache.epoch(), ds[3].clone());
        assert_eq!(kept(&cache), [false, true, true, true, false, false], "the first in is the first out");
        // Filling a kept deployment again replaces it where it is and drops nothing else.
        cache.fill(cache.epoch(), ds[1].clone());
        assert_eq!(kept(&cache), [false, true, true, true, false, false]);
        assert_eq!(cache.len(), 3);
        // An invalidated deployment's slot is the next one's to take, still in turn.
        cache.invalidate(&ds[2].0.id);
        assert_eq!(cache.len(), 2);
        cache.fill(cache.epoch(), ds[4].clone());
        assert_eq!(kept(&cache), [false, false, false, true, true, false], "d1's slot came next, d2's is empty");
        cache.fill(cache.epoch(), ds[5].clone());
        assert_eq!(kept(&cache), [false, false, false, true, true, true]);
        assert_eq!(cache.len(), 3);
        for _ in 0..10 {
            for d in &ds {
                cache.fill(cache.epoch(), d.clone());
                assert!(cache.get(&d.0.id).is_some());
                assert!(cache.len() <= 3);
            }
        }
    }
}
