//! The SSH executor against a real OpenSSH server started by the test (and the simulator's SFTP-only node endpoint): commands, exit codes and signals, live lines, stdin, timeouts, pinning, login, upload, hostile argv, session limits.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use pvedeploy::keys::{generate_ed25519, KeyPair};
use pvedeploy::ssh::{fingerprint, load_private_key, parse_public_key, Connection, HostKeyPin, RemoteCommand, Ssh, SshError, SshSettings, Stream, Target};
use russh::keys::PrivateKey;

/// A throwaway OpenSSH server on a random 127.66.x.y address: own host key, one authorized client
/// key, root login by key only. Killed by PID on drop.
struct Sshd {
    addr: SocketAddr,
    host: KeyPair,
    client: KeyPair,
    dir: tempfile::TempDir,
    child: Child,
}

fn sshd_binary() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/sbin/sshd");
    let found = if fixed.is_file() { Some(fixed) } else { crate::helpers::tool("sshd") };
    // SAFETY: no arguments, no side effects.
    if found.is_some() && unsafe { geteuid() } != 0 {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "the SSH tests need root in CI");
        eprintln!("SKIPPED: the SSH tests run sshd as root (login as root) and need root");
        return None;
    }
    found
}

extern "C" {
    fn geteuid() -> u32;
}

fn free_loopback_addr() -> SocketAddr {
    for _ in 0..100 {
        let ip = std::net::Ipv4Addr::new(127, 66, rand::random_range(1..=254), rand::random_range(1..=254));
        if let Ok(l) = TcpListener::bind((ip, 0)) {
            return l.local_addr().unwrap();
        }
    }
    panic!("no free 127.66.x.y address");
}

