//! `klm plan`: what an upgrade would do; changes nothing.

use clap::Args as ClapArgs;

use crate::cli::{ReleaseArgs, SelectionArgs, VerificationArgs};
use crate::versions::ModeChoice;

/// Flags of `klm plan`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Examples:\n  klm plan --target-version 3.28.0 --batch-size 2 --verification-pod verify.yaml"
)]
pub struct Args {
    /// The kata-deploy chart version to upgrade to.
    #[arg(long, value_name = "VERSION")]
    pub target_version: String,

    /// kata-deploy's deployment model; auto reads it from the release.
    #[arg(long, value_enum, default_value_t = ModeChoice::Auto)]
    pub deployment_mode: ModeChoice,

    /// Nodes per wave.
    #[arg(long, default_value = "1", value_name = "N")]
    pub batch_size: String,

    /// Order nodes by this label first, then by name.
    #[arg(long, value_name = "LABEL")]
    pub pool_label: Option<String>,

    /// How nodes are selected.
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// The verification pod to validate (optional for a plan).
    #[command(flatten)]
    pub verification: VerificationArgs,
}

/// Runs the step.
pub async fn run(
    _args: Args,
    _global: &crate::cli::GlobalArgs,
) -> anyhow::Result<crate::error::ExitStatus> {
    Err(crate::error::UserError::failed("PLACEHOLDER: not written yet").into())
}
