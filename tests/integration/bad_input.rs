//! Bad input: every case exits 2 (or 3 for a cluster precondition) with a
//! message that says what to fix, and changes nothing in the cluster.

use crate::support::{Case, CaseSpec};
use crate::upgrade::verification_pod;

struct Bad<'a> {
    args: Vec<String>,
    code: i32,
    says: &'a str,
}

fn bad<'a>(args: &[&str], code: i32, says: &'a str) -> Bad<'a> {
    Bad {
        args: args.iter().map(|s| s.to_string()).collect(),
        code,
        says,
    }
}

#[tokio::test]
async fn bad_input_is_refused_with_a_message_and_changes_nothing() {
    let case = Case::start(CaseSpec::new("badinput", 2, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good_pod = verification_pod(dir.path(), &[]).display().to_string();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let two_docs = write(
        "two.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b}\n",
    );
    let deployment = write(
        "deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
    );
    let not_yaml = write("broken.yaml", "kind: [Pod\n");
    let unpinned = write(
        "unpinned.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: \"${TEST_POD}\"}\nspec:\n  restartPolicy: Never\n  tolerations: [{operator: Exists}]\n  containers: [{name: c, image: i}]\n",
    );
    let intolerant = write(
        "intolerant.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: \"${TEST_POD}\"}\nspec:\n  restartPolicy: Never\n  nodeSelector: {kubernetes.io/hostname: \"${NODE}\"}\n  containers: [{name: c, image: i}]\n",
    );
    let ns = case.namespace.clone();
    let node = case.node(0).to_string();
    let missing_kubeconfig = dir.path().join("nope.kubeconfig").display().to_string();

    let cases = vec![
        bad(
            &["check-prerequisites", "--target-version", "3.28"],
            2,
            "not a valid version",
        ),
        bad(
            &["check-prerequisites", "--target-version", "latest"],
            2,
            "not a valid version",
        ),
        bad(
            &[
                "check-prerequisites",
                "--target-version",
                "3.20.0",
                "--verification-pod",
                &good_pod,
                "--verification-namespace",
                &ns,
            ],
            2,
            "minimum for daemonset",
        ),
        bad(
            &[
                "check-prerequisites",
                "--target-version",
                "3.28.0",
                "--deployment-mode",
                "operator",
            ],
            2,
            "invalid value",
        ),
        bad(
            &[
                "check-prerequisites",
                "--target-version",
                "3.33.0",
                "--deployment-mode",
                "job",
                "--verification-pod",
                &good_pod,
                "--verification-namespace",
                &ns,
            ],
            3,
            "klm never switches modes",
        ),
        bad(
            &[
                "check-prerequisites",
                "--target-version",
                "3.28.0",
                "--helm-release",
                "nope",
                "--verification-pod",
                &good_pod,
                "--verification-namespace",
                &ns,
            ],
            3,
            "was not found",
        ),
        bad(
            &[
                "check-prerequisites",
                "--target-version",
                "3.28.0",
                "--verification-pod",
                "/nonexistent/pod.yaml",
            ],
            2,
            "/nonexistent/pod.yaml",
        ),
        bad(
            &[
                "check-prerequisites",
                "--target-version",
                "3.28.0",
                "--verification-pod",
                &two_docs,
            ],
            2,
            "document",
        ),
        bad(
            &[
                "check-prerequisites",
                "--target-version",
                "3.28.0",
                "--verification-pod",
                &deployment,
            ],
            2,
            "kind",
        ),
        bad(
            &[
                "check-prerequisites",
                "--target-version",
                "3.28.0",
                "--verification-pod",
                &not_yaml,
            ],
            2,
            "YAML",
        ),
        bad(
            &[
                "check-prerequisites",
                "--target-version",
                "3.28.0",
                "--verification-pod",
                &unpinned,
            ],
            2,
            "${NODE}",
        ),
        bad(
            &[
                "check-prerequisites",
                "--target-version",
                "3.28.0",
                "--verification-pod",
                &intolerant,
            ],
            2,
            "unschedulable",
        ),
        bad(
            &[
                "check-prerequisites",
                "--target-version",
                "3.28.0",
                "--verification-pod-base64",
                "%%%not-base64",
            ],
            2,
            "base64",
        ),
        bad(
            &[
                "check-prerequisites",
                "--target-version",
                "3.28.0",
                "--verification-pod",
                &good_pod,
                "--verification-namespace",
                "no-such-namespace",
            ],
            3,
            "no-such-namespace",
        ),
        bad(&["select-nodes", "--batch-size", "0"], 2, "batch size 0"),
        bad(&["select-nodes", "--batch-size", "two"], 2, "not a number"),
        bad(
            &["select-nodes", "--node-selector", "zone in a,b"],
            2,
            "label selector",
        ),
        bad(
            &["select-nodes", "--node-selector", "a=b,"],
            2,
            "label selector",
        ),
        bad(
            &["select-nodes", "--node-taint-value", "pending"],
            2,
            "--node-taint-key",
        ),
        bad(
            &["select-nodes", "--node-taint-key", "bad key"],
            2,
            "taint key",
        ),
        bad(
            &["select-nodes", "--skip-completed", "soon"],
            2,
            "not a valid version",
        ),
        bad(
            &["cordon", "--nodes", "Not_A_Node"],
            2,
            "not a valid node name",
        ),
        bad(
            &[
                "cordon",
                "--nodes",
                &format!("{node},{ns}-ghost"),
                "--run-id",
                "nobody",
            ],
            3,
            "no run record",
        ),
        bad(
            &["rollback", "--nodes", &format!("{ns}-ghost")],
            3,
            "no run record",
        ),
        bad(
            &["drain", "--nodes", &node, "--drain-timeout", "soon"],
            2,
            "expected e.g.",
        ),
        bad(
            &["restart-kata-pod", "--nodes", &node, "--timeout", "0s"],
            2,
            "longer than zero",
        ),
        bad(
            &[
                "helm-upgrade",
                "--target-version",
                "3.28.0",
                "--helm-set-values",
                "novalue",
            ],
            2,
            "key=value",
        ),
        bad(
            &["helm-upgrade", "--target-version", "3.28.0"],
            3,
            "no run record",
        ),
        bad(&["verify", "--nodes", &node], 2, "verification pod"),
        bad(&["uncordon"], 2, "--nodes"),
        bad(&["status", "--fail-if-run-failed"], 2, "--run-id"),
        bad(
            &["status", "--kubeconfig", &missing_kubeconfig],
            2,
            "does not exist",
        ),
        // --as reaches the apiserver: the chart's ServiceAccount may not impersonate.
        bad(
            &[
                "status",
                "--as",
                "system:serviceaccount:kube-system:default",
            ],
            3,
            "cannot impersonate",
        ),
        bad(&["frobnicate"], 2, "unrecognized subcommand"),
        // The run's first helm upgrade is rendered with --dry-run=server
        // before anything is recorded: a chart version that does not exist
        // and a --set helm cannot parse are refused with helm's words.
        bad(
            &[
                "check-prerequisites",
                "--target-version",
                "99.0.0",
                "--verification-pod",
                &good_pod,
                "--verification-namespace",
                &ns,
            ],
            3,
            "helm would refuse to upgrade kata-deploy to 99.0.0",
        ),
        bad(
            &["plan", "--target-version", "99.0.0"],
            3,
            "check --target-version (is that kata-deploy version published?)",
        ),
        bad(
            &[
                "check-prerequisites",
                "--target-version",
                "3.28.0",
                "--helm-set-values",
                "a={b,c",
                "--verification-pod",
                &good_pod,
                "--verification-namespace",
                &ns,
            ],
            2,
            "not valid helm syntax",
        ),
    ];
    assert!(cases.len() >= 25);

    let before = case.snapshot().await;
    let mut failures = Vec::new();
    for case_args in &cases {
        let args: Vec<&str> = case_args.args.iter().map(String::as_str).collect();
        let out = case.klm(&args).await;
        let said = format!("{}{}", out.stdout, out.stderr);
        if out.code != case_args.code || !said.contains(case_args.says) {
            failures.push(format!(
                "klm {}\n  want exit {} saying {:?}\n  got exit {}: {}",
                args.join(" "),
                case_args.code,
                case_args.says,
                out.code,
                said.trim()
            ));
        }
        // klm's own errors carry `hint:` lines; clap's name the flag, the
        // expected form and point at --help.
        let guided = ["hint:", "Usage:", "usage:", "try '--help'"]
            .iter()
            .any(|g| said.contains(g));
        if !guided {
            failures.push(format!(
                "klm {}: no hint says what to do: {}",
                args.join(" "),
                said.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        case.snapshot().await,
        before,
        "bad input changed the cluster"
    );
}
