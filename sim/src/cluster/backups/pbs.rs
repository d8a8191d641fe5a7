//! Proxmox Backup Server storages (type `pbs`, pve-storage `src/PVE/Storage/PBSPlugin.pm` at 0c56bad): added
//! through `POST /storage` (`API2/Storage/Config.pm:198-296`, pve-common `SectionConfig.pm` `check_config`), content
//! `backup` only (`PBSPlugin.pm:31-40`), shared by every node (`Plugin.pm:37-39` `@SHARED_STORAGE`, set in
//! `Plugin.pm:603-605`). The sim plays the backup server itself: a datastore is a directory under
//! `<state_dir>/pbs/<server>_<port>/<datastore>/` (namespaces as nested `ns/<name>`), one directory per snapshot
//! `<ct|vm>/<id>/<YYYY-MM-DDTHH:MM:SSZ>/` holding the sim's archive (the same tar as a file storage's, `archive.rs`;
//! no chunks), its notes and a `.protected` mark. Two storages naming the same server, datastore and namespace see
//! the same backups, as on PBS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use super::prune::{self, Entry, Keep, Mark};
use crate::backend::GuestKind;
use crate::config::{PbsTarget, StorageKind, StorageSpec};
use crate::http::envelope::ApiError;

/// The archive inside a snapshot directory (the sim's stand-in for `root.pxar` / the drive images).
pub const ARCHIVE: &str = "archive.tar.zst";
/// The snapshot's notes (PBS keeps them in the manifest; `update_volume_notes`, `PBSPlugin.pm:898-906`).
pub const NOTES: &str = "notes";
/// Marks a protected snapshot (`update_volume_attribute` `protected`, `PBSPlugin.pm:933-958`).
pub const PROTECTED: &str = ".protected";

/// One PBS backup snapshot of a guest: `backup/<vm|ct>/<vmid>/<time>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub kind: GuestKind,
    pub vmid: u32,
    pub time: u64,
}

/// `ct` or `vm`, the backup type vzdump gives PBS (mgr `PVE/VZDump.pm:925-934`).
pub fn btype(kind: GuestKind) -> &'static str {
    match kind {
        GuestKind::Lxc => "ct",
        GuestKind::Qemu => "vm",
    }
}

/// `strftime("%FT%TZ", gmtime($t))` (`PBSPlugin.pm:226-233` `print_volid`; `VZDump.pm:933`).
pub fn time_str(t: u64) -> String {
    let s = prune::stamp(t);
    format!("{}-{}-{}T{}:{}:{}Z", &s[0..4], &s[5..7], &s[8..10], &s[11..13], &s[14..16], &s[17..19])
}

impl Snapshot {
    /// `parse_volname` (`PBSPlugin.pm:607-628`): `backup/<type>/<id>/<YYYY-MM-DDTHH:MM:SSZ>`, no white space or `_`
    /// in type and id. Only `vm`/`ct` snapshots of a numeric id are guests' backups (`list_volumes` skips the rest,
    /// `PBSPlugin.pm:772-773`), so the rest is `None` here.
    pub fn parse_volname(volname: &str) -> Option<Snapshot> {
        let rest = volname.strip_prefix("backup/")?;
        let mut parts = rest.split('/');
        let (t, id, time) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let kind = match t {
            "ct" => GuestKind::Lxc,
            "vm" => GuestKind::Qemu,
            _ => return None,
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || id.len() > 9 {
            return None;
        }
        let b = time.as_bytes();
        if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z' {
            return None;
        }
        let stamp = format!("{}_{}_{}-{}_{}_{}", &time[0..4], &time[5..7], &time[8..10], &time[11..13], &time[14..16], &time[17..19]);
        Some(Snapshot { kind, vmid: id.parse().ok()?, time: prune::parse_stamp(&stamp)? })
    }

