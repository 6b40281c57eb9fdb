//! Completing a run's verified nodes, and finishing the run: what `klm
//! complete` does, and what `settle` does with a wave that succeeded.

use std::time::Duration;

use futures::future::try_join_all;
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use serde_json::Value;

use crate::annotations::NodeStatus;
use crate::error::UserError;
use crate::events::{NodeEvent, NodeEvents};
use crate::helm::Helm;
use crate::nodes::hold::{self, Release, Released};
use crate::output::Report;
use crate::release::ReleaseRef;
use crate::run_record::{NodeProgress, Records, RunRecord, RunState};
use crate::step;
use crate::versions::DeploymentMode;

/// What to complete.
#[derive(Debug, Clone)]
pub struct Request {
    /// The release.
    pub release: ReleaseRef,
    /// The run (None: the release's latest run).
    pub run_id: Option<String>,
    /// The version the nodes were verified at, if the caller names it: it
    /// must be the run's target (None: the run's target).
    pub target: Option<semver::Version>,
    /// The nodes to mark completed and return to service (None: none).
    pub nodes: Option<Vec<String>>,
    /// Close the run: restore or report the release values it changed.
    pub finish_run: bool,
    /// The kata-deploy chart reference (to restore values).
    pub chart: String,
    /// How long one helm operation may take.
    pub helm_timeout: Duration,
}

/// What complete did.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Completed {
    /// The run.
    pub run_id: String,
    /// The version the nodes were verified at.
    pub version: String,
    /// Nodes completed.
    pub nodes: Vec<Released>,
    /// With --finish-run: release values restored.
    pub restored: Vec<String>,
    /// With --finish-run: release values left in place, with why.
    pub left_in_place: Vec<LeftInPlace>,
}

/// A value the run set on the release and did not restore.
#[derive(Debug, serde::Serialize)]
pub struct LeftInPlace {
    /// The value's key.
    pub key: String,
    /// Its current value.
    pub value: Value,
    /// Why it stays.
    pub reason: String,
    /// The command that puts the user's values back.
    pub command: String,
}

impl Report for Completed {
    fn text(&self) -> String {
        let mut lines: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                let cordon = if n.kept_cordoned {
                    ", left unschedulable (it was before the run)"
                } else {
                    ", back in service"
                };
                format!("{}: completed at {}{cordon}", n.node, self.version)
            })
            .collect();
        if !self.restored.is_empty() {
            lines.push(format!(
                "restored release values: {}",
                self.restored.join(", ")
            ));
        }
        for left in &self.left_in_place {
            lines.push(format!(
                "left in place: {}={} ({})",
                left.key, left.value, left.reason
            ));
        }
        if lines.is_empty() {
            lines.push(format!("run {} finished", self.run_id));
        }
        lines.join("\n")
    }
}

