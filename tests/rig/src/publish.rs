//! Publishing to a registry the way a release does, to the rig's loopback
//! registry and to ghcr.io alike ([`crate::registry::Registry`]): the image
//! index under `<registry>[/<namespace>]/kata-lifecycle-manager`, and this
//! project's chart as an OCI artifact under
//! `oci://<registry>[/<namespace>]/charts/kata-lifecycle-manager` whose
//! values name that image by digest (`image.repository`, `image.digest`), so
//! a `helm install` of the published chart runs exactly the image pushed
//! beside it. helm reaches the registry as the client does (`--plain-http`
//! or `--ca-file`), logged in with `helm registry login --password-stdin`
//! when there are credentials, its registry config in a temporary
//! directory removed afterwards.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};

use crate::control_plane::workspace_root;
use crate::registry::Registry;

/// The image's repository in the registry (under the namespace).
pub const IMAGE_REPOSITORY: &str = "kata-lifecycle-manager";
/// The chart's namespace in the registry (`oci://<host>[/<namespace>]/charts`).
pub const CHART_NAMESPACE: &str = "charts";
/// The chart's name (and last path element of its OCI reference).
pub const CHART_NAME: &str = "kata-lifecycle-manager";

/// The flags of `klm-rig image publish` the release passes (each takes a
/// value but `--password-stdin`; the registry test relies on this order): `.github/workflows/image.yaml`
/// runs it so against ghcr.io, the registry test
/// (`tests/rig/tests/registry.rs`) against a registry with TLS and token
/// auth (adding only `--ca-file` for its CA), and `tests/repo` checks that
/// the workflow passes exactly these.
pub const RELEASE_PUBLISH_FLAGS: [&str; 8] = [
    "--layout",
    "--registry",
    "--password-stdin",
    "--tag",
    "--chart-version",
    "--work",
    "--helm",
    "--outputs",
];

/// What was published, and how a user refers to it.
#[derive(Debug, Clone)]
pub struct Published {
    /// The registry (`127.0.0.1:port`, `ghcr.io`).
    pub host: String,
    /// The path under the registry (`kata-containers`; empty on the rig).
    pub namespace: String,
    /// The image index's digest (`sha256:...`).
    pub image_digest: String,
    /// The chart's version (Chart.yaml's).
    pub chart_version: String,
    /// The chart's manifest digest, as `helm push` printed it.
    pub chart_digest: String,
    /// The chart's package as pushed.
    pub chart_package: PathBuf,
}

impl Published {
    /// `<host>[/<namespace>]`.
    fn prefix(&self) -> String {
        if self.namespace.is_empty() {
            self.host.clone()
        } else {
            format!("{}/{}", self.host, self.namespace)
        }
    }

    /// The image's repository path in the registry's API
    /// (`[<namespace>/]kata-lifecycle-manager`).
    pub fn image_path(&self) -> String {
        repository_path(&self.namespace, IMAGE_REPOSITORY)
    }

    /// `<host>[/<namespace>]/kata-lifecycle-manager`.
    pub fn image_repository(&self) -> String {
        format!("{}/{IMAGE_REPOSITORY}", self.prefix())
    }

    /// `<host>[/<namespace>]/kata-lifecycle-manager@sha256:...`: what the
    /// chart's steps run.
    pub fn image(&self) -> String {
        format!("{}@{}", self.image_repository(), self.image_digest)
    }

    /// `oci://<host>[/<namespace>]/charts/kata-lifecycle-manager` (install
    /// with `--version` [`Published::chart_version`], and `--plain-http` on
    /// the rig).
    pub fn chart_ref(&self) -> String {
        format!("oci://{}/{CHART_NAMESPACE}/{CHART_NAME}", self.prefix())
    }

    /// `<host>[/<namespace>]/charts/kata-lifecycle-manager@sha256:...` (what
    /// cosign signs).
    pub fn chart_by_digest(&self) -> String {
        format!(
            "{}/{CHART_NAMESPACE}/{CHART_NAME}@{}",
            self.prefix(),
            self.chart_digest
        )
    }
}

