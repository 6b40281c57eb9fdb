//! The Argo tier: the rig's real node ([`crate::real_node`]) plus a real
//! Argo Workflows workflow-controller (v3.7.18, built from its Go module by
//! `tests/argo/build.sh`) as a host process, and the images the steps run:
//! argoexec (imported into containerd), and the image under test, built as
//! the shipped image is ([`crate::oci`]: a static klm, helm and the CA
//! bundle, no shell, user 65532) for this machine's platform, with the
//! fixture kata-deploy chart packages in [`CHARTS_IN_IMAGE`]. The image index
//! and this project's chart (its values naming the image by digest) are
//! pushed to a loopback registry ([`crate::registry`], [`crate::publish`]),
//! from which the node's containerd pulls the image by digest.
//!
//! The controller's `workflowDefaults` put every step pod on the real node
//! (host network, its label and toleration), never pull, and point in-pod
//! clients at the rig's apiserver on loopback (`KUBERNETES_SERVICE_HOST`).
//!
//! Tests get the tier with [`Rig::shared_with_argo`] (or
//! [`Rig::shared_with_argo_or_skip`]); `klm-rig up --argo` brings it up for a
//! person.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};

use crate::control_plane::{bin_dir, workspace_root};
use crate::image::{ImageFile, ImageSpec, write_docker_archive};
use crate::oci::{Arch, IndexSpec, PlatformFiles};
use crate::publish::Published;
use crate::real_node::{
    self, PAUSE_IMAGE, REAL_NODE, REAL_NODE_LABEL, RealNode, RealNodeOptions, TeardownReport,
};
use crate::rig::Rig;

/// The Argo Workflows version the tier runs (its CRDs, controller, argoexec).
pub const ARGO_VERSION: &str = "v3.7.18";
/// The argoexec image (init and wait containers, and the emissary in main).
pub const ARGOEXEC_IMAGE: &str = "localhost/rig/argoexec:v3.7.18";
/// The tag the image under test is pushed with (it is pulled by digest).
pub const KLM_IMAGE_TAG: &str = "test";
/// Where the fixture kata-deploy packages are inside the image under test
/// (`/charts/kata-deploy-<version>.tgz`).
pub const CHARTS_IN_IMAGE: &str = "/charts";
/// The namespace the controller watches (and whose `default`
/// ServiceAccount may write `workflowtaskresults`).
pub const ARGO_NAMESPACE: &str = "argo";
const CONTROLLER_CONFIGMAP: &str = "workflow-controller-configmap";
const FIELD_MANAGER: &str = "klm-rig-argo";

/// The running tier: what tests need besides the [`Rig`].
#[derive(Debug)]
pub struct ArgoTier {
    kubeconfig: PathBuf,
    metrics_port: u16,
    pod_logs: PathBuf,
    node_dir: PathBuf,
    setup: Duration,
    phases: Vec<(&'static str, Duration)>,
    published: Published,
}

/// The real node of this process, reachable for the teardown at exit.
static NODE: Mutex<Option<RealNode>> = Mutex::new(None);

impl Rig {
    /// The rig of this test binary ([`Rig::shared`]) with the Argo tier
    /// started on it (once per test binary; at most one test binary per
    /// machine runs it at a time, the others wait). Fails when the machine
    /// cannot run a real node ([`real_node::host_check`]).
    pub async fn shared_with_argo() -> Result<&'static Rig> {
        let rig = Rig::shared().await?;
        let result = tokio::task::spawn_blocking(move || {
            rig.argo_slot()
                .get_or_init(|| start_owned(rig).map_err(|e| format!("{e:#}")))
                .as_ref()
                .map(|_| ())
                .map_err(Clone::clone)
        })
        .await?;
        result.map_err(|e| anyhow!("the Argo tier did not start: {e}"))?;
        Ok(rig)
    }

