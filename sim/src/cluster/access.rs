//! The access and pool endpoints an operator prepares a cluster with: `GET /access/permissions`, `POST
//! /access/users`, `POST /access/users/{userid}/token/{tokenid}`, `GET|POST /access/roles`, `PUT /access/acl`,
//! `GET|POST|PUT /pools` (acl `src/PVE/API2/{AccessControl,User,Role,ACL}.pm`, mgr `PVE/API2/Pool.pm`).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{ApiCall, Cluster};
use crate::auth::access::{norm, split_tokenid, AclEntry, Pool, Token, Ugid, User};
use crate::auth::require;
use crate::http::envelope::ApiError;
use crate::schema::formats::split_list;

fn access(call: &ApiCall) -> Result<&std::sync::Arc<crate::auth::access::Access>, ApiError> {
    call.ident.access().ok_or_else(|| ApiError::server("internal error: no access configuration"))
}

fn privs_json(privs: BTreeMap<String, bool>) -> Value {
    Value::Object(privs.into_iter().map(|(p, prop)| (p, json!(u8::from(prop)))).collect())
}

/// `GET /access/permissions` (acl `src/PVE/API2/AccessControl.pm:509-575`): the caller's own (or an owned
/// token's) effective privileges, per path or for the whole tree; someone else's needs `Sys.Audit` on `/access`.
pub fn permissions(call: &ApiCall) -> Result<Value, ApiError> {
    let a = access(call)?;
    let authid = call.ident.authid();
    let userid = call.params.str("userid").unwrap_or_else(|| authid.clone());
    let owned = split_tokenid(&userid).is_some_and(|(u, _)| u == authid);
    if userid != authid && !owned {
        require(&call.ident, "/access", "Sys.Audit")?;
    }
    Ok(match call.params.str("path") {
        Some(path) => json!({ path.clone(): privs_json(a.permissions(&userid, &norm(&path))) }),
        None => Value::Object(a.effective(&userid).into_iter().map(|(p, privs)| (p, privs_json(privs))).collect()),
    })
}

/// `POST /access/users` (acl `src/PVE/API2/User.pm:300-360`).
pub fn create_user(call: &ApiCall) -> Result<Value, ApiError> {
    let a = access(call)?;
    let userid = call.params.need("userid")?;
    let mut st = a.state();
    if st.users.contains_key(&userid) {
        return Err(ApiError::server(format!("create user failed: user '{userid}' already exists")));
    }
    let enable = call.params.str("enable").is_none_or(|e| e != "0");
    st.users.insert(userid, User { password: call.params.str("password"), enable, tokens: BTreeMap::new() });
    Ok(Value::Null)
}

/// `POST /access/users/{userid}/token/{tokenid}` (acl `src/PVE/API2/User.pm:760-835`): privilege separation
/// unless `privsep=0`; the secret is answered once.
pub fn create_token(call: &ApiCall) -> Result<Value, ApiError> {
    let a = access(call)?;
    let (userid, tokenid) = (call.params.need("userid")?, call.params.need("tokenid")?);
    let mut st = a.state();
    let user = st.users.get_mut(&userid).ok_or_else(|| ApiError::server(format!("no such user ('{userid}')")))?;
    if user.tokens.contains_key(&tokenid) {
        return Err(ApiError::param("tokenid", "Token already exists."));
    }
    let privsep = call.params.str("privsep").is_none_or(|p| p != "0");
    let secret = crate::config::random_secret();
    let comment = call.params.str("comment");
    user.tokens.insert(tokenid.clone(), Token { secret: secret.clone(), privsep, comment: comment.clone() });
    let mut info = json!({"privsep": u8::from(privsep)});
    if let Some(c) = comment {
        info["comment"] = json!(c);
    }
    Ok(json!({"full-tokenid": format!("{userid}!{tokenid}"), "info": info, "value": secret}))
}

/// `GET /access/users/{userid}/token/{tokenid}` (acl `src/PVE/API2/User.pm:840-870`).
pub fn token_info(call: &ApiCall) -> Result<Value, ApiError> {
    let a = access(call)?;
    let (userid, tokenid) = (call.params.need("userid")?, call.params.need("tokenid")?);
    let st = a.state();
    let user = st.users.get(&userid).ok_or_else(|| ApiError::server(format!("no such user ('{userid}')")))?;
    let t = user.tokens.get(&tokenid).ok_or_else(|| ApiError::server(format!("no such token '{tokenid}' for user '{userid}'")))?;
    let mut v = json!({"privsep": u8::from(t.privsep), "expire": 0});
    if let Some(c) = &t.comment {
        v["comment"] = json!(c);
    }
    Ok(v)
}

/// `GET /access/roles`
pub fn roles(call: &ApiCall) -> Result<Value, ApiError> {
    let st = access(call)?.state();
    Ok(Value::Array(
        st.roles
            .iter()
            .filter(|(id, _)| !id.starts_with("sim-acl-"))
            .map(|(id, privs)| json!({"roleid": id, "privs": privs.iter().cloned().collect::<Vec<_>>().join(","), "special": u8::from(st.builtin.contains(id))}))
            .collect(),
    ))
}

