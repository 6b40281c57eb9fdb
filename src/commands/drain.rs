//! `klm drain`: evict the pods of nodes through the Eviction API.

use std::time::Duration;

use clap::Args as ClapArgs;
use futures::future::try_join_all;

use crate::annotations::NodeStatus;
use crate::args::{GlobalArgs, NodesArgs, ReleaseArgs, RunArgs, parse_duration};
use crate::drain::{Drained, drain};
use crate::error::ExitStatus;
use crate::nodes::hold;
use crate::output::{self, Report};
use crate::run_record::Records;
use crate::step;

/// Flags of `klm drain`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "DaemonSet pods and mirror pods are left alone; PodDisruptionBudgets are honoured.\nCordon the nodes first (klm cordon), or evicted pods may land on them again.\n\nExamples:\n  klm drain --nodes worker-1 --drain-timeout 5m"
)]
pub struct Args {
    /// The nodes (cordon them first).
    #[command(flatten)]
    pub nodes: NodesArgs,

    /// How long evictions may wait for PodDisruptionBudgets and pods to go.
    #[arg(long, default_value = "300s", value_parser = parse_duration, env = "KLM_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Duration,

    /// The run that holds the nodes.
    #[command(flatten)]
    pub run: RunArgs,

    /// Which release (its run record, for --wave).
    #[command(flatten)]
    pub release: ReleaseArgs,
}

/// What drain did.
#[derive(Debug, serde::Serialize)]
pub struct Drain {
    /// Per node.
    pub nodes: Vec<Drained>,
}

impl Report for Drain {
    fn text(&self) -> String {
        self.nodes
            .iter()
            .map(|d| {
                let skipped: Vec<String> = d
                    .skipped
                    .iter()
                    .map(|s| format!("{} ({})", s.pod, s.reason))
                    .collect();
                format!(
                    "{}: evicted {}{}",
                    d.node,
                    if d.evicted.is_empty() {
                        "nothing".to_string()
                    } else {
                        d.evicted.join(", ")
                    },
                    if skipped.is_empty() {
                        String::new()
                    } else {
                        format!("; left {}", skipped.join(", "))
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let client = crate::cluster::client(global).await?;
    let names = step::step_nodes(&client, &args.release, &args.run, &args.nodes).await?;
    let nodes_api = kube::Api::all(client.clone());
    try_join_all(names.iter().map(|n| hold::get(&nodes_api, n))).await?;
    // A drain for a run on record moves its nodes on (the run must hold
    // them); one by hand (no --run-id, or a run klm has no record of) only evicts.
    let latest = match &args.run.run_id {
        Some(_) => Records::new(&client, &args.release.helm_namespace)
            .load(&args.release.helm_release)
            .await?
            .map(|(record, _)| record),
        None => None,
    };
    let run = crate::run_record::named_run(latest.as_ref(), args.run.run_id.as_deref());
    let release_id = run.map(|r| r.release_id()).unwrap_or_default();
    let holder = run.map(|r| hold::Holder {
        run_id: &r.run_id,
        release: &release_id,
    });
    for node in &names {
        hold::advance(&client, node, holder, NodeStatus::Draining).await?;
    }
    // Evictions refused by a PodDisruptionBudget (429) are retried by drain itself, within its timeout.
    let evicting = crate::cluster::client_without_retry(global).await?;
    let drained = try_join_all(
        names
            .iter()
            .map(|n| drain(&evicting, n, args.run.run_id.as_deref(), args.drain_timeout)),
    )
    .await?;
    output::print(global.output, &Drain { nodes: drained })?;
    Ok(ExitStatus::Done)
}
