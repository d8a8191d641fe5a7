//! The deployment lifecycle as an enum with its legal transitions; anything else is an error.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Pending,
    Provisioning,
    Installing,
    Deploying,
    Running,
    Stopped,
    Failed,
    Destroying,
    Destroyed,
}

/// A transition the lifecycle does not allow; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a deployment cannot go from {from} to {to}")]
pub struct IllegalTransition {
    pub from: Status,
    pub to: Status,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Pending,
        Status::Provisioning,
        Status::Installing,
        Status::Deploying,
        Status::Running,
        Status::Stopped,
        Status::Failed,
        Status::Destroying,
        Status::Destroyed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Provisioning => "provisioning",
            Status::Installing => "installing",
            Status::Deploying => "deploying",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
            Status::Destroying => "destroying",
            Status::Destroyed => "destroyed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// `pending → provisioning → installing → deploying → running`, `running ⇄ stopped`,
    /// a redeploy or rollback re-enters `deploying` from `running`, `stopped` or `failed`,
    /// a retry re-enters `provisioning` from `failed`, any live status → `failed`,
    /// any live status → `destroying → destroyed`.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        match (self, to) {
            (Destroyed, _) => false,
            (Destroying, Destroyed | Failed) => true,
            (Destroying, _) => false,
            (from, Failed) => from != Failed,
            (_, Destroying) => true,
            (Pending, Provisioning)
            | (Provisioning, Installing)
            | (Installing, Deploying)
            | (Deploying, Running)
            | (Running, Stopped)
            | (Stopped, Running)
            | (Running | Stopped | Failed, Deploying)
            | (Failed, Provisioning)
            | (Failed, Running) => true,
            _ => false,
        }
    }

    pub fn transition(self, to: Status) -> Result<Status, IllegalTransition> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }

    /// Work is under way: a live log stream stays open while this holds.
    pub fn is_busy(self) -> bool {
        matches!(self, Status::Pending | Status::Provisioning | Status::Installing | Status::Deploying | Status::Destroying)
    }

    /// The name is held by a deployment in this status.
    pub fn is_live(self) -> bool {
        self != Status::Destroyed
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded status change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::Status::{self, *};

    #[test]
    fn the_happy_path_is_legal() {
        let path = [Pending, Provisioning, Installing, Deploying, Running, Stopped, Running, Destroying, Destroyed];
        for w in path.windows(2) {
            assert!(w[0].transition(w[1]).is_ok(), "{} -> {}", w[0], w[1]);
        }
    }

    #[test]
    fn illegal_transitions_are_errors() {
        for (from, to) in [(Pending, Running), (Destroyed, Pending), (Destroyed, Failed), (Stopped, Installing), (Running, Pending), (Failed, Failed), (Destroying, Running)] {
            let e = from.transition(to).unwrap_err();
            assert_eq!((e.from, e.to), (from, to));
        }
    }

    #[test]
    fn every_live_status_can_fail_and_be_destroyed() {
        for s in Status::ALL {
            if s != Destroyed && s != Failed {
                assert!(s.can_become(Failed), "{s}");
            }
            if s != Destroyed {
                assert!(s.can_become(Destroying) || s == Destroying, "{s}");
            }
        }
        assert_eq!(Status::ALL.iter().filter(|s| Status::parse(s.as_str()) == Some(**s)).count(), 9);
    }
}
