//! The real kata-deploy packages (from `KLM_KATA_DEPLOY_CHARTS`), the copies
//! the tests repackage from them, and cases that install them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Node;
use klm_rig::Rig;
use klm_rig::verification_pod::VerificationPod;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::support::{CASE_LABEL, Case, CaseSetup, CaseSpec, Klm, host_version, repo_root};

/// The variable naming the directory of real kata-deploy packages
/// (`kata-deploy-<version>.tgz`, as `helm pull` saves them).
pub const CHARTS_VAR: &str = "KLM_KATA_DEPLOY_CHARTS";
/// klm's node status annotation.
pub const STATUS: &str = "katacontainers.io/kata-lifecycle-manager-status";

/// A version repackaged from 4.0.0 whose kata-deploy pods never turn Ready
/// (its values annotate them for kwok): an upgrade that must be rolled back.
pub const NEVER_READY: &str = "4.0.1";

/// The real packages, and the copies made from them, in one directory.
pub struct RealCharts {
    dir: PathBuf,
}

impl RealCharts {
    /// The chart reference klm and the cases use (`{version}` stands for it).
    pub fn reference(&self) -> String {
        self.dir
            .join("kata-deploy-{version}.tgz")
            .display()
            .to_string()
    }

    /// The package of a version.
    pub fn package(&self, version: &str) -> PathBuf {
        self.dir.join(format!("kata-deploy-{version}.tgz"))
    }

    /// Whether the directory has the version (the CI may not fetch every one).
    pub fn has(&self, version: &str) -> bool {
        self.package(version).exists()
    }
}

/// The real packages, or `None` when [`CHARTS_VAR`] is unset: then the test
/// prints one line and returns (see [`real_charts!`](crate::real_charts)).
pub fn charts() -> Option<&'static RealCharts> {
    let source = std::env::var_os(CHARTS_VAR).filter(|s| !s.is_empty())?;
    static CHARTS: OnceLock<std::result::Result<RealCharts, String>> = OnceLock::new();
    let prepared = CHARTS.get_or_init(|| prepare(Path::new(&source)).map_err(|e| format!("{e:#}")));
    match prepared {
        Ok(charts) => Some(charts),
        Err(e) => panic!("preparing the real kata-deploy packages from {CHARTS_VAR}: {e}"),
    }
}

/// The real packages of the tier, or an early return after one line.
#[macro_export]
macro_rules! real_charts {
    () => {
        match $crate::real::charts() {
            Some(charts) => charts,
            None => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("KLM_KATA_DEPLOY_CHARTS unset: real-chart tier skipped");
                }
                return;
            }
        }
    };
}

/// Skips a test (one line) when the directory lacks a version it needs.
#[macro_export]
macro_rules! require_versions {
    ($charts:expr, $($version:expr),+) => {
        for version in [$($version),+] {
            if !$charts.has(version) {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("kata-deploy {version} is not in KLM_KATA_DEPLOY_CHARTS: test skipped");
                }
                return;
            }
        }
    };
}

/// Copies the packages into `target/rig/real-charts` and repackages the
/// variants the tests need beside them (klm resolves every version in one
/// directory).
fn prepare(source: &Path) -> Result<RealCharts> {
    let dir = repo_root().join("target/rig/real-charts");
    std::fs::create_dir_all(&dir)?;
    let mut found = 0;
    for entry in
        std::fs::read_dir(source).with_context(|| format!("reading {}", source.display()))?
    {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("kata-deploy-") && name.ends_with(".tgz") {
            copy_atomically(&path, &dir.join(&name))?;
            found += 1;
        }
    }
    if found == 0 {
        bail!("{} holds no kata-deploy-<version>.tgz", source.display());
    }
    let charts = RealCharts { dir };
    if charts.has("4.0.0") {
        repackage(
            &charts,
            "4.0.0",
            NEVER_READY,
            &[(
                "\npodAnnotations: {}\n",
                "\npodAnnotations:\n  rig.klm.test/outcome: never-ready\n",
            )],
        )?;
    }
    Ok(charts)
}

