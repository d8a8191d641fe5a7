//! Storage locks (`/var/lock/pve-manager/pve-storage-<id>` for local storages, the cluster-wide
//! `storage-<id>` lock for shared ones) with a timeout, as PVE takes them to allocate volumes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

/// One lock per (storage, node) for local storages and per storage for shared ones.
#[derive(Debug, Default)]
pub struct StorageLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// PVE's message when a storage lock cannot be had in time.
pub fn timeout_message(storage: &str, shared: bool) -> String {
    if shared {
        format!("cfs-lock 'storage-{storage}' error: got lock request timeout")
    } else {
        format!("can't lock file '/var/lock/pve-manager/pve-storage-{storage}' - got timeout")
    }
}

impl StorageLocks {
    /// Waits up to `timeout` for the lock; `forced_timeout` fails at once (fault injection).
    pub async fn acquire(
        &self,
        storage: &str,
        node: &str,
        shared: bool,
        timeout: Duration,
        forced_timeout: bool,
    ) -> Result<OwnedMutexGuard<()>, String> {
        if forced_timeout {
            return Err(timeout_message(storage, shared));
        }
        let key = if shared { storage.to_string() } else { format!("{node}/{storage}") };
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(key).or_default().clone()
        };
        tokio::time::timeout(timeout, lock.lock_owned())
            .await
            .map_err(|_| timeout_message(storage, shared))
    }
}
