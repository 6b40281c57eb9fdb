//! Completing a run's verified nodes, and finishing the run: what `klm
//! complete` does, and what `settle` does with a wave that succeeded.

use std::time::Duration;

use futures::future::try_join_all;
use kube::{Api, Client};
use serde_json::Value;

use crate::annotations::NodeStatus;
use crate::error::UserError;
use crate::events::{NodeEvent, NodeEvents};
use crate::helm::Helm;
use crate::nodes::hold::{self, Release, Released};
use crate::output::Report;
use crate::release::ReleaseRef;
use crate::run::Run;
use crate::run_record::{NodeProgress, RunState};
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
    /// With --finish-run, daemonset mode: the nodes outside the run that
    /// still run an older kata-deploy, which keep the release on OnDelete.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes_behind: Vec<String>,
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
        if let Some(left) = self.left_in_place.first() {
            let values: Vec<String> = self
                .left_in_place
                .iter()
                .map(|l| format!("{}={}", l.key, l.value))
                .collect();
            lines.push(format!(
                "the release keeps {} until the rest of its nodes are upgraded: {}",
                values.join(", "),
                left.reason
            ));
        }
        if lines.is_empty() {
            lines.push(format!("run {} finished", self.run_id));
        }
        lines.join("\n")
    }
}

impl Completed {
    /// What a finished run left on the release, in a sentence (None: nothing).
    pub fn left_note(&self) -> Option<String> {
        let values: Vec<String> = self
            .left_in_place
            .iter()
            .map(|l| format!("{}={}", l.key, l.value))
            .collect();
        (!values.is_empty()).then(|| {
            format!(
                "the release stays on {} until the nodes still on an older kata-deploy are upgraded ({}); the run that upgrades the last of them restores your values",
                values.join(", "),
                self.nodes_behind.join(", ")
            )
        })
    }
}

/// Completes the request's nodes and, with `finish_run`, closes the run, for
/// an active run (not failed or interrupted) whose target is the request's.
pub async fn complete(
    client: &Client,
    helm: &Helm,
    request: &Request,
) -> anyhow::Result<Completed> {
    let run = Run::active(client, &request.release, request.run_id.as_deref()).await?;
    complete_in(client, helm, &run, request).await
}

