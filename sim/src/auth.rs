//! Authentication (API tokens, `PVEAuthCookie` tickets, CSRF tokens) and PVE-style permission checks.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::{TokenSpec, UserSpec, ALL_PRIVS};
use crate::http::envelope::ApiError;

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `user@realm`
    pub userid: String,
    /// The token name when authenticated with an API token.
    pub tokenid: Option<String>,
    acl: Vec<(String, Vec<String>)>,
}

impl Identity {
    /// `user@realm!token` for token calls, else `user@realm` (the UPID's user field).
    pub fn authid(&self) -> String {
        match &self.tokenid {
            Some(t) => format!("{}!{}", self.userid, t),
            None => self.userid.clone(),
        }
    }

    /// Internal identity for work the simulator does on its own behalf.
    pub fn root() -> Self {
        Self { userid: "root@pam".into(), tokenid: None, acl: vec![("/".into(), vec![ALL_PRIVS.into()])] }
    }

    /// The privileges on `path`: the most specific ACL entry whose path is `path` or a parent.
    fn privs_on(&self, path: &str) -> Vec<String> {
        self.acl
            .iter()
            .filter(|(prefix, _)| path_covers(prefix, path))
            .max_by_key(|(prefix, _)| prefix.trim_end_matches('/').len())
            .map(|(_, privs)| privs.clone())
            .unwrap_or_default()
    }

    fn has(&self, path: &str, privilege: &str) -> bool {
        self.privs_on(path).iter().any(|p| p == ALL_PRIVS || p == privilege)
    }
}

fn path_covers(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"))
}

/// Credentials known to the simulator and the secret its tickets are signed with.
pub struct Auth {
    tokens: BTreeMap<String, TokenSpec>,
    users: BTreeMap<String, UserSpec>,
    ticket_key: String,
    admin: (String, String),
}

const TICKET_LIFETIME_SECS: u64 = 2 * 3600;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

impl Auth {
    pub fn new(tokens: &[TokenSpec], users: &[UserSpec]) -> Self {
        let admin = tokens
            .iter()
            .find(|t| t.acl.iter().any(|(p, privs)| p.trim_end_matches('/').is_empty() && privs.iter().any(|x| x == ALL_PRIVS)))
            .map(|t| (t.id.clone(), t.secret.clone()))
            .unwrap_or_else(|| ("root@pam!sim-admin".to_string(), crate::config::random_secret()));
        Self {
            tokens: tokens.iter().map(|t| (t.id.clone(), t.clone())).collect(),
            users: users.iter().map(|u| (u.userid.clone(), u.clone())).collect(),
            ticket_key: crate::config::random_secret(),
            admin,
        }
    }

    /// The token that may use the `/_sim` control endpoints.
    pub fn admin_token(&self) -> (String, String) {
        self.admin.clone()
    }

    /// `true` when the header carries the admin token.
    pub fn is_admin_header(&self, authorization: Option<&str>) -> bool {
        let Some(value) = authorization.and_then(token_value) else { return false };
        value.split_once('=').is_some_and(|(id, secret)| id == self.admin.0 && secret == self.admin.1)
    }

    /// `Authorization: PVEAPIToken=user@realm!name=secret`
    pub fn verify_token(&self, header: &str) -> Result<Identity, ApiError> {
        let fail = |m: &str| Err(ApiError::Unauthorized(m.to_string()));
        let Some(value) = token_value(header) else {
            return fail("invalid authorization header");
        };
        let Some((tokenid, secret)) = value.split_once('=') else {
            return fail("no tokenid specified");
        };
        let Some((userid, name)) = tokenid.split_once('!') else {
            return fail(&format!("'{tokenid}' is not a valid token ID"));
        };
        let Some(token) = self.tokens.get(tokenid) else {
            return fail(&format!("no such token '{name}' for user '{userid}'"));
        };
        if token.secret != secret.trim() {
            return fail("invalid token value!");
        }
        Ok(Identity { userid: userid.to_string(), tokenid: Some(name.to_string()), acl: token.acl.clone() })
    }

    /// `POST /access/ticket`
    pub fn login(&self, username: &str, realm: Option<&str>, password: &str) -> Result<Value, ApiError> {
        let userid = match realm {
            Some(r) if !username.contains('@') => format!("{username}@{r}"),
            _ => username.to_string(),
        };
        match self.users.get(&userid) {
            Some(u) if u.password == password => {
                let ticket = self.make_ticket(&userid);
                Ok(json!({
                    "username": userid,
                    "ticket": ticket,
                    "CSRFPreventionToken": self.csrf_token(&userid, now()),
                    "cap": {},
                }))
            }
            _ => Err(ApiError::Unauthorized("authentication failure".to_string())),
        }
    }

    fn sign(&self, data: &str) -> String {
        hex::encode(Sha256::digest(format!("{}:{data}", self.ticket_key).as_bytes()))
    }

    fn make_ticket(&self, userid: &str) -> String {
        let data = format!("PVE:{userid}:{:08X}", now());
        format!("{data}::{}", self.sign(&data))
    }

    fn csrf_token(&self, userid: &str, time: u64) -> String {
        let stamp = format!("{time:08X}");
        let sig = self.sign(&format!("csrf:{stamp}:{userid}"));
        format!("{stamp}:{}", &sig[..43])
    }

