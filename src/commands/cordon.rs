//! `klm cordon`: hold nodes for a run and mark them unschedulable.

use clap::Args as ClapArgs;

use super::flags;
use crate::args::{GlobalArgs, NodesArgs, ReleaseArgs, RunArgs, SelectionArgs};
use crate::error::ExitStatus;
use crate::nodes::selection::Criteria;
use crate::output;
use crate::steps::cordon::{Request, cordon};

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

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let selection = Criteria::new(
        None,
        args.selection.node_taint_key.as_deref(),
        args.selection.node_taint_value.as_deref(),
    )?;
    let client = crate::cluster::client(global).await?;
    let request = Request {
        nodes: args.nodes.targets(),
        release: flags::release_ref(&args.release),
        run_id: args.run.run_id,
        selection,
    };
    let report = cordon(&client, &flags::helm(&args.release, global)?, &request).await?;
    output::print(global.output, &report)?;
    Ok(ExitStatus::Done)
}
