//! The image (`image/Containerfile`): pinned bases, a shell-free non-root
//! final stage with the OCI labels, and helm at the tests' version with a
//! checksum per platform. The build itself runs on GitHub (image.yaml).

use crate::containerfile::{Containerfile, Stage};
use crate::support::{is_sha256, read, shell_assignment};

/// The platforms the image is built for, as Docker's TARGETARCH names them.
pub const ARCHITECTURES: [&str; 4] = ["amd64", "arm64", "s390x", "ppc64le"];

fn containerfile() -> Containerfile {
    Containerfile::parse(&read("image/Containerfile"))
}

/// `name:tag@sha256:<64 hex>`: the digest pins, the tag tells a reader what it is.
fn pinned_by_digest(reference: &str) -> bool {
    let Some((name_and_tag, digest)) = reference.rsplit_once("@sha256:") else {
        return false;
    };
    let tagged = name_and_tag
        .rsplit_once(':')
        .is_some_and(|(name, tag)| !tag.is_empty() && !tag.contains('/') && !name.is_empty());
    tagged && is_sha256(digest)
}

#[test]
fn every_base_is_pinned_by_digest_or_is_an_earlier_stage() {
    let file = containerfile();
    assert!(file.stages.len() >= 2, "a multi-stage build");
    let mut earlier: Vec<&str> = Vec::new();
    for stage in &file.stages {
        let resolved = file.resolve(&stage.base);
        assert!(
            earlier.contains(&stage.base.as_str()) || pinned_by_digest(&resolved),
            "FROM {} ({resolved}): pin it as name:tag@sha256:<digest>, or build on an earlier stage",
            stage.base
        );
        if let Some(name) = &stage.name {
            earlier.push(name);
        }
    }
}

#[test]
fn no_unpinned_frontend_image_is_pulled() {
    // A `# syntax=` directive makes BuildKit pull and run that frontend image.
    for file in [
        "image/Containerfile",
        "tests/fixtures/e2e/kata-deploy.Containerfile",
        "tests/fixtures/e2e/klm-with-charts.Containerfile",
    ] {
        for line in read(file)
            .lines()
            .filter(|l| l.trim_start().starts_with('#'))
        {
            let directive = line.trim_start_matches('#').trim();
            if let Some(frontend) = directive.strip_prefix("syntax=") {
                assert!(
                    frontend.contains("@sha256:"),
                    "{file}: pin the frontend by digest or use the builder's own: {line}"
                );
            }
        }
    }
}

#[test]
fn builders_run_on_the_build_platform_and_the_final_stage_runs_nothing() {
    let file = containerfile();
    let (builders, [runtime]) = file.stages.split_at(file.stages.len() - 1) else {
        unreachable!("split_at leaves one stage")
    };
    for stage in builders {
        assert!(
            stage.flags.iter().any(|f| f == "--platform=$BUILDPLATFORM"),
            "stage {:?} must run on $BUILDPLATFORM (cross-compile; no emulation)",
            stage.name
        );
    }
    // Nothing executes in the per-platform stage: no emulation, no shell needed.
    for keyword in ["RUN", "SHELL", "ONBUILD", "HEALTHCHECK"] {
        assert_eq!(
            runtime.all(keyword).count(),
            0,
            "the final stage has no {keyword} (its base has no shell)"
        );
    }
}

