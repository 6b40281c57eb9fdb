//! `klm settle`: end one wave. The workflow's last step of every wave: it
//! completes the wave's verified nodes when the wave's upgrade succeeded, or
//! rolls back the nodes the run touched and fails, so no later wave starts
//! (within the run's failure budget, `--max-failed-nodes`: completes the
//! verified nodes, rolls back the failed ones, and succeeds).

use clap::Args as ClapArgs;

use super::flags;
use crate::args::{GlobalArgs, RecycleArgs, ReleaseArgs, RollbackArgs, RunArgs};
use crate::error::ExitStatus;
use crate::output;
use crate::steps::settle::{Counts, Request, Settled, settle};

/// The Argo status of a wave's upgrade that lets the wave complete.
pub const SUCCEEDED: &str = "Succeeded";

/// Flags of `klm settle`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "With --upgrade-status Succeeded: `klm complete` of the wave's nodes at the run's target.\nWith any other status: `klm rollback` of the wave's nodes that the run touched (none when the wave\nwas refused before it changed anything), then exit 1: the wave failed. Under the run's failure\nbudget (select-nodes --max-failed-nodes), while its failures fit: the wave's verified nodes are\ncompleted, its failed ones rolled back, the release readied for the next wave, and exit 0.\nWith --recycle-old-sandboxes: the completed nodes' old Kata pods are evicted (best effort).\n\nExamples:\n  klm settle --wave 2 --upgrade-status Succeeded --run-id upgrade-1\n  klm settle --wave 2 --upgrade-status Failed --run-id upgrade-1 --verification-pod verify.yaml"
)]
pub struct Args {
    /// The wave (from 1) of the run's recorded plan.
    #[arg(long, value_name = "K", value_parser = crate::args::parse_wave, allow_negative_numbers = true)]
    pub wave: u32,

    /// How the wave's upgrade ended: Argo's `{{steps.upgrade.status}}`
    /// (Succeeded, Failed, Error, ...; any case).
    #[arg(long, value_name = "STATUS", value_parser = crate::args::parse_argo_status)]
    pub upgrade_status: String,

    /// Also write how many nodes the wave completed, rolled back and left
    /// failed, one number per file (`completed`, `rolled-back`, `failed`) in
    /// this directory: the workflow's node counters read them.
    #[arg(long, value_name = "DIR")]
    pub counts_dir: Option<std::path::PathBuf>,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which run.
    #[command(flatten)]
    pub run: RunArgs,

    /// How nodes are rolled back (and verified again).
    #[command(flatten)]
    pub rollback: RollbackArgs,

    /// Recycling the completed nodes' Kata pods still on the runtime they started with.
    #[command(flatten)]
    pub recycle: RecycleArgs,
}

/// Writes the counts where `--counts-dir` says (nowhere without it), one
/// number per file.
fn write_counts(counts: Counts, dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    let Some(dir) = dir else {
        return Ok(());
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("creating --counts-dir {}: {e}", dir.display()))?;
    for (name, count) in [
        ("completed", counts.completed),
        ("rolled-back", counts.rolled_back),
        ("failed", counts.failed),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, count.to_string())
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let status = args.upgrade_status;
    let rollback = flags::rollback_settings(&args.rollback)?;
    let client = crate::cluster::client(global).await?;
    let request = Request {
        release: flags::release_ref(&args.release),
        run_id: args.run.run_id.clone(),
        wave: args.wave,
        failure: (status != SUCCEEDED)
            .then(|| format!("ended {status} in upgrade or verification")),
        rollback,
    };
    let helm = flags::helm(&args.release, global)?;
    let settled = settle(&client, &helm, &request).await?;
    write_counts(settled.counts(), args.counts_dir.as_deref())?;
    if let Some(how) = args.recycle.asked()
        && let Some(run_id) = settled.run_id()
    {
        let evicting = crate::cluster::client_without_retry(global).await?;
        let completed = settled.completed_nodes();
        crate::sandboxes::recycle(
            &client,
            &evicting,
            &helm,
            &request.release,
            run_id,
            &completed,
            &how,
        )
        .await;
    }
    match &settled {
        Settled::Completed(report) => output::print(global.output, report)?,
        Settled::RolledBack { report, .. } => output::print(global.output, report)?,
        Settled::Untouched { .. } => {}
        Settled::WithinBudget {
            completed,
            rolled_back,
            ..
        } => {
            if let Some(report) = completed {
                output::print(global.output, report)?;
            }
            if let Some(report) = rolled_back {
                output::print(global.output, report)?;
            }
            if let Some(sentence) = settled.within_budget() {
                tracing::warn!("{sentence}");
            }
        }
    }
    settled.outcome()?;
    Ok(ExitStatus::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_one_number_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let counts = Counts {
            completed: 0,
            rolled_back: 2,
            failed: 1,
        };
        write_counts(counts, Some(&dir.path().join("settled"))).unwrap();
        let read =
            |name: &str| std::fs::read_to_string(dir.path().join("settled").join(name)).unwrap();
        assert_eq!(
            (read("completed"), read("rolled-back"), read("failed")),
            ("0".into(), "2".into(), "1".into())
        );
        assert!(write_counts(counts, None).is_ok());
    }
}
