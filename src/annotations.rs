//! The vocabulary klm writes on nodes: the status state machine visible with
//! `kubectl get nodes`, and the keys that record what a run holds.

use std::fmt;
use std::str::FromStr;

/// Upgrade status of a node, visible to anyone with `kubectl get nodes`.
pub const STATUS: &str = "katacontainers.io/kata-lifecycle-manager-status";
/// The Kata version a node was last verified at.
pub const CURRENT_VERSION: &str = "katacontainers.io/kata-current-version";
/// When the node was last verified at [`CURRENT_VERSION`] and returned
/// (RFC 3339): a Kata pod started before it runs an older runtime.
pub const VERIFIED_AT: &str = "katacontainers.io/kata-current-version-verified-at";
/// The run (Argo workflow name or `--run-id`) that currently holds the node.
pub const RUN: &str = "katacontainers.io/kata-lifecycle-manager-run";
/// The release (`namespace/name`) whose run holds the node: run ids are
/// unique only per release (Argo names workflows per namespace).
pub const RELEASE: &str = "katacontainers.io/kata-lifecycle-manager-release";
/// `"true"` when the node was already unschedulable before the run held it:
/// such a node is never uncordoned by klm.
pub const WAS_UNSCHEDULABLE: &str = "katacontainers.io/kata-lifecycle-manager-was-unschedulable";
/// JSON list of the selection taints (key, value, effect) the node carried
/// when the run held it; `complete` removes them and `rollback` restores them.
pub const SELECTION_TAINTS: &str = "katacontainers.io/kata-lifecycle-manager-selection-taints";
/// The target version of the run that holds the node.
pub const TARGET_VERSION: &str = "katacontainers.io/kata-lifecycle-manager-target-version";
/// Label the kata-deploy installer sets on a node once Kata is installed.
pub const KATA_RUNTIME_LABEL: &str = "katacontainers.io/kata-runtime";
/// Label on every pod klm creates, naming the run that created it.
pub const POD_RUN_LABEL: &str = "katacontainers.io/kata-lifecycle-manager-run";
/// Label on every verification pod, naming the node it verifies.
pub const POD_NODE_LABEL: &str = "katacontainers.io/kata-lifecycle-manager-node";
/// The field manager klm uses for server-side apply and patches.
pub const FIELD_MANAGER: &str = "kata-lifecycle-manager";

/// How a release is named on nodes: `namespace/name`.
pub fn release_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The state machine of a node during an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeStatus {
    /// Selected and about to be held by a run.
    Preparing,
    /// Unschedulable; new pods cannot land.
    Cordoned,
    /// Pods are being evicted.
    Draining,
    /// The new Kata version is being installed.
    Upgrading,
    /// The verification pod runs.
    Verifying,
    /// Verified at the target version and back in service.
    Completed,
    /// Returning to the version before the run.
    RollingBack,
    /// Back at the version before the run.
    RolledBack,
    /// A rollback (or a re-verification after it) failed; needs a person.
    Failed,
}

impl NodeStatus {
    /// Every status, in state-machine order.
    pub const ALL: [NodeStatus; 9] = [
        NodeStatus::Preparing,
        NodeStatus::Cordoned,
        NodeStatus::Draining,
        NodeStatus::Upgrading,
        NodeStatus::Verifying,
        NodeStatus::Completed,
        NodeStatus::RollingBack,
        NodeStatus::RolledBack,
        NodeStatus::Failed,
    ];

    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Preparing => "preparing",
            NodeStatus::Cordoned => "cordoned",
            NodeStatus::Draining => "draining",
            NodeStatus::Upgrading => "upgrading",
            NodeStatus::Verifying => "verifying",
            NodeStatus::Completed => "completed",
            NodeStatus::RollingBack => "rolling-back",
            NodeStatus::RolledBack => "rolled-back",
            NodeStatus::Failed => "failed",
        }
    }

    /// Whether a step of a run may move a node it holds from `from` to this
    /// status. Holding (cordoned) and releasing (completed, rolled back) have
    /// their own writes in [`crate::nodes::hold`]; a step moves a node only
    /// forward through drain, upgrade and verification (an upgrade may be
    /// retried after a verification), and to a rollback or a failure from
    /// anywhere.
    pub fn may_follow(self, from: NodeStatus) -> bool {
        use NodeStatus::*;
        match self {
            Draining => matches!(from, Cordoned | Draining),
            Upgrading => matches!(from, Cordoned | Draining | Upgrading | Verifying),
            Verifying => matches!(from, Upgrading | Verifying),
            RollingBack | Failed => true,
            Preparing | Cordoned | Completed | RolledBack => false,
        }
    }

    /// Whether a run is still working on a node in this status.
    pub fn in_progress(self) -> bool {
        !matches!(
            self,
            NodeStatus::Completed | NodeStatus::RolledBack | NodeStatus::Failed
        )
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown node status {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_annotation_values() {
        for status in NodeStatus::ALL {
            assert_eq!(status.as_str().parse::<NodeStatus>(), Ok(status));
        }
        assert!("deploying".parse::<NodeStatus>().is_err());
    }

    #[test]
    fn only_terminal_statuses_release_a_node() {
        assert!(NodeStatus::Verifying.in_progress());
        assert!(!NodeStatus::Completed.in_progress());
        assert!(!NodeStatus::RolledBack.in_progress());
        assert!(!NodeStatus::Failed.in_progress());
    }
}
