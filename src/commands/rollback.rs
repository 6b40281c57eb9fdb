//! `klm rollback`: return nodes to the version recorded before the run.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args as ClapArgs;
use futures::future::{join_all, try_join_all};
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use serde_json::Value;

use crate::annotations::NodeStatus;
use crate::args::{
    ChartArgs, GlobalArgs, NodesArgs, ReleaseArgs, RunArgs, VerificationArgs, parse_duration,
};
use crate::error::{ExitStatus, UserError};
use crate::helm::Helm;
use crate::kata_deploy::{self, KataDaemonSet};
use crate::nodes::NodeFailure;
use crate::nodes::hold::{self, Release as NodeRelease, Released};
use crate::output::{self, Report};
use crate::release::{Release, Upgrade, Values};
use crate::run_record::{NodeProgress, Records, RunRecord, RunState};
use crate::run_values::{self, SCOPE_KEYS};
use crate::step;
use crate::versions::{self, DeploymentMode};

/// Flags of `klm rollback`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Each node returns to the version it ran before the run touched it (recorded at cordon), else to\nthe release's version recorded before the run; never to \"the previous revision\".\nThe nodes are reverted first; with a verification pod they are verified again afterwards, before\nthey return to service (a pod the apiserver rejects fails that node's verification).\n\nExamples:\n  klm rollback --nodes worker-1\n  klm rollback --nodes worker-1 --verification-pod verify.yaml --run-id upgrade-1"
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
    /// Per node, the version it went back to (the one it ran before the run).
    pub node_versions: BTreeMap<String, String>,
    /// The command that puts the user's values back, when klm could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values_not_restored: Option<String>,
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
            let version = self.node_versions.get(&n.node).unwrap_or(&self.version);
            lines.push(format!(
                "{}: rolled back to {version}{checked}{cordon}",
                n.node
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
    let names = step::step_nodes(&client, &args.release, &args.run, &args.nodes).await?;
    let records = Records::new(&client, &args.release.helm_namespace);
    let record = records
        .resolve(&args.release.helm_release, args.run.run_id.as_deref())
        .await?;
    let nodes_api: Api<Node> = Api::all(client.clone());
    try_join_all(names.iter().map(|n| hold::get(&nodes_api, n))).await?;
    // No dry run of the verification pod here: what the new version broke
    // (a RuntimeClass it removed) must not stop the way back. The pod is
    // checked when it runs, after the revert, as each node's verification.
    let helm = step::helm(&args.release, global);
    let release = step::release_ref(&args.release).load(&helm).await?;
    if release.status.starts_with("pending-") {
        release.ensure_deployed()?;
    }
    let before = versions::parse(&record.before.chart_version)?;
    if record.mode == DeploymentMode::Job {
        let current = versions::parse(&release.chart_version)?;
        versions::refuse_pruning_job_mode(&current, &before)?;
        for name in &names {
            if let Ok(own) = versions::parse(record.version_before(name)) {
                versions::refuse_pruning_job_mode(&current, &own)?;
            }
        }
    }

    // A node in service (the rollback-node entrypoint, a rollback by hand)
    // is cordoned for its rollback and released only once it is back.
    for node in &names {
        hold::hold_for_rollback(&client, node, &record.run_id, &record.release_id()).await?;
    }
    for node in &names {
        hold::set_status(&client, node, NodeStatus::RollingBack).await?;
    }
    let mut report = RolledBack {
        run_id: record.run_id.clone(),
        version: before.to_string(),
        node_versions: names
            .iter()
            .map(|n| (n.clone(), record.version_before(n).to_string()))
            .collect(),
        ..Default::default()
    };
    let reverted = match record.mode {
        DeploymentMode::Daemonset => {
            revert_daemonset(&client, &helm, &record, &names, &args, &mut report).await
        }
        DeploymentMode::Job => {
            revert_job(
                &client,
                &helm,
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
    // Per-node failures were recorded by the revert; an error that names no
    // node (helm failed, the DaemonSet is gone) fails every node.
    if let Err(err) = reverted
        && report.failed.is_empty()
    {
        let why = crate::error::describe(&err);
        report.failed = NodeFailure::each(&names, &why);
    }
    let mut back: Vec<String> = names
        .iter()
        .filter(|n| !report.failed.iter().any(|f| &f.node == *n))
        .cloned()
        .collect();

    if let Some(template) = &template
        && !back.is_empty()
    {
        let failures = match crate::verification::run::reverify(
            &client,
            template,
            &args.verification,
            &back,
            &record.run_id,
        )
        .await
        {
            Ok(failures) => failures,
            Err(err) => NodeFailure::each(
                &back,
                &format!("verification after rollback could not run: {err}"),
            ),
        };
        report.reverified = true;
        back.retain(|n| !failures.iter().any(|f| &f.node == n));
        report.failed.extend(failures);
    }

    for failure in &report.failed {
        hold::set_status(&client, &failure.node, NodeStatus::Failed).await?;
    }
    let released = try_join_all(back.iter().map(|n| {
        let how = NodeRelease {
            status: Some(NodeStatus::RolledBack),
            current_version: Some(
                report
                    .reverified
                    .then(|| record.version_before(n).to_string()),
            ),
            restore_selection_taints: true,
            uncordon: true,
            ..Default::default()
        };
        let client = &client;
        async move { hold::release(client, n, None, &how).await }
    }))
    .await?;
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
    if !report.failed.is_empty() {
        return Err(UserError::failed(format!("rollback failed on {}; they are marked failed and stay cordoned", failed_nodes.join(", ")))
            .hint("see the reasons above; fix the cause (the kata-deploy pod or install Job on the node, the chart reference), then run `klm rollback` on them again")
            .into());
    }
    if let Some(command) = &report.values_not_restored {
        return Err(UserError::failed(
            "the nodes are rolled back, but the release's values are not the user's again",
        )
        .hint(format!("restore them with: {command}"))
        .into());
    }
    Ok(ExitStatus::Done)
}

/// The named nodes grouped by the version each returns to; the group at
/// the release's version before the run comes last (the release ends there).
fn by_version(record: &RunRecord, names: &[String]) -> Vec<(String, Vec<String>)> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in names {
        groups
            .entry(record.version_before(name).to_string())
            .or_default()
            .push(name.clone());
    }
    let before = groups.remove(&record.before.chart_version);
    let mut ordered: Vec<(String, Vec<String>)> = groups.into_iter().collect();
    ordered.push((
        record.before.chart_version.clone(),
        before.unwrap_or_default(),
    ));
    ordered
}

/// The chart version and user values of the newest deployed revision at
/// `version` (its chart version or appVersion), without klm's own scope
/// keys; None when helm's history no longer has one.
async fn values_for_version(
    helm: &Helm,
    reference: &crate::release::ReleaseRef,
    chart_name: &str,
    version: &str,
    record: &RunRecord,
) -> anyhow::Result<Option<(String, Value)>> {
    let mut history = reference.history(helm).await?;
    history.sort_by_key(|h| std::cmp::Reverse(h.revision));
    let Some(entry) = history.iter().find(|h| {
        h.was_deployed() && (h.chart_version(chart_name) == version || h.app_version == version)
    }) else {
        return Ok(None);
    };
    let mut values = reference.values_at(helm, entry.revision).await?;
    run_values::restore_user_values(&mut values, SCOPE_KEYS, &record.before.user_values);
    Ok(Some((entry.chart_version(chart_name), values)))
}

/// The groups to revert, each with the chart version and values to revert
/// it with; a version helm's history no longer knows joins the release's
/// version before the run (noted).
async fn revert_plan(
    helm: &Helm,
    reference: &crate::release::ReleaseRef,
    chart_name: &str,
    record: &RunRecord,
    names: &[String],
    report: &mut RolledBack,
) -> anyhow::Result<Vec<(String, Value, Vec<String>)>> {
    let mut plan = Vec::new();
    let mut unknown = Vec::new();
    for (version, nodes) in by_version(record, names) {
        if version == record.before.chart_version {
            let mut nodes = nodes;
            nodes.append(&mut unknown);
            plan.push((
                record.before.chart_version.clone(),
                record.before.user_values.clone(),
                nodes,
            ));
            continue;
        }
        match values_for_version(helm, reference, chart_name, &version, record).await? {
            Some((chart_version, values)) => plan.push((chart_version, values, nodes)),
            None => {
                report.notes.push(format!(
                    "{} ran {version} before the run, which helm's history no longer has: returned to {} instead",
                    nodes.join(", "),
                    record.before.chart_version
                ));
                for node in &nodes {
                    report
                        .node_versions
                        .insert(node.clone(), record.before.chart_version.clone());
                }
                unknown.extend(nodes);
            }
        }
    }
    Ok(plan)
}

/// daemonset mode: for each version the named nodes ran before the run,
/// returns the release to that version (keeping OnDelete, so only the
/// nodes restarted here move) and restarts those nodes onto it; the release
/// ends at the version recorded before the run.
async fn revert_daemonset(
    client: &Client,
    helm: &Helm,
    record: &RunRecord,
    names: &[String],
    args: &Args,
    report: &mut RolledBack,
) -> anyhow::Result<()> {
    let mechanics = run_values::daemonset();
    let mechanic_keys: Vec<&str> = mechanics.iter().map(|(k, _)| k.as_str()).collect();
    let reference = step::release_ref(&args.release);
    let chart_name = reference.load(helm).await?.chart_name;
    let plan = revert_plan(helm, &reference, &chart_name, record, names, report).await?;
    let mut failures = Vec::new();
    for (version, values, nodes) in &plan {
        let current = reference.load(helm).await?;
        let at_before = *version == record.before.chart_version;
        let differs = if at_before {
            needs_revert(&current, record, &mechanic_keys)
        } else {
            current.chart_version != *version || current.status != "deployed" || {
                let mut wanted = values.clone();
                run_values::apply(&mut wanted, &mechanics);
                wanted != current.user_values
            }
        };
        if differs {
            let mut values = values.clone();
            run_values::apply(&mut values, &mechanics);
            current
                .upgrade(
                    helm,
                    &Upgrade {
                        chart: args.chart.chart.clone(),
                        version: version.clone(),
                        values: Values::Exactly(values),
                        set: vec![],
                        set_json: vec![],
                        timeout: args.chart.helm_timeout,
                    },
                )
                .await?;
            if at_before {
                report.release_reverted = true;
            }
        }
        if nodes.is_empty() {
            continue;
        }
        let reverted = reference.load(helm).await?;
        let daemonset = KataDaemonSet::find(client, &reverted.daemonset()?).await?;
        let revision = daemonset.current_revision(args.timeout).await?;
        let outcomes = join_all(
            nodes
                .iter()
                .map(|n| daemonset.restart_on(n, &revision, args.timeout)),
        )
        .await;
        failures.extend(nodes.iter().zip(outcomes).filter_map(|(node, outcome)| {
            outcome
                .err()
                .map(|e| NodeFailure::new(node, crate::error::describe(&e.into())))
        }));
    }
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
    report.notes.push(format!(
        "updateStrategy.type=OnDelete and verification.pod=\"\" are left in the release values: restoring RollingUpdate would restart every node onto the reverted template without verification; once every node runs it, restore your values with: {}",
        crate::release::restore_command(
            &reference,
            &args.chart.chart,
            &record.before.chart_version,
            record.before.revision,
            false
        )
    ));
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
/// scoped upgrade to each version the named nodes ran before the run
/// reinstalls it on just those nodes; then the release gets the user's
/// values back at the version before the run, without hooks (no installer
/// runs again).
async fn revert_job(
    client: &Client,
    helm: &Helm,
    record: &RunRecord,
    records: &Records,
    names: &[String],
    args: &Args,
    report: &mut RolledBack,
) -> anyhow::Result<()> {
    let reference = step::release_ref(&args.release);
    let chart_name = reference.load(helm).await?.chart_name;
    let plan = revert_plan(helm, &reference, &chart_name, record, names, report).await?;
    for (version, base, nodes) in plan.iter().filter(|(_, _, nodes)| !nodes.is_empty()) {
        let coalesced = reference.coalesced_values(helm).await?;
        let mut values = base.clone();
        run_values::apply(&mut values, &run_values::job_wave(nodes, &coalesced));
        let started = crate::run_record::now();
        records
            .update(&record.release, &record.run_id, |r| {
                r.wave_started_at = Some(started.clone())
            })
            .await?;
        reference
            .load(helm)
            .await?
            .upgrade(
                helm,
                &Upgrade {
                    chart: args.chart.chart.clone(),
                    version: version.clone(),
                    values: Values::Exactly(values),
                    set: vec![],
                    set_json: vec![],
                    timeout: args.chart.helm_timeout,
                },
            )
            .await?;
        if let Err(err) = kata_deploy::wait_install_jobs(
            client,
            &record.namespace,
            nodes,
            Some(&started),
            args.timeout,
        )
        .await
        {
            let why = crate::error::describe(&err.into());
            report.failed.extend(NodeFailure::each(nodes, &why));
        }
    }
    let current = reference.load(helm).await?;
    let restored = current
        .restore_values(
            helm,
            &args.chart.chart,
            &record.before.chart_version,
            &record.before.user_values,
            true,
            args.chart.helm_timeout,
        )
        .await;
    report.release_reverted = true;
    if let Err(err) = restored {
        report.notes.push(format!(
            "the release's values could not be restored: {}",
            crate::error::describe(&err.into())
        ));
        report.values_not_restored = Some(crate::release::restore_command(
            &reference,
            &args.chart.chart,
            &record.before.chart_version,
            record.before.revision,
            true,
        ));
    }
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "kata-deploy was not reinstalled at the recorded version"
        ))
    }
}
/// Whether the release differs from the recorded one (version, status or
/// the user's values, ignoring the run's own mechanics).
fn needs_revert(release: &Release, record: &RunRecord, mechanics: &[&str]) -> bool {
    let strip = |values: &Value| run_values::without(values, mechanics);
    release.chart_version != record.before.chart_version
        || release.status != "deployed"
        || strip(&release.user_values) != strip(&record.before.user_values)
}
