//! Checks an image index the way a user would meet it, from an OCI layout
//! ([`Layout`]) or a registry ([`crate::registry::Registry`]): every blob
//! matches its digest, the index lists the platforms asked for, and each
//! platform's image runs `klm` as its entrypoint as a numeric non-root user,
//! carries the OCI labels and a CA bundle, has no shell, and its klm and
//! helm are ELF binaries of that platform's machine and byte order.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

use crate::image::sha256_hex;
use crate::oci::{Arch, CA_PATH, HELM_PATH, INDEX_MEDIA_TYPE, KLM_PATH, MANIFEST_MEDIA_TYPE};

/// Where an index's manifests and blobs are read from.
pub trait BlobSource {
    /// The image index's digest (`sha256:<hex>`).
    fn index_digest(&self) -> Result<String>;
    /// The bytes of the manifest, index or blob with `digest`.
    fn fetch(&self, digest: &str, media_type: &str) -> Result<Vec<u8>>;
}

/// An OCI image layout on disk, as [`crate::oci::write_layout`] writes it.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The layout's directory.
    pub dir: PathBuf,
}

impl BlobSource for Layout {
    fn index_digest(&self) -> Result<String> {
        let path = self.dir.join("index.json");
        let top: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )?;
        let entries = top["manifests"]
            .as_array()
            .context("index.json lists no manifests")?;
        ensure!(
            entries.len() == 1,
            "index.json lists {} entries, not one image index",
            entries.len()
        );
        ensure!(
            entries[0]["mediaType"] == INDEX_MEDIA_TYPE,
            "index.json's entry is not an image index"
        );
        entries[0]["digest"]
            .as_str()
            .map(String::from)
            .context("index.json's entry has no digest")
    }

    fn fetch(&self, digest: &str, _media_type: &str) -> Result<Vec<u8>> {
        let path = crate::oci::blob_path(&self.dir.join("blobs/sha256"), digest);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    }
}

/// What was found for one platform.
#[derive(Debug, Clone)]
pub struct CheckedPlatform {
    /// The platform.
    pub arch: Arch,
    /// Its manifest's digest.
    pub digest: String,
    /// Its layer's size as pulled.
    pub compressed: u64,
    /// Its layer's size unpacked.
    pub uncompressed: u64,
}

/// Reads the index from `source`, checks it lists exactly `arches` and
/// checks every platform's image (see the module's doc).
pub fn check(source: &dyn BlobSource, arches: &[Arch]) -> Result<Vec<CheckedPlatform>> {
    let digest = source.index_digest()?;
    let index = json_blob(source, &digest, INDEX_MEDIA_TYPE)?;
    ensure!(
        index["mediaType"] == INDEX_MEDIA_TYPE,
        "{digest} is not an OCI image index"
    );
    let mut listed = BTreeMap::new();
    for entry in index["manifests"]
        .as_array()
        .context("the index lists no manifests")?
    {
        let arch = Arch::parse(
            entry["platform"]["architecture"]
                .as_str()
                .unwrap_or_default(),
        )?;
        ensure!(
            entry["platform"]["os"] == "linux",
            "{} is not linux",
            arch.name()
        );
        ensure!(
            entry["platform"]["variant"].as_str() == arch.variant(),
            "{}'s variant is {}",
            arch.name(),
            entry["platform"]["variant"]
        );
        let manifest = entry["digest"]
            .as_str()
            .context("a manifest without digest")?;
        ensure!(
            listed.insert(arch, manifest.to_string()).is_none(),
            "the index lists {} twice",
            arch.name()
        );
    }
    let mut wanted = arches.to_vec();
    wanted.sort();
    ensure!(
        listed.keys().copied().collect::<Vec<_>>() == wanted,
        "the index lists {:?}, not {:?}",
        listed.keys().map(|a| a.name()).collect::<Vec<_>>(),
        wanted.iter().map(|a| a.name()).collect::<Vec<_>>()
    );
    listed
        .into_iter()
        .map(|(arch, digest)| {
            check_platform(source, arch, &digest)
                .with_context(|| format!("linux/{} ({digest})", arch.name()))
        })
        .collect()
}

