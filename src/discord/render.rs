//! Engine results and errors in words for Discord (pure): deployments, lists, logs, figures, deploy progress, refusals.

use crate::core::deployment::Deployment;
use crate::core::status::Status;
use crate::core::validation::ValidationErrors;
use crate::engine::resources::ClusterFigures;
use crate::engine::EngineError;
use crate::core::log::LogLine;

use super::command::{self, option_name};
use super::reply::{truncate, Attachment, Button, ButtonStyle, Embed, Reply};

const GREEN: u32 = 0x2ecc71;
const RED: u32 = 0xe74c3c;
const BLUE: u32 = 0x3498db;
const GREY: u32 = 0x95a5a6;

pub fn icon(s: Status) -> &'static str {
    match s {
        Status::Running => "🟢",
        Status::Failed => "🔴",
        Status::Stopped => "⏸️",
        Status::Destroying | Status::Destroyed => "🗑️",
        _ => "⏳",
    }
}

fn color(s: Status) -> u32 {
    match s {
        Status::Running => GREEN,
        Status::Failed => RED,
        Status::Stopped | Status::Destroyed | Status::Destroying => GREY,
        _ => BLUE,
    }
}

/// Validation errors as a person reads them, with the options named as in Discord (`repo`, not `repo_url`).
pub fn invalid(e: &ValidationErrors) -> Reply {
    let lines: Vec<String> = e.0.iter().map(|f| format!("• `{}` {}", option_name(&f.field), f.message)).collect();
    Reply::private(format!("The request was not accepted; nothing was changed:\n{}", lines.join("\n")))
}

/// An engine error for the caller.
pub fn engine_error(e: &EngineError) -> Reply {
    match e {
        EngineError::Invalid(v) => invalid(v),
        EngineError::NotFound(n) => Reply::private(format!("No deployment is named `{}`.", clean(n))),
        EngineError::Conflict(why) => Reply::private(format!("Not now: {why}.")),
        EngineError::Illegal(t) => Reply::private(format!("Not now: {t}.")),
        EngineError::Store(_) => Reply::private("The database is unavailable; nothing was done. Try again in a moment."),
        EngineError::ReadOnly(why) => Reply::private(format!("The agent is read-only; nothing was done: {why}")),
        EngineError::Proxmox(why) => Reply::private(format!("Proxmox VE did not do it: {why}")),
    }
}

/// A user-supplied value inside backticks, without backticks of its own.
fn clean(s: &str) -> String {
    truncate(&s.replace('`', "'"), 100)
}

pub fn deployment_embed(d: &Deployment) -> Embed {
    let s = &d.spec;
    let mut fields = vec![
        ("status".to_string(), format!("{} {}", icon(d.status), d.status)),
        ("framework".to_string(), format!("{} on {}", s.framework.as_str(), s.guest_type.as_str())),
        ("repository".to_string(), format!("{} @ {}", s.repo_url, s.branch.as_str())),
        ("size".to_string(), format!("{} CPU, {} MiB, {} GB", s.cpu, s.memory_mib, s.disk_gb)),
    ];
    if let Some(url) = &d.url {
        fields.push(("url".into(), url.clone()));
    }
    if let (Some(vmid), Some(node)) = (&d.proxmox_id, &d.proxmox_node) {
        fields.push(("guest".into(), format!("{vmid} on {node}")));
    }
    if let Some(ip) = &d.ip_address {
        fields.push(("address".into(), ip.clone()));
    }
    if let Some(c) = &d.commit {
        fields.push(("commit".into(), c.chars().take(12).collect()));
    }
    let description = d.error_message.as_deref().map(|e| format!("error: {e}")).unwrap_or_default();
    Embed { title: s.name.to_string(), description, fields, color: color(d.status) }
}

pub fn status_of(d: &Deployment) -> Reply {
    Reply { embeds: vec![deployment_embed(d)], ..Reply::text(format!("{} **{}** is {} (`{}`)", icon(d.status), d.spec.name, d.status, d.id)) }
}

/// `/status` without a name: counts by status.
pub fn summary(by_status: &[(Status, u64)]) -> Reply {
    if by_status.iter().all(|(_, n)| *n == 0) {
        return Reply::text("No deployments yet. Start one with `/deploy`.");
    }
    let parts: Vec<String> = Status::ALL
        .iter()
        .filter_map(|s| by_status.iter().find(|(st, _)| st == s).filter(|(_, n)| *n > 0).map(|(st, n)| format!("{} {st}: {n}", icon(*st))))
        .collect();
    Reply::text(format!("**Deployments** — {}", parts.join(" · ")))
}

