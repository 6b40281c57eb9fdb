//! How a run holds nodes: status annotations, cordon ownership (a node that
//! was unschedulable before the run stays so), and the selection taints that
//! `complete` removes and `rollback` restores.
//!
//! Every write is a merge patch of only the fields it changes; where a write
//! depends on what was read (taints, first hold), it carries the
//! resourceVersion it read, so a concurrent change makes it retry instead of
//! overwriting.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::annotations::{self, NodeStatus};
use crate::error::{KubeError, KubeResultExt};

/// Sets the status annotation of a node (one merge patch).
pub async fn set_status(client: &Client, node: &str, status: NodeStatus) -> Result<(), KubeError> {
    tracing::info!(node, status = %status, "node status");
    patch_annotations(client, node, json!({ annotations::STATUS: status.as_str() })).await
}

/// Merge-patches annotations of a node; a `null` value removes the key.
pub async fn patch_annotations(client: &Client, node: &str, annotations: serde_json::Value) -> Result<(), KubeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = json!({ "metadata": { "annotations": annotations } });
    nodes
        .patch(node, &PatchParams::apply(annotations::FIELD_MANAGER), &Patch::Merge(&patch))
        .await
        .during(|| format!("annotating node {node}"))?;
    Ok(())
}
