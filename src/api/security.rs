//! Bearer-token authentication for the API, and the scope check each operation makes.

use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::SecurityScheme;

use super::error::ApiError;
use super::ApiState;
use crate::auth::{Principal, Scope};
use crate::core::command::{Actor, Door};

/// `Authorization: Bearer <token>`; tokens have the scopes read, deploy or admin (each includes the ones before).
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_token")]
pub struct TokenAuth(pub Principal);

async fn check_token(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    let state = req.data::<ApiState>().ok_or_else(|| poem::Error::from_status(poem::http::StatusCode::INTERNAL_SERVER_ERROR))?;
    state.tokens.verify(&bearer.token).ok_or_else(|| poem::Error::from_response(poem::IntoResponse::into_response(ApiError::unauthorized())))
}

impl TokenAuth {
    /// The caller as an actor of the API door, if the token has `scope`.
    pub fn require(&self, scope: Scope) -> Result<Actor, ApiError> {
        if self.0.allows(scope) {
            Ok(Actor { name: self.0.name.clone(), door: Door::Api })
        } else {
            Err(ApiError::forbidden(scope.as_str()))
        }
    }
}
