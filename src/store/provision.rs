//! The persisted progress of each provisioning (its current step and what was learned), written
//! under the deployment's lease so that work resumes after a crash and a stale agent cannot overwrite it.

use std::net::Ipv4Addr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::leases::{Lease, CHECK_LEASE};
use super::{decode, now_millis, Store, StoreError};
use crate::core::deployment::{Deployment, DeploymentId};
use super::deployments::DeploymentWrite;
use crate::core::names::{NodeName, VmId};
use crate::core::host_key::HostKeyPin;
use crate::core::provision::{GuestAt, Progress};
use crate::core::backup::{BackupId, RestoreSource};
use crate::core::names::CommitSha;
use super::audit::AuditEntry;
use crate::core::status::Status;
use super::logs::LogLine;

/// The stored shape of a `Progress` (since schema v15; `migrations` turns the flat shape written before it
/// into this one): the step as its tag, and only what that step has.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
enum ProgressRow {
    Place {},
    ReserveId {
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        static_ip: Option<Ipv4Addr>,
        #[serde(default)]
        attempts: u32,
    },
    Create {
        #[serde(flatten)]
        guest: GuestRow,
        #[serde(default)]
        attempts: u32,
    },
    AwaitCreate {
        #[serde(flatten)]
        guest: GuestRow,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
        #[serde(default)]
        attempts: u32,
    },
    Snippet {
        #[serde(flatten)]
        guest: GuestRow,
    },
    Configure(Keyed),
    Resize(Keyed),
    Start(Keyed),
    AwaitStart {
        #[serde(flatten)]
        at: Keyed,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
    },
    AwaitAddress(Keyed),
    Ready {
        #[serde(flatten)]
        at: Keyed,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<Ipv4Addr>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct GuestRow {
    node: String,
    vmid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    static_ip: Option<Ipv4Addr>,
}

/// A guest and its host key as stored: the OpenSSH public-key line or the `SHA256:` fingerprint.
#[derive(Debug, Serialize, Deserialize)]
struct Keyed {
    #[serde(flatten)]
    guest: GuestRow,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host_key: Option<String>,
}

fn bad(what: &str) -> StoreError {
    StoreError::Corrupt(format!("provision progress: bad {what}"))
}

impl From<&GuestAt> for GuestRow {
    fn from(g: &GuestAt) -> Self {
        GuestRow { node: g.node.to_string(), vmid: g.vmid.get(), static_ip: g.static_ip }
    }
}

impl TryFrom<GuestRow> for GuestAt {
    type Error = StoreError;

    fn try_from(r: GuestRow) -> Result<Self, StoreError> {
        Ok(GuestAt {
            node: NodeName::parse(&r.node).map_err(|_| bad("node"))?,
            vmid: VmId::new(r.vmid.into()).map_err(|_| bad("vmid"))?,
            static_ip: r.static_ip,
        })
    }
}

impl Keyed {
    fn of(guest: &GuestAt, host_key: &Option<HostKeyPin>) -> Self {
        Keyed { guest: guest.into(), host_key: host_key.as_ref().map(HostKeyPin::to_text) }
    }

    fn read(self) -> Result<(GuestAt, Option<HostKeyPin>), StoreError> {
        let key = self.host_key.as_deref().map(HostKeyPin::parse).transpose().map_err(|_| bad("host key"))?;
        Ok((self.guest.try_into()?, key))
    }
}

impl From<&Progress> for ProgressRow {
    fn from(p: &Progress) -> Self {
        match p {
            Progress::Place => ProgressRow::Place {},
            Progress::ReserveId { node, static_ip, attempts } => ProgressRow::ReserveId { node: node.to_string(), static_ip: *static_ip, attempts: *attempts },
            Progress::Create { guest, attempts } => ProgressRow::Create { guest: guest.into(), attempts: *attempts },
            Progress::AwaitCreate { guest, task, attempts } => ProgressRow::AwaitCreate { guest: guest.into(), task: task.clone(), attempts: *attempts },
            Progress::Snippet { guest } => ProgressRow::Snippet { guest: guest.into() },
            Progress::Configure { guest, host_key } => ProgressRow::Configure(Keyed::of(guest, host_key)),
            Progress::Resize { guest, host_key } => ProgressRow::Resize(Keyed::of(guest, host_key)),
            Progress::Start { guest, host_key } => ProgressRow::Start(Keyed::of(guest, host_key)),
            Progress::AwaitStart { guest, host_key, task } => ProgressRow::AwaitStart { at: Keyed::of(guest, host_key), task: task.clone() },
            Progress::AwaitAddress { guest, host_key } => ProgressRow::AwaitAddress(Keyed::of(guest, host_key)),
            Progress::Ready { guest, host_key, ip } => ProgressRow::Ready { at: Keyed::of(guest, host_key), ip: *ip },
        }
    }
}

impl TryFrom<ProgressRow> for Progress {
    type Error = StoreError;

    fn try_from(r: ProgressRow) -> Result<Self, StoreError> {
        Ok(match r {
            ProgressRow::Place {} => Progress::Place,
            ProgressRow::ReserveId { node, static_ip, attempts } => {
                Progress::ReserveId { node: NodeName::parse(&node).map_err(|_| bad("node"))?, static_ip, attempts }
            }
            ProgressRow::Create { guest, attempts } => Progress::Create { guest: guest.try_into()?, attempts },
            ProgressRow::AwaitCreate { guest, task, attempts } => Progress::AwaitCreate { guest: guest.try_into()?, task, attempts },
            ProgressRow::Snippet { guest } => Progress::Snippet { guest: guest.try_into()? },
            ProgressRow::Configure(k) => k.read().map(|(guest, host_key)| Progress::Configure { guest, host_key })?,
            ProgressRow::Resize(k) => k.read().map(|(guest, host_key)| Progress::Resize { guest, host_key })?,
            ProgressRow::Start(k) => k.read().map(|(guest, host_key)| Progress::Start { guest, host_key })?,
            ProgressRow::AwaitStart { at, task } => at.read().map(|(guest, host_key)| Progress::AwaitStart { guest, host_key, task })?,
            ProgressRow::AwaitAddress(k) => k.read().map(|(guest, host_key)| Progress::AwaitAddress { guest, host_key })?,
            ProgressRow::Ready { at, ip } => at.read().map(|(guest, host_key)| Progress::Ready { guest, host_key, ip })?,
        })
    }
}

/// Everything one provisioning step commits, in one transaction under the deployment's lease: its
/// progress (the intent of the next step), the lines saying what it did, and, when the step made them,
/// a VMID claim and a revision-checked save of the deployment. One commit per step: a line, a claim or
/// a deployment change is never kept for a step whose progress was lost, nor the reverse.
#[derive(Debug, Clone, Copy)]
pub struct StepWrite<'a> {
    pub progress: &'a Progress,
    pub lines: &'a [LogLine],
    /// Claims this id for the deployment; the commit fails with `Taken` when another deployment holds it.
    pub claim: Option<VmId>,
    /// The deployment with the step's changes applied (its revision still the one read), and the status it had.
    pub deployment: Option<(&'a Deployment, Status, &'a str)>,
}

/// What a committed step left behind.
#[derive(Debug)]
pub struct StepSaved {
    /// The deployment's status as it is now: a destroy requested meanwhile shows up here.
    pub status: Option<Status>,
    /// The deployment as saved (its revision bumped), when the step saved it.
    pub deployment: Option<Deployment>,
}

impl<'a> StepWrite<'a> {
    /// Just the progress, with at most one line.
    pub fn progress(progress: &'a Progress, lines: &'a [LogLine]) -> Self {
        StepWrite { progress, lines, claim: None, deployment: None }
    }
}

impl Store {
    /// Writes the progress under `lease` together with the line saying what the step did, in one
    /// transaction, and returns the deployment's status as it is now (see [`Store::save_step`]).
    pub async fn save_progress(&self, lease: &Lease, p: &Progress, line: Option<&LogLine>) -> Result<Option<Status>, StoreError> {
        Ok(self.save_step(lease, StepWrite::progress(p, line.map(std::slice::from_ref).unwrap_or_default())).await?.status)
    }

