//! Golden files: the rendered manifests for the default values and a few
//! interesting combinations, under tests/chart/golden/. A change to what the
//! chart renders is a reviewed diff: regenerate with
//! `KLM_UPDATE_GOLDEN=1 cargo test --test chart golden`.

use std::path::PathBuf;

use crate::render::{self, repo_root};

/// One rendering scenario: a golden file name and the values that differ.
struct Scenario {
    name: &'static str,
    values: &'static [&'static str],
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "default",
        values: &[],
    },
    Scenario {
        name: "pools",
        values: &[
            "--set",
            "defaults.poolLabel=node-pool",
            "--set",
            "defaults.poolOrder=cpu\\,gpu",
            "--set",
            "defaults.canarySize=1",
            "--set",
            "defaults.batchSize=10%",
            "--set",
            "defaults.batchGrowth=exponential",
            "--set",
            "defaults.maxBatchSize=50",
            "--set-string",
            "verificationPods.gpu=apiVersion: v1",
        ],
    },
    Scenario {
        name: "cluster-scoped",
        values: &[
            "--set",
            "clusterScoped=true",
            "--set",
            "argoNamespace=workflows",
        ],
    },
    Scenario {
        name: "job-mode",
        values: &[
            "--set",
            "defaults.deploymentMode=job",
            "--set",
            "defaults.batchSize=5",
            "--set",
            "defaults.drainEnabled=true",
            "--set",
            "defaults.helmSetValues=image.reference=mirror.example/kata-deploy",
            "--set",
            "submitOverrides.helmSetValues=true",
            "--set",
            "submitOverrides.verificationPod=false",
            "--set",
            "defaults.helmNamespace=kata-system",
            "--set",
            "defaults.verificationNamespace=kata-verify",
            "--set",
            "kataDeploy.chart=/charts/kata-deploy-{version}.tgz",
        ],
    },
    Scenario {
        name: "image-digest",
        values: &[
            "--set",
            "image.repository=registry.example/klm",
            "--set",
            "image.tag=v0.1.0",
            "--set",
            "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "--set",
            "image.pullPolicy=Always",
            "--set",
            "imagePullSecrets[0].name=registry-creds",
        ],
    },
    Scenario {
        name: "placement",
        values: &[
            "--set-string",
            "nodeSelector.node-role\\.example/ops=true",
            "--set",
            "tolerations[0].key=ops",
            "--set",
            "tolerations[0].operator=Exists",
            "--set",
            "tolerations[0].effect=NoSchedule",
            "--set",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=kubernetes.io/arch",
            "--set",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=In",
            "--set",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values[0]=amd64",
            "--set",
            "tolerateCordonedNodes=false",
            "--set",
            "resources.limits.memory=1Gi",
            "--set",
            "workflow.activeDeadlineSeconds=86400",
            "--set",
            "workflow.ttlStrategy.secondsAfterCompletion=604800",
            "--set",
            "rbac.drain=false",
            "--set",
            "rbac.kataDeployEventsNamespace=",
        ],
    },
];

fn golden_path(name: &str) -> PathBuf {
    repo_root()
        .join("tests/chart/golden")
        .join(format!("{name}.yaml"))
}

fn updating() -> bool {
    std::env::var_os("KLM_UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

/// Every scenario renders exactly its golden file.
#[test]
fn renderings_match_the_golden_files() {
    let mut mismatches = Vec::new();
    for scenario in SCENARIOS {
        let rendered = render::render(scenario.values);
        let path = golden_path(scenario.name);
        if updating() {
            std::fs::write(&path, &rendered).expect("write golden file");
            continue;
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "{} is missing: run KLM_UPDATE_GOLDEN=1 cargo test --test chart golden",
                path.display()
            )
        });
        if golden != rendered {
            mismatches.push(format!(
                "{}:\n{}",
                scenario.name,
                first_difference(&golden, &rendered)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "rendered manifests differ from tests/chart/golden (review, then regenerate with \
         KLM_UPDATE_GOLDEN=1 cargo test --test chart golden):\n{}",
        mismatches.join("\n")
    );
}

/// Every golden file belongs to a scenario (a renamed scenario leaves none behind).
#[test]
fn no_golden_file_is_orphaned() {
    let dir = repo_root().join("tests/chart/golden");
    for entry in std::fs::read_dir(&dir).expect("tests/chart/golden exists") {
        let name = entry
            .expect("dir entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let stem = name.trim_end_matches(".yaml");
        assert!(
            SCENARIOS.iter().any(|s| s.name == stem),
            "tests/chart/golden/{name} has no scenario in tests/chart/golden.rs"
        );
    }
}

/// The scenarios differ from the default where they say they do.
#[test]
fn scenarios_render_what_they_set() {
    let docs = |name: &str| {
        let scenario = SCENARIOS.iter().find(|s| s.name == name).expect("scenario");
        render::documents(&render::render(scenario.values))
    };
    let cluster = docs("cluster-scoped");
    let template = render::the(&cluster, "ClusterWorkflowTemplate");
    assert!(
        template["metadata"].get("namespace").is_none(),
        "a ClusterWorkflowTemplate has no namespace"
    );
    assert!(cluster.iter().all(|d| d["kind"] != "WorkflowTemplate"));
    assert_eq!(
        render::the(&cluster, "ServiceAccount")["metadata"]["namespace"],
        "workflows"
    );

    let digest = docs("image-digest");
    let images: Vec<&str> = render::the(&digest, "WorkflowTemplate")["spec"]["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .filter_map(|t| t["container"]["image"].as_str())
        .collect();
    assert!(!images.is_empty());
    assert!(images.iter().all(|i| *i
        == "registry.example/klm:v0.1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));

    let placement = docs("placement");
    let spec = &render::the(&placement, "WorkflowTemplate")["spec"];
    assert_eq!(spec["nodeSelector"]["node-role.example/ops"], "true");
    assert_eq!(
        spec["tolerations"].as_array().map(Vec::len),
        Some(1),
        "only the given toleration"
    );
    assert_eq!(spec["activeDeadlineSeconds"], 86400);
    let default = docs("default");
    let spec = &render::the(&default, "WorkflowTemplate")["spec"];
    assert!(
        spec.get("nodeSelector").is_none() && spec.get("affinity").is_none(),
        "default placement is none"
    );
}

/// A readable pointer to where two texts first differ.
fn first_difference(golden: &str, rendered: &str) -> String {
    let golden_lines: Vec<&str> = golden.lines().collect();
    let rendered_lines: Vec<&str> = rendered.lines().collect();
    let at = golden_lines
        .iter()
        .zip(&rendered_lines)
        .position(|(a, b)| a != b)
        .unwrap_or(golden_lines.len().min(rendered_lines.len()));
    let context = |lines: &[&str]| {
        lines
            .iter()
            .skip(at.saturating_sub(2))
            .take(5)
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "  first difference at line {}\n  golden:\n{}\n  rendered:\n{}",
        at + 1,
        context(&golden_lines),
        context(&rendered_lines)
    )
}
