//! A wait survives an apiserver restart: klm's watches reconnect and resume
//! instead of failing or hanging. Its own test binary, so the restart (a few
//! seconds without an apiserver) disturbs no other test.

#[allow(dead_code)]
#[path = "../integration/support.rs"]
mod support;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use klm_rig::verification_pod::VerificationPod;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use support::{Case, CaseSpec};

#[tokio::test]
async fn a_verification_wait_survives_an_apiserver_restart() {
    let case = Case::start(CaseSpec::new("restart", 1, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Runs, and stays Running until the test lets it succeed.
    let pod = VerificationPod::new("hold")
        .tolerating_everything()
        .write(dir.path(), "hold");
    let pod = pod.display().to_string();
    let ns = case.namespace.clone();
    let args = [
        "verify",
        "--nodes",
        case.node(0),
        "--verification-pod",
        &pod,
        "--verification-namespace",
        &ns,
        "--verification-timeout",
        "120s",
        "--run-id",
        "wf-restart",
    ];
    let verify = case.klm(&args);
    let drive = async {
        let pods: Api<Pod> = Api::namespaced(case.admin.clone(), &ns);
        let selector = "katacontainers.io/kata-lifecycle-manager-run=wf-restart";
        let running = watcher(pods.clone(), watcher::Config::default().labels(selector))
            .applied_objects()
            .filter_map(|p| async move { p.ok() })
            .filter(|p| {
                let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                async move { running }
            });
        let pod = tokio::time::timeout(Duration::from_secs(60), std::pin::pin!(running).next())
            .await
            .expect("the verification pod runs")
            .unwrap();
        case.rig
            .restart_apiserver()
            .await
            .expect("apiserver restarted");
        // A new client: the old one's connections went down with the apiserver.
        let admin = case.rig.client().await.unwrap();
        let patch =
            serde_json::json!({"metadata": {"annotations": {"rig.klm.test/outcome": "succeed"}}});
        Api::<Pod>::namespaced(admin, &ns)
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
    };
    let (out, ()) = tokio::join!(verify, drive);
    let out = out.ok();
    assert!(out.stdout.contains("passed"), "{}", out.stdout);
}