    /// `backup/ct/200/2030-01-01T03:00:00Z`
    pub fn volname(&self) -> String {
        format!("backup/{}", self.name())
    }

    /// `ct/200/2030-01-01T03:00:00Z`, the snapshot's name on the server (`$pbs_snapshot_name`, `VZDump.pm:934`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.group(), time_str(self.time))
    }

    /// `ct/200`, the backup group (`VZDump.pm:925-931`).
    pub fn group(&self) -> String {
        format!("{}/{}", btype(self.kind), self.vmid)
    }

    /// The snapshot's directory in a datastore directory.
    pub fn dir(&self, datastore: &Path) -> PathBuf {
        datastore.join(btype(self.kind)).join(self.vmid.to_string()).join(time_str(self.time))
    }
}

/// PBS's datastore names (`PROXMOX_SAFE_ID_REGEX`, `[A-Za-z0-9_][A-Za-z0-9._-]*`); anything else is no datastore of
/// the sim's backup server, so activating the storage fails (`activate_storage`, `PBSPlugin.pm:844-861`).
fn safe_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && !s.starts_with(['.', '-']) && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// The directory of the storage's datastore (and namespace), when its names are ones the sim's server has.
pub fn datastore_dir(state_dir: &Path, t: &PbsTarget) -> Option<PathBuf> {
    if !safe_id(&t.datastore) {
        return None;
    }
    let mut dir = state_dir.join("pbs").join(format!("{}_{}", t.server.replace(['[', ']', ':'], "_"), t.port)).join(&t.datastore);
    if let Some(ns) = &t.namespace {
        let parts: Vec<&str> = ns.split('/').collect();
        if parts.len() > 7 || !parts.iter().all(|p| safe_id(p)) {
            return None;
        }
        for p in parts {
            dir = dir.join("ns").join(p);
        }
    }
    Some(dir)
}

/// The datastore directory of storage `spec`, or `None` when it is no (usable) PBS storage.
pub fn store_of(state_dir: &Path, spec: &StorageSpec) -> Option<PathBuf> {
    spec.pbs.as_ref().and_then(|t| datastore_dir(state_dir, t))
}

/// The snapshots in a datastore that hold an archive (of `vmid` when given), oldest first.
pub fn snapshots(datastore: &Path, vmid: Option<u32>) -> Vec<Snapshot> {
    let mut out = Vec::new();
    for kind in [GuestKind::Lxc, GuestKind::Qemu] {
        let Ok(ids) = std::fs::read_dir(datastore.join(btype(kind))) else { continue };
        for id in ids.flatten() {
            let Ok(times) = std::fs::read_dir(id.path()) else { continue };
            for time in times.flatten() {
                let volname = format!("backup/{}/{}/{}", btype(kind), id.file_name().to_string_lossy(), time.file_name().to_string_lossy());
                let Some(snap) = Snapshot::parse_volname(&volname) else { continue };
                if vmid.is_none_or(|v| v == snap.vmid) && time.path().join(ARCHIVE).is_file() {
                    out.push(snap);
                }
            }
        }
    }
    out.sort_by_key(|s| (s.time, s.vmid));
    out
}

/// One snapshot as `list_volumes` gives it (`PBSPlugin.pm:749-800`): `volid`, `format` `pbs-ct`/`pbs-vm`, `size`,
/// `content: backup`, `vmid`, `ctime` (the backup time), `subtype` `lxc`/`qemu`, `notes` (the server's `comment`,
/// the notes' first line) and `protected` when set.
pub fn content_entry(storage: &str, datastore: &Path, snap: &Snapshot) -> Value {
    let dir = snap.dir(datastore);
    let size = std::fs::metadata(dir.join(ARCHIVE)).map(|m| m.len()).unwrap_or(1);
    let mut entry = json!({
        "volid": format!("{storage}:{}", snap.volname()),
        "format": format!("pbs-{}", btype(snap.kind)),
        "size": size,
        "content": "backup",
        "vmid": snap.vmid,
        "ctime": snap.time,
        "subtype": match snap.kind { GuestKind::Lxc => "lxc", GuestKind::Qemu => "qemu" },
    });
    if let Some(notes) = std::fs::read_to_string(dir.join(NOTES)).ok().as_deref().and_then(|n| n.lines().next()) {
        entry["notes"] = json!(notes);
    }
    if dir.join(PROTECTED).exists() {
        entry["protected"] = json!(1);
    }
    entry
}

