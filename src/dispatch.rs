//! Job mode from kata-deploy 4.1: running the release's own install
//! dispatcher for one wave's nodes, without its prune.
//!
//! From 4.1.0, the dispatcher that kata-deploy's install hook runs on every
//! `helm upgrade` first uninstalls Kata from every node that carries the
//! install's mark but is not in the desired set, and with `job.nodes` the
//! desired set is exactly that list: a wave-scoped upgrade would uninstall
//! Kata from the rest of the fleet. No value switches that off; one
//! dispatcher flag turns it on, `--cleanup-job-template`, which the hook
//! always passes and the dispatcher never needs. So a run moves the release
//! once with `--no-hooks` (nothing runs on any node), and each wave runs a
//! copy of the release's own recorded hook (`helm get hooks`) as a Job of
//! klm's: the same image, ServiceAccount, job templates and node work, scoped
//! to the wave with `--nodes`, and without `--cleanup-job-template`. A hook
//! whose flags klm does not know is refused before anything runs, never run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use crate::error::{Classify, ExitStatus, KubeError, KubeResultExt};
use crate::release::ReleaseRef;
use crate::wait::{Check, WaitError, by_name, watch_until};

/// The label of kata-deploy's install dispatcher (the hook Job and its pod).
pub const DISPATCHER_LABEL: &str = "kata-deploy/dispatcher";
/// The label klm puts on its copies: the run they belong to.
pub const RUN_LABEL: &str = "katacontainers.io/kata-lifecycle-manager-run";
/// The flag that makes a dispatcher prune; never in klm's copy.
const PRUNE_FLAG: &str = "--cleanup-job-template";

/// Every flag of kata-deploy's install dispatcher that klm knows, from the
/// in-tree dispatcher of 3.32 to the external `k8s-job-dispatcher` of main:
/// a hook with any other flag is refused (its meaning is unknown, so is
/// whether the copy would be safe). Each flag is `--name` or `--name=value`.
pub const KNOWN_FLAGS: &[&str] = &[
    // What to install and as whom (3.32 on).
    "--job-template",
    "--name-prefix",
    "--owner-job-name",
    "--parallelism",
    // Which nodes: replaced in the copy by the wave.
    "--nodes",
    "--node-selector",
    "--wait-for-nodes-secs",
    "--node-settle-secs",
    // The prune (4.1 on): removed from the copy.
    "--cleanup-job-template",
    // Node work (4.1 on).
    "--multi-install-suffix",
    "--node-label",
    "--claim-node-pending",
    "--wait-node-ready-secs",
    "--require-node-handlers",
    "--remove-node-taints",
    "--kubelet-timeout-warn-secs",
    "--ignore-node-taints",
    // The external dispatcher (main).
    "--tracking-label-prefix",
    "--node-label-key",
    "--instance-label-prefix",
    "--require-node-runtime-version",
    "--require-node-machine-id",
];

/// Flags the copy sets itself (the hook's are dropped).
const SCOPE_FLAGS: &[&str] = &[
    "--nodes",
    "--node-selector",
    "--wait-for-nodes-secs",
    "--node-settle-secs",
    "--owner-job-name",
    "--parallelism",
    PRUNE_FLAG,
];

/// Why the release's dispatcher cannot be run for a wave.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The release recorded no install dispatcher hook.
    #[error(
        "revision {revision} of release {release} has no install dispatcher hook (a Job labelled {DISPATCHER_LABEL}=install)"
    )]
    NoHook {
        /// The release.
        release: String,
        /// Its revision.
        revision: u32,
    },
    /// The hook is not of a shape klm knows.
    #[error("the install dispatcher hook of release {release} (revision {revision}) {reason}")]
    UnknownShape {
        /// The release.
        release: String,
        /// Its revision.
        revision: u32,
        /// What is unknown.
        reason: String,
    },
    /// Another dispatcher of the release is running.
    #[error("another dispatcher of release {release} is running: {jobs}")]
    Busy {
        /// The release.
        release: String,
        /// Its unfinished Jobs.
        jobs: String,
    },
    /// klm's copy ended without installing every node.
    #[error("the dispatcher {job} for {nodes} failed")]
    Failed {
        /// klm's Job.
        job: String,
        /// The nodes.
        nodes: String,
        /// Why, as far as the cluster says.
        #[source]
        source: Box<WaitError>,
    },
    /// The API failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
}

