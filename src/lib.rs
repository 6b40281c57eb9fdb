//! kata-lifecycle-manager: the library behind `klm`.
//!
//! From the top down (a module uses only those below it):
//!
//! * [`cli`] lists the subcommands; [`exit`] turns a step's error into the
//!   process's exit code and message (both used by `main.rs` only).
//! * `commands`: one short module per subcommand, which parses its flags and
//!   calls the library; no command imports another.
//! * [`upgrade_run`]: `klm upgrade`, the steps composed into one run in one
//!   process, with its events, progress view and signal handling.
//! * [`steps`]: one module per workflow step, named as its subcommand:
//!   [`steps::check_prerequisites`] (the checks before a run),
//!   [`steps::select_nodes`] (which nodes, in which waves),
//!   [`steps::cordon`] (a wave's nodes held), [`steps::helm_upgrade`] (the
//!   release's helm upgrade), [`steps::restart_kata_pod`] (kata-deploy back
//!   on nodes), [`steps::verify`] (their verification), [`steps::rollback`],
//!   [`steps::complete`], [`steps::settle`] (ending a wave), [`steps::gate`]
//!   (what a held wave waits for: a gate's soak and approval, the window),
//!   [`steps::close_run`] (ending a run), [`steps::plan`] (what a run would
//!   do) and [`steps::status`] (the fleet as `klm status` shows and watches
//!   it). Beside them: [`run_values`] (the values a run sets on kata-deploy),
//!   [`mod@run`] (a step's run: its record, the door to change it, and the
//!   flags that must agree with it) and [`runs`] (the runs a release has, for a step asked
//!   for one it does not).
//! * Modules by concern: [`cluster`] (connecting), [`release`] and [`helm`]
//!   (the kata-deploy Helm release), [`versions`] (version rules),
//!   [`nodes`] (selection, waves, holding nodes), [`schedule`] (gates
//!   between waves, maintenance windows), [`kata_deploy`]
//!   (kata-deploy's pods and Jobs on nodes), [`verification`] (verification
//!   pods), [`sandboxes`] (Kata pods still on an old runtime), [`prometheus`] (a metric gate's queries), [`drain`], [`run_record`] (what a run needs to roll back),
//!   [`wait`] (watches with deadlines), [`events`] (Kubernetes Events on
//!   the nodes steps act on), [`annotations`] (the vocabulary on nodes), [`values`] (Helm values by dotted key), [`output`] (reports, and commands as people paste them).
//! * [`args`], the flags steps share, stands above the concerns whose types
//!   its flags become (no concern imports a flag: [`nodes`], [`schedule`],
//!   [`drain`], [`sandboxes`], [`output`]); only [`cluster`] and
//!   [`verification`] read a flag group of their own. At the bottom,
//!   [`error`] (exit statuses and the shared error types; it imports nothing
//!   from the crate).

pub mod annotations;
pub mod args;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod dispatch;
pub mod drain;
pub mod error;
pub mod events;
pub mod exit;
pub mod helm;
pub mod kata_deploy;
pub mod nodes;
pub mod output;
pub mod prometheus;
pub mod release;
pub mod run;
pub mod run_record;
pub mod run_values;
pub mod runs;
pub mod sandboxes;
pub mod schedule;
pub mod steps;
pub mod upgrade_run;
pub mod values;
pub mod verification;
pub mod versions;
pub mod wait;

use cli::{Cli, Command};
use error::ExitStatus;
use steps::pause::Action;

/// Runs one subcommand and returns its exit status.
pub async fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let global = &cli.global;
    match cli.command {
        Command::Upgrade(args) => commands::upgrade::run(args, global).await,
        Command::CheckPrerequisites(args) => commands::check_prerequisites::run(args, global).await,
        Command::SelectNodes(args) => commands::select_nodes::run(args, global).await,
        Command::Cordon(args) => commands::cordon::run(args, global).await,
        Command::Uncordon(args) => commands::uncordon::run(args, global).await,
        Command::Drain(args) => commands::drain::run(args, global).await,
        Command::HelmUpgrade(args) => commands::helm_upgrade::run(args, global).await,
        Command::RestartKataPod(args) => commands::restart_kata_pod::run(args, global).await,
        Command::Verify(args) => commands::verify::run(args, global).await,
        Command::Rollback(args) => commands::rollback::run(args, global).await,
        Command::Complete(args) => commands::complete::run(args, global).await,
        Command::Status(args) => commands::status::run(args, global).await,
        Command::Plan(args) => commands::plan::run(args, global).await,
        Command::Settle(args) => commands::settle::run(args, global).await,
        Command::Gate(args) => commands::gate::run(args, global).await,
        Command::Approve(args) => commands::approve::run(args, global).await,
        Command::Pause(args) => commands::pause::run(args, Action::Pause, global).await,
        Command::Resume(args) => commands::pause::run(args, Action::Resume, global).await,
        Command::Abort(args) => commands::pause::run(args, Action::Abort, global).await,
        Command::CloseRun(args) => commands::close_run::run(args, global).await,
        Command::Completion(args) => {
            commands::completion::run(&args, <Cli as clap::CommandFactory>::command())
        }
    }
}