/// [`complete`] in `run`, as the caller read it (it must be active).
pub async fn complete_in(
    client: &Client,
    helm: &Helm,
    run: &Run,
    request: &Request,
) -> anyhow::Result<Completed> {
    run.ensure_active()?;
    let target = run.target(request.target.as_ref())?.to_string();
    let mut report = Completed {
        run_id: run.run_id.clone(),
        version: target.clone(),
        ..Default::default()
    };
    if let Some(nodes) = &request.nodes {
        report.nodes = complete_nodes(client, run, nodes, &target).await?;
    }
    if request.finish_run {
        finish_run(
            client,
            helm,
            run,
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
    run: &Run,
    nodes: &[String],
    target: &str,
) -> anyhow::Result<Vec<Released>> {
    let unverified: Vec<&String> = nodes
        .iter()
        .filter(|n| {
            !matches!(
                run.nodes.get(*n),
                Some(NodeProgress::Verified | NodeProgress::Completed)
            )
        })
        .collect();
    if !unverified.is_empty() {
        return Err(UserError::precondition(format!(
            "run {} has not verified {}",
            run.run_id,
            unverified
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .hint("run `klm verify` on them first; only verified nodes are completed")
        .into());
    }
    let read = hold::get_all(client, nodes).await?;
    let events = NodeEvents::new(client, &run.run_id, run.release_id()).knowing(&read);
    let how = Release {
        status: Some(NodeStatus::Completed),
        version: hold::VersionMark::Verified(target.to_string()),
        taints: hold::SelectionTaints::Remove,
        uncordon: true,
        release: Some(run.release_id().to_string()),
    };
    let released = try_join_all(
        read.into_iter()
            .map(|n| hold::release_from(client, n, Some(&run.run_id), &how)),
    )
    .await?;
    run.update(|r| {
        for node in nodes {
            r.nodes.insert(node.clone(), NodeProgress::Completed);
        }
    })
    .await?;
    let released: Vec<Released> = released.into_iter().flatten().collect();
    events
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
    run: &Run,
    chart: &str,
    helm_timeout: std::time::Duration,
    report: &mut Completed,
) -> anyhow::Result<()> {
    let reference = crate::release::ReleaseRef {
        name: run.release.clone(),
        namespace: run.namespace.clone(),
    };
    let release = reference.load(helm).await?;
    release.ensure_deployed()?;
    let mechanics: Vec<(String, Value)> = run
        .mechanics
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // job mode: the values go back without hooks, so the installer does not
    // run again on any node (the release's values then say what the user
    // asked for; each node runs what klm verified on it).
    let (behind, no_hooks) = match run.mode {
        DeploymentMode::Daemonset => (nodes_behind(client, &release).await?, false),
        DeploymentMode::Job => (Vec::new(), true),
    };
    let command = crate::release::restore_command(
        &reference,
        chart,
        &release.chart_version,
        run.values_revision(),
        run.mode,
        no_hooks,
    );
    let left = !behind.is_empty() && !mechanics.is_empty();
    if behind.is_empty() && !mechanics.is_empty() {
        let mut values = release.user_values.clone();
        crate::run_values::restore_user_values(
            &mut values,
            mechanics.iter().map(|(k, _)| k.as_str()),
            &run.before.user_values,
        );
        release
                .restore_values(
                    helm,
                    chart,
                    &release.chart_version,
                    &values,
                    run.mode,
                    no_hooks,
                    helm_timeout,
                )
                .await
                .map_err(|err| {
                    UserError::failed(format!(
                        "the release's values could not be restored: {}",
                        crate::error::describe(&err.into())
                    ))
                    .hint(format!("retry `klm complete --finish-run --run-id {}`, or restore them with: {command}", run.run_id))
                })?;
        report.restored = mechanics.iter().map(|(k, _)| k.clone()).collect();
    } else if left {
        // A partial run (a canary, a pool, a taint's nodes): the release
        // keeps OnDelete, which protects the nodes outside the run from an
        // unverified restart, until a run upgrades the last of them.
        let version = &release.chart_version;
        let reason = format!(
            "the nodes still on an older kata-deploy ({}) would restart onto {version} unverified; the run that upgrades the last of them restores your values (or, once every node runs {version}: {command})",
            behind.join(", ")
        );
        report.left_in_place = mechanics
            .into_iter()
            .map(|(key, value)| LeftInPlace {
                key,
                value,
                reason: reason.clone(),
                command: command.clone(),
            })
            .collect();
        report.nodes_behind = behind;
    }
    crate::dispatch::resume_reconcilers(client, run).await?;
    run.update(|r| {
        r.state = match r.failed_nodes.is_empty() {
            true => RunState::Completed,
            false => RunState::CompletedWithFailures,
        };
        r.held = None;
        r.suspended.clear();
        // What stays on the release stays on record: the next run takes
        // it over and restores it (RunRecord::inherit).
        if !left {
            r.mechanics.clear();
        }
    })
    .await?;
    if left {
        let values: Vec<String> = report
            .left_in_place
            .iter()
            .map(|l| format!("{}={}", l.key, l.value))
            .collect();
        let event = NodeEvent::UpgradePending {
            version: release.chart_version.clone(),
            values: values.join(", "),
        };
        NodeEvents::new(client, &run.run_id, run.release_id())
            .record_each(
                report
                    .nodes_behind
                    .iter()
                    .map(|n| (n.clone(), event.clone())),
            )
            .await;
    }
    Ok(())
}

/// The nodes whose kata-deploy pod does not run the DaemonSet's current
/// revision. Restoring RollingUpdate is safe only when there are none:
/// otherwise the controller would restart them onto the new version
/// without verification.
async fn nodes_behind(
    client: &Client,
    release: &crate::release::Release,
) -> anyhow::Result<Vec<String>> {
    let daemonset = crate::kata_deploy::KataDaemonSet::find(client, &release.daemonset()?).await?;
    let revision = daemonset
        .current_revision(std::time::Duration::from_secs(60))
        .await?;
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(client.clone(), &daemonset.namespace);
    let list = pods
        .list(&kube::api::ListParams::default().labels(daemonset.selector()))
        .await?;
    let mut behind: Vec<String> = list
        .items
        .iter()
        .filter(|p| crate::kata_deploy::revision_of(p) != Some(revision.hash.as_str()))
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    behind.sort();
    Ok(behind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_left_on_the_release_are_said_not_failed() {
        let mut report = Completed {
            run_id: "upgrade-1".into(),
            version: "3.28.0".into(),
            ..Default::default()
        };
        assert_eq!(report.text(), "run upgrade-1 finished");
        assert_eq!(report.left_note(), None);
        report.left_in_place = vec![LeftInPlace {
            key: "updateStrategy.type".into(),
            value: json!("OnDelete"),
            reason: "restoring them now would restart w9 unverified".into(),
            command: "helm upgrade kata-deploy ...".into(),
        }];
        report.nodes_behind = vec!["w9".into()];
        assert_eq!(
            report.text(),
            "the release keeps updateStrategy.type=\"OnDelete\" until the rest of its nodes are upgraded: restoring them now would restart w9 unverified"
        );
        assert_eq!(
            report.left_note().unwrap(),
            "the release stays on updateStrategy.type=\"OnDelete\" until the nodes still on an older kata-deploy are upgraded (w9); the run that upgrades the last of them restores your values"
        );
    }
}
