//! What `klm verify` does: the verification pods of nodes for a run, their
//! verdicts recorded on the nodes (state and Events) and in the run.

use kube::Client;

use crate::annotations::NodeStatus;
use crate::events::NodeEvents;
use crate::nodes::hold;
use crate::output::Report;
use crate::release::ReleaseRef;
use crate::run::Run;
use crate::run_record::{NodeProgress, Records};

use crate::verification::{NodeVerdict, Pods, verify_nodes};

/// Which nodes to verify, how, and for which run.
#[derive(Debug, Clone)]
pub struct Request {
    /// The nodes.
    pub nodes: crate::run::Targets,
    /// The verification pods (each node its pool's, else the default).
    pub pods: Pods,
    /// The label whose values are the pools (None: the run's, as recorded).
    pub pool_label: Option<String>,
    /// The release whose run record notes the verified nodes.
    pub release: ReleaseRef,
    /// The run the step belongs to: a run on record moves its nodes on (it
    /// must hold them). None, or a run klm has no record of: a check by hand,
    /// which changes no node's state; its pods are labelled with this run id,
    /// else the release's latest run, else `manual`.
    pub run_id: Option<String>,
    /// How long one node's verification may take.
    pub timeout: std::time::Duration,
    /// Keep a failed pod for inspection.
    pub keep_failed: bool,
}

/// What verify found.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Nodes whose pod succeeded.
    pub passed: Vec<String>,
    /// Nodes whose pod did not.
    pub failed: Vec<String>,
    /// Every node's verdict.
    pub nodes: Vec<NodeVerdict>,
}

impl Report for Verification {
    fn text(&self) -> String {
        self.nodes
            .iter()
            .map(|v| match (&v.reason, v.passed) {
                (_, true) => format!(
                    "{}: passed (pod {} succeeded in {:.1}s)",
                    v.node, v.pod, v.seconds
                ),
                (reason, false) => format!(
                    "{}: FAILED after {:.1}s (pod {}{}): {}",
                    v.node,
                    v.seconds,
                    v.pod,
                    if v.kept { ", kept" } else { "" },
                    reason.as_deref().unwrap_or("")
                ),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Verification {
    /// Whether every node passed.
    pub fn all_passed(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Verifies the request's nodes concurrently. For a run on record, each node
/// (which the run must hold) becomes `verifying` first, and the nodes that pass
/// are recorded as verified; every verdict is an Event on its node.
pub async fn verify(client: &Client, request: &Request) -> anyhow::Result<Verification> {
    let records = Records::new(client, &request.release.namespace);
    let loaded = records.load(&request.release.name).await?;
    let latest = loaded.as_ref().map(|(record, _)| record);
    // A wave is the named run's, else the latest run's (a check by hand);
    // a run id that is not the latest's is looked up (and refused) as
    // `--wave` always looked it up.
    let named_or_latest = latest.filter(|r| {
        request
            .run_id
            .as_deref()
            .is_none_or(|run_id| r.run_id == run_id)
    });
    let names = request
        .nodes
        .resolve(
            named_or_latest,
            client,
            &request.release,
            request.run_id.as_deref(),
        )
        .await?;
    let nodes = hold::get_all(client, &names).await?;
    for pod in request.pods.all() {
        crate::verification::run::dry_run_access(client, pod).await?;
    }

    // A check by hand labels its pods with the latest run's id.
    let run_id = request
        .run_id
        .clone()
        .or_else(|| latest.map(|r| r.run_id.clone()))
        .unwrap_or_else(|| "manual".to_string());
    let run = Run::named(records, loaded, request.run_id.as_deref());
    let release_id =
        crate::annotations::release_id(&request.release.namespace, &request.release.name);
    let holder = run.as_ref().map(Run::holder);
    for node in &nodes {
        hold::advance_from(client, node.clone(), holder, NodeStatus::Verifying).await?;
    }
    let pool_label = request
        .pool_label
        .clone()
        .or_else(|| run.as_ref().and_then(|r| r.pool_label.clone()));
    let assigned = request.pods.assign(&nodes, pool_label.as_deref())?;
    let verdicts = verify_nodes(
        client,
        &assigned,
        &run_id,
        request.timeout,
        request.keep_failed,
    )
    .await?;
    let (passed, failed): (Vec<&NodeVerdict>, Vec<&NodeVerdict>) =
        verdicts.iter().partition(|v| v.passed);
    let passed: Vec<String> = passed.iter().map(|v| v.node.clone()).collect();
    let failed: Vec<String> = failed.iter().map(|v| v.node.clone()).collect();
    // Only the run the step names, while it runs, records its verdicts: a
    // check by hand (no --run-id) writes nothing into the latest run's
    // record, which may be long closed.
    if let Some(run) = run.as_ref().filter(|r| !r.state.is_closed())
        && !passed.is_empty()
    {
        run.update(|r| {
            for node in &passed {
                r.nodes.insert(node.clone(), NodeProgress::Verified);
            }
        })
        .await?;
    }
    NodeEvents::new(client, &run_id, &release_id)
        .knowing(&nodes)
        .record_each(verdicts.iter().map(|v| (v.node.clone(), v.event(None))))
        .await;
    Ok(Verification {
        passed,
        failed,
        nodes: verdicts,
    })
}
