//! The cron reference table: next runs checked against croner (a second, independent cron implementation, a
//! dev-dependency), and against Debian's crontab(5) where croner reads a line otherwise than cron(8).

use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::CronExpr;

fn at(rfc: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc).unwrap().with_timezone(&Utc)
}

fn ours(expr: &str, from: DateTime<Utc>, n: usize) -> Vec<String> {
    CronExpr::parse(expr).unwrap_or_else(|e| panic!("{expr}: {}", e.message)).after(from).take(n).map(|t| t.to_rfc3339()).collect()
}

/// croner in its default mode, which is cron(8)'s day rule (a day runs when either restricted day field matches).
fn croner(expr: &str, from: DateTime<Utc>, n: usize) -> Vec<String> {
    croner::Cron::from_str(expr).unwrap().iter_after(from).take(n).map(|t| t.to_rfc3339()).collect()
}

/// Five-field expressions, many from crontab(5)'s own examples, with both day fields set, names, ranges, steps,
/// Sunday as 0 and 7, leap days and short months. Each one's next 12 runs from three starting points agree with croner.
#[test]
fn five_fields_run_when_croner_says_cron_runs() {
    let table = [
        "0 0 13 * 5",           // every 13th and every Friday (the case)
        "30 4 1,15 * 5",        // crontab(5): "4:30 am on the 1st and 15th of each month, plus every Friday"
        "0 0 1-7 * 1",          // the first seven days and every Monday
        "0 12 13 JAN,JUL MON",  // in January and July: the 13th and every Monday
        "5 0 * * *",            // crontab(5): five minutes after midnight, every day
        "15 14 1 * *",          // crontab(5): 14:15 on the first of every month
        "0 22 * * 1-5",         // crontab(5): 22:00 on weekdays
        "23 0-23/2 * * *",      // crontab(5): 23 minutes after midnight, 2am, 4am …, everyday
        "5 4 * * sun",          // crontab(5): 04:05 every Sunday
        "0 9 * * 0",
        "0 9 * * 7",            // Sunday is 7 too
        "0 6 * * 5-7",          // Friday to Sunday
        "*/15 9-17 * * MON-FRI",
        "0 0 29 2 *",           // leap days only
        "0 0 31 * *",           // only the months that have a 31st
        "59 23 31 12 *",
        "0 0 1 */3 *",
        "0 0 */2 * *",
        "30 2 1,15 * 6",
        "0 8-10/2,20 * * *",
        "1-3 0 * * *",
    ];
    for from in ["2026-12-31T12:00:00Z", "2028-02-27T23:59:59Z", "2030-06-13T00:00:00Z"] {
        let from = at(from);
        for expr in table {
            assert_eq!(ours(expr, from, 12), croner(expr, from, 12), "`{expr}` from {from}");
        }
    }
}

/// crontab(5) (Debian): "If both fields are restricted (i.e., don't start with *), the command will be run when
/// either field matches the current time." A day field that starts with `*` (as `*/2` does) is not restricted, so
/// both must match; croner treats only a bare `*` so, hence these runs are derived by hand from the rule: the odd
/// days of the month that are Fridays (2027-01-01 is a Friday).
#[test]
fn a_day_field_starting_with_a_star_is_unrestricted_as_in_crontab_5() {
    let runs = ours("0 0 */2 * 5", at("2026-12-31T12:00:00Z"), 4);
    assert_eq!(runs, ["2027-01-01T00:00:00+00:00", "2027-01-15T00:00:00+00:00", "2027-01-29T00:00:00+00:00", "2027-02-05T00:00:00+00:00"]);
    // Shorthands are their five-field lines (crontab(5)).
    assert_eq!(ours("@weekly", at("2027-01-01T00:00:00Z"), 1), ["2027-01-03T00:00:00+00:00"]);
    assert_eq!(ours("@yearly", at("2027-01-01T00:00:00Z"), 1), ours("0 0 1 1 *", at("2027-01-01T00:00:00Z"), 1));
}

