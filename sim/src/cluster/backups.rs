//! vzdump backups as PVE makes them: `POST /nodes/{node}/vzdump` (a `vzdump` task on the node), backup volumes
//! `<storage>:backup/vzdump-{qemu,lxc}-<vmid>-YYYY_MM_DD-HH_MM_SS.{vma,tar}[.zst|.gz|.lzo]` in the storage's `dump/`
//! directory (only storages with content `backup`), `prune-backups` after each backup, listing through
//! `…/storage/{storage}/content`, `DELETE …/content/{volume}` (an `imgdel` task) and the restores behind
//! `POST …/qemu` with `archive` and `POST …/lxc` with `restore=1` (`restore.rs`). Sources (pve-manager 14a22df,
//! pve-storage 0c56bad, pve-guest-common 4a8f6cb) are cited per function; `sim/README.md` lists them.

pub mod archive;
pub mod prune;
pub mod restore;

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::state::{epoch, kind_name, ClusterState};
use super::storage::{split_volid, storage_dir};
use super::tasks::Task;
use super::{ApiCall, Cluster};
use crate::auth::{require, Identity};
use crate::backend::GuestKind;
use crate::http::envelope::ApiError;
use prune::{Entry, Keep, Mark};

/// The nodes' clock as vzdump reads it (the backup's name and time). Tests set it to simulate days of backups;
/// by default it is the machine's clock.
#[derive(Debug)]
pub struct Clock {
    /// The time it reads once set (seconds since the epoch); `MACHINE` until then.
    set_to: AtomicI64,
}

impl Default for Clock {
    fn default() -> Self {
        Self { set_to: AtomicI64::new(Self::MACHINE) }
    }
}

impl Clock {
    const MACHINE: i64 = -1;

    pub fn now(&self) -> u64 {
        match self.set_to.load(Ordering::Relaxed) {
            Self::MACHINE => epoch(),
            at => at as u64,
        }
    }

    /// From now on the clock reads `at` (seconds since the epoch) until it is set again: a backup taken after it is
    /// named by exactly that second however busy the machine is.
    pub fn set(&self, at: u64) {
        self.set_to.store(at.min(i64::MAX as u64) as i64, Ordering::Relaxed);
    }
}

/// The backup directory of a file storage (pve-storage `Plugin.pm:844`, `backup => 'dump'`).
pub const DUMP_DIR: &str = "dump";

/// A backup volume's name, as `archive_info` reads it (`Storage.pm:1800-1828`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupName {
    /// `lxc` or `qemu`
    pub kind: GuestKind,
    pub vmid: u32,
    pub ctime: u64,
    /// `tar`, `tar.zst`, `vma.zst`, … (the content listing's `format`)
    pub format: String,
}

impl BackupName {
    /// A file name in the dump directory; `None` for anything that is not a standard backup name.
    pub fn parse(file: &str) -> Option<BackupName> {
        let rest = file.strip_prefix("vzdump-")?;
        let (kind, rest) = rest.split_once('-')?;
        let kind = match kind {
            "lxc" => GuestKind::Lxc,
            "qemu" => GuestKind::Qemu,
            _ => return None,
        };
        let (vmid, rest) = rest.split_once('-')?;
        if !(3..=9).contains(&vmid.len()) || vmid.starts_with('0') {
            return None;
        }
        let vmid: u32 = vmid.parse().ok()?;
        let stamp = rest.get(..19)?;
        let ctime = prune::parse_stamp(stamp)?;
        let format = rest.get(19..)?.strip_prefix('.')?;
        let (base, comp) = format.split_once('.').map_or((format, None), |(b, c)| (b, Some(c)));
        let base_ok = matches!(base, "tar" | "vma") || (base == "tgz" && comp.is_none());
        if !base_ok || comp.is_some_and(|c| !matches!(c, "gz" | "lzo" | "zst" | "bz2")) {
            return None;
        }
        Some(BackupName { kind, vmid, ctime, format: format.to_string() })
    }

    /// The volume id on `storage`.
    pub fn volid(&self, storage: &str) -> String {
        format!("{storage}:backup/vzdump-{}-{}-{}.{}", kind_name(self.kind), self.vmid, prune::stamp(self.ctime), self.format)
    }
}

