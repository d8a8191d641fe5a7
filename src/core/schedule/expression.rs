//! Cron expressions as users know them. Five fields are read exactly as cron(8) reads a crontab line (Debian's
//! crontab(5)), including its day rule: when both day fields are restricted (neither starts with `*`), a day runs
//! when *either* matches, so `0 0 13 * 5` is every 13th and every Friday. The `cron` crate evaluates; this module
//! parses, phrases every refusal in our words (the user's own text, the field, the value, the allowed range) and
//! builds the OR rule on top as the union of two of the crate's schedules. No I/O.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};

use crate::core::validation::FieldError;

/// A parsed cron expression. Five fields are Unix cron (minute hour day-of-month month day-of-week, Sunday = 0 or
/// 7; `@daily`-style shorthands stand for five fields); six or seven fields (seconds first, optional year) are read
/// as the `cron` crate reads them (both day fields must match there).
#[derive(Clone)]
pub struct CronExpr {
    source: String,
    eval: Eval,
}

#[derive(Clone)]
enum Eval {
    /// One of the crate's schedules.
    One(cron::Schedule),
    /// Five fields with both day fields restricted: the days of the month, or the days of the week.
    EitherDay(cron::Schedule, cron::Schedule),
}

/// One field's rule: its name in messages, its range, and the names it takes (lowercase, index = value - `names_from`).
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    names_from: u32,
    range_words: &'static str,
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const MINUTE: Field = Field { name: "minute", min: 0, max: 59, names: &[], names_from: 0, range_words: "0-59" };
const HOUR: Field = Field { name: "hour", min: 0, max: 23, names: &[], names_from: 0, range_words: "0-23" };
const DAY_OF_MONTH: Field = Field { name: "day-of-month", min: 1, max: 31, names: &[], names_from: 0, range_words: "1-31" };
const MONTH: Field = Field { name: "month", min: 1, max: 12, names: &MONTHS, names_from: 1, range_words: "1-12 or JAN-DEC" };
/// Unix: 0-7, Sunday is 0 and 7.
const UNIX_DAY_OF_WEEK: Field = Field { name: "day-of-week", min: 0, max: 7, names: &DAYS, names_from: 0, range_words: "0-7 (Sunday is 0 or 7) or SUN-SAT" };
/// The crate's seconds-first form: 1-7, Sunday is 1.
const CRATE_DAY_OF_WEEK: Field = Field { name: "day-of-week", min: 1, max: 7, names: &DAYS, names_from: 1, range_words: "1-7 (Sunday is 1 in 6- and 7-field expressions) or SUN-SAT" };
const SECOND: Field = Field { name: "second", min: 0, max: 59, names: &[], names_from: 0, range_words: "0-59" };
const YEAR: Field = Field { name: "year", min: 1970, max: 2100, names: &[], names_from: 0, range_words: "1970-2100" };

const UNIX: [&Field; 5] = [&MINUTE, &HOUR, &DAY_OF_MONTH, &MONTH, &UNIX_DAY_OF_WEEK];
const WITH_SECONDS: [&Field; 7] = [&SECOND, &MINUTE, &HOUR, &DAY_OF_MONTH, &MONTH, &CRATE_DAY_OF_WEEK, &YEAR];

impl Field {
    /// The values `text` names, or why it names none (phrased after "<field> `<text>`: ").
    fn values(&self, text: &str) -> Result<BTreeSet<u32>, String> {
        let mut out = BTreeSet::new();
        for item in text.split(',') {
            if item.is_empty() {
                return Err("a list has an empty item (two commas, or one at an end)".into());
            }
            out.extend(self.item(item)?);
        }
        Ok(out)
    }

    fn item(&self, item: &str) -> Result<Vec<u32>, String> {
        if let Some(why) = foreign(item) {
            return Err(format!("uses {why}, which Unix cron (cron(8)) does not have; the {} takes {}", self.name, self.range_words));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => match s.parse::<u32>() {
                Ok(n) if n > 0 => (r, n),
                _ => return Err(format!("the step `/{s}` is not a whole number of at least 1")),
            },
            None => (item, 1),
        };
        let (lo, hi) = match range {
            "*" => (self.min, self.max),
            r => match r.split_once('-') {
                Some((a, b)) => {
                    let (a, an) = self.value(a)?;
                    let (b, bn) = self.value(b)?;
                    if an != bn {
                        let names = &self.names;
                        let (first, last) = (names[0].to_uppercase(), names[names.len() - 1].to_uppercase());
                        return Err(format!(
                            "mixes a name and a number in one range; write both ends as names ({first}-{last}) or both as numbers ({}-{})",
                            self.min, self.max
                        ));
                    }
                    if a > b {
                        return Err(format!("the range runs backwards ({a} is after {b}); a range goes from low to high"));
                    }
                    (a, b)
                }
                // `5/15`: from 5 to the end, as the crate and most crons read it.
                None if step > 1 => (self.value(r)?.0, self.max),
                None => {
                    let v = self.value(r)?.0;
                    (v, v)
                }
            },
        };
        Ok((lo..=hi).step_by(step as usize).collect())
    }

