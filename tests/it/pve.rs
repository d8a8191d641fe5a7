//! The Proxmox VE client against the in-process simulator (every request schema-checked): each endpoint, sshkeys encoding, TLS trust, 403s and injected faults.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use pvedeploy::config::Secret;
use pvedeploy::core::names::{NodeName, VmId};
use pvedeploy::pve::{
    encode_sshkeys, first_guest_ipv4, CloneRequest, CloudInitKind, GuestState, GuestType, LxcCreate, LxcInterface, LxcUpdate,
    PowerAction, PveClient, PveConfig, PveError, QemuUpdate, ResourceKind, ResourceType, RetryPolicy, TaskOutcome, TlsTrust,
};
use pvedeploy_sim::{SimConfig, SimHandle, Simulator, TokenSpec};

const POLL: Duration = Duration::from_millis(50);
const DEADLINE: Duration = Duration::from_secs(20);

struct Env {
    sim: SimHandle,
    client: PveClient,
    token: TokenSpec,
    _dir: tempfile::TempDir,
}

async fn start() -> Env {
    start_with(|_| {}).await
}

async fn start_with(tweak: impl FnOnce(&mut SimConfig)) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = SimConfig::sandbox(dir.path().to_path_buf());
    cfg.timing.agent_delay_secs = 0.3;
    tweak(&mut cfg);
    let token = cfg.tokens[0].clone();
    let sim = Simulator::start(cfg).await.expect("simulator starts");
    let client = PveClient::new(config(&sim, &token, pinned(&sim))).expect("client");
    Env { sim, client, token, _dir: dir }
}

fn pinned(sim: &SimHandle) -> TlsTrust {
    TlsTrust::parse_fingerprint(&sim.fingerprint_sha256()).expect("the simulator's fingerprint parses")
}

fn config(sim: &SimHandle, token: &TokenSpec, trust: TlsTrust) -> PveConfig {
    PveConfig::new(sim.base_url(), token.id.clone(), Secret::new(token.secret.clone()), trust)
}

fn node(n: &str) -> NodeName {
    NodeName::parse(n).unwrap()
}

fn vmid(n: u64) -> VmId {
    VmId::new(n).unwrap()
}

impl Env {
    async fn done(&self, upid: pvedeploy::pve::Upid) -> TaskOutcome {
        self.client.wait_task(&upid, POLL, DEADLINE).await.unwrap_or_else(|e| panic!("task {upid} failed: {e:?}"))
    }

    async fn linked_clone(&self, newid: VmId, name: &str) {
        let req = CloneRequest { newid, name: Some(name.into()), full: false, storage: None, target: None, description: None, pool: None };
        let upid = self.client.qemu_clone(&node("pve1"), vmid(9000), &req).await.expect("clone");
        assert_eq!(self.done(upid).await, TaskOutcome::Ok);
    }
}

/// Two keys separated by a newline; comments with spaces, `+`, `/`, `=` and `@`.
const KEYS: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHf0+zq/x9Y= ops team key +/= me@laptop\n\
                    ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7+/ab== second key / a=b\n";

