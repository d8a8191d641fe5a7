//! Backups as data: the retention (Proxmox VE's `prune-backups`, so "7 daily, 4 weekly" is `keep_daily = 7,
//! keep_weekly = 4`), a backup volume's id as Proxmox VE names it (`<storage>:backup/vzdump-{lxc,qemu}-<vmid>-
//! YYYY_MM_DD-HH_MM_SS.<ext>`, pve-storage `Storage.pm:1800-1828` `archive_info`, or on a Proxmox Backup Server
//! storage `<storage>:backup/{ct,vm}/<vmid>/YYYY-MM-DDTHH:MM:SSZ`, `PBSPlugin.pm:607-628`), and the mark pvedeploy
//! writes into a backup's notes so that a listing shows only backups of the deployment. No I/O.

use std::fmt;

use chrono::{Datelike, NaiveDateTime};

use crate::core::deployment::DeploymentId;
use crate::core::host_key::HostKeyPin;
use crate::core::names::{CommitSha, NodeName};
use crate::core::validation::FieldError;

/// The most any `keep_*` may be.
pub const MAX_KEEP: u32 = 10_000;

/// How many backups Proxmox VE keeps per period after each backup (`prune-backups`); all zero keeps every backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
}

impl Retention {
    /// The `prune-backups` property string (`keep-daily=7,keep-weekly=4`), or `None` to keep every backup.
    pub fn prune_backups(&self) -> Option<String> {
        let parts: Vec<String> = [("keep-last", self.last), ("keep-hourly", self.hourly), ("keep-daily", self.daily), ("keep-weekly", self.weekly), ("keep-monthly", self.monthly), ("keep-yearly", self.yearly)]
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        (!parts.is_empty()).then(|| parts.join(","))
    }
}

/// Which guest type a backup is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKind {
    Lxc,
    Qemu,
}

/// Where a backup lives: a file storage's vzdump archive, or a Proxmox Backup Server snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupStore {
    /// `<storage>:backup/vzdump-{lxc,qemu}-<vmid>-YYYY_MM_DD-HH_MM_SS.<ext>` (pve-storage `Storage.pm:1800-1828`
    /// `archive_info`); the time is the node's local time.
    File,
    /// `<storage>:backup/{ct,vm}/<vmid>/YYYY-MM-DDTHH:MM:SSZ` (pve-storage `PBSPlugin.pm:226-233` `print_volid`,
    /// `607-628` `parse_volname`); the time is UTC.
    Pbs,
}

/// The id of a backup volume as Proxmox VE names it: a vzdump archive on a file storage or a snapshot on a Proxmox
/// Backup Server storage; parsed, so a door hands the engine only names of these shapes (never a path or another
/// kind of volume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupId {
    volid: String,
    pub storage: String,
    pub store: BackupStore,
    pub kind: BackupKind,
    pub vmid: u32,
    /// The time in the volume's name: the node's local time when vzdump started (file storages), or UTC (PBS).
    pub taken: NaiveDateTime,
}

/// What a door's error says a backup looks like.
const SHAPES: &str = "`<storage>:backup/vzdump-<lxc|qemu>-<vmid>-YYYY_MM_DD-HH_MM_SS.<tar|vma>[.zst|.gz|.lzo]` or, on a Proxmox Backup Server storage, `<storage>:backup/<ct|vm>/<vmid>/YYYY-MM-DDTHH:MM:SSZ`, as listed by GET …/backups";
const NAME_SHAPES: &str = "`vzdump-<lxc|qemu>-<vmid>-YYYY_MM_DD-HH_MM_SS.<tar|vma>[.zst|.gz|.lzo]` or, on a Proxmox Backup Server storage, `<ct|vm>-<vmid>-YYYY-MM-DDTHH:MM:SSZ`, as listed by GET …/backups";