/// Whether a file in the dump directory is a backup archive (`$BACKUP_EXT_RE_2`, pve-storage `Storage.pm:120`).
pub fn is_archive(file: &str) -> bool {
    let Some((_, ext)) = file.split_once('.') else { return false };
    let ext = file.rsplit_once(".tar").or_else(|| file.rsplit_once(".vma")).map_or(ext.to_string(), |(_, rest)| rest.to_string());
    file.ends_with(".tgz") || ((file.contains(".tar") || file.contains(".vma")) && matches!(ext.as_str(), "" | ".gz" | ".lzo" | ".zst" | ".bz2"))
}

/// `storage:backup/<file>` → the file's name, when it is a backup volume name.
pub fn backup_file(volid: &str) -> Option<(&str, &str)> {
    let (storage, volname) = split_volid(volid)?;
    let file = volname.strip_prefix("backup/")?;
    (!file.is_empty() && !file.contains('/') && !file.starts_with('.')).then_some((storage, file))
}

/// Where a backup volume's file is on `node`, if its storage is a file storage there.
pub fn archive_path(c: &Cluster, st: &ClusterState, volid: &str, node: &str) -> Option<PathBuf> {
    let (storage, file) = backup_file(volid)?;
    let spec = st.storages.get(storage)?;
    (spec.kind.is_file_based() && st.storage_on_node(storage, node)).then(|| storage_dir(&c.state_dir, spec, node).join(DUMP_DIR).join(file))
}

/// A backup file's content listing entry (pve-storage `Plugin.pm:1716-1745` `get_subdir_files`): `format`,
/// `subtype`, `vmid`, `ctime` from the name, `protected` from the `.protected` file.
pub fn content_entry(storage: &str, file: &str, size: u64, mtime: u64, protected: bool, notes: Option<String>) -> Value {
    let mut entry = json!({"volid": format!("{storage}:backup/{file}"), "content": "backup", "size": size, "ctime": mtime});
    let format = file.split_once(".tar").map(|(_, rest)| format!("tar{rest}")).or_else(|| file.split_once(".vma").map(|(_, rest)| format!("vma{rest}")));
    entry["format"] = json!(format.unwrap_or_else(|| "tgz".into()));
    match BackupName::parse(file) {
        Some(name) => {
            entry["ctime"] = json!(name.ctime);
            entry["subtype"] = json!(kind_name(name.kind));
            entry["vmid"] = json!(name.vmid);
        }
        None => entry["subtype"] = json!("unknown"),
    }
    if protected {
        entry["protected"] = json!(1);
    }
    if let Some(notes) = notes.as_deref().and_then(|n| n.lines().next()) {
        entry["notes"] = json!(notes);
    }
    entry
}

/// `check_volume_access` for a backup volume (`Storage.pm:619-656`): `Datastore.Allocate` on the storage, or the
/// caller restores into the owner's VMID, or `Datastore.AllocateSpace` on the storage and `VM.Backup` on the owner.
pub fn may_access(ident: &Identity, storage: &str, owner: Option<u32>, vmid: Option<u32>) -> Result<(), ApiError> {
    if ident.has(&format!("/storage/{storage}"), "Datastore.Allocate") {
        return Ok(());
    }
    match owner {
        Some(o) if vmid == Some(o) => Ok(()),
        Some(o) => {
            require(ident, &format!("/storage/{storage}"), "Datastore.AllocateSpace")?;
            require(ident, &format!("/vms/{o}"), "VM.Backup")
        }
        None => Err(ApiError::server(format!("missing privileges to access {storage}"))),
    }
}

/// Options of `POST /nodes/{node}/vzdump` the sim models; any other answers 501.
const MODELLED: &[&str] = &[
    "node", "vmid", "storage", "mode", "compress", "prune-backups", "remove", "zstd", "pigz", "ionice", "bwlimit",
    "lockwait", "stopwait", "quiet", "mailnotification", "notification-mode", "pbs-change-detection-mode", "stdout",
    "notes-template",
];

/// `$verify_notes_template` (`VZDump.pm:99-118`): one line, escapes `\n` and `\\` only, variables `cluster`,
/// `guestname`, `node`, `vmid` only.
fn verify_notes_template(template: &str) -> Result<(), String> {
    if template.contains('\n') {
        return Err("contains a line feed".into());
    }
    let mut problems = Vec::new();
    let chars: Vec<char> = template.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            if !matches!(chars[i + 1], 'n' | '\\') {
                problems.push(format!("escape sequence '\\{}' at char {i}", chars[i + 1]));
            }
            i += 2;
            continue;
        }
        i += 1;
    }
    let mut rest = template;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start + 2..].find("}}") else { break };
        let var = &rest[start + 2..start + 2 + end];
        if !var.is_empty() && !var.contains(|c: char| c.is_whitespace() || c == '{' || c == '}') && !matches!(var, "cluster" | "guestname" | "node" | "vmid") {
            problems.push(format!("variable '{var}' at char {}", offset + start + 4));
        }
        offset += start + 2 + end + 2;
        rest = &rest[start + 2 + end + 2..];
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("found unknown: {}", problems.join(", ")))
    }
}

