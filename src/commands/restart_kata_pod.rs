//! `klm restart-kata-pod`: install the new version on nodes and wait for it.

use std::time::Duration;

use clap::Args as ClapArgs;

use super::flags;
use crate::args::{ChartArgs, GlobalArgs, NodesArgs, ReleaseArgs, RunArgs, parse_duration};
use crate::error::ExitStatus;
use crate::output;
use crate::steps::restart_kata_pod::{self, Request};
use crate::versions::ModeChoice;

/// Flags of `klm restart-kata-pod`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "daemonset mode: deletes each node's kata-deploy pod and waits for its replacement at the\nDaemonSet's current revision to be Ready and the node to carry katacontainers.io/kata-runtime=true.\njob mode: upgrades the release with job.nodes scoped to the nodes (the run's target and chart\nvalues; a retry that finds it done changes nothing), then waits for their per-node install Jobs\nand the label.\n\nExamples:\n  klm restart-kata-pod --nodes worker-1 --timeout 10m"
)]
pub struct Args {
    /// The nodes.
    #[command(flatten)]
    pub nodes: NodesArgs,

    /// kata-deploy's deployment model; auto uses the run record, then the release.
    #[arg(long, value_enum, default_value_t = ModeChoice::Auto)]
    pub deployment_mode: ModeChoice,

    /// How long each node may take to come back Ready.
    #[arg(long, default_value = "10m", value_parser = parse_duration, env = "KLM_RESTART_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    pub timeout: Duration,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which chart (job mode upgrades the release for the nodes).
    #[command(flatten)]
    pub chart: ChartArgs,

    /// Which run.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let client = crate::cluster::client(global).await?;
    let request = Request {
        nodes: args.nodes.targets(),
        release: flags::release_ref(&args.release),
        run_id: args.run.run_id,
        mode: args.deployment_mode,
        timeout: args.timeout,
        chart: args.chart.chart,
        helm_timeout: args.chart.helm_timeout,
    };
    let report =
        restart_kata_pod::restart(&client, &flags::helm(&args.release, global)?, &request).await?;
    output::print(global.output, &report)?;
    report.outcome()?;
    Ok(ExitStatus::Done)
}
