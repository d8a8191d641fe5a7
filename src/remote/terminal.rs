//! What the command line writes to: a terminal (its width, whether colour is welcome) or a pipe, and text made
//! safe to show there (control characters from logs never reach the terminal).

use std::borrow::Cow;
use std::io::IsTerminal;

/// Standard output as the command line sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminal {
    /// A terminal that understands cursor movement: spinners and colour are allowed. Off for pipes and `TERM=dumb`.
    pub tty: bool,
    /// Columns: the terminal's width; for a pipe, `COLUMNS` if set, else unlimited (`None`).
    pub width: Option<usize>,
    /// Colour on a terminal unless `NO_COLOR` is set.
    pub color: bool,
}

impl Terminal {
    pub fn stdout() -> Terminal {
        let tty = std::io::stdout().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb");
        let columns = std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse::<usize>().ok()).filter(|c| *c > 0);
        let width = if tty { Some(window_columns().or(columns).unwrap_or(80)) } else { columns };
        let color = tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Terminal { tty, width, color }
    }

    /// No terminal: plain lines, no width limit, no colour.
    pub fn plain() -> Terminal {
        Terminal { tty: false, width: None, color: false }
    }

    /// `text` in `code` (an SGR parameter such as `32` for green) when colour is on.
    pub fn paint<'a>(&self, code: &str, text: &'a str) -> Cow<'a, str> {
        if self.color {
            Cow::Owned(format!("\x1b[{code}m{text}\x1b[0m"))
        } else {
            Cow::Borrowed(text)
        }
    }
}

/// Ends the process quietly when standard output is a pipe closed early (`pvedeploy list | head -1`), as command-line
/// tools do, instead of failing a write (Rust ignores SIGPIPE by default). For client commands only: never the agent.
pub fn exit_quietly_on_closed_pipe() {
    // SAFETY: restores the default disposition of one signal; no handler is installed, nothing else is touched.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Whether standard input is a terminal a person can type into.
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// The terminal's width from the kernel (`TIOCGWINSZ` on standard output).
fn window_columns() -> Option<usize> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer we pass, which points at a live, writable one.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

/// `text` without control characters: a tab becomes a space, anything else (ESC, CR, BEL, DEL, C1) becomes `�`.
/// Log lines come from guests and repositories; they must not move the cursor or retitle the terminal.
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().map(|c| if c == '\t' { ' ' } else if c.is_control() { '\u{fffd}' } else { c }).collect())
}

/// `text` cut to `width` characters, ending with `…` when cut.
pub fn fit(text: &str, width: usize) -> Cow<'_, str> {
    if text.chars().count() <= width {
        return Cow::Borrowed(text);
    }
    if width == 0 {
        return Cow::Borrowed("");
    }
    let mut s: String = text.chars().take(width - 1).collect();
    s.push('…');
    Cow::Owned(s)
}

/// A duration in words for a person: `0.4s`, `12.3s`, `2m 05s`, `1h 02m`.
pub fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    if secs < 60 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if secs < 3600 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h {:02}m", secs / 3600, secs % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_pass() {
        assert_eq!(clean("ok"), "ok");
        assert_eq!(clean("a\x1b[2Jb\tc\rd\u{7}\u{9b}e"), "a\u{fffd}[2Jb c\u{fffd}d\u{fffd}\u{fffd}e");
        assert!(!clean("\x1b]0;title\x07").contains('\x1b'));
    }

    #[test]
    fn fitting_and_durations() {
        assert_eq!(fit("hello", 5), "hello");
        assert_eq!(fit("hello world", 6), "hello…");
        assert_eq!(duration(432), "0.4s");
        assert_eq!(duration(12_345), "12.3s");
        assert_eq!(duration(125_000), "2m 05s");
        assert_eq!(duration(3_720_000), "1h 02m");
        assert!(!Terminal::plain().paint("32", "x").contains('\x1b'));
    }
}
