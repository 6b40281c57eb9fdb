//! Runs that hold between waves: a canary gate's soak (then the canary is
//! verified again) and approval (`argo resume`), a node that goes bad during
//! the soak (rolled back; the run stops), and a maintenance window (the
//! first wave waits for it to open).

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::Api;
use kube::api::DynamicObject;
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::await_condition;
use serde_json::{Value, json};

use crate::flow::{Flow, STATUS, annotation, argo_rig, verification_pod_broken_at};
use crate::support::CaseSpec;
use crate::upgrade::{assert_all_completed, selector};

/// Waits, watching the run record, until the run is held for `waiting_for`;
/// returns the record then.
async fn await_held(flow: &Flow, waiting_for: &str) -> Value {
    let api: Api<ConfigMap> = Api::namespaced(flow.case.admin.clone(), &flow.case.namespace);
    let name = format!("{}-klm-run", flow.case.release);
    let record = |cm: &ConfigMap| -> Option<Value> {
        serde_json::from_str(cm.data.as_ref()?.get("record.json")?).ok()
    };
    let held = await_condition(api, &name, |cm: Option<&ConfigMap>| {
        cm.and_then(record)
            .is_some_and(|r| r["held"]["waitingFor"] == waiting_for)
    });
    let found = tokio::time::timeout(Duration::from_secs(600), held)
        .await
        .unwrap_or_else(|_| panic!("the run was not held for {waiting_for} within 10 minutes"))
        .unwrap()
        .expect("the run record");
    record(&found).unwrap()
}

/// Waits, watching the workflow, until a suspend step named `step` waits.
async fn await_suspended_at(flow: &Flow, name: &str, step: &str) {
    let api: Api<DynamicObject> = Api::namespaced_with(
        flow.case.admin.clone(),
        &flow.argo_namespace,
        &crate::flow::workflow_resource(),
    );
    let suspended = await_condition(api, name, |wf: Option<&DynamicObject>| {
        wf.and_then(|wf| wf.data["status"]["nodes"].as_object().cloned())
            .is_some_and(|nodes| {
                nodes.values().any(|n| {
                    n["type"] == "Suspend" && n["phase"] == "Running" && n["displayName"] == step
                })
            })
    });
    tokio::time::timeout(Duration::from_secs(120), suspended)
        .await
        .unwrap_or_else(|_| panic!("workflow {name} did not suspend at {step} within 2 minutes"))
        .unwrap();
}

/// A case of `nodes` nodes with the chart's pod decided by the rig from the
/// host (it passes on every version until a node is told otherwise), and a
/// run to 3.28.0 of its nodes submitted with `params`; the workflow's name.
async fn submit_gated(
    prefix: &str,
    nodes: usize,
    params: &[(&str, &str)],
) -> Option<(Flow, String)> {
    let rig = argo_rig().await?;
    let flow = Flow::start(rig, CaseSpec::new(prefix, nodes, "3.27.0"))
        .await
        .unwrap();
    flow.install_chart(&verification_pod_broken_at("9.9.9", &[]))
        .await
        .unwrap();
    let selector = selector(&flow);
    let mut all = vec![
        ("target-version", "3.28.0"),
        ("node-selector", selector.as_str()),
    ];
    all.extend_from_slice(params);
    let name = flow.submit(None, &all).await.unwrap();
    Some((flow, name))
}

/// When each wave's `phase` (a container of its pod) started, in order.
fn pod_starts(workflow: &Value, phase: &str) -> Vec<jiff::Timestamp> {
    let mut starts: Vec<jiff::Timestamp> = workflow["status"]["nodes"]
        .as_object()
        .into_iter()
        .flat_map(|nodes| nodes.values())
        .filter(|n| n["type"] == "Container" && n["displayName"] == phase)
        .filter_map(|n| n["startedAt"].as_str()?.parse().ok())
        .collect();
    starts.sort();
    starts
}

