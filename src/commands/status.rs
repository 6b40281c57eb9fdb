//! `klm status`: the upgrade state of nodes, and of the release's run; with
//! `--watch`, kept current as they change.

use std::io::IsTerminal;

use clap::Args as ClapArgs;
use kube::ResourceExt;

use super::flags;
use crate::args::{GlobalArgs, ReleaseArgs, RunArgs, SelectionArgs};
use crate::error::{ExitStatus, UserError};
use crate::output;
use crate::output::OutputFormat;
use crate::steps::status::{self, Status};

/// Flags of `klm status`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "With --watch, the table is drawn again whenever a node, kata-deploy pod or the run record\nchanges (from watches, not polling), until Ctrl-C; with -o json, one JSON document per line.\n\nExamples:\n  klm status\n  klm status --watch\n  klm status --node-selector node-pool=kata -o json\n  klm status --run-id upgrade-1 --fail-if-run-failed   # exit 3 once the run failed or was interrupted"
)]
pub struct Args {
    /// Exit 3 if the run has failed or was interrupted (a guard for scripts).
    #[arg(long, requires = "run_id", conflicts_with = "watch")]
    pub fail_if_run_failed: bool,

    /// Keep the table current as nodes, kata-deploy pods and the run change, until Ctrl-C.
    #[arg(long, short = 'w')]
    pub watch: bool,

    /// Also list, per verified node, the Kata pods (of the release's
    /// RuntimeClasses) that started before the node was verified at its
    /// version: they still run the runtime they started with.
    #[arg(long, conflicts_with = "watch")]
    pub sandboxes: bool,

    /// Which nodes (default: the nodes that run kata-deploy or carry klm's annotations).
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which run.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let criteria = flags::criteria(&args.selection)?;
    let client = crate::cluster::client(global).await?;
    let helm = flags::helm(&args.release, global)?;
    let release = flags::release_ref(&args.release);
    if args.watch {
        let redraw = global.output == OutputFormat::Text && std::io::stdout().is_terminal();
        let watching = status::watch(
            &client,
            &helm,
            &release,
            &criteria,
            args.run.run_id.as_deref(),
            |status| show(global.output, redraw, status).is_ok(),
        );
        tokio::select! {
            watched = watching => watched?,
            _ = tokio::signal::ctrl_c() => {}
        }
        return Ok(ExitStatus::Done);
    }
    let fleet = status::snapshot_of_run(
        &client,
        &helm,
        &release,
        &criteria,
        args.run.run_id.as_deref(),
    )
    .await?;
    let mut report = fleet.status(&criteria);
    if args.sandboxes {
        let shown: Vec<_> = fleet
            .nodes
            .iter()
            .filter(|n| report.nodes.iter().any(|row| row.name == n.name_any()))
            .cloned()
            .collect();
        report.sandboxes =
            Some(crate::sandboxes::old_sandboxes(&client, &helm, &release, &shown).await?);
    }
    output::print(global.output, &report)?;
    if args.fail_if_run_failed && status::run_failed(&report) {
        let failure = report
            .run
            .as_ref()
            .and_then(|r| r.failure.clone())
            .unwrap_or_default();
        return Err(UserError::precondition(format!(
            "the run has failed ({failure}); no further wave may start"
        ))
        .hint("see `klm status` for the nodes it rolled back")
        .into());
    }
    Ok(ExitStatus::Done)
}

/// Shows one state of a watched fleet: on a terminal the screen is cleared
/// first; otherwise each state follows the last (JSON: one per line).
fn show(format: OutputFormat, redraw: bool, status: &Status) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => output::print_line(status),
        OutputFormat::Text if redraw => {
            console::Term::stdout().clear_screen()?;
            output::print(format, status)
        }
        OutputFormat::Text => {
            output::print_line(&format!("--- {}", crate::run_record::now()))?;
            output::print(format, status)
        }
    }
}