/// `$generate_notes` (`VZDump.pm:120-145`).
fn generate_notes(template: &str, guestname: &str, node: &str, vmid: u32) -> String {
    let mut out = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some('n')) => {
                chars.next();
                out.push('\n');
            }
            ('\\', Some('\\')) => {
                chars.next();
                out.push('\\');
            }
            _ => out.push(c),
        }
    }
    out.replace("{{cluster}}", "standalone node").replace("{{guestname}}", guestname).replace("{{node}}", node).replace("{{vmid}}", &vmid.to_string())
}

/// `POST /nodes/{node}/vzdump` (pve-manager `PVE/API2/VZDump.pm:37-180`).
pub fn vzdump(c: &Arc<Cluster>, node: &str, call: &ApiCall) -> Result<Value, ApiError> {
    let p = &call.params;
    if p.bool("stdout") == Some(true) {
        return Err(ApiError::param("stdout", "option is only allowed on the command line interface."));
    }
    if let Some(other) = p.0.keys().find(|k| !MODELLED.contains(&k.as_str())) {
        return Err(ApiError::NotImplemented(format!("vzdump option '{other}' is not modelled by pvedeploy-sim")));
    }
    // `get_storage_param` (`VZDump.pm:73-78`): no `dumpdir` here, so the storage, `local` by default.
    let storage = p.str("storage").unwrap_or_else(|| "local".into());
    let root = call.ident.userid == "root@pam" && call.ident.tokenid.is_none();
    if !root {
        // `assert_param_permission_vzdump` (`API2/VZDump.pm:24-35`; the common part in `API2/Backup.pm`).
        if p.has("prune-backups") {
            require(&call.ident, &format!("/storage/{storage}"), "Datastore.Allocate")?;
        }
        if p.has("bwlimit") || p.has("ionice") {
            require(&call.ident, "/", "Sys.Modify")?;
        }
    }
    // `verify_vzdump_parameters` (`VZDump.pm:1527-1555`).
    let keep = match p.str("prune-backups") {
        Some(text) => Some(Keep::parse(&text).map_err(|e| ApiError::param("prune-backups", e))?),
        None => None,
    };
    if let Some(t) = p.str("notes-template") {
        verify_notes_template(&t).map_err(|e| ApiError::param("notes-template", e))?;
    }
    let Some(vmids) = p.str("vmid") else {
        return Err(ApiError::param("vmid", "property is missing"));
    };
    let vmids: Vec<u32> = crate::schema::formats::split_list(&vmids).iter().filter_map(|v| v.parse().ok()).collect();
    // `get_included_guests` (`VZDump.pm:1580-1618`): guests of this node, plus unknown ids (they fail visibly
    // later); guests of other nodes are skipped, and none left here is a silent `OK` (`API2/VZDump.pm:96-118`).
    let (local, skipped): (Vec<u32>, Vec<u32>) = {
        let st = c.state();
        vmids.iter().partition(|id| st.guests.get(id).is_none_or(|g| g.node == node))
    };
    if local.is_empty() {
        return Ok(json!("OK"));
    }
    require(&call.ident, &format!("/storage/{storage}"), "Datastore.AllocateSpace")?;
    let mut cmdline = format!("vzdump {}", vmids.iter().map(u32::to_string).collect::<Vec<_>>().join(" "));
    for (k, v) in p.0.iter().filter(|(k, _)| k.as_str() != "vmid") {
        let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        cmdline.push_str(&format!(" --{k} {v}"));
    }
    let job = Job {
        storage,
        mode: p.str("mode").unwrap_or_else(|| "snapshot".into()),
        compress: p.str("compress"),
        keep,
        remove: p.bool("remove").unwrap_or(true),
        notes: p.str("notes-template").filter(|t| !t.is_empty()),
        ionice: p.u64("ionice").unwrap_or(7),
        node: node.to_string(),
        ident: call.ident.clone(),
    };
    let id = if local.len() == 1 { local[0].to_string() } else { String::new() };
    let upid = c.spawn_task(node, "vzdump", &id, &call.ident, move |c, task| async move {
        job.run(&c, &task, &cmdline, &local, &skipped).await
    });
    Ok(json!(upid))
}