#[test]
fn the_final_stage_is_a_shell_free_non_root_klm() {
    let file = containerfile();
    let runtime = file.final_stage();
    let base = file.resolve(&runtime.base);
    assert!(
        base == "scratch" || (base.starts_with("gcr.io/distroless/") && !base.contains(":debug")),
        "the final base must have no shell or package manager (distroless, not :debug, or scratch): {base}"
    );
    let user = runtime
        .all("USER")
        .last()
        .expect("the final stage sets USER");
    let ids: Vec<&str> = user.split(':').collect();
    assert!(
        ids.iter()
            .all(|id| id.parse::<u32>().is_ok_and(|n| n >= 1000)),
        "USER must be a numeric non-root uid:gid (Kubernetes' runAsNonRoot checks numbers): {user}"
    );
    assert_eq!(
        runtime.all("ENTRYPOINT").last(),
        Some(r#"["/usr/local/bin/klm"]"#),
        "exec-form ENTRYPOINT (no shell)"
    );
    for (binary, stage) in [
        ("/usr/local/bin/klm", "klm"),
        ("/usr/local/bin/helm", "helm"),
    ] {
        let copied = runtime
            .all("COPY")
            .any(|c| c.starts_with(&format!("--from={stage} ")) && c.ends_with(binary));
        assert!(copied, "the image holds {binary}, from stage {stage}");
        assert!(file.stage(stage).is_some(), "stage {stage} exists");
    }
}

#[test]
fn the_image_carries_the_oci_labels() {
    let file = containerfile();
    let labels: String = file
        .final_stage()
        .all("LABEL")
        .collect::<Vec<_>>()
        .join(" ");
    for key in ["source", "version", "revision", "licenses", "title"] {
        assert!(
            labels.contains(&format!("org.opencontainers.image.{key}=")),
            "OCI label org.opencontainers.image.{key} in: {labels}"
        );
    }
    assert!(labels.contains(r#"org.opencontainers.image.licenses="Apache-2.0""#));
    assert!(labels.contains(r#"org.opencontainers.image.version="${VERSION}""#));
    assert!(labels.contains(r#"org.opencontainers.image.revision="${REVISION}""#));
    let cargo = read("Cargo.toml");
    let repository = cargo
        .lines()
        .find_map(|l| l.strip_prefix("repository = "))
        .expect("Cargo.toml names the repository")
        .trim_matches('"');
    assert!(
        labels.contains(&format!(
            r#"org.opencontainers.image.source="{repository}""#
        )),
        "the source label is Cargo.toml's repository ({repository})"
    );
}

/// The klm stage knows every platform's Rust target and cross-compiler.
#[test]
fn klm_is_cross_compiled_for_every_platform() {
    let file = containerfile();
    let klm: &Stage = file.stage("klm").expect("a klm stage");
    let script: String = klm.all("RUN").collect::<Vec<_>>().join("\n");
    for arch in ARCHITECTURES {
        assert!(
            script.contains(&format!("{arch})")),
            "the klm stage handles TARGETARCH={arch}"
        );
    }
    assert!(script.contains("cargo build --frozen --release --bin klm --target"));
}

#[test]
fn helm_is_the_tests_version_with_a_checksum_per_platform() {
    let file = containerfile();
    let version = file.arg("HELM_VERSION").expect("ARG HELM_VERSION");
    let rig = shell_assignment(&read("tests/rig/build.sh"), "helm_version");
    assert_eq!(
        version, rig,
        "the image's helm is the one the tests run (tests/rig/build.sh): change both, and image/helm.sha256"
    );
    let sums = read("image/helm.sha256");
    let lines: Vec<&str> = sums
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    for arch in ARCHITECTURES {
        let archive = format!("helm-{version}-linux-{arch}.tar.gz");
        let matching: Vec<&&str> = lines
            .iter()
            .filter(|l| l.ends_with(&format!("  {archive}")))
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "image/helm.sha256 has one line for {archive}"
        );
        let sum = matching[0].split_whitespace().next().unwrap();
        assert!(is_sha256(sum), "{archive}: {sum} is not a sha256");
    }
    assert_eq!(
        lines.len(),
        ARCHITECTURES.len(),
        "one checksum per platform"
    );
    let helm = file.stage("helm").expect("a helm stage");
    assert!(
        helm.all("RUN")
            .any(|r| r.contains("sha256sum --check --strict")),
        "the helm stage checks the archive before unpacking it"
    );
}

#[test]
fn the_pinning_check_rejects_what_it_should() {
    let digest = "a".repeat(64);
    assert!(pinned_by_digest(&format!("rust:1.95.0@sha256:{digest}")));
    assert!(pinned_by_digest(&format!(
        "gcr.io/distroless/cc-debian12:nonroot@sha256:{digest}"
    )));
    assert!(!pinned_by_digest("rust:1.95.0"));
    assert!(!pinned_by_digest(&format!("rust@sha256:{digest}")));
    assert!(!pinned_by_digest("rust:1.95.0@sha256:abc"));
    assert!(!pinned_by_digest(&format!(
        "localhost:5000/rust@sha256:{digest}"
    )));
}

/// The image built here (`klm-rig image build`, tests/rig/src/oci.rs: the
/// rig's, `make demo`'s and `make release-check`'s) and the Containerfile
/// (for people with buildx) make the same image: labels, user, entrypoint,
/// environment, the files' paths, the platforms.
#[test]
fn the_containerfile_and_the_image_built_here_agree() {
    use klm_rig::oci;
    let file = containerfile();
    let runtime = file.final_stage();
    let labels: String = runtime.all("LABEL").collect::<Vec<_>>().join(" ");
    for (key, value) in oci::FIXED_LABELS {
        assert!(
            labels.contains(&format!("{key}=\"{value}\"")),
            "the Containerfile's {key} is {value:?}, as tests/rig/src/oci.rs says"
        );
    }
    let built_keys: Vec<String> = oci::labels("v", "r").into_keys().collect();
    let containerfile_keys = labels.matches("org.opencontainers.image.").count();
    assert_eq!(
        containerfile_keys,
        built_keys.len(),
        "the same labels: {built_keys:?} and {labels}"
    );
    assert_eq!(
        runtime.all("USER").last(),
        Some(format!("{0}:{0}", klm_rig::image::NONROOT).as_str())
    );
    assert_eq!(
        runtime.all("ENTRYPOINT").last().map(String::from),
        Some(format!(r#"["{}"]"#, oci::KLM_PATH))
    );
    let env: String = runtime.all("ENV").collect::<Vec<_>>().join(" ");
    let env: Vec<&str> = env.split_whitespace().filter(|w| *w != "\\").collect();
    assert_eq!(env, oci::ENV, "the same environment");
    for path in [oci::KLM_PATH, oci::HELM_PATH] {
        assert!(
            runtime.all("COPY").any(|c| c.ends_with(path)),
            "the Containerfile copies {path}"
        );
    }
    let mut arches: Vec<&str> = ARCHITECTURES.to_vec();
    arches.sort();
    let mut built: Vec<&str> = oci::Arch::ALL.iter().map(|a| a.name()).collect();
    built.sort();
    assert_eq!(arches, built, "the same platforms");
}
