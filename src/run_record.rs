//! The run record: what a run needs to roll back, kept in the cluster (a
//! ConfigMap `<release>-klm-run` beside the release), not in Helm history —
//! Helm keeps 10 revisions by default and job mode writes one per wave.
//!
//! It also serves as the run's lock (one active run per release) and as the
//! mark each wave's first step reads to stop after a failed wave, and the
//! run's plan (the nodes of each wave) that steps given `--wave K` read.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Classify, ExitStatus, KubeError, KubeResultExt};
use crate::release::ReleaseRef;
use crate::schedule::gates::Gate;
use crate::versions::DeploymentMode;

/// The ConfigMap key that holds the record.
pub const DATA_KEY: &str = "record.json";
const CONFLICT_RETRIES: usize = 8;

/// Why the record could not be read or written as asked.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// No run has been started for this release.
    #[error("no run record for release {release} in {namespace}")]
    NoRecord {
        /// Release name.
        release: String,
        /// Its namespace.
        namespace: String,
    },
    /// Another run holds the release.
    #[error("run {active} is already upgrading release {release} (started {started_at})")]
    AnotherRunActive {
        /// The active run.
        active: String,
        /// Release name.
        release: String,
        /// Its namespace.
        namespace: String,
        /// When it started.
        started_at: String,
    },
    /// The record belongs to another run than the one named.
    #[error("the run record of release {release} belongs to run {found}, not {wanted}")]
    RunMismatch {
        /// The run asked for.
        wanted: String,
        /// The run on record.
        found: String,
        /// Release name.
        release: String,
    },
    /// The ConfigMap exists but does not hold a record we can read.
    #[error("the run record {name} cannot be read: {reason}")]
    Corrupt {
        /// ConfigMap name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The API refused or failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
}

impl Classify for RecordError {
    fn status(&self) -> ExitStatus {
        match self {
            RecordError::Kube(inner) => inner.status(),
            RecordError::Corrupt { .. } => ExitStatus::Failed,
            _ => ExitStatus::Precondition,
        }
    }

    fn hints(&self) -> Vec<String> {
        match self {
            RecordError::NoRecord { .. } => {
                vec!["run `klm check-prerequisites --target-version ...` first: it records what rollback will need".into()]
            }
            // Never the lock's deletion: whoever meets it is not the run's
            // owner, and a second run beside a live one is what it prevents.
            RecordError::AnotherRunActive { release, namespace, active, .. } => vec![
                format!(
                    "two upgrades must never run at once: wait for run {active} to finish (`klm status --run-id {active} --helm-release {release} --helm-namespace {namespace}` shows where it stands)"
                ),
                format!(
                    "if run {active} is dead (its workflow gone, its klm upgrade killed), its owner ends it with `{}` (it rolls back what was in flight, releases its nodes and closes its record; add --verification-pod FILE to verify the nodes it rolls back)",
                    close_command(active, Some(&crate::annotations::release_id(namespace, release)))
                ),
            ],
            RecordError::RunMismatch { found, .. } => vec![format!("pass --run-id {found}, or omit --run-id to use the release's latest run")],
            RecordError::Corrupt { .. } => vec!["inspect the ConfigMap; deleting it forgets the run (rollback then has no recorded target)".into()],
            RecordError::Kube(inner) => inner.hints(),
        }
    }
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Waves are being processed.
    Running,
    /// A wave failed; later waves must not start.
    Failed,
    /// Every wave completed and the run was finished.
    Completed,
    /// Every wave was settled and the run was finished, but nodes failed
    /// within its failure budget (`--max-failed-nodes`): they were rolled
    /// back (or kept cordoned when their rollback failed); a new run retries
    /// them.
    CompletedWithFailures,
    /// The run ended before its waves were done without a wave failing
    /// (stopped, terminated, past a deadline, a step that died); the exit
    /// handler or `klm close-run` closed it. A new run may start.
    Interrupted,
}

impl RunState {
    /// Whether the run is over: no further wave may start, a new run may.
    pub fn is_closed(self) -> bool {
        !matches!(self, RunState::Running)
    }
}