/// `POST /access/roles` (acl `src/PVE/API2/Role.pm:80-115`): the privileges must exist in this major
/// (`invalid privilege 'VM.Monitor'` on PVE 9, acl `src/PVE/AccessControl.pm:1235`).
pub fn create_role(call: &ApiCall) -> Result<Value, ApiError> {
    let a = access(call)?;
    let roleid = call.params.need("roleid")?;
    let valid = a.valid_privileges();
    let privs = split_list(&call.params.str("privs").unwrap_or_default());
    if let Some(bad) = privs.iter().find(|p| !valid.contains(p.as_str())) {
        return Err(ApiError::server(format!("invalid privilege '{bad}'")));
    }
    let mut st = a.state();
    if st.roles.contains_key(&roleid) {
        return Err(ApiError::server(format!("role '{roleid}' already exists")));
    }
    st.roles.insert(roleid, privs.into_iter().collect());
    Ok(Value::Null)
}

/// `PUT /access/roles/{roleid}` (acl `src/PVE/API2/Role.pm:122-165`): replaces the role's privileges (adds them with
/// `append`); a built-in role cannot be modified (`role_is_special`, `AccessControl.pm:1219-1222`), an unknown one
/// does not exist, a privilege unknown to this major is refused (`add_role_privs`, `AccessControl.pm:1224-1238`).
pub fn update_role(call: &ApiCall) -> Result<Value, ApiError> {
    let a = access(call)?;
    let roleid = call.params.need("roleid")?;
    let valid = a.valid_privileges();
    let privs = split_list(&call.params.str("privs").unwrap_or_default());
    let mut st = a.state();
    if st.builtin.contains(&roleid) {
        return Err(ApiError::server(format!("auto-generated role '{roleid}' cannot be modified")));
    }
    if !st.roles.contains_key(&roleid) {
        return Err(ApiError::server(format!("role '{roleid}' does not exist")));
    }
    if let Some(bad) = privs.iter().find(|p| !valid.contains(p.as_str())) {
        return Err(ApiError::server(format!("invalid privilege '{bad}'")));
    }
    let role = st.roles.get_mut(&roleid).expect("checked above");
    if !call.params.bool("append").unwrap_or(false) {
        role.clear();
    }
    role.extend(privs);
    Ok(Value::Null)
}

/// `PUT /access/acl` (acl `src/PVE/API2/ACL.pm:100-262`): adds (or with `delete=1` removes) roles on a path for
/// users and tokens; without `Permissions.Modify` the caller may hand out only privileges it holds there.
pub fn update_acl(call: &ApiCall) -> Result<Value, ApiError> {
    let a = access(call)?;
    let p = &call.params;
    let (users, tokens) = (split_list(&p.str("users").unwrap_or_default()), split_list(&p.str("tokens").unwrap_or_default()));
    if users.is_empty() && tokens.is_empty() && p.str("groups").is_none() {
        let msg = "either 'users', 'groups' or 'tokens' is required.";
        return Err(ApiError::Params(["users", "groups", "tokens"].iter().map(|k| (k.to_string(), msg.to_string())).collect()));
    }
    if p.str("groups").is_some() {
        return Err(ApiError::NotImplemented("groups are not modelled by pvedeploy-sim".into()));
    }
    let path = norm(&p.need("path")?);
    let delete = p.str("delete").is_some_and(|d| d == "1");
    let propagate = p.str("propagate").is_none_or(|v| v != "0");
    let mine = a.permissions(&call.ident.authid(), &path);
    let mut st = a.state();
    for role in split_list(&p.need("roles")?) {
        let Some(role_privs) = st.roles.get(&role).cloned() else {
            return Err(ApiError::server(format!("role '{role}' does not exist")));
        };
        if !mine.contains_key("Permissions.Modify") {
            let verb = if delete { "remove" } else { "add" };
            if role_privs.iter().any(|priv_| !mine.contains_key(priv_)) || role == "NoAccess" {
                return Err(ApiError::param("role", format!("Cannot {verb} role '{role}' - requires 'Permissions.Modify' or superset of privileges.")));
            }
        }
        let mut targets = Vec::new();
        for u in &users {
            if !st.users.contains_key(u) {
                return Err(ApiError::server(format!("user '{u}' does not exist")));
            }
            targets.push(Ugid::User(u.clone()));
        }
        for t in &tokens {
            let exists = split_tokenid(t).is_some_and(|(u, n)| st.users.get(u).is_some_and(|u| u.tokens.contains_key(n)));
            if !exists {
                let (u, n) = split_tokenid(t).unwrap_or((t.as_str(), ""));
                return Err(ApiError::server(format!("no such token '{n}' for user '{u}'")));
            }
            targets.push(Ugid::Token(t.clone()));
        }
        for ugid in targets {
            st.acl.retain(|e| !(e.path == path && e.ugid == ugid && e.role == role));
            if !delete {
                st.acl.push(AclEntry { path: path.clone(), ugid, role: role.clone(), propagate });
            }
        }
    }
    Ok(Value::Null)
}

