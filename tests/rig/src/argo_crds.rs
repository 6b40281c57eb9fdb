//! Argo Workflows' full CRDs, read from the Argo module in the Go module
//! cache: `manifests/base/crds/full/argoproj.io_*.yaml` of the version a Go
//! module of this repository pins (v3 in `tests/argo`, v4 in
//! `tests/argolint/v4`), so the CRDs the rig installs are the ones of the
//! Argo code the tests build, and nothing outside the repository is read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};

use crate::control_plane::workspace_root;

/// An Argo major line: its Go module and the module of this repository that
/// pins its version.
struct Line {
    major: &'static str,
    module: &'static str,
    pinned_in: &'static str,
}

const LINES: [Line; 2] = [
    Line {
        major: "v3",
        module: "github.com/argoproj/argo-workflows/v3",
        pinned_in: "tests/argo",
    },
    Line {
        major: "v4",
        module: "github.com/argoproj/argo-workflows/v4",
        pinned_in: "tests/argolint/v4",
    },
];

/// Where the CRD files sit inside the Argo module.
const CRDS_IN_MODULE: &str = "manifests/base/crds/full";

/// The directory of Argo `version`'s full CRDs in the Go module cache,
/// downloading the module (`go mod download`) when the cache lacks it.
/// `version` must be the one the repository pins for its major line.
pub async fn dir(version: &str) -> Result<PathBuf> {
    let line = LINES
        .iter()
        .find(|l| version.split('.').next() == Some(l.major))
        .with_context(|| {
            format!("no Argo line for {version:?} (the rig knows Argo v3 and v4, e.g. v3.7.18)")
        })?;
    let pinned_in = workspace_root().join(line.pinned_in);
    let (pinned, mut dir) = go_list(&pinned_in, line.module).await?;
    ensure!(
        pinned == version,
        "{} pins {} {pinned}, not {version}: ask for {pinned}, or change the pin there",
        line.pinned_in,
        line.module
    );
    if dir.is_none() {
        go(&pinned_in, &["mod", "download", line.module]).await?;
        dir = go_list(&pinned_in, line.module).await?.1;
    }
    let dir = dir.with_context(|| {
        format!(
            "{} {version} is not in the Go module cache after `go mod download`",
            line.module
        )
    })?;
    Ok(dir.join(CRDS_IN_MODULE))
}

/// Every `argoproj.io_*.yaml` of Argo `version` (not the kustomization),
/// sorted by name.
pub async fn files(version: &str) -> Result<Vec<PathBuf>> {
    let dir = dir(version).await?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading Argo {version}'s CRDs in {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("argoproj.io_") && n.ends_with(".yaml"))
        })
        .collect();
    files.sort();
    ensure!(
        !files.is_empty(),
        "no argoproj.io_*.yaml in {}",
        dir.display()
    );
    Ok(files)
}

/// Server-side applies Argo `version`'s full CRDs and waits until each is
/// established.
pub async fn apply(client: &Client, version: &str) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in files(version).await? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply("klm-rig").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying {}", file.display()))?;
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("CRD {name} not established within 60s"))??;
    }
    Ok(())
}

/// `module`'s version in the Go module at `dir`, and its directory in the
/// module cache (`None` while it is not downloaded).
async fn go_list(dir: &Path, module: &str) -> Result<(String, Option<PathBuf>)> {
    let out = go(dir, &["list", "-m", "-f", "{{.Version}} {{.Dir}}", module]).await?;
    let (version, module_dir) = out.trim().split_once(' ').unwrap_or((out.trim(), ""));
    if version.is_empty() {
        bail!("`go list -m {module}` in {} gave no version", dir.display());
    }
    Ok((
        version.to_string(),
        (!module_dir.is_empty()).then(|| PathBuf::from(module_dir)),
    ))
}

/// Runs `go ARGS` in `dir`; its stdout, or an error with its stderr.
async fn go(dir: &Path, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new("go")
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .with_context(|| format!("running `go {}` (is Go installed?)", args.join(" ")))?;
    ensure!(
        out.status.success(),
        "`go {}` in {} failed: {}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both pinned lines resolve to a module directory holding all eight
    /// CRDs, cronworkflows included, and never the kustomization.
    #[tokio::test]
    async fn both_pinned_lines_have_their_eight_crds() {
        for line in &LINES {
            let (version, _) = go_list(&workspace_root().join(line.pinned_in), line.module)
                .await
                .unwrap();
            let names: Vec<String> = files(&version)
                .await
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names.len(), 8, "{version}: {names:?}");
            assert!(names.contains(&"argoproj.io_cronworkflows.yaml".to_string()));
            assert!(names.contains(&"argoproj.io_workflows.yaml".to_string()));
        }
    }

    /// A version the repository does not pin is refused, naming the pin.
    #[tokio::test]
    async fn an_unpinned_version_names_the_pin() {
        let err = dir("v3.0.0").await.unwrap_err().to_string();
        assert!(err.contains("tests/argo pins"), "{err}");
        let err = dir("v9.1.0").await.unwrap_err().to_string();
        assert!(err.contains("no Argo line"), "{err}");
    }
}
