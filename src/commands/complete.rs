//! `klm complete`: mark verified nodes completed and return them to service.

use clap::Args as ClapArgs;
use futures::future::try_join_all;
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use serde_json::Value;

use crate::annotations::NodeStatus;
use crate::args::{ChartArgs, GlobalArgs, ReleaseArgs, RunArgs};
use crate::error::{ExitStatus, UserError};
use crate::helm::Helm;
use crate::nodes::hold::{self, Release, Released};
use crate::output::{self, Report};
use crate::run_record::{NodeProgress, Records, RunRecord, RunState};
use crate::step;
use crate::versions::DeploymentMode;

/// Flags of `klm complete`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "With --nodes: marks them completed at --target-version, removes the selection taint recorded\nat cordon, and uncordons them (unless they were unschedulable before the run).\nWith --finish-run: closes the run record and restores the release values the run changed for\nits own mechanics where that is safe, reporting those left in place and why.\n\nExamples:\n  klm complete --nodes worker-1 --target-version 3.28.0\n  klm complete --finish-run --target-version 3.28.0"
)]
pub struct Args {
    /// The nodes (names separated by commas, or a JSON list).
    #[arg(long, value_name = "NODES", value_parser = crate::args::parse_node_list, required_unless_present = "finish_run")]
    pub nodes: Option<crate::args::NodeList>,

    /// The version the nodes were verified at.
    #[arg(long, value_name = "VERSION")]
    pub target_version: String,

    /// Close the run: restore or report the release values the run changed.
    #[arg(long)]
    pub finish_run: bool,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which chart (to restore values).
    #[command(flatten)]
    pub chart: ChartArgs,

    /// Which run.
    #[command(flatten)]
    pub run: RunArgs,
}

/// What complete did.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Completed {
    /// The run.
    pub run_id: String,
    /// The version the nodes were verified at.
    pub version: String,
    /// Nodes completed.
    pub nodes: Vec<Released>,
    /// With --finish-run: release values restored.
    pub restored: Vec<String>,
    /// With --finish-run: release values left in place, with why.
    pub left_in_place: Vec<LeftInPlace>,
}

/// A value the run set on the release and did not restore.
#[derive(Debug, serde::Serialize)]
pub struct LeftInPlace {
    /// The value's key.
    pub key: String,
    /// Its current value.
    pub value: Value,
    /// Why it stays.
    pub reason: String,
    /// The command that puts the user's values back.
    pub command: String,
}

