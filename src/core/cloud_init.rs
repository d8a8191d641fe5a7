//! Renders a VM guest's cloud-init user-data: the operator's base template (`cloud-init/user-data.yaml`)
//! merged with what is specific to the guest (hostname, deploy user and key, its own SSH host key). Pure.

use serde_yaml::{Mapping, Value};

/// The base template shipped in `cloud-init/`.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../cloud-init/user-data.yaml");

/// Keys the agent owns; a template's values for them are replaced.
const OWNED: [&str; 8] = ["hostname", "fqdn", "users", "ssh_keys", "ssh_deletekeys", "ssh_genkeytypes", "disable_root", "ssh_pwauth"];

/// A base template that parsed as a cloud-config mapping.
#[derive(Debug, Clone)]
pub struct Template(Mapping);

/// Why a template cannot be used; names what to fix in the file.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("user-data template must start with the line '#cloud-config'")]
    NoHeader,
    #[error("user-data template is not valid YAML: {0}")]
    Yaml(String),
    #[error("user-data template must be a YAML mapping at the top level")]
    NotMapping,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if !text.starts_with("#cloud-config") {
            return Err(TemplateError::NoHeader);
        }
        match serde_yaml::from_str::<Value>(text).map_err(|e| TemplateError::Yaml(e.to_string()))? {
            Value::Mapping(m) => Ok(Self(m)),
            Value::Null => Ok(Self(Mapping::new())),
            _ => Err(TemplateError::NotMapping),
        }
    }

    pub fn default_template() -> Self {
        Self::parse(DEFAULT_TEMPLATE).expect("the shipped template is valid")
    }
}

/// What is specific to one guest.
#[derive(Debug, Clone)]
pub struct GuestIdentity<'a> {
    pub hostname: &'a str,
    pub deploy_user: &'a str,
    /// `ssh-ed25519 AAAA… comment`, authorized for `deploy_user`.
    pub deploy_public_key: &'a str,
    /// The guest's host key pair, OpenSSH encodings.
    pub host_private_key: &'a str,
    pub host_public_key: &'a str,
}

/// The complete user-data document (`#cloud-config` first, as cloud-init requires).
pub fn render(template: &Template, g: &GuestIdentity<'_>) -> String {
    let mut doc = template.0.clone();
    for key in OWNED {
        doc.remove(key);
    }
    let s = |v: &str| Value::String(v.to_owned());
    let mut user = Mapping::new();
    user.insert(s("name"), s(g.deploy_user));
    user.insert(s("shell"), s("/bin/bash"));
    user.insert(s("groups"), Value::Sequence(vec![s("sudo")]));
    user.insert(s("sudo"), s("ALL=(ALL) NOPASSWD:ALL"));
    user.insert(s("lock_passwd"), Value::Bool(true));
    user.insert(s("ssh_authorized_keys"), Value::Sequence(vec![s(g.deploy_public_key.trim())]));
    let mut keys = Mapping::new();
    keys.insert(s("ed25519_private"), s(g.host_private_key));
    keys.insert(s("ed25519_public"), s(g.host_public_key.trim()));
    doc.insert(s("hostname"), s(g.hostname));
    doc.insert(s("fqdn"), s(g.hostname));
    doc.insert(s("users"), Value::Sequence(vec![Value::Mapping(user)]));
    doc.insert(s("ssh_keys"), Value::Mapping(keys));
    doc.insert(s("ssh_deletekeys"), Value::Bool(true));
    doc.insert(s("ssh_genkeytypes"), Value::Sequence(vec![]));
    doc.insert(s("disable_root"), Value::Bool(true));
    doc.insert(s("ssh_pwauth"), Value::Bool(false));
    let body = serde_yaml::to_string(&Value::Mapping(doc)).expect("a mapping of strings always serializes");
    format!("#cloud-config\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn guest() -> GuestIdentity<'static> {
        GuestIdentity {
            hostname: "shop-api",
            deploy_user: "deploy",
            deploy_public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeploy pvedeploy-agent\n",
            host_private_key: "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
            host_public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHost shop-api",
        }
    }

    #[test]
    fn default_template_rendered() {
        let out = render(&Template::default_template(), &guest());
        expect![[r#"
            #cloud-config
            packages:
            - qemu-guest-agent
            package_update: false
            package_upgrade: false
            timezone: Etc/UTC
            hostname: shop-api
            fqdn: shop-api
            users:
            - name: deploy
              shell: /bin/bash
              groups:
              - sudo
              sudo: ALL=(ALL) NOPASSWD:ALL
              lock_passwd: true
              ssh_authorized_keys:
              - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeploy pvedeploy-agent
            ssh_keys:
              ed25519_private: |
                -----BEGIN OPENSSH PRIVATE KEY-----
                b3BlbnNzaC1rZXktdjEAAAAA
                -----END OPENSSH PRIVATE KEY-----
              ed25519_public: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHost shop-api
            ssh_deletekeys: true
            ssh_genkeytypes: []
            disable_root: true
            ssh_pwauth: false
        "#]]
        .assert_eq(&out);
    }

    #[test]
    fn the_agent_owns_users_and_keys() {
        let t = Template::parse("#cloud-config\nusers: [{name: evil, sudo: ALL}]\nssh_pwauth: true\nwrite_files: [{path: /etc/motd, content: hi}]\n").unwrap();
        let out = render(&t, &guest());
        let v: Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(v["users"][0]["name"], Value::String("deploy".into()));
        assert_eq!(v["users"].as_sequence().unwrap().len(), 1);
        assert_eq!(v["ssh_pwauth"], Value::Bool(false));
        assert_eq!(v["write_files"][0]["path"], Value::String("/etc/motd".into()), "other keys of the template are kept");
    }

    #[test]
    fn yaml_special_values_stay_strings() {
        // A hostname like `yes`/`null` or a key comment with `: ` must not change type or structure.
        let g = GuestIdentity { hostname: "null", deploy_public_key: "ssh-ed25519 AAAA a: b # c", ..guest() };
        let v: Value = serde_yaml::from_str(&render(&Template::default_template(), &g)).unwrap();
        assert_eq!(v["hostname"], Value::String("null".into()));
        assert_eq!(v["users"][0]["ssh_authorized_keys"][0], Value::String("ssh-ed25519 AAAA a: b # c".into()));
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        assert!(matches!(Template::parse("packages: []"), Err(TemplateError::NoHeader)));
        assert!(matches!(Template::parse("#cloud-config\n- a\n"), Err(TemplateError::NotMapping)));
        assert!(matches!(Template::parse("#cloud-config\na: [\n"), Err(TemplateError::Yaml(_))));
    }
}
