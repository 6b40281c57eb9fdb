//! `klm cordon`: hold nodes for a run and mark them unschedulable.

use clap::Args as ClapArgs;
use futures::future::try_join_all;
use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::args::{GlobalArgs, NodesArgs, ReleaseArgs, RunArgs, SelectionArgs};
use crate::error::ExitStatus;
use crate::nodes::hold::{self, Held};
use crate::nodes::selection::Criteria;
use crate::output::{self, Report};
use crate::run_record::{NodeProgress, Records};
use crate::step;

/// Flags of `klm cordon`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "A node that was unschedulable before the run stays unschedulable after it.\n\nExamples:\n  klm cordon --nodes worker-1 --run-id upgrade-1\n  klm cordon --nodes worker-1,worker-2 --node-taint-key maintenance"
)]
pub struct Args {
    /// The nodes.
    #[command(flatten)]
    pub nodes: NodesArgs,

    /// The run that holds them.
    #[command(flatten)]
    pub run: RunArgs,

    /// The selection taint to record (complete removes it, rollback restores it).
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Which release (its run record).
    #[command(flatten)]
    pub release: ReleaseArgs,
}

/// What cordon did.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cordoned {
    /// The run holding the nodes.
    pub run_id: String,
    /// Per node.
    pub nodes: Vec<Held>,
}

impl Report for Cordoned {
    fn text(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let before = if n.was_unschedulable {
                    " (it was already unschedulable and will stay so)"
                } else {
                    ""
                };
                let again = if n.newly_held {
                    ""
                } else {
                    " (already held by this run)"
                };
                format!("cordoned {} for run {}{before}{again}", n.node, self.run_id)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let criteria = Criteria::new(
        None,
        args.selection.node_taint_key.as_deref(),
        args.selection.node_taint_value.as_deref(),
    )?;
    let client = crate::cluster::client(global).await?;
    let records = Records::new(&client, &args.release.helm_namespace);
    let record = step::active_run(
        &records,
        &args.release.helm_release,
        args.run.run_id.as_deref(),
    )
    .await?;
    let names = step::step_nodes(&client, &args.release, &args.run, &args.nodes).await?;
    // Every node must exist before any is changed.
    let nodes_api: Api<Node> = Api::all(client.clone());
    try_join_all(names.iter().map(|n| hold::get(&nodes_api, n))).await?;
    // What each node runs before this run touches it: its rollback target.
    let unrecorded: Vec<String> = names
        .iter()
        .filter(|n| !record.node_versions.contains_key(*n) && !record.nodes.contains_key(*n))
        .cloned()
        .collect();
    let helm = step::helm(&args.release, global)?;
    let versions = crate::nodes::installed::observe(
        &client,
        &helm,
        &step::release_ref(&args.release),
        record.mode,
        &unrecorded,
    )
    .await?;
    let release_id = record.release_id();
    let target = record.target_version.to_string();
    let held = try_join_all(names.iter().map(|n| {
        hold::hold_for_release(
            &client,
            n,
            &record.run_id,
            Some(&release_id),
            &criteria,
            &target,
        )
    }))
    .await?;
    records
        .update(&record.release, &record.run_id, |r| {
            for node in &names {
                r.nodes.entry(node.clone()).or_insert(NodeProgress::Held);
            }
            for (node, version) in &versions {
                r.node_versions
                    .entry(node.clone())
                    .or_insert_with(|| version.clone());
            }
        })
        .await?;
    output::print(
        global.output,
        &Cordoned {
            run_id: record.run_id,
            nodes: held,
        },
    )?;
    Ok(ExitStatus::Done)
}