#[tokio::test]
async fn reads_cluster_nodes_and_storage() {
    let env = start().await;
    let c = &env.client;
    let v = c.version().await.unwrap();
    assert_eq!((v.version.as_str(), v.major()), ("9.1.1", Some(9)));

    let nodes = c.nodes().await.unwrap();
    assert_eq!(nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(), ["pve1", "pve2"]);
    assert!(nodes.iter().all(|n| n.online && n.maxcpu == 8 && n.maxmem == 32 << 30 && n.mem > 0 && n.maxdisk > 0));
    assert_eq!(nodes[0].ssl_fingerprint.as_deref(), Some(env.sim.fingerprint_sha256().as_str()));

    let st = c.node_status(&node("pve1")).await.unwrap();
    assert_eq!((st.cpus, st.memory_total, st.loadavg.len()), (8, 32 << 30, 3));
    assert!(st.pveversion.starts_with("pve-manager/9.1") && st.rootfs_total > st.rootfs_used);

    let all = c.cluster_resources(None).await.unwrap();
    let template = all.iter().find(|r| r.vmid == Some(vmid(9000))).expect("template listed");
    assert_eq!((&template.kind, template.template, template.guest_type), (&ResourceType::Qemu, true, Some(GuestType::Qemu)));
    assert_eq!(template.node.as_ref().map(NodeName::as_str), Some("pve1"));
    assert!(c.cluster_resources(Some(ResourceKind::Vm)).await.unwrap().iter().all(|r| r.guest_type.is_some()));
    assert_eq!(c.cluster_resources(Some(ResourceKind::Node)).await.unwrap().len(), 2);
    let storages = c.cluster_resources(Some(ResourceKind::Storage)).await.unwrap();
    let shared = storages.iter().find(|r| r.storage.as_deref() == Some("shared")).unwrap();
    assert!(shared.shared && shared.content.contains(&"images".to_string()) && shared.maxdisk > 0);

    assert_eq!(c.next_id().await.unwrap(), vmid(100));

    let s = c.storages(&node("pve1")).await.unwrap();
    let lvm = s.iter().find(|s| s.storage == "local-lvm").unwrap();
    assert!(lvm.kind == "lvmthin" && lvm.active && lvm.enabled && !lvm.shared && lvm.total == lvm.used + lvm.avail);
    assert_eq!(lvm.content, ["images", "rootdir"]);

    let tmpl = c.storage_content(&node("pve1"), "local", Some("vztmpl")).await.unwrap();
    assert_eq!(tmpl.len(), 1);
    assert_eq!(tmpl[0].volid, "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst");
    let disks = c.storage_content(&node("pve1"), "local-lvm", None).await.unwrap();
    assert!(disks.iter().any(|v| v.vmid == Some(vmid(9000)) && v.content == "images" && v.size == 4 << 30));

    let err = c.storage_content(&node("pve1"), "nope", None).await.unwrap_err();
    assert!(matches!(err, PveError::NotFound { .. }), "{err:?}");
    env.sim.shutdown().await;
}

