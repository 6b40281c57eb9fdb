//! The kata node simulator: kwok fakes pods but runs nothing, so this plays
//! what kata-deploy does on a host, for the real kata-deploy chart and for
//! the fixture that imitates it alike (it recognises their pods by what they
//! are, not by a label of ours).
//!
//! * daemonset mode: a kata-deploy pod (container `kube-kata`, owned by a
//!   DaemonSet) installs its version on its node: the node gets
//!   `katacontainers.io/kata-runtime=true` and the "host truth" annotation
//!   [`INSTALLED_VERSION`] = the pod's image tag (what `kata-runtime
//!   --version` would say on a real host), and from 4.1 the instance mark
//!   `kata-deploy.katacontainers.io/<suffix|default>=true`. A pod with health
//!   probes (3.31 and later) is Ready once installed, so the install is
//!   recorded when it turns Ready; a pod without them (3.27–3.30) is Ready as
//!   soon as its container starts and installs after, so the install lands
//!   [`probeless_install_delay`] later. A deleted pod uninstalls Kata from its
//!   node (the version goes, the label stays) when it runs `kata-deploy
//!   cleanup` in a preStop hook (3.27) or does not know its DaemonSet
//!   (`DAEMONSET_NAME` unset: 3.28 cleans up on SIGTERM); from 3.29 it
//!   uninstalls only when its DaemonSet is gone.
//! * job mode: a running install dispatcher pod (label
//!   `kata-deploy/dispatcher=install`; kwok keeps it running) is played as
//!   the dispatcher its command line names: it resolves `--nodes` or the
//!   `--node-selector`s, creates one install Job per node (`parallelism` at a
//!   time) from the `install-job.yaml` of the ConfigMap it mounts, named,
//!   labelled and annotated as kata-deploy's dispatchers do, adopts a
//!   same-named Job that carries its owner label, records the version on each
//!   node whose Job completes and finally ends the dispatcher pod (succeeded,
//!   or failed when a node's Job failed). From 4.1 (`--cleanup-job-template`)
//!   it first deletes the Jobs of earlier runs and prunes the nodes that carry
//!   its instance mark but are not wanted, counting each prune on the node
//!   ([`PRUNES`]).
//!
//! A rig knob: a Node annotated [`INSTALL_FAILS`] with a version makes that
//! version's install Jobs fail on it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::WatchStreamExt;
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

/// Node annotation: the Kata version installed on the simulated host.
pub const INSTALLED_VERSION: &str = "rig.klm.test/installed-version";
/// The node label kata-deploy writes when Kata is installed.
pub const KATA_RUNTIME_LABEL: &str = "katacontainers.io/kata-runtime";
/// The pod annotation that decides a simulated pod's fate (see the stages).
pub const OUTCOME: &str = "rig.klm.test/outcome";
/// Node annotation: how many times a 4.1+ dispatcher pruned Kata from the node.
pub const PRUNES: &str = "rig.klm.test/prunes";
/// Node annotation (a knob for tests): the versions, comma-separated, whose
/// install Jobs fail on this node.
pub const INSTALL_FAILS: &str = "rig.klm.test/install-fails";
/// Node annotation (a knob for tests): the seconds a kata-deploy without
/// health probes takes to install on this node after its pod is Ready,
/// instead of [`probeless_install_delay`].
pub const PROBELESS_INSTALL_SECS: &str = "rig.klm.test/probeless-install-secs";
/// The prefix of kata-deploy's per-install node mark (4.1 and later).
pub const INSTANCE_LABEL_PREFIX: &str = "kata-deploy.katacontainers.io";
/// The labels and annotation kata-deploy's dispatchers put on per-node Jobs.
pub const JOB_OWNER_LABEL: &str = "kata-deploy-job-dispatcher/owner";
/// The sanitised node name (main's external dispatcher adds a hash when it changed it).
pub const JOB_NODE_LABEL: &str = "kata-deploy-job-dispatcher/node";
/// The node's real name.
pub const JOB_NODE_ANNOTATION: &str = "kata-deploy-job-dispatcher/node-name";
/// The label of the install dispatcher's pod.
pub const DISPATCHER_LABEL: &str = "kata-deploy/dispatcher";
const RESULT_LABEL: &str = "kata-deploy-job-dispatcher/result";
const FIELD_MANAGER: &str = "klm-rig-simulator";

