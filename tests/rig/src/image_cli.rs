//! `klm-rig image ...`: the command line of [`crate::oci`] and
//! [`crate::oci_check`], which `tests/image/build.sh` (and through it the
//! rig, `make demo`, the workflow tier and the release workflow) calls.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::image::ImageFile;
use crate::oci::{Arch, IndexSpec, PlatformFiles};
use crate::oci_check::{Layout, check};

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
    /// index by digest) to a loopback registry, then check the index as a
    /// client pulls it, by digest.
    Publish {
        /// The layout's directory.
        #[arg(long)]
        layout: PathBuf,
        /// The registry, `127.0.0.1:<port>` (plain HTTP); without it, a
        /// registry of its own on loopback (Debian's docker-registry, storage
        /// in WORK/registry) for the time of the command.
        #[arg(long)]
        registry: Option<String>,
        /// The image's tag.
        #[arg(long)]
        tag: String,
        /// The platforms the index must list (default: all four).
        #[arg(long = "arch", value_parser = Arch::parse)]
        arches: Vec<Arch>,
        /// A scratch directory (the chart's copy and package).
        #[arg(long)]
        work: PathBuf,
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
                tag,
                arches,
                work,
            } => {
                let arches = if arches.is_empty() {
                    Arch::ALL.to_vec()
                } else {
                    arches
                };
                let mut own = None;
                let registry = match registry {
                    Some(host) => host,
                    None => {
                        let (host, server) = start_registry(&work.join("registry"))?;
                        own = Some(server);
                        host
                    }
                };
                let helm = crate::control_plane::bin_dir().join("helm");
                let published = crate::publish::publish(&registry, &layout, &tag, &helm, &work)?;
                let pulled = crate::registry::RegistryImage {
                    host: registry.clone(),
                    repository: crate::publish::IMAGE_REPOSITORY.into(),
                    reference: published.image_digest.clone(),
                };
                let checked = check(&pulled, &arches)
                    .with_context(|| format!("checking {} in the registry", published.image()))?;
                crate::publish::check_chart(&helm, &work, &published)?;
                writeln!(out, "image {}", published.image())?;
                writeln!(
                    out,
                    "chart {} --version {}",
                    published.chart_ref(),
                    published.chart_version
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
    crate::registry::wait_ready(&host, std::time::Duration::from_secs(30))?;
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