#[tokio::test]
async fn vm_clone_configure_resize_start_agent_stop_delete() {
    let env = start().await;
    let c = &env.client;
    let pve1 = node("pve1");

    let tmpl = c.qemu_config(&pve1, vmid(9000)).await.unwrap();
    assert!(tmpl.template && tmpl.agent);
    assert_eq!((tmpl.cores, tmpl.memory_mib, tmpl.name.as_deref()), (Some(2), Some(2048), Some("debian12-cloud")));
    assert_eq!(tmpl.raw["memory"], "2048");
    assert!(c.qemu_list(&pve1).await.unwrap().iter().any(|g| g.vmid == vmid(9000) && g.template));

    // clone
    let id = c.next_id().await.unwrap();
    let req = CloneRequest {
        newid: id,
        name: Some("web-1".into()),
        full: true,
        storage: Some("local-lvm".into()),
        target: None,
        description: Some("made by the client test".into()),
        pool: None,
    };
    let upid = c.qemu_clone(&pve1, vmid(9000), &req).await.unwrap();
    assert_eq!((upid.node().as_str(), upid.task_type(), upid.id()), ("pve1", "qmclone", "9000"));
    assert_eq!(env.done(upid.clone()).await, TaskOutcome::Ok);
    let status = c.task_status(&upid).await.unwrap();
    assert_eq!((status.running, status.exitstatus.as_deref()), (false, Some("OK")));
    assert_eq!(c.task_log(&upid, 1).await.unwrap(), ["TASK OK"]);
    assert!(c.task_log(&upid, 50).await.unwrap().len() > 1);

    // the same id again: taken
    let err = c.qemu_clone(&pve1, vmid(9000), &req).await.unwrap_err();
    assert!(matches!(err, PveError::AlreadyExists { vmid } if vmid == id.get()) && err.is_vmid_taken(), "{err:?}");

    // config
    let cfg = c.qemu_config(&pve1, id).await.unwrap();
    assert_eq!((cfg.name.as_deref(), cfg.lock.as_deref(), cfg.template), (Some("web-1"), None, false));
    assert_eq!(cfg.description.as_deref(), Some("made by the client test"));
    let update = QemuUpdate {
        cores: Some(4),
        memory_mib: Some(4096),
        ciuser: Some("deploy".into()),
        cipassword: Some(Secret::new("s3cret pass".into())),
        sshkeys: Some(KEYS.into()),
        ipconfig0: Some("ip=dhcp".into()),
        nameserver: Some("1.1.1.1".into()),
        searchdomain: Some("example.org".into()),
        cicustom: None,
        tags: vec!["pvedeploy".into(), "web".into()],
        agent: Some(true),
        description: Some("line one\nline two".into()),
        onboot: Some(true),
        digest: Some(cfg.digest.clone()),
        ..QemuUpdate::default()
    };
    c.qemu_update_config(&pve1, id, &update).await.unwrap();
    let cfg2 = c.qemu_config(&pve1, id).await.unwrap();
    assert_eq!((cfg2.cores, cfg2.memory_mib, cfg2.onboot, cfg2.agent), (Some(4), Some(4096), true, true));
    assert_eq!(cfg2.tags, ["pvedeploy", "web"]);
    assert_eq!(cfg2.raw["cipassword"], "**********");
    assert_eq!(cfg2.raw["ipconfig0"], "ip=dhcp");
    assert_ne!(cfg2.digest, cfg.digest);
    // a stale digest is refused
    let stale = QemuUpdate { cores: Some(2), digest: Some(cfg.digest.clone()), ..QemuUpdate::default() };
    let err = c.qemu_update_config(&pve1, id, &stale).await.unwrap_err();
    assert!(matches!(&err, PveError::Server { status: 500, message } if message.contains("file changed by other user")), "{err:?}");
    // a malformed value is a 400 naming the parameter
    let bad = QemuUpdate { ipconfig0: Some("ip=not-an-ip".into()), ..QemuUpdate::default() };
    match c.qemu_update_config(&pve1, id, &bad).await.unwrap_err() {
        PveError::Invalid { errors } => assert!(errors.contains_key("ipconfig0"), "{errors:?}"),
        other => panic!("{other:?}"),
    }
    let del = QemuUpdate { delete: vec!["description".into()], ..QemuUpdate::default() };
    c.qemu_update_config(&pve1, id, &del).await.unwrap();
    assert_eq!(c.qemu_config(&pve1, id).await.unwrap().description, None);

    // resize (PVE 9: a task)
    let upid = c.qemu_resize(&pve1, id, "scsi0", "+4G").await.unwrap().expect("PVE 9 answers a task");
    assert_eq!(env.done(upid).await, TaskOutcome::Ok);
    assert!(c.qemu_config(&pve1, id).await.unwrap().raw["scsi0"].contains("size=8G"));
    let shrink = c.qemu_resize(&pve1, id, "scsi0", "2G").await.unwrap().unwrap();
    let err = c.wait_task(&shrink, POLL, DEADLINE).await.unwrap_err();
    assert!(matches!(&err, PveError::TaskFailed { exitstatus, lock_timeout: false, .. } if exitstatus.contains("shrinking disks is not supported")), "{err:?}");

    // agent before start
    let err = c.qemu_agent_interfaces(&pve1, id).await.unwrap_err();
    assert!(matches!(err, PveError::AgentNotRunning), "{err:?}");

    // start, agent
    assert_eq!(env.done(c.qemu_power(&pve1, id, PowerAction::Start).await.unwrap()).await, TaskOutcome::Ok);
    let cur = c.qemu_current(&pve1, id).await.unwrap();
    assert_eq!((cur.status, cur.qmpstatus.as_deref(), cur.agent), (GuestState::Running, Some("running"), true));
    let started = Instant::now();
    let ifaces = loop {
        match c.qemu_agent_interfaces(&pve1, id).await {
            Ok(i) => break i,
            Err(PveError::AgentNotRunning) if started.elapsed() < DEADLINE => tokio::time::sleep(POLL).await,
            Err(e) => panic!("agent: {e:?}"),
        }
    };
    let ip = env.sim.guest_ipv4(id.get()).expect("the sim gave the guest an address");
    assert_eq!(first_guest_ipv4(&ifaces), Some(ip));
    let eth0 = ifaces.iter().find(|i| i.name == "eth0").unwrap();
    assert!(eth0.ips.contains(&(IpAddr::V4(ip), 8)));
    let mac = cfg2.net0.as_deref().and_then(|n| n.split(',').next()).and_then(|m| m.split_once('=')).map(|(_, m)| m.to_lowercase());
    assert_eq!(eth0.hardware_address, mac);
    c.qemu_agent_ping(&pve1, id).await.unwrap();
    let waited = c.qemu_wait_agent_interfaces(&pve1, id, POLL, DEADLINE).await.unwrap();
    assert_eq!(first_guest_ipv4(&waited), Some(ip));

    // reboot, shutdown, start, stop
    assert_eq!(env.done(c.qemu_power(&pve1, id, PowerAction::Reboot).await.unwrap()).await, TaskOutcome::Ok);
    let shutdown = PowerAction::Shutdown { timeout_secs: Some(30), force_stop: true };
    assert_eq!(env.done(c.qemu_power(&pve1, id, shutdown).await.unwrap()).await, TaskOutcome::Ok);
    assert_eq!(c.qemu_current(&pve1, id).await.unwrap().status, GuestState::Stopped);
    assert_eq!(env.done(c.qemu_power(&pve1, id, PowerAction::Start).await.unwrap()).await, TaskOutcome::Ok);
    // a running VM cannot be destroyed
    let err = c.qemu_delete(&pve1, id, true, true).await.unwrap_err();
    assert!(matches!(&err, PveError::Server { status: 500, message } if message.ends_with("is running - destroy failed")), "{err:?}");
    assert_eq!(env.done(c.qemu_power(&pve1, id, PowerAction::Stop).await.unwrap()).await, TaskOutcome::Ok);
    assert_eq!(c.qemu_current(&pve1, id).await.unwrap().status, GuestState::Stopped);

    // delete
    assert_eq!(env.done(c.qemu_delete(&pve1, id, true, true).await.unwrap()).await, TaskOutcome::Ok);
    let err = c.qemu_config(&pve1, id).await.unwrap_err();
    assert!(matches!(err, PveError::NotFound { .. }), "{err:?}");
    assert!(!env.sim.vm_exists(id.get()));
    env.sim.shutdown().await;
}

