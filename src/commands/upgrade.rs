//! `klm upgrade`: the whole upgrade in one process (for clusters without
//! Argo): the WorkflowTemplate's steps, composed by [`crate::upgrade_run`].

use std::time::Duration;

use clap::Args as ClapArgs;

use super::flags;
use crate::args::{
    ChartArgs, ChartValuesArgs, DowngradeArgs, DrainArgs, GlobalArgs, RecycleArgs, ReleaseArgs,
    RunArgs, SelectionArgs, VerificationArgs, WavesArgs, parse_duration,
};
use crate::error::{ExitStatus, UserError};
use crate::output;
use crate::steps::plan;
use crate::upgrade_run::view::{Limits, View};
use crate::upgrade_run::{self, Cluster, Interrupts, Settings};
use crate::verification::Pods;
use crate::versions::{self, ModeChoice};

/// Flags of `klm upgrade`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "The same run as the chart's WorkflowTemplate, in one process: check-prerequisites,\nselect-nodes (nodes completed at the target are skipped), the release's upgrade, then wave by\nwave cordon, drain (--drain), restart kata-deploy, verify, and complete the wave, or roll it back\nand stop. However it ends, the run is closed as the workflow's exit handler closes it: nodes\ncaught mid-upgrade are rolled back, held nodes released, the run record closed.\nCtrl-C or SIGTERM ends the run that way; a second one leaves at once, without cleaning up.\nOn a terminal progress is drawn live; otherwise one line per event; -o json: one JSON object per\nevent (runId, wave, node, phase, time), then a summary object.\n\nExamples:\n  klm upgrade --target-version 3.28.0 --verification-pod verify.yaml\n  klm upgrade --target-version 3.28.0 --batch-size 5 --node-selector node-pool=kata --drain --verification-pod verify.yaml\n  klm upgrade --target-version 3.28.0 --verification-pod verify.yaml --dry-run\n  klm upgrade --target-version 3.28.0 --verification-pod verify.yaml -o json | jq -c 'select(.node)'"
)]
pub struct Args {
    /// The kata-deploy chart version to upgrade to (semver, e.g. 3.28.0).
    #[arg(long, value_name = "VERSION", value_parser = versions::parse_flag)]
    pub target_version: semver::Version,

    /// kata-deploy's deployment model; auto reads it from the release.
    #[arg(long, value_enum, default_value_t = ModeChoice::Auto)]
    pub deployment_mode: ModeChoice,

    /// How long a node's kata-deploy may take to come back Ready.
    #[arg(long, default_value = "10m", value_parser = parse_duration, env = "KLM_RESTART_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    pub restart_timeout: Duration,

    /// Whether the target may be older than the release's version.
    #[command(flatten)]
    pub downgrade: DowngradeArgs,

    /// Show what the upgrade would do (`klm plan`), changing nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Draining each wave's nodes.
    #[command(flatten)]
    pub drain: DrainArgs,

    /// Recycling Kata pods still on the runtime they started with.
    #[command(flatten)]
    pub recycle: RecycleArgs,

    /// How to reach the Prometheus of --gate-query.
    #[command(flatten)]
    pub prometheus: crate::args::PrometheusArgs,

    /// How the nodes are split into waves.
    #[command(flatten)]
    pub waves: WavesArgs,

    /// How nodes are selected.
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// The verification pod every node must pass.
    #[command(flatten)]
    pub verification: VerificationArgs,

    /// The run's extra kata-deploy chart values.
    #[command(flatten)]
    pub values: ChartValuesArgs,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which chart.
    #[command(flatten)]
    pub chart: ChartArgs,

    /// The run (a new run id is generated when none is given; an unfinished
    /// run's id resumes it).
    #[command(flatten)]
    pub run: RunArgs,
}

impl Args {
    /// Whether the run draws live progress (text output on a terminal).
    pub fn draws_live(&self, global: &GlobalArgs) -> bool {
        !self.dry_run && View::draws_live(global.output)
    }
}

