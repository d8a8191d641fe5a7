//! The HTTPS front door: one catch-all endpoint that authenticates, finds the schema method,
//! checks permissions, "proxies" to the node, validates parameters and dispatches — in pveproxy's
//! order — plus the non-PVE control endpoint `/_sim/faults`.

pub mod envelope;
pub mod params;

use std::sync::Arc;
use std::time::Duration;

use poem::{Endpoint, Request, Response};
use serde_json::{json, Map, Value};

use crate::auth::{check_permissions, Auth, Identity};
use crate::cluster::{ApiCall, Cluster};
use crate::faults::{DropWhen, FaultSet, Faults};
use crate::schema::validate::validate_params;
use crate::schema::Schema;
use envelope::{json_response, ok_response, with_reason, ApiError};
use params::{decode_body, decode_multipart, decode_urlencoded, Params};

/// pveproxy's `limit_max_post`.
const MAX_POST: usize = 64 * 1024;
/// Largest file `…/storage/{storage}/upload` takes here.
const MAX_UPLOAD: usize = 512 * 1024 * 1024;

/// The panic payload a dropped connection unwinds with.
pub const DROPPED_CONNECTION: &str = "pvedeploy-sim: connection dropped (fault)";

/// Closes the client's connection without any HTTP response (the `drop_connection` fault) by
/// unwinding the handler future with `resume_unwind` (which, unlike `panic!`, does not run the
/// panic hook, so nothing is printed).
///
/// Why this closes the connection (poem 3.1 `src/server.rs`, hyper 1 HTTP/1): the sim serves
/// `endpoint()` directly with `poem::Server::run_with_graceful_shutdown` — no `CatchPanic`
/// middleware that would turn the unwind into a 500. hyper's HTTP/1 dispatcher polls the
/// handler future inside the connection future, so the unwind leaves `serve_connection`;
/// poem's per-connection task wraps that in `catch_unwind` only to decrement its
/// alive-connection counter, then drops the connection future — and with it the TLS/TCP stream,
/// without a response and without TLS close_notify — and re-raises the payload with
/// `resume_unwind`, which tokio catches as the (detached) task's result. Other connections and
/// the server keep running. Needs `panic = "unwind"` (the default; the workspace does not set
/// `abort`).
fn drop_connection() -> ! {
    std::panic::resume_unwind(Box::new(DROPPED_CONNECTION))
}

fn is_upload(method: &str, rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    method == "POST" && parts.len() == 6 && parts[1] == "nodes" && parts[3] == "storage" && parts[5] == "upload"
}

/// Everything a request needs.
pub struct ApiServer {
    pub schema: Schema,
    pub auth: Auth,
    pub cluster: Arc<Cluster>,
    pub faults: Faults,
}

/// The poem endpoint serving `srv`.
pub fn endpoint(srv: Arc<ApiServer>) -> impl Endpoint<Output = Response> {
    poem::endpoint::make(move |req: Request| {
        let srv = srv.clone();
        async move { srv.handle(req).await }
    })
}

impl ApiServer {
    async fn handle(&self, mut req: Request) -> Response {
        let raw_path = req.uri().path().to_string();
        let path = percent_encoding::percent_decode_str(&raw_path).decode_utf8_lossy().to_string();
        let method = req.method().as_str().to_string();
        let body = match req.take_body().into_bytes().await {
            Ok(b) => b,
            Err(e) => return ApiError::Status(400, format!("unable to read request body - {e}")).into_response(),
        };
        if let Some(rest) = path.strip_prefix("/_sim/") {
            return self.control(&req, &method, rest, &body);
        }
        let Some(rel) = path.strip_prefix("/api2/json") else {
            return ApiError::NotImplemented("no such uri".to_string()).into_response();
        };
        let rel = if rel.is_empty() { "/" } else { rel };
        let delay = self.faults.latency_for(rel);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        // Every call a client sent to a known method is counted, whatever happens to it next.
        if let Some(found) = self.schema.find(&method, rel) {
            self.cluster.count_call(&method, &found.def.path);
        }
        // `drop_connection` fault: decided (and counted down) once per request
        let drop_when = self.faults.take_connection_drop(&method, rel);
        if drop_when == Some(DropWhen::Before) {
            drop_connection();
        }
        // `fail_call` fault: answered as the proxy or daemon in front of the handler would, not run.
        if let Some(answer) = self.faults.take_call_failure(&method, rel) {
            return ApiError::Status(answer.status, answer.message).into_response();
        }
        let resp = match self.api(&req, &method, rel, &body).await {
            Ok(resp) => resp,
            Err(err) => {
                if matches!(err, ApiError::Unauthorized(_)) {
                    Cluster::pause(self.cluster.timing.unauthorized_delay_secs).await;
                }
                err.into_response()
            }
        };
        if drop_when == Some(DropWhen::After) {
            // the call ran (a task may have been forked); its answer is never sent
            drop(resp);
            drop_connection();
        }
        resp
    }