#[tokio::test]
async fn sshkeys_arrive_intact_in_config_and_cloud_init() {
    let env = start().await;
    let (c, pve1, id) = (&env.client, node("pve1"), vmid(150));
    env.linked_clone(id, "keys").await;
    let update = QemuUpdate { ciuser: Some("deploy".into()), sshkeys: Some(KEYS.into()), ..QemuUpdate::default() };
    c.qemu_update_config(&pve1, id, &update).await.unwrap();

    let cfg = c.qemu_config(&pve1, id).await.unwrap();
    // PVE stores (and returns) the url-encoded form
    assert_eq!(cfg.raw["sshkeys"], encode_sshkeys(KEYS));
    assert!(cfg.raw["sshkeys"].contains("%2B%2F%3D%20me%40laptop%0Assh-rsa"));
    assert_eq!(cfg.sshkeys.as_deref(), Some(KEYS));
    assert_eq!(env.sim.vm_config(id.get()).unwrap()["sshkeys"], encode_sshkeys(KEYS));

    // cloud-init sees the decoded keys, one per entry
    let user = c.cloudinit_dump(&pve1, id, CloudInitKind::User).await.unwrap();
    for key in KEYS.lines() {
        assert!(user.contains(&format!("  - {key}\n")), "{key:?} missing from:\n{user}");
    }
    assert!(user.starts_with("#cloud-config") && user.contains("user: deploy"), "{user}");
    let network = c.cloudinit_dump(&pve1, id, CloudInitKind::Network).await.unwrap();
    assert!(network.contains("version: 1"), "{network}");
    let meta = c.cloudinit_dump(&pve1, id, CloudInitKind::Meta).await.unwrap();
    assert!(meta.contains("instance-id"), "{meta}");
    env.sim.shutdown().await;
}

