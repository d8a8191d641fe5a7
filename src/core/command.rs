//! What every front door may ask for, and who asked: the one command vocabulary of the core.

use std::fmt;

use crate::core::spelling::string_enum;
use crate::core::status::Status;

string_enum! {
    /// The front door a request came through; recorded in the audit log.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Door {
        Api = "api",
        Discord = "discord",
        Webhook = "webhook",
        Schedule = "schedule",
        Cli = "cli",
        System = "system",
    }
}

/// Who asked, through which door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub door: Door,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} via {}", self.name, self.door.as_str())
    }
}

string_enum! {
    /// An action on an existing deployment.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Action {
        Start = "start",
        Stop = "stop",
        Redeploy = "redeploy",
        Rollback = "rollback",
        Destroy = "destroy",
    }
}

impl Action {
    /// Whether a deployment in `status` accepts this action; `Err` says why not, in words a person understands.
    pub fn check(self, status: Status, has_guest: bool) -> Result<(), String> {
        use Status::*;
        let ok = match self {
            Action::Start => status == Stopped,
            Action::Stop => status == Running,
            // A failed deployment without a guest (its provisioning failed, or its guest was lost) is
            // provisioned again by a redeploy.
            Action::Redeploy => (has_guest && matches!(status, Running | Stopped | Failed)) || (!has_guest && status == Failed),
            Action::Rollback => has_guest && matches!(status, Running | Stopped | Failed),
            Action::Destroy => status != Destroyed,
        };
        if ok {
            Ok(())
        } else if !has_guest && matches!(self, Action::Redeploy | Action::Rollback) {
            Err(format!("cannot {} a deployment that has no guest yet (status {status})", self.as_str()))
        } else {
            Err(format!("cannot {} a deployment whose status is {status}", self.as_str()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_check_the_status() {
        assert!(Action::Start.check(Status::Stopped, true).is_ok());
        assert!(Action::Start.check(Status::Running, true).is_err());
        assert!(Action::Stop.check(Status::Pending, false).unwrap_err().contains("pending"));
        assert!(Action::Redeploy.check(Status::Running, false).unwrap_err().contains("no guest"));
        assert!(Action::Redeploy.check(Status::Failed, false).is_ok(), "provisioned again");
        assert!(Action::Rollback.check(Status::Failed, false).is_err());
        assert!(Action::Destroy.check(Status::Destroying, false).is_ok());
        assert!(Action::Destroy.check(Status::Destroyed, false).is_err());
    }
}
