//! The export directory on disk: one folder per deployment (`<dir>/<name>/`), written atomically (a temporary
//! folder swapped in), with a manifest of what was written (hashes, figures) so drift can tell hand edits;
//! destroyed deployments move to `<dir>/.archive/<name>-<deployment id>/` (the whole id: two deployments of one name never share an archive).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::drift::{ExportFiles, ExportState, NoManifest};
use super::live::{LiveGuest, Summary};
use super::ExportFile;
use crate::core::deployment::DeploymentId;
use crate::core::names::AppName;

/// The manifest's file name inside each export folder (Terraform ignores it).
pub const MANIFEST: &str = ".pvedeploy-export.json";
pub const ARCHIVE: &str = ".archive";
/// The most bytes of one export file drift reads (they are a few KiB); a longer file counts as edited.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// The most entries of one export folder drift lists.
const MAX_ENTRIES: usize = 1000;

/// A file-system failure under the export directory; the message names the path. Retrying after fixing
/// permissions or space is safe: a failed write leaves the previous export in place.
#[derive(Debug, thiserror::Error)]
#[error("export directory: {what} {path}: {source}")]
pub struct ExportIoError {
    what: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ExportIoError + 'a {
    move |source| ExportIoError { what, path: path.to_owned(), source }
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    deployment_id: String,
    name: String,
    generated_at: i64,
    node: String,
    vmid: u32,
    cores: u32,
    memory_mib: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disk_gib: Option<u64>,
    tags: Vec<String>,
    running: bool,
    /// File name → SHA-256 of what was written.
    files: BTreeMap<String, String>,
}

impl Manifest {
    fn summary(&self) -> Summary {
        Summary {
            node: self.node.clone(),
            vmid: self.vmid,
            cores: self.cores,
            memory_mib: self.memory_mib,
            disk_gib: self.disk_gib,
            tags: self.tags.clone(),
            running: self.running,
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub folder: PathBuf,
    /// False when the files on disk already were exactly these (nothing was rewritten).
    pub changed: bool,
    pub generated_at: i64,
}

/// An export as found on disk.
#[derive(Debug, Clone)]
pub struct OnDisk {
    pub state: ExportState,
    pub generated_at: Option<i64>,
}

/// The root of all exports.
#[derive(Debug, Clone)]
pub struct ExportDir {
    root: PathBuf,
}

impl ExportDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn folder(&self, name: &AppName) -> PathBuf {
        self.root.join(name.as_str())
    }

    /// Writes `files` for `guest` unless the folder already holds exactly them; atomically replaces the folder.
    pub fn write(&self, guest: &LiveGuest, files: &[ExportFile], now: i64) -> Result<Written, ExportIoError> {
        let folder = self.folder(&guest.name);
        let hashes: BTreeMap<String, String> = files.iter().map(|f| (f.path.clone(), f.sha256())).collect();
        if let Some(m) = read_manifest(&folder)? {
            let unchanged = m.files == hashes
                && m.deployment_id == guest.deployment.as_str()
                && m.summary() == guest.summary()
                && files.iter().all(|f| std::fs::read(folder.join(&f.path)).is_ok_and(|b| b == f.content.as_bytes()));
            if unchanged {
                return Ok(Written { folder, changed: false, generated_at: m.generated_at });
            }
        }
        std::fs::create_dir_all(&self.root).map_err(io("cannot create", &self.root))?;
        let tmp = self.root.join(format!(".tmp-{}-{}", guest.name, uuid::Uuid::new_v4().simple()));
        let result = (|| {
            std::fs::create_dir(&tmp).map_err(io("cannot create", &tmp))?;
            for f in files {
                write_synced(&tmp.join(&f.path), f.content.as_bytes())?;
            }
            let s = guest.summary();
            let manifest = Manifest {
                deployment_id: guest.deployment.to_string(),
                name: guest.name.to_string(),
                generated_at: now,
                node: s.node,
                vmid: s.vmid,
                cores: s.cores,
                memory_mib: s.memory_mib,
                disk_gib: s.disk_gib,
                tags: s.tags,
                running: s.running,
                files: hashes,
            };
            let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
            write_synced(&tmp.join(MANIFEST), &json)?;
            sync_dir(&tmp)?;
            swap_in(&tmp, &folder)?;
            sync_dir(&self.root)
        })();
        if tmp.exists() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result.map(|()| Written { folder, changed: true, generated_at: now })
    }

    /// The export of deployment `id` (named `name`) as on disk: the figures written, which files changed since, and
    /// what else the folder holds. A folder without a manifest of this deployment (deleted, unreadable, or another
    /// deployment's of the same name) is `Unowned`; an absent or empty one `Missing`.
    pub fn read(&self, name: &AppName, id: &DeploymentId) -> Result<OnDisk, ExportIoError> {
        let folder = self.folder(name);
        let entries = match entries(&folder) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OnDisk { state: ExportState::Missing, generated_at: None }),
            Err(e) => return Err(io("cannot list", &folder)(e)),
        };
        let m = match manifest_at(&folder)? {
            Ok(m) if m.deployment_id == id.as_str() => m,
            _ if entries.is_empty() => return Ok(OnDisk { state: ExportState::Missing, generated_at: None }),
            Ok(m) => return Ok(OnDisk { state: ExportState::Unowned { files: entries, why: NoManifest::OtherDeployment(m.deployment_id) }, generated_at: None }),
            Err(why) => return Ok(OnDisk { state: ExportState::Unowned { files: entries, why }, generated_at: None }),
        };
        let mut found = ExportFiles { summary: m.summary(), hashes: m.files.clone(), intact: BTreeMap::new(), edited: Vec::new(), removed: Vec::new(), extra: Vec::new() };
        for (file, hash) in &m.files {
            match read_capped(&folder.join(file)) {
                Ok(Some(bytes)) if super::sha256_hex(&bytes) == *hash => match String::from_utf8(bytes) {
                    Ok(text) => {
                        found.intact.insert(file.clone(), text);
                    }
                    Err(_) => found.edited.push(file.clone()),
                },
                Ok(_) => found.edited.push(file.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => found.removed.push(file.clone()),
                Err(e) => return Err(io("cannot read", &folder.join(file))(e)),
            }
        }
        found.extra = entries.into_iter().filter(|e| !m.files.contains_key(e)).collect();
        Ok(OnDisk { state: ExportState::Present(Box::new(found)), generated_at: Some(m.generated_at) })
    }

