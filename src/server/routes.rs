//! Every HTTP route, composed in one place: the HTTP API with the dashboard (`api`), the GitHub webhook endpoint
//! (`webhooks`) and the Discord interactions endpoint (`discord`), each door with its own state, under one layer
//! that counts every request (`/metrics`) and names the allowed methods on a 405. The doors never import each other.

use std::sync::Arc;
use std::time::Instant;

use poem::{Endpoint, EndpointExt, IntoResponse, Response};

use crate::api::ApiState;
use crate::discord::DiscordDoor;
use crate::webhooks::WebhookDoor;

/// The doors that answer HTTP, each with its state.
#[derive(Clone)]
pub struct Doors {
    pub api: ApiState,
    /// `POST /webhooks/github`.
    pub webhooks: WebhookDoor,
    /// `POST /discord/interactions`.
    pub discord: DiscordDoor,
}

/// All routes of the agent.
pub fn all(doors: Doors) -> impl Endpoint {
    let (routes, allowed) = crate::api::routes(&doors.api);
    let allowed = Arc::new(allowed);
    let metrics = doors.api.metrics.clone();
    routes
        .at(crate::webhooks::PATH, poem::post(crate::webhooks::receive).data(doors.webhooks))
        .at(crate::discord::PATH, poem::post(crate::discord::receive).data(doors.discord))
        .around(move |ep, req| {
            let metrics = metrics.clone();
            let allowed = allowed.clone();
            async move {
                let start = Instant::now();
                let method = req.method().to_string();
                let path = req.uri().path().to_owned();
                let mut resp = match ep.call(req).await {
                    Ok(r) => r.into_response(),
                    Err(e) => crate::api::error::json_error(e).await,
                };
                if resp.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED {
                    allowed.set_allow(&path, &mut resp);
                }
                let op = resp.data::<poem_openapi::OperationId>().map(|o| o.0.to_string()).unwrap_or_else(|| "other".into());
                metrics.observe(&method, &op, resp.status().as_u16(), start.elapsed());
                Ok::<Response, poem::Error>(resp)
            }
        })
        .data(doors.api)
}
