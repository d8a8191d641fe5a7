//! A schedule's run as recorded: which occurrence, which agent ran it, how it ended.

crate::core::spelling::string_enum! {
    /// How a run ended (or that it is still running).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum RunOutcome {
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Skipped = "skipped",
    }
}

/// One occurrence of a schedule as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub schedule: String,
    /// The occurrence (UTC ms) this run is for.
    pub occurrence: i64,
    pub agent: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub outcome: RunOutcome,
    pub message: String,
}
