//! `klm helm-upgrade`: move the kata-deploy release to the target version.

use clap::Args as ClapArgs;

use crate::args::{ChartArgs, GlobalArgs, ReleaseArgs, RunArgs, split_set_values};
use crate::error::{ExitStatus, UserError};
use crate::output;
use crate::step;
use crate::upgrade::{self, Request};
use crate::versions::{self, ModeChoice};

/// Flags of `klm helm-upgrade`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "daemonset mode: run once before any wave, with updateStrategy.type=OnDelete (nothing restarts);\nwhen select-nodes recorded an empty plan for the run, nothing is upgraded.\njob mode: run once per wave with --nodes (job.nodes and job.parallelism are scoped to the wave).\n\nExamples:\n  klm helm-upgrade --target-version 3.28.0\n  klm helm-upgrade --target-version 3.32.1 --deployment-mode job --nodes worker-1,worker-2\n  klm helm-upgrade --target-version 3.28.0 --set image.reference=mirror.example/kata-deploy"
)]
pub struct Args {
    /// The kata-deploy chart version to upgrade to.
    #[arg(long, value_name = "VERSION")]
    pub target_version: String,

    /// kata-deploy's deployment model; auto uses the run record, then the release.
    #[arg(long, value_enum, default_value_t = ModeChoice::Auto)]
    pub deployment_mode: ModeChoice,

    /// job mode: the wave's nodes (names separated by commas, or a JSON list).
    #[arg(long, value_name = "NODES", value_parser = crate::args::parse_node_list)]
    pub nodes: Option<crate::args::NodeList>,

    /// job mode, instead of --nodes: wave K (from 1) of the run's recorded plan.
    #[arg(long, value_name = "K", conflicts_with = "nodes", value_parser = clap::value_parser!(u32).range(1..))]
    pub wave: Option<u32>,

    /// Extra chart values, as helm's --set (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,

    /// Extra chart values as one comma-separated list (the workflow's helm-set-values).
    #[arg(long, value_name = "KEY=VALUE,...", default_value = "")]
    pub helm_set_values: String,

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
    let target = versions::parse(&args.target_version)?;
    let mut user_set = args.set.clone();
    user_set.extend(split_set_values(&args.helm_set_values).map_err(|why| {
        UserError::bad_input(format!("--helm-set-values: {why}")).hint("give key=value pairs separated by commas, e.g. image.reference=mirror/kata-deploy,debug=true")
    })?);
    if let Some(bad) = user_set.iter().find(|item| !item.contains('=')) {
        return Err(
            UserError::bad_input(format!("--set {bad:?} is not key=value"))
                .hint("give --set key=value")
                .into(),
        );
    }
    let client = crate::cluster::client(global).await?;
    let request = Request {
        release: step::release_ref(&args.release),
        run_id: args.run.run_id,
        target,
        mode: args.deployment_mode,
        nodes: args.nodes.map(|nodes| nodes.0),
        wave: args.wave,
        set: user_set,
        chart: args.chart.chart,
        helm_timeout: args.chart.helm_timeout,
    };
    let report = upgrade::upgrade(&client, &step::helm(&args.release, global), &request).await?;
    output::print(global.output, &report)?;
    Ok(ExitStatus::Done)
}
