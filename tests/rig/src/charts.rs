//! The fixture kata-deploy chart (`tests/fixtures/kata-deploy`), packaged at
//! the versions the tests upgrade between. One source imitates every
//! flavour of the real chart: its templates branch on the chart version, and
//! packaging strips the values keys a version did not have yet.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::control_plane::bin_dir;

/// Every packaged version, and what it imitates.
pub const VERSIONS: &[(&str, &str)] = &[
    (
        "3.26.0",
        "older than 3.27: no updateStrategy value (RollingUpdate hard-coded)",
    ),
    (
        "3.27.0",
        "updateStrategy rendered verbatim; no deploymentMode; no health probes; a deleted pod cleans up (preStop)",
    ),
    (
        "3.28.0",
        "like 3.27, cleaning up on SIGTERM instead of in a preStop hook",
    ),
    (
        "3.29.0",
        "broken: its kata-deploy pods never become Ready, its install Jobs fail",
    ),
    (
        "3.30.0",
        "no health probes; a deleted pod cleans up only when its DaemonSet is gone (DAEMONSET_NAME)",
    ),
    ("3.31.0", "health probes: Ready once installed"),
    (
        "3.32.0",
        "job mode (in-tree dispatcher, job.nodes, job.parallelism)",
    ),
    ("3.33.0", "like 3.32"),
    ("4.0.0", "like 3.32; podAnnotations"),
    (
        "4.1.0",
        "job mode that prunes owned nodes outside job.nodes; immutable mode and suffix; RuntimeClasses select the instance mark; job.nodeSelector refused in both modes",
    ),
    ("4.2.0", "like 4.1"),
    (
        "4.3.0",
        "like 4.1, with job mode the default (kata-deploy's main since PR #13841)",
    ),
    (
        "0.0.0-dev",
        "main: like 4.1, with the external k8s-job-dispatcher; app version 4.1.0",
    ),
];

/// The fixture chart's source directory.
pub fn source_dir() -> PathBuf {
    crate::control_plane::workspace_root().join("tests/fixtures/kata-deploy")
}

/// Packages every version into `dir` as `kata-deploy-<version>.tgz` (skipped
/// when the packages there were made from the same source).
pub fn package_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let source = source_dir();
    let stamp = format!("{:016x}", source_hash(&source)?);
    let stamp_file = dir.join(".stamp");
    let complete = VERSIONS
        .iter()
        .all(|(v, _)| dir.join(format!("kata-deploy-{v}.tgz")).exists());
    if complete && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(());
    }
    let work = tempfile::tempdir()?;
    for (version, _) in VERSIONS {
        let chart = work.path().join(version).join("kata-deploy");
        copy_dir(&source, &chart)?;
        let values_file = chart.join("values.yaml");
        let mut values: Value = serde_saphyr::from_str(&std::fs::read_to_string(&values_file)?)?;
        flavour_values(version, &mut values)?;
        std::fs::write(&values_file, serde_saphyr::to_string(&values)?)?;
        let out = work.path().join(format!("{version}-out"));
        let output = Command::new(bin_dir().join("helm"))
            .args([
                "package",
                &chart.display().to_string(),
                "--version",
                version,
                "--app-version",
                app_version(version),
                "--destination",
            ])
            .arg(&out)
            .output()
            .context("running helm package (run `make rig-bins`)")?;
        if !output.status.success() {
            bail!(
                "helm package of kata-deploy {version} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let name = format!("kata-deploy-{version}.tgz");
        // Rename is atomic: a concurrent reader sees the old or the new package.
        std::fs::rename(out.join(&name), dir.join(&name))?;
    }
    std::fs::write(stamp_file, stamp)?;
    Ok(())
}

/// The app version (kata-deploy's image tag) a chart version ships with:
/// its own, but main's chart (`0.0.0-dev`) carries the release it follows,
/// as the real package does (4.1.0 at the snapshot the tests know).
pub fn app_version(version: &str) -> &str {
    if version.starts_with("0.0.0") {
        "4.1.0"
    } else {
        version
    }
}

/// The values a version ships with.
fn flavour_values(version: &str, values: &mut Value) -> Result<()> {
    let v = if version.starts_with("0.0.0") {
        semver::Version::new(99, 0, 0)
    } else {
        semver::Version::parse(version)?
    };
    let map = values.as_object_mut().context("values.yaml is not a map")?;
    if v < semver::Version::new(3, 27, 0) {
        map.remove("updateStrategy");
    }
    if v < semver::Version::new(3, 32, 0) {
        map.remove("deploymentMode");
        map.remove("job");
    }
    if v < semver::Version::new(4, 0, 0) {
        map.remove("podAnnotations");
    }
    if v >= semver::Version::new(4, 1, 0)
        && let Some(job) = map.get_mut("job").and_then(Value::as_object_mut)
    {
        job.remove("nodeSelector");
        job.remove("nodeSelectorExpressions");
    }
    if version == "4.3.0" {
        map.insert("deploymentMode".into(), serde_json::json!("job"));
    }
    if version == "3.29.0" {
        map.insert("fake".into(), serde_json::json!({"outcome": "never-ready", "failOnNodes": [], "failOutcome": "never-ready", "installOutcome": "fail", "verificationOutcome": ""}));
    }
    Ok(())
}

fn source_hash(dir: &Path) -> Result<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    for file in files {
        file.strip_prefix(dir)?.hash(&mut hasher);
        std::fs::read(&file)?.hash(&mut hasher);
    }
    VERSIONS.hash(&mut hasher);
    for (version, _) in VERSIONS {
        app_version(version).hash(&mut hasher);
    }
    Ok(hasher.finish())
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        let target = to.join(path.file_name().context("file name")?);
        if path.is_dir() {
            copy_dir(&path, &target)?;
        } else {
            std::fs::copy(&path, &target)?;
        }
    }
    Ok(())
}