/// A VMID as Proxmox VE's `pve-vmid` format has it: 3 to 9 digits, no leading zero.
fn vmid_ok(vmid: &str) -> bool {
    (3..=9).contains(&vmid.len()) && !vmid.starts_with('0') && vmid.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `stamp` has exactly the shape of `sample` where `sample` has digits (`9`) and the same separators.
fn shaped(stamp: &str, sample: &str) -> bool {
    stamp.len() == sample.len() && stamp.bytes().zip(sample.bytes()).all(|(b, s)| if s == b'9' { b.is_ascii_digit() } else { b == s })
}

impl BackupId {
    /// The pattern of a backup's name in an API path (both forms; a subset: days 01-28, years from 1000), for the
    /// OpenAPI document. Every name it matches is accepted by [`BackupId::on_storage`].
    pub const NAME_PATTERN: &'static str = "^(vzdump-(lxc|qemu)-[1-9][0-9]{2,8}-[1-9][0-9]{3}_(0[1-9]|1[0-2])_(0[1-9]|1[0-9]|2[0-8])-([01][0-9]|2[0-3])_[0-5][0-9]_[0-5][0-9]\\.(tar|vma)(\\.(zst|gz|lzo))?|(ct|vm)-[1-9][0-9]{2,8}-[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z)$";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let bad = || {
            let shown: String = raw.chars().take(120).flat_map(char::escape_debug).collect();
            FieldError::new("volid", "backup_id", format!("`{shown}` is not a backup: {SHAPES}"))
        };
        let (storage, volname) = raw.split_once(":backup/").ok_or_else(bad)?;
        let storage_ok = !storage.is_empty() && storage.len() <= 64 && storage.starts_with(|c: char| c.is_ascii_alphabetic()) && storage.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !storage_ok {
            return Err(bad());
        }
        let (store, kind, vmid, taken) = match volname.strip_prefix("vzdump-") {
            Some(rest) => Self::parse_file(rest).ok_or_else(bad)?,
            None => Self::parse_pbs(volname).ok_or_else(bad)?,
        };
        Ok(Self { volid: raw.to_string(), storage: storage.to_string(), store, kind, vmid, taken })
    }

    /// `<lxc|qemu>-<vmid>-YYYY_MM_DD-HH_MM_SS.<ext>` (after `vzdump-`).
    fn parse_file(rest: &str) -> Option<(BackupStore, BackupKind, u32, NaiveDateTime)> {
        let (kind, rest) = rest.split_once('-')?;
        let kind = match kind {
            "lxc" => BackupKind::Lxc,
            "qemu" => BackupKind::Qemu,
            _ => return None,
        };
        let (vmid, rest) = rest.split_once('-')?;
        let stamp = rest.get(..19)?;
        let ext = rest.get(19..)?;
        let ext_ok = matches!(ext, ".tar" | ".vma" | ".tgz") || [".tar.", ".vma."].iter().any(|p| ext.strip_prefix(p).is_some_and(|c| matches!(c, "zst" | "gz" | "lzo")));
        if !(vmid_ok(vmid) && shaped(stamp, "9999_99_99-99_99_99") && ext_ok) {
            return None;
        }
        let taken = NaiveDateTime::parse_from_str(stamp, "%Y_%m_%d-%H_%M_%S").ok()?;
        Some((BackupStore::File, kind, vmid.parse().ok()?, taken))
    }

    /// `<ct|vm>/<vmid>/YYYY-MM-DDTHH:MM:SSZ` (`PBSPlugin.pm:607-628`; only guests' backups, `list_volumes` skips
    /// other types and non-numeric ids, `PBSPlugin.pm:772-773`).
    fn parse_pbs(volname: &str) -> Option<(BackupStore, BackupKind, u32, NaiveDateTime)> {
        let mut parts = volname.split('/');
        let (kind, vmid, stamp) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !vmid_ok(vmid) || !shaped(stamp, "9999-99-99T99:99:99Z") {
            return None;
        }
        let kind = match kind {
            "ct" => BackupKind::Lxc,
            "vm" => BackupKind::Qemu,
            _ => return None,
        };
        let taken = NaiveDateTime::parse_from_str(stamp, "%Y-%m-%dT%H:%M:%SZ").ok()?;
        Some((BackupStore::Pbs, kind, vmid.parse().ok()?, taken))
    }

    /// A backup named as the API's paths name it on `storage` ([`BackupId::name`]: the archive's file name, or
    /// `ct-10000-2030-01-02T03:00:00Z` for a PBS snapshot, which has no `/` to escape); a wrong one is an error for
    /// `field`.
    pub fn on_storage(storage: &str, name: &str, field: &str) -> Result<Self, FieldError> {
        let bad = || {
            let shown: String = name.chars().take(120).flat_map(char::escape_debug).collect();
            FieldError::new(field, "backup_name", format!("`{shown}` is not a backup's name: {NAME_SHAPES}"))
        };
        if name.contains('/') {
            return Err(bad());
        }
        let volname = if name.starts_with("vzdump-") {
            if name.contains(':') {
                return Err(bad());
            }
            name.to_string()
        } else {
            // `ct-10000-2030-01-02T03:00:00Z` → `ct/10000/2030-01-02T03:00:00Z`
            let (kind, rest) = name.split_once('-').ok_or_else(bad)?;
            let (vmid, stamp) = rest.split_once('-').ok_or_else(bad)?;
            format!("{kind}/{vmid}/{stamp}")
        };
        let id = Self::parse(&format!("{storage}:backup/{volname}")).map_err(|_| bad())?;
        (id.name() == name).then_some(id).ok_or_else(bad)
    }

    /// The backup's name in the API's paths: the archive's file name (`vzdump-lxc-10000-2030_01_02-03_00_00.tar.zst`)
    /// or, for a PBS snapshot, its volume name with `-` for `/` (`ct-10000-2030-01-02T03:00:00Z`).
    pub fn name(&self) -> String {
        let volname = self.volid.split_once(":backup/").map_or("", |(_, f)| f);
        match self.store {
            BackupStore::File => volname.to_string(),
            BackupStore::Pbs => volname.replace('/', "-"),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.volid
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.volid)
    }
}

