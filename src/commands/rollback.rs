//! `klm rollback`: return nodes to the version recorded before the run.

use std::time::Duration;

use clap::Args as ClapArgs;
use futures::future::{join_all, try_join_all};
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use serde_json::{Value, json};

use super::restart_kata_pod::NodeFailure;
use crate::annotations::NodeStatus;
use crate::cli::{
    ChartArgs, GlobalArgs, NodesArgs, ReleaseArgs, RunArgs, VerificationArgs, parse_duration,
};
use crate::error::{ExitStatus, UserError};
use crate::helm::Helm;
use crate::kata_deploy::{self, KataDaemonSet};
use crate::nodes::hold::{self, Release as NodeRelease, Released};
use crate::output::{self, Report};
use crate::release::{Release, Upgrade, Values};
use crate::run_record::{NodeProgress, Records, RunRecord, RunState};
use crate::values;
use crate::versions::{self, DeploymentMode};

/// Flags of `klm rollback`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "The target is the version in the run record, never \"the previous revision\".\nWith a verification pod the nodes are verified again before they return to service.\n\nExamples:\n  klm rollback --nodes worker-1\n  klm rollback --nodes worker-1 --verification-pod verify.yaml --run-id upgrade-1"
)]
pub struct Args {
    /// The nodes.
    #[command(flatten)]
    pub nodes: NodesArgs,

    /// How long each node may take to come back Ready at the old version.
    #[arg(long, default_value = "10m", value_parser = parse_duration, env = "KLM_RESTART_TIMEOUT", value_name = "DURATION")]
    pub timeout: Duration,

    /// Why (recorded on the run record; the workflow passes the failing step).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which chart (job mode reinstalls the recorded version from it).
    #[command(flatten)]
    pub chart: ChartArgs,

    /// Which run (default: the release's latest run).
    #[command(flatten)]
    pub run: RunArgs,

    /// Verify the nodes again after the rollback (optional).
    #[command(flatten)]
    pub verification: VerificationArgs,
}

/// What rollback did.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolledBack {
    /// The run whose recorded version was the target.
    pub run_id: String,
    /// The version the nodes went back to.
    pub version: String,
    /// The release was moved back to that version by this call (else it was already there).
    pub release_reverted: bool,
    /// Nodes back at the version and released.
    pub nodes: Vec<Released>,
    /// Whether the nodes were verified again.
    pub reverified: bool,
    /// Nodes whose rollback failed (marked `failed`, left cordoned).
    pub failed: Vec<NodeFailure>,
    /// What the mode forces beyond the named nodes.
    pub notes: Vec<String>,
}

impl Report for RolledBack {
    fn text(&self) -> String {
        let mut lines = Vec::new();
        if self.release_reverted {
            lines.push(format!(
                "release returned to {} (recorded before run {})",
                self.version, self.run_id
            ));
        }
        for n in &self.nodes {
            let checked = if self.reverified {
                ", verified again"
            } else {
                ""
            };
            let cordon = if n.kept_cordoned {
                "; left unschedulable (it was before the run)"
            } else {
                ""
            };
            lines.push(format!(
                "{}: rolled back to {}{checked}{cordon}",
                n.node, self.version
            ));
        }
        for f in &self.failed {
            lines.push(format!("{}: ROLLBACK FAILED: {}", f.node, f.reason));
        }
        lines.extend(self.notes.iter().map(|n| format!("note: {n}")));
        lines.join("\n")
    }
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let template = crate::verification::VerificationPod::from_args(&args.verification)?;
    let client = crate::cluster::client(global).await?;
    let names = super::step_nodes(&client, &args.release, &args.run, &args.nodes).await?;
    let records = Records::new(&client, &args.release.helm_namespace);
    let record = records
        .resolve(&args.release.helm_release, args.run.run_id.as_deref())
        .await?;
    let nodes_api: Api<Node> = Api::all(client.clone());
    try_join_all(names.iter().map(|n| hold::get(&nodes_api, n))).await?;
    if let Some(template) = &template {
        crate::verification::run::dry_run(&client, template).await?;
    }
    let helm = super::helm(&args.release, global);
    let release = super::release_ref(&args.release).load(&helm).await?;
    if release.status.starts_with("pending-") {
        release.ensure_deployed()?;
    }
    let before = versions::parse(&record.before.chart_version)?;
    if record.mode == DeploymentMode::Job {
        versions::refuse_pruning_job_mode(&versions::parse(&release.chart_version)?, &before)?;
    }

