//! `klm verify` on the rig: passing, failing with the pod's exit code and
//! events, and the hopeless states (crash loop, image pull, unschedulable)
//! reported within seconds, not at the timeout. Pods are labelled with the
//! run and cleaned up (kept on request).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use klm_rig::verification_pod::VerificationPod;
use kube::Api;
use kube::api::ListParams;

use crate::support::{Case, CaseSpec};

/// A verification pod whose simulated fate is `outcome` (failing with exit
/// code 4), on nodes that also carry `label`, if given.
fn pod_file(
    dir: &std::path::Path,
    name: &str,
    outcome: &str,
    label: Option<(&str, &str)>,
) -> String {
    let mut pod = VerificationPod::new(outcome).exit_code(4);
    if let Some((key, value)) = label {
        pod = pod.node_label(key, value);
    }
    pod.write(dir, name).display().to_string()
}

async fn verification_pods(case: &Case) -> Vec<Pod> {
    Api::<Pod>::namespaced(case.admin.clone(), &case.namespace)
        .list(&ListParams::default().labels("katacontainers.io/kata-lifecycle-manager-run"))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn verify_passes_fails_and_reports_hopeless_pods_fast() {
    let case = Case::start(CaseSpec::new("verify", 2, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ns = case.namespace.clone();
    let both = case.nodes.join(",");
    let verify = |pod: String, timeout: &'static str, extra: Vec<&'static str>| {
        let both = both.clone();
        let ns = ns.clone();
        let case = &case;
        async move {
            let mut args = vec![
                "verify",
                "--nodes",
                &both,
                "--verification-pod",
                &pod,
                "--verification-namespace",
                &ns,
                "--verification-timeout",
                timeout,
                "--run-id",
                "wf-verify",
            ];
            args.extend(extra);
            let started = Instant::now();
            let out = case.klm(&args).await;
            (out, started.elapsed())
        }
    };

    let (passed, _) = verify(
        pod_file(dir.path(), "pass", "succeed", None),
        "60s",
        vec!["-o", "json"],
    )
    .await;
    let passed = passed.ok().json();
    assert_eq!(passed["passed"].as_array().unwrap().len(), 2, "{passed}");
    assert!(
        verification_pods(&case).await.is_empty(),
        "passed pods are deleted"
    );

    let (failed, _) = verify(pod_file(dir.path(), "fail", "fail", None), "60s", vec![]).await;
    let failed = failed.code(1);
    assert!(
        failed.stdout.contains("exited with code 4"),
        "the exit code is reported: {}",
        failed.stdout
    );
    assert!(
        failed.stdout.contains("simulated verification failure"),
        "the pod's events are reported: {}",
        failed.stdout
    );
    assert!(
        failed.stdout.contains("simulated container output"),
        "the pod's logs are reported: {}",
        failed.stdout
    );

    for (name, outcome, says) in [
        ("crash", "crash", "CrashLoopBackOff"),
        ("pull", "image-pull-error", "ErrImagePull"),
    ] {
        let (out, elapsed) =
            verify(pod_file(dir.path(), name, outcome, None), "120s", vec![]).await;
        let out = out.code(1);
        assert!(out.stdout.contains(says), "{name}: {}", out.stdout);
        assert!(
            elapsed < Duration::from_secs(60),
            "{name} is reported long before the 120s timeout ({elapsed:?})"
        );
    }

    let impossible = Some(("rig.klm.test/no-such-label", "\"true\""));
    let (out, elapsed) = verify(
        pod_file(dir.path(), "unschedulable", "succeed", impossible),
        "120s",
        vec![],
    )
    .await;
    let out = out.code(1);
    assert!(out.stdout.contains("cannot be scheduled"), "{}", out.stdout);
    assert!(
        elapsed < Duration::from_secs(60),
        "unschedulable is reported early ({elapsed:?})"
    );

    let (out, _) = verify(
        pod_file(dir.path(), "pending", "pending", None),
        "5s",
        vec!["--keep-failed"],
    )
    .await;
    let out = out.code(1);
    assert!(out.stdout.contains("no result after 5s"), "{}", out.stdout);
    let kept = verification_pods(&case).await;
    assert_eq!(kept.len(), 2, "--keep-failed keeps the failed pods");
    for pod in &kept {
        assert_eq!(
            pod.metadata.labels.as_ref().unwrap()["katacontainers.io/kata-lifecycle-manager-run"],
            "wf-verify"
        );
    }
}

#[tokio::test]
async fn a_bad_verification_pod_changes_nothing() {
    let case = Case::start(CaseSpec::new("verifybad", 1, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let before = case.snapshot().await;
    let missing_ns = pod_file(dir.path(), "ok", "succeed", None);
    let out = case
        .klm(&[
            "verify",
            "--nodes",
            case.node(0),
            "--verification-pod",
            &missing_ns,
            "--verification-namespace",
            "no-such-namespace",
        ])
        .await
        .code(3);
    assert!(out.stderr.contains("no-such-namespace"), "{}", out.stderr);
    let unknown_node = case
        .klm(&[
            "verify",
            "--nodes",
            "no-such-node",
            "--verification-pod",
            &missing_ns,
            "--verification-namespace",
            &case.namespace,
        ])
        .await;
    assert_ne!(unknown_node.code, 0);
    assert!(
        unknown_node.stderr.contains("no-such-node"),
        "{}",
        unknown_node.stderr
    );
    assert_eq!(case.snapshot().await, before, "nothing changed");
    assert!(verification_pods(&case).await.is_empty());
}
