//! Draining a node: evicting its pods through the Eviction API, so
//! PodDisruptionBudgets are honoured, and waiting until they are gone.
//! DaemonSet pods (kata-deploy among them) and mirror pods stay.

use std::collections::BTreeSet;
use std::time::Duration;

use backon::{ConstantBuilder, Retryable};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{EvictParams, ListParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use futures::future::try_join_all;

use crate::annotations::NodeStatus;
use crate::error::{Classify, ExitStatus, KubeError};
use crate::nodes::hold;
use crate::wait::{Check, WaitError, watch_until};

/// Why a pod is left on the node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    /// `namespace/name`.
    pub pod: String,
    /// Why it stays.
    pub reason: String,
}

/// What draining one node did.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drained {
    /// The node.
    pub node: String,
    /// Pods evicted (`namespace/name`).
    pub evicted: Vec<String>,
    /// Pods left alone, with why.
    pub skipped: Vec<Skipped>,
}

/// A drain that did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// Pods are still there at the deadline.
    #[error("draining {node}: {} pod(s) still there after {}s: {}", .remaining.len(), .after.as_secs(), .remaining.join(", "))]
    Timeout {
        /// The node.
        node: String,
        /// `namespace/name` of each pod still there.
        remaining: Vec<String>,
        /// The timeout.
        after: Duration,
    },
    /// The API refused or failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// Watching the pods failed.
    #[error(transparent)]
    Wait(#[from] WaitError),
}

impl Classify for DrainError {
    fn status(&self) -> ExitStatus {
        match self {
            DrainError::Kube(e) => e.status(),
            DrainError::Wait(e) => e.status(),
            DrainError::Timeout { .. } => ExitStatus::Failed,
        }
    }
    fn hints(&self) -> Vec<String> {
        match self {
            DrainError::Timeout { .. } => vec![
                "a PodDisruptionBudget allows no disruption now (kubectl get pdb -A), or a pod ignores SIGTERM; raise --drain-timeout or free the budget".into(),
            ],
            DrainError::Kube(e) => e.hints(),
            DrainError::Wait(e) => e.hints(),
        }
    }
}

/// The label Argo Workflows puts on a workflow's pods.
const WORKFLOW_LABEL: &str = "workflows.argoproj.io/workflow";

/// Why a pod must stay, or `None` when it is to be evicted. `run_id` is the
/// workflow driving the upgrade: its own step pods are never evicted.
pub fn stays(pod: &Pod, run_id: Option<&str>) -> Option<&'static str> {
    if run_id.is_some() && pod.labels().get(WORKFLOW_LABEL).map(String::as_str) == run_id {
        return Some("a pod of the workflow running this upgrade");
    }
    if std::env::var("HOSTNAME").ok().as_deref() == Some(pod.name_any().as_str())
        && std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount").exists()
    {
        return Some("the pod klm runs in");
    }
    if pod.owner_references().iter().any(|o| o.kind == "DaemonSet") {
        return Some("DaemonSet pod");
    }
    if pod
        .annotations()
        .contains_key("kubernetes.io/config.mirror")
    {
        return Some("mirror (static) pod");
    }
    if matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return Some("already finished");
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Some("already terminating");
    }
    None
}

