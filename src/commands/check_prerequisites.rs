//! `klm check-prerequisites`: can this upgrade start? Records what rollback needs.

use std::time::Duration;

use super::flags;
use crate::args::{
    ChartArgs, ChartValuesArgs, DowngradeArgs, GlobalArgs, ReleaseArgs, RunArgs, VerificationArgs,
    parse_duration,
};
use crate::error::ExitStatus;
use crate::output::{self, Report};
use crate::steps::check_prerequisites;
use crate::versions::{self, DeploymentMode, ModeChoice};
use clap::Args as ClapArgs;
use semver::Version;

/// Flags of `klm check-prerequisites`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Examples:\n  klm check-prerequisites --target-version 3.28.0 --verification-pod verify.yaml\n  klm check-prerequisites --target-version 3.32.0 --deployment-mode job --run-id upgrade-1 -o json"
)]
pub struct Args {
    /// The kata-deploy chart version to upgrade to (semver, e.g. 3.28.0).
    #[arg(long, value_name = "VERSION", value_parser = versions::parse_flag)]
    pub target_version: Version,

    /// kata-deploy's deployment model; auto reads it from the release.
    #[arg(long, value_enum, default_value_t = ModeChoice::Auto)]
    pub deployment_mode: ModeChoice,

    /// Whether the target may be older than the release's version.
    #[command(flatten)]
    pub downgrade: DowngradeArgs,

    /// The label whose values are the run's pools: recorded, it picks each
    /// node's pool verification pod (needed with --pool-verification-pod).
    #[arg(long, value_name = "LABEL")]
    pub pool_label: Option<String>,

    /// The deadline each workflow step gets (the chart's
    /// workflow.stepDeadlineSeconds): timeouts that a step could not finish
    /// within are refused. Without it, nothing is checked.
    #[arg(long, value_parser = parse_duration, env = "KLM_STEP_DEADLINE", value_name = "DURATION", allow_hyphen_values = true)]
    pub step_deadline: Option<Duration>,

    /// The restart timeout the run's steps use (checked against --step-deadline).
    #[arg(long, default_value = "10m", value_parser = parse_duration, env = "KLM_RESTART_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    pub restart_timeout: Duration,

    /// The drain timeout the run's steps use (checked against --step-deadline).
    #[arg(long, default_value = "300s", value_parser = parse_duration, env = "KLM_DRAIN_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    pub drain_timeout: Duration,

    /// The run's extra kata-deploy chart values: recorded, every upgrade of the run uses them.
    #[command(flatten)]
    pub values: ChartValuesArgs,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which run (a new run id is generated when none is given).
    #[command(flatten)]
    pub run: RunArgs,

    /// The verification pods to validate.
    #[command(flatten)]
    pub verification: VerificationArgs,

    /// The kata-deploy chart the run upgrades to, and the helm timeout its
    /// steps use (checked against --step-deadline).
    #[command(flatten)]
    pub chart: ChartArgs,
}

/// What check-prerequisites found.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Prerequisites {
    /// The run.
    pub run_id: String,
    /// The mode the run uses (what later steps key on).
    pub mode: DeploymentMode,
    /// The release.
    pub release: String,
    /// Its namespace.
    pub namespace: String,
    /// The chart version deployed now (the rollback target).
    pub current_version: String,
    /// The chart version of the deployed revision before this one, if any.
    pub previous_version: Option<String>,
    /// The deployed revision.
    pub revision: u32,
    /// The version to upgrade to.
    pub target_version: String,
    /// Whether a default verification pod was validated.
    pub verification_pod: bool,
    /// The pools whose own verification pods were validated.
    pub pool_pods: Vec<String>,
    /// True when this run's record already existed (a retried step).
    pub resumed: bool,
    /// Warnings worth a person's attention.
    pub warnings: Vec<String>,
}

impl Report for Prerequisites {
    fn text(&self) -> String {
        let mut lines = vec![
            format!(
                "release:   {} in {} (revision {}, chart {})",
                self.release, self.namespace, self.revision, self.current_version
            ),
            format!(
                "previous:  {}",
                self.previous_version.as_deref().unwrap_or("-")
            ),
            format!("target:    {}", self.target_version),
            format!("mode:      {}", self.mode),
            format!(
                "verification pod: {}",
                if self.verification_pod {
                    "valid"
                } else {
                    "not given"
                }
            ),
            format!(
                "run:       {}{}",
                self.run_id,
                if self.resumed {
                    " (already recorded; rollback target unchanged)"
                } else {
                    " (recorded)"
                }
            ),
        ];
        if !self.pool_pods.is_empty() {
            lines.push(format!(
                "pool pods: valid for {}",
                self.pool_pods.join(", ")
            ));
        }
        lines.extend(self.warnings.iter().map(|w| format!("warning: {w}")));
        lines.push("all prerequisites met".into());
        lines.join("\n")
    }
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let target = args.target_version;
    if let Some(deadline) = args.step_deadline {
        check_prerequisites::check_step_deadline(
            deadline,
            args.chart.helm_timeout,
            args.restart_timeout,
            args.verification.verification_timeout,
            args.drain_timeout,
        )?;
    }
    let pods = crate::verification::Pods::from_args(&args.verification)?;
    let client = crate::cluster::client(global).await?;
    let helm = flags::helm(&args.release, global)?;
    let reference = flags::release_ref(&args.release);
    let chart_values = args.values.items();
    let started = check_prerequisites::start_run(
        &client,
        &helm,
        &check_prerequisites::StartRequest {
            release: &reference,
            run_id: args.run.run_id.clone(),
            target: &target,
            mode: args.deployment_mode,
            chart_values: chart_values.clone(),
            pool_label: crate::args::pool_label(args.pool_label.as_deref()),
            pods: &pods,
            rehearsal: check_prerequisites::Rehearsal {
                chart: &args.chart.chart,
                chart_values: &chart_values,
                helm_timeout: args.chart.helm_timeout,
            },
            allow_downgrade: args.downgrade.allow_downgrade,
            driver: None,
        },
    )
    .await?;
    let record = started.record;
    let report = Prerequisites {
        run_id: record.run_id,
        mode: record.mode,
        release: reference.name,
        namespace: reference.namespace,
        current_version: record.before.chart_version,
        previous_version: started.previous_version,
        revision: record.before.revision,
        target_version: target.to_string(),
        verification_pod: pods.default_pod().is_some(),
        pool_pods: pods.pools().map(String::from).collect(),
        resumed: started.resumed,
        warnings: started.warnings,
    };
    output::print(global.output, &report)?;
    Ok(ExitStatus::Done)
}
