//! `klm verify`: run the user's verification pod on each node.

use clap::Args as ClapArgs;

use super::flags;
use crate::args::{GlobalArgs, NodesArgs, ReleaseArgs, RunArgs, VerificationArgs};
use crate::error::{ExitStatus, UserError};
use crate::output;
use crate::steps::verify::{Request, verify};
use crate::verification::Pods;

/// Flags of `klm verify`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Nodes are verified concurrently; a pod that cannot be pulled, crashes or cannot be scheduled\nfails within seconds, with its status, events and logs. The pods are deleted afterwards\n(a failed one is kept with --keep-failed). Nodes that pass are recorded as verified in the run.\n\nExamples:\n  klm verify --nodes worker-1 --verification-pod verify.yaml\n  klm verify --nodes worker-1,worker-2 --verification-pod-base64 \"$(base64 -w0 verify.yaml)\" -o json"
)]
pub struct Args {
    /// The nodes.
    #[command(flatten)]
    pub nodes: NodesArgs,

    /// The label whose values are the pools, to pick each node's pool pod
    /// (default: the run's, as check-prerequisites recorded it).
    #[arg(long, value_name = "LABEL")]
    pub pool_label: Option<String>,

    /// The verification pod.
    #[command(flatten)]
    pub verification: VerificationArgs,

    /// Which release (its run record notes the verified nodes).
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which run (labels the pods it creates).
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let pods = Pods::from_args(&args.verification)?;
    if pods.is_empty() {
        return Err(UserError::bad_input("no verification pod given")
            .hint("pass --verification-pod FILE or --verification-pod-base64 (or KLM_VERIFICATION_POD_BASE64)")
            .into());
    }
    let client = crate::cluster::client(global).await?;
    let request = Request {
        nodes: args.nodes.targets(),
        pods,
        pool_label: crate::args::pool_label(args.pool_label.as_deref()).map(String::from),
        release: flags::release_ref(&args.release),
        run_id: args.run.run_id,
        timeout: args.verification.verification_timeout,
        keep_failed: args.verification.keep_failed,
    };
    let report = verify(&client, &request).await?;
    output::print(global.output, &report)?;
    Ok(if report.all_passed() {
        ExitStatus::Done
    } else {
        ExitStatus::Failed
    })
}
