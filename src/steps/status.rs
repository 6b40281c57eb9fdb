//! The fleet as `klm status` shows it: each node's upgrade state with its
//! kata-deploy pod, and the release's run. [`snapshot`] reads it once;
//! [`watch`] keeps it current from watches (nodes, kata-deploy's pods, the
//! run record) and hands over a new [`Status`] whenever it changes.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::ListParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::annotations;
use crate::error::KubeResultExt;
use crate::helm::Helm;
use crate::kata_deploy::{self, KataDaemonSet};
use crate::nodes::hold;
use crate::nodes::selection::{self, Criteria};
use crate::output::{self, Report};
use crate::release::ReleaseRef;
use crate::run_record::{self, RunRecord, RunState};

/// How long changes are gathered before a new status is handed over (a
/// wave changes several objects at once).
const SETTLE: Duration = Duration::from_millis(300);

/// One node's row.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    /// The node.
    pub name: String,
    /// klm's status annotation.
    pub status: Option<String>,
    /// The version it was verified at.
    pub verified_version: Option<String>,
    /// Whether new pods can land on it.
    pub schedulable: bool,
    /// Whether kata-deploy labelled it.
    pub kata_runtime: bool,
    /// Its kata-deploy pod (daemonset mode).
    pub kata_deploy_pod: Option<String>,
    /// The version that pod runs.
    pub pod_version: Option<String>,
    /// Whether that pod runs the DaemonSet's current revision.
    pub pod_current: Option<bool>,
    /// The run holding it.
    pub held_by: Option<String>,
    /// Its wave in the run shown (from 1), when that run planned it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wave: Option<usize>,
    /// The run shown is under way, planned this node and has not reached
    /// it yet: its status is a previous run's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub not_yet_reached: bool,
    /// Its pool (the run's pool label's value), when the run has pools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Which pod verifies it (`pool pod`, `default pod`), when the run has pools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_with: Option<String>,
}

/// The state of the nodes and of the release's run.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Why the release's kata-deploy could not be read (no release of that
    /// name in that namespace, ...): the nodes are shown without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_problem: Option<String>,
    /// The release's latest run, if any.
    pub run: Option<RunSummary>,
    /// The nodes.
    pub nodes: Vec<NodeRow>,
    /// With `--sandboxes`: per verified node, the Kata pods that started
    /// before it was verified at its version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandboxes: Option<Vec<crate::sandboxes::OldSandboxes>>,
}

/// The parts of the run record a person wants to see.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The run.
    pub run_id: String,
    /// Its state.
    pub state: RunState,
    /// Why it failed.
    pub failure: Option<String>,
    /// Its mode.
    pub mode: String,
    /// The version before the run (the rollback target).
    pub from_version: String,
    /// The version it upgrades to.
    pub target_version: String,
    /// The nodes it touched and what it did to them.
    pub nodes: BTreeMap<String, run_record::NodeProgress>,
    /// What it waits for before its next wave, while it waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<run_record::Held>,
    /// Paused by a person (`klm pause`), while it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<run_record::Intervention>,
    /// Aborted by a person (`klm abort`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted: Option<run_record::Intervention>,
    /// How many planned nodes may fail before it stops (`--max-failed-nodes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_failed_nodes: Option<usize>,
    /// The nodes that failed within that budget, each with why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_nodes: BTreeMap<String, String>,
    /// The query its metric gates ask (`--gate-query`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric_query: Option<crate::schedule::metric::MetricQuery>,
    /// Once it ended: the values it set for its own mechanics that the
    /// release keeps (OnDelete, until the nodes still on an older
    /// kata-deploy are upgraded); the next run restores them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub left_on_release: BTreeMap<String, serde_json::Value>,
    /// With values left on the release: the nodes whose kata-deploy pod is
    /// older than the DaemonSet's current revision.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes_behind: Vec<String>,
}

