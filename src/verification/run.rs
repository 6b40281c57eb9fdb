//! Running verification pods: one per node, concurrently, each watched to an
//! end. A pod that cannot succeed (a failed container, an image that cannot
//! be pulled, a crash loop, a pod that cannot be scheduled) fails as soon as
//! that is certain, with its status, events and logs; only a pod that stays
//! undecided waits for the timeout.

use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use super::VerificationError;
use super::template::VerificationPod;
use crate::annotations;
use crate::nodes::NodeFailure;
use crate::wait::{Check, WaitError, watch_until};

/// Container waiting reasons that mean the pod will not get better by itself.
const HOPELESS_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// How one node's verification ended.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeVerdict {
    /// The node.
    pub node: String,
    /// The verification pod.
    pub pod: String,
    /// Whether the pod succeeded.
    pub passed: bool,
    /// Why it failed: the pod's status, events and logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds from creating the pod to its end.
    pub seconds: f64,
    /// Whether the failed pod was kept for inspection.
    pub kept: bool,
}

impl NodeVerdict {
    /// The verdict as the Event klm records on its node; `context` (e.g.
    /// `after the soak`) opens a failure's reason.
    pub fn event(&self, context: Option<&str>) -> crate::events::NodeEvent {
        use crate::events::NodeEvent;
        let pod = self.pod.clone();
        if self.passed {
            return NodeEvent::VerificationPassed { pod };
        }
        let why = self.reason.clone().unwrap_or_default();
        let reason = match context {
            Some(context) => format!("{context}: {why}"),
            None => why,
        };
        NodeEvent::VerificationFailed { pod, reason }
    }
}

/// Runs each node's pod (see [`super::Pods::assign`]) concurrently and
/// returns a verdict per node.
pub async fn verify_nodes(
    client: &Client,
    nodes: &[(String, &VerificationPod)],
    run_id: &str,
    timeout: Duration,
    keep_failed: bool,
) -> Result<Vec<NodeVerdict>, VerificationError> {
    let runs = nodes.iter().map(|(node, template)| async move {
        let pod = template
            .for_node(node, run_id)
            .map_err(|e| VerificationError::Run {
                node: node.clone(),
                pod: "?".into(),
                reason: e.to_string(),
            })?;
        verify_node(client, node, pod, timeout, keep_failed).await
    });
    join_all(runs).await.into_iter().collect()
}

/// Verifies nodes again after a rollback; the nodes that did not pass, with why.
pub async fn reverify(
    client: &Client,
    nodes: &[(String, &VerificationPod)],
    run_id: &str,
    timeout: Duration,
    keep_failed: bool,
) -> Result<Vec<NodeFailure>, VerificationError> {
    let verdicts = verify_nodes(client, nodes, run_id, timeout, keep_failed).await?;
    Ok(verdicts
        .into_iter()
        .filter(|v| !v.passed)
        .map(|v| {
            NodeFailure::new(
                v.node,
                format!(
                    "verification after rollback failed: {}",
                    v.reason.unwrap_or_default()
                ),
            )
        })
        .collect())
}

/// Why the apiserver refused to create a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The identity klm runs as may not create pods there (RBAC).
    NotPermitted,
    /// The namespace does not exist.
    NoNamespace,
    /// The pod itself is invalid (a mistake in the template).
    Invalid(String),
    /// An admission check rejected the pod (e.g. its RuntimeClass is gone):
    /// on a node being upgraded, that node fails its verification.
    Rejected(String),
}

/// Classifies an apiserver refusal of a pod creation; None for anything
/// that is not a refusal (a lost connection, a timeout).
pub fn refusal(err: &kube::Error) -> Option<Refusal> {
    let kube::Error::Api(status) = err else {
        return None;
    };
    if status.is_not_found() {
        Some(Refusal::NoNamespace)
    } else if status.is_invalid() || status.code == 400 {
        Some(Refusal::Invalid(status.message.clone()))
    } else if status.is_forbidden() {
        // RBAC says "User ... cannot create resource ..."; admission plugins
        // and webhooks answer 403 with their own reason.
        if status.message.contains("cannot create resource") {
            Some(Refusal::NotPermitted)
        } else {
            Some(Refusal::Rejected(status.message.clone()))
        }
    } else {
        None
    }
}

