//! A persistent simulator's cluster on disk (`SimConfig::persistent`): `<state_dir>/cluster.json`, written
//! atomically (a temporary file, fsync, rename over the old one, fsync of the directory) whenever it changed — after
//! every call that can change something and before its answer, when a task ends, every few seconds for anything
//! else, and at a clean stop — so a killed simulator leaves either the previous file or the new one, never a torn
//! one. A file that cannot be read is an error naming it: the simulator does not start on half a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::state::{ClusterState, Guest, Scope, Volume};
use super::tasks::{SavedTask, Tasks};
use crate::config::StorageSpec;

/// The file's name in the state dir.
pub const FILE: &str = "cluster.json";
/// The file's format; another one is refused.
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("reading the simulator's saved cluster {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the simulator's saved cluster {path} cannot be read ({reason}), so the simulator does not start on part of it; move the file away to start a fresh cluster (the guests' disks beside it are then cleared)")]
    Corrupt { path: PathBuf, reason: String },
    #[error("writing the simulator's cluster to {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Everything a restarted simulator needs to be the same cluster: the nodes' addresses, storages (their
/// `content` may have been changed through the API), volumes, guests (configs, pending changes, snapshots,
/// whether they run, their addresses and container host keys), the addresses in use and the nets they come from,
/// and the newest tasks. Files on storages (snippets, templates, backups) and the real guests' disks are files in
/// the state dir already. Users, tokens and ACLs come from the config at every start.
#[derive(Debug, Serialize, Deserialize)]
pub struct Saved {
    version: u32,
    nodes: BTreeMap<String, Ipv4Addr>,
    storages: BTreeMap<String, StorageSpec>,
    volumes: Vec<((Scope, String), Volume)>,
    guests: BTreeMap<u32, Guest>,
    used_ips: BTreeSet<Ipv4Addr>,
    nets: Vec<(u8, u8)>,
    pub tasks: Vec<SavedTask>,
}

impl Saved {
    /// The cluster's state (tasks are added by the caller, outside the state's lock).
    pub fn of_state(st: &ClusterState) -> Saved {
        Saved {
            version: VERSION,
            nodes: st.nodes.iter().map(|(n, s)| (n.clone(), s.ip)).collect(),
            storages: st.storages.clone(),
            volumes: st.volumes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            guests: st.guests.clone(),
            used_ips: st.used_ips.clone(),
            nets: st.pool.nets(),
            tasks: Vec::new(),
        }
    }

    /// Makes `st` (freshly built from the config) and `tasks` the saved cluster. Nodes come from the config; a
    /// saved node the config no longer has is reported and its address dropped.
    pub fn apply(self, st: &mut ClusterState, tasks: &Tasks) {
        for (node, ip) in self.nodes {
            match st.nodes.get_mut(&node) {
                Some(n) => n.ip = ip,
                None => tracing::error!(node, "the saved cluster has a node the configuration no longer has"),
            }
        }
        st.storages = self.storages;
        st.volumes = self.volumes.into_iter().collect();
        st.guests = self.guests;
        st.used_ips = self.used_ips;
        st.pool.reclaim(&self.nets);
        tasks.restore(self.tasks);
    }
}

/// Writes and reads `<state_dir>/cluster.json`.
#[derive(Debug)]
pub struct Persister {
    path: PathBuf,
    /// What was last written: a save that would write the same skips the disk. Held through a save, so saves
    /// never overlap (an older capture never overwrites a newer one).
    last: Mutex<Vec<u8>>,
}

impl Persister {
    pub fn new(state_dir: &Path) -> Persister {
        Persister { path: state_dir.join(FILE), last: Mutex::new(Vec::new()) }
    }

    /// The saved cluster, `None` when there is none yet.
    pub fn load(&self) -> Result<Option<Saved>, PersistError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(PersistError::Read { path: self.path.clone(), source }),
        };
        let corrupt = |reason: String| PersistError::Corrupt { path: self.path.clone(), reason };
        let saved: Saved = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if saved.version != VERSION {
            return Err(corrupt(format!("format version {}, this simulator reads {VERSION}", saved.version)));
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = bytes;
        tracing::info!(path = %self.path.display(), guests = saved.guests.len(), "restored the simulator's cluster");
        Ok(Some(saved))
    }

    /// Writes what `capture` gives if it differs from the last write.
    pub fn save(&self, capture: impl FnOnce() -> Saved) -> Result<(), PersistError> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = serde_json::to_vec(&capture()).map_err(|e| PersistError::Write { path: self.path.clone(), source: e.into() })?;
        if bytes == *last {
            return Ok(());
        }
        self.write(&bytes).map_err(|source| PersistError::Write { path: self.path.clone(), source })?;
        *last = bytes;
        Ok(())
    }

    fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_cluster_reads_back_and_a_torn_one_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = Persister::new(dir.path());
        assert!(p.load().unwrap().is_none(), "no file: a fresh cluster");
        let mut st = ClusterState::default();
        st.guests.insert(105, Guest::new(105, "pve1", crate::backend::GuestKind::Lxc));
        st.used_ips.insert(Ipv4Addr::new(127, 80, 1, 7));
        p.save(|| Saved::of_state(&st)).unwrap();
        let back = Persister::new(dir.path()).load().unwrap().expect("saved");
        let (mut fresh, tasks) = (ClusterState::default(), Tasks::default());
        back.apply(&mut fresh, &tasks);
        assert!(fresh.guests.contains_key(&105) && fresh.used_ips.contains(&Ipv4Addr::new(127, 80, 1, 7)));
        assert_eq!(fresh.next_free_vmid(), Some(100));

        let text = std::fs::read(dir.path().join(FILE)).unwrap();
        std::fs::write(dir.path().join(FILE), &text[..text.len() / 2]).unwrap();
        let err = Persister::new(dir.path()).load().unwrap_err().to_string();
        assert!(err.contains(&dir.path().join(FILE).display().to_string()) && err.contains("move the file away"), "{err}");
        std::fs::write(dir.path().join(FILE), br#"{"version": 99}"#).unwrap();
        let err = Persister::new(dir.path()).load().unwrap_err().to_string();
        assert!(err.contains("cannot be read"), "{err}");
    }
}
