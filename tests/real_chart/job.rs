//! job mode on the real chart: the real dispatcher's per-node Jobs (named
//! and labelled with the sanitised node name, the real one only in an
//! annotation), on nodes named as EKS names them, and a node whose install
//! fails.

use k8s_openapi::api::batch::v1::Job;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::Value;

use crate::real::{self, Install, STATUS, host_versions, klm_upgrade, passing_pod, statuses};
use crate::support::{Case, annotation, unschedulable};
use crate::{real_charts, require_versions};

/// The kata-deploy install Jobs of the case, as `(node-name annotation,
/// node label, image tag, complete)`.
async fn install_jobs(case: &Case) -> Vec<(String, String, String, bool)> {
    let mut jobs: Vec<_> = Api::<Job>::namespaced(case.admin.clone(), &case.namespace)
        .list(&ListParams::default().labels("kata-deploy/stage=install"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|job| {
            let node = job
                .annotations()
                .get("kata-deploy-job-dispatcher/node-name")
                .cloned()
                .unwrap_or_default();
            let label = job
                .labels()
                .get("kata-deploy-job-dispatcher/node")
                .cloned()
                .unwrap_or_default();
            let image = job
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            let tag = image.rsplit(':').next().unwrap_or_default().to_string();
            let complete = job
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Complete" && c.status == "True")
                });
            (node, label, tag, complete)
        })
        .collect();
    jobs.sort();
    jobs
}

fn dotted() -> Install {
    Install {
        job: true,
        dotted: true,
        ..Install::default()
    }
}

#[tokio::test]
async fn from_3_32_to_4_0_on_nodes_whose_names_have_dots() {
    let charts = real_charts!();
    require_versions!(charts, "3.32.0", "4.0.0");
    let case = real::case(charts, "jobdots", 2, "3.32.0", dotted()).await;
    assert!(case.node(0).contains('.'), "{}", case.node(0));
    let dir = tempfile::tempdir().unwrap();
    let klm = klm_upgrade(
        &case,
        "run-dots",
        "4.0.0",
        &passing_pod(dir.path()),
        &["--batch-size", "1"],
    )
    .await;
    assert_eq!(klm.code, 0, "{}\n{}", klm.stdout, klm.stderr);
    assert_eq!(
        host_versions(&case).await,
        [Some("4.0.0".into()), Some("4.0.0".into())]
    );
    assert_eq!(
        statuses(&case).await,
        [Some("completed".into()), Some("completed".into())]
    );
    for node in &case.nodes {
        assert!(!unschedulable(&case.get_node(node).await), "{node}");
    }
    assert_eq!(case.release_state().await.1, "4.0.0");
    let record: Value = case.run_record().await.unwrap();
    assert_eq!(record["state"], "completed");
    assert_eq!(record["mode"], "job");
    // The real dispatcher's Jobs: the node's name only in the annotation.
    for (node, label, tag, complete) in install_jobs(&case).await {
        assert!(case.nodes.contains(&node), "{node}");
        assert_eq!(label, node.replace('.', "-"));
        assert_eq!(tag, "4.0.0");
        assert!(complete);
    }
}

#[tokio::test]
async fn a_node_whose_install_job_fails_is_rolled_back() {
    let charts = real_charts!();
    require_versions!(charts, "3.32.0", "4.0.0");
    let case = real::case(charts, "jobback", 2, "3.32.0", dotted()).await;
    let (first, second) = (case.node(0).to_string(), case.node(1).to_string());
    real::annotate_node(&case, &second, klm_rig::simulator::INSTALL_FAILS, "4.0.0").await;
    let dir = tempfile::tempdir().unwrap();
    let klm = klm_upgrade(
        &case,
        "run-jobback",
        "4.0.0",
        &passing_pod(dir.path()),
        &["--batch-size", "1"],
    )
    .await;
    assert_eq!(
        klm.code, 1,
        "the run fails:\n{}\n{}",
        klm.stdout, klm.stderr
    );

    let n = case.get_node(&first).await;
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("completed"));
    let n = case.get_node(&second).await;
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("rolled-back"));
    assert!(!unschedulable(&n));
    assert_eq!(
        host_versions(&case).await,
        [Some("4.0.0".into()), Some("3.32.0".into())]
    );
    // The rollback reinstalled 3.32.0 on the failed node (a dispatcher that
    // adopted the failed 4.0.0 Job would have reinstalled nothing).
    let jobs = install_jobs(&case).await;
    assert!(
        jobs.iter()
            .any(|(node, _, tag, complete)| node == &second && tag == "3.32.0" && *complete),
        "{jobs:?}"
    );
    let record: Value = case.run_record().await.unwrap();
    assert_eq!(record["state"], "failed");
}