/// The release as it was before the run: the rollback target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Before {
    /// The deployed revision.
    pub revision: u32,
    /// Its chart version.
    pub chart_version: String,
    /// Its appVersion.
    pub app_version: String,
    /// The values the user had supplied.
    pub user_values: Value,
}

/// What the run did to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeProgress {
    /// Cordoned by the run.
    Held,
    /// The new version was installed.
    Upgraded,
    /// Verified at the target version.
    Verified,
    /// Completed and returned to service.
    Completed,
    /// Returned to the version before the run.
    RolledBack,
    /// A rollback failed; needs a person.
    Failed,
}

/// Everything a run records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The run (Argo workflow name or --run-id).
    pub run_id: String,
    /// Release name.
    pub release: String,
    /// Release namespace.
    pub namespace: String,
    /// The deployment mode of the run.
    pub mode: DeploymentMode,
    /// The version the run upgrades to.
    pub target_version: semver::Version,
    /// The user's extra chart values for the run, as helm's `--set` items
    /// (recorded by check-prerequisites): every upgrade of the run uses them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chart_values: Vec<String>,
    /// The release before the run.
    pub before: Before,
    /// Where the run stands.
    pub state: RunState,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// When the record last changed.
    pub updated_at: String,
    /// The nodes the run touched and what it did to them.
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeProgress>,
    /// Values the run set on the release for its own mechanics (key → value),
    /// to be restored or reported when the run finishes.
    #[serde(default)]
    pub mechanics: BTreeMap<String, Value>,
    /// daemonset mode: the release's kata-deploy DaemonSet at the target,
    /// recorded by the before-waves upgrade, so that each wave's restart
    /// finds it without reading the release through helm again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kata_daemonset: Option<crate::release::ManifestObject>,
    /// When the latest job-mode wave's helm upgrade started (RFC 3339):
    /// install Jobs older than this belong to an earlier wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_started_at: Option<String>,
    /// The node label whose values are the run's pools (recorded by
    /// check-prerequisites): which pool's verification pod verifies a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_label: Option<String>,
    /// The pools verified with their own pod (recorded by check-prerequisites).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pool_pods: Vec<String>,
    /// The nodes that failed within that budget, each with why (recorded by
    /// settle): the run went on without them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_nodes: BTreeMap<String, String>,
    /// Per node, the kata-deploy version it ran before the run first touched
    /// it, where that is not the release's version before the run (the
    /// before-waves upgrade records the planned nodes, cordon any other):
    /// what rollback returns that node to ([`RunRecord::version_before`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_versions: BTreeMap<String, String>,
    /// Whether the before-waves upgrade observed what every planned node
    /// ran before the release moved: a planned node missing from
    /// `node_versions` then ran the release's version before the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub planned_versions_observed: bool,
    /// The plan select-nodes recorded: the waves and the rules the run
    /// keeps while it goes through them (flattened: its fields are the
    /// record's own in the ConfigMap).
    #[serde(flatten)]
    pub plan: RunPlan,
    /// What the run waits for before its next wave, while it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
    /// Node labels the run added so that nodes not yet upgraded stay
    /// schedulable for Kata under the target's RuntimeClasses (node → label
    /// → value; see [`crate::nodes::marks`]): taken off again when the
    /// release returns to a version that does not select them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub marks: BTreeMap<String, BTreeMap<String, String>>,
    /// The release's reconcile CronJobs the run suspended (job mode from
    /// 4.1: none may install the release's version on a node the run has not
    /// verified), resumed when the run ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspended: Vec<String>,
    /// Values an earlier run set for its own mechanics and left on the
    /// release, which this run took over (see [`RunRecord::inherit`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited: Option<Inherited>,
    /// What drives the run when it is not a workflow: `klm upgrade` (which
    /// `klm pause`, `resume` and `abort` act on; a workflow is paused with
    /// Argo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Paused by a person (`klm pause`): no new wave starts until `klm resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Intervention>,
    /// Aborted by a person (`klm abort`): the run ends as the exit handler
    /// ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<Intervention>,
}

