//! `klm drain`: evict the pods of nodes through the Eviction API.

use std::time::Duration;

use super::flags;
use crate::args::{GlobalArgs, NodesArgs, ReleaseArgs, RunArgs, parse_duration};
use crate::drain::DrainScope;
use crate::drain::{Drained, Request, drain_nodes};
use crate::error::ExitStatus;
use crate::output::{self, Report};
use clap::Args as ClapArgs;

/// Flags of `klm drain`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "DaemonSet pods and mirror pods are left alone; PodDisruptionBudgets are honoured.\nWith --drain-scope kata only the pods of the release's RuntimeClasses are evicted.\nCordon the nodes first (klm cordon), or evicted pods may land on them again.\n\nExamples:\n  klm drain --nodes worker-1 --drain-timeout 5m\n  klm drain --nodes worker-1 --drain-scope kata"
)]
pub struct Args {
    /// The nodes (cordon them first).
    #[command(flatten)]
    pub nodes: NodesArgs,

    /// How long evictions may wait for PodDisruptionBudgets and pods to go.
    #[arg(long, default_value = "300s", value_parser = parse_duration, env = "KLM_DRAIN_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    pub drain_timeout: Duration,

    /// Which pods go: all, or only those of the release's RuntimeClasses
    /// (kata), the pods a Kata upgrade affects.
    #[arg(long, value_enum, default_value_t = DrainScope::All, env = "KLM_DRAIN_SCOPE")]
    pub drain_scope: DrainScope,

    /// The run that holds the nodes.
    #[command(flatten)]
    pub run: RunArgs,

    /// Which release (its run record, for --wave).
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// false: evict nothing and say so, touching nothing (the workflow's
    /// drain phase when the run was submitted with drain-enabled=false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub enabled: bool,
}

/// What drain did.
#[derive(Debug, serde::Serialize)]
pub struct Drain {
    /// false: the drain was not asked for (--enabled=false).
    pub enabled: bool,
    /// Per node.
    pub nodes: Vec<Drained>,
}

impl Report for Drain {
    fn text(&self) -> String {
        if !self.enabled {
            return "drain not enabled for this run (--enabled=false): no pod evicted".to_string();
        }
        self.nodes
            .iter()
            .map(|d| {
                let skipped: Vec<String> = d
                    .skipped
                    .iter()
                    .map(|s| format!("{} ({})", s.pod, s.reason))
                    .collect();
                format!(
                    "{}: evicted {}{}",
                    d.node,
                    if d.evicted.is_empty() {
                        "nothing".to_string()
                    } else {
                        d.evicted.join(", ")
                    },
                    if skipped.is_empty() {
                        String::new()
                    } else {
                        format!("; left {}", skipped.join(", "))
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    if !args.enabled {
        let report = Drain {
            enabled: false,
            nodes: Vec::new(),
        };
        output::print(global.output, &report)?;
        return Ok(ExitStatus::Done);
    }
    let client = crate::cluster::client(global).await?;
    let request = Request {
        nodes: args.nodes.targets(),
        release: flags::release_ref(&args.release),
        run_id: args.run.run_id,
        timeout: args.drain_timeout,
        scope: args.drain_scope,
    };
    let evicting = crate::cluster::client_without_retry(global).await?;
    let helm = flags::helm(&args.release, global)?;
    let drained = drain_nodes(&client, &evicting, &helm, &request).await?;
    let report = Drain {
        enabled: true,
        nodes: drained,
    };
    output::print(global.output, &report)?;
    Ok(ExitStatus::Done)
}
