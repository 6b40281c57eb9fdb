//! `klm check-prerequisites`: can this upgrade start? Records what rollback needs.

use std::time::Duration;

use clap::Args as ClapArgs;
use kube::Client;

use crate::args::{GlobalArgs, ReleaseArgs, RunArgs, VerificationArgs, parse_duration};
use crate::error::{ExitStatus, UserError};
use crate::helm::Helm;
use crate::output::{self, Report};
use crate::release::{self, Release, ReleaseRef};
use crate::run_record::{self, Before, Begun, Records, RunRecord, RunState};
use crate::step;
use crate::versions::{self, DeploymentMode, ModeChoice};

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

    /// The deadline each workflow step gets (the chart's
    /// workflow.stepDeadlineSeconds): timeouts that a step could not finish
    /// within are refused. Without it, nothing is checked.
    #[arg(long, value_parser = parse_duration, env = "KLM_STEP_DEADLINE", value_name = "DURATION")]
    pub step_deadline: Option<Duration>,

    /// The helm timeout the run's steps use (checked against --step-deadline).
    #[arg(long, default_value = "10m", value_parser = parse_duration, env = "KLM_HELM_TIMEOUT", value_name = "DURATION")]
    pub helm_timeout: Duration,

    /// The restart timeout the run's steps use (checked against --step-deadline).
    #[arg(long, default_value = "10m", value_parser = parse_duration, env = "KLM_RESTART_TIMEOUT", value_name = "DURATION")]
    pub restart_timeout: Duration,

    /// The drain timeout the run's steps use (checked against --step-deadline).
    #[arg(long, default_value = "300s", value_parser = parse_duration, env = "KLM_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Duration,
}

/// Time a step needs beyond klm's own timeouts: the pod starting, the API
/// calls and helm reads around the waits.
pub const STEP_MARGIN: Duration = Duration::from_secs(120);

/// The longest a step can take with these timeouts: a rollback (a wave's
/// settle step, the exit handler) runs a helm upgrade, waits for kata-deploy
/// to come back and verifies again; a drain waits up to its own timeout.
pub fn longest_step(
    helm: Duration,
    restart: Duration,
    verification: Duration,
    drain: Duration,
) -> Duration {
    (helm + restart + verification).max(drain) + STEP_MARGIN
}

/// Refuses timeouts that a step deadline would cut short: Argo kills such a
/// step mid-way (a rollback left half done), and does not retry it.
pub fn check_step_deadline(
    deadline: Duration,
    helm: Duration,
    restart: Duration,
    verification: Duration,
    drain: Duration,
) -> Result<(), UserError> {
    let needed = longest_step(helm, restart, verification, drain);
    if deadline >= needed {
        return Ok(());
    }
    Err(UserError::bad_input(format!(
        "the step deadline ({}s) is shorter than the longest step can take: {}s (helm-timeout {}s + restart-timeout {}s + verification-timeout {}s for a rollback, or drain-timeout {}s, plus {}s to start)",
        deadline.as_secs(),
        needed.as_secs(),
        helm.as_secs(),
        restart.as_secs(),
        verification.as_secs(),
        drain.as_secs(),
        STEP_MARGIN.as_secs()
    ))
    .hint(format!(
        "install the chart with workflow.stepDeadlineSeconds={} or more, or submit with shorter timeouts",
        needed.as_secs()
    )))
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
    /// Whether a verification pod was validated.
    pub verification_pod: bool,
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
        lines.extend(self.warnings.iter().map(|w| format!("warning: {w}")));
        lines.push("all prerequisites met".into());
        lines.join("\n")
    }
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    if args.target_version.trim().is_empty() {
        return Err(UserError::bad_input("no target version: --target-version is empty")
            .hint("give the kata-deploy chart version to upgrade to, e.g. `argo submit --from workflowtemplate/kata-lifecycle-manager -p target-version=3.28.0` or `klm check-prerequisites --target-version 3.28.0`")
            .into());
    }
    let target = versions::parse(&args.target_version)?;
    if let Some(deadline) = args.step_deadline {
        check_step_deadline(
            deadline,
            args.helm_timeout,
            args.restart_timeout,
            args.verification.verification_timeout,
            args.drain_timeout,
        )?;
    }
    let template = crate::verification::VerificationPod::from_args(&args.verification)?;
    let client = crate::cluster::client(global).await?;
    let helm = step::helm(&args.release, global);
    let reference = step::release_ref(&args.release);
    let checked = check(
        &client,
        &helm,
        &reference,
        &target,
        args.deployment_mode,
        template.as_ref(),
    )
    .await?;
    let run_id = args
        .run
        .run_id
        .clone()
        .unwrap_or_else(|| format!("klm-{}", k8s_openapi::jiff::Timestamp::now().as_second()));
    let record = RunRecord {
        run_id: run_id.clone(),
        release: reference.name.clone(),
        namespace: reference.namespace.clone(),
        mode: checked.mode,
        target_version: target.to_string(),
        before: Before {
            revision: checked.release.revision,
            chart_version: checked.release.chart_version.clone(),
            app_version: checked.release.app_version.clone(),
            user_values: checked.release.user_values.clone(),
        },
        state: RunState::Running,
        failure: None,
        started_at: run_record::now(),
        updated_at: run_record::now(),
        nodes: Default::default(),
        mechanics: Default::default(),
        wave_started_at: None,
        waves: None,
        node_versions: Default::default(),
    };
    let (record, resumed) = match Records::new(&client, &reference.namespace)
        .begin(record)
        .await?
    {
        Begun::Created(record) => (record, false),
        Begun::Resumed(record) => (record, true),
    };
    if resumed && versions::parse(&record.target_version)? != target {
        return Err(UserError::bad_input(format!(
            "run {} was recorded with target {}, not {target}",
            record.run_id, record.target_version
        ))
        .hint("pass the recorded --target-version, or a new --run-id")
        .into());
    }
    let report = Prerequisites {
        run_id: record.run_id,
        mode: record.mode,
        release: reference.name,
        namespace: reference.namespace,
        current_version: record.before.chart_version,
        previous_version: checked.previous_version,
        revision: record.before.revision,
        target_version: target.to_string(),
        verification_pod: template.is_some(),
        resumed,
        warnings: checked.warnings,
    };
    output::print(global.output, &report)?;
    Ok(ExitStatus::Done)
}