/// What select-nodes planned for a run: its waves and the rules that hold
/// while the run goes through them. One value, so that a new planning rule
/// is a field here, set by the planner and read by the step it governs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunPlan {
    /// The planned waves, each a list of node names (wave K is
    /// `waves[K-1]`); None until select-nodes ran with the run's id. An
    /// empty plan means the run has nothing to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<Vec<Vec<String>>>,
    /// How many of the planned nodes may be unschedulable at once
    /// (--max-unavailable): cordon holds a wave to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<usize>,
    /// How many planned nodes may fail (each rolled back) before the run
    /// stops (--max-failed-nodes; None: the first failure stops the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed_nodes: Option<usize>,
    /// The gates between the planned waves, and how far the run got
    /// through each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<Gate>,
    /// The metric gates' query (--gate-query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_query: Option<crate::schedule::metric::MetricQuery>,
    /// The maintenance window waves start in (--window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

impl RunPlan {
    /// Takes `planned`, the plan of a (possibly retried) select-nodes,
    /// keeping how far the run got through its gates when the gates stand
    /// where they stood.
    pub fn replan(&mut self, planned: RunPlan) {
        let progress = std::mem::take(&mut self.gates);
        let same_gates = progress
            .iter()
            .map(|g| g.before_wave)
            .eq(planned.gates.iter().map(|g| g.before_wave));
        *self = planned;
        if same_gates {
            self.gates = progress;
        }
    }
}

/// A person acting on a running run: who, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intervention {
    /// Who (the identity klm ran as, or the user's name).
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
}

/// Waits, by watching the release's run record, until `check` of run
/// `run_id`'s record says done (or failed); fails when another run replaced
/// it. A person may take days: the wait has no deadline but a year's.
pub async fn watch_run<T>(
    client: &Client,
    namespace: &str,
    release: &str,
    run_id: &str,
    what: String,
    check: impl Fn(&RunRecord) -> crate::wait::Check<T>,
) -> Result<T, crate::wait::WaitError> {
    use crate::wait::Check;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let patience = std::time::Duration::from_secs(365 * 24 * 3600);
    crate::wait::watch_until(
        api,
        crate::wait::by_name(&name_for(release)),
        patience,
        what,
        |found| {
            let record = found
                .first()
                .and_then(|cm| cm.data.as_ref()?.get(DATA_KEY).cloned())
                .and_then(|raw| serde_json::from_str::<RunRecord>(&raw).ok());
            match record {
                Some(r) if r.run_id != run_id => {
                    Check::Failed(format!("run {} replaced run {run_id}", r.run_id))
                }
                Some(r) => check(&r),
                None => Check::Pending,
            }
        },
    )
    .await
}

/// The id of a run started without one: `klm-<unix seconds>`.
pub fn new_run_id() -> String {
    format!("klm-{}", k8s_openapi::jiff::Timestamp::now().as_second())
}

impl std::fmt::Display for Intervention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "by {} at {}", self.by, self.at)
    }
}

/// Values an earlier run of the release left on it for its own mechanics (a
/// partial run: nodes outside it still ran an older kata-deploy; a run that
/// failed or was interrupted), taken over by the next run: its `before`
/// holds the user's own value of each, and its `mechanics` the keys, so
/// that it restores them when it finishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inherited {
    /// The run that set them first.
    pub run_id: String,
    /// The release's revision before that run: its values are the user's own.
    pub revision: u32,
    /// The keys taken over.
    pub keys: Vec<String>,
}

/// A run waiting before a wave: at a gate, or for its window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    /// The wave (from 1) that waits.
    pub wave: usize,
    /// For what.
    pub waiting_for: Waiting,
    /// Since when (RFC 3339).
    pub since: String,
    /// Until when, for a soak or a window (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// For an approval: the command that gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approve_with: Option<String>,
}

/// What a held run waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Waiting {
    /// A gate's soak: time for the nodes before it to show trouble.
    Soak,
    /// A person's approval at a gate.
    Approval,
    /// The maintenance window to open.
    Window,
}

