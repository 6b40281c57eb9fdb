//! The kata node simulator: kwok fakes pods but runs nothing, so this plays
//! what kata-deploy does on a host.
//!
//! * daemonset mode: when a kata-deploy pod (container `kube-kata`) is Ready
//!   on a node, the node gets `katacontainers.io/kata-runtime=true` and the
//!   "host truth" annotation [`INSTALLED_VERSION`] = the pod's image tag
//!   (what `kata-runtime --version` would say on a real host).
//! * job mode: when kata-deploy's install dispatcher pod runs, it plays the
//!   dispatcher: creates one install Job per selected node (`job.nodes` or
//!   the node selector, `parallelism` at a time) from the chart's Job
//!   template, records the version on each node whose Job completes, prunes
//!   owned nodes outside the selection in the 4.1 flavour, and finally ends
//!   the dispatcher pod (succeeded, or failed when a node's Job failed).
//!
//! The fixture chart labels the pods it wants simulated with [`ROLE_LABEL`].

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

/// The label the fixture chart puts on pods the simulator acts for.
pub const ROLE_LABEL: &str = "rig.klm.test/role";
/// Node annotation: the Kata version installed on the simulated host.
pub const INSTALLED_VERSION: &str = "rig.klm.test/installed-version";
/// The node label kata-deploy writes when Kata is installed.
pub const KATA_RUNTIME_LABEL: &str = "katacontainers.io/kata-runtime";
/// The pod annotation that decides a simulated pod's fate (see the stages).
pub const OUTCOME: &str = "rig.klm.test/outcome";
const FIELD_MANAGER: &str = "klm-rig-simulator";

/// Runs the simulator until the watches end (never, in practice).
pub async fn run(client: Client) -> Result<()> {
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().labels(ROLE_LABEL);
    let mut events = std::pin::pin!(watcher(pods, config).default_backoff().applied_objects());
    let installed: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut dispatchers: HashSet<String> = HashSet::new();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(pod) => pod,
            Err(e) => {
                warn!("simulator pod watch: {e}");
                continue;
            }
        };
        let role = pod.labels().get(ROLE_LABEL).cloned().unwrap_or_default();
        match role.as_str() {
            "kata-deploy" => {
                if let Err(e) = on_kata_deploy_pod(&client, &pod, &installed).await {
                    warn!("simulator: kata-deploy pod {}: {e:#}", pod.name_any());
                }
            }
            "dispatcher" if is_running(&pod) && pod.metadata.deletion_timestamp.is_none() => {
                let uid = pod.uid().unwrap_or_default();
                if dispatchers.insert(uid) {
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
            _ => {}
        }
    }
    Ok(())
}

/// daemonset mode: a Ready kata-deploy pod installs its version on its node.
async fn on_kata_deploy_pod(
    client: &Client,
    pod: &Pod,
    installed: &Mutex<BTreeMap<String, String>>,
) -> Result<()> {
    if pod.metadata.deletion_timestamp.is_some() || !is_ready(pod) {
        return Ok(());
    }
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return Ok(());
    };
    let Some(version) = image_tag(pod, "kube-kata") else {
        return Ok(());
    };
    let key = format!("{node}/{}", pod.uid().unwrap_or_default());
    if installed.lock().expect("lock").get(&key) == Some(&version) {
        return Ok(());
    }
    install_on_node(client, &node, &version, None).await?;
    installed.lock().expect("lock").insert(key, version);
    Ok(())
}

