//! The access configuration (`user.cfg` in pmxcfs): users, their API tokens, roles, ACL entries and
//! pools, and the effective privileges PVE computes from them (acl `src/PVE/AccessControl.pm:1788-1890`
//! `roles`; `src/PVE/RPCEnvironment.pm:22-175` `compile_acl_path` and `permissions`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

/// An API token of a user.
#[derive(Debug, Clone)]
pub struct Token {
    pub secret: String,
    /// Privilege separation: the token's own ACL, intersected with its user's privileges.
    pub privsep: bool,
    pub comment: Option<String>,
}

/// A user (`user@realm`).
#[derive(Debug, Clone, Default)]
pub struct User {
    /// For ticket logins; `None`: cannot log in with a password.
    pub password: Option<String>,
    pub enable: bool,
    pub tokens: BTreeMap<String, Token>,
}

/// Whom an ACL entry names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ugid {
    User(String),
    /// `user@realm!name`
    Token(String),
}

/// One ACL entry: a role on a path for a user or token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclEntry {
    pub path: String,
    pub ugid: Ugid,
    pub role: String,
    pub propagate: bool,
}

/// A resource pool.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    pub comment: Option<String>,
    pub vms: BTreeSet<u32>,
    pub storage: BTreeSet<String>,
}

/// Everything in `user.cfg` the simulator models (no groups, realms or TFA).
#[derive(Debug, Default)]
pub struct AccessState {
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, BTreeSet<String>>,
    /// The built-in role names (`special: 1`, not modifiable).
    pub builtin: BTreeSet<String>,
    pub acl: Vec<AclEntry>,
    pub pools: BTreeMap<String, Pool>,
}

/// The shared access configuration of one simulated cluster.
#[derive(Debug)]
pub struct Access {
    state: Mutex<AccessState>,
    /// The PVE major release (8 or 9): which privileges and roles exist.
    pub major: u8,
}

/// `user@realm!name` → (`user@realm`, `name`).
pub fn split_tokenid(authid: &str) -> Option<(&str, &str)> {
    authid.split_once('!')
}

impl Access {
    pub fn new(major: u8) -> Self {
        let roles = super::roles::builtin_roles(major);
        let builtin = roles.keys().cloned().collect();
        Self { state: Mutex::new(AccessState { roles, builtin, ..AccessState::default() }), major }
    }

    /// The configuration; never held across an `.await`.
    pub fn state(&self) -> MutexGuard<'_, AccessState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every valid privilege name of this major.
    pub fn valid_privileges(&self) -> BTreeSet<String> {
        super::roles::valid_privileges(self.major)
    }

    /// The privilege this major checks where the PVE 9.1 schema names `privilege`: PVE 8 has no
    /// `VM.GuestAgent.*`, every guest-agent endpoint needs `VM.Monitor` there (qs8
    /// `src/PVE/API2/Qemu/Agent.pm:147-148, 224`).
    pub fn privilege_name(&self, privilege: &str) -> String {
        if self.major < 9 && privilege.starts_with("VM.GuestAgent.") {
            "VM.Monitor".to_string()
        } else {
            privilege.to_string()
        }
    }

    /// The privileges `authid` (a user or `user@realm!token`) holds on `path`, each with its propagate flag,
    /// as `RPCEnvironment::permissions` computes them: `root@pam` has all; a token without privilege
    /// separation has its user's; a privilege-separated token has the intersection of its own and its user's;
    /// roles on `/pool/P` apply (not propagated) to `/vms/<id>` and `/storage/<id>` of P's members, never over
    /// `NoAccess`.
    pub fn permissions(&self, authid: &str, path: &str) -> BTreeMap<String, bool> {
        let st = self.state();
        permissions(&st, authid, path)
    }