impl Classify for DispatchError {
    fn status(&self) -> ExitStatus {
        match self {
            DispatchError::NoHook { .. }
            | DispatchError::UnknownShape { .. }
            | DispatchError::Busy { .. } => ExitStatus::Precondition,
            DispatchError::Failed { source, .. } => source.status(),
            DispatchError::Kube(inner) => inner.status(),
        }
    }

    fn hints(&self) -> Vec<String> {
        match self {
            DispatchError::NoHook { .. } => vec![
                "is the release in job mode? `helm get hooks` shows what it recorded".into(),
            ],
            DispatchError::UnknownShape { .. } => vec![
                "klm runs kata-deploy's own dispatcher for each wave, without its prune; a dispatcher with flags klm does not know could do what klm cannot check, so nothing was run".into(),
                "use a kata-deploy version klm knows (see the README, job mode), or upgrade the whole fleet at once with helm".into(),
            ],
            DispatchError::Busy { .. } => vec![
                "wait for it to finish (kubectl get jobs -l kata-deploy/dispatcher=install), then retry the step: two dispatchers of one release delete each other's per-node Jobs".into(),
            ],
            DispatchError::Failed { source, .. } => {
                let mut hints = source.hints();
                hints.push("kubectl logs job/<that Job> shows which nodes failed and why".into());
                hints
            }
            DispatchError::Kube(inner) => inner.hints(),
        }
    }
}

/// The release's install dispatcher, as one revision recorded it.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    job: Job,
    release: String,
    revision: u32,
}

impl Dispatcher {
    /// Finds the install dispatcher among a revision's hooks (the YAML
    /// documents `helm get hooks` prints, or the `manifest` of each hook in a
    /// rendered release) and checks that klm knows its shape.
    pub fn find<'a>(
        hooks: impl IntoIterator<Item = &'a str>,
        release: &str,
        revision: u32,
    ) -> Result<Self, DispatchError> {
        for document in hooks {
            let Ok(value) = serde_saphyr::from_str::<Value>(document) else {
                continue;
            };
            if value.get("kind").and_then(Value::as_str) != Some("Job")
                || value
                    .pointer(&format!(
                        "/metadata/labels/{}",
                        DISPATCHER_LABEL.replace('/', "~1")
                    ))
                    .and_then(Value::as_str)
                    != Some("install")
            {
                continue;
            }
            let job: Job =
                serde_json::from_value(value).map_err(|e| DispatchError::UnknownShape {
                    release: release.into(),
                    revision,
                    reason: format!("is not a Job klm can read: {e}"),
                })?;
            let dispatcher = Self {
                job,
                release: release.into(),
                revision,
            };
            dispatcher.check()?;
            return Ok(dispatcher);
        }
        Err(DispatchError::NoHook {
            release: release.into(),
            revision,
        })
    }

    /// The revision it was recorded at.
    pub fn revision(&self) -> u32 {
        self.revision
    }

    /// The dispatcher's command line (binary, then flags).
    fn command(&self) -> Result<&[String], DispatchError> {
        only_container(&self.job)
            .ok_or_else(|| self.unknown("has not exactly one container"))?
            .command
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| self.unknown("has no command"))
    }

    fn unknown(&self, reason: &str) -> DispatchError {
        DispatchError::UnknownShape {
            release: self.release.clone(),
            revision: self.revision,
            reason: reason.into(),
        }
    }

    /// Every flag is one klm knows, and the Job has the one container and
    /// the `args`-free command klm rewrites.
    fn check(&self) -> Result<(), DispatchError> {
        let command = self.command()?;
        let unknown: Vec<&str> = command[1..]
            .iter()
            .map(|arg| flag_name(arg))
            .filter(|name| !KNOWN_FLAGS.contains(name))
            .collect();
        if !unknown.is_empty() {
            return Err(self.unknown(&format!(
                "passes flags klm does not know: {}",
                unknown.join(", ")
            )));
        }
        let has_args = only_container(&self.job)
            .and_then(|c| c.args.as_ref())
            .is_some_and(|a| !a.is_empty());
        if has_args {
            return Err(self.unknown("passes arguments outside its command"));
        }
        Ok(())
    }

    /// The `--name-prefix` of its per-node Jobs.
    pub fn name_prefix(&self) -> Option<String> {
        self.command().ok()?[1..]
            .iter()
            .find_map(|a| a.strip_prefix("--name-prefix=").map(String::from))
    }

    /// klm's copy for `nodes`: named `name`, labelled with the run, its
    /// hook annotations dropped, and its command scoped to the nodes
    /// (`--nodes`, `--parallelism`, `--owner-job-name` of its own) without
    /// the prune. Checked before it is returned ([`check_copy`]).
    pub fn scoped_copy(
        &self,
        name: &str,
        run_id: &str,
        nodes: &[String],
    ) -> Result<Job, DispatchError> {
        let mut job = self.job.clone();
        let metadata = &mut job.metadata;
        metadata.name = Some(name.to_string());
        metadata.resource_version = None;
        metadata.uid = None;
        metadata.creation_timestamp = None;
        metadata.managed_fields = None;
        if let Some(annotations) = metadata.annotations.as_mut() {
            annotations.retain(|key, _| !key.starts_with("helm.sh/"));
        }
        let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(
            "app.kubernetes.io/managed-by".into(),
            "kata-lifecycle-manager".into(),
        );
        labels.insert(
            RUN_LABEL.into(),
            crate::verification::template::label_value(run_id),
        );
        let spec = job.spec.get_or_insert_with(Default::default);
        // The copy is klm's: it outlives no run for long.
        spec.ttl_seconds_after_finished = Some(3600);
        let container = spec
            .template
            .spec
            .as_mut()
            .and_then(|p| p.containers.first_mut())
            .ok_or_else(|| self.unknown("has no container"))?;
        let command = container.command.get_or_insert_with(Vec::new);
        command.retain(|arg| !SCOPE_FLAGS.contains(&flag_name(arg)));
        command.extend([
            format!("--owner-job-name={name}"),
            format!("--parallelism={}", nodes.len().max(1)),
            format!("--nodes={}", nodes.join(",")),
        ]);
        check_copy(&job, nodes).map_err(|reason| self.unknown(&reason))?;
        Ok(job)
    }
}

