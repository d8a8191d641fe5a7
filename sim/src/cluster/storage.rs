//! Storages: volume naming and allocation, files on disk (snippets, ISOs, container templates)
//! and the `/nodes/{node}/storage…` endpoints.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::state::{epoch, ClusterState, Volume};
use crate::config::{StorageKind, StorageSpec};
use crate::http::envelope::ApiError;
use crate::http::params::Params;

/// The directory of a storage on a node: `<state_dir>/nodes/<node>/storage/<id>` for local
/// storages, `<state_dir>/shared/<id>` for shared ones.
pub fn storage_dir(state_dir: &Path, spec: &StorageSpec, node: &str) -> PathBuf {
    if spec.shared {
        state_dir.join("shared").join(&spec.id)
    } else {
        state_dir.join("nodes").join(node).join("storage").join(&spec.id)
    }
}

/// Where files of a content type live inside a storage directory (PVE's dir layout).
pub fn content_subdir(content: &str) -> Option<&'static str> {
    match content {
        "snippets" => Some("snippets"),
        "iso" => Some("template/iso"),
        "vztmpl" => Some("template/cache"),
        "import" => Some("import"),
        "backup" => Some(super::backups::DUMP_DIR),
        _ => None,
    }
}

/// A parsed `storage:volname`.
pub fn split_volid(volid: &str) -> Option<(&str, &str)> {
    volid.split_once(':')
}

/// Which kind of volume to name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolKind {
    Disk,
    CloudInit,
}

/// The next free volume name for `vmid` on `storage`, in the storage type's naming scheme.
pub fn new_volid(st: &ClusterState, spec: &StorageSpec, node: &str, vmid: u32, kind: VolKind, base: Option<&str>) -> String {
    let scope = st.scope(&spec.id, node);
    let file = spec.kind.is_file_based();
    let name = |n: Option<u32>| {
        let stem = match (kind, n) {
            (VolKind::CloudInit, _) => format!("vm-{vmid}-cloudinit"),
            (VolKind::Disk, Some(n)) => format!("vm-{vmid}-disk-{n}"),
            (VolKind::Disk, None) => format!("vm-{vmid}-disk-0"),
        };
        let stem = if file { format!("{vmid}/{stem}.qcow2") } else { stem };
        match base {
            Some(b) => format!("{}:{b}/{stem}", spec.id),
            None => format!("{}:{stem}", spec.id),
        }
    };
    if kind == VolKind::CloudInit {
        return name(None);
    }
    // `vm-`, `base-`, `subvol-` and `basevol-` names share one number space (pve-storage
    // `src/PVE/Storage/Plugin.pm:960` `(vm|base|subvol|basevol)-$vmid-disk-(\d+)`, get_next_vm_diskname 970-990).
    let last = |v: &str| {
        let file = v.rsplit(['/', ':']).next().unwrap_or(v);
        ["basevol-", "subvol-", "base-"].iter().find_map(|p| file.strip_prefix(p)).map_or_else(|| file.to_string(), |rest| format!("vm-{rest}"))
    };
    let prefix = format!("{}:", spec.id);
    let taken = |volid: &str| {
        let wanted = last(volid);
        st.volumes.keys().any(|(sc, v)| *sc == scope && v.starts_with(&prefix) && last(v) == wanted)
    };
    (0..)
        .map(|n| name(Some(n)))
        .find(|v| !taken(v))
        .unwrap_or_else(|| name(Some(0)))
}

/// A volume to allocate.
#[derive(Debug, Clone, Copy)]
pub struct NewVolume<'a> {
    pub storage: &'a str,
    pub vmid: u32,
    pub size: u64,
    pub kind: VolKind,
    /// `images` or `rootdir`
    pub content: &'a str,
    /// the base volume of a linked clone
    pub base: Option<&'a str>,
}

impl<'a> NewVolume<'a> {
    pub fn disk(storage: &'a str, vmid: u32, size: u64, content: &'a str) -> Self {
        Self { storage, vmid, size, kind: VolKind::Disk, content, base: None }
    }

    /// PVE's 4 MiB cloud-init drive.
    pub fn cloudinit(storage: &'a str, vmid: u32) -> Self {
        Self { storage, vmid, size: 4 << 20, kind: VolKind::CloudInit, content: "images", base: None }
    }

