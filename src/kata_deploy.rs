//! kata-deploy on nodes: its DaemonSet's current revision, restarting its pod
//! on one node (daemonset mode), and its per-node install Jobs (job mode).
//! Every wait watches; nothing polls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use crate::annotations;
use crate::error::{Classify, ExitStatus, KubeError, KubeResultExt};
use crate::release::ManifestObject;
use crate::wait::{self, Check, WaitError, watch_until};

/// The pod label the DaemonSet controller stamps with the template's hash.
const REVISION_HASH_LABEL: &str = "controller-revision-hash";
/// The label kata-deploy's per-node Job template carries: `install` or `cleanup`.
const JOB_STAGE_LABEL: &str = "kata-deploy/stage";
/// The label of the release that rendered a per-node Job's template.
const JOB_RELEASE_LABEL: &str = "app.kubernetes.io/instance";
/// The dispatcher's annotation with a per-node Job's node, as named.
const JOB_NODE_NAME_ANNOTATION: &str = "kata-deploy-job-dispatcher/node-name";

/// Why kata-deploy did not come up as expected.
#[derive(Debug, thiserror::Error)]
pub enum KataDeployError {
    /// The release's DaemonSet is not in the cluster.
    #[error("DaemonSet {namespace}/{name} of the release does not exist")]
    NoDaemonSet {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The DaemonSet has no ControllerRevision yet.
    #[error("DaemonSet {name} has no revision yet")]
    NoRevision {
        /// Its name.
        name: String,
    },
    /// A wait ended without its condition.
    #[error("node {node}")]
    Wait {
        /// The node.
        node: String,
        /// The wait.
        #[source]
        source: WaitError,
    },
    /// The API failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
}

impl Classify for KataDeployError {
    fn status(&self) -> ExitStatus {
        match self {
            KataDeployError::NoDaemonSet { .. } => ExitStatus::Precondition,
            KataDeployError::Kube(inner) => inner.status(),
            KataDeployError::Wait { source, .. } => source.status(),
            KataDeployError::NoRevision { .. } => ExitStatus::Failed,
        }
    }
    fn hints(&self) -> Vec<String> {
        match self {
            KataDeployError::NoDaemonSet { .. } => vec!["is the release in job mode? pass --deployment-mode job; or check `helm get manifest`".into()],
            KataDeployError::Wait { source, .. } => {
                let mut hints = source.hints();
                hints.push("inspect the kata-deploy pod on the node (kubectl describe pod / logs) and the node's events".into());
                hints
            }
            KataDeployError::Kube(inner) => inner.hints(),
            KataDeployError::NoRevision { .. } => Vec::new(),
        }
    }
}

/// The DaemonSet's template as the controller currently rolls it out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// The `controller-revision-hash` pods of this template carry.
    pub hash: String,
    /// The ControllerRevision number.
    pub number: i64,
    /// The kata-deploy image tag of the template (its version).
    pub version: Option<String>,
    /// Whether kata-deploy's container has a readiness (or startup) probe,
    /// so that its pod turns Ready only once Kata is installed (3.31.0 on).
    /// Before, the pod is Ready when its container starts and installs
    /// after: a restart then waits for kata-deploy's own label instead.
    pub ready_means_installed: bool,
}

/// The release's kata-deploy DaemonSet.
#[derive(Clone)]
pub struct KataDaemonSet {
    client: Client,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    uid: String,
    selector: String,
    /// The DaemonSet as found, when its controller had observed its spec
    /// then (its current revision needs no wait).
    observed: Option<DaemonSet>,
}

/// What restarting kata-deploy on one node did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Restarted {
    /// The node.
    pub node: String,
    /// The pod that was replaced, if any.
    pub old_pod: Option<String>,
    /// The Ready pod now on the node.
    pub new_pod: String,
    /// Its revision hash.
    pub revision: String,
    /// Its version (image tag).
    pub version: Option<String>,
    /// True when the node already ran the current revision (nothing restarted).
    pub already_current: bool,
}