pub fn list(items: &[Deployment], total: u64) -> Reply {
    if items.is_empty() {
        return Reply::text("No deployments yet. Start one with `/deploy`.");
    }
    let mut lines = vec![format!("**Deployments** ({} of {total}, newest first)", items.len())];
    for d in items {
        let url = d.url.as_deref().map(|u| format!(" — {u}")).unwrap_or_default();
        lines.push(format!("{} **{}** {} · {}{url}", icon(d.status), d.spec.name, d.status, d.spec.framework.as_str()));
    }
    Reply::text(lines.join("\n"))
}

/// Log lines in a code block, the newest kept when they do not all fit.
pub fn log_block(lines: &[LogLine], budget: usize) -> String {
    counted_block(lines, budget).0
}

/// As [`log_block`], with how many lines it shows whole (kept and not cut).
fn counted_block(lines: &[LogLine], budget: usize) -> (String, usize) {
    let mut whole = 0;
    let mut kept: Vec<String> = Vec::new();
    let mut used = 8;
    for l in lines.iter().rev() {
        let full = format!("[{}] {}", l.step, l.text.replace("```", "'''"));
        let line = truncate(&full, 300);
        if used + line.len() + 1 > budget {
            break;
        }
        used += line.len() + 1;
        if line == full {
            whole += 1;
        }
        kept.push(line);
    }
    kept.reverse();
    (format!("```\n{}\n```", kept.join("\n")), whole)
}

/// A log line as the attached file holds it.
fn file_line(l: &LogLine) -> String {
    format!("[{}] {}", l.step, l.text)
}

/// The last lines in a code block; when they do not all fit in a message, the newest that fit are shown and all of
/// them come as the attached `logs-<name>.txt`.
pub fn logs(d: &Deployment, lines: &[LogLine]) -> Reply {
    if lines.is_empty() {
        return Reply::text(format!("**{}** has no log lines yet.", d.spec.name));
    }
    let head = format!("Last {} log lines of **{}** ({}):\n", lines.len(), d.spec.name, d.status);
    let (block, whole) = counted_block(lines, 2000 - head.len() - 10);
    if whole == lines.len() {
        return Reply::text(format!("{head}{block}"));
    }
    let filename = format!("logs-{}.txt", d.spec.name);
    let head = format!("Last {} log lines of **{}** ({}), all of them in `{filename}`; the newest:\n", lines.len(), d.spec.name, d.status);
    let block = log_block(lines, 2000 - head.len() - 10);
    let text: String = lines.iter().map(|l| file_line(l) + "\n").collect();
    Reply { file: Some(Attachment { filename, bytes: text.into_bytes() }), ..Reply::text(format!("{head}{block}")) }
}

/// Discord's timestamp markup: shown in the reader's own time zone
/// ([message formatting](https://discord.com/developers/docs/reference#message-formatting-timestamp-styles)).
fn when(ms: i64) -> String {
    format!("<t:{}:f>", ms.div_euclid(1000))
}

pub fn snapshots(d: &Deployment, list: &[crate::engine::snapshots::SnapshotInfo]) -> Reply {
    if list.is_empty() {
        return Reply::text(format!("**{}** has no snapshots. Take one with `/snapshot`.", d.spec.name));
    }
    let mut lines = vec![format!("**Snapshots of {}** ({})", d.spec.name, list.len())];
    for s in list.iter().take(40) {
        let at = s.taken_at.map(when).unwrap_or_else(|| "—".into());
        let by = s.taken_by.as_deref().map(|b| format!(" by {}", clean(b))).unwrap_or_default();
        let note = if s.description.is_empty() { String::new() } else { format!(" — {}", truncate(&s.description.replace('`', "'"), 80)) };
        lines.push(format!("📸 `{}` {at}{by}{note}", clean(&s.name)));
    }
    Reply::text(lines.join("\n"))
}

pub fn backups(d: &Deployment, list: &[crate::engine::backups::BackupInfo]) -> Reply {
    if list.is_empty() {
        return Reply::text(format!("**{}** has no backups. Make one with `/backup`.", d.spec.name));
    }
    let mut lines = vec![format!("**Backups of {}** ({})", d.spec.name, list.len())];
    for b in list.iter().take(40) {
        let file = b.volid.split_once(":backup/").map_or(b.volid.as_str(), |(_, f)| f);
        let at = b.taken_at.map(when).unwrap_or_else(|| "—".into());
        let lock = if b.protected { " 🔒" } else { "" };
        lines.push(format!("💾 `{}` {at} · {} MiB{lock}", clean(file), b.size_bytes / (1 << 20)));
    }
    Reply::text(lines.join("\n"))
}

