//! Schedules as data: a cron expression in an IANA time zone, the action it runs and on what; when it
//! runs next (correct across DST changes) and whether it is due now (the catch-up rule). No I/O.

mod expression;
mod run;

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};

use crate::core::deployment::DeploymentId;
use crate::core::validation::{FieldError, ValidationErrors};

pub use expression::CronExpr;
pub use run::{RunOutcome, RunRecord};

/// An occurrence older than this when the scheduler sees it was missed (the agent was down or the
/// schedule could not run): it runs once when `catch_up` is set, else it is skipped. The scheduler
/// wakes at every due time and at least every 30 s, so an on-time run is never this late.
pub const GRACE_MS: i64 = 120_000;

/// Missed occurrences are counted up to this many (the count is only reported).
const MISSED_CAP: u32 = 10_000;

/// The largest `keep` of a snapshot schedule.
pub const MAX_KEEP: u32 = 100;

/// An IANA time zone (`Europe/Berlin`, `UTC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone(chrono_tz::Tz);

impl Zone {
    pub const UTC: Zone = Zone(chrono_tz::UTC);

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        chrono_tz::Tz::from_str(raw.trim())
            .map(Zone)
            .map_err(|_| FieldError::new("timezone", "iana_zone", format!("{raw:?} is not an IANA time zone name such as `Europe/Berlin` or `UTC`")))
    }

    /// Every zone name `parse` accepts as written (the IANA database `chrono-tz` carries).
    pub fn names() -> Vec<&'static str> {
        chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()).collect()
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// `ms` (UTC) as RFC 3339 with this zone's offset at that instant.
    pub fn rfc3339(&self, ms: i64) -> String {
        self.0.timestamp_millis_opt(ms).single().map(|t| t.to_rfc3339()).unwrap_or_default()
    }
}

/// What a schedule does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleAction {
    /// Redeploy the branch head (picks up security updates and new commits).
    Redeploy,
    /// Take a snapshot `pvd-<schedule>-YYYYMMDD-HHMMSS`, then delete this schedule's own oldest beyond `keep`.
    Snapshot { keep: u32 },
    /// Back the guest up with Proxmox VE's vzdump into the configured backup storage; Proxmox VE's own retention
    /// (`prune-backups` from `[proxmox.backups]`) decides which backups stay.
    Backup,
    Stop,
    Start,
    Destroy,
    /// Run the reconciler (orphans, missing guests).
    Reconcile,
    /// Check drift between store, guests and Terraform exports.
    Drift,
}

impl ScheduleAction {
    pub const NAMES: [&'static str; 8] = ["redeploy", "snapshot", "backup", "stop", "start", "destroy", "reconcile", "drift"];

    /// `keep` belongs to `snapshot` only (1..=`MAX_KEEP`).
    pub fn parse(action: &str, keep: Option<i64>) -> Result<Self, ValidationErrors> {
        let mut errs = ValidationErrors::default();
        let action = match action {
            "redeploy" => Some(ScheduleAction::Redeploy),
            "snapshot" => match keep {
                None => {
                    errs.push(FieldError::new("keep", "required", "is required for a snapshot schedule: how many of its own snapshots to keep"));
                    None
                }
                Some(k) if !(1..=i64::from(MAX_KEEP)).contains(&k) => {
                    errs.push(FieldError::new("keep", "range", format!("must be between 1 and {MAX_KEEP}")));
                    None
                }
                Some(k) => Some(ScheduleAction::Snapshot { keep: k as u32 }),
            },
            "backup" => Some(ScheduleAction::Backup),
            "stop" => Some(ScheduleAction::Stop),
            "start" => Some(ScheduleAction::Start),
            "destroy" => Some(ScheduleAction::Destroy),
            "reconcile" => Some(ScheduleAction::Reconcile),
            "drift" => Some(ScheduleAction::Drift),
            other => {
                errs.push(FieldError::new("action", "enum", format!("{other:?} is not an action; use one of: {}", Self::NAMES.join(", "))));
                None
            }
        };
        if keep.is_some() && !matches!(action, Some(ScheduleAction::Snapshot { .. }) | None) {
            errs.push(FieldError::new("keep", "not_allowed", "applies to the snapshot action only"));
        }
        match action {
            Some(a) if errs.is_empty() => Ok(a),
            _ => Err(errs),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ScheduleAction::Redeploy => "redeploy",
            ScheduleAction::Snapshot { .. } => "snapshot",
            ScheduleAction::Backup => "backup",
            ScheduleAction::Stop => "stop",
            ScheduleAction::Start => "start",
            ScheduleAction::Destroy => "destroy",
            ScheduleAction::Reconcile => "reconcile",
            ScheduleAction::Drift => "drift",
        }
    }

    pub fn keep(&self) -> Option<u32> {
        match self {
            ScheduleAction::Snapshot { keep } => Some(*keep),
            _ => None,
        }
    }

    /// Destroying needs the `admin` scope, as it does when asked directly.
    pub fn needs_admin(&self) -> bool {
        matches!(self, ScheduleAction::Destroy)
    }
}

/// What a schedule acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    All,
    Deployment(DeploymentId),
}