    /// Commits one step (see [`StepWrite`]). `Stale` when the lease was taken over or the deployment
    /// changed since it was read (a destroy, say); `Taken` when the claimed id is someone else's.
    pub async fn save_step(&self, lease: &Lease, step: StepWrite<'_>) -> Result<StepSaved, StoreError> {
        let write = step.deployment.map(|(d, previous, message)| DeploymentWrite { d, previous, message });
        let sql = format!(
            "{CHECK_LEASE}
             {claim}
             UPSERT type::record('provision', $lease_dep) CONTENT {{ state: $state, updated_at: $now }} RETURN NONE;
             {lines}
             {deployment}
             SELECT VALUE status FROM ONLY type::record('deployment', $lease_dep);",
            claim = if step.claim.is_some() { "CREATE type::record('vmid_claim', $claim_vmid) CONTENT { deployment: $lease_dep, at: $now } RETURN NONE;" } else { "" },
            lines = if step.lines.is_empty() { "" } else { "INSERT INTO log_line $lines RETURN NONE;" },
            deployment = write.as_ref().map(DeploymentWrite::statements).unwrap_or_default(),
        );
        let state = serde_json::to_value(ProgressRow::from(step.progress)).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut vars = write.as_ref().map(DeploymentWrite::vars).unwrap_or_default();
        for (k, v) in [
            ("lease_dep", json!(lease.deployment.as_str())),
            ("lease_token", json!(lease.token)),
            ("state", state),
            ("lines", json!(step.lines)),
            ("now", json!(now_millis())),
            ("claim_vmid", json!(step.claim.map(VmId::get))),
        ] {
            vars.insert(k.into(), v);
        }
        let result = self.transaction(&sql, serde_json::Value::Object(vars)).await;
        if write.is_some() {
            self.written(&lease.deployment);
        }
        let rows = match result {
            Ok(rows) => rows,
            Err(StoreError::Unavailable(m)) if m.contains("lease lost") || m.contains("stale revision") => return Err(StoreError::Stale),
            Err(StoreError::Taken { .. }) if step.claim.is_some() => {
                return Err(StoreError::Taken { what: format!("VMID {}", step.claim.map(VmId::get).unwrap_or_default()) })
            }
            Err(e) => return Err(e),
        };
        let status = rows.last().and_then(|r| r.first()).and_then(|v| v.as_str()).and_then(Status::parse);
        Ok(StepSaved { status, deployment: write.map(|w| w.saved()) })
    }