#[tokio::test]
async fn snapshots_of_vms_and_containers() {
    let env = start().await;
    let (c, pve1, id) = (&env.client, node("pve1"), vmid(160));
    env.linked_clone(id, "snaps").await;
    assert_eq!(env.done(c.snapshot_create(GuestType::Qemu, &pve1, id, "before", Some("first")).await.unwrap()).await, TaskOutcome::Ok);
    c.qemu_update_config(&pve1, id, &QemuUpdate { cores: Some(6), ..QemuUpdate::default() }).await.unwrap();
    let list = c.snapshot_list(GuestType::Qemu, &pve1, id).await.unwrap();
    let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["before", "current"]);
    assert!(list[0].snaptime.is_some() && list[0].description == "first" && list[1].is_current());
    assert_eq!(list[1].parent.as_deref(), Some("before"));
    assert_eq!(env.done(c.snapshot_rollback(GuestType::Qemu, &pve1, id, "before").await.unwrap()).await, TaskOutcome::Ok);
    assert_eq!(c.qemu_config(&pve1, id).await.unwrap().cores, Some(2));
    assert_eq!(env.done(c.snapshot_delete(GuestType::Qemu, &pve1, id, "before").await.unwrap()).await, TaskOutcome::Ok);
    assert_eq!(c.snapshot_list(GuestType::Qemu, &pve1, id).await.unwrap().len(), 1);
    let err = c.snapshot_rollback(GuestType::Qemu, &pve1, id, "gone").await;
    let err = match err {
        Ok(upid) => c.wait_task(&upid, POLL, DEADLINE).await.unwrap_err(),
        Err(e) => e,
    };
    assert!(err.to_string().contains("snapshot 'gone' does not exist"), "{err:?}");

    let ct = vmid(260);
    env.done(c.lxc_create(&pve1, &container(ct, false)).await.unwrap()).await;
    assert_eq!(env.done(c.snapshot_create(GuestType::Lxc, &pve1, ct, "ct-snap", None).await.unwrap()).await, TaskOutcome::Ok);
    assert!(c.snapshot_list(GuestType::Lxc, &pve1, ct).await.unwrap().iter().any(|s| s.name == "ct-snap"));
    env.sim.shutdown().await;
}

fn container(id: VmId, start: bool) -> LxcCreate {
    LxcCreate {
        vmid: id,
        ostemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
        hostname: "ct-test".into(),
        cores: 1,
        memory_mib: 512,
        swap_mib: 256,
        rootfs: "local-lvm:8".into(),
        net0: "name=eth0,bridge=vmbr0,ip=dhcp".into(),
        ssh_public_keys: Some(KEYS.into()),
        password: None,
        unprivileged: true,
        features: Some("nesting=1".into()),
        tags: vec!["pvedeploy".into()],
        start,
        description: Some("container test".into()),
        pool: None,
    }
}

