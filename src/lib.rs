//! kata-lifecycle-manager: the library behind `klm`.
//!
//! Modules by concern: [`cluster`] (connecting), [`release`] and [`helm`] (the
//! kata-deploy Helm release), [`versions`] (version rules), [`nodes`]
//! (selection, waves, holding nodes), [`kata_deploy`] (kata-deploy's pods and
//! Jobs on nodes), [`verification`] (verification pods), [`drain`],
//! [`run_record`] (what a run needs to roll back), [`wait`] (watches with
//! deadlines), [`annotations`] (the vocabulary on nodes), [`output`] and
//! [`error`], [`args`] (the flags steps share) and [`step`] (what a step
//! resolves from them: the release, helm, the run, its nodes). `commands` composes
//! them, one module per subcommand, and [`cli`] lists the subcommands;
//! [`exit`] turns a step's error into the process's exit code and message.

pub mod annotations;
pub mod args;
pub mod cli;
pub mod close_run;
pub mod cluster;
pub mod commands;
pub mod complete;
pub mod drain;
pub mod error;
pub mod exit;
pub mod helm;
pub mod kata_deploy;
pub mod nodes;
pub mod output;
pub mod preflight;
pub mod release;
pub mod restart;
pub mod rollback;
pub mod run_record;
pub mod run_values;
pub mod step;
pub mod upgrade;
pub mod values;
pub mod verification;
pub mod versions;
pub mod wait;

use cli::{Cli, Command};
use error::ExitStatus;

/// Runs one subcommand and returns its exit status.
pub async fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let global = &cli.global;
    match cli.command {
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
        Command::CloseRun(args) => commands::close_run::run(args, global).await,
    }
}