    pub async fn load_progress(&self, dep: &DeploymentId) -> Result<Option<Progress>, StoreError> {
        self.load_provision::<ProgressRow>(dep).await?.map(Progress::try_from).transpose()
    }

    /// Writes `state` as the deployment's progress exactly as given: a data dir as an older binary left it (the
    /// upgrade tests write the shape that binary wrote).
    #[doc(hidden)]
    pub async fn write_raw_progress(&self, dep: &DeploymentId, state: serde_json::Value) -> Result<(), StoreError> {
        self.run("UPSERT type::record('provision', $dep) CONTENT { state: $state, updated_at: $now } RETURN NONE", json!({ "dep": dep.as_str(), "state": state, "now": now_millis() })).await?;
        Ok(())
    }

    async fn load_provision<S: DeserializeOwned>(&self, dep: &DeploymentId) -> Result<Option<S>, StoreError> {
        let rows = self.run("SELECT VALUE state FROM ONLY type::record('provision', $dep)", json!({ "dep": dep.as_str() })).await?;
        match rows.into_iter().next().and_then(|r| r.into_iter().next()) {
            Some(v) if !v.is_null() => Ok(Some(decode(v)?)),
            _ => Ok(None),
        }
    }
}

impl Store {
    /// Records a deployment rebuilt from its guest by `pvedeploy recover`, in one transaction: its name,
    /// the record, an event saying so, its VMID claim and its provisioning progress (finished, with the
    /// guest's place, address and host key when they could be read). Refused (`Taken`) when the name or
    /// the VMID is held by another deployment.
    pub async fn restore_deployment(&self, d: &Deployment, p: &Progress, message: &str) -> Result<(), StoreError> {
        let vmid = p.guest().map(|g| g.vmid).ok_or_else(|| StoreError::Corrupt("a restored deployment needs its VMID".into()))?;
        let sql = format!(
            "CREATE type::record('name_claim', $name) CONTENT {{ deployment: $id }};
            CREATE type::record('deployment', $id) CONTENT $row;
            CREATE deployment_event CONTENT {{ deployment: $id, at: $at, to: $status, message: $message }};
            {tally}
            {listed}
            CREATE type::record('vmid_claim', $vmid) CONTENT {{ deployment: $id, at: $at }} RETURN NONE;
            UPSERT type::record('provision', $id) CONTENT {{ state: $state, updated_at: $at }} RETURN NONE;",
            tally = super::deployments::TALLY_CREATED,
            listed = super::deployments::LISTED_CREATED,
        );
        let state = serde_json::to_value(ProgressRow::from(p)).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let now = now_millis();
        let vars = json!({
            "name": d.spec.name.as_str(), "id": d.id.as_str(), "row": super::deployments::Row::created(d, message, now), "at": now,
            "status": d.status.as_str(), "message": message, "vmid": vmid.get(), "state": state,
            "tally_scopes": super::deployments::tally_scopes(d.status, d.spec.framework), "shard": super::deployments::tally_shard(),
            "framework": d.spec.framework.as_str(),
        });
        let result = self.transaction(&sql, vars).await;
        self.written(&d.id);
        result.map(|_| ())
    }
}

/// A `RestoreSource` as stored (table `restore_source`, keyed by the restored deployment's id).
#[derive(Debug, Serialize, Deserialize)]
struct RestoreRow {
    backup: String,
    from: String,
    node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    commit: Option<String>,
}

impl Store {
    /// Records a deployment whose guest is to be restored from a backup: as `create_requested_deployment`, with
    /// where it comes from in the same transaction.
    pub async fn create_restored_deployment(&self, d: &Deployment, src: &RestoreSource, message: &str, audit: &AuditEntry, line: &LogLine) -> Result<(), StoreError> {
        let row = RestoreRow {
            backup: src.backup.to_string(),
            from: src.from.to_string(),
            node: src.node.to_string(),
            host_key: src.host_key.as_ref().map(HostKeyPin::to_text),
            commit: src.commit.as_ref().map(|c| c.as_str().to_string()),
        };
        let row = serde_json::to_value(row).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.create_deployment_from(d, message, Some(audit), Some(line), Some(row)).await
    }

    /// Where deployment `dep` is restored from, when it was created from a backup.
    pub async fn restore_source(&self, dep: &DeploymentId) -> Result<Option<RestoreSource>, StoreError> {
        let rows = self.run("SELECT backup, from, node, host_key, commit FROM ONLY type::record('restore_source', $dep)", json!({ "dep": dep.as_str() })).await?;
        let Some(v) = rows.into_iter().next().and_then(|r| r.into_iter().next()).filter(|v| !v.is_null()) else { return Ok(None) };
        let r: RestoreRow = decode(v)?;
        let bad = |what: &str| StoreError::Corrupt(format!("restore source: bad {what}"));
        Ok(Some(RestoreSource {
            backup: BackupId::parse(&r.backup).map_err(|_| bad("backup"))?,
            from: DeploymentId::parse(&r.from).ok_or_else(|| bad("deployment id"))?,
            node: NodeName::parse(&r.node).map_err(|_| bad("node"))?,
            host_key: r.host_key.as_deref().map(HostKeyPin::parse).transpose().map_err(|_| bad("host key"))?,
            commit: r.commit.as_deref().map(CommitSha::parse).transpose().map_err(|_| bad("commit"))?,
        }))
    }
}
