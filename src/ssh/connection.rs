//! An authenticated SSH connection: runs one quoted command per session channel, feeding stdin, streaming output lines as they arrive, and stopping it on timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::client;
use russh::{ChannelMsg, ChannelReadHalf, Sig};
use tokio::sync::mpsc::Sender;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::SshError;
use super::handler::Pinned;
use super::lines::{LineSplitter, OutputLine, Stream};
use super::quote::{command_line, QuoteError};
use super::SshSettings;

/// How much later than our own timer the host-side `timeout` fires, and how long after its SIGHUP
/// it sends SIGKILL.
const REMOTE_GRACE_SECS: u64 = 5;
const REMOTE_KILL_AFTER_SECS: u64 = 10;

/// A command to run: an argument vector (quoted once, by [`super::quote::command_line`]), optional
/// stdin bytes, and an optional timeout replacing the default.
#[derive(Debug, Clone, Default)]
pub struct RemoteCommand {
    pub argv: Vec<String>,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
}

impl RemoteCommand {
    /// A command from its words, no stdin, the default timeout.
    pub fn new<S: AsRef<str>>(argv: &[S]) -> Self {
        Self { argv: argv.iter().map(|a| a.as_ref().to_string()).collect(), stdin: None, timeout: None }
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self
    }
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The exit code; `None` when the command was killed by a signal.
    pub exit_code: Option<u32>,
    /// The signal's name without `SIG` (`TERM`, `KILL`, …) when it was killed by one.
    pub signal: Option<String>,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// A finished command with its output collected ([`Connection::output`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub finished: Finished,
    /// Stdout lines joined with `\n` (no trailing newline).
    pub stdout: String,
    pub stderr: String,
}

/// An authenticated connection to one host. Commands may run concurrently on it, each on its own
/// session channel, within the host's session limit.
pub struct Connection {
    addr: SocketAddr,
    handle: client::Handle<Pinned>,
    permits: Arc<Semaphore>,
    settings: Arc<SshSettings>,
}

/// Where output lines go.
enum Sink<'a> {
    Send(Option<Sender<OutputLine>>),
    Collect(&'a mut Vec<OutputLine>),
}

impl Sink<'_> {
    async fn emit(&mut self, stream: Stream, line: String) {
        match self {
            // A reader that went away only stops the lines, never the command.
            Sink::Send(Some(tx)) => {
                let _ = tx.send(OutputLine { stream, line }).await;
            }
            Sink::Send(None) => {}
            Sink::Collect(v) => v.push(OutputLine { stream, line }),
        }
    }
}