    /// `get_effective_permissions` (RPCEnvironment.pm:241-289): the default top paths, every ACL path and every
    /// pool member's path, each with the privileges held there (paths without any left out).
    pub fn effective(&self, authid: &str) -> BTreeMap<String, BTreeMap<String, bool>> {
        let st = self.state();
        let mut paths: BTreeSet<String> = ["/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms"].iter().map(|p| p.to_string()).collect();
        paths.extend(st.acl.iter().map(|e| e.path.clone()));
        for pool in st.pools.values() {
            paths.extend(pool.vms.iter().map(|v| format!("/vms/{v}")));
            paths.extend(pool.storage.iter().map(|s| format!("/storage/{s}")));
        }
        paths.into_iter().map(|p| (permissions(&st, authid, &p), p)).filter(|(privs, _)| !privs.is_empty()).map(|(privs, p)| (p, privs)).collect()
    }
}

fn permissions(st: &AccessState, authid: &str, path: &str) -> BTreeMap<String, bool> {
    if authid == "root@pam" {
        return st.roles.get("Administrator").map(|r| r.iter().map(|p| (p.clone(), true)).collect()).unwrap_or_default();
    }
    let (user, token) = match split_tokenid(authid) {
        Some((u, t)) => (u, Some(t)),
        None => (authid, None),
    };
    let Some(u) = st.users.get(user) else { return BTreeMap::new() };
    let user_privs = if user == "root@pam" { permissions(st, "root@pam", path) } else { compile(st, user, path) };
    match token {
        None => user_privs,
        Some(t) => match u.tokens.get(t) {
            None => BTreeMap::new(),
            Some(tok) if !tok.privsep => user_privs,
            Some(_) => {
                let own = compile(st, authid, path);
                own.into_iter().filter_map(|(p, prop)| user_privs.get(&p).map(|up| (p, prop && *up))).collect()
            }
        },
    }
}

/// `compile_acl_path` for one user or token (RPCEnvironment.pm:22-110): its roles on `path` plus the pool roles,
/// turned into privileges.
fn compile(st: &AccessState, ugid: &str, path: &str) -> BTreeMap<String, bool> {
    let mut found = roles(st, ugid, path);
    let mut pool_roles: BTreeMap<String, bool> = BTreeMap::new();
    for (pool, p) in &st.pools {
        let member = match path.strip_prefix("/vms/") {
            Some(id) => id.parse::<u32>().is_ok_and(|id| p.vms.contains(&id)),
            None => path.strip_prefix("/storage/").is_some_and(|s| p.storage.contains(s)),
        };
        if member {
            for role in roles(st, ugid, &format!("/pool/{pool}")).into_keys() {
                pool_roles.insert(role, false);
            }
        }
    }
    if !pool_roles.is_empty() && !found.contains_key("NoAccess") {
        if pool_roles.contains_key("NoAccess") {
            found = BTreeMap::from([("NoAccess".to_string(), false)]);
        } else {
            for (role, _) in pool_roles {
                found.entry(role).or_insert(false);
            }
        }
    }
    let mut privs: BTreeMap<String, bool> = BTreeMap::new();
    for (role, propagate) in &found {
        for p in st.roles.get(role).into_iter().flatten() {
            let e = privs.entry(p.clone()).or_insert(false);
            *e = *e || *propagate;
        }
    }
    privs
}

/// `PVE::AccessControl::roles` (AccessControl.pm:1788-1890): walks the path from `/`; at each level an entry
/// for the token (or else the user) replaces what was found above, when it propagates or the level is the path
/// itself. `NoAccess` wins over everything. Groups are not modelled.
fn roles(st: &AccessState, ugid: &str, path: &str) -> BTreeMap<String, bool> {
    let mut levels = vec!["/".to_string()];
    let mut cur = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        cur.push('/');
        cur.push_str(part);
        levels.push(cur.clone());
    }
    let is_token = ugid.contains('!');
    let mut found = BTreeMap::new();
    let last = levels.len() - 1;
    for (i, level) in levels.iter().enumerate() {
        let here: BTreeMap<String, bool> = st
            .acl
            .iter()
            .filter(|e| norm(&e.path) == *level)
            .filter(|e| match &e.ugid {
                Ugid::Token(t) => is_token && t == ugid,
                Ugid::User(u) => !is_token && u == ugid,
            })
            .filter(|e| i == last || e.propagate)
            .map(|e| (e.role.clone(), e.propagate))
            .collect();
        if !here.is_empty() {
            found = here;
        }
    }
    if found.contains_key("NoAccess") {
        return BTreeMap::from([("NoAccess".to_string(), false)]);
    }
    found
}

