//! The HTTP door: `/api/v1` (poem-openapi, spec and Swagger UI), error mapping, request metrics.

pub mod backups;
pub mod deployments;
pub mod error;
pub mod events;
pub mod export;
pub mod limits;
pub mod paging;
pub mod payload;
pub mod releases;
pub mod schedules;
pub mod security;
pub mod serialized;
pub mod snapshots;
pub mod spec;
pub mod system;
pub mod webhooks;
pub mod wire;

use std::sync::Arc;
use std::time::Instant;

use poem::{EndpointExt, IntoEndpoint, Response, Route};
use poem_openapi::OpenApiService;

use crate::auth::TokenRegistry;
use crate::engine::Engine;
use crate::metrics::Metrics;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub engine: Engine,
    pub exports: crate::engine::export::Exports,
    pub tokens: TokenRegistry,
    pub metrics: Arc<Metrics>,
    pub max_page_size: u32,
    /// Largest request body under `/api/v1` (`[api] max_body_bytes`).
    pub max_body_bytes: usize,
    pub started: Instant,
    pub proxmox: Option<String>,
    /// Cron schedules and deployment expiry.
    pub schedules: crate::engine::schedules::Scheduler,
}

pub const API_PREFIX: &str = "/api/v1";

pub fn service(state: &ApiState) -> OpenApiService<(deployments::DeploymentsApi, system::SystemApi, export::ExportApi, webhooks::WebhooksApi, releases::ReleasesApi, events::EventsApi, schedules::SchedulesApi, snapshots::SnapshotsApi, backups::BackupsApi), ()> {
    OpenApiService::new(
        (
            deployments::DeploymentsApi { state: state.clone() },
            system::SystemApi { state: state.clone() },
            export::ExportApi { state: state.clone() },
            webhooks::WebhooksApi { state: state.clone() },
            releases::ReleasesApi { state: state.clone() },
            events::EventsApi { state: state.clone() },
            schedules::SchedulesApi { state: state.clone() },
            snapshots::SnapshotsApi { state: state.clone() },
            backups::BackupsApi { state: state.clone() },
        ),
        "pvedeploy",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Deploy apps from git onto Proxmox VE. Authenticate with `Authorization: Bearer <token>`.\n\n\
         GitHub webhooks are received at `POST /webhooks/github` (outside `/api/v1`; authenticated by \
         `X-Hub-Signature-256`, not by a token); their deliveries are listed at `/webhooks/deliveries`.",
    )
    .server(API_PREFIX)
}

/// The HTTP door's routes — `/api/v1` (errors as JSON, bodies bounded), its document, `/docs` — with the dashboard
/// and `/health`, and the index of the API's methods per path that a 405 names (`server::routes` composes them with
/// the other doors and needs `ApiState` as request data for the token check).
pub fn routes(state: &ApiState) -> (Route, limits::AllowIndex) {
    let api = service(state);
    let generated = api.spec();
    let facts = spec::Facts { limits: state.engine.limits(), repos: state.engine.repos(), max_page_size: state.max_page_size };
    let (document, missing) = spec::with_rules(&generated, &facts);
    if !missing.is_empty() {
        tracing::warn!(fields = ?missing, "the OpenAPI document lacks fields whose rules it should state");
    }
    // Swagger UI embeds the document it shows: the one served, rules included. The page (1.7 MB, Swagger UI's
    // script inline) is rendered at each request rather than held: kept, it was 3.2 MB of an idle agent's heap
    // for a page a person opens now and then (heaptrack on the API bench's agent, docs/benchmarks.md).
    // The generated document (160 KB) is kept to be found in the page, so a request generates it once, not twice.
    let allowed = limits::AllowIndex::from_spec(&generated);
    let docs_state = state.clone();
    let docs_document = document.clone();
    let docs = Route::new().at(
        "/",
        poem::endpoint::make_sync(move |_| poem::web::Html(service(&docs_state).swagger_ui_html().replacen(&generated, &docs_document, 1))),
    );
    let spec = poem::endpoint::make_sync(move |_| Response::builder().content_type("application/json").body(document.clone()));
    let max_body = state.max_body_bytes;
    let route = crate::web::mount(Route::new())
        .nest(
            API_PREFIX,
            api.into_endpoint().catch_all_error(error::json_error).around(move |ep, req| limits::bounded_body(ep, req, max_body)),
        )
        .at(format!("{API_PREFIX}/openapi.json"), spec)
        .nest("/docs", docs)
        .at("/health", poem::get(poem::endpoint::make_sync(|_| "ok")));
    (route, allowed)
}