#[tokio::test]
async fn container_create_configure_start_interfaces_delete() {
    let env = start().await;
    let (c, pve1, id) = (&env.client, node("pve1"), vmid(200));
    let upid = c.lxc_create(&pve1, &container(id, false)).await.unwrap();
    assert_eq!(upid.task_type(), "vzcreate");
    assert_eq!(env.done(upid).await, TaskOutcome::Ok);
    let cfg = c.lxc_config(&pve1, id).await.unwrap();
    assert_eq!((cfg.hostname.as_deref(), cfg.cores, cfg.memory_mib, cfg.swap_mib), (Some("ct-test"), Some(1), Some(512), Some(256)));
    assert!(cfg.unprivileged && cfg.tags == ["pvedeploy"] && cfg.features.as_deref() == Some("nesting=1"));
    assert!(cfg.rootfs.as_deref().is_some_and(|r| r.contains("size=8G")), "{:?}", cfg.rootfs);
    assert!(cfg.net0.as_deref().is_some_and(|n| n.contains("hwaddr=")), "{:?}", cfg.net0);

    let update = LxcUpdate { cores: Some(2), memory_mib: Some(1024), onboot: Some(true), digest: Some(cfg.digest.clone()), ..LxcUpdate::default() };
    c.lxc_update_config(&pve1, id, &update).await.unwrap();
    let cfg = c.lxc_config(&pve1, id).await.unwrap();
    assert_eq!((cfg.cores, cfg.memory_mib, cfg.onboot), (Some(2), Some(1024), true));

    assert_eq!(env.done(c.lxc_resize(&pve1, id, "rootfs", "+2G").await.unwrap()).await, TaskOutcome::Ok);
    assert!(c.lxc_config(&pve1, id).await.unwrap().rootfs.unwrap().contains("size=10G"));

    assert_eq!(env.done(c.lxc_power(&pve1, id, PowerAction::Start).await.unwrap()).await, TaskOutcome::Ok);
    assert_eq!(c.lxc_current(&pve1, id).await.unwrap().status, GuestState::Running);
    assert!(c.lxc_list(&pve1).await.unwrap().iter().any(|g| g.vmid == id && g.status == GuestState::Running));
    let started = Instant::now();
    let ifaces = loop {
        // Running at once lists lo and eth0 with its link-local IPv6 only; the IPv4 comes with the network.
        let i = c.lxc_interfaces(&pve1, id).await.unwrap();
        if LxcInterface::first_ipv4(&i).is_some() || started.elapsed() > DEADLINE {
            break i;
        }
        tokio::time::sleep(POLL).await;
    };
    let ip = env.sim.guest_ipv4(id.get()).unwrap();
    assert_eq!(LxcInterface::first_ipv4(&ifaces), Some(ip));
    let eth0 = ifaces.iter().find(|i| i.name == "eth0").unwrap();
    assert_eq!(eth0.inet, Some((ip, 8)));
    assert!(eth0.inet6.is_some() && eth0.hwaddr.is_some());

    assert_eq!(env.done(c.lxc_power(&pve1, id, PowerAction::Reboot).await.unwrap()).await, TaskOutcome::Ok);
    let shutdown = PowerAction::Shutdown { timeout_secs: Some(10), force_stop: true };
    assert_eq!(env.done(c.lxc_power(&pve1, id, shutdown).await.unwrap()).await, TaskOutcome::Ok);
    assert_eq!(c.lxc_current(&pve1, id).await.unwrap().status, GuestState::Stopped);
    // A stopped container's `interfaces` is `{"data": null}` (pve-container LXC.pm:447-460), not an error.
    assert!(c.lxc_interfaces(&pve1, id).await.unwrap().is_empty());
    assert_eq!(env.done(c.lxc_delete(&pve1, id, true, true).await.unwrap()).await, TaskOutcome::Ok);
    assert!(matches!(c.lxc_config(&pve1, id).await.unwrap_err(), PveError::NotFound { .. }));

    // create and start in one task
    let id2 = vmid(201);
    assert_eq!(env.done(c.lxc_create(&pve1, &container(id2, true)).await.unwrap()).await, TaskOutcome::Ok);
    assert_eq!(c.lxc_current(&pve1, id2).await.unwrap().status, GuestState::Running);
    assert_eq!(env.done(c.lxc_power(&pve1, id2, PowerAction::Stop).await.unwrap()).await, TaskOutcome::Ok);
    env.sim.shutdown().await;
}

