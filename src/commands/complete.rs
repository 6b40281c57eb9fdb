//! `klm complete`: mark verified nodes completed and return them to service.

use clap::Args as ClapArgs;

use crate::cli::{ChartArgs, ReleaseArgs, RunArgs};

/// Flags of `klm complete`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "With --nodes: marks them completed at --target-version, removes the selection taint recorded\nat cordon, and uncordons them (unless they were unschedulable before the run).\nWith --finish-run: closes the run record and restores the release values the run changed for\nits own mechanics where that is safe, reporting those left in place and why.\n\nExamples:\n  klm complete --nodes worker-1 --target-version 3.28.0\n  klm complete --finish-run --target-version 3.28.0"
)]
pub struct Args {
    /// The nodes (names separated by commas, or a JSON list).
    #[arg(long, value_name = "NODES", value_parser = crate::cli::parse_node_list, required_unless_present = "finish_run")]
    pub nodes: Option<crate::cli::NodeList>,

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

/// Runs the step.
pub async fn run(
    _args: Args,
    _global: &crate::cli::GlobalArgs,
) -> anyhow::Result<crate::error::ExitStatus> {
    Err(crate::error::UserError::failed("PLACEHOLDER: not written yet").into())
}
