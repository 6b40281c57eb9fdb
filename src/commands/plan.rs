//! `klm plan`: what an upgrade would do; changes nothing.

use clap::Args as ClapArgs;

use crate::args::{GlobalArgs, ReleaseArgs, SelectionArgs, VerificationArgs};
use crate::error::ExitStatus;
use crate::nodes::planning::{self, Selection};
use crate::nodes::waves;
use crate::output::{self, Report};
use crate::preflight::{self, Checked};
use crate::step;
use crate::versions::{self, DeploymentMode, ModeChoice};

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

    /// Nodes per wave.
    #[arg(long, default_value = "1", value_name = "N", value_parser = waves::parse_batch_size)]
    pub batch_size: usize,

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

/// What an upgrade would do.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The release.
    pub release: String,
    /// The mode.
    pub mode: DeploymentMode,
    /// From which chart version.
    pub current_version: String,
    /// To which.
    pub target_version: String,
    /// Whether a verification pod was validated.
    pub verification_pod: bool,
    /// The nodes and waves.
    pub selection: Selection,
    /// Things a person should know.
    pub warnings: Vec<String>,
}

impl Report for Plan {
    fn text(&self) -> String {
        let mut lines = vec![format!(
            "Upgrade {} from {} to {} in {} mode.",
            self.release, self.current_version, self.target_version, self.mode
        )];
        lines.push(match self.mode {
            DeploymentMode::Daemonset => {
                "1. helm upgrade once with updateStrategy OnDelete (nothing restarts)".into()
            }
            DeploymentMode::Job => {
                "1. per wave: helm upgrade scoped to the wave's nodes (job.nodes)".into()
            }
        });
        lines.push(
            "2. per wave: cordon, restart kata-deploy, verify; complete, or roll back and stop"
                .into(),
        );
        lines.push(String::new());
        lines.push(self.selection.text());
        if !self.verification_pod {
            lines.push("warning: no verification pod given; the workflow requires one".into());
        }
        lines.extend(self.warnings.iter().map(|w| format!("warning: {w}")));
        lines.push("Nothing was changed.".into());
        lines.join("\n")
    }
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let target = args.target_version.clone();
    let batch_size = args.batch_size;
    let criteria = step::criteria(&args.selection)?;
    let template = crate::verification::VerificationPod::from_args(&args.verification)?;
    let client = crate::cluster::client(global).await?;
    let helm = step::helm(&args.release, global)?;
    let reference = step::release_ref(&args.release);
    let Checked {
        release,
        mode,
        warnings,
        ..
    } = preflight::check(
        &client,
        &helm,
        &reference,
        &target,
        args.deployment_mode,
        template.as_ref(),
    )
    .await?;
    let selection = planning::select(
        &client,
        &helm,
        &reference,
        &criteria,
        args.pool_label.as_deref(),
        batch_size,
        None,
    )
    .await?;
    let plan = Plan {
        release: reference.name,
        mode,
        current_version: release.chart_version,
        target_version: target.to_string(),
        verification_pod: template.is_some(),
        selection,
        warnings,
    };
    output::print(global.output, &plan)?;
    Ok(ExitStatus::Done)
}