    // A node in service (the rollback-node entrypoint, a rollback by hand)
    // is cordoned for its rollback and released only once it is back.
    for node in &names {
        hold::hold_for_rollback(&client, node, &record.run_id).await?;
    }
    for node in &names {
        hold::set_status(&client, node, NodeStatus::RollingBack).await?;
    }
    let mut report = RolledBack {
        run_id: record.run_id.clone(),
        version: before.to_string(),
        ..Default::default()
    };
    let reverted = match record.mode {
        DeploymentMode::Daemonset => {
            revert_daemonset(
                &client,
                &helm,
                &release,
                &record,
                &names,
                &args,
                &mut report,
            )
            .await
        }
        DeploymentMode::Job => {
            revert_job(
                &client,
                &helm,
                &release,
                &record,
                &records,
                &names,
                &args,
                &mut report,
            )
            .await
        }
    };
    let reason = args
        .reason
        .clone()
        .unwrap_or_else(|| format!("rollback of {}", names.join(", ")));
    if let Err(err) = reverted {
        let why = crate::error::describe(&err);
        report.failed = names
            .iter()
            .map(|n| NodeFailure {
                node: n.clone(),
                reason: why.clone(),
            })
            .collect();
    }
    let mut back: Vec<String> = names
        .iter()
        .filter(|n| !report.failed.iter().any(|f| &f.node == *n))
        .cloned()
        .collect();

    if let Some(template) = &template
        && !back.is_empty()
    {
        let failures = crate::verification::run::reverify(
            &client,
            template,
            &args.verification,
            &back,
            &record.run_id,
        )
        .await?;
        report.reverified = true;
        back.retain(|n| !failures.iter().any(|f| &f.node == n));
        report.failed.extend(failures);
    }

    for failure in &report.failed {
        hold::set_status(&client, &failure.node, NodeStatus::Failed).await?;
    }
    let how = NodeRelease {
        status: Some(NodeStatus::RolledBack),
        current_version: Some(report.reverified.then(|| before.to_string())),
        restore_selection_taints: true,
        uncordon: true,
        ..Default::default()
    };
    let released = try_join_all(back.iter().map(|n| hold::release(&client, n, None, &how))).await?;
    report.nodes = released.into_iter().flatten().collect();
    let failed_nodes: Vec<String> = report.failed.iter().map(|f| f.node.clone()).collect();
    records
        .update(&record.release, &record.run_id, |r| {
            for node in &back {
                r.nodes.insert(node.clone(), NodeProgress::RolledBack);
            }
            for node in &failed_nodes {
                r.nodes.insert(node.clone(), NodeProgress::Failed);
            }
            if r.state == RunState::Running {
                r.state = RunState::Failed;
                r.failure = Some(reason.clone());
            }
        })
        .await?;
    output::print(global.output, &report)?;
    if report.failed.is_empty() {
        Ok(ExitStatus::Done)
    } else {
        Err(UserError::failed(format!("rollback failed on {}; they are marked failed and stay cordoned", failed_nodes.join(", ")))
            .hint("see the reasons above; fix the cause (the kata-deploy pod or install Job on the node, the chart reference), then run `klm rollback` on them again")
            .into())
    }
}