    /// Moves `name`'s export to `.archive/<name>-<deployment id>/` (replacing an older archive of the same deployment).
    /// `None` when there was nothing to archive.
    pub fn archive(&self, name: &AppName, id: &DeploymentId) -> Result<Option<PathBuf>, ExportIoError> {
        let folder = self.folder(name);
        match read_manifest(&folder)? {
            Some(m) if m.deployment_id == id.as_str() => {}
            // Another deployment of the same name owns this folder now (or it is not ours): leave it.
            _ => return Ok(None),
        }
        let archive = self.root.join(ARCHIVE);
        std::fs::create_dir_all(&archive).map_err(io("cannot create", &archive))?;
        let target = archive.join(format!("{name}-{id}"));
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(io("cannot replace", &target))?;
        }
        std::fs::rename(&folder, &target).map_err(io("cannot archive", &folder))?;
        sync_dir(&archive)?;
        sync_dir(&self.root)?;
        Ok(Some(target))
    }

    /// The deployments whose exports are in the directory (archived ones excluded), by their manifests.
    pub fn owners(&self) -> Vec<DeploymentId> {
        let Ok(entries) = std::fs::read_dir(&self.root) else { return Vec::new() };
        let mut ids: Vec<DeploymentId> = entries
            .flatten()
            .filter_map(|e| read_manifest(&e.path()).ok().flatten())
            .filter_map(|m| DeploymentId::parse(&m.deployment_id))
            .collect();
        ids.sort();
        ids
    }

    /// `path` relative to `base` when it lies under it, else as it is: what the deployment record keeps.
    pub fn reference(path: &Path, base: &Path) -> String {
        path.strip_prefix(base).unwrap_or(path).display().to_string()
    }
}

/// The folder's manifest; an unreadable one is treated as no export (the next write replaces it).
fn read_manifest(folder: &Path) -> Result<Option<Manifest>, ExportIoError> {
    Ok(manifest_at(folder)?.ok())
}

/// The folder's manifest, or why there is none pvedeploy can use.
fn manifest_at(folder: &Path) -> Result<Result<Manifest, NoManifest>, ExportIoError> {
    let path = folder.join(MANIFEST);
    match read_capped(&path) {
        Ok(Some(bytes)) => Ok(serde_json::from_slice(&bytes).map_err(|e| NoManifest::Unreadable(e.to_string()))),
        Ok(None) => Ok(Err(NoManifest::Unreadable(format!("longer than {MAX_FILE_BYTES} bytes")))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Err(NoManifest::Missing)),
        Err(e) => Err(io("cannot read", &path)(e)),
    }
}

/// A file's bytes, `None` when it is longer than `MAX_FILE_BYTES` (so a stray huge file costs no more than that).
fn read_capped(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= MAX_FILE_BYTES).then_some(bytes))
}

/// The names in `folder` but the manifest, sorted, a directory's ending in `/`; the first `MAX_ENTRIES` read, then
/// a last entry saying there are more.
fn entries(folder: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut more = false;
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == MANIFEST {
            continue;
        }
        if names.len() == MAX_ENTRIES {
            more = true;
            break;
        }
        let dir = entry.file_type().is_ok_and(|t| t.is_dir());
        names.push(if dir { format!("{name}/") } else { name });
    }
    names.sort();
    if more {
        names.push(format!("(more entries than the {MAX_ENTRIES} listed)"));
    }
    Ok(names)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ExportIoError> {
    let mut f = std::fs::File::create(path).map_err(io("cannot create", path))?;
    f.write_all(bytes).map_err(io("cannot write", path))?;
    f.sync_all().map_err(io("cannot sync", path))
}

fn sync_dir(dir: &Path) -> Result<(), ExportIoError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("cannot sync", dir))
}

/// Puts `tmp` in place of `folder` in one step: an atomic exchange when `folder` exists (the old one then
/// sits at `tmp` and is removed), a rename otherwise. Readers see the old folder or the new, never neither.
fn swap_in(tmp: &Path, folder: &Path) -> Result<(), ExportIoError> {
    if !folder.exists() {
        return std::fs::rename(tmp, folder).map_err(io("cannot move into place", folder));
    }
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).expect("paths have no NUL");
    let (a, b) = (c(tmp), c(folder));
    // SAFETY: both are valid NUL-terminated paths; renameat2 only reads them.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc == 0 {
        return std::fs::remove_dir_all(tmp).map_err(io("cannot remove the previous export", tmp));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINVAL) && err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(io("cannot swap into place", folder)(err));
    }
    // The file system cannot exchange: move the old folder aside, then the new one in (a short gap).
    let old = tmp.with_extension("old");
    std::fs::rename(folder, &old).map_err(io("cannot move aside", folder))?;
    std::fs::rename(tmp, folder).map_err(io("cannot move into place", folder))?;
    std::fs::remove_dir_all(&old).map_err(io("cannot remove the previous export", &old))
}