/// Evicts the node's pods and waits, by watching, until they are gone.
/// Evictions refused by a PodDisruptionBudget (429) are retried until `timeout`.
pub async fn drain(
    client: &Client,
    node: &str,
    run_id: Option<&str>,
    timeout: Duration,
) -> Result<Drained, DrainError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let all: Api<Pod> = Api::all(client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let pods = all
        .list(&on_node)
        .await
        .map_err(|e| KubeError::new(format!("listing the pods on {node}"), e))?;
    let mut drained = Drained {
        node: node.to_string(),
        ..Drained::default()
    };
    let mut evicting = BTreeSet::new();
    for pod in &pods.items {
        let id = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        if let Some(reason) = stays(pod, run_id) {
            drained.skipped.push(Skipped {
                pod: id,
                reason: reason.into(),
            });
            continue;
        }
        evict(client, pod, deadline).await?;
        tracing::info!(node, pod = %id, "evicted");
        drained.evicted.push(id);
        evicting.insert(pod.uid().unwrap_or_default());
    }
    if evicting.is_empty() {
        return Ok(drained);
    }
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let waited = watch_until(
        all,
        config,
        remaining,
        format!("the evicted pods of {node}"),
        |pods| evictions_done(pods, &evicting),
    )
    .await;
    match waited {
        Ok(()) => Ok(drained),
        Err(WaitError::Timeout { after, .. }) => {
            let left = Api::<Pod>::all(client.clone())
                .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|p| evicting.contains(&p.uid().unwrap_or_default()))
                        .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
                        .collect()
                })
                .unwrap_or_default();
            Err(DrainError::Timeout {
                node: node.into(),
                remaining: left,
                after,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Evicts one pod, retrying while a PodDisruptionBudget refuses (429) and
/// time remains. A pod already gone counts as evicted.
async fn evict(
    client: &Client,
    pod: &Pod,
    deadline: tokio::time::Instant,
) -> Result<(), DrainError> {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let attempt = || async { pods.evict(&name, &EvictParams::default()).await };
    let result = attempt
        .retry(
            ConstantBuilder::default()
                .with_delay(Duration::from_secs(2))
                .without_max_times(),
        )
        .when(|e: &kube::Error| {
            crate::error::is_too_many_requests(e) && tokio::time::Instant::now() < deadline
        })
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if crate::error::is_not_found(&e) => Ok(()),
        Err(e) if crate::error::is_too_many_requests(&e) => Err(DrainError::Timeout {
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            remaining: vec![format!(
                "{namespace}/{name} (eviction refused: {})",
                crate::error::api_status(&e).map_or("", |s| s.message.as_str())
            )],
            after: Duration::ZERO,
        }),
        Err(e) => Err(KubeError::new(format!("evicting pod {namespace}/{name}"), e).into()),
    }
}

/// Wait condition: none of the evicted pods (by uid) is left on the node.
fn evictions_done(pods: &[std::sync::Arc<Pod>], evicting: &BTreeSet<String>) -> Check<()> {
    if pods
        .iter()
        .any(|p| evicting.contains(&p.uid().unwrap_or_default()))
    {
        Check::Pending
    } else {
        Check::Done(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_drain_waits_until_every_evicted_pod_is_gone() {
        let with_uid = |uid: &str| {
            std::sync::Arc::new(pod(
                serde_json::json!({"metadata": {"name": format!("app-{uid}"), "uid": uid}}),
            ))
        };
        let evicting = BTreeSet::from(["a".to_string(), "b".to_string()]);
        assert!(matches!(
            evictions_done(&[with_uid("a"), with_uid("z")], &evicting),
            Check::Pending
        ));
        // A pod that was never evicted (a DaemonSet's) does not hold the drain.
        assert!(matches!(
            evictions_done(&[with_uid("z")], &evicting),
            Check::Done(())
        ));
    }

    #[test]
    fn daemonset_mirror_and_finished_pods_stay() {
        let ds = pod(
            serde_json::json!({"metadata": {"name": "kata-deploy-x", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "kata-deploy", "uid": "u"}]}}),
        );
        assert_eq!(stays(&ds, None), Some("DaemonSet pod"));
        let mirror = pod(
            serde_json::json!({"metadata": {"name": "etcd", "annotations": {"kubernetes.io/config.mirror": "x"}}}),
        );
        assert_eq!(stays(&mirror, None), Some("mirror (static) pod"));
        let done = pod(
            serde_json::json!({"metadata": {"name": "job-x"}, "status": {"phase": "Succeeded"}}),
        );
        assert_eq!(stays(&done, None), Some("already finished"));
        let app = pod(
            serde_json::json!({"metadata": {"name": "web", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u"}]}, "status": {"phase": "Running"}}),
        );
        assert_eq!(stays(&app, None), None);
        let step = pod(
            serde_json::json!({"metadata": {"name": "upgrade-x-cordon", "labels": {WORKFLOW_LABEL: "upgrade-x"}}}),
        );
        assert_eq!(
            stays(&step, Some("upgrade-x")),
            Some("a pod of the workflow running this upgrade")
        );
        assert_eq!(stays(&step, Some("another")), None);
    }
}

/// Which nodes a drain step drains, for which run.
#[derive(Debug, Clone)]
pub struct Request {
    /// The nodes (cordoned already).
    pub nodes: Vec<String>,
    /// The release (whose run record names the run).
    pub release: crate::release::ReleaseRef,
    /// The run (None: a drain by hand).
    pub run_id: Option<String>,
    /// How long evictions may wait for PodDisruptionBudgets and pods to go.
    pub timeout: Duration,
}

/// The drain step: a drain for a run on record moves its nodes on to
/// `draining` (the run must hold them); one by hand (no run, or a run klm
/// has no record of) only evicts. `evicting` is a client without retries:
/// evictions refused by a PodDisruptionBudget are retried by [`drain`]
/// itself, within its timeout.
pub async fn drain_nodes(
    client: &Client,
    evicting: &Client,
    request: &Request,
) -> anyhow::Result<Vec<Drained>> {
    let nodes_api = Api::all(client.clone());
    try_join_all(request.nodes.iter().map(|n| hold::get(&nodes_api, n))).await?;
    let latest = match &request.run_id {
        Some(_) => crate::run_record::Records::new(client, &request.release.namespace)
            .load(&request.release.name)
            .await?
            .map(|(record, _)| record),
        None => None,
    };
    let run = crate::run_record::named_run(latest.as_ref(), request.run_id.as_deref());
    let release_id = run.map(|r| r.release_id()).unwrap_or_default();
    let holder = run.map(|r| hold::Holder {
        run_id: &r.run_id,
        release: &release_id,
    });
    for node in &request.nodes {
        hold::advance(client, node, holder, NodeStatus::Draining).await?;
    }
    let drained = try_join_all(
        request
            .nodes
            .iter()
            .map(|n| drain(evicting, n, request.run_id.as_deref(), request.timeout)),
    )
    .await?;
    Ok(drained)
}
