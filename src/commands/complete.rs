//! `klm complete`: mark verified nodes completed and return them to service.

use clap::Args as ClapArgs;

use super::flags;
use crate::args::{ChartArgs, GlobalArgs, ReleaseArgs, RunArgs};
use crate::error::ExitStatus;
use crate::output;
use crate::steps::complete::{self, Request};

/// Flags of `klm complete`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "With --nodes: marks them completed at the run's target, removes the selection taint recorded\nat cordon, and uncordons them (unless they were unschedulable before the run).\nWith --finish-run: closes the run record and restores the release values the run changed for\nits own mechanics where that is safe, reporting those left in place and why.\n\nExamples:\n  klm complete --nodes worker-1\n  klm complete --finish-run --run-id upgrade-1"
)]
pub struct Args {
    /// The nodes (names separated by commas, or a JSON list).
    #[arg(long, value_name = "NODES", value_parser = crate::args::parse_node_list, required_unless_present = "finish_run")]
    pub nodes: Option<crate::args::NodeList>,

    /// The version the nodes were verified at; default: the run's target (a different one is refused).
    #[arg(long, value_name = "VERSION", value_parser = crate::versions::parse_flag)]
    pub target_version: Option<semver::Version>,

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
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let client = crate::cluster::client(global).await?;
    let request = Request {
        release: flags::release_ref(&args.release),
        run_id: args.run.run_id,
        target: args.target_version,
        nodes: args.nodes.map(|nodes| nodes.0),
        finish_run: args.finish_run,
        chart: args.chart.chart,
        helm_timeout: args.chart.helm_timeout,
    };
    let report =
        complete::complete(&client, &flags::helm(&args.release, global)?, &request).await?;
    output::print(global.output, &report)?;
    Ok(ExitStatus::Done)
}
