//! Kata pods still on the runtime they started with. A running Kata pod
//! keeps the binaries it started with when its node is upgraded: `klm status
//! --sandboxes` lists, per verified node, those that started before the
//! node's verification, and `--recycle-old-sandboxes N` evicts up to N of
//! them per node once the node is completed (oldest first, honouring
//! PodDisruptionBudgets), so that their controllers start them again on the
//! new runtime.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::annotations;
use crate::error::KubeResultExt;
use crate::events::{NodeEvent, NodeEvents};
use crate::helm::Helm;
use crate::nodes::selection;
use crate::release::ReleaseRef;

/// The Kata pods of one node that started before the node was verified at
/// its version: they still run the runtime they started with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OldSandboxes {
    /// The node.
    pub node: String,
    /// The version it was verified at.
    pub version: String,
    /// When (RFC 3339).
    pub verified_at: String,
    /// The pods (`namespace/name`) with when each started.
    pub pods: Vec<(String, String)>,
}

/// The Kata pods (of the release's RuntimeClasses) on each node klm
/// verified that started before that verification.
pub async fn old_sandboxes(
    client: &Client,
    helm: &Helm,
    release: &ReleaseRef,
    nodes: &[Node],
) -> anyhow::Result<Vec<OldSandboxes>> {
    // A release without RuntimeClasses has no Kata pods to list.
    let classes = release.load(helm).await?.runtime_class_names()?;
    let pods: Api<Pod> = Api::all(client.clone());
    let mut found = Vec::new();
    for node in nodes {
        let (Some(version), Some(verified_at)) = (
            selection::annotation(node, annotations::CURRENT_VERSION),
            selection::annotation(node, annotations::VERIFIED_AT),
        ) else {
            continue;
        };
        let Ok(verified) = verified_at.parse::<jiff::Timestamp>() else {
            continue;
        };
        let name = node.name_any();
        let on_node = pods_on(&pods, &name).await?;
        let old = started_before(&on_node, &classes, verified);
        if !old.is_empty() {
            found.push(OldSandboxes {
                node: name,
                version: version.to_string(),
                verified_at: verified_at.to_string(),
                pods: old,
            });
        }
    }
    Ok(found)
}

/// The running pods of `classes` that started before `verified`, oldest
/// first, with their start times.
fn started_before(
    pods: &[Pod],
    classes: &BTreeSet<String>,
    verified: jiff::Timestamp,
) -> Vec<(String, String)> {
    old_pods(pods, classes, verified)
        .into_iter()
        .map(|(p, started)| (pod_id(p), started.to_string()))
        .collect()
}

/// The running pods of `classes` that started before `verified`, oldest
/// first (then by name), with their start times.
fn old_pods<'p>(
    pods: &'p [Pod],
    classes: &BTreeSet<String>,
    verified: jiff::Timestamp,
) -> Vec<(&'p Pod, jiff::Timestamp)> {
    let mut old: Vec<(&Pod, jiff::Timestamp)> = pods
        .iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.runtime_class_name.as_ref())
                .is_some_and(|c| classes.contains(c))
        })
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            if status.phase.as_deref() != Some("Running") {
                return None;
            }
            let started = status.start_time.as_ref()?.0;
            // A start time has whole seconds; the node was cordoned until
            // the verification's stamp, so a pod of that very second came
            // after it.
            (started.as_second() < verified.as_second()).then_some((p, started))
        })
        .collect();
    old.sort_by_key(|(p, started)| (*started, pod_id(p)));
    old
}

fn pod_id(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

async fn pods_on(pods: &Api<Pod>, node: &str) -> anyhow::Result<Vec<Pod>> {
    Ok(pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .during(|| format!("listing the pods on {node}"))?
        .items)
}

/// How old sandboxes are recycled after a node is completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recycle {
    /// At most this many of a node's old Kata pods are evicted.
    pub per_node: usize,
    /// How long an eviction a PodDisruptionBudget refuses is retried.
    pub timeout: Duration,
}

/// What recycling did on one node.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recycled {
    /// The node.
    pub node: String,
    /// The pods evicted (`namespace/name`).
    pub evicted: Vec<String>,
    /// The old pods left running: beyond the per-node budget, or kept by a
    /// PodDisruptionBudget or an error (with why).
    pub left: Vec<String>,
}

impl std::fmt::Display for Recycled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: recycled {} old Kata pod(s)",
            self.node,
            self.evicted.len()
        )?;
        if !self.evicted.is_empty() {
            write!(f, " ({})", self.evicted.join(", "))?;
        }
        if !self.left.is_empty() {
            write!(f, "; left running: {}", self.left.join(", "))?;
        }
        Ok(())
    }
}

