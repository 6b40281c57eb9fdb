//! The fixture chart against the real one: rendered with `helm template` at
//! the same version and values, they agree on everything klm reads (or
//! needs the rights for). When kata-deploy changes, this is the test that
//! says the fixture no longer imitates it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::real::{RealCharts, version_at_least};
use crate::support::{charts_dir, repo_root};

/// The versions both exist at (the real packages' and the fixture's).
const VERSIONS: [&str; 6] = ["3.27.0", "3.30.0", "3.32.0", "4.0.0", "4.1.0", "0.0.0-dev"];
/// The values klm sets on the release.
const KLM_KEYS: [&str; 6] = [
    "updateStrategy",
    "verification.pod",
    "job.nodes",
    "job.parallelism",
    "tolerations",
    "deploymentMode",
];
/// The keys 4.1 removed (and refuses in both modes).
const REMOVED_JOB_KEYS: [&str; 3] = [
    "job.nodeSelector.a=b",
    "job.nodeSelectorExpressions[0].key=a,job.nodeSelectorExpressions[0].operator=Exists",
    "job.nodeAffinity.a=b",
];

/// What klm reads of one rendering.
#[derive(Debug, PartialEq)]
struct Reads {
    /// The DaemonSets in manifest order (`kata-deploy` for the one with the
    /// `kube-kata` container, `node-feature-discovery-worker` for NFD's).
    daemonsets: Vec<String>,
    kata: Option<KataDaemonSet>,
    dispatcher: Option<Dispatcher>,
    job_templates: Option<JobTemplates>,
    /// ConfigMaps other than the job templates (4.1's state).
    config_maps: BTreeSet<String>,
}

#[derive(Debug, PartialEq)]
struct KataDaemonSet {
    name: String,
    metadata_labels: Value,
    selector: Value,
    pod_labels: Value,
    containers: Vec<String>,
    image_tag: Option<String>,
    probes: bool,
    pre_stop_cleanup: bool,
    env: BTreeSet<String>,
    update_strategy: Value,
}

#[derive(Debug, PartialEq)]
struct Dispatcher {
    name: String,
    label: Value,
    pod_label: Value,
    hook: Value,
    hook_weight: Value,
    hook_delete_policy: Value,
    backoff_limit: Value,
    binary: String,
    flags: BTreeSet<String>,
    flags_in_args: bool,
    config_map: Value,
}

#[derive(Debug, PartialEq)]
struct JobTemplates {
    name: String,
    keys: BTreeSet<String>,
    stage_label: Value,
    image_tags: BTreeSet<String>,
}

/// A RuntimeClass as klm and the scheduler see it.
#[derive(Debug, PartialEq)]
struct Runtime {
    handler_is_name: bool,
    node_selector: BTreeSet<String>,
    annotations: BTreeSet<String>,
}

fn helm() -> std::path::PathBuf {
    klm_rig::control_plane::bin_dir().join("helm")
}

