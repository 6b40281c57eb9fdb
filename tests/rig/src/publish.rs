//! Publishing to a registry the way a release does, on the rig's loopback
//! registry ([`crate::registry`]): the image index under
//! `<host>/kata-lifecycle-manager`, and this project's chart as an OCI
//! artifact under `oci://<host>/charts/kata-lifecycle-manager` whose values
//! name that image by digest (`image.repository`, `image.digest`), so a
//! `helm install` of the published chart runs exactly the image pushed
//! beside it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::control_plane::workspace_root;

/// The image's repository in the registry.
pub const IMAGE_REPOSITORY: &str = "kata-lifecycle-manager";
/// The chart's namespace in the registry (`oci://<host>/charts`).
pub const CHART_NAMESPACE: &str = "charts";
/// The chart's name (and last path element of its OCI reference).
pub const CHART_NAME: &str = "kata-lifecycle-manager";

/// What was published, and how a user refers to it.
#[derive(Debug, Clone)]
pub struct Published {
    /// The registry (`127.0.0.1:port`).
    pub host: String,
    /// The image index's digest (`sha256:...`).
    pub image_digest: String,
    /// The chart's version (Chart.yaml's).
    pub chart_version: String,
}

impl Published {
    /// `<host>/kata-lifecycle-manager`.
    pub fn image_repository(&self) -> String {
        format!("{}/{IMAGE_REPOSITORY}", self.host)
    }

    /// `<host>/kata-lifecycle-manager@sha256:...`: what the chart's steps run.
    pub fn image(&self) -> String {
        format!("{}@{}", self.image_repository(), self.image_digest)
    }

    /// `oci://<host>/charts/kata-lifecycle-manager` (install with
    /// `--version` [`Published::chart_version`] and `--plain-http`).
    pub fn chart_ref(&self) -> String {
        format!("oci://{}/{CHART_NAMESPACE}/{CHART_NAME}", self.host)
    }
}

/// Pushes the OCI layout `layout` as `<host>/kata-lifecycle-manager:<tag>`,
/// then this project's chart with its values pointing at the pushed index
/// by digest (`helm package` and `helm push --plain-http`, with `helm`
/// and a scratch directory `work`).
pub fn publish(
    host: &str,
    layout: &Path,
    tag: &str,
    helm: &Path,
    work: &Path,
) -> Result<Published> {
    let image_digest = crate::registry::push_layout(host, layout, IMAGE_REPOSITORY, tag)?;
    let chart_dir = workspace_root().join("chart").join(CHART_NAME);
    let chart_version = chart_version(&chart_dir)?;
    let published = Published {
        host: host.into(),
        image_digest,
        chart_version,
    };
    let copy = work.join("chart").join(CHART_NAME);
    if copy.exists() {
        std::fs::remove_dir_all(&copy)?;
    }
    copy_dir(&chart_dir, &copy)?;
    let values = copy.join("values.yaml");
    let text = std::fs::read_to_string(&values)?;
    std::fs::write(
        &values,
        set_image_values(
            &text,
            &published.image_repository(),
            &published.image_digest,
        )?,
    )?;
    let packages = work.join("packages");
    std::fs::create_dir_all(&packages)?;
    helm_run(
        helm,
        work,
        &[
            "package",
            &copy.display().to_string(),
            "-d",
            &packages.display().to_string(),
        ],
    )?;
    let package = packages.join(format!("{CHART_NAME}-{}.tgz", published.chart_version));
    helm_run(
        helm,
        work,
        &[
            "push",
            &package.display().to_string(),
            &format!("oci://{host}/{CHART_NAMESPACE}"),
            "--plain-http",
        ],
    )?;
    Ok(published)
}

/// Renders the published chart as a user installs it (`helm template
/// oci://... --version ... --plain-http`) and checks that its steps run the
/// published image by digest.
pub fn check_chart(helm: &Path, work: &Path, published: &Published) -> Result<()> {
    let home = work.join("helm-home");
    let output = Command::new(helm)
        .args([
            "template",
            "klm",
            &published.chart_ref(),
            "--version",
            &published.chart_version,
            "--plain-http",
            "--set-string",
            "defaults.verificationPod=placeholder",
        ])
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .context("running helm template")?;
    ensure!(
        output.status.success(),
        "helm template {}: {}",
        published.chart_ref(),
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = String::from_utf8_lossy(&output.stdout);
    let wanted = format!("image: {}", published.image());
    ensure!(
        rendered.contains(&wanted),
        "the published chart's steps do not run {}",
        published.image()
    );
    Ok(())
}

/// The chart's `version:` from its Chart.yaml.
pub fn chart_version(chart_dir: &Path) -> Result<String> {
    let text = std::fs::read_to_string(chart_dir.join("Chart.yaml"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("version:"))
        .map(|v| v.trim().trim_matches('"').to_string())
        .context("Chart.yaml has no version")
}

/// values.yaml with the `image:` block's `repository` and `digest` set
/// (each must appear once in that block, as the chart writes them).
pub fn set_image_values(values: &str, repository: &str, digest: &str) -> Result<String> {
    ensure!(
        digest.starts_with("sha256:"),
        "{digest} is not a sha256 digest"
    );
    let mut in_image = false;
    let (mut repository_set, mut digest_set) = (0, 0);
    let mut out = String::new();
    for line in values.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') && !line.is_empty() {
            in_image = line == "image:";
        }
        if in_image && line.starts_with("  repository:") {
            out.push_str(&format!("  repository: {repository}\n"));
            repository_set += 1;
        } else if in_image && line.starts_with("  digest:") {
            out.push_str(&format!("  digest: \"{digest}\"\n"));
            digest_set += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if (repository_set, digest_set) != (1, 1) {
        bail!(
            "values.yaml's image block has {repository_set} repository and {digest_set} digest lines, not one each"
        );
    }
    Ok(out)
}

fn helm_run(helm: &Path, work: &Path, args: &[&str]) -> Result<()> {
    let home = work.join("helm-home");
    let output = Command::new(helm)
        .args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .with_context(|| format!("running helm {}", args[0]))?;
    ensure!(
        output.status.success(),
        "helm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target: PathBuf = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charts_values_get_the_image_by_digest() {
        let chart = workspace_root().join("chart").join(CHART_NAME);
        let values = std::fs::read_to_string(chart.join("values.yaml")).unwrap();
        let digest = format!("sha256:{}", "a".repeat(64));
        let set =
            set_image_values(&values, "127.0.0.1:5000/kata-lifecycle-manager", &digest).unwrap();
        assert!(set.contains("  repository: 127.0.0.1:5000/kata-lifecycle-manager\n"));
        assert!(set.contains(&format!("  digest: \"{digest}\"\n")));
        assert_eq!(set.lines().count(), values.lines().count());
        assert!(set_image_values("image:\n  tag: x\n", "r", &digest).is_err());
        assert_eq!(chart_version(&chart).unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
