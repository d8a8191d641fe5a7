//! `RepoUrl`: a git repository URL that is safe to hand to `git clone` on a guest.

use std::fmt;

use crate::core::limits::{RepoPolicy, RepoScheme};
use crate::core::validation::FieldError;

/// A repository URL that passed the policy: allowed scheme and host, no credentials, nothing option-like.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoUrl {
    url: String,
    host: String,
    /// `owner/repo` without a trailing `.git`, as GitHub's `repository.full_name`.
    full_name: String,
}

impl RepoUrl {
    /// The longest URL accepted; the doors announce it (Discord's `max_length`).
    pub const MAX_LEN: usize = 2048;

    pub fn parse(raw: &str, policy: &RepoPolicy) -> Result<Self, FieldError> {
        let err = |rule: &'static str, msg: String| FieldError::new("repo_url", rule, msg);
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(err("length", "must be 1-2048 characters".into()));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("no_whitespace", "must not contain whitespace, control characters or newlines".into()));
        }
        if raw.starts_with('-') {
            return Err(err("not_option", "must not start with '-'".into()));
        }
        let allowed: Vec<&str> = policy.schemes.iter().map(|s| s.as_str()).collect();
        let scheme_rule = || {
            err(
                "scheme",
                format!("must be a URL with scheme {} (file://, ext::, local paths and other transports are refused)", allowed.join(" or ")),
            )
        };
        let (scheme, rest) = match raw.split_once("://") {
            Some((s, rest)) => (RepoScheme::parse(&s.to_ascii_lowercase()).ok_or_else(scheme_rule)?, rest),
            None => return Self::parse_scp_like(raw, policy).ok_or_else(scheme_rule)?,
        };
        if !policy.schemes.contains(&scheme) {
            return Err(scheme_rule());
        }
        let (authority, path) = rest.split_once('/').ok_or_else(|| err("path", "must name a repository path such as /owner/repo".into()))?;
        let host = match authority.rsplit_once('@') {
            Some((user, host)) => {
                // `ssh://git@host/...` names the login user, not a credential; anything else is one.
                if scheme != RepoScheme::Ssh || user != "git" {
                    return Err(err("no_credentials", "must not contain credentials (user:password@ or token@)".into()));
                }
                host
            }
            None => authority,
        };
        Self::finish(raw, host, path, policy)
    }

    fn parse_scp_like(raw: &str, policy: &RepoPolicy) -> Option<Result<Self, FieldError>> {
        // git@github.com:owner/repo.git — only when ssh is enabled and only the `git` user.
        if !policy.schemes.contains(&RepoScheme::Ssh) {
            return None;
        }
        let rest = raw.strip_prefix("git@")?;
        let (host, path) = rest.split_once(':')?;
        if host.contains('/') || path.starts_with('/') {
            return None;
        }
        Some(Self::finish(raw, host, path, policy))
    }

    fn finish(raw: &str, host: &str, path: &str, policy: &RepoPolicy) -> Result<Self, FieldError> {
        let host = host.to_ascii_lowercase();
        let host_ok = !host.is_empty()
            && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
            && policy.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host));
        if !host_ok {
            return Err(FieldError::new(
                "repo_url",
                "allowed_host",
                format!("host must be one of the allowed git hosts: {}", policy.allowed_hosts.join(", ")),
            ));
        }
        let path = path.trim_end_matches('/');
        let segments: Vec<&str> = path.split('/').collect();
        let path_ok = segments.len() >= 2
            && segments.iter().all(|s| {
                !s.is_empty()
                    && *s != "."
                    && *s != ".."
                    && !s.starts_with('-')
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
            });
        if !path_ok {
            return Err(FieldError::new(
                "repo_url",
                "path",
                "path must be owner/repo (letters, digits, '-', '_', '.', '~'; no query, fragment, '..' or empty segments)",
            ));
        }
        let full_name = path.strip_suffix(".git").unwrap_or(path).to_owned();
        Ok(Self { url: raw.to_owned(), host, full_name })
    }

    /// Rebuilds a URL that was parsed under the policy in force when it was stored.
    pub fn from_stored(url: String) -> Self {
        let (authority, path) = match url.split_once("://") {
            Some((_, rest)) => rest.split_once('/').unwrap_or((rest, "")),
            None => url.strip_prefix("git@").and_then(|r| r.split_once(':')).unwrap_or((&url, "")),
        };
        let host = authority.rsplit('@').next().unwrap_or(authority).to_ascii_lowercase();
        let path = path.trim_end_matches('/');
        let full_name = path.strip_suffix(".git").unwrap_or(path).to_owned();
        Self { url, host, full_name }
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn full_name(&self) -> &str {
        &self.full_name
    }
}

