//! `klm-rig image ...`: the command line of [`crate::oci`] and
//! [`crate::oci_check`], which `tests/image/build.sh` (and through it the
//! rig, `make demo`, the workflow tier and the release workflows) calls.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::image::ImageFile;
use crate::oci::{Arch, IndexSpec, PlatformFiles};
use crate::oci_check::{Layout, check};
use crate::registry::{Connection, Credentials, Registry, RegistryImage};

/// What `klm-rig image` does.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Write the image index as an OCI image layout; prints its digest and
    /// each platform's manifest digest and sizes.
    Build {
        /// The layout's directory (emptied first).
        #[arg(long)]
        out: PathBuf,
        /// org.opencontainers.image.version.
        #[arg(long)]
        version: String,
        /// org.opencontainers.image.revision (the commit).
        #[arg(long)]
        revision: String,
        /// The CA bundle copied to /etc/ssl/certs/ca-certificates.crt.
        #[arg(long, default_value = "/etc/ssl/certs/ca-certificates.crt")]
        ca: PathBuf,
        /// A platform: ARCH=KLM,HELM (amd64, arm64, ppc64le, s390x), once per platform.
        #[arg(long = "platform", required = true, value_parser = parse_platform)]
        platforms: Vec<(Arch, PathBuf, PathBuf)>,
        /// A data file added to every platform: PATH_IN_IMAGE=HOST_FILE (the
        /// rig's fixture charts; the shipped image has none).
        #[arg(long = "add", value_parser = parse_add)]
        added: Vec<(String, PathBuf)>,
    },
    /// Push a layout's index and this project's chart (its values naming the
    /// index by digest) to a registry, then check the index as a client
    /// pulls it, by digest, and render the pulled chart. Credentials come
    /// from KLM_REGISTRY_USER and KLM_REGISTRY_PASSWORD (or
    /// --password-stdin), never from the command line.
    Publish {
        /// The layout's directory.
        #[arg(long)]
        layout: PathBuf,
        /// The registry and the path the image and the chart go under:
        /// HOST[/NAMESPACE] (`ghcr.io/kata-containers`: the image
        /// `ghcr.io/kata-containers/kata-lifecycle-manager`, the chart
        /// `oci://ghcr.io/kata-containers/charts/kata-lifecycle-manager`).
        /// Without it, a registry of its own on loopback (Debian's
        /// docker-registry, plain HTTP, storage in WORK/registry) for the
        /// time of the command.
        #[arg(long)]
        registry: Option<String>,
        /// Plain HTTP instead of HTTPS (a loopback registry), as helm's.
        #[arg(long)]
        plain_http: bool,
        /// A CA bundle (PEM) to trust besides the system's roots.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Read the password (or token) from stdin; the user is
        /// KLM_REGISTRY_USER.
        #[arg(long)]
        password_stdin: bool,
        /// The image's tags (once per tag; the index is pushed by each).
        #[arg(long = "tag", required = true)]
        tags: Vec<String>,
        /// The chart's version (default: Chart.yaml's); a branch's builds
        /// publish a prerelease (`0.1.0-main.sha-<commit>`) so that they
        /// never replace a released chart.
        #[arg(long)]
        chart_version: Option<String>,
        /// The platforms the index must list (default: all four).
        #[arg(long = "arch", value_parser = Arch::parse)]
        arches: Vec<Arch>,
        /// A scratch directory (the chart's copy and package).
        #[arg(long)]
        work: PathBuf,
        /// The helm that packages and pushes the chart (default: the rig's,
        /// target/rig/bin/helm).
        #[arg(long)]
        helm: Option<PathBuf>,
        /// Append what was published to this file as NAME=VALUE lines
        /// (image, digest, chart, chart_digest, chart_package, chart_version;
        /// the format of GitHub's $GITHUB_OUTPUT).
        #[arg(long)]
        outputs: Option<PathBuf>,
    },
    /// Check a layout's index: the platforms, every blob's digest, and each
    /// platform's user, entrypoint, labels, CA bundle, no shell, and klm's and
    /// helm's ELF machine.
    Check {
        /// The layout's directory.
        dir: PathBuf,
        /// The platforms the index must list (default: all four).
        #[arg(long = "arch", value_parser = Arch::parse)]
        arches: Vec<Arch>,
    },
}