/// How long after its pod turns Ready a kata-deploy without health probes
/// (3.27–3.30) finishes installing: `KLM_RIG_PROBELESS_INSTALL_SECS`, 5 s by
/// default (a simulation of the install's time, long enough for a klm that
/// trusts Ready to be caught).
pub fn probeless_install_delay() -> Duration {
    let secs = std::env::var("KLM_RIG_PROBELESS_INSTALL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    Duration::from_secs(secs)
}

/// What the simulator remembers between pod events.
#[derive(Default)]
struct State {
    /// `node/pod-uid` → version, for installs done or scheduled.
    installed: Mutex<BTreeMap<String, String>>,
    /// Pods whose removal was played already.
    removed: Mutex<HashSet<String>>,
    /// Dispatcher pods being played.
    dispatchers: Mutex<HashSet<String>>,
}

/// Runs the simulator until the watches end (never, in practice).
pub async fn run(client: Client) -> Result<()> {
    let verdicts = client.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::verdicts::run(verdicts).await {
            warn!("the verification verdicts stopped: {e:#}");
        }
    });
    let pods: Api<Pod> = Api::all(client.clone());
    let mut events =
        std::pin::pin!(watcher::watcher(pods, watcher::Config::default()).default_backoff());
    let state = Arc::new(State::default());
    while let Some(event) = events.next().await {
        let (pod, gone) = match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => (pod, false),
            Ok(Event::Delete(pod)) => (pod, true),
            Ok(Event::Init | Event::InitDone) => continue,
            Err(e) => {
                warn!("simulator pod watch: {e}");
                continue;
            }
        };
        if is_kata_deploy_pod(&pod) {
            let result = if gone || pod.metadata.deletion_timestamp.is_some() {
                on_kata_deploy_removed(&client, &pod, &state).await
            } else {
                on_kata_deploy_pod(&client, &pod, &state).await
            };
            if let Err(e) = result {
                warn!("simulator: kata-deploy pod {}: {e:#}", pod.name_any());
            }
        } else if is_install_dispatcher(&pod)
            && !gone
            && is_running(&pod)
            && pod.metadata.deletion_timestamp.is_none()
        {
            let uid = pod.uid().unwrap_or_default();
            if state.dispatchers.lock().expect("lock").insert(uid) {
                let client = client.clone();
                tokio::spawn(async move {
                    let name = pod.name_any();
                    if let Err(e) = dispatch(&client, &pod).await {
                        // A real dispatcher that cannot do its job exits non-zero.
                        warn!("simulator: dispatcher {name}: {e:#}");
                        if let Err(e) = end_dispatcher(&client, &pod, "fail").await {
                            warn!("simulator: ending dispatcher {name}: {e:#}");
                        }
                    }
                });
            }
        }
    }
    Ok(())
}

/// A kata-deploy DaemonSet pod: a `kube-kata` container, owned by a DaemonSet.
fn is_kata_deploy_pod(pod: &Pod) -> bool {
    kube_kata(pod).is_some() && pod.owner_references().iter().any(|o| o.kind == "DaemonSet")
}

/// The install dispatcher's pod (the hook Job's pod).
fn is_install_dispatcher(pod: &Pod) -> bool {
    pod.labels().get(DISPATCHER_LABEL).map(String::as_str) == Some("install")
}

fn kube_kata(pod: &Pod) -> Option<&Container> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "kube-kata")
}

/// What a kata-deploy DaemonSet pod's binary does, read from its spec the
/// way the real versions differ.
#[derive(Debug, Clone, PartialEq)]
struct Agent {
    /// The version it installs: the image tag, or the digest of a
    /// digest-pinned image (which names no version).
    version: String,
    /// Ready only once installed (health probes, 3.31 and later).
    probes: bool,
    /// Deleting the pod uninstalls Kata even while its DaemonSet exists
    /// (3.27's preStop cleanup, 3.28's cleanup on SIGTERM).
    cleans_up_on_delete: bool,
    /// The DaemonSet it checks before cleaning up (3.29 and later).
    daemonset: Option<String>,
    /// The instance mark it writes (4.1 and later).
    mark: Option<String>,
}

impl Agent {
    fn of(pod: &Pod) -> Option<Agent> {
        let container = kube_kata(pod)?;
        let image = container.image.as_deref()?;
        let version = tag_of(image).or_else(|| digest_of(image))?;
        let env = |name: &str| {
            container
                .env
                .iter()
                .flatten()
                .find(|e| e.name == name)
                .map(|e| e.value.clone().unwrap_or_default())
        };
        let probes = container.readiness_probe.is_some() || container.startup_probe.is_some();
        let pre_stop_cleanup = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.exec.as_ref())
            .and_then(|e| e.command.as_ref())
            .is_some_and(|c| c.iter().any(|a| a == "cleanup"));
        let daemonset = env("DAEMONSET_NAME").filter(|d| !d.is_empty());
        let mark = (version_key(&version) >= semver::Version::new(4, 1, 0)).then(|| {
            instance_mark(
                INSTANCE_LABEL_PREFIX,
                env("MULTI_INSTALL_SUFFIX").as_deref(),
            )
        });
        Some(Agent {
            version,
            probes,
            cleans_up_on_delete: pre_stop_cleanup || daemonset.is_none(),
            daemonset,
            mark,
        })
    }
}