/// What the read-only checks established (shared with `plan`).
pub struct Checked {
    /// The release as it is.
    pub release: Release,
    /// The mode the run will use.
    pub mode: DeploymentMode,
    /// The chart version of the previous deployed revision.
    pub previous_version: Option<String>,
    /// Things a person should know.
    pub warnings: Vec<String>,
}

/// Every check that changes nothing: the release is deployed, the mode is
/// the release's, the target suits the mode, job mode is not refused, the
/// verification pod's namespace exists.
pub async fn check(
    client: &Client,
    helm: &Helm,
    reference: &ReleaseRef,
    target: &semver::Version,
    choice: ModeChoice,
    template: Option<&crate::verification::VerificationPod>,
) -> anyhow::Result<Checked> {
    let release = reference.load(helm).await?;
    release.ensure_deployed()?;
    let coalesced = reference.coalesced_values(helm).await?;
    let detected = release::detect_mode(&coalesced)
        .map_err(|why| UserError::precondition(format!("release {}: {why}", reference.name)))?;
    let current = versions::parse(&release.chart_version)?;
    if let Some(asked) = choice.explicit()
        && asked != detected
    {
        return Err(mode_mismatch(reference, asked, detected, &current).into());
    }
    let mode = detected;
    versions::check_minimum(target, mode)?;
    if mode == DeploymentMode::Job {
        versions::refuse_pruning_job_mode(&current, target)?;
    }
    if let Some(template) = template {
        crate::verification::run::dry_run(client, template).await?;
    }
    let mut warnings = Vec::new();
    if !versions::is_dev(target) && !versions::is_dev(&current) && target < &current {
        warnings.push(format!(
            "{target} is older than the deployed {current}: this run downgrades"
        ));
    }
    let previous_version = reference
        .history(helm)
        .await?
        .into_iter()
        .filter(|h| h.revision < release.revision)
        .max_by_key(|h| h.revision)
        .map(|h| {
            h.chart
                .rsplit_once('-')
                .map(|(_, v)| v.to_string())
                .unwrap_or(h.chart)
        });
    Ok(Checked {
        release,
        mode,
        previous_version,
        warnings,
    })
}

fn mode_mismatch(
    reference: &ReleaseRef,
    asked: DeploymentMode,
    detected: DeploymentMode,
    current: &semver::Version,
) -> UserError {
    let base = UserError::precondition(format!(
        "release {} runs kata-deploy in {detected} mode, not {asked}: klm never switches modes during an upgrade",
        reference.name
    ));
    if versions::job_mode_prunes(current) {
        return base.hint(format!(
            "kata-deploy {current} makes the mode immutable: uninstall and reinstall it in {asked} mode, or run with --deployment-mode auto"
        ));
    }
    let minimum = asked.minimum();
    let version = if current >= &minimum {
        current.to_string()
    } else {
        minimum.to_string()
    };
    base.hint(format!(
        "switch once, for all nodes at once, with: helm upgrade {} {} -n {} --version {version} --reuse-values --set deploymentMode={asked} (use your mirror's chart reference if you have one)",
        reference.name,
        crate::args::DEFAULT_CHART,
        reference.namespace
    ))
    .hint("or run with --deployment-mode auto to follow the release's mode")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_deadline_must_cover_a_rollback() {
        let m = |n: u64| Duration::from_secs(n * 60);
        // The chart's defaults: 10m + 10m + 3m, plus the margin, within 3600s.
        assert_eq!(
            longest_step(m(10), m(10), m(3), m(5)).as_secs(),
            23 * 60 + 120
        );
        assert!(check_step_deadline(Duration::from_secs(3600), m(10), m(10), m(3), m(5)).is_ok());
        let refused =
            check_step_deadline(Duration::from_secs(3600), m(30), m(30), m(3), m(5)).unwrap_err();
        assert!(refused.to_string().contains("3900s"), "{refused}");
        // A long drain counts on its own.
        assert_eq!(
            longest_step(m(1), m(1), m(1), m(90)).as_secs(),
            90 * 60 + 120
        );
    }
}
