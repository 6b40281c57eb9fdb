//! Installing the new version on nodes and waiting for it: what `klm
//! restart-kata-pod` does. daemonset mode deletes each node's kata-deploy
//! pod and waits for its replacement at the DaemonSet's current revision;
//! job mode upgrades the release for the nodes (the wave stage of
//! [`crate::steps::helm_upgrade`]) and waits for their per-node install Jobs.

use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Node;
use kube::Client;

use crate::annotations::NodeStatus;
use crate::error::UserError;
use crate::events::{NodeEvent, NodeEvents};
use crate::helm::Helm;
use crate::kata_deploy::{self, Installed, KataDaemonSet, Restarted};
use crate::nodes::{NodeFailure, hold};
use crate::output::Report;
use crate::release::ReleaseRef;
use crate::run::Run;
use crate::run_record::NodeProgress;
use crate::steps::helm_upgrade::{self, Stage};
use crate::versions::{DeploymentMode, ModeChoice};

/// Which nodes to restart, for which run.
#[derive(Debug, Clone)]
pub struct Request {
    /// The nodes.
    pub nodes: crate::run::Targets,
    /// The release.
    pub release: ReleaseRef,
    /// The run (None: the release's latest run).
    pub run_id: Option<String>,
    /// The deployment mode asked for: it must be the run's.
    pub mode: ModeChoice,
    /// How long each node may take to come back Ready.
    pub timeout: Duration,
    /// job mode: the kata-deploy chart reference.
    pub chart: String,
    /// job mode: how long the helm upgrade may take.
    pub helm_timeout: Duration,
}

/// What restart-kata-pod did.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Restart {
    /// daemonset mode: nodes whose kata-deploy pod runs the current revision.
    pub restarted: Vec<Restarted>,
    /// job mode: nodes whose install Job completed.
    pub installed: Vec<Installed>,
    /// Nodes that did not come back, with why.
    pub failed: Vec<NodeFailure>,
}

impl Report for Restart {
    fn text(&self) -> String {
        let mut lines = Vec::new();
        for r in &self.restarted {
            let version = r.version.as_deref().unwrap_or("?");
            if r.already_current {
                lines.push(format!(
                    "{}: kata-deploy already at {version} (pod {}); nothing restarted",
                    r.node, r.new_pod
                ));
            } else {
                lines.push(format!(
                    "{}: kata-deploy {version} Ready (pod {} replaced {})",
                    r.node,
                    r.new_pod,
                    r.old_pod.as_deref().unwrap_or("none")
                ));
            }
        }
        for i in &self.installed {
            lines.push(match &i.job {
                Some(job) => format!(
                    "{}: installed {} (Job {job})",
                    i.node,
                    i.version.as_deref().unwrap_or("?"),
                ),
                None => format!(
                    "{}: installed (its Job was removed after its TTL; the dispatcher reported it)",
                    i.node
                ),
            });
        }
        for f in &self.failed {
            lines.push(format!("{}: FAILED: {}", f.node, f.reason));
        }
        lines.join("\n")
    }
}

impl Restart {
    /// The nodes that came back, with the version each runs now.
    fn upgraded(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        let restarted = self
            .restarted
            .iter()
            .map(|r| (r.node.as_str(), r.version.as_deref()));
        let installed = self
            .installed
            .iter()
            .map(|i| (i.node.as_str(), i.version.as_deref()));
        restarted.chain(installed)
    }

    /// An Event per node: upgraded, or why it did not come back.
    fn events(&self) -> Vec<(String, NodeEvent)> {
        let upgraded = self.upgraded().map(|(node, version)| {
            let version = version.unwrap_or("?").to_string();
            (node.to_string(), NodeEvent::Upgraded { version })
        });
        let failed = self.failed.iter().map(|f| {
            let reason = f.reason.clone();
            (f.node.clone(), NodeEvent::UpgradeFailed { reason })
        });
        upgraded.chain(failed).collect()
    }

