//! The repository check before a deployment is recorded: `git ls-remote` from the agent, so a wrong
//! repository or branch is a 422 naming the field in a second, not a failure on the guest after a
//! guest was made. Only a definite answer refuses a request; when the agent cannot tell (no network
//! to the host, a private repository, no git here) the request goes on and the guest tries.

use std::time::Duration;

use crate::core::deployment::Spec;
use crate::core::limits::RepoPolicy;
use crate::core::names::CommitSha;
use crate::core::validation::{FieldError, ValidationErrors};

/// How long the check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the answer for a repository and branch is reused by request-time checks: a burst of requests
/// for one repository asks it once, not once each (32 at once took 5–10 s each here, the resolver timing
/// out), and a branch created a moment ago is seen within this long.
const REUSE_FOR: Duration = Duration::from_secs(10);

/// At most this many answers are remembered; older ones are dropped first.
const REMEMBERED: usize = 1024;

type Shared = futures_util::future::Shared<futures_util::future::BoxFuture<'static, Source>>;

/// Request-time checks, shared: concurrent requests for one repository and branch wait for one
/// `git ls-remote`, and its answer is reused for [`REUSE_FOR`].
#[derive(Default)]
pub struct Checks {
    answers: std::sync::Mutex<std::collections::HashMap<(String, String), (std::time::Instant, Shared)>>,
}

impl Checks {
    pub async fn check(&self, spec: &Spec, policy: &RepoPolicy) -> Source {
        use futures_util::FutureExt;
        let key = (spec.repo_url.to_string(), spec.branch.as_str().to_string());
        let answer = {
            let mut answers = self.answers.lock().expect("checks poisoned");
            let now = std::time::Instant::now();
            answers.retain(|_, (at, _)| now.duration_since(*at) < REUSE_FOR);
            match answers.get(&key) {
                Some((_, shared)) => shared.clone(),
                None => {
                    if answers.len() >= REMEMBERED {
                        if let Some(oldest) = answers.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| k.clone()) {
                            answers.remove(&oldest);
                        }
                    }
                    let (spec, policy) = (spec.clone(), policy.clone());
                    let shared = async move { check(&spec, &policy).await }.boxed().shared();
                    answers.insert(key, (now, shared.clone()));
                    shared
                }
            }
        };
        answer.await
    }
}

/// What `git ls-remote` said about a repository and branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The branch exists, at this commit.
    Found(CommitSha),
    /// The repository answered, without that branch.
    NoBranch,
    /// The host answered that there is no such repository.
    NoRepository,
    /// The agent cannot tell (why, in words); the guest will try.
    Unverified(String),
    /// The outbound policy refuses the host's address (it resolves into a non-public network).
    Refused(FieldError),
}

impl Source {
    /// The refusal to answer with, for a definite "does not exist".
    pub fn refusal(&self, spec: &Spec) -> Option<ValidationErrors> {
        let e = match self {
            Source::NoBranch => FieldError::new("branch", "exists", format!("the repository has no branch {:?}", spec.branch.as_str())),
            Source::NoRepository => FieldError::new("repo_url", "exists", "no repository answers at this URL (or it is private and the agent has no access)"),
            Source::Refused(e) => e.clone(),
            _ => return None,
        };
        Some(ValidationErrors(vec![e]))
    }
}

/// How long resolving the repository's host may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The address git must connect to for a repository's host: the one the outbound policy checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    host: String,
    port: u16,
    ip: std::net::IpAddr,
}

impl Pin {
    pub fn new(host: String, port: u16, ip: std::net::IpAddr) -> Self {
        Self { host, port, ip }
    }

    /// git's `-c` setting that makes curl connect to the checked address instead of resolving the host again:
    /// `http.curloptResolve` (git-config(1), git >= 2.37) holding curl's `CURLOPT_RESOLVE` entry `host:port:address`
    /// (an IPv6 address in brackets).
    pub fn git_config(&self) -> String {
        match self.ip {
            std::net::IpAddr::V6(v6) => format!("http.curloptResolve={}:{}:[{v6}]", self.host, self.port),
            v4 => format!("http.curloptResolve={}:{}:{v4}", self.host, self.port),
        }
    }

    /// The `host:port:address` entry alone, as `deploy_app.sh fetch --resolve` takes it.
    pub fn entry(&self) -> String {
        self.git_config().trim_start_matches("http.curloptResolve=").to_string()
    }
}