impl RunSummary {
    /// The run's lines above the table: what it is, then what it waits
    /// for, whether it is paused or aborted, its metric gates, its failure
    /// budget and what it left on the release, as far as they apply.
    fn lines(&self) -> Vec<String> {
        let failure = self
            .failure
            .as_deref()
            .map(|f| format!(": {f}"))
            .unwrap_or_default();
        let mut lines = vec![format!(
            "run {}: {:?} ({} mode, {} -> {}){failure}",
            self.run_id, self.state, self.mode, self.from_version, self.target_version,
        )];
        lines.extend(self.held.as_ref().map(ToString::to_string));
        if let Some(aborted) = &self.aborted {
            lines.push(format!("aborted {aborted}"));
        } else if let Some(paused) = &self.paused {
            lines.push(format!(
                "paused {paused}: no new wave starts until `klm resume --run-id {}`",
                self.run_id
            ));
        }
        if let Some(query) = &self.metric_query {
            lines.push(format!(
                "metric gates: {} at {}",
                query.describe(),
                query.url
            ));
        }
        lines.extend(self.budget_note());
        lines.extend(self.left_note());
        lines
    }

    /// The run's failure budget and the nodes that failed within it, in
    /// lines (None: the run has no budget).
    pub fn budget_note(&self) -> Option<String> {
        let allowed = self.max_failed_nodes?;
        let mut lines = vec![format!(
            "failure budget: {} of {allowed} node(s) failed (--max-failed-nodes)",
            self.failed_nodes.len()
        )];
        lines.extend(
            self.failed_nodes
                .iter()
                .map(|(node, why)| format!("  {node}: {why}")),
        );
        Some(lines.join("\n"))
    }

    /// What the run left on the release, in a sentence (None: nothing).
    fn left_note(&self) -> Option<String> {
        if self.left_on_release.is_empty() {
            return None;
        }
        let values: Vec<String> = self
            .left_on_release
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let until = if self.nodes_behind.is_empty() {
            "; the next run restores your values when it finishes".to_string()
        } else {
            format!(
                " until every node runs kata-deploy's current revision (not yet: {}); the run that brings the last of them there restores your values",
                self.nodes_behind.join(", ")
            )
        };
        Some(format!(
            "the release keeps {} (set by run {} for its own mechanics){until}",
            values.join(", "),
            self.run_id
        ))
    }
}

impl From<RunRecord> for RunSummary {
    fn from(r: RunRecord) -> Self {
        Self {
            run_id: r.run_id,
            state: r.state,
            failure: r.failure,
            mode: r.mode.to_string(),
            from_version: r.before.chart_version,
            target_version: r.target_version.to_string(),
            nodes: r.nodes,
            held: r.held.filter(|_| r.state == RunState::Running),
            paused: r.paused.filter(|_| r.state == RunState::Running),
            aborted: r.aborted,
            max_failed_nodes: r.plan.max_failed_nodes,
            failed_nodes: r.failed_nodes,
            metric_query: r.plan.metric_query,
            left_on_release: if r.state.is_closed() {
                r.mechanics
            } else {
                BTreeMap::new()
            },
            nodes_behind: Vec::new(),
        }
    }
}

impl Report for Status {
    fn text(&self) -> String {
        let pooled = self.nodes.iter().any(|n| n.verified_with.is_some());
        let mut text = String::new();
        if let Some(problem) = &self.release_problem {
            text.push_str(&format!(
                "{problem}: kata-deploy's pods and revision are not shown; name your release with --helm-release and --helm-namespace (`helm list -A` lists them)\n\n"
            ));
        }
        if let Some(run) = &self.run {
            text.push_str(&run.lines().join("\n"));
            text.push_str("\n\n");
        }
        if self.nodes.is_empty() {
            text.push_str("no nodes match");
        } else {
            let mut header = vec![
                "NODE",
                "WAVE",
                "STATUS",
                "VERIFIED",
                "SCHEDULABLE",
                "KATA",
                "KATA-DEPLOY POD",
                "POD VERSION",
                "HELD BY",
            ];
            if pooled {
                header.extend(["POOL", "VERIFIED WITH"]);
            }
            let rows: Vec<Vec<String>> = self.nodes.iter().map(|n| n.cells(pooled)).collect();
            text.push_str(&output::table(&header, &rows));
        }
        if let Some(sandboxes) = &self.sandboxes {
            text.push_str("\n\n");
            text.push_str(&sandboxes_text(sandboxes));
        }
        text
    }
}

