//! Kubernetes Events on the nodes klm acts on, through kube-runtime's event
//! recorder: `kubectl describe node` then tells a node's upgrade history,
//! and `kubectl get events --field-selector involvedObject.kind=Node` the
//! fleet's. Node Events live in the `default` namespace (a Node has none).
//!
//! Recording is best effort: a refused Event is logged and never fails the
//! step that did the work (the chart grants what recording needs).

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};

/// The controller name Events are reported by.
pub const REPORTER: &str = "kata-lifecycle-manager";

/// What happened to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// Cordoned and held for the run.
    Cordoned,
    /// kata-deploy restarted (installed) at this version.
    Upgraded {
        /// The kata-deploy version now on the node.
        version: String,
    },
    /// kata-deploy did not come back.
    UpgradeFailed {
        /// Why.
        reason: String,
    },
    /// The verification pod passed.
    VerificationPassed {
        /// The pod.
        pod: String,
    },
    /// The verification pod failed.
    VerificationFailed {
        /// The pod.
        pod: String,
        /// Why.
        reason: String,
    },
    /// Returned to the version before the run.
    RolledBack {
        /// The version it runs again.
        version: String,
    },
    /// The rollback (or the verification after it) failed; the node stays cordoned.
    RollbackFailed {
        /// Why.
        reason: String,
    },
    /// Verified at the target and returned to service.
    Completed {
        /// The version it was verified at.
        version: String,
    },
    /// Released by the run without a change (it never started on the node).
    Released,
    /// Kata pods that still ran the runtime they started with were evicted
    /// once the node was completed (`--recycle-old-sandboxes`).
    SandboxesRecycled {
        /// The pods, `namespace/name, ...`.
        pods: String,
    },
    /// Failed within the run's failure budget (`--max-failed-nodes`): rolled
    /// back (or kept cordoned), and the run goes on without it.
    FailedWithinBudget {
        /// Why the node failed.
        reason: String,
        /// The run's failed nodes so far, this one included.
        failed: usize,
        /// How many the budget allows.
        allowed: usize,
    },
    /// Outside a run that finished: its kata-deploy is older than the
    /// release's, which keeps the run's `values` (OnDelete) until this node
    /// is upgraded too.
    UpgradePending {
        /// The release's version.
        version: String,
        /// The values the release keeps, `key=value, ...`.
        values: String,
    },
}

impl NodeEvent {
    /// The Event's reason (PascalCase, what `kubectl describe` shows).
    pub fn reason(&self) -> &'static str {
        match self {
            NodeEvent::Cordoned => "KataUpgradeCordoned",
            NodeEvent::Upgraded { .. } => "KataUpgraded",
            NodeEvent::UpgradeFailed { .. } => "KataUpgradeFailed",
            NodeEvent::VerificationPassed { .. } => "KataVerificationPassed",
            NodeEvent::VerificationFailed { .. } => "KataVerificationFailed",
            NodeEvent::RolledBack { .. } => "KataRolledBack",
            NodeEvent::RollbackFailed { .. } => "KataRollbackFailed",
            NodeEvent::Completed { .. } => "KataUpgradeCompleted",
            NodeEvent::Released => "KataUpgradeReleased",
            NodeEvent::FailedWithinBudget { .. } => "KataUpgradeFailedWithinBudget",
            NodeEvent::SandboxesRecycled { .. } => "KataSandboxesRecycled",
            NodeEvent::UpgradePending { .. } => "KataUpgradePending",
        }
    }

    /// The klm step that acted.
    pub fn action(&self) -> &'static str {
        match self {
            NodeEvent::Cordoned => "Cordon",
            NodeEvent::Upgraded { .. } | NodeEvent::UpgradeFailed { .. } => "RestartKataPod",
            NodeEvent::VerificationPassed { .. } | NodeEvent::VerificationFailed { .. } => "Verify",
            NodeEvent::RolledBack { .. } | NodeEvent::RollbackFailed { .. } => "Rollback",
            NodeEvent::Completed { .. } | NodeEvent::UpgradePending { .. } => "Complete",
            NodeEvent::Released => "CloseRun",
            NodeEvent::FailedWithinBudget { .. } | NodeEvent::SandboxesRecycled { .. } => "Settle",
        }
    }

    /// Normal, or Warning for what needs a look.
    pub fn severity(&self) -> EventType {
        match self {
            NodeEvent::UpgradeFailed { .. }
            | NodeEvent::VerificationFailed { .. }
            | NodeEvent::RollbackFailed { .. }
            | NodeEvent::FailedWithinBudget { .. } => EventType::Warning,
            _ => EventType::Normal,
        }
    }

    /// The message, naming the run and its release.
    pub fn note(&self, run_id: &str, release: &str) -> String {
        let what = match self {
            NodeEvent::Cordoned => "cordoned for the upgrade".to_string(),
            NodeEvent::Upgraded { version } => format!("kata-deploy restarted at {version}"),
            NodeEvent::UpgradeFailed { reason } => {
                format!("kata-deploy did not come back: {reason}")
            }
            NodeEvent::VerificationPassed { pod } => format!("verification passed (pod {pod})"),
            NodeEvent::VerificationFailed { pod, reason } => {
                format!("verification failed (pod {pod}): {reason}")
            }
            NodeEvent::RolledBack { version } => format!("rolled back to {version}"),
            NodeEvent::RollbackFailed { reason } => {
                format!("rollback failed, the node stays cordoned: {reason}")
            }
            NodeEvent::Completed { version } => {
                format!("verified at {version} and returned to service")
            }
            NodeEvent::Released => "released unchanged".to_string(),
            NodeEvent::SandboxesRecycled { pods } => format!(
                "evicted Kata pods still on the runtime they started with, so that they start again on the verified one: {pods}"
            ),
            NodeEvent::FailedWithinBudget {
                reason,
                failed,
                allowed,
            } => format!(
                "failed ({reason}); failure {failed} of the {allowed} the run allows (--max-failed-nodes): the run goes on without this node, which a new run retries"
            ),
            NodeEvent::UpgradePending { version, values } => format!(
                "the run finished without this node, whose kata-deploy is older than the release's {version}: the release keeps {values} until a run upgrades this node, so that it does not restart unverified"
            ),
        };
        // An Event's note is at most 1 kB.
        let note = format!("run {run_id} of {release}: {what}");
        match note.char_indices().nth(1000) {
            Some((at, _)) => format!("{}...", &note[..at]),
            None => note,
        }
    }
}

