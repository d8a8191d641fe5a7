//! Access reads the agent makes about itself: its effective privileges per path (`GET /access/permissions`),
//! the roles (`GET /access/roles`) and, where the token may read it, its own token entry.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use super::client::{seg, PveClient};
use super::error::PveError;
use super::form::Form;
use super::lenient;

/// One role of `GET /access/roles`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Role {
    pub roleid: String,
    #[serde(default, deserialize_with = "lenient::comma_list")]
    pub privs: Vec<String>,
}

impl PveClient {
    /// `GET /access/permissions?path=…`: the privileges this token holds on `path` (privilege separation and
    /// pool roles applied by PVE).
    pub async fn permissions_on(&self, path: &str) -> Result<BTreeSet<String>, PveError> {
        let v: Value = self.get("/access/permissions", Form::new().set("path", path), "permissions").await?;
        let map = v.as_object().ok_or_else(|| PveError::decode("permissions", format!("expected an object, got {v}")))?;
        // PVE answers `{ "<path>": { "<privilege>": 0|1 } }` (the value is the propagate flag).
        Ok(map.values().filter_map(Value::as_object).flat_map(|privs| privs.keys().cloned()).collect())
    }

    /// `GET /access/roles`
    pub async fn roles(&self) -> Result<BTreeMap<String, Vec<String>>, PveError> {
        let roles: Vec<Role> = self.get("/access/roles", Form::new(), "roles").await?;
        Ok(roles.into_iter().map(|r| (r.roleid, r.privs)).collect())
    }

    /// `GET /access/users/{userid}/token/{tokenid}`: whether the token is privilege-separated. PVE lets a token
    /// read this only with `User.Modify` (a well-separated token cannot): `Forbidden` then.
    pub async fn token_privsep(&self, userid: &str, tokenid: &str) -> Result<bool, PveError> {
        let v: Value = self.get(&format!("/access/users/{}/token/{}", seg(userid), seg(tokenid)), Form::new(), "token").await?;
        Ok(v.get("privsep").and_then(lenient::u64_of).is_none_or(|p| p != 0))
    }
}