/// The Events klm recorded on a node, by reason, in order.
async fn event_reasons(flow: &Flow, node: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::all(flow.case.admin.clone());
    let list = events
        .list(&kube::api::ListParams::default().fields(&format!("involvedObject.name={node}")))
        .await
        .unwrap();
    let mut items = list.items;
    items.sort_by_key(|e| {
        e.event_time
            .clone()
            .map(|t| t.0)
            .or(e.first_timestamp.clone().map(|t| t.0))
    });
    items.into_iter().filter_map(|e| e.reason).collect()
}

#[tokio::test]
async fn a_canary_gate_soaks_verifies_again_and_waits_for_argo_resume() {
    let gate = [
        ("canary-size", "1"),
        ("batch-size", "2"),
        ("gate", "canary"),
        ("gate-soak", "5s"),
        ("gate-approval", "true"),
    ];
    let Some((flow, name)) = submit_gated("wf-gate", 3, &gate).await else {
        return;
    };
    let record = await_held(&flow, "approval").await;
    let canary = flow.case.node(0).to_string();
    // Held before wave 2: the canary completed, soaked and verified again;
    // the others untouched; the command that approves is the workflow's.
    let gate = &record["gates"][0];
    assert_eq!(gate["beforeWave"], 2, "{record:#}");
    assert_eq!(gate["reverify"], json!([canary]), "{record:#}");
    assert_eq!(gate["passage"]["reverified"], true, "{record:#}");
    assert!(gate["passage"]["soakUntil"].is_string(), "{record:#}");
    assert!(gate["passage"].get("approved").is_none(), "{record:#}");
    assert_eq!(record["held"]["wave"], 2);
    let approve_with = record["held"]["approveWith"].as_str().unwrap_or_default();
    assert!(
        approve_with.starts_with(&format!("argo resume {name} -n ")),
        "{approve_with}"
    );
    let nodes = flow.nodes().await;
    assert_eq!(
        annotation(&nodes[&canary], STATUS).as_deref(),
        Some("completed")
    );
    for i in 1..3 {
        assert_eq!(
            annotation(&nodes[flow.case.node(i)], STATUS),
            None,
            "node {i} waits"
        );
    }
    let reasons = event_reasons(&flow, &canary).await;
    let passed = reasons
        .iter()
        .filter(|r| *r == "KataVerificationPassed")
        .count();
    assert_eq!(
        passed, 2,
        "verified at the upgrade and again after the soak: {reasons:?}"
    );
    // The workflow is suspended at the approval (no pod runs for it).
    await_suspended_at(&flow, &name, "approval").await;

    let resume = flow.argo().args(["resume", &name]).output().await.unwrap();
    assert!(
        resume.status.success(),
        "argo resume: {}",
        String::from_utf8_lossy(&resume.stderr)
    );
    let run = flow.wait(&name).await.unwrap();
    run.succeeded();
    let report = run.report();
    assert_all_completed(&flow, "3.28.0", &report).await;
    let record = flow.case.run_record().await.unwrap();
    assert!(
        record["gates"][0]["passage"]["approved"].is_string(),
        "{record:#}"
    );
    assert!(
        record.get("held").is_none(),
        "a finished run waits for nothing: {record:#}"
    );
}

