//! `klm drain`: evict the pods of nodes through the Eviction API.

use std::time::Duration;

use clap::Args as ClapArgs;

use crate::cli::{NodesArgs, RunArgs, parse_duration};

/// Flags of `klm drain`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "DaemonSet pods and mirror pods are left alone; PodDisruptionBudgets are honoured.\n\nExamples:\n  klm drain --nodes worker-1 --drain-timeout 5m"
)]
pub struct Args {
    /// The nodes (cordon them first).
    #[command(flatten)]
    pub nodes: NodesArgs,

    /// How long evictions may wait for PodDisruptionBudgets and pods to go.
    #[arg(long, default_value = "300s", value_parser = parse_duration, value_name = "DURATION")]
    pub drain_timeout: Duration,

    /// The run that holds the nodes.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs the step.
pub async fn run(
    _args: Args,
    _global: &crate::cli::GlobalArgs,
) -> anyhow::Result<crate::error::ExitStatus> {
    Err(crate::error::UserError::failed("PLACEHOLDER: not written yet").into())
}
