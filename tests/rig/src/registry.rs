//! A container registry on loopback: Debian's `docker-registry` (the CNCF
//! distribution registry 2.8, `tests/argo/host-packages.sh` installs it),
//! plain HTTP on 127.0.0.1, no auth, storage in a directory of the rig.
//! The image index is pushed to it through the distribution API
//! ([`push_layout`]: blob upload POST + PUT, manifest PUT with its media
//! type), the chart with `helm push`, and the real node's containerd pulls
//! from it by digest (a `hosts.toml` for the plain-HTTP host,
//! [`write_containerd_hosts`]).
//!
//! The HTTP client is a few lines of HTTP/1.0 over a `TcpStream`: loopback
//! only, one request per connection, bodies read to the end.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::image::sha256_hex;
use crate::oci::{INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, blob_path};
use crate::oci_check::BlobSource;

/// Where Debian installs the registry.
pub const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

/// The registry's configuration: `127.0.0.1:port`, storage under `dir`,
/// deletes off, no auth, no debug server.
pub fn config_yaml(dir: &Path, port: u16) -> String {
    format!(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.join("data").display()
    )
}

/// Writes the config under `dir` and returns the registry's command line
/// (`docker-registry serve <config>`).
pub fn prepare(dir: &Path, port: u16) -> Result<(PathBuf, Vec<String>)> {
    std::fs::create_dir_all(dir.join("data"))?;
    let config = dir.join("config.yml");
    std::fs::write(&config, config_yaml(dir, port))?;
    Ok((
        PathBuf::from(REGISTRY_BINARY),
        vec!["serve".into(), config.display().to_string()],
    ))
}

/// Waits until `host` (`127.0.0.1:port`) answers `GET /v2/` with 200.
pub fn wait_ready(host: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match request(host, "GET", "/v2/", &[], None) {
            Ok(response) if response.status == 200 => return Ok(()),
            result if Instant::now() > deadline => {
                bail!("the registry on {host} is not ready after {timeout:?}: {result:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// containerd's `hosts.toml` for a plain-HTTP registry at `host`, in
/// `<certs_d>/<host>/hosts.toml` (containerd's `config_path`).
pub fn write_containerd_hosts(certs_d: &Path, host: &str) -> Result<()> {
    let dir = certs_d.join(host);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )?;
    Ok(())
}

/// An HTTP response: status, headers (names lowercase), body.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.0 request to `host` (loopback only).
pub fn request(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response> {
    ensure!(
        host.starts_with("127.0.0.1:"),
        "the rig talks to loopback registries only, not {host}"
    );
    let mut stream = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if let Some(body) = body {
        stream.write_all(body)?;
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers in the response")?;
    let text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// Pushes the OCI layout in `layout` (as [`crate::oci::write_layout`]
/// writes it) to `host` as `repository:tag`: every blob the index needs,
/// each platform's manifest by digest, then the index by tag. Returns the
/// index digest.
pub fn push_layout(host: &str, layout: &Path, repository: &str, tag: &str) -> Result<String> {
    let source = crate::oci_check::Layout {
        dir: layout.to_path_buf(),
    };
    let digest = source.index_digest()?;
    let blobs = layout.join("blobs/sha256");
    let index = std::fs::read(blob_path(&blobs, &digest))?;
    let parsed: serde_json::Value = serde_json::from_slice(&index)?;
    for entry in parsed["manifests"].as_array().context("no manifests")? {
        let manifest_digest = entry["digest"].as_str().context("no digest")?;
        let manifest = std::fs::read(blob_path(&blobs, manifest_digest))?;
        let parsed: serde_json::Value = serde_json::from_slice(&manifest)?;
        let layers = parsed["layers"].as_array().context("no layers")?;
        for descriptor in layers.iter().chain([&parsed["config"]]) {
            let blob = descriptor["digest"].as_str().context("no digest")?;
            push_blob(host, repository, blob, &blobs)?;
        }
        put_manifest(
            host,
            repository,
            manifest_digest,
            MANIFEST_MEDIA_TYPE,
            &manifest,
        )?;
    }
    put_manifest(host, repository, tag, INDEX_MEDIA_TYPE, &index)?;
    Ok(digest)
}

fn push_blob(host: &str, repository: &str, digest: &str, blobs: &Path) -> Result<()> {
    let path = format!("/v2/{repository}/blobs/{digest}");
    if request(host, "HEAD", &path, &[], None)?.status == 200 {
        return Ok(());
    }
    let started = request(
        host,
        "POST",
        &format!("/v2/{repository}/blobs/uploads/"),
        &[],
        Some(&[]),
    )?;
    ensure!(
        started.status == 202,
        "starting an upload of {digest}: HTTP {}: {}",
        started.status,
        String::from_utf8_lossy(&started.body)
    );
    let location = started.header("location").context("no upload location")?;
    let location = location
        .strip_prefix(&format!("http://{host}"))
        .unwrap_or(location);
    let separator = if location.contains('?') { '&' } else { '?' };
    let bytes = std::fs::read(blob_path(blobs, digest))?;
    let done = request(
        host,
        "PUT",
        &format!("{location}{separator}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        Some(&bytes),
    )?;
    ensure!(
        done.status == 201,
        "uploading {digest}: HTTP {}: {}",
        done.status,
        String::from_utf8_lossy(&done.body)
    );
    Ok(())
}

fn put_manifest(
    host: &str,
    repository: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> Result<()> {
    let response = request(
        host,
        "PUT",
        &format!("/v2/{repository}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        Some(bytes),
    )?;
    ensure!(
        response.status == 201,
        "putting manifest {reference}: HTTP {}: {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    let digest = format!("sha256:{}", sha256_hex(bytes));
    ensure!(
        response.header("docker-content-digest") == Some(digest.as_str()),
        "the registry stored {reference} as {:?}, not {digest}",
        response.header("docker-content-digest")
    );
    Ok(())
}

/// An image index in a registry, read the way a client pulls it.
#[derive(Debug, Clone)]
pub struct RegistryImage {
    /// `127.0.0.1:port`.
    pub host: String,
    /// The repository (`kata-lifecycle-manager`).
    pub repository: String,
    /// The tag or digest the index is read by.
    pub reference: String,
}

impl BlobSource for RegistryImage {
    fn index_digest(&self) -> Result<String> {
        let index = self.fetch(&self.reference, INDEX_MEDIA_TYPE)?;
        Ok(format!("sha256:{}", sha256_hex(&index)))
    }

    fn fetch(&self, digest: &str, media_type: &str) -> Result<Vec<u8>> {
        let kind = if media_type == INDEX_MEDIA_TYPE || media_type == MANIFEST_MEDIA_TYPE {
            "manifests"
        } else {
            "blobs"
        };
        let response = request(
            &self.host,
            "GET",
            &format!("/v2/{}/{kind}/{digest}", self.repository),
            &[("Accept", media_type)],
            None,
        )?;
        ensure!(
            response.status == 200,
            "GET {kind}/{digest}: HTTP {}",
            response.status
        );
        if kind == "manifests" {
            ensure!(
                response.header("content-type") == Some(media_type),
                "{digest} served as {:?}, not {media_type}",
                response.header("content-type")
            );
        }
        Ok(response.body)
    }
}
