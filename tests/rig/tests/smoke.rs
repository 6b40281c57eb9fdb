//! Smoke tests that prove the rig is real: nodes become Ready, the fixture
//! kata-deploy installs with helm and runs on every node, DaemonSet and Job
//! controllers act, pods meet the fates their annotations ask for, RBAC
//! refuses what a ServiceAccount lacks, and the simulator plays kata-deploy as
//! the real versions behave (a probe-less install after Ready, 3.27's cleanup
//! on delete, 4.1's counted prunes, per-node Jobs named for sanitised nodes).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use klm_rig::simulator::{INSTALLED_VERSION, KATA_RUNTIME_LABEL};
use klm_rig::{NodeSpec, Rig};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::wait::await_condition;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

const CASE: &str = "klm.test/case";

async fn nodes(rig: &Rig, namespace: &str, count: usize) -> Result<Vec<String>> {
    let names: Vec<String> = (1..=count).map(|i| format!("{namespace}-n{i}")).collect();
    let specs: Vec<NodeSpec> = names
        .iter()
        .map(|n| NodeSpec::named(n.clone()).label(CASE, namespace))
        .collect();
    rig.add_nodes(&specs).await?;
    Ok(names)
}

fn charts() -> PathBuf {
    let dir = klm_rig::control_plane::workspace_root().join("target/rig/charts");
    klm_rig::charts::package_all(&dir).expect("packaging the fixture chart");
    dir
}

