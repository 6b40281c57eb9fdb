//! Rendering the chart with the rig's helm, and reading what it rendered.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The chart under test.
pub fn chart_dir() -> PathBuf {
    repo_root().join("chart/kata-lifecycle-manager")
}

/// The example verification pod shipped with the chart.
pub fn example_pod() -> PathBuf {
    chart_dir().join("examples/verification-pod.yaml")
}

/// A binary of the rig (`target/rig/bin`), or a panic saying how to build it.
pub fn rig_bin(name: &str) -> PathBuf {
    let path = std::env::var_os("KLM_RIG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/rig/bin"))
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: build the rig's binaries with `make rig-bins`",
        path.display()
    );
    path
}

/// The release name and namespace every rendering uses, so output is stable.
pub const RELEASE: &str = "kata-lifecycle-manager";
/// See [`RELEASE`].
pub const NAMESPACE: &str = "argo";

/// The values every rendering needs: the example verification pod.
pub fn base_args() -> Vec<String> {
    vec![
        "--set-file".into(),
        format!("defaults.verificationPod={}", example_pod().display()),
    ]
}

/// `helm template` of the chart with extra arguments: the manifests, or
/// helm's error output.
pub fn template(extra: &[&str]) -> Result<String, String> {
    template_as(RELEASE, NAMESPACE, extra)
}

/// `helm template` with a chosen release name and namespace.
pub fn template_as(release: &str, namespace: &str, extra: &[&str]) -> Result<String, String> {
    let output = Command::new(rig_bin("helm"))
        .arg("template")
        .arg(release)
        .arg(chart_dir())
        .args(["--namespace", namespace])
        .args(extra)
        .env("HELM_CACHE_HOME", helm_home().join("cache"))
        .env("HELM_CONFIG_HOME", helm_home().join("config"))
        .env("HELM_DATA_HOME", helm_home().join("data"))
        .output()
        .expect("helm runs");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).expect("helm prints UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// `helm template` that must succeed, with the example verification pod.
#[track_caller]
pub fn render(extra: &[&str]) -> String {
    let mut args = base_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match template(&args) {
        Ok(manifests) => manifests,
        Err(err) => panic!("helm template {extra:?} failed:\n{err}"),
    }
}

/// helm's writable directories, inside target/ (never the user's home).
fn helm_home() -> PathBuf {
    repo_root().join("target/chart-tests/helm")
}

/// The YAML documents of a rendering, as JSON values (empty documents dropped).
pub fn documents(manifests: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    for text in split_documents(manifests) {
        let value: Value = serde_saphyr::from_str(text)
            .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{text}"));
        if !value.is_null() {
            docs.push(value);
        }
    }
    docs
}

/// Splits a multi-document YAML stream on `---` lines.
fn split_documents(manifests: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in manifests.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(&manifests[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(&manifests[start..]);
    docs.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

/// The one document of this kind.
#[track_caller]
pub fn the<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

/// Writes `text` to a file under target/chart-tests and returns its path.
pub fn scratch_file(name: &str, text: &str) -> PathBuf {
    let dir = repo_root().join("target/chart-tests");
    std::fs::create_dir_all(&dir).expect("create target/chart-tests");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write scratch file");
    path
}
