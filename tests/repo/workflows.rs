//! The GitHub workflows (`.github/workflows`): actionlint passes, third-party
//! actions are pinned by commit, permissions start read-only, and what they
//! build agrees with the image and the rig.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::containerfile::Containerfile;
use crate::image::ARCHITECTURES;
use crate::support::{read, rig_bin, root, yaml};

/// The workflows this repository must have.
const WORKFLOWS: [&str; 4] = ["ci.yaml", "image.yaml", "release.yaml", "e2e.yaml"];

fn workflow_files() -> Vec<PathBuf> {
    let dir = root().join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

fn workflow(name: &str) -> Value {
    yaml(format!(".github/workflows/{name}"))
}

#[test]
fn the_workflows_are_all_there() {
    let names: Vec<String> = workflow_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for name in WORKFLOWS {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
}

#[test]
fn workflows_pass_actionlint() {
    let actionlint = rig_bin("actionlint");
    let output = Command::new(&actionlint)
        .args(["-no-color"])
        .args(workflow_files())
        .current_dir(root())
        .output()
        .expect("actionlint runs");
    assert!(
        output.status.success(),
        "actionlint found problems (shellcheck's too, when it is installed):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every `uses:` of the workflows: (file, value).
fn uses() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for file in workflow_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let value: Value = yaml(&file);
        let jobs = value["jobs"].as_object().expect("a workflow has jobs");
        for job in jobs.values() {
            if let Some(reusable) = job["uses"].as_str() {
                found.push((name.clone(), reusable.to_string()));
            }
            for step in job["steps"].as_array().into_iter().flatten() {
                if let Some(action) = step["uses"].as_str() {
                    found.push((name.clone(), action.to_string()));
                }
            }
        }
    }
    found
}

/// `owner/repo[/path]@<40 hex>`.
fn pinned_by_commit(reference: &str) -> bool {
    reference
        .rsplit_once('@')
        .is_some_and(|(_, sha)| sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `# vX.Y.Z` comment after `uses: <reference>` in the workflow's text.
fn version_comment<'a>(text: &'a str, reference: &str) -> Option<&'a str> {
    text.lines()
        .filter(|l| l.contains(&format!("uses: {reference}")))
        .map(|l| l.split_once('#').map(|(_, c)| c.trim()).unwrap_or(""))
        .find(|comment| {
            comment.strip_prefix('v').is_some_and(|v| {
                v.split('.').count() == 3 && v.split('.').all(|n| n.parse::<u32>().is_ok())
            })
        })
}

#[test]
fn third_party_actions_are_pinned_by_commit_with_their_version() {
    let all = uses();
    assert!(all.len() > 10, "the workflows use actions: {all:?}");
    let mut problems = Vec::new();
    for (file, reference) in &all {
        if reference.starts_with("./") {
            continue;
        }
        if reference.starts_with("docker://") {
            problems.push(format!(
                "{file}: {reference}: run containers from steps, not docker:// actions"
            ));
            continue;
        }
        if !pinned_by_commit(reference) {
            problems.push(format!(
                "{file}: {reference}: pin by the full 40-hex commit"
            ));
        }
        let text = read(format!(".github/workflows/{file}"));
        if version_comment(&text, reference).is_none() {
            problems.push(format!(
                "{file}: {reference}: add the release it is, `# vX.Y.Z`"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn one_action_is_one_commit_everywhere() {
    let mut seen: Vec<(String, String, String)> = Vec::new();
    for (file, reference) in uses() {
        let Some((action, sha)) = reference.rsplit_once('@') else {
            continue;
        };
        if let Some((other_file, _, other_sha)) = seen.iter().find(|(_, a, _)| a == action) {
            assert_eq!(
                &sha, other_sha,
                "{action} is pinned to two commits ({file}, {other_file}): use one"
            );
        }
        seen.push((file, action.to_string(), sha.to_string()));
    }
}

#[test]
fn permissions_start_read_only_and_jobs_ask_for_more() {
    for name in WORKFLOWS {
        let value = workflow(name);
        assert_eq!(
            value["permissions"],
            serde_json::json!({"contents": "read"}),
            "{name}: top-level `permissions: {{contents: read}}`; a job that needs more says so"
        );
    }
    // Only publishing jobs may write, and only what they publish.
    let writers = [
        ("image.yaml", "publish", &["packages", "id-token"][..]),
        ("release.yaml", "image", &["packages", "id-token"][..]),
        // The GitHub release's asset; the chart was pushed and signed by
        // image.yaml.
        ("release.yaml", "chart", &["contents"][..]),
    ];
    for name in WORKFLOWS {
        let value = workflow(name);
        for (job_name, job) in value["jobs"].as_object().unwrap() {
            let Some(permissions) = job["permissions"].as_object() else {
                continue;
            };
            let writes: Vec<&str> = permissions
                .iter()
                .filter(|(_, v)| *v == "write")
                .map(|(k, _)| k.as_str())
                .collect();
            if writes.is_empty() {
                continue;
            }
            let allowed = writers
                .iter()
                .find(|(f, j, _)| *f == name && j == job_name)
                .map(|(_, _, a)| *a)
                .unwrap_or_else(|| panic!("{name}: job {job_name} writes {writes:?}: why?"));
            assert!(
                writes.iter().all(|w| allowed.contains(w)),
                "{name}: job {job_name} writes {writes:?}, more than {allowed:?}"
            );
        }
    }
}

#[test]
fn ci_and_e2e_use_the_images_rust_toolchain() {
    let containerfile = Containerfile::parse(&read("image/Containerfile"));
    let image = containerfile.arg("RUST_IMAGE").expect("ARG RUST_IMAGE");
    let tag = image
        .split_once("rust:")
        .and_then(|(_, rest)| rest.split(['-', '@']).next())
        .unwrap_or_else(|| panic!("RUST_IMAGE is a rust:<version>-... image: {image}"));
    for name in ["ci.yaml", "e2e.yaml", "image.yaml"] {
        assert_eq!(
            workflow(name)["env"]["RUST_TOOLCHAIN"],
            tag,
            "{name}'s RUST_TOOLCHAIN is the image builder's Rust ({image})"
        );
    }
}

#[test]
fn the_image_workflow_builds_every_platform() {
    let platforms = workflow("image.yaml")["env"]["PLATFORMS"]
        .as_str()
        .expect("image.yaml's env.PLATFORMS")
        .to_string();
    let expected: Vec<String> = ARCHITECTURES.iter().map(|a| format!("linux/{a}")).collect();
    assert_eq!(platforms.split(',').collect::<Vec<_>>(), expected);
    // tests/image/build.sh builds every platform when given none.
    let mut built: Vec<&str> = klm_rig::oci::Arch::ALL.iter().map(|a| a.name()).collect();
    let mut listed = ARCHITECTURES.to_vec();
    built.sort();
    listed.sort();
    assert_eq!(built, listed);
    let text = read(".github/workflows/image.yaml");
    assert!(text.contains("cosign sign --yes"));
    assert!(text.contains(r#"tags="sha-$GITHUB_SHA""#));
}

/// The `run:` scripts of a job's steps, in order.
fn runs(file: &str, job: &str) -> Vec<String> {
    workflow(file)["jobs"][job]["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("{file}: job {job} has steps"))
        .iter()
        .filter_map(|s| s["run"].as_str().map(String::from))
        .collect()
}

/// The `--flags` of a script's `klm-rig image publish` (and of the lines that
/// build its arguments), in order of first appearance.
fn publish_flags(script: &str) -> Vec<String> {
    let mut flags: Vec<String> = Vec::new();
    for word in script.split(|c: char| c.is_whitespace() || c == '(' || c == ')') {
        if let Some(flag) = word
            .strip_prefix("--")
            .filter(|f| f.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        {
            let flag = format!("--{flag}");
            if !flags.contains(&flag) {
                flags.push(flag);
            }
        }
    }
    flags
}

/// The path users install from is the one the tests walk: image.yaml builds
/// with the script `make image-release` and `make release-check` run
/// (tests/image/build.sh --release), in the Debian 12 the cross toolchains
/// come from, with the repository's package scripts; a pull request runs
/// `make release-check`'s chain; main and the release push with `klm-rig
/// image publish` and exactly the flags the registry test passes to a
/// registry with TLS and token auth ([`klm_rig::publish::RELEASE_PUBLISH_FLAGS`]);
/// nothing of the image's path uses docker or buildx any more.
#[test]
fn the_release_builds_and_publishes_as_the_tests_do() {
    let image = workflow("image.yaml");
    for job in ["check", "publish"] {
        assert_eq!(
            image["jobs"][job]["container"], "debian:bookworm",
            "image.yaml's {job} runs in Debian 12 (tests/cross/packages.sh's toolchains)"
        );
    }
    let check = runs("image.yaml", "check").join("\n");
    assert!(
        check.contains("make cross-packages host-packages"),
        "{check}"
    );
    assert!(
        check.contains("bash tests/image/release-check.sh"),
        "a pull request runs make release-check's chain: {check}"
    );
    let publish = runs("image.yaml", "publish");
    assert!(
        publish.iter().any(|r| r.contains("make cross-packages")),
        "{publish:?}"
    );
    assert!(
        publish
            .iter()
            .any(|r| r.trim() == "bash tests/image/build.sh --release --out target/image/oci"),
        "main and releases build with tests/image/build.sh --release: {publish:?}"
    );
    let makefile = read("Makefile");
    assert!(
        makefile.contains("image-release: cross-packages\n\tbash tests/image/build.sh --release\n")
    );
    assert!(makefile.contains("release-check: rig-bins host-packages cross-packages\n\tbash tests/image/release-check.sh\n"));
    let release_check = read("tests/image/release-check.sh");
    assert!(release_check.contains("bash tests/image/build.sh"));
    assert!(release_check.contains("klm-rig\" image publish"));

    let pushes: Vec<&String> = publish
        .iter()
        .filter(|r| r.contains("klm-rig image publish"))
        .collect();
    assert_eq!(pushes.len(), 1, "one push: {publish:?}");
    let mut flags = publish_flags(pushes[0]);
    flags.sort();
    let mut expected = klm_rig::publish::RELEASE_PUBLISH_FLAGS.to_vec();
    expected.sort();
    assert_eq!(
        flags, expected,
        "image.yaml publishes with the flags the registry test passes (tests/rig/tests/registry.rs)"
    );
    assert!(pushes[0].contains(r#"--registry "ghcr.io/${GITHUB_REPOSITORY_OWNER,,}""#));
    assert!(
        pushes[0].contains(r#"<<<"$REGISTRY_TOKEN""#),
        "the token on stdin"
    );
    let step = image["jobs"]["publish"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "publish")
        .expect("a step with id publish");
    assert_eq!(step["env"]["REGISTRY_TOKEN"], "${{ secrets.GITHUB_TOKEN }}");
    assert_eq!(step["env"]["KLM_REGISTRY_USER"], "${{ github.actor }}");
    let registry_test = read("tests/rig/tests/registry.rs");
    assert!(
        registry_test.contains("RELEASE_PUBLISH_FLAGS")
            && registry_test.contains("ServerAuth::Token")
            && registry_test.contains("CARGO_BIN_EXE_klm-rig"),
        "the registry test runs klm-rig image publish with the release's flags against token auth"
    );

    for file in ["image.yaml", "release.yaml"] {
        for (used_in, action) in uses() {
            assert!(
                used_in != file || !action.starts_with("docker/"),
                "{file} uses {action}: the image is built and pushed without docker or buildx"
            );
        }
        let text = read(format!(".github/workflows/{file}"));
        for word in ["buildx", "docker build", "docker push", "docker login"] {
            assert!(
                !text
                    .lines()
                    .any(|l| !l.trim_start().starts_with('#') && l.contains(word)),
                "{file} runs {word}"
            );
        }
    }
}

#[test]
fn the_publish_flag_reader_reads_flags_in_order() {
    let script = "args=()\nfor t in $T; do args+=(--tag \"$t\"); done\nklm-rig image publish --layout x \\\n  --password-stdin \"${args[@]}\" --layout y <<<\"$X\"\n";
    assert_eq!(
        publish_flags(script),
        ["--tag", "--layout", "--password-stdin"]
    );
}

#[test]
fn the_release_calls_the_image_workflow_and_takes_its_digest() {
    let release = workflow("release.yaml");
    assert_eq!(
        release["jobs"]["image"]["uses"],
        "./.github/workflows/image.yaml"
    );
    assert_eq!(
        release["jobs"]["chart"]["env"]["DIGEST"],
        "${{ needs.image.outputs.digest }}"
    );
    let image = workflow("image.yaml");
    assert_eq!(
        image["on"]["workflow_call"]["outputs"]["digest"]["value"],
        "${{ jobs.publish.outputs.digest }}"
    );
    assert_eq!(
        image["jobs"]["publish"]["outputs"]["digest"],
        "${{ steps.publish.outputs.digest }}"
    );
    assert_eq!(
        release["jobs"]["chart"]["env"]["CHART_DIGEST"],
        "${{ needs.image.outputs.chart_digest }}"
    );
}

#[test]
fn the_version_comment_reader_wants_a_full_version() {
    let text = "      - uses: a/b@0123456789012345678901234567890123456789 # v1.2.3\n      - uses: c/d@0123456789012345678901234567890123456789 # v3\n";
    assert_eq!(
        version_comment(text, "a/b@0123456789012345678901234567890123456789"),
        Some("v1.2.3")
    );
    assert_eq!(
        version_comment(text, "c/d@0123456789012345678901234567890123456789"),
        None
    );
    assert!(pinned_by_commit(
        "a/b@0123456789012345678901234567890123456789"
    ));
    assert!(!pinned_by_commit("a/b@v1.2.3"));
}