impl KataDaemonSet {
    /// Finds the DaemonSet named in the release's manifest.
    pub async fn find(client: &Client, object: &ManifestObject) -> Result<Self, KataDeployError> {
        let api: Api<DaemonSet> = Api::namespaced(client.clone(), &object.namespace);
        let ds = api
            .get_opt(&object.name)
            .await
            .during(|| format!("reading DaemonSet {}/{}", object.namespace, object.name))?
            .ok_or_else(|| KataDeployError::NoDaemonSet {
                namespace: object.namespace.clone(),
                name: object.name.clone(),
            })?;
        let match_labels = ds
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone())
            .unwrap_or_default();
        Ok(Self {
            client: client.clone(),
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            uid: ds.uid().unwrap_or_default(),
            selector: selector_string(&match_labels),
            observed: observed(&ds).then_some(ds),
        })
    }

    /// The label selector of the DaemonSet's pods.
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The revision the controller rolls out now: waits (watching) until it
    /// has observed the latest spec, unless it had when found, then takes
    /// the newest ControllerRevision.
    pub async fn current_revision(&self, timeout: Duration) -> Result<Revision, KataDeployError> {
        let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let ds = match &self.observed {
            Some(ds) => ds.clone(),
            None => watch_until(
                api,
                wait::by_name(&self.name),
                timeout,
                format!("DaemonSet {} to observe its spec", self.name),
                daemonset_observed,
            )
            .await
            .map_err(|source| KataDeployError::Wait {
                node: "-".into(),
                source,
            })?,
        };
        let revisions: Api<ControllerRevision> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let newest = revisions
            .list(&ListParams::default().labels(&self.selector))
            .await
            .during(|| format!("listing revisions of DaemonSet {}", self.name))?
            .items
            .into_iter()
            .filter(|r| r.owner_references().iter().any(|o| o.uid == self.uid))
            .max_by_key(|r| r.revision)
            .ok_or_else(|| KataDeployError::NoRevision {
                name: self.name.clone(),
            })?;
        let hash = newest
            .labels()
            .get(REVISION_HASH_LABEL)
            .cloned()
            .unwrap_or_default();
        let container = ds
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(kata_deploy_container);
        let version = container
            .and_then(|c| c.image.as_deref())
            .and_then(image_tag);
        let ready_means_installed =
            container.is_some_and(|c| c.readiness_probe.is_some() || c.startup_probe.is_some());
        Ok(Revision {
            hash,
            number: newest.revision,
            version,
            ready_means_installed,
        })
    }

    /// The nodes the DaemonSet's pods run on.
    pub async fn nodes(&self) -> Result<Vec<String>, KataDeployError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let pods = api
            .list(&ListParams::default().labels(&self.selector))
            .await
            .during(|| format!("listing the pods of DaemonSet {}", self.name))?;
        let mut nodes: Vec<String> = pods
            .items
            .iter()
            .filter(|p| self.owns(p))
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        nodes.sort();
        nodes.dedup();
        Ok(nodes)
    }

    /// The DaemonSet's pods on a node (not terminating).
    pub async fn pods_on(&self, node: &str) -> Result<Vec<Pod>, KataDeployError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = ListParams::default()
            .labels(&self.selector)
            .fields(&format!("spec.nodeName={node}"));
        let pods = api
            .list(&params)
            .await
            .during(|| format!("listing kata-deploy pods on {node}"))?;
        Ok(pods
            .items
            .into_iter()
            .filter(|p| self.owns(p) && p.metadata.deletion_timestamp.is_none())
            .collect())
    }

    /// The DaemonSet's pods (not terminating) on each of `nodes`: a list
    /// per node for a few, one list of all its pods for more (a run's
    /// planned nodes: one request, not one per node).
    pub async fn pods_on_each(
        &self,
        nodes: &[String],
    ) -> Result<BTreeMap<String, Vec<Pod>>, KataDeployError> {
        const FEW: usize = 4;
        let mut found: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
        if nodes.len() <= FEW {
            for node in nodes {
                found.insert(node.clone(), self.pods_on(node).await?);
            }
            return Ok(found);
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let pods = api
            .list(&ListParams::default().labels(&self.selector))
            .await
            .during(|| "listing kata-deploy pods".to_string())?;
        let wanted: std::collections::BTreeSet<&String> = nodes.iter().collect();
        for pod in pods.items {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            if let Some(node) = node.filter(|n| wanted.contains(n))
                && self.owns(&pod)
                && pod.metadata.deletion_timestamp.is_none()
            {
                found.entry(node).or_default().push(pod);
            }
        }
        Ok(found)
    }

    /// Restarts kata-deploy on a node at `revision`: deletes a pod of an older
    /// revision (by UID, so a retry never deletes its replacement), waits until
    /// it is gone and a pod of the current revision is Ready, then until the
    /// node carries the kata-runtime label. Does nothing to a node already at
    /// the current revision.
    pub async fn restart_on(
        &self,
        node: &str,
        revision: &Revision,
        timeout: Duration,
    ) -> Result<Restarted, KataDeployError> {
        // One deadline for the whole restart: the pod, then the label.
        let deadline = tokio::time::Instant::now() + timeout;
        let pods = self.pods_on(node).await?;
        if let Some(current) = pods
            .iter()
            .find(|p| revision_of(p) == Some(revision.hash.as_str()) && is_ready(p))
        {
            wait_for_runtime_label(&self.client, node, remaining(deadline)).await?;
            return Ok(Restarted {
                node: node.into(),
                old_pod: None,
                new_pod: current.name_any(),
                revision: revision.hash.clone(),
                version: pod_version(current),
                already_current: true,
            });
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let stale: Vec<&Pod> = pods
            .iter()
            .filter(|p| revision_of(p) != Some(revision.hash.as_str()))
            .collect();
        if !revision.ready_means_installed && !stale.is_empty() {
            // Without a probe, Ready proves nothing, and the node already
            // carries kata-deploy's label from its last install: take the
            // label off, so that only the new pod's finished install puts it
            // back (the node is cordoned for its turn; running pods stay).
            remove_runtime_label(&self.client, node).await?;
        }
        let mut old_uids = Vec::new();
        let mut old_pod = None;
        for pod in stale {
            let uid = pod.uid().unwrap_or_default();
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            tracing::info!(node, pod = %pod.name_any(), "deleting kata-deploy pod to restart it at the new revision");
            match api.delete(&pod.name_any(), &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => {}
                Err(e) => {
                    return Err(KubeError::new(
                        format!("deleting kata-deploy pod {} on {node}", pod.name_any()),
                        e,
                    )
                    .into());
                }
            }
            old_uids.push(uid);
            old_pod = Some(pod.name_any());
        }
        let config = watcher::Config::default()
            .labels(&self.selector)
            .fields(&format!("spec.nodeName={node}"));
        let what = format!(
            "kata-deploy on {node} to be Ready at revision {}",
            revision.hash
        );
        let new_pod = watch_until(api, config, remaining(deadline), what, |pods| {
            replacement_ready(pods, &self.uid, &old_uids, &revision.hash)
        })
        .await
        .map_err(|source| KataDeployError::Wait {
            node: node.into(),
            source,
        })?;
        wait_for_runtime_label(&self.client, node, remaining(deadline)).await?;
        Ok(Restarted {
            node: node.into(),
            old_pod,
            new_pod: new_pod.name_any(),
            revision: revision.hash.clone(),
            version: pod_version(&new_pod),
            already_current: false,
        })
    }

    fn owns(&self, pod: &Pod) -> bool {
        pod.owner_references().iter().any(|o| o.uid == self.uid)
    }
}

/// Takes kata-deploy's `katacontainers.io/kata-runtime` label off a node
/// (kata-deploy writes it again at the end of every install).
async fn remove_runtime_label(client: &Client, node: &str) -> Result<(), KataDeployError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch =
        serde_json::json!({"metadata": {"labels": {annotations::KATA_RUNTIME_LABEL: null}}});
    tracing::info!(
        node,
        "kata-deploy has no readiness probe at this version: its label marks the end of the install"
    );
    nodes
        .patch(
            node,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .during(|| {
            format!(
                "removing {} from node {node}",
                annotations::KATA_RUNTIME_LABEL
            )
        })?;
    Ok(())
}

/// kata-deploy's container in a pod spec (by name; the first container of
/// a spec without one).
fn kata_deploy_container(
    spec: &k8s_openapi::api::core::v1::PodSpec,
) -> Option<&k8s_openapi::api::core::v1::Container> {
    spec.containers
        .iter()
        .find(|c| c.name == crate::release::KATA_DEPLOY_CONTAINER)
        .or_else(|| spec.containers.first())
}

/// Waits until kata-deploy has labelled the node `katacontainers.io/kata-runtime=true`.
pub async fn wait_for_runtime_label(
    client: &Client,
    node: &str,
    timeout: Duration,
) -> Result<(), KataDeployError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let what = format!(
        "node {node} to carry {}=true",
        annotations::KATA_RUNTIME_LABEL
    );
    watch_until(nodes, wait::by_name(node), timeout, what, node_runs_kata)
        .await
        .map_err(|source| KataDeployError::Wait {
            node: node.into(),
            source,
        })
}