    /// Like [`Rig::shared_with_argo`], but `None` (after printing one line
    /// saying why) when this machine cannot run a real node, unless
    /// `CI=true`, where that is an error: CI must run the tier.
    pub async fn shared_with_argo_or_skip() -> Result<Option<&'static Rig>> {
        if let Err(why) = real_node::host_check() {
            if std::env::var("CI").as_deref() == Ok("true") {
                bail!("CI=true but this machine cannot run the rig's real node: {why}");
            }
            // Once per test binary, and past libtest's capture (not eprintln!).
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "skipping the real-node (Argo) tier: {why}"
                );
            });
            return Ok(None);
        }
        Rig::shared_with_argo().await.map(Some)
    }

    /// The Argo tier of this rig (after [`Rig::shared_with_argo`] or
    /// [`Rig::start_argo_foreground`]).
    pub fn argo(&self) -> Result<&ArgoTier> {
        match self.argo_slot().get() {
            Some(Ok(tier)) => Ok(tier),
            Some(Err(e)) => Err(anyhow!("the Argo tier did not start: {e}")),
            None => Err(anyhow!(
                "the Argo tier is not started: use Rig::shared_with_argo"
            )),
        }
    }

    /// Starts the Argo tier on a rig the caller owns (`klm-rig up --argo`);
    /// it is torn down when the returned guard drops. It blocks its thread
    /// while it starts, and the node's processes die with that thread (a
    /// worker of a multi-thread runtime lives as long as the runtime).
    pub async fn start_argo_foreground(&self) -> Result<ArgoGuard> {
        let (tier, node) = start(self).await?;
        self.argo_slot()
            .set(Ok(tier))
            .map_err(|_| anyhow!("the Argo tier was already started"))?;
        Ok(ArgoGuard { node: Some(node) })
    }
}

/// Owns a foreground tier's node and controller; dropping it tears them down.
#[derive(Debug)]
pub struct ArgoGuard {
    node: Option<RealNode>,
}

impl ArgoGuard {
    /// Tears the tier down now and says what that took and left.
    pub fn teardown(&mut self) -> TeardownReport {
        self.node
            .take()
            .map(|mut n| n.teardown())
            .unwrap_or_default()
    }
}

impl Drop for ArgoGuard {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Starts the tier on a dedicated thread that lives as long as this process
/// (the node's processes die with the thread that started them), and
/// registers its teardown to run when the process exits.
fn start_owned(rig: &'static Rig) -> Result<ArgoTier> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("klm-rig-argo".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = sender.send(Err(e.into()));
                    return;
                }
            };
            match runtime.block_on(start(rig)) {
                Ok((tier, node)) => {
                    *NODE.lock().unwrap_or_else(|e| e.into_inner()) = Some(node);
                    // SAFETY: registering a plain extern "C" function.
                    unsafe { libc::atexit(teardown_at_exit) };
                    let _ = sender.send(Ok(tier));
                }
                Err(e) => {
                    let _ = sender.send(Err(e));
                    return;
                }
            }
            loop {
                std::thread::park();
            }
        })?;
    receiver
        .recv()
        .context("the Argo tier's thread died while starting")?
}

extern "C" fn teardown_at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let node = NODE.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut node) = node {
            let report = node.teardown();
            use std::io::Write;
            let _ = if report.mounts_left.is_empty() && report.cgroups_left.is_empty() {
                writeln!(
                    std::io::stderr(),
                    "klm-rig: real node torn down in {:.1}s",
                    report.elapsed.as_secs_f64()
                )
            } else {
                writeln!(
                    std::io::stderr(),
                    "klm-rig: the real node's teardown left {report:?}"
                )
            };
        }
    });
}