/// One `vzdump` run's settings.
struct Job {
    storage: String,
    mode: String,
    compress: Option<String>,
    keep: Option<Keep>,
    remove: bool,
    notes: Option<String>,
    ionice: u64,
    node: String,
    ident: Identity,
}

fn info(task: &Task, msg: impl AsRef<str>) {
    for line in msg.as_ref().lines() {
        task.log(format!("INFO: {line}"));
    }
}

impl Job {
    /// `PVE::VZDump->new` + `exec_backup` (`VZDump.pm:589-725`, `1391-1494`).
    async fn run(&self, c: &Arc<Cluster>, task: &Task, cmdline: &str, vmids: &[u32], skipped: &[u32]) -> super::tasks::TaskResult {
        // `storage_info` (`VZDump.pm:195-223`): the storage must exist and hold backups.
        {
            let st = c.state();
            match st.storages.get(&self.storage) {
                None => return Err(format!("could not get storage information for '{0}': storage '{0}' does not exist", self.storage)),
                Some(s) if !s.content.iter().any(|x| x == "backup") => {
                    return Err(format!("could not get storage information for '{0}': can't use storage '{0}' for backups - wrong content type", self.storage))
                }
                Some(s) if !s.kind.is_file_based() => {
                    return Err(format!("could not get storage information for '{}': not a file storage in pvedeploy-sim", self.storage))
                }
                Some(_) => {}
            }
        }
        // Retention: the call's, else the storage's (not modelled: `PUT /storage` refuses `prune-backups`), else
        // `keep-all=1` (`VZDump.pm:699-712`).
        let keep = self.keep.unwrap_or(Keep { all: true, ..Keep::default() });
        let remove = self.remove && !keep.all;
        info(task, format!("starting new backup job: {cmdline}"));
        if !skipped.is_empty() {
            let mut s = skipped.to_vec();
            s.sort_unstable();
            info(task, format!("skip external VMs: {}", s.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")));
        }
        let mut ids = vmids.to_vec();
        ids.sort_unstable();
        let mut errors = 0;
        for vmid in ids {
            // `VM.Backup` per guest, fatal for the job when the guest was named (`VZDump.pm:1414-1419`).
            let exists = c.state().guests.contains_key(&vmid);
            if exists && !self.ident.has(&format!("/vms/{vmid}"), "VM.Backup") {
                return Err(format!("Permission check failed (/vms/{vmid}, VM.Backup)"));
            }
            if let Err(e) = self.backup_one(c, task, vmid, &keep, remove).await {
                errors += 1;
                task.log(format!("ERROR: Backup of VM {vmid} failed - {e}"));
                info(task, format!("Failed at {}", prune::log_time(c.clock.now())));
            }
        }
        if errors > 0 {
            info(task, "Backup job finished with errors");
            return Err("job errors".into());
        }
        info(task, "Backup job finished successfully");
        Ok(0)
    }

    /// `exec_backup_task` (`VZDump.pm:892-1389`) for a file storage.
    async fn backup_one(&self, c: &Arc<Cluster>, task: &Task, vmid: u32, keep: &Keep, remove: bool) -> Result<(), String> {
        let started = c.clock.now();
        let (kind, running, hostname, config, host_key, dir) = {
            let mut st = c.state();
            let dir = {
                let spec = st.storages.get(&self.storage).ok_or_else(|| format!("storage '{}' does not exist", self.storage))?;
                storage_dir(&c.state_dir, spec, &self.node).join(DUMP_DIR)
            };
            let g = st.guests.get_mut(&vmid).filter(|g| g.node == self.node).ok_or_else(|| format!("unable to find VM '{vmid}'"))?;
            let (kind, running) = (g.kind, g.running.is_some());
            info(task, format!("Starting Backup of VM {vmid} ({})", kind_name(kind)));
            info(task, format!("Backup started at {}", prune::log_time(started)));
            info(task, format!("status = {}", if running { "running" } else { "stopped" }));
            // `lock_vm`: the guest is locked `backup` while its archive is made.
            g.check_lock()?;
            let mut config = g.clone();
            config.config.remove("lock");
            config.pending.clear();
            config.pending_delete.clear();
            let text = config.config_text();
            g.config.insert("lock".into(), "backup".into());
            let host_key = g.lxc_host_key.as_ref().map(|k| (k.private.clone(), k.public.clone()));
            (kind, running, g.name(), text, host_key, dir)
        };
        let result = async {
            if kind == GuestKind::Lxc {
                info(task, format!("CT Name: {hostname}"));
                info(task, "including mount point rootfs ('/') in backup");
            } else {
                info(task, format!("VM Name: {hostname}"));
            }
            let mode = if running { self.mode.as_str() } else { "stop" };
            info(task, format!("backup mode: {mode}"));
            info(task, format!("ionice priority: {}", self.ionice));
            let (_, ext) = archive::compressor(self.compress.as_deref())?.map_or((None, None), |(f, e)| (Some(f), Some(e)));
            let base = if kind == GuestKind::Qemu { "vma" } else { "tar" };
            let format = ext.map_or_else(|| base.to_string(), |e| format!("{base}.{e}"));
            let name = BackupName { kind, vmid, ctime: started, format };
            let file = name.volid(&self.storage).split_once("backup/").map(|(_, f)| f.to_string()).unwrap_or_default();
            let target = dir.join(&file);
            info(task, format!("creating vzdump archive '{}'", target.display()));
            Cluster::pause(c.timing.task_secs).await;
            let contents = archive::Contents {
                kind,
                config,
                host_key: host_key.clone(),
                disk: c.backend.disk_dir(vmid),
            };
            let compress = self.compress.clone();
            let size = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(target.parent().unwrap_or(&target)).map_err(|e| e.to_string())?;
                archive::write(&target, &contents, compress.as_deref())
            })
            .await
            .map_err(|e| e.to_string())??;
            info(task, format!("archive file size: {}", format_size(size)));
            // Notes before pruning (`VZDump.pm:1219-1235`), in `<archive>.notes` (storage `Plugin.pm` `NOTES_EXT`).
            if let Some(template) = &self.notes {
                info(task, "adding notes to backup");
                let notes = generate_notes(template, &hostname, &self.node, vmid);
                if let Err(e) = std::fs::write(dir.join(format!("{file}.notes")), notes) {
                    task.log(format!("WARN: unable to add notes - {e}"));
                }
            }
            if remove {
                info(task, format!("prune older backups with retention: {}", keep.describe()));
                let pruned = prune_group(c, &self.storage, &self.node, kind, vmid, keep, |volid| info(task, format!("removing backup '{volid}'")), |w| task.log(format!("WARN: {w}")))?;
                let extra = if pruned > 0 { " not covered by keep-retention policy" } else { "" };
                info(task, format!("pruned {pruned} backup(s){extra}"));
            }
            Ok::<(), String>(())
        }
        .await;
        if let Some(g) = c.state().guests.get_mut(&vmid) {
            if g.lock() == Some("backup") {
                g.config.remove("lock");
            }
        }
        result?;
        let took = c.clock.now().saturating_sub(started);
        info(task, format!("Finished Backup of VM {vmid} ({:02}:{:02}:{:02})", took / 3600, took / 60 % 60, took % 60));
        info(task, format!("Backup finished at {}", prune::log_time(c.clock.now())));
        Ok(())
    }
}

