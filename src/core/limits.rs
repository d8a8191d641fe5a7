//! The configurable bounds a deployment request must stay within, and the repository URL policy.

use std::ops::RangeInclusive;

/// Resource bounds (defaults are the original design's limits) and the branch names a request may name. The
/// validators and the OpenAPI document (`api::spec`) both read them, so what the document states is what is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub cpu: RangeInclusive<u32>,
    pub memory_mib: RangeInclusive<u32>,
    pub disk_gb: RangeInclusive<u32>,
    /// `[repos] branch_pattern`.
    pub branch_pattern: crate::core::names::BranchPattern,
}

impl Default for Limits {
    fn default() -> Self {
        Self { cpu: 1..=8, memory_mib: 512..=16384, disk_gb: 1..=500, branch_pattern: Default::default() }
    }
}

/// Which repository URLs a deployment may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPolicy {
    /// Lowercase host names (optionally `host:port`) that repositories may live on.
    pub allowed_hosts: Vec<String>,
    /// `https` always; `http` only for a LAN/test git server; `ssh` enables `ssh://` and `git@host:owner/repo.git`.
    pub schemes: Vec<RepoScheme>,
    /// Non-public networks an allowed host *name* may resolve into (loopback, RFC 1918, link-local, ULA, …);
    /// by default none. A host listed as an IP literal is allowed as named.
    pub allow_private: Vec<crate::core::addresses::Cidr>,
}

crate::core::spelling::string_enum! {
    /// A URL scheme repositories may be fetched over.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum RepoScheme {
        Https = "https",
        Http = "http",
        Ssh = "ssh",
    }
}

impl Default for RepoPolicy {
    fn default() -> Self {
        Self { allowed_hosts: vec!["github.com".into()], schemes: vec![RepoScheme::Https], allow_private: vec![] }
    }
}
