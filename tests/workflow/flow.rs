//! The workflow tier's set-up: a [`Case`] of the integration tests (its own
//! namespace, kwok nodes and kata-deploy release with its own suffix) on the
//! rig that also runs a real kubelet node and Argo's workflow-controller,
//! with this project's chart installed as a user installs it, and the
//! WorkflowTemplate driven through the real `argo` CLI.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use klm_rig::Rig;
use klm_rig::argo::ArgoTier;
use klm_rig::verification_pod::VerificationPod;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::wait::await_condition;
use kube::{Api, ResourceExt};
use serde_json::Value;

pub use crate::support::{Case, CaseSpec, annotation, host_version, unschedulable};

/// The node status annotation.
pub const STATUS: &str = "katacontainers.io/kata-lifecycle-manager-status";
/// The version a node was last verified at.
pub const VERIFIED: &str = "katacontainers.io/kata-current-version";

/// The rig with its real node and Argo, or `None` where this machine cannot
/// run a real node (the tier is then skipped with one line saying why; with
/// `CI=true` it must run, so that is a failure).
pub async fn argo_rig() -> Option<&'static Rig> {
    Rig::shared_with_argo_or_skip()
        .await
        .expect("the rig with a real node and Argo starts")
}

/// One test's corner of the rig, with the chart installed for real.
pub struct Flow {
    /// The case: namespace, nodes, kata-deploy release, the chart's ServiceAccount.
    pub case: Arc<Case>,
    /// The real node and the Argo controller.
    pub argo: &'static ArgoTier,
    /// The chart's helm release.
    pub chart_release: String,
    /// Where the chart put its WorkflowTemplate, and workflows run.
    pub argo_namespace: String,
    /// The WorkflowTemplate's name.
    pub template: String,
}

/// How a workflow ended.
#[derive(Debug)]
pub struct Finished {
    /// The workflow's name.
    pub name: String,
    /// `status.phase`.
    pub phase: String,
    /// `status.message`.
    pub message: String,
    /// The whole object.
    pub workflow: Value,
    /// Every step's name and phase (its display name), in start order, for
    /// assertions and for failure reports.
    pub steps: Vec<(String, String)>,
    /// The klm output of every step pod, from the kubelet's log files.
    pub logs: String,
}

impl Finished {
    /// Whether a step with this display name (e.g. `rollback`) ran, whatever its phase.
    pub fn ran(&self, step: &str) -> bool {
        self.steps
            .iter()
            .any(|(name, phase)| name == step && phase != "Skipped" && phase != "Omitted")
    }

    /// A report for assertion messages: the steps and the logs.
    pub fn report(&self) -> String {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(name, phase)| format!("  {name}: {phase}"))
            .collect();
        format!(
            "workflow {} {} ({})\nsteps:\n{}\nstep logs:\n{}",
            self.name,
            self.phase,
            self.message,
            steps.join("\n"),
            self.logs
        )
    }

    /// Asserts the workflow succeeded.
    #[track_caller]
    pub fn succeeded(&self) -> &Self {
        assert_eq!(self.phase, "Succeeded", "{}", self.report());
        self
    }

    /// Asserts the workflow failed (Argo's Failed, not Error: klm decided).
    #[track_caller]
    pub fn failed(&self) -> &Self {
        assert_eq!(self.phase, "Failed", "{}", self.report());
        self
    }
}

impl Flow {
    /// Starts a case on the Argo rig and installs the chart into its
    /// namespace with the image under test, the fixture kata-deploy charts in
    /// that image, and `pod` as the default verification pod.
    pub async fn start(rig: &'static Rig, spec: CaseSpec<'_>) -> Result<Flow> {
        Self::start_with(rig, spec, |_| Vec::new()).await
    }

    /// Like [`Flow::start`], with extra kata-deploy values computed from the
    /// case's label value (its namespace).
    pub async fn start_with(
        rig: &'static Rig,
        spec: CaseSpec<'_>,
        extra: impl Fn(&str) -> Vec<String>,
    ) -> Result<Flow> {
        let case = Case::start_on(rig, spec, extra).await?;
        let namespace = case.namespace.clone();
        Self::installed(Arc::new(case), rig, &namespace).await
    }

    /// The chart as the case installed it into `argo_namespace`, made ready
    /// for real runs (see [`Flow::install_chart`]).
    async fn installed(case: Arc<Case>, rig: &'static Rig, argo_namespace: &str) -> Result<Flow> {
        let chart_release = format!("klm-{argo_namespace}");
        let flow = Flow {
            template: format!("{chart_release}-kata-lifecycle-manager"),
            chart_release,
            argo_namespace: argo_namespace.to_string(),
            case,
            argo: rig.argo()?,
        };
        flow.install_chart(&verification_pod(&[], "succeed"))
            .await?;
        Ok(flow)
    }