impl Completed {
    /// How completing ended for the caller: failed (exit 1) when the run is
    /// finished but the release keeps values it set for its own mechanics.
    pub fn outcome(&self) -> Result<(), UserError> {
        let Some(left) = self.left_in_place.first() else {
            return Ok(());
        };
        Err(UserError::failed(format!(
            "run {} is finished, but the release keeps values it set for its own mechanics: {}",
            self.run_id,
            self.left_in_place
                .iter()
                .map(|l| format!("{}={}", l.key, l.value))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .hint(left.reason.clone())
        .hint(format!(
            "once that is resolved, put the values you had before the run back with: {}",
            left.command
        )))
    }
}

/// Completes the request's nodes and, with `finish_run`, closes the run, for
/// an active run (not failed or interrupted) whose target is the request's.
pub async fn complete(
    client: &Client,
    helm: &Helm,
    request: &Request,
) -> anyhow::Result<Completed> {
    let records = Records::new(client, &request.release.namespace);
    let record =
        step::active_run(&records, &request.release.name, request.run_id.as_deref()).await?;
    let target = step::run_target(&record, request.target.as_ref())?.to_string();
    let mut report = Completed {
        run_id: record.run_id.clone(),
        version: target.clone(),
        ..Default::default()
    };
    if let Some(nodes) = &request.nodes {
        report.nodes = complete_nodes(client, &records, &record, nodes, &target).await?;
    }
    if request.finish_run {
        finish_run(
            client,
            helm,
            &records,
            &record,
            &request.chart,
            request.helm_timeout,
            &mut report,
        )
        .await?;
    }
    Ok(report)
}

/// Marks verified nodes completed at `target` and returns them to service
/// (removing the selection taint, uncordoning those that were schedulable
/// before the run); refuses (a precondition) if the run has not verified
/// every one of them.
async fn complete_nodes(
    client: &Client,
    records: &Records,
    record: &RunRecord,
    nodes: &[String],
    target: &str,
) -> anyhow::Result<Vec<Released>> {
    let unverified: Vec<&String> = nodes
        .iter()
        .filter(|n| {
            !matches!(
                record.nodes.get(*n),
                Some(NodeProgress::Verified | NodeProgress::Completed)
            )
        })
        .collect();
    if !unverified.is_empty() {
        return Err(UserError::precondition(format!(
            "run {} has not verified {}",
            record.run_id,
            unverified
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .hint("run `klm verify` on them first; only verified nodes are completed")
        .into());
    }
    let nodes_api: Api<Node> = Api::all(client.clone());
    try_join_all(nodes.iter().map(|n| hold::get(&nodes_api, n))).await?;
    let how = Release {
        status: Some(NodeStatus::Completed),
        current_version: Some(Some(target.to_string())),
        remove_selection_taints: true,
        uncordon: true,
        release: Some(record.release_id()),
        ..Default::default()
    };
    let released = try_join_all(
        nodes
            .iter()
            .map(|n| hold::release(client, n, Some(&record.run_id), &how)),
    )
    .await?;
    records
        .update(&record.release, &record.run_id, |r| {
            for node in nodes {
                r.nodes.insert(node.clone(), NodeProgress::Completed);
            }
        })
        .await?;
    let released: Vec<Released> = released.into_iter().flatten().collect();
    NodeEvents::new(client, &record.run_id, &record.release_id())
        .record_each(released.iter().map(|r| {
            let version = target.to_string();
            (r.node.clone(), NodeEvent::Completed { version })
        }))
        .await;
    Ok(released)
}

/// Closes the run: restores what the run set on the release for its own
/// mechanics where that cannot restart unverified nodes, reports the rest.
async fn finish_run(
    client: &Client,
    helm: &Helm,
    records: &Records,
    record: &RunRecord,
    chart: &str,
    helm_timeout: std::time::Duration,
    report: &mut Completed,
) -> anyhow::Result<()> {
    let reference = crate::release::ReleaseRef {
        name: record.release.clone(),
        namespace: record.namespace.clone(),
    };
    let release = reference.load(helm).await?;
    release.ensure_deployed()?;
    let mechanics: Vec<(String, Value)> = record
        .mechanics
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // job mode: the values go back without hooks, so the installer does not
    // run again on any node (the release's values then say what the user
    // asked for; each node runs what klm verified on it).
    let (restorable, no_hooks) = match record.mode {
        DeploymentMode::Daemonset => (daemonset_fully_rolled(client, &release).await?, false),
        DeploymentMode::Job => (Ok(()), true),
    };
    let command = crate::release::restore_command(
        &reference,
        chart,
        &release.chart_version,
        record.before.revision,
        record.mode,
        no_hooks,
    );
    match restorable {
        Ok(()) if !mechanics.is_empty() => {
            let mut values = release.user_values.clone();
            crate::run_values::restore_user_values(
                &mut values,
                mechanics.iter().map(|(k, _)| k.as_str()),
                &record.before.user_values,
            );
            release
                .restore_values(
                    helm,
                    chart,
                    &release.chart_version,
                    &values,
                    record.mode,
                    no_hooks,
                    helm_timeout,
                )
                .await
                .map_err(|err| {
                    UserError::failed(format!(
                        "the release's values could not be restored: {}",
                        crate::error::describe(&err.into())
                    ))
                    .hint(format!("retry `klm complete --finish-run --run-id {}`, or restore them with: {command}", record.run_id))
                })?;
            report.restored = mechanics.iter().map(|(k, _)| k.clone()).collect();
        }
        Ok(()) => {}
        Err(reason) => {
            report.left_in_place = mechanics
                .into_iter()
                .map(|(key, value)| LeftInPlace {
                    key,
                    value,
                    reason: reason.clone(),
                    command: command.clone(),
                })
                .collect();
        }
    }
    crate::dispatch::resume_reconcilers(client, record).await?;
    records
        .update(&record.release, &record.run_id, |r| {
            r.state = RunState::Completed;
            r.held = None;
            r.mechanics.clear();
            r.suspended.clear();
        })
        .await?;
    Ok(())
}

/// Restoring RollingUpdate is safe only when every kata-deploy pod already
/// runs the current revision: otherwise the controller would restart the
/// remaining nodes onto the new version without verification.
async fn daemonset_fully_rolled(
    client: &Client,
    release: &crate::release::Release,
) -> anyhow::Result<Result<(), String>> {
    let daemonset = crate::kata_deploy::KataDaemonSet::find(client, &release.daemonset()?).await?;
    let revision = daemonset
        .current_revision(std::time::Duration::from_secs(60))
        .await?;
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(client.clone(), &daemonset.namespace);
    let list = pods
        .list(&kube::api::ListParams::default().labels(daemonset.selector()))
        .await?;
    let behind: Vec<String> = list
        .items
        .iter()
        .filter(|p| crate::kata_deploy::revision_of(p) != Some(revision.hash.as_str()))
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    if behind.is_empty() {
        Ok(Ok(()))
    } else {
        Ok(Err(format!(
            "nodes outside this run still run an older kata-deploy ({}); restoring the update strategy would restart them unverified — upgrade them with klm, then restore it with helm",
            behind.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_left_in_place_fail_a_finished_run() {
        let mut report = Completed {
            run_id: "upgrade-1".into(),
            version: "3.28.0".into(),
            ..Default::default()
        };
        assert!(report.outcome().is_ok());
        assert_eq!(report.text(), "run upgrade-1 finished");
        report.left_in_place = vec![LeftInPlace {
            key: "updateStrategy.type".into(),
            value: json!("OnDelete"),
            reason: "nodes outside this run still run an older kata-deploy (w9)".into(),
            command: "helm upgrade kata-deploy ...".into(),
        }];
        let err = report.outcome().unwrap_err();
        assert_eq!(err.status, crate::error::ExitStatus::Failed);
        assert!(
            err.message
                .ends_with("for its own mechanics: updateStrategy.type=\"OnDelete\""),
            "{}",
            err.message
        );
        assert_eq!(err.hints.len(), 2);
        assert!(err.hints[1].ends_with("helm upgrade kata-deploy ..."));
        assert!(
            report
                .text()
                .contains("left in place: updateStrategy.type=\"OnDelete\"")
        );
    }
}