    /// Checks a `PVEAuthCookie` ticket.
    pub fn verify_ticket(&self, ticket: &str) -> Result<Identity, ApiError> {
        let invalid = || ApiError::Unauthorized("invalid ticket".to_string());
        let (data, sig) = ticket.split_once("::").ok_or_else(invalid)?;
        if self.sign(data) != sig {
            return Err(invalid());
        }
        let mut parts = data.split(':');
        let (Some("PVE"), Some(userid), Some(stamp)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid());
        };
        let issued = u64::from_str_radix(stamp, 16).map_err(|_| invalid())?;
        if now().saturating_sub(issued) > TICKET_LIFETIME_SECS {
            return Err(ApiError::Unauthorized("ticket expired".to_string()));
        }
        let user = self.users.get(userid).ok_or_else(invalid)?;
        Ok(Identity { userid: userid.to_string(), tokenid: None, acl: user.acl.clone() })
    }

    /// `verify_csrf_prevention_token`
    pub fn verify_csrf(&self, userid: &str, token: Option<&str>) -> Result<(), ApiError> {
        let denied = || ApiError::Unauthorized("Permission denied - invalid csrf token".to_string());
        let token = token.ok_or_else(denied)?;
        let (stamp, _) = token.split_once(':').ok_or_else(denied)?;
        let time = u64::from_str_radix(stamp, 16).map_err(|_| denied())?;
        if self.csrf_token(userid, time) != token || now().saturating_sub(time) > TICKET_LIFETIME_SECS {
            return Err(denied());
        }
        Ok(())
    }
}

fn token_value(header: &str) -> Option<&str> {
    let rest = header.trim().strip_prefix("PVEAPIToken")?;
    rest.strip_prefix('=').or_else(|| rest.strip_prefix(char::is_whitespace)).map(str::trim)
}

/// `raise_perm_exc`
fn perm_exc(what: Option<String>) -> ApiError {
    ApiError::Forbidden(match what {
        Some(w) => format!("Permission check failed ({w})"),
        None => "Permission check failed".to_string(),
    })
}

/// `check_api2_permissions` for the schema's `permissions.check` (`perm`, `and`, `or`;
/// `userid-*` and other forms are treated as passing).
pub fn check_permissions(check: &Value, ident: &Identity, params: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
    if eval_check(check, ident, params, false)? {
        Ok(())
    } else {
        Err(perm_exc(None))
    }
}

fn eval_check(check: &Value, ident: &Identity, params: &serde_json::Map<String, Value>, noerr: bool) -> Result<bool, ApiError> {
    let Some(items) = check.as_array() else { return Ok(true) };
    let Some(test) = items.first().and_then(Value::as_str) else { return Ok(true) };
    match test {
        "and" => {
            for sub in &items[1..] {
                if !eval_check(sub, ident, params, noerr)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        "or" => {
            for sub in &items[1..] {
                if eval_check(sub, ident, params, true)? {
                    return Ok(true);
                }
            }
            if noerr {
                Ok(false)
            } else {
                Err(perm_exc(None))
            }
        }
        "perm" => {
            let tmpl = items.get(1).and_then(Value::as_str).unwrap_or("/");
            let privs: Vec<&str> = items.get(2).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            let options: BTreeMap<&str, &Value> = items[3.min(items.len())..]
                .chunks(2)
                .filter_map(|c| Some((c.first()?.as_str()?, c.get(1)?)))
                .collect();
            if let Some(required) = options.get("require_param").and_then(|v| v.as_str()) {
                if !params.contains_key(required) {
                    return if noerr { Ok(false) } else { Err(perm_exc(None)) };
                }
            }
            let path = template_replace(tmpl, params);
            let any = options.get("any").is_some_and(|v| crate::schema::load::truthy(v));
            if any {
                if privs.iter().any(|p| ident.has(&path, p)) {
                    return Ok(true);
                }
                return if noerr { Ok(false) } else { Err(perm_exc(Some(format!("{path}, {}", privs.join("|"))))) };
            }
            for p in &privs {
                if !ident.has(&path, p) {
                    return if noerr { Ok(false) } else { Err(perm_exc(Some(format!("{path}, {p}")))) };
                }
            }
            Ok(true)
        }
        _ => Ok(true),
    }
}

/// `/vms/{vmid}` → `/vms/123`
fn template_replace(tmpl: &str, params: &serde_json::Map<String, Value>) -> String {
    let mut out = String::new();
    let mut rest = tmpl;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else { break };
        let name = &rest[start + 1..start + end];
        out.push_str(&params.get(name).map(crate::schema::validate::scalar_text).unwrap_or_default());
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// A permission check the handlers do in code (PVE's `$rpcenv->check(...)`).
pub fn require(ident: &Identity, path: &str, privilege: &str) -> Result<(), ApiError> {
    if ident.has(path, privilege) {
        Ok(())
    } else {
        Err(perm_exc(Some(format!("{path}, {privilege}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_acl_wins() {
        let ident = Identity {
            userid: "u@pve".into(),
            tokenid: Some("t".into()),
            acl: vec![("/vms".into(), vec!["VM.Audit".into()]), ("/vms/100".into(), vec!["VM.PowerMgmt".into()])],
        };
        assert!(ident.has("/vms/101", "VM.Audit"));
        assert!(!ident.has("/vms/100", "VM.Audit"));
        assert!(ident.has("/vms/100", "VM.PowerMgmt"));
        assert!(!ident.has("/nodes/pve1", "Sys.Audit"));
        let check = json!(["perm", "/vms/{vmid}", ["VM.Config.Disk"]]);
        let params = json!({"vmid": "123"});
        let err = check_permissions(&check, &ident, params.as_object().unwrap_or(&Default::default())).err();
        assert_eq!(err.map(|e| e.to_string()), Some("Permission check failed (/vms/123, VM.Config.Disk)".to_string()));
    }
}
