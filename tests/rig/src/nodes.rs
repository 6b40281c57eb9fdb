//! Simulated (kwok) nodes: what a test asks for, how it becomes a Node
//! object, and waiting until kwok reports the nodes Ready.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec as CoreNodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

/// The annotation kwok selects its nodes by.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// The pool label every rig node carries (the order select-nodes sorts by).
pub const POOL_LABEL: &str = "rig.klm.test/pool";

/// A kwok node to create.
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    /// Node name (also its `kubernetes.io/hostname`).
    pub name: String,
    /// Extra labels (a pool label, a test's own label).
    pub labels: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<Taint>,
    /// Cordoned from the start.
    pub unschedulable: bool,
}

impl NodeSpec {
    /// A node with just a name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The Node object: labels as a real node has them, addresses on
    /// loopback (the apiserver dials kwok for `pods/log`), room for pods.
    pub fn to_node(&self) -> Node {
        let mut labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), self.name.clone()),
            ("kubernetes.io/arch".to_string(), "amd64".to_string()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("type".to_string(), "kwok".to_string()),
        ]);
        labels.extend(self.labels.clone());
        let quantity = |q: &str| Quantity(q.to_string());
        Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([
                    (KWOK_NODE_ANNOTATION.to_string(), "fake".to_string()),
                    ("node.alpha.kubernetes.io/ttl".to_string(), "0".to_string()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(CoreNodeSpec {
                taints: (!self.taints.is_empty()).then(|| self.taints.clone()),
                unschedulable: self.unschedulable.then_some(true),
                ..CoreNodeSpec::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "127.0.0.1".into(),
                    },
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: self.name.clone(),
                    },
                ]),
                allocatable: Some(BTreeMap::from([
                    ("cpu".to_string(), quantity("32")),
                    ("memory".to_string(), quantity("256Gi")),
                    ("pods".to_string(), quantity("110")),
                ])),
                capacity: Some(BTreeMap::from([
                    ("cpu".to_string(), quantity("32")),
                    ("memory".to_string(), quantity("256Gi")),
                    ("pods".to_string(), quantity("110")),
                ])),
                ..NodeStatus::default()
            }),
        }
    }
}

/// Creates the nodes (an existing node of the same name is left as it is)
/// and waits until every one is Ready.
pub async fn create(client: &Client, specs: &[NodeSpec], timeout: Duration) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(specs)
        .map(|spec| {
            let api = api.clone();
            async move {
                match api.create(&PostParams::default(), &spec.to_node()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => {
                        Err(anyhow::Error::from(e).context(format!("creating node {}", spec.name)))
                    }
                }
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    let names: BTreeSet<String> = specs.iter().map(|s| s.name.clone()).collect();
    wait_ready(client, names, timeout).await
}

/// Waits, by watching, until every named node is Ready.
pub async fn wait_ready(
    client: &Client,
    mut pending: BTreeSet<String>,
    timeout: Duration,
) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let events = watcher(api, watcher::Config::default().labels("type=kwok")).touched_objects();
    let mut events = std::pin::pin!(events);
    let deadline = tokio::time::Instant::now() + timeout;
    while !pending.is_empty() {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(Ok(node))) => {
                if is_ready(&node) {
                    pending.remove(&node.name_any());
                }
            }
            Ok(Some(Err(_))) => continue,
            Ok(None) => bail!("the node watch ended"),
            Err(_) => {
                let some: Vec<&String> = pending.iter().take(5).collect();
                bail!(
                    "{} nodes not Ready after {timeout:?} (e.g. {some:?}); see kwok.log",
                    pending.len()
                )
            }
        }
    }
    Ok(())
}

/// Whether a node's Ready condition is True.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
