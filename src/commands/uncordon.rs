//! `klm uncordon`: return nodes to service and release the run's hold.

use clap::Args as ClapArgs;
use futures::future::try_join_all;
use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::annotations::{self, NodeStatus};
use crate::args::{GlobalArgs, OptionalNodesArgs, ReleaseArgs, RunArgs};
use crate::error::{ExitStatus, KubeResultExt};
use crate::nodes::hold::{self, Release, Released};
use crate::nodes::selection;
use crate::output::{self, Report};
use crate::run_record::Records;
use kube::ResourceExt;

/// Flags of `klm uncordon`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "A node that was unschedulable before the run is left unschedulable.\n\nExamples:\n  klm uncordon --nodes worker-1\n  klm uncordon --nodes worker-1 --run-id upgrade-1\n  klm uncordon --all-held --run-id upgrade-1 --helm-namespace kata-system   # every node the run holds"
)]
pub struct Args {
    /// The nodes.
    #[command(flatten)]
    pub nodes: OptionalNodesArgs,

    /// Only release nodes held by this run (default: whichever run holds them).
    #[command(flatten)]
    pub run: RunArgs,

    /// With --run-id: the release whose run it is (a run id is unique only per release).
    #[command(flatten)]
    pub release: ReleaseArgs,
}

/// What uncordon did.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Uncordoned {
    /// Nodes released.
    pub released: Vec<Released>,
    /// Nodes not held by the named run (left alone).
    pub not_held: Vec<String>,
    /// Nodes left cordoned because their rollback failed (they need a person).
    pub kept_failed: Vec<String>,
}

impl Report for Uncordoned {
    fn text(&self) -> String {
        let mut lines: Vec<String> = self
            .released
            .iter()
            .map(|r| match (r.was_held, r.kept_cordoned, r.uncordoned) {
                (true, true, _) => format!(
                    "{}: released; left unschedulable because it was unschedulable before the run",
                    r.node
                ),
                (false, true, _) => format!(
                    "{}: left unschedulable: no run holds it, so no run cordoned it (klm lifts only a cordon a run made)",
                    r.node
                ),
                (_, false, true) => format!("{}: uncordoned", r.node),
                (true, false, false) => {
                    format!("{}: released; it was schedulable already", r.node)
                }
                (false, false, false) => {
                    format!("{}: schedulable, and no run holds it: nothing to do", r.node)
                }
            })
            .collect();
        lines.extend(
            self.not_held
                .iter()
                .map(|n| format!("{n}: not held by this run; left as it is")),
        );
        lines.extend(
            self.kept_failed
                .iter()
                .map(|n| format!("{n}: left cordoned: its rollback failed (see klm status)")),
        );
        if lines.is_empty() {
            return "no node is held: nothing to uncordon".into();
        }
        lines.join("\n")
    }
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let client = crate::cluster::client(global).await?;
    let nodes_api: Api<Node> = Api::all(client.clone());
    let mut report = Uncordoned {
        released: Vec::new(),
        not_held: Vec::new(),
        kept_failed: Vec::new(),
    };
    let release_id =
        annotations::release_id(&args.release.helm_namespace, &args.release.helm_release);
    let names = if args.nodes.all_held {
        let run_id = args.run.run_id.as_deref().unwrap_or_default();
        let all = nodes_api
            .list(&kube::api::ListParams::default())
            .await
            .during(|| "listing nodes".to_string())?
            .items;
        let record = Records::new(&client, &args.release.helm_namespace)
            .load(&args.release.helm_release)
            .await?
            .map(|(record, _)| record);
        let known = crate::runs::Known::of(&release_id, record.as_ref(), &all);
        if !known.has(run_id) {
            return Err(known.unknown(run_id, "uncordon --all-held").into());
        }
        let held = held_by(all, run_id, &release_id);
        let (failed, rest): (Vec<Node>, Vec<Node>) = held.into_iter().partition(|n| {
            selection::annotation(n, annotations::STATUS) == Some(NodeStatus::Failed.as_str())
        });
        report.kept_failed = failed.iter().map(|n| n.name_any()).collect();
        rest.iter().map(|n| n.name_any()).collect()
    } else {
        let names: Vec<String> = args.nodes.nodes.iter().flat_map(|l| l.0.clone()).collect();
        try_join_all(names.iter().map(|n| hold::get(&nodes_api, n))).await?;
        names
    };
    let how = Release {
        uncordon: true,
        release: Some(release_id),
        ..Default::default()
    };
    let outcomes = try_join_all(
        names
            .iter()
            .map(|n| hold::release(&client, n, args.run.run_id.as_deref(), &how)),
    )
    .await?;
    for (name, outcome) in names.iter().zip(outcomes) {
        match outcome {
            Some(released) => report.released.push(released),
            None => report.not_held.push(name.clone()),
        }
    }
    output::print(global.output, &report)?;
    Ok(ExitStatus::Done)
}

/// The nodes a run of a release holds (filtered by the run and release
/// annotations; a hold that names no release matches any).
fn held_by(all: Vec<Node>, run_id: &str, release_id: &str) -> Vec<Node> {
    all.into_iter()
        .filter(|n| selection::annotation(n, annotations::RUN) == Some(run_id))
        .filter(|n| {
            hold::same_release(
                selection::annotation(n, annotations::RELEASE),
                Some(release_id),
            )
        })
        .collect()
}
