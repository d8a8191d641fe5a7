//! Lists of deployments: which deployments a list shows, where a page starts, and a page.

use crate::core::deployment::{Deployment, DeploymentId, Framework};
use crate::core::names::AppNamePrefix;
use crate::core::status::Status;

/// Which deployments a listing shows. Every combination is served by an index (see migration v10).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<Status>,
    pub framework: Option<Framework>,
    /// The start of the name.
    pub name: Option<AppNamePrefix>,
}

/// Where a page of deployments starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PageStart {
    /// The newest.
    #[default]
    First,
    /// Just after (older than) this deployment: a keyset cursor, stable under concurrent inserts
    /// (new deployments sort before it) and as cheap deep in the list as at its start.
    After(DeploymentId),
    /// After skipping this many: a convenience whose cost grows with the offset (the index is walked).
    Offset(u32),
}

/// A page of deployments, newest first.
#[derive(Debug, Clone)]
pub struct DeploymentPage {
    pub items: Vec<Deployment>,
    /// How many match the filter in all (from maintained counters unless a name is given).
    pub total: u64,
    /// Whether more deployments follow the last one here.
    pub more: bool,
}
