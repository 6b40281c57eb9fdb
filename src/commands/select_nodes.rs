//! `klm select-nodes`: which nodes, in which waves.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;

use super::flags;
use crate::args::{GlobalArgs, PrometheusArgs, ReleaseArgs, RunArgs, SelectionArgs, WavesArgs};
use crate::error::ExitStatus;
use crate::nodes::waves;
use crate::output;
use crate::schedule;
use crate::steps::select_nodes;

/// Flags of `klm select-nodes`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Without a selector, the nodes that run this release's kata-deploy are selected: in daemonset\nmode the nodes of its DaemonSet's pods, in job mode the nodes its installer targets (its node\nselector), never those of another kata-deploy release.\nWith --run-id, the plan is recorded in the run (an empty plan: helm-upgrade then changes nothing).\nA plan with more waves than one workflow carries (--max-waves) is refused before anything changes.\n\nExamples:\n  klm select-nodes --batch-size 2\n  klm select-nodes --node-selector node-pool=kata --node-taint-key maintenance -o json\n  klm select-nodes --skip-completed 3.28.0 --waves-file /tmp/waves.json"
)]
pub struct Args {
    /// Skip nodes already completed at this version (to resume a run).
    #[arg(long, value_name = "VERSION", value_parser = crate::versions::parse_flag)]
    pub skip_completed: Option<semver::Version>,

    /// Also write the waves as a JSON list to this file (for Argo's withParam).
    #[arg(long, value_name = "PATH")]
    pub waves_file: Option<PathBuf>,

    /// Also write only the waves' indices, `[1,2,...]`, to this file: the
    /// workflow loops over them and each step reads its wave from the run
    /// record (needs --run-id).
    #[arg(long, value_name = "PATH")]
    pub index_file: Option<PathBuf>,

    /// Also write the waves that wait for something before they start (a
    /// gate, the window) to this file, as `,2,5,`: the workflow holds only
    /// those (needs --run-id).
    #[arg(long, value_name = "PATH")]
    pub held_file: Option<PathBuf>,

    /// At most this many waves (what one Argo workflow carries); 0 = no bound
    /// (Argo with node status offloading).
    #[arg(long, value_name = "N", default_value_t = waves::DEFAULT_MAX_WAVES, value_parser = crate::args::parse_count, allow_negative_numbers = true)]
    pub max_waves: usize,

    /// How nodes are selected.
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// How the nodes are split into waves.
    #[command(flatten)]
    pub waves: WavesArgs,

    /// How to reach the Prometheus of --gate-query.
    #[command(flatten)]
    pub prometheus: PrometheusArgs,

    /// Which release (to find the nodes that run its kata-deploy).
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// The run to record the plan in (optional).
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let policy = args.waves.policy();
    let criteria = flags::criteria(&args.selection)?;
    let schedule = args.waves.schedule();
    if (args.index_file.is_some() || args.held_file.is_some()) && args.run.run_id.is_none() {
        return Err(crate::error::UserError::bad_input(
            "--index-file needs the run: its steps read their wave from the run record",
        )
        .hint("pass --run-id (or set KLM_RUN_ID) with --index-file and --held-file, or use --waves-file")
        .into());
    }
    let client = crate::cluster::client(global).await?;
    let helm = flags::helm(&args.release, global)?;
    let selection = select_nodes::plan_run(
        &client,
        &helm,
        &select_nodes::PlanRequest {
            release: &flags::release_ref(&args.release),
            criteria: &criteria,
            pool_label: args.waves.pool_label(),
            policy: &policy,
            schedule: &schedule,
            skip_completed: args.skip_completed.as_ref(),
            max_waves: args.max_waves,
            run_id: args.run.run_id.as_deref(),
            prometheus: &args.prometheus.credentials(),
        },
    )
    .await?;
    if let Some(path) = &args.index_file {
        let indices: Vec<usize> = selection.waves.iter().map(|w| w.index).collect();
        std::fs::write(path, serde_json::to_string(&indices)?)
            .with_context(|| format!("writing the wave indices to {}", path.display()))?;
    }
    if let Some(path) = &args.held_file {
        let held = schedule::held_waves(
            &selection.waves,
            &selection.gates,
            schedule.window.is_some(),
        );
        std::fs::write(path, held)
            .with_context(|| format!("writing the held waves to {}", path.display()))?;
    }
    if let Some(path) = &args.waves_file {
        let json = serde_json::to_string(&selection.waves)?;
        std::fs::write(path, json)
            .with_context(|| format!("writing the waves to {}", path.display()))?;
    }
    output::print(global.output, &selection)?;
    Ok(ExitStatus::Done)
}
