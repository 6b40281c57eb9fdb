//! How a run holds nodes: status annotations, cordon ownership (a node that
//! was unschedulable before the run stays so), and the selection taints that
//! `complete` removes and `rollback` restores.
//!
//! Every write is a merge patch of only the fields it changes; where a write
//! depends on what was read (taints, first hold), it carries the
//! resourceVersion it read, so a concurrent change makes it retry instead of
//! overwriting.

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use super::selection::{self, Criteria, annotation};
use crate::annotations::{self, NodeStatus};
use crate::error::{KubeError, KubeResultExt};

/// The run a step acts for, as the nodes it holds name it.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    /// The run id.
    pub run_id: &'a str,
    /// The run's release, `namespace/name`.
    pub release: &'a str,
}

/// The one way a step moves a node through the upgrade's states: the node
/// must be held by the step's run (of its release), and the move must be
/// one [`NodeStatus::may_follow`] allows; refused otherwise (a
/// precondition, nothing changed). Without a run (a check run by hand), a
/// node's status is left alone. One merge patch, guarded by the
/// resourceVersion it read.
pub async fn advance(
    client: &Client,
    node: &str,
    run: Option<Holder<'_>>,
    to: NodeStatus,
) -> Result<(), HoldError> {
    if run.is_none() {
        return Ok(());
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let current = get(&nodes, node).await?;
    advance_from(client, current, run, to).await
}

/// [`advance`] from the node as the step read it (its first patch is
/// guarded by that read; a conflict reads the node again): one request
/// where the step has just read the node.
pub async fn advance_from(
    client: &Client,
    read: Node,
    run: Option<Holder<'_>>,
    to: NodeStatus,
) -> Result<(), HoldError> {
    let Some(run) = run else {
        return Ok(());
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let mut reads = Reads::from(&nodes, read);
    let node = &reads.name.clone();
    for _ in 0..CONFLICT_RETRIES {
        let current = reads.next().await?;
        let Some(patch) = status_patch(&current, node, run, to)? else {
            return Ok(());
        };
        match merge(&nodes, node, &patch).await {
            Ok(()) => {
                tracing::info!(node, status = %to, "node status");
                return Ok(());
            }
            Err(err) if err.is_conflict() => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(HoldError::Contended {
        node: node.to_string(),
    })
}

/// The patch that moves `node` (as read) to `to` for `run`: None when it is
/// there already; refused when another run (or none) holds it, or when the
/// move makes no sense.
fn status_patch(
    current: &Node,
    node: &str,
    run: Holder<'_>,
    to: NodeStatus,
) -> Result<Option<Value>, HoldError> {
    let holder = annotation(current, annotations::RUN);
    let holder_release = annotation(current, annotations::RELEASE);
    let status = annotation(current, annotations::STATUS);
    let Some(holder) = holder else {
        return Err(HoldError::NotHeld {
            node: node.to_string(),
            run: run.run_id.to_string(),
        });
    };
    if holder != run.run_id {
        return Err(HoldError::HeldByAnotherRun {
            node: node.to_string(),
            holder: holder.to_string(),
            release: holder_release.map(String::from),
            status: status.unwrap_or_default().to_string(),
        });
    }
    if !same_release(holder_release, Some(run.release)) {
        return Err(HoldError::HeldByAnotherRelease {
            node: node.to_string(),
            run: holder.to_string(),
            release: holder_release.unwrap_or_default().to_string(),
            status: status.unwrap_or_default().to_string(),
        });
    }
    let from = status.and_then(|s| s.parse::<NodeStatus>().ok());
    if from == Some(to) {
        return Ok(None);
    }
    if !from.is_some_and(|from| to.may_follow(from)) {
        return Err(HoldError::Transition {
            node: node.to_string(),
            from: status.unwrap_or("none").to_string(),
            to,
        });
    }
    Ok(Some(json!({
        "metadata": {
            "resourceVersion": current.metadata.resource_version,
            "annotations": { annotations::STATUS: to.as_str() },
        }
    })))
}

/// Why a node cannot be held or released.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// A run of the same id for another release is working on the node.
    #[error("node {node} is held by run {run} of release {release} (status {status})")]
    HeldByAnotherRelease {
        /// The node.
        node: String,
        /// The run holding it.
        run: String,
        /// Its release (`namespace/name`).
        release: String,
        /// Its status annotation.
        status: String,
    },
    /// Another run is working on the node.
    #[error("node {node} is held by run {holder} (status {status})")]
    HeldByAnotherRun {
        /// The node.
        node: String,
        /// The run holding it.
        holder: String,
        /// That run's release (`namespace/name`), when the node names it.
        release: Option<String>,
        /// Its status annotation.
        status: String,
    },
    /// The step's run does not hold the node (it was never cordoned for it,
    /// or it was released).
    #[error("node {node} is not held by run {run}")]
    NotHeld {
        /// The node.
        node: String,
        /// The step's run.
        run: String,
    },
    /// The step would move the node somewhere the state machine does not go.
    #[error("node {node} is {from}: it cannot become {to}")]
    Transition {
        /// The node.
        node: String,
        /// Its status now.
        from: String,
        /// The status asked for.
        to: NodeStatus,
    },
    /// The node does not exist.
    #[error("node {node} does not exist")]
    NoSuchNode {
        /// The node.
        node: String,
    },
    /// The recorded selection taints cannot be read.
    #[error("node {node}: annotation {key} is not a JSON list of taints")]
    BadTaintRecord {
        /// The node.
        node: String,
        /// The annotation.
        key: &'static str,
    },
    /// The node kept changing under us.
    #[error("node {node} kept changing while klm was updating it")]
    Contended {
        /// The node.
        node: String,
    },
    /// The API failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
}

impl crate::error::Classify for HoldError {
    fn status(&self) -> crate::error::ExitStatus {
        use crate::error::ExitStatus;
        match self {
            HoldError::HeldByAnotherRun { .. }
            | HoldError::HeldByAnotherRelease { .. }
            | HoldError::NotHeld { .. }
            | HoldError::Transition { .. } => ExitStatus::Precondition,
            HoldError::NoSuchNode { .. } => ExitStatus::BadInput,
            HoldError::Kube(inner) => crate::error::Classify::status(inner),
            _ => ExitStatus::Failed,
        }
    }
    fn hints(&self) -> Vec<String> {
        match self {
            // Never another run's node taken from it: a dead run is ended
            // as its exit handler would, by whoever owns it.
            HoldError::HeldByAnotherRun {
                holder, release, ..
            } => vec![
                format!("two runs never share a node: wait for run {holder} to finish"),
                format!(
                    "if run {holder} is dead (its workflow gone, its klm upgrade killed), its owner ends it with `{}` (it rolls back what was in flight, releases its nodes and closes its record; add --verification-pod FILE to verify the nodes it rolls back)",
                    crate::run_record::close_command(holder, release.as_deref())
                ),
            ],
            HoldError::HeldByAnotherRelease { release, .. } => vec![format!(
                "another kata-deploy release ({release}) upgrades this node: select only this release's nodes (the default selection), or wait for that run to finish"
            )],
            HoldError::NoSuchNode { .. } => {
                vec!["check the node name with `kubectl get nodes`".into()]
            }
            HoldError::NotHeld { node, run } => vec![format!(
                "a step of a run acts only on the nodes it holds: cordon the node first (`klm cordon --nodes {node} --run-id {run}`), or leave out --run-id for a check by hand"
            )],
            HoldError::Transition { node, .. } => vec![format!(
                "see the node's state with `klm status`; a node that went wrong is rolled back (`klm rollback --nodes {node}`), not pushed on"
            )],
            HoldError::Kube(inner) => crate::error::Classify::hints(inner),
            _ => Vec::new(),
        }
    }
}

/// What holding a node found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    /// The node.
    pub node: String,
    /// Whether it was unschedulable before the run held it.
    pub was_unschedulable: bool,
    /// Whether this call took the hold (false: the run held it already).
    pub newly_held: bool,
    /// The selection taints recorded.
    pub selection_taints: Vec<Taint>,
}

/// Holds a node for a run: records (once, atomically) whether it was
/// unschedulable before and which selection taints it carries, then cordons
/// it. A second call by the same run changes nothing it recorded.
pub async fn hold(
    client: &Client,
    node: &str,
    run_id: &str,
    selection: &Criteria,
    target_version: &str,
) -> Result<Held, HoldError> {
    let current = get(&Api::all(client.clone()), node).await?;
    hold_for_release(client, current, run_id, None, selection, target_version).await
}

/// [`hold`] from the node as the step read it (a conflict reads it again),
/// naming the release (`namespace/name`) whose run holds the node: a node
/// held by a run of the same id for another release is refused.
pub async fn hold_for_release(
    client: &Client,
    read: Node,
    run_id: &str,
    release: Option<&str>,
    selection: &Criteria,
    target_version: &str,
) -> Result<Held, HoldError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut reads = Reads::from(&nodes, read);
    let node = &reads.name.clone();
    for _ in 0..CONFLICT_RETRIES {
        let current = reads.next().await?;
        let holder = annotation(&current, annotations::RUN);
        let holder_release = annotation(&current, annotations::RELEASE);
        let status =
            annotation(&current, annotations::STATUS).and_then(|s| s.parse::<NodeStatus>().ok());
        let same_release = same_release(holder_release, release);
        refuse_other_holder(node, holder, holder_release, status, run_id, same_release)?;
        if holder == Some(run_id) && same_release {
            let was_unschedulable =
                annotation(&current, annotations::WAS_UNSCHEDULABLE) == Some("true");
            let recorded = recorded_taints(&current)?;
            let mut patch = json!({ "spec": { "unschedulable": true } });
            if status.is_none_or(|s| matches!(s, NodeStatus::Preparing | NodeStatus::Cordoned)) {
                patch["metadata"] = json!({ "annotations": { annotations::STATUS: NodeStatus::Cordoned.as_str() } });
            }
            merge(&nodes, node, &patch).await?;
            return Ok(Held {
                node: node.to_string(),
                was_unschedulable,
                newly_held: false,
                selection_taints: recorded,
            });
        }
        let was_unschedulable = is_unschedulable(&current);
        let taints = selection.selection_taints(&current);
        let patch = json!({
            "metadata": {
                "resourceVersion": current.metadata.resource_version,
                "annotations": {
                    annotations::RUN: run_id,
                    annotations::RELEASE: release,
                    annotations::WAS_UNSCHEDULABLE: was_unschedulable.to_string(),
                    annotations::SELECTION_TAINTS: if taints.is_empty() { Value::Null } else { json!(serde_json::to_string(&taints).unwrap_or_default()) },
                    annotations::TARGET_VERSION: target_version,
                    annotations::STATUS: NodeStatus::Cordoned.as_str(),
                }
            },
            "spec": { "unschedulable": true }
        });
        match merge(&nodes, node, &patch).await {
            Ok(()) => {
                tracing::info!(node, was_unschedulable, "node held and cordoned");
                return Ok(Held {
                    node: node.to_string(),
                    was_unschedulable,
                    newly_held: true,
                    selection_taints: taints,
                });
            }
            Err(err) if err.is_conflict() => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(HoldError::Contended {
        node: node.to_string(),
    })
}

/// Cordons a node for a rollback under `run_id`. A node no run holds is held
/// (recording whether it was unschedulable, so that the rollback's release
/// leaves it as it was); a node another finished run still holds changes
/// holder but keeps what that hold recorded; the selection taints recorded
/// by an earlier hold are kept, so the rollback restores them.
pub async fn hold_for_rollback(
    client: &Client,
    node: &str,
    run_id: &str,
    release: &str,
) -> Result<(), HoldError> {
    let nodes: Api<Node> = Api::all(client.clone());
    for _ in 0..CONFLICT_RETRIES {
        let current = get(&nodes, node).await?;
        let holder = annotation(&current, annotations::RUN);
        let holder_release = annotation(&current, annotations::RELEASE);
        let status =
            annotation(&current, annotations::STATUS).and_then(|s| s.parse::<NodeStatus>().ok());
        refuse_other_holder(
            node,
            holder,
            holder_release,
            status,
            run_id,
            same_release(holder_release, Some(release)),
        )?;
        let was_unschedulable = match holder {
            Some(_) => annotation(&current, annotations::WAS_UNSCHEDULABLE) == Some("true"),
            None => is_unschedulable(&current),
        };
        let patch = json!({
            "metadata": {
                "resourceVersion": current.metadata.resource_version,
                "annotations": {
                    annotations::RUN: run_id,
                    annotations::RELEASE: release,
                    annotations::WAS_UNSCHEDULABLE: was_unschedulable.to_string(),
                }
            },
            "spec": { "unschedulable": true }
        });
        match merge(&nodes, node, &patch).await {
            Ok(()) => {
                tracing::info!(node, was_unschedulable, "node cordoned for its rollback");
                return Ok(());
            }
            Err(err) if err.is_conflict() => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(HoldError::Contended {
        node: node.to_string(),
    })
}

/// How a node leaves a run.
#[derive(Debug, Clone, Default)]
pub struct Release {
    /// The status to write (none: keep it).
    pub status: Option<NodeStatus>,
    /// What becomes of the node's verified version.
    pub version: VersionMark,
    /// What becomes of the selection taints recorded when the run held it.
    pub taints: SelectionTaints,
    /// Return the node to service (never one that was unschedulable before):
    /// the run lets go of it.
    pub uncordon: bool,
    /// With a run id: only a node held for this release (`namespace/name`);
    /// a node held by a run of the same id for another release is left alone.
    pub release: Option<String>,
}

/// What releasing a node does to its verified version
/// (`current-version` and `verified-at`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum VersionMark {
    /// Leave them as they are.
    #[default]
    Keep,
    /// The node was verified at this version (stamped now, unless a retried
    /// release finds it stamped at that version already).
    Verified(String),
    /// Nothing verified runs there now: remove both.
    Clear,
}

/// What releasing a node does to the selection taints the run recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SelectionTaints {
    /// Leave the node's taints as they are.
    #[default]
    Keep,
    /// Take them off: the node's upgrade is done.
    Remove,
    /// Put back any that are missing: the node still needs an upgrade.
    Restore,
}

/// What releasing a node did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Released {
    /// The node.
    pub node: String,
    /// Whether it is schedulable now.
    pub schedulable: bool,
    /// Whether it stayed cordoned because it was unschedulable before the
    /// run (or no run held it: klm lifts only a cordon a run made).
    pub kept_cordoned: bool,
    /// Taints removed or restored.
    pub taints_changed: usize,
    /// Whether a run held it (for the report's words; not in JSON).
    #[serde(skip)]
    pub was_held: bool,
    /// Whether this release made it schedulable (it was not before).
    #[serde(skip)]
    pub uncordoned: bool,
}

/// The patch that releases a node, and what it does.
struct ReleasePatch {
    /// The merge patch, guarded by the resourceVersion read.
    patch: Value,
    /// What it does, for the report.
    released: Released,
}

/// Releases a node from a run in one patch guarded by the resourceVersion it
/// read: status, version, selection taints and schedulability together.
/// `run_id` restricts the release to a node held by that run (`None`: any).
pub async fn release(
    client: &Client,
    node: &str,
    run_id: Option<&str>,
    how: &Release,
) -> Result<Option<Released>, HoldError> {
    let current = get(&Api::all(client.clone()), node).await?;
    release_from(client, current, run_id, how).await
}

/// [`release`] from the node as the step read it (a conflict reads it again).
pub async fn release_from(
    client: &Client,
    read: Node,
    run_id: Option<&str>,
    how: &Release,
) -> Result<Option<Released>, HoldError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut reads = Reads::from(&nodes, read);
    let node = &reads.name.clone();
    for _ in 0..CONFLICT_RETRIES {
        let current = reads.next().await?;
        let Some(planned) = release_patch(&current, node, run_id, how, &crate::run_record::now())?
        else {
            return Ok(None);
        };
        match merge(&nodes, node, &planned.patch).await {
            Ok(()) => {
                let released = planned.released;
                tracing::info!(
                    node,
                    schedulable = released.schedulable,
                    kept_cordoned = released.kept_cordoned,
                    taints_changed = released.taints_changed,
                    "node released"
                );
                return Ok(Some(released));
            }
            Err(err) if err.is_conflict() => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(HoldError::Contended {
        node: node.to_string(),
    })
}

/// The patch that releases `current` as `how` says, at time `now` (for a
/// verification stamp), or None when the node is not this run's to release.
fn release_patch(
    current: &Node,
    node: &str,
    run_id: Option<&str>,
    how: &Release,
    now: &str,
) -> Result<Option<ReleasePatch>, HoldError> {
    let holder = annotation(current, annotations::RUN);
    if let (Some(wanted), Some(holder)) = (run_id, holder)
        && (wanted != holder
            || !same_release(
                annotation(current, annotations::RELEASE),
                how.release.as_deref(),
            ))
    {
        return Ok(None);
    }
    // A node no run holds any more is a run's to release only to put its
    // taints back or to write its status (a rollback after a lost hold).
    if run_id.is_some()
        && holder.is_none()
        && how.taints != SelectionTaints::Restore
        && how.status.is_none()
    {
        return Ok(None);
    }
    // Only a cordon a run made is lifted: a node no run holds was cordoned
    // by someone else (or stays cordoned from before a finished run). A
    // schedulable node keeps no cordon, whoever holds it.
    let was_unschedulable = is_unschedulable(current);
    let kept_cordoned = was_unschedulable
        && (holder.is_none()
            || annotation(current, annotations::WAS_UNSCHEDULABLE) == Some("true"));
    let recorded = recorded_taints(current)?;
    let mut taints: Vec<Taint> = selection::taints(current).to_vec();
    let before = taints.len();
    match how.taints {
        SelectionTaints::Keep => {}
        SelectionTaints::Remove => taints.retain(|t| !recorded.iter().any(|r| same_taint(r, t))),
        SelectionTaints::Restore => {
            for taint in &recorded {
                if !taints.iter().any(|t| same_taint(t, taint)) {
                    taints.push(Taint {
                        time_added: None,
                        ..taint.clone()
                    });
                }
            }
        }
    }
    let taints_changed = before.abs_diff(taints.len());
    let mut node_annotations = serde_json::Map::new();
    if let Some(status) = how.status {
        node_annotations.insert(annotations::STATUS.into(), json!(status.as_str()));
    }
    match &how.version {
        VersionMark::Keep => {}
        VersionMark::Verified(version) => {
            node_annotations.insert(annotations::CURRENT_VERSION.into(), json!(version));
            // A retried release keeps the first stamp: the runtime was
            // verified then.
            if annotation(current, annotations::CURRENT_VERSION) != Some(version.as_str())
                || annotation(current, annotations::VERIFIED_AT).is_none()
            {
                node_annotations.insert(annotations::VERIFIED_AT.into(), json!(now));
            }
        }
        VersionMark::Clear => {
            node_annotations.insert(annotations::CURRENT_VERSION.into(), Value::Null);
            node_annotations.insert(annotations::VERIFIED_AT.into(), Value::Null);
        }
    }
    let uncordon = how.uncordon && !kept_cordoned;
    if how.uncordon {
        for key in [
            annotations::RUN,
            annotations::RELEASE,
            annotations::WAS_UNSCHEDULABLE,
            annotations::TARGET_VERSION,
        ] {
            node_annotations.insert(key.into(), Value::Null);
        }
    }
    let mut spec = serde_json::Map::new();
    if taints_changed > 0 {
        spec.insert("taints".into(), json!(taints));
    }
    if uncordon {
        spec.insert("unschedulable".into(), Value::Null);
    }
    Ok(Some(ReleasePatch {
        patch: json!({
            "metadata": { "resourceVersion": current.metadata.resource_version, "annotations": node_annotations },
            "spec": spec,
        }),
        released: Released {
            node: node.to_string(),
            schedulable: uncordon || !was_unschedulable,
            kept_cordoned,
            taints_changed,
            was_held: holder.is_some(),
            uncordoned: uncordon && was_unschedulable,
        },
    }))
}

/// The node a guarded patch starts from: first as the step read it, then,
/// after a conflict, as read again.
struct Reads<'a> {
    nodes: &'a Api<Node>,
    name: String,
    first: Option<Node>,
}

impl<'a> Reads<'a> {
    fn from(nodes: &'a Api<Node>, read: Node) -> Reads<'a> {
        Reads {
            nodes,
            name: read.name_any(),
            first: Some(read),
        }
    }

    async fn next(&mut self) -> Result<Node, HoldError> {
        match self.first.take() {
            Some(node) => Ok(node),
            None => get(self.nodes, &self.name).await,
        }
    }
}

/// Reads the nodes (concurrently): every one must exist, so that a step
/// changes none when one is missing.
pub async fn get_all(client: &Client, names: &[String]) -> Result<Vec<Node>, HoldError> {
    let nodes: Api<Node> = Api::all(client.clone());
    futures::future::try_join_all(names.iter().map(|n| get(&nodes, n))).await
}

/// Reads a node, turning 404 into [`HoldError::NoSuchNode`].
pub async fn get(nodes: &Api<Node>, node: &str) -> Result<Node, HoldError> {
    nodes
        .get_opt(node)
        .await
        .during(|| format!("reading node {node}"))?
        .ok_or_else(|| HoldError::NoSuchNode {
            node: node.to_string(),
        })
}

/// Whether a node is unschedulable.
pub fn is_unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

/// The selection taints recorded on a node at hold time.
pub fn recorded_taints(node: &Node) -> Result<Vec<Taint>, HoldError> {
    match annotation(node, annotations::SELECTION_TAINTS) {
        None => Ok(Vec::new()),
        Some(raw) => serde_json::from_str(raw).map_err(|_| HoldError::BadTaintRecord {
            node: node.metadata.name.clone().unwrap_or_default(),
            key: annotations::SELECTION_TAINTS,
        }),
    }
}

/// Whether the release recorded on a node is the one asked for; a node held
/// before holds named their release, or a caller that names none, matches.
pub fn same_release(on_node: Option<&str>, wanted: Option<&str>) -> bool {
    match (on_node, wanted) {
        (Some(found), Some(wanted)) => found == wanted,
        _ => true,
    }
}

fn same_taint(a: &Taint, b: &Taint) -> bool {
    a.key == b.key && a.value == b.value && a.effect == b.effect
}

async fn merge(nodes: &Api<Node>, node: &str, patch: &Value) -> Result<(), KubeError> {
    nodes
        .patch(
            node,
            &PatchParams::apply(annotations::FIELD_MANAGER),
            &Patch::Merge(patch),
        )
        .await
        .during(|| format!("updating node {node}"))
        .map(|_| ())
}

const CONFLICT_RETRIES: usize = 8;

/// Refuses a node that another run holds mid-upgrade, or that this run id
/// holds for another release (`same_release` false).
fn refuse_other_holder(
    node: &str,
    holder: Option<&str>,
    holder_release: Option<&str>,
    status: Option<NodeStatus>,
    run_id: &str,
    same_release: bool,
) -> Result<(), HoldError> {
    let Some(holder) = holder else { return Ok(()) };
    if (holder == run_id && same_release) || !status.is_some_and(NodeStatus::in_progress) {
        return Ok(());
    }
    let status = status.map(|s| s.to_string()).unwrap_or_default();
    if holder == run_id {
        return Err(HoldError::HeldByAnotherRelease {
            node: node.to_string(),
            run: holder.to_string(),
            release: holder_release.unwrap_or_default().to_string(),
            status,
        });
    }
    Err(HoldError::HeldByAnotherRun {
        node: node.to_string(),
        holder: holder.to_string(),
        release: holder_release.map(String::from),
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_with(annotations: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "w1", "resourceVersion": "42", "annotations": annotations}
        }))
        .unwrap()
    }

    fn held(status: &str) -> Node {
        node_with(json!({
            annotations::RUN: "upgrade-1",
            annotations::RELEASE: "kube-system/kata-deploy",
            annotations::STATUS: status,
        }))
    }

    const RUN: Holder<'static> = Holder {
        run_id: "upgrade-1",
        release: "kube-system/kata-deploy",
    };

    #[test]
    fn a_step_moves_a_held_node_forward_in_one_guarded_patch() {
        let patch = status_patch(&held("cordoned"), "w1", RUN, NodeStatus::Upgrading)
            .unwrap()
            .expect("a patch");
        assert_eq!(
            patch,
            json!({"metadata": {"resourceVersion": "42", "annotations": {annotations::STATUS: "upgrading"}}})
        );
        // There already: nothing to write (a retried step).
        assert!(
            status_patch(&held("upgrading"), "w1", RUN, NodeStatus::Upgrading)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_node_not_held_by_the_run_is_refused() {
        let free = node_with(json!({}));
        assert!(matches!(
            status_patch(&free, "w1", RUN, NodeStatus::Draining),
            Err(HoldError::NotHeld { .. })
        ));
        let other = Holder {
            run_id: "upgrade-2",
            ..RUN
        };
        assert!(matches!(
            status_patch(&held("cordoned"), "w1", other, NodeStatus::Draining),
            Err(HoldError::HeldByAnotherRun { .. })
        ));
        let elsewhere = Holder {
            release: "other/kata-deploy",
            ..RUN
        };
        assert!(matches!(
            status_patch(&held("cordoned"), "w1", elsewhere, NodeStatus::Draining),
            Err(HoldError::HeldByAnotherRelease { .. })
        ));
    }

    #[test]
    fn a_move_that_makes_no_sense_is_refused() {
        let refused = status_patch(&held("completed"), "w1", RUN, NodeStatus::Upgrading);
        match refused {
            Err(HoldError::Transition { from, to, .. }) => {
                assert_eq!((from.as_str(), to), ("completed", NodeStatus::Upgrading));
            }
            other => panic!("expected a refused transition, got {other:?}"),
        }
        assert!(status_patch(&held("cordoned"), "w1", RUN, NodeStatus::Verifying).is_err());
        // A rollback or a failure may come from anywhere.
        for status in ["cordoned", "upgrading", "verifying", "failed"] {
            assert!(status_patch(&held(status), "w1", RUN, NodeStatus::RollingBack).is_ok());
        }
    }

    #[test]
    fn the_state_machine_goes_forward_and_rolls_back_from_anywhere() {
        use NodeStatus::*;
        assert!(Draining.may_follow(Cordoned));
        assert!(Upgrading.may_follow(Draining));
        assert!(Upgrading.may_follow(Verifying), "an upgrade may be retried");
        assert!(Verifying.may_follow(Upgrading));
        assert!(
            !Verifying.may_follow(Cordoned),
            "nothing to verify before an upgrade"
        );
        assert!(!Draining.may_follow(Upgrading));
        for from in NodeStatus::ALL {
            assert!(RollingBack.may_follow(from) && Failed.may_follow(from));
            for written_elsewhere in [Preparing, Cordoned, Completed, RolledBack] {
                assert!(!written_elsewhere.may_follow(from));
            }
        }
    }

    #[test]
    fn taints_are_compared_without_their_timestamps() {
        let a = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let b = Taint {
            time_added: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            )),
            ..a.clone()
        };
        assert!(same_taint(&a, &b));
        assert!(!same_taint(
            &a,
            &Taint {
                effect: "NoExecute".into(),
                ..a.clone()
            }
        ));
    }

    /// A node in wave 1 of run upgrade-1: cordoned by the run, with the
    /// selection taint `kata=upgrade:NoSchedule` recorded and on the node.
    fn cordoned_by_the_run(extra: serde_json::Value) -> Node {
        let mut node: Node = serde_json::from_value(json!({
            "metadata": {"name": "w1", "resourceVersion": "42", "annotations": {
                annotations::RUN: "upgrade-1",
                annotations::RELEASE: "kube-system/kata-deploy",
                annotations::STATUS: "verified",
                annotations::WAS_UNSCHEDULABLE: "false",
                annotations::SELECTION_TAINTS: r#"[{"key":"kata","value":"upgrade","effect":"NoSchedule"}]"#,
            }},
            "spec": {"unschedulable": true, "taints": [
                {"key": "kata", "value": "upgrade", "effect": "NoSchedule"},
                {"key": "gpu", "effect": "NoSchedule"},
            ]},
        }))
        .unwrap();
        if let (Some(map), Some(extra)) = (node.metadata.annotations.as_mut(), extra.as_object()) {
            for (key, value) in extra {
                map.insert(key.clone(), value.as_str().unwrap().to_string());
            }
        }
        node
    }

    fn completed_at(version: &str) -> Release {
        Release {
            status: Some(NodeStatus::Completed),
            version: VersionMark::Verified(version.into()),
            taints: SelectionTaints::Remove,
            uncordon: true,
            release: Some("kube-system/kata-deploy".into()),
        }
    }

    #[test]
    fn completing_a_node_stamps_its_version_takes_the_taints_off_and_lets_it_go_in_one_patch() {
        let node = cordoned_by_the_run(json!({}));
        let planned = release_patch(&node, "w1", Some("upgrade-1"), &completed_at("3.28.0"), "T")
            .unwrap()
            .expect("the run's node");
        assert_eq!(
            planned.patch,
            json!({
                "metadata": {"resourceVersion": "42", "annotations": {
                    annotations::STATUS: "completed",
                    annotations::CURRENT_VERSION: "3.28.0",
                    annotations::VERIFIED_AT: "T",
                    annotations::RUN: null,
                    annotations::RELEASE: null,
                    annotations::WAS_UNSCHEDULABLE: null,
                    annotations::TARGET_VERSION: null,
                }},
                "spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}], "unschedulable": null},
            })
        );
        assert!(planned.released.schedulable && planned.released.uncordoned);
        assert_eq!(planned.released.taints_changed, 1);
    }

    #[test]
    fn a_retried_completion_keeps_the_first_verification_stamp() {
        let node = cordoned_by_the_run(json!({
            annotations::CURRENT_VERSION: "3.28.0",
            annotations::VERIFIED_AT: "EARLIER",
        }));
        let planned = release_patch(&node, "w1", Some("upgrade-1"), &completed_at("3.28.0"), "T")
            .unwrap()
            .unwrap();
        assert!(
            planned.patch["metadata"]["annotations"]
                .get(annotations::VERIFIED_AT)
                .is_none()
        );
    }

    #[test]
    fn a_node_unschedulable_before_the_run_stays_cordoned() {
        let node = cordoned_by_the_run(json!({annotations::WAS_UNSCHEDULABLE: "true"}));
        let planned = release_patch(&node, "w1", Some("upgrade-1"), &completed_at("3.28.0"), "T")
            .unwrap()
            .unwrap();
        assert!(planned.patch["spec"].get("unschedulable").is_none());
        assert!(planned.released.kept_cordoned && !planned.released.schedulable);
    }

    #[test]
    fn another_runs_or_another_releases_node_is_not_released() {
        let node = cordoned_by_the_run(json!({}));
        let how = completed_at("3.28.0");
        assert!(
            release_patch(&node, "w1", Some("upgrade-2"), &how, "T")
                .unwrap()
                .is_none()
        );
        let elsewhere = Release {
            release: Some("other/kata-deploy".into()),
            ..how
        };
        assert!(
            release_patch(&node, "w1", Some("upgrade-1"), &elsewhere, "T")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_rollback_puts_back_the_taints_and_clears_an_unverified_version() {
        // The hold was lost (a person uncordoned it) and the taint removed.
        let mut node = cordoned_by_the_run(json!({annotations::CURRENT_VERSION: "3.28.0"}));
        for key in [annotations::RUN, annotations::RELEASE] {
            node.metadata.annotations.as_mut().unwrap().remove(key);
        }
        node.spec.as_mut().unwrap().taints = Some(vec![]);
        node.spec.as_mut().unwrap().unschedulable = None;
        let how = Release {
            status: Some(NodeStatus::RolledBack),
            version: VersionMark::Clear,
            taints: SelectionTaints::Restore,
            uncordon: true,
            release: None,
        };
        let planned = release_patch(&node, "w1", Some("upgrade-1"), &how, "T")
            .unwrap()
            .unwrap();
        let annotations = &planned.patch["metadata"]["annotations"];
        assert_eq!(annotations[annotations::CURRENT_VERSION], Value::Null);
        assert_eq!(annotations[annotations::STATUS], "rolled-back");
        assert_eq!(
            planned.patch["spec"]["taints"],
            json!([{"key": "kata", "value": "upgrade", "effect": "NoSchedule"}])
        );
        // Without a status or taints to put back, a node no run holds is not the run's.
        let uncordon_only = Release {
            uncordon: true,
            ..Default::default()
        };
        assert!(
            release_patch(&node, "w1", Some("upgrade-1"), &uncordon_only, "T")
                .unwrap()
                .is_none()
        );
    }
}