/// `helm template` of a package; the manifest or helm's error.
fn render(package: &Path, values: &[String]) -> Result<String, String> {
    let mut command = Command::new(helm());
    command
        .args(["template", "kata-deploy"])
        .arg(package)
        .args(["--namespace", "kd"]);
    for value in values {
        command.args(["--set", value]);
    }
    let output = command.output().expect("helm runs");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn documents(manifest: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in manifest.lines().chain(std::iter::once("---")) {
        if line == "---" {
            if let Ok(doc) = serde_saphyr::from_str::<Value>(&current)
                && doc.is_object()
            {
                docs.push(doc);
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

fn tag(image: &str) -> Option<String> {
    let image = image.split('@').next()?;
    let (repo, tag) = image.rsplit_once(':')?;
    (!tag.contains('/') && !repo.is_empty()).then(|| tag.to_string())
}

fn words(container: &Value) -> Vec<String> {
    ["command", "args"]
        .iter()
        .flat_map(|k| container[k].as_array().cloned().unwrap_or_default())
        .filter_map(|w| w.as_str().map(String::from))
        .collect()
}

fn reads(manifest: &str) -> (Reads, BTreeMap<String, Runtime>) {
    let docs = documents(manifest);
    let kind = |d: &Value| d["kind"].as_str().unwrap_or_default().to_string();
    let name = |d: &Value| {
        d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let kube_kata = |d: &Value| {
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "kube-kata").cloned())
    };
    let daemonsets: Vec<String> = docs
        .iter()
        .filter(|d| kind(d) == "DaemonSet")
        .map(|d| {
            if kube_kata(d).is_some() {
                "kata-deploy".into()
            } else if name(d).ends_with("node-feature-discovery-worker") {
                "node-feature-discovery-worker".into()
            } else {
                name(d)
            }
        })
        .collect();
    let kata = docs
        .iter()
        .find(|d| kind(d) == "DaemonSet" && kube_kata(d).is_some())
        .map(|d| {
            let c = kube_kata(d).unwrap();
            let pre_stop = words(&c["lifecycle"]["preStop"]["exec"]);
            KataDaemonSet {
                name: name(d),
                metadata_labels: d["metadata"]["labels"].clone(),
                selector: d["spec"]["selector"]["matchLabels"].clone(),
                pod_labels: d["spec"]["template"]["metadata"]["labels"].clone(),
                containers: d["spec"]["template"]["spec"]["containers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["name"].as_str().unwrap_or_default().to_string())
                    .collect(),
                image_tag: c["image"].as_str().and_then(tag),
                probes: !c["readinessProbe"].is_null() || !c["startupProbe"].is_null(),
                pre_stop_cleanup: pre_stop.iter().any(|w| w == "cleanup"),
                env: c["env"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|e| e["name"].as_str())
                    .filter(|n| ["DAEMONSET_NAME", "MULTI_INSTALL_SUFFIX", "NODE_NAME"].contains(n))
                    .map(String::from)
                    .collect(),
                update_strategy: d["spec"]["updateStrategy"].clone(),
            }
        });
    let dispatcher = docs
        .iter()
        .find(|d| {
            kind(d) == "Job" && d["metadata"]["labels"]["kata-deploy/dispatcher"] == "install"
        })
        .map(|d| {
            let pod = &d["spec"]["template"];
            let c = &pod["spec"]["containers"][0];
            let all = words(c);
            let annotations = &d["metadata"]["annotations"];
            Dispatcher {
                name: name(d),
                label: d["metadata"]["labels"]["kata-deploy/dispatcher"].clone(),
                pod_label: pod["metadata"]["labels"]["kata-deploy/dispatcher"].clone(),
                hook: annotations["helm.sh/hook"].clone(),
                hook_weight: annotations["helm.sh/hook-weight"].clone(),
                hook_delete_policy: annotations["helm.sh/hook-delete-policy"].clone(),
                backoff_limit: d["spec"]["backoffLimit"].clone(),
                binary: all
                    .first()
                    .map(|b| b.rsplit('/').next().unwrap_or(b).to_string())
                    .unwrap_or_default(),
                flags: all
                    .iter()
                    .filter(|w| w.starts_with("--"))
                    .map(|w| w.split('=').next().unwrap_or(w).to_string())
                    .collect(),
                flags_in_args: !c["args"].is_null(),
                config_map: pod["spec"]["volumes"][0]["configMap"]["name"].clone(),
            }
        });
    let templates_name = dispatcher
        .as_ref()
        .and_then(|d| d.config_map.as_str().map(String::from));
    let job_templates = docs
        .iter()
        .find(|d| kind(d) == "ConfigMap" && Some(name(d)) == templates_name)
        .map(|d| {
            let data = d["data"].as_object().cloned().unwrap_or_default();
            let install: Value = data
                .get("install-job.yaml")
                .and_then(|y| y.as_str())
                .and_then(|y| serde_saphyr::from_str(y).ok())
                .unwrap_or_default();
            let spec = &install["spec"]["template"]["spec"];
            JobTemplates {
                name: name(d),
                keys: data.keys().cloned().collect(),
                stage_label: install["metadata"]["labels"]["kata-deploy/stage"].clone(),
                image_tags: ["initContainers", "containers"]
                    .iter()
                    .flat_map(|k| spec[k].as_array().cloned().unwrap_or_default())
                    .filter_map(|c| c["image"].as_str().and_then(tag))
                    .collect(),
            }
        });
    let config_maps = docs
        .iter()
        .filter(|d| kind(d) == "ConfigMap" && Some(name(d)) != templates_name)
        .map(name)
        .filter(|n| n.ends_with("-kata-deploy-state"))
        .collect();
    let runtimes = docs
        .iter()
        .filter(|d| kind(d) == "RuntimeClass")
        .map(|d| {
            let keys = |v: &Value| -> BTreeSet<String> {
                v.as_object()
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default()
            };
            (
                name(d),
                Runtime {
                    handler_is_name: d["handler"].as_str() == Some(name(d).as_str()),
                    node_selector: keys(&d["scheduling"]["nodeSelector"]),
                    annotations: keys(&d["metadata"]["annotations"]),
                },
            )
        })
        .collect();
    (
        Reads {
            daemonsets,
            kata,
            dispatcher,
            job_templates,
            config_maps,
        },
        runtimes,
    )
}

/// The values klm sets that a package's values.yaml has.
fn klm_keys(package: &Path) -> BTreeMap<&'static str, bool> {
    let output = Command::new(helm())
        .args(["show", "values"])
        .arg(package)
        .output()
        .expect("helm show values");
    assert!(
        output.status.success(),
        "helm show values {}",
        package.display()
    );
    let values: Value = serde_saphyr::from_str(&String::from_utf8_lossy(&output.stdout))
        .expect("values.yaml parses");
    KLM_KEYS
        .iter()
        .map(|key| {
            let mut at = &values;
            let found = key.split('.').all(|part| match at.get(part) {
                Some(v) => {
                    at = v;
                    true
                }
                None => false,
            });
            (*key, found)
        })
        .collect()
}

/// The helm `lookup`s in a chart's templates (not its subcharts'), as
/// `(apiVersion, kind, scope)`: what whoever renders it must be allowed to read.
fn lookups(templates: &Path, skip: &[&str]) -> BTreeSet<(String, String, String)> {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(templates).expect("templates") {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if skip.contains(&file.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for call in text.split("lookup ").skip(1) {
            let tokens: Vec<&str> = call.split_whitespace().take(3).collect();
            let [api, kind, namespace] = tokens[..] else {
                continue;
            };
            if !api.starts_with('"') || !kind.starts_with('"') {
                continue;
            }
            let scope = if namespace == "\"\"" {
                "cluster"
            } else if namespace.ends_with(".Release.Namespace") {
                "release namespace"
            } else {
                "other"
            };
            found.insert((
                api.trim_matches('"').to_string(),
                kind.trim_matches('"').to_string(),
                scope.to_string(),
            ));
        }
    }
    found
}

/// The templates of a packaged chart, unpacked.
fn unpacked_templates(package: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(package)
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("tar runs");
    assert!(status.success());
    dir
}

fn value_sets(version: &str, mode: &str, nfd: bool, nodes: bool) -> Vec<String> {
    let mut values = vec![
        "env.multiInstallSuffix=sfx".to_string(),
        "nodeSelector.klm\\.test/case=c1".into(),
    ];
    if mode == "job" {
        values.push("deploymentMode=job".into());
        if !version_at_least(version, "4.1.0") {
            values.push("job.nodeSelector.klm\\.test/case=c1".into());
        }
        if nodes {
            values.push("job.nodes={n1.example.com,n2}".into());
        }
    }
    if nfd {
        values.push("node-feature-discovery.enabled=true".into());
    }
    values
}

/// The cases of the real-chart tier share one cluster: every cluster-scoped
/// object of the real chart carries `env.multiInstallSuffix` (`sfx` here),
/// but node-feature-discovery's, which are named after the release (the
/// tier gives NFD cases a release name of their own).
fn cluster_scoped_names_are_apart(manifest: &str, what: &str) {
    const CLUSTER_SCOPED: [&str; 5] = [
        "ClusterRole",
        "ClusterRoleBinding",
        "RuntimeClass",
        "NodeFeatureRule",
        "CustomResourceDefinition",
    ];
    for doc in documents(manifest) {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        if !CLUSTER_SCOPED.contains(&kind) {
            continue;
        }
        assert!(
            name.contains("sfx") || name.starts_with("kata-deploy-node-feature-discovery"),
            "{what}: {kind} {name} is named neither for the suffix nor for the release"
        );
    }
}

/// Everything klm reads agrees, version by version, mode by mode.
pub fn check(charts: &RealCharts) {
    let fixtures = charts_dir();
    let mut compared = 0;
    for version in VERSIONS {
        if !charts.has(version) {
            continue;
        }
        let real = charts.package(version);
        let fixture = fixtures.join(format!("kata-deploy-{version}.tgz"));
        let job_mode = version_at_least(version, "3.32.0");
        let mut renderings = vec![("daemonset", false, false), ("daemonset", true, false)];
        if job_mode {
            renderings.extend([("job", false, false), ("job", false, true)]);
        }
        for (mode, nfd, nodes) in renderings {
            let values = value_sets(version, mode, nfd, nodes);
            let what = format!("kata-deploy {version}, {mode} mode, NFD {nfd}, job.nodes {nodes}");
            let real_manifest = render(&real, &values)
                .unwrap_or_else(|e| panic!("the real chart renders ({what}): {e}"));
            let fixture_manifest = render(&fixture, &values)
                .unwrap_or_else(|e| panic!("the fixture renders ({what}): {e}"));
            cluster_scoped_names_are_apart(&real_manifest, &what);
            let (real_reads, real_runtimes) = reads(&real_manifest);
            let (fixture_reads, fixture_runtimes) = reads(&fixture_manifest);
            assert_eq!(
                fixture_reads, real_reads,
                "{what}: fixture (left) and real chart (right) differ in what klm reads"
            );
            assert!(
                !fixture_runtimes.is_empty(),
                "{what}: the fixture has RuntimeClasses"
            );
            for (name, runtime) in &fixture_runtimes {
                assert_eq!(
                    Some(runtime),
                    real_runtimes.get(name),
                    "{what}: RuntimeClass {name}, fixture (left) and real chart (right)"
                );
            }
            compared += 1;
        }
        // Where 4.1 refuses the removed job keys, in both modes.
        let modes: &[&str] = if job_mode {
            &["daemonset", "job"]
        } else {
            &["daemonset"]
        };
        for mode in modes {
            for key in REMOVED_JOB_KEYS {
                let mut values = value_sets(version, mode, false, false);
                values.retain(|v| !v.starts_with("job.nodeSelector"));
                values.push(key.to_string());
                let real_ok = render(&real, &values).is_ok();
                let fixture_ok = render(&fixture, &values).is_ok();
                assert_eq!(
                    fixture_ok, real_ok,
                    "kata-deploy {version}, {mode} mode, --set {key}: the fixture renders {fixture_ok}, the real chart {real_ok}"
                );
                if version_at_least(version, "4.1.0") {
                    assert!(!real_ok, "4.1 refuses {key} in {mode} mode");
                }
            }
        }
        assert_eq!(
            klm_keys(&fixture),
            klm_keys(&real),
            "kata-deploy {version}: the values klm sets, fixture (left) and real chart (right)"
        );
        let unpacked = unpacked_templates(&real);
        let skip: &[&str] = if version_at_least(version, "4.1.0") {
            &[]
        } else {
            &["state.yaml"]
        };
        assert_eq!(
            lookups(
                &repo_root().join("tests/fixtures/kata-deploy/templates"),
                skip
            ),
            lookups(&unpacked.path().join("kata-deploy/templates"), &[]),
            "kata-deploy {version}: the lookups, fixture (left) and real chart (right)"
        );
    }
    assert!(compared > 0, "no version to compare");
}
