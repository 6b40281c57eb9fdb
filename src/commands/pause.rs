//! `klm pause`, `klm resume`, `klm abort`: a person acting on a running
//! `klm upgrade` (a workflow's run: with Argo, as klm says).

use clap::Args as ClapArgs;

use super::flags;
use crate::args::{GlobalArgs, ReleaseArgs, RunArgs};
use crate::error::ExitStatus;
use crate::steps::pause::{self, Action};

/// Flags of `klm pause`, `klm resume` and `klm abort`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "klm upgrade watches its run record: paused, it starts no new wave (the wave under way finishes)\nuntil resumed; aborted, it ends as the workflow's exit handler ends a run: what is in flight is\nrolled back, held nodes are released, the run is closed. klm status shows who did it and when.\nA run of the WorkflowTemplate is paused, resumed and stopped with Argo (argo suspend, resume, stop).\n\nExamples:\n  klm pause\n  klm resume --run-id klm-1764670000\n  klm abort --helm-namespace kube-system"
)]
pub struct Args {
    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which run (default: the release's latest).
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs the command.
pub async fn run(args: Args, action: Action, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let client = crate::cluster::client(global).await?;
    let by = std::env::var("USER").unwrap_or_else(|_| format!("klm {action:?}").to_lowercase());
    let said = pause::act(
        &client,
        &flags::release_ref(&args.release),
        args.run.run_id.as_deref(),
        action,
        &by,
    )
    .await?;
    crate::output::print(global.output, &Acted { message: said })?;
    Ok(ExitStatus::Done)
}

/// What the command reports.
#[derive(Debug, serde::Serialize)]
struct Acted {
    message: String,
}

impl crate::output::Report for Acted {
    fn text(&self) -> String {
        self.message.clone()
    }
}