/// `prune_backups` (`PBSPlugin.pm:409-497`) for one guest's group: the server marks the group (the sim with
/// `prune_mark_backup_group`'s rule, `prune.rs`, in UTC) and forgets what is not kept; protected snapshots stay.
/// Logs `running 'proxmox-backup-client prune' for 'ct/200'`; returns how many went.
pub fn prune_group(datastore: &Path, kind: GuestKind, vmid: u32, keep: &Keep, mut log: impl FnMut(String)) -> Result<usize, String> {
    log(format!("running 'proxmox-backup-client prune' for '{}/{vmid}'", btype(kind)));
    let group: Vec<Entry<Snapshot>> = snapshots(datastore, Some(vmid))
        .into_iter()
        .filter(|s| s.kind == kind)
        .map(|s| Entry { ctime: s.time, protected: s.dir(datastore).join(PROTECTED).exists(), item: s })
        .collect();
    let mut pruned = 0;
    for (mark, snap) in prune::mark(group, keep) {
        if mark == Mark::Remove {
            std::fs::remove_dir_all(snap.dir(datastore)).map_err(|e| format!("prune '{}': {e}", snap.group()))?;
            pruned += 1;
        }
    }
    Ok(pruned)
}

/// `free_image` (`PBSPlugin.pm:668-676`, `proxmox-backup-client forget`): the snapshot goes; a protected one is
/// refused by the server.
pub fn forget(datastore: &Path, snap: &Snapshot) -> Result<bool, String> {
    let dir = snap.dir(datastore);
    if dir.join(PROTECTED).exists() {
        return Err(format!("cannot remove protected snapshot '{}'", snap.name()));
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("removing snapshot '{}' failed: {e}", snap.name())),
    }
}

/// Options of a `pbs` storage (`PBSPlugin.pm:63-82` `options`); `server` and `datastore` are fixed, so required
/// at creation (pve-common `SectionConfig.pm` `check_config`: "missing value for required option").
const OPTIONS: &[&str] = &[
    "server", "datastore", "namespace", "port", "nodes", "disable", "content", "username", "password", "encryption-key",
    "master-pubkey", "prune-backups", "max-protected-backups", "fingerprint",
];
/// Of those, what the sim does not model (501).
const NOT_MODELLED: &[&str] = &["disable", "encryption-key", "master-pubkey", "prune-backups", "max-protected-backups"];

