//! Node labels that keep the nodes a run has not reached yet schedulable
//! for Kata.
//!
//! RuntimeClasses are cluster-wide and move with the release, before the
//! nodes do. kata-deploy 4.1's RuntimeClasses select, besides
//! `katacontainers.io/kata-runtime=true`, the instance mark
//! `kata-deploy.katacontainers.io/<suffix|default>=true` that only the 4.1
//! installer writes: once a daemonset-mode run moved the release to 4.1
//! (before its waves), every node still on 4.0 would refuse new Kata pods
//! until its turn (days, with soaks, approvals and windows). So the run adds
//! the install marks the target's RuntimeClasses select to the release's
//! installed nodes that lack them, records what it added, and takes them off
//! again when the release returns to a version whose RuntimeClasses do not
//! select them (a rollback). Nothing is derived from version numbers: the
//! marks are read from the RuntimeClasses themselves. Only kata-deploy's
//! own marks (labels under [`MARK_PREFIX`]) that every RuntimeClass selects
//! are ever added: the hardware labels node-feature-discovery writes (SNP,
//! TDX, GPUs), which TEE classes also select, say what a node is, and are
//! never klm's to write.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use crate::error::KubeResultExt;
use crate::helm::Helm;
use crate::kata_deploy::KataDaemonSet;
use crate::release::{Release, ReleaseRef, runtime_class_node_labels};
use crate::run_record::{Records, RunRecord};

/// The prefix of kata-deploy's per-install marks on nodes
/// (`kata-deploy.katacontainers.io/<suffix|default>`, from 4.1).
pub const MARK_PREFIX: &str = "kata-deploy.katacontainers.io/";

