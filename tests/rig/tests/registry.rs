//! The loopback registry (Debian's docker-registry): an image index built by
//! the rig is pushed through the distribution API and read back the way a
//! client pulls it, by tag and by digest, with the same digests and every
//! platform's check passing; the chart goes in as an OCI artifact with
//! `helm push` and comes back with `helm pull`. Skipped with one line where the
//! package is not installed (`tests/argo/host-packages.sh`), unless
//! `CI=true`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use klm_rig::oci::{Arch, IndexSpec, write_layout};
use klm_rig::oci_check::{BlobSource, check, fake_platforms};
use klm_rig::process::Component;
use klm_rig::registry::{self, REGISTRY_BINARY, Registry, RegistryImage};

fn registry_installed() -> bool {
    if std::path::Path::new(REGISTRY_BINARY).exists() {
        return true;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "CI=true but {REGISTRY_BINARY} is missing (tests/argo/host-packages.sh)"
    );
    eprintln!(
        "skipping the registry test: {REGISTRY_BINARY} is missing (tests/argo/host-packages.sh)"
    );
    false
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[test]
fn an_index_and_a_chart_pushed_to_the_loopback_registry_read_back_identical() -> Result<()> {
    if !registry_installed() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let host = format!("127.0.0.1:{port}");
    let (binary, args) = registry::prepare(&dir.path().join("registry"), port)?;
    let mut server = Component::start("docker-registry", &binary, &args, dir.path())?;
    let client = Arc::new(Registry::loopback(&host)?);
    client.wait_ready(Duration::from_secs(30))?;

    let platforms = fake_platforms(dir.path(), &Arch::ALL)?;
    let spec = IndexSpec {
        version: "0.1.0".into(),
        revision: "abc".into(),
        platforms,
    };
    let written = write_layout(&spec, &dir.path().join("oci"))?;
    let tags = ["0.1.0".to_string()];
    let pushed = client.push_layout(&dir.path().join("oci"), "klm/test", &tags)?;
    assert_eq!(pushed, written.digest);
    // Pushing again is a no-op that keeps the digest.
    assert_eq!(
        client.push_layout(&dir.path().join("oci"), "klm/test", &tags)?,
        written.digest
    );
    for reference in ["0.1.0".to_string(), written.digest.clone()] {
        let image = RegistryImage {
            registry: client.clone(),
            repository: "klm/test".into(),
            reference,
        };
        assert_eq!(image.index_digest()?, written.digest);
        let checked = check(&image, &Arch::ALL)?;
        let digests: Vec<_> = checked.iter().map(|c| c.digest.clone()).collect();
        let expected: Vec<_> = written.manifests.iter().map(|m| m.digest.clone()).collect();
        assert_eq!(digests, expected);
    }

    // The chart as an OCI artifact: helm push, then helm pull by version.
    let helm = klm_rig::control_plane::bin_dir().join("helm");
    let charts = klm_rig::control_plane::workspace_root().join("target/rig/charts");
    klm_rig::charts::package_all(&charts)?;
    let package = charts.join("kata-deploy-3.27.0.tgz");
    let env = [
        ("HELM_CONFIG_HOME", dir.path().join("helm")),
        ("HELM_CACHE_HOME", dir.path().join("helm")),
    ];
    let status = std::process::Command::new(&helm)
        .args([
            "push",
            &package.display().to_string(),
            &format!("oci://{host}/charts"),
            "--plain-http",
        ])
        .envs(env.clone())
        .status()?;
    assert!(status.success(), "helm push: {status}");
    std::fs::create_dir_all(dir.path().join("pulled"))?;
    let status = std::process::Command::new(&helm)
        .args([
            "pull",
            &format!("oci://{host}/charts/kata-deploy"),
            "--version",
            "3.27.0",
            "--plain-http",
            "-d",
        ])
        .arg(dir.path().join("pulled"))
        .envs(env)
        .status()?;
    assert!(status.success(), "helm pull: {status}");
    assert_eq!(
        std::fs::read(dir.path().join("pulled/kata-deploy-3.27.0.tgz"))?,
        std::fs::read(&package)?
    );
    server.check_alive()?;
    server.stop();
    Ok(())
}
