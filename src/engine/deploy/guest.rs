//! One SSH connection to a deployment's guest as the deploy pipeline uses it: runs a step's
//! argument vector as root (through `sudo -n --` for the deploy user), streams the output into
//! the deployment's log as it arrives with secret values redacted, and keeps the last lines for
//! the failure message.

use std::collections::VecDeque;
use std::time::Duration;

use crate::core::deployment::DeploymentId;
use crate::engine::Engine;
use crate::ssh::{Connection, OutputLine, RemoteCommand, SshError, Stream};
use crate::store::logs::Level;

/// How many output lines a failure message quotes.
pub const TAIL: usize = 20;

/// A command that ran and did not succeed.
#[derive(Debug, Clone)]
pub struct CommandFailed {
    pub program: String,
    pub exit_code: Option<u32>,
    pub signal: Option<String>,
    pub tail: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("{} exited with {}", .0.program, exit_text(.0))]
    Failed(CommandFailed),
}

fn exit_text(f: &CommandFailed) -> String {
    match (&f.exit_code, &f.signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "no exit status".into(),
    }
}

pub struct GuestShell<'a> {
    pub conn: Connection,
    /// Run through `sudo -n --` (a VM's deploy user); containers log in as root.
    pub sudo: bool,
    pub engine: &'a Engine,
    pub id: &'a DeploymentId,
    /// Values never to show in the log (the deployment's environment values).
    pub redact: Vec<String>,
}

impl GuestShell<'_> {
    /// Runs `argv` as root; output lines go to the log under `step`. Returns stdout lines.
    pub async fn root(&self, step: &str, argv: &[&str], stdin: Option<Vec<u8>>, timeout: Duration) -> Result<Vec<String>, ShellError> {
        let mut full: Vec<&str> = Vec::with_capacity(argv.len() + 3);
        if self.sudo {
            full.extend(["sudo", "-n", "--"]);
        }
        full.extend_from_slice(argv);
        self.run(step, &full, stdin, timeout).await
    }

    /// Runs `argv` as the login user.
    pub async fn run(&self, step: &str, argv: &[&str], stdin: Option<Vec<u8>>, timeout: Duration) -> Result<Vec<String>, ShellError> {
        let mut cmd = RemoteCommand::new(argv).timeout(timeout);
        if let Some(bytes) = stdin {
            cmd = cmd.stdin(bytes);
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<OutputLine>(256);
        let engine = self.engine.clone();
        let id = self.id.clone();
        let redact = self.redact.clone();
        let step_name = step.to_string();
        let sink = tokio::spawn(async move {
            let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL);
            let mut stdout = Vec::new();
            while let Some(l) = rx.recv().await {
                let text = redacted(&l.line, &redact);
                let level = if l.stream == Stream::Stderr { Level::Warn } else { Level::Info };
                engine.log(&id, level, &step_name, &text).await;
                if tail.len() == TAIL {
                    tail.pop_front();
                }
                tail.push_back(text.clone());
                if l.stream == Stream::Stdout {
                    stdout.push(text);
                }
            }
            (tail, stdout)
        });
        let finished = self.conn.run(&cmd, Some(tx)).await;
        let (tail, stdout) = sink.await.unwrap_or_default();
        let finished = finished?;
        if finished.success() {
            return Ok(stdout);
        }
        let program = argv.iter().find(|a| !matches!(**a, "sudo" | "-n" | "--")).unwrap_or(&"?").to_string();
        Err(ShellError::Failed(CommandFailed { program, exit_code: finished.exit_code, signal: finished.signal, tail: tail.into() }))
    }
}

/// `line` with every secret value (of 4 or more characters) replaced by `[redacted]`.
pub fn redacted(line: &str, secrets: &[String]) -> String {
    let mut out = line.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "[redacted]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_from_output() {
        let s = vec!["hunter2-canary".to_string(), "ab".to_string()];
        assert_eq!(redacted("DB=hunter2-canary ok", &s), "DB=[redacted] ok");
        assert_eq!(redacted("ab stays (too short to redact safely)", &s), "ab stays (too short to redact safely)");
    }
}