/// `/vms/` → `/vms` (ACL paths are stored without a trailing slash; `/` stays).
pub fn norm(path: &str) -> String {
    let t = path.trim_end_matches('/');
    if t.is_empty() { "/".to_string() } else { t.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        let a = Access::new(9);
        {
            let mut st = a.state();
            let mut u = User { enable: true, ..User::default() };
            u.tokens.insert("agent".into(), Token { secret: "s".into(), privsep: true, comment: None });
            u.tokens.insert("full".into(), Token { secret: "s".into(), privsep: false, comment: None });
            st.users.insert("pvedeploy@pve".into(), u);
            let entry = |path: &str, ugid: Ugid, role: &str| AclEntry { path: path.into(), ugid, role: role.into(), propagate: true };
            st.acl.push(entry("/", Ugid::User("pvedeploy@pve".into()), "PVEVMAdmin"));
            st.acl.push(entry("/vms", Ugid::Token("pvedeploy@pve!agent".into()), "PVEVMUser"));
            st.acl.push(entry("/pool/apps", Ugid::Token("pvedeploy@pve!agent".into()), "PVEVMAdmin"));
            st.pools.insert("apps".into(), Pool { vms: BTreeSet::from([150]), ..Pool::default() });
        }
        a
    }

    #[test]
    fn privsep_tokens_get_the_intersection_and_pool_roles_apply_to_members() {
        let a = access();
        let user = a.permissions("pvedeploy@pve", "/vms/100");
        assert!(user.contains_key("VM.Allocate"));
        let token = a.permissions("pvedeploy@pve!agent", "/vms/100");
        assert!(token.contains_key("VM.PowerMgmt") && !token.contains_key("VM.Allocate"), "{token:?}");
        // 150 is in pool apps: PVEVMAdmin on /pool/apps applies, not propagated
        let member = a.permissions("pvedeploy@pve!agent", "/vms/150");
        assert_eq!(member.get("VM.Allocate"), Some(&false));
        assert_eq!(member.get("VM.PowerMgmt"), Some(&true));
        assert_eq!(a.permissions("pvedeploy@pve!full", "/vms/100"), user);
        assert!(a.permissions("pvedeploy@pve!nope", "/vms/100").is_empty());
        assert!(a.permissions("pvedeploy@pve!agent", "/storage/local").is_empty());
        assert!(a.permissions("root@pam", "/anything").contains_key("Sys.Modify"));
        let eff = a.effective("pvedeploy@pve!agent");
        assert!(eff.contains_key("/vms/150") && eff.contains_key("/vms") && !eff.contains_key("/storage"), "{eff:?}");
    }

    #[test]
    fn deeper_entries_replace_and_noaccess_wins() {
        let a = access();
        a.state().acl.push(AclEntry { path: "/vms/150".into(), ugid: Ugid::User("pvedeploy@pve".into()), role: "NoAccess".into(), propagate: true });
        assert!(a.permissions("pvedeploy@pve", "/vms/150").is_empty());
        assert!(a.permissions("pvedeploy@pve!agent", "/vms/150").is_empty());
        a.state().acl.push(AclEntry { path: "/storage".into(), ugid: Ugid::User("pvedeploy@pve".into()), role: "PVEDatastoreUser".into(), propagate: false });
        assert!(a.permissions("pvedeploy@pve", "/storage").contains_key("Datastore.Audit"));
        assert!(a.permissions("pvedeploy@pve", "/storage/local").contains_key("VM.Allocate"), "not propagated: / applies below");
    }
}