/// `<prefix>/<suffix|default>`: the label a 4.1+ install marks its nodes with.
fn instance_mark(prefix: &str, suffix: Option<&str>) -> String {
    let suffix = suffix.filter(|s| !s.is_empty()).unwrap_or("default");
    format!("{prefix}/{suffix}")
}

/// daemonset mode: a Ready kata-deploy pod installs its version on its node
/// (at once with probes, a while later without).
async fn on_kata_deploy_pod(client: &Client, pod: &Pod, state: &Arc<State>) -> Result<()> {
    if !is_ready(pod) {
        return Ok(());
    }
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return Ok(());
    };
    let Some(agent) = Agent::of(pod) else {
        warn!(
            pod = pod.name_any(),
            "simulator: kata-deploy pod names no image"
        );
        return Ok(());
    };
    let uid = pod.uid().unwrap_or_default();
    let key = format!("{node}/{uid}");
    {
        let mut installed = state.installed.lock().expect("lock");
        if installed.get(&key) == Some(&agent.version) {
            return Ok(());
        }
        installed.insert(key, agent.version.clone());
    }
    let delay = if agent.probes {
        Duration::ZERO
    } else {
        Api::<Node>::all(client.clone())
            .get_opt(&node)
            .await?
            .and_then(|n| n.annotations().get(PROBELESS_INSTALL_SECS)?.parse().ok())
            .map_or_else(probeless_install_delay, Duration::from_secs)
    };
    if delay.is_zero() {
        return install_on_node(client, &node, &agent.version, agent.mark.as_deref(), None).await;
    }
    // Ready already, installing still: the host has the version only later,
    // if the pod is still there then.
    let (client, pod_name, namespace) = (
        client.clone(),
        pod.name_any(),
        pod.namespace().unwrap_or_default(),
    );
    let state = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let current = Api::<Pod>::namespaced(client.clone(), &namespace)
            .get_opt(&pod_name)
            .await;
        let alive = matches!(&current, Ok(Some(p)) if p.uid().as_deref() == Some(uid.as_str()) && p.metadata.deletion_timestamp.is_none());
        if !alive || state.removed.lock().expect("lock").contains(&uid) {
            info!(
                node,
                pod = pod_name,
                "simulator: pod gone before its install finished"
            );
            return;
        }
        if let Err(e) =
            install_on_node(&client, &node, &agent.version, agent.mark.as_deref(), None).await
        {
            warn!("simulator: {e:#}");
        }
    });
    Ok(())
}

/// daemonset mode: what a kata-deploy pod does when it is deleted.
async fn on_kata_deploy_removed(client: &Client, pod: &Pod, state: &State) -> Result<()> {
    let uid = pod.uid().unwrap_or_default();
    if !state.removed.lock().expect("lock").insert(uid) {
        return Ok(());
    }
    let (Some(node), Some(agent)) = (
        pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        Agent::of(pod),
    ) else {
        return Ok(());
    };
    if agent.cleans_up_on_delete {
        // 3.27/3.28: /opt/kata and the CRI configuration go, the label stays.
        return uninstall_from_node(client, &node, None, false).await;
    }
    let daemonset = agent.daemonset.unwrap_or_default();
    let exists = Api::<DaemonSet>::namespaced(client.clone(), &pod.namespace().unwrap_or_default())
        .get_opt(&daemonset)
        .await?
        .is_some_and(|ds| ds.metadata.deletion_timestamp.is_none());
    if exists {
        return Ok(()); // a restart or an upgrade: nothing is cleaned up
    }
    uninstall_from_node(client, &node, agent.mark.as_deref(), true).await
}

/// Records an install on a node: the runtime label, the version (and the
/// 4.1-style instance mark; main's dispatcher's result label).
async fn install_on_node(
    client: &Client,
    node: &str,
    version: &str,
    mark: Option<&str>,
    result: Option<&str>,
) -> Result<()> {
    let mut labels = serde_json::Map::new();
    labels.insert(KATA_RUNTIME_LABEL.into(), json!("true"));
    if let Some(mark) = mark {
        labels.insert(mark.into(), json!("true"));
    }
    if let Some(result) = result {
        labels.insert(RESULT_LABEL.into(), json!(result));
    }
    let patch =
        json!({"metadata": {"labels": labels, "annotations": {INSTALLED_VERSION: version}}});
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("recording kata {version} on node {node}"))?;
    info!(node, version, "simulator: kata installed");
    Ok(())
}