    /// A second install of the chart, in a namespace of its own, driving the
    /// same kata-deploy release (two teams, or a ClusterWorkflowTemplate used
    /// from two namespaces).
    pub async fn install_again(&self, name: &str) -> Result<Flow> {
        let rig = self.case.rig;
        let namespace = rig.namespace(name).await?;
        self.case
            .install_chart_in(&format!("klm-{namespace}"), &namespace, &[])
            .await?;
        Self::installed(self.case.clone(), rig, &namespace).await
    }

    /// `helm upgrade` of the chart the case installed to the chart the tier
    /// published (`oci://` on the rig's loopback registry, its values naming
    /// the image under test by digest), as a user installs it for real: the
    /// image's fixture charts, steps on the real node, and the verification pod.
    pub async fn install_chart(&self, pod: &str) -> Result<()> {
        self.install_chart_with(pod, &[]).await
    }

    /// Like [`Flow::install_chart`], with verification pods per pool
    /// (`verificationPods`, pool -> pod YAML).
    pub async fn install_chart_with(&self, pod: &str, pool_pods: &[(&str, &str)]) -> Result<()> {
        let dir = tempfile::tempdir()?;
        let pod_file = dir.path().join("verification-pod.yaml");
        std::fs::write(&pod_file, pod)?;
        let published = self.argo.published();
        let node_label = self.argo.node_label();
        let mut args: Vec<String> = vec![
            "upgrade".into(),
            self.chart_release.clone(),
            published.chart_ref(),
            "--version".into(),
            published.chart_version.clone(),
            "--plain-http".into(),
            "--namespace".into(),
            self.argo_namespace.clone(),
            // The published chart's own values (the image by digest; plain
            // --reuse-values would keep the installed chart's defaults), then
            // the values the case set.
            "--reset-then-reuse-values".into(),
        ];
        for set in [
            format!("kataDeploy.chart={}", self.argo.chart_in_image()),
            format!("tolerations[0].key={node_label}"),
            "tolerations[0].operator=Exists".into(),
            "tolerations[0].effect=NoSchedule".into(),
        ] {
            args.push("--set".into());
            args.push(set);
        }
        args.push("--set-string".into());
        args.push(format!(
            "nodeSelector.{}=true",
            node_label.replace('.', "\\.")
        ));
        args.push("--set-file".into());
        args.push(format!("defaults.verificationPod={}", pod_file.display()));
        for (pool, pool_pod) in pool_pods {
            let file = dir.path().join(format!("pool-{pool}.yaml"));
            std::fs::write(&file, pool_pod)?;
            args.push("--set-file".into());
            args.push(format!("verificationPods.{pool}={}", file.display()));
        }
        self.case.helm_admin(&args).await?;
        Ok(())
    }

    /// The `argo` CLI, as a user in the chart's namespace runs it.
    pub fn argo(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::from(self.argo.argo());
        command.args(["--namespace", &self.argo_namespace]);
        command
    }

    /// `argo submit --from workflowtemplate/<the chart's>` with `-p` parameters
    /// (and `--entrypoint` when given); returns the workflow's name.
    pub async fn submit(
        &self,
        entrypoint: Option<&str>,
        params: &[(&str, &str)],
    ) -> Result<String> {
        let output = self.submit_output(entrypoint, params).await?;
        if !output.status.success() {
            bail!(
                "argo submit failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let name = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let name = name.rsplit('/').next().unwrap_or(&name).to_string();
        Ok(name)
    }

    /// `argo submit` as [`Flow::submit`] runs it, for a test that expects a refusal.
    pub async fn submit_output(
        &self,
        entrypoint: Option<&str>,
        params: &[(&str, &str)],
    ) -> Result<std::process::Output> {
        let mut command = self.argo();
        command
            .arg("submit")
            .arg("--from")
            .arg(format!("workflowtemplate/{}", self.template))
            .args(["--output", "name"]);
        if let Some(entrypoint) = entrypoint {
            command.args(["--entrypoint", entrypoint]);
        }
        for (name, value) in params {
            command.arg("-p").arg(format!("{name}={value}"));
        }
        Ok(command.output().await?)
    }

    /// Submits and waits for the end.
    pub async fn run(&self, entrypoint: Option<&str>, params: &[(&str, &str)]) -> Result<Finished> {
        let name = self.submit(entrypoint, params).await?;
        self.wait(&name).await
    }

    /// `argo wait` for a workflow (at most 20 minutes), then what it did.
    pub async fn wait(&self, name: &str) -> Result<Finished> {
        self.wait_within(name, Duration::from_secs(20 * 60)).await
    }

    /// `argo wait` for a workflow, at most `limit`, then what it did.
    pub async fn wait_within(&self, name: &str, limit: Duration) -> Result<Finished> {
        let wait = self.argo().args(["wait", name]).output();
        let output = tokio::time::timeout(limit, wait).await.with_context(|| {
            format!(
                "workflow {name} did not end within {} minutes",
                limit.as_secs() / 60
            )
        })??;
        if !output.status.success() {
            // `argo wait` exits non-zero for a failed workflow too; the phase says.
            tracing::debug!(stderr = %String::from_utf8_lossy(&output.stderr), "argo wait");
        }
        self.finished(name).await
    }

    /// The workflow object.
    pub async fn workflow(&self, name: &str) -> Result<Value> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.case.admin.clone(),
            &self.argo_namespace,
            &workflow_resource(),
        );
        let object = api.get(name).await?;
        Ok(serde_json::to_value(object)?)
    }

