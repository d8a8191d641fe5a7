//! Cuts a remote command's output bytes into lines as they arrive: one splitter per stream, the partial last line flushed at EOF, very long lines capped with a marker.

/// Which of the command's streams a line came from (they are never merged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of output, without its line ending, decoded as UTF-8 (invalid bytes become U+FFFD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub stream: Stream,
    pub line: String,
}

/// The longest line kept, in bytes; the rest of a longer line is dropped and [`TRUNCATED`] appended.
pub const MAX_LINE: usize = 16 * 1024;
/// Appended to a line cut at [`MAX_LINE`].
pub const TRUNCATED: &str = " …[line truncated]";

/// Accumulates one stream's bytes and hands out complete lines.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    /// The current line passed [`MAX_LINE`] and was already emitted; skip to its end.
    skipping: bool,
}

impl LineSplitter {
    /// Feeds `data`; returns every line it completed (a line too long is returned once, cut).
    pub fn push(&mut self, mut data: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    if !self.skipping {
                        self.buf.extend_from_slice(&data[..nl]);
                        out.push(self.take_line());
                    }
                    self.skipping = false;
                    self.buf.clear();
                    data = &data[nl + 1..];
                }
                None => {
                    if !self.skipping {
                        self.buf.extend_from_slice(data);
                        if self.buf.len() > MAX_LINE {
                            out.push(self.take_line());
                            self.skipping = true;
                        }
                    }
                    data = &[];
                }
            }
        }
        out
    }

    /// The stream ended: the unfinished last line, if any.
    pub fn finish(&mut self) -> Option<String> {
        let pending = !self.buf.is_empty() && !self.skipping;
        let line = pending.then(|| self.take_line());
        self.buf.clear();
        self.skipping = false;
        line
    }

    fn take_line(&mut self) -> String {
        let mut bytes = std::mem::take(&mut self.buf);
        let cut = bytes.len() > MAX_LINE;
        if cut {
            bytes.truncate(MAX_LINE);
        }
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let mut line = String::from_utf8_lossy(&bytes).into_owned();
        if cut {
            line.push_str(TRUNCATED);
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks_and_the_last_partial_line_is_flushed() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"one\ntw"), vec!["one"]);
        assert_eq!(s.push(b"o\r\n\nthr"), vec!["two", ""]);
        assert_eq!(s.push(b"ee"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("three"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn a_very_long_line_is_cut_once_with_a_marker() {
        let mut s = LineSplitter::default();
        let mut lines = s.push(&vec![b'a'; MAX_LINE - 1]);
        lines.extend(s.push(&vec![b'a'; 10_000]));
        lines.extend(s.push(&vec![b'a'; 100_000]));
        lines.extend(s.push(b"aaa\nnext\n"));
        assert_eq!(lines.len(), 2, "{:?}", lines.iter().map(String::len).collect::<Vec<_>>());
        assert_eq!(lines[0], format!("{}{TRUNCATED}", "a".repeat(MAX_LINE)));
        assert_eq!(lines[1], "next");
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_dropped() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"caf\xc3\xa9 \xff\n"), vec!["café \u{fffd}"]);
    }
}