/// Images, node, Argo's CRDs and RBAC, the controller.
async fn start(rig: &Rig) -> Result<(ArgoTier, RealNode)> {
    let started = Instant::now();
    if let Err(why) = real_node::host_check() {
        bail!("this machine cannot run the rig's real node: {why}");
    }
    for name in [
        "kubelet",
        "workflow-controller",
        "argoexec",
        "argo",
        "pause",
    ] {
        if !bin_dir().join(name).exists() {
            bail!(
                "{} is missing: run `make rig-bins` (tests/rig/build.sh, tests/argo/build.sh)",
                bin_dir().join(name).display()
            );
        }
    }
    // Blocking, like the node's start: the tier's thread does nothing else meanwhile.
    let mut phases = Vec::new();
    let mut lap = Instant::now();
    let mut phase = |name: &'static str| {
        phases.push((name, lap.elapsed()));
        tracing::info!(elapsed = ?lap.elapsed(), "Argo tier: {name}");
        lap = Instant::now();
    };
    let klm = static_klm()?;
    phase("static klm built (cargo)");
    let (images, klm_layout) = build_images(&klm)?;
    phase("images written");
    let pki = rig.pki();
    let options = RealNodeOptions {
        dir: workspace_root().join("target/rig/real-node"),
        server: rig.server().to_string(),
        ca: pki.ca_cert.clone(),
        kubelet_client: pki.kubelet_client.clone(),
        admin_kubeconfig: rig.kubeconfig().to_path_buf(),
        images,
    };
    let mut node = RealNode::start(&options)?;
    phase("containerd up, images imported, kubelet started");
    let client = rig.client().await?;
    node.wait_ready(&client, Duration::from_secs(120)).await?;
    phase("node Ready");

    let published = start_registry_and_publish(&mut node, &klm_layout)?;
    phase("registry up, image index and chart pushed, index checked");

    rig.apply_argo_crds(ARGO_VERSION).await?;
    let metrics_port = free_port()?;
    apply_namespace_and_config(&client, api_port(rig.server())?, metrics_port).await?;
    phase("Argo CRDs, namespace, RBAC, configmap");
    let controller = bin_dir().join("workflow-controller");
    node.start_companion(
        "workflow-controller",
        &controller,
        &[
            format!("--kubeconfig={}", rig.kubeconfig().display()),
            format!("--namespace={ARGO_NAMESPACE}"),
            format!("--configmap={CONTROLLER_CONFIGMAP}"),
            format!("--executor-image={ARGOEXEC_IMAGE}"),
            "--executor-image-pull-policy=Never".into(),
            "--loglevel=info".into(),
        ],
        &[
            ("LEADER_ELECTION_DISABLE".into(), "true".into()),
            // How soon the controller looks at a workflow again (Argo's
            // default is 10s): 1s cuts the gap between two steps. An operator
            // setting (see the chart README); KLM_RIG_ARGO_REQUEUE overrides
            // it here, for the benchmark's comparison.
            (
                "DEFAULT_REQUEUE_TIME".into(),
                std::env::var("KLM_RIG_ARGO_REQUEUE").unwrap_or_else(|_| "1s".into()),
            ),
        ],
        &rig.kubeconfig().display().to_string(),
    )?;
    node.check_alive()?;
    phase("workflow-controller started");
    let setup = started.elapsed();
    tracing::info!(elapsed = ?setup, "Argo tier ready");
    let tier = ArgoTier {
        kubeconfig: rig.kubeconfig().to_path_buf(),
        metrics_port,
        pod_logs: node.pod_logs_dir().to_path_buf(),
        node_dir: node.dir().to_path_buf(),
        setup,
        phases,
        published,
    };
    Ok((tier, node))
}