impl Waiting {
    /// The word for it (what `klm gate` writes for the workflow to branch on).
    pub fn as_str(self) -> &'static str {
        match self {
            Waiting::Soak => "soak",
            Waiting::Approval => "approval",
            Waiting::Window => "window",
        }
    }
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let until = self.until.as_deref().unwrap_or("?");
        match self.waiting_for {
            Waiting::Soak => write!(
                f,
                "held before wave {}: soaking until {until}, then verifying the nodes before it again",
                self.wave
            ),
            Waiting::Approval => write!(
                f,
                "held before wave {}: waiting for approval ({})",
                self.wave,
                self.approve_with.as_deref().unwrap_or("klm approve")
            ),
            Waiting::Window => write!(
                f,
                "held before wave {}: outside the maintenance window, which opens at {until}",
                self.wave
            ),
        }
    }
}

impl RunRecord {
    /// A new run `run_id` of release `namespace/name` to `target` in `mode`
    /// from the release as it was (`before`): running, nothing done, nothing
    /// planned yet. Every other field starts empty; the steps fill them in.
    pub fn start(
        run_id: String,
        release: &ReleaseRef,
        mode: DeploymentMode,
        target_version: semver::Version,
        before: Before,
    ) -> RunRecord {
        RunRecord {
            run_id,
            release: release.name.clone(),
            namespace: release.namespace.clone(),
            mode,
            target_version,
            chart_values: Vec::new(),
            before,
            state: RunState::Running,
            failure: None,
            started_at: now(),
            updated_at: now(),
            nodes: BTreeMap::new(),
            mechanics: BTreeMap::new(),
            kata_daemonset: None,
            wave_started_at: None,
            pool_label: None,
            pool_pods: Vec::new(),
            failed_nodes: BTreeMap::new(),
            node_versions: BTreeMap::new(),
            planned_versions_observed: false,
            plan: RunPlan::default(),
            held: None,
            marks: BTreeMap::new(),
            suspended: Vec::new(),
            inherited: None,
            driver: None,
            paused: None,
            aborted: None,
        }
    }

    /// The release as `namespace/name`: what node holds name (a run id is
    /// unique only together with its release).
    pub fn release_id(&self) -> String {
        crate::annotations::release_id(&self.namespace, &self.release)
    }

    /// Whether what `node` ran before the run is known already: recorded,
    /// observed with the planned nodes, or held by the run (whose first
    /// hold recorded it).
    pub fn version_before_known(&self, node: &str) -> bool {
        self.node_versions.contains_key(node)
            || self.nodes.contains_key(node)
            || (self.planned_versions_observed && self.is_planned(node))
    }

    /// The version a node returns to on rollback: the one it ran before the
    /// run touched it, else the release's version before the run.
    pub fn version_before(&self, node: &str) -> &str {
        self.node_versions
            .get(node)
            .map(String::as_str)
            .unwrap_or(&self.before.chart_version)
    }

    /// Takes over what `previous` (the release's run before this one, now
    /// closed) left on the release for its own mechanics: each value it set
    /// that the release still has (as this run's `before` saw it) gets the
    /// user's own value before that run back in `before`, and joins this
    /// run's mechanics, so this run restores it when it finishes (or reports
    /// it, where that is not safe yet). A value someone changed since is
    /// theirs, and left alone.
    pub fn inherit(&mut self, previous: &RunRecord) {
        if !previous.state.is_closed()
            || previous.release != self.release
            || previous.namespace != self.namespace
        {
            return;
        }
        let left: Vec<(String, Value)> = previous
            .mechanics
            .iter()
            .filter(|(key, value)| {
                crate::values::lookup(&self.before.user_values, key) == Some(value)
            })
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        if left.is_empty() {
            return;
        }
        for (key, value) in &left {
            crate::values::restore_from(
                &mut self.before.user_values,
                key,
                &previous.before.user_values,
            );
            self.mechanics.insert(key.clone(), value.clone());
        }
        let (run_id, revision) = match &previous.inherited {
            Some(first) => (first.run_id.clone(), first.revision),
            None => (previous.run_id.clone(), previous.before.revision),
        };
        self.inherited = Some(Inherited {
            run_id,
            revision,
            keys: left.into_iter().map(|(key, _)| key).collect(),
        });
    }