impl Report for Completed {
    fn text(&self) -> String {
        let mut lines: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                let cordon = if n.kept_cordoned {
                    ", left unschedulable (it was before the run)"
                } else {
                    ", back in service"
                };
                format!("{}: completed at {}{cordon}", n.node, self.version)
            })
            .collect();
        if !self.restored.is_empty() {
            lines.push(format!(
                "restored release values: {}",
                self.restored.join(", ")
            ));
        }
        for left in &self.left_in_place {
            lines.push(format!(
                "left in place: {}={} ({})",
                left.key, left.value, left.reason
            ));
        }
        if lines.is_empty() {
            lines.push(format!("run {} finished", self.run_id));
        }
        lines.join("\n")
    }
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let target = crate::versions::parse(&args.target_version)?.to_string();
    let client = crate::cluster::client(global).await?;
    let records = Records::new(&client, &args.release.helm_namespace);
    let record = step::active_run(
        &records,
        &args.release.helm_release,
        args.run.run_id.as_deref(),
    )
    .await?;
    step::ensure_run_target(&record, &target)?;
    let mut report = Completed {
        run_id: record.run_id.clone(),
        version: target.clone(),
        ..Default::default()
    };
    if let Some(nodes) = &args.nodes {
        report.nodes = complete_nodes(&client, &records, &record, &nodes.0, &target).await?;
    }
    if args.finish_run {
        let helm = step::helm(&args.release, global);
        finish_run(&client, &helm, &records, &record, &args.chart, &mut report).await?;
    }
    output::print(global.output, &report)?;
    if let Some(left) = report.left_in_place.first() {
        return Err(UserError::failed(format!(
            "run {} is finished, but the release keeps values it set for its own mechanics: {}",
            record.run_id,
            report
                .left_in_place
                .iter()
                .map(|l| format!("{}={}", l.key, l.value))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .hint(left.reason.clone())
        .hint(format!(
            "once that is resolved, put the values you had before the run back with: {}",
            left.command
        ))
        .into());
    }
    Ok(ExitStatus::Done)
}

async fn complete_nodes(
    client: &Client,
    records: &Records,
    record: &RunRecord,
    nodes: &[String],
    target: &str,
) -> anyhow::Result<Vec<Released>> {
    let unverified: Vec<&String> = nodes
        .iter()
        .filter(|n| {
            !matches!(
                record.nodes.get(*n),
                Some(NodeProgress::Verified | NodeProgress::Completed)
            )
        })
        .collect();
    if !unverified.is_empty() {
        return Err(UserError::precondition(format!(
            "run {} has not verified {}",
            record.run_id,
            unverified
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .hint("run `klm verify` on them first; only verified nodes are completed")
        .into());
    }
    let nodes_api: Api<Node> = Api::all(client.clone());
    try_join_all(nodes.iter().map(|n| hold::get(&nodes_api, n))).await?;
    let how = Release {
        status: Some(NodeStatus::Completed),
        current_version: Some(Some(target.to_string())),
        remove_selection_taints: true,
        uncordon: true,
        release: Some(record.release_id()),
        ..Default::default()
    };
    let released = try_join_all(
        nodes
            .iter()
            .map(|n| hold::release(client, n, Some(&record.run_id), &how)),
    )
    .await?;
    records
        .update(&record.release, &record.run_id, |r| {
            for node in nodes {
                r.nodes.insert(node.clone(), NodeProgress::Completed);
            }
        })
        .await?;
    Ok(released.into_iter().flatten().collect())
}

/// Closes the run: restores what the run set on the release for its own
/// mechanics where that cannot restart unverified nodes, reports the rest.
async fn finish_run(
    client: &Client,
    helm: &Helm,
    records: &Records,
    record: &RunRecord,
    chart: &ChartArgs,
    report: &mut Completed,
) -> anyhow::Result<()> {
    let reference = crate::release::ReleaseRef {
        name: record.release.clone(),
        namespace: record.namespace.clone(),
    };
    let release = reference.load(helm).await?;
    release.ensure_deployed()?;
    let mechanics: Vec<(String, Value)> = record
        .mechanics
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // job mode: the values go back without hooks, so the installer does not
    // run again on any node (the release's values then say what the user
    // asked for; each node runs what klm verified on it).
    let (restorable, no_hooks) = match record.mode {
        DeploymentMode::Daemonset => (daemonset_fully_rolled(client, &release).await?, false),
        DeploymentMode::Job => (Ok(()), true),
    };
    let command = crate::release::restore_command(
        &reference,
        &chart.chart,
        &release.chart_version,
        record.before.revision,
        no_hooks,
    );
    match restorable {
        Ok(()) if !mechanics.is_empty() => {
            let mut values = release.user_values.clone();
            crate::run_values::restore_user_values(
                &mut values,
                mechanics.iter().map(|(k, _)| k.as_str()),
                &record.before.user_values,
            );
            release
                .restore_values(
                    helm,
                    &chart.chart,
                    &release.chart_version,
                    &values,
                    no_hooks,
                    chart.helm_timeout,
                )
                .await
                .map_err(|err| {
                    UserError::failed(format!(
                        "the release's values could not be restored: {}",
                        crate::error::describe(&err.into())
                    ))
                    .hint(format!("retry `klm complete --finish-run --run-id {}`, or restore them with: {command}", record.run_id))
                })?;
            report.restored = mechanics.iter().map(|(k, _)| k.clone()).collect();
        }
        Ok(()) => {}
        Err(reason) => {
            report.left_in_place = mechanics
                .into_iter()
                .map(|(key, value)| LeftInPlace {
                    key,
                    value,
                    reason: reason.clone(),
                    command: command.clone(),
                })
                .collect();
        }
    }
    records
        .update(&record.release, &record.run_id, |r| {
            r.state = RunState::Completed;
            r.mechanics.clear();
        })
        .await?;
    Ok(())
}

/// Restoring RollingUpdate is safe only when every kata-deploy pod already
/// runs the current revision: otherwise the controller would restart the
/// remaining nodes onto the new version without verification.
async fn daemonset_fully_rolled(
    client: &Client,
    release: &crate::release::Release,
) -> anyhow::Result<Result<(), String>> {
    let daemonset = crate::kata_deploy::KataDaemonSet::find(client, &release.daemonset()?).await?;
    let revision = daemonset
        .current_revision(std::time::Duration::from_secs(60))
        .await?;
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(client.clone(), &daemonset.namespace);
    let list = pods
        .list(&kube::api::ListParams::default().labels(daemonset.selector()))
        .await?;
    let behind: Vec<String> = list
        .items
        .iter()
        .filter(|p| crate::kata_deploy::revision_of(p) != Some(revision.hash.as_str()))
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    if behind.is_empty() {
        Ok(Ok(()))
    } else {
        Ok(Err(format!(
            "nodes outside this run still run an older kata-deploy ({}); restoring the update strategy would restart them unverified — upgrade them with klm, then restore it with helm",
            behind.join(", ")
        )))
    }
}
