//! `klm status`: the upgrade state of nodes, and of the release's run.

use std::collections::BTreeMap;

use clap::Args as ClapArgs;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::annotations;
use crate::args::{GlobalArgs, ReleaseArgs, RunArgs, SelectionArgs};
use crate::error::{ExitStatus, KubeResultExt, UserError};
use crate::kata_deploy::{self, KataDaemonSet};
use crate::nodes::hold;
use crate::nodes::selection::{self, Criteria};
use crate::output::{self, Report};
use crate::run_record::{Records, RunRecord, RunState};
use crate::step;

/// Flags of `klm status`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Examples:\n  klm status\n  klm status --node-selector node-pool=kata -o json\n  klm status --run-id upgrade-1 --fail-if-run-failed   # exit 3 once the run failed or was interrupted"
)]
pub struct Args {
    /// Which nodes (default: the nodes that run kata-deploy or carry klm's annotations).
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Exit 3 if the run has failed or was interrupted (a guard for scripts).
    #[arg(long, requires = "run_id")]
    pub fail_if_run_failed: bool,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which run.
    #[command(flatten)]
    pub run: RunArgs,
}

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
}

/// The state of the nodes and of the release's run.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The release's latest run, if any.
    pub run: Option<RunSummary>,
    /// The nodes.
    pub nodes: Vec<NodeRow>,
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
    pub nodes: BTreeMap<String, crate::run_record::NodeProgress>,
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
        }
    }
}

impl Report for Status {
    fn text(&self) -> String {
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let rows: Vec<Vec<String>> = self
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.name.clone(),
                    dash(&n.status),
                    dash(&n.verified_version),
                    if n.schedulable {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                    if n.kata_runtime {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                    dash(&n.kata_deploy_pod),
                    match (&n.pod_version, n.pod_current) {
                        (Some(v), Some(false)) => format!("{v} (old revision)"),
                        (v, _) => dash(v),
                    },
                    dash(&n.held_by),
                ]
            })
            .collect();
        let mut text = String::new();
        if let Some(run) = &self.run {
            text.push_str(&format!(
                "run {}: {:?} ({} mode, {} -> {}){}\n\n",
                run.run_id,
                run.state,
                run.mode,
                run.from_version,
                run.target_version,
                run.failure
                    .as_deref()
                    .map(|f| format!(": {f}"))
                    .unwrap_or_default()
            ));
        }
        if self.nodes.is_empty() {
            text.push_str("no nodes match");
        } else {
            text.push_str(&output::table(
                &[
                    "NODE",
                    "STATUS",
                    "VERIFIED",
                    "SCHEDULABLE",
                    "KATA",
                    "KATA-DEPLOY POD",
                    "POD VERSION",
                    "HELD BY",
                ],
                &rows,
            ));
        }
        text
    }
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let criteria = step::criteria(&args.selection)?;
    let client = crate::cluster::client(global).await?;
    let records = Records::new(&client, &args.release.helm_namespace);
    let record = match &args.run.run_id {
        Some(run_id) => Some(
            records
                .resolve(&args.release.helm_release, Some(run_id))
                .await?,
        ),
        None => records
            .load(&args.release.helm_release)
            .await?
            .map(|(r, _)| r),
    };
    let helm = step::helm(&args.release, global)?;
    let nodes = rows(&client, &helm, &args.release, &criteria).await?;
    let failed = record
        .as_ref()
        .is_some_and(|r| matches!(r.state, RunState::Failed | RunState::Interrupted));
    let report = Status {
        run: record.map(RunSummary::from),
        nodes,
    };
    output::print(global.output, &report)?;
    if args.fail_if_run_failed && failed {
        let failure = report
            .run
            .as_ref()
            .and_then(|r| r.failure.clone())
            .unwrap_or_default();
        return Err(UserError::precondition(format!(
            "the run has failed ({failure}); no further wave may start"
        ))
        .hint("see `klm status` for the nodes it rolled back")
        .into());
    }
    Ok(ExitStatus::Done)
}

async fn rows(
    client: &Client,
    helm: &crate::helm::Helm,
    release: &ReleaseArgs,
    criteria: &Criteria,
) -> anyhow::Result<Vec<NodeRow>> {
    let nodes_api: Api<Node> = Api::all(client.clone());
    let mut params = ListParams::default();
    if let Some(selector) = &criteria.label_selector {
        params = params.labels(selector);
    }
    let nodes = nodes_api
        .list(&params)
        .await
        .during(|| "listing nodes".to_string())?
        .items;
    let (pods, revision) = kata_deploy_pods(client, helm, release).await;
    let shown = nodes.iter().filter(|n| {
        if criteria.is_empty() {
            selection::runs_kata(n)
                || selection::annotation(n, annotations::STATUS).is_some()
                || pods.contains_key(&n.name_any())
        } else {
            criteria.taint_matches(n)
        }
    });
    let mut rows: Vec<NodeRow> = shown
        .map(|n| {
            let pod = pods.get(&n.name_any());
            NodeRow {
                name: n.name_any(),
                status: selection::annotation(n, annotations::STATUS).map(String::from),
                verified_version: selection::annotation(n, annotations::CURRENT_VERSION)
                    .map(String::from),
                schedulable: !hold::is_unschedulable(n),
                kata_runtime: selection::runs_kata(n),
                kata_deploy_pod: pod.map(|p| p.name_any()),
                pod_version: pod.and_then(kata_deploy::pod_version),
                pod_current: pod
                    .zip(revision.as_ref())
                    .map(|(p, r)| kata_deploy::revision_of(p) == Some(r.as_str())),
                held_by: selection::annotation(n, annotations::RUN).map(String::from),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

/// The release's kata-deploy pods by node, and the DaemonSet's current
/// revision; empty when the release has no DaemonSet (job mode) or cannot be read.
async fn kata_deploy_pods(
    client: &Client,
    helm: &crate::helm::Helm,
    release: &ReleaseArgs,
) -> (BTreeMap<String, Pod>, Option<String>) {
    let Ok(found) = step::release_ref(release).load(helm).await else {
        return Default::default();
    };
    let Ok(object) = found.daemonset() else {
        return Default::default();
    };
    let Ok(daemonset) = KataDaemonSet::find(client, &object).await else {
        return Default::default();
    };
    let revision = daemonset
        .current_revision(std::time::Duration::from_secs(10))
        .await
        .ok()
        .map(|r| r.hash);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &daemonset.namespace);
    let Ok(list) = pods
        .list(&ListParams::default().labels(daemonset.selector()))
        .await
    else {
        return (Default::default(), revision);
    };
    let by_node = list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| Some((p.spec.as_ref()?.node_name.clone()?, p)))
        .collect();
    (by_node, revision)
}
