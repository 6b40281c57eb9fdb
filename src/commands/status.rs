//! `klm status`: the upgrade state of nodes, and of the release's run.

use clap::Args as ClapArgs;

use crate::cli::{ReleaseArgs, RunArgs, SelectionArgs};

/// Flags of `klm status`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Examples:\n  klm status\n  klm status --node-selector node-pool=kata -o json\n  klm status --run-id upgrade-1 --fail-if-run-failed   # the workflow's per-wave guard"
)]
pub struct Args {
    /// Which nodes (default: the nodes that run kata-deploy or carry klm's annotations).
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Exit 3 if the run has failed (used as a guard before each wave).
    #[arg(long, requires = "run_id")]
    pub fail_if_run_failed: bool,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

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