/// `GET /pools`: pools with `Pool.Audit` (mgr `PVE/API2/Pool.pm:97, 147`).
pub fn pools(call: &ApiCall) -> Result<Value, ApiError> {
    let st = access(call)?.state();
    let list: Vec<Value> = st.pools.iter().map(|(id, pool)| json!({"poolid": id, "comment": pool.comment})).collect();
    drop(st);
    Ok(Value::Array(list.into_iter().filter(|p| p["poolid"].as_str().is_some_and(|id| call.ident.has(&format!("/pool/{id}"), "Pool.Audit"))).collect()))
}

/// `POST /pools` (mgr `PVE/API2/Pool.pm:160-205`).
pub fn create_pool(call: &ApiCall) -> Result<Value, ApiError> {
    let a = access(call)?;
    let poolid = call.params.need("poolid")?;
    if !poolid.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(ApiError::server("pool name must start with a letter"));
    }
    let mut st = a.state();
    if st.pools.contains_key(&poolid) {
        return Err(ApiError::server(format!("pool '{poolid}' already exists")));
    }
    st.pools.insert(poolid, Pool { comment: call.params.str("comment"), ..Pool::default() });
    Ok(Value::Null)
}

/// `PUT /pools` (mgr `PVE/API2/Pool.pm:270-380`): adds or removes guests and storages; each needs
/// `Permissions.Modify`, or `VM.Allocate` (guests) / `Datastore.Allocate` (storages), on the member's path.
pub fn update_pool(c: &Cluster, call: &ApiCall) -> Result<Value, ApiError> {
    let a = access(call)?;
    let p = &call.params;
    let poolid = p.need("poolid")?;
    let delete = p.str("delete").is_some_and(|d| d == "1");
    let allow_move = p.str("allow-move").is_some_and(|d| d == "1");
    let modify = |path: &str, alt: &str| {
        if call.ident.has(path, "Permissions.Modify") || call.ident.has(path, alt) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("Permission check failed ({path}, Permissions.Modify|{alt})")))
        }
    };
    let vms: Vec<u32> = split_list(&p.str("vms").unwrap_or_default()).iter().filter_map(|v| v.parse().ok()).collect();
    let storages = split_list(&p.str("storage").unwrap_or_default());
    for v in &vms {
        modify(&format!("/vms/{v}"), "VM.Allocate")?;
    }
    for s in &storages {
        modify(&format!("/storage/{s}"), "Datastore.Allocate")?;
    }
    let known_vms: std::collections::BTreeSet<u32> = c.state().guests.keys().copied().collect();
    let mut st = a.state();
    if !st.pools.contains_key(&poolid) {
        return Err(ApiError::server(format!("pool '{poolid}' does not exist")));
    }
    for v in vms {
        let member = st.pools.get(&poolid).is_some_and(|pool| pool.vms.contains(&v));
        if delete {
            if !member {
                return Err(ApiError::server(format!("VM {v} is not a pool member")));
            }
        } else {
            if member {
                return Err(ApiError::server(format!("VM {v} is already a pool member")));
            }
            if !known_vms.contains(&v) {
                return Err(ApiError::server(format!("no such VM '{v}'")));
            }
            if let Some(other) = st.pools.iter().find(|(_, pool)| pool.vms.contains(&v)).map(|(id, _)| id.clone()) {
                if !allow_move {
                    return Err(ApiError::server(format!("VM {v} belongs already to pool '{other}' and 'allow-move' is not set")));
                }
                require(&call.ident, &format!("/pool/{other}"), "Pool.Allocate")?;
                if let Some(pool) = st.pools.get_mut(&other) {
                    pool.vms.remove(&v);
                }
            }
        }
        if let Some(pool) = st.pools.get_mut(&poolid) {
            if delete {
                pool.vms.remove(&v);
            } else {
                pool.vms.insert(v);
            }
        }
    }
    for s in storages {
        let Some(pool) = st.pools.get_mut(&poolid) else { break };
        match (delete, pool.storage.contains(&s)) {
            (true, false) => return Err(ApiError::server(format!("Storage '{s}' is not a pool member"))),
            (false, true) => return Err(ApiError::server(format!("Storage '{s}' is already a pool member"))),
            (true, true) => {
                pool.storage.remove(&s);
            }
            (false, false) => {
                pool.storage.insert(s);
            }
        }
    }
    if let (Some(comment), Some(pool)) = (p.str("comment"), st.pools.get_mut(&poolid)) {
        pool.comment = Some(comment);
    }
    Ok(Value::Null)
}
