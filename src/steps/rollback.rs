//! Rolling nodes back to the version recorded before the run: what `klm
//! rollback` does, and what `settle` (a failed wave) and `close-run` (nodes
//! caught mid-upgrade) hand their nodes to.
//!
//! daemonset mode returns the release to each version the nodes ran before
//! (keeping `OnDelete`, so only the nodes restarted here move) and restarts
//! those nodes onto it; job mode reinstalls each version on just those
//! nodes with a scoped upgrade, then gives the release the user's values
//! back without hooks. Either way the release ends at the version recorded
//! before the run.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::{join_all, try_join_all};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use serde_json::Value;

use crate::annotations::NodeStatus;
use crate::error::UserError;
use crate::events::{NodeEvent, NodeEvents};
use crate::helm::Helm;
use crate::kata_deploy::{self, KataDaemonSet};
use crate::nodes::NodeFailure;
use crate::nodes::hold::{self, Release as NodeRelease, Released};
use crate::output::Report;
use crate::release::{Release, ReleaseRef, Upgrade};
use crate::run::Run;
use crate::run_record::{NodeProgress, RunRecord, RunState};
use crate::run_values::{self, SCOPE_KEYS};
use crate::verification::Pods;
use crate::versions::{self, DeploymentMode};

/// What to roll back, and how.
#[derive(Debug, Clone)]
pub struct Request {
    /// The nodes, in order.
    pub nodes: crate::run::Targets,
    /// Why (recorded on the run record when this fails the run); default:
    /// `rollback of <nodes>`.
    pub reason: Option<String>,
    /// The release.
    pub release: ReleaseRef,
    /// The run whose recorded versions are the targets (None: the release's latest run).
    pub run_id: Option<String>,
    /// How.
    pub settings: Settings,
    /// Whether the rollback fails a running run (no further wave starts):
    /// true but for a wave that failed within the run's failure budget
    /// (`--max-failed-nodes`), after which the run goes on.
    pub fails_run: bool,
}

/// How nodes are rolled back: what every caller of [`roll_back`] (`klm
/// rollback`, a wave's settle, the end of a run) passes the same way.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The kata-deploy chart reference (job mode reinstalls from it).
    pub chart: String,
    /// How long one helm operation may take.
    pub helm_timeout: Duration,
    /// How long each node may take to come back Ready at the old version.
    pub timeout: Duration,
    /// Verify the nodes again before they return to service (None: don't).
    pub reverify: Option<Reverify>,
}