    /// A linked clone of `base`.
    pub fn linked(storage: &'a str, vmid: u32, size: u64, base: &'a str) -> Self {
        Self { storage, vmid, size, kind: VolKind::Disk, content: "images", base: Some(base) }
    }
}

/// Allocates a volume; fails like PVE when the storage is full or unsuitable.
pub fn alloc(st: &mut ClusterState, node: &str, req: NewVolume<'_>) -> Result<String, String> {
    let NewVolume { storage, vmid, size, kind, content, base } = req;
    let spec = st.storages.get(storage).cloned().ok_or_else(|| format!("storage '{storage}' does not exist"))?;
    if !st.storage_on_node(storage, node) {
        return Err(format!("storage '{storage}' is not available on node '{node}'"));
    }
    if !spec.content.iter().any(|c| c == content) {
        return Err(match content {
            "rootdir" => format!("storage '{storage}' does not support container directories"),
            _ => format!("storage '{storage}' does not support vm images"),
        });
    }
    if base.is_none() && st.storage_used(storage, node) + size > spec.total_bytes {
        return Err(format!("unable to create volume on storage '{storage}' - not enough free space"));
    }
    let volid = new_volid(st, &spec, node, vmid, kind, base);
    let format = if spec.kind.is_file_based() { if content == "rootdir" { "raw" } else { "qcow2" } } else { "raw" };
    let scope = st.scope(storage, node);
    st.volumes.insert(
        (scope, volid.clone()),
        Volume { volid: volid.clone(), storage: storage.to_string(), size, format: format.into(), content: content.into(), vmid, ctime: epoch() },
    );
    Ok(volid)
}

/// Removes a volume (no error if it is gone).
pub fn free(st: &mut ClusterState, volid: &str, node: &str) {
    if let Some((storage, _)) = split_volid(volid) {
        let scope = st.scope(storage, node);
        st.volumes.remove(&(scope, volid.to_string()));
    }
}

/// Looks a volume up as seen from `node`.
pub fn volume<'a>(st: &'a ClusterState, volid: &str, node: &str) -> Option<&'a Volume> {
    let (storage, _) = split_volid(volid)?;
    st.volumes.get(&(st.scope(storage, node), volid.to_string()))
}

pub fn volume_mut<'a>(st: &'a mut ClusterState, volid: &str, node: &str) -> Option<&'a mut Volume> {
    let (storage, _) = split_volid(volid)?;
    let scope = st.scope(storage, node);
    st.volumes.get_mut(&(scope, volid.to_string()))
}

/// Files of file-type content (`snippets`, `iso`, `vztmpl`) present on disk.
fn disk_files(state_dir: &Path, spec: &StorageSpec, node: &str) -> Vec<(String, String, u64, u64)> {
    let mut out = Vec::new();
    if !spec.kind.is_file_based() {
        return out;
    }
    let dir = storage_dir(state_dir, spec, node);
    for content in &spec.content {
        let Some(sub) = content_subdir(content) else { continue };
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().to_string();
            let prefix = match content.as_str() {
                "vztmpl" => "vztmpl/",
                "iso" => "iso/",
                "snippets" => "snippets/",
                "backup" => "backup/",
                _ => "import/",
            };
            let ctime = meta
                .modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .unwrap_or_default();
            out.push((format!("{}:{prefix}{name}", spec.id), content.clone(), meta.len(), ctime));
        }
    }
    out
}

/// Whether a file volume (`local:vztmpl/x.tar.zst`, `local:snippets/u.yaml`) exists on `node`.
pub fn file_volume_path(state_dir: &Path, st: &ClusterState, volid: &str, node: &str) -> Option<PathBuf> {
    let (storage, volname) = split_volid(volid)?;
    let spec = st.storages.get(storage)?;
    let (kind, file) = volname.split_once('/')?;
    let sub = content_subdir(kind)?;
    if file.is_empty() || file.contains('/') || file.starts_with('.') {
        return None;
    }
    Some(storage_dir(state_dir, spec, node).join(sub).join(file))
}

fn totals(st: &ClusterState, state_dir: &Path, spec: &StorageSpec, node: &str) -> (u64, u64) {
    let files: u64 = disk_files(state_dir, spec, node).iter().map(|f| f.2).sum();
    let used = (st.storage_used(&spec.id, node) + files).min(spec.total_bytes);
    (spec.total_bytes, used)
}