impl ImageCommand {
    /// Runs the command, printing to stdout.
    pub fn run(self) -> Result<()> {
        let mut out = std::io::stdout().lock();
        match self {
            ImageCommand::Build {
                out: dir,
                version,
                revision,
                ca,
                platforms,
                added,
            } => {
                let platforms = platforms
                    .into_iter()
                    .map(|(arch, klm, helm)| {
                        let mut platform = PlatformFiles::release(arch, &klm, &helm, &ca);
                        platform.files.extend(
                            added
                                .iter()
                                .map(|(path, source)| ImageFile::data(path, source)),
                        );
                        platform
                    })
                    .collect();
                let started = std::time::Instant::now();
                let written = crate::oci::write_layout(
                    &IndexSpec {
                        version,
                        revision,
                        platforms,
                    },
                    &dir,
                )?;
                writeln!(out, "index {}", written.digest)?;
                for m in &written.manifests {
                    writeln!(
                        out,
                        "linux/{} {} {} compressed, {} uncompressed",
                        m.arch.name(),
                        m.digest,
                        megabytes(m.compressed),
                        megabytes(m.uncompressed)
                    )?;
                }
                writeln!(
                    out,
                    "written to {} in {:.1}s",
                    dir.display(),
                    started.elapsed().as_secs_f64()
                )?;
            }
            ImageCommand::Publish {
                layout,
                registry,
                plain_http,
                ca_file,
                password_stdin,
                tags,
                chart_version,
                arches,
                work,
                helm,
                outputs,
            } => {
                let arches = if arches.is_empty() {
                    Arch::ALL.to_vec()
                } else {
                    arches
                };
                let credentials = if password_stdin {
                    let user = std::env::var(crate::registry::USER_ENV)
                        .ok()
                        .filter(|u| !u.is_empty())
                        .with_context(|| {
                            format!(
                                "--password-stdin needs the user in {}",
                                crate::registry::USER_ENV
                            )
                        })?;
                    let mut password = String::new();
                    std::io::stdin().read_line(&mut password)?;
                    let password = password.trim_end_matches(['\r', '\n']);
                    anyhow::ensure!(!password.is_empty(), "no password on stdin");
                    Some(Credentials::new(user, password))
                } else {
                    Credentials::from_env()?
                };
                let mut own = None;
                let (host, namespace, connection) = match registry {
                    Some(target) => {
                        let (host, namespace) =
                            target.split_once('/').unwrap_or((target.as_str(), ""));
                        (
                            host.to_string(),
                            namespace.to_string(),
                            Connection {
                                plain_http,
                                ca_file,
                                credentials,
                            },
                        )
                    }
                    None => {
                        let (host, server) = start_registry(&work.join("registry"))?;
                        own = Some(server);
                        let connection = Connection {
                            plain_http: true,
                            ..Connection::default()
                        };
                        (host, String::new(), connection)
                    }
                };
                let registry = Arc::new(Registry::new(&host, connection)?);
                registry.login()?;
                let helm = helm.unwrap_or_else(|| crate::control_plane::bin_dir().join("helm"));
                let helm = crate::publish::Helm::for_registry(&helm, &work, &registry)?;
                let published = crate::publish::publish(
                    &registry,
                    &namespace,
                    &layout,
                    &tags,
                    chart_version.as_deref(),
                    &helm,
                    &work,
                )?;
                let pulled = RegistryImage {
                    registry: registry.clone(),
                    repository: published.image_path(),
                    reference: published.image_digest.clone(),
                };
                let checked = check(&pulled, &arches)
                    .with_context(|| format!("checking {} in the registry", published.image()))?;
                crate::publish::check_chart(&helm, &published)?;
                writeln!(out, "image {}", published.image())?;
                writeln!(
                    out,
                    "chart {} --version {} ({})",
                    published.chart_ref(),
                    published.chart_version,
                    published.chart_digest
                )?;
                for c in checked {
                    writeln!(
                        out,
                        "linux/{} {} checked as pulled, {} compressed",
                        c.arch.name(),
                        c.digest,
                        megabytes(c.compressed)
                    )?;
                }
                if let Some(path) = outputs {
                    let mut file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .with_context(|| format!("opening {}", path.display()))?;
                    write!(
                        file,
                        "image={}\ndigest={}\nchart={}\nchart_digest={}\nchart_package={}\nchart_version={}\n",
                        published.image_repository(),
                        published.image_digest,
                        published.chart_ref(),
                        published.chart_digest,
                        published.chart_package.display(),
                        published.chart_version
                    )?;
                }
                if let Some(mut server) = own {
                    server.check_alive()?;
                    server.stop();
                }
            }
            ImageCommand::Check { dir, arches } => {
                let arches = if arches.is_empty() {
                    Arch::ALL.to_vec()
                } else {
                    arches
                };
                let layout = Layout { dir };
                let checked = check(&layout, &arches)
                    .with_context(|| format!("checking {}", layout.dir.display()))?;
                writeln!(
                    out,
                    "index {} checked",
                    crate::oci_check::BlobSource::index_digest(&layout)?
                )?;
                for c in checked {
                    writeln!(
                        out,
                        "linux/{} {} {} compressed, {} uncompressed",
                        c.arch.name(),
                        c.digest,
                        megabytes(c.compressed),
                        megabytes(c.uncompressed)
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Starts Debian's docker-registry on a free loopback port with its storage
/// under `dir`; returns its `127.0.0.1:<port>` and the process.
fn start_registry(dir: &std::path::Path) -> Result<(String, crate::process::Component)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let host = format!("127.0.0.1:{port}");
    let (binary, args) = crate::registry::prepare(dir, port)?;
    let server = crate::process::Component::start("docker-registry", &binary, &args, dir)?;
    Registry::loopback(&host)?.wait_ready(std::time::Duration::from_secs(30))?;
    Ok((host, server))
}

/// `12.3 MB` (10^6 bytes).
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn parse_platform(value: &str) -> Result<(Arch, PathBuf, PathBuf)> {
    let (arch, files) = value.split_once('=').context("expected ARCH=KLM,HELM")?;
    let (klm, helm) = files.split_once(',').context("expected ARCH=KLM,HELM")?;
    Ok((Arch::parse(arch)?, klm.into(), helm.into()))
}

fn parse_add(value: &str) -> Result<(String, PathBuf)> {
    let (path, source) = value
        .split_once('=')
        .context("expected PATH_IN_IMAGE=HOST_FILE")?;
    anyhow::ensure!(path.starts_with('/'), "{path} is not absolute");
    Ok((path.into(), source.into()))
}
