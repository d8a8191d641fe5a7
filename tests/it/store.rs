//! The store's concurrency primitives on a real embedded SurrealDB: VMID claims, leases, lease-checked writes.

use pvedeploy::config::Config;
use pvedeploy::core::deployment::DeploymentId;
use pvedeploy::core::names::VmId;
use pvedeploy::core::provision::{Progress, Step};
use pvedeploy::store::logs::{Level, LogLine};
use pvedeploy::store::vmids::Claim;
use pvedeploy::store::{Store, StoreError};

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::for_data_dir(dir.path());
    (Store::open(&cfg.database).await.unwrap(), dir)
}

#[tokio::test]
async fn vmid_claims_are_exclusive_even_when_raced() {
    let (store, _dir) = store().await;
    let id = VmId::new(4242).unwrap();
    let deps: Vec<DeploymentId> = (0..10).map(|_| DeploymentId::generate()).collect();
    let results = futures_util::future::join_all(deps.iter().map(|d| store.claim_vmid(id, d))).await;
    let winners = results.iter().filter(|r| matches!(r, Ok(Claim::Claimed))).count();
    assert_eq!(winners, 1, "{results:?}");
    let owner = store.vmid_owner(id).await.unwrap().unwrap();
    let owner_dep = deps.iter().find(|d| d.as_str() == owner).unwrap();
    assert_eq!(store.claim_vmid(id, owner_dep).await.unwrap(), Claim::Taken { by_us: true });
    let other = deps.iter().find(|d| d.as_str() != owner).unwrap();
    store.release_vmid(id, other).await.unwrap();
    assert!(store.vmid_owner(id).await.unwrap().is_some(), "only the holder releases");
    store.release_vmid(id, owner_dep).await.unwrap();
    assert_eq!(store.claim_vmid(id, other).await.unwrap(), Claim::Claimed);
}

#[tokio::test]
async fn leases_exclude_expire_and_fence_stale_writers() {
    let (store, _dir) = store().await;
    let dep = DeploymentId::generate();
    let a = store.acquire_lease(&dep, "agent-a", 200).await.unwrap().expect("free lease");
    assert!(store.acquire_lease(&dep, "agent-b", 200).await.unwrap().is_none(), "held by a");
    let at = |step: Step| Progress { step, vmid: Some(VmId::new(100).unwrap()), ..Progress::default() };
    store.save_progress(&a, &at(Step::Create), None).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    let b = store.acquire_lease(&dep, "agent-b", 10_000).await.unwrap().expect("expired lease is taken over");
    assert!(matches!(store.save_progress(&a, &at(Step::Start), None).await, Err(StoreError::Stale)), "a's token is fenced");
    assert!(matches!(store.renew_lease(&a, 1000).await, Err(StoreError::Stale)));
    // the step's line commits with the progress (and a fenced writer's line never does)
    let line = LogLine::new(&dep, Level::Info, "provision", "boot disk grown");
    assert_eq!(store.save_progress(&b, &at(Step::Resize), Some(&line)).await.unwrap(), None, "no deployment record, so no status");
    assert_eq!(store.load_progress(&dep).await.unwrap().unwrap().step, Step::Resize);
    assert_eq!(store.read_log(&dep, 0, 10).await.unwrap(), vec![line]);
    store.renew_lease(&b, 10_000).await.unwrap();
    store.release_lease(&b).await.unwrap();
    assert!(store.acquire_lease(&dep, "agent-a", 200).await.unwrap().is_some());
}

#[tokio::test]
async fn two_agents_racing_for_one_lease_get_exactly_one() {
    let (store, _dir) = store().await;
    let dep = DeploymentId::generate();
    let tries = futures_util::future::join_all((0..8).map(|i| {
        let store = store.clone();
        let dep = dep.clone();
        async move { store.acquire_lease(&dep, &format!("agent-{i}"), 5000).await }
    }))
    .await;
    assert_eq!(tries.iter().filter(|r| matches!(r, Ok(Some(_)))).count(), 1, "{tries:?}");
}

/// A step's commit answers with the deployment's status as it is now, so a destroy requested while
/// the step ran is seen at once.
#[tokio::test]
async fn a_saved_step_answers_with_the_status_as_it_is_now() {
    use pvedeploy::core::deployment::{Deployment, RawSpec, Spec};
    use pvedeploy::core::limits::{Limits, RepoPolicy};
    use pvedeploy::core::status::Status;
    let (store, _dir) = store().await;
    let raw = RawSpec { name: Some("stepper".into()), framework: Some("flask".into()), repo_url: Some("https://github.com/o/r".into()), ..RawSpec::default() };
    let d = Deployment::new(Spec::parse(raw, &Limits::default(), &RepoPolicy::default()).unwrap(), pvedeploy::store::now_millis());
    store.create_deployment(&d, "test").await.unwrap();
    let lease = store.acquire_lease(&d.id, "agent-a", 10_000).await.unwrap().expect("free lease");
    let p = Progress { step: Step::Create, vmid: Some(VmId::new(100).unwrap()), ..Progress::default() };
    assert_eq!(store.save_progress(&lease, &p, None).await.unwrap(), Some(Status::Pending));
    let line = LogLine::new(&d.id, Level::Info, "provision", "cloned");
    assert_eq!(store.save_progress(&lease, &p, Some(&line)).await.unwrap(), Some(Status::Pending), "with a line too");
}
