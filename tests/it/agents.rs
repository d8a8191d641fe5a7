//! Several agents on one database: each deployment's work is claimed by exactly one agent through a
//! lease; another agent takes over an expired lease and resumes. In-process engines on one store.

use std::time::Duration;

use pvedeploy::config::Config;
use pvedeploy::core::deployment::{Deployment, RawSpec};
use pvedeploy::core::limits::{Limits, RepoPolicy};
use pvedeploy::core::status::Status;
use pvedeploy::engine::provision::{ProvisionSettings, Provisioner};
use pvedeploy::engine::Engine;
use pvedeploy::pve::{PveClient, PveConfig, TlsTrust};
use pvedeploy::store::Store;
use pvedeploy_sim::ClusterSpec;

use crate::provision::{start_sim, Cluster};

fn engine(cluster: &Cluster, store: &Store, name: &str) -> Engine {
    let (token_id, secret) = cluster.sim.admin_token();
    let trust = TlsTrust::parse_fingerprint(&cluster.sim.fingerprint_sha256()).unwrap();
    let endpoint = format!("https://{}", cluster.sim.addr());
    let client = PveClient::new(PveConfig::new(endpoint.clone(), token_id.clone(), pvedeploy::config::Secret::new(secret.clone()), trust)).unwrap();
    let c = pvedeploy::sandbox::cluster_settings(endpoint, token_id, pvedeploy::config::Secret::new(secret), cluster.sim.fingerprint_sha256(), None);
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test";
    let mut settings = ProvisionSettings::from_config(&c, key.into(), pvedeploy::core::cloud_init::Template::default_template()).unwrap();
    settings.poll = Duration::from_millis(50);
    Engine::new(store.clone(), Limits::default(), RepoPolicy::default(), Some(Provisioner::new(client, settings)), name.into())
}

async fn pending_deployment(store: &Store, name: &str) -> Deployment {
    let raw = RawSpec { name: Some(name.into()), framework: Some("flask".into()), repo_url: Some("https://github.com/o/r".into()), ..RawSpec::default() };
    let spec = pvedeploy::core::deployment::Spec::parse(raw, &Limits::default(), &RepoPolicy::default()).unwrap();
    let d = Deployment::new(spec, pvedeploy::store::now_millis());
    store.create_deployment(&d, "test").await.unwrap();
    d
}

async fn wait_status(store: &Store, d: &Deployment, want: Status) -> Deployment {
    for _ in 0..400 {
        let now = store.get_deployment(&d.id).await.unwrap().unwrap();
        if now.status == want {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never reached {want}: {:?}", store.get_deployment(&d.id).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_agent_takes_over_an_expired_lease_and_resumes() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Config::for_data_dir(dir.path()).database).await.unwrap();
    let d = pending_deployment(&store, "orphaned").await;
    // agent a took the work and died: its lease runs out in one second and is never renewed
    let dead = store.acquire_lease(&d.id, "agent-a", 1000).await.unwrap().unwrap();
    let b = engine(&cluster, &store, "agent-b");
    assert_eq!(b.resume_unfinished().await.unwrap(), 1);
    let done = wait_status(&store, &d, Status::Installing).await;
    assert!(done.ip_address.is_some() && done.proxmox_id.is_some(), "{done:?}");
    // the dead agent's token no longer writes anything
    assert!(store.renew_lease(&dead, 1000).await.is_err());
    b.shutdown(Duration::from_secs(5)).await;
    cluster.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_agents_never_work_on_one_deployment_at_once() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Config::for_data_dir(dir.path()).database).await.unwrap();
    let deployments = [pending_deployment(&store, "one").await, pending_deployment(&store, "two").await, pending_deployment(&store, "three").await];
    let a = engine(&cluster, &store, "agent-a");
    let b = engine(&cluster, &store, "agent-b");
    let (ra, rb) = tokio::join!(a.resume_unfinished(), b.resume_unfinished());
    assert_eq!((ra.unwrap(), rb.unwrap()), (3, 3), "both agents see all the work");
    let mut vmids = Vec::new();
    for d in &deployments {
        let done = wait_status(&store, d, Status::Installing).await;
        vmids.push(done.proxmox_id.unwrap().get());
    }
    a.shutdown(Duration::from_secs(10)).await;
    b.shutdown(Duration::from_secs(10)).await;
    let guests: Vec<u32> = (100..200).filter(|v| cluster.sim.vm_exists(*v)).collect();
    vmids.sort_unstable();
    assert_eq!(guests, vmids, "one guest per deployment: no deployment was provisioned twice");
    cluster.sim.shutdown().await;
}
