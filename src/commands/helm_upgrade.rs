//! `klm helm-upgrade`: move the kata-deploy release to the target version.

use clap::Args as ClapArgs;

use crate::cli::{ChartArgs, ReleaseArgs, RunArgs};
use crate::versions::ModeChoice;

/// Flags of `klm helm-upgrade`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "daemonset mode: run once before any wave, with updateStrategy.type=OnDelete (nothing restarts).\njob mode: run once per wave with --nodes (job.nodes and job.parallelism are scoped to the wave).\n\nExamples:\n  klm helm-upgrade --target-version 3.28.0\n  klm helm-upgrade --target-version 3.32.1 --deployment-mode job --nodes worker-1,worker-2\n  klm helm-upgrade --target-version 3.28.0 --set image.reference=mirror.example/kata-deploy"
)]
pub struct Args {
    /// The kata-deploy chart version to upgrade to.
    #[arg(long, value_name = "VERSION")]
    pub target_version: String,

    /// kata-deploy's deployment model; auto uses the run record, then the release.
    #[arg(long, value_enum, default_value_t = ModeChoice::Auto)]
    pub deployment_mode: ModeChoice,

    /// job mode: the wave's nodes (names separated by commas, or a JSON list).
    #[arg(long, value_name = "NODES", value_parser = crate::cli::parse_node_list)]
    pub nodes: Option<crate::cli::NodeList>,

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
pub async fn run(
    _args: Args,
    _global: &crate::cli::GlobalArgs,
) -> anyhow::Result<crate::error::ExitStatus> {
    Err(crate::error::UserError::failed("PLACEHOLDER: not written yet").into())
}
