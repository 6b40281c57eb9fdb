//! `klm gate`: before a held wave, pass what can be passed of its gate and
//! window now, and say what the wave waits for next. The workflow's hold
//! step: it waits (a suspend step) and calls `klm gate` again, until the
//! wave may start.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;

use super::flags;
use crate::args::{GlobalArgs, ReleaseArgs, RollbackArgs, RunArgs};
use crate::error::{ExitStatus, UserError};
use crate::output;
use crate::run_record::Waiting;
use crate::steps::gate::{self, Approver, Request};

/// Flags of `klm gate`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "What the wave waits for next is printed, and with --outputs-dir written to two files there:\n`wait` (none, soak, approval or window) and `seconds` (how long a soak or a window still takes).\nA soak that has ended verifies the gate's nodes again; those that fail are rolled back and the\nrun fails (exit 1). Then the run's metric query (select-nodes --gate-query) is asked over the\nsoak's samples: unhealthy, the gate's nodes are rolled back and the run fails; Prometheus not\nanswering, the run fails and nothing is rolled back. An approval wait ends with `argo resume` (the workflow), or `klm approve`\n(klm upgrade).\n\nExamples:\n  klm gate --wave 2 --run-id upgrade-1 --verification-pod verify.yaml\n  klm gate --wave 2 --run-id upgrade-1 --resumed-from approval"
)]
pub struct Args {
    /// The wave (from 1) about to start.
    #[arg(long, value_name = "K", value_parser = crate::args::parse_wave, allow_negative_numbers = true)]
    pub wave: u32,

    /// What the wave waited for before this call (empty: nothing yet); after
    /// `approval`, the wait's end is the approval.
    #[arg(long, value_name = "WAIT", default_value = "", value_parser = parse_waited)]
    pub resumed_from: Waited,

    /// The command that approves the run, for people (the workflow: its `argo resume`).
    #[arg(long, value_name = "COMMAND")]
    pub approve_with: Option<String>,

    /// Write `wait` and `seconds` to this directory (the workflow's outputs).
    #[arg(long, value_name = "DIR")]
    pub outputs_dir: Option<PathBuf>,

    /// Which release.
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which run.
    #[command(flatten)]
    pub run: RunArgs,

    /// How nodes are rolled back (and verified again).
    #[command(flatten)]
    pub rollback: RollbackArgs,

    /// How to reach the Prometheus of the run's metric query.
    #[command(flatten)]
    pub prometheus: crate::args::PrometheusArgs,
}

/// `--resumed-from`: what the wave waited for (None: nothing yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waited(pub Option<Waiting>);

fn parse_waited(raw: &str) -> Result<Waited, String> {
    match raw.trim() {
        "" | "none" => Ok(Waited(None)),
        "soak" => Ok(Waited(Some(Waiting::Soak))),
        "approval" => Ok(Waited(Some(Waiting::Approval))),
        "window" => Ok(Waited(Some(Waiting::Window))),
        other => Err(format!(
            "{other:?} is not a wait: soak, approval, window (or empty)"
        )),
    }
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let Some(run_id) = args.run.run_id.clone() else {
        return Err(
            UserError::bad_input("klm gate passes a run's gate, and no run was named")
                .hint("pass --run-id (the workflow passes its name)")
                .into(),
        );
    };
    let rollback = flags::rollback_settings(&args.rollback)?;
    let client = crate::cluster::client(global).await?;
    let request = Request {
        release: flags::release_ref(&args.release),
        run_id,
        wave: args.wave,
        resumed_from: args.resumed_from.0,
        approver: match args.approve_with.filter(|c| !c.trim().is_empty()) {
            Some(command) => Approver::Argo { command },
            None => Approver::Klm,
        },
        rollback,
        prometheus: args.prometheus.credentials(),
        now: jiff::Timestamp::now(),
    };
    let passage = gate::pass(&client, &flags::helm(&args.release, global)?, &request).await?;
    if let Some(dir) = &args.outputs_dir {
        let (wait, seconds) = passage.wait.step_outputs(request.now);
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating --outputs-dir {}", dir.display()))?;
        for (name, value) in [("wait", wait.to_string()), ("seconds", seconds.to_string())] {
            let path = dir.join(name);
            std::fs::write(&path, value).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    output::print(global.output, &passage)?;
    Ok(ExitStatus::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waits_parse_as_the_workflow_passes_them() {
        assert_eq!(parse_waited("").unwrap(), Waited(None));
        assert_eq!(parse_waited("none").unwrap(), Waited(None));
        assert_eq!(
            parse_waited("approval").unwrap(),
            Waited(Some(Waiting::Approval))
        );
        assert_eq!(
            parse_waited("window").unwrap(),
            Waited(Some(Waiting::Window))
        );
        assert!(parse_waited("later").unwrap_err().contains("not a wait"));
    }
}
