//! The loopback registry (Debian's docker-registry): an image index built by
//! the rig is pushed through the distribution API and read back the way a
//! client pulls it, by tag and by digest, with the same digests and every
//! platform's check passing; the chart goes in as an OCI artifact with
//! `helm push` and comes back with `helm pull`.
//!
//! Then the release's path (`klm-rig image publish` with
//! [`RELEASE_PUBLISH_FLAGS`], as `.github/workflows/image.yaml` runs it
//! against ghcr.io; `tests/repo` checks they agree): the same registry over
//! HTTPS with token auth as ghcr.io asks (a token server of the rig issuing
//! ES256 JWTs), `klm-rig image publish` logging in with `--password-stdin`,
//! the pushed index checked as an anonymous client pulls it, and a wrong
//! password refused with a clear error; and Basic auth (htpasswd) over
//! HTTPS.
//!
//! Skipped with one line where the package is not installed
//! (`tests/argo/host-packages.sh`), unless `CI=true`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use klm_rig::oci::{Arch, IndexSpec, WrittenIndex, write_layout};
use klm_rig::oci_check::{BlobSource, check, fake_platforms};
use klm_rig::process::Component;
use klm_rig::publish::RELEASE_PUBLISH_FLAGS;
use klm_rig::registry::{
    self, Connection, Credentials, REGISTRY_BINARY, Registry, RegistryImage, ServerAuth,
    ServerOptions,
};
use klm_rig::token_server::{ISSUER, SERVICE, TestPki, TokenServer};

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