/// A schedule in one line: what, on what, when (`target`: the target's name, or `all`).
pub fn schedule_line(s: &crate::core::schedule::Schedule, target: &str) -> String {
    let keep = s.spec.action.keep().map(|k| format!(" (keep {k})")).unwrap_or_default();
    format!("{}{keep} {target} at {} {}", s.spec.action.as_str(), s.spec.cron.as_str(), s.spec.zone.name())
}

/// `/schedules`: each schedule with its next run (`items`: the schedule, its target's name, its next run in UTC ms).
pub fn schedules(items: &[(crate::core::schedule::Schedule, String, Option<i64>)], total: u64) -> Reply {
    if items.is_empty() {
        return Reply::text("No schedules. Add one with the API (`POST /api/v1/schedules`) or `pvedeploy schedule`.");
    }
    let mut lines = vec![format!("**Schedules** ({} of {total})", items.len())];
    for (s, target, next) in items {
        let state = if s.target_destroyed {
            "target destroyed".to_string()
        } else if !s.spec.enabled {
            "disabled".to_string()
        } else {
            next.map(|n| format!("next <t:{}:R>", n.div_euclid(1000))).unwrap_or_else(|| "no next run".into())
        };
        lines.push(format!("🗓️ {} — {state} · `{}`", schedule_line(s, target), s.id));
    }
    Reply::text(lines.join("\n"))
}

/// The buttons under a `/deploy` message that ended: the last lines (privately), a rollback, and a link to the app.
fn deploy_buttons(d: &Deployment) -> Vec<Button> {
    let id = d.id.as_str();
    let mut b = vec![Button::action("Logs", command::logs_id(id), ButtonStyle::Secondary), Button::action("Roll back", command::rollback_id(id), ButtonStyle::Danger)];
    // a link button takes http(s) URLs only
    if let Some(url) = d.url.as_deref().filter(|u| d.status == Status::Running && (u.starts_with("http://") || u.starts_with("https://"))) {
        b.push(Button::link(format!("Open {}", d.spec.name), url));
    }
    b
}

fn gib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1u64 << 30) as f64)
}

pub fn resources(f: &ClusterFigures) -> Reply {
    let mut lines = vec!["**Cluster resources**".to_string()];
    for n in &f.nodes {
        lines.push(format!(
            "{} **{}** — CPU {:.1}/{} · memory {}/{} GiB · disk {}/{} GiB · {} guests",
            if n.online { "🟢" } else { "🔴" },
            n.node,
            n.cpu_used,
            n.cpu_total,
            gib(n.memory_used),
            gib(n.memory_total),
            gib(n.disk_used),
            gib(n.disk_total),
            n.guests
        ));
    }
    for s in &f.storages {
        lines.push(format!("💾 {}/{}{} — {}/{} GiB used", s.node, s.storage, if s.shared { " (shared)" } else { "" }, gib(s.used), gib(s.total)));
    }
    Reply::text(lines.join("\n"))
}

pub fn accepted(action: &str, d: &Deployment) -> Reply {
    Reply::text(format!("👍 {action} of **{}** accepted (it was {}). Follow it with `/status {}`.", d.spec.name, d.status, d.spec.name))
}

/// The steps of a first deployment, in order, as the message shows them.
const STEPS: [Status; 4] = [Status::Pending, Status::Provisioning, Status::Installing, Status::Deploying];

