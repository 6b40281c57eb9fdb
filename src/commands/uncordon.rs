//! `klm uncordon`: return nodes to service and release the run's hold.

use clap::Args as ClapArgs;
use futures::future::try_join_all;
use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::cli::{GlobalArgs, NodesArgs, RunArgs};
use crate::error::ExitStatus;
use crate::nodes::hold::{self, Release, Released};
use crate::output::{self, Report};

/// Flags of `klm uncordon`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "A node that was unschedulable before the run is left unschedulable.\n\nExamples:\n  klm uncordon --nodes worker-1\n  klm uncordon --nodes worker-1 --run-id upgrade-1"
)]
pub struct Args {
    /// The nodes.
    #[command(flatten)]
    pub nodes: NodesArgs,

    /// Only release nodes held by this run (default: whichever run holds them).
    #[command(flatten)]
    pub run: RunArgs,
}

/// What uncordon did.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Uncordoned {
    /// Nodes released.
    pub released: Vec<Released>,
    /// Nodes not held by the named run (left alone).
    pub not_held: Vec<String>,
}

impl Report for Uncordoned {
    fn text(&self) -> String {
        let mut lines: Vec<String> = self
            .released
            .iter()
            .map(|r| {
                if r.kept_cordoned {
                    format!("{}: released; left unschedulable because it was unschedulable before the run", r.node)
                } else {
                    format!("{}: uncordoned", r.node)
                }
            })
            .collect();
        lines.extend(
            self.not_held
                .iter()
                .map(|n| format!("{n}: not held by this run; left as it is")),
        );
        lines.join("\n")
    }
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let names = args.nodes.names();
    let client = crate::cluster::client(global).await?;
    let nodes_api: Api<Node> = Api::all(client.clone());
    try_join_all(names.iter().map(|n| hold::get(&nodes_api, n))).await?;
    let how = Release {
        uncordon: true,
        ..Default::default()
    };
    let outcomes = try_join_all(
        names
            .iter()
            .map(|n| hold::release(&client, n, args.run.run_id.as_deref(), &how)),
    )
    .await?;
    let mut report = Uncordoned {
        released: Vec::new(),
        not_held: Vec::new(),
    };
    for (name, outcome) in names.iter().zip(outcomes) {
        match outcome {
            Some(released) => report.released.push(released),
            None => report.not_held.push(name.clone()),
        }
    }
    output::print(global.output, &report)?;
    Ok(ExitStatus::Done)
}