/// A stand-in image index of klm 0.1.0 for `arches` (fake binaries of the
/// right architecture), written as an OCI layout in `<dir>/oci`.
fn stand_in_layout(dir: &Path, arches: &[Arch]) -> Result<(PathBuf, WrittenIndex)> {
    let spec = IndexSpec {
        version: "0.1.0".into(),
        revision: "abc".into(),
        platforms: fake_platforms(dir, arches)?,
    };
    let layout = dir.join("oci");
    let written = write_layout(&spec, &layout)?;
    Ok((layout, written))
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

    let (layout, written) = stand_in_layout(dir.path(), &Arch::ALL)?;
    let tags = ["0.1.0".to_string()];
    let pushed = client.push_layout(&layout, "klm/test", &tags)?;
    assert_eq!(pushed, written.digest);
    // Pushing again is a no-op that keeps the digest.
    assert_eq!(
        client.push_layout(&layout, "klm/test", &tags)?,
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

/// Runs `klm-rig image publish` as the release workflow does, with
/// `--ca-file` for the test's CA, the password on stdin; its status, stdout
/// and stderr.
fn publish_as_the_release(
    flags: &[(&str, String)],
    user: &str,
    password: &str,
) -> Result<(bool, String, String)> {
    let mut args = vec!["image".to_string(), "publish".to_string()];
    for (flag, value) in flags {
        args.push(flag.to_string());
        if !value.is_empty() {
            args.push(value.clone());
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_klm-rig"))
        .args(&args)
        .env(registry::USER_ENV, user)
        .env_remove(registry::PASSWORD_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    writeln!(child.stdin.take().context("stdin")?, "{password}")?;
    let output = child.wait_with_output()?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[test]
fn the_release_publishes_over_https_with_token_auth_and_refuses_a_wrong_password() -> Result<()> {
    if !registry_installed() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let pki = TestPki::generate(&dir.path().join("pki"))?;
    let (user, password) = ("klm-release", "the-right-token");
    let tokens = TokenServer::start(&pki, vec![Credentials::new(user, password)])?;
    let port = free_port()?;
    let host = format!("127.0.0.1:{port}");
    let options = ServerOptions {
        tls: Some(pki.serving.clone()),
        auth: Some(ServerAuth::Token {
            realm: tokens.realm.clone(),
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            rootcertbundle: pki.token_ca_cert.clone(),
        }),
    };
    let (binary, args) = registry::prepare_with(&dir.path().join("registry"), port, &options)?;
    let mut server = Component::start("docker-registry", &binary, &args, dir.path())?;
    let anonymous = Arc::new(Registry::new(
        &host,
        Connection {
            ca_file: Some(pki.ca_cert.clone()),
            ..Connection::default()
        },
    )?);
    anonymous.wait_ready(Duration::from_secs(30))?;

    let (layout, written) = stand_in_layout(dir.path(), &Arch::ALL)?;
    let outputs = dir.path().join("outputs");
    let helm = klm_rig::control_plane::bin_dir().join("helm");
    let flags = |work: &str| -> Vec<(&str, String)> {
        let values = [
            layout.display().to_string(),
            format!("{host}/klm-test"),
            String::new(),
            "0.1.0".into(),
            "0.1.0-main.sha-abc".into(),
            dir.path().join(work).display().to_string(),
            helm.display().to_string(),
            outputs.display().to_string(),
        ];
        let mut flags: Vec<(&str, String)> =
            RELEASE_PUBLISH_FLAGS.iter().copied().zip(values).collect();
        flags.push(("--tag", "sha-abc".into()));
        flags.push(("--ca-file", pki.ca_cert.display().to_string()));
        flags
    };
    assert_eq!(RELEASE_PUBLISH_FLAGS.len(), 8, "a value above per flag");

    // A wrong password: refused by the token server, with the user named,
    // the password never shown, nothing pushed.
    let (ok, _, stderr) = publish_as_the_release(&flags("wrong"), user, "not-the-token")?;
    assert!(!ok, "a wrong password must fail");
    assert!(
        stderr.contains("refused") && stderr.contains(user) && stderr.contains("401"),
        "a clear error naming the user and the refusal: {stderr}"
    );
    assert!(!stderr.contains("not-the-token"), "{stderr}");
    eprintln!("a wrong password: {}", stderr.trim());

    // The right one: the index and the chart pushed, checked as pulled.
    let (ok, stdout, stderr) = publish_as_the_release(&flags("work"), user, password)?;
    assert!(ok, "klm-rig image publish: {stdout}{stderr}");
    eprintln!("{stdout}");
    let image = format!("{host}/klm-test/kata-lifecycle-manager");
    assert!(
        stdout.contains(&format!("image {image}@{}", written.digest)),
        "{stdout}"
    );
    assert!(!format!("{stdout}{stderr}").contains(password));
    let published = std::fs::read_to_string(&outputs)?;
    assert!(
        published.contains(&format!("digest={}\n", written.digest)),
        "{published}"
    );
    assert!(
        published.contains(&format!("image={image}\n")),
        "{published}"
    );
    let chart_digest = published
        .lines()
        .find_map(|l| l.strip_prefix("chart_digest=sha256:"))
        .context("a chart digest")?;
    ensure!(chart_digest.len() == 64, "{published}");

    // An anonymous client pulls (a Bearer token with pull only) by both
    // tags and by digest, every platform checked again.
    for reference in ["0.1.0", "sha-abc", written.digest.as_str()] {
        let pulled = RegistryImage {
            registry: anonymous.clone(),
            repository: "klm-test/kata-lifecycle-manager".into(),
            reference: reference.into(),
        };
        assert_eq!(pulled.index_digest()?, written.digest);
    }
    let pulled = RegistryImage {
        registry: anonymous.clone(),
        repository: "klm-test/kata-lifecycle-manager".into(),
        reference: written.digest.clone(),
    };
    assert_eq!(check(&pulled, &Arch::ALL)?.len(), 4);
    // ...but may not push.
    let refused = anonymous
        .push_layout(&layout, "klm-test/other", &["0.1.0".into()])
        .expect_err("an anonymous push");
    assert!(format!("{refused:#}").contains("anonymous"), "{refused:#}");
    server.check_alive()?;
    server.stop();
    Ok(())
}

#[test]
fn basic_auth_over_tls_pushes_with_the_password_and_refuses_a_wrong_one() -> Result<()> {
    if !registry_installed() {
        return Ok(());
    }
    let htpasswd_found = Command::new("htpasswd")
        .arg("-h")
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !htpasswd_found {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true but htpasswd is missing (apache2-utils, tests/argo/host-packages.sh)"
        );
        eprintln!("skipping the Basic auth test: htpasswd is missing (apache2-utils)");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let pki = TestPki::generate(&dir.path().join("pki"))?;
    let (user, password) = ("klm-basic", "the-right-password");
    let htpasswd = dir.path().join("htpasswd");
    let mut child = Command::new("htpasswd")
        .args(["-B", "-i", "-c"])
        .arg(&htpasswd)
        .arg(user)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    write!(child.stdin.take().context("stdin")?, "{password}")?;
    ensure!(child.wait()?.success(), "htpasswd -B failed");
    let port = free_port()?;
    let host = format!("127.0.0.1:{port}");
    let options = ServerOptions {
        tls: Some(pki.serving.clone()),
        auth: Some(ServerAuth::Htpasswd { path: htpasswd }),
    };
    let (binary, args) = registry::prepare_with(&dir.path().join("registry"), port, &options)?;
    let mut server = Component::start("docker-registry", &binary, &args, dir.path())?;
    let connect = |credentials: Option<Credentials>| {
        Registry::new(
            &host,
            Connection {
                ca_file: Some(pki.ca_cert.clone()),
                credentials,
                ..Connection::default()
            },
        )
    };
    connect(None)?.wait_ready(Duration::from_secs(30))?;
    let (layout, written) = stand_in_layout(dir.path(), &[Arch::S390x])?;
    let tags = ["0.1.0".to_string()];

    let anonymous = connect(None)?
        .push_layout(&layout, "klm", &tags)
        .expect_err("an anonymous push");
    assert!(
        format!("{anonymous:#}").contains(registry::USER_ENV),
        "{anonymous:#}"
    );
    let wrong = connect(Some(Credentials::new(user, "not-the-password")))?
        .push_layout(&layout, "klm", &tags)
        .expect_err("a wrong password");
    let wrong = format!("{wrong:#}");
    assert!(
        wrong.contains("refused") && wrong.contains(user) && !wrong.contains("not-the-password"),
        "{wrong}"
    );
    eprintln!("a wrong password: {wrong}");

    let client = Arc::new(connect(Some(Credentials::new(user, password)))?);
    assert_eq!(client.push_layout(&layout, "klm", &tags)?, written.digest);
    let pulled = RegistryImage {
        registry: client,
        repository: "klm".into(),
        reference: "0.1.0".into(),
    };
    assert_eq!(pulled.index_digest()?, written.digest);
    assert_eq!(check(&pulled, &[Arch::S390x])?.len(), 1);
    server.check_alive()?;
    server.stop();
    Ok(())
}