fn storage_entry(st: &ClusterState, state_dir: &Path, spec: &StorageSpec, node: &str) -> Value {
    let (total, used) = totals(st, state_dir, spec, node);
    json!({
        "storage": spec.id,
        "type": spec.kind.plugin_type(),
        "content": spec.content.join(","),
        "shared": u8::from(spec.shared),
        "active": 1,
        "enabled": 1,
        "total": total,
        "used": used,
        "avail": total - used,
        "used_fraction": if total > 0 { used as f64 / total as f64 } else { 0.0 },
    })
}

/// `GET /nodes/{node}/storage`
pub fn list(st: &ClusterState, state_dir: &Path, node: &str, p: &Params) -> Value {
    let content = p.str("content");
    let only = p.str("storage");
    let entries: Vec<Value> = st
        .storages
        .values()
        .filter(|s| st.storage_on_node(&s.id, node))
        .filter(|s| only.as_ref().is_none_or(|o| o == &s.id))
        .filter(|s| {
            content.as_ref().is_none_or(|c| {
                crate::schema::formats::split_list(c).iter().any(|want| s.content.iter().any(|have| have == want))
            })
        })
        .map(|s| storage_entry(st, state_dir, s, node))
        .collect();
    Value::Array(entries)
}

fn spec_on<'a>(st: &'a ClusterState, node: &str, storage: &str) -> Result<&'a StorageSpec, ApiError> {
    match st.storages.get(storage) {
        Some(s) if st.storage_on_node(storage, node) => Ok(s),
        Some(_) => Err(ApiError::server(format!("storage '{storage}' is not available on node '{node}'"))),
        None => Err(ApiError::server(format!("storage '{storage}' does not exist"))),
    }
}

/// `GET /nodes/{node}/storage/{storage}/status`
pub fn status(st: &ClusterState, state_dir: &Path, node: &str, p: &Params) -> Result<Value, ApiError> {
    let spec = spec_on(st, node, &p.need("storage")?)?;
    let mut v = storage_entry(st, state_dir, spec, node);
    if let Some(obj) = v.as_object_mut() {
        obj.remove("storage");
        obj.remove("used_fraction");
    }
    Ok(v)
}

/// `GET /nodes/{node}/storage/{storage}/content`
pub fn content(st: &ClusterState, state_dir: &Path, node: &str, p: &Params, ident: &crate::auth::Identity) -> Result<Value, ApiError> {
    let storage = p.need("storage")?;
    let spec = spec_on(st, node, &storage)?;
    let want = p.str("content");
    let vmid = p.u32("vmid");
    let scope = st.scope(&storage, node);
    let mut out: Vec<Value> = st
        .volumes
        .iter()
        .filter(|((sc, _), v)| *sc == scope && v.storage == storage)
        .map(|(_, v)| {
            json!({
                "volid": v.volid,
                "content": v.content,
                "format": v.format,
                "size": v.size,
                "used": v.size / 4,
                "vmid": v.vmid,
                "ctime": v.ctime,
            })
        })
        .collect();
    let dump = storage_dir(state_dir, spec, node).join(super::backups::DUMP_DIR);
    out.extend(disk_files(state_dir, spec, node).into_iter().filter_map(|(volid, content, size, ctime)| {
        // Backups: named as `archive_info` reads them, listed only to callers `check_volume_access` lets through
        // (pve-storage `API2/Storage/Content.pm:131-142`).
        if content == "backup" {
            let file = volid.split_once("backup/").map(|(_, f)| f.to_string()).unwrap_or_default();
            if !super::backups::is_archive(&file) {
                return None;
            }
            let notes = std::fs::read_to_string(dump.join(format!("{file}.notes"))).ok();
            let entry = super::backups::content_entry(&storage, &file, size, ctime, dump.join(format!("{file}.protected")).exists(), notes);
            let owner = entry["vmid"].as_u64().and_then(|v| u32::try_from(v).ok());
            return super::backups::may_access(ident, &storage, owner, None).is_ok().then_some(entry);
        }
        let format = match content.as_str() {
            "vztmpl" => volid.rsplit('.').next().map(|ext| format!("t{ext}")).unwrap_or_default(),
            "iso" => "iso".to_string(),
            _ => content.clone(),
        };
        Some(json!({"volid": volid, "content": content, "format": format, "size": size, "ctime": ctime}))
    }));
    // A PBS storage lists its datastore's guest snapshots (`list_volumes`, `PBSPlugin.pm:749-800`), to the same
    // callers `check_volume_access` lets through.
    if let Some(datastore) = super::backups::pbs::store_of(state_dir, spec) {
        let wanted = want.as_ref().is_none_or(|w| w == "backup") && spec.content.iter().any(|c| c == "backup");
        for snap in super::backups::pbs::snapshots(&datastore, vmid).into_iter().filter(|_| wanted) {
            if super::backups::may_access(ident, &storage, Some(snap.vmid), None).is_ok() {
                out.push(super::backups::pbs::content_entry(&storage, &datastore, &snap));
            }
        }
    }
    out.retain(|v| {
        want.as_ref().is_none_or(|w| v["content"].as_str() == Some(w.as_str()))
            && vmid.is_none_or(|id| v["vmid"].as_u64() == Some(u64::from(id)))
    });
    out.sort_by(|a, b| a["volid"].as_str().cmp(&b["volid"].as_str()));
    Ok(Value::Array(out))
}