fn copy_atomically(from: &Path, to: &Path) -> Result<()> {
    let partial = to.with_extension(format!("partial-{}", std::process::id()));
    std::fs::copy(from, &partial)?;
    std::fs::rename(&partial, to)?;
    Ok(())
}

/// Repackages the package of `from` as `version` (chart and app version),
/// with `edits` (text replacements) in its values.yaml.
fn repackage(charts: &RealCharts, from: &str, version: &str, edits: &[(&str, &str)]) -> Result<()> {
    let work = tempfile::tempdir()?;
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(charts.package(from))
        .arg("-C")
        .arg(work.path())
        .status()
        .context("running tar")?;
    if !status.success() {
        bail!("unpacking kata-deploy {from} failed");
    }
    let values_file = work.path().join("kata-deploy/values.yaml");
    let mut values = std::fs::read_to_string(&values_file)?;
    for (old, new) in edits {
        if !values.contains(old) {
            bail!("kata-deploy {from}'s values.yaml has no {old:?}");
        }
        values = values.replacen(old, new, 1);
    }
    std::fs::write(&values_file, values)?;
    let out = work.path().join("out");
    let output = Command::new(klm_rig::control_plane::bin_dir().join("helm"))
        .arg("package")
        .arg(work.path().join("kata-deploy"))
        .args([
            "--version",
            version,
            "--app-version",
            version,
            "--destination",
        ])
        .arg(&out)
        .output()
        .context("running helm package")?;
    if !output.status.success() {
        bail!(
            "helm package of kata-deploy {version} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::rename(
        out.join(format!("kata-deploy-{version}.tgz")),
        charts.package(version),
    )?;
    Ok(())
}

/// How a case installs the real chart.
#[derive(Default, Clone, Copy)]
pub struct Install {
    /// Job mode (3.32 and later), confined to the case's nodes.
    pub job: bool,
    /// With the node-feature-discovery subchart.
    pub nfd: bool,
    /// Nodes named like EKS's (`ip-10-0-<i>-23.<namespace>.internal`).
    pub dotted: bool,
}

/// A case with `nodes` kwok nodes and the real kata-deploy `version`
/// installed by an admin; klm runs as the kata-lifecycle-manager chart's
/// ServiceAccount. The nodes carry no rig knob: kata-deploy without health
/// probes installs 15 s after its pod is Ready.
pub async fn case(
    charts: &RealCharts,
    name: &str,
    nodes: usize,
    version: &str,
    install: Install,
) -> Case {
    let mut setup = CaseSetup {
        chart: charts.reference(),
        probeless_install_secs: Some(15),
        ..CaseSetup::fixture()
    };
    if install.dotted {
        setup.node_name = |ns, i| format!("ip-10-0-{i}-23.{ns}.internal");
    }
    if install.nfd {
        // node-feature-discovery's cluster-wide objects are named after the
        // release: one release name per case keeps them apart.
        setup.release = format!("kata-deploy-{name}");
        // What NFD's worker would have found: kata-deploy's DaemonSet then
        // runs only where virtualization is.
        setup.node_labels = vec![(
            "feature.node.kubernetes.io/cpu-cpuid.VMX".into(),
            "true".into(),
        )];
        setup.klm_values = vec!["rbac.nodeFeatureDiscovery=true".into()];
    }
    let job_keys_removed = version_at_least(version, "4.1.0");
    let extra = move |ns: &str| {
        let mut values = Vec::new();
        if install.job {
            values.push("deploymentMode=job".to_string());
            if !job_keys_removed {
                // 3.32/4.0 select the job-mode nodes with job.nodeSelector
                // (its default takes every node but control planes).
                values.push(format!("job.nodeSelector.klm\\.test/case={ns}"));
            }
        }
        if install.nfd {
            values.push("node-feature-discovery.enabled=true".into());
        }
        values
    };
    let rig = Rig::shared().await.expect("the rig");
    Case::start_setup(rig, CaseSpec::new(name, nodes, version), setup, extra)
        .await
        .unwrap_or_else(|e| panic!("set-up of the real kata-deploy {version}: {e:#}"))
}

/// `a >= b` for release versions (`0.0.0-dev` is main: the newest).
pub fn version_at_least(a: &str, b: &str) -> bool {
    let parse = |v: &str| match semver::Version::parse(v) {
        Ok(v) if !(v.major == 0 && v.minor == 0 && v.patch == 0) => v,
        _ => semver::Version::new(99, 0, 0),
    };
    parse(a) >= parse(b)
}

/// A verification pod that passes on every node, written to `dir`.
pub fn passing_pod(dir: &Path) -> PathBuf {
    VerificationPod::succeeding()
        .tolerating_everything()
        .write(dir, "verify-pass")
}

/// `klm upgrade` of the case's nodes to `target`, one node per wave, as
/// the chart's ServiceAccount.
pub async fn klm_upgrade(case: &Case, run: &str, target: &str, pod: &Path, extra: &[&str]) -> Klm {
    let selector = format!("{CASE_LABEL}={}", case.namespace);
    let pod = pod.display().to_string();
    let mut args = vec![
        "upgrade",
        "--target-version",
        target,
        "--node-selector",
        &selector,
        "--verification-pod",
        &pod,
        "--verification-namespace",
        &case.namespace,
        "--run-id",
        run,
    ];
    if !extra.contains(&"--restart-timeout") {
        args.extend(["--restart-timeout", "90s"]);
    }
    args.extend_from_slice(extra);
    let klm = case.klm(&args).await;
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "klm upgrade to {target}: exit {}\n{}{}",
            klm.code, klm.stdout, klm.stderr
        );
    }
    klm
}

