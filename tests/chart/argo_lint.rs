//! Argo's own validation of the rendered template: argolint-v3 (Argo
//! v3.7.18) and argolint-v4 (Argo v4.0.7) run what `argo lint --offline
//! --strict` runs (tests/argolint; built by `make rig-bins`). They check what
//! the Kubernetes schema cannot: that every template and `{{...}}` reference
//! resolves, step and loop structure, parameter placement.

use std::process::Command;

use crate::render::{self, rig_bin, scratch_file};

/// The linters, by Argo line.
const LINTERS: &[&str] = &["argolint-v3", "argolint-v4"];

/// Runs one linter on a file; Ok with its output, or Err with it.
fn lint(linter: &str, path: &std::path::Path) -> Result<String, String> {
    let output = Command::new(rig_bin(linter))
        .arg(path)
        .output()
        .expect("argolint runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// The rendered WorkflowTemplate and ClusterWorkflowTemplate, in several
/// value combinations, pass both Argo lines' validation.
#[test]
fn argo_accepts_the_rendered_templates() {
    let scenarios: &[(&str, &[&str])] = &[
        ("workflowtemplate", &[]),
        ("clusterworkflowtemplate", &["--set", "clusterScoped=true"]),
        (
            "job-mode",
            &[
                "--set",
                "defaults.deploymentMode=job",
                "--set",
                "defaults.drainEnabled=true",
                "--set",
                "submitOverrides.helmSetValues=true",
            ],
        ),
        (
            "locked-pod",
            &[
                "--set",
                "submitOverrides.verificationPod=false",
                "--set",
                "workflow.activeDeadlineSeconds=3600",
            ],
        ),
    ];
    for (name, values) in scenarios {
        let path = scratch_file(&format!("argolint-{name}.yaml"), &render::render(values));
        for linter in LINTERS {
            match lint(linter, &path) {
                Ok(out) => assert!(
                    out.contains("no linting errors found"),
                    "{linter} {name}: {out}"
                ),
                Err(out) => panic!("{linter} rejects the {name} rendering:\n{out}"),
            }
        }
    }
}

/// The linters are not vacuous: a dangling reference and a missing template
/// in the rendered template are caught by both.
#[test]
fn argo_lint_catches_broken_wiring() {
    let rendered = render::render(&[]);
    let broken = [
        (
            "dangling-input",
            rendered.replacen(
                "{{inputs.parameters.index}}",
                "{{inputs.parameters.indx}}",
                1,
            ),
            "failed to resolve {{inputs.parameters.indx}}",
        ),
        (
            "missing-template",
            rendered.replacen("template: settle", "template: setle", 1),
            "'setle' undefined",
        ),
    ];
    for (name, text, expected) in broken {
        assert_ne!(text, rendered, "the {name} mutation changed nothing");
        let path = scratch_file(&format!("argolint-broken-{name}.yaml"), &text);
        for linter in LINTERS {
            let err = lint(linter, &path).expect_err("a broken template passes");
            assert!(
                err.contains(expected),
                "{linter} {name}: expected {expected:?} in:\n{err}"
            );
        }
    }
}
