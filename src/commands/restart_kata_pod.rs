//! `klm restart-kata-pod`: install the new version on nodes and wait for it.

use std::time::Duration;

use clap::Args as ClapArgs;

use crate::cli::{NodesArgs, ReleaseArgs, RunArgs, parse_duration};
use crate::versions::ModeChoice;

/// Flags of `klm restart-kata-pod`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "daemonset mode: deletes each node's kata-deploy pod and waits for its replacement at the\nDaemonSet's current revision to be Ready and the node to carry katacontainers.io/kata-runtime=true.\njob mode: waits for the wave's per-node install Jobs and the label.\n\nExamples:\n  klm restart-kata-pod --nodes worker-1 --timeout 10m"
)]
pub struct Args {
    /// The nodes.
    #[command(flatten)]
    pub nodes: NodesArgs,

    /// kata-deploy's deployment model; auto uses the run record, then the release.
    #[arg(long, value_enum, default_value_t = ModeChoice::Auto)]
    pub deployment_mode: ModeChoice,

    /// How long each node may take to come back Ready.
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

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