/// Kata removed from a node's host: the version always; the runtime label
/// and the instance mark when `unlabel`.
async fn uninstall_from_node(
    client: &Client,
    node: &str,
    mark: Option<&str>,
    unlabel: bool,
) -> Result<()> {
    let mut labels = serde_json::Map::new();
    if unlabel {
        labels.insert(KATA_RUNTIME_LABEL.into(), serde_json::Value::Null);
        if let Some(mark) = mark {
            labels.insert(mark.into(), serde_json::Value::Null);
        }
    }
    let patch = json!({"metadata": {"labels": labels, "annotations": {INSTALLED_VERSION: null}}});
    match Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            info!(node, unlabel, "simulator: kata uninstalled");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("uninstalling kata from node {node}")),
    }
}

/// Which dispatcher a hook runs.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Dispatcher {
    /// 3.32 and 4.0: `kata-deploy-job-dispatcher`, adopts any same-named Job
    /// with its owner label; the `label` stage labels the node.
    #[default]
    InTree,
    /// 4.1: the same binary with node work (`--node-label`...): it sweeps
    /// earlier runs' Jobs, labels and marks the node itself.
    InTreeNodeWork,
    /// main: the external `k8s-job-dispatcher`, like 4.1, and its node label
    /// on Jobs gets a hash when sanitising changed the name.
    External,
}

/// What the install dispatcher was asked to do (its command line).
#[derive(Debug, Default, PartialEq)]
struct DispatchArgs {
    dispatcher: Dispatcher,
    nodes: Vec<String>,
    node_selectors: Vec<String>,
    parallelism: usize,
    name_prefix: String,
    owner_job_name: Option<String>,
    prune: bool,
    suffix: Option<String>,
    instance_label_prefix: String,
    node_label: bool,
    claim_pending: bool,
}

impl DispatchArgs {
    /// Parses `command` then `args` (the real hooks put every flag in
    /// `command`, after the binary).
    fn parse(words: &[String]) -> DispatchArgs {
        let mut parsed = DispatchArgs {
            parallelism: 1,
            name_prefix: "kata-deploy-install".into(),
            instance_label_prefix: INSTANCE_LABEL_PREFIX.into(),
            ..DispatchArgs::default()
        };
        for word in words {
            if !word.starts_with("--") {
                if word.ends_with("k8s-job-dispatcher") {
                    parsed.dispatcher = Dispatcher::External;
                }
                continue;
            }
            let (flag, value) = word.split_once('=').unwrap_or((word.as_str(), ""));
            match flag {
                "--nodes" => {
                    parsed.nodes = value
                        .split(',')
                        .filter(|n| !n.is_empty())
                        .map(String::from)
                        .collect()
                }
                "--node-selector" => parsed.node_selectors.push(value.to_string()),
                "--parallelism" => parsed.parallelism = value.parse().unwrap_or(1).max(1),
                "--name-prefix" => parsed.name_prefix = value.to_string(),
                "--owner-job-name" => parsed.owner_job_name = Some(value.to_string()),
                "--cleanup-job-template" => parsed.prune = true,
                "--multi-install-suffix" => parsed.suffix = Some(value.to_string()),
                "--instance-label-prefix" => parsed.instance_label_prefix = value.to_string(),
                "--node-label" => parsed.node_label = value != "false",
                "--claim-node-pending" => parsed.claim_pending = true,
                _ => {}
            }
        }
        if parsed.dispatcher == Dispatcher::InTree && (parsed.node_label || parsed.prune) {
            parsed.dispatcher = Dispatcher::InTreeNodeWork;
        }
        parsed
    }

    /// The instance mark (4.1 and later).
    fn mark(&self) -> Option<String> {
        (self.dispatcher != Dispatcher::InTree)
            .then(|| instance_mark(&self.instance_label_prefix, self.suffix.as_deref()))
    }

    /// The `kata-deploy-job-dispatcher/node` label value for a node.
    fn node_label_value(&self, node: &str) -> String {
        let sanitized = sanitize(node);
        if self.dispatcher == Dispatcher::External && sanitized != node {
            let short: String = sanitized.chars().take(54).collect();
            return format!("{}-{:08x}", short.trim_end_matches('-'), fnv(node) as u32);
        }
        sanitized
            .chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches('-')
            .to_string()
    }
}

