//! Listing nodes for selection, cheaply: page by page, keeping only what
//! selection reads (name, labels, annotations, taints, unschedulable, the
//! Ready condition). A
//! full Node carries conditions, images and managed fields; on a fleet of
//! thousands of nodes decoding all of it costs more than the request.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, Taint};
use kube::Client;
use kube::api::{ListParams, ObjectList, ObjectMeta};
use kube::core::Request;
use serde::Deserialize;

use crate::error::{KubeError, KubeResultExt};

/// Nodes per LIST page: one request up to this many nodes, bounded memory above.
pub const PAGE_SIZE: u32 = 1000;

/// The fields of a Node that selection reads.
#[derive(Clone, Debug, Deserialize)]
struct SlimNode {
    metadata: SlimMeta,
    #[serde(default)]
    spec: Option<SlimSpec>,
    #[serde(default)]
    status: Option<SlimStatus>,
}

#[derive(Clone, Debug, Deserialize)]
struct SlimStatus {
    #[serde(default)]
    conditions: Vec<SlimCondition>,
}

/// A condition, of which only Ready is kept.
#[derive(Clone, Debug, Deserialize)]
struct SlimCondition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

#[derive(Clone, Debug, Deserialize)]
struct SlimMeta {
    name: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(rename = "resourceVersion", default)]
    resource_version: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct SlimSpec {
    #[serde(default)]
    taints: Option<Vec<Taint>>,
    #[serde(default)]
    unschedulable: Option<bool>,
}

impl From<SlimNode> for Node {
    fn from(slim: SlimNode) -> Node {
        Node {
            metadata: ObjectMeta {
                name: slim.metadata.name,
                labels: slim.metadata.labels,
                annotations: slim.metadata.annotations,
                resource_version: slim.metadata.resource_version,
                ..ObjectMeta::default()
            },
            spec: slim.spec.map(|spec| NodeSpec {
                taints: spec.taints,
                unschedulable: spec.unschedulable,
                ..NodeSpec::default()
            }),
            status: slim.status.map(|status| NodeStatus {
                conditions: Some(
                    status
                        .conditions
                        .into_iter()
                        .filter(|c| c.type_ == "Ready")
                        .map(|c| NodeCondition {
                            type_: c.type_,
                            status: c.status,
                            ..NodeCondition::default()
                        })
                        .collect(),
                ),
                ..NodeStatus::default()
            }),
        }
    }
}

/// Lists the nodes matching `label_selector` (all without one), with only
/// metadata (name, labels, annotations), spec (taints, unschedulable) and
/// the Ready condition.
pub async fn list_for_selection(
    client: &Client,
    label_selector: Option<&str>,
) -> Result<Vec<Node>, KubeError> {
    let request = Request::new("/api/v1/nodes");
    let mut params = ListParams::default().limit(PAGE_SIZE);
    if let Some(selector) = label_selector {
        params = params.labels(selector);
    }
    let mut nodes = Vec::new();
    loop {
        let http = request
            .list(&params)
            .map_err(kube::Error::BuildRequest)
            .during(|| "listing nodes".to_string())?;
        let page: ObjectList<SlimNode> = client
            .request(http)
            .await
            .during(|| "listing nodes".to_string())?;
        nodes.extend(page.items.into_iter().map(Node::from));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(nodes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_node_decodes_to_what_selection_reads() {
        let json = serde_json::json!({
            "metadata": {
                "name": "worker-1",
                "resourceVersion": "42",
                "labels": {"katacontainers.io/kata-runtime": "true"},
                "annotations": {"katacontainers.io/kata-current-version": "3.27.0"},
                "managedFields": [{"manager": "kubelet", "operation": "Update"}]
            },
            "spec": {
                "unschedulable": true,
                "podCIDR": "10.0.0.0/24",
                "taints": [{"key": "upgrade", "value": "now", "effect": "NoSchedule"}]
            },
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True"}
            ], "images": [{"names": ["pause"]}]}
        });
        let node: Node = serde_json::from_value::<SlimNode>(json).unwrap().into();
        assert_eq!(node.metadata.name.as_deref(), Some("worker-1"));
        assert_eq!(node.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(
            node.metadata.labels.unwrap()["katacontainers.io/kata-runtime"],
            "true"
        );
        assert!(node.metadata.managed_fields.is_none());
        let spec = node.spec.unwrap();
        assert_eq!(spec.unschedulable, Some(true));
        assert_eq!(spec.taints.unwrap()[0].key, "upgrade");
        assert!(spec.pod_cidr.is_none());
        let status = node.status.unwrap();
        let conditions = status.conditions.unwrap();
        assert_eq!(conditions.len(), 1, "only Ready is kept");
        assert_eq!(
            (conditions[0].type_.as_str(), conditions[0].status.as_str()),
            ("Ready", "True")
        );
        assert!(status.images.is_none());
    }
}
