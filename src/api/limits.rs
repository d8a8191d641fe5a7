//! Limits every API request meets before a handler runs: the body is read up to `[api] max_body_bytes` and
//! refused with 413 beyond (before more is read), and a 405 names the methods the path allows (`Allow`, RFC 9110
//! §15.5.6).

use std::collections::BTreeSet;

use poem::http::{header, HeaderValue, StatusCode};
use poem_openapi::payload::Json;
use poem::{Endpoint, IntoResponse, Request, Response};

use super::error::ErrorBody;

fn too_large(max: usize) -> Response {
    let body = ErrorBody {
        error: "payload_too_large".into(),
        message: format!("the request body is larger than {max} bytes (the limit is `[api] max_body_bytes`)"),
    };
    let mut r = Json(body).into_response();
    r.set_status(StatusCode::PAYLOAD_TOO_LARGE);
    r
}

/// Calls `ep` with the body read into memory, at most `max` bytes of it: a declared length over `max` is refused
/// at once, a streamed body as soon as it passes `max`.
pub async fn bounded_body<E: Endpoint>(ep: E, mut req: Request, max: usize) -> poem::Result<Response> {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Ok(too_large(max));
    }
    let body = req.take_body();
    if !body.is_empty() {
        match body.into_bytes_limit(max).await {
            Ok(bytes) => req.set_body(bytes),
            Err(poem::error::ReadBodyError::PayloadTooLarge) => return Ok(too_large(max)),
            Err(e) => return Err(poem::Error::from_string(format!("could not read the request body: {e}"), StatusCode::BAD_REQUEST)),
        }
    }
    ep.call(req).await.map(IntoResponse::into_response)
}

/// The methods each API path allows, from the OpenAPI document the routes are built from.
pub struct AllowIndex {
    /// Path templates under `/api/v1` split into segments (`{id}` matches any one segment), with their methods.
    paths: Vec<(Vec<String>, BTreeSet<String>)>,
}

impl AllowIndex {
    pub fn from_spec(spec_json: &str) -> AllowIndex {
        let spec: serde_json::Value = serde_json::from_str(spec_json).unwrap_or_default();
        let paths = spec["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .iter()
                    .map(|(path, ops)| {
                        let segments = path.trim_matches('/').split('/').map(str::to_owned).collect();
                        let methods = ops.as_object().map(|o| o.keys().map(|m| m.to_ascii_uppercase()).collect()).unwrap_or_default();
                        (segments, methods)
                    })
                    .collect()
            })
            .unwrap_or_default();
        AllowIndex { paths }
    }

    /// The methods allowed on `path` (a request path, `/api/v1/…`), `HEAD` with `GET`; `None` if no route matches.
    pub fn allowed(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix(super::API_PREFIX)?;
        let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
        let mut methods: BTreeSet<String> = BTreeSet::new();
        for (segments, m) in &self.paths {
            let fits = segments.len() == parts.len() && segments.iter().zip(&parts).all(|(s, p)| (s.starts_with('{') && s.ends_with('}') && !p.is_empty()) || s == p);
            if fits {
                methods.extend(m.iter().cloned());
            }
        }
        if methods.contains("GET") {
            methods.insert("HEAD".into());
        }
        (!methods.is_empty()).then(|| methods.into_iter().collect::<Vec<_>>().join(", "))
    }

    pub fn set_allow(&self, path: &str, resp: &mut Response) {
        if let Some(allow) = self.allowed(path).and_then(|a| HeaderValue::from_str(&a).ok()) {
            resp.headers_mut().insert(header::ALLOW, allow);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_the_methods_of_the_matching_template() {
        let spec = r#"{"paths": {"/deployments": {"get": {}, "post": {}}, "/deployments/{id}": {"get": {}, "delete": {}}, "/deployments/{id}/redeploy": {"post": {}}}}"#;
        let index = AllowIndex::from_spec(spec);
        assert_eq!(index.allowed("/api/v1/deployments").as_deref(), Some("GET, HEAD, POST"));
        assert_eq!(index.allowed("/api/v1/deployments/shop").as_deref(), Some("DELETE, GET, HEAD"));
        assert_eq!(index.allowed("/api/v1/deployments/shop/redeploy").as_deref(), Some("POST"));
        assert_eq!(index.allowed("/api/v1/nope"), None);
        assert_eq!(index.allowed("/other"), None);
    }
}
