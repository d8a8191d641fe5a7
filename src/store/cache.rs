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
    /// Which slot each deployment owns.
    index: HashMap<DeploymentId, usize>,
    /// Taken in turn by deployments not kept yet: the slot under `hand` is the one taken longest ago. A slot
    /// stays its deployment's until the hand comes back to it: a write empties it, and the next read of that
    /// deployment fills it again, so a deployment written and read over and over pushes nothing else out.
    /// Grows to `capacity` as deployments are read.
    slots: Vec<Slot>,
    /// The slot the next deployment not kept yet takes.
    hand: usize,
    capacity: usize,
}

struct Slot {
    owner: DeploymentId,
    /// Empty after a write to `owner`, until it is read again.
    detail: Option<Detail>,
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
        inner.index.get(id).and_then(|&at| inner.slots[at].detail.clone())
    }

    /// Keeps `detail`, unless something was written since `epoch` was taken. A deployment not kept yet takes
    /// the slot taken longest ago, dropping what it held: one entry, so no read waits while a whole cache is
    /// freed (clearing 16,384 entries at once held every reader for 40–53 ms: `cargo bench --bench api`,
    /// docs/benchmarks.md).
    pub fn fill(&self, epoch: u64, detail: Detail) {
        // Declared before the lock is taken, so what it holds is freed after the lock is released.
        let dropped: Option<Slot>;
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return;
        }
        let id = detail.0.id.clone();
        if let Some(&at) = inner.index.get(&id) {
            let old = inner.slots[at].detail.replace(detail);
            drop(inner);
            drop(old);
            return;
        }
        let at = inner.hand;
        inner.hand = (at + 1) % inner.capacity;
        let slot = Slot { owner: id.clone(), detail: Some(detail) };
        if at == inner.slots.len() {
            inner.slots.push(slot);
            dropped = None;
        } else {
            let old = std::mem::replace(&mut inner.slots[at], slot);
            inner.index.remove(&old.owner);
            dropped = Some(old);
        }
        inner.index.insert(id, at);
        drop(inner);
        drop(dropped);
    }

    /// Drops `id`'s entry after a write to it (call once the write has returned, whether or not it succeeded).
    pub fn invalidate(&self, id: &DeploymentId) {
        let mut inner = self.lock();
        inner.epoch += 1;
        let dropped = match inner.index.get(id) {
            Some(&at) => inner.slots[at].detail.take(),
            None => None,
        };
        drop(inner);
        drop(dropped);
    }

    /// How many deployments are kept, after checking that every slot and only those are in the index.
    #[cfg(test)]
    fn len(&self) -> usize {
        let inner = self.lock();
        assert!(inner.slots.len() <= inner.capacity);
        assert_eq!(inner.index.len(), inner.slots.len(), "one index entry per slot");
        for (id, &at) in &inner.index {
            assert_eq!(&inner.slots[at].owner, id, "the index points at the slot its deployment owns");
            if let Some(d) = &inner.slots[at].detail {
                assert_eq!(&d.0.id, id, "a slot holds its owner's deployment");
            }
        }
        inner.slots.iter().filter(|s| s.detail.is_some()).count()
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
        // A deployment written and read again, over and over (a deploy being watched), stays in its own slot
        // and pushes nothing else out.
        for _ in 0..10 {
            cache.invalidate(&ds[2].0.id);
            assert_eq!(kept(&cache), [false, true, false, true, false, false]);
            assert_eq!(cache.len(), 2);
            cache.fill(cache.epoch(), ds[2].clone());
            assert_eq!(kept(&cache), [false, true, true, true, false, false]);
        }
        // The next new one takes the slot taken longest ago (d1's), still in turn.
        cache.fill(cache.epoch(), ds[4].clone());
        assert_eq!(kept(&cache), [false, false, true, true, true, false]);
        cache.fill(cache.epoch(), ds[5].clone());
        assert_eq!(kept(&cache), [false, false, false, true, true, true], "then d2's");
        for round in 0..10 {
            for (i, d) in ds.iter().enumerate() {
                if (round + i) % 4 == 0 {
                    cache.invalidate(&d.0.id);
                }
                cache.fill(cache.epoch(), d.clone());
                assert!(cache.get(&d.0.id).is_some());
                assert!(cache.len() <= 3);
            }
        }
    }
}