/// Evicts, on each of `nodes` (completed at a verified version), up to
/// `how.per_node` of the Kata pods of the release's RuntimeClasses that
/// started before the node's verification, oldest first. Best effort: the
/// nodes are completed already, so a refusal or an error leaves the pod
/// running and is reported (and logged), never returned; `klm status
/// --sandboxes` lists what is left. `evicting` is a client without retries
/// (a PodDisruptionBudget's refusals are retried here, until the timeout).
pub async fn recycle(
    client: &Client,
    evicting: &Client,
    helm: &Helm,
    release: &ReleaseRef,
    run_id: &str,
    nodes: &[String],
    how: &Recycle,
) -> Vec<Recycled> {
    let classes = match release
        .load(helm)
        .await
        .and_then(|r| r.runtime_class_names())
    {
        Ok(classes) => classes,
        Err(err) => {
            let why = crate::error::describe(&err.into());
            tracing::warn!("old sandboxes are not recycled: {why}");
            return Vec::new();
        }
    };
    let mut recycled = Vec::new();
    for node in nodes {
        let done = recycle_node(client, evicting, &classes, node, how).await;
        match done {
            Ok(done) if done.evicted.is_empty() && done.left.is_empty() => {}
            Ok(done) => {
                tracing::info!("{done}");
                recycled.push(done);
            }
            Err(err) => tracing::warn!(node, "old sandboxes are not recycled: {err:#}"),
        }
    }
    let events = recycled.iter().filter(|r| !r.evicted.is_empty()).map(|r| {
        let pods = r.evicted.join(", ");
        (r.node.clone(), NodeEvent::SandboxesRecycled { pods })
    });
    NodeEvents::new(
        client,
        run_id,
        &annotations::release_id(&release.namespace, &release.name),
    )
    .record_each(events)
    .await;
    recycled
}

async fn recycle_node(
    client: &Client,
    evicting: &Client,
    classes: &BTreeSet<String>,
    node: &str,
    how: &Recycle,
) -> anyhow::Result<Recycled> {
    let nodes: Api<Node> = Api::all(client.clone());
    let found = nodes
        .get(node)
        .await
        .during(|| format!("reading node {node}"))?;
    let mut recycled = Recycled {
        node: node.to_string(),
        ..Recycled::default()
    };
    let Some(verified) = selection::annotation(&found, annotations::VERIFIED_AT)
        .and_then(|at| at.parse::<jiff::Timestamp>().ok())
    else {
        return Ok(recycled);
    };
    let on_node = pods_on(&Api::all(client.clone()), node).await?;
    let old = old_pods(&on_node, classes, verified);
    let deadline = tokio::time::Instant::now() + how.timeout;
    for (index, (pod, _)) in old.iter().enumerate() {
        let id = pod_id(pod);
        if index >= how.per_node {
            recycled
                .left
                .push(format!("{id} (beyond --recycle-old-sandboxes)"));
            continue;
        }
        match crate::drain::evict(evicting, pod, deadline).await {
            Ok(()) => recycled.evicted.push(id),
            Err(err) => recycled.left.push(format!("{id} ({err})")),
        }
    }
    Ok(recycled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_kata_pods_started_before_the_verification_are_old() {
        let pod = |name: &str, class: Option<&str>, phase: &str, started: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "apps"},
                "spec": {"runtimeClassName": class, "containers": []},
                "status": {"phase": phase, "startTime": started}
            }))
            .unwrap()
        };
        let classes = BTreeSet::from(["kata-qemu".to_string()]);
        let verified: jiff::Timestamp = "2026-12-07T10:00:00.4Z".parse().unwrap();
        let pods = [
            pod("old", Some("kata-qemu"), "Running", "2026-12-07T09:00:00Z"),
            pod("new", Some("kata-qemu"), "Running", "2026-12-07T10:05:00Z"),
            // The second of the verification: after it (the node was cordoned).
            pod("same", Some("kata-qemu"), "Running", "2026-12-07T10:00:00Z"),
            pod("runc", None, "Running", "2026-12-07T09:00:00Z"),
            pod(
                "done",
                Some("kata-qemu"),
                "Succeeded",
                "2026-12-07T09:00:00Z",
            ),
        ];
        assert_eq!(
            started_before(&pods, &classes, verified),
            [("apps/old".to_string(), "2026-12-07T09:00:00Z".to_string())]
        );
    }

    #[test]
    fn the_oldest_pods_come_first() {
        let pod = |name: &str, started: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "apps"},
                "spec": {"runtimeClassName": "kata-qemu", "containers": []},
                "status": {"phase": "Running", "startTime": started}
            }))
            .unwrap()
        };
        let classes = BTreeSet::from(["kata-qemu".to_string()]);
        let verified: jiff::Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        let pods = [
            pod("b", "2026-12-07T09:00:00Z"),
            pod("c", "2026-12-07T08:00:00Z"),
            pod("a", "2026-12-07T09:00:00Z"),
        ];
        let order: Vec<String> = old_pods(&pods, &classes, verified)
            .into_iter()
            .map(|(p, _)| p.name_any())
            .collect();
        assert_eq!(order, ["c", "a", "b"]);
    }

    #[test]
    fn a_recycling_says_what_it_evicted_and_what_it_left() {
        let recycled = Recycled {
            node: "kata-1".into(),
            evicted: vec!["apps/c".into()],
            left: vec!["apps/a (beyond --recycle-old-sandboxes)".into()],
        };
        assert_eq!(
            recycled.to_string(),
            "kata-1: recycled 1 old Kata pod(s) (apps/c); left running: apps/a (beyond --recycle-old-sandboxes)"
        );
    }
}