/// Where git may connect for a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pinning {
    /// An http(s) host name, resolved once here and checked: git connects to this address only.
    Pinned(Pin),
    /// Nothing to pin: the URL names an IP address (checked as written by the host allow-list), or it is an ssh URL
    /// (ssh resolves the host itself; git cannot pin it, see docs/security.md).
    NotNeeded,
    /// The host resolves into a network the policy refuses.
    Refused(FieldError),
    /// The host could not be resolved here (why, in words).
    Unresolved(String),
}

/// Resolves the repository's host once and checks every address against the outbound policy.
pub async fn pin(url: &crate::core::repo::RepoUrl, policy: &RepoPolicy) -> Pinning {
    let text = url.as_str();
    if !(text.starts_with("https://") || text.starts_with("http://")) {
        return Pinning::NotNeeded;
    }
    let (host, port) = url.endpoint();
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Pinning::NotNeeded;
    }
    let resolved: Vec<std::net::IpAddr> = match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host.as_str(), port))).await {
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
        Ok(Err(e)) => return Pinning::Unresolved(format!("cannot resolve {host}: {e}")),
        Err(_) => return Pinning::Unresolved(format!("{host} did not resolve within {}s", RESOLVE_TIMEOUT.as_secs())),
    };
    match url.checked_address(&resolved, policy) {
        Ok(ip) => Pinning::Pinned(Pin { host, port, ip }),
        Err(e) => Pinning::Refused(e),
    }
}

/// The arguments of the agent's `git ls-remote` (after `git`): only the protocols the policy allows, no
/// redirects (the policy allowed this host, not wherever it might send git next), pinned when there is a pin.
pub fn ls_remote_args(url: &str, refname: &str, pin: Option<&Pin>) -> Vec<String> {
    let mut args: Vec<String> = ["-c", "protocol.allow=never", "-c", "protocol.https.allow=always", "-c", "protocol.http.allow=always", "-c", "http.followRedirects=false"]
        .map(String::from)
        .to_vec();
    if let Some(p) = pin {
        args.extend(["-c".to_string(), p.git_config()]);
    }
    args.extend(["ls-remote", "--exit-code", "--", url, refname].map(String::from));
    args
}

/// Asks the repository for the spec's branch, bounded in time; git runs with an argument vector (no
/// shell), no prompts, no redirects, and only the protocols the repository policy allows. The host is resolved
/// here once, its addresses checked against the outbound policy, and git pinned to the checked one ([`pin`]), so
/// DNS cannot answer differently for git (rebinding).
pub async fn check(spec: &Spec, policy: &RepoPolicy) -> Source {
    let url = spec.repo_url.to_string();
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Source::Unverified("ssh repositories are read with the guest's own key".into());
    }
    let pinned = match pin(&spec.repo_url, policy).await {
        Pinning::Pinned(p) => Some(p),
        Pinning::NotNeeded => None,
        Pinning::Refused(e) => return Source::Refused(e),
        Pinning::Unresolved(why) => return Source::Unverified(why),
    };
    let refname = format!("refs/heads/{}", spec.branch.as_str());
    let mut cmd = tokio::process::Command::new("git");
    cmd.args(ls_remote_args(&url, &refname, pinned.as_ref()))
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env_remove("GIT_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(CHECK_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Source::Unverified(format!("cannot run git here: {e}")),
        Err(_) => return Source::Unverified(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
    };
    classify(out.status.code(), &String::from_utf8_lossy(&out.stdout), &String::from_utf8_lossy(&out.stderr))
}