/// daemonset mode: returns the release to the recorded version and values
/// (keeping OnDelete, so only the named nodes' pods move), then restarts
/// kata-deploy on the named nodes and waits for them at that revision.
async fn revert_daemonset(
    client: &Client,
    helm: &Helm,
    release: &Release,
    record: &RunRecord,
    names: &[String],
    args: &Args,
    report: &mut RolledBack,
) -> anyhow::Result<()> {
    let mechanics = [
        ("updateStrategy.type", json!("OnDelete")),
        ("verification.pod", json!("")),
    ];
    if needs_revert(
        release,
        record,
        &mechanics.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
    ) {
        let mut values = record.before.user_values.clone();
        for (key, value) in &mechanics {
            values::set(&mut values, key, value.clone());
        }
        release
            .upgrade(
                helm,
                &Upgrade {
                    chart: args.chart.chart.clone(),
                    version: record.before.chart_version.clone(),
                    values: Values::Exactly(values),
                    set: vec![],
                    set_json: vec![],
                    timeout: args.chart.helm_timeout,
                },
            )
            .await?;
        report.release_reverted = true;
    }
    let reverted = super::release_ref(&args.release).load(helm).await?;
    let daemonset = KataDaemonSet::find(client, &reverted.daemonset()?).await?;
    let revision = daemonset.current_revision(args.timeout).await?;
    let outcomes = join_all(
        names
            .iter()
            .map(|n| daemonset.restart_on(n, &revision, args.timeout)),
    )
    .await;
    let failures: Vec<NodeFailure> = names
        .iter()
        .zip(outcomes)
        .filter_map(|(node, outcome)| {
            outcome.err().map(|e| NodeFailure {
                node: node.clone(),
                reason: crate::error::describe(&e.into()),
            })
        })
        .collect();
    let still_new: Vec<String> = record
        .nodes_in(&[NodeProgress::Completed])
        .into_iter()
        .filter(|n| !names.contains(n))
        .collect();
    if report.release_reverted && !still_new.is_empty() {
        report.notes.push(format!(
            "daemonset mode has one template for every node: the release is back at {}, while {} (completed by this run) keep running {} until their kata-deploy pod restarts; run the upgrade again to make the fleet consistent",
            record.before.chart_version,
            still_new.join(", "),
            record.target_version
        ));
    }
    report.notes.push("updateStrategy.type=OnDelete and verification.pod=\"\" are left in the release values: restoring RollingUpdate would restart every node onto the reverted template without verification".into());
    if failures.is_empty() {
        Ok(())
    } else {
        report.failed = failures;
        Err(anyhow::anyhow!(
            "kata-deploy did not come back at the recorded version"
        ))
    }
}

/// job mode: a plain `helm rollback` would not re-run the dispatcher, so a
/// scoped upgrade to the recorded version reinstalls it on just these nodes.
#[allow(clippy::too_many_arguments)]
async fn revert_job(
    client: &Client,
    helm: &Helm,
    release: &Release,
    record: &RunRecord,
    records: &Records,
    names: &[String],
    args: &Args,
    report: &mut RolledBack,
) -> anyhow::Result<()> {
    let reference = super::release_ref(&args.release);
    let coalesced = reference.coalesced_values(helm).await?;
    let mut values = record.before.user_values.clone();
    values::set(&mut values, "job.nodes", json!(names));
    values::set(&mut values, "job.parallelism", json!(names.len()));
    values::set(&mut values, "verification.pod", json!(""));
    values::set(
        &mut values,
        "tolerations",
        super::helm_upgrade::with_cordon_toleration(coalesced.get("tolerations")),
    );
    let started = crate::run_record::now();
    records
        .update(&record.release, &record.run_id, |r| {
            r.wave_started_at = Some(started.clone())
        })
        .await?;
    release
        .upgrade(
            helm,
            &Upgrade {
                chart: args.chart.chart.clone(),
                version: record.before.chart_version.clone(),
                values: Values::Exactly(values),
                set: vec![],
                set_json: vec![],
                timeout: args.chart.helm_timeout,
            },
        )
        .await?;
    report.release_reverted = true;
    kata_deploy::wait_install_jobs(
        client,
        &record.namespace,
        names,
        Some(&started),
        args.timeout,
    )
    .await?;
    report.notes.push(format!("job.nodes={} is left in the release values: restoring it would re-run the installer on every node", serde_json::to_string(names)?));
    Ok(())
}

/// Whether the release differs from the recorded one (version, status or
/// the user's values, ignoring the run's own mechanics).
fn needs_revert(release: &Release, record: &RunRecord, mechanics: &[&str]) -> bool {
    let strip = |values: &Value| {
        let mut values = values.clone();
        for key in mechanics {
            values::remove(&mut values, key);
        }
        values
    };
    release.chart_version != record.before.chart_version
        || release.status != "deployed"
        || strip(&release.user_values) != strip(&record.before.user_values)
}
