//! `klm select-nodes`: which nodes, in which waves.

use std::path::PathBuf;

use clap::Args as ClapArgs;

use crate::cli::{ReleaseArgs, SelectionArgs};

/// Flags of `klm select-nodes`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Without a selector, the nodes that run kata-deploy are selected.\n\nExamples:\n  klm select-nodes --batch-size 2\n  klm select-nodes --node-selector node-pool=kata --node-taint-key maintenance -o json\n  klm select-nodes --skip-completed 3.28.0 --waves-file /tmp/waves.json"
)]
pub struct Args {
    /// How nodes are selected.
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Nodes per wave (1 = strict node by node).
    #[arg(long, default_value = "1", value_name = "N")]
    pub batch_size: String,

    /// Order nodes by this label first (pool order), then by name.
    #[arg(long, value_name = "LABEL")]
    pub pool_label: Option<String>,

    /// Skip nodes already completed at this version (to resume a run).
    #[arg(long, value_name = "VERSION")]
    pub skip_completed: Option<String>,

    /// Also write the waves as a JSON list to this file (for Argo's withParam).
    #[arg(long, value_name = "PATH")]
    pub waves_file: Option<PathBuf>,

    /// Which release (to find the nodes that run kata-deploy).
    #[command(flatten)]
    pub release: ReleaseArgs,
}

/// Runs the step.
pub async fn run(
    _args: Args,
    _global: &crate::cli::GlobalArgs,
) -> anyhow::Result<crate::error::ExitStatus> {
    Err(crate::error::UserError::failed("PLACEHOLDER: not written yet").into())
}
