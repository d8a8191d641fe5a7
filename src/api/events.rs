//! `/events`: every deployment's status changes as one live Server-Sent Events stream (the dashboard's live view).

use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use poem_openapi::payload::EventStream;
use poem_openapi::{Object, OpenApi, Tags};
use tokio::sync::broadcast::error::RecvError;

use super::error::ApiError;
use super::security::TokenAuth;
use super::ApiState;
use crate::auth::Scope;
use crate::engine::Event;

#[derive(Tags)]
enum ApiTags {
    /// Live changes.
    Events,
}

pub struct EventsApi {
    pub state: ApiState,
}

/// One event of the stream: a status change, or `resync` when changes were missed (read the list again).
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ChangeEvent {
    /// `status` or `resync`.
    pub kind: String,
    /// The deployment's id (`status` only).
    pub deployment: Option<String>,
    /// Its new status (`status` only).
    pub status: Option<String>,
}

#[OpenApi(tag = "ApiTags::Events")]
impl EventsApi {
    /// Status changes of all deployments as they happen: one `status` event each (JSON: `kind`, `deployment`,
    /// `status`), `resync` when this reader fell behind and missed some. Open until the client leaves.
    #[oai(path = "/events", method = "get", operation_id = "events")]
    async fn events(&self, auth: TokenAuth) -> Result<EventStream<BoxStream<'static, ChangeEvent>>, ApiError> {
        auth.require(Scope::Read)?;
        let rx = self.state.engine.bus().subscribe();
        let changes = futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                let e = match rx.recv().await {
                    Ok(Event::Status { id, status }) => {
                        ChangeEvent { kind: "status".into(), deployment: Some(id.to_string()), status: Some(status.as_str().into()) }
                    }
                    Ok(Event::Log(_)) => continue,
                    Err(RecvError::Lagged(_)) => ChangeEvent { kind: "resync".into(), deployment: None, status: None },
                    Err(RecvError::Closed) => return None,
                };
                return Some((e, rx));
            }
        });
        Ok(EventStream::new(changes.boxed())
            .keep_alive(Duration::from_secs(15))
            .to_event(|e| poem::web::sse::Event::message(serde_json::to_string(&Wire::from(&e)).unwrap_or_default()).event_type(e.kind.clone())))
    }
}

/// The SSE data of one event.
#[derive(serde::Serialize)]
struct Wire<'a> {
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
}

impl<'a> From<&'a ChangeEvent> for Wire<'a> {
    fn from(e: &'a ChangeEvent) -> Self {
        Wire { kind: &e.kind, deployment: e.deployment.as_deref(), status: e.status.as_deref() }
    }
}