/// `name` under `namespace` (`a/b`, or `b` when `namespace` is empty).
pub fn repository_path(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// helm with its own homes under a scratch directory and its registry
/// config (where `helm registry login` keeps credentials) in a temporary
/// directory, removed when the session is dropped.
#[derive(Debug)]
pub struct Helm {
    helm: PathBuf,
    home: PathBuf,
    registry_config: tempfile::TempDir,
    flags: Vec<String>,
}

impl Helm {
    /// helm `helm` reaching `registry` as it is reached (`--plain-http`,
    /// `--ca-file`), logged in when the registry has credentials; homes
    /// under `work/helm-home`.
    pub fn for_registry(helm: &Path, work: &Path, registry: &Registry) -> Result<Helm> {
        let session = Helm {
            helm: helm.to_path_buf(),
            home: work.join("helm-home"),
            registry_config: tempfile::tempdir()?,
            flags: registry.helm_flags(),
        };
        if let Some(credentials) = &registry.connection().credentials {
            let mut args = vec![
                "registry".to_string(),
                "login".into(),
                registry.host().into(),
                "--username".into(),
                credentials.username.clone(),
                "--password-stdin".into(),
            ];
            args.extend(session.flags.iter().cloned());
            session.run(&args, Some(credentials.password()))?;
        }
        Ok(session)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.helm);
        command
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .env(
                "HELM_REGISTRY_CONFIG",
                self.registry_config.path().join("config.json"),
            );
        command
    }

    /// Runs helm with `args` (and `stdin`); its stdout and stderr.
    fn run(&self, args: &[String], stdin: Option<&str>) -> Result<String> {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {} {}", self.helm.display(), args[0]))?;
        let mut input = child.stdin.take().context("helm's stdin")?;
        if let Some(text) = stdin {
            input.write_all(text.as_bytes())?;
        }
        drop(input);
        let output = child.wait_with_output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // The arguments never hold a secret (the password goes on stdin).
        ensure!(
            output.status.success(),
            "helm {}: {}",
            args.join(" "),
            text.trim()
        );
        Ok(text)
    }
}

/// Pushes the OCI layout `layout` as
/// `<registry>[/<namespace>]/kata-lifecycle-manager` with each of `tags`,
/// then this project's chart with its values pointing at the pushed index
/// by digest (`helm package`, `helm push`; the package under `work`), as
/// `chart_version` (a main branch's prerelease) or Chart.yaml's version.
pub fn publish(
    registry: &Registry,
    namespace: &str,
    layout: &Path,
    tags: &[String],
    chart_version: Option<&str>,
    helm: &Helm,
    work: &Path,
) -> Result<Published> {
    ensure!(
        !namespace.starts_with('/') && !namespace.ends_with('/'),
        "a namespace is a path without leading or trailing /: {namespace}"
    );
    let image_digest =
        registry.push_layout(layout, &repository_path(namespace, IMAGE_REPOSITORY), tags)?;
    let chart_dir = workspace_root().join("chart").join(CHART_NAME);
    let chart_version = match chart_version {
        Some(version) => {
            semver::Version::parse(version)
                .with_context(|| format!("the chart version {version} is not semver"))?;
            version.to_string()
        }
        None => self::chart_version(&chart_dir)?,
    };
    let mut published = Published {
        host: registry.host().into(),
        namespace: namespace.into(),
        image_digest,
        chart_package: work
            .join("packages")
            .join(format!("{CHART_NAME}-{chart_version}.tgz")),
        chart_version,
        chart_digest: String::new(),
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
    helm.run(
        &[
            "package".into(),
            copy.display().to_string(),
            "-d".into(),
            packages.display().to_string(),
            "--version".into(),
            published.chart_version.clone(),
        ],
        None,
    )?;
    let mut args = vec![
        "push".to_string(),
        published.chart_package.display().to_string(),
        format!("oci://{}/{CHART_NAMESPACE}", published.prefix()),
    ];
    args.extend(helm.flags.iter().cloned());
    let pushed = helm.run(&args, None)?;
    published.chart_digest = pushed
        .lines()
        .find_map(|l| l.trim().strip_prefix("Digest:"))
        .map(|d| d.trim().to_string())
        .filter(|d| d.starts_with("sha256:"))
        .with_context(|| format!("helm push printed no digest: {pushed}"))?;
    Ok(published)
}

/// Renders the published chart as a user installs it (`helm template
/// oci://... --version ...`) and checks that its steps run the published
/// image by digest.
pub fn check_chart(helm: &Helm, published: &Published) -> Result<()> {
    let mut args = vec![
        "template".to_string(),
        "klm".into(),
        published.chart_ref(),
        "--version".into(),
        published.chart_version.clone(),
        "--set-string".into(),
        "defaults.verificationPod=placeholder".into(),
    ];
    args.extend(helm.flags.iter().cloned());
    let rendered = helm.run(&args, None)?;
    let wanted = format!("image: {}", published.image());
    if !rendered.contains(&wanted) {
        bail!(
            "the published chart's steps do not run {}",
            published.image()
        );
    }
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
