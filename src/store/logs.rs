//! Deployment log lines: append-only records, read in order, so a log grows without rewriting the deployment.

use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::json;

use super::{decode, now_millis, Store, StoreError};
use crate::core::deployment::DeploymentId;
pub use crate::core::log::{Level, LogLine};

static LAST_SEQ: AtomicI64 = AtomicI64::new(0);

fn next_seq() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0);
    let mut prev = LAST_SEQ.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST_SEQ.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

/// Made here, not in `core`: a line is stamped with the clock and the agent's cursor.
impl LogLine {
    /// A new line stamped now, with the next cursor.
    pub fn new(id: &DeploymentId, level: Level, step: &str, text: &str) -> LogLine {
        LogLine { deployment: id.to_string(), seq: next_seq(), ts: now_millis(), level, step: step.into(), text: text.into() }
    }
}

impl Store {
    pub async fn append_log(&self, id: &DeploymentId, level: Level, step: &str, text: &str) -> Result<LogLine, StoreError> {
        let line = LogLine::new(id, level, step, text);
        self.run("CREATE log_line CONTENT $line", json!({ "line": line })).await?;
        Ok(line)
    }

    /// Appends lines made earlier (their cursors already taken), in one commit.
    pub async fn append_lines(&self, lines: &[LogLine]) -> Result<(), StoreError> {
        self.run("INSERT INTO log_line $lines RETURN NONE", json!({ "lines": lines })).await?;
        Ok(())
    }

    /// Lines after cursor `after` (exclusive), oldest first, at most `limit`.
    pub async fn read_log(&self, id: &DeploymentId, after: i64, limit: u32) -> Result<Vec<LogLine>, StoreError> {
        let rows = self
            .run(
                "SELECT deployment, seq, ts, level, step, text FROM log_line WHERE deployment = $id AND seq > $after ORDER BY seq ASC LIMIT $limit",
                json!({ "id": id.as_str(), "after": after, "limit": limit }),
            )
            .await?;
        rows.into_iter().next().unwrap_or_default().into_iter().map(decode).collect()
    }

    /// The newest `n` lines, oldest first.
    pub async fn tail_log(&self, id: &DeploymentId, n: u32) -> Result<Vec<LogLine>, StoreError> {
        let rows = self
            .run(
                "SELECT deployment, seq, ts, level, step, text FROM log_line WHERE deployment = $id ORDER BY seq DESC LIMIT $n",
                json!({ "id": id.as_str(), "n": n }),
            )
            .await?;
        let mut lines: Vec<LogLine> = rows.into_iter().next().unwrap_or_default().into_iter().map(decode).collect::<Result<_, _>>()?;
        lines.reverse();
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn seqs_strictly_increase() {
        let a: Vec<i64> = (0..1000).map(|_| super::next_seq()).collect();
        assert!(a.windows(2).all(|w| w[0] < w[1]));
    }
}