/// `format_size` (`VZDump.pm:225-244`).
fn format_size(size: u64) -> String {
    let kb = size as f64 / 1024.0;
    if kb < 1024.0 {
        return format!("{}KB", kb as u64);
    }
    let mb = size as f64 / (1024.0 * 1024.0);
    if mb < 1024.0 {
        return format!("{}MB", mb as u64);
    }
    format!("{:.2}GB", mb / 1024.0)
}

/// Plugin `prune_backups` (`Plugin.pm:2074-2140`) for one guest: its standard-named backups on the storage
/// marked by `prune_mark_backup_group`, those marked `remove` deleted. Returns how many went.
fn prune_group(c: &Cluster, storage: &str, node: &str, kind: GuestKind, vmid: u32, keep: &Keep, mut log: impl FnMut(&str), mut warn: impl FnMut(String)) -> Result<usize, String> {
    let dir = {
        let st = c.state();
        let spec = st.storages.get(storage).ok_or_else(|| format!("storage '{storage}' does not exist"))?;
        storage_dir(&c.state_dir, spec, node).join(DUMP_DIR)
    };
    let mut group = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("unable to read '{}': {e}", dir.display()))?.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = BackupName::parse(&file) else { continue };
        if name.kind != kind || name.vmid != vmid {
            continue;
        }
        let protected = dir.join(format!("{file}.protected")).exists();
        group.push(Entry { ctime: name.ctime, protected, item: file });
    }
    let mut pruned = 0;
    for (mark, file) in prune::mark(group, keep) {
        if mark != Mark::Remove {
            continue;
        }
        log(&format!("{storage}:backup/{file}"));
        std::fs::remove_file(dir.join(&file)).map_err(|e| format!("removing archive {file} failed: {e}"))?;
        if let Some(w) = auxiliaries_remove(&dir.join(&file)) {
            warn(w);
        }
        pruned += 1;
    }
    Ok(pruned)
}