    /// How the restart ended for the caller: failed (exit 1) when
    /// kata-deploy did not come back on a node.
    pub fn outcome(&self) -> Result<(), UserError> {
        if self.failed.is_empty() {
            return Ok(());
        }
        Err(UserError::failed(format!(
            "kata-deploy did not come back on {}",
            self.failed
                .iter()
                .map(|f| f.node.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .hint(
            "roll the nodes back with `klm rollback --nodes ...` (the workflow does this itself)",
        ))
    }
}

/// Installs the run's version on the request's nodes (marking them
/// `upgrading`) and waits for each; records the nodes that came back as
/// upgraded. Nodes that did not are in the report (see [`Restart::outcome`]).
pub async fn restart(client: &Client, helm: &Helm, request: &Request) -> anyhow::Result<Restart> {
    let run = Run::active(client, &request.release, request.run_id.as_deref()).await?;
    let names = &request.nodes.in_run(&run)?;
    let mode = run.mode(request.mode)?;
    let read = hold::get_all(client, names).await?;
    let events = NodeEvents::new(client, &run.run_id, run.release_id()).knowing(&read);
    let report = match mode {
        DeploymentMode::Daemonset => restart_pods(client, helm, request, &run, names, read).await?,
        DeploymentMode::Job => install_wave(client, helm, request, &run, names, read).await?,
    };
    run.update(|r| {
        for (node, _) in report.upgraded() {
            r.nodes.insert(node.to_string(), NodeProgress::Upgraded);
        }
    })
    .await?;
    events.record_each(report.events()).await;
    Ok(report)
}

/// daemonset mode: deletes each node's kata-deploy pod (concurrently) and
/// waits for its replacement at the DaemonSet's current revision.
async fn restart_pods(
    client: &Client,
    helm: &Helm,
    request: &Request,
    run: &Run,
    names: &[String],
    read: Vec<Node>,
) -> anyhow::Result<Restart> {
    // As the before-waves upgrade recorded it; a run recorded before klm
    // kept it reads the release.
    let object = match &run.kata_daemonset {
        Some(object) => object.clone(),
        None => request.release.load(helm).await?.daemonset()?,
    };
    let daemonset = KataDaemonSet::find(client, &object).await?;
    let revision = daemonset.current_revision(request.timeout).await?;
    let holder = run.holder();
    let outcomes = join_all(names.iter().zip(read).map(|(node, read)| {
        let (daemonset, revision) = (&daemonset, &revision);
        async move {
            hold::advance_from(client, read, Some(holder), NodeStatus::Upgrading).await?;
            daemonset
                .restart_on(node, revision, request.timeout)
                .await
                .map_err(anyhow::Error::from)
        }
    }))
    .await;
    let mut report = Restart::default();
    for (node, outcome) in names.iter().zip(outcomes) {
        match outcome {
            Ok(restarted) => report.restarted.push(restarted),
            Err(err) => report
                .failed
                .push(NodeFailure::new(node, crate::error::describe(&err))),
        }
    }
    Ok(report)
}

/// job mode: upgrades the release for the wave's nodes (the wave stage of
/// [`crate::steps::helm_upgrade`]) and waits for their install Jobs.
async fn install_wave(
    client: &Client,
    helm: &Helm,
    request: &Request,
    run: &Run,
    names: &[String],
    read: Vec<Node>,
) -> anyhow::Result<Restart> {
    for node in read {
        hold::advance_from(client, node, Some(run.holder()), NodeStatus::Upgrading).await?;
    }
    let wave = helm_upgrade::Request {
        release: request.release.clone(),
        run_id: Some(run.run_id.clone()),
        target: None,
        mode: ModeChoice::Job,
        stage: Some(Stage::Wave),
        nodes: Some(names.to_vec()),
        wave: None,
        set: Vec::new(),
        chart: request.chart.clone(),
        helm_timeout: request.helm_timeout,
    };
    let upgraded = helm_upgrade::upgrade(client, helm, &wave).await?;
    let mut report = Restart::default();
    match kata_deploy::wait_install_jobs(
        client,
        &request.release,
        names,
        upgraded.wave_started_at.as_deref(),
        request.timeout,
    )
    .await
    {
        Ok(installed) => report.installed = installed,
        Err(err) => {
            let reason = crate::error::describe(&anyhow::Error::from(err));
            report.failed = NodeFailure::each(names, &reason);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_that_did_not_come_back_fails_the_step() {
        let mut report = Restart::default();
        assert!(report.outcome().is_ok());
        report.failed = NodeFailure::each(&["w1".to_string(), "w2".to_string()], "timed out");
        let err = report.outcome().unwrap_err();
        assert_eq!(err.message, "kata-deploy did not come back on w1, w2");
        assert_eq!(
            report.text(),
            "w1: FAILED: timed out\nw2: FAILED: timed out"
        );
    }
}