impl Target {
    /// `all` or a deployment id (a door resolves names to ids before).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "all" => Ok(Target::All),
            id => DeploymentId::parse(id).map(Target::Deployment).ok_or_else(|| FieldError::new("target", "deployment", "must be `all` or an existing deployment's id or name")),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Target::All => "all",
            Target::Deployment(id) => id.as_str(),
        }
    }
}

/// A schedule request as a door hands it over (absent = default).
#[derive(Debug, Clone, Default)]
pub struct RawSchedule {
    pub cron: Option<String>,
    /// Default `UTC`.
    pub timezone: Option<String>,
    pub action: Option<String>,
    pub keep: Option<i64>,
    /// `all` or a deployment id.
    pub target: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// Default false: a run missed while the agent was down is skipped.
    pub catch_up: Option<bool>,
}

/// A valid schedule's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    pub cron: CronExpr,
    pub zone: Zone,
    pub action: ScheduleAction,
    pub target: Target,
    pub enabled: bool,
    pub catch_up: bool,
}

impl ScheduleSpec {
    /// Every wrong field at once; nothing is built unless all are right.
    pub fn parse(raw: RawSchedule) -> Result<Self, ValidationErrors> {
        let mut errs = ValidationErrors::default();
        let cron = match raw.cron.as_deref() {
            Some(c) => errs.take(CronExpr::parse(c)),
            None => errs.take(Err(FieldError::new("cron", "required", "must be a cron expression such as `0 3 * * *` (03:00 every day)"))),
        };
        let zone = errs.take(raw.timezone.as_deref().map_or(Ok(Zone::UTC), Zone::parse));
        let action = match raw.action.as_deref() {
            Some(a) => match ScheduleAction::parse(a, raw.keep) {
                Ok(a) => Some(a),
                Err(e) => {
                    errs.0.extend(e.0);
                    None
                }
            },
            None => errs.take(Err(FieldError::new("action", "required", format!("must be one of: {}", ScheduleAction::NAMES.join(", "))))),
        };
        let target = match raw.target.as_deref() {
            Some(t) => errs.take(Target::parse(t)),
            None => errs.take(Err(FieldError::new("target", "required", "must be `all` or a deployment's id or name"))),
        };
        if let (Some(a), Some(t)) = (&action, &target) {
            match (a, t) {
                (ScheduleAction::Reconcile | ScheduleAction::Drift, Target::Deployment(_)) => {
                    errs.push(FieldError::new("target", "all_only", format!("must be `all`: {} covers the whole cluster", a.as_str())))
                }
                (ScheduleAction::Destroy, Target::All) => {
                    errs.push(FieldError::new("target", "single_only", "a destroy schedule names one deployment; `all` is refused"))
                }
                _ => {}
            }
        }
        match (cron, zone, action, target) {
            (Some(cron), Some(zone), Some(action), Some(target)) if errs.is_empty() => {
                Ok(ScheduleSpec { cron, zone, action, target, enabled: raw.enabled.unwrap_or(true), catch_up: raw.catch_up.unwrap_or(false) })
            }
            _ => Err(errs),
        }
    }