/// A Job's one container (None when it has none or several).
fn only_container(job: &Job) -> Option<&k8s_openapi::api::core::v1::Container> {
    match job
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .as_slice()
    {
        [only] => Some(only),
        _ => None,
    }
}

/// The name of a flag (`--nodes=a,b` → `--nodes`).
fn flag_name(arg: &str) -> &str {
    arg.split_once('=').map_or(arg, |(name, _)| name)
}

/// What must hold of a copy before it is created: no prune, no node
/// selection other than exactly `nodes`, every flag known.
pub fn check_copy(job: &Job, nodes: &[String]) -> Result<(), String> {
    let command = only_container(job)
        .and_then(|c| c.command.as_deref())
        .filter(|c| !c.is_empty())
        .ok_or("has no command")?;
    let flags = &command[1..];
    for forbidden in [PRUNE_FLAG, "--node-selector", "--remove-node-label"] {
        if flags.iter().any(|a| flag_name(a) == forbidden) {
            return Err(format!("copy would pass {forbidden}"));
        }
    }
    let scoped: Vec<&String> = flags.iter().filter(|a| flag_name(a) == "--nodes").collect();
    let wanted = format!("--nodes={}", nodes.join(","));
    if scoped.len() != 1 || scoped[0] != &wanted {
        return Err(format!(
            "copy would not be scoped to exactly {}",
            nodes.join(",")
        ));
    }
    if let Some(unknown) = flags
        .iter()
        .map(|a| flag_name(a))
        .find(|name| !KNOWN_FLAGS.contains(name))
    {
        return Err(format!(
            "copy would pass {unknown}, which klm does not know"
        ));
    }
    Ok(())
}

/// The name of klm's copy for a run's wave (`key`: `w3`, `w3-rollback`),
/// within the 63 characters of a Job name (a Job's pods carry it in a label).
pub fn copy_name(prefix: &str, run_id: &str, key: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    run_id.hash(&mut hasher);
    let run = format!("{:08x}", hasher.finish() as u32);
    let tail = format!("-klm-{run}-{key}");
    let room = 63usize.saturating_sub(tail.len());
    let head: String = prefix.chars().take(room).collect();
    format!("{}{tail}", head.trim_end_matches('-'))
}