async fn helm(rig: &Rig, args: &[&str]) -> Result<String> {
    let output = tokio::process::Command::new(rig.helm())
        .args(args)
        .arg("--kubeconfig")
        .arg(rig.kubeconfig())
        .output()
        .await?;
    if !output.status.success() {
        bail!("helm {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn install(rig: &Rig, namespace: &str, version: &str, extra: &[String]) -> Result<()> {
    let chart = charts()
        .join(format!("kata-deploy-{version}.tgz"))
        .display()
        .to_string();
    let mut args: Vec<String> = [
        "install",
        "kata-deploy",
        &chart,
        "-n",
        namespace,
        "--wait",
        "--timeout",
        "120s",
    ]
    .map(String::from)
    .to_vec();
    for value in [
        format!("nodeSelector.klm\\.test/case={namespace}"),
        format!("env.multiInstallSuffix={namespace}"),
    ]
    .iter()
    .chain(extra)
    {
        args.push("--set".into());
        args.push(value.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    helm(rig, &args).await.map(|_| ())
}

/// Waits, by watching, until `check` holds for the case's nodes.
async fn until_nodes(
    client: &Client,
    namespace: &str,
    what: &str,
    check: impl Fn(&[Node]) -> bool,
) -> Result<Vec<Node>> {
    let api: Api<Node> = Api::all(client.clone());
    let selector = format!("{CASE}={namespace}");
    let mut events = std::pin::pin!(
        watcher(api.clone(), watcher::Config::default().labels(&selector)).applied_objects()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let listed = api
            .list(&ListParams::default().labels(&selector))
            .await?
            .items;
        if check(&listed) {
            return Ok(listed);
        }
        if tokio::time::timeout_at(deadline, events.next())
            .await
            .is_err()
        {
            bail!("nodes of {namespace} never reached: {what}");
        }
    }
}

fn installed(node: &Node) -> Option<&str> {
    node.annotations()
        .get(INSTALLED_VERSION)
        .map(String::as_str)
}

#[tokio::test]
async fn nodes_become_ready_with_realistic_labels() -> Result<()> {
    let rig = Rig::shared().await?;
    let namespace = rig.namespace("smoke-nodes").await?;
    let names = nodes(rig, &namespace, 3).await?;
    let client = rig.client().await?;
    for name in &names {
        let node = Api::<Node>::all(client.clone()).get(name).await?;
        assert!(klm_rig::nodes::is_ready(&node), "{name} is Ready");
        assert_eq!(node.labels().get("kubernetes.io/hostname"), Some(name));
        assert_eq!(
            node.labels().get("kubernetes.io/arch").map(String::as_str),
            Some("amd64")
        );
    }
    Ok(())
}

#[tokio::test]
async fn daemonset_mode_installs_on_every_node_and_a_deleted_pod_comes_back_on_its_node_only()
-> Result<()> {
    let rig = Rig::shared().await?;
    let namespace = rig.namespace("smoke-ds").await?;
    let names = nodes(rig, &namespace, 3).await?;
    install(
        rig,
        &namespace,
        "3.27.0",
        &["updateStrategy.type=OnDelete".into()],
    )
    .await?;
    let client = rig.client().await?;
    let listed = until_nodes(&client, &namespace, "kata 3.27.0 installed", |ns| {
        ns.len() == 3 && ns.iter().all(|n| installed(n) == Some("3.27.0"))
    })
    .await?;
    assert!(
        listed
            .iter()
            .all(|n| n.labels().get(KATA_RUNTIME_LABEL).map(String::as_str) == Some("true"))
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let by_node = |list: Vec<Pod>| -> BTreeMap<String, String> {
        list.into_iter()
            .filter_map(|p| Some((p.spec.as_ref()?.node_name.clone()?, p.uid()?)))
            .collect()
    };
    let before = by_node(
        pods.list(&ListParams::default().labels(&format!("name=kata-deploy-{namespace}")))
            .await?
            .items,
    );
    assert_eq!(before.len(), 3, "one pod per node");
    let victim = before
        .iter()
        .find(|(node, _)| *node == &names[1])
        .map(|(_, uid)| uid.clone())
        .unwrap();
    let victim_name = pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|p| p.uid().as_deref() == Some(&victim))
        .unwrap()
        .name_any();
    pods.delete(&victim_name, &DeleteParams::default()).await?;
    let replaced = tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(pods.clone(), &victim_name, |p: Option<&Pod>| p.is_none()),
    )
    .await;
    assert!(replaced.is_ok(), "the deleted pod went away");
    // A replacement on the same node, the others untouched.
    let mut events =
        std::pin::pin!(watcher(pods.clone(), watcher::Config::default()).applied_objects());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let after = by_node(
            pods.list(&ListParams::default().labels(&format!("name=kata-deploy-{namespace}")))
                .await?
                .items,
        );
        if after.len() == 3 {
            assert_ne!(
                after[&names[1]], before[&names[1]],
                "the pod on {} was recreated",
                names[1]
            );
            assert_eq!(after[&names[0]], before[&names[0]]);
            assert_eq!(after[&names[2]], before[&names[2]]);
            return Ok(());
        }
        tokio::time::timeout_at(deadline, events.next()).await?;
    }
}

#[tokio::test]
async fn job_mode_installs_only_on_job_nodes() -> Result<()> {
    let rig = Rig::shared().await?;
    let namespace = rig.namespace("smoke-job").await?;
    let names = nodes(rig, &namespace, 3).await?;
    install(
        rig,
        &namespace,
        "3.32.0",
        &[
            "deploymentMode=job".into(),
            format!("job.nodes={{{},{}}}", names[0], names[2]),
            "job.parallelism=1".into(),
        ],
    )
    .await?;
    let client = rig.client().await?;
    let jobs: Vec<String> = Api::<Job>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().labels("kata-deploy/stage=install"))
        .await?
        .items
        .iter()
        .map(|j| j.name_any())
        .collect();
    let mut expected = vec![
        format!("kata-deploy-{namespace}-install-{}", names[0]),
        format!("kata-deploy-{namespace}-install-{}", names[2]),
    ];
    expected.sort();
    let mut jobs = jobs;
    jobs.sort();
    assert_eq!(jobs, expected);
    let listed = until_nodes(&client, &namespace, "installed on the job nodes", |ns| {
        ns.iter().filter(|n| installed(n) == Some("3.32.0")).count() == 2
    })
    .await?;
    let untouched: Vec<String> = listed
        .iter()
        .filter(|n| installed(n).is_none())
        .map(|n| n.name_any())
        .collect();
    assert_eq!(untouched, vec![names[1].clone()]);
    Ok(())
}

async fn run_pod(
    client: &Client,
    namespace: &str,
    name: &str,
    node: &str,
    annotations: &[(&str, &str)],
) -> Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
        "spec": {"nodeName": node, "restartPolicy": "Never", "containers": [{"name": "verify", "image": "registry.invalid/verify:1"}]}
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let done = tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(pods, name, |p: Option<&Pod>| {
            matches!(
                p.and_then(|p| p.status.as_ref()?.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        }),
    )
    .await??;
    Ok(done.expect("pod exists"))
}

#[tokio::test]
async fn verification_pods_can_be_made_to_pass_and_to_fail_per_node() -> Result<()> {
    let rig = Rig::shared().await?;
    let namespace = rig.namespace("smoke-verify").await?;
    let names = nodes(rig, &namespace, 2).await?;
    let client = rig.client().await?;
    let fail_key = format!("node.rig.klm.test/{}", names[1]);
    let annotations = [
        ("rig.klm.test/outcome", "succeed"),
        (fail_key.as_str(), "fail"),
        ("rig.klm.test/exit-code", "7"),
    ];
    let passed = run_pod(&client, &namespace, "verify-a", &names[0], &annotations).await?;
    let failed = run_pod(&client, &namespace, "verify-b", &names[1], &annotations).await?;
    assert_eq!(passed.status.unwrap().phase.as_deref(), Some("Succeeded"));
    let status = failed.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let exit = status.container_statuses.unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap()
        .exit_code;
    assert_eq!(exit, 7);
    Ok(())
}

#[tokio::test]
async fn a_service_account_is_refused_what_it_was_not_granted() -> Result<()> {
    let rig = Rig::shared().await?;
    let namespace = rig.namespace("smoke-rbac").await?;
    let client = rig.client().await?;
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("nobody".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    Api::<ServiceAccount>::namespaced(client, &namespace)
        .create(&PostParams::default(), &account)
        .await?;
    let kubeconfig = rig.service_account_kubeconfig(&namespace, "nobody").await?;
    let nobody = klm_rig::rig::client_for(&kubeconfig).await?;
    let denied = Api::<Node>::all(nobody)
        .list(&ListParams::default())
        .await
        .expect_err("listing nodes is not granted");
    assert!(
        matches!(&denied, kube::Error::Api(e) if e.code == 403),
        "{denied:?}"
    );
    let user = format!("system:serviceaccount:{namespace}:nobody");
    let audit = rig.audit_requests(&user)?;
    assert!(
        audit
            .iter()
            .any(|r| r.verb == "list" && r.resource == "nodes" && r.code == 403),
        "the audit log shows the refusal: {audit:?}"
    );
    Ok(())
}

/// Sets an annotation on a node, as a test's knob.
async fn annotate(client: &Client, node: &str, key: &str, value: &str) -> Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
    Api::<Node>::all(client.clone())
        .patch(
            node,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn kata_deploy_without_probes_installs_after_ready_and_3_27_uninstalls_when_deleted()
-> Result<()> {
    let rig = Rig::shared().await?;
    let namespace = rig.namespace("smoke-probeless").await?;
    let names = nodes(rig, &namespace, 1).await?;
    let client = rig.client().await?;
    annotate(
        &client,
        &names[0],
        klm_rig::simulator::PROBELESS_INSTALL_SECS,
        "3",
    )
    .await?;
    // helm --wait returns once the pod is Ready, which 3.27 is at once.
    install(
        rig,
        &namespace,
        "3.27.0",
        &["updateStrategy.type=OnDelete".into()],
    )
    .await?;
    let ready_at = std::time::Instant::now();
    let node = Api::<Node>::all(client.clone()).get(&names[0]).await?;
    assert_eq!(installed(&node), None, "Ready, and not installed yet");
    until_nodes(&client, &namespace, "3.27.0 installed", |ns| {
        ns.iter().all(|n| installed(n) == Some("3.27.0"))
    })
    .await?;
    assert!(
        ready_at.elapsed() >= Duration::from_secs(2),
        "the install landed a while after Ready"
    );

    // 3.27's preStop cleanup: deleting the pod uninstalls, the label stays.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pod = pods
        .list(&ListParams::default().labels(&format!("name=kata-deploy-{namespace}")))
        .await?
        .items
        .remove(0);
    pods.delete(&pod.name_any(), &DeleteParams::default())
        .await?;
    let after = until_nodes(&client, &namespace, "3.27.0 uninstalled", |ns| {
        ns.iter().all(|n| installed(n).is_none())
    })
    .await?;
    assert_eq!(
        after[0]
            .labels()
            .get(KATA_RUNTIME_LABEL)
            .map(String::as_str),
        Some("true"),
        "kata-deploy's cleanup keeps the label"
    );
    Ok(())
}

#[tokio::test]
async fn a_4_1_dispatcher_prunes_marked_nodes_it_is_not_given_and_counts_each_prune() -> Result<()>
{
    let rig = Rig::shared().await?;
    let namespace = rig.namespace("smoke-prune").await?;
    let names = nodes(rig, &namespace, 2).await?;
    let both = format!("job.nodes={{{},{}}}", names[0], names[1]);
    install(
        rig,
        &namespace,
        "4.1.0",
        &["deploymentMode=job".into(), both],
    )
    .await?;
    let client = rig.client().await?;
    let mark = format!("kata-deploy.katacontainers.io/{namespace}");
    until_nodes(&client, &namespace, "4.1.0 installed and marked", |ns| {
        ns.iter().all(|n| {
            installed(n) == Some("4.1.0")
                && n.labels().get(&mark).map(String::as_str) == Some("true")
        })
    })
    .await?;
    let chart = charts().join("kata-deploy-4.1.0.tgz").display().to_string();
    let first = format!("job.nodes={{{}}}", names[0]);
    helm(
        rig,
        &[
            "upgrade",
            "kata-deploy",
            &chart,
            "-n",
            &namespace,
            "--reuse-values",
            "--set",
            &first,
            "--wait",
            "--timeout",
            "120s",
        ],
    )
    .await?;
    let after = until_nodes(&client, &namespace, "the second node pruned", |ns| {
        ns.iter().any(|n| installed(n).is_none())
    })
    .await?;
    let pruned = after.iter().find(|n| n.name_any() == names[1]).unwrap();
    assert_eq!(installed(pruned), None);
    assert_eq!(pruned.labels().get(KATA_RUNTIME_LABEL), None);
    assert_eq!(pruned.labels().get(&mark), None);
    assert_eq!(
        pruned
            .annotations()
            .get(klm_rig::simulator::PRUNES)
            .map(String::as_str),
        Some("1")
    );
    let kept = after.iter().find(|n| n.name_any() == names[0]).unwrap();
    assert_eq!(installed(kept), Some("4.1.0"));
    assert_eq!(kept.annotations().get(klm_rig::simulator::PRUNES), None);
    Ok(())
}

#[tokio::test]
async fn per_node_jobs_carry_the_sanitised_node_and_its_real_name() -> Result<()> {
    let rig = Rig::shared().await?;
    let namespace = rig.namespace("smoke-dots").await?;
    // Short enough for `<prefix>-<node>` to fit a name (longer ones are hashed).
    let node = format!("ip-10-0-1.{namespace}");
    rig.add_nodes(&[NodeSpec::named(node.clone()).label(CASE, &namespace)])
        .await?;
    install(
        rig,
        &namespace,
        "3.32.0",
        &[
            "deploymentMode=job".into(),
            format!("job.nodeSelector.klm\\.test/case={namespace}"),
        ],
    )
    .await?;
    let jobs = Api::<Job>::namespaced(rig.client().await?, &namespace)
        .list(&ListParams::default().labels("kata-deploy/stage=install"))
        .await?
        .items;
    assert_eq!(jobs.len(), 1);
    let sanitised = node.replace('.', "-");
    assert_eq!(
        jobs[0].name_any(),
        format!("kata-deploy-{namespace}-install-{sanitised}")
    );
    assert_eq!(
        jobs[0].labels()["kata-deploy-job-dispatcher/node"],
        sanitised
    );
    assert_eq!(
        jobs[0].labels()["kata-deploy-job-dispatcher/owner"],
        format!("kata-deploy-{namespace}-install")
    );
    assert_eq!(
        jobs[0].annotations()["kata-deploy-job-dispatcher/node-name"],
        node
    );
    Ok(())
}
