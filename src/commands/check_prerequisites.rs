//! `klm check-prerequisites`: can this upgrade start? Records what rollback needs.

use clap::Args as ClapArgs;

use crate::cli::{ReleaseArgs, RunArgs, VerificationArgs};
use crate::versions::ModeChoice;

/// Flags of `klm check-prerequisites`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Examples:\n  klm check-prerequisites --target-version 3.28.0 --verification-pod verify.yaml\n  klm check-prerequisites --target-version 3.32.0 --deployment-mode job --run-id upgrade-1 -o json"
)]
pub struct Args {
    /// The kata-deploy chart version to upgrade to (semver, e.g. 3.28.0).
    #[arg(long, value_name = "VERSION")]
    pub target_version: String,

    /// kata-deploy's deployment model; auto reads it from the release.
    #[arg(long, value_enum, default_value_t = ModeChoice::Auto)]
    pub deployment_mode: ModeChoice,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which run (a new run id is generated when none is given).
    #[command(flatten)]
    pub run: RunArgs,

    /// The verification pod to validate.
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
