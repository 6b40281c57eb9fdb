//! `klm helm-upgrade`: move the kata-deploy release to the target version.

use clap::Args as ClapArgs;

use crate::args::{ChartArgs, GlobalArgs, ReleaseArgs, RunArgs, split_set_values};
use crate::error::{ExitStatus, UserError};
use crate::output::{self, Report};
use crate::release::{Upgrade, Values};
use crate::run_record::{NodeProgress, Records};
use crate::run_values;
use crate::step;
use crate::versions::{self, DeploymentMode, ModeChoice};

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

/// What helm-upgrade did.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Upgraded {
    /// The release.
    pub release: String,
    /// The mode.
    pub mode: DeploymentMode,
    /// The chart version before this step.
    pub from_version: String,
    /// The chart version now.
    pub to_version: String,
    /// job mode: the wave's nodes.
    pub nodes: Vec<String>,
    /// True when the release was already upgraded by this run (a retried step).
    pub already_done: bool,
    /// The values this step set for the run's mechanics.
    pub mechanics: Vec<String>,
    /// True when the run's plan (from select-nodes) has no node: nothing changed.
    pub nothing_selected: bool,
}

impl Report for Upgraded {
    fn text(&self) -> String {
        if self.nothing_selected {
            return format!(
                "the run selected no node: {} stays at {}; nothing to do",
                self.release, self.from_version
            );
        }
        if self.already_done {
            return format!(
                "{} is already at {} for this run; nothing to do",
                self.release, self.to_version
            );
        }
        let scope = match self.mode {
            DeploymentMode::Daemonset => {
                "no pod restarts until each node's turn (updateStrategy OnDelete)".to_string()
            }
            DeploymentMode::Job => format!("installed on {}", self.nodes.join(", ")),
        };
        format!(
            "upgraded {} from {} to {} in {} mode: {scope}",
            self.release, self.from_version, self.to_version, self.mode
        )
    }
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
    let records = Records::new(&client, &args.release.helm_namespace);
    let record = step::active_run(
        &records,
        &args.release.helm_release,
        args.run.run_id.as_deref(),
    )
    .await?;
    if versions::parse(&record.target_version)? != target {
        return Err(UserError::bad_input(format!(
            "run {} upgrades to {}, not {target}",
            record.run_id, record.target_version
        ))
        .hint("pass the run's --target-version, or start a new run with check-prerequisites")
        .into());
    }
    let mode = step::mode_of_run(args.deployment_mode, &record)?;
    let helm = step::helm(&args.release, global);
    let reference = step::release_ref(&args.release);
    let release = reference.load(&helm).await?;
    release.ensure_deployed()?;
    let wave: Vec<String> = match args.wave {
        Some(index) => step::wave_of(&record, index)?.to_vec(),
        None => args.nodes.as_ref().map(|n| n.0.clone()).unwrap_or_default(),
    };
    let mut report = Upgraded {
        release: reference.name.clone(),
        mode,
        from_version: release.chart_version.clone(),
        to_version: target.to_string(),
        nodes: wave.clone(),
        already_done: false,
        mechanics: Vec::new(),
        nothing_selected: false,
    };
    let mut upgrade = Upgrade {
        chart: args.chart.chart.clone(),
        version: target.to_string(),
        values: Values::ResetThenReuse,
        set: user_set,
        set_json: Vec::new(),
        timeout: args.chart.helm_timeout,
    };
    let mechanics = match mode {
        DeploymentMode::Daemonset => {
            if !wave.is_empty() {
                return Err(UserError::bad_input("--nodes scopes job-mode waves; in daemonset mode helm-upgrade runs once, before the waves")
                    .hint("drop --nodes; restart-kata-pod then moves one node at a time")
                    .into());
            }
            // A run whose plan has no node changes nothing: an upgraded
            // template would reach any node whose kata-deploy pod restarts,
            // unverified.
            if record
                .waves
                .as_ref()
                .is_some_and(|waves| waves.iter().all(Vec::is_empty))
            {
                report.nothing_selected = true;
                output::print(global.output, &report)?;
                return Ok(ExitStatus::Done);
            }
            if release.chart_version == target.to_string()
                && run_values::is_on_delete(&release.user_values)
                && release.revision > record.before.revision
            {
                report.already_done = true;
                output::print(global.output, &report)?;
                return Ok(ExitStatus::Done);
            }
            run_values::daemonset()
        }
        DeploymentMode::Job => {
            if wave.is_empty() {
                return Err(UserError::bad_input(
                    "job mode upgrades one wave at a time: --nodes is required",
                )
                .hint("pass the wave's nodes, e.g. --nodes worker-1,worker-2")
                .into());
            }
            versions::refuse_pruning_job_mode(&versions::parse(&release.chart_version)?, &target)?;
            let coalesced = reference.coalesced_values(&helm).await?;
            let done = wave.iter().all(|n| {
                matches!(
                    record.nodes.get(n),
                    Some(NodeProgress::Upgraded | NodeProgress::Verified | NodeProgress::Completed)
                )
            });
            if done
                && release.chart_version == target.to_string()
                && run_values::is_scoped_to(&coalesced, &wave)
            {
                report.already_done = true;
                output::print(global.output, &report)?;
                return Ok(ExitStatus::Done);
            }
            records
                .update(&record.release, &record.run_id, |r| {
                    r.wave_started_at = Some(crate::run_record::now())
                })
                .await?;
            run_values::job_wave(&wave, &coalesced)
        }
    };
    let (set, set_json) = run_values::as_set_flags(&mechanics);
    upgrade.set.extend(set);
    upgrade.set_json.extend(set_json);
    release.upgrade(&helm, &upgrade).await?;
    report.mechanics = mechanics.iter().map(|(k, _)| k.clone()).collect();
    records
        .update(&record.release, &record.run_id, |r| {
            for (key, value) in &mechanics {
                r.mechanics.insert(key.clone(), value.clone());
            }
            for node in &wave {
                r.nodes.insert(node.clone(), NodeProgress::Upgraded);
            }
        })
        .await?;
    output::print(global.output, &report)?;
    Ok(ExitStatus::Done)
}
