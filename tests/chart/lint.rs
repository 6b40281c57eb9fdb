//! helm lint, the values schema and the install-time checks, and
//! deterministic rendering.

use std::process::Command;

use crate::render::{self, base_args, chart_dir, rig_bin, template};

/// `helm lint` (strict: warnings fail) with the values the Makefile uses and
/// with the example pod.
#[test]
fn helm_lint_is_clean() {
    for values in [
        vec![
            "--set-string".to_string(),
            "defaults.verificationPod=placeholder".to_string(),
        ],
        base_args(),
    ] {
        let output = Command::new(rig_bin("helm"))
            .arg("lint")
            .arg(chart_dir())
            .arg("--strict")
            .args(&values)
            .output()
            .expect("helm runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "helm lint --strict {values:?} failed:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !stdout.contains("[WARNING]") && !stdout.contains("[ERROR]"),
            "helm lint reported problems:\n{stdout}"
        );
        assert!(
            stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{stdout}"
        );
    }
}

/// Rendering twice gives the same bytes (no random names, no map-order drift).
#[test]
fn rendering_is_deterministic() {
    for extra in [vec![], vec!["--set", "clusterScoped=true"]] {
        let first = render::render(&extra);
        let second = render::render(&extra);
        assert_eq!(first, second, "two renderings with {extra:?} differ");
        assert!(first.contains("kind: "), "nothing rendered");
    }
}

/// Without a verification pod the chart refuses to install, saying how to give one.
#[test]
fn an_empty_verification_pod_fails_with_a_clear_message() {
    for values in [
        vec![],
        vec!["--set-string", "defaults.verificationPod="],
        vec!["--set-string", "defaults.verificationPod=   "],
    ] {
        let err = template(&values).expect_err("renders without a verification pod");
        assert!(
            err.contains("defaults.verificationPod is required")
                && err.contains("--set-file defaults.verificationPod="),
            "unclear error for {values:?}:\n{err}"
        );
    }
}

/// A value of the wrong type, an unknown value or a bad enum fails with the
/// schema's message naming the value.
#[test]
fn wrong_values_fail_with_the_schema_message() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "defaults.batchSize=two"],
            "/defaults/batchSize': got string, want integer",
        ),
        (&["--set", "defaults.batchSize=0"], "/defaults/batchSize"),
        (
            &["--set-string", "defaults.batchSize=200%"],
            "/defaults/batchSize",
        ),
        (
            &["--set", "defaults.batchGrowth=fast"],
            "/defaults/batchGrowth': value must be one of 'fixed', 'linear', 'exponential'",
        ),
        (&["--set", "defaults.canarySize=-1"], "/defaults/canarySize"),
        (
            &["--set-string", "verificationPods.gpu="],
            "/verificationPods/gpu': minLength",
        ),
        (
            &["--set", "clusterScoped=maybe"],
            "/clusterScoped': got string, want boolean",
        ),
        (
            &["--set", "defaults.deploymentMode=operator"],
            "/defaults/deploymentMode",
        ),
        (
            &["--set", "defaults.drainTimeout=soon"],
            "/defaults/drainTimeout",
        ),
        (&["--set", "image.digest=latest"], "/image/digest"),
        (
            &["--set", "defaults.batchSizes=2"],
            "additional properties 'batchSizes' not allowed",
        ),
        (&["--set", "workflow.logFormat=xml"], "/workflow/logFormat"),
    ];
    for (values, expected) in cases {
        let mut args = base_args();
        args.extend(values.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = template(&args).expect_err("renders with a wrong value");
        assert!(
            err.contains("values don't meet the specifications of the schema")
                && err.contains(expected),
            "{values:?}: expected the schema message naming {expected:?}, got:\n{err}"
        );
    }
}

/// Values that contradict each other fail with the fix in the message.
#[test]
fn contradictory_values_fail_with_the_fix() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "defaults.nodeTaintValue=pending"],
            "defaults.nodeTaintValue is set without defaults.nodeTaintKey",
        ),
        (
            &[
                "--set",
                "defaults.drainEnabled=true",
                "--set",
                "rbac.drain=false",
            ],
            "Set rbac.drain=true",
        ),
    ];
    for (values, expected) in cases {
        let mut args = base_args();
        args.extend(values.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = template(&args).expect_err("renders contradictory values");
        assert!(
            err.contains(expected),
            "{values:?}: expected {expected:?} in:\n{err}"
        );
    }
}
