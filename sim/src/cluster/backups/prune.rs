//! `prune-backups` as pve-storage computes it: the option's validation (`Plugin.pm:88-137` at 0c56bad) and
//! `PVE::Storage::prune_mark_backup_group` (`Storage.pm:1998-2110`). The node's time zone is UTC here, where PVE
//! uses the node's local time.

use std::collections::BTreeMap;

/// Parsed `prune-backups`: how many to keep per period; `all` keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    pub all: bool,
    pub last: u64,
    pub hourly: u64,
    pub daily: u64,
    pub weekly: u64,
    pub monthly: u64,
    pub yearly: u64,
}

impl Keep {
    /// `validate_prune_backups` (`Plugin.pm:125-137`): no positive option means `keep-all=1`; `keep-all` with a
    /// positive option is refused.
    pub fn parse(text: &str) -> Result<Keep, String> {
        let mut keep = Keep::default();
        let mut keep_all = false;
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("missing value for '{part}'"))?;
            if k == "keep-all" {
                keep_all = matches!(v, "1" | "yes" | "on" | "true");
                continue;
            }
            let n: u64 = v.parse().map_err(|_| format!("{k}: type check ('integer') failed - got '{v}'"))?;
            match k {
                "keep-last" => keep.last = n,
                "keep-hourly" => keep.hourly = n,
                "keep-daily" => keep.daily = n,
                "keep-weekly" => keep.weekly = n,
                "keep-monthly" => keep.monthly = n,
                "keep-yearly" => keep.yearly = n,
                other => return Err(format!("invalid key in comma-separated list property: {other}")),
            }
        }
        let positive = [keep.last, keep.hourly, keep.daily, keep.weekly, keep.monthly, keep.yearly].iter().any(|n| *n > 0);
        if !positive {
            return Ok(Keep { all: true, ..Keep::default() });
        }
        if keep_all {
            return Err("keep-all cannot be set together with other options.".into());
        }
        Ok(keep)
    }

    /// The options as vzdump logs them (`VZDump.pm:1247-1249`: sorted `key=value`, only those set).
    pub fn describe(&self) -> String {
        if self.all {
            return "keep-all=1".into();
        }
        let mut set: BTreeMap<&str, u64> = BTreeMap::new();
        for (k, v) in [("keep-last", self.last), ("keep-hourly", self.hourly), ("keep-daily", self.daily), ("keep-weekly", self.weekly), ("keep-monthly", self.monthly), ("keep-yearly", self.yearly)] {
            if v > 0 {
                set.insert(k, v);
            }
        }
        set.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
    }
}

/// What prune decided for one backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Keep,
    Remove,
    Protected,
}

/// One backup of a group (same guest type and VMID): its time from the name, and whether it is protected.
#[derive(Debug, Clone)]
pub struct Entry<T> {
    pub ctime: u64,
    pub protected: bool,
    pub item: T,
}

/// `prune_mark_backup_group`: newest first, each option keeps the newest backup of its next N distinct periods not
/// already covered by an earlier option; everything unmarked is removed; protected backups are never removed.
pub fn mark<T>(group: Vec<Entry<T>>, keep: &Keep) -> Vec<(Mark, T)> {
    let mut list: Vec<(Option<Mark>, Entry<T>)> = group.into_iter().map(|e| (e.protected.then_some(Mark::Protected), e)).collect();
    if keep.all {
        return list.into_iter().map(|(m, e)| (m.unwrap_or(Mark::Keep), e.item)).collect();
    }
    list.sort_by(|a, b| b.1.ctime.cmp(&a.1.ctime));
    let periods: [(u64, fn(u64) -> String); 6] = [
        (keep.last, |t| t.to_string()),
        (keep.hourly, |t| (t / 3600).to_string()),
        (keep.daily, |t| (t / 86_400).to_string()),
        (keep.weekly, |t| {
            let (year, week) = iso_week(t);
            format!("{week}/{year}")
        }),
        (keep.monthly, |t| {
            let (y, m, _) = civil(t / 86_400);
            format!("{m}/{y}")
        }),
        (keep.yearly, |t| civil(t / 86_400).0.to_string()),
    ];
    for (count, id) in periods {
        // `$prune_mark` (`Storage.pm:1998-2026`).
        if count == 0 {
            continue;
        }
        let already: std::collections::BTreeSet<String> = list.iter().filter(|(m, _)| *m == Some(Mark::Keep)).map(|(_, e)| id(e.ctime)).collect();
        let mut newly = std::collections::BTreeSet::new();
        for (m, e) in list.iter_mut() {
            let key = id(e.ctime);
            if m.is_some() || already.contains(&key) {
                continue;
            }
            if !newly.contains(&key) {
                if newly.len() as u64 >= count {
                    break;
                }
                newly.insert(key);
                *m = Some(Mark::Keep);
            } else {
                *m = Some(Mark::Remove);
            }
        }
    }
    list.into_iter().map(|(m, e)| (m.unwrap_or(Mark::Remove), e.item)).collect()
}