    /// A new or replacing request, at `now_ms`: as [`parse`](Self::parse), and an expression with no run after now
    /// (`0 0 0 1 1 * 2020`) is refused naming the field; a stored schedule whose runs are all past still loads.
    pub fn parse_new(raw: RawSchedule, now_ms: i64) -> Result<Self, ValidationErrors> {
        let spec = Self::parse(raw)?;
        if spec.next_runs(now_ms, 1).is_empty() {
            let now = Zone::UTC.rfc3339(now_ms);
            return Err(ValidationErrors(vec![FieldError::new("cron", "never_fires", format!("`{}`: has no run after now ({now}); every time it names is past", spec.cron.as_str()))]));
        }
        Ok(spec)
    }

    /// The next `n` run times strictly after `after_ms`, as UTC milliseconds, ascending.
    ///
    /// The expression is matched against wall-clock time in the zone. A wall time that does not exist
    /// (spring forward) runs at the first instant after the gap when the expression names fixed hours,
    /// and is dropped when it runs every hour (the next hour comes anyway). A wall time that happens
    /// twice (fall back) runs once, at its first instant, when the expression names fixed hours; every
    /// hour means both.
    pub fn next_runs(&self, after_ms: i64, n: usize) -> Vec<i64> {
        self.runs_after(after_ms).take(n).collect()
    }

    /// Every run time strictly after `after_ms`, ascending, lazily.
    fn runs_after(&self, after_ms: i64) -> impl Iterator<Item = i64> + '_ {
        let tz = self.zone.0;
        let hourly = self.cron.every_hour();
        let after = tz.timestamp_millis_opt(after_ms).single();
        // Walk wall-clock times (as if in UTC) from 3 h before (more than any DST shift), map each to its
        // instants in the zone. The earliest instant of a wall time never decreases as wall time grows, so a
        // pending instant is final once it is not after the earliest instant of the wall time just seen.
        let start = after.map(|a| Utc.from_utc_datetime(&(a.naive_local() - chrono::Duration::hours(3))));
        let mut walls = start.into_iter().flat_map(move |s| self.cron.after(s));
        let mut pending = BTreeSet::new();
        let mut floor = i64::MIN;
        std::iter::from_fn(move || loop {
            if let Some(&first) = pending.first() {
                if first <= floor {
                    return pending.pop_first();
                }
            }
            match walls.next() {
                None => return pending.pop_first(),
                Some(wall) => {
                    let found = instants(tz, wall.naive_utc(), hourly);
                    if let Some(lo) = found.iter().copied().min() {
                        floor = floor.max(lo);
                    }
                    pending.extend(found.into_iter().filter(|t| *t > after_ms));
                }
            }
        })
    }

    /// Occurrences in (`since_ms`, `now_ms`], up to `cap`.
    fn occurrences_between(&self, since_ms: i64, now_ms: i64, cap: u32) -> Vec<i64> {
        self.runs_after(since_ms).take_while(|t| *t <= now_ms).take(cap as usize).collect()
    }
}

/// The instants at which wall time `naive` happens in `tz`, by the rules of [`ScheduleSpec::next_runs`].
fn instants(tz: chrono_tz::Tz, naive: NaiveDateTime, hourly: bool) -> Vec<i64> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => vec![t.timestamp_millis()],
        LocalResult::Ambiguous(first, second) if hourly => vec![first.timestamp_millis(), second.timestamp_millis()],
        LocalResult::Ambiguous(first, _) => vec![first.timestamp_millis()],
        LocalResult::None if hourly => vec![],
        LocalResult::None => {
            // The first wall time after the gap, to the minute (gaps are whole quarter hours or more).
            (1..=24 * 60)
                .map(|m| naive + chrono::Duration::minutes(m))
                .find_map(|later| match tz.from_local_datetime(&later) {
                    LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(gap_end(tz, t)),
                    LocalResult::None => None,
                })
                .into_iter()
                .collect()
        }
    }
}