/// job mode: plays kata-deploy's install dispatcher for one dispatcher pod.
async fn dispatch(client: &Client, pod: &Pod) -> Result<()> {
    let namespace = pod.namespace().unwrap_or_default();
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .ok_or_else(|| anyhow!("no container"))?;
    let words: Vec<String> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .cloned()
        .collect();
    let args = DispatchArgs::parse(&words);
    let desired = desired_nodes(client, &args).await?;
    info!(dispatcher = pod.name_any(), nodes = ?desired, parallelism = args.parallelism, kind = ?args.dispatcher, "simulator: dispatching");

    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.kind == "Job")
        .cloned()
        .ok_or_else(|| anyhow!("the dispatcher pod has no owning Job"))?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    if args.dispatcher != Dispatcher::InTree {
        sweep(&jobs, &args.name_prefix, &owner).await?;
    }
    if args.prune {
        let mark = args.mark().unwrap_or_default();
        prune(client, &mark, &desired).await?;
    }
    if args.claim_pending {
        claim(client, &args, &desired).await?;
    }

    let template = job_template(client, pod, &namespace).await?;
    let results: Vec<(String, Result<()>)> = futures::stream::iter(desired.clone())
        .map(|node| {
            let (client, template, owner, args, namespace) = (
                client.clone(),
                template.clone(),
                owner.clone(),
                &args,
                namespace.clone(),
            );
            async move {
                let result = install_job(&client, &namespace, &template, &owner, args, &node).await;
                (node, result)
            }
        })
        .buffer_unordered(args.parallelism)
        .collect()
        .await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(node, r)| r.as_ref().err().map(|e| format!("{node}: {e:#}")))
        .collect();
    let outcome = if failed.is_empty() { "succeed" } else { "fail" };
    if !failed.is_empty() {
        warn!(failed = ?failed, "simulator: install jobs failed");
    }
    end_dispatcher(client, pod, outcome).await
}

/// The nodes a dispatch wants: `--nodes` (each must exist), else the union
/// of the `--node-selector`s (never the rig's real node, which runs only
/// workflow step pods), sorted.
async fn desired_nodes(client: &Client, args: &DispatchArgs) -> Result<Vec<String>> {
    let nodes_api: Api<Node> = Api::all(client.clone());
    let mut desired = BTreeSet::new();
    if !args.nodes.is_empty() {
        for node in &args.nodes {
            nodes_api
                .get_opt(node)
                .await?
                .ok_or_else(|| anyhow!("node {node} of --nodes does not exist"))?;
            desired.insert(node.clone());
        }
        return Ok(desired.into_iter().collect());
    }
    let not_real = format!("!{}", crate::real_node::REAL_NODE_LABEL);
    let selectors: Vec<String> = if args.node_selectors.iter().all(|s| s.is_empty()) {
        vec![not_real]
    } else {
        args.node_selectors
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| format!("{s},{not_real}"))
            .collect()
    };
    for selector in selectors {
        for node in nodes_api
            .list(&ListParams::default().labels(&selector))
            .await
            .with_context(|| format!("listing nodes by {selector}"))?
            .items
        {
            desired.insert(node.name_any());
        }
    }
    Ok(desired.into_iter().collect())
}

/// Lets kwok end the dispatcher pod: `succeed` or `fail`.
async fn end_dispatcher(client: &Client, pod: &Pod, outcome: &str) -> Result<()> {
    let patch = json!({"metadata": {"annotations": {OUTCOME: outcome}}});
    Api::<Pod>::namespaced(client.clone(), &pod.namespace().unwrap_or_default())
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// The per-node install Job template, from the ConfigMap mounted in the
/// dispatcher pod.
async fn job_template(client: &Client, pod: &Pod, namespace: &str) -> Result<Job> {
    let config_map = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|vs| {
            vs.iter()
                .find_map(|v| v.config_map.as_ref().map(|c| c.name.clone()))
        })
        .ok_or_else(|| anyhow!("the dispatcher pod mounts no job-template ConfigMap"))?;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get(&config_map)
        .await?;
    let yaml = cm
        .data
        .as_ref()
        .and_then(|d| d.get("install-job.yaml"))
        .ok_or_else(|| anyhow!("ConfigMap {config_map} has no install-job.yaml"))?;
    serde_saphyr::from_str(yaml)
        .with_context(|| format!("parsing install-job.yaml of {config_map}"))
}

/// 4.1 and later: deletes (foreground) every Job of this name prefix that
/// another run's dispatcher owns, and waits until they are gone.
async fn sweep(jobs: &Api<Job>, prefix: &str, owner: &OwnerReference) -> Result<()> {
    let listed = jobs
        .list(&ListParams::default().labels(&format!("{JOB_OWNER_LABEL}={prefix}")))
        .await?;
    for job in listed.items {
        if job.owner_references().iter().any(|o| o.uid == owner.uid) {
            continue;
        }
        let (name, uid) = (job.name_any(), job.uid().unwrap_or_default());
        match jobs.delete(&name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(e).with_context(|| format!("sweeping Job {name}")),
        }
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(jobs.clone(), &name, conditions::is_deleted(&uid)),
        )
        .await
        .with_context(|| format!("an earlier run's Job {name} was not deleted within 60s"))??;
        info!(job = name, "simulator: swept an earlier run's Job");
    }
    Ok(())
}