    /// A number or name in range, and whether it was a name.
    fn value(&self, s: &str) -> Result<(u32, bool), String> {
        if let Ok(n) = s.parse::<u32>() {
            return if (self.min..=self.max).contains(&n) {
                Ok((n, false))
            } else {
                Err(format!("{n} is outside {}", self.range_words))
            };
        }
        let lower = s.to_ascii_lowercase();
        match self.names.iter().position(|n| *n == lower) {
            Some(i) => Ok((self.names_from + i as u32, true)),
            None if self.names.is_empty() => Err(format!("`{s}` is not a number; the {} takes {}", self.name, self.range_words)),
            None => Err(format!("`{s}` is neither a number nor a name; the {} takes {}", self.name, self.range_words)),
        }
    }
}

/// Syntax of other cron dialects that Unix cron does not read, in words.
fn foreign(item: &str) -> Option<&'static str> {
    let upper = item.to_ascii_uppercase();
    let digits_then = |suffix: char| upper.strip_suffix(suffix).is_some_and(|head| head.chars().all(|c| c.is_ascii_digit()));
    if item == "?" {
        Some("`?` (\"no specific value\", a Quartz extension)")
    } else if digits_then('L') || upper == "LW" {
        Some("`L` (\"the last\", a Quartz extension)")
    } else if item.contains('#') {
        Some("`#` (\"the nth weekday\", a Quartz extension)")
    } else if digits_then('W') && upper.len() > 1 {
        Some("`W` (\"the nearest weekday\", a Quartz extension)")
    } else {
        None
    }
}

/// The crate's text for a field's values: `*` when it is the whole range, else a list.
fn list(values: &BTreeSet<u32>, field: &Field) -> String {
    if values.len() as u32 == field.max - field.min + 1 {
        "*".into()
    } else {
        values.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    }
}

/// Unix day-of-week values (0-7) as the crate's day names.
fn day_names(values: &BTreeSet<u32>) -> String {
    let days: BTreeSet<u32> = values.iter().map(|d| d % 7).collect();
    if days.len() == 7 {
        return "*".into();
    }
    days.iter().map(|d| DAYS[*d as usize].to_uppercase()).collect::<Vec<_>>().join(",")
}

fn crate_schedule(text: &str) -> Result<cron::Schedule, String> {
    // Our own text, built from values already checked: the crate refusing it is our bug, said without its words.
    cron::Schedule::from_str(text).map_err(|_| "cannot be evaluated (an internal error; please report it)".to_string())
}

