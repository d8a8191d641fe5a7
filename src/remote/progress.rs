//! How a followed request is shown: on a terminal, one line per finished step with its duration and a spinner on
//! the step under way; in a pipe, the same lines with no control codes at all; with `--json`, one JSON object per
//! event. Ends with the URL and commit, or the failing step, its exit code and last lines — and the exit code.

use std::io::Write;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::follow::{End, FollowArgs, Goal, Sink};
use super::steps::{Change, Steps};
use super::terminal::{clean, duration, fit, Terminal};
use super::wire::{millis, DeploymentJson, LogLineJson};

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// How the command ended, as an exit code: 0 the work ended well, 1 it failed, 2 watching gave up (timeout),
/// 130 Ctrl-C (the work goes on in both of the last two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    Failed,
    GaveUp,
    Interrupted,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Succeeded => 0,
            Verdict::Failed => 1,
            Verdict::GaveUp => 2,
            Verdict::Interrupted => 130,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Terminal,
    Plain,
    Json,
}

/// The failure a deployment's error message describes: `deploy failed at step start: step start failed
/// (deploy_app.sh, exit code 1); last output:\n…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub summary: String,
    pub step: Option<String>,
    pub exit_code: Option<i64>,
    pub last_lines: Vec<String>,
}

impl Failure {
    pub fn parse(message: &str) -> Failure {
        let (head, tail) = match message.split_once("; last output:\n") {
            Some((h, t)) => (h, t.lines().map(str::to_string).collect()),
            None => match message.split_once('\n') {
                Some((h, t)) => (h, t.lines().map(str::to_string).collect()),
                None => (message, vec![]),
            },
        };
        let step = head.split_once("at step ").map(|(_, r)| r.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')).next().unwrap_or("").to_string()).filter(|s| !s.is_empty());
        let exit_code = head.split_once("exit code ").and_then(|(_, r)| r.split(|c: char| !c.is_ascii_digit()).next()).and_then(|n| n.parse().ok());
        Failure { summary: head.to_string(), step, exit_code, last_lines: tail }
    }
}

/// Renders one followed request.
pub struct Progress {
    style: Style,
    term: Terminal,
    verbose: bool,
    detach: bool,
    name: String,
    steps: Steps,
    status: String,
    started: Instant,
    step_since: Instant,
    last_text: String,
    error_line: Option<String>,
    frame: usize,
    spinner_shown: bool,
}

impl Progress {
    pub fn new(term: Terminal, args: &FollowArgs, name: &str) -> Progress {
        let style = if args.json {
            Style::Json
        } else if term.tty {
            Style::Terminal
        } else {
            Style::Plain
        };
        Progress {
            style,
            term,
            verbose: args.verbose,
            detach: args.detach,
            name: name.to_string(),
            steps: Steps::default(),
            status: String::new(),
            started: Instant::now(),
            step_since: Instant::now(),
            last_text: String::new(),
            error_line: None,
            frame: 0,
            spinner_shown: false,
        }
    }