/// What one node's install Job ended with (job mode).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Installed {
    /// The node.
    pub node: String,
    /// The install Job (None: deleted after its TTL before klm read it; the
    /// dispatcher, which waited for it, reported the node installed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The installer image tag (its version).
    pub version: Option<String>,
}

/// Waits (watching) until each node's per-node install Job of the release
/// created at or after `since` has completed and the node carries the
/// kata-runtime label; a failed Job fails at once. Called once the helm
/// upgrade that dispatched the Jobs succeeded: its hook, the dispatcher,
/// waited for every Job and exits non-zero when one failed, so a node whose
/// Job is gone already (`job.ttlSecondsAfterFinished` shorter than the
/// dispatcher's wait for the others) was installed.
pub async fn wait_install_jobs(
    client: &Client,
    release: &crate::release::ReleaseRef,
    nodes: &[String],
    since: Option<&str>,
    timeout: Duration,
) -> Result<Vec<Installed>, KataDeployError> {
    // One deadline for the whole wait: the Jobs, then the labels.
    let deadline = tokio::time::Instant::now() + timeout;
    let api: Api<Job> = Api::namespaced(client.clone(), &release.namespace);
    let config = watcher::Config::default().labels(&format!(
        "{JOB_STAGE_LABEL}=install,{JOB_RELEASE_LABEL}={}",
        release.name
    ));
    let since: Option<k8s_openapi::jiff::Timestamp> = since.and_then(|s| s.parse().ok());
    let what = format!("the install Jobs of {} to complete", nodes.join(", "));
    let installed = watch_until(api, config, remaining(deadline), what, |jobs| {
        install_jobs_done(jobs, nodes, since.as_ref())
    })
    .await
    .map_err(|source| KataDeployError::Wait {
        node: nodes.join(","),
        source,
    })?;
    futures::future::try_join_all(
        nodes
            .iter()
            .map(|node| wait_for_runtime_label(client, node, remaining(deadline))),
    )
    .await?;
    Ok(installed)
}