/// `git ls-remote --exit-code` ends 0 with a match (printing `<sha>\t<ref>`), 2 without one, 128 on
/// errors (git-ls-remote(1)).
fn classify(code: Option<i32>, stdout: &str, stderr: &str) -> Source {
    match code {
        Some(0) => match stdout.lines().next().and_then(|l| l.split_whitespace().next()).map(CommitSha::parse) {
            Some(Ok(c)) => Source::Found(c),
            _ => Source::Unverified(format!("git answered without a commit: {:?}", stdout.chars().take(100).collect::<String>())),
        },
        Some(2) => Source::NoBranch,
        _ => {
            let lower = stderr.to_ascii_lowercase();
            // GitHub: "remote: Repository not found."; smart HTTP 404: "repository '…' not found";
            // dumb HTTP and local paths: "does not appear to be a git repository".
            if lower.contains("repository not found") || (lower.contains("repository '") && lower.contains("' not found")) || lower.contains("does not appear to be a git repository") {
                Source::NoRepository
            } else {
                let first = stderr.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("git failed without a message");
                Source::Unverified(first.trim_start_matches("fatal: ").to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_git_and_the_hosts_word_them() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(classify(Some(0), &format!("{sha}\trefs/heads/main\n"), ""), Source::Found(CommitSha::parse(sha).unwrap()));
        assert!(matches!(classify(Some(0), "garbage\n", ""), Source::Unverified(_)));
        assert_eq!(classify(Some(2), "", ""), Source::NoBranch);
        assert_eq!(classify(Some(128), "", "remote: Repository not found.\nfatal: repository 'https://github.com/o/x/' not found\n"), Source::NoRepository);
        assert_eq!(classify(Some(128), "", "fatal: repository 'http://127.0.0.1:1/o/x.git/' not found\n"), Source::NoRepository);
        assert_eq!(
            classify(Some(128), "", "fatal: unable to access 'https://github.com/o/x/': Could not resolve host: github.com\n"),
            Source::Unverified("unable to access 'https://github.com/o/x/': Could not resolve host: github.com".into())
        );
        assert!(matches!(classify(Some(128), "", "fatal: could not read Username for 'https://github.com': terminal prompts disabled\n"), Source::Unverified(_)), "private: the guest may have access");
        assert!(matches!(classify(None, "", ""), Source::Unverified(_)));
    }

    /// A host name resolving into loopback is refused unless its network is allowed, and then pinned to the checked
    /// address; IP literals and ssh URLs have nothing to pin.
    #[tokio::test]
    async fn a_name_is_pinned_to_the_address_checked_and_a_private_one_refused() {
        use crate::core::addresses::Cidr;
        use crate::core::limits::{RepoPolicy, RepoScheme};
        use crate::core::repo::RepoUrl;
        let mut policy = RepoPolicy {
            allowed_hosts: vec!["localhost:8443".into(), "127.0.0.1:9".into(), "github.com".into()],
            schemes: vec![RepoScheme::Https, RepoScheme::Http, RepoScheme::Ssh],
            allow_private: vec![],
        };
        let url = RepoUrl::parse("https://localhost:8443/o/r.git", &policy).unwrap();
        match pin(&url, &policy).await {
            Pinning::Refused(e) => assert_eq!((e.field.as_str(), e.rule), ("repo_url", "public_address")),
            other => panic!("localhost must be refused: {other:?}"),
        }
        policy.allow_private = vec![Cidr::parse("127.0.0.0/8").unwrap(), Cidr::parse("::1/128").unwrap()];
        match pin(&url, &policy).await {
            Pinning::Pinned(p) => {
                assert!(p.entry() == "localhost:8443:127.0.0.1" || p.entry() == "localhost:8443:[::1]", "{}", p.entry());
                assert_eq!(p.git_config(), format!("http.curloptResolve={}", p.entry()));
            }
            other => panic!("an allowed network is pinned: {other:?}"),
        }
        for nothing in ["http://127.0.0.1:9/o/r", "ssh://git@github.com/o/r.git", "git@github.com:o/r.git"] {
            assert_eq!(pin(&RepoUrl::parse(nothing, &policy).unwrap(), &policy).await, Pinning::NotNeeded, "{nothing}");
        }
    }

    /// Sixteen requests for one repository at once ask it once: a local server counts the requests git
    /// makes (it answers 404, so each `git ls-remote` makes exactly one).
    #[tokio::test]
    async fn concurrent_requests_for_one_repository_share_one_check() {
        use crate::core::deployment::{RawSpec, Spec};
        use crate::core::limits::{Limits, RepoPolicy, RepoScheme};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = served.clone();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { return };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    // A fake server in a test: what the client sent, or whether it hung up, does not matter.
                    let _ = conn.read(&mut buf).await;
                    // Slow enough that all sixteen are waiting at once.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    // Likewise: a client that gave up first is what some of these tests do.
                    let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                });
            }
        });
        let policy = RepoPolicy { allowed_hosts: vec![format!("127.0.0.1:{port}")], schemes: vec![RepoScheme::Http], allow_private: vec![] };
        let raw = RawSpec { name: Some("a".into()), framework: Some("flask".into()), repo_url: Some(format!("http://127.0.0.1:{port}/o/r")), ..RawSpec::default() };
        let spec = Spec::parse(raw, &Limits::default(), &policy).unwrap();
        let checks = std::sync::Arc::new(Checks::default());
        let mut all = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (checks, spec) = (checks.clone(), spec.clone());
            let policy = policy.clone();
            all.spawn(async move { checks.check(&spec, &policy).await });
        }
        let answers: Vec<Source> = all.join_all().await;
        assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
        assert_eq!(answers[0], Source::NoRepository);
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1, "one git request for sixteen checks");
        // Within the reuse window the answer is remembered; no new request.
        checks.check(&spec, &policy).await;
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
        server.abort();
    }
}
