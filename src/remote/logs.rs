//! `pvedeploy logs NAME [-f] [--tail N]`: a deployment's log, its last lines, and with `-f` the live log until the
//! deployment settles.

use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;

use super::args::{self, DeploymentRef};
use super::follow::{watch, End, Sink, Watch};
use super::terminal::{clean, Terminal};
use super::wire::LogLineJson;
use super::{AgentArgs, Remote, RemoteError};

/// Print a deployment's log.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The deployment's name or id.
    #[arg(value_parser = args::deployment_ref)]
    pub name: DeploymentRef,
    /// Then follow the live log until the deployment settles (Ctrl-C stops watching).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub tail: Option<u64>,
    /// One JSON object per line (seq, ts, level, step, text).
    #[arg(long)]
    pub json: bool,
    /// Stop following after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// `2026-12-05 00:54:44` from the agent's RFC 3339 time (as given when it has another shape).
fn when(ts: &str) -> String {
    match ts.get(..19) {
        Some(s) if s.as_bytes().get(10) == Some(&b'T') => s.replacen('T', " ", 1),
        _ => ts.to_string(),
    }
}

/// One log line as text: time, level, step, then the text (continuation lines indented).
pub fn format_line(l: &LogLineJson, term: &Terminal) -> String {
    let level = match l.level.as_str() {
        "warn" => term.paint("33", "warn ").into_owned(),
        "error" => term.paint("31", "error").into_owned(),
        other => format!("{other:<5}"),
    };
    let indent = format!("\n{}", " ".repeat(40));
    let text = l.text.lines().map(|t| clean(t).into_owned()).collect::<Vec<_>>().join(&indent);
    format!("{} {level} {:<13} {text}", when(&l.ts), clean(&l.step))
}

/// Prints lines as they come.
struct Printer {
    term: Terminal,
    json: bool,
}

impl Printer {
    fn print(&self, l: &LogLineJson) {
        let mut out = std::io::stdout().lock();
        let _ = if self.json { writeln!(out, "{}", serde_json::to_string(l).unwrap_or_default()) } else { writeln!(out, "{}", format_line(l, &self.term)) };
        let _ = out.flush();
    }
}

impl Sink for Printer {
    fn status(&mut self, _: &str) {}
    fn line(&mut self, l: &LogLineJson) {
        self.print(l);
    }
}

pub async fn run(remote: &Remote, a: &LogsArgs) -> Result<u8, RemoteError> {
    let d = remote.deployment(a.name.as_str()).await?;
    let mut printer = Printer { term: Terminal::stdout(), json: a.json };
    let mut after = 0;
    match a.tail {
        // The agent gives the newest lines itself, up to 1000.
        Some(n) if n <= 1000 => {
            let page = remote.log_tail(&d.id, n as u32).await?;
            after = page.next_after;
            for l in &page.lines {
                printer.print(l);
            }
        }
        _ => {
            let mut tail: VecDeque<LogLineJson> = VecDeque::new();
            // At most 10 million lines: every read is bounded.
            for _ in 0..10_000 {
                let page = remote.log_page(&d.id, after, 1000).await?;
                after = after.max(page.next_after);
                let n = page.lines.len();
                for l in page.lines {
                    match a.tail {
                        Some(keep) => {
                            if tail.len() as u64 == keep {
                                tail.pop_front();
                            }
                            tail.push_back(l);
                        }
                        None => printer.print(&l),
                    }
                }
                if n < 1000 {
                    break;
                }
            }
            for l in &tail {
                printer.print(l);
            }
        }
    }
    if !a.follow {
        return Ok(0);
    }
    let w = Watch { remote, id: d.id.clone(), before: None, after, timeout: Duration::from_secs(a.timeout) };
    match watch(w, &mut printer).await? {
        End::Settled(d) => {
            if !a.json {
                eprintln!("({} is {}; nothing more to follow)", d.name, d.status);
            }
            Ok(0)
        }
        End::Interrupted(_) => Ok(130),
        End::TimedOut(_) => {
            eprintln!("stopped following after {} s", a.timeout);
            Ok(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_time_level_step_text_and_stays_on_the_terminal() {
        let l = LogLineJson { seq: 1, ts: "2026-12-05T00:54:44.69Z".into(), level: "warn".into(), step: "start".into(), text: "a\x1b[2Jb\nsecond".into() };
        let s = format_line(&l, &Terminal::plain());
        assert!(s.starts_with("2026-12-05 00:54:44 warn  start         a\u{fffd}[2Jb\n"), "{s}");
        assert!(!s.contains('\x1b'));
    }
}
