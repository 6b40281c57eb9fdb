//! Shared set-up for the integration tests: one isolated "case" per test (its
//! own namespace, kwok nodes, kata-deploy release with its own suffix, and the
//! chart's ServiceAccount), and running `klm` as that ServiceAccount.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Taint};
use klm_rig::{NodeSpec, Rig};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fixture kata-deploy charts, packaged once per test binary; `{version}`
/// in the returned reference is replaced by klm with the chart version.
pub fn chart_reference() -> String {
    charts_dir()
        .join("kata-deploy-{version}.tgz")
        .display()
        .to_string()
}

/// The directory of packaged fixture charts.
pub fn charts_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo_root().join("target/rig/charts");
        klm_rig::charts::package_all(&dir).expect("packaging the fixture kata-deploy chart");
        dir
    })
}

/// One test's corner of the shared rig.
pub struct Case {
    /// The rig.
    pub rig: &'static Rig,
    /// Admin client (for set-up and assertions only; klm never runs as admin).
    pub admin: Client,
    /// The namespace: kata-deploy's release lives here, and so does the chart's ServiceAccount.
    pub namespace: String,
    /// The kata-deploy release name.
    pub release: String,
    /// The test's nodes, in name order.
    pub nodes: Vec<String>,
    /// Kubeconfig of the chart's ServiceAccount.
    pub sa_kubeconfig: PathBuf,
    /// The kata-deploy chart reference, `{version}` standing for the version
    /// (the fixture's packages, or the real ones in the real-chart tier).
    pub chart: String,
}

/// When a test fails, what a person needs to see why: the case's pods,
/// events, nodes (with klm's annotations) and run record, from kubectl as
/// admin, on stderr (the test harness shows it with the failure). klm's own
/// stderr is printed by every step already.
impl Drop for Case {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let selector = format!("{CASE_LABEL}={}", self.namespace);
        let record = format!("configmap/{}-klm-run", self.release);
        let nodes = r#"jsonpath={range .items[*]}{.metadata.name}{" unschedulable="}{.spec.unschedulable}{" "}{.metadata.annotations}{"\n"}{end}"#;
        let views: [(&str, Vec<&str>); 4] = [
            (
                "pods",
                vec!["get", "pods", "-n", &self.namespace, "-o", "wide"],
            ),
            (
                "events",
                vec![
                    "get",
                    "events",
                    "-n",
                    &self.namespace,
                    "--sort-by=.lastTimestamp",
                ],
            ),
            ("nodes", vec!["get", "nodes", "-l", &selector, "-o", nodes]),
            (
                "run record",
                vec![
                    "get",
                    &record,
                    "-n",
                    &self.namespace,
                    "-o",
                    "jsonpath={.data.record\\.json}",
                ],
            ),
        ];
        for (what, args) in views {
            let output = std::process::Command::new(self.rig.bin("kubectl"))
                .arg("--kubeconfig")
                .arg(self.rig.kubeconfig())
                .args(&args)
                .output();
            #[allow(clippy::print_stderr)]
            match output {
                Ok(out) => eprintln!(
                    "--- case {}: {what}\n{}{}",
                    self.namespace,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => eprintln!(
                    "--- case {}: {what}: kubectl did not run: {e}",
                    self.namespace
                ),
            }
        }
    }
}

/// How a case is set up.
pub struct CaseSpec<'a> {
    /// Short name, used in namespace and node names.
    pub name: &'a str,
    /// How many nodes.
    pub nodes: usize,
    /// kata-deploy version installed first.
    pub version: &'a str,
    /// Extra `--set` values for the kata-deploy install.
    pub set: &'a [&'a str],
}

impl<'a> CaseSpec<'a> {
    /// A daemonset-mode case with `nodes` nodes at `version`.
    pub fn new(name: &'a str, nodes: usize, version: &'a str) -> Self {
        Self {
            name,
            nodes,
            version,
            set: &[],
        }
    }
}

/// The label that marks a case's nodes (kata-deploy's nodeSelector uses it).
pub const CASE_LABEL: &str = "klm.test/case";