/// The `/deploy` message as the deployment moves: each step reached, then the URL or the error and the last log lines.
pub fn deploy_progress(d: &Deployment, last_lines: &[LogLine]) -> Reply {
    let s = &d.spec;
    let mut out = vec![format!("🚀 Deploying **{}** — {} @ {} ({} on {})", s.name, s.repo_url, s.branch.as_str(), s.framework.as_str(), s.guest_type.as_str())];
    let reached = STEPS.iter().position(|st| *st == d.status);
    for (i, st) in STEPS.iter().enumerate() {
        let mark = match reached {
            Some(r) if i < r => "✅",
            Some(r) if i == r => "⏳",
            Some(_) => "▫️",
            None => "✅",
        };
        if reached.is_none() && d.status == Status::Failed {
            break;
        }
        out.push(format!("{mark} {st}"));
    }
    match d.status {
        Status::Running => out.push(format!("🟢 running{}", d.url.as_deref().map(|u| format!(" at {u}")).unwrap_or_default())),
        Status::Failed => {
            out.push(format!("🔴 failed: {}", d.error_message.as_deref().unwrap_or("see the log")));
            let head: usize = out.iter().map(|l| l.len() + 1).sum();
            out.push(log_block(last_lines, 2000usize.saturating_sub(head + 20)));
        }
        Status::Destroying | Status::Destroyed | Status::Stopped => out.push(format!("{} {}", icon(d.status), d.status)),
        _ => {}
    }
    let buttons = if matches!(d.status, Status::Running | Status::Failed) { deploy_buttons(d) } else { vec![] };
    Reply { embeds: vec![], buttons, ..Reply::text(out.join("\n")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::deployment::{RawSpec, Spec};
    use crate::core::limits::{Limits, RepoPolicy};
    use crate::core::validation::FieldError;
    use expect_test::expect;

    fn deployment(status: Status) -> Deployment {
        let raw = RawSpec { name: Some("web".into()), repo_url: Some("https://github.com/o/r".into()), framework: Some("flask".into()), ..RawSpec::default() };
        let mut d = Deployment::new(Spec::parse(raw, &Limits::default(), &RepoPolicy::default()).unwrap(), 0);
        d.status = status;
        d
    }

    fn line(text: &str) -> LogLine {
        LogLine { deployment: "x".into(), seq: 1, ts: 0, level: crate::core::log::Level::Info, step: "deploy".into(), text: text.into() }
    }

    #[test]
    fn validation_errors_read_like_the_apis_with_discords_option_names() {
        let e = ValidationErrors(vec![FieldError::new("repo_url", "required", "is required"), FieldError::new("memory_mib", "range", "must be between 512 and 16384 MiB")]);
        let r = invalid(&e);
        assert!(r.ephemeral);
        expect![[r#"
            The request was not accepted; nothing was changed:
            • `repo` is required
            • `memory` must be between 512 and 16384 MiB"#]]
        .assert_eq(&r.content);
    }

    #[test]
    fn deploy_progress_shows_each_step_then_the_outcome() {
        let mut d = deployment(Status::Installing);
        expect![[r#"
            🚀 Deploying **web** — https://github.com/o/r @ main (flask on vm)
            ✅ pending
            ✅ provisioning
            ⏳ installing
            ▫️ deploying"#]]
        .assert_eq(&deploy_progress(&d, &[]).content);
        d.status = Status::Running;
        d.url = Some("http://10.0.0.5".into());
        expect![[r#"
            🚀 Deploying **web** — https://github.com/o/r @ main (flask on vm)
            ✅ pending
            ✅ provisioning
            ✅ installing
            ✅ deploying
            🟢 running at http://10.0.0.5"#]]
        .assert_eq(&deploy_progress(&d, &[]).content);
        d.status = Status::Failed;
        d.error_message = Some("pip failed".into());
        let c = deploy_progress(&d, &[line("ERROR: no ```such``` package")]).content;
        assert!(c.ends_with("🔴 failed: pip failed\n```\n[deploy] ERROR: no '''such''' package\n```"), "{c}");
    }

    #[test]
    fn long_logs_keep_the_newest_lines_within_the_limit() {
        let lines: Vec<LogLine> = (0..200).map(|i| line(&format!("line {i} {}", "x".repeat(50)))).collect();
        let r = logs(&deployment(Status::Running), &lines);
        assert!(r.content.chars().count() <= 2000, "{}", r.content.len());
        assert!(r.content.contains("line 199"));
        assert!(!r.content.contains("line 0 "));
        // all of them, in the attached file
        let f = r.file.expect("a file");
        assert_eq!(f.filename, "logs-web.txt");
        let text = String::from_utf8(f.bytes).unwrap();
        assert_eq!(text.lines().count(), 200);
        assert!(text.starts_with("[deploy] line 0 "));
        // a few short lines: in the message, no file
        assert_eq!(logs(&deployment(Status::Running), &lines[..3]).file, None);
    }

    #[test]
    fn a_finished_deploy_carries_logs_rollback_and_a_link_to_the_app() {
        let mut d = deployment(Status::Installing);
        assert!(deploy_progress(&d, &[]).buttons.is_empty(), "no buttons while it moves");
        d.status = Status::Running;
        d.url = Some("http://10.0.0.5".into());
        let m = deploy_progress(&d, &[]).message_json();
        let row = &m["components"][0]["components"];
        assert_eq!(row[0]["custom_id"], format!("logs:{}", d.id));
        assert_eq!(row[1]["custom_id"], format!("rollback:{}", d.id));
        assert_eq!((row[2]["style"].as_u64(), row[2]["url"].as_str()), (Some(5), Some("http://10.0.0.5")));
        d.status = Status::Failed;
        assert_eq!(deploy_progress(&d, &[]).buttons.len(), 2, "no link to an app that does not run");
    }
}
