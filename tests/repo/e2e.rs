//! The end-to-end fixtures (`tests/fixtures/e2e`, run by e2e.yaml on kind):
//! klm accepts the verification pod, the chart renders with the e2e values
//! into the WorkflowTemplate the workflow submits, and the fixture versions
//! it upgrades between exist.

use std::process::Command;

use kata_lifecycle_manager::verification::template::VerificationPod;
use serde_json::Value;

use crate::containerfile::Containerfile;
use crate::support::{read, rig_bin, root, yaml};

const FIXTURES: &str = "tests/fixtures/e2e";
/// The kata-deploy versions e2e.yaml installs and upgrades to.
const VERSIONS: [&str; 3] = ["3.31.0", "3.32.0", "3.33.0"];

fn e2e_workflow() -> String {
    read(".github/workflows/e2e.yaml")
}

#[test]
fn klm_accepts_the_verification_pod_and_the_failing_variant() {
    let raw = read(format!("{FIXTURES}/verify-pod.yaml"));
    let pod = VerificationPod::parse(&raw, "default")
        .unwrap_or_else(|e| panic!("klm refuses the e2e verification pod: {e:?}"));
    let built = pod.for_node("klm-worker", "e2e").expect("a pod for a node");
    let spec = built.spec.expect("a pod spec");
    assert_eq!(
        spec.node_selector.unwrap()["kubernetes.io/hostname"],
        "klm-worker",
        "pinned to the node under test"
    );
    let container = &spec.containers[0];
    let fail_on = container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "FAIL_ON");
    assert_eq!(fail_on.and_then(|e| e.value.as_deref()), Some("none"));
    let command = container.command.as_ref().unwrap().join(" ");
    assert!(
        command.contains(r#"test "klm-worker" != "$FAIL_ON""#),
        "${{NODE}} substituted, $FAIL_ON left to the shell: {command}"
    );
    // e2e.yaml's second run makes the pod fail on one node with this edit.
    assert_eq!(raw.matches("value: none").count(), 1);
    assert!(e2e_workflow().contains(r#"sed "s/value: none/value: $failing/""#));
    let failing = raw.replace("value: none", "value: klm-worker");
    VerificationPod::parse(&failing, "default").expect("the failing variant is valid too");
}

#[test]
fn the_chart_renders_with_the_e2e_values_into_the_template_the_workflow_submits() {
    let verify_pod = root().join(FIXTURES).join("verify-pod.yaml");
    let output = Command::new(rig_bin("helm"))
        .args(["template", "klm"])
        .arg(root().join("chart/kata-lifecycle-manager"))
        .args(["--namespace", "argo", "-f"])
        .arg(root().join(FIXTURES).join("klm-values.yaml"))
        .arg("--set-file")
        .arg(format!("defaults.verificationPod={}", verify_pod.display()))
        .env(
            "HELM_CACHE_HOME",
            root().join("target/repo-tests/helm/cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            root().join("target/repo-tests/helm/config"),
        )
        .env("HELM_DATA_HOME", root().join("target/repo-tests/helm/data"))
        .output()
        .expect("helm runs");
    assert!(
        output.status.success(),
        "helm template with {FIXTURES}/klm-values.yaml failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifests = String::from_utf8(output.stdout).unwrap();
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&manifests).expect("rendered YAML parses");
    let template = documents
        .iter()
        .find(|d| d["kind"] == "WorkflowTemplate")
        .expect("a WorkflowTemplate");
    let submitted = yaml(".github/workflows/e2e.yaml")["env"]["TEMPLATE"]
        .as_str()
        .expect("e2e.yaml's env.TEMPLATE")
        .to_string();
    assert_eq!(
        submitted,
        format!(
            "workflowtemplate/{}",
            template["metadata"]["name"].as_str().unwrap()
        ),
        "e2e.yaml submits the WorkflowTemplate the chart renders"
    );
    assert_eq!(template["metadata"]["namespace"], "argo");
    assert!(manifests.contains("image: klm.test/kata-lifecycle-manager:e2e"));
    assert!(manifests.contains("imagePullPolicy: Never"));
    // Every step reads the chart from its KLM_CHART variable.
    assert!(
        manifests.contains(
            "- name: KLM_CHART\n            value: \"/charts/kata-deploy-{version}.tgz\""
        )
    );
    let workflow = e2e_workflow();
    assert!(
        workflow.contains("-t klm.test/kata-lifecycle-manager:e2e"),
        "e2e.yaml builds the image the values name"
    );
}

#[test]
fn the_fixture_versions_exist_and_their_stand_in_images_are_loaded() {
    let packaged: Vec<&str> = klm_rig::charts::VERSIONS.iter().map(|(v, _)| *v).collect();
    let workflow = e2e_workflow();
    for version in VERSIONS {
        assert!(
            packaged.contains(&version),
            "klm-rig charts packages kata-deploy {version}"
        );
        assert!(
            workflow.contains(&format!("quay.io/kata-containers/kata-deploy:{version}")),
            "e2e.yaml loads the stand-in image for {version} into kind"
        );
    }
}

#[test]
fn the_e2e_images_build_on_pinned_bases() {
    let stand_in = Containerfile::parse(&read(format!("{FIXTURES}/kata-deploy.Containerfile")));
    let base = stand_in.resolve(&stand_in.final_stage().base);
    assert!(
        base.contains("@sha256:"),
        "the stand-in's base is pinned: {base}"
    );
    assert!(
        stand_in
            .final_stage()
            .all("COPY")
            .any(|c| c.ends_with("kata-deploy.sh /usr/bin/kata-deploy")),
        "the stand-in answers the fixture chart's command, /usr/bin/kata-deploy"
    );
    let fixture = read("tests/fixtures/kata-deploy/templates/daemonset.yaml");
    assert!(fixture.contains(r#"command: ["/usr/bin/kata-deploy", "install"]"#));
    assert!(
        fixture.contains("port: 8090")
            && fixture.contains("path: /readyz")
            && fixture.contains("path: /healthz")
    );
    let script = read(format!("{FIXTURES}/kata-deploy.sh"));
    assert!(script.contains("-p 8090") && script.contains("readyz") && script.contains("healthz"));
    let with_charts =
        Containerfile::parse(&read(format!("{FIXTURES}/klm-with-charts.Containerfile")));
    assert!(
        with_charts
            .final_stage()
            .all("COPY")
            .any(|c| c.ends_with("/charts/")),
        "the e2e klm image holds the fixture charts at /charts"
    );
}
