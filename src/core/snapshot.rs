//! Snapshots as data: their names (Proxmox VE's rule), the names schedules give theirs (`pvd-<schedule>-<UTC time>`),
//! who took one (a line of its description), and which of a schedule's own snapshots its retention deletes. No I/O.

use std::fmt;

use chrono::{TimeZone, Utc};

use crate::core::names::CommitSha;
use crate::core::validation::FieldError;

/// PVE's `snapname` is a `pve-configid` of at most 40 characters (PVE 9.1 `apidoc.json`, every snapshot endpoint).
pub const MAX_NAME: usize = 40;
/// The prefix of every name a schedule gives; a name a user gives may not start with it.
pub const SCHEDULED_PREFIX: &str = "pvd-";
/// The names schedules gave before names carried the schedule (`pvedeploy-YYYYMMDD-HHMMSS`); no retention deletes them now.
const LEGACY_PREFIX: &str = "pvedeploy-";
/// The longest description a user may give.
pub const MAX_NOTE: usize = 200;
/// The line of a snapshot's description that says who took it.
const TAKEN_BY: &str = "pvedeploy: taken by ";
/// The line of a snapshot's description that says which commit the guest served.
const SERVING: &str = "pvedeploy: serving ";

/// A snapshot name Proxmox VE accepts: a letter, then letters, digits, `_` or `-`, 2 to 40 characters in all
/// (PVE's `pve-configid`), never `current` (PVE's name for the live state).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotName(String);