impl NodeRow {
    /// The node's cells in the status table (with its pool's when `pooled`).
    fn cells(&self, pooled: bool) -> Vec<String> {
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        let mut cells = vec![
            self.name.clone(),
            self.wave.map_or_else(|| "-".into(), |w| w.to_string()),
            if self.not_yet_reached {
                "not yet reached in this run".into()
            } else {
                dash(&self.status)
            },
            dash(&self.verified_version),
            yes_no(self.schedulable),
            yes_no(self.kata_runtime),
            dash(&self.kata_deploy_pod),
            match (&self.pod_version, self.pod_current) {
                (Some(v), Some(false)) => format!("{v} (old revision)"),
                (v, _) => dash(v),
            },
            dash(&self.held_by),
        ];
        if pooled {
            cells.push(dash(&self.pool));
            cells.push(dash(&self.verified_with));
        }
        cells
    }
}

/// The `--sandboxes` section: per verified node, the Kata pods that started
/// before it was verified.
fn sandboxes_text(sandboxes: &[crate::sandboxes::OldSandboxes]) -> String {
    if sandboxes.is_empty() {
        return "no Kata pod started before its node's verification: every sandbox runs the verified runtime".into();
    }
    let mut text = String::from(
        "Kata pods started before their node was verified (they still run the runtime they started with):",
    );
    for node in sandboxes {
        let pods: Vec<String> = node
            .pods
            .iter()
            .map(|(pod, started)| format!("{pod} (started {started})"))
            .collect();
        text.push_str(&format!(
            "\n  {} (verified at {} {}): {}",
            node.node,
            node.version,
            node.verified_at,
            pods.join(", ")
        ));
    }
    text
}

/// What the fleet's status is made of.
#[derive(Debug, Default, Clone)]
pub struct Fleet {
    /// Every node the criteria's label selector matches.
    pub nodes: Vec<Node>,
    /// The release's kata-deploy pods, by node (daemonset mode).
    pub pods: BTreeMap<String, Pod>,
    /// The DaemonSet's current revision (daemonset mode).
    pub revision: Option<String>,
    /// The run shown.
    pub record: Option<RunRecord>,
    /// Why the release's kata-deploy could not be read, if it could not.
    pub release_problem: Option<String>,
}

impl Fleet {
    /// The status of the nodes the criteria select (none given: those that
    /// run kata-deploy or carry klm's annotations), sorted by name.
    pub fn status(&self, criteria: &Criteria) -> Status {
        let shown = self.nodes.iter().filter(|n| {
            if criteria.is_empty() {
                selection::runs_kata(n)
                    || selection::annotation(n, annotations::STATUS).is_some()
                    || self.pods.contains_key(&n.name_any())
            } else {
                criteria.taint_matches(n)
            }
        });
        let mut nodes: Vec<NodeRow> = shown.map(|n| self.row(n)).collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut run = self.record.clone().map(RunSummary::from);
        if let (Some(run), Some(revision)) = (run.as_mut(), &self.revision)
            && !run.left_on_release.is_empty()
        {
            run.nodes_behind = self
                .pods
                .iter()
                .filter(|(_, p)| kata_deploy::revision_of(p) != Some(revision.as_str()))
                .map(|(node, _)| node.clone())
                .collect();
        }
        Status {
            release_problem: self.release_problem.clone(),
            run,
            nodes,
            sandboxes: None,
        }
    }