/// The extra kata-deploy values of a job-mode case (for [`Case::start_with`]):
/// its installer confined to the case's nodes.
pub fn job_values(case_label: &str) -> Vec<String> {
    vec![
        "deploymentMode=job".into(),
        format!("job.nodeSelector.klm\\.test/case={case_label}"),
    ]
}

/// What a case is made of beyond its [`CaseSpec`]: the fixture by default,
/// the real kata-deploy packages in the real-chart tier.
pub struct CaseSetup {
    /// The kata-deploy chart reference (`{version}` stands for the version).
    pub chart: String,
    /// The kata-deploy release name.
    pub release: String,
    /// Node `i` (from 1) of the case in namespace `ns`.
    pub node_name: fn(ns: &str, i: usize) -> String,
    /// Extra labels on every node of the case.
    pub node_labels: Vec<(String, String)>,
    /// Extra `--set` values of the kata-lifecycle-manager chart.
    pub klm_values: Vec<String>,
    /// Seconds a kata-deploy without health probes (3.27-3.30) takes to
    /// install after its pod is Ready on the case's nodes (the simulator's
    /// knob, see `klm_rig::simulator::PROBELESS_INSTALL_SECS`); `None` keeps
    /// the simulator's default.
    pub probeless_install_secs: Option<u64>,
}

impl CaseSetup {
    /// The fixture's packages, release `kata-deploy`, nodes `<ns>-n<i>`. Its
    /// probe-less versions (3.27, 3.28, 3.30) install at once once Ready:
    /// the tests of this tier upgrade 3.27 to 3.28 and are about everything
    /// but that wait (the real-chart tier holds klm to it).
    pub fn fixture() -> Self {
        Self {
            chart: chart_reference(),
            release: "kata-deploy".into(),
            node_name: |ns, i| format!("{ns}-n{i}"),
            node_labels: Vec::new(),
            klm_values: Vec::new(),
            probeless_install_secs: Some(0),
        }
    }
}

impl Case {
    /// Creates the namespace and nodes, installs kata-deploy (waiting until
    /// every node runs it) and the chart's RBAC, and issues the
    /// ServiceAccount's token.
    pub async fn start(spec: CaseSpec<'_>) -> Result<Case> {
        Self::start_with(spec, |_| Vec::new()).await
    }

    /// Like [`Case::start`], with extra kata-deploy values computed from the
    /// case's label value (its namespace).
    pub async fn start_with(
        spec: CaseSpec<'_>,
        extra: impl Fn(&str) -> Vec<String>,
    ) -> Result<Case> {
        Self::start_on(Rig::shared().await?, spec, extra).await
    }

    /// Like [`Case::start_with`], on a given rig (the workflow tier's rig
    /// with a real node and Argo).
    pub async fn start_on(
        rig: &'static Rig,
        spec: CaseSpec<'_>,
        extra: impl Fn(&str) -> Vec<String>,
    ) -> Result<Case> {
        Self::start_setup(rig, spec, CaseSetup::fixture(), extra).await
    }

    /// Like [`Case::start_on`], made of `setup`.
    pub async fn start_setup(
        rig: &'static Rig,
        spec: CaseSpec<'_>,
        setup: CaseSetup,
        extra: impl Fn(&str) -> Vec<String>,
    ) -> Result<Case> {
        let admin = rig.client().await?;
        let namespace = rig.namespace(spec.name).await?;
        let nodes: Vec<String> = (1..=spec.nodes)
            .map(|i| (setup.node_name)(&namespace, i))
            .collect();
        let mut labels = BTreeMap::from([(CASE_LABEL.to_string(), namespace.clone())]);
        labels.extend(setup.node_labels.iter().cloned());
        let specs: Vec<NodeSpec> = nodes
            .iter()
            .map(|name| NodeSpec {
                name: name.clone(),
                labels: labels.clone(),
                taints: Vec::new(),
                unschedulable: false,
            })
            .collect();
        rig.add_nodes(&specs).await?;
        if let Some(secs) = setup.probeless_install_secs {
            let patch = serde_json::json!({"metadata": {"annotations": {
                klm_rig::simulator::PROBELESS_INSTALL_SECS: secs.to_string()
            }}});
            let api: Api<Node> = Api::all(admin.clone());
            for node in &nodes {
                api.patch(node, &Default::default(), &kube::api::Patch::Merge(&patch))
                    .await?;
            }
        }
        let mut case = Case {
            rig,
            admin,
            release: setup.release,
            nodes,
            sa_kubeconfig: PathBuf::new(),
            namespace,
            chart: setup.chart,
        };
        let extra = extra(&case.namespace);
        let mut set: Vec<&str> = spec.set.to_vec();
        set.extend(extra.iter().map(String::as_str));
        case.install_kata_deploy(spec.version, &set).await?;
        case.sa_kubeconfig = case.install_chart_rbac(&setup.klm_values).await?;
        Ok(case)
    }