    /// The revision whose values are the user's own (what a command that
    /// restores them reads): the release's before this run, or before the
    /// run whose mechanics this one took over.
    pub fn values_revision(&self) -> u32 {
        self.inherited
            .as_ref()
            .map_or(self.before.revision, |i| i.revision)
    }

    /// The nodes of wave `index` (from 1) of the recorded plan.
    pub fn wave(&self, index: u32) -> Option<&[String]> {
        let at = usize::try_from(index).ok()?.checked_sub(1)?;
        self.plan.waves.as_ref()?.get(at).map(Vec::as_slice)
    }

    /// Every node of the recorded plan, wave by wave.
    pub fn planned_nodes(&self) -> impl Iterator<Item = &String> {
        self.plan.waves.iter().flatten().flatten()
    }

    /// Whether `node` is in one of the recorded plan's waves.
    pub fn is_planned(&self, node: &str) -> bool {
        self.planned_nodes().any(|n| n == node)
    }

    /// The nodes the run touched that are in one of these states.
    pub fn nodes_in(&self, states: &[NodeProgress]) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, p)| states.contains(p))
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// The run a step names with `--run-id`, when it is the release's run on
/// record (`latest`, the record as loaded): such a step moves the nodes the
/// run holds through the state machine. None: a step by hand (no
/// `--run-id`, or a run klm has no record of), which changes no node's state.
pub fn named_run<'a>(latest: Option<&'a RunRecord>, run_id: Option<&str>) -> Option<&'a RunRecord> {
    latest.filter(|record| run_id == Some(record.run_id.as_str()))
}

/// The command that ends run `run_id` of `release` (`namespace/name`, when
/// known) as its exit handler would: what a hint offers for a dead run.
/// Add `--verification-pod FILE` to verify the nodes it rolls back again.
pub fn close_command(run_id: &str, release: Option<&str>) -> String {
    let mut words = vec!["klm", "close-run", "--run-id", run_id];
    if let Some((namespace, name)) = release.and_then(|r| r.split_once('/')) {
        words.extend(["--helm-release", name, "--helm-namespace", namespace]);
    }
    crate::output::command_line(words)
}

/// The ConfigMap name of a release's run record.
pub fn name_for(release: &str) -> String {
    format!("{release}-klm-run")
}

/// Now, as RFC 3339.
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// The outcome of [`Records::begin`].
#[derive(Debug)]
pub enum Begun {
    /// A new record was written.
    Created(RunRecord),
    /// The record of this run already existed (a retried step): kept as it was.
    Resumed(RunRecord),
}

/// Access to the run records of one namespace.
#[derive(Clone)]
pub struct Records {
    api: Api<ConfigMap>,
    namespace: String,
}

