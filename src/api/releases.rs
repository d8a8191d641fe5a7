//! `/deployments/{id}/env` (environment variables: names readable, values write-only) and
//! `/deployments/{id}/releases` (what was deployed, step timings, outcome).

use std::collections::BTreeMap;

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};

use super::error::ApiError;
use super::payload::JsonObject;
use super::security::TokenAuth;
use super::wire::rfc3339;
use super::ApiState;
use crate::auth::Scope;
use crate::core::release::{EnvName, EnvValue};
use crate::core::validation::{FieldError, ValidationErrors};

#[derive(Tags)]
enum ApiTags {
    /// A deployment's environment and releases.
    Releases,
}

pub struct ReleasesApi {
    pub state: ApiState,
}

/// The whole environment of a deployment; replaces what was set before.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct EnvRequest {
    /// Variable name → value. Names match `[A-Za-z_][A-Za-z0-9_]*`; values are single lines (no NUL, CR or LF),
    /// at most 32 KiB, taken literally. At most 200 variables.
    pub vars: BTreeMap<String, String>,
}

/// Names only: values are never returned.
#[derive(Debug, Clone, Object)]
pub struct EnvNames {
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ReleaseView {
    /// `<time>-<sha7>`, the directory under `/srv/<name>/releases/` on the guest.
    pub id: String,
    pub commit: String,
    /// deploying, active, failed or superseded.
    pub status: String,
    /// What asked for it: deploy (the first, after provisioning), push, api, discord, schedule, cli, rollback,
    /// or redeploy (the agent itself, or a release recorded before triggers named their door).
    pub trigger: String,
    /// The step it is at, or ended at.
    pub step: String,
    /// Milliseconds per step, in order; a failed release's last entry is the step it failed in.
    pub timings: Vec<StepTiming>,
    pub error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, Object)]
pub struct StepTiming {
    pub step: String,
    pub ms: u64,
}

#[OpenApi(tag = "ApiTags::Releases")]
impl ReleasesApi {
    /// The names of a deployment's environment variables (values are write-only).
    #[oai(path = "/deployments/:id/env", method = "get", operation_id = "get_env")]
    async fn get_env(&self, auth: TokenAuth, id: Path<String>) -> Result<Json<EnvNames>, ApiError> {
        auth.require(Scope::Read)?;
        Ok(Json(EnvNames { names: self.state.engine.env_names(&id.0).await? }))
    }

    /// Set a deployment's environment variables (all of them; values are sealed at rest, written to the
    /// guest with mode 0640, never logged or returned). They take effect at the next deploy.
    #[oai(path = "/deployments/:id/env", method = "put", operation_id = "put_env")]
    async fn put_env(&self, auth: TokenAuth, id: Path<String>, body: JsonObject<EnvRequest>) -> Result<Json<EnvNames>, ApiError> {
        let actor = auth.require(Scope::Deploy)?;
        let mut errs = ValidationErrors::default();
        let mut vars = Vec::new();
        for key in body.fields.keys() {
            if key != "vars" {
                errs.0.push(FieldError::new(key.clone(), "unknown_field", "is not a field of this request (expected only `vars`)"));
            }
        }
        match body.fields.get("vars") {
            None => errs.0.push(FieldError::new("vars", "required", "is required: an object of name → value")),
            Some(serde_json::Value::Object(m)) => {
                if m.len() > 200 {
                    errs.0.push(FieldError::new("vars", "max_items", "must hold at most 200 variables"));
                }
                for (k, v) in m {
                    match (EnvName::parse(k), v.as_str()) {
                        (Err(e), _) => errs.0.push(e),
                        (Ok(_), None) => errs.0.push(FieldError::new(format!("env.{k}"), "type", "must be a string")),
                        (Ok(name), Some(s)) => match EnvValue::parse(&name, s.to_string()) {
                            Ok(value) => vars.push((name, value)),
                            Err(e) => errs.0.push(e),
                        },
                    }
                }
            }
            Some(_) => errs.0.push(FieldError::new("vars", "type", "must be an object of name → value")),
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid(&errs));
        }
        Ok(Json(EnvNames { names: self.state.engine.set_env(&id.0, vars, &actor).await? }))
    }

    /// A deployment's releases, newest first: commit, status, step timings, error.
    #[oai(path = "/deployments/:id/releases", method = "get", operation_id = "list_releases")]
    async fn releases(&self, auth: TokenAuth, id: Path<String>) -> Result<Json<Vec<ReleaseView>>, ApiError> {
        auth.require(Scope::Read)?;
        let engine = &self.state.engine;
        let d = engine.find(&id.0).await?;
        let rs = engine.releases(&d.id, 100).await?;
        Ok(Json(
            rs.into_iter()
                .map(|r| ReleaseView {
                    id: r.id.to_string(),
                    commit: r.commit,
                    status: r.status.as_str().into(),
                    trigger: r.trigger.as_str().into(),
                    step: r.step.as_str().into(),
                    timings: r.timings.into_iter().map(|(step, ms)| StepTiming { step, ms }).collect(),
                    error: r.error,
                    created_at: rfc3339(r.created_at),
                    finished_at: r.finished_at.map(rfc3339),
                })
                .collect(),
        ))
    }
}