    fn authenticate(&self, req: &Request, method: &str, rel: &str) -> Result<Option<Identity>, ApiError> {
        let public = (rel == "/access/ticket" && (method == "GET" || method == "POST")) || (rel == "/access/domains" && method == "GET");
        if public {
            return Ok(None);
        }
        if let Some(header) = req.headers().get("Authorization").and_then(|h| h.to_str().ok()) {
            if header.trim_start().starts_with("PVEAPIToken") {
                return self.auth.verify_token(header).map(Some);
            }
        }
        let ticket = req
            .headers()
            .get_all("Cookie")
            .iter()
            .filter_map(|h| h.to_str().ok())
            .flat_map(|h| h.split(';'))
            .filter_map(|c| c.trim().strip_prefix("PVEAuthCookie="))
            .map(|t| percent_encoding::percent_decode_str(t).decode_utf8_lossy().to_string())
            .next()
            .ok_or_else(|| ApiError::Unauthorized("No ticket".to_string()))?;
        let ident = self.auth.verify_ticket(&ticket)?;
        // like pveproxy: no CSRF check for uploads (the schema's permission check still runs)
        if method != "GET" && !is_upload(method, rel) {
            let csrf = req.headers().get("CSRFPreventionToken").and_then(|h| h.to_str().ok());
            self.auth.verify_csrf(&ident.userid, csrf)?;
        }
        Ok(Some(ident))
    }