    /// Values every install of the fixture gets: confined to the case's nodes,
    /// with the case's suffix so cluster-scoped names never clash.
    fn base_values(&self) -> Vec<String> {
        vec![
            format!("nodeSelector.klm\\.test/case={}", self.namespace),
            format!("env.multiInstallSuffix={}", self.namespace),
        ]
    }

    /// `helm install` of the fixture kata-deploy as admin (what a cluster
    /// operator did before klm existed), waiting for every node to run it.
    pub async fn install_kata_deploy(&self, version: &str, set: &[&str]) -> Result<()> {
        let chart = self.chart.replace("{version}", version);
        let mut args = vec![
            "install".to_string(),
            self.release.clone(),
            chart,
            "--namespace".into(),
            self.namespace.clone(),
            "--wait".into(),
            "--timeout".into(),
            "120s".into(),
        ];
        for value in self
            .base_values()
            .iter()
            .map(String::as_str)
            .chain(set.iter().copied())
        {
            args.push("--set".into());
            args.push(value.to_string());
        }
        self.helm_admin(&args).await?;
        self.wait_all_installed(version).await
    }

    /// Waits until every node of the case reports `version` as installed.
    pub async fn wait_all_installed(&self, version: &str) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.admin.clone());
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
        // Watch-based: re-check on every node event of the case.
        let selector = format!("{CASE_LABEL}={}", self.namespace);
        let mut stream = std::pin::pin!(kube::runtime::watcher(
            nodes.clone(),
            kube::runtime::watcher::Config::default().labels(&selector)
        ));
        use futures::StreamExt;
        loop {
            let listed = nodes.list(&ListParams::default().labels(&selector)).await?;
            let pending: Vec<String> = listed
                .items
                .iter()
                .filter(|n| host_version(n).as_deref() != Some(version))
                .map(|n| n.name_any())
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(_)) => continue,
                Ok(None) => bail!("node watch ended"),
                Err(_) => bail!(
                    "nodes {pending:?} did not report kata-deploy {version} installed within 120s"
                ),
            }
        }
    }

    /// Installs the kata-lifecycle-manager chart (its RBAC and
    /// WorkflowTemplate) as admin, and returns a kubeconfig for its
    /// ServiceAccount: klm runs with exactly the chart's rights.
    async fn install_chart_rbac(&self, values: &[String]) -> Result<PathBuf> {
        self.install_chart_in(&format!("klm-{}", self.namespace), &self.namespace, values)
            .await?;
        self.rig
            .service_account_kubeconfig(&self.namespace, &self.service_account())
            .await
    }

    /// `helm install` of the kata-lifecycle-manager chart as `chart_release`
    /// in `argo_namespace` (its WorkflowTemplate and ServiceAccount), driving
    /// this case's kata-deploy release, with extra `--set` values.
    pub async fn install_chart_in(
        &self,
        chart_release: &str,
        argo_namespace: &str,
        values: &[String],
    ) -> Result<()> {
        self.rig.apply_argo_crds("v3.7.18").await?;
        let chart = repo_root().join("chart/kata-lifecycle-manager");
        let mut args = vec![
            "install".to_string(),
            chart_release.to_string(),
            chart.display().to_string(),
            "--namespace".into(),
            argo_namespace.to_string(),
            "--set".into(),
            format!("argoNamespace={argo_namespace}"),
            "--set".into(),
            format!("defaults.helmNamespace={}", self.namespace),
            "--set".into(),
            format!("defaults.helmRelease={}", self.release),
            "--set".into(),
            format!("defaults.verificationNamespace={}", self.namespace),
            "--set-string".into(),
            "defaults.verificationPod=apiVersion: v1".into(),
        ];
        for value in values {
            args.push("--set".into());
            args.push(value.clone());
        }
        self.helm_admin(&args).await?;
        Ok(())
    }

    /// The chart's ServiceAccount name for this case.
    pub fn service_account(&self) -> String {
        format!("klm-{}-kata-lifecycle-manager", self.namespace)
    }

    /// Runs helm as admin.
    pub async fn helm_admin(&self, args: &[String]) -> Result<String> {
        let output = tokio::process::Command::new(self.rig.helm())
            .args(args)
            .arg("--kubeconfig")
            .arg(self.rig.kubeconfig())
            .output()
            .await?;
        if !output.status.success() {
            bail!(
                "helm {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs klm as the chart's ServiceAccount, with the case's release,
    /// namespace and chart set the way the workflow sets them.
    pub async fn klm(&self, args: &[&str]) -> Klm {
        let output = self.klm_command(args).output().await.expect("klm runs");
        Klm::from(output)
    }

    /// The klm command [`Case::klm`] runs, for a test that starts and kills
    /// it itself. Like a workflow step, it gets the release, its namespace and
    /// the chart as `KLM_*` variables (a flag in `args` still wins), and runs
    /// as the chart's ServiceAccount unless `args` name a kubeconfig.
    pub fn klm_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_klm"));
        command.args(args);
        if !args.contains(&"--kubeconfig") {
            command.arg("--kubeconfig").arg(&self.sa_kubeconfig);
        }
        command
            .env("KLM_HELM", self.rig.helm())
            .env("KLM_HELM_RELEASE", &self.release)
            .env("KLM_HELM_NAMESPACE", &self.namespace)
            .env("KLM_CHART", &self.chart)
            .env_remove("KUBECONFIG")
            .env_remove("KLM_RUN_ID")
            .env("KLM_LOG", "info");
        command
    }

    /// A node of the case by index.
    pub fn node(&self, i: usize) -> &str {
        &self.nodes[i]
    }

    /// Reads a node.
    pub async fn get_node(&self, name: &str) -> Node {
        Api::<Node>::all(self.admin.clone())
            .get(name)
            .await
            .expect("node exists")
    }

    /// The Events klm recorded on a node, oldest first, as
    /// `(reason, type, note)` (Node Events live in `default`).
    pub async fn node_events(&self, node: &str) -> Vec<(String, String, String)> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.admin.clone(), "default");
        let mut found: Vec<_> = events
            .list(&kube::api::ListParams::default())
            .await
            .expect("list Events")
            .items
            .into_iter()
            .filter(|e| {
                e.reporting_controller.as_deref() == Some("kata-lifecycle-manager")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node)
            })
            .collect();
        found.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        found
            .into_iter()
            .map(|e| {
                (
                    e.reason.unwrap_or_default(),
                    e.type_.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The run record's JSON, if any.
    pub async fn run_record(&self) -> Option<Value> {
        let cms: Api<ConfigMap> = Api::namespaced(self.admin.clone(), &self.namespace);
        let cm = cms
            .get_opt(&format!("{}-klm-run", self.release))
            .await
            .ok()??;
        serde_json::from_str(cm.data?.get("record.json")?).ok()
    }

    /// The kata-deploy pods of the case by node.
    pub async fn kata_pods(&self) -> BTreeMap<String, Pod> {
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), &self.namespace);
        let list = pods.list(&ListParams::default()).await.expect("list pods");
        list.items
            .into_iter()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .is_some_and(|s| s.containers.iter().any(|c| c.name == "kube-kata"))
            })
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| Some((p.spec.as_ref()?.node_name.clone()?, p)))
            .collect()
    }

    /// The release's revision and chart version, as helm reports them.
    pub async fn release_state(&self) -> (u64, String) {
        let out = self
            .helm_admin(&[
                "get".into(),
                "metadata".into(),
                self.release.clone(),
                "--namespace".into(),
                self.namespace.clone(),
                "--output".into(),
                "json".into(),
            ])
            .await
            .expect("helm get metadata");
        let v: Value = serde_json::from_str(&out).expect("json");
        (
            v["revision"].as_u64().unwrap_or(0),
            v["version"].as_str().unwrap_or_default().to_string(),
        )
    }

    /// Everything a bad-input test asserts did not change.
    pub async fn snapshot(&self) -> String {
        let nodes = Api::<Node>::all(self.admin.clone())
            .list(&ListParams::default().labels(&format!("{CASE_LABEL}={}", self.namespace)))
            .await
            .expect("list nodes");
        let nodes: Vec<Value> = nodes
            .items
            .iter()
            .map(|n| serde_json::json!({"name": n.name_any(), "annotations": n.annotations(), "labels": n.labels(), "spec": n.spec}))
            .collect();
        let pods: Vec<String> = self
            .kata_pods()
            .await
            .values()
            .map(|p| p.uid().unwrap_or_default())
            .collect();
        let record = self.run_record().await;
        let release = self.release_state().await;
        serde_json::json!({"nodes": nodes, "pods": pods, "record": record, "release": [release.0, release.1]}).to_string()
    }

    /// Adds a taint to a node (as an operator would).
    pub async fn taint(&self, node: &str, taints: &[Taint]) {
        let nodes: Api<Node> = Api::all(self.admin.clone());
        let mut current = nodes.get(node).await.expect("node");
        let spec = current.spec.get_or_insert_with(Default::default);
        spec.taints
            .get_or_insert_with(Vec::new)
            .extend(taints.iter().cloned());
        nodes
            .replace(node, &Default::default(), &current)
            .await
            .expect("taint node");
    }

    /// The release's user-supplied values (`helm get values -o json`).
    pub async fn user_values(&self) -> Value {
        let out = self
            .helm_admin(&[
                "get".into(),
                "values".into(),
                self.release.clone(),
                "-n".into(),
                self.namespace.clone(),
                "-o".into(),
                "json".into(),
            ])
            .await
            .expect("helm get values");
        serde_json::from_str(&out).expect("json")
    }

    /// Labels a node (as an operator would, to pick it for a run).
    pub async fn label(&self, node: &str, key: &str, value: &str) {
        let nodes: Api<Node> = Api::all(self.admin.clone());
        let patch = serde_json::json!({"metadata": {"labels": {key: value}}});
        nodes
            .patch(
                node,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .expect("label node");
    }

    /// Cordons a node (as an operator would, before any run).
    pub async fn cordon_by_hand(&self, node: &str) {
        let nodes: Api<Node> = Api::all(self.admin.clone());
        let patch = serde_json::json!({"spec": {"unschedulable": true}});
        nodes
            .patch(
                node,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .expect("cordon");
    }
}

/// The version the simulated host has installed (like `kata-runtime --version`).
pub fn host_version(node: &Node) -> Option<String> {
    node.annotations()
        .get("rig.klm.test/installed-version")
        .cloned()
}

/// An annotation of a node.
pub fn annotation(node: &Node, key: &str) -> Option<String> {
    node.annotations().get(key).cloned()
}

/// Whether a node is unschedulable.
pub fn unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

/// A finished klm process.
#[derive(Debug)]
pub struct Klm {
    /// Exit code.
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl From<Output> for Klm {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Klm {
    /// Asserts exit 0 and returns self.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "klm failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts this exit code.
    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .with_context(|| {
                format!(
                    "stdout is not JSON:\n{}\nstderr:\n{}",
                    self.stdout, self.stderr
                )
            })
            .unwrap()
    }
}
