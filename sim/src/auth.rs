//! Authentication (API tokens, `PVEAuthCookie` tickets, CSRF tokens) and PVE-style permission checks
//! against the access configuration in [`access`] (users, tokens, roles, ACLs, pools).

pub mod access;
pub mod roles;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::{TokenSpec, UserSpec, ALL_PRIVS};
use crate::http::envelope::ApiError;
use access::{Access, AclEntry, Token, Ugid, User};

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `user@realm`
    pub userid: String,
    /// The token name when authenticated with an API token.
    pub tokenid: Option<String>,
    /// The cluster's access configuration (`None`: the simulator itself, with every privilege).
    access: Option<Arc<Access>>,
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
        Self { userid: "root@pam".into(), tokenid: None, access: None }
    }

    /// The name PVE of the cluster's major uses for the schema's `privilege` (see [`Access::privilege_name`]).
    pub fn privilege_name(&self, privilege: &str) -> String {
        self.access.as_ref().map_or_else(|| privilege.to_string(), |a| a.privilege_name(privilege))
    }

    /// The cluster's access configuration (`None` for the simulator's own work).
    pub fn access(&self) -> Option<&Arc<Access>> {
        self.access.as_ref()
    }

    /// Whether the caller holds `privilege` on `path`, as `$rpcenv->check` decides (privilege separation
    /// and pool roles included).
    pub fn has(&self, path: &str, privilege: &str) -> bool {
        match &self.access {
            None => true,
            Some(a) => a.permissions(&self.authid(), &access::norm(path)).contains_key(&a.privilege_name(privilege)),
        }
    }
}

/// Credentials known to the simulator and the secret its tickets are signed with.
pub struct Auth {
    access: Arc<Access>,
    ticket_key: String,
    admin: (String, String),
}

const TICKET_LIFETIME_SECS: u64 = 2 * 3600;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

impl Auth {
    /// Enters the configured users and tokens into `access`. A configured token is privilege-separated with
    /// its ACL as given (`*` = the `Administrator` role); a token's user that no [`UserSpec`] defines gets
    /// `Administrator` on `/`, so the token's own ACL alone decides what it may do.
    pub fn new(tokens: &[TokenSpec], users: &[UserSpec], access: Arc<Access>) -> Self {
        let admin = tokens
            .iter()
            .find(|t| t.acl.iter().any(|(p, privs)| p.trim_end_matches('/').is_empty() && privs.iter().any(|x| x == ALL_PRIVS)))
            .map(|t| (t.id.clone(), t.secret.clone()))
            .unwrap_or_else(|| ("root@pam!sim-admin".to_string(), crate::config::random_secret()));
        {
            let mut st = access.state();
            let grant = |st: &mut access::AccessState, path: &str, ugid: Ugid, privs: &[String]| {
                let role = if privs.iter().any(|p| p == ALL_PRIVS) {
                    "Administrator".to_string()
                } else {
                    let name = format!("sim-acl-{}", st.roles.len());
                    st.roles.insert(name.clone(), privs.iter().cloned().collect::<BTreeSet<_>>());
                    name
                };
                st.acl.push(AclEntry { path: access::norm(path), ugid, role, propagate: true });
            };
            for u in users {
                st.users.insert(u.userid.clone(), User { password: Some(u.password.clone()), enable: true, tokens: BTreeMap::new() });
                for (path, privs) in &u.acl {
                    grant(&mut st, path, Ugid::User(u.userid.clone()), privs);
                }
            }
            for t in tokens.iter().chain(std::iter::once(&TokenSpec::full_access(&admin.0, &admin.1))) {
                let Some((userid, name)) = access::split_tokenid(&t.id) else { continue };
                if !st.users.contains_key(userid) {
                    st.users.insert(userid.to_string(), User { password: None, enable: true, tokens: BTreeMap::new() });
                    grant(&mut st, "/", Ugid::User(userid.to_string()), &[ALL_PRIVS.to_string()]);
                }
                let fresh = st.users.get_mut(userid).is_some_and(|u| u.tokens.insert(name.to_string(), Token { secret: t.secret.clone(), privsep: true, comment: None }).is_none());
                if fresh {
                    for (path, privs) in &t.acl {
                        grant(&mut st, path, Ugid::Token(t.id.clone()), privs);
                    }
                }
            }
        }
        Self { access, ticket_key: crate::config::random_secret(), admin }
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
        let known = self.access.state().users.get(userid).and_then(|u| u.tokens.get(name)).map(|t| t.secret.clone());
        let Some(known) = known else {
            return fail(&format!("no such token '{name}' for user '{userid}'"));
        };
        if known != secret.trim() {
            return fail("invalid token value!");
        }
        Ok(Identity { userid: userid.to_string(), tokenid: Some(name.to_string()), access: Some(self.access.clone()) })
    }

    /// `POST /access/ticket`
    pub fn login(&self, username: &str, realm: Option<&str>, password: &str) -> Result<Value, ApiError> {
        let userid = match realm {
            Some(r) if !username.contains('@') => format!("{username}@{r}"),
            _ => username.to_string(),
        };
        let known = self.access.state().users.get(&userid).and_then(|u| u.password.clone());
        match known {
            Some(p) if p == password => {
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
        if !self.access.state().users.contains_key(userid) {
            return Err(invalid());
        }
        Ok(Identity { userid: userid.to_string(), tokenid: None, access: Some(self.access.clone()) })
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

/// `check_api2_permissions` for the schema's `permissions.check` (`perm`, `and`, `or`, `userid-param`,
/// `userid-group`; `perm-modify` and other forms are treated as passing).
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
            let mut privs: Vec<String> = Vec::new();
            for p in items.get(2).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(|p| ident.privilege_name(p)) {
                if !privs.contains(&p) {
                    privs.push(p);
                }
            }
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
        // RPCEnvironment.pm:523-537: `self` is the caller itself (a token is not its user); creating a user
        // needs Realm.AllocateUser on the user's realm.
        "userid-param" => {
            let userid = params.get("userid").map(crate::schema::validate::scalar_text).unwrap_or_default();
            let ok = match items.get(1).and_then(Value::as_str) {
                Some("self") => userid == ident.authid(),
                Some("Realm.AllocateUser") => {
                    let realm = userid.rsplit_once('@').map(|(_, r)| r).unwrap_or_default();
                    ident.has(&format!("/access/realm/{realm}"), "Realm.AllocateUser")
                }
                _ => false,
            };
            if ok || noerr {
                Ok(ok)
            } else {
                Err(perm_exc(None))
            }
        }
        // RPCEnvironment.pm `userid-group`: the privileges on the user's groups, or on `/access/groups` for a
        // user in none (groups are not modelled, so always the latter).
        "userid-group" => {
            let privs: Vec<&str> = items.get(1).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            let ok = privs.iter().all(|p| ident.has("/access/groups", p));
            if ok || noerr {
                Ok(ok)
            } else {
                Err(perm_exc(Some(format!("/access/groups, {}", privs.join("|")))))
            }
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
        let spec = TokenSpec {
            id: "u@pve!t".into(),
            secret: "s".into(),
            acl: vec![("/vms".into(), vec!["VM.Audit".into()]), ("/vms/100".into(), vec!["VM.PowerMgmt".into()])],
        };
        let auth = Auth::new(&[spec], &[], Arc::new(Access::new(9)));
        let ident = auth.verify_token("PVEAPIToken=u@pve!t=s").expect("known token");
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