/// The instant the gap before `t` closed: `t`'s wall time truncated to the transition (whole minutes back
/// while the wall time one minute earlier still does not exist).
fn gap_end(tz: chrono_tz::Tz, t: DateTime<chrono_tz::Tz>) -> i64 {
    let mut end = t;
    loop {
        let prev = end.naive_local() - chrono::Duration::minutes(1);
        match tz.from_local_datetime(&prev) {
            LocalResult::None => return end.timestamp_millis(),
            LocalResult::Single(p) | LocalResult::Ambiguous(p, _) if p.timestamp_millis() == end.timestamp_millis() - 60_000 => end = p,
            _ => return end.timestamp_millis(),
        }
    }
}

/// What the scheduler should do about a schedule now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The occurrence (UTC ms) this decision is about: the latest one not yet handled.
    pub occurrence: i64,
    /// Earlier occurrences that were missed and are folded into this one (never run separately).
    pub missed: u32,
    pub decision: Decision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// On time: run it.
    Run,
    /// Missed while the agent was down, and `catch_up` is set: run it once now.
    CatchUp,
    /// Missed, and `catch_up` is off: record it as skipped.
    Skip,
}

/// A recorded schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub id: String,
    pub spec: ScheduleSpec,
    pub created_at: i64,
    /// Changed by the last replace; occurrences before it are never run late.
    pub updated_at: i64,
    /// The last occurrence handled (run or skipped).
    pub last_occurrence: Option<i64>,
    /// Its target deployment was destroyed: the schedule is kept for the record, disabled, and never runs
    /// again (a replace naming a live target clears it).
    pub target_destroyed: bool,
}

impl Schedule {
    /// What is due at `now_ms`, given the last occurrence handled (`None`: never), or `None` if nothing is.
    ///
    /// Only the latest occurrence since then matters: several missed ones make one run at most. It runs if
    /// it is on time (within [`GRACE_MS`]); a late one runs once when `catch_up` is set and is skipped otherwise.
    pub fn due(&self, last_run: Option<i64>, now_ms: i64) -> Option<Due> {
        if !self.spec.enabled || self.target_destroyed {
            return None;
        }
        let since = last_run.unwrap_or(i64::MIN).max(self.updated_at).max(self.created_at);
        let occ = self.spec.occurrences_between(since, now_ms, MISSED_CAP + 1);
        let &latest = occ.last()?;
        let missed = (occ.len() - 1) as u32;
        let decision = if now_ms - latest <= GRACE_MS {
            Decision::Run
        } else if self.spec.catch_up {
            Decision::CatchUp
        } else {
            Decision::Skip
        };
        Some(Due { occurrence: latest, missed, decision })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cron: &str, zone: &str) -> ScheduleSpec {
        ScheduleSpec::parse(RawSchedule {
            cron: Some(cron.into()),
            timezone: Some(zone.into()),
            action: Some("reconcile".into()),
            target: Some("all".into()),
            ..Default::default()
        })
        .unwrap()
    }