/// Starts the loopback registry as a companion of the node (stopped with
/// it), declares it plain HTTP to containerd, publishes the image index
/// and the chart to it, and checks the index as a client pulls it (this
/// platform listed, klm and helm of this machine's architecture).
fn start_registry_and_publish(node: &mut RealNode, layout: &Path) -> Result<Published> {
    let port = free_port()?;
    let host = format!("127.0.0.1:{port}");
    let dir = node.dir().join("registry");
    let (binary, args) = crate::registry::prepare(&dir, port)?;
    let marker = args.last().cloned().unwrap_or_default();
    node.start_companion("docker-registry", &binary, &args, &[], &marker)?;
    let registry = std::sync::Arc::new(crate::registry::Registry::loopback(&host)?);
    registry.wait_ready(Duration::from_secs(30))?;
    crate::registry::write_containerd_hosts(&node.registry_hosts_dir(), &host)?;
    let work = dir.join("publish");
    let helm = crate::publish::Helm::for_registry(&bin_dir().join("helm"), &work, &registry)?;
    let published = crate::publish::publish(
        &registry,
        "",
        layout,
        &[KLM_IMAGE_TAG.to_string()],
        None,
        &helm,
        &work,
    )?;
    let pulled = crate::registry::RegistryImage {
        registry,
        repository: published.image_path(),
        reference: published.image_digest.clone(),
    };
    crate::oci_check::check(&pulled, &[Arch::host()?])
        .with_context(|| format!("checking {} in the registry", published.image()))?;
    Ok(published)
}

/// The images under `target/rig/images`: pause and argoexec as
/// docker-archive tarballs (imported into containerd), and the image under
/// test as an OCI layout (`klm-oci`, pushed to the registry): built as the
/// shipped image is ([`PlatformFiles::release`]: the static klm from
/// [`static_klm`], the rig's helm, Debian's CA bundle) for this machine's
/// platform, plus the fixture charts.
pub fn build_images(klm: &Path) -> Result<(Vec<PathBuf>, PathBuf)> {
    let root = workspace_root();
    let out = root.join("target/rig/images");
    let charts = root.join("target/rig/charts");
    crate::charts::package_all(&charts)?;
    let bin = bin_dir();
    let mut klm_platform = PlatformFiles::release(
        Arch::host()?,
        klm,
        &bin.join("helm"),
        Path::new("/etc/ssl/certs/ca-certificates.crt"),
    );
    for (version, _) in crate::charts::VERSIONS {
        let name = format!("kata-deploy-{version}.tgz");
        klm_platform.files.push(ImageFile::data(
            &format!("{CHARTS_IN_IMAGE}/{name}"),
            charts.join(&name),
        ));
    }
    let layout = out.join("klm-oci");
    crate::oci::write_layout(
        &IndexSpec {
            version: env!("CARGO_PKG_VERSION").into(),
            revision: "rig".into(),
            platforms: vec![klm_platform],
        },
        &layout,
    )
    .context("writing the image under test")?;
    let specs = [
        (
            "pause.tar",
            ImageSpec {
                tag: PAUSE_IMAGE.into(),
                entrypoint: vec!["/pause".into()],
                env: vec![],
                files: vec![ImageFile::executable("/pause", bin.join("pause"))],
            },
        ),
        (
            "argoexec.tar",
            ImageSpec {
                tag: ARGOEXEC_IMAGE.into(),
                entrypoint: vec!["argoexec".into()],
                env: vec![],
                files: vec![ImageFile::executable("/bin/argoexec", bin.join("argoexec"))],
            },
        ),
    ];
    let mut tarballs = Vec::new();
    for (file, spec) in specs {
        let path = out.join(file);
        write_docker_archive(&spec, &path)
            .with_context(|| format!("writing image {}", spec.tag))?;
        tarballs.push(path);
    }
    Ok((tarballs, layout))
}

/// Builds (or finds up to date) the static klm: `tests/argo/static-klm.sh`.
pub fn static_klm() -> Result<PathBuf> {
    let script = workspace_root().join("tests/argo/static-klm.sh");
    let mut command = Command::new("bash");
    command.arg(&script).current_dir(workspace_root());
    if let Some(cargo) = std::env::var_os("CARGO") {
        // The cargo of the outer build, first on PATH.
        if let Some(dir) = Path::new(&cargo).parent() {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let paths = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path));
            command.env("PATH", std::env::join_paths(paths)?);
        }
    }
    let output = command
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let path = String::from_utf8(output.stdout)?.trim().to_string();
    Ok(PathBuf::from(path))
}