/// Year, month, day of a day number since 1970-01-01 (H. Hinnant's `civil_from_days`).
pub fn civil(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Day number of a date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `strftime("%G")`, `strftime("%V")`: the ISO week-numbering year and week of a time.
pub fn iso_week(t: u64) -> (i64, u32) {
    let days = (t / 86_400) as i64;
    let monday_based = (days + 3).rem_euclid(7); // 1970-01-01 was a Thursday
    let thursday = days - monday_based + 3;
    let (year, _, _) = civil(thursday as u64);
    let week = ((thursday - days_from_civil(year, 1, 1)) / 7 + 1) as u32;
    (year, week)
}

/// `YYYY_MM_DD-HH_MM_SS` of a time (the backup's name, `VZDump.pm:950-951`).
pub fn stamp(t: u64) -> String {
    let (y, m, d) = civil(t / 86_400);
    let s = t % 86_400;
    format!("{y:04}_{m:02}_{d:02}-{:02}_{:02}_{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// `%F %H:%M:%S` of a time.
pub fn log_time(t: u64) -> String {
    let (y, m, d) = civil(t / 86_400);
    let s = t % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The time of a `YYYY_MM_DD-HH_MM_SS` stamp (`archive_info`'s `timelocal`, `Storage.pm:1813-1818`).
pub fn parse_stamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 19 || b[4] != b'_' || b[7] != b'_' || b[10] != b'-' || b[13] != b'_' || b[16] != b'_' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r).filter(|x| x.bytes().all(|c| c.is_ascii_digit())).and_then(|x| x.parse::<u32>().ok());
    let (y, mo, d, h, mi, se) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    u64::try_from(days * 86_400 + i64::from(h * 3600 + mi * 60 + se)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> u64 {
        parse_stamp(s).unwrap()
    }

    fn kept(times: &[&str], keep: &str) -> Vec<String> {
        let keep = Keep::parse(keep).unwrap();
        let group = times.iter().map(|t| Entry { ctime: at(t), protected: false, item: t.to_string() }).collect();
        let mut out: Vec<String> = mark(group, &keep).into_iter().filter(|(m, _)| *m == Mark::Keep).map(|(_, t)| t).collect();
        out.sort();
        out
    }

    #[test]
    fn stamps_round_trip_and_weeks_are_iso() {
        assert_eq!(stamp(at("2030_01_01-03_00_00")), "2030_01_01-03_00_00");
        assert_eq!(log_time(at("2024_02_29-23_59_59")), "2024-02-29 23:59:59");
        // 2021-01-03 is in ISO week 53 of 2020; 2024-12-30 in week 1 of 2025.
        assert_eq!(iso_week(at("2021_01_03-12_00_00")), (2020, 53));
        assert_eq!(iso_week(at("2024_12_30-00_00_00")), (2025, 1));
        assert_eq!(parse_stamp("2030_13_01-00_00_00"), None);
    }

    /// The cases of pve-storage `src/test/prune_backups_test.pm` this model must agree with, in UTC.
    #[test]
    fn marks_as_pve_does() {
        let days = ["2030_01_01-03_00_00", "2030_01_02-03_00_00", "2030_01_03-03_00_00", "2030_01_04-03_00_00"];
        assert_eq!(kept(&days, "keep-daily=2"), ["2030_01_03-03_00_00", "2030_01_04-03_00_00"]);
        // Two on one day: only the newest of the day counts.
        let same = ["2030_01_01-01_00_00", "2030_01_01-02_00_00", "2030_01_02-01_00_00"];
        assert_eq!(kept(&same, "keep-daily=2"), ["2030_01_01-02_00_00", "2030_01_02-01_00_00"]);
        // keep-last covers the newest first; keep-daily then skips the days already covered.
        assert_eq!(kept(&days, "keep-last=1,keep-daily=2"), ["2030_01_02-03_00_00", "2030_01_03-03_00_00", "2030_01_04-03_00_00"]);
        assert_eq!(kept(&days, "keep-all=1"), days);
        assert_eq!(Keep::parse("keep-daily=0").unwrap(), Keep { all: true, ..Keep::default() });
        assert!(Keep::parse("keep-all=1,keep-last=2").is_err());
        assert_eq!(Keep::parse("keep-weekly=4,keep-daily=7").unwrap().describe(), "keep-daily=7, keep-weekly=4");
    }
}
