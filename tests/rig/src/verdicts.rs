//! Verification pods whose verdict depends on what the host runs, as a real
//! check of the runtime does: a pod labelled [`BY_VERSION_LABEL`] starts
//! with `rig.klm.test/outcome: pending` (kwok keeps it bound but not
//! started), and once it is bound this task decides it: `fail` when its
//! node's simulated host runs [`BROKEN_VERSION`] (on the nodes listed in
//! [`BROKEN_NODES`], or on every node when that is absent), `succeed`
//! otherwise. So a node fails its check on the new version and passes it
//! again once it is rolled back. The same annotation on a Node breaks that
//! version on it from then on: a node that goes bad after it passed (what a
//! gate's soak is for).

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::warn;

use crate::simulator::INSTALLED_VERSION;

/// The label that hands a pod's verdict to this task (value `by-version`).
pub const BY_VERSION_LABEL: &str = "rig.klm.test/verdict";
/// The annotation naming the kata-deploy version the check fails on.
pub const BROKEN_VERSION: &str = "rig.klm.test/broken-version";
/// Optional: the nodes (comma-separated) where that version is broken.
pub const BROKEN_NODES: &str = "rig.klm.test/broken-nodes";
const OUTCOME: &str = "rig.klm.test/outcome";

/// Decides the pods labelled [`BY_VERSION_LABEL`] until the watch ends.
pub async fn run(client: Client) -> Result<()> {
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client);
    let config = watcher::Config::default().labels(&format!("{BY_VERSION_LABEL}=by-version"));
    let mut events = std::pin::pin!(
        watcher(pods.clone(), config)
            .default_backoff()
            .applied_objects()
    );
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(pod) => pod,
            Err(e) => {
                warn!("verdict pod watch: {e}");
                continue;
            }
        };
        if let Err(e) = decide(&pods, &nodes, &pod).await {
            warn!("verdict of pod {}: {e:#}", pod.name_any());
        }
    }
    Ok(())
}

async fn decide(pods: &Api<Pod>, nodes: &Api<Node>, pod: &Pod) -> Result<()> {
    let annotations = pod.annotations();
    if annotations.get(OUTCOME).map(String::as_str) != Some("pending")
        || pod.metadata.deletion_timestamp.is_some()
    {
        return Ok(());
    }
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return Ok(()); // not bound yet: decided on the binding's event
    };
    let host = nodes.get(&node).await?;
    let installed = host.annotations().get(INSTALLED_VERSION).cloned();
    let gone_bad = host.annotations().get(BROKEN_VERSION);
    let outcome = match gone_bad {
        Some(version) => verdict(Some(version), None, &node, installed.as_deref()),
        None => verdict(
            annotations.get(BROKEN_VERSION).map(String::as_str),
            annotations.get(BROKEN_NODES).map(String::as_str),
            &node,
            installed.as_deref(),
        ),
    };
    let namespace = pod.namespace().unwrap_or_default();
    let patch = json!({"metadata": {"annotations": {OUTCOME: outcome}}});
    Api::<Pod>::namespaced(pods.clone().into_client(), &namespace)
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// `fail` when `node` runs the broken version (and is one of the broken
/// nodes, when they are named), else `succeed`.
fn verdict(
    broken: Option<&str>,
    broken_nodes: Option<&str>,
    node: &str,
    installed: Option<&str>,
) -> &'static str {
    let on_this_node = broken_nodes.is_none_or(|list| list.split(',').any(|n| n.trim() == node));
    if on_this_node && broken.is_some() && broken == installed {
        "fail"
    } else {
        "succeed"
    }
}

#[cfg(test)]
mod tests {
    use super::verdict;

    #[test]
    fn a_node_fails_only_on_the_broken_version() {
        assert_eq!(verdict(Some("3.28.0"), None, "n1", Some("3.28.0")), "fail");
        assert_eq!(
            verdict(Some("3.28.0"), None, "n1", Some("3.27.0")),
            "succeed"
        );
        assert_eq!(
            verdict(Some("3.28.0"), Some("n2,n3"), "n1", Some("3.28.0")),
            "succeed"
        );
        assert_eq!(
            verdict(Some("3.28.0"), Some("n2, n3"), "n3", Some("3.28.0")),
            "fail"
        );
        assert_eq!(verdict(None, None, "n1", Some("3.28.0")), "succeed");
        assert_eq!(verdict(Some("3.28.0"), None, "n1", None), "succeed");
    }
}