/// Verifying rolled-back nodes again.
#[derive(Debug, Clone)]
pub struct Reverify {
    /// The verification pods (each node its pool's, else the default).
    pub pods: Pods,
    /// How long one node's verification may take.
    pub timeout: Duration,
    /// Keep a failed verification pod for inspection.
    pub keep_failed: bool,
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

impl RolledBack {
    /// How the rollback ended for the caller: failed (exit 1) when a node's
    /// rollback failed, or when the nodes are back but the release's values
    /// could not be made the user's again.
    pub fn outcome(&self) -> Result<(), UserError> {
        if !self.failed.is_empty() {
            let failed_nodes: Vec<&str> = self.failed.iter().map(|f| f.node.as_str()).collect();
            return Err(UserError::failed(format!("rollback failed on {}; they are marked failed and stay cordoned", failed_nodes.join(", ")))
                .hint("see the reasons above; fix the cause (the kata-deploy pod or install Job on the node, the chart reference), then run `klm rollback` on them again"));
        }
        if let Some(command) = &self.values_not_restored {
            return Err(UserError::failed(
                "the nodes are rolled back, but the release's values are not the user's again",
            )
            .hint(format!("restore them with: {command}")));
        }
        Ok(())
    }
}

/// Rolls the request's nodes back: each to the version it ran before the
/// run touched it (recorded at cordon), else to the release's version
/// before the run; verifies them again when asked; releases the nodes that
/// are back and marks the others failed (left cordoned); records it all on
/// the run, which fails if it was running (unless the request says not). Per-node failures are in the
/// report (see [`RolledBack::outcome`]); an error is returned only when the
/// rollback could not be carried out at all.
pub async fn roll_back(
    client: &Client,
    helm: &Helm,
    request: &Request,
) -> anyhow::Result<RolledBack> {
    let run = Run::recorded(client, &request.release, request.run_id.as_deref()).await?;
    let names = &request.nodes.in_run(&run)?;
    let nodes = hold::get_all(client, names).await?;
    // No dry run of the verification pod here: what the new version broke
    // (a RuntimeClass it removed) must not stop the way back. The pod is
    // checked when it runs, after the revert, as each node's verification.
    let release = request.release.load(helm).await?;
    if release.status.starts_with("pending-") {
        release.ensure_deployed()?;
    }
    let before = versions::parse(&run.before.chart_version)?;

    let release_id = run.release_id();
    refuse_untouched(&run, &nodes)?;
    let holder = run.holder();
    // A node in service (the rollback-node entrypoint, a rollback by hand)
    // is cordoned for its rollback and released only once it is back.
    for node in names {
        hold::hold_for_rollback(client, node, &run.run_id, release_id).await?;
    }
    for node in names {
        hold::advance(client, node, Some(holder), NodeStatus::RollingBack).await?;
    }
    let mut report = RolledBack {
        run_id: run.run_id.clone(),
        version: before.to_string(),
        node_versions: names
            .iter()
            .map(|n| (n.clone(), run.version_before(n).to_string()))
            .collect(),
        ..Default::default()
    };
    let reverted = match run.mode {
        DeploymentMode::Daemonset => {
            revert_daemonset(client, helm, &run, names, request, &mut report).await
        }
        DeploymentMode::Job => revert_job(client, helm, &run, names, request, &mut report).await,
    };
    let reason = request
        .reason
        .clone()
        .unwrap_or_else(|| format!("rollback of {}", names.join(", ")));
    // Per-node failures were recorded by the revert; an error that names no
    // node (helm failed, the DaemonSet is gone) fails every node.
    if let Err(err) = reverted
        && report.failed.is_empty()
    {
        let why = crate::error::describe(&err);
        report.failed = NodeFailure::each(names, &why);
    }
    let mut back: Vec<String> = names
        .iter()
        .filter(|n| !report.failed.iter().any(|f| &f.node == *n))
        .cloned()
        .collect();

    if let Some(again) = &request.settings.reverify
        && !back.is_empty()
    {
        let failures = reverify(client, &run, &nodes, &back, again).await;
        report.reverified = true;
        back.retain(|n| !failures.iter().any(|f| &f.node == n));
        report.failed.extend(failures);
    }

    release_or_keep(client, &run, &back, &mut report).await?;
    let failed_nodes: Vec<String> = report.failed.iter().map(|f| f.node.clone()).collect();
    run.update(|r| {
        for node in &back {
            r.nodes.insert(node.clone(), NodeProgress::RolledBack);
        }
        for node in &failed_nodes {
            r.nodes.insert(node.clone(), NodeProgress::Failed);
        }
        if r.state == RunState::Running && request.fails_run {
            r.state = RunState::Failed;
            r.failure = Some(reason.clone());
        }
    })
    .await?;
    Ok(report)
}

/// After a revert: returns the nodes that are `back` to service (rolled
/// back, verified again at their version before the run or unverified,
/// their selection taints restored), keeps the failed ones cordoned,
/// marked failed, and records an Event on each.
async fn release_or_keep(
    client: &Client,
    run: &Run,
    back: &[String],
    report: &mut RolledBack,
) -> anyhow::Result<()> {
    let holder = run.holder();
    for failure in &report.failed {
        hold::advance(client, &failure.node, Some(holder), NodeStatus::Failed).await?;
    }
    let reverified = report.reverified;
    let released = try_join_all(back.iter().map(|n| {
        let how = NodeRelease {
            status: Some(NodeStatus::RolledBack),
            // Verified again at the version before the run, or unverified.
            version: if reverified {
                hold::VersionMark::Verified(run.version_before(n).to_string())
            } else {
                hold::VersionMark::Clear
            },
            taints: hold::SelectionTaints::Restore,
            uncordon: true,
            ..Default::default()
        };
        async move { hold::release(client, n, None, &how).await }
    }))
    .await?;
    report.nodes = released.into_iter().flatten().collect();
    let rolled_back = back.iter().map(|n| {
        let version = run.version_before(n).to_string();
        (n.clone(), NodeEvent::RolledBack { version })
    });
    let failed = report.failed.iter().map(|f| {
        let reason = f.reason.clone();
        (f.node.clone(), NodeEvent::RollbackFailed { reason })
    });
    NodeEvents::new(client, &run.run_id, run.release_id())
        .record_each(rolled_back.chain(failed))
        .await;
    Ok(())
}

/// Verifies the nodes coming `back` again at the version before the run;
/// the failures (each node's, or every node's when the verification could
/// not run).
async fn reverify(
    client: &Client,
    run: &Run,
    nodes: &[Node],
    back: &[String],
    again: &Reverify,
) -> Vec<NodeFailure> {
    let coming_back: Vec<Node> = nodes
        .iter()
        .filter(|n| back.iter().any(|b| Some(b) == n.metadata.name.as_ref()))
        .cloned()
        .collect();
    let could_not_run = |err: &dyn std::fmt::Display| {
        NodeFailure::each(
            back,
            &format!("verification after rollback could not run: {err}"),
        )
    };
    match again.pods.assign(&coming_back, run.pool_label.as_deref()) {
        Ok(assigned) => crate::verification::run::reverify(
            client,
            &assigned,
            &run.run_id,
            again.timeout,
            again.keep_failed,
        )
        .await
        .unwrap_or_else(|err| could_not_run(&err)),
        Err(err) => could_not_run(&err),
    }
}

/// Refuses (a precondition, before anything changes) nodes the run never
/// touched: it has nothing of its own to undo there, and no version of
/// theirs on record to return them to.
fn refuse_untouched(record: &RunRecord, nodes: &[Node]) -> Result<(), UserError> {
    let release_id = record.release_id();
    let untouched: Vec<String> = nodes
        .iter()
        .filter(|node| {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            let held = crate::nodes::selection::annotation(node, crate::annotations::RUN)
                == Some(record.run_id.as_str())
                && crate::nodes::selection::annotation(node, crate::annotations::RELEASE)
                    == Some(release_id.as_str());
            let status = crate::nodes::selection::annotation(node, crate::annotations::STATUS);
            !(record.nodes.contains_key(name) || held) || status.is_none()
        })
        .filter_map(|node| node.metadata.name.clone())
        .collect();
    if untouched.is_empty() {
        return Ok(());
    }
    let touched: Vec<&str> = record.nodes.keys().map(String::as_str).collect();
    let error = UserError::precondition(format!(
        "run {} of {release_id} never touched {}: there is nothing of its own to roll back there; nothing was changed",
        record.run_id,
        untouched.join(", ")
    ));
    Err(if touched.is_empty() {
        error.hint(format!("run {} touched no node", record.run_id))
    } else {
        error.hint(format!(
            "the nodes run {} touched: {} (`klm status --run-id {}` shows where each stands)",
            record.run_id,
            touched.join(", "),
            record.run_id
        ))
    })
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

/// One step of a rollback: the release at `version` with `values`, and the
/// nodes that return to it (none: the release alone ends there).
#[derive(Debug, Clone, PartialEq)]
struct Revert {
    /// The chart version.
    version: String,
    /// The user's values at that version.
    values: Value,
    /// The nodes restarted or reinstalled at it.
    nodes: Vec<String>,
}

/// How the named nodes go back, decided before anything changes: one
/// [`Revert`] per version they ran before the run, the release's version
/// before the run last; the nodes whose version helm's history no longer
/// has go back to that last one (`lost`: version → nodes, noted).
#[derive(Debug, Clone, PartialEq)]
struct RollbackPlan {
    reverts: Vec<Revert>,
    lost: Vec<(String, Vec<String>)>,
}

impl RollbackPlan {
    /// The plan for `names`, given what helm's history has for each
    /// version other than the release's before the run (its chart version
    /// and user values; None when it has none).
    fn new(
        record: &RunRecord,
        names: &[String],
        history: &BTreeMap<String, Option<(String, Value)>>,
    ) -> RollbackPlan {
        let mut reverts = Vec::new();
        let mut lost = Vec::new();
        for (version, mut nodes) in by_version(record, names) {
            if version == record.before.chart_version {
                nodes.extend(
                    lost.iter()
                        .flat_map(|(_, n): &(String, Vec<String>)| n.clone()),
                );
                reverts.push(Revert {
                    version,
                    values: record.before.user_values.clone(),
                    nodes,
                });
            } else if let Some(Some((chart_version, values))) = history.get(&version) {
                reverts.push(Revert {
                    version: chart_version.clone(),
                    values: values.clone(),
                    nodes,
                });
            } else {
                lost.push((version, nodes));
            }
        }
        RollbackPlan { reverts, lost }
    }

    /// The versions of `record`'s nodes in `names` that helm's history is
    /// asked for: all but the release's before the run.
    fn versions_to_look_up(record: &RunRecord, names: &[String]) -> Vec<String> {
        by_version(record, names)
            .into_iter()
            .map(|(version, _)| version)
            .filter(|v| *v != record.before.chart_version)
            .collect()
    }

    /// Says in the report where the lost nodes went instead.
    fn note_lost(&self, record: &RunRecord, report: &mut RolledBack) {
        for (version, nodes) in &self.lost {
            report.notes.push(format!(
                "{} ran {version} before the run, which helm's history no longer has: returned to {} instead",
                nodes.join(", "),
                record.before.chart_version
            ));
            for node in nodes {
                report
                    .node_versions
                    .insert(node.clone(), record.before.chart_version.clone());
            }
        }
    }
}

/// The rollback plan of `names`, with what helm's history has for their
/// versions; the report notes the nodes whose version it lost.
async fn revert_plan(
    helm: &Helm,
    reference: &crate::release::ReleaseRef,
    chart_name: &str,
    record: &RunRecord,
    names: &[String],
    report: &mut RolledBack,
) -> anyhow::Result<RollbackPlan> {
    let mut history = BTreeMap::new();
    for version in RollbackPlan::versions_to_look_up(record, names) {
        let found = values_for_version(helm, reference, chart_name, &version, record).await?;
        history.insert(version, found);
    }
    let plan = RollbackPlan::new(record, names, &history);
    plan.note_lost(record, report);
    Ok(plan)
}

/// daemonset mode: for each version the named nodes ran before the run,
/// returns the release to that version (keeping OnDelete, so only the
/// nodes restarted here move) and restarts those nodes onto it; the release
/// ends at the version recorded before the run.
async fn revert_daemonset(
    client: &Client,
    helm: &Helm,
    run: &Run,
    names: &[String],
    request: &Request,
    report: &mut RolledBack,
) -> anyhow::Result<()> {
    let mechanics = run_values::daemonset();
    // The mode pin is not the user's either: every upgrade sets it.
    let mechanic_keys: Vec<&str> = mechanics
        .iter()
        .map(|(k, _)| k.as_str())
        .chain([crate::release::MODE_KEY])
        .collect();
    let reference = &request.release;
    let chart_name = reference.load(helm).await?.chart_name;
    let plan = revert_plan(helm, reference, &chart_name, run, names, report).await?;
    let mut failures = Vec::new();
    for Revert {
        version,
        values,
        nodes,
    } in &plan.reverts
    {
        let current = reference.load(helm).await?;
        let at_before = *version == run.before.chart_version;
        let differs = if at_before {
            needs_revert(&current, run, &mechanic_keys)
        } else {
            current.chart_version != *version || current.status != "deployed" || {
                let mut wanted = values.clone();
                run_values::apply(&mut wanted, &mechanics);
                let pin = [crate::release::MODE_KEY];
                run_values::without(&wanted, &pin)
                    != run_values::without(&current.user_values, &pin)
            }
        };
        if differs {
            let mut values = values.clone();
            run_values::apply(&mut values, &mechanics);
            current
                .upgrade(
                    helm,
                    &Upgrade::exactly(
                        &request.settings.chart,
                        version,
                        values,
                        run.mode,
                        request.settings.helm_timeout,
                    ),
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
        let revision = daemonset.current_revision(request.settings.timeout).await?;
        let outcomes = join_all(
            nodes
                .iter()
                .map(|n| daemonset.restart_on(n, &revision, request.settings.timeout)),
        )
        .await;
        failures.extend(nodes.iter().zip(outcomes).filter_map(|(node, outcome)| {
            outcome
                .err()
                .map(|e| NodeFailure::new(node, crate::error::describe(&e.into())))
        }));
    }
    if report.release_reverted {
        crate::nodes::marks::take_back(client, helm, run.records(), reference, &run.run_id).await?;
    }
    let still_new: Vec<String> = run
        .nodes_in(&[NodeProgress::Completed])
        .into_iter()
        .filter(|n| !names.contains(n))
        .collect();
    if report.release_reverted && !still_new.is_empty() {
        report.notes.push(format!(
            "daemonset mode has one template for every node: the release is back at {}, while {} (completed by this run) keep running {} until their kata-deploy pod restarts; run the upgrade again to make the fleet consistent",
            run.before.chart_version,
            still_new.join(", "),
            run.target_version
        ));
    }
    report.notes.push(format!(
        "updateStrategy.type=OnDelete and verification.pod=\"\" are left in the release values: restoring RollingUpdate would restart every node onto the reverted template without verification; once every node runs it, restore your values with: {}",
        crate::release::restore_command(
            reference,
            &request.settings.chart,
            &run.before.chart_version,
            run.values_revision(),
            run.mode,
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

/// job mode from 4.1 (a run that dispatched its waves itself): the release
/// back at `version` with the user's values of then, without hooks, then
/// that revision's own install dispatcher run for `nodes` only, without its
/// prune ([`crate::dispatch`]), and its install Jobs waited for.
async fn redispatch(
    client: &Client,
    helm: &Helm,
    run: &Run,
    request: &Request,
    revert: &Revert,
) -> anyhow::Result<()> {
    let Revert {
        version,
        values,
        nodes,
    } = revert;
    let reference = &request.release;
    let current = reference.load(helm).await?;
    let pin = [crate::release::MODE_KEY];
    if current.chart_version != *version
        || run_values::without(&current.user_values, &pin) != run_values::without(values, &pin)
    {
        current
            .restore_values(
                helm,
                &request.settings.chart,
                version,
                values,
                run.mode,
                true,
                request.settings.helm_timeout,
            )
            .await?;
    }
    let at = reference.load(helm).await?;
    let dispatcher = crate::dispatch::Dispatcher::find(
        reference
            .hooks(helm, at.revision)
            .await?
            .iter()
            .map(String::as_str),
        &reference.name,
        at.revision,
    )?;
    kata_deploy::clear_finished_install_jobs(client, reference, nodes).await?;
    let started = crate::run_record::now();
    run.update(|r| r.wave_started_at = Some(started.clone()))
        .await?;
    let key = format!("rb{}-{}", at.revision, crate::dispatch::nodes_key(nodes));
    crate::dispatch::dispatch(
        client,
        reference,
        &dispatcher,
        &run.run_id,
        &key,
        nodes,
        request.settings.helm_timeout,
    )
    .await?;
    kata_deploy::wait_install_jobs(
        client,
        reference,
        nodes,
        Some(&started),
        request.settings.timeout,
    )
    .await?;
    Ok(())
}

/// job mode: a plain `helm rollback` would not re-run the dispatcher, so a
/// scoped upgrade to each version the named nodes ran before the run
/// reinstalls it on just those nodes; then the release gets the user's
/// values back at the version before the run, without hooks (no installer
/// runs again).
async fn revert_job(
    client: &Client,
    helm: &Helm,
    run: &Run,
    names: &[String],
    request: &Request,
    report: &mut RolledBack,
) -> anyhow::Result<()> {
    let reference = &request.release;
    let chart_name = reference.load(helm).await?.chart_name;
    let plan = revert_plan(helm, reference, &chart_name, run, names, report).await?;
    let own_dispatcher = versions::runs_own_dispatcher(
        &versions::parse(&run.before.chart_version)?,
        &run.target_version,
    );
    for revert in plan.reverts.iter().filter(|r| !r.nodes.is_empty()) {
        let Revert {
            version,
            values: base,
            nodes,
        } = revert;
        if own_dispatcher {
            if let Err(err) = redispatch(client, helm, run, request, revert).await {
                let why = crate::error::describe(&err);
                report.failed.extend(NodeFailure::each(nodes, &why));
            }
            continue;
        }
        let coalesced = reference.coalesced_values(helm).await?;
        let mut values = base.clone();
        run_values::apply(&mut values, &run_values::job_wave(nodes, &coalesced));
        kata_deploy::clear_finished_install_jobs(client, reference, nodes).await?;
        let started = crate::run_record::now();
        run.update(|r| r.wave_started_at = Some(started.clone()))
            .await?;
        reference
            .load(helm)
            .await?
            .upgrade(
                helm,
                &Upgrade::exactly(
                    &request.settings.chart,
                    version,
                    values,
                    run.mode,
                    request.settings.helm_timeout,
                ),
            )
            .await?;
        if let Err(err) = kata_deploy::wait_install_jobs(
            client,
            reference,
            nodes,
            Some(&started),
            request.settings.timeout,
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
            &request.settings.chart,
            &run.before.chart_version,
            &run.before.user_values,
            run.mode,
            true,
            request.settings.helm_timeout,
        )
        .await;
    report.release_reverted = true;
    if let Err(err) = restored {
        report.notes.push(format!(
            "the release's values could not be restored: {}",
            crate::error::describe(&err.into())
        ));
        report.values_not_restored = Some(crate::release::restore_command(
            reference,
            &request.settings.chart,
            &run.before.chart_version,
            run.values_revision(),
            run.mode,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record_with_versions() -> RunRecord {
        let mut record = crate::run_record::example();
        record.node_versions = BTreeMap::from([
            ("b".to_string(), "3.26.0".to_string()),
            ("c".to_string(), "3.27.0".to_string()),
            ("d".to_string(), "3.25.0".to_string()),
        ]);
        record
    }

    #[test]
    fn nodes_group_by_the_version_they_return_to_the_release_s_last() {
        let record = record_with_versions();
        let names = ["a", "b", "c", "d"].map(String::from);
        assert_eq!(
            by_version(&record, &names),
            vec![
                ("3.25.0".to_string(), vec!["d".to_string()]),
                ("3.26.0".to_string(), vec!["b".to_string()]),
                ("3.27.0".to_string(), vec!["a".to_string(), "c".to_string()]),
            ]
        );
        // The release's version before the run always ends the plan.
        assert_eq!(
            by_version(&record, &["b".to_string()]),
            vec![
                ("3.26.0".to_string(), vec!["b".to_string()]),
                ("3.27.0".to_string(), Vec::new()),
            ]
        );
    }

    #[test]
    fn only_a_release_unlike_the_recorded_one_is_reverted() {
        let mut record = crate::run_record::example();
        record.before.user_values =
            json!({"debug": true, "updateStrategy": {"type": "RollingUpdate"}});
        let release = Release {
            reference: ReleaseRef {
                name: "kata-deploy".into(),
                namespace: "kube-system".into(),
            },
            revision: 5,
            status: "deployed".into(),
            chart_name: "kata-deploy".into(),
            chart_version: "3.27.0".into(),
            app_version: "3.27.0".into(),
            user_values: json!({"debug": true, "updateStrategy": {"type": "OnDelete"}}),
            manifest: String::new(),
        };
        let keys = [run_values::UPDATE_STRATEGY, run_values::VERIFICATION_POD];
        assert!(!needs_revert(&release, &record, &keys));
        assert!(needs_revert(&release, &record, &[]));
        // The comparison keeps the maps that held the run's keys: a user
        // who had no updateStrategy at all differs from `updateStrategy: {}`.
        record.before.user_values = json!({"debug": true});
        assert!(needs_revert(&release, &record, &keys));
        let newer = Release {
            chart_version: "3.28.0".into(),
            ..release.clone()
        };
        assert!(needs_revert(&newer, &record, &keys));
        let failed = Release {
            status: "failed".into(),
            ..release
        };
        assert!(needs_revert(&failed, &record, &keys));
    }

    #[test]
    fn a_failed_node_or_unrestored_values_fail_the_rollback() {
        let mut report = RolledBack {
            run_id: "upgrade-1".into(),
            version: "3.27.0".into(),
            ..Default::default()
        };
        assert!(report.outcome().is_ok());
        report.values_not_restored = Some("helm upgrade ...".into());
        let err = report.outcome().unwrap_err();
        assert_eq!(err.hints, ["restore them with: helm upgrade ..."]);
        report.failed = vec![
            NodeFailure::new("w1", "timed out"),
            NodeFailure::new("w2", "x"),
        ];
        let err = report.outcome().unwrap_err();
        assert_eq!(err.status, crate::error::ExitStatus::Failed);
        assert!(
            err.message.starts_with("rollback failed on w1, w2;"),
            "{}",
            err.message
        );
        assert!(report.text().contains("w1: ROLLBACK FAILED: timed out"));
    }

    #[test]
    fn a_rollback_plan_reverts_each_version_and_ends_at_the_release_s_before_the_run() {
        let record = record_with_versions();
        let names = ["a", "b", "c", "d"].map(String::from);
        assert_eq!(
            RollbackPlan::versions_to_look_up(&record, &names),
            vec!["3.25.0".to_string(), "3.26.0".to_string()]
        );
        // helm's history has 3.26.0 (as chart 3.26.0 with its values) but
        // no longer 3.25.0: d goes back to the version before the run.
        let history = BTreeMap::from([
            ("3.25.0".to_string(), None),
            (
                "3.26.0".to_string(),
                Some(("3.26.0".to_string(), json!({"debug": true}))),
            ),
        ]);
        let plan = RollbackPlan::new(&record, &names, &history);
        assert_eq!(
            plan.reverts,
            vec![
                Revert {
                    version: "3.26.0".into(),
                    values: json!({"debug": true}),
                    nodes: vec!["b".into()],
                },
                Revert {
                    version: "3.27.0".into(),
                    values: record.before.user_values.clone(),
                    nodes: vec!["a".into(), "c".into(), "d".into()],
                },
            ]
        );
        assert_eq!(
            plan.lost,
            vec![("3.25.0".to_string(), vec!["d".to_string()])]
        );
        let mut report = RolledBack::default();
        plan.note_lost(&record, &mut report);
        assert_eq!(
            report.node_versions.get("d").map(String::as_str),
            Some("3.27.0")
        );
        assert!(report.notes[0].starts_with("d ran 3.25.0 before the run"));
    }
}
