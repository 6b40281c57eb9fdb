//! One module per subcommand: each has an `Args` struct (its flags and help)
//! and one `run` function that validates, composes library calls and returns
//! a report. The logic lives in the library modules.

pub mod check_prerequisites;
pub mod close_run;
pub mod complete;
pub mod cordon;
pub mod drain;
pub mod helm_upgrade;
pub mod plan;
pub mod restart_kata_pod;
pub mod rollback;
pub mod select_nodes;
pub mod settle;
pub mod status;
pub mod uncordon;
pub mod verify;

use crate::args::{GlobalArgs, NodesArgs, ReleaseArgs, RunArgs};
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
    if matches!(record.state, RunState::Failed | RunState::Interrupted) {
        let how = if record.state == RunState::Failed {
            "failed"
        } else {
            "was interrupted"
        };
        return Err(UserError::precondition(format!(
            "run {} {how} ({}); no further wave may start",
            record.run_id,
            record.failure.as_deref().unwrap_or("see its rollback")
        ))
        .hint("inspect `klm status`, fix the cause, then start a new run")
        .into());
    }
    Ok(record)
}

/// The nodes a step acts on: those named with `--nodes`, or wave `--wave K`
/// of the plan that `select-nodes --run-id` recorded for the run.
pub(crate) async fn step_nodes(
    client: &kube::Client,
    release: &ReleaseArgs,
    run: &RunArgs,
    nodes: &NodesArgs,
) -> anyhow::Result<Vec<String>> {
    let Some(index) = nodes.wave else {
        return Ok(nodes.names());
    };
    let record = Records::new(client, &release.helm_namespace)
        .resolve(&release.helm_release, run.run_id.as_deref())
        .await?;
    Ok(wave_of(&record, index)?.to_vec())
}

/// Wave `index` of the run's recorded plan.
pub(crate) fn wave_of(record: &RunRecord, index: u32) -> Result<&[String], UserError> {
    if record.waves.as_ref().is_none_or(|w| w.is_empty()) {
        return Err(UserError::precondition(format!(
            "run {} has no recorded plan, so it has no wave {index}",
            record.run_id
        ))
        .hint(format!(
            "run `klm select-nodes --run-id {}` first (it records the waves), or pass --nodes",
            record.run_id
        )));
    }
    record.wave(index).ok_or_else(|| {
        UserError::bad_input(format!(
            "run {} has {} wave(s), not a wave {index}",
            record.run_id,
            record.waves.as_ref().map_or(0, Vec::len)
        ))
        .hint("pass a wave index from 1 to the number of waves select-nodes planned")
    })
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
