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
        (
            "release.yaml",
            "chart",
            &["contents", "packages", "id-token"][..],
        ),
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
    for name in ["ci.yaml", "e2e.yaml"] {
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
    let text = read(".github/workflows/image.yaml");
    assert!(text.contains("sbom: true") && text.contains("provenance: mode=max"));
    assert!(text.contains("cosign sign --yes"));
    assert!(
        text.contains("type=sha,format=long") && text.contains("type=semver,pattern={{version}}")
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
        "${{ steps.build.outputs.digest }}"
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