impl CronExpr {
    /// A subset of what `parse` reads that a JSON Schema can state (no look-around): a shorthand, or five fields of
    /// `*`, `*/1`–`*/5` or up to four listed values, days of the month 1–28 only (so every date exists and every
    /// expression has runs ahead). Every expression it matches is accepted.
    pub const SCHEMA_PATTERN: &'static str = concat!(
        "^(?:@(?:yearly|annually|monthly|weekly|daily|midnight|hourly)",
        "|(?:\\*(?:/[1-5])?|[1-5]?[0-9](?:,[1-5]?[0-9]){0,3})",
        " (?:\\*(?:/[1-5])?|(?:1?[0-9]|2[0-3])(?:,(?:1?[0-9]|2[0-3])){0,3})",
        " (?:\\*(?:/[1-5])?|(?:[1-9]|1[0-9]|2[0-8])(?:,(?:[1-9]|1[0-9]|2[0-8])){0,3})",
        " (?:\\*(?:/[1-5])?|(?:[1-9]|1[0-2])(?:,(?:[1-9]|1[0-2])){0,3})",
        " (?:\\*(?:/[1-5])?|[0-7](?:,[0-7]){0,3}))$"
    );

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let source = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if source.is_empty() {
            return Err(FieldError::new("cron", "required", "must be a cron expression such as `0 3 * * *` (03:00 every day)"));
        }
        let shown: String = source.chars().take(60).collect();
        let shown = if shown.len() < source.len() { format!("{shown}…") } else { shown };
        let err = |rule: &'static str, m: String| FieldError::new("cron", rule, format!("`{shown}`: {m}"));
        if source.len() > 200 {
            return Err(err("length", "is longer than 200 characters".into()));
        }
        let expanded = match source.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".into(),
            "@weekly" => "0 0 * * 0".into(),
            "@daily" | "@midnight" => "0 0 * * *".into(),
            "@hourly" => "0 * * * *".into(),
            s if s.starts_with('@') => {
                return Err(err("cron_shorthand", "is not a shorthand this agent reads; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly (@reboot has no meaning here)".into()))
            }
            _ => source.clone(),
        };
        let fields: Vec<&str> = expanded.split(' ').collect();
        let eval = match fields.len() {
            5 => unix(&fields).map_err(|(rule, m)| err(rule, m))?,
            6 | 7 => with_seconds(&source, &fields).map_err(|(rule, m)| err(rule, m))?,
            n => {
                return Err(err(
                    "cron_fields",
                    format!("has {n} fields; use 5 (minute hour day-of-month month day-of-week), or 6 or 7 with seconds first (and a year last)"),
                ))
            }
        };
        let expr = Self { source, eval };
        // An expression that matches no date at all (30 February) is refused rather than stored as dead; one whose
        // dates are all past is the caller's to refuse, counting from its now (`ScheduleSpec::parse_new`).
        if expr.after(Utc.timestamp_opt(0, 0).unwrap()).next().is_none() {
            return Err(err("never_fires", "matches no date at all (check the day and the month)".into()));
        }
        Ok(expr)
    }

    /// The expression as given (whitespace normalised).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Every matching time strictly after `t` (wall time read as UTC), ascending.
    pub fn after(&self, t: DateTime<Utc>) -> Box<dyn Iterator<Item = DateTime<Utc>> + Send + '_> {
        match &self.eval {
            Eval::One(s) => Box::new(s.after_owned(t)),
            Eval::EitherDay(a, b) => Box::new(Union { a: a.after_owned(t).peekable(), b: b.after_owned(t).peekable() }),
        }
    }

    /// Whether it runs in every hour (the DST rules differ for such expressions).
    pub fn every_hour(&self) -> bool {
        match &self.eval {
            Eval::One(s) => cron::TimeUnitSpec::is_all(s.hours()),
            Eval::EitherDay(a, _) => cron::TimeUnitSpec::is_all(a.hours()),
        }
    }
}

/// Two ascending streams of times merged, each time once.
struct Union<A: Iterator<Item = DateTime<Utc>>, B: Iterator<Item = DateTime<Utc>>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A: Iterator<Item = DateTime<Utc>>, B: Iterator<Item = DateTime<Utc>>> Iterator for Union<A, B> {
    type Item = DateTime<Utc>;
    fn next(&mut self) -> Option<DateTime<Utc>> {
        match (self.a.peek().copied(), self.b.peek().copied()) {
            (Some(x), Some(y)) if x == y => {
                self.b.next();
                self.a.next()
            }
            (Some(x), Some(y)) if x < y => self.a.next(),
            (Some(_), Some(_)) => self.b.next(),
            (Some(_), None) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

/// Five fields, as cron(8).
fn unix(fields: &[&str]) -> Result<Eval, (&'static str, String)> {
    let mut sets = Vec::with_capacity(5);
    for (text, field) in fields.iter().zip(UNIX) {
        sets.push(field.values(text).map_err(|m| ("cron_field", format!("{} `{text}`: {m}", field.name)))?);
    }
    let (minutes, hours, doms, months) = (list(&sets[0], &MINUTE), list(&sets[1], &HOUR), list(&sets[2], &DAY_OF_MONTH), list(&sets[3], &MONTH));
    let dows = day_names(&sets[4]);
    let build = |dom: &str, dow: &str| crate_schedule(&format!("0 {minutes} {hours} {dom} {months} {dow}")).map_err(|m| ("cron_expression", m));
    // crontab(5): "If both fields are restricted (i.e., don't start with *), the command will be run when either
    // field matches the current time."
    let restricted = |f: &str| !f.starts_with('*');
    if restricted(fields[2]) && restricted(fields[4]) {
        Ok(Eval::EitherDay(build(&doms, "*")?, build("*", &dows)?))
    } else {
        Ok(Eval::One(build(&doms, &dows)?))
    }
}

/// Six or seven fields, as the crate reads them; when it refuses, our own check of each field says why.
fn with_seconds(source: &str, fields: &[&str]) -> Result<Eval, (&'static str, String)> {
    match cron::Schedule::from_str(source) {
        Ok(s) => Ok(Eval::One(s)),
        Err(_) => {
            for (text, field) in fields.iter().zip(WITH_SECONDS) {
                field.values(text).map_err(|m| ("cron_field", format!("{} `{text}`: {m}", field.name)))?;
            }
            Err(("cron_expression", "is not an expression this agent reads (6 or 7 fields: second minute hour day-of-month month day-of-week [year])".into()))
        }
    }
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronExpr({:?})", self.source)
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

#[cfg(test)]
mod tests;
