//! `klm rollback`: return nodes to the version recorded before the run.

use std::time::Duration;

use clap::Args as ClapArgs;

use crate::cli::{ChartArgs, NodesArgs, ReleaseArgs, RunArgs, VerificationArgs, parse_duration};

/// Flags of `klm rollback`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "The target is the version in the run record, never \"the previous revision\".\nWith a verification pod the nodes are verified again before they return to service.\n\nExamples:\n  klm rollback --nodes worker-1\n  klm rollback --nodes worker-1 --verification-pod verify.yaml --run-id upgrade-1"
)]
pub struct Args {
    /// The nodes.
    #[command(flatten)]
    pub nodes: NodesArgs,

    /// How long each node may take to come back Ready at the old version.
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Why (recorded on the run record; the workflow passes the failing step).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which chart (job mode reinstalls the recorded version from it).
    #[command(flatten)]
    pub chart: ChartArgs,

    /// Which run (default: the release's latest run).
    #[command(flatten)]
    pub run: RunArgs,

    /// Verify the nodes again after the rollback (optional).
    #[command(flatten)]
    pub verification: VerificationArgs,
}

/// Runs the step.
pub async fn run(
    _args: Args,
    _global: &crate::cli::GlobalArgs,
) -> anyhow::Result<crate::error::ExitStatus> {
    Err(crate::error::UserError::failed("PLACEHOLDER: not written yet").into())
}
