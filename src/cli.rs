//! The command line: the top-level parser ([`Cli`]) and the subcommand list
//! ([`Command`]). The flags several steps share live in [`crate::args`];
//! each subcommand's own flags live in its module under `commands/`.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::args::GlobalArgs;
use crate::commands;

const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  the operation ran and failed (a node failed verification, a timeout)
  2  bad input; nothing was changed
  3  a precondition is not met; nothing was changed";

/// Safe, verified, node-by-node upgrades of Kata Containers installed by kata-deploy.
///
/// Each subcommand is one step of an upgrade. Argo Workflows steps call them
/// (see the kata-lifecycle-manager chart); operators run them by hand, or as
/// `kubectl klm ...`.
#[derive(Debug, Parser)]
#[command(name = "klm", version, about, long_about, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    /// Flags every subcommand accepts.
    #[command(flatten)]
    pub global: GlobalArgs,

    /// The step to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The steps of an upgrade.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole upgrade in one process (the workflow's steps, without Argo), showing progress.
    Upgrade(commands::upgrade::Args),
    /// Check that an upgrade can start, and record what rollback will need.
    CheckPrerequisites(commands::check_prerequisites::Args),
    /// Select the nodes to upgrade and split them into waves.
    SelectNodes(commands::select_nodes::Args),
    /// Mark nodes unschedulable and hold them for this run.
    Cordon(commands::cordon::Args),
    /// Mark nodes schedulable again (never one that was unschedulable before the run).
    Uncordon(commands::uncordon::Args),
    /// Evict the pods of nodes through the Eviction API.
    Drain(commands::drain::Args),
    /// Upgrade the kata-deploy release to the run's target (before the waves in daemonset mode, per wave in job mode).
    HelmUpgrade(commands::helm_upgrade::Args),
    /// Install the run's version on nodes (daemonset mode: a new kata-deploy pod; job mode: a scoped upgrade) and wait for it.
    RestartKataPod(commands::restart_kata_pod::Args),
    /// Run the verification pod on each node and report which passed.
    Verify(commands::verify::Args),
    /// Return nodes to the version recorded before the run.
    Rollback(commands::rollback::Args),
    /// Before a held wave: pass its gate (soak, verification again, approval) and window, or say what it waits for.
    Gate(commands::gate::Args),
    /// Approve a run of klm upgrade held at a gate (a workflow is resumed with argo resume).
    Approve(commands::approve::Args),
    /// Pause a run of klm upgrade: no new wave starts until klm resume (a workflow: argo suspend).
    Pause(commands::pause::Args),
    /// Let a paused run of klm upgrade go on.
    Resume(commands::pause::Args),
    /// End a run of klm upgrade as the exit handler would: roll back what is in flight, release the rest.
    Abort(commands::pause::Args),
    /// Mark verified nodes completed and return them to service.
    Complete(commands::complete::Args),
    /// Show the upgrade state of nodes.
    Status(commands::status::Args),
    /// Show what an upgrade would do, changing nothing.
    Plan(commands::plan::Args),
    /// End a wave: complete its verified nodes, or roll it back and fail.
    Settle(commands::settle::Args),
    /// End a run however it ended: roll back nodes caught mid-upgrade, release the rest, close the record.
    CloseRun(commands::close_run::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(commands::completion::Args),
}

impl Cli {
    /// Parses the command line (exiting with clap's message on bad flags)
    /// and names the subcommand in the connection flags, so every API
    /// request says which step of klm made it.
    pub fn parse_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Cli {
        let matches = Cli::command().get_matches_from(args);
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
        cli.global.client.step = matches.subcommand_name().map(String::from);
        cli
    }
}

impl Command {
    /// Whether the command draws live progress on the terminal (its logs
    /// then default to warnings, so as not to tear the drawing).
    pub fn draws_live(&self, global: &GlobalArgs) -> bool {
        matches!(self, Command::Upgrade(args) if args.draws_live(global))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn wave_policy_flags_parse_as_the_workflow_passes_them() {
        let cli = Cli::try_parse_from([
            "klm",
            "select-nodes",
            "--batch-size=10%",
            "--batch-growth=exponential",
            "--max-batch-size=50",
            "--canary-size=1",
            "--pool-label=pool",
            "--pool-order=gpu,cpu",
            "--max-unavailable=20%",
            "--include-unavailable=false",
        ])
        .unwrap();
        let Command::SelectNodes(args) = cli.command else {
            panic!("select-nodes")
        };
        let policy = args.waves.policy();
        assert_eq!(policy.batch, crate::nodes::waves::BatchSize::Percent(10));
        assert_eq!(
            policy.max_unavailable,
            Some(crate::nodes::waves::BatchSize::Percent(20))
        );
        assert_eq!(policy.pool_order, ["gpu", "cpu"]);
        assert!(!policy.include_unavailable);
        let cli = Cli::try_parse_from([
            "klm",
            "plan",
            "--target-version",
            "3.28.0",
            "--include-unavailable",
        ])
        .unwrap();
        let Command::Plan(args) = cli.command else {
            panic!("plan")
        };
        assert!(args.waves.policy().include_unavailable);
        assert_eq!(args.waves.policy().max_unavailable, None);
    }
}