#[tokio::test]
async fn a_canary_that_goes_bad_during_the_soak_is_rolled_back_and_the_run_stops() {
    let gate = [
        ("canary-size", "1"),
        ("gate", "canary"),
        ("gate-soak", "20s"),
    ];
    let Some((flow, name)) = submit_gated("wf-soak", 3, &gate).await else {
        return;
    };
    await_held(&flow, "soak").await;
    // The canary passed its verification; now 3.28.0 goes bad on it.
    let canary = flow.case.node(0).to_string();
    let nodes: Api<Node> = Api::all(flow.case.admin.clone());
    let patch = json!({"metadata": {"annotations": {"rig.klm.test/broken-version": "3.28.0"}}});
    nodes
        .patch(&canary, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let run = flow.wait(&name).await.unwrap();
    run.failed();
    let report = run.report();
    let found = flow.nodes().await;
    let canary_node = &found[&canary];
    assert_eq!(
        annotation(canary_node, STATUS).as_deref(),
        Some("rolled-back"),
        "{report}"
    );
    assert_eq!(
        crate::flow::host_version(canary_node).as_deref(),
        Some("3.27.0"),
        "{report}"
    );
    assert!(
        !crate::flow::unschedulable(canary_node),
        "back in service\n{report}"
    );
    for i in 1..3 {
        let node = &found[flow.case.node(i)];
        assert_eq!(
            annotation(node, STATUS),
            None,
            "node {i} untouched\n{report}"
        );
        assert_eq!(
            crate::flow::host_version(node).as_deref(),
            Some("3.27.0"),
            "{report}"
        );
    }
    let record = flow.case.run_record().await.unwrap();
    assert_eq!(record["state"], "failed", "{record:#}");
    let failure = record["failure"].as_str().unwrap_or_default();
    assert!(
        failure.contains("failed verification after the soak"),
        "{failure}"
    );
    let reasons = event_reasons(&flow, &canary).await;
    assert!(
        reasons.contains(&"KataVerificationFailed".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"KataRolledBack".to_string()),
        "{reasons:?}"
    );
    // No later wave started: the only cordon was the canary's.
    let workflow = flow.workflow(&name).await.unwrap();
    assert_eq!(pod_starts(&workflow, "cordon").len(), 1, "{report}");
}

#[tokio::test]
async fn the_first_wave_waits_for_the_window_to_open() {
    // A window hours away: closed however long the run takes to reach its
    // first wave on a loaded machine, so the verdict never depends on speed.
    let utc = jiff::tz::TimeZone::UTC;
    let hhmm = |t: jiff::Timestamp| t.to_zoned(utc.clone()).strftime("%H:%M").to_string();
    let now = jiff::Timestamp::now();
    let opens = now + jiff::SignedDuration::from_hours(3);
    let window = format!(
        "{}-{} UTC",
        hhmm(opens),
        hhmm(opens + jiff::SignedDuration::from_mins(30))
    );
    let params = [("batch-size", "2"), ("window", window.as_str())];
    let Some((flow, name)) = submit_gated("wf-window", 2, &params).await else {
        return;
    };
    let record = await_held(&flow, "window").await;
    assert_eq!(record["held"]["wave"], 1, "{record:#}");
    let until: jiff::Timestamp = record["held"]["until"].as_str().unwrap().parse().unwrap();
    let opening = until.to_zoned(utc.clone());
    assert_eq!(
        (opening.strftime("%H:%M").to_string(), opening.second()),
        (hhmm(opens), 0),
        "held until the window's opening: {record:#}"
    );
    assert!(until > jiff::Timestamp::now(), "{record:#}");
    await_suspended_at(&flow, &name, "timer").await;
    for (node_name, node) in flow.nodes().await {
        assert_eq!(
            annotation(&node, STATUS),
            None,
            "{node_name} waits for the window"
        );
    }
    // The window moves to now (as an operator would change it), and the
    // suspended wait is cut short: the hold runs klm gate again, which finds
    // the window open and lets the wave start.
    let open_now = format!(
        "{}-{} UTC",
        hhmm(jiff::Timestamp::now() - jiff::SignedDuration::from_mins(5)),
        hhmm(jiff::Timestamp::now() + jiff::SignedDuration::from_mins(60))
    );
    set_window(&flow, &open_now).await;
    let resumed_at = jiff::Timestamp::now();
    let resume = flow.argo().args(["resume", &name]).output().await.unwrap();
    assert!(
        resume.status.success(),
        "argo resume: {}",
        String::from_utf8_lossy(&resume.stderr)
    );
    let run = flow.wait(&name).await.unwrap();
    run.succeeded();
    let report = run.report();
    assert_all_completed(&flow, "3.28.0", &report).await;
    // The wave's first step started only once the window was open.
    let workflow = flow.workflow(&name).await.unwrap();
    let cordon_started = pod_starts(&workflow, "cordon")[0];
    assert!(
        cordon_started >= resumed_at - jiff::SignedDuration::from_secs(1),
        "cordon at {cordon_started}, window open at {resumed_at}\n{report}"
    );
}

/// Changes the window recorded for the run (what klm gate reads).
async fn set_window(flow: &Flow, window: &str) {
    let api: Api<ConfigMap> = Api::namespaced(flow.case.admin.clone(), &flow.case.namespace);
    let name = format!("{}-klm-run", flow.case.release);
    let cm = api.get(&name).await.unwrap();
    let mut record: Value =
        serde_json::from_str(cm.data.as_ref().unwrap().get("record.json").unwrap()).unwrap();
    record["window"] = Value::String(window.to_string());
    let patch = serde_json::json!({"data": {"record.json": record.to_string()}});
    api.patch(
        &name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_metric_that_goes_bad_at_the_canary_gate_rolls_it_back_and_the_run_stops() {
    use klm_rig::metrics::{FAILURES_METRIC, SANDBOX_FAILURES_AT};
    let Some(rig) = argo_rig().await else { return };
    let Some(prometheus) = rig.prometheus().await.unwrap() else {
        return;
    };
    let flow = Flow::start(rig, CaseSpec::new("wf-metric", 3, "3.27.0"))
        .await
        .unwrap();
    flow.install_chart(&verification_pod_broken_at("9.9.9", &[]))
        .await
        .unwrap();
    // The canary passes its verification at 3.28.0, but fails to create
    // sandboxes there: its failure counter climbs.
    let canary = flow.case.node(0).to_string();
    let nodes: Api<Node> = Api::all(flow.case.admin.clone());
    let patch = json!({"metadata": {"annotations": {SANDBOX_FAILURES_AT: "3.28.0"}}});
    nodes
        .patch(&canary, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let selector = selector(&flow);
    let query = format!(
        "{FAILURES_METRIC}{{node=~\"{}-.*\"}} > 0",
        flow.case.namespace
    );
    let params = [
        ("target-version", "3.28.0"),
        ("node-selector", selector.as_str()),
        ("canary-size", "1"),
        ("gate", "canary"),
        ("gate-query", query.as_str()),
        ("prometheus-url", prometheus.url.as_str()),
        ("gate-query-for", "5s"),
        ("gate-query-interval", "1s"),
    ];
    let name = flow.submit(None, &params).await.unwrap();
    let run = flow.wait(&name).await.unwrap();
    run.failed();
    let report = run.report();
    let found = flow.nodes().await;
    let canary_node = &found[&canary];
    assert_eq!(
        annotation(canary_node, STATUS).as_deref(),
        Some("rolled-back"),
        "{report}"
    );
    assert_eq!(
        crate::flow::host_version(canary_node).as_deref(),
        Some("3.27.0"),
        "{report}"
    );
    for i in 1..3 {
        let node = &found[flow.case.node(i)];
        assert_eq!(
            annotation(node, STATUS),
            None,
            "node {i} untouched\n{report}"
        );
    }
    let record = flow.case.run_record().await.unwrap();
    assert_eq!(record["state"], "failed", "{record:#}");
    let failure = record["failure"].as_str().unwrap_or_default();
    assert!(
        failure.contains("the metric query") && failure.contains(&format!("node=\"{canary}\"")),
        "{failure}\n{report}"
    );
    let workflow = flow.workflow(&name).await.unwrap();
    assert_eq!(pod_starts(&workflow, "cordon").len(), 1, "{report}");
}