fn refusal(expr: &str) -> (String, String) {
    let e = CronExpr::parse(expr).expect_err(expr);
    assert_eq!(e.field, "cron");
    assert!(!e.message.contains('\n') && !e.message.contains('^'), "one line, no caret: {}", e.message);
    (e.rule.to_string(), e.message)
}

/// Every refusal quotes the user's own text, names the field, the value and the allowed range in our words.
#[test]
fn refusals_quote_the_users_text_and_name_field_value_and_range() {
    let cases = [
        ("61 3 * * *", "cron_field", "`61 3 * * *`: minute `61`: 61 is outside 0-59"),
        ("0 24 * * *", "cron_field", "`0 24 * * *`: hour `24`: 24 is outside 0-23"),
        ("0 3 0 * *", "cron_field", "`0 3 0 * *`: day-of-month `0`: 0 is outside 1-31"),
        ("0 3 * 13 *", "cron_field", "`0 3 * 13 *`: month `13`: 13 is outside 1-12 or JAN-DEC"),
        ("0 3 * * 8", "cron_field", "`0 3 * * 8`: day-of-week `8`: 8 is outside 0-7 (Sunday is 0 or 7) or SUN-SAT"),
        (
            "0 3 * * MON-5",
            "cron_field",
            "`0 3 * * MON-5`: day-of-week `MON-5`: mixes a name and a number in one range; write both ends as names (SUN-SAT) or both as numbers (0-7)",
        ),
        (
            "0 3 * * 5L",
            "cron_field",
            "`0 3 * * 5L`: day-of-week `5L`: uses `L` (\"the last\", a Quartz extension), which Unix cron (cron(8)) does not have; the day-of-week takes 0-7 (Sunday is 0 or 7) or SUN-SAT",
        ),
        ("0 3 * * 5#2", "cron_field", "`0 3 * * 5#2`: day-of-week `5#2`: uses `#` (\"the nth weekday\", a Quartz extension), which Unix cron (cron(8)) does not have; the day-of-week takes 0-7 (Sunday is 0 or 7) or SUN-SAT"),
        ("0 3 ? * 1", "cron_field", "`0 3 ? * 1`: day-of-month `?`: uses `?` (\"no specific value\", a Quartz extension), which Unix cron (cron(8)) does not have; the day-of-month takes 1-31"),
        ("0 3 * * FRIDAY", "cron_field", "`0 3 * * FRIDAY`: day-of-week `FRIDAY`: `FRIDAY` is neither a number nor a name; the day-of-week takes 0-7 (Sunday is 0 or 7) or SUN-SAT"),
        ("*/0 * * * *", "cron_field", "`*/0 * * * *`: minute `*/0`: the step `/0` is not a whole number of at least 1"),
        ("0 5-3 * * *", "cron_field", "`0 5-3 * * *`: hour `5-3`: the range runs backwards (5 is after 3); a range goes from low to high"),
        ("0 1,,2 * * *", "cron_field", "`0 1,,2 * * *`: hour `1,,2`: a list has an empty item (two commas, or one at an end)"),
        ("* * *", "cron_fields", "`* * *`: has 3 fields; use 5 (minute hour day-of-month month day-of-week), or 6 or 7 with seconds first (and a year last)"),
        ("0 0 30 2 *", "never_fires", "`0 0 30 2 *`: matches no date at all (check the day and the month)"),
        ("@reboot", "cron_shorthand", "`@reboot`: is not a shorthand this agent reads; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly (@reboot has no meaning here)"),
        // Six fields: the parser's own words ("Minutes must be less than 59") never reach the user.
        ("0 60 3 * * *", "cron_field", "`0 60 3 * * *`: minute `60`: 60 is outside 0-59"),
        ("0 0 3 * * 0", "cron_field", "`0 0 3 * * 0`: day-of-week `0`: 0 is outside 1-7 (Sunday is 1 in 6- and 7-field expressions) or SUN-SAT"),
    ];
    for (expr, rule, message) in cases {
        assert_eq!(refusal(expr), (rule.to_string(), message.to_string()), "{expr}");
    }
    // Whitespace is the user's, normalised; nothing they did not type is shown.
    assert!(refusal(" 61  3 * * *\n").1.starts_with("`61 3 * * *`: "));
}