    /// Writes whole lines, above the spinner when one is shown.
    fn print(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        if self.spinner_shown {
            let _ = write!(out, "\r\x1b[2K");
            self.spinner_shown = false;
        }
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    fn json(&mut self, v: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }

    fn clear_spinner(&mut self) {
        if self.spinner_shown {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
            self.spinner_shown = false;
        }
    }

    fn draw_spinner(&mut self) {
        if self.style != Style::Terminal {
            return;
        }
        let width = self.term.width.unwrap_or(80).saturating_sub(1);
        let frame = FRAMES[self.frame % FRAMES.len()];
        let label = match self.steps.current() {
            Some(step) => format!("{step:<13} {:>7}", duration(self.step_since.elapsed().as_millis() as u64)),
            None => format!("{:<13} {:>7}", if self.status.is_empty() { "waiting" } else { &self.status }, duration(self.started.elapsed().as_millis() as u64)),
        };
        let line = format!("  {frame} {label}  {}", self.last_text);
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[2K{}", fit(&line, width));
        let _ = out.flush();
        self.spinner_shown = true;
    }

    fn step_line(&mut self, step: &str, ms: u64, failed: bool) {
        match self.style {
            Style::Json => self.json(json!({ "event": "step", "step": step, "result": if failed { "failed" } else { "done" }, "ms": ms })),
            Style::Terminal => {
                let mark = if failed { self.term.paint("31", "✗").into_owned() } else { self.term.paint("32", "✓").into_owned() };
                self.print(&format!("  {mark} {step:<13} {:>7}", duration(ms)));
            }
            Style::Plain => self.print(&format!("  {:<6} {step:<13} {:>7}", if failed { "failed" } else { "ok" }, duration(ms))),
        }
    }

    /// The first line: what the agent accepted.
    pub fn accepted(&mut self, goal: Goal, d: &DeploymentJson) {
        if self.style == Style::Json {
            self.json(json!({ "event": "accepted", "action": goal.verb(), "deployment": d.id, "name": d.name, "status": d.status }));
            return;
        }
        let what = match goal {
            Goal::Deploy => format!(
                "Deploying {} ({} in a {}) from {}, branch {}",
                d.name,
                d.framework,
                if d.guest_type == "lxc" { "container" } else { "VM" },
                clean(&d.repo_url),
                clean(&d.branch)
            ),
            Goal::Redeploy => format!("Redeploying {} (the newest commit of branch {})", d.name, clean(&d.branch)),
            Goal::Rollback => format!("Rolling {} back to its previous release", d.name),
            Goal::Start => format!("Starting {}", d.name),
            Goal::Stop => format!("Stopping {}", d.name),
            Goal::Destroy => format!("Destroying {}", d.name),
        };
        self.print(&what);
        if self.style == Style::Terminal && !self.detach {
            let hint = self.term.paint("2", "  (Ctrl-C stops watching; the work goes on)").into_owned();
            self.print(&hint);
        }
    }

    /// The result and its exit code.
    pub fn finish(&mut self, goal: Goal, end: &End) -> Verdict {
        let d = match end {
            End::Settled(d) => d,
            End::Interrupted(d) | End::TimedOut(d) => {
                self.clear_spinner();
                let interrupted = matches!(end, End::Interrupted(_));
                let status = d.as_ref().map(|d| d.status.as_str()).unwrap_or("unknown");
                let why = if interrupted { "Stopped watching (Ctrl-C)".to_string() } else { format!("Stopped watching after {}", duration(self.started.elapsed().as_millis() as u64)) };
                if self.style == Style::Json {
                    self.json(json!({ "event": if interrupted { "interrupted" } else { "timed_out" }, "name": self.name, "status": status }));
                }
                // To stderr: a person reads it, and a pipe on stdout keeps only the events.
                eprintln!(
                    "{why}: {} is {status}. The {} goes on; follow it with `pvedeploy logs {} -f` or `pvedeploy status {}`.",
                    self.name,
                    goal.verb(),
                    self.name,
                    self.name
                );
                return if interrupted { Verdict::Interrupted } else { Verdict::GaveUp };
            }
        };
        // A release that failed leaves its error on the deployment (a successful one clears it); a stop or start
        // that failed logs an error line and keeps the status.
        let ok = d.status == goal.expected() && !(goal.releases() && d.error_message.is_some());
        if let Some(Change::Finished { step, ms, failed }) = self.steps.end(!ok) {
            self.step_line(&step, ms, failed);
        }
        self.clear_spinner();
        let failure = match (ok, goal.releases()) {
            (true, _) => None,
            (false, true) => d.error_message.as_deref().or(self.error_line.as_deref()).map(Failure::parse),
            (false, false) => self.error_line.as_deref().map(Failure::parse),
        };
        let total = self.started.elapsed().as_millis() as u64;
        if self.style == Style::Json {
            self.json(json!({
                "event": "result",
                "ok": ok,
                "action": goal.verb(),
                "name": d.name,
                "deployment": d.id,
                "status": d.status,
                "url": d.url,
                "commit": d.commit,
                "failed_step": failure.as_ref().and_then(|f| f.step.clone()),
                "exit_code": failure.as_ref().and_then(|f| f.exit_code),
                "error": failure.as_ref().map(|f| f.summary.clone()),
                "last_lines": failure.as_ref().map(|f| f.last_lines.clone()).unwrap_or_default(),
                "ms": total,
            }));
            return if ok { Verdict::Succeeded } else { Verdict::Failed };
        }
        let good = |t: &Terminal, s: &str| if t.tty { t.paint("32", s).into_owned() } else { s.to_string() };
        let bad = |t: &Terminal, s: &str| if t.tty { t.paint("31", s).into_owned() } else { s.to_string() };
        if ok {
            let head = match (goal.expected(), &d.url) {
                ("running", Some(url)) => format!("{} is running at {}", d.name, clean(url)),
                (status, _) => format!("{} is {status}", d.name),
            };
            let mark = if self.term.tty { good(&self.term, "✓ ") } else { String::new() };
            self.print(&format!("{mark}{head}"));
            if let (true, Some(c)) = (goal.expected() == "running", &d.commit) {
                self.print(&format!("  commit {}  ({} in {})", clean(c), goal.verb(), duration(total)));
            }
            return Verdict::Succeeded;
        }
        let mark = if self.term.tty { bad(&self.term, "✗ ") } else { String::new() };
        match &failure {
            Some(f) => {
                let step = f.step.as_deref().or(self.steps.finished().last().map(|(s, _)| s.as_str()));
                let mut head = format!("{}: {} failed", d.name, goal.verb());
                if let Some(s) = step {
                    head.push_str(&format!(" at step {s}"));
                }
                if let Some(c) = f.exit_code {
                    head.push_str(&format!(" (exit code {c})"));
                }
                self.print(&format!("{mark}{head}"));
                self.print(&format!("  {}", clean(&f.summary)));
                if !f.last_lines.is_empty() {
                    self.print("  last output:");
                    let width = self.term.width;
                    for l in &f.last_lines {
                        let l = clean(l);
                        let l = match width {
                            Some(w) if self.term.tty => fit(&l, w.saturating_sub(5)).into_owned(),
                            _ => l.into_owned(),
                        };
                        self.print(&format!("    {l}"));
                    }
                }
            }
            None => self.print(&format!("{mark}{}: {} did not end {} (it is {})", d.name, goal.verb(), goal.expected(), d.status)),
        }
        if goal.releases() && d.status == "running" {
            if let Some(url) = &d.url {
                let commit = d.commit.as_deref().map(|c| format!(" (commit {})", clean(c))).unwrap_or_default();
                self.print(&format!("  the previous release keeps serving at {}{commit}", clean(url)));
            }
        }
        self.print(&format!("  full log: pvedeploy logs {}", d.name));
        Verdict::Failed
    }
}

impl Sink for Progress {
    fn status(&mut self, status: &str) {
        if status == self.status {
            return;
        }
        self.status = status.to_string();
        match self.style {
            Style::Json => self.json(json!({ "event": "status", "status": status })),
            Style::Terminal => self.draw_spinner(),
            Style::Plain => {}
        }
    }

    fn line(&mut self, l: &LogLineJson) {
        if l.level == "error" {
            self.error_line = Some(l.text.clone());
        }
        for change in self.steps.line(&l.step, millis(&l.ts), &l.level) {
            match change {
                Change::Finished { step, ms, failed } => self.step_line(&step, ms, failed),
                Change::Started(_) => self.step_since = Instant::now(),
            }
        }
        match self.style {
            Style::Json => self.json(json!({ "event": "log", "seq": l.seq, "ts": l.ts, "level": l.level, "step": l.step, "text": l.text })),
            Style::Terminal | Style::Plain => {
                self.last_text = clean(l.text.lines().next().unwrap_or("")).into_owned();
                if self.verbose {
                    let text = clean(&l.text).replace('\n', "\n                  ");
                    self.print(&format!("    {:<13} {text}", clean(&l.step)));
                }
                self.draw_spinner();
            }
        }
    }

    fn tick(&mut self) {
        if self.style == Style::Terminal {
            self.frame += 1;
            self.draw_spinner();
        }
    }

    fn tick_every(&self) -> Duration {
        if self.style == Style::Terminal {
            Duration::from_millis(100)
        } else {
            Duration::from_millis(250)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_gives_its_step_exit_code_and_last_lines() {
        let f = Failure::parse("deploy failed at step start: step start failed (/opt/pvedeploy/scripts/deploy_app.sh, exit code 1); last output:\nTraceback\nHaltServer");
        assert_eq!(f.step.as_deref(), Some("start"));
        assert_eq!(f.exit_code, Some(1));
        assert_eq!(f.last_lines, ["Traceback", "HaltServer"]);
        assert_eq!(f.summary, "deploy failed at step start: step start failed (/opt/pvedeploy/scripts/deploy_app.sh, exit code 1)");
        let f = Failure::parse("deploy failed at step health; the previous release keeps serving: health check of http://x/ failed for 120s: HTTP 500");
        assert_eq!((f.step.as_deref(), f.exit_code), (Some("health"), None));
        let f = Failure::parse("stop failed: guest 101 no longer exists on the cluster; the deployment keeps its status");
        assert_eq!((f.step, f.exit_code, f.last_lines.len()), (None, None, 0));
    }

    #[test]
    fn exit_codes() {
        assert_eq!([Verdict::Succeeded, Verdict::Failed, Verdict::GaveUp, Verdict::Interrupted].map(Verdict::exit_code), [0, 1, 2, 130]);
    }
}