impl Records {
    /// Records in the release's namespace.
    pub fn new(client: &Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            namespace: namespace.to_string(),
        }
    }

    /// Reads the release's record, if any, with the resourceVersion it was read at.
    pub async fn load(&self, release: &str) -> Result<Option<(RunRecord, String)>, RecordError> {
        let name = name_for(release);
        let Some(config_map) = self
            .api
            .get_opt(&name)
            .await
            .during(|| format!("reading run record {name}"))?
        else {
            return Ok(None);
        };
        let raw = config_map
            .data
            .as_ref()
            .and_then(|d| d.get(DATA_KEY))
            .ok_or_else(|| RecordError::Corrupt {
                name: name.clone(),
                reason: format!("it has no {DATA_KEY} key"),
            })?;
        let record = serde_json::from_str(raw).map_err(|e| RecordError::Corrupt {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some((
            record,
            config_map.metadata.resource_version.unwrap_or_default(),
        )))
    }

    /// The record of the named run, or of the release's latest run.
    pub async fn resolve(
        &self,
        release: &str,
        run_id: Option<&str>,
    ) -> Result<RunRecord, RecordError> {
        self.resolve_versioned(release, run_id)
            .await
            .map(|(record, _)| record)
    }

    /// [`Records::resolve`], with the resourceVersion the record was read at.
    pub async fn resolve_versioned(
        &self,
        release: &str,
        run_id: Option<&str>,
    ) -> Result<(RunRecord, String), RecordError> {
        let Some((record, resource_version)) = self.load(release).await? else {
            return Err(RecordError::NoRecord {
                release: release.to_string(),
                namespace: self.namespace.clone(),
            });
        };
        match run_id {
            Some(wanted) if wanted != record.run_id => Err(RecordError::RunMismatch {
                wanted: wanted.to_string(),
                found: record.run_id,
                release: release.to_string(),
            }),
            _ => Ok((record, resource_version)),
        }
    }

    /// Starts a run: writes `record` unless this run's record exists already
    /// (a retried step keeps the original rollback target). Refuses while
    /// another run is active. A new run takes over what the closed run before
    /// it left on the release ([`RunRecord::inherit`]).
    pub async fn begin(&self, record: RunRecord) -> Result<Begun, RecordError> {
        for _ in 0..CONFLICT_RETRIES {
            let existing = self.load(&record.release).await?;
            let result = match existing {
                Some((found, _)) if found.run_id == record.run_id => {
                    return Ok(Begun::Resumed(found));
                }
                Some((found, _)) if found.state == RunState::Running => {
                    return Err(RecordError::AnotherRunActive {
                        active: found.run_id,
                        release: record.release.clone(),
                        namespace: self.namespace.clone(),
                        started_at: found.started_at,
                    });
                }
                Some((found, resource_version)) => {
                    let mut fresh = record.clone();
                    fresh.inherit(&found);
                    self.write(&fresh, Some(resource_version))
                        .await
                        .map(|()| fresh)
                }
                None => self.write(&record, None).await.map(|()| record.clone()),
            };
            match result {
                Ok(written) => return Ok(Begun::Created(written)),
                Err(err) if is_conflict(&err) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(RecordError::Corrupt {
            name: name_for(&record.release),
            reason: "it kept changing while being written".into(),
        })
    }

    /// Changes the run's record with `change`, retrying on concurrent writes.
    pub async fn update(
        &self,
        release: &str,
        run_id: &str,
        change: impl FnMut(&mut RunRecord),
    ) -> Result<RunRecord, RecordError> {
        self.update_from(None, release, run_id, change).await
    }

    /// [`Records::update`] starting from `loaded`, a record and the
    /// resourceVersion it was read at (saving a read when nothing wrote it
    /// since; a concurrent write makes the first write fail, and the record is
    /// read again).
    pub async fn update_from(
        &self,
        mut loaded: Option<(RunRecord, String)>,
        release: &str,
        run_id: &str,
        mut change: impl FnMut(&mut RunRecord),
    ) -> Result<RunRecord, RecordError> {
        for _ in 0..CONFLICT_RETRIES {
            let found = match loaded.take() {
                Some(loaded) => Some(loaded),
                None => self.load(release).await?,
            };
            let Some((mut record, resource_version)) = found else {
                return Err(RecordError::NoRecord {
                    release: release.to_string(),
                    namespace: self.namespace.clone(),
                });
            };
            if record.run_id != run_id {
                return Err(RecordError::RunMismatch {
                    wanted: run_id.to_string(),
                    found: record.run_id,
                    release: release.to_string(),
                });
            }
            change(&mut record);
            record.updated_at = now();
            match self.write(&record, Some(resource_version)).await {
                Ok(()) => return Ok(record),
                Err(err) if is_conflict(&err) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(RecordError::Corrupt {
            name: name_for(release),
            reason: "it kept changing while being written".into(),
        })
    }

    async fn write(
        &self,
        record: &RunRecord,
        resource_version: Option<String>,
    ) -> Result<(), KubeError> {
        let name = name_for(&record.release);
        let config_map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version: resource_version.clone(),
                labels: Some(BTreeMap::from([
                    (
                        "app.kubernetes.io/managed-by".to_string(),
                        "kata-lifecycle-manager".to_string(),
                    ),
                    (
                        "katacontainers.io/kata-lifecycle-manager-release".to_string(),
                        record.release.clone(),
                    ),
                ])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                DATA_KEY.to_string(),
                serde_json::to_string_pretty(record).expect("a run record always serialises"),
            )])),
            ..Default::default()
        };
        let params = PostParams {
            field_manager: Some(crate::annotations::FIELD_MANAGER.into()),
            ..Default::default()
        };
        match resource_version {
            Some(_) => self
                .api
                .replace(&name, &params, &config_map)
                .await
                .map(|_| ()),
            None => self.api.create(&params, &config_map).await.map(|_| ()),
        }
        .during(|| format!("writing run record {name}"))
    }
}