fn api_port(server: &str) -> Result<u16> {
    server
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .ok_or_else(|| anyhow!("no port in apiserver URL {server}"))
}

/// The controller's configuration: every step pod on the real node with
/// host networking, the executor never pulled, in-pod clients on the loopback apiserver,
/// the Prometheus metrics on 127.0.0.1:`metrics_port` (the build binds that
/// listener to loopback), no telemetry.
pub fn controller_config(
    api_port: u16,
    metrics_port: u16,
) -> std::collections::BTreeMap<String, String> {
    let env = format!(
        "env:\n  - name: KUBERNETES_SERVICE_HOST\n    value: 127.0.0.1\n  - name: KUBERNETES_SERVICE_PORT\n    value: \"{api_port}\"\n"
    );
    [
        (
            "metricsConfig",
            format!("enabled: true\npath: /metrics\nport: {metrics_port}\nsecure: false\n"),
        ),
        ("telemetryConfig", "enabled: false\n".to_string()),
        (
            "workflowDefaults",
            format!(
                "spec:\n  hostNetwork: true\n  nodeSelector:\n    {REAL_NODE_LABEL}: \"true\"\n  tolerations:\n    - key: {REAL_NODE_LABEL}\n      operator: Exists\n      effect: NoSchedule\n"
            ),
        ),
        ("executor", format!("imagePullPolicy: Never\n{env}")),
        // The steps' image comes from the loopback registry, by digest.
        ("mainContainer", format!("imagePullPolicy: IfNotPresent\n{env}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The `argo` namespace, the executor's Role (emissary: write
/// `workflowtaskresults`) bound to its `default` ServiceAccount, and the
/// controller's ConfigMap.
async fn apply_namespace_and_config(
    client: &Client,
    api_port: u16,
    metrics_port: u16,
) -> Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let meta = |name: &str| ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ARGO_NAMESPACE.into()),
        ..ObjectMeta::default()
    };
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ARGO_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .patch(ARGO_NAMESPACE, &params, &Patch::Apply(&namespace))
        .await
        .context("creating namespace argo")?;
    let role = Role {
        metadata: meta("executor"),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["argoproj.io".into()]),
            resources: Some(vec!["workflowtaskresults".into()]),
            verbs: vec!["create".into(), "patch".into()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(client.clone(), ARGO_NAMESPACE)
        .patch("executor", &params, &Patch::Apply(&role))
        .await?;
    let binding = RoleBinding {
        metadata: meta("executor-default"),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "executor".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "default".into(),
            namespace: Some(ARGO_NAMESPACE.into()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), ARGO_NAMESPACE)
        .patch("executor-default", &params, &Patch::Apply(&binding))
        .await?;
    let config = ConfigMap {
        metadata: meta(CONTROLLER_CONFIGMAP),
        data: Some(controller_config(api_port, metrics_port)),
        ..ConfigMap::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ARGO_NAMESPACE)
        .patch(CONTROLLER_CONFIGMAP, &params, &Patch::Apply(&config))
        .await?;
    Ok(())
}

impl ArgoTier {
    /// The controller's Prometheus endpoint (on loopback).
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    /// What the controller's Prometheus endpoint serves now (HTTP/1.0 on
    /// loopback, no client library needed).
    pub fn metrics(&self) -> Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("no HTTP response from {}", self.metrics_url()))?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            bail!(
                "{} answered {}",
                self.metrics_url(),
                head.lines().next().unwrap_or("")
            );
        }
        Ok(body.to_string())
    }

    /// The real node's name.
    pub fn node(&self) -> &'static str {
        REAL_NODE
    }

    /// The label (and taint key) of the real node, `=true`.
    pub fn node_label(&self) -> &'static str {
        REAL_NODE_LABEL
    }

    /// The image under test, by digest in the loopback registry
    /// (`127.0.0.1:<port>/kata-lifecycle-manager@sha256:...`).
    pub fn klm_image(&self) -> String {
        self.published.image()
    }

    /// What the tier published to its loopback registry: the image and
    /// this project's chart (`oci://127.0.0.1:<port>/charts/...`).
    pub fn published(&self) -> &Published {
        &self.published
    }

    /// Where the fixture kata-deploy packages are in the image:
    /// `/charts/kata-deploy-{version}.tgz` for the chart's `kataDeploy.chart`.
    pub fn chart_in_image(&self) -> String {
        format!("{CHARTS_IN_IMAGE}/kata-deploy-{{version}}.tgz")
    }

    /// The namespace the controller watches.
    pub fn namespace(&self) -> &'static str {
        ARGO_NAMESPACE
    }

    /// How long the tier took to start (images, node Ready, CRDs, controller).
    pub fn setup_time(&self) -> Duration {
        self.setup
    }

    /// The setup's phases and how long each took.
    pub fn setup_phases(&self) -> &[(&'static str, Duration)] {
        &self.phases
    }

    /// The real `argo` CLI, talking to the apiserver with the admin kubeconfig.
    pub fn argo(&self) -> Command {
        self.argo_as(&self.kubeconfig)
    }

    /// The real `argo` CLI with `kubeconfig` (e.g. a ServiceAccount's from
    /// [`Rig::service_account_kubeconfig`]).
    pub fn argo_as(&self, kubeconfig: &Path) -> Command {
        let mut command = Command::new(bin_dir().join("argo"));
        command
            .env("KUBECONFIG", kubeconfig)
            .env_remove("ARGO_SERVER")
            .env_remove("ARGO_TOKEN")
            .env_remove("ARGO_NAMESPACE");
        command
    }

    /// The kubelet's pod log directory.
    pub fn pod_logs_dir(&self) -> &Path {
        &self.pod_logs
    }

    /// The real node's working directory (containerd, kubelet and
    /// workflow-controller logs).
    pub fn node_dir(&self) -> &Path {
        &self.node_dir
    }

    /// The log of a step pod's `main` container, from the kubelet's pod log
    /// directory (never through the apiserver).
    pub fn step_log(&self, namespace: &str, pod: &str) -> Result<String> {
        self.container_log(namespace, pod, "main")
    }

    /// The logs of a step pod's containers `containers` (a containerSet's
    /// phases, in the order given), each under a `-- name` line; a container
    /// that never logged (a phase that did not run) is left out.
    pub fn phase_logs(&self, namespace: &str, pod: &str, containers: &[String]) -> Result<String> {
        if containers.len() == 1 {
            return self.container_log(namespace, pod, &containers[0]);
        }
        let mut text = String::new();
        for container in containers {
            if let Ok(log) = self.container_log(namespace, pod, container) {
                text.push_str(&format!("-- {container}\n{log}"));
            }
        }
        Ok(text)
    }

    /// The log of any container of a pod on the real node (`init`, `wait`, `main`).
    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> Result<String> {
        real_node::read_pod_log(&self.pod_logs, namespace, pod, container)
    }

    /// Host PIDs of the processes named `program` (e.g. `klm`) in pod
    /// `namespace/pod` on the real node (to kill a step mid-way); empty when
    /// none runs (yet).
    pub fn pod_pids(&self, namespace: &str, pod: &str, program: &str) -> Result<Vec<u32>> {
        let dir = real_node::pod_log_dir(&self.pod_logs, namespace, pod)?;
        let uid = real_node::pod_uid_of_log_dir(&dir)
            .ok_or_else(|| anyhow!("no pod uid in {}", dir.display()))?;
        Ok(real_node::pod_processes(&uid, program))
    }

    /// The host PID of the `klm` process of a step pod, if it runs.
    pub fn klm_pid(&self, namespace: &str, pod: &str) -> Result<Option<u32>> {
        Ok(self.pod_pids(namespace, pod, "klm")?.into_iter().next())
    }
}

/// A free loopback port (bound, then released for the controller to take).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
