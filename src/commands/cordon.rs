//! `klm cordon`: hold nodes for a run and mark them unschedulable.

use clap::Args as ClapArgs;

use crate::cli::{NodesArgs, ReleaseArgs, RunArgs, SelectionArgs};

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
pub async fn run(
    _args: Args,
    _global: &crate::cli::GlobalArgs,
) -> anyhow::Result<crate::error::ExitStatus> {
    Err(crate::error::UserError::failed("PLACEHOLDER: not written yet").into())
}
