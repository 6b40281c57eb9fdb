//! Draining a node: evicting its pods through the Eviction API, so
//! PodDisruptionBudgets are honoured, and waiting until they are gone.
//! DaemonSet pods (kata-deploy among them) and mirror pods stay.

use std::collections::BTreeSet;
use std::time::Duration;

use backon::{ConstantBuilder, Retryable};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{EvictParams, ListParams};
use kube::core::labels::{Selector, SelectorExt};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use futures::future::try_join_all;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::annotations::NodeStatus;
use crate::error::{Classify, ExitStatus, KubeError};
use crate::helm::Helm;
use crate::nodes::hold;
use crate::release::ReleaseRef;
use crate::wait::{Check, WaitError, watch_until};

/// Which pods a drain evicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrainScope {
    /// Every pod that may go (DaemonSet, mirror and finished pods stay).
    #[default]
    All,
    /// Only the pods of the release's RuntimeClasses: those the upgrade affects.
    Kata,
}

impl DrainScope {
    /// The scope as the flag writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DrainScope::All => "all",
            DrainScope::Kata => "kata",
        }
    }
}

/// Which pods a drain evicts, resolved: every pod that may go, or only the
/// pods of these RuntimeClasses (the release's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every pod that may go.
    #[default]
    All,
    /// Only pods whose `runtimeClassName` is one of these.
    RuntimeClasses(BTreeSet<String>),
}

impl Scope {
    /// The scope `asked` for `release`: for `kata`, the RuntimeClasses of
    /// the release's manifest as it stands.
    pub async fn resolve(
        asked: DrainScope,
        helm: &Helm,
        release: &ReleaseRef,
    ) -> anyhow::Result<Scope> {
        match asked {
            DrainScope::All => Ok(Scope::All),
            DrainScope::Kata => {
                let classes = release.load(helm).await?.runtime_class_names()?;
                if classes.is_empty() {
                    return Err(crate::error::UserError::precondition(format!(
                        "release {} has no RuntimeClass, so --drain-scope kata would evict nothing",
                        release.name
                    ))
                    .hint("use --drain-scope all, or check that the release's runtimeClasses are enabled")
                    .into());
                }
                Ok(Scope::RuntimeClasses(classes))
            }
        }
    }
}

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
/// workflow driving the upgrade: its own step pods are never evicted; with
/// a scope of RuntimeClasses, neither is a pod of another class.
pub fn stays(pod: &Pod, run_id: Option<&str>, scope: &Scope) -> Option<&'static str> {
    let why = stays_in_any_drain(pod, run_id);
    if why.is_some() {
        return why;
    }
    match scope {
        Scope::RuntimeClasses(classes)
            if !pod
                .spec
                .as_ref()
                .and_then(|s| s.runtime_class_name.as_ref())
                .is_some_and(|class| classes.contains(class)) =>
        {
            Some("not a pod of the release's RuntimeClasses (drain scope kata)")
        }
        _ => None,
    }
}

fn stays_in_any_drain(pod: &Pod, run_id: Option<&str>) -> Option<&'static str> {
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
    scope: &Scope,
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
        if let Some(reason) = stays(pod, run_id, scope) {
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
pub(crate) async fn evict(
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
    use std::collections::BTreeMap;

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
        assert_eq!(stays(&ds, None, &Scope::All), Some("DaemonSet pod"));
        let mirror = pod(
            serde_json::json!({"metadata": {"name": "etcd", "annotations": {"kubernetes.io/config.mirror": "x"}}}),
        );
        assert_eq!(
            stays(&mirror, None, &Scope::All),
            Some("mirror (static) pod")
        );
        let done = pod(
            serde_json::json!({"metadata": {"name": "job-x"}, "status": {"phase": "Succeeded"}}),
        );
        assert_eq!(stays(&done, None, &Scope::All), Some("already finished"));
        let app = pod(
            serde_json::json!({"metadata": {"name": "web", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u"}]}, "status": {"phase": "Running"}}),
        );
        assert_eq!(stays(&app, None, &Scope::All), None);
        let step = pod(
            serde_json::json!({"metadata": {"name": "upgrade-x-cordon", "labels": {WORKFLOW_LABEL: "upgrade-x"}}}),
        );
        assert_eq!(
            stays(&step, Some("upgrade-x"), &Scope::All),
            Some("a pod of the workflow running this upgrade")
        );
        assert_eq!(stays(&step, Some("another"), &Scope::All), None);
    }

    #[test]
    fn a_kata_scope_evicts_only_the_releases_runtime_classes() {
        let scope = Scope::RuntimeClasses(BTreeSet::from(["kata-qemu".to_string()]));
        let of_class = |class: Option<&str>| {
            pod(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {"runtimeClassName": class, "containers": []},
                "status": {"phase": "Running"}
            }))
        };
        assert_eq!(stays(&of_class(Some("kata-qemu")), None, &scope), None);
        assert!(stays(&of_class(Some("gvisor")), None, &scope).is_some());
        assert!(stays(&of_class(None), None, &scope).is_some());
        assert_eq!(stays(&of_class(None), None, &Scope::All), None);
    }

    #[test]
    fn a_budget_covers_the_pods_its_selector_matches() {
        let labels = BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "front".to_string()),
        ]);
        let selector =
            |json: serde_json::Value| -> LabelSelector { serde_json::from_value(json).unwrap() };
        assert!(selects(
            &selector(serde_json::json!({"matchLabels": {"app": "web"}})),
            &labels
        ));
        assert!(!selects(
            &selector(serde_json::json!({"matchLabels": {"app": "db"}})),
            &labels
        ));
        assert!(selects(
            &selector(serde_json::json!({"matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                {"key": "gone", "operator": "DoesNotExist"}
            ]})),
            &labels
        ));
        assert!(!selects(
            &selector(serde_json::json!({"matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["front"]}
            ]})),
            &labels
        ));
        // An empty selector selects every pod of the namespace (policy/v1).
        assert!(selects(&LabelSelector::default(), &labels));
    }
}

