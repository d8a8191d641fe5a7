//! Server-Sent Events over a streaming HTTP answer: a parser fed bytes as they arrive, and a reader whose every
//! wait is bounded (no byte for the idle limit means the stream is dead; the agent sends a keep-alive every 15 s).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// One event: its type (`message` when none was given), its data (data lines joined by `\n`) and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

/// Why a stream stopped before its end.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    #[error("no data for {0} s")]
    Idle(u64),
    #[error("{0}")]
    Read(String),
    #[error("a line longer than {MAX_LINE} bytes")]
    TooLong,
}

/// The longest line accepted (a log line is at most 16 KiB of text, JSON-escaped).
const MAX_LINE: usize = 1 << 20;

/// The event-stream format of the HTML standard: lines end with LF, CRLF or CR; a blank line ends an event;
/// `:` starts a comment (keep-alives); fields are `event`, `data`, `id` (others ignored).
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    id: Option<String>,
    ready: VecDeque<Event>,
}

impl Parser {
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.field(&String::from_utf8_lossy(&line));
                }
                _ if self.line.len() >= MAX_LINE => return Err(StreamError::TooLong),
                _ => self.line.push(b),
            }
        }
        Ok(())
    }

    /// The next complete event, if any.
    pub fn next_event(&mut self) -> Option<Event> {
        self.ready.pop_front()
    }

    fn field(&mut self, line: &str) {
        if line.is_empty() {
            if self.has_data {
                let event = if self.event.is_empty() { "message".to_string() } else { std::mem::take(&mut self.event) };
                self.ready.push_back(Event { event, data: std::mem::take(&mut self.data), id: self.id.clone() });
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match name {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" => self.id = Some(value.to_string()),
            _ => {}
        }
    }
}

/// A live stream. `next` is cancel-safe: dropping it mid-wait loses nothing, and the idle limit counts from the
/// last byte received, not from the call.
pub struct Stream {
    resp: reqwest::Response,
    parser: Parser,
    idle: Duration,
    last_byte: Instant,
    ended: bool,
}

impl Stream {
    pub fn new(resp: reqwest::Response, idle: Duration) -> Stream {
        Stream { resp, parser: Parser::default(), idle, last_byte: Instant::now(), ended: false }
    }

    /// The next event; `Ok(None)` when the agent ended the stream.
    pub async fn next(&mut self) -> Result<Option<Event>, StreamError> {
        loop {
            if let Some(e) = self.parser.next_event() {
                return Ok(Some(e));
            }
            if self.ended {
                return Ok(None);
            }
            match tokio::time::timeout_at(self.last_byte + self.idle, self.resp.chunk()).await {
                Err(_) => return Err(StreamError::Idle(self.idle.as_secs())),
                Ok(Err(e)) => return Err(StreamError::Read(e.to_string())),
                Ok(Ok(None)) => self.ended = true,
                Ok(Ok(Some(bytes))) => {
                    self.last_byte = Instant::now();
                    self.parser.feed(&bytes)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::default();
        let mut out = vec![];
        for c in chunks {
            p.feed(c).unwrap();
            while let Some(e) = p.next_event() {
                out.push(e);
            }
        }
        out
    }

    #[test]
    fn events_split_anywhere_and_comments_are_skipped() {
        let got = all(&[b"id: 7\nevent: lo", b"g\ndata: {\"a\":1}\n", b"\n:\n\nevent: status\r\ndata: x\r\ndata: y\r\r", b"data:no-space\n\n"]);
        assert_eq!(
            got,
            vec![
                Event { event: "log".into(), data: "{\"a\":1}".into(), id: Some("7".into()) },
                Event { event: "status".into(), data: "x\ny".into(), id: Some("7".into()) },
                Event { event: "message".into(), data: "no-space".into(), id: Some("7".into()) },
            ]
        );
    }

    #[test]
    fn an_unfinished_event_is_not_delivered_and_a_huge_line_is_refused() {
        assert!(all(&[b"data: half"]).is_empty());
        let mut p = Parser::default();
        assert!(matches!(p.feed(&vec![b'a'; MAX_LINE + 1]), Err(StreamError::TooLong)));
    }
}