fn write_private(path: &Path, key: &KeyPair) {
    std::fs::write(path, key.private_openssh.expose()).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

impl Sshd {
    async fn start() -> Option<Sshd> {
        let sshd = sshd_binary()?;
        let dir = tempfile::tempdir().unwrap();
        let host = generate_ed25519("test-host");
        let client = generate_ed25519("test-client");
        let host_path = dir.path().join("host_ed25519");
        write_private(&host_path, &host);
        let ak = dir.path().join("authorized_keys");
        std::fs::write(&ak, format!("{}\n", client.public_openssh)).unwrap();
        let addr = free_loopback_addr();
        let cfg = dir.path().join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "ListenAddress {addr}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\nStrictModes no\nUsePAM no\n\
                 PubkeyAuthentication yes\nAuthenticationMethods publickey\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nAllowUsers root\nMaxSessions 10\nPrintMotd no\nSubsystem sftp internal-sftp\n",
                host_path.display(),
                dir.path().join("sshd.pid").display(),
                ak.display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
        let child = Command::new(sshd).args(["-D", "-e", "-f"]).arg(&cfg).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().expect("sshd starts");
        let mut me = Sshd { addr, host, client, dir, child };
        for _ in 0..200 {
            if let Some(st) = me.child.try_wait().unwrap() {
                panic!("sshd exited ({st}): {}", me.log());
            }
            if banner(addr).await {
                return Some(me);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("sshd never answered on {addr}: {}", me.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    async fn client_key(&self) -> Arc<PrivateKey> {
        load_private_key(self.client.private_openssh.clone()).await.unwrap()
    }

    async fn target(&self) -> Target {
        Target { addr: self.addr, user: "root".into(), host_key: HostKeyPin::Key(parse_public_key(&self.host.public_openssh).unwrap()), client_key: self.client_key().await }
    }

    async fn connect(&self, ssh: &Ssh) -> Connection {
        match ssh.connect(&self.target().await).await {
            Ok(c) => c,
            Err(e) => panic!("connect: {e}\nsshd log:\n{}", self.log()),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn banner(addr: SocketAddr) -> bool {
    use tokio::io::AsyncReadExt;
    let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr)).await else { return false };
    let mut buf = [0u8; 4];
    matches!(tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut buf)).await, Ok(Ok(_))) && &buf == b"SSH-"
}

fn settings() -> SshSettings {
    SshSettings { connect_timeout: Duration::from_secs(20), command_timeout: Duration::from_secs(60), max_sessions_per_host: 4, ..SshSettings::default() }
}

fn cmd(argv: &[&str]) -> RemoteCommand {
    RemoteCommand::new(argv)
}

#[tokio::test]
async fn commands_report_output_exit_codes_and_signals() {
    let Some(sshd) = Sshd::start().await else { return };
    let conn = sshd.connect(&Ssh::new(settings())).await;

    let out = conn.output(&cmd(&["echo", "hello", "world"])).await.unwrap();
    assert_eq!((out.finished.exit_code, out.stdout.as_str(), out.stderr.as_str()), (Some(0), "hello world", ""));
    assert!(out.finished.success());

    let three = conn.run(&cmd(&["sh", "-c", "exit 3"]), None).await.unwrap();
    assert_eq!((three.exit_code, three.signal), (Some(3), None));

    let killed = conn.run(&cmd(&["sh", "-c", "kill -KILL $$"]), None).await.unwrap();
    assert_eq!((killed.exit_code, killed.signal.as_deref()), (None, Some("KILL")), "{killed:?}");

    let empty = conn.run(&RemoteCommand::default(), None).await.unwrap_err();
    assert!(matches!(empty, SshError::InvalidCommand(_)), "{empty}");
    conn.close().await;
}

#[tokio::test]
async fn stdout_and_stderr_arrive_separately_while_the_command_still_runs() {
    let Some(sshd) = Sshd::start().await else { return };
    let conn = sshd.connect(&Ssh::new(settings())).await;
    let go = sshd.path("go");
    // Prints, then blocks until the test creates `go`: the test only creates it after the first
    // lines reached it, so this finishes only if lines stream before the command ends.
    let script = "echo out-1; echo err-1 >&2; while [ ! -e \"$1\" ]; do sleep 0.05; done; echo out-2; echo err-2 >&2; printf 'no-newline'";
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let waiting = cmd(&["sh", "-c", script, "sh", &go]);
    let run = conn.run(&waiting, Some(tx));
    tokio::pin!(run);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        tokio::select! {
            line = rx.recv() => seen.push(line.expect("a line before the end")),
            done = &mut run => panic!("the command ended before its first lines were seen: {done:?}"),
        }
    }
    std::fs::write(&go, "").unwrap();
    let finished = run.await.unwrap();
    assert_eq!(finished.exit_code, Some(0));
    while let Some(line) = rx.recv().await {
        seen.push(line);
    }
    let of = |s: Stream| seen.iter().filter(|l| l.stream == s).map(|l| l.line.as_str()).collect::<Vec<_>>();
    assert_eq!(of(Stream::Stdout), ["out-1", "out-2", "no-newline"]);
    assert_eq!(of(Stream::Stderr), ["err-1", "err-2"]);
}

#[tokio::test]
async fn stdin_bytes_reach_the_command() {
    let Some(sshd) = Sshd::start().await else { return };
    let conn = sshd.connect(&Ssh::new(settings())).await;
    let out = conn.output(&cmd(&["cat"]).stdin(&b"line one\nline 'two' $(id)\n"[..])).await.unwrap();
    assert_eq!(out.stdout, "line one\nline 'two' $(id)");
    let big = vec![b'x'; 1 << 20];
    let out = conn.output(&cmd(&["wc", "-c"]).stdin(big)).await.unwrap();
    assert_eq!(out.stdout.trim(), "1048576");
    // A command that ignores its stdin still finishes normally.
    let out = conn.output(&cmd(&["true"]).stdin(vec![0u8; 1 << 20])).await.unwrap();
    assert_eq!(out.finished.exit_code, Some(0));
}

#[tokio::test]
async fn a_command_over_its_timeout_is_stopped_and_the_connection_stays_usable() {
    let Some(sshd) = Sshd::start().await else { return };
    let conn = sshd.connect(&Ssh::new(settings())).await;
    let pidfile = sshd.path("sleeper.pid");
    let err = conn
        .run(&cmd(&["sh", "-c", "echo $$ > \"$1\"; exec sleep 300", "sh", &pidfile]).timeout(Duration::from_secs(1)), None)
        .await
        .unwrap_err();
    match &err {
        SshError::Timeout { program, after, .. } => assert_eq!((program.as_str(), *after), ("sh", Duration::from_secs(1))),
        other => panic!("expected a timeout, got {other}"),
    }
    assert!(err.to_string().contains("\"sh\""), "{err}");
    // The remote process goes away (the host-side `timeout` sends SIGHUP a few seconds after ours,
    // since sshd refuses signal requests for root logins); bounded wait, no timing assertion.
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_string();
    let mut gone = false;
    for _ in 0..600 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the timed-out command (pid {pid}) is still running; sshd log:\n{}", sshd.log());
    let out = conn.output(&cmd(&["echo", "still here"])).await.unwrap();
    assert_eq!(out.stdout, "still here");
}

#[tokio::test]
async fn a_fingerprint_pin_accepts_the_right_key_and_refuses_others() {
    let Some(sshd) = Sshd::start().await else { return };
    let mut target = sshd.target().await;
    target.host_key = HostKeyPin::parse(&target.host_key.fingerprint()).unwrap();
    let conn = Ssh::new(settings()).connect(&target).await.expect("the fingerprint matches");
    conn.close().await;
    let impostor = parse_public_key(&generate_ed25519("other").public_openssh).unwrap();
    target.host_key = HostKeyPin::parse(&fingerprint(&impostor)).unwrap();
    assert!(matches!(Ssh::new(settings()).connect(&target).await, Err(SshError::HostKeyMismatch { .. })));
}

#[tokio::test]
async fn a_wrong_pinned_host_key_is_refused_naming_both_fingerprints() {
    let Some(sshd) = Sshd::start().await else { return };
    let impostor = parse_public_key(&generate_ed25519("other").public_openssh).unwrap();
    let mut target = sshd.target().await;
    let real = target.host_key.fingerprint();
    target.host_key = HostKeyPin::Key(impostor.clone());
    let err = Ssh::new(settings()).connect(&target).await.err().expect("refused");
    match &err {
        SshError::HostKeyMismatch { expected_fingerprint, got_fingerprint, .. } => {
            assert_eq!((expected_fingerprint.as_str(), got_fingerprint.as_str()), (fingerprint(&impostor).as_str(), real.as_str()));
        }
        other => panic!("expected HostKeyMismatch, got {other}"),
    }
    assert!(!err.retry_safe());
    let msg = err.to_string();
    assert!(msg.contains(&real) && msg.contains(&fingerprint(&impostor)), "{msg}");
    assert!(!sshd.log().contains("Accepted publickey"), "no login happened:\n{}", sshd.log());
}

#[tokio::test]
async fn a_wrong_client_key_is_an_auth_error() {
    let Some(sshd) = Sshd::start().await else { return };
    let mut target = sshd.target().await;
    target.client_key = load_private_key(generate_ed25519("stranger").private_openssh).await.unwrap();
    let err = Ssh::new(settings()).connect(&target).await.err().expect("refused");
    assert!(matches!(&err, SshError::Auth { user, .. } if user == "root"), "{err}");
    // Nothing listening is a retryable connect error.
    let mut nowhere = target.clone();
    nowhere.addr = free_loopback_addr();
    let err = Ssh::new(settings()).connect(&nowhere).await.err().expect("refused");
    assert!(matches!(err, SshError::Connect { .. }) && err.retry_safe(), "{err}");
}

#[tokio::test]
async fn upload_writes_the_file_with_its_mode_atomically() {
    let Some(sshd) = Sshd::start().await else { return };
    let conn = sshd.connect(&Ssh::new(settings())).await;
    let path = sshd.path("up/sub/app.env");
    conn.upload(&path, b"SECRET=1\n", 0o600).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"SECRET=1\n");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o600);

    let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    conn.upload(&path, &big, 0o640).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), big, "replaced in full");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o640);
    let names: Vec<_> = std::fs::read_dir(sshd.path("up/sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["app.env"], "no temporary file left behind");

    let err = conn.upload(&sshd.path("up/"), b"x", 0o600).await.unwrap_err();
    assert!(matches!(err, SshError::Sftp { .. }), "{err}");
}

#[tokio::test]
async fn hostile_arguments_reach_the_remote_command_unchanged() {
    let Some(sshd) = Sshd::start().await else { return };
    let conn = sshd.connect(&Ssh::new(settings())).await;
    let marker = sshd.path("pwned");
    let hostile: Vec<String> = [
        "$(touch MARKER)", "`touch MARKER`", "; touch MARKER", "&& touch MARKER", "| touch MARKER", "a\ntouch MARKER", "'", "\"", "\\",
        "*", "~", "-n", "--upload-pack=touch MARKER", "ext::sh -c touch% MARKER", "ünïcødé ✓", "", "X=1", "'\"'\"'",
    ]
    .iter()
    .map(|s| s.replace("MARKER", &marker))
    .collect();
    let mut argv = vec!["printf".to_string(), "%s\\0".to_string()];
    argv.extend(hostile.iter().cloned());
    let out = conn.output(&RemoteCommand { argv, stdin: None, timeout: None }).await.unwrap();
    let mut back: Vec<&str> = out.stdout.split('\0').collect();
    assert_eq!(back.pop(), Some(""));
    assert_eq!(back, hostile);
    assert!(!Path::new(&marker).exists(), "nothing was executed");
}

#[tokio::test]
async fn sessions_beyond_the_per_host_limit_wait_their_turn() {
    let Some(sshd) = Sshd::start().await else { return };
    let ssh = Ssh::new(SshSettings { max_sessions_per_host: 1, ..settings() });
    let (a, b) = (sshd.connect(&ssh).await, sshd.connect(&ssh).await);
    let lock = sshd.path("lock");
    // Each takes a directory lock for a moment; overlapping runs would make one exit 9.
    let critical = "mkdir \"$1\" || exit 9; sleep 0.3; rmdir \"$1\"";
    let c = cmd(&["sh", "-c", critical, "sh", &lock]);
    let (x, y, z) = tokio::join!(a.run(&c, None), b.run(&c, None), a.run(&c, None));
    assert_eq!([x.unwrap().exit_code, y.unwrap().exit_code, z.unwrap().exit_code], [Some(0); 3]);
}

#[tokio::test]
async fn upload_to_an_sftp_only_proxmox_node() {
    if sshd_binary().is_none() {
        return;
    }
    let agent = generate_ed25519("pvedeploy-agent");
    let dir = tempfile::tempdir().unwrap();
    let cfg = pvedeploy_sim::SimConfig::sandbox(dir.path().to_path_buf()).with_node_ssh(&agent.public_openssh);
    let sim = pvedeploy_sim::Simulator::start(cfg).await.expect("simulator with node SSH starts");
    let (addr, host_key) = sim.node_ssh("pve1").expect("pve1 has an SSH endpoint");
    let target = Target { addr, user: "root".into(), host_key: HostKeyPin::Key(parse_public_key(&host_key).unwrap()), client_key: load_private_key(agent.private_openssh.clone()).await.unwrap() };
    let conn = Ssh::new(settings()).connect(&target).await.expect("connects to the node");
    let yaml = b"#cloud-config\nusers: []\n";
    conn.upload("/var/lib/vz/snippets/test.yaml", yaml, 0o644).await.expect("uploads over SFTP only");
    conn.upload("/var/lib/vz/snippets/test.yaml", yaml, 0o644).await.expect("replaces an existing snippet");
    let local = sim.storage_dir("pve1", "local").unwrap().join("snippets/test.yaml");
    assert_eq!(std::fs::read(&local).unwrap(), yaml);
    assert_eq!(std::fs::metadata(&local).unwrap().permissions().mode() & 0o777, 0o644);
    conn.close().await;
    sim.shutdown().await;
}
