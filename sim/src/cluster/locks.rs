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

    /// A node-local lock file taken with `PVE::Tools::lock_file` (pve-common
    /// `src/PVE/Tools.pm`), e.g. `/var/lock/pve-manager/pve-migrate-100` held by
    /// `guest_migration_lock`: waits up to `timeout`, then fails with
    /// `can't lock file '<path>' - got timeout`.
    pub async fn acquire_file(&self, node: &str, path: &str, timeout: Duration) -> Result<OwnedMutexGuard<()>, String> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(format!("file:{node}:{path}")).or_default().clone()
        };
        tokio::time::timeout(timeout, lock.lock_owned())
            .await
            .map_err(|_| format!("can't lock file '{path}' - got timeout"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_locks_time_out_per_node_and_path() {
        let locks = StorageLocks::default();
        let path = "/var/lock/pve-manager/pve-migrate-100";
        let held = locks.acquire_file("pve1", path, Duration::from_millis(10)).await.unwrap();
        let Err(err) = locks.acquire_file("pve1", path, Duration::from_millis(10)).await else {
            panic!("a held lock file must time out");
        };
        assert_eq!(err, "can't lock file '/var/lock/pve-manager/pve-migrate-100' - got timeout");
        // another node's /var/lock is another file
        let _other = locks.acquire_file("pve2", path, Duration::from_millis(10)).await.unwrap();
        drop(held);
        assert!(locks.acquire_file("pve1", path, Duration::from_millis(10)).await.is_ok());
    }
}
