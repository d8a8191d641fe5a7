//! Backups as data: the retention (Proxmox VE's `prune-backups`, so "7 daily, 4 weekly" is `keep_daily = 7,
//! keep_weekly = 4`), a backup volume's id as Proxmox VE names it (`<storage>:backup/vzdump-{lxc,qemu}-<vmid>-
//! YYYY_MM_DD-HH_MM_SS.<ext>`, pve-storage `Storage.pm:1800-1828` `archive_info`), and the mark pvedeploy writes into
//! a backup's notes so that a listing shows only backups of the deployment. No I/O.

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

/// The id of a backup volume as Proxmox VE names the archives vzdump writes; parsed, so a door hands the engine
/// only names of this shape (never a path or another storage's volume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupId {
    volid: String,
    pub storage: String,
    pub kind: BackupKind,
    pub vmid: u32,
    /// The time in the archive's name: the node's local time when vzdump started.
    pub taken: NaiveDateTime,
}

impl BackupId {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let bad = || {
            let shown: String = raw.chars().take(120).flat_map(char::escape_debug).collect();
            FieldError::new("volid", "backup_id", format!("`{shown}` is not a backup: `<storage>:backup/vzdump-<lxc|qemu>-<vmid>-YYYY_MM_DD-HH_MM_SS.<tar|vma>[.zst|.gz|.lzo]`, as listed by GET …/backups"))
        };
        let (storage, file) = raw.split_once(":backup/").ok_or_else(bad)?;
        let storage_ok = !storage.is_empty() && storage.len() <= 64 && storage.starts_with(|c: char| c.is_ascii_alphabetic()) && storage.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        let rest = file.strip_prefix("vzdump-").ok_or_else(bad)?;
        let (kind, rest) = rest.split_once('-').ok_or_else(bad)?;
        let kind = match kind {
            "lxc" => BackupKind::Lxc,
            "qemu" => BackupKind::Qemu,
            _ => return Err(bad()),
        };
        let (vmid, rest) = rest.split_once('-').ok_or_else(bad)?;
        let vmid_ok = (3..=9).contains(&vmid.len()) && !vmid.starts_with('0') && vmid.bytes().all(|b| b.is_ascii_digit());
        let stamp = rest.get(..19).ok_or_else(bad)?;
        let stamp_ok = stamp.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 | 13 | 16 => b == b'_',
            10 => b == b'-',
            _ => b.is_ascii_digit(),
        });
        let taken = NaiveDateTime::parse_from_str(stamp, "%Y_%m_%d-%H_%M_%S").map_err(|_| bad())?;
        let ext = rest.get(19..).ok_or_else(bad)?;
        let ext_ok = matches!(ext, ".tar" | ".vma" | ".tgz") || [".tar.", ".vma."].iter().any(|p| ext.strip_prefix(p).is_some_and(|c| matches!(c, "zst" | "gz" | "lzo")));
        if !(storage_ok && vmid_ok && stamp_ok && ext_ok) {
            return Err(bad());
        }
        Ok(Self { volid: raw.to_string(), storage: storage.to_string(), kind, vmid: vmid.parse().map_err(|_| bad())?, taken })
    }

    /// A backup named by its file on `storage` (`vzdump-lxc-10000-2030_01_02-03_00_00.tar.zst`), as the API's paths
    /// name it; a wrong one is an error for `field`.
    pub fn on_storage(storage: &str, file: &str, field: &str) -> Result<Self, FieldError> {
        if file.contains(['/', ':']) {
            let shown: String = file.chars().take(120).flat_map(char::escape_debug).collect();
            return Err(FieldError::new(field, "backup_name", format!("`{shown}` is not a backup's name: `vzdump-<lxc|qemu>-<vmid>-YYYY_MM_DD-HH_MM_SS.<tar|vma>[.zst|.gz|.lzo]`, as listed by GET …/backups")));
        }
        Self::parse(&format!("{storage}:backup/{file}")).map_err(|e| FieldError::new(field, "backup_name", e.message))
    }

    /// The archive's file name (`vzdump-…`).
    pub fn file(&self) -> &str {
        self.volid.split_once(":backup/").map_or("", |(_, f)| f)
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
/// weeks), so they are the node's own hours, days and weeks. A retention with nothing set keeps all.
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
        ids.iter().map(|b| b.file()["vzdump-lxc-100-".len().."vzdump-lxc-100-".len() + 19].to_string()).collect()
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