/// Runs klm's copy of the dispatcher for `nodes` and waits (watching) until
/// it ends: created once (a retried step finds it and waits for it), after
/// checking that no other dispatcher of the release is running (two would
/// delete each other's per-node Jobs). Returns the copy's name.
pub async fn dispatch(
    client: &Client,
    release: &ReleaseRef,
    dispatcher: &Dispatcher,
    run_id: &str,
    key: &str,
    nodes: &[String],
    timeout: Duration,
) -> Result<String, DispatchError> {
    let prefix = dispatcher
        .name_prefix()
        .unwrap_or_else(|| format!("{}-install", release.name));
    let name = copy_name(&prefix, run_id, key);
    let api: Api<Job> = Api::namespaced(client.clone(), &release.namespace);
    let existing = api
        .get_opt(&name)
        .await
        .during(|| format!("reading Job {name}"))?;
    // A retried step carries on with its copy; one that failed is run again.
    let failed_before = existing.as_ref().is_some_and(|j| condition(j, "Failed"));
    if failed_before {
        let params = kube::api::DeleteParams {
            propagation_policy: Some(kube::api::PropagationPolicy::Foreground),
            ..Default::default()
        };
        api.delete(&name, &params)
            .await
            .during(|| format!("deleting the failed Job {name}"))?;
        let what = format!("the failed Job {name} to be gone");
        watch_until(
            api.clone(),
            by_name(&name),
            timeout,
            what,
            |found: &[Arc<Job>]| {
                if found.is_empty() {
                    Check::Done(())
                } else {
                    Check::Pending
                }
            },
        )
        .await
        .map_err(|source| DispatchError::Failed {
            job: name.clone(),
            nodes: nodes.join(", "),
            source: Box::new(source),
        })?;
    }
    if existing.is_none() || failed_before {
        refuse_if_busy(&api, release, &name).await?;
        let copy = dispatcher.scoped_copy(&name, run_id, nodes)?;
        tracing::info!(job = %name, nodes = %nodes.join(","), revision = dispatcher.revision(), "running the release's install dispatcher for the wave's nodes, without its prune");
        match api.create(&PostParams::default(), &copy).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => return Err(KubeError::new(format!("creating Job {name}"), e).into()),
        }
    }
    let config = by_name(&name);
    let what = format!("dispatcher {name} to install {}", nodes.join(", "));
    watch_until(api, config, timeout, what, job_finished)
        .await
        .map_err(|source| DispatchError::Failed {
            job: name.clone(),
            nodes: nodes.join(", "),
            source: Box::new(source),
        })?;
    Ok(name)
}

/// Refuses while another install dispatcher of the release (the hook, a
/// reconcile tick, another run's copy) has not finished.
async fn refuse_if_busy(
    api: &Api<Job>,
    release: &ReleaseRef,
    own: &str,
) -> Result<(), DispatchError> {
    let selector = format!(
        "app.kubernetes.io/instance={},{DISPATCHER_LABEL}",
        release.name
    );
    let jobs = api
        .list(&ListParams::default().labels(&selector))
        .await
        .during(|| format!("listing the dispatchers of release {}", release.name))?;
    let busy: Vec<String> = jobs
        .items
        .iter()
        .filter(|j| j.name_any() != own && !finished(j))
        .map(|j| j.name_any())
        .collect();
    if busy.is_empty() {
        Ok(())
    } else {
        Err(DispatchError::Busy {
            release: release.name.clone(),
            jobs: busy.join(", "),
        })
    }
}