/// Who took a backup, from the last word of its notes' mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupOrigin {
    /// Taken by the schedule with this tag (as in its snapshots' names); its retention prunes it.
    Schedule { tag: String },
    /// Taken by hand (or by an earlier pvedeploy without the word); no retention prunes it.
    Manual,
}

impl BackupOrigin {
    fn word(&self) -> String {
        match self {
            BackupOrigin::Schedule { tag } => format!("schedule-{tag}"),
            BackupOrigin::Manual => "manual".into(),
        }
    }

    /// `schedule:<tag>` or `manual`, as the doors show it.
    pub fn describe(&self) -> String {
        match self {
            BackupOrigin::Schedule { tag } => format!("schedule:{tag}"),
            BackupOrigin::Manual => "manual".into(),
        }
    }
}

/// What pvedeploy asks vzdump to write into a backup's notes (`notes-template`; no `{{…}}` variables, one line):
/// `pvedeploy <deployment id> <name> <schedule-TAG|manual> [<commit served>]`.
pub fn notes_for(id: &DeploymentId, name: &str, origin: &BackupOrigin, commit: Option<&CommitSha>) -> String {
    match commit {
        Some(c) => format!("pvedeploy {id} {name} {} {}", origin.word(), c.as_str()),
        None => format!("pvedeploy {id} {name} {}", origin.word()),
    }
}

/// The commit the guest served when the backup with pvedeploy's mark in `notes` was taken (backups taken before
/// pvedeploy wrote it have none).
pub fn commit_in(notes: &str) -> Option<CommitSha> {
    let word = notes.lines().next()?.strip_prefix("pvedeploy ")?.split(' ').nth(3)?;
    CommitSha::parse(word).ok()
}

/// Where a deployment restored from a backup comes from: provisioning restores `backup` (found on `node`) as the
/// new guest instead of creating one, pins the host key the backed-up container had (a restore keeps the archive's
/// `/etc/ssh`: pve-container runs `post_create_hook`, which rewrites the host keys, only for a new container,
/// `src/PVE/API2/LXC.pm:573-592` at 94f5585), and then deploys the commit the backup served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSource {
    pub backup: BackupId,
    /// The deployment the backup was taken of (often destroyed by now).
    pub from: DeploymentId,
    /// The node whose view of the backup storage lists the backup.
    pub node: NodeName,
    /// The backed-up container's host key as that deployment pinned it (a VM gets a fresh one through cloud-init).
    pub host_key: Option<HostKeyPin>,
    /// The commit the backup served, when known.
    pub commit: Option<CommitSha>,
}

/// Whether a backup's notes carry deployment `id`'s mark.
pub fn marked_for(notes: &str, id: &DeploymentId) -> bool {
    notes.lines().next().and_then(|l| l.strip_prefix("pvedeploy ")).and_then(|rest| rest.split(' ').next()) == Some(id.as_str())
}

