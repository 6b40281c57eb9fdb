//! `klm restart-kata-pod`: install the new version on nodes and wait for it.

use std::time::Duration;

use clap::Args as ClapArgs;
use futures::future::join_all;
use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::annotations::NodeStatus;
use crate::args::{GlobalArgs, NodesArgs, ReleaseArgs, RunArgs, parse_duration};
use crate::error::{ExitStatus, UserError};
use crate::kata_deploy::{self, Installed, KataDaemonSet, Restarted};
use crate::nodes::{NodeFailure, hold};
use crate::output::{self, Report};
use crate::run_record::{NodeProgress, Records};
use crate::step;
use crate::versions::{DeploymentMode, ModeChoice};

/// Flags of `klm restart-kata-pod`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "daemonset mode: deletes each node's kata-deploy pod and waits for its replacement at the\nDaemonSet's current revision to be Ready and the node to carry katacontainers.io/kata-runtime=true.\njob mode: waits for the wave's per-node install Jobs and the label.\n\nExamples:\n  klm restart-kata-pod --nodes worker-1 --timeout 10m"
)]
pub struct Args {
    /// The nodes.
    #[command(flatten)]
    pub nodes: NodesArgs,

    /// kata-deploy's deployment model; auto uses the run record, then the release.
    #[arg(long, value_enum, default_value_t = ModeChoice::Auto)]
    pub deployment_mode: ModeChoice,

    /// How long each node may take to come back Ready.
    #[arg(long, default_value = "10m", value_parser = parse_duration, env = "KLM_RESTART_TIMEOUT", value_name = "DURATION")]
    pub timeout: Duration,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which run.
    #[command(flatten)]
    pub run: RunArgs,
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
            lines.push(format!(
                "{}: installed {} (Job {})",
                i.node,
                i.version.as_deref().unwrap_or("?"),
                i.job
            ));
        }
        for f in &self.failed {
            lines.push(format!("{}: FAILED: {}", f.node, f.reason));
        }
        lines.join("\n")
    }
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let client = crate::cluster::client(global).await?;
    let names = step::step_nodes(&client, &args.release, &args.run, &args.nodes).await?;
    let records = Records::new(&client, &args.release.helm_namespace);
    let record = step::active_run(
        &records,
        &args.release.helm_release,
        args.run.run_id.as_deref(),
    )
    .await?;
    let mode = step::mode_of_run(args.deployment_mode, &record)?;
    let nodes_api: Api<Node> = Api::all(client.clone());
    futures::future::try_join_all(names.iter().map(|n| hold::get(&nodes_api, n))).await?;
    let mut report = Restart::default();
    match mode {
        DeploymentMode::Daemonset => {
            let helm = step::helm(&args.release, global);
            let release = step::release_ref(&args.release).load(&helm).await?;
            let daemonset = KataDaemonSet::find(&client, &release.daemonset()?).await?;
            let revision = daemonset.current_revision(args.timeout).await?;
            let outcomes = join_all(names.iter().map(|node| {
                let (client, daemonset, revision) = (&client, &daemonset, &revision);
                async move {
                    hold::set_status(client, node, NodeStatus::Upgrading).await?;
                    daemonset
                        .restart_on(node, revision, args.timeout)
                        .await
                        .map_err(anyhow::Error::from)
                }
            }))
            .await;
            for (node, outcome) in names.iter().zip(outcomes) {
                match outcome {
                    Ok(restarted) => report.restarted.push(restarted),
                    Err(err) => report
                        .failed
                        .push(NodeFailure::new(node, crate::error::describe(&err))),
                }
            }
        }
        DeploymentMode::Job => {
            for node in &names {
                hold::set_status(&client, node, NodeStatus::Upgrading).await?;
            }
            match kata_deploy::wait_install_jobs(
                &client,
                &record.namespace,
                &names,
                record.wave_started_at.as_deref(),
                args.timeout,
            )
            .await
            {
                Ok(installed) => report.installed = installed,
                Err(err) => {
                    let reason = crate::error::describe(&anyhow::Error::from(err));
                    report.failed = NodeFailure::each(&names, &reason);
                }
            }
        }
    }
    let ok: Vec<String> = report
        .restarted
        .iter()
        .map(|r| r.node.clone())
        .chain(report.installed.iter().map(|i| i.node.clone()))
        .collect();
    records
        .update(&record.release, &record.run_id, |r| {
            for node in &ok {
                r.nodes.insert(node.clone(), NodeProgress::Upgraded);
            }
        })
        .await?;
    output::print(global.output, &report)?;
    if report.failed.is_empty() {
        Ok(ExitStatus::Done)
    } else {
        Err(UserError::failed(format!(
            "kata-deploy did not come back on {}",
            report
                .failed
                .iter()
                .map(|f| f.node.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .hint("roll the nodes back with `klm rollback --nodes ...` (the workflow does this itself)")
        .into())
    }
}