/// Deletes the release's finished per-node install Jobs of these nodes,
/// before a helm upgrade dispatches to them again: kata-deploy's in-tree
/// dispatcher (3.32, 4.0) adopts a Job of the name it would create that
/// carries its owner label, an earlier wave's completed one included, and
/// would then skip the node's install (a rollback right after an upgrade,
/// within the Jobs' TTL, would reinstall nothing). Running Jobs are left
/// alone. Returns the Jobs deleted.
pub async fn clear_finished_install_jobs(
    client: &Client,
    release: &crate::release::ReleaseRef,
    nodes: &[String],
) -> Result<Vec<String>, KataDeployError> {
    let api: Api<Job> = Api::namespaced(client.clone(), &release.namespace);
    let selector = format!(
        "{JOB_STAGE_LABEL}=install,{JOB_RELEASE_LABEL}={}",
        release.name
    );
    let jobs = api
        .list(&ListParams::default().labels(&selector))
        .await
        .during(|| format!("listing the install Jobs of release {}", release.name))?;
    let mut deleted = Vec::new();
    for job in jobs.items.iter().filter(|j| {
        job_node(j).is_some_and(|n| nodes.iter().any(|w| w == n))
            && (job_condition(j, "Complete") || job_condition(j, "Failed"))
    }) {
        let name = job.name_any();
        let params = DeleteParams {
            propagation_policy: Some(kube::api::PropagationPolicy::Background),
            preconditions: Some(Preconditions {
                uid: job.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => deleted.push(name),
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => {}
            Err(e) => {
                return Err(KubeError::new(format!("deleting install Job {name}"), e).into());
            }
        }
    }
    if !deleted.is_empty() {
        tracing::info!(jobs = %deleted.join(", "), "deleted earlier install Jobs of the nodes, so the dispatcher installs them again");
    }
    Ok(deleted)
}

/// What is left of a deadline.
fn remaining(deadline: tokio::time::Instant) -> Duration {
    deadline.saturating_duration_since(tokio::time::Instant::now())
}

/// Wait condition: the DaemonSet controller has observed the latest spec.
fn daemonset_observed(found: &[Arc<DaemonSet>]) -> Check<DaemonSet> {
    match found.first() {
        Some(ds) if observed(ds) => Check::Done(ds.as_ref().clone()),
        Some(_) => Check::Pending,
        None => Check::Failed("the DaemonSet was deleted".into()),
    }
}

/// Wait condition: the node carries the kata-runtime label.
fn node_runs_kata(found: &[Arc<Node>]) -> Check<()> {
    match found.first() {
        Some(n) if crate::nodes::selection::runs_kata(n) => Check::Done(()),
        Some(_) => Check::Pending,
        None => Check::Failed("the node was deleted".into()),
    }
}

/// Wait condition over a node's kata-deploy pods: the deleted ones
/// (`old_uids`) are gone and the DaemonSet's (`owner`) pod at `revision` is
/// Ready; a hopeless pod (crash loop, image pull) fails at once.
fn replacement_ready(
    pods: &[Arc<Pod>],
    owner: &str,
    old_uids: &[String],
    revision: &str,
) -> Check<Pod> {
    let owned: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| p.owner_references().iter().any(|o| o.uid == owner))
        .collect();
    if owned
        .iter()
        .any(|p| old_uids.contains(&p.uid().unwrap_or_default()))
    {
        return Check::Pending;
    }
    let Some(pod) = owned
        .iter()
        .find(|p| revision_of(p) == Some(revision) && p.metadata.deletion_timestamp.is_none())
    else {
        return Check::Pending;
    };
    if let Some(reason) = hopeless(pod) {
        return Check::Failed(format!("pod {} {reason}", pod.name_any()));
    }
    if is_ready(pod) {
        Check::Done(pod.as_ref().clone())
    } else {
        Check::Pending
    }
}

/// Wait condition over install Jobs: each node's latest Job created at or
/// after `since` has completed; a failed one fails at once.
fn install_jobs_done(
    jobs: &[Arc<Job>],
    nodes: &[String],
    since: Option<&k8s_openapi::jiff::Timestamp>,
) -> Check<Vec<Installed>> {
    let mut done = Vec::new();
    for node in nodes {
        let latest = jobs
            .iter()
            .filter(|j| job_node(j) == Some(node.as_str()))
            .filter(|j| match (since, &j.metadata.creation_timestamp) {
                // Creation times have second precision; the wave started within that second.
                (Some(since), Some(created)) => created.0.as_second() >= since.as_second(),
                _ => true,
            })
            .max_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let Some(job) = latest else {
            done.push(Installed {
                node: node.clone(),
                job: None,
                version: None,
            });
            continue;
        };
        if job_condition(job, "Failed") {
            return Check::Failed(format!(
                "install Job {} for node {node} failed",
                job.name_any()
            ));
        }
        if !job_condition(job, "Complete") {
            return Check::Pending;
        }
        let version = job
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| {
                p.init_containers
                    .as_ref()
                    .and_then(|c| c.first())
                    .or_else(|| p.containers.first())
            })
            .and_then(|c| c.image.as_deref())
            .and_then(image_tag);
        done.push(Installed {
            node: node.clone(),
            job: Some(job.name_any()),
            version,
        });
    }
    Check::Done(done)
}