/// Checks, with a server-side dry run of the pod for a sample node, that the
/// namespace exists and the apiserver accepts the pod, before anything changes.
pub async fn dry_run(client: &Client, template: &VerificationPod) -> anyhow::Result<()> {
    dry_run_checking(client, template, true).await
}

/// Like [`dry_run`] for a step that verifies nodes: a pod rejected by
/// admission is not refused here (it fails each node's verification, with
/// the apiserver's message); a missing namespace, an invalid pod or missing
/// permissions still are.
pub async fn dry_run_access(client: &Client, template: &VerificationPod) -> anyhow::Result<()> {
    dry_run_checking(client, template, false).await
}

async fn dry_run_checking(
    client: &Client,
    template: &VerificationPod,
    refuse_rejected: bool,
) -> anyhow::Result<()> {
    let pod = template.for_node("klm-dry-run", "dry-run")?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), template.namespace());
    let params = PostParams {
        dry_run: true,
        field_manager: Some(annotations::FIELD_MANAGER.into()),
    };
    let err = match pods.create(&params, &pod).await {
        Ok(_) => return Ok(()),
        Err(err) => err,
    };
    match refusal(&err) {
        Some(Refusal::NoNamespace) => Err(crate::error::UserError::precondition(format!(
            "the verification namespace {:?} does not exist",
            template.namespace()
        ))
        .hint("create it, or pass --verification-namespace with an existing namespace")
        .into()),
        Some(Refusal::Invalid(message)) => Err(crate::error::UserError::bad_input(format!(
            "the apiserver refuses the verification pod: {message}"
        ))
        .into()),
        Some(Refusal::Rejected(message)) if refuse_rejected => {
            Err(crate::error::UserError::precondition(format!(
                "the apiserver rejects the verification pod: {message}"
            ))
            .hint("fix what the message names (a RuntimeClass, a policy) or the pod template")
            .into())
        }
        Some(Refusal::Rejected(message)) => {
            tracing::warn!(%message, "the apiserver rejects the verification pod; each node's verification fails");
            Ok(())
        }
        Some(Refusal::NotPermitted) | None => Err(crate::error::KubeError::new(
            format!(
                "checking the verification pod in namespace {}",
                template.namespace()
            ),
            err,
        )
        .into()),
    }
}

/// Verifies `node` with `pod`: one attempt, under a name of its own, after
/// the leftovers of an interrupted one; passed, failed (with the pod's
/// diagnostics) or rejected at creation.
async fn verify_node(
    client: &Client,
    node: &str,
    pod: Pod,
    timeout: Duration,
    keep_failed: bool,
) -> Result<NodeVerdict, VerificationError> {
    let attempt = Attempt::new(client, node, pod);
    attempt.clear_earlier_attempts().await?;
    let started = Instant::now();
    let uid = match attempt.create().await? {
        Created::Pod { uid } => uid,
        Created::Rejected(message) => {
            let reason = format!("the apiserver rejected the verification pod: {message}");
            return Ok(attempt.verdict(Some(reason), started.elapsed(), false));
        }
    };
    let outcome = attempt.watch_to_its_end(&uid, timeout).await;
    let took = started.elapsed();
    let reason = match outcome {
        Ok(()) => {
            let seconds = took.as_secs_f64();
            tracing::info!(node, pod = %attempt.name, seconds, "verification passed");
            delete(&attempt.pods, &attempt.name).await;
            return Ok(attempt.verdict(None, took, false));
        }
        Err(WaitError::Failed { reason, .. }) => reason,
        Err(WaitError::Timeout { after, .. }) => {
            let phase = attempt
                .pods
                .get_opt(&attempt.name)
                .await
                .ok()
                .flatten()
                .map(|p| summary(&p))
                .unwrap_or_else(|| "gone".into());
            format!(
                "no result after {}s (the pod is {phase}); raise --verification-timeout if the check is slow",
                after.as_secs()
            )
        }
        Err(source) => {
            return Err(VerificationError::Wait {
                node: node.to_string(),
                pod: attempt.name,
                source,
            });
        }
    };
    let details = diagnostics(client, &attempt.pods, &attempt.name, &uid).await;
    tracing::warn!(node, pod = %attempt.name, %reason, "verification failed");
    if !keep_failed {
        delete(&attempt.pods, &attempt.name).await;
    }
    Ok(attempt.verdict(Some(format!("{reason}\n{details}")), took, keep_failed))
}

