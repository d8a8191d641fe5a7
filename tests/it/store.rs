//! The store's concurrency primitives on a real embedded SurrealDB: VMID claims, leases, lease-checked writes.

use pvedeploy::config::Config;
use pvedeploy::core::deployment::DeploymentId;
use pvedeploy::core::names::VmId;
use pvedeploy::core::provision::{GuestAt, Progress, Step};
use pvedeploy::store::logs::{Level, LogLine};
use pvedeploy::store::vmids::Claim;
use pvedeploy::store::{Store, StoreError};

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::for_data_dir(dir.path());
    (Store::open(&cfg.database).await.unwrap(), dir)
}

/// A new `pending` deployment named `name`, recorded.
async fn pending_deployment(store: &Store, name: &str) -> pvedeploy::core::deployment::Deployment {
    use pvedeploy::core::deployment::{Deployment, RawSpec, Spec};
    use pvedeploy::core::limits::{Limits, RepoPolicy};
    let raw = RawSpec { name: Some(name.into()), framework: Some("flask".into()), repo_url: Some("https://github.com/o/r".into()), ..RawSpec::default() };
    let d = Deployment::new(Spec::parse(raw, &Limits::default(), &RepoPolicy::default()).unwrap(), pvedeploy::store::now_millis());
    store.create_deployment(&d, "test").await.unwrap();
    d
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

/// A progress at `step` for guest `vmid` on node pve1.
fn at_step(step: Step, vmid: VmId) -> Progress {
    let guest = GuestAt { node: pvedeploy::core::names::NodeName::parse("pve1").unwrap(), vmid, static_ip: None };
    match step {
        Step::Create => Progress::Create { guest, attempts: 0 },
        Step::Resize => Progress::Resize { guest, host_key: None },
        Step::Start => Progress::Start { guest, host_key: None },
        other => panic!("no example progress at {other:?}"),
    }
}

#[tokio::test]
async fn leases_exclude_expire_and_fence_stale_writers() {
    let (store, _dir) = store().await;
    let dep = DeploymentId::generate();
    let a = store.acquire_lease(&dep, "agent-a", 200).await.unwrap().expect("free lease");
    assert!(store.acquire_lease(&dep, "agent-b", 200).await.unwrap().is_none(), "held by a");
    let at = |step: Step| at_step(step, VmId::new(100).unwrap());
    store.save_progress(&a, &at(Step::Create), None).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    let b = store.acquire_lease(&dep, "agent-b", 10_000).await.unwrap().expect("expired lease is taken over");
    assert!(matches!(store.save_progress(&a, &at(Step::Start), None).await, Err(StoreError::Stale)), "a's token is fenced");
    assert!(matches!(store.renew_lease(&a, 1000).await, Err(StoreError::Stale)));
    // the step's line commits with the progress (and a fenced writer's line never does)
    let line = LogLine::new(&dep, Level::Info, "provision", "boot disk grown");
    assert_eq!(store.save_progress(&b, &at(Step::Resize), Some(&line)).await.unwrap(), None, "no deployment record, so no status");
    assert_eq!(store.load_progress(&dep).await.unwrap().unwrap().step(), Step::Resize);
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
    use pvedeploy::core::status::Status;
    let (store, _dir) = store().await;
    let d = pending_deployment(&store, "stepper").await;
    let lease = store.acquire_lease(&d.id, "agent-a", 10_000).await.unwrap().expect("free lease");
    let p = at_step(Step::Create, VmId::new(100).unwrap());
    assert_eq!(store.save_progress(&lease, &p, None).await.unwrap(), Some(Status::Pending));
    let line = LogLine::new(&d.id, Level::Info, "provision", "cloned");
    assert_eq!(store.save_progress(&lease, &p, Some(&line)).await.unwrap(), Some(Status::Pending), "with a line too");
}

/// A step commits its id claim, lines and deployment change with its progress, or nothing at all: an id
/// another deployment claimed first fails the whole step (`Taken`), so the engine chooses again.
#[tokio::test]
async fn a_step_commits_its_claim_lines_and_deployment_change_whole_or_not_at_all() {
    use pvedeploy::core::status::Status;
    use pvedeploy::store::provision::StepWrite;
    let (store, _dir) = store().await;
    let d = pending_deployment(&store, "whole").await;
    let lease = store.acquire_lease(&d.id, "agent-a", 10_000).await.unwrap().expect("free lease");
    let (taken, free) = (VmId::new(4300).unwrap(), VmId::new(4301).unwrap());
    assert_eq!(store.claim_vmid(taken, &DeploymentId::generate()).await.unwrap(), Claim::Claimed, "another deployment holds 4300");

    let at = |vmid| at_step(Step::Create, vmid);
    let lines = [LogLine::new(&d.id, Level::Info, "provision", "placed"), LogLine::new(&d.id, Level::Info, "provision", "reserved")];
    let lost = store.save_step(&lease, StepWrite { claim: Some(taken), ..StepWrite::progress(&at(taken), &lines) }).await;
    assert!(matches!(lost, Err(StoreError::Taken { .. })), "{lost:?}");
    assert_eq!(store.load_progress(&d.id).await.unwrap(), None, "no progress from a step that lost its id");
    assert!(store.read_log(&d.id, 0, 10).await.unwrap().is_empty(), "nor its lines");

    let saved = store.save_step(&lease, StepWrite { claim: Some(free), ..StepWrite::progress(&at(free), &lines) }).await.unwrap();
    assert_eq!(saved.status, Some(Status::Pending));
    assert_eq!(store.vmid_owner(free).await.unwrap().as_deref(), Some(d.id.as_str()));
    assert_eq!(store.load_progress(&d.id).await.unwrap().unwrap().guest().map(|g| g.vmid), Some(free));
    assert_eq!(store.read_log(&d.id, 0, 10).await.unwrap(), lines.to_vec(), "both lines, in order");

    // A deployment change rides along, revision-checked: a stale copy fails the whole step.
    let mut next = d.clone();
    next.status = Status::Provisioning;
    next.proxmox_id = Some(free);
    let created = at(free);
    let step = StepWrite { deployment: Some((&next, Status::Pending, "guest created")), ..StepWrite::progress(&created, &[]) };
    let saved = store.save_step(&lease, step).await.unwrap();
    assert_eq!(saved.status, Some(Status::Provisioning), "the status as the step left it");
    assert_eq!(saved.deployment.as_ref().map(|s| s.revision), Some(d.revision + 1));
    assert_eq!(store.get_deployment(&d.id).await.unwrap().unwrap().proxmox_id, Some(free));
    let mut stale = d.clone();
    stale.ip_address = Some(std::net::Ipv4Addr::new(127, 0, 0, 9));
    let later = at_step(Step::Start, free);
    let step = StepWrite { deployment: Some((&stale, Status::Pending, "address known")), ..StepWrite::progress(&later, &[]) };
    assert!(matches!(store.save_step(&lease, step).await, Err(StoreError::Stale)));
    assert_eq!(store.load_progress(&d.id).await.unwrap().unwrap().step(), Step::Create, "the progress did not move either");
    assert_eq!(store.get_deployment(&d.id).await.unwrap().unwrap().ip_address, None);
}

/// A failed or destroyed deployment gives back every address it holds, also one its progress never
/// recorded (claimed by a step whose commit failed), and nobody else's.
#[tokio::test]
async fn releasing_a_deployments_addresses_frees_all_of_its_claims_and_only_those() {
    let (store, _dir) = store().await;
    let (dep, other) = (DeploymentId::generate(), DeploymentId::generate());
    let a = |n: u8| std::net::Ipv4Addr::new(127, 78, 9, n);
    for (addr, owner) in [(a(1), &dep), (a(2), &dep), (a(3), &other)] {
        assert_eq!(store.claim_address(addr, owner).await.unwrap(), Claim::Claimed);
    }
    store.release_addresses_of(&dep).await.unwrap();
    let left: Vec<_> = store.address_claims().await.unwrap();
    assert_eq!(left, vec![(a(3), other.to_string())]);
}

/// The deploy figures come from the releases that ended, each counted once by the write that finished
/// it (tallies, not a scan of every release), whatever writes follow (a rewrite, a supersede); the
/// duration quantiles walk the newest finished releases on an index and stop.
#[tokio::test]
async fn deploy_figures_come_from_the_releases_that_ended() {
    use pvedeploy::core::names::CommitSha;
    use pvedeploy::core::release::{DeployStep, ReleaseId};
    use pvedeploy::store::releases::{Release, ReleaseStatus, Trigger, RECENT_DEPLOYS};
    let (store, _dir) = store().await;
    let d = pending_deployment(&store, "figures").await;
    let commit = CommitSha::parse("0123456789abcdef0123456789abcdef01234567").unwrap();
    let release = |i: i64, status, took: Option<i64>| {
        let start = 1_000_000 + i * 10_000;
        Release {
            deployment: d.id.clone(),
            id: ReleaseId::new(start, &commit),
            commit: commit.clone(),
            status,
            step: DeployStep::Health,
            trigger: Trigger::Redeploy,
            timings: vec![],
            error: None,
            created_at: start,
            finished_at: took.map(|t| start + t),
        }
    };
    // One deploy live after 1 s, one superseded (it was live) after 3 s, one failed, one still running.
    let (live, was_live) = (release(0, ReleaseStatus::Active, Some(1000)), release(1, ReleaseStatus::Superseded, Some(3000)));
    let (failed, running) = (release(2, ReleaseStatus::Failed, Some(500)), release(3, ReleaseStatus::Deploying, None));
    for r in [&live, &was_live, &failed, &running] {
        store.save_release(r).await.unwrap();
    }
    let stats = store.deployment_stats().await.unwrap().deploys;
    assert_eq!(stats.recent_durations_ms, [1000, 3000], "the deploys that went live, not the deployment's age");
    assert_eq!((stats.succeeded, stats.failed, stats.succeeded_ms_sum), (2, 1, 4000));

    // Writing a finished release again, or superseding it, does not count it again; the running one
    // is counted when it ends, by `activate_release` as by `save_release`.
    store.save_release(&failed).await.unwrap();
    store.save_release(&live).await.unwrap();
    let mut ended = running.clone();
    (ended.status, ended.finished_at) = (ReleaseStatus::Active, Some(running.created_at + 2000));
    store.activate_release(&ended).await.unwrap();
    store.activate_release(&ended).await.unwrap();
    let stats = store.deployment_stats().await.unwrap().deploys;
    assert_eq!((stats.succeeded, stats.failed, stats.succeeded_ms_sum), (3, 1, 6000));
    assert_eq!(stats.recent_durations_ms, [1000, 2000, 3000]);
    let superseded = store.releases(&d.id, 10).await.unwrap().into_iter().filter(|r| r.status == ReleaseStatus::Superseded).count();
    assert_eq!(superseded, 2, "activating the running one superseded the live one");

    for plan in store.release_stats_plan().await.unwrap() {
        let plan = plan.to_string();
        assert!(plan.contains("\"index\":\"release_done\"") && plan.contains("\"direction\":\"Backward\""), "a walk of the index from the newest: {plan}");
        assert!(plan.contains(&RECENT_DEPLOYS.to_string()), "that stops: {plan}");
    }
}

/// A listing is a walk of the one index that matches its filter, from its start or from a cursor, and
/// its total maintained tallies (SurrealDB's own `EXPLAIN` says so); following `after` cursors
/// returns every match exactly once, newest first, even while deployments are being added.
#[tokio::test]
async fn lists_page_by_cursor_over_an_index_per_filter_with_counted_totals() {
    use pvedeploy::core::deployment::Framework;
    use pvedeploy::core::names::AppNamePrefix;
    use pvedeploy::core::status::Status;
    use pvedeploy::store::deployments::{Filter, PageStart};

    let (store, _dir) = store().await;
    let frameworks = [Framework::Flask, Framework::Node, Framework::Django];
    let mut all = Vec::new();
    for i in 0..60 {
        let mut d = pending_deployment_with(&store, &format!("app-{i:02}"), frameworks[i % 3].as_str()).await;
        if i % 4 == 0 {
            d.status = Status::Failed;
            d = store.save_deployment(&d, Status::Pending, "test").await.unwrap();
        }
        all.push(d);
    }
    // Writes refused whole leave the name listing as it was: a second live `app-01`, and a status change
    // from a revision already overtaken.
    let twin = new_deployment("app-01", "node");
    assert!(matches!(store.create_deployment(&twin, "test").await, Err(StoreError::Taken { .. })));
    let overtaken = all[1].clone();
    let mut running = all[1].clone();
    running.status = Status::Running;
    all[1] = store.save_deployment(&running, Status::Pending, "test").await.unwrap();
    let mut failed = overtaken;
    failed.status = Status::Failed;
    assert!(matches!(store.save_deployment(&failed, Status::Pending, "test").await, Err(StoreError::Stale)));
    let app01 = |status| Filter { status: Some(status), name: Some(AppNamePrefix::parse("app-01").unwrap()), ..Filter::default() };
    assert_eq!(store.list_deployments(&app01(Status::Running), 7, &PageStart::First).await.unwrap().total, 1);
    assert_eq!(store.list_deployments(&app01(Status::Failed), 7, &PageStart::First).await.unwrap().total, 0);
    assert_eq!(store.list_deployments(&Filter { name: Some(AppNamePrefix::parse("app-01").unwrap()), ..Filter::default() }, 7, &PageStart::First).await.unwrap().total, 1);
    let filters = [
        Filter::default(),
        Filter { status: Some(Status::Failed), ..Filter::default() },
        Filter { framework: Some(Framework::Node), ..Filter::default() },
        Filter { status: Some(Status::Pending), framework: Some(Framework::Django), name: None },
        Filter { name: Some(AppNamePrefix::parse("app-1").unwrap()), ..Filter::default() },
        Filter { status: Some(Status::Failed), name: Some(AppNamePrefix::parse("app-").unwrap()), ..Filter::default() },
        Filter { name: Some(AppNamePrefix::parse("nothing").unwrap()), ..Filter::default() },
    ];
    for f in &filters {
        let mut expected: Vec<String> = all
            .iter()
            .filter(|d| f.status.is_none_or(|s| d.status == s))
            .filter(|d| f.framework.is_none_or(|x| d.spec.framework == x))
            .filter(|d| f.name.as_ref().is_none_or(|p| d.spec.name.as_str().starts_with(p.as_str())))
            .map(|d| d.id.to_string())
            .collect();
        expected.sort();
        expected.reverse();
        if expected.len() > 7 {
            let by_offset = store.list_deployments(f, 7, &PageStart::Offset(7)).await.unwrap();
            assert_eq!(by_offset.items.iter().map(|d| d.id.to_string()).collect::<Vec<_>>(), expected[7..14.min(expected.len())], "{f:?}");
        }
        let (mut seen, mut start, mut late) = (Vec::new(), PageStart::First, None);
        loop {
            let page = store.list_deployments(f, 7, &start).await.unwrap();
            seen.extend(page.items.iter().map(|d| d.id.to_string()));
            if late.is_none() {
                assert_eq!(page.total, expected.len() as u64, "{f:?}");
                // Deployments added mid-walk are newer than every cursor: they never show up behind it.
                late = Some(pending_deployment_with(&store, &format!("app-late-{}", all.len()), "node").await);
            }
            match (page.more, page.items.last()) {
                (true, Some(last)) => start = PageStart::After(last.id.clone()),
                _ => break,
            }
        }
        assert_eq!(seen, expected, "{f:?}");
        let (page_plan, count_plan) = store.list_deployments_plan(f, &PageStart::After(all[30].id.clone())).await.unwrap();
        let (page_plan, count_plan) = (page_plan.to_string(), count_plan.to_string());
        let index = match (f.status, f.framework, &f.name) {
            (_, _, Some(_)) => None,
            (None, None, None) => Some("deployment_all_list"),
            (Some(_), None, None) => Some("deployment_status_list"),
            (None, Some(_), None) => Some("deployment_framework_list"),
            (Some(_), Some(_), None) => Some("deployment_status_framework_list"),
        };
        if let Some(index) = index {
            assert!(page_plan.contains(&format!("\"index\":\"{index}\"")) && page_plan.contains("IndexScan"), "{f:?}: {page_plan}");
            assert!(page_plan.contains("\"direction\":\"Backward\"") && page_plan.contains("\"limit\":\"$limit\""), "an ordered walk that stops: {page_plan}");
            assert!(count_plan.contains("deployment_tally") && count_plan.contains("RecordIdScan"), "a tally, not a count: {count_plan}");
        } else {
            // A name prefix walks the small `name_listing` records of its range, never the deployments' rows.
            // (SurrealDB's `EXPLAIN` shows the page's source, the sorted slice of that walk, as `array::map(...)`.)
            assert!(page_plan.contains("DynamicScan") && !page_plan.contains("IndexScan") && !page_plan.contains("TableScan"), "{f:?}: {page_plan}");
            assert!(count_plan.contains("name_listing:[$name_lo]..[$name_hi]") && !count_plan.contains("IndexScan"), "{f:?}: {count_plan}");
            if f.status.is_none() && f.framework.is_none() {
                assert!(count_plan.contains("CountScan"), "a count of keys: {count_plan}");
            }
        }
        all.extend(late);
    }
}

/// A new `pending` deployment named `name` for `framework`, recorded.
async fn pending_deployment_with(store: &Store, name: &str, framework: &str) -> pvedeploy::core::deployment::Deployment {
    let d = new_deployment(name, framework);
    store.create_deployment(&d, "test").await.unwrap();
    d
}

/// A new `pending` deployment named `name` for `framework`, not recorded.
fn new_deployment(name: &str, framework: &str) -> pvedeploy::core::deployment::Deployment {
    use pvedeploy::core::deployment::{Deployment, RawSpec, Spec};
    use pvedeploy::core::limits::{Limits, RepoPolicy};
    let raw = RawSpec { name: Some(name.into()), framework: Some(framework.into()), repo_url: Some("https://github.com/o/r".into()), ..RawSpec::default() };
    Deployment::new(Spec::parse(raw, &Limits::default(), &RepoPolicy::default()).unwrap(), pvedeploy::store::now_millis())
}

/// A GET by id is one record read: the row keeps its last `RECENT_EVENTS` status changes, oldest first,
/// across saves that change the status and saves that do not; the whole history stays in its table.
#[tokio::test]
async fn a_deployment_row_keeps_its_recent_status_changes() {
    use pvedeploy::core::status::Status;
    use pvedeploy::store::deployments::RECENT_EVENTS;
    let (store, _dir) = store().await;
    let mut d = pending_deployment_with(&store, "busy", "flask").await;
    for i in 0..(RECENT_EVENTS + 20) {
        let previous = d.status;
        d.status = if i % 2 == 0 { Status::Failed } else { Status::Pending };
        d = store.save_deployment(&d, previous, &format!("change {i}")).await.unwrap();
    }
    // A save that changes no status keeps what the row holds.
    d.error_message = Some("noted".into());
    let previous = d.status;
    d = store.save_deployment(&d, previous, "unused").await.unwrap();
    let detail = store.get_deployment_with_events(&d.id).await.unwrap().unwrap();
    assert_eq!(detail.0.error_message.as_deref(), Some("noted"));
    let events = &detail.1;
    assert_eq!(events.len(), RECENT_EVENTS);
    assert_eq!(events.last().unwrap().message, format!("change {}", RECENT_EVENTS + 19), "the newest last");
    assert_eq!(events.first().unwrap().message, "change 20", "the oldest kept");
    assert_eq!(store.deployment_events(&d.id).await.unwrap().len(), RECENT_EVENTS + 21, "the whole history in its table");
    // Lists and lookups by name read the row without its events (`OMIT`), and the deployment is whole.
    let page = store.list_deployments(&pvedeploy::store::deployments::Filter::default(), 10, &pvedeploy::store::deployments::PageStart::First).await.unwrap();
    assert_eq!((page.items.len(), page.items[0].error_message.as_deref(), page.items[0].revision), (1, Some("noted"), d.revision));
    let by_name = store.get_deployment_by_name(&d.spec.name).await.unwrap().unwrap();
    assert_eq!((by_name.status, by_name.revision), (d.status, d.revision));
}

/// Tallies under contention: 48 creates at once, then half of them failed at once, each write racing
/// the others for one of the shards (a lost race is a conflict, retried): every total still equals
/// what a count of the rows says.
#[tokio::test]
async fn concurrent_writes_keep_every_total_exact() {
    use pvedeploy::core::deployment::Framework;
    use pvedeploy::core::status::Status;
    use pvedeploy::store::deployments::{Filter, PageStart};
    let (store, _dir) = store().await;
    let mut made = tokio::task::JoinSet::new();
    for i in 0..48 {
        let store = store.clone();
        made.spawn(async move { pending_deployment_with(&store, &format!("race-{i}"), if i % 2 == 0 { "flask" } else { "node" }).await });
    }
    let all = made.join_all().await;
    let mut failed = tokio::task::JoinSet::new();
    for mut d in all.into_iter().filter(|d| d.spec.name.as_str().ends_with(['0', '2', '4', '6', '8'])) {
        let store = store.clone();
        failed.spawn(async move {
            d.status = Status::Failed;
            store.save_deployment(&d, Status::Pending, "raced").await.unwrap()
        });
    }
    assert_eq!(failed.join_all().await.len(), 24);
    for (f, want) in [
        (Filter::default(), 48),
        (Filter { status: Some(Status::Failed), ..Filter::default() }, 24),
        (Filter { status: Some(Status::Pending), ..Filter::default() }, 24),
        (Filter { framework: Some(Framework::Flask), ..Filter::default() }, 24),
        (Filter { status: Some(Status::Failed), framework: Some(Framework::Flask), name: None }, 24),
        (Filter { status: Some(Status::Pending), framework: Some(Framework::Node), name: None }, 24),
    ] {
        let page = store.list_deployments(&f, 100, &PageStart::First).await.unwrap();
        assert_eq!((page.total, page.items.len() as u64), (want, want), "{f:?}");
    }
}

/// A release goes live with its deployment in one transaction: a writer whose lease was taken over
/// changes neither, and the holder's write makes the release active and the deployment running at its
/// URL together (the GitHub reporter reads the one, then the other).
#[tokio::test]
async fn a_release_goes_live_with_its_deployment_or_not_at_all() {
    use pvedeploy::core::names::CommitSha;
    use pvedeploy::core::release::{DeployStep, ReleaseId};
    use pvedeploy::core::status::Status;
    use pvedeploy::store::releases::{Release, ReleaseStatus, Trigger};
    let (store, _dir) = store().await;
    let d = pending_deployment(&store, "golive").await;
    let commit = CommitSha::parse("0123456789abcdef0123456789abcdef01234567").unwrap();
    let mut r = Release {
        deployment: d.id.clone(),
        id: ReleaseId::new(1_000_000, &commit),
        commit: commit.clone(),
        status: ReleaseStatus::Deploying,
        step: DeployStep::Health,
        trigger: Trigger::Deploy,
        timings: vec![],
        error: None,
        created_at: 1_000_000,
        finished_at: None,
    };
    store.save_release(&r).await.unwrap();
    (r.status, r.finished_at) = (ReleaseStatus::Active, Some(1_002_000));
    let mut live = d.clone();
    (live.status, live.url, live.commit) = (Status::Provisioning, Some("http://127.0.0.9:8000".into()), Some(commit.clone()));

    let stale = store.acquire_lease(&d.id, "agent-a", 100).await.unwrap().expect("free lease");
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let holder = store.acquire_lease(&d.id, "agent-b", 10_000).await.unwrap().expect("expired lease is taken over");
    assert!(matches!(store.go_live(&r, &live, Status::Pending, "live", &stale).await, Err(StoreError::Stale)));
    assert_eq!(store.releases(&d.id, 10).await.unwrap()[0].status, ReleaseStatus::Deploying, "the release did not turn active");
    let now = store.get_deployment(&d.id).await.unwrap().unwrap();
    assert_eq!((now.status, now.url), (Status::Pending, None), "nor did the deployment change");
    assert_eq!(store.deployment_stats().await.unwrap().deploys.succeeded, 0, "nor was the deploy counted");

    let saved = store.go_live(&r, &live, Status::Pending, "live", &holder).await.unwrap();
    assert_eq!(store.releases(&d.id, 10).await.unwrap()[0].status, ReleaseStatus::Active);
    let now = store.get_deployment(&d.id).await.unwrap().unwrap();
    assert_eq!((now.status, now.url.as_deref(), now.revision), (Status::Provisioning, Some("http://127.0.0.9:8000"), saved.revision));
    assert_eq!(store.deployment_stats().await.unwrap().deploys.succeeded, 1);
}
