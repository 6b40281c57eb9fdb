//! `klm verify`: run the user's verification pod on each node.

use clap::Args as ClapArgs;

use crate::cli::{NodesArgs, RunArgs, VerificationArgs};

/// Flags of `klm verify`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Nodes are verified concurrently; a pod that cannot be pulled, crashes or cannot be scheduled\nfails within seconds, with its status, events and logs.\n\nExamples:\n  klm verify --nodes worker-1 --verification-pod verify.yaml\n  klm verify --nodes worker-1,worker-2 --verification-pod-base64 \"$(base64 -w0 verify.yaml)\" -o json"
)]
pub struct Args {
    /// The nodes.
    #[command(flatten)]
    pub nodes: NodesArgs,

    /// The verification pod.
    #[command(flatten)]
    pub verification: VerificationArgs,

    /// Which run (labels the pods it creates).
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs the step.
pub async fn run(
    _args: Args,
    _global: &crate::cli::GlobalArgs,
) -> anyhow::Result<crate::error::ExitStatus> {
    Err(crate::error::UserError::failed("PLACEHOLDER: not written yet").into())
}
