//! Whether the embedded store can be trusted after its start: reads the report the patched surrealkv
//! appends when it repairs its write-ahead log (`<store>/wal-repair-report`, see
//! `vendor/surrealkv/PATCHES.md`). A torn tail (the one record being written when the process died,
//! never acknowledged) is accepted; a repair that dropped whole records lost acknowledged writes, and
//! the store stays untrusted until an operator runs `pvedeploy recover`.

use std::path::{Path, PathBuf};

/// What the agent may do with what the store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    Trusted,
    /// Acknowledged writes were lost: read, never act. The reason names what was lost and what to do.
    Untrusted { reason: String },
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    pub segment: String,
    pub dropped_bytes: u64,
    pub complete_records_dropped: u64,
    pub reason: String,
}

impl Repair {
    /// `segment=3 good_until=1024 dropped_bytes=512 complete_records_dropped=2 reason=checksum mismatch`
    pub fn parse(line: &str) -> Option<Repair> {
        let (head, reason) = line.split_once(" reason=").unwrap_or((line, ""));
        let field = |k: &str| head.split(' ').find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')));
        Some(Repair {
            segment: field("segment")?.to_string(),
            dropped_bytes: field("dropped_bytes")?.parse().ok()?,
            complete_records_dropped: field("complete_records_dropped")?.parse().ok()?,
            reason: reason.trim().to_string(),
        })
    }

    pub fn lost_acknowledged_writes(&self) -> bool {
        self.complete_records_dropped > 0
    }
}

/// The report file of the store at `dir`.
pub fn report_path(dir: &Path) -> PathBuf {
    dir.join("wal-repair-report")
}

/// Reads the report after the store opened. Torn tails are moved to `wal-repair-report.accepted` (they
/// lost nothing acknowledged); any other repair, or a report that cannot be read, leaves the store
/// untrusted. No report: trusted.
pub fn check(dir: &Path) -> Trust {
    let path = report_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Trust::Trusted,
        Err(e) => return Trust::Untrusted { reason: format!("the store's repair report {} cannot be read ({e}); run `pvedeploy recover`", path.display()) },
    };
    let mut lost = vec![];
    let mut torn = vec![];
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match Repair::parse(line) {
            Some(r) if !r.lost_acknowledged_writes() => torn.push(line.to_string()),
            Some(r) => lost.push(r),
            None => {
                return Trust::Untrusted { reason: format!("the store's repair report {} has a line this version cannot read: {line:?}; run `pvedeploy recover`", path.display()) }
            }
        }
    }
    if lost.is_empty() {
        match accept(dir, &torn) {
            Ok(()) => {
                for t in &torn {
                    tracing::warn!(repair = %t, "the store's log ended in a torn write (an unfinished write when the process stopped); it was dropped, nothing acknowledged was lost");
                }
                return Trust::Trusted;
            }
            Err(e) => return Trust::Untrusted { reason: format!("could not record the accepted repair of the store's log ({e}); run `pvedeploy recover`") },
        }
    }
    let records: u64 = lost.iter().map(|r| r.complete_records_dropped).sum();
    let bytes: u64 = lost.iter().map(|r| r.dropped_bytes).sum();
    let why = lost.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>().join("; ");
    Trust::Untrusted {
        reason: format!(
            "the store's write-ahead log was corrupt ({why}); repairing it dropped {records} complete records ({bytes} bytes) that had been acknowledged, so the store may have forgotten deployments and guests. The agent is read-only: run `pvedeploy recover` to rebuild the records from the cluster and confirm"
        ),
    }
}

/// Moves report lines to the accepted log (appended, fsynced) and removes the report.
fn accept(dir: &Path, lines: &[String]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("wal-repair-report.accepted"))?;
    for l in lines {
        writeln!(f, "{l}")?;
    }
    f.sync_all()?;
    std::fs::remove_file(report_path(dir))?;
    std::fs::File::open(dir)?.sync_all()
}

/// After an operator confirmed `pvedeploy recover`: the report is kept as `wal-repair-report.resolved-<ms>`
/// and the store is trusted again.
pub fn resolve(dir: &Path, at_millis: i64) -> std::io::Result<()> {
    let path = report_path(dir);
    if path.exists() {
        std::fs::rename(&path, dir.join(format!("wal-repair-report.resolved-{at_millis}")))?;
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tails_are_accepted_and_lost_records_are_not() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check(dir.path()), Trust::Trusted);
        std::fs::write(report_path(dir.path()), "segment=0 good_until=4096 dropped_bytes=9 complete_records_dropped=0 reason=bad record length\n").unwrap();
        assert_eq!(check(dir.path()), Trust::Trusted);
        assert!(!report_path(dir.path()).exists());
        assert!(std::fs::read_to_string(dir.path().join("wal-repair-report.accepted")).unwrap().contains("dropped_bytes=9"));
        std::fs::write(report_path(dir.path()), "segment=0 good_until=4096 dropped_bytes=70000 complete_records_dropped=12 reason=checksum mismatch\n").unwrap();
        let Trust::Untrusted { reason } = check(dir.path()) else { panic!("untrusted") };
        assert!(reason.contains("12 complete records") && reason.contains("pvedeploy recover"), "{reason}");
        // It stays so at every start until resolved.
        assert!(matches!(check(dir.path()), Trust::Untrusted { .. }));
        resolve(dir.path(), 42).unwrap();
        assert_eq!(check(dir.path()), Trust::Trusted);
        std::fs::write(report_path(dir.path()), "garbage\n").unwrap();
        assert!(matches!(check(dir.path()), Trust::Untrusted { .. }));
    }
}