/// Creates the storage directories (and placeholder container templates) at start.
pub fn prepare_dirs(state_dir: &Path, st: &ClusterState, lxc_templates: &[String], on: Option<&[String]>) -> std::io::Result<()> {
    for spec in st.storages.values().filter(|s| s.kind.is_file_based()) {
        for node in st.nodes.keys().filter(|n| st.storage_on_node(&spec.id, n)) {
            let dir = storage_dir(state_dir, spec, node);
            for content in &spec.content {
                if let Some(sub) = content_subdir(content) {
                    std::fs::create_dir_all(dir.join(sub))?;
                }
            }
        }
    }
    for volid in lxc_templates {
        for node in st.nodes.keys().filter(|n| on.is_none_or(|on| on.contains(n))) {
            if let Some(path) = file_volume_path(state_dir, st, volid, node) {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                if !path.exists() {
                    std::fs::write(&path, b"pvedeploy-sim placeholder container template\n")?;
                }
            }
        }
    }
    Ok(())
}

/// `StorageKind` of a storage id, if it exists.
pub fn kind_of(st: &ClusterState, storage: &str) -> Option<StorageKind> {
    st.storages.get(storage).map(|s| s.kind)
}

/// `normalize_content_filename`: characters other than `[a-zA-Z0-9_.-]` become `_`.
fn normalize_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '_' }).collect()
}

fn extension_ok(content: &str, file: &str) -> bool {
    let lower = file.to_ascii_lowercase();
    match content {
        "iso" => lower.ends_with(".iso") || lower.ends_with(".img"),
        "vztmpl" => [".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2"].iter().any(|e| lower.ends_with(e)),
        _ => [".ova", ".ovf", ".qcow2", ".raw", ".vmdk", ".img"].iter().any(|e| lower.ends_with(e)),
    }
}

fn checksum(algorithm: &str, data: &[u8]) -> Option<String> {
    use sha2::Digest as _;
    Some(match algorithm {
        "sha1" => hex::encode(sha1::Sha1::digest(data)),
        "sha224" => hex::encode(sha2::Sha224::digest(data)),
        "sha256" => hex::encode(sha2::Sha256::digest(data)),
        "sha384" => hex::encode(sha2::Sha384::digest(data)),
        "sha512" => hex::encode(sha2::Sha512::digest(data)),
        _ => return None,
    })
}