/// The install marks RuntimeClasses select: labels under [`MARK_PREFIX`]
/// that every RuntimeClass with a node selector selects.
pub fn install_marks(selectors: &[BTreeMap<String, String>]) -> BTreeMap<String, String> {
    let Some((first, rest)) = selectors.split_first() else {
        return BTreeMap::new();
    };
    first
        .iter()
        .filter(|(key, _)| key.starts_with(MARK_PREFIX))
        .filter(|(key, value)| rest.iter().all(|s| s.get(*key) == Some(*value)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The install marks `target`'s RuntimeClasses select that `current`'s do not.
pub fn newly_required(
    current: &[BTreeMap<String, String>],
    target: &[BTreeMap<String, String>],
) -> BTreeMap<String, String> {
    let current = install_marks(current);
    install_marks(target)
        .into_iter()
        .filter(|(key, value)| current.get(key) != Some(value))
        .collect()
}

/// What a node lacks of `required`: the labels to add (a label present
/// with another value is kata-deploy's own, e.g. a pending install's
/// `false`, and is left alone).
pub fn missing(
    labels: &BTreeMap<String, String>,
    required: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    required
        .iter()
        .filter(|(key, _)| !labels.contains_key(*key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// After the release moved to the run's target (daemonset mode, before the
/// waves): gives every node that runs the release's kata-deploy and has
/// Kata installed the labels the release's RuntimeClasses now select and
/// it lacks. Records each label before adding it, so a retry or a rollback
/// knows it. Returns the nodes labelled.
pub async fn keep_schedulable(
    client: &Client,
    records: &Records,
    record: &RunRecord,
    release: &Release,
) -> anyhow::Result<Vec<String>> {
    let required = install_marks(
        &runtime_class_node_labels(&release.manifest)
            .map_err(|reason| anyhow::anyhow!("release {}: {reason}", release.reference.name))?,
    );
    if required.is_empty() {
        return Ok(Vec::new());
    }
    let daemonset = KataDaemonSet::find(client, &release.daemonset()?).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let mut labelled = Vec::new();
    for name in daemonset.nodes().await? {
        let Some(node) = nodes
            .get_opt(&name)
            .await
            .during(|| format!("reading node {name}"))?
        else {
            continue;
        };
        if !crate::nodes::selection::runs_kata(&node) {
            continue;
        }
        let add = missing(node.labels(), &required);
        if add.is_empty() {
            continue;
        }
        records
            .update(&record.release, &record.run_id, |r| {
                r.marks.entry(name.clone()).or_default().extend(add.clone());
            })
            .await?;
        let patch = serde_json::json!({"metadata": {"labels": add}});
        nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .during(|| format!("labelling node {name} for the target's RuntimeClasses"))?;
        tracing::info!(node = %name, labels = ?add.keys().collect::<Vec<_>>(), "labelled for the target's RuntimeClasses, so it takes Kata pods until its turn");
        labelled.push(name);
    }
    Ok(labelled)
}

/// After the release returned to an earlier version (a rollback): takes
/// off every label the run added that the release's RuntimeClasses no
/// longer select, and forgets it. Returns the nodes changed.
pub async fn take_back(
    client: &Client,
    helm: &Helm,
    records: &Records,
    reference: &ReleaseRef,
    run_id: &str,
) -> anyhow::Result<Vec<String>> {
    let Some((record, _)) = records.load(&reference.name).await? else {
        return Ok(Vec::new());
    };
    if record.run_id != run_id || record.marks.is_empty() {
        return Ok(Vec::new());
    }
    let release = reference.load(helm).await?;
    let selected = install_marks(
        &runtime_class_node_labels(&release.manifest)
            .map_err(|reason| anyhow::anyhow!("release {}: {reason}", reference.name))?,
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let mut changed = Vec::new();
    for (name, labels) in &record.marks {
        let unneeded: Vec<&String> = labels
            .keys()
            .filter(|key| !selected.contains_key(*key))
            .collect();
        if unneeded.is_empty() {
            continue;
        }
        let removal: serde_json::Map<String, serde_json::Value> = unneeded
            .iter()
            .map(|key| ((*key).clone(), serde_json::Value::Null))
            .collect();
        let patch = serde_json::json!({"metadata": {"labels": removal}});
        match nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => {
                return Err(crate::error::KubeError::new(
                    format!("removing the labels the run added to node {name}"),
                    e,
                )
                .into());
            }
        }
        records
            .update(&record.release, &record.run_id, |r| {
                if let Some(marks) = r.marks.get_mut(name) {
                    marks.retain(|key, _| !unneeded.contains(&key));
                    if marks.is_empty() {
                        r.marks.remove(name);
                    }
                }
            })
            .await?;
        tracing::info!(node = %name, "took off the labels the run added for the target's RuntimeClasses");
        changed.push(name.clone());
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_the_install_mark_every_class_selects_is_required() {
        let runtime = (annotations::KATA_RUNTIME_LABEL, "true");
        let mark = ("kata-deploy.katacontainers.io/default", "true");
        let snp = ("amd.feature.node.kubernetes.io/snp", "true");
        // 4.0 selects the runtime label only; 4.1 adds its instance mark.
        assert_eq!(
            newly_required(&[labels(&[runtime])], &[labels(&[runtime, mark])]),
            labels(&[mark])
        );
        // From 4.1 to main: nothing new.
        assert!(
            newly_required(&[labels(&[runtime, mark])], &[labels(&[runtime, mark])]).is_empty()
        );
        // node-feature-discovery's hardware labels, selected by the TEE
        // classes only, are never klm's to write.
        assert_eq!(
            newly_required(
                &[labels(&[runtime])],
                &[labels(&[runtime, mark]), labels(&[runtime, mark, snp])]
            ),
            labels(&[mark])
        );
        assert!(
            newly_required(
                &[labels(&[runtime])],
                &[labels(&[runtime]), labels(&[runtime, snp])]
            )
            .is_empty()
        );
        // A mark only some classes select is no install mark.
        assert!(install_marks(&[labels(&[mark]), labels(&[runtime])]).is_empty());
        assert!(install_marks(&[]).is_empty());
    }

    #[test]
    fn a_label_present_with_any_value_is_left_alone() {
        let mark = "kata-deploy.katacontainers.io/default";
        let required = labels(&[(mark, "true")]);
        assert_eq!(missing(&labels(&[]), &required), required);
        assert!(missing(&labels(&[(mark, "false")]), &required).is_empty());
        assert!(missing(&labels(&[(mark, "true")]), &required).is_empty());
    }
}
