//! What the doors read: deployments with their history, logs, releases, figures, the audit trail and webhook
//! deliveries, answered from the store as `EngineError`s. A door reads through here, never from the store.

use std::sync::Arc;

use super::{Engine, EngineError};
use crate::core::audit::AuditEntry;
use crate::core::delivery::{DeliveryFilter, DeliveryRecord};
use crate::core::deployment::{Deployment, DeploymentId};
use crate::core::log::LogLine;
use crate::core::release::Release;
use crate::core::status::Event;
use crate::core::webhook::DeliveryId;
use crate::store::deployments::Stats;

impl Engine {
    /// A deployment by id, `None` when there is none.
    pub async fn deployment(&self, id: &DeploymentId) -> Result<Option<Deployment>, EngineError> {
        Ok(self.inner.store.get_deployment(id).await?)
    }

    /// A deployment by id with its recent status changes (one read).
    pub async fn deployment_with_events(&self, id: &DeploymentId) -> Result<Option<Arc<(Deployment, Vec<Event>)>>, EngineError> {
        Ok(self.inner.store.get_deployment_with_events(id).await?)
    }

    /// Log lines after cursor `after` (exclusive), oldest first, at most `limit`.
    pub async fn read_log(&self, id: &DeploymentId, after: i64, limit: u32) -> Result<Vec<LogLine>, EngineError> {
        Ok(self.inner.store.read_log(id, after, limit).await?)
    }

    /// The newest `n` log lines, oldest first.
    pub async fn tail_log(&self, id: &DeploymentId, n: u32) -> Result<Vec<LogLine>, EngineError> {
        Ok(self.inner.store.tail_log(id, n).await?)
    }

    /// A deployment's newest releases, newest first, at most `limit`.
    pub async fn releases(&self, id: &DeploymentId, limit: u32) -> Result<Vec<Release>, EngineError> {
        Ok(self.inner.store.releases(id, limit).await?)
    }

    /// Deployments per status and the deploy figures (`/status`, `/metrics`).
    pub async fn deployment_stats(&self) -> Result<Stats, EngineError> {
        Ok(self.inner.store.deployment_stats().await?)
    }

    /// The audit trail, newest first.
    pub async fn audit_entries(&self, limit: u32, offset: u32) -> Result<Vec<AuditEntry>, EngineError> {
        Ok(self.inner.store.audit_entries(limit, offset).await?)
    }

    /// Whether the database answers.
    pub async fn database_answers(&self) -> bool {
        self.inner.store.ping().await
    }

    /// A page of webhook deliveries matching `filter`, newest first, and how many match in all.
    pub async fn deliveries(&self, filter: &DeliveryFilter, limit: u32, offset: u32) -> Result<(Vec<DeliveryRecord>, u64), EngineError> {
        Ok(self.inner.store.list_deliveries(filter, limit, offset).await?)
    }

    /// One webhook delivery by its GUID.
    pub async fn delivery(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>, EngineError> {
        Ok(self.inner.store.get_delivery(id).await?)
    }
}
