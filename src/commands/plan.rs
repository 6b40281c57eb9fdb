//! `klm plan`: what an upgrade would do; changes nothing.

use clap::Args as ClapArgs;

use super::flags;
use crate::args::{
    ChartArgs, ChartValuesArgs, DowngradeArgs, DrainArgs, GlobalArgs, RecycleArgs, ReleaseArgs,
    SelectionArgs, VerificationArgs, WavesArgs,
};
use crate::error::ExitStatus;
use crate::output;
use crate::steps::plan;
use crate::versions::{self, ModeChoice};

/// Flags of `klm plan`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Examples:\n  klm plan --target-version 3.28.0 --batch-size 2 --verification-pod verify.yaml"
)]
pub struct Args {
    /// The kata-deploy chart version to upgrade to.
    #[arg(long, value_name = "VERSION", value_parser = versions::parse_flag)]
    pub target_version: semver::Version,

    /// kata-deploy's deployment model; auto reads it from the release.
    #[arg(long, value_enum, default_value_t = ModeChoice::Auto)]
    pub deployment_mode: ModeChoice,

    /// Whether the target may be older than the release's version.
    #[command(flatten)]
    pub downgrade: DowngradeArgs,

    /// How the nodes are split into waves.
    #[command(flatten)]
    pub waves: WavesArgs,

    /// How nodes are selected.
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// The verification pod to validate (optional for a plan).
    #[command(flatten)]
    pub verification: VerificationArgs,

    /// The kata-deploy chart the run would upgrade to (its upgrade is
    /// rendered with --dry-run=server).
    #[command(flatten)]
    pub chart: ChartArgs,

    /// The run's extra kata-deploy chart values.
    #[command(flatten)]
    pub values: ChartValuesArgs,

    /// The run's drain: with --drain, the plan names the pods each wave
    /// would evict and the PodDisruptionBudgets that would block it.
    #[command(flatten)]
    pub drain: DrainArgs,

    /// The run's recycling of old sandboxes (shown in the plan).
    #[command(flatten)]
    pub recycle: RecycleArgs,

    /// How to reach the Prometheus of --gate-query (asked once, to check it).
    #[command(flatten)]
    pub prometheus: crate::args::PrometheusArgs,
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let target = args.target_version.clone();
    let policy = args.waves.policy();
    let criteria = flags::criteria(&args.selection)?;
    let pods = crate::verification::Pods::from_args(&args.verification)?;
    let client = crate::cluster::client(global).await?;
    let helm = flags::helm(&args.release, global)?;
    let chart_values = args.values.items();
    let plan = plan::plan(
        &client,
        &helm,
        &plan::Request {
            release: &flags::release_ref(&args.release),
            target: &target,
            mode: args.deployment_mode,
            criteria: &criteria,
            pool_label: args.waves.pool_label(),
            policy: &policy,
            schedule: &args.waves.schedule(),
            // As the run does: nodes completed at the target are skipped.
            skip_completed: Some(&target),
            pods: &pods,
            rehearsal: crate::steps::check_prerequisites::Rehearsal {
                chart: &args.chart.chart,
                chart_values: &chart_values,
                helm_timeout: args.chart.helm_timeout,
            },
            allow_downgrade: args.downgrade.allow_downgrade,
            drain: args.drain.asked().map(|(_, scope)| scope),
            recycle: args.recycle.asked(),
            prometheus: &args.prometheus.credentials(),
        },
    )
    .await?;
    output::print(global.output, &plan)?;
    Ok(ExitStatus::Done)
}