/// Which nodes a drain step drains, for which run.
#[derive(Debug, Clone)]
pub struct Request {
    /// The nodes (cordoned already).
    pub nodes: crate::run::Targets,
    /// The release (whose run record names the run).
    pub release: crate::release::ReleaseRef,
    /// The run (None: a drain by hand).
    pub run_id: Option<String>,
    /// How long evictions may wait for PodDisruptionBudgets and pods to go.
    pub timeout: Duration,
    /// Which pods go.
    pub scope: DrainScope,
}

/// The drain step: a drain for a run on record moves its nodes on to
/// `draining` (the run must hold them); one by hand (no run, or a run klm
/// has no record of) only evicts. `evicting` is a client without retries:
/// evictions refused by a PodDisruptionBudget are retried by [`drain`]
/// itself, within its timeout.
pub async fn drain_nodes(
    client: &Client,
    evicting: &Client,
    helm: &Helm,
    request: &Request,
) -> anyhow::Result<Vec<Drained>> {
    // Resolved before any node moves on: a scope that cannot be resolved
    // changes nothing.
    let scope = Scope::resolve(request.scope, helm, &request.release).await?;
    let run =
        crate::run::Run::optional(client, &request.release, request.run_id.as_deref()).await?;
    let names = request
        .nodes
        .resolve(
            run.as_deref(),
            client,
            &request.release,
            request.run_id.as_deref(),
        )
        .await?;
    let read = hold::get_all(client, &names).await?;
    let holder = run.as_ref().map(crate::run::Run::holder);
    for node in read {
        hold::advance_from(client, node, holder, NodeStatus::Draining).await?;
    }
    let drained = try_join_all(names.iter().map(|n| {
        drain(
            evicting,
            n,
            request.run_id.as_deref(),
            &scope,
            request.timeout,
        )
    }))
    .await?;
    Ok(drained)
}

/// What draining a node would do, before anything is cordoned: the pods it
/// would evict and the PodDisruptionBudgets that allow no disruption now
/// (each would hold its pods' eviction until it does, or the timeout).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    /// The node.
    pub node: String,
    /// Pods it would evict (`namespace/name`).
    pub evicts: Vec<String>,
    /// Budgets that would block an eviction now (`namespace/name`).
    pub blocked_by: Vec<String>,
}

/// What draining each of `nodes` would do with `scope` (see [`Preview`]).
pub async fn preview(
    client: &Client,
    nodes: &[String],
    scope: &Scope,
) -> Result<Vec<Preview>, KubeError> {
    let budgets = Api::<PodDisruptionBudget>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| KubeError::new("listing the PodDisruptionBudgets", e))?
        .items;
    let pods: Api<Pod> = Api::all(client.clone());
    let mut previews = Vec::new();
    for node in nodes {
        let on_node = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .map_err(|e| KubeError::new(format!("listing the pods on {node}"), e))?
            .items;
        let mut preview = Preview {
            node: node.clone(),
            ..Preview::default()
        };
        let mut blocked = BTreeSet::new();
        for pod in on_node.iter().filter(|p| stays(p, None, scope).is_none()) {
            let namespace = pod.namespace().unwrap_or_default();
            preview
                .evicts
                .push(format!("{namespace}/{}", pod.name_any()));
            for budget in budgets
                .iter()
                .filter(|b| b.namespace().as_deref() == Some(namespace.as_str()))
                .filter(|b| {
                    b.status
                        .as_ref()
                        .is_some_and(|s| s.disruptions_allowed.unwrap_or(0) < 1)
                })
                .filter(|b| {
                    b.spec
                        .as_ref()
                        .and_then(|s| s.selector.as_ref())
                        .is_some_and(|s| selects(s, pod.labels()))
                })
            {
                blocked.insert(format!("{namespace}/{}", budget.name_any()));
            }
        }
        preview.blocked_by = blocked.into_iter().collect();
        previews.push(preview);
    }
    Ok(previews)
}

/// Whether a label selector selects `labels`, as kube reads one; a
/// selector the API would not accept selects nothing.
fn selects(selector: &LabelSelector, labels: &std::collections::BTreeMap<String, String>) -> bool {
    Selector::try_from(selector.clone()).is_ok_and(|selector| selector.matches(labels))
}