/// Records an install on a node: the runtime label, the version (and the
/// 4.1-style install marker label).
async fn install_on_node(
    client: &Client,
    node: &str,
    version: &str,
    marker: Option<&str>,
) -> Result<()> {
    let mut labels = serde_json::Map::new();
    labels.insert(KATA_RUNTIME_LABEL.into(), json!("true"));
    if let Some(marker) = marker {
        labels.insert(marker.into(), json!("true"));
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

/// What the install dispatcher was asked to do (its command line).
#[derive(Debug, Default, PartialEq)]
struct DispatchArgs {
    nodes: Vec<String>,
    node_selector: Option<String>,
    parallelism: usize,
    name_prefix: String,
    prune: bool,
    marker: Option<String>,
}

impl DispatchArgs {
    fn parse(args: &[String]) -> DispatchArgs {
        let mut parsed = DispatchArgs {
            parallelism: 1,
            name_prefix: "kata-deploy-install".into(),
            ..DispatchArgs::default()
        };
        for arg in args {
            let (flag, value) = arg.split_once('=').unwrap_or((arg.as_str(), ""));
            match flag {
                "--nodes" => {
                    parsed.nodes = value
                        .split(',')
                        .filter(|n| !n.is_empty())
                        .map(String::from)
                        .collect()
                }
                "--node-selector" => parsed.node_selector = Some(value.to_string()),
                "--parallelism" => parsed.parallelism = value.parse().unwrap_or(1).max(1),
                "--name-prefix" => parsed.name_prefix = value.to_string(),
                "--cleanup-job-template" => parsed.prune = true,
                "--install-marker" => parsed.marker = Some(value.to_string()),
                _ => {}
            }
        }
        parsed
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
    let args = DispatchArgs::parse(container.args.as_deref().unwrap_or_default());
    let nodes_api: Api<Node> = Api::all(client.clone());
    let desired: Vec<String> = if args.nodes.is_empty() {
        // Never the rig's real node: it runs only workflow step pods.
        let selector = match args.node_selector.as_deref() {
            Some(s) if !s.is_empty() => format!("{s},!{}", crate::real_node::REAL_NODE_LABEL),
            _ => format!("!{}", crate::real_node::REAL_NODE_LABEL),
        };
        nodes_api
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .iter()
            .map(|n| n.name_any())
            .collect()
    } else {
        args.nodes.clone()
    };
    info!(dispatcher = pod.name_any(), nodes = ?desired, parallelism = args.parallelism, "simulator: dispatching");

    if args.prune {
        let marker = args
            .marker
            .clone()
            .ok_or_else(|| anyhow!("--install-marker is required with a cleanup template"))?;
        prune(client, &marker, &desired).await?;
    }

    let template = job_template(client, pod, &namespace).await?;
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.kind == "Job")
        .cloned()
        .ok_or_else(|| anyhow!("the dispatcher pod has no owning Job"))?;
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

/// Runs one node's install Job to its end and records the install.
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
    // A finished Job of an earlier dispatch would be adopted and skip the install: replace it.
    if let Some(old) = jobs.get_opt(&name).await? {
        let uid = old.uid().unwrap_or_default();
        jobs.delete(
            &name,
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            },
        )
        .await
        .ok();
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(jobs.clone(), &name, conditions::is_deleted(&uid)),
        )
        .await
        .context("an old install Job was not deleted within 60s")??;
    }
    let mut job = template.clone();
    job.metadata.name = Some(name.clone());
    job.metadata.namespace = Some(namespace.to_string());
    let labels = job.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(
        "kata-deploy-job-dispatcher/owner".into(),
        args.name_prefix.clone(),
    );
    labels.insert("kata-deploy-job-dispatcher/node".into(), node.to_string());
    job.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(
            "kata-deploy-job-dispatcher/node-name".into(),
            node.to_string(),
        );
    job.metadata.owner_references = Some(vec![owner.clone()]);
    let spec = job
        .spec
        .as_mut()
        .ok_or_else(|| anyhow!("the install Job template has no spec"))?;
    let pod_spec = spec
        .template
        .spec
        .as_mut()
        .ok_or_else(|| anyhow!("the install Job template has no pod spec"))?;
    pod_spec.node_name = Some(node.to_string());
    let version = pod_spec
        .containers
        .iter()
        .chain(pod_spec.init_containers.iter().flatten())
        .find_map(|c| c.image.as_deref().and_then(tag_of))
        .ok_or_else(|| anyhow!("the install Job template names no image tag"))?;
    jobs.create(
        &PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        },
        &job,
    )
    .await?;
    let done = tokio::time::timeout(
        Duration::from_secs(600),
        await_condition(jobs.clone(), &name, |job: Option<&Job>| {
            job_finished(job).is_some()
        }),
    )
    .await
    .context("install Job still running after 600s")??;
    match job_finished(done.as_ref()) {
        Some(true) => install_on_node(client, node, &version, args.marker.as_deref()).await,
        _ => bail!("install Job {name} failed"),
    }
}

/// 4.1 flavour: uninstall from every node carrying this install's marker that
/// is not in the desired set.
async fn prune(client: &Client, marker: &str, desired: &[String]) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for node in nodes
        .list(&ListParams::default().labels(marker))
        .await?
        .items
    {
        let name = node.name_any();
        if desired.contains(&name) {
            continue;
        }
        let patch = json!({"metadata": {"labels": {KATA_RUNTIME_LABEL: null, marker: null}, "annotations": {INSTALLED_VERSION: null}}});
        nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        info!(node = name, "simulator: pruned (kata uninstalled)");
    }
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

/// `<prefix>-<node>`, shortened with a hash when longer than a name may be.
fn job_name(prefix: &str, node: &str) -> String {
    let name = format!("{prefix}-{node}");
    if name.len() <= 63 {
        return name;
    }
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{}-{:08x}", name[..54].trim_end_matches('-'), hash as u32)
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

/// The tag of a container's image.
fn image_tag(pod: &Pod, container: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let image = spec
        .containers
        .iter()
        .find(|c| c.name == container)?
        .image
        .as_deref()?;
    tag_of(image)
}

fn tag_of(image: &str) -> Option<String> {
    let image = image.split('@').next()?;
    let (repo, tag) = image.rsplit_once(':')?;
    (!tag.contains('/') && !repo.is_empty()).then(|| tag.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatcher_arguments_are_read_like_kata_deploys() {
        let args: Vec<String> = [
            "--job-template=/etc/kata-job/install-job.yaml",
            "--nodes=a,b",
            "--parallelism=2",
            "--cleanup-job-template=/x",
            "--install-marker=kata-deploy.katacontainers.io/default",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let parsed = DispatchArgs::parse(&args);
        assert_eq!(parsed.nodes, ["a", "b"]);
        assert_eq!(parsed.parallelism, 2);
        assert!(parsed.prune);
        assert_eq!(
            parsed.marker.as_deref(),
            Some("kata-deploy.katacontainers.io/default")
        );
        assert_eq!(parsed.name_prefix, "kata-deploy-install");
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