fn check_platform(source: &dyn BlobSource, arch: Arch, digest: &str) -> Result<CheckedPlatform> {
    let manifest = json_blob(source, digest, MANIFEST_MEDIA_TYPE)?;
    ensure!(
        manifest["mediaType"] == MANIFEST_MEDIA_TYPE,
        "not an OCI image manifest"
    );
    let config_digest = manifest["config"]["digest"].as_str().context("no config")?;
    let config = json_blob(source, config_digest, crate::oci::CONFIG_MEDIA_TYPE)?;
    ensure!(
        config["architecture"] == arch.name(),
        "config architecture {}",
        config["architecture"]
    );
    let user = config["config"]["User"].as_str().unwrap_or_default();
    let uid = user.split(':').next().unwrap_or_default();
    ensure!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "user {user:?} is not a numeric non-root user"
    );
    ensure!(
        config["config"]["Entrypoint"] == serde_json::json!([KLM_PATH]),
        "entrypoint {}",
        config["config"]["Entrypoint"]
    );
    for label in crate::oci::labels("", "").keys() {
        ensure!(
            config["config"]["Labels"][label]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "label {label} missing or empty"
        );
    }
    let layers = manifest["layers"].as_array().context("no layers")?;
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .context("no diff_ids")?;
    ensure!(
        layers.len() == diff_ids.len(),
        "{} layers, {} diff_ids",
        layers.len(),
        diff_ids.len()
    );
    let (mut compressed, mut uncompressed) = (0, 0);
    let mut files = BTreeMap::new();
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        ensure!(
            layer["mediaType"] == crate::oci::LAYER_MEDIA_TYPE,
            "layer type {}",
            layer["mediaType"]
        );
        let digest = layer["digest"].as_str().context("a layer without digest")?;
        let gz = blob(source, digest, crate::oci::LAYER_MEDIA_TYPE)?;
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut tar)?;
        ensure!(
            diff_id.as_str() == Some(&format!("sha256:{}", sha256_hex(&tar))),
            "layer {digest} does not unpack to its diff_id {diff_id}"
        );
        compressed += gz.len() as u64;
        uncompressed += tar.len() as u64;
        files.extend(layer_files(&tar)?);
    }
    for path in ["bin/sh", "usr/bin/sh", "bin/bash"] {
        ensure!(!files.contains_key(path), "/{path} is in the image");
    }
    ensure!(
        files
            .get(CA_PATH.trim_start_matches('/'))
            .is_some_and(|f| f.head.starts_with(b"-----BEGIN CERTIFICATE-----")),
        "no CA bundle at {CA_PATH}"
    );
    for path in [KLM_PATH, HELM_PATH] {
        let file = files
            .get(path.trim_start_matches('/'))
            .with_context(|| format!("no {path}"))?;
        ensure!(file.mode & 0o111 != 0, "{path} is not executable");
        check_elf(&file.head, arch).with_context(|| path.to_string())?;
    }
    Ok(CheckedPlatform {
        arch,
        digest: digest.to_string(),
        compressed,
        uncompressed,
    })
}

/// A regular file of a layer: its mode and first bytes.
struct LayerFile {
    mode: u32,
    head: Vec<u8>,
}

fn layer_files(tar: &[u8]) -> Result<BTreeMap<String, LayerFile>> {
    let mut files = BTreeMap::new();
    for entry in tar::Archive::new(tar).entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() == tar::EntryType::Directory {
            continue;
        }
        let path = entry.path()?.display().to_string();
        let mode = entry.header().mode()?;
        let mut head = Vec::new();
        entry.by_ref().take(64).read_to_end(&mut head)?;
        files.insert(path, LayerFile { mode, head });
    }
    Ok(files)
}

/// The ELF header names `arch`'s machine and byte order, 64-bit.
pub fn check_elf(head: &[u8], arch: Arch) -> Result<()> {
    ensure!(
        head.len() >= 20 && head.starts_with(b"\x7fELF"),
        "not an ELF file"
    );
    ensure!(head[4] == 2, "not a 64-bit ELF file (EI_CLASS {})", head[4]);
    let big = match head[5] {
        1 => false,
        2 => true,
        other => bail!("EI_DATA {other}"),
    };
    ensure!(
        big == arch.big_endian(),
        "byte order is {}",
        if big { "big" } else { "little" }
    );
    let bytes = [head[18], head[19]];
    let machine = if big {
        u16::from_be_bytes(bytes)
    } else {
        u16::from_le_bytes(bytes)
    };
    ensure!(
        machine == arch.elf_machine(),
        "e_machine {machine}, not {} ({})",
        arch.elf_machine(),
        arch.name()
    );
    Ok(())
}

fn blob(source: &dyn BlobSource, digest: &str, media_type: &str) -> Result<Vec<u8>> {
    let bytes = source.fetch(digest, media_type)?;
    ensure!(
        digest == format!("sha256:{}", sha256_hex(&bytes)),
        "the content of {digest} does not match its digest"
    );
    Ok(bytes)
}

fn json_blob(source: &dyn BlobSource, digest: &str, media_type: &str) -> Result<serde_json::Value> {
    serde_json::from_slice(&blob(source, digest, media_type)?)
        .with_context(|| format!("{digest} is not JSON"))
}