/// One attempt at verifying a node: its pod under a name of its own (a
/// watch by name would mix an earlier attempt's deletion up with this
/// one's pod).
struct Attempt<'a> {
    node: &'a str,
    pod: Pod,
    name: String,
    namespace: String,
    pods: Api<Pod>,
}

/// What creating an attempt's pod gave.
enum Created {
    /// The pod, by uid.
    Pod { uid: String },
    /// Rejected at creation (admission: the RuntimeClass the new version
    /// removed, a policy): the node fails its verification.
    Rejected(String),
}

impl<'a> Attempt<'a> {
    fn new(client: &Client, node: &'a str, mut pod: Pod) -> Attempt<'a> {
        let namespace = pod.namespace().unwrap_or_default();
        let name = attempt_name(&pod.name_any());
        pod.metadata.name = Some(name.clone());
        Attempt {
            node,
            pod,
            name,
            pods: Api::namespaced(client.clone(), &namespace),
            namespace,
        }
    }

    fn failed(&self, reason: String) -> VerificationError {
        VerificationError::Run {
            node: self.node.to_string(),
            pod: self.name.clone(),
            reason,
        }
    }

    fn api_failed(&self, action: String, source: kube::Error) -> VerificationError {
        VerificationError::Api {
            node: self.node.to_string(),
            pod: self.name.clone(),
            source: crate::error::KubeError::new(action, source),
        }
    }

    /// Deletes the pods of this run on this node that an interrupted
    /// attempt left, and waits until they are gone: each attempt starts
    /// afresh.
    async fn clear_earlier_attempts(&self) -> Result<(), VerificationError> {
        let labels = self.pod.labels();
        let selector = [annotations::POD_RUN_LABEL, annotations::POD_NODE_LABEL]
            .iter()
            .filter_map(|key| labels.get(*key).map(|value| format!("{key}={value}")))
            .collect::<Vec<_>>()
            .join(",");
        let leftovers = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| {
                self.api_failed(format!("listing earlier verification pods ({selector})"), e)
            })?;
        for old in leftovers.items {
            let (old_name, uid) = (old.name_any(), old.uid().unwrap_or_default());
            delete(&self.pods, &old_name).await;
            tokio::time::timeout(
                Duration::from_secs(120),
                await_condition(self.pods.clone(), &old_name, conditions::is_deleted(&uid)),
            )
            .await
            .map_err(|_| {
                self.failed(format!(
                    "an earlier verification pod {old_name} is still being deleted after 120s"
                ))
            })?
            .map_err(|e| self.failed(e.to_string()))?;
        }
        Ok(())
    }

