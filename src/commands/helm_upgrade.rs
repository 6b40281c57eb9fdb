//! `klm helm-upgrade`: move the kata-deploy release to the run's target.

use clap::Args as ClapArgs;

use super::flags;
use crate::args::{ChartArgs, ChartValuesArgs, GlobalArgs, ReleaseArgs, RunArgs};
use crate::error::ExitStatus;
use crate::output;
use crate::steps::helm_upgrade::{self, Request, Stage};
use crate::versions::ModeChoice;

/// Flags of `klm helm-upgrade`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "The version, the mode and the chart values are the run's (recorded by check-prerequisites).\n--stage before-waves (the workflow runs it once): daemonset mode upgrades the release with\nupdateStrategy.type=OnDelete (nothing restarts; nothing at all when the run selected no node);\njob mode has nothing to do yet.\n--stage wave --wave K: job mode upgrades the release with job.nodes and job.parallelism scoped to\nthe wave (restart-kata-pod does this itself in job mode); daemonset mode has nothing to do.\nWithout --stage: the stage of the run's mode.\n\nExamples:\n  klm helm-upgrade --stage before-waves --run-id upgrade-1\n  klm helm-upgrade --stage wave --nodes worker-1,worker-2 --run-id upgrade-1\n  klm helm-upgrade --set image.reference=mirror.example/kata-deploy"
)]
pub struct Args {
    /// When in the run: before-waves, or wave (with --wave or --nodes); klm decides from the run's mode what it does.
    #[arg(long, value_enum, value_name = "STAGE")]
    pub stage: Option<Stage>,

    /// The kata-deploy chart version; default: the run's target (a different one is refused).
    #[arg(long, value_name = "VERSION", value_parser = crate::versions::parse_flag)]
    pub target_version: Option<semver::Version>,

    /// kata-deploy's deployment model; auto uses the run's (a different one is refused).
    #[arg(long, value_enum, default_value_t = ModeChoice::Auto)]
    pub deployment_mode: ModeChoice,

    /// job mode: the wave's nodes (names separated by commas, or a JSON list).
    #[arg(long, value_name = "NODES", value_parser = crate::args::parse_node_list)]
    pub nodes: Option<crate::args::NodeList>,

    /// job mode, instead of --nodes: wave K (from 1) of the run's recorded plan.
    #[arg(long, value_name = "K", conflicts_with = "nodes", value_parser = crate::args::parse_wave, allow_negative_numbers = true)]
    pub wave: Option<u32>,

    /// Chart values for this step, after the run's recorded ones.
    #[command(flatten)]
    pub values: ChartValuesArgs,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which chart.
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
        mode: args.deployment_mode,
        stage: args.stage,
        nodes: args.nodes.map(|nodes| nodes.0),
        wave: args.wave,
        set: args.values.items(),
        chart: args.chart.chart,
        helm_timeout: args.chart.helm_timeout,
    };
    let report =
        helm_upgrade::upgrade(&client, &flags::helm(&args.release, global)?, &request).await?;
    output::print(global.output, &report)?;
    Ok(ExitStatus::Done)
}
