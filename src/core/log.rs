//! A deployment's log: its lines and their levels (recorded by the engine, read by every door).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub deployment: String,
    /// Strictly increasing within an agent (nanoseconds since the epoch, bumped on ties); the read cursor.
    pub seq: i64,
    /// Milliseconds since the epoch.
    pub ts: i64,
    pub level: Level,
    pub step: String,
    pub text: String,
}
