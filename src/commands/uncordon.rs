//! `klm uncordon`: return nodes to service and release the run's hold.

use clap::Args as ClapArgs;

use crate::cli::{NodesArgs, RunArgs};

/// Flags of `klm uncordon`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "A node that was unschedulable before the run is left unschedulable.\n\nExamples:\n  klm uncordon --nodes worker-1\n  klm uncordon --nodes worker-1 --run-id upgrade-1"
)]
pub struct Args {
    /// The nodes.
    #[command(flatten)]
    pub nodes: NodesArgs,

    /// Only release nodes held by this run (default: whichever run holds them).
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