/// Runs the upgrade.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let criteria = flags::criteria(&args.selection)?;
    let pods = Pods::from_args(&args.verification)?;
    let policy = args.waves.policy();
    let schedule = args.waves.schedule();
    // Contradicting gate flags are refused before the run is recorded.
    schedule
        .gates
        .validate(policy.canary, args.waves.pool_label())?;
    // So is a metric query Prometheus refuses, or a Prometheus that does not answer.
    if let Some(query) = &schedule.gates.query {
        crate::steps::select_nodes::check_query(query, &args.prometheus.credentials()).await?;
    }
    let client = crate::cluster::client(global).await?;
    let helm = flags::helm(&args.release, global)?;
    let release = flags::release_ref(&args.release);
    if args.dry_run {
        let chart_values = args.values.items();
        let request = plan::Request {
            release: &release,
            target: &args.target_version,
            mode: args.deployment_mode,
            criteria: &criteria,
            pool_label: args.waves.pool_label(),
            policy: &policy,
            schedule: &schedule,
            skip_completed: Some(&args.target_version),
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
        };
        output::print(global.output, &plan::plan(&client, &helm, &request).await?)?;
        return Ok(ExitStatus::Done);
    }
    if pods.default_pod().is_none() {
        return Err(UserError::bad_input("no verification pod given: every node is verified before it returns to service")
            .hint("pass --verification-pod FILE or --verification-pod-base64 (or KLM_VERIFICATION_POD_BASE64); --dry-run shows the plan without one")
            .into());
    }
    let reach = crate::args::reach_flags(
        &global.client,
        &args.release,
        &args.chart,
        &args.verification,
    );
    // The run's id is known from the first line a person sees.
    let run_id = args
        .run
        .run_id
        .unwrap_or_else(crate::run_record::new_run_id);
    let limits = Limits {
        drain: args.drain.asked().map(|(timeout, _)| timeout),
        restart: Some(args.restart_timeout),
        verification: Some(args.verification.verification_timeout),
    };
    let settings = Settings {
        release,
        run_id: Some(run_id.clone()),
        target: args.target_version,
        mode: args.deployment_mode,
        chart_values: args.values.items(),
        criteria,
        pool_label: args.waves.pool_label().map(String::from),
        policy,
        schedule,
        verification: pods,
        verification_timeout: args.verification.verification_timeout,
        keep_failed: args.verification.keep_failed,
        drain: args.drain.asked(),
        recycle: args.recycle.asked(),
        prometheus: args.prometheus.credentials(),
        chart: args.chart.chart,
        helm_timeout: args.chart.helm_timeout,
        restart_timeout: args.restart_timeout,
        allow_downgrade: args.downgrade.allow_downgrade,
        reach,
    };
    let evicting = crate::cluster::client_without_retry(global).await?;
    let cluster = Cluster {
        client: &client,
        evicting: &evicting,
        helm: &helm,
    };
    let interrupts = Interrupts::listen()?;
    let mut view = View::choose(global.output, &run_id, limits);
    let outcome = match upgrade_run::run(cluster, &settings, &interrupts, &mut view).await {
        Ok(outcome) => outcome,
        Err(err) => {
            // The run never started: nothing to sum up.
            view.abandon();
            return Err(err);
        }
    };
    view.finish(
        &outcome.run_id,
        outcome.next_command(&rerun_command(std::env::args())),
    )?;
    outcome.result()?;
    Ok(ExitStatus::Done)
}

/// The command the user typed, to start the upgrade again: a new run (the
/// run id dropped), which skips the nodes completed already.
fn rerun_command(args: impl IntoIterator<Item = String>) -> String {
    let mut words = vec!["klm".to_string()];
    let mut args = args.into_iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--run-id" {
            args.next();
        } else if !arg.starts_with("--run-id=") {
            words.push(arg);
        }
    }
    crate::output::command_line(words)
}

#[cfg(test)]
mod tests {
    use super::rerun_command;

    #[test]
    fn the_command_to_start_again_is_the_one_typed_without_its_run_id() {
        let typed = [
            "kubectl-klm",
            "upgrade",
            "--target-version",
            "3.28.0",
            "--run-id",
            "r1",
            "--verification-pod",
            "/tmp/my pod.yaml",
            "--run-id=r2",
        ]
        .map(String::from);
        assert_eq!(
            rerun_command(typed),
            "klm upgrade --target-version 3.28.0 --verification-pod '/tmp/my pod.yaml'"
        );
    }
}