    async fn api(&self, req: &Request, method: &str, rel: &str, body: &[u8]) -> Result<Response, ApiError> {
        let ident = self.authenticate(req, method, rel)?;
        let mut raw = Map::new();
        if let Some(q) = req.uri().query() {
            decode_urlencoded(q, &mut raw);
        }
        let mut upload = None;
        if !body.is_empty() {
            if method != "POST" && method != "PUT" {
                return Err(ApiError::NotImplemented(format!("Unexpected content for method '{method}'")));
            }
            let ct = req.headers().get("Content-Type").and_then(|h| h.to_str().ok()).unwrap_or_default();
            let multipart = ct.trim_start().to_ascii_lowercase().starts_with("multipart/form-data");
            if multipart && is_upload(method, rel) {
                if body.len() > MAX_UPLOAD {
                    return Err(ApiError::NotImplemented("for data too large".to_string()));
                }
                upload = decode_multipart(ct, body, &mut raw)?;
            } else {
                if body.len() > MAX_POST {
                    return Err(ApiError::NotImplemented("for data too large".to_string()));
                }
                decode_body(Some(ct).filter(|c| !c.is_empty()), body, &mut raw)?;
            }
        }
        let Some(found) = self.schema.find(method, rel) else {
            return Err(ApiError::NotImplemented(format!("Method '{method} {rel}' not implemented")));
        };
        for (k, v) in &found.path_params {
            match raw.get(k) {
                Some(existing) if crate::schema::validate::scalar_text(existing) != *v => {
                    return Err(ApiError::param(k, "duplicate parameter (already defined in URI) with conflicting values!"));
                }
                _ => {
                    raw.insert(k.clone(), Value::String(v.clone()));
                }
            }
        }
        let def = found.def;
        if method == "POST" && def.path == "/access/ticket" {
            validate_params(&def, &raw).map_err(ApiError::Params)?;
            let p = Params(raw);
            let data = self.auth.login(&p.need("username")?, p.str("realm").as_deref(), &p.need("password")?)?;
            return Ok(ok_response(data, None));
        }
        let Some(ident) = ident else {
            validate_params(&def, &raw).map_err(ApiError::Params)?;
            return Ok(ok_response(Value::Null, None));
        };
        if ident.tokenid.is_some() && !def.allowtoken {
            return Err(ApiError::Forbidden(format!("Permission check failed (URI '{rel}' not available with API token, need proper ticket.)")));
        }
        if let Some(check) = &def.check {
            check_permissions(check, &ident, &raw)?;
        }
        if def.proxyto.as_deref() == Some("node") {
            let node = raw.get("node").map(crate::schema::validate::scalar_text).unwrap_or_default();
            if node != "localhost" {
                if !self.cluster.has_node(&node) {
                    return Err(ApiError::server(format!(
                        "hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"
                    )));
                }
                if self.faults.node_offline(&node) {
                    return Err(ApiError::Status(595, "No route to host".to_string()));
                }
            }
        }
        validate_params(&def, &raw).map_err(ApiError::Params)?;
        // `no_quorum` fault. On an inquorate node pmxcfs (/etc/pve) is read-only: reads work,
        // writes fail. The handlers that create/start/clone/migrate guests call
        // `PVE::Cluster::check_cfs_quorum` (pve-cluster src/PVE/Cluster.pm), which dies with
        // "cluster not ready - no quorum?\n"; pve-manager PVE/HTTPServer.pm `rest_handler`
        // answers a plain `die` with 500 and the message. The sim answers every write that way
        // (after authentication, permission and parameter checks, as the die happens in the
        // handler); `/access/ticket` returned above and is not affected.
        if matches!(method, "POST" | "PUT" | "DELETE") && self.faults.no_quorum() {
            return Err(ApiError::server("cluster not ready - no quorum?"));
        }
        let call = ApiCall { method: method.to_string(), path: def.path.clone(), params: Params(raw), ident, upload };
        let mutating = call.method != "GET";
        let reply = self.cluster.dispatch(call).await;
        if mutating {
            // A persistent simulator has the change on disk before the client hears of it.
            self.cluster.save().await;
        }
        let reply = reply?;
        Ok(ok_response(reply.data, reply.total))
    }

    /// `/_sim/faults`: GET shows, POST adds (JSON `FaultSet`), DELETE clears. Admin token only.
    fn control(&self, req: &Request, method: &str, rest: &str, body: &[u8]) -> Response {
        let authz = req.headers().get("Authorization").and_then(|h| h.to_str().ok());
        if !self.auth.is_admin_header(authz) {
            return ApiError::Unauthorized("the simulator's admin token is required".to_string()).into_response();
        }
        if rest.trim_end_matches('/') != "faults" {
            return with_reason(json_response(404, &json!({"data": null})), "no such simulator control endpoint");
        }
        match method {
            "GET" => ok_response(serde_json::to_value(self.faults.snapshot()).unwrap_or(Value::Null), None),
            "DELETE" => {
                self.faults.clear();
                ok_response(Value::Null, None)
            }
            "POST" | "PUT" => match serde_json::from_slice::<FaultSet>(body) {
                Ok(set) => match self.faults.merge(set) {
                    Ok(()) => ok_response(serde_json::to_value(self.faults.snapshot()).unwrap_or(Value::Null), None),
                    Err(e) => ApiError::Status(400, e.to_string()).into_response(),
                },
                Err(e) => ApiError::Status(400, format!("invalid fault set: {e}")).into_response(),
            },
            _ => ApiError::NotImplemented(format!("Method '{method} /_sim/{rest}' not implemented")).into_response(),
        }
    }
}

/// How long the server waits for open connections at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
