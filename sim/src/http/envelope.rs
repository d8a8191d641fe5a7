//! PVE's response shapes: `{"data": …}` on success, and errors with the message as the reason
//! phrase, `message` in the body and `errors` for parameter problems.

use std::collections::BTreeMap;

use poem::http::StatusCode;
use poem::Response;
use serde_json::{json, Value};

/// Everything a request can fail with, each rendered the way pveproxy renders it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 400 `Parameter verification failed.` with per-parameter errors.
    #[error("Parameter verification failed.")]
    Params(BTreeMap<String, String>),
    /// 401 (bad or missing credentials, bad CSRF token).
    #[error("{0}")]
    Unauthorized(String),
    /// 403 `Permission check failed (…)`.
    #[error("{0}")]
    Forbidden(String),
    /// 501 `Method 'GET /x' not implemented` and friends.
    #[error("{0}")]
    NotImplemented(String),
    /// 500: a `die` in the API handler.
    #[error("{0}")]
    Server(String),
    /// Any other status (e.g. 595 from a failed proxy connection to another node).
    #[error("{1}")]
    Status(u16, String),
}

impl ApiError {
    /// A `die "…\n"` from a handler.
    pub fn server(msg: impl Into<String>) -> Self {
        ApiError::Server(msg.into())
    }

    /// One parameter error, like `raise_param_exc({ key => msg })`.
    pub fn param(key: &str, msg: impl Into<String>) -> Self {
        ApiError::Params(BTreeMap::from([(key.to_string(), msg.into())]))
    }

    fn status(&self) -> u16 {
        match self {
            ApiError::Params(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotImplemented(_) => 501,
            ApiError::Server(_) => 500,
            ApiError::Status(code, _) => *code,
        }
    }

    /// The message as PVE keeps it (dies end in a newline).
    fn message(&self) -> String {
        match self {
            ApiError::Params(_) => "Parameter verification failed.\n".to_string(),
            ApiError::NotImplemented(m) | ApiError::Status(_, m) => m.clone(),
            ApiError::Unauthorized(m) | ApiError::Forbidden(m) | ApiError::Server(m) => {
                if m.ends_with('\n') {
                    m.clone()
                } else {
                    format!("{m}\n")
                }
            }
        }
    }

    /// The HTTP response pveproxy would send.
    pub fn into_response(self) -> Response {
        let status = self.status();
        let message = self.message();
        let body = match &self {
            ApiError::Params(errors) => json!({"data": null, "errors": errors, "message": message}),
            // pveproxy answers auth failures before the formatter runs: no message in the body
            ApiError::Unauthorized(_) => json!({"data": null}),
            _ => json!({"data": null, "message": message}),
        };
        with_reason(json_response(status, &body), &message)
    }
}

/// `{"data": data}` (plus `total` where PVE sets it).
pub fn ok_response(data: Value, total: Option<usize>) -> Response {
    let mut body = json!({ "data": data });
    if let (Some(total), Some(obj)) = (total, body.as_object_mut()) {
        obj.insert("total".to_string(), json!(total));
    }
    json_response(200, &body)
}

/// A JSON body with PVE's content type and caching headers.
pub fn json_response(status: u16, body: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("Content-Type", "application/json;charset=UTF-8")
        .header("Cache-Control", "max-age=0")
        .header("Pragma", "no-cache")
        .header("Server", "pve-api-daemon/3.0")
        .body(body.to_string())
}

/// Puts the first line of `message` into the status line, as pveproxy does.
pub fn with_reason(mut resp: Response, message: &str) -> Response {
    let first = message.lines().next().unwrap_or_default();
    let clean: String = first.chars().filter(|c| *c == '\t' || (*c >= ' ' && *c != '\x7f')).collect();
    if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(clean.into_bytes()) {
        resp.extensions_mut().insert(reason);
    }
    resp
}
