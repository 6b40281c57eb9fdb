//! The klm image as an OCI image index, built here from host files without
//! pulling any base: one manifest per platform, each with one gzip layer
//! (the layer of [`crate::image`]: `/tmp` 1777, `/etc/passwd` and
//! `/etc/group` with the `nonroot` user 65532, then the files sorted by
//! path; mtime 0, owner root) and a config with the OCI labels, user
//! `65532:65532` and the entrypoint. Written as an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/`), whose `index.json`
//! points at the image index blob: the index digest is that blob's digest.
//!
//! Everything written is a function of the inputs (fixed timestamps, sorted
//! entries and JSON keys, gzip with a fixed level, no file name and mtime
//! 0), so the same inputs give the same digests.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::image::{ImageFile, NONROOT, PATH, layer_tar, sha256_hex};

/// Media type of an OCI image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a gzip-compressed tar layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The gzip level of every layer (flate2's default, written down so that
/// a change of default cannot change a digest).
const GZIP_LEVEL: u32 = 6;

/// The labels every platform's config carries besides version and
/// revision (the same as `image/Containerfile`'s `LABEL`).
pub const FIXED_LABELS: &[(&str, &str)] = &[
    ("org.opencontainers.image.title", "kata-lifecycle-manager"),
    (
        "org.opencontainers.image.description",
        "klm and helm: the steps of verified, node-by-node Kata Containers upgrades",
    ),
    (
        "org.opencontainers.image.source",
        "https://github.com/kata-containers/kata-lifecycle-manager",
    ),
    ("org.opencontainers.image.licenses", "Apache-2.0"),
];

/// The environment besides PATH (helm's directories under the emptyDir the
/// chart mounts at /tmp: the root filesystem is read-only).
pub const ENV: &[&str] = &[
    "HOME=/tmp",
    "HELM_CACHE_HOME=/tmp/helm/cache",
    "HELM_CONFIG_HOME=/tmp/helm/config",
    "HELM_DATA_HOME=/tmp/helm/data",
];

/// Where klm and helm are in the image.
pub const KLM_PATH: &str = "/usr/local/bin/klm";
/// Where helm is in the image.
pub const HELM_PATH: &str = "/usr/local/bin/helm";
/// Where the CA bundle is in the image (the path Go and rustls' native
/// roots read on Debian).
pub const CA_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A platform the image is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Arch {
    /// linux/amd64
    Amd64,
    /// linux/arm64/v8
    Arm64,
    /// linux/ppc64le
    Ppc64le,
    /// linux/s390x
    S390x,
}

impl Arch {
    /// The four, in the order the index lists them.
    pub const ALL: [Arch; 4] = [Arch::Amd64, Arch::Arm64, Arch::Ppc64le, Arch::S390x];

    /// The OCI/Go name (`amd64`, `arm64`, `ppc64le`, `s390x`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Ppc64le => "ppc64le",
            Arch::S390x => "s390x",
        }
    }

    /// The OCI platform variant (`v8` for arm64).
    pub fn variant(self) -> Option<&'static str> {
        (self == Arch::Arm64).then_some("v8")
    }

    /// The ELF `e_machine` of its binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::Amd64 => 62,   // EM_X86_64
            Arch::Arm64 => 183,  // EM_AARCH64
            Arch::Ppc64le => 21, // EM_PPC64
            Arch::S390x => 22,   // EM_S390
        }
    }

    /// Whether its binaries are big-endian (ELF `EI_DATA` 2).
    pub fn big_endian(self) -> bool {
        self == Arch::S390x
    }

    /// The arch of an OCI/Go name.
    pub fn parse(name: &str) -> Result<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .with_context(|| {
                format!("unknown architecture {name:?} (amd64, arm64, ppc64le, s390x)")
            })
    }

    /// This machine's.
    pub fn host() -> Result<Arch> {
        Arch::parse(crate::image::oci_arch())
    }
}

/// What one platform's image holds besides passwd, group and `/tmp`.
#[derive(Debug, Clone)]
pub struct PlatformFiles {
    /// The platform.
    pub arch: Arch,
    /// klm, helm, the CA bundle (and, for the rig, the fixture charts).
    pub files: Vec<ImageFile>,
}

impl PlatformFiles {
    /// The shipped image's files: klm, helm and the CA bundle.
    pub fn release(arch: Arch, klm: &Path, helm: &Path, ca: &Path) -> PlatformFiles {
        PlatformFiles {
            arch,
            files: vec![
                ImageFile::executable(KLM_PATH, klm),
                ImageFile::executable(HELM_PATH, helm),
                ImageFile::data(CA_PATH, ca),
            ],
        }
    }
}

