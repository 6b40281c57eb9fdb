//! One module per subcommand: each has an `Args` struct (its flags and help)
//! and one `run` function that validates, composes library calls and returns
//! a report. The logic lives in the library modules.

pub mod check_prerequisites;
pub mod complete;
pub mod cordon;
pub mod drain;
pub mod helm_upgrade;
pub mod plan;
pub mod restart_kata_pod;
pub mod rollback;
pub mod select_nodes;
pub mod status;
pub mod uncordon;
pub mod verify;

use crate::cli::{GlobalArgs, ReleaseArgs, RunArgs};
use crate::error::UserError;
use crate::helm::Helm;
use crate::release::ReleaseRef;
use crate::run_record::{Records, RunRecord, RunState};
use crate::versions::{DeploymentMode, ModeChoice};

/// The release named by the flags.
pub(crate) fn release_ref(args: &ReleaseArgs) -> ReleaseRef {
    ReleaseRef {
        name: args.helm_release.clone(),
        namespace: args.helm_namespace.clone(),
    }
}

/// helm, pointed at the cluster klm uses.
pub(crate) fn helm(args: &ReleaseArgs, global: &GlobalArgs) -> Helm {
    Helm::new(args.helm.clone(), global)
}

/// The mode of this step: an explicit choice must agree with the run's.
pub(crate) fn mode_of_run(
    choice: ModeChoice,
    record: &RunRecord,
) -> Result<DeploymentMode, UserError> {
    match choice.explicit() {
        Some(mode) if mode != record.mode => Err(UserError::bad_input(format!(
            "--deployment-mode {mode} differs from run {}'s mode {}",
            record.run_id, record.mode
        ))
        .hint("omit --deployment-mode (auto follows the run) or pass the run's mode")),
        _ => Ok(record.mode),
    }
}

/// The run a mutating step belongs to: the named run or the release's
/// latest; refuses to start work for a run that has already failed.
pub(crate) async fn active_run(
    records: &Records,
    release: &str,
    run: &RunArgs,
) -> anyhow::Result<RunRecord> {
    let record = records.resolve(release, run.run_id.as_deref()).await?;
    if record.state == RunState::Failed {
        return Err(UserError::precondition(format!(
            "run {} has failed ({}); no further wave may start",
            record.run_id,
            record.failure.as_deref().unwrap_or("see its rollback")
        ))
        .hint("inspect `klm status`, fix the cause, then start a new run")
        .into());
    }
    Ok(record)
}

/// Refuses (bad input, nothing changed) a `--target-version` that is not the
/// run's: a step acts only at the version its run upgrades to.
pub(crate) fn ensure_run_target(record: &RunRecord, target: &str) -> Result<(), UserError> {
    let same = match (
        crate::versions::parse(target),
        crate::versions::parse(&record.target_version),
    ) {
        (Ok(given), Ok(recorded)) => given == recorded,
        _ => target == record.target_version,
    };
    if same {
        return Ok(());
    }
    Err(UserError::bad_input(format!(
        "--target-version {target} differs from run {}'s target {}",
        record.run_id, record.target_version
    ))
    .hint(format!(
        "pass --target-version {} (the run's), or start a new run with check-prerequisites",
        record.target_version
    )))
}