    fn row(&self, n: &Node) -> NodeRow {
        let pod = self.pods.get(&n.name_any());
        // With pools on record: each node's pool, and whether its pool has its own pod.
        let pooled = self.record.as_ref().filter(|r| r.pool_label.is_some());
        let pool = pooled
            .and_then(|r| selection::label(n, r.pool_label.as_deref()?))
            .map(String::from);
        let verified_with = pooled.map(|r| {
            let own = pool.as_ref().is_some_and(|p| r.pool_pods.contains(p));
            if own { "pool pod" } else { "default pod" }.to_string()
        });
        let name = n.name_any();
        let wave = self.record.as_ref().and_then(|r| {
            r.plan
                .waves
                .as_ref()?
                .iter()
                .position(|wave| wave.contains(&name))
                .map(|i| i + 1)
        });
        let not_yet_reached = wave.is_some()
            && self
                .record
                .as_ref()
                .is_some_and(|r| r.state == RunState::Running && !r.nodes.contains_key(&name));
        NodeRow {
            wave,
            not_yet_reached,
            name: n.name_any(),
            status: selection::annotation(n, annotations::STATUS).map(String::from),
            verified_version: selection::annotation(n, annotations::CURRENT_VERSION)
                .map(String::from),
            schedulable: !hold::is_unschedulable(n),
            kata_runtime: selection::runs_kata(n),
            kata_deploy_pod: pod.map(|p| p.name_any()),
            pod_version: pod.and_then(kata_deploy::pod_version),
            pod_current: pod
                .zip(self.revision.as_ref())
                .map(|(p, r)| kata_deploy::revision_of(p) == Some(r.as_str())),
            held_by: selection::annotation(n, annotations::RUN).map(String::from),
            pool,
            verified_with,
        }
    }
}

/// Whether the run shown has failed or was interrupted.
pub fn run_failed(status: &Status) -> bool {
    status
        .run
        .as_ref()
        .is_some_and(|r| matches!(r.state, RunState::Failed | RunState::Interrupted))
}

/// The release's kata-deploy DaemonSet, or why it cannot be read.
async fn daemonset(
    client: &Client,
    helm: &Helm,
    release: &ReleaseRef,
) -> Result<KataDaemonSet, String> {
    let found = release.load(helm).await.map_err(|e| e.to_string())?;
    let object = found.daemonset().map_err(|e| e.to_string())?;
    KataDaemonSet::find(client, &object)
        .await
        .map_err(|e| crate::error::describe(&e.into()))
}

async fn current_revision(daemonset: &KataDaemonSet) -> Option<String> {
    daemonset
        .current_revision(Duration::from_secs(10))
        .await
        .ok()
        .map(|r| r.hash)
}

fn by_node(pods: impl IntoIterator<Item = Pod>) -> BTreeMap<String, Pod> {
    pods.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| Some((p.spec.as_ref()?.node_name.clone()?, p)))
        .collect()
}

/// The fleet now with the run `run_id` names (else the release's latest
/// run, if any): what `klm status` shows once.
pub async fn snapshot_of_run(
    client: &Client,
    helm: &Helm,
    release: &ReleaseRef,
    criteria: &Criteria,
    run_id: Option<&str>,
) -> anyhow::Result<Fleet> {
    let records = crate::run_record::Records::new(client, &release.namespace);
    let record = match run_id {
        Some(run_id) => Some(records.resolve(&release.name, Some(run_id)).await?),
        None => records.load(&release.name).await?.map(|(r, _)| r),
    };
    snapshot(client, helm, release, criteria, record).await
}

/// The fleet now: nodes, the release's kata-deploy pods, and `record`.
pub async fn snapshot(
    client: &Client,
    helm: &Helm,
    release: &ReleaseRef,
    criteria: &Criteria,
    record: Option<RunRecord>,
) -> anyhow::Result<Fleet> {
    let mut params = ListParams::default();
    if let Some(selector) = &criteria.label_selector {
        params = params.labels(selector);
    }
    let nodes = Api::<Node>::all(client.clone())
        .list(&params)
        .await
        .during(|| "listing nodes".to_string())?
        .items;
    let mut fleet = Fleet {
        nodes,
        record,
        ..Fleet::default()
    };
    match daemonset(client, helm, release).await {
        Err(why) => fleet.release_problem = Some(why),
        Ok(daemonset) => {
            fleet.revision = current_revision(&daemonset).await;
            let pods: Api<Pod> = Api::namespaced(client.clone(), &daemonset.namespace);
            if let Ok(list) = pods
                .list(&ListParams::default().labels(daemonset.selector()))
                .await
            {
                fleet.pods = by_node(list.items);
            }
        }
    }
    Ok(fleet)
}