impl Connection {
    pub(super) fn new(addr: SocketAddr, handle: client::Handle<Pinned>, permits: Arc<Semaphore>, settings: Arc<SshSettings>) -> Self {
        Self { addr, handle, permits, settings }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(super) fn command_timeout(&self) -> Duration {
        self.settings.command_timeout
    }

    /// Waits for a free session slot on this host (never fails while the executor lives).
    pub(super) async fn permit(&self) -> OwnedSemaphorePermit {
        self.permits.clone().acquire_owned().await.expect("the per-host semaphore is never closed")
    }

    pub(super) async fn open_channel(&self) -> Result<russh::Channel<client::Msg>, SshError> {
        self.handle.channel_open_session().await.map_err(|e| self.channel_err(e))
    }

    pub(super) fn channel_err(&self, e: impl std::fmt::Display) -> SshError {
        SshError::Channel { addr: self.addr, message: e.to_string() }
    }

    /// Runs `cmd.argv` (quoted once by [`command_line`]) with optional stdin and timeout; stdout and
    /// stderr lines go to `lines` as they arrive, tagged with their stream. On timeout we ask sshd to
    /// SIGHUP the command's process group and close the channel, and [`SshError::Timeout`] names
    /// argv[0]; with [`SshSettings::enforce_remote_timeout`] the host's `timeout` also stops it (sshd
    /// refuses signal requests for root logins). argv[0] must be a program, not a shell builtin.
    pub async fn run(&self, cmd: &RemoteCommand, lines: Option<Sender<OutputLine>>) -> Result<Finished, SshError> {
        self.run_into(cmd, Sink::Send(lines)).await
    }

    /// Like [`Connection::run`], collecting the output instead (for commands with small output).
    pub async fn output(&self, cmd: &RemoteCommand) -> Result<Output, SshError> {
        let mut lines = Vec::new();
        let finished = self.run_into(cmd, Sink::Collect(&mut lines)).await?;
        let join = |s: Stream| lines.iter().filter(|l| l.stream == s).map(|l| l.line.as_str()).collect::<Vec<_>>().join("\n");
        Ok(Output { stdout: join(Stream::Stdout), stderr: join(Stream::Stderr), finished })
    }

    async fn run_into(&self, cmd: &RemoteCommand, mut sink: Sink<'_>) -> Result<Finished, SshError> {
        let program = cmd.argv.first().cloned().ok_or(QuoteError::Empty)?;
        let after = cmd.timeout.unwrap_or(self.settings.command_timeout);
        let line = command_line(&cmd.argv)?;
        let line = if self.settings.enforce_remote_timeout {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0) + REMOTE_GRACE_SECS;
            let guard = command_line(&["timeout".to_string(), format!("--kill-after={REMOTE_KILL_AFTER_SECS}s"), "--signal=HUP".into(), format!("{secs}s")])?;
            format!("{guard} {line}")
        } else {
            line
        };
        let _permit = self.permit().await;
        let (mut read, write) = self.open_channel().await?.split();
        write.exec(true, line).await.map_err(|e| self.channel_err(e))?;

        let work = async {
            let feed = async {
                if let Some(bytes) = &cmd.stdin {
                    write.data_bytes(bytes.clone()).await?;
                }
                write.eof().await
            };
            let drain = drain(&mut read, &mut sink);
            tokio::pin!(feed, drain);
            let mut feeding = true;
            loop {
                tokio::select! {
                    // A command that exits without reading all its stdin is not an error of ours.
                    fed = &mut feed, if feeding => {
                        if let Err(e) = fed {
                            tracing::debug!(addr = %self.addr, program, error = %e, "stdin not fully delivered");
                        }
                        feeding = false;
                    }
                    done = &mut drain => break done,
                }
            }
        };
        match tokio::time::timeout(after, work).await {
            Ok(Ok(finished)) => Ok(finished),
            Ok(Err(message)) => Err(self.channel_err(message)),
            Err(_) => {
                // sshd delivers the signal to the command's process group; closing the channel then
                // closes its pipes. Either way the remote command stops.
                let _ = write.signal(Sig::HUP).await;
                let _ = write.close().await;
                Err(SshError::Timeout { addr: self.addr, program, after })
            }
        }
    }

    /// Ends the connection politely.
    pub async fn close(self) {
        let _ = self.handle.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    }
}

/// Reads a channel to its end: lines out as they arrive, then the exit status or signal.
async fn drain(read: &mut ChannelReadHalf, sink: &mut Sink<'_>) -> Result<Finished, String> {
    let (mut out, mut err) = (LineSplitter::default(), LineSplitter::default());
    let (mut exit_code, mut signal) = (None, None);
    let mut closed = false;
    while let Some(msg) = read.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                for line in out.push(&data) {
                    sink.emit(Stream::Stdout, line).await;
                }
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                for line in err.push(&data) {
                    sink.emit(Stream::Stderr, line).await;
                }
            }
            ChannelMsg::ExitStatus { exit_status } => exit_code = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => signal = Some(signal_text(&signal_name)),
            ChannelMsg::Failure => return Err("the server refused to run the command".into()),
            ChannelMsg::Close => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    if let Some(line) = out.finish() {
        sink.emit(Stream::Stdout, line).await;
    }
    if let Some(line) = err.finish() {
        sink.emit(Stream::Stderr, line).await;
    }
    match (exit_code, &signal) {
        (None, None) if closed => Err("the channel closed without an exit status".into()),
        (None, None) => Err("the connection was lost while the command ran".into()),
        _ => Ok(Finished { exit_code: if signal.is_some() { None } else { exit_code }, signal }),
    }
}

fn signal_text(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(s) => s.as_str(),
    }
    .to_string()
}