    /// Creates the attempt's pod.
    async fn create(&self) -> Result<Created, VerificationError> {
        let (node, name) = (self.node, &self.name);
        tracing::info!(node, pod = %name, namespace = %self.namespace, "verification pod created");
        let params = PostParams {
            field_manager: Some(annotations::FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match self.pods.create(&params, &self.pod).await {
            Ok(created) => Ok(Created::Pod {
                uid: created.uid().unwrap_or_default(),
            }),
            Err(err) => {
                match refusal(&err) {
                    Some(Refusal::Rejected(message) | Refusal::Invalid(message)) => {
                        tracing::warn!(node, pod = %name, %message, "verification pod rejected at creation");
                        Ok(Created::Rejected(message))
                    }
                    _ => Err(self
                        .api_failed(format!("creating it in namespace {}", self.namespace), err)),
                }
            }
        }
    }

    /// Watches the pod `uid` until it succeeded (Ok), failed or vanished
    /// (`WaitError::Failed`), or `timeout` passed.
    async fn watch_to_its_end(&self, uid: &str, timeout: Duration) -> Result<(), WaitError> {
        // A consistent first list (not the apiserver's cache): an earlier pod
        // of this name, deleted just before our create, must not replay its
        // deletion into the watch, where it would read as ours being deleted.
        let config = watcher::Config::default()
            .fields(&format!("metadata.name={}", self.name))
            .list_semantic(watcher::ListSemantic::MostRecent);
        // Ours is gone only once it has been seen and then vanished.
        let mut seen = false;
        watch_until(
            self.pods.clone(),
            config,
            timeout,
            format!("verification pod {} on {}", self.name, self.node),
            |objects| match objects.iter().find(|p| p.uid().as_deref() == Some(uid)) {
                Some(pod) => {
                    seen = true;
                    judge(pod)
                }
                None if seen => Check::Failed("the pod was deleted before it finished".into()),
                None => Check::Pending,
            },
        )
        .await
    }

    /// The attempt's verdict after `took` from creating its pod: passed
    /// without a reason.
    fn verdict(&self, reason: Option<String>, took: Duration, kept: bool) -> NodeVerdict {
        NodeVerdict {
            node: self.node.to_string(),
            pod: self.name.clone(),
            passed: reason.is_none(),
            reason,
            seconds: took.as_secs_f64(),
            kept,
        }
    }
}

/// Decides a pod's fate from its status.
fn judge(pod: &Pod) -> Check<()> {
    let Some(status) = pod.status.as_ref() else {
        return Check::Pending;
    };
    match status.phase.as_deref() {
        Some("Succeeded") => return Check::Done(()),
        Some("Failed") => return Check::Failed(format!("the pod failed: {}", containers(pod))),
        _ => {}
    }
    let statuses = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten());
    for container in statuses {
        if let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref())
            && let Some(reason) = waiting.reason.as_deref()
            && HOPELESS_WAITING.contains(&reason)
        {
            return Check::Failed(format!(
                "container {} is {reason}: {}",
                container.name,
                waiting.message.as_deref().unwrap_or("")
            ));
        }
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    if let Some(condition) = unschedulable {
        return Check::Failed(format!(
            "the pod cannot be scheduled: {}",
            condition.message.as_deref().unwrap_or("no node fits")
        ));
    }
    Check::Pending
}

/// `phase (container states)`, for messages.
fn summary(pod: &Pod) -> String {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    format!("{phase}; {}", containers(pod))
}

fn containers(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let all: Vec<String> = status
        .into_iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .map(|c| {
            let state = c.state.as_ref();
            if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
                format!(
                    "container {} exited with code {} ({}){}",
                    c.name,
                    t.exit_code,
                    t.reason.as_deref().unwrap_or("-"),
                    t.message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                )
            } else if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
                format!(
                    "container {} waiting ({})",
                    c.name,
                    w.reason.as_deref().unwrap_or("-")
                )
            } else {
                format!("container {} running", c.name)
            }
        })
        .collect();
    if all.is_empty() {
        "no container started".into()
    } else {
        all.join(", ")
    }
}

