//! `klm rollback`: return nodes to the version recorded before the run.

use std::time::Duration;

use clap::Args as ClapArgs;

use crate::args::{
    ChartArgs, GlobalArgs, NodesArgs, ReleaseArgs, RunArgs, VerificationArgs, parse_duration,
};
use crate::error::ExitStatus;
use crate::output;
use crate::rollback::{self, Request};
use crate::step;

/// Flags of `klm rollback`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Each node returns to the version it ran before the run touched it (recorded at cordon), else to\nthe release's version recorded before the run; never to \"the previous revision\".\nThe nodes are reverted first; with a verification pod they are verified again afterwards, before\nthey return to service (a pod the apiserver rejects fails that node's verification).\n\nExamples:\n  klm rollback --nodes worker-1\n  klm rollback --nodes worker-1 --verification-pod verify.yaml --run-id upgrade-1"
)]
pub struct Args {
    /// The nodes.
    #[command(flatten)]
    pub nodes: NodesArgs,

    /// How long each node may take to come back Ready at the old version.
    #[arg(long, default_value = "10m", value_parser = parse_duration, env = "KLM_RESTART_TIMEOUT", value_name = "DURATION")]
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
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let settings = step::rollback_settings(args.chart, args.timeout, &args.verification)?;
    let client = crate::cluster::client(global).await?;
    let nodes = step::step_nodes(&client, &args.release, &args.run, &args.nodes).await?;
    let request = Request {
        nodes,
        reason: args.reason,
        release: step::release_ref(&args.release),
        run_id: args.run.run_id,
        settings,
    };
    let report =
        rollback::roll_back(&client, &step::helm(&args.release, global)?, &request).await?;
    output::print(global.output, &report)?;
    report.outcome()?;
    Ok(ExitStatus::Done)
}