fn is_conflict(err: &KubeError) -> bool {
    err.is_conflict()
}

/// A run record for unit tests: run `upgrade-1` of `kube-system/kata-deploy`
/// in daemonset mode, from 3.27.0 (revision 3) to 3.28.0, running, with
/// nothing done yet.
#[cfg(test)]
pub(crate) fn example() -> RunRecord {
    RunRecord::start(
        "upgrade-1".into(),
        &ReleaseRef {
            namespace: "kube-system".into(),
            name: "kata-deploy".into(),
        },
        DeploymentMode::Daemonset,
        semver::Version::new(3, 28, 0),
        Before {
            revision: 3,
            chart_version: "3.27.0".into(),
            app_version: "3.27.0".into(),
            user_values: serde_json::json!({}),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_run_on_record_is_a_steps_run() {
        let record = example();
        assert!(named_run(Some(&record), Some("upgrade-1")).is_some());
        assert!(named_run(Some(&record), Some("another")).is_none());
        assert!(named_run(Some(&record), None).is_none());
        assert!(named_run(None, Some("upgrade-1")).is_none());
    }

    #[test]
    fn what_a_planned_node_ran_is_known_once_the_waves_observed_it() {
        let mut record = example();
        record.plan.waves = Some(vec![vec!["a".into()], vec!["b".into()]]);
        record.node_versions = BTreeMap::from([("b".to_string(), "3.26.0".to_string())]);
        assert!(!record.version_before_known("a"));
        assert!(record.version_before_known("b"));
        record.planned_versions_observed = true;
        // Observed, a planned node missing from the record ran the release's version.
        assert!(record.version_before_known("a"));
        assert_eq!(record.version_before("a"), record.before.chart_version);
        assert_eq!(record.version_before("b"), "3.26.0");
        // A node outside the plan (a cordon by hand) is not known until held.
        assert!(!record.version_before_known("z"));
        record.nodes.insert("z".into(), NodeProgress::Held);
        assert!(record.version_before_known("z"));
    }
    use serde_json::json;

    #[test]
    fn a_run_takes_over_the_mechanics_the_run_before_left_on_the_release() {
        // A canary run: the user had RollingUpdate; the run set OnDelete and
        // verification.pod="" and finished with other nodes still older.
        let mut canary = example();
        canary.before.revision = 3;
        canary.before.user_values =
            json!({"debug": true, "updateStrategy": {"type": "RollingUpdate"}});
        canary.mechanics = BTreeMap::from([
            ("updateStrategy.type".to_string(), json!("OnDelete")),
            ("verification.pod".to_string(), json!("")),
        ]);
        canary.state = RunState::Completed;
        // The next run saw klm's values as "the release before the run".
        let mut next = example();
        next.run_id = "upgrade-2".into();
        next.before.revision = 5;
        next.before.user_values = json!({
            "debug": true,
            "updateStrategy": {"type": "OnDelete"},
            "verification": {"pod": ""}
        });
        let mut running = canary.clone();
        running.state = RunState::Running;
        let untouched = next.clone();
        next.inherit(&running);
        assert_eq!(next, untouched, "only a closed run is taken over");

        next.inherit(&canary);
        assert_eq!(
            next.before.user_values,
            json!({"debug": true, "updateStrategy": {"type": "RollingUpdate"}}),
            "the user's own values are the ones this run restores"
        );
        assert_eq!(next.mechanics, canary.mechanics);
        let inherited = next.inherited.clone().unwrap();
        assert_eq!(inherited.run_id, "upgrade-1");
        assert_eq!(inherited.revision, 3);
        assert_eq!(next.values_revision(), 3);
        assert_eq!(
            inherited.keys,
            [
                "updateStrategy.type".to_string(),
                "verification.pod".to_string()
            ]
        );

        // A third run takes over from the second, back to the first's revision.
        let mut second = next.clone();
        second.state = RunState::Completed;
        let mut third = untouched.clone();
        third.run_id = "upgrade-3".into();
        third.inherit(&second);
        assert_eq!(third.before.user_values, next.before.user_values);
        assert_eq!(third.values_revision(), 3);

        // A value someone changed since is theirs.
        let mut changed = untouched.clone();
        changed.before.user_values =
            json!({"debug": true, "updateStrategy": {"type": "RollingUpdate"}});
        changed.inherit(&canary);
        assert_eq!(changed.inherited, None);
        assert!(changed.mechanics.is_empty());
        assert_eq!(changed.values_revision(), 5);
    }

    #[test]
    fn records_round_trip_as_json() {
        let mut record = example();
        record.before.user_values = json!({"a": 1});
        record.nodes = BTreeMap::from([
            ("a".to_string(), NodeProgress::Completed),
            ("b".to_string(), NodeProgress::Held),
        ]);
        record.mechanics = BTreeMap::from([("updateStrategy.type".to_string(), json!("OnDelete"))]);
        record.plan.waves = Some(vec![vec!["a".into()], vec!["b".into()]]);
        record.node_versions = BTreeMap::from([("b".to_string(), "3.26.0".to_string())]);
        assert_eq!(record.version_before("a"), "3.27.0");
        assert_eq!(record.version_before("b"), "3.26.0");
        assert_eq!(record.release_id(), "kube-system/kata-deploy");
        let text = serde_json::to_string(&record).unwrap();
        assert!(text.contains("\"runId\":\"upgrade-1\""));
        assert!(text.contains("\"rolled-back\"") || text.contains("\"held\""));
        assert_eq!(serde_json::from_str::<RunRecord>(&text).unwrap(), record);
        assert_eq!(record.wave(2), Some(&["b".to_string()][..]));
        assert_eq!(record.wave(0), None);
        assert_eq!(record.wave(3), None);
        assert_eq!(
            record.nodes_in(&[NodeProgress::Held]),
            vec!["b".to_string()]
        );
        assert_eq!(name_for("kata-deploy"), "kata-deploy-klm-run");
    }

    #[test]
    fn the_plan_is_stored_as_the_records_own_fields() {
        let mut record = example();
        record.plan.waves = Some(vec![vec!["a".into()]]);
        record.plan.max_failed_nodes = Some(1);
        let stored = serde_json::to_value(&record).unwrap();
        assert_eq!(stored["waves"], json!([["a"]]));
        assert_eq!(stored["maxFailedNodes"], json!(1));
        assert!(stored.get("plan").is_none() && stored.get("window").is_none());
        let read: RunRecord = serde_json::from_value(stored).unwrap();
        assert_eq!(read.plan, record.plan);
    }

    fn gate_before(wave: usize, approved: Option<&str>) -> Gate {
        let mut gate: Gate = serde_json::from_value(json!({
            "beforeWave": wave,
            "after": "the canary wave",
        }))
        .unwrap();
        gate.passage.approved = approved.map(str::to_string);
        gate
    }

    #[test]
    fn a_retried_plan_keeps_how_far_the_run_got_through_gates_that_stand() {
        let mut plan = RunPlan {
            gates: vec![gate_before(2, Some("alice"))],
            ..RunPlan::default()
        };
        plan.replan(RunPlan {
            waves: Some(vec![vec!["a".into()], vec!["b".into()]]),
            gates: vec![gate_before(2, None)],
            ..RunPlan::default()
        });
        assert_eq!(plan.gates[0].passage.approved.as_deref(), Some("alice"));
        assert_eq!(plan.waves.as_ref().map(Vec::len), Some(2));

        plan.replan(RunPlan {
            gates: vec![gate_before(3, None)],
            ..RunPlan::default()
        });
        assert_eq!(plan.gates[0].before_wave, 3);
        assert_eq!(
            plan.gates[0].passage.approved, None,
            "a moved gate starts anew"
        );
    }
}
