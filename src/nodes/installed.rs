//! Which kata-deploy version each node runs now, before a run changes it:
//! what rollback returns that node to. In one release, nodes may run
//! different versions (daemonset mode keeps OnDelete; job mode installs one
//! wave at a time), so the release's version is not the node's.
//!
//! * daemonset mode: the image tag of the node's kata-deploy pod;
//! * job mode: the chart version of the newest revision whose installer ran
//!   on the node (`job.nodes` empty or naming it), from helm's history; else
//!   the version klm last verified on the node.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use serde_json::Value;

use crate::annotations;
use crate::helm::Helm;
use crate::kata_deploy::{self, KataDaemonSet};
use crate::release::{Release, ReleaseRef};
use crate::versions::DeploymentMode;

/// The version each node runs, for the nodes the cluster can tell; nodes
/// missing from the answer run the release's version as far as klm knows.
/// `release` is `reference` as loaded now.
pub async fn observe(
    client: &Client,
    helm: &Helm,
    reference: &ReleaseRef,
    release: &Release,
    mode: DeploymentMode,
    nodes: &[String],
) -> anyhow::Result<BTreeMap<String, String>> {
    if nodes.is_empty() {
        return Ok(BTreeMap::new());
    }
    match mode {
        DeploymentMode::Daemonset => daemonset(client, helm, reference, release, nodes).await,
        DeploymentMode::Job => job(client, helm, reference, release, nodes).await,
    }
}

async fn daemonset(
    client: &Client,
    helm: &Helm,
    reference: &ReleaseRef,
    release: &Release,
    nodes: &[String],
) -> anyhow::Result<BTreeMap<String, String>> {
    let daemonset = KataDaemonSet::find(client, &release.daemonset()?).await?;
    let current = daemonset
        .current_revision(std::time::Duration::from_secs(60))
        .await?;
    // An image tag is a chart version only where the release was once at
    // it: a digest-pinned or custom `image.tag` is not (a rollback to it
    // would name a chart that may not exist).
    let released: Vec<String> = reference
        .history(helm)
        .await?
        .iter()
        .map(|h| h.chart_version(&release.chart_name))
        .collect();
    let api: Api<Node> = Api::all(client.clone());
    let mut found = BTreeMap::new();
    let pods = daemonset.pods_on_each(nodes).await?;
    for node in nodes {
        let Some(pod) = pods.get(node).and_then(|p| p.first()) else {
            continue;
        };
        // A pod of the current template runs the release's chart version;
        // an older one, the version its image names, if the release had it;
        // else the version klm last verified on the node.
        let version = if kata_deploy::revision_of(pod) == Some(current.hash.as_str()) {
            Some(release.chart_version.clone())
        } else {
            match kata_deploy::pod_version(pod).filter(|tag| released.contains(tag)) {
                Some(tag) => Some(tag),
                None => verified_version(&api, node).await?,
            }
        };
        if let Some(version) = version {
            found.insert(node.clone(), version);
        }
    }
    Ok(found)
}

/// The version klm last verified on a node (its annotation).
async fn verified_version(api: &Api<Node>, node: &str) -> anyhow::Result<Option<String>> {
    Ok(api
        .get_opt(node)
        .await?
        .as_ref()
        .and_then(|n| crate::nodes::selection::annotation(n, annotations::CURRENT_VERSION))
        .map(String::from))
}

async fn job(
    client: &Client,
    helm: &Helm,
    reference: &ReleaseRef,
    release: &Release,
    nodes: &[String],
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut history = reference.history(helm).await?;
    history.sort_by_key(|h| std::cmp::Reverse(h.revision));
    let api: Api<Node> = Api::all(client.clone());
    let mut found = BTreeMap::new();
    // A run of klm that moved the release without hooks (job mode from
    // 4.1) installed its waves' nodes itself: no revision records that, but
    // klm verified each node at the version it moved the release to, which
    // is newer than every revision before that move.
    let mut dispatched: Vec<String> = Vec::new();
    for entry in history.iter().filter(|h| h.was_deployed()) {
        if entry.dispatched_by_klm() {
            dispatched.push(entry.chart_version(&release.chart_name));
            continue;
        }
        if entry.values_only() {
            continue;
        }
        if !dispatched.is_empty() {
            let pending: Vec<String> = nodes
                .iter()
                .filter(|n| !found.contains_key(*n))
                .cloned()
                .collect();
            for node in pending {
                if let Some(version) = verified_version(&api, &node).await?
                    && dispatched.contains(&version)
                {
                    found.insert(node, version);
                }
            }
        }
        let pending: Vec<&String> = nodes.iter().filter(|n| !found.contains_key(*n)).collect();
        if pending.is_empty() {
            break;
        }
        let values = reference.values_at(helm, entry.revision).await?;
        let scope = installer_scope(&values);
        let version = entry.chart_version(&release.chart_name);
        for node in pending {
            if scope.as_ref().is_none_or(|listed| listed.contains(node)) {
                found.insert(node.clone(), version.clone());
            }
        }
    }
    let missing: Vec<&String> = nodes.iter().filter(|n| !found.contains_key(*n)).collect();
    for node in missing {
        if let Some(version) = verified_version(&api, node).await? {
            found.insert(node.clone(), version);
        }
    }
    Ok(found)
}

/// The nodes a job-mode revision's installer ran on: `job.nodes`, or None
/// (every node its selector matches) when the list is empty.
pub fn installer_scope(values: &Value) -> Option<Vec<String>> {
    let listed: Vec<String> = crate::values::lookup(values, "job.nodes")?
        .as_array()?
        .iter()
        .filter_map(|n| n.as_str().map(String::from))
        .collect();
    (!listed.is_empty()).then_some(listed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_empty_job_node_list_means_every_selected_node() {
        assert_eq!(installer_scope(&json!({})), None);
        assert_eq!(installer_scope(&json!({"job": {"nodes": []}})), None);
        assert_eq!(
            installer_scope(&json!({"job": {"nodes": ["a", "b"]}})),
            Some(vec!["a".to_string(), "b".to_string()])
        );
    }
}