/// `POST /storage` (pve-storage `API2/Storage/Config.pm:198-296`) for type `pbs`; other types are not modelled
/// (501). In PVE's order: `check_config` (each option must be one of the type's, `unexpected property 'path'`;
/// `content` reduced to what the plugin supports, `decode_value` `Plugin.pm:470-496`; the fixed options present),
/// then under the config lock `storage ID 'x' already defined`, then activation: a datastore the server does not have
/// fails it (`PBSPlugin.pm:844-861`, `create storage failed: …`). The answer is `{storage, type}`.
pub fn create(c: &Arc<crate::cluster::Cluster>, call: &crate::cluster::ApiCall) -> Result<Value, ApiError> {
    let p = &call.params;
    let storage = p.need("storage")?;
    let kind = p.need("type")?;
    if kind != "pbs" {
        return Err(ApiError::NotImplemented(format!("adding storages of type '{kind}' is not modelled by pvedeploy-sim")));
    }
    for key in p.0.keys().filter(|k| !matches!(k.as_str(), "storage" | "type")) {
        if !OPTIONS.contains(&key.as_str()) {
            return Err(ApiError::server(format!("unexpected property '{key}'")));
        }
        if NOT_MODELLED.contains(&key.as_str()) {
            return Err(ApiError::NotImplemented(format!("pbs storage option '{key}' is not modelled by pvedeploy-sim")));
        }
    }
    let content = match p.str("content") {
        Some(text) => {
            let wanted: Vec<String> = crate::schema::formats::split_list(&text).into_iter().filter(|c| c == "backup" || c == "none").collect();
            if wanted.iter().any(|c| c == "none") && wanted.len() > 1 {
                return Err(ApiError::server("unable to combine 'none' with other content types"));
            }
            wanted.into_iter().filter(|c| c == "backup").collect()
        }
        // `plugindata`'s default content (`PBSPlugin.pm:33`, applied in `Plugin.pm:598-600`).
        None => vec!["backup".to_string()],
    };
    for required in ["server", "datastore"] {
        if !p.has(required) {
            return Err(ApiError::server(format!("missing value for required option '{required}'")));
        }
    }
    let nodes = p.str("nodes").map(|n| crate::schema::formats::split_list(&n)).filter(|n| !n.is_empty());
    let target = PbsTarget {
        server: p.need("server")?,
        port: p.u64("port").and_then(|n| u16::try_from(n).ok()).unwrap_or(8007),
        datastore: p.need("datastore")?,
        namespace: p.str("namespace"),
        username: p.str("username"),
        fingerprint: p.str("fingerprint"),
        password: p.has("password"),
    };
    let mut st = c.state();
    if st.storages.contains_key(&storage) {
        return Err(ApiError::server(format!("create storage failed: storage ID '{storage}' already defined")));
    }
    let Some(dir) = datastore_dir(&c.state_dir, &target) else {
        return Err(ApiError::server(format!("create storage failed: {storage}: Cannot find datastore '{}', check permissions and existence!", target.datastore)));
    };
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::server(format!("create storage failed: {e}")))?;
    let spec = StorageSpec { id: storage.clone(), kind: StorageKind::Pbs, content, shared: true, total_bytes: 1 << 40, nodes, pbs: Some(target) };
    st.storages.insert(storage.clone(), spec);
    Ok(json!({"storage": storage, "type": "pbs"}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volnames_as_pbs_plugin_parses_them() {
        let s = Snapshot::parse_volname("backup/ct/200/2030-01-01T03:00:00Z").unwrap();
        assert_eq!((s.kind, s.vmid, s.time), (GuestKind::Lxc, 200, 1_893_466_800));
        assert_eq!(s.volname(), "backup/ct/200/2030-01-01T03:00:00Z");
        for bad in ["backup/host/x/2030-01-01T03:00:00Z", "backup/ct/200/2030-01-01 03:00:00Z", "backup/ct/../2030-01-01T03:00:00Z", "backup/ct/200/2030-01-01T03:00:00Z/x", "backup/vzdump-lxc-200-2030_01_01-03_00_00.tar"] {
            assert_eq!(Snapshot::parse_volname(bad), None, "{bad}");
        }
    }

    #[test]
    fn datastore_names_cannot_leave_the_servers_directory() {
        let t = |ds: &str, ns: Option<&str>| PbsTarget { server: "pbs.example".into(), port: 8007, datastore: ds.into(), namespace: ns.map(str::to_string), username: None, fingerprint: None, password: false };
        assert!(datastore_dir(Path::new("/s"), &t("store1", Some("team/a"))).is_some_and(|d| d.ends_with("store1/ns/team/ns/a")));
        for (ds, ns) in [("..", None), ("a/b", None), ("x", Some("..")), ("x", Some("a//b"))] {
            assert_eq!(datastore_dir(Path::new("/s"), &t(ds, ns)), None, "{ds} {ns:?}");
        }
    }
}
