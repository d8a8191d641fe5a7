//! The in-process event bus: log lines and status changes, fanned out to live readers (SSE, chat, dashboard).

use tokio::sync::broadcast;

use crate::core::deployment::DeploymentId;
use crate::core::status::Status;
use crate::store::logs::LogLine;

#[derive(Debug, Clone)]
pub enum Event {
    Log(LogLine),
    Status { id: DeploymentId, status: Status },
}

#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Event>,
}

impl Bus {
    pub fn new() -> Self {
        Self { tx: broadcast::channel(1024).0 }
    }

    pub fn publish(&self, e: Event) {
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(e);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}