/// What a watch event touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Touched {
    /// A node, a kata-deploy pod or the run record.
    Shown,
    /// The DaemonSet: its current revision may have moved (helm-upgrade).
    DaemonSet,
}

/// Keeps the fleet current from watches of the nodes, the release's
/// kata-deploy pods and DaemonSet and its run record (the run named, or the
/// latest), and
/// calls `changed` with the new status each time it changes, until
/// `changed` returns false or a watch ends. A dropped watch is resumed.
pub async fn watch(
    client: &Client,
    helm: &Helm,
    release: &ReleaseRef,
    criteria: &Criteria,
    run_id: Option<&str>,
    mut changed: impl FnMut(&Status) -> bool,
) -> anyhow::Result<()> {
    let mut node_config = watcher::Config::default();
    if let Some(selector) = &criteria.label_selector {
        node_config = node_config.labels(selector);
    }
    let (node_store, node_writer) = reflector::store::<Node>();
    let nodes = reflector::reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), node_config).default_backoff(),
    )
    .touched_objects()
    .map(|_| Touched::Shown);
    let (record_store, record_writer) = reflector::store::<ConfigMap>();
    let records = reflector::reflector(
        record_writer,
        watcher(
            Api::<ConfigMap>::namespaced(client.clone(), &release.namespace),
            crate::wait::by_name(&run_record::name_for(&release.name)),
        )
        .default_backoff(),
    )
    .touched_objects()
    .map(|_| Touched::Shown);
    let (daemonset, release_problem) = match daemonset(client, helm, release).await {
        Ok(daemonset) => (Some(daemonset), None),
        Err(why) => (None, Some(why)),
    };
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let mut streams: Vec<futures::stream::BoxStream<'_, Touched>> =
        vec![nodes.boxed(), records.boxed()];
    if let Some(daemonset) = &daemonset {
        // Its first event (the initial list) reads the revision too.
        let spec = watcher(
            Api::<DaemonSet>::namespaced(client.clone(), &daemonset.namespace),
            crate::wait::by_name(&daemonset.name),
        )
        .default_backoff()
        .applied_objects()
        .map(|_| Touched::DaemonSet);
        streams.push(spec.boxed());
        let pods = reflector::reflector(
            pod_writer,
            watcher(
                Api::<Pod>::namespaced(client.clone(), &daemonset.namespace),
                watcher::Config::default().labels(daemonset.selector()),
            )
            .default_backoff(),
        )
        .touched_objects()
        .map(|_| Touched::Shown);
        streams.push(pods.boxed());
    }
    let mut events = futures::stream::select_all(streams);
    let mut last: Option<String> = None;
    let mut revision = None;
    while let Some(first) = events.next().await {
        // Gather what changed together, then show it once.
        let mut daemonset_changed = first == Touched::DaemonSet;
        let _ = tokio::time::timeout(SETTLE, async {
            while let Some(touched) = events.next().await {
                daemonset_changed |= touched == Touched::DaemonSet;
            }
        })
        .await;
        if let (true, Some(daemonset)) = (daemonset_changed, &daemonset) {
            revision = current_revision(daemonset).await;
        }
        let fleet = Fleet {
            nodes: cloned(&node_store),
            pods: by_node(cloned(&pod_store)),
            revision: revision.clone(),
            record: record_of(&record_store, run_id),
            release_problem: release_problem.clone(),
        };
        let status = fleet.status(criteria);
        let rendered = serde_json::to_string(&status)?;
        if last.as_ref() == Some(&rendered) {
            continue;
        }
        last = Some(rendered);
        if !changed(&status) {
            return Ok(());
        }
    }
    Ok(())
}

fn cloned<K: Clone + kube::Resource<DynamicType = ()>>(store: &Store<K>) -> Vec<K> {
    store.state().iter().map(|o| o.as_ref().clone()).collect()
}

