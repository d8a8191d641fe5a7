//! Every error the API answers with, as typed JSON bodies documented in the spec.

use poem::http::StatusCode;
use poem::Response;
use poem_openapi::payload::Json;
use poem_openapi::ApiResponse;

use crate::core::validation::ValidationErrors;
pub use crate::http::{ErrorBody, FieldProblem, ValidationBody};
use crate::engine::EngineError;
use crate::engine::StoreError;

#[derive(Debug, ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum ApiError {
    /// The request could not be parsed (malformed JSON, wrong type, bad parameter).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid API token was presented.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The token lacks the scope this operation needs.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such deployment.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The deployment's status does not allow this now.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The body's `Content-Type` is missing or not JSON.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// The request broke validation rules; nothing was stored.
    #[oai(status = 422)]
    Invalid(Json<ValidationBody>),
    /// An unexpected failure; nothing was changed unless the response said so.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// A dependency (database, Proxmox) is unavailable; retrying later is safe.
    /// Proxmox VE refused or failed the call (its words); nothing happened.
    #[oai(status = 502)]
    BadGateway(Json<ErrorBody>),
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

fn body(error: &str, message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody { error: error.into(), message: message.into() })
}

pub fn bad_request(err: poem::Error) -> ApiError {
    ApiError::BadRequest(body("bad_request", err.to_string()))
}

impl ApiError {
    pub fn unauthorized() -> Self {
        ApiError::Unauthorized(body("unauthorized", "a valid API token is required: send `Authorization: Bearer <token>`"))
    }

    pub fn forbidden(scope: &str) -> Self {
        ApiError::Forbidden(body("forbidden", format!("this token lacks the `{scope}` scope needed for this operation")))
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(body("not_found", format!("no deployment {what:?}")))
    }

    pub fn invalid(errs: &ValidationErrors) -> Self {
        ApiError::Invalid(Json(ValidationBody::of(errs)))
    }

    pub fn invalid_field(field: &str, rule: &'static str, message: impl Into<String>) -> Self {
        Self::invalid(&ValidationErrors(vec![crate::core::validation::FieldError::new(field, rule, message)]))
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(errs) => ApiError::invalid(&errs),
            EngineError::NotFound(what) => ApiError::not_found(&what),
            EngineError::Conflict(msg) => ApiError::Conflict(body("conflict", msg)),
            EngineError::Illegal(t) => ApiError::Conflict(body("conflict", t.to_string())),
            EngineError::Store(StoreError::Stale) => {
                ApiError::Conflict(body("conflict", "the deployment changed while this request ran; retry"))
            }
            EngineError::Store(StoreError::Unavailable(m)) => {
                tracing::error!(error = %m, "database unavailable");
                ApiError::Unavailable(body("unavailable", "the database is unavailable; retrying later is safe"))
            }
            EngineError::ReadOnly(why) => ApiError::Unavailable(body("read_only", format!("the agent is read-only and changed nothing: {why}"))),
            EngineError::Proxmox(why) => ApiError::BadGateway(body("proxmox", format!("Proxmox VE did not do it: {why}"))),
            EngineError::Store(e) => {
                tracing::error!(error = %e, "store failure");
                ApiError::Internal(body("internal", "an internal error occurred; see the agent's log"))
            }
        }
    }
}

/// Turns any error that escaped a handler (auth, parameter parsing, unknown route) into the JSON error body.
pub async fn json_error(err: poem::Error) -> Response {
    let status = err.status();
    let resp = err.into_response();
    let is_json = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let text = resp.into_body().into_string().await.unwrap_or_default();
    let (code, message) = match status {
        StatusCode::UNAUTHORIZED => ("unauthorized", "a valid API token is required: send `Authorization: Bearer <token>`".to_string()),
        StatusCode::FORBIDDEN => ("forbidden", text),
        StatusCode::NOT_FOUND => ("not_found", if text.is_empty() { "no such resource".into() } else { text }),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "this method is not allowed on this path".into()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "send the body as JSON with `Content-Type: application/json`".into()),
        s if s.is_server_error() => ("internal", "an internal error occurred; see the agent's log".into()),
        _ => ("bad_request", text),
    };
    crate::http::error(status, code, message)
}
