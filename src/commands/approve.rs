//! `klm approve`: let a run held at a gate for approval go on (a run of
//! `klm upgrade`; a workflow's run is resumed with `argo resume`).

use clap::Args as ClapArgs;

use super::flags;
use crate::args::{GlobalArgs, ReleaseArgs, RunArgs};
use crate::error::ExitStatus;

/// Flags of `klm approve`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "The run must be waiting for an approval (klm status shows it); klm upgrade then goes on with\nthe next wave. A run of the WorkflowTemplate is resumed with the `argo resume` that klm status names.\n\nExamples:\n  klm approve\n  klm approve --run-id klm-1764670000 --helm-namespace kube-system"
)]
pub struct Args {
    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which run (default: the release's latest).
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let client = crate::cluster::client(global).await?;
    let by = std::env::var("USER").unwrap_or_else(|_| "klm approve".to_string());
    let approved = crate::steps::gate::approve(
        &client,
        &flags::release_ref(&args.release),
        args.run.run_id.as_deref(),
        &by,
    )
    .await?;
    tracing::info!("{approved}");
    crate::output::print(global.output, &Approved { message: approved })?;
    Ok(ExitStatus::Done)
}

/// What `klm approve` reports.
#[derive(Debug, serde::Serialize)]
struct Approved {
    message: String,
}

impl crate::output::Report for Approved {
    fn text(&self) -> String {
        self.message.clone()
    }
}
