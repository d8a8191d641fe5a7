//! What every HTTP door answers an error with: the JSON bodies (`ErrorBody`, and `ValidationBody` for a 422 naming
//! every wrong field), typed for the OpenAPI document and as plain responses for the endpoints outside it (GitHub
//! webhooks, Discord). A leaf: the doors share it without importing each other; `server::routes` composes them.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::Object;

use crate::core::validation::ValidationErrors;

/// The body of every error except validation failures.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ErrorBody {
    /// A stable code: bad_request, unauthorized, forbidden, not_found, conflict, unavailable, proxmox_timeout (a 503:
    /// Proxmox VE did not answer the agent in time), internal.
    pub error: String,
    /// What went wrong and what to do, in words.
    pub message: String,
}

/// One field that broke one rule.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct FieldProblem {
    /// The request field, as named in the request body or query.
    pub field: String,
    /// A stable rule code, e.g. `required`, `range`, `dns_label`, `unique`.
    pub rule: String,
    /// The rule in words.
    pub message: String,
}

/// The body of a 422: every wrong field.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ValidationBody {
    /// Always `validation_failed`.
    pub error: String,
    pub message: String,
    pub fields: Vec<FieldProblem>,
}

impl ValidationBody {
    /// The body of a 422 for these errors.
    pub fn of(errs: &ValidationErrors) -> Self {
        ValidationBody {
            error: "validation_failed".into(),
            message: errs.to_string(),
            fields: errs.0.iter().map(|e| FieldProblem { field: e.field.clone(), rule: e.rule.into(), message: e.message.clone() }).collect(),
        }
    }
}

/// An error answer: `status` with an `ErrorBody` of this code and message.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let mut r = Json(ErrorBody { error: code.into(), message: message.into() }).into_response();
    r.set_status(status);
    r
}

/// A 422 naming every wrong field.
pub fn invalid(errs: &ValidationErrors) -> Response {
    let mut r = Json(ValidationBody::of(errs)).into_response();
    r.set_status(StatusCode::UNPROCESSABLE_ENTITY);
    r
}