#[tokio::test]
async fn tls_is_pinned_or_ca_verified_and_fails_closed() {
    let env = start().await;
    let other = start().await;

    // right fingerprint
    assert!(env.client.version().await.is_ok());

    // wrong fingerprint: refused, and the error says which fingerprints
    let wrong = PveClient::new(config(&env.sim, &env.token, pinned(&other.sim))).unwrap();
    match wrong.version().await.unwrap_err() {
        PveError::Tls { message } => {
            assert!(message.contains("fingerprint mismatch"), "{message}");
            assert!(message.contains(&other.sim.fingerprint_sha256()), "{message}");
            assert!(message.contains(&env.sim.fingerprint_sha256()), "{message}");
        }
        e => panic!("{e:?}"),
    }

    // CA bundle: the simulator's certificate (names localhost and 127.0.0.1)
    for host in ["localhost", "127.0.0.1"] {
        let mut cfg = config(&env.sim, &env.token, TlsTrust::CaBundlePem(env.sim.cert_pem()));
        cfg.endpoint = format!("https://{host}:{}", env.sim.addr().port());
        let ca = PveClient::new(cfg).unwrap();
        assert_eq!(ca.version().await.unwrap().version, "9.1.1", "{host}");
    }
    // … another certificate as the CA: refused
    let bad_ca = PveClient::new(config(&env.sim, &env.token, TlsTrust::CaBundlePem(other.sim.cert_pem()))).unwrap();
    assert!(matches!(bad_ca.version().await.unwrap_err(), PveError::Tls { .. }));

    // a wrong secret: 401
    let mut token = env.token.clone();
    token.secret = "00000000-0000-0000-0000-000000000000".into();
    let unauth = PveClient::new(config(&env.sim, &token, pinned(&env.sim))).unwrap();
    assert!(matches!(unauth.version().await.unwrap_err(), PveError::Unauthorized));

    other.sim.shutdown().await;
    env.sim.shutdown().await;
}

#[tokio::test]
async fn missing_privileges_are_named() {
    let limited = TokenSpec {
        id: "auditor@pve!ro".into(),
        secret: "11111111-2222-3333-4444-555555555555".into(),
        acl: vec![("/".into(), vec!["VM.Audit".into(), "Sys.Audit".into(), "Datastore.Audit".into()])],
    };
    let env = start_with(|cfg| cfg.tokens.push(limited.clone())).await;
    let ro = PveClient::new(config(&env.sim, &limited, pinned(&env.sim))).unwrap();
    assert!(ro.qemu_config(&node("pve1"), vmid(9000)).await.is_ok());
    match ro.qemu_resize(&node("pve1"), vmid(9000), "scsi0", "+1G").await.unwrap_err() {
        PveError::Forbidden { path, privilege } => assert_eq!((path.as_str(), privilege.as_str()), ("/vms/9000", "VM.Config.Disk")),
        e => panic!("{e:?}"),
    }
    let err = ro.qemu_power(&node("pve1"), vmid(9000), PowerAction::Start).await.unwrap_err();
    assert!(matches!(&err, PveError::Forbidden { path, privilege } if path == "/vms/9000" && privilege == "VM.PowerMgmt"), "{err:?}");
    env.sim.shutdown().await;
}