/// The run record in the store, if it is the run asked for (any, without one).
fn record_of(store: &Store<ConfigMap>, run_id: Option<&str>) -> Option<RunRecord> {
    let config_map = store.state().into_iter().next()?;
    let record: RunRecord =
        serde_json::from_str(config_map.data.as_ref()?.get(run_record::DATA_KEY)?).ok()?;
    match run_id {
        Some(wanted) if wanted != record.run_id => None,
        _ => Some(record),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, annotations: serde_json::Value, labels: serde_json::Value) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": annotations, "labels": labels},
            "spec": {"unschedulable": annotations.get(annotations::RUN).is_some()},
        }))
        .unwrap()
    }

    #[test]
    fn a_run_with_pools_shows_each_nodes_pool_and_the_pod_that_verifies_it() {
        let kata =
            |pool: &str| serde_json::json!({annotations::KATA_RUNTIME_LABEL: "true", "pool": pool});
        let mut record = crate::run_record::example();
        record.pool_label = Some("pool".into());
        record.pool_pods = vec!["gpu".into()];
        let mut fleet = Fleet {
            nodes: vec![
                node("c1", serde_json::json!({}), kata("cpu")),
                node("g1", serde_json::json!({}), kata("gpu")),
            ],
            record: Some(record),
            ..Fleet::default()
        };
        let status = fleet.status(&Criteria::default());
        let shown: Vec<(Option<&str>, Option<&str>)> = status
            .nodes
            .iter()
            .map(|n| (n.pool.as_deref(), n.verified_with.as_deref()))
            .collect();
        assert_eq!(
            shown,
            [
                (Some("cpu"), Some("default pod")),
                (Some("gpu"), Some("pool pod"))
            ]
        );
        let text = status.text();
        assert!(
            text.contains("POOL") && text.contains("VERIFIED WITH"),
            "{text}"
        );
        // Without pools, the table is as before.
        fleet.record = None;
        assert!(!fleet.status(&Criteria::default()).text().contains("POOL"));
    }

    #[test]
    fn a_held_run_says_what_it_waits_for_and_how_to_go_on() {
        let mut record = crate::run_record::example();
        record.held = Some(crate::run_record::Held {
            wave: 2,
            waiting_for: crate::run_record::Waiting::Approval,
            since: "2026-12-02T10:00:00Z".into(),
            until: None,
            approve_with: Some("argo resume upgrade-1 -n argo".into()),
        });
        let mut fleet = Fleet {
            record: Some(record),
            ..Fleet::default()
        };
        let text = fleet.status(&Criteria::default()).text();
        let second = text.lines().nth(1).unwrap_or_default();
        assert_eq!(
            second, "held before wave 2: waiting for approval (argo resume upgrade-1 -n argo)",
            "{text}"
        );
        // A closed run waits for nothing, whatever its record kept.
        if let Some(r) = fleet.record.as_mut() {
            r.state = RunState::Failed;
        }
        assert!(
            !fleet
                .status(&Criteria::default())
                .text()
                .contains("held before")
        );
        let window = crate::run_record::Held {
            wave: 1,
            waiting_for: crate::run_record::Waiting::Window,
            since: "2026-12-02T10:00:00Z".into(),
            until: Some("2026-12-03T00:00:00Z".into()),
            approve_with: None,
        };
        assert_eq!(
            window.to_string(),
            "held before wave 1: outside the maintenance window, which opens at 2026-12-03T00:00:00Z"
        );
    }

    #[test]
    fn a_finished_partial_run_says_what_the_release_keeps_and_until_when() {
        let pod = |node: &str, hash: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("kata-deploy-{node}"), "labels": {"controller-revision-hash": hash}},
                "spec": {"nodeName": node, "containers": []}
            }))
            .unwrap()
        };
        let mut record = crate::run_record::example();
        record.state = RunState::Completed;
        record.mechanics = BTreeMap::from([
            (
                "updateStrategy.type".to_string(),
                serde_json::json!("OnDelete"),
            ),
            ("verification.pod".to_string(), serde_json::json!("")),
        ]);
        let fleet = Fleet {
            pods: by_node([pod("w1", "new"), pod("w2", "old")]),
            revision: Some("new".into()),
            record: Some(record.clone()),
            ..Fleet::default()
        };
        let status = fleet.status(&Criteria::default());
        let run = status.run.as_ref().unwrap();
        assert_eq!(run.nodes_behind, ["w2"]);
        let second = status.text().lines().nth(1).unwrap_or_default().to_string();
        assert_eq!(
            second,
            "the release keeps updateStrategy.type=\"OnDelete\", verification.pod=\"\" (set by run upgrade-1 for its own mechanics) until every node runs kata-deploy's current revision (not yet: w2); the run that brings the last of them there restores your values"
        );
        // A running run's mechanics are its own business.
        record.state = RunState::Running;
        let running = Fleet {
            record: Some(record),
            ..fleet
        };
        assert!(
            !running
                .status(&Criteria::default())
                .text()
                .contains("keeps")
        );
    }

    #[test]
    fn a_running_run_shows_each_nodes_wave_and_the_nodes_it_has_not_reached() {
        let kata = serde_json::json!({annotations::KATA_RUNTIME_LABEL: "true"});
        let done = serde_json::json!({annotations::STATUS: "completed"});
        let mut record = crate::run_record::example();
        record.plan.waves = Some(vec![vec!["a".into()], vec!["b".into()]]);
        record
            .nodes
            .insert("a".into(), crate::run_record::NodeProgress::Completed);
        let mut fleet = Fleet {
            nodes: vec![
                node("a", done.clone(), kata.clone()),
                // Completed by the previous run; this one has not reached it.
                node("b", done.clone(), kata.clone()),
                node("c", done, kata),
            ],
            record: Some(record),
            ..Fleet::default()
        };
        let status = fleet.status(&Criteria::default());
        let rows: Vec<(&str, Option<usize>, bool)> = status
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.wave, n.not_yet_reached))
            .collect();
        assert_eq!(
            rows,
            [
                ("a", Some(1), false),
                ("b", Some(2), true),
                ("c", None, false)
            ]
        );
        let text = status.text();
        let row_b = text.lines().find(|l| l.starts_with("b ")).unwrap();
        assert!(
            row_b.contains(" 2 ") && row_b.contains("not yet reached in this run"),
            "{text}"
        );
        // Once the run ended, the statuses are what they are.
        if let Some(r) = fleet.record.as_mut() {
            r.state = RunState::Failed;
        }
        assert!(
            !fleet
                .status(&Criteria::default())
                .text()
                .contains("not yet reached")
        );
    }

    #[test]
    fn a_release_that_cannot_be_read_is_said_first() {
        let fleet = Fleet {
            release_problem: Some(
                "Helm release kata-deploy was not found in namespace kube-system".into(),
            ),
            ..Fleet::default()
        };
        let text = fleet.status(&Criteria::default()).text();
        assert!(
            text.starts_with("Helm release kata-deploy was not found in namespace kube-system: kata-deploy's pods and revision are not shown; name your release with --helm-release and --helm-namespace"),
            "{text}"
        );
    }

    #[test]
    fn the_default_view_shows_kata_nodes_and_the_ones_klm_touched() {
        let fleet = Fleet {
            nodes: vec![
                node("plain", serde_json::json!({}), serde_json::json!({})),
                node(
                    "kata",
                    serde_json::json!({}),
                    serde_json::json!({annotations::KATA_RUNTIME_LABEL: "true"}),
                ),
                node(
                    "held",
                    serde_json::json!({annotations::STATUS: "cordoned", annotations::RUN: "upgrade-1"}),
                    serde_json::json!({}),
                ),
            ],
            ..Fleet::default()
        };
        let status = fleet.status(&Criteria::default());
        let names: Vec<&str> = status.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["held", "kata"]);
        let held = &status.nodes[0];
        assert_eq!(held.status.as_deref(), Some("cordoned"));
        assert_eq!(held.held_by.as_deref(), Some("upgrade-1"));
        assert!(!held.schedulable);
        assert!(status.nodes[1].kata_runtime);
        assert!(!run_failed(&status));
    }
}