/// 4.1 and later: uninstalls Kata from every node carrying this install's
/// mark that is not in the desired set, and counts the prune on the node.
async fn prune(client: &Client, mark: &str, desired: &[String]) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for node in nodes.list(&ListParams::default().labels(mark)).await?.items {
        let name = node.name_any();
        if desired.contains(&name) {
            continue;
        }
        let count = node
            .annotations()
            .get(PRUNES)
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let patch = json!({"metadata": {
            "labels": {KATA_RUNTIME_LABEL: null, mark: null},
            "annotations": {INSTALLED_VERSION: null, PRUNES: count.to_string()},
        }});
        nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        warn!(node = name, count, "simulator: pruned (kata uninstalled)");
    }
    Ok(())
}

/// 4.1 and later: a node without the runtime label is claimed pending
/// (`false`) before its Job; an installed node keeps `true`.
async fn claim(client: &Client, args: &DispatchArgs, desired: &[String]) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mark = args.mark().unwrap_or_default();
    for name in desired {
        let node = nodes.get(name).await?;
        if node.labels().contains_key(KATA_RUNTIME_LABEL) {
            continue;
        }
        let patch = json!({"metadata": {"labels": {KATA_RUNTIME_LABEL: "false", &mark: "false"}}});
        nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

/// Runs one node's install Job to its end and records the install: creates
/// it, or adopts a same-named Job that carries the owner label (one that
/// finished already counts as it finished, and changes nothing on the
/// host), or replaces one that does not.
async fn install_job(
    client: &Client,
    namespace: &str,
    template: &Job,
    owner: &OwnerReference,
    args: &DispatchArgs,
    node: &str,
) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let name = job_name(&args.name_prefix, node);
    for _attempt in 0..5 {
        let job = match jobs.get_opt(&name).await? {
            Some(old) if is_owned_by(&old, &args.name_prefix) => {
                if let Some(done) = job_finished(Some(&old)) {
                    info!(
                        job = name,
                        done, "simulator: adopted a finished install Job"
                    );
                    return if done {
                        Ok(())
                    } else {
                        Err(anyhow!("install Job {name} (adopted) failed"))
                    };
                }
                info!(job = name, "simulator: adopted a running install Job");
                old
            }
            Some(old) => {
                delete_and_wait(&jobs, &old).await?;
                continue;
            }
            None => {
                let job = node_job(client, template, &name, owner, args, node).await?;
                match jobs
                    .create(
                        &PostParams {
                            field_manager: Some(FIELD_MANAGER.into()),
                            ..PostParams::default()
                        },
                        &job,
                    )
                    .await
                {
                    Ok(job) => job,
                    Err(kube::Error::Api(e)) if e.code == 409 => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let version = job_version(&job)?;
        let uid = job.uid().unwrap_or_default();
        let done = tokio::time::timeout(
            Duration::from_secs(600),
            await_condition(jobs.clone(), &name, |j: Option<&Job>| {
                j.is_none_or(|j| j.uid().as_deref() != Some(uid.as_str()))
                    || job_finished(j).is_some()
            }),
        )
        .await
        .context("install Job still running after 600s")??;
        let done = done.filter(|j| j.uid().as_deref() == Some(uid.as_str()));
        return match job_finished(done.as_ref()) {
            Some(true) => {
                let mark = args.mark();
                let result = (args.dispatcher == Dispatcher::External).then_some("succeeded");
                install_on_node(client, node, &version, mark.as_deref(), result).await
            }
            Some(false) => {
                if args.dispatcher == Dispatcher::External {
                    label_result(client, node, "failed").await?;
                }
                bail!("install Job {name} failed")
            }
            None => bail!("install Job {name} was deleted before it finished"),
        };
    }
    bail!("install Job {name} kept being replaced")
}

/// A per-node Job from the template, as kata-deploy's dispatchers build it
/// (plus the rig's knob: a node annotated [`INSTALL_FAILS`] with this
/// version gets pods that fail).
async fn node_job(
    client: &Client,
    template: &Job,
    name: &str,
    owner: &OwnerReference,
    args: &DispatchArgs,
    node: &str,
) -> Result<Job> {
    let mut job = template.clone();
    job.metadata.name = Some(name.to_string());
    job.metadata.generate_name = None;
    job.metadata.namespace = None;
    let labels = job.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(JOB_OWNER_LABEL.into(), args.name_prefix.clone());
    labels.insert(JOB_NODE_LABEL.into(), args.node_label_value(node));
    job.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(JOB_NODE_ANNOTATION.into(), node.to_string());
    // Not the controller: the Job controller owns its pods, the dispatcher
    // only ties the Job's life to its own.
    job.metadata.owner_references = Some(vec![OwnerReference {
        controller: Some(false),
        block_owner_deletion: None,
        ..owner.clone()
    }]);
    let version = job_version(&job)?;
    let spec = job
        .spec
        .as_mut()
        .ok_or_else(|| anyhow!("the install Job template has no spec"))?;
    let pod_meta = spec.template.metadata.get_or_insert_with(Default::default);
    pod_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(JOB_OWNER_LABEL.into(), args.name_prefix.clone());
    let host = Api::<Node>::all(client.clone()).get(node).await?;
    let fails = host.annotations().get(INSTALL_FAILS).is_some_and(|list| {
        list.split(',')
            .any(|v| v.trim() == version || v.trim() == "*")
    });
    if fails {
        pod_meta
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(OUTCOME.into(), "fail".into());
    }
    let fails_at_once = fails.then_some(0);
    let pod_spec = spec
        .template
        .spec
        .as_mut()
        .ok_or_else(|| anyhow!("the install Job template has no pod spec"))?;
    pod_spec.node_name = Some(node.to_string());
    if fails_at_once.is_some() {
        // No retries with back-off: the knob's failure is meant, not flaky.
        spec.backoff_limit = fails_at_once;
    }
    Ok(job)
}

/// The version an install Job installs: its images' tag.
fn job_version(job: &Job) -> Result<String> {
    let pod_spec = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or_else(|| anyhow!("the install Job has no pod spec"))?;
    pod_spec
        .containers
        .iter()
        .chain(pod_spec.init_containers.iter().flatten())
        .find_map(|c| {
            let image = c.image.as_deref()?;
            tag_of(image).or_else(|| digest_of(image))
        })
        .ok_or_else(|| anyhow!("the install Job names no image"))
}

async fn label_result(client: &Client, node: &str, result: &str) -> Result<()> {
    let patch = json!({"metadata": {"labels": {RESULT_LABEL: result}}});
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

fn is_owned_by(job: &Job, prefix: &str) -> bool {
    job.labels().get(JOB_OWNER_LABEL).map(String::as_str) == Some(prefix)
}

async fn delete_and_wait(jobs: &Api<Job>, job: &Job) -> Result<()> {
    let (name, uid) = (job.name_any(), job.uid().unwrap_or_default());
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match jobs.delete(&name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(jobs.clone(), &name, conditions::is_deleted(&uid)),
    )
    .await
    .with_context(|| format!("Job {name} was not deleted within 60s"))??;
    Ok(())
}

/// `Some(true)` complete, `Some(false)` failed, `None` running or absent.
fn job_finished(job: Option<&Job>) -> Option<bool> {
    let conditions = job?.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find_map(|c| match (c.type_.as_str(), c.status.as_str()) {
            ("Complete", "True") => Some(true),
            ("Failed", "True") => Some(false),
            _ => None,
        })
}

/// A node name as a DNS-1123 label: lower case, everything outside
/// `[a-z0-9-]` becomes `-`, no leading or trailing `-`.
pub fn sanitize(node: &str) -> String {
    node.to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}

/// `<prefix>-<sanitised node>`, shortened with a hash of the node's name
/// when longer than a name may be.
pub fn job_name(prefix: &str, node: &str) -> String {
    let name = format!("{prefix}-{}", sanitize(node));
    if name.len() <= 63 {
        return name;
    }
    let short: String = name.chars().take(54).collect();
    format!("{}-{:08x}", short.trim_end_matches('-'), fnv(node) as u32)
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A version tag's order: `0.0.0-dev` (main) and tags that are no version
/// (`kata-containers-latest`, a digest) rank above every release.
fn version_key(tag: &str) -> semver::Version {
    match semver::Version::parse(tag.trim_start_matches('v')) {
        Ok(v) if !(v.major == 0 && v.minor == 0 && v.patch == 0) => v,
        _ => semver::Version::new(99, 0, 0),
    }
}

fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn tag_of(image: &str) -> Option<String> {
    let image = image.split('@').next()?;
    let (repo, tag) = image.rsplit_once(':')?;
    (!tag.contains('/') && !repo.is_empty()).then(|| tag.to_string())
}

/// The digest of a digest-pinned image (`repo@sha256:...`), which has no tag.
fn digest_of(image: &str) -> Option<String> {
    image.split_once('@').map(|(_, d)| d.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_3_32_dispatchers_command_is_read() {
        let parsed = DispatchArgs::parse(&words(&[
            "/usr/bin/kata-deploy-job-dispatcher",
            "--job-template=/etc/kata-job/install-job.yaml",
            "--name-prefix=kata-deploy-x-install",
            "--owner-job-name=kata-deploy-x-install-dispatcher",
            "--parallelism=2",
            "--nodes=a,b",
        ]));
        assert_eq!(parsed.dispatcher, Dispatcher::InTree);
        assert_eq!(parsed.nodes, ["a", "b"]);
        assert_eq!(parsed.parallelism, 2);
        assert!(!parsed.prune);
        assert_eq!(parsed.mark(), None);
        assert_eq!(parsed.name_prefix, "kata-deploy-x-install");
    }

    #[test]
    fn the_4_1_and_main_dispatchers_commands_are_read() {
        let v41 = DispatchArgs::parse(&words(&[
            "/usr/bin/kata-deploy-job-dispatcher",
            "--job-template=/etc/kata-job/install-job.yaml",
            "--cleanup-job-template=/etc/kata-job/cleanup-job.yaml",
            "--name-prefix=kata-deploy-install",
            "--parallelism=100",
            "--node-selector=a=b",
            "--node-selector=c=d",
            "--wait-for-nodes-secs=0",
            "--multi-install-suffix=blue",
            "--node-label=true",
            "--claim-node-pending",
        ]));
        assert_eq!(v41.dispatcher, Dispatcher::InTreeNodeWork);
        assert!(v41.prune && v41.claim_pending && v41.node_label);
        assert_eq!(v41.node_selectors, ["a=b", "c=d"]);
        assert_eq!(
            v41.mark().as_deref(),
            Some("kata-deploy.katacontainers.io/blue")
        );
        let main = DispatchArgs::parse(&words(&[
            "/usr/bin/k8s-job-dispatcher",
            "--cleanup-job-template=/etc/kata-job/cleanup-job.yaml",
            "--instance-label-prefix=kata-deploy.katacontainers.io",
            "--node-label=true",
        ]));
        assert_eq!(main.dispatcher, Dispatcher::External);
        assert_eq!(
            main.mark().as_deref(),
            Some("kata-deploy.katacontainers.io/default")
        );
    }

    #[test]
    fn per_node_job_names_and_labels_are_sanitised() {
        let node = "ip-10-0-1-23.EC2.internal";
        assert_eq!(sanitize(node), "ip-10-0-1-23-ec2-internal");
        assert_eq!(
            job_name("kata-deploy-install", node),
            "kata-deploy-install-ip-10-0-1-23-ec2-internal"
        );
        let in_tree = DispatchArgs::parse(&[]);
        assert_eq!(in_tree.node_label_value(node), "ip-10-0-1-23-ec2-internal");
        assert_eq!(in_tree.node_label_value("n1"), "n1");
        let main = DispatchArgs::parse(&words(&["/usr/bin/k8s-job-dispatcher"]));
        let hashed = main.node_label_value(node);
        assert!(
            hashed.starts_with("ip-10-0-1-23-ec2-internal-") && hashed.len() <= 63,
            "{hashed}"
        );
        assert_eq!(
            main.node_label_value("n1"),
            "n1",
            "unchanged names get no hash"
        );
    }

    #[test]
    fn image_tags_ignore_registry_ports_and_digests() {
        assert_eq!(
            tag_of("quay.io/kata-containers/kata-deploy:3.27.0").as_deref(),
            Some("3.27.0")
        );
        assert_eq!(
            tag_of("localhost:5000/kata-deploy:4.1.0@sha256:abc").as_deref(),
            Some("4.1.0")
        );
        assert_eq!(tag_of("localhost:5000/kata-deploy"), None);
        assert_eq!(tag_of("quay.io/kata-deploy@sha256:abc"), None);
        assert_eq!(
            digest_of("quay.io/kata-deploy@sha256:abc").as_deref(),
            Some("sha256:abc")
        );
    }

    #[test]
    fn main_and_tags_that_are_no_version_rank_newest() {
        assert!(version_key("0.0.0-dev") > version_key("4.1.0"));
        assert!(version_key("kata-containers-latest") > version_key("4.1.0"));
        assert!(version_key("4.0.0") < version_key("4.1.0"));
        assert!(version_key("3.30.0") < version_key("3.31.0"));
    }

    #[test]
    fn long_job_names_are_shortened_deterministically() {
        let node = "a-very-long-node-name-that-goes-on-and-on-and-on-forever-0001";
        let name = job_name("kata-deploy-install", node);
        assert!(name.len() <= 63, "{name}");
        assert_eq!(name, job_name("kata-deploy-install", node));
        assert_eq!(
            job_name("kata-deploy-install", "n1"),
            "kata-deploy-install-n1"
        );
    }
}