/// `POST /nodes/{node}/storage/{storage}/upload` (multipart; an `imgcopy` task).
pub fn upload(c: &std::sync::Arc<super::Cluster>, node: &str, call: &super::ApiCall) -> Result<Value, ApiError> {
    let p = &call.params;
    let storage = p.need("storage")?;
    let content = p.need("content")?;
    let filename = normalize_filename(&p.need("filename")?);
    let file = call.upload.clone().ok_or_else(|| ApiError::server("missing file upload (multipart/form-data)"))?;
    let target = {
        let st = c.state();
        let spec = spec_on(&st, node, &storage)?;
        if !spec.content.contains(&content) {
            return Err(ApiError::server(format!("storage '{storage}' does not support '{content}' content")));
        }
        if !spec.kind.is_file_based() {
            return Err(ApiError::server(format!("storage '{storage}' is not a file based storage")));
        }
        if !extension_ok(&content, &filename) {
            return Err(ApiError::param("filename", "wrong file extension"));
        }
        let sub = content_subdir(&content).unwrap_or("import");
        storage_dir(&c.state_dir, spec, node).join(sub).join(&filename)
    };
    let expected = p.str("checksum").map(|s| s.to_ascii_lowercase());
    let algorithm = p.str("checksum-algorithm");
    let size = file.data.len();
    let upid = c.spawn_task(node, "imgcopy", "", &call.ident, move |c, task| async move {
        super::Cluster::pause(c.timing.task_secs).await;
        task.log(format!("target file: {}", target.display()));
        task.log(format!("file size is: {size}"));
        if let (Some(expected), Some(alg)) = (expected, algorithm) {
            if let Some(got) = checksum(&alg, &file.data) {
                if got != expected {
                    return Err(format!("checksum mismatch: got '{got}' != expect '{expected}'"));
                }
                task.log("calculating checksum...OK, checksum verified");
            }
        }
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("unable to create {}: {e}", dir.display()))?;
        }
        std::fs::write(&target, &file.data).map_err(|e| format!("unable to write '{}' - {e}", target.display()))?;
        task.log("finished file import successfully");
        Ok(0)
    });
    Ok(json!(upid))
}

/// The content types a storage plugin supports (pve-storage `DirPlugin.pm:25-40`, `LvmThinPlugin.pm:32-37`,
/// `NFSPlugin.pm`).
fn plugin_content(kind: StorageKind) -> &'static [&'static str] {
    match kind {
        StorageKind::LvmThin => &["images", "rootdir"],
        StorageKind::Dir | StorageKind::Nfs => &["images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import"],
        // `PBSPlugin.pm:31-40`: `backup` (or `none`).
        StorageKind::Pbs => &["backup"],
    }
}

/// `PUT /storage/{storage}` (pve-storage `src/PVE/API2/Storage/Config.pm:298-400`): `content` and `nodes`.
/// A content type the plugin does not support is dropped with a warning, as `decode_value` does
/// (`Plugin.pm:470-496`); none left is `storage does not support content type 'none'`. A file storage's
/// directories for its content types are made when it is next activated (`Plugin.pm:1951-2013`), here at once.
pub fn update(c: &super::Cluster, call: &super::ApiCall) -> Result<Value, ApiError> {
    let p = &call.params;
    let storage = p.need("storage")?;
    if let Some(other) = p.0.keys().find(|k| !matches!(k.as_str(), "storage" | "content" | "nodes" | "digest")) {
        return Err(ApiError::NotImplemented(format!("storage option '{other}' is not modelled by pvedeploy-sim")));
    }
    let mut st = c.state();
    let Some(spec) = st.storages.get(&storage).cloned() else {
        return Err(ApiError::server(format!("update storage failed: storage '{storage}' does not exist")));
    };
    let mut spec = spec;
    if let Some(content) = p.str("content") {
        let supported = plugin_content(spec.kind);
        let wanted: Vec<String> = crate::schema::formats::split_list(&content).into_iter().filter(|c| supported.contains(&c.as_str())).collect();
        if wanted.is_empty() {
            return Err(ApiError::server("update storage failed: storage does not support content type 'none'"));
        }
        spec.content = wanted;
    }
    if let Some(nodes) = p.str("nodes") {
        let list = crate::schema::formats::split_list(&nodes);
        spec.nodes = if list.is_empty() { None } else { Some(list) };
    }
    st.storages.insert(storage.clone(), spec.clone());
    if spec.kind.is_file_based() {
        for node in st.nodes.keys().filter(|n| st.storage_on_node(&storage, n)) {
            for sub in spec.content.iter().filter_map(|c| content_subdir(c)) {
                std::fs::create_dir_all(storage_dir(&c.state_dir, &spec, node).join(sub)).map_err(|e| ApiError::server(format!("failed to create content directory: {e}")))?;
            }
        }
    }
    Ok(json!({"storage": storage, "type": spec.kind.plugin_type()}))
}