/// What the index is made of.
#[derive(Debug, Clone)]
pub struct IndexSpec {
    /// `org.opencontainers.image.version` (and the layout's ref name).
    pub version: String,
    /// `org.opencontainers.image.revision` (the commit).
    pub revision: String,
    /// One entry per platform.
    pub platforms: Vec<PlatformFiles>,
}

/// One platform's manifest as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenManifest {
    /// The platform.
    pub arch: Arch,
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    /// The layer's size as pulled (gzip).
    pub compressed: u64,
    /// The layer's size unpacked (the tar).
    pub uncompressed: u64,
}

/// The index as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenIndex {
    /// `sha256:<hex>` of the image index.
    pub digest: String,
    /// Its manifests, in the index's order.
    pub manifests: Vec<WrittenManifest>,
}

/// A blob: its media type, digest and bytes.
struct Blob {
    media_type: &'static str,
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type,
            digest: format!("sha256:{}", sha256_hex(&bytes)),
            bytes,
        }
    }

    fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

/// Writes `spec` as an OCI image layout in `out` (emptied first) and says
/// what it wrote.
pub fn write_layout(spec: &IndexSpec, out: &Path) -> Result<WrittenIndex> {
    if spec.platforms.is_empty() {
        bail!("an image index needs at least one platform");
    }
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("emptying {}", out.display()))?;
    }
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let mut platforms = spec.platforms.clone();
    platforms.sort_by_key(|p| p.arch);
    let mut descriptors = Vec::new();
    let mut manifests = Vec::new();
    for platform in &platforms {
        let (manifest, written) = write_platform(spec, platform, &blobs)
            .with_context(|| format!("building the linux/{} image", platform.arch.name()))?;
        let mut descriptor = manifest.descriptor();
        descriptor["platform"] = platform_json(platform.arch);
        descriptors.push(descriptor);
        manifests.push(written);
    }
    let index = Blob::new(
        INDEX_MEDIA_TYPE,
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": descriptors,
        }))?,
    );
    write_blob(&blobs, &index)?;
    let mut top = index.descriptor();
    top["annotations"] = json!({"org.opencontainers.image.ref.name": spec.version});
    std::fs::write(
        out.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [top],
        }))?,
    )?;
    std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(WrittenIndex {
        digest: index.digest,
        manifests,
    })
}

/// `{"architecture": ..., "os": "linux"[, "variant": ...]}`.
pub fn platform_json(arch: Arch) -> serde_json::Value {
    let mut platform = json!({"architecture": arch.name(), "os": "linux"});
    if let Some(variant) = arch.variant() {
        platform["variant"] = json!(variant);
    }
    platform
}

/// The labels of every platform's config.
pub fn labels(version: &str, revision: &str) -> BTreeMap<String, String> {
    FIXED_LABELS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([
            ("org.opencontainers.image.version".into(), version.into()),
            ("org.opencontainers.image.revision".into(), revision.into()),
        ])
        .collect()
}

/// One platform: layer, config, manifest (all written to `blobs`).
fn write_platform(
    spec: &IndexSpec,
    platform: &PlatformFiles,
    blobs: &Path,
) -> Result<(Blob, WrittenManifest)> {
    let mut files = platform.files.clone();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let tar = layer_tar(&files)?;
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    let mut gzip = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
    gzip.write_all(&tar)?;
    let layer = Blob::new(LAYER_MEDIA_TYPE, gzip.finish()?);
    let mut config = json!({
        "architecture": platform.arch.name(),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "User": format!("{NONROOT}:{NONROOT}"),
            "Env": std::iter::once(PATH).chain(ENV.iter().copied()).collect::<Vec<_>>(),
            "Entrypoint": [KLM_PATH],
            "WorkingDir": "/",
            "Labels": labels(&spec.version, &spec.revision),
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "klm-rig image build"}],
    });
    if let Some(variant) = platform.arch.variant() {
        config["variant"] = json!(variant);
    }
    let config = Blob::new(CONFIG_MEDIA_TYPE, serde_json::to_vec(&config)?);
    let manifest = Blob::new(
        MANIFEST_MEDIA_TYPE,
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
        }))?,
    );
    for blob in [&layer, &config, &manifest] {
        write_blob(blobs, blob)?;
    }
    let written = WrittenManifest {
        arch: platform.arch,
        digest: manifest.digest.clone(),
        compressed: layer.bytes.len() as u64,
        uncompressed: tar.len() as u64,
    };
    Ok((manifest, written))
}

fn write_blob(blobs: &Path, blob: &Blob) -> Result<()> {
    let path = blob_path(blobs, &blob.digest);
    std::fs::write(&path, &blob.bytes).with_context(|| format!("writing {}", path.display()))
}

/// `blobs/sha256/<hex>` for `sha256:<hex>`.
pub fn blob_path(blobs: &Path, digest: &str) -> PathBuf {
    blobs.join(digest.trim_start_matches("sha256:"))
}