impl RepoUrl {
    /// The host to resolve and the port to connect to (the URL's, else the scheme's default).
    pub fn endpoint(&self) -> (String, u16) {
        let default = if self.url.starts_with("https://") { 443 } else if self.url.starts_with("http://") { 80 } else { 22 };
        let h = self.host.as_str();
        if let Some(rest) = h.strip_prefix('[') {
            let (ip, port) = rest.split_once(']').unwrap_or((rest, ""));
            return (ip.to_owned(), port.trim_start_matches(':').parse().unwrap_or(default));
        }
        match h.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !port.is_empty() => (name.to_owned(), port.parse().unwrap_or(default)),
            _ => (h.to_owned(), default),
        }
    }

    /// The address the agent may connect to among those `host` resolved to: each must be public or inside
    /// `[repos] allow_private`, so DNS cannot turn an allowed name into the agent's own network (the connection is
    /// then pinned to this address, so a second lookup cannot change it). A host the policy lists as an IP literal
    /// is allowed as named.
    pub fn checked_address(&self, resolved: &[std::net::IpAddr], policy: &RepoPolicy) -> Result<std::net::IpAddr, FieldError> {
        let (host, _) = self.endpoint();
        if let Ok(literal) = host.parse::<std::net::IpAddr>() {
            return Ok(literal);
        }
        let first = *resolved.first().ok_or_else(|| FieldError::new("repo_url", "resolves", format!("{host} resolves to no address")))?;
        for ip in resolved {
            if let Some(kind) = crate::core::addresses::non_public(*ip) {
                if !policy.allow_private.iter().any(|n| n.contains(*ip)) {
                    return Err(FieldError::new(
                        "repo_url",
                        "public_address",
                        format!("{host} resolves to {ip}, a {kind} address; the agent fetches only from public addresses unless [repos] allow_private lists that network"),
                    ));
                }
            }
        }
        Ok(first)
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(schemes: &[RepoScheme]) -> RepoPolicy {
        RepoPolicy { allowed_hosts: vec!["github.com".into(), "127.0.0.1:9418".into()], schemes: schemes.to_vec(), allow_private: vec![] }
    }

    #[test]
    fn accepts_plain_https() {
        let p = policy(&[RepoScheme::Https]);
        let u = RepoUrl::parse("https://github.com/owner/repo.git", &p).unwrap();
        assert_eq!(u.full_name(), "owner/repo");
        assert_eq!(RepoUrl::parse("https://GitHub.com/owner/repo", &p).unwrap().host(), "github.com");
    }

    #[test]
    fn refuses_dangerous_urls() {
        let p = policy(&[RepoScheme::Https]);
        for (bad, rule) in [
            ("http://github.com/o/r", "scheme"),
            ("file:///etc/passwd", "scheme"),
            ("ext::sh -c id", "no_whitespace"),
            ("ext::sh", "scheme"),
            ("/srv/git/repo", "scheme"),
            ("--upload-pack=touch", "not_option"),
            ("https://user:pw@github.com/o/r", "no_credentials"),
            ("https://tok@github.com/o/r", "no_credentials"),
            ("https://evil.com/o/r", "allowed_host"),
            ("https://github.com/o/r\n", "no_whitespace"),
            ("https://github.com/o", "path"),
            ("https://github.com/o/../r", "path"),
            ("https://github.com/o/r?x=1", "path"),
            ("https://github.com/o/-r", "path"),
            ("git@github.com:o/r.git", "scheme"),
            ("", "length"),
        ] {
            assert_eq!(RepoUrl::parse(bad, &p).unwrap_err().rule, rule, "{bad:?}");
        }
    }

    #[test]
    fn ssh_forms_only_when_enabled() {
        let p = policy(&[RepoScheme::Https, RepoScheme::Ssh]);
        assert_eq!(RepoUrl::parse("git@github.com:o/r.git", &p).unwrap().full_name(), "o/r");
        assert!(RepoUrl::parse("ssh://git@github.com/o/r.git", &p).is_ok());
        assert!(RepoUrl::parse("ssh://root@github.com/o/r.git", &p).is_err());
    }

    #[test]
    fn stored_urls_round_trip() {
        let p = policy(&[RepoScheme::Https, RepoScheme::Ssh]);
        for raw in ["https://github.com/o/r.git", "https://127.0.0.1:9418/o/r", "git@github.com:o/r.git", "ssh://git@github.com/o/r"] {
            assert_eq!(RepoUrl::from_stored(raw.to_string()), RepoUrl::parse(raw, &p).unwrap(), "{raw}");
        }
    }

    /// An allowed name that resolves into the agent's own network (or the cloud metadata address) is refused
    /// unless the operator allows that network; an IP literal the policy names is allowed as named.
    #[test]
    fn a_name_resolving_to_a_private_address_is_refused_unless_allowed() {
        let mut policy = RepoPolicy { allowed_hosts: vec!["git.example".into(), "127.0.0.1:9418".into()], schemes: vec![RepoScheme::Https, RepoScheme::Http], allow_private: vec![] };
        let url = RepoUrl::parse("https://git.example/o/r.git", &policy).unwrap();
        assert_eq!(url.endpoint(), ("git.example".into(), 443));
        for ip in ["127.0.0.1", "169.254.169.254", "10.0.0.5", "fd00::5"] {
            let e = url.checked_address(&[ip.parse().unwrap()], &policy).unwrap_err();
            assert_eq!((e.field.as_str(), e.rule), ("repo_url", "public_address"), "{ip}");
            assert!(e.message.contains(ip) && e.message.contains("allow_private"), "{}", e.message);
        }
        // One bad address among good ones is enough: the resolver may hand out any of them.
        assert!(url.checked_address(&["140.82.112.3".parse().unwrap(), "10.0.0.5".parse().unwrap()], &policy).is_err());
        assert_eq!(url.checked_address(&["140.82.112.3".parse().unwrap()], &policy).unwrap().to_string(), "140.82.112.3");
        policy.allow_private = vec![crate::core::addresses::Cidr::parse("10.0.0.0/8").unwrap()];
        assert!(url.checked_address(&["10.0.0.5".parse().unwrap()], &policy).is_ok());
        let literal = RepoUrl::parse("http://127.0.0.1:9418/o/r", &policy).unwrap();
        assert_eq!(literal.endpoint(), ("127.0.0.1".into(), 9418));
        assert!(literal.checked_address(&[], &policy).is_ok());
    }
}
