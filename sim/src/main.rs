//! `pvedeploy-sim`: runs the sandbox cluster over HTTPS until SIGTERM/SIGINT (or prepares the base image).

use std::net::SocketAddr;
use std::path::PathBuf;

use pvedeploy_sim::{SimConfig, Simulator};

const USAGE: &str = "usage: pvedeploy-sim [--listen ADDR:PORT] [--state-dir DIR] [--schema PATH/apidoc.json]\n\
                     [--real-guests] [--node-ssh-keys AUTHORIZED_KEYS_FILE] [--persistent]\n\
       pvedeploy-sim --prepare-base\n\
defaults: --listen 127.0.0.1:8006 --state-dir ./pvedeploy-sim-state --schema <crate>/data/apidoc.json\n\
--real-guests: systemd-nspawn guests when this machine can run them (else API-only, reason printed)\n\
--node-ssh-keys: an SFTP endpoint per node (root; needs root and sshd) accepting these keys\n\
--persistent: keep the cluster in <state-dir>/cluster.json and start again what ran (see README.md)\n\
--prepare-base: build/unpack the real guests' base image in $PVEDEPLOY_CACHE_DIR and exit";

struct Args {
    listen: SocketAddr,
    state_dir: PathBuf,
    schema: Option<PathBuf>,
    prepare_base: bool,
    real_guests: bool,
    node_ssh_keys: Option<PathBuf>,
    persistent: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { listen: SocketAddr::from(([127, 0, 0, 1], 8006)), state_dir: PathBuf::from("pvedeploy-sim-state"), schema: None, prepare_base: false, real_guests: false, node_ssh_keys: None, persistent: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next()).ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--listen" => args.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--state-dir" => args.state_dir = PathBuf::from(value()?),
            "--schema" => args.schema = Some(PathBuf::from(value()?)),
            "--prepare-base" => args.prepare_base = true,
            "--real-guests" => args.real_guests = true,
            "--persistent" => args.persistent = true,
            "--node-ssh-keys" => args.node_ssh_keys = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    if args.prepare_base {
        return pvedeploy_sim::guest::prepare_base_cli().await;
    }
    let mut cfg = SimConfig::sandbox(args.state_dir);
    cfg.persistent = args.persistent;
    if args.real_guests {
        cfg = match cfg.clone().with_real_guests() {
            Ok(real) => real,
            Err(why) => {
                println!("pvedeploy-sim: real guests unavailable, using API-only guests: {why}");
                cfg
            }
        };
    }
    if let Some(path) = &args.node_ssh_keys {
        let keys = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--node-ssh-keys {}: {e}", path.display()))?;
        cfg = cfg.with_node_ssh(&keys);
    }
    cfg.listen = args.listen;
    if let Some(schema) = args.schema {
        cfg.schema_path = schema;
    }
    let token = cfg.tokens.first().map(|t| (t.id.clone(), t.secret.clone())).unwrap_or_default();
    let user = cfg.users.first().map(|u| (u.userid.clone(), u.password.clone())).unwrap_or_default();
    let backend = cfg.backend.describe();
    let nodes: Vec<String> = cfg.cluster.nodes.iter().map(|n| n.name.clone()).collect();
    let handle = Simulator::start(cfg).await?;
    println!("pvedeploy-sim: Proxmox VE 9.1 API simulator ({backend})");
    println!("base URL:    {}", handle.base_url());
    println!("token id:    {}", token.0);
    println!("token secret:{}", format_args!(" {}", token.1));
    println!("user:        {} / {}", user.0, user.1);
    println!("fingerprint: {}", handle.fingerprint_sha256());
    println!("faults:      https://{}/_sim/faults (admin token)", handle.addr());
    for node in &nodes {
        if let Some((addr, key)) = handle.node_ssh(node) {
            println!("node ssh:    {node} root@{} port {} (SFTP only), host key {key}", addr.ip(), addr.port());
        }
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("pvedeploy-sim: shutting down");
    handle.shutdown().await;
    Ok(())
}