fn condition(job: &Job, kind: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

fn finished(job: &Job) -> bool {
    condition(job, "Complete") || condition(job, "Failed")
}

/// Wait condition: klm's copy completed; failed fails at once.
fn job_finished(found: &[Arc<Job>]) -> Check<()> {
    match found.first() {
        Some(job) if condition(job, "Complete") => Check::Done(()),
        Some(job) if condition(job, "Failed") => Check::Failed(
            "it failed: at least one node's install did not succeed (its log names them)".into(),
        ),
        Some(_) => Check::Pending,
        None => Check::Failed("it was deleted".into()),
    }
}

/// A key for a copy scoped to nodes given by hand (not a planned wave).
pub fn nodes_key(nodes: &[String]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    nodes.hash(&mut hasher);
    format!("n{:06x}", hasher.finish() as u32 & 0xff_ffff)
}

/// Suspends the release's CronJobs that are not suspended (kata-deploy's
/// reconcile CronJob would install the release's version, unverified, on a
/// node that joins or is half installed mid-run), recording each in the run
/// record first so that the run's end resumes it.
pub async fn suspend_reconcilers(
    client: &Client,
    records: &crate::run_record::Records,
    record: &crate::run_record::RunRecord,
    release: &crate::release::Release,
) -> anyhow::Result<Vec<String>> {
    let mut suspended = Vec::new();
    for object in release.objects("CronJob")? {
        let api: Api<k8s_openapi::api::batch::v1::CronJob> =
            Api::namespaced(client.clone(), &object.namespace);
        let Some(cron) = api
            .get_opt(&object.name)
            .await
            .during(|| format!("reading CronJob {}", object.name))?
        else {
            continue;
        };
        if cron.spec.suspend == Some(true) {
            continue;
        }
        records
            .update(&record.release, &record.run_id, |r| {
                if !r.suspended.contains(&object.name) {
                    r.suspended.push(object.name.clone());
                }
            })
            .await?;
        set_suspended(&api, &object.name, true).await?;
        tracing::info!(cronjob = %object.name, "suspended the release's reconcile CronJob for the run");
        suspended.push(object.name);
    }
    Ok(suspended)
}

/// Resumes the CronJobs the run suspended (its end: finished, closed).
pub async fn resume_reconcilers(
    client: &Client,
    record: &crate::run_record::RunRecord,
) -> Result<Vec<String>, DispatchError> {
    let api: Api<k8s_openapi::api::batch::v1::CronJob> =
        Api::namespaced(client.clone(), &record.namespace);
    for name in &record.suspended {
        match set_suspended(&api, name, false).await {
            Ok(()) => tracing::info!(cronjob = %name, "resumed the release's reconcile CronJob"),
            Err(DispatchError::Kube(e)) if crate::error::is_not_found(&e.source) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(record.suspended.clone())
}

async fn set_suspended(
    api: &Api<k8s_openapi::api::batch::v1::CronJob>,
    name: &str,
    suspend: bool,
) -> Result<(), DispatchError> {
    let patch = serde_json::json!({"spec": {"suspend": suspend}});
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .during(|| format!("setting CronJob {name} suspend={suspend}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hook as kata-deploy 4.1 renders it (flags in `command`).
    fn hook(flags: &[&str]) -> String {
        let command: Vec<String> = std::iter::once("/usr/bin/kata-deploy-job-dispatcher")
            .chain(flags.iter().copied())
            .map(|a| format!("            - \"{a}\""))
            .collect();
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: kata-deploy-install-dispatcher\n  labels:\n    app.kubernetes.io/instance: kata-deploy\n    kata-deploy/dispatcher: install\n  annotations:\n    helm.sh/hook: post-install,post-upgrade\n    helm.sh/hook-weight: \"5\"\nspec:\n  backoffLimit: 0\n  template:\n    metadata:\n      labels:\n        kata-deploy/dispatcher: install\n    spec:\n      serviceAccountName: kata-deploy-dispatcher-sa\n      restartPolicy: Never\n      containers:\n        - name: dispatcher\n          image: quay.io/kata-containers/kata-deploy-job-dispatcher:4.1.0\n          command:\n{}\n",
            command.join("\n")
        )
    }

    const V41: &[&str] = &[
        "--job-template=/etc/kata-job/install-job.yaml",
        "--cleanup-job-template=/etc/kata-job/cleanup-job.yaml",
        "--name-prefix=kata-deploy-install",
        "--owner-job-name=kata-deploy-install-dispatcher",
        "--parallelism=100",
        "--node-selector=kubernetes.io/os=linux",
        "--wait-for-nodes-secs=120",
        "--node-settle-secs=15",
        "--node-label=true",
        "--claim-node-pending",
        "--wait-node-ready-secs=300",
        "--require-node-handlers=kata-qemu,kata-clh",
    ];

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn command_of(job: &Job) -> Vec<String> {
        job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .command
            .clone()
            .unwrap()
    }

    #[test]
    fn the_copy_is_the_hook_scoped_to_the_wave_without_its_prune() {
        let sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\n";
        let hooks = [sa, hook(V41).as_str()].map(String::from);
        let dispatcher =
            Dispatcher::find(hooks.iter().map(String::as_str), "kata-deploy", 7).unwrap();
        assert_eq!(
            dispatcher.name_prefix().as_deref(),
            Some("kata-deploy-install")
        );
        let wave = nodes(&["ip-10-0-1-23.ec2.internal", "w2"]);
        let copy = dispatcher
            .scoped_copy("kd-klm-1-w1", "wf-1", &wave)
            .unwrap();
        let command = command_of(&copy);
        assert_eq!(command[0], "/usr/bin/kata-deploy-job-dispatcher");
        assert!(
            !command
                .iter()
                .any(|a| a.starts_with("--cleanup-job-template"))
        );
        assert!(!command.iter().any(|a| a.starts_with("--node-selector")));
        assert!(
            !command
                .iter()
                .any(|a| a.starts_with("--wait-for-nodes-secs"))
        );
        assert!(command.contains(&"--nodes=ip-10-0-1-23.ec2.internal,w2".to_string()));
        assert!(command.contains(&"--parallelism=2".to_string()));
        assert!(command.contains(&"--owner-job-name=kd-klm-1-w1".to_string()));
        // Everything else is the hook's: the templates, the prefix, the node work.
        for kept in [
            "--job-template=/etc/kata-job/install-job.yaml",
            "--name-prefix=kata-deploy-install",
            "--claim-node-pending",
            "--require-node-handlers=kata-qemu,kata-clh",
        ] {
            assert!(command.contains(&kept.to_string()), "{kept} kept");
        }
        assert_eq!(copy.metadata.name.as_deref(), Some("kd-klm-1-w1"));
        assert!(
            copy.annotations()
                .keys()
                .all(|k| !k.starts_with("helm.sh/"))
        );
        assert_eq!(copy.labels()[DISPATCHER_LABEL], "install");
        assert_eq!(copy.labels()[RUN_LABEL], "wf-1");
        let pod = copy.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("kata-deploy-dispatcher-sa")
        );
    }

    #[test]
    fn a_hook_with_an_unknown_flag_is_refused_never_run() {
        let mut flags = V41.to_vec();
        flags.push("--prune-everything");
        let refused = Dispatcher::find([hook(&flags).as_str()], "kata-deploy", 3).unwrap_err();
        assert!(
            refused.to_string().contains("--prune-everything"),
            "{refused}"
        );
        assert_eq!(refused.status(), ExitStatus::Precondition);
        let none = Dispatcher::find(["kind: ConfigMap\n"], "kata-deploy", 3).unwrap_err();
        assert!(matches!(none, DispatchError::NoHook { revision: 3, .. }));
    }

    #[test]
    fn main_s_external_dispatcher_is_known() {
        let mut flags = V41.to_vec();
        flags.extend([
            "--tracking-label-prefix=kata-deploy-job-dispatcher",
            "--node-label-key=katacontainers.io/kata-runtime",
            "--instance-label-prefix=kata-deploy.katacontainers.io",
            "--require-node-runtime-version",
            "--require-node-machine-id",
        ]);
        let dispatcher = Dispatcher::find([hook(&flags).as_str()], "kata-deploy", 1).unwrap();
        assert!(dispatcher.scoped_copy("x", "r", &nodes(&["a"])).is_ok());
    }

    #[test]
    fn a_copy_is_checked_before_it_is_created() {
        let dispatcher = Dispatcher::find([hook(V41).as_str()], "kata-deploy", 1).unwrap();
        let wave = nodes(&["a", "b"]);
        let mut copy = dispatcher.scoped_copy("x", "r", &wave).unwrap();
        assert!(check_copy(&copy, &wave).is_ok());
        assert!(check_copy(&copy, &nodes(&["a"])).is_err(), "another scope");
        copy.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .command
            .as_mut()
            .unwrap()
            .push("--cleanup-job-template=/etc/kata-job/cleanup-job.yaml".into());
        assert!(
            check_copy(&copy, &wave)
                .unwrap_err()
                .contains("--cleanup-job-template")
        );
    }

    #[test]
    fn copy_names_fit_a_label_and_differ_per_run_and_wave() {
        let long = "kata-deploy-a-very-long-multi-install-suffix-for-this-cluster-install";
        let name = copy_name(long, "upgrade-kata-2026-12-07", "w12-rollback");
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("-w12-rollback"));
        assert_ne!(
            copy_name("kata-deploy-install", "run-a", "w1"),
            copy_name("kata-deploy-install", "run-b", "w1")
        );
        assert_ne!(
            copy_name("kata-deploy-install", "run-a", "w1"),
            copy_name("kata-deploy-install", "run-a", "w2")
        );
    }
}
