//! Verification pods: the user's pod, checked before anything changes
//! ([`template`]), one per pool where pools are verified their own way
//! ([`pods`]), then run on each node and watched to an end ([`run`]);
//! [`crate::steps::verify`] is `klm verify` over them, for a run.

pub mod pods;
pub mod run;
pub mod template;

pub use pods::Pods;
pub use run::{NodeVerdict, verify_nodes};
pub use template::VerificationPod;

use crate::error::{Classify, ExitStatus, KubeError};
use crate::wait::WaitError;

/// A verification that could not be carried out (not a node failing it).
/// The apiserver's answer and the wait's error are kept as sources, so a
/// 403 still exits 3 with its RBAC hint.
#[derive(Debug, thiserror::Error)]
pub enum VerificationError {
    /// The apiserver refused or failed a request about the pod.
    #[error("verification pod {pod} on node {node}")]
    Api {
        /// The node.
        node: String,
        /// The pod.
        pod: String,
        /// The request and the apiserver's answer.
        #[source]
        source: KubeError,
    },
    /// Watching the pod failed (not a timeout: that fails the node).
    #[error("verification pod {pod} on node {node}")]
    Wait {
        /// The node.
        node: String,
        /// The pod.
        pod: String,
        /// Why the watch failed.
        #[source]
        source: WaitError,
    },
    /// Anything else: the template, a pod that would not go away.
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
        match self {
            VerificationError::Api { source, .. } => source.status(),
            VerificationError::Wait { source, .. } => source.status(),
            VerificationError::Run { .. } => ExitStatus::Failed,
        }
    }

    fn hints(&self) -> Vec<String> {
        match self {
            VerificationError::Api { source, .. } => source.hints(),
            VerificationError::Wait { source, .. } => source.hints(),
            VerificationError::Run { .. } => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forbidden_request_keeps_exit_3_and_its_rbac_hint() {
        let forbidden = kube::Error::Api(
            kube::core::Status::failure("pods is forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        let err = VerificationError::Api {
            node: "w1".into(),
            pod: "klm-verify-w1".into(),
            source: KubeError::new("creating the pod in namespace default", forbidden),
        };
        assert_eq!(err.status(), ExitStatus::Precondition);
        assert!(err.hints()[0].contains("RBAC"), "{:?}", err.hints());
        let run = VerificationError::Run {
            node: "w1".into(),
            pod: "?".into(),
            reason: "bad template".into(),
        };
        assert_eq!(run.status(), ExitStatus::Failed);
    }
}
