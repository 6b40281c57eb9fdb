//! `klm rollback`: return nodes to the version recorded before the run.

use clap::Args as ClapArgs;

use super::flags;
use crate::args::{GlobalArgs, NodesArgs, ReleaseArgs, RollbackArgs, RunArgs};
use crate::error::ExitStatus;
use crate::output;
use crate::steps::rollback::{self, Request};

/// Flags of `klm rollback`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Each node returns to the version it ran before the run touched it (recorded at cordon), else to\nthe release's version recorded before the run; never to \"the previous revision\".\nThe nodes are reverted first; with a verification pod they are verified again afterwards, before\nthey return to service (a pod the apiserver rejects fails that node's verification).\n\nExamples:\n  klm rollback --nodes worker-1\n  klm rollback --nodes worker-1 --verification-pod verify.yaml --run-id upgrade-1"
)]
pub struct Args {
    /// The nodes.
    #[command(flatten)]
    pub nodes: NodesArgs,

    /// Why (recorded on the run record; the workflow passes the failing step).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which run (default: the release's latest run).
    #[command(flatten)]
    pub run: RunArgs,

    /// How nodes are rolled back (and verified again).
    #[command(flatten)]
    pub rollback: RollbackArgs,
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let settings = flags::rollback_settings(&args.rollback)?;
    let client = crate::cluster::client(global).await?;
    let request = Request {
        nodes: args.nodes.targets(),
        reason: args.reason,
        release: flags::release_ref(&args.release),
        run_id: args.run.run_id,
        settings,
        fails_run: true,
    };
    let report =
        rollback::roll_back(&client, &flags::helm(&args.release, global)?, &request).await?;
    output::print(global.output, &report)?;
    report.outcome()?;
    Ok(ExitStatus::Done)
}