/// A minimal ELF header (64-bit, `arch`'s byte order and machine) followed
/// by `tail`: the stand-in binaries of the tests.
pub fn fake_elf(arch: Arch, tail: &[u8]) -> Vec<u8> {
    let mut head = vec![0u8; 64];
    head[..4].copy_from_slice(b"\x7fELF");
    head[4] = 2;
    head[5] = if arch.big_endian() { 2 } else { 1 };
    head[6] = 1;
    let machine = if arch.big_endian() {
        arch.elf_machine().to_be_bytes()
    } else {
        arch.elf_machine().to_le_bytes()
    };
    head[18..20].copy_from_slice(&machine);
    head.extend_from_slice(tail);
    head
}

/// Writes the stand-in klm, helm and a CA bundle for each of `arches`
/// under `dir` and returns the platforms of a release image of them.
pub fn fake_platforms(dir: &Path, arches: &[Arch]) -> Result<Vec<crate::oci::PlatformFiles>> {
    let ca = dir.join("ca.crt");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n",
    )?;
    arches
        .iter()
        .map(|&arch| {
            let klm = dir.join(format!("klm-{}", arch.name()));
            let helm = dir.join(format!("helm-{}", arch.name()));
            std::fs::write(&klm, fake_elf(arch, b"klm"))?;
            std::fs::write(&helm, fake_elf(arch, b"helm"))?;
            Ok(crate::oci::PlatformFiles::release(arch, &klm, &helm, &ca))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{IndexSpec, PlatformFiles, write_layout};

    fn spec(platforms: Vec<PlatformFiles>) -> IndexSpec {
        IndexSpec {
            version: "0.1.0".into(),
            revision: "0123456789abcdef".into(),
            platforms,
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_index_digest_with_four_checked_platforms() {
        let dir = tempfile::tempdir().unwrap();
        let platforms = fake_platforms(dir.path(), &Arch::ALL).unwrap();
        let first = write_layout(&spec(platforms.clone()), &dir.path().join("a")).unwrap();
        let mut reversed = platforms.clone();
        reversed.reverse();
        let second = write_layout(&spec(reversed), &dir.path().join("b")).unwrap();
        assert_eq!(first, second);
        let checked = check(
            &Layout {
                dir: dir.path().join("a"),
            },
            &Arch::ALL,
        )
        .unwrap();
        assert_eq!(
            checked.iter().map(|c| c.arch).collect::<Vec<_>>(),
            Arch::ALL.to_vec()
        );
        for (c, w) in checked.iter().zip(&first.manifests) {
            assert_eq!(
                (&c.digest, c.compressed, c.uncompressed),
                (&w.digest, w.compressed, w.uncompressed)
            );
        }
        let other = write_layout(
            &IndexSpec {
                revision: "fedcba".into(),
                ..spec(platforms)
            },
            &dir.path().join("c"),
        )
        .unwrap();
        assert_ne!(
            first.digest, other.digest,
            "the revision label is part of the digest"
        );
    }

    #[test]
    fn a_binary_of_another_architecture_or_a_missing_platform_fails_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let mut platforms = fake_platforms(dir.path(), &Arch::ALL).unwrap();
        // s390x's slot gets the ppc64le helm: same width, other machine and byte order.
        platforms[3].files[1].source = dir.path().join("helm-ppc64le");
        write_layout(&spec(platforms.clone()), &dir.path().join("bad")).unwrap();
        let error = check(
            &Layout {
                dir: dir.path().join("bad"),
            },
            &Arch::ALL,
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("s390x"), "{error:#}");
        assert!(format!("{error:#}").contains(HELM_PATH), "{error:#}");

        write_layout(&spec(platforms[..2].to_vec()), &dir.path().join("two")).unwrap();
        let error = check(
            &Layout {
                dir: dir.path().join("two"),
            },
            &Arch::ALL,
        )
        .unwrap_err();
        assert!(
            format!("{error:#}").contains("lists [\"amd64\", \"arm64\"]"),
            "{error:#}"
        );
    }

    #[test]
    fn a_layout_blob_that_does_not_match_its_digest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let platforms = fake_platforms(dir.path(), &[Arch::Amd64]).unwrap();
        let written = write_layout(&spec(platforms), &dir.path().join("l")).unwrap();
        let manifest = crate::oci::blob_path(
            &dir.path().join("l/blobs/sha256"),
            &written.manifests[0].digest,
        );
        std::fs::write(&manifest, b"{}").unwrap();
        let error = check(
            &Layout {
                dir: dir.path().join("l"),
            },
            &[Arch::Amd64],
        )
        .unwrap_err();
        assert!(
            format!("{error:#}").contains("does not match its digest"),
            "{error:#}"
        );
    }

    #[test]
    fn elf_headers_are_read_in_their_byte_order() {
        for arch in Arch::ALL {
            check_elf(&fake_elf(arch, b""), arch).unwrap();
        }
        assert!(check_elf(&fake_elf(Arch::Ppc64le, b""), Arch::S390x).is_err());
        assert!(check_elf(b"#!/bin/sh\n", Arch::Amd64).is_err());
    }
}