#[tokio::test]
async fn storage_lock_timeout_fails_the_clone_task_as_a_lock_timeout() {
    let env = start().await;
    env.sim.faults().force_lock_timeout(Some("local-lvm"));
    let req = CloneRequest { newid: vmid(170), name: None, full: true, storage: Some("local-lvm".into()), target: None, description: None, pool: None };
    let upid = env.client.qemu_clone(&node("pve1"), vmid(9000), &req).await.unwrap();
    let err = env.client.wait_task(&upid, POLL, DEADLINE).await.unwrap_err();
    match &err {
        PveError::TaskFailed { exitstatus, log_tail, lock_timeout } => {
            assert!(*lock_timeout, "{err:?}");
            assert!(exitstatus.contains("can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout"), "{exitstatus}");
            assert!(log_tail.last().is_some_and(|l| l.starts_with("TASK ERROR")), "{log_tail:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_retryable() && err.is_lock_timeout() && !err.is_vmid_taken());
    // after the fault is gone, the whole clone can be retried with the same id
    env.sim.faults().clear();
    assert_eq!(env.done(env.client.qemu_clone(&node("pve1"), vmid(9000), &req).await.unwrap()).await, TaskOutcome::Ok);
    env.sim.shutdown().await;
}

#[tokio::test]
async fn slow_answers_time_out_and_transient_failures_are_retried() {
    let env = start().await;
    env.sim.faults().add_latency("^/version$", Duration::from_secs(3)).unwrap();
    let mut cfg = config(&env.sim, &env.token, pinned(&env.sim));
    cfg.timeout = Duration::from_millis(300);
    let impatient = PveClient::new(cfg).unwrap().with_retry(RetryPolicy::NONE);
    let t = Instant::now();
    assert!(matches!(impatient.version().await.unwrap_err(), PveError::Timeout));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // other calls are not slowed down
    assert!(impatient.nodes().await.is_ok());

    // pve2 unreachable (pveproxy answers 595); it comes back while the GET is being retried
    env.sim.faults().set_node_offline("pve2", true);
    let err = env.client.clone().with_retry(RetryPolicy::NONE).node_status(&node("pve2")).await.unwrap_err();
    assert!(matches!(&err, PveError::Transport { retry_safe: true, message } if message.contains("595")), "{err:?}");
    let faults = env.sim.faults();
    let heal = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        faults.set_node_offline("pve2", false);
    });
    let patient = env.client.clone().with_retry(RetryPolicy { attempts: 8, base_delay: Duration::from_millis(100), max_delay: Duration::from_millis(400), deadline: Duration::from_secs(30) });
    let t = Instant::now();
    let st = patient.node_status(&node("pve2")).await.expect("retried until the node answered");
    assert!(st.cpus == 8 && t.elapsed() >= Duration::from_millis(300));
    heal.await.unwrap();
    env.sim.shutdown().await;
}

#[tokio::test]
async fn failed_and_hanging_tasks() {
    let env = start().await;
    let (c, pve1, id) = (&env.client, node("pve1"), vmid(180));
    env.linked_clone(id, "tasks").await;

    env.sim.faults().fail_task("qmstart", "start failed: QEMU exited with code 1");
    let err = c.wait_task(&c.qemu_power(&pve1, id, PowerAction::Start).await.unwrap(), POLL, DEADLINE).await.unwrap_err();
    match &err {
        PveError::TaskFailed { exitstatus, log_tail, lock_timeout } => {
            assert_eq!(exitstatus, "start failed: QEMU exited with code 1");
            assert_eq!(log_tail.last().map(String::as_str), Some("TASK ERROR: start failed: QEMU exited with code 1"));
            assert!(!lock_timeout && !err.is_retryable());
        }
        other => panic!("{other:?}"),
    }

    env.sim.faults().clear();
    env.sim.faults().hang_task("qmstart");
    let upid = c.qemu_power(&pve1, id, PowerAction::Start).await.unwrap();
    let err = c.wait_task(&upid, POLL, Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(&err, PveError::TaskDeadline { upid: u, .. } if *u == upid), "{err:?}");
    assert!(c.task_status(&upid).await.unwrap().running);
    c.task_stop(&upid).await.unwrap();
    let status = c.task_status(&upid).await.unwrap();
    assert!(!status.running && status.exitstatus.is_some_and(|s| s != "OK"));
    env.sim.shutdown().await;
}