/// `archive_auxiliaries_remove` (pve-storage `Storage.pm:1842-1856`): a removed archive's notes file goes with it;
/// one already gone is fine, any other failure is a warning (`log_warn`), not an error.
fn auxiliaries_remove(archive: &std::path::Path) -> Option<String> {
    let notes = archive.with_file_name(format!("{}.notes", archive.file_name()?.to_string_lossy()));
    match std::fs::remove_file(notes) {
        Ok(()) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(format!("Removing notes file failed: {e}")),
    }
}

/// `DELETE /nodes/{node}/storage/{storage}/content/{volume}` for backup volumes (pve-storage
/// `API2/Storage/Content.pm:452-540`): `Datastore.AllocateSpace` on the storage and `VM.Backup` on the owner (else
/// `Datastore.Allocate`), an `imgdel` task with id `<vmid>@<storage>`; a file already gone is a warning
/// (`Plugin.pm:1137-1140`). Other volumes are not modelled (501).
pub fn delete_volume(c: &Arc<Cluster>, node: &str, call: &ApiCall) -> Result<Value, ApiError> {
    let p = &call.params;
    let volume = p.need("volume")?;
    // `real_volume_id`: a bare volume name is on the `storage` parameter.
    let volid = match (volume.contains(':'), p.str("storage")) {
        (true, _) => volume,
        (false, Some(s)) => format!("{s}:{volume}"),
        (false, None) => return Err(ApiError::param("storage", "storage ID missing")),
    };
    let Some((storage, file)) = backup_file(&volid) else {
        return Err(ApiError::NotImplemented("deleting volumes other than backups is not modelled by pvedeploy-sim".into()));
    };
    let (storage, file) = (storage.to_string(), file.to_string());
    let path = {
        let st = c.state();
        if !st.storages.contains_key(&storage) {
            return Err(ApiError::server(format!("storage '{storage}' does not exist")));
        }
        archive_path(c, &st, &volid, node).ok_or_else(|| ApiError::server(format!("storage '{storage}' is not available on node '{node}'")))?
    };
    let owner = BackupName::parse(&file).map(|n| n.vmid).or_else(|| vmid_in_name(&file));
    match owner {
        Some(o) => {
            require(&call.ident, &format!("/storage/{storage}"), "Datastore.AllocateSpace")?;
            require(&call.ident, &format!("/vms/{o}"), "VM.Backup")?;
        }
        None => require(&call.ident, &format!("/storage/{storage}"), "Datastore.Allocate")?,
    }
    let id = owner.map_or_else(|| storage.clone(), |o| format!("{o}@{storage}"));
    let upid = c.spawn_task(node, "imgdel", &id, &call.ident, move |c, task| async move {
        Cluster::pause(c.timing.task_secs).await;
        if path.with_file_name(format!("{file}.protected")).exists() {
            return Err(format!("cannot remove protected volume 'backup/{file}' on '{storage}'"));
        }
        let warnings = if path.is_file() {
            std::fs::remove_file(&path).map_err(|e| format!("unlink '{}' failed - {e}", path.display()))?;
            match auxiliaries_remove(&path) {
                Some(w) => {
                    task.log(format!("WARN: {w}"));
                    1
                }
                None => 0,
            }
        } else {
            task.log(format!("WARN: disk image '{}' does not exist", path.display()));
            1
        };
        task.log(format!("Removed volume '{volid}'"));
        Ok(warnings)
    });
    Ok(json!(upid))
}

/// `parse_volname`'s owner of a non-standard backup name (`Plugin.pm:817-820`).
fn vmid_in_name(file: &str) -> Option<u32> {
    let rest = file.strip_prefix("vzdump-")?;
    let (kind, rest) = rest.split_once('-')?;
    if !matches!(kind, "lxc" | "qemu" | "openvz") {
        return None;
    }
    rest.split('-').next()?.parse().ok()
}
