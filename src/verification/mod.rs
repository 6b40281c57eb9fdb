//! Verification pods: the user's pod, checked before anything changes
//! ([`template`]), then run on each node and watched to an end ([`run`]).

pub mod run;
pub mod template;

pub use run::{NodeVerdict, verify_nodes};
pub use template::VerificationPod;

use crate::error::{Classify, ExitStatus};

/// A verification that could not be carried out (not a node failing it).
#[derive(Debug, thiserror::Error)]
pub enum VerificationError {
    /// The pod could not be created or watched.
    #[error("verification pod {pod} on node {node}: {reason}")]
    Run {
        /// The node.
        node: String,
        /// The pod.
        pod: String,
        /// What went wrong.
        reason: String,
    },
}

impl Classify for VerificationError {
    fn status(&self) -> ExitStatus {
        ExitStatus::Failed
    }
}