/// The host versions of the case's nodes, in node order.
pub async fn host_versions(case: &Case) -> Vec<Option<String>> {
    let mut versions = Vec::new();
    for node in &case.nodes {
        versions.push(host_version(&case.get_node(node).await));
    }
    versions
}

/// The statuses klm wrote on the case's nodes, in node order.
pub async fn statuses(case: &Case) -> Vec<Option<String>> {
    let mut statuses = Vec::new();
    for node in &case.nodes {
        statuses.push(case.get_node(node).await.annotations().get(STATUS).cloned());
    }
    statuses
}

/// What a run to `target` from a version without health probes may do:
/// refuse before it changes anything (exit 3, naming a version it cannot
/// prove), or upgrade every node with proof, so that the moment klm says
/// so, every host runs `target` (a klm that trusts Ready finishes a node
/// while its install is still running, and is caught here).
pub async fn refused_or_proven(
    case: &Case,
    klm: &Klm,
    versions: &[&str],
    target: &str,
    before: &str,
) {
    if klm.code == 3 {
        assert!(
            versions.iter().any(|v| klm.stderr.contains(v)),
            "a refusal says which version it cannot prove installed ({versions:?}):\n{}",
            klm.stderr
        );
        assert_eq!(case.snapshot().await, before, "the refusal changed nothing");
        return;
    }
    assert_eq!(
        klm.code, 0,
        "klm either refuses (3) or upgrades (0):\n{}\n{}",
        klm.stdout, klm.stderr
    );
    let hosts = host_versions(case).await;
    assert!(
        hosts.iter().all(|v| v.as_deref() == Some(target)),
        "klm reported the upgrade done while the hosts ran {hosts:?} (it must wait until {target} is installed)"
    );
    assert!(
        statuses(case)
            .await
            .iter()
            .all(|s| s.as_deref() == Some("completed")),
        "every node completed"
    );
    assert_eq!(case.run_record().await.unwrap()["state"], "completed");
    assert_eq!(case.release_state().await.1, target);
}

/// Annotates a node as an operator (or a test's knob) would.
pub async fn annotate_node(case: &Case, node: &str, key: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    Api::<Node>::all(case.admin.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate node");
}