/// The node a per-node install Job installs: the dispatcher's annotation
/// with the name as it is, else the node the Job's pod is pinned to. Never
/// the node label alone, which holds a sanitised form of the name.
fn job_node(job: &Job) -> Option<&str> {
    job.annotations()
        .get(JOB_NODE_NAME_ANNOTATION)
        .map(String::as_str)
        .or_else(|| {
            job.spec
                .as_ref()?
                .template
                .spec
                .as_ref()?
                .node_name
                .as_deref()
        })
}

fn job_condition(job: &Job, kind: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// Whether the DaemonSet controller has seen the latest spec.
fn observed(ds: &DaemonSet) -> bool {
    let generation = ds.metadata.generation.unwrap_or(0);
    ds.status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0)
        >= generation
}

/// The pod's revision hash.
pub fn revision_of(pod: &Pod) -> Option<&str> {
    pod.labels().get(REVISION_HASH_LABEL).map(String::as_str)
}

/// Whether the pod is Ready.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The kata-deploy version a pod runs: its kata-deploy container's image tag.
pub fn pod_version(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(kata_deploy_container)
        .and_then(|c| c.image.as_deref())
        .and_then(image_tag)
}

/// The tag of an image reference (`repo:tag` or `repo:tag@digest`).
pub fn image_tag(image: &str) -> Option<String> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_segment = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last_segment.split_once(':').map(|(_, tag)| tag.to_string())
}