    /// What a finished (or stopped) workflow did.
    pub async fn finished(&self, name: &str) -> Result<Finished> {
        let workflow = self.workflow(name).await?;
        let status = &workflow["status"];
        let mut steps: Vec<(String, String, String)> = status["nodes"]
            .as_object()
            .map(|nodes| {
                nodes
                    .values()
                    .filter(|n| {
                        ["Pod", "Container", "Skipped", "Omitted"]
                            .contains(&n["type"].as_str().unwrap_or_default())
                    })
                    .map(|n| {
                        (
                            n["startedAt"].as_str().unwrap_or_default().to_string(),
                            n["displayName"].as_str().unwrap_or_default().to_string(),
                            n["phase"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        steps.sort();
        Ok(Finished {
            name: name.to_string(),
            phase: status["phase"].as_str().unwrap_or_default().to_string(),
            message: status["message"].as_str().unwrap_or_default().to_string(),
            steps: steps.into_iter().map(|(_, n, p)| (n, p)).collect(),
            logs: self.step_logs(name).await,
            workflow,
        })
    }

    /// The main container's log of every step pod of a workflow, oldest
    /// first, read from the kubelet's log files (never through the apiserver:
    /// nothing may connect to the real node).
    pub async fn step_logs(&self, workflow: &str) -> String {
        let pods: Api<Pod> = Api::namespaced(self.case.admin.clone(), &self.argo_namespace);
        let selector = format!("workflows.argoproj.io/workflow={workflow}");
        let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await else {
            return String::new();
        };
        let mut list = list.items;
        list.sort_by_key(|p| p.creation_timestamp());
        let mut logs = String::new();
        for pod in list {
            let name = pod.name_any();
            // klm's containers: main, or a containerSet's phases in order.
            let containers: Vec<String> = pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .map(|c| c.name.clone())
                .filter(|c| c != "wait")
                .collect();
            let log = self
                .argo
                .phase_logs(&self.argo_namespace, &name, &containers)
                .unwrap_or_else(|e| format!("(no log: {e:#})"));
            logs.push_str(&format!("--- {name}\n{log}\n"));
        }
        logs
    }

    /// The case's nodes by name.
    pub async fn nodes(&self) -> BTreeMap<String, Node> {
        let mut nodes = BTreeMap::new();
        for name in &self.case.nodes {
            nodes.insert(name.clone(), self.case.get_node(name).await);
        }
        nodes
    }

    /// Waits (watching) until `node`'s status annotation is `status`.
    pub async fn await_node_status(&self, node: &str, status: &str) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.case.admin.clone());
        let wanted = status.to_string();
        tokio::time::timeout(
            Duration::from_secs(300),
            await_condition(nodes, node, move |n: Option<&Node>| {
                n.and_then(|n| n.annotations().get(STATUS)) == Some(&wanted)
            }),
        )
        .await
        .with_context(|| format!("node {node} did not reach status {status} within 300s"))??;
        Ok(())
    }

    /// The release's user-supplied values (`helm get values`), as JSON.
    pub async fn release_values(&self) -> Value {
        let out = self
            .case
            .helm_admin(&[
                "get".into(),
                "values".into(),
                self.case.release.clone(),
                "--namespace".into(),
                self.case.namespace.clone(),
                "--output".into(),
                "json".into(),
            ])
            .await
            .expect("helm get values");
        serde_json::from_str(&out).expect("helm prints JSON")
    }

    /// `helm history` of the kata-deploy release: how many revisions.
    pub async fn release_revisions(&self) -> usize {
        let out = self
            .case
            .helm_admin(&[
                "history".into(),
                self.case.release.clone(),
                "--namespace".into(),
                self.case.namespace.clone(),
                "--output".into(),
                "json".into(),
                "--max".into(),
                "256".into(),
            ])
            .await
            .expect("helm history");
        let history: Vec<Value> = serde_json::from_str(&out).expect("helm prints JSON");
        history.len()
    }
}

/// Argo's Workflow kind.
pub fn workflow_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow"),
        "workflows",
    )
}

/// A verification pod the rig's kwok completes with `outcome` (`succeed`,
/// `fail`, `hold`), except on the nodes in `fail_on`, where it fails.
pub fn verification_pod(fail_on: &[&str], outcome: &str) -> String {
    VerificationPod::new(outcome).failing_on(fail_on).yaml()
}

/// A verification pod that fails on `nodes` while their simulated host runs
/// `version` and passes otherwise (the rig decides it from the host, as a
/// real check of the runtime would): a broken new version, rolled back.
pub fn verification_pod_broken_at(version: &str, nodes: &[&str]) -> String {
    VerificationPod::succeeding()
        .broken_at(version, nodes)
        .yaml()
}

/// A verification pod as the `verification-pod` parameter takes it (base64).
pub fn verification_parameter(pod: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pod)
}
