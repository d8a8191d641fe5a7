//! A deployment's log: its lines and their levels (recorded by the engine, read by every door).

use serde::{Deserialize, Serialize};

crate::core::spelling::string_enum! {
    /// How much a log line matters.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Level {
        Debug = "debug",
        Info = "info",
        Warn = "warn",
        Error = "error",
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