/// The pod's status, events and logs, for a failure message.
async fn diagnostics(client: &Client, pods: &Api<Pod>, name: &str, uid: &str) -> String {
    let mut out = Vec::new();
    if let Ok(Some(pod)) = pods.get_opt(name).await {
        out.push(format!("  status: {}", summary(&pod)));
        let namespace = pod.namespace().unwrap_or_default();
        let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
        match events
            .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
            .await
        {
            Ok(list) if !list.items.is_empty() => {
                out.push("  events:".into());
                for event in list.items.iter().rev().take(10).rev() {
                    out.push(format!(
                        "    {} {}: {}",
                        event.type_.as_deref().unwrap_or(""),
                        event.reason.as_deref().unwrap_or(""),
                        event.message.as_deref().unwrap_or("").trim()
                    ));
                }
            }
            Ok(_) => out.push("  events: none".into()),
            Err(e) => out.push(format!("  events unavailable: {e}")),
        }
        for container in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            let params = LogParams {
                container: Some(container.name.clone()),
                tail_lines: Some(20),
                ..LogParams::default()
            };
            match pods.logs(name, &params).await {
                Ok(logs) if logs.trim().is_empty() => {
                    out.push(format!("  logs of {}: empty", container.name))
                }
                Ok(logs) => out.push(format!(
                    "  logs of {} (last 20 lines):\n{}",
                    container.name,
                    indent(&logs)
                )),
                Err(e) => out.push(format!(
                    "  logs of {} unavailable: {}",
                    container.name,
                    short(&e)
                )),
            }
        }
    }
    out.join("\n")
}

fn short(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `base` with a suffix of its own for one verification attempt, within the
/// 63 characters of a pod name.
fn attempt_name(base: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or_default();
    let base: String = base.chars().take(57).collect();
    format!("{}-{:05x}", base.trim_end_matches('-'), nanos & 0xf_ffff)
}

async fn delete(pods: &Api<Pod>, name: &str) {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::background()
    };
    if let Err(err) = pods.delete(name, &params).await
        && !crate::error::is_not_found(&err)
    {
        tracing::warn!(pod = name, error = %err, "could not delete the verification pod");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn refusals_are_told_apart_by_the_apiservers_answer() {
        assert_eq!(
            refusal(&answer(404, "NotFound", "namespaces \"x\" not found")),
            Some(Refusal::NoNamespace)
        );
        assert_eq!(
            refusal(&answer(422, "Invalid", "spec.containers: Required value")),
            Some(Refusal::Invalid("spec.containers: Required value".into()))
        );
        assert_eq!(
            refusal(&answer(
                403,
                "Forbidden",
                "User \"x\" cannot create resource \"pods\""
            )),
            Some(Refusal::NotPermitted)
        );
        assert_eq!(
            refusal(&answer(
                403,
                "Forbidden",
                "pod rejected: RuntimeClass \"kata\" not found"
            )),
            Some(Refusal::Rejected(
                "pod rejected: RuntimeClass \"kata\" not found".into()
            ))
        );
        assert_eq!(refusal(&answer(500, "InternalError", "etcd timeout")), None);
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "status": status}))
            .unwrap()
    }

    #[test]
    fn success_and_failure_are_judged_from_the_phase() {
        assert!(matches!(
            judge(&pod(serde_json::json!({"phase": "Succeeded"}))),
            Check::Done(())
        ));
        let failed = pod(serde_json::json!({"phase": "Failed", "containerStatuses": [
            {"name": "verify", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}));
        match judge(&failed) {
            Check::Failed(reason) => assert!(reason.contains("exited with code 3"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            judge(&pod(serde_json::json!({"phase": "Running"}))),
            Check::Pending
        ));
    }

    #[test]
    fn hopeless_states_fail_fast() {
        for reason in [
            "ErrImagePull",
            "ImagePullBackOff",
            "CrashLoopBackOff",
            "CreateContainerConfigError",
        ] {
            let waiting = pod(
                serde_json::json!({"phase": "Pending", "containerStatuses": [
                {"name": "verify", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": reason, "message": "m"}}}]}),
            );
            assert!(
                matches!(judge(&waiting), Check::Failed(r) if r.contains(reason)),
                "{reason}"
            );
        }
        let unschedulable = pod(serde_json::json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]}));
        assert!(matches!(judge(&unschedulable), Check::Failed(r) if r.contains("0/3 nodes")));
        let creating = pod(
            serde_json::json!({"phase": "Pending", "containerStatuses": [
            {"name": "verify", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert!(matches!(judge(&creating), Check::Pending));
    }
}
