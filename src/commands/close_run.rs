//! `klm close-run`: end a run however it ended (the workflow's exit handler,
//! or by hand after `argo terminate`): close its record, release the nodes
//! it held safely, roll back those caught mid-upgrade (see
//! [`crate::steps::close_run`] for the rules).

use clap::Args as ClapArgs;

use super::flags;
use crate::args::{GlobalArgs, ReleaseArgs, RollbackArgs, RunArgs, SelectionArgs};
use crate::error::{ExitStatus, UserError};
use crate::output;
use crate::steps::close_run::{self, Request};
use crate::steps::status;

/// Flags of `klm close-run`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "The workflow's exit handler runs it with --workflow-status and --failures. After\n`argo terminate` (which runs no exit handler) run it by hand, or submit the workflow\ntemplate's close-run entrypoint with -p run-id=<workflow>.\n\nExamples:\n  klm close-run --run-id upgrade-1 --workflow-status Failed --verification-pod verify.yaml\n  klm close-run --run-id upgrade-1 --reason \"terminated by hand\" --verification-pod verify.yaml"
)]
pub struct Args {
    /// How the workflow ended (Argo's `{{workflow.status}}`, any case); any
    /// status but Succeeded closes a running record. Default: the run was
    /// interrupted.
    #[arg(long, value_name = "STATUS", value_parser = crate::args::parse_optional_argo_status)]
    pub workflow_status: Option<String>,

    /// Argo's `{{workflow.failures}}` (a JSON list of the failed steps), for the record's reason.
    #[arg(long, value_name = "JSON")]
    pub failures: Option<String>,

    /// Why the run ended (overrides the reason built from --failures).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which run (required).
    #[command(flatten)]
    pub run: RunArgs,

    /// How nodes are rolled back (and verified again).
    #[command(flatten)]
    pub rollback: RollbackArgs,

    /// Then show the run's nodes as `klm status` does (the selection
    /// flags pick them), however the closing went: the workflow's last word.
    #[arg(long)]
    pub summary: bool,

    /// With --summary: which nodes (default: those that run kata-deploy or carry klm's annotations).
    #[command(flatten)]
    pub selection: SelectionArgs,
}

/// A flag's value, trimmed; None when it is empty.
fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let Some(run_id) = args.run.run_id.clone().filter(|r| !r.trim().is_empty()) else {
        return Err(
            UserError::bad_input("close-run needs the run: --run-id is missing")
                .hint("pass --run-id <workflow name> (the run's id; see `klm status`)")
                .into(),
        );
    };
    let client = crate::cluster::client(global).await?;
    let request = Request {
        release: flags::release_ref(&args.release),
        run_id,
        workflow_status: non_empty(&args.workflow_status),
        failures: non_empty(&args.failures),
        reason: args.reason,
    };
    let settings = flags::rollback_settings(&args.rollback)?;
    let criteria = args
        .summary
        .then(|| flags::criteria(&args.selection))
        .transpose()?;
    let helm = flags::helm(&args.release, global)?;
    let ended = close_run::end_run(&client, &helm, &request, &settings).await;
    if let Ok(ended) = &ended {
        output::print(global.output, &ended.closed)?;
        if let Some(report) = &ended.rolled_back {
            output::print(global.output, report)?;
        }
    }
    if let Some(criteria) = criteria {
        let run_id = Some(request.run_id.as_str());
        match status::snapshot_of_run(&client, &helm, &request.release, &criteria, run_id).await {
            Ok(fleet) => output::print(global.output, &fleet.status(&criteria))?,
            // The summary never hides how the closing went.
            Err(err) => tracing::warn!(error = %crate::error::describe(&err), "no summary"),
        }
    }
    ended?.outcome()?;
    Ok(ExitStatus::Done)
}