/// A reason a pod will not become Ready without someone's help: an image
/// that cannot be pulled, a crash loop, a configuration error.
pub fn hopeless(pod: &Pod) -> Option<String> {
    const HOPELESS: [&str; 7] = [
        "ErrImagePull",
        "ImagePullBackOff",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "InvalidImageName",
        "RunContainerError",
    ];
    let status = pod.status.as_ref()?;
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find_map(|w| {
            let reason = w.reason.as_deref()?;
            HOPELESS.contains(&reason).then(|| {
                format!(
                    "is stuck in {reason}: {}",
                    w.message.clone().unwrap_or_default()
                )
            })
        })
}

fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dispatcher's label of a per-node Job's node: the name sanitised
    /// for a label value (lower case, `[a-z0-9-]` only, hashed when it
    /// changed on main), so it is never compared with a node's name.
    const JOB_NODE_LABEL: &str = "kata-deploy-job-dispatcher/node";

    #[test]
    fn image_tags_are_read_from_references() {
        assert_eq!(
            image_tag("quay.io/kata-containers/kata-deploy:3.28.0").as_deref(),
            Some("3.28.0")
        );
        assert_eq!(
            image_tag("localhost:5000/kata-deploy:3.28.0@sha256:abc").as_deref(),
            Some("3.28.0")
        );
        assert_eq!(image_tag("localhost:5000/kata-deploy"), None);
    }

    fn object<T: serde::de::DeserializeOwned>(json: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(json).unwrap())
    }

    fn kata_pod(uid: &str, owner: &str, revision: &str, ready: bool) -> Arc<Pod> {
        object(serde_json::json!({
            "metadata": {
                "name": format!("kata-deploy-{uid}"),
                "uid": uid,
                "labels": {REVISION_HASH_LABEL: revision},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "kata-deploy", "uid": owner}],
            },
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
    }

    /// A per-node install Job as the dispatcher makes it: the node's name
    /// sanitised in the label, as it is in the annotation.
    fn install_job(name: &str, node: &str, created: &str, condition: Option<&str>) -> Arc<Job> {
        let conditions: Vec<serde_json::Value> = condition
            .map(|kind| serde_json::json!({"type": kind, "status": "True"}))
            .into_iter()
            .collect();
        let sanitised: String = node
            .to_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        object(serde_json::json!({
            "metadata": {
                "name": name,
                "creationTimestamp": created,
                "labels": {JOB_NODE_LABEL: sanitised, JOB_STAGE_LABEL: "install"},
                "annotations": {JOB_NODE_NAME_ANNOTATION: node},
            },
            "spec": {"template": {"spec": {"containers": [{"name": "install", "image": "quay.io/kata-containers/kata-deploy:3.33.0"}]}}},
            "status": {"conditions": conditions},
        }))
    }

    #[test]
    fn a_restart_waits_for_the_old_pod_to_go_and_the_new_one_to_be_ready() {
        let old = kata_pod("old", "ds", "rev1", true);
        let starting = kata_pod("new", "ds", "rev2", false);
        let ready = kata_pod("new", "ds", "rev2", true);
        let foreign = kata_pod("other", "another-ds", "rev2", true);
        let wanted = |pods: &[Arc<Pod>]| replacement_ready(pods, "ds", &["old".into()], "rev2");
        assert!(matches!(
            wanted(&[old.clone(), ready.clone()]),
            Check::Pending
        ));
        assert!(matches!(wanted(&[starting]), Check::Pending));
        assert!(matches!(wanted(&[foreign]), Check::Pending));
        assert!(matches!(wanted(&[ready]), Check::Done(p) if p.name_any() == "kata-deploy-new"));
    }

    #[test]
    fn a_node_is_done_once_labelled_and_failed_once_deleted() {
        let node = |labelled: bool| -> Arc<Node> {
            let labels = if labelled {
                serde_json::json!({annotations::KATA_RUNTIME_LABEL: "true"})
            } else {
                serde_json::json!({})
            };
            object(serde_json::json!({"metadata": {"name": "w1", "labels": labels}}))
        };
        assert!(matches!(node_runs_kata(&[node(false)]), Check::Pending));
        assert!(matches!(node_runs_kata(&[node(true)]), Check::Done(())));
        assert!(matches!(node_runs_kata(&[]), Check::Failed(_)));
    }

    #[test]
    fn a_daemonset_is_observed_once_its_generation_is() {
        let ds = |generation: i64, observed: i64| -> Arc<DaemonSet> {
            object(serde_json::json!({
                "metadata": {"name": "kata-deploy", "generation": generation},
                "status": {"observedGeneration": observed, "currentNumberScheduled": 0, "desiredNumberScheduled": 0, "numberMisscheduled": 0, "numberReady": 0},
            }))
        };
        assert!(matches!(daemonset_observed(&[ds(3, 2)]), Check::Pending));
        assert!(matches!(daemonset_observed(&[ds(3, 3)]), Check::Done(_)));
        assert!(matches!(daemonset_observed(&[]), Check::Failed(_)));
    }

    #[test]
    fn install_jobs_of_this_wave_decide_each_node() {
        let nodes = ["w1".to_string(), "w2".to_string()];
        let since: k8s_openapi::jiff::Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        let earlier_wave = install_job("old-w1", "w1", "2026-12-02T09:00:00Z", Some("Complete"));
        let w1 = install_job("w1", "w1", "2026-12-02T10:00:05Z", Some("Complete"));
        let w2_running = install_job("w2", "w2", "2026-12-02T10:00:05Z", None);
        let w2_done = install_job("w2", "w2", "2026-12-02T10:00:05Z", Some("Complete"));
        let w2_failed = install_job("w2", "w2", "2026-12-02T10:00:05Z", Some("Failed"));
        let check = |jobs: &[Arc<Job>]| install_jobs_done(jobs, &nodes, Some(&since));
        // The earlier wave's Job is not this wave's: w1's is still to come
        // (while w2 runs), or gone after its TTL once the dispatcher is done.
        assert!(matches!(
            check(&[earlier_wave.clone(), w2_running.clone()]),
            Check::Pending
        ));
        let Check::Done(ttl) = check(&[earlier_wave.clone(), w2_done.clone()]) else {
            panic!("w1's Job was deleted after its TTL; the dispatcher reported it");
        };
        assert_eq!(ttl[0].job, None);
        assert!(matches!(check(&[w1.clone(), w2_running]), Check::Pending));
        assert!(
            matches!(check(&[w1.clone(), w2_failed]), Check::Failed(why) if why.contains("install Job w2 for node w2 failed"))
        );
        let Check::Done(installed) = check(&[earlier_wave, w1, w2_done]) else {
            panic!("both nodes installed");
        };
        assert_eq!(installed[0].job.as_deref(), Some("w1"));
        assert_eq!(installed[1].version.as_deref(), Some("3.33.0"));
    }

    #[test]
    fn a_dotted_node_is_found_by_its_jobs_annotation_not_its_sanitised_label() {
        let node = "ip-10-0-1-23.ec2.internal".to_string();
        let since: k8s_openapi::jiff::Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        let job = install_job(
            "kata-deploy-install-ip-10-0-1-23-ec2-internal",
            &node,
            "2026-12-02T10:00:05Z",
            Some("Complete"),
        );
        assert_eq!(
            job.labels()[JOB_NODE_LABEL],
            "ip-10-0-1-23-ec2-internal",
            "the label is not the name"
        );
        let Check::Done(installed) =
            install_jobs_done(&[job], std::slice::from_ref(&node), Some(&since))
        else {
            panic!("the dotted node's Job completed");
        };
        assert_eq!(installed[0].node, node);
        // A Job without the annotation (older dispatchers) is the node it is
        // pinned to.
        let pinned: Arc<Job> = object(serde_json::json!({
            "metadata": {"name": "j", "creationTimestamp": "2026-12-02T10:00:05Z"},
            "spec": {"template": {"spec": {"nodeName": node, "containers": []}}},
            "status": {"conditions": [{"type": "Complete", "status": "True"}]},
        }));
        assert_eq!(job_node(&pinned), Some(node.as_str()));
    }

    #[test]
    fn selectors_are_rendered_from_match_labels() {
        let labels = BTreeMap::from([
            ("name".to_string(), "kata-deploy".to_string()),
            ("app".to_string(), "x".to_string()),
        ]);
        assert_eq!(selector_string(&labels), "app=x,name=kata-deploy");
    }
}