/// Records the Events of one run's steps.
pub struct NodeEvents {
    client: Client,
    recorder: Recorder,
    run_id: String,
    release: String,
    /// The UIDs of the nodes the step read already, by name.
    known: std::collections::BTreeMap<String, String>,
}

impl NodeEvents {
    /// Events of run `run_id` of `release` (`namespace/name`), reported by
    /// this pod (`$HOSTNAME` in a workflow step) or by klm.
    pub fn new(client: &Client, run_id: &str, release: &str) -> Self {
        let reporter = Reporter {
            controller: REPORTER.into(),
            instance: std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()),
        };
        Self {
            client: client.clone(),
            recorder: Recorder::new(client.clone(), reporter),
            run_id: run_id.to_string(),
            release: release.to_string(),
            known: Default::default(),
        }
    }

    /// The same, for a step that has read `nodes`: their Events name them
    /// by the UIDs read, without reading the nodes again.
    pub fn knowing<'a>(mut self, nodes: impl IntoIterator<Item = &'a Node>) -> Self {
        self.known.extend(
            nodes
                .into_iter()
                .filter_map(|n| Some((n.metadata.name.clone()?, n.metadata.uid.clone()?))),
        );
        self
    }

    /// The node's UID: as the step read it, else read now.
    async fn uid(&self, node: &str) -> Result<Option<String>, kube::Error> {
        if let Some(uid) = self.known.get(node) {
            return Ok(Some(uid.clone()));
        }
        let found = Api::<Node>::all(self.client.clone()).get(node).await?;
        Ok(found.metadata.uid)
    }

    /// Records `event` on `node`; a failure is logged, not returned.
    pub async fn record(&self, node: &str, event: NodeEvent) {
        let reference = match self.uid(node).await {
            Ok(uid) => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                uid,
                ..Default::default()
            },
            Err(err) => {
                tracing::warn!(node, %err, reason = event.reason(), "cannot record the Event: reading the node failed");
                return;
            }
        };
        let published = self
            .recorder
            .publish(
                &Event {
                    type_: event.severity(),
                    reason: event.reason().into(),
                    note: Some(event.note(&self.run_id, &self.release)),
                    action: event.action().into(),
                    secondary: None,
                },
                &reference,
            )
            .await;
        if let Err(err) = published {
            tracing::warn!(node, %err, reason = event.reason(), "cannot record the Event (the chart grants events.k8s.io/events create in default)");
        }
    }

    /// Records one event per node, concurrently.
    pub async fn record_each(&self, events: impl IntoIterator<Item = (String, NodeEvent)>) {
        futures::future::join_all(
            events
                .into_iter()
                .map(|(node, event)| async move { self.record(&node, event).await }),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_say_what_happened_in_which_run() {
        let failed = NodeEvent::VerificationFailed {
            pod: "klm-verify-w1".into(),
            reason: "exit code 7".into(),
        };
        assert_eq!(failed.reason(), "KataVerificationFailed");
        assert_eq!(failed.action(), "Verify");
        assert_eq!(failed.severity(), EventType::Warning);
        assert_eq!(
            failed.note("upgrade-1", "kube-system/kata-deploy"),
            "run upgrade-1 of kube-system/kata-deploy: verification failed (pod klm-verify-w1): exit code 7"
        );
        let done = NodeEvent::Completed {
            version: "3.28.0".into(),
        };
        assert_eq!(done.severity(), EventType::Normal);
        assert!(
            done.note("r", "ns/x")
                .ends_with("verified at 3.28.0 and returned to service")
        );
    }

    #[test]
    fn a_long_reason_is_cut_to_an_events_size() {
        let long = NodeEvent::RollbackFailed {
            reason: "x".repeat(5000),
        };
        let note = long.note("r", "ns/x");
        assert!(note.len() <= 1003, "{}", note.len());
        assert!(note.ends_with("..."));
    }
}