/// Who took a backup with pvedeploy's mark in `notes`; anything but a schedule's word is [`BackupOrigin::Manual`].
pub fn origin_in(notes: &str) -> BackupOrigin {
    let word = notes.lines().next().and_then(|l| l.strip_prefix("pvedeploy ")).and_then(|rest| rest.split(' ').nth(2)).unwrap_or("");
    match word.strip_prefix("schedule-") {
        Some(tag) if tag.len() == 8 && tag.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => BackupOrigin::Schedule { tag: tag.to_string() },
        _ => BackupOrigin::Manual,
    }
}

/// One backup as the retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dated {
    pub id: BackupId,
    /// Proxmox VE will neither prune nor delete it.
    pub protected: bool,
}

/// The backups among `group` that Proxmox VE's `prune-backups` with `retention` would remove, oldest first:
/// `PVE::Storage::prune_mark_backup_group` (pve-storage `src/PVE/Storage.pm:1998-2110` at 0c56bad) applied to the
/// group given, never to the whole guest's group on the storage, so a backup pvedeploy did not take is never
/// counted nor removed. Newest first, each `keep-*` in turn (last, hourly, daily, weekly, monthly, yearly) keeps the
/// newest backup of each of its next N periods not already holding a kept one; protected backups are kept and count
/// for no period; everything else is removed. The periods come from the time in the backup's name, which vzdump
/// writes in the node's local time and PVE reads back with `localtime` (`strftime` `%Y/%m/%d/%H`, ISO `%V/%G` for
/// weeks), so they are the node's own hours, days and weeks; a PBS snapshot's name is in UTC (`PBSPlugin.pm:226-233`),
/// so there they are UTC hours, days and weeks. A retention with nothing set keeps all.
pub fn beyond_retention(group: &[Dated], retention: &Retention) -> Vec<BackupId> {
    if retention.prune_backups().is_none() {
        return vec![];
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Keep,
        Remove,
        Protected,
    }
    let mut list: Vec<(Option<Mark>, &Dated)> = group.iter().map(|d| (d.protected.then_some(Mark::Protected), d)).collect();
    list.sort_by(|a, b| b.1.id.taken.cmp(&a.1.id.taken).then_with(|| b.1.id.volid.cmp(&a.1.id.volid)));
    let periods: [(u32, fn(&NaiveDateTime) -> String); 6] = [
        (retention.last, |t| t.format("%Y/%m/%d/%H/%M/%S").to_string()),
        (retention.hourly, |t| t.format("%Y/%m/%d/%H").to_string()),
        (retention.daily, |t| t.format("%Y/%m/%d").to_string()),
        (retention.weekly, |t| format!("{}/{}", t.iso_week().week(), t.iso_week().year())),
        (retention.monthly, |t| format!("{}/{}", t.month(), t.year())),
        (retention.yearly, |t| t.year().to_string()),
    ];
    for (count, period) in periods {
        // `$prune_mark` (`Storage.pm:1998-2026`); keep-last's "period" is each backup itself.
        if count == 0 {
            continue;
        }
        let already: std::collections::BTreeSet<String> = list.iter().filter(|(m, _)| *m == Some(Mark::Keep)).map(|(_, d)| period(&d.id.taken)).collect();
        let mut newly = std::collections::BTreeSet::new();
        for (m, d) in list.iter_mut() {
            let key = period(&d.id.taken);
            if m.is_some() || already.contains(&key) {
                continue;
            }
            if !newly.contains(&key) {
                if newly.len() >= count as usize {
                    break;
                }
                newly.insert(key);
                *m = Some(Mark::Keep);
            } else {
                *m = Some(Mark::Remove);
            }
        }
    }
    let mut out: Vec<BackupId> = list.into_iter().filter(|(m, _)| matches!(m, None | Some(Mark::Remove))).map(|(_, d)| d.id.clone()).collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_prune_backups() {
        assert_eq!(Retention { daily: 7, weekly: 4, ..Default::default() }.prune_backups().as_deref(), Some("keep-daily=7,keep-weekly=4"));
        assert_eq!(Retention::default().prune_backups(), None);
    }

    #[test]
    fn backup_ids_as_pve_names_them() {
        let b = BackupId::parse("local:backup/vzdump-lxc-10000-2030_01_02-03_00_00.tar.zst").unwrap();
        assert_eq!((b.storage.as_str(), b.kind, b.vmid), ("local", BackupKind::Lxc, 10_000));
        assert!(BackupId::parse("local:backup/vzdump-qemu-101-2030_01_02-03_00_00.vma").is_ok());
        for bad in ["", "local:backup/../x", "local:images/vzdump-lxc-100-2030_01_02-03_00_00.tar", "local:backup/vzdump-lxc-100-2030_01_02-03_00_00.tar.exe", "local:backup/vzdump-lxc-0100-2030_01_02-03_00_00.tar", "x y:backup/vzdump-lxc-100-2030_01_02-03_00_00.tar"] {
            assert_eq!(BackupId::parse(bad).map_err(|e| (e.field, e.rule)), Err(("volid".to_string(), "backup_id")), "{bad}");
        }
    }

    #[test]
    fn pbs_snapshots_as_pbs_plugin_names_them() {
        let b = BackupId::parse("pbs:backup/ct/10000/2030-01-02T03:00:00Z").unwrap();
        assert_eq!((b.storage.as_str(), b.store, b.kind, b.vmid), ("pbs", BackupStore::Pbs, BackupKind::Lxc, 10_000));
        assert_eq!(b.taken, NaiveDateTime::parse_from_str("2030-01-02 03:00:00", "%Y-%m-%d %H:%M:%S").unwrap(), "UTC, as in the name");
        assert_eq!(b.name(), "ct-10000-2030-01-02T03:00:00Z");
        let vm = BackupId::parse("backups.pbs:backup/vm/101/2029-12-31T23:59:59Z").unwrap();
        assert_eq!((vm.kind, vm.vmid, vm.name().as_str()), (BackupKind::Qemu, 101, "vm-101-2029-12-31T23:59:59Z"));
        for bad in [
            "pbs:backup/ct/../2030-01-02T03:00:00Z",
            "pbs:backup/ct/100/../../etc/passwd",
            "pbs:backup/../ct/100/2030-01-02T03:00:00Z",
            "pbs:backup/ct/100/2030-01-02T03:00:00Z/x",
            "pbs:backup/ct/100/2030-01-02T03:00:00",
            "pbs:backup/ct/100/2030-01-02 03:00:00Z",
            "pbs:backup/ct/100/2030_01_02-03_00_00",
            "pbs:backup/ct/100/2030-02-30T03:00:00Z",
            "pbs:backup/ct/100/2030-01-02T24:00:00Z",
            "pbs:backup/ct/100/+030-01-02T03:00:00Z",
            "pbs:backup/host/pve1/2030-01-02T03:00:00Z",
            "pbs:backup/ct/0100/2030-01-02T03:00:00Z",
            "pbs:backup/ct/12/2030-01-02T03:00:00Z",
            "pbs:backup/lxc/100/2030-01-02T03:00:00Z",
            "pbs:backup//100/2030-01-02T03:00:00Z",
            "pbs:backup/ct/100/2030-01-02T03:00:00Z\n",
            "../pbs:backup/ct/100/2030-01-02T03:00:00Z",
        ] {
            assert_eq!(BackupId::parse(bad).map_err(|e| (e.field, e.rule)), Err(("volid".to_string(), "backup_id")), "{bad}");
        }
    }

    /// The names in the API's paths: both forms round-trip, nothing else (no `/`, no `..`, no other storage's volume).
    #[test]
    fn names_in_paths_for_both_forms() {
        let file = BackupId::on_storage("local", "vzdump-lxc-10000-2030_01_02-03_00_00.tar.zst", "name").unwrap();
        assert_eq!((file.as_str(), file.store), ("local:backup/vzdump-lxc-10000-2030_01_02-03_00_00.tar.zst", BackupStore::File));
        let pbs = BackupId::on_storage("pbs", "ct-10000-2030-01-02T03:00:00Z", "name").unwrap();
        assert_eq!((pbs.as_str(), pbs.store), ("pbs:backup/ct/10000/2030-01-02T03:00:00Z", BackupStore::Pbs));
        for bad in [
            "ct/10000/2030-01-02T03:00:00Z",
            "ct-10000-2030-01-02T03:00:00Z/..",
            "..",
            "ct-10000-..",
            "ct-10000-2030-01-02T03-00-00Z",
            "ct-10000-2030_01_02-03_00_00",
            "vm-10000-2030-01-02T03:00:00",
            "host-10000-2030-01-02T03:00:00Z",
            "vzdump-lxc-10000-2030_01_02-03_00_00.tar.zst:x",
            "local:backup/vzdump-lxc-10000-2030_01_02-03_00_00.tar.zst",
            "vzdump-lxc-10000-2030-01-02T03:00:00Z",
            "",
        ] {
            assert_eq!(BackupId::on_storage("pbs", bad, "name").map_err(|e| (e.field, e.rule)), Err(("name".to_string(), "backup_name")), "{bad}");
        }
    }

    #[test]
    fn notes_mark_the_deployment_and_who_took_it() {
        let id = DeploymentId::generate();
        let by_schedule = BackupOrigin::Schedule { tag: "0a1b2c3d".into() };
        assert!(marked_for(&notes_for(&id, "shop", &BackupOrigin::Manual, None), &id));
        assert!(!marked_for(&notes_for(&DeploymentId::generate(), "shop", &BackupOrigin::Manual, None), &id));
        assert!(!marked_for("someone else's", &id));
        assert_eq!(origin_in(&notes_for(&id, "shop", &by_schedule, None)), by_schedule);
        assert_eq!(origin_in(&notes_for(&id, "shop", &BackupOrigin::Manual, None)), BackupOrigin::Manual);
        // The commit served rides along as a fourth word; notes without it (older backups) have none.
        let commit = CommitSha::parse(&"ab".repeat(20)).unwrap();
        let noted = notes_for(&id, "shop", &by_schedule, Some(&commit));
        assert_eq!((origin_in(&noted), commit_in(&noted)), (by_schedule.clone(), Some(commit)));
        assert!(marked_for(&noted, &id));
        assert_eq!(commit_in(&notes_for(&id, "shop", &by_schedule, None)), None);
        assert_eq!(commit_in(&format!("pvedeploy {id} shop manual not-a-commit")), None);
        assert_eq!(origin_in(&format!("pvedeploy {id} shop")), BackupOrigin::Manual);
        assert_eq!(origin_in(&format!("pvedeploy {id} shop schedule-xyz")), BackupOrigin::Manual);
    }

    fn dated(stamp: &str, protected: bool) -> Dated {
        Dated { id: BackupId::parse(&format!("local:backup/vzdump-lxc-100-{stamp}.tar.zst")).unwrap(), protected }
    }

    fn stamps(ids: &[BackupId]) -> Vec<String> {
        ids.iter().map(|b| b.name()["vzdump-lxc-100-".len().."vzdump-lxc-100-".len() + 19].to_string()).collect()
    }

    /// Cases worked by hand from `prune_mark_backup_group` (`Storage.pm:1998-2110`).
    #[test]
    fn retention_marks_as_pve_does() {
        let group: Vec<Dated> = ["2030_01_01-03_00_00", "2030_01_01-15_00_00", "2030_01_02-03_00_00", "2030_01_03-03_00_00", "2030_01_04-03_00_00"].iter().map(|s| dated(s, false)).collect();
        let daily2 = Retention { daily: 2, ..Retention::default() };
        assert_eq!(stamps(&beyond_retention(&group, &daily2)), ["2030_01_01-03_00_00", "2030_01_01-15_00_00", "2030_01_02-03_00_00"]);
        // Same day twice: only the day's newest counts.
        let daily4 = Retention { daily: 4, ..Retention::default() };
        assert_eq!(stamps(&beyond_retention(&group, &daily4)), ["2030_01_01-03_00_00"]);
        // keep-last first, then daily covers days not yet kept.
        let mixed = Retention { last: 1, daily: 2, ..Retention::default() };
        assert_eq!(stamps(&beyond_retention(&group, &mixed)), ["2030_01_01-03_00_00", "2030_01_01-15_00_00"]);
        // A protected backup is never removed and keeps no period.
        let mut with_protected = group.clone();
        with_protected[0].protected = true;
        assert_eq!(stamps(&beyond_retention(&with_protected, &daily2)), ["2030_01_01-15_00_00", "2030_01_02-03_00_00"]);
        // Weeks are ISO weeks: 2029-12-31 (Monday) is in week 1 of 2030 with 2030-01-06 (Sunday); 2030-01-07 starts week 2.
        let weeks: Vec<Dated> = ["2029_12_30-03_00_00", "2029_12_31-03_00_00", "2030_01_06-03_00_00", "2030_01_07-03_00_00"].iter().map(|s| dated(s, false)).collect();
        assert_eq!(stamps(&beyond_retention(&weeks, &Retention { weekly: 3, ..Retention::default() })), ["2029_12_31-03_00_00"]);
        assert!(beyond_retention(&group, &Retention::default()).is_empty(), "nothing set keeps all");
    }
}