    fn ms(rfc: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc).unwrap().timestamp_millis()
    }

    fn utc(ms: &[i64]) -> Vec<String> {
        ms.iter().map(|m| Zone::UTC.rfc3339(*m)).collect()
    }

    #[test]
    fn five_fields_are_unix_cron_with_sunday_zero() {
        // 2026-03-01 is a Sunday.
        let s = spec("0 9 * * 0", "UTC");
        assert_eq!(utc(&s.next_runs(ms("2026-02-27T00:00:00Z"), 2)), ["2026-03-01T09:00:00+00:00", "2026-03-08T09:00:00+00:00"]);
        let weekdays = spec("30 6 * * 1-5", "UTC");
        assert_eq!(utc(&weekdays.next_runs(ms("2026-02-27T07:00:00Z"), 2)), ["2026-03-02T06:30:00+00:00", "2026-03-03T06:30:00+00:00"]);
        assert_eq!(spec("0 9 * * 7", "UTC").next_runs(0, 3), spec("0 9 * * SUN", "UTC").next_runs(0, 3));
        // Six fields: seconds first, as the crate reads them.
        assert_eq!(utc(&spec("15 0 12 * * *", "UTC").next_runs(ms("2026-01-01T00:00:00Z"), 1)), ["2026-01-01T12:00:15+00:00"]);
    }

    #[test]
    fn spring_forward_gap_in_berlin() {
        // 2026-03-29: Berlin jumps from 02:00 CET to 03:00 CEST; 02:30 does not exist that day.
        let s = spec("30 2 * * *", "Europe/Berlin");
        let runs = s.next_runs(ms("2026-03-27T12:00:00Z"), 4);
        assert_eq!(
            utc(&runs),
            [
                "2026-03-28T01:30:00+00:00", // 02:30 CET
                "2026-03-29T01:00:00+00:00", // the gap: right when it closes, 03:00 CEST
                "2026-03-30T00:30:00+00:00", // 02:30 CEST
                "2026-03-31T00:30:00+00:00",
            ]
        );
        // Every 30 minutes: the missing wall times are simply not there, nothing doubles up.
        let half = spec("*/30 * * * *", "Europe/Berlin");
        assert_eq!(
            utc(&half.next_runs(ms("2026-03-29T00:15:00Z"), 3)),
            ["2026-03-29T00:30:00+00:00", "2026-03-29T01:00:00+00:00", "2026-03-29T01:30:00+00:00"]
        );
    }

    #[test]
    fn fall_back_overlap_in_new_york() {
        // 2026-11-01: New York goes from 02:00 EDT back to 01:00 EST; 01:30 happens twice.
        let s = spec("30 1 * * *", "America/New_York");
        let runs = s.next_runs(ms("2026-10-31T12:00:00Z"), 3);
        assert_eq!(
            utc(&runs),
            [
                "2026-11-01T05:30:00+00:00", // 01:30 EDT, once
                "2026-11-02T06:30:00+00:00", // 01:30 EST
                "2026-11-03T06:30:00+00:00",
            ]
        );
        // Every hour at :30: both 01:30s run, an hour apart, in order.
        let hourly = spec("30 * * * *", "America/New_York");
        assert_eq!(
            utc(&hourly.next_runs(ms("2026-11-01T04:00:00Z"), 4)),
            ["2026-11-01T04:30:00+00:00", "2026-11-01T05:30:00+00:00", "2026-11-01T06:30:00+00:00", "2026-11-01T07:30:00+00:00"]
        );
        assert_eq!(s.zone.rfc3339(runs[0]), "2026-11-01T01:30:00-04:00");
        assert_eq!(s.zone.rfc3339(runs[1]), "2026-11-02T01:30:00-05:00");
    }

    fn schedule(cron: &str, catch_up: bool, created: i64) -> Schedule {
        let mut spec = spec(cron, "UTC");
        spec.catch_up = catch_up;
        Schedule { id: "s".into(), spec, created_at: created, updated_at: created, last_occurrence: None, target_destroyed: false }
    }

    #[test]
    fn due_runs_on_time_and_folds_missed_runs_into_one() {
        let created = ms("2026-05-01T00:00:00Z");
        let hourly = schedule("0 * * * *", false, created);
        assert_eq!(hourly.due(None, created + 59 * 60_000), None);
        let on_time = hourly.due(None, ms("2026-05-01T01:00:30Z")).unwrap();
        assert_eq!((on_time.occurrence, on_time.missed, on_time.decision), (ms("2026-05-01T01:00:00Z"), 0, Decision::Run));
        assert_eq!(hourly.due(Some(on_time.occurrence), ms("2026-05-01T01:59:00Z")), None, "handled once");
        // Down from 01:10 to 04:30: 02:00, 03:00, 04:00 missed; only 04:00 is considered, and skipped.
        let late = hourly.due(Some(on_time.occurrence), ms("2026-05-01T04:30:00Z")).unwrap();
        assert_eq!((late.occurrence, late.missed, late.decision), (ms("2026-05-01T04:00:00Z"), 2, Decision::Skip));
        let catching = schedule("0 * * * *", true, created).due(Some(on_time.occurrence), ms("2026-05-01T04:30:00Z")).unwrap();
        assert_eq!((catching.occurrence, catching.decision), (ms("2026-05-01T04:00:00Z"), Decision::CatchUp));
        let mut off = hourly.clone();
        off.spec.enabled = false;
        assert_eq!(off.due(None, ms("2026-05-01T04:30:00Z")), None);
        let orphaned = Schedule { target_destroyed: true, ..hourly.clone() };
        assert_eq!(orphaned.due(None, ms("2026-05-01T04:30:00Z")), None, "a destroyed target's schedule never runs");
    }

    #[test]
    fn bad_input_names_field_and_rule() {
        let rules = |raw: RawSchedule| ScheduleSpec::parse(raw).unwrap_err().0.into_iter().map(|e| (e.field, e.rule)).collect::<Vec<_>>();
        let base = || RawSchedule { cron: Some("0 3 * * *".into()), action: Some("redeploy".into()), target: Some("all".into()), ..Default::default() };
        assert_eq!(rules(RawSchedule { cron: Some("61 3 * * *".into()), ..base() }), [("cron".into(), "cron_field")]);
        assert_eq!(rules(RawSchedule { cron: Some("* * *".into()), ..base() }), [("cron".into(), "cron_fields")]);
        assert_eq!(rules(RawSchedule { cron: Some("0 0 30 2 *".into()), ..base() }), [("cron".into(), "never_fires")]);
        // A year that is past: a stored schedule still loads, a new one is refused counting from now (not from 1970).
        let past = RawSchedule { cron: Some("0 0 0 1 1 * 2020".into()), ..base() };
        assert!(ScheduleSpec::parse(past.clone()).is_ok());
        let refused = ScheduleSpec::parse_new(past, ms("2026-05-01T00:00:00Z")).unwrap_err().0;
        assert_eq!((refused[0].field.as_str(), refused[0].rule), ("cron", "never_fires"));
        assert_eq!(refused[0].message, "`0 0 0 1 1 * 2020`: has no run after now (2026-05-01T00:00:00+00:00); every time it names is past");
        assert!(ScheduleSpec::parse_new(RawSchedule { cron: Some("0 0 0 1 1 * 2027".into()), ..base() }, ms("2026-05-01T00:00:00Z")).is_ok());
        assert_eq!(rules(RawSchedule { timezone: Some("Mars/Olympus".into()), ..base() }), [("timezone".into(), "iana_zone")]);
        assert_eq!(rules(RawSchedule { action: Some("reboot".into()), ..base() }), [("action".into(), "enum")]);
        assert_eq!(rules(RawSchedule { action: Some("snapshot".into()), ..base() }), [("keep".into(), "required")]);
        assert_eq!(rules(RawSchedule { action: Some("snapshot".into()), keep: Some(0), ..base() }), [("keep".into(), "range")]);
        assert_eq!(rules(RawSchedule { keep: Some(3), ..base() }), [("keep".into(), "not_allowed")]);
        assert_eq!(rules(RawSchedule { action: Some("destroy".into()), ..base() }), [("target".into(), "single_only")]);
        assert_eq!(rules(RawSchedule { target: Some("shop".into()), ..base() }), [("target".into(), "deployment")]);
        assert_eq!(rules(RawSchedule::default()).len(), 3, "cron, action and target are required");
        assert!(ScheduleSpec::parse(RawSchedule { action: Some("snapshot".into()), keep: Some(2), ..base() }).is_ok());
    }
}