impl SnapshotName {
    /// A name for a snapshot a user takes: PVE's rule, and not `pvd-…` (those are the schedules').
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let name = Self::parse_existing(raw)?;
        if name.0.to_ascii_lowercase().starts_with(SCHEDULED_PREFIX) {
            return Err(FieldError::new("name", "reserved", format!("`{raw}` starts with `{SCHEDULED_PREFIX}`, which names only snapshots that schedules take and prune")));
        }
        Ok(name)
    }

    /// The name of a snapshot that exists (to roll back to or delete): PVE's rule only.
    pub fn parse_existing(raw: &str) -> Result<Self, FieldError> {
        let rule = "2-40 characters: a letter, then letters, digits, `_` or `-` (Proxmox VE's rule for snapshot names)";
        let shown: String = raw.chars().take(MAX_NAME + 1).flat_map(char::escape_debug).collect();
        let ok_chars = raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if raw.len() < 2 || raw.len() > MAX_NAME || !ok_chars || !raw.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(FieldError::new("name", "snapshot_name", format!("`{shown}` is not a snapshot name: {rule}")));
        }
        if raw.eq_ignore_ascii_case("current") {
            return Err(FieldError::new("name", "reserved", "`current` is Proxmox VE's name for the live state, not a snapshot"));
        }
        Ok(Self(raw.to_string()))
    }

    /// The name schedule `schedule_id` gives the snapshot of `occurrence_ms`: `pvd-<tag>-YYYYMMDD-HHMMSS` (UTC), 28
    /// characters; names of one schedule sort by time.
    pub fn scheduled(schedule_id: &str, occurrence_ms: i64) -> Self {
        let t = Utc.timestamp_millis_opt(occurrence_ms).single().unwrap_or_default();
        Self(format!("{SCHEDULED_PREFIX}{}-{}", schedule_tag(schedule_id), t.format("%Y%m%d-%H%M%S")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Who gave this name: a schedule (its tag), a schedule before names carried it, or anyone else.
    pub fn origin(&self) -> Origin {
        if let Some(rest) = self.0.strip_prefix(SCHEDULED_PREFIX) {
            if let Some((tag, time)) = rest.split_once('-') {
                if is_tag(tag) && is_stamp(time) {
                    return Origin::Schedule { tag: tag.to_string() };
                }
            }
        }
        match self.0.strip_prefix(LEGACY_PREFIX) {
            Some(time) if is_stamp(time) => Origin::EarlierSchedule,
            _ => Origin::Other,
        }
    }
}

impl fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a snapshot's name came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Taken by the schedule with this tag; its retention prunes it.
    Schedule { tag: String },
    /// `pvedeploy-YYYYMMDD-HHMMSS`: taken by a schedule before names carried the schedule; nothing prunes it now.
    EarlierSchedule,
    /// Taken by hand (through pvedeploy or in Proxmox VE); nothing prunes it.
    Other,
}

/// A schedule's tag in its snapshots' names: the last 8 hex digits of its id (a UUIDv7's random part).
pub fn schedule_tag(schedule_id: &str) -> String {
    let hex: Vec<char> = schedule_id.chars().filter(char::is_ascii_hexdigit).map(|c| c.to_ascii_lowercase()).collect();
    hex[hex.len().saturating_sub(8)..].iter().collect()
}

fn is_tag(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `YYYYMMDD-HHMMSS`.
fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 15 && b[8] == b'-' && b[..8].iter().chain(&b[9..]).all(u8::is_ascii_digit)
}

/// The snapshots among `names` that schedule `schedule_id` took, beyond the newest `keep` of them, oldest first:
/// what its retention deletes. Every other snapshot (another schedule's, a manual one, an earlier schedule's) stays.
pub fn beyond_keep(names: &[SnapshotName], schedule_id: &str, keep: u32) -> Vec<SnapshotName> {
    let tag = schedule_tag(schedule_id);
    let mut own: Vec<&SnapshotName> = names.iter().filter(|n| n.origin() == Origin::Schedule { tag: tag.clone() }).collect();
    own.sort();
    let excess = own.len().saturating_sub(keep as usize);
    own.into_iter().take(excess).cloned().collect()
}

/// A user's description of a snapshot: one line of printable text, at most 200 characters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotNote(String);

impl SnapshotNote {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let raw = raw.trim();
        if raw.chars().count() > MAX_NOTE {
            return Err(FieldError::new("description", "length", format!("must be at most {MAX_NOTE} characters")));
        }
        if raw.chars().any(char::is_control) {
            return Err(FieldError::new("description", "one_line", "must be one line of text (no line breaks, tabs or control characters)"));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The description written to Proxmox VE: the user's note, then who took it, then the commit the guest served
/// when pvedeploy knew it (so a rollback can record what the guest serves again).
pub fn description_for(note: &SnapshotNote, taken_by: &str, serving: Option<&CommitSha>) -> String {
    let who = taken_by.replace(char::is_control, " ");
    let mut lines: Vec<String> = Vec::new();
    if !note.0.is_empty() {
        lines.push(note.0.clone());
    }
    lines.push(format!("{TAKEN_BY}{who}"));
    if let Some(c) = serving {
        lines.push(format!("{SERVING}{}", c.as_str()));
    }
    lines.join("\n")
}

/// A snapshot's description as Proxmox VE gives it back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Described {
    /// The user's note (or whatever the description holds, for a snapshot taken in Proxmox VE).
    pub note: String,
    /// Who took it, when pvedeploy did.
    pub taken_by: Option<String>,
    /// The commit the guest served when it was taken, when pvedeploy recorded it.
    pub serving: Option<CommitSha>,
}

/// Reads a description as Proxmox VE gives it back: pvedeploy's lines taken out, the rest is the note.
pub fn read_description(text: &str) -> Described {
    let mut out = Described::default();
    let mut note = Vec::new();
    for line in text.lines() {
        if let Some(who) = line.strip_prefix(TAKEN_BY) {
            out.taken_by = Some(who.trim().to_string());
        } else if let Some(sha) = line.strip_prefix(SERVING).and_then(|c| CommitSha::parse(c.trim()).ok()) {
            out.serving = Some(sha);
        } else {
            note.push(line);
        }
    }
    out.note = note.join("\n").trim().to_string();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "01900000-0000-7000-8000-00000000aaaa";
    const B: &str = "01900000-0000-7000-8000-00000000bbbb";

    #[test]
    fn names_follow_proxmox_and_keep_the_schedules_prefix_for_schedules() {
        assert_eq!(SnapshotName::parse("before-upgrade_2").unwrap().as_str(), "before-upgrade_2");
        let rule = |raw: &str| SnapshotName::parse(raw).unwrap_err().rule;
        assert_eq!(rule("1st"), "snapshot_name");
        assert_eq!(rule("a"), "snapshot_name");
        assert_eq!(rule("with space"), "snapshot_name");
        assert_eq!(rule("x".repeat(41).as_str()), "snapshot_name");
        assert_eq!(rule("current"), "reserved");
        assert_eq!(rule("pvd-mine"), "reserved");
        assert!(SnapshotName::parse_existing("pvd-0000aaaa-20300101-030000").is_ok());
        let s = SnapshotName::scheduled(A, 1_893_466_800_000);
        assert_eq!(s.as_str(), "pvd-0000aaaa-20300101-030000");
        assert!(s.as_str().len() <= MAX_NAME);
        assert_eq!(s.origin(), Origin::Schedule { tag: "0000aaaa".into() });
        assert_eq!(SnapshotName::parse_existing("pvedeploy-20260101-000000").unwrap().origin(), Origin::EarlierSchedule);
        assert_eq!(SnapshotName::parse_existing("before").unwrap().origin(), Origin::Other);
    }

    #[test]
    fn a_schedules_retention_deletes_only_its_own_oldest() {
        let hour = 3_600_000;
        let t0 = 1_893_456_000_000;
        let mut names: Vec<SnapshotName> = (0..5).map(|h| SnapshotName::scheduled(A, t0 + h * hour)).collect();
        names.extend((0..3).map(|d| SnapshotName::scheduled(B, t0 + d * 24 * hour)));
        names.push(SnapshotName::parse("before-upgrade").unwrap());
        names.push(SnapshotName::parse_existing("pvedeploy-20200101-000000").unwrap());
        let gone = beyond_keep(&names, A, 3);
        assert_eq!(gone, vec![SnapshotName::scheduled(A, t0), SnapshotName::scheduled(A, t0 + hour)]);
        assert_eq!(beyond_keep(&names, B, 2), vec![SnapshotName::scheduled(B, t0)]);
        assert!(beyond_keep(&names, B, 3).is_empty());
    }

    #[test]
    fn who_took_it_travels_in_the_description() {
        let note = SnapshotNote::parse("before the 2.0 migration").unwrap();
        let text = description_for(&note, "api:admin", None);
        assert_eq!(read_description(&text), Described { note: "before the 2.0 migration".into(), taken_by: Some("api:admin".into()), serving: None });
        assert_eq!(read_description("made in the GUI"), Described { note: "made in the GUI".into(), ..Described::default() });
        // the commit the guest served travels too; a line that only looks like it stays in the note
        let sha = CommitSha::parse("0123456789abcdef0123456789abcdef01234567").unwrap();
        let text = description_for(&SnapshotNote::default(), "schedule:s1", Some(&sha));
        assert_eq!(read_description(&text), Described { note: String::new(), taken_by: Some("schedule:s1".into()), serving: Some(sha) });
        assert_eq!(read_description("pvedeploy: serving not-a-sha").note, "pvedeploy: serving not-a-sha");
        assert_eq!(SnapshotNote::parse("two\nlines").unwrap_err().rule, "one_line");
        assert_eq!(SnapshotNote::parse(&"x".repeat(201)).unwrap_err().rule, "length");
    }
}
