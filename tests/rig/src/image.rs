//! Container images without a registry: one-layer docker-archive tarballs
//! (what `docker save` writes) made from host files, for
//! `ctr -n k8s.io images import`. The layer always holds `/tmp` (1777),
//! `/etc/passwd` and `/etc/group` with the `nonroot` user 65532 (the user of
//! the images the project ships), plus the given files; every entry has
//! mtime 0 and owner root, so the same inputs give the same image.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::json;

/// The user every rig image runs as (distroless `nonroot`).
pub const NONROOT: u32 = 65532;

const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnonroot:x:65532:\n";
pub(crate) const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One file of an image: a host file copied to `path` inside the image.
#[derive(Debug, Clone)]
pub struct ImageFile {
    /// The absolute path inside the image.
    pub path: String,
    /// The host file.
    pub source: PathBuf,
    /// The mode inside the image.
    pub mode: u32,
}

impl ImageFile {
    /// An executable (0755) at `path`.
    pub fn executable(path: &str, source: impl Into<PathBuf>) -> ImageFile {
        ImageFile {
            path: path.into(),
            source: source.into(),
            mode: 0o755,
        }
    }

    /// A read-only data file (0644) at `path`.
    pub fn data(path: &str, source: impl Into<PathBuf>) -> ImageFile {
        ImageFile {
            path: path.into(),
            source: source.into(),
            mode: 0o644,
        }
    }
}

/// What an image is made of.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The reference it is tagged with (`localhost/rig/pause:1`).
    pub tag: String,
    /// The entrypoint (`["/pause"]`).
    pub entrypoint: Vec<String>,
    /// Environment variables besides PATH (`HOME=/tmp`).
    pub env: Vec<String>,
    /// The files besides `/tmp`, `/etc/passwd` and `/etc/group`.
    pub files: Vec<ImageFile>,
}

/// This machine's architecture as images name it (`amd64`, `arm64`).
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes `spec` as a docker-archive tarball to `out` (through a temporary
/// file renamed into place, so a reader never sees half an image).
pub fn write_docker_archive(spec: &ImageSpec, out: &Path) -> Result<()> {
    let layer = layer_tar(&spec.files)?;
    let layer_digest = sha256_hex(&layer);
    let arch = oci_arch();
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "User": format!("{NONROOT}:{NONROOT}"),
            "Env": std::iter::once(PATH.to_string()).chain(spec.env.iter().cloned()).collect::<Vec<_>>(),
            "Entrypoint": spec.entrypoint,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "klm-rig image"}],
    }))?;
    let config_name = format!("{}.json", sha256_hex(&config));
    let layer_name = format!("{layer_digest}/layer.tar");
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": [spec.tag],
        "Layers": [layer_name],
    }]))?;

    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let partial = out.with_extension("partial");
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut archive = tar::Builder::new(std::io::BufWriter::new(file));
    append_bytes(&mut archive, &format!("{layer_digest}/"), &[], 0o755, true)?;
    append_bytes(&mut archive, &layer_name, &layer, 0o644, false)?;
    append_bytes(&mut archive, &config_name, &config, 0o644, false)?;
    append_bytes(&mut archive, "manifest.json", &manifest, 0o644, false)?;
    archive.into_inner()?.flush()?;
    std::fs::rename(&partial, out)?;
    Ok(())
}

/// The image's only layer (an uncompressed tar): directories,
/// passwd/group, the files, in the order given.
pub(crate) fn layer_tar(files: &[ImageFile]) -> Result<Vec<u8>> {
    let mut dirs: BTreeSet<String> = ["etc", "tmp", "var", "var/run", "home", "home/nonroot"]
        .into_iter()
        .map(String::from)
        .collect();
    for file in files {
        let Some(relative) = file.path.strip_prefix('/') else {
            bail!("image path {} is not absolute", file.path);
        };
        let mut parent = Path::new(relative).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.display().to_string());
            parent = dir.parent();
        }
    }
    let mut layer = tar::Builder::new(Vec::new());
    for dir in &dirs {
        let mode = if dir == "tmp" { 0o1777 } else { 0o755 };
        let mut header = header(0, mode, tar::EntryType::Directory);
        if dir == "home/nonroot" {
            header.set_uid(NONROOT.into());
            header.set_gid(NONROOT.into());
        }
        header.set_cksum();
        layer.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
    }
    append_bytes(&mut layer, "etc/passwd", PASSWD.as_bytes(), 0o644, false)?;
    append_bytes(&mut layer, "etc/group", GROUP.as_bytes(), 0o644, false)?;
    for file in files {
        let bytes = std::fs::read(&file.source)
            .with_context(|| format!("reading {} for the image", file.source.display()))?;
        append_bytes(
            &mut layer,
            file.path.trim_start_matches('/'),
            &bytes,
            file.mode,
            false,
        )?;
    }
    Ok(layer.into_inner()?)
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn append_bytes<W: Write>(
    archive: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
    mode: u32,
    dir: bool,
) -> Result<()> {
    let kind = if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    };
    let mut header = header(bytes.len() as u64, mode, kind);
    header.set_cksum();
    archive.append_data(&mut header, path, bytes)?;
    Ok(())
}

/// The lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn docker_archive_has_manifest_config_and_layer_with_nonroot_user() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("tool");
        std::fs::write(&tool, b"#!tool").unwrap();
        let spec = ImageSpec {
            tag: "localhost/rig/test:1".into(),
            entrypoint: vec!["/usr/local/bin/tool".into()],
            env: vec!["HOME=/tmp".into()],
            files: vec![ImageFile::executable("/usr/local/bin/tool", &tool)],
        };
        let out = dir.path().join("test.tar");
        write_docker_archive(&spec, &out).unwrap();
        let mut outer = tar::Archive::new(std::fs::File::open(&out).unwrap());
        let mut entries = std::collections::BTreeMap::new();
        for entry in outer.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            entries.insert(path, bytes);
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&entries["manifest.json"]).unwrap();
        assert_eq!(manifest[0]["RepoTags"][0], "localhost/rig/test:1");
        let config_name = manifest[0]["Config"].as_str().unwrap();
        let config: serde_json::Value = serde_json::from_slice(&entries[config_name]).unwrap();
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/tool");
        let layer_name = manifest[0]["Layers"][0].as_str().unwrap();
        let layer = &entries[layer_name];
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", sha256_hex(layer))
        );
        let mut inner = tar::Archive::new(&layer[..]);
        let mut seen = std::collections::BTreeMap::new();
        for entry in inner.entries().unwrap() {
            let entry = entry.unwrap();
            let mode = entry.header().mode().unwrap();
            seen.insert(entry.path().unwrap().display().to_string(), mode);
        }
        assert_eq!(seen["tmp/"], 0o1777);
        assert_eq!(seen["usr/local/bin/tool"], 0o755);
        assert!(seen.contains_key("etc/passwd") && seen.contains_key("etc/group"));
        assert!(!seen.keys().any(|p| p.starts_with("bin/sh")));
    }
}
