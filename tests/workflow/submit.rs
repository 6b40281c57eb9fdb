//! What a submission carries: bad parameters are refused at submit time or
//! fail the first step with klm's message, changing nothing; values reach
//! helm literally.

use crate::flow::{Flow, argo_rig, verification_parameter};
use crate::support::CaseSpec;

#[tokio::test]
async fn bad_input_fails_before_anything_changes() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start(rig, CaseSpec::new("wf-bad", 1, "3.27.0"))
        .await
        .unwrap();
    let selector = format!("klm.test/case={}", flow.case.namespace);
    let before = flow.case.snapshot().await;

    // A mode outside the parameter's enum: Argo refuses it, at submit or
    // before the first step runs.
    let refused = flow
        .submit_output(
            None,
            &[("target-version", "3.28.0"), ("deployment-mode", "rolling")],
        )
        .await
        .unwrap();
    if refused.status.success() {
        let name = String::from_utf8_lossy(&refused.stdout)
            .trim()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let run = flow.wait(&name).await.unwrap();
        // Argo v3.7 does not enforce a parameter's enum for `--from`:
        // check-prerequisites refuses it, before anything changes.
        run.failed();
        assert!(!run.ran("cordon"), "{}", run.report());
        assert!(
            run.logs.contains("rolling"),
            "klm's refusal names the value\n{}",
            run.report()
        );
    } else {
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("rolling"),
            "the refusal names the value: {}",
            String::from_utf8_lossy(&refused.stderr)
        );
    }

    // Not a version: check-prerequisites fails with klm's message.
    let run = flow
        .run(
            None,
            &[("target-version", "latest"), ("node-selector", &selector)],
        )
        .await
        .unwrap();
    run.failed();
    assert!(
        run.logs.contains("latest"),
        "klm's message is in the step log\n{}",
        run.report()
    );
    assert!(!run.ran("cordon"), "{}", run.report());

    // A verification "pod" that is a Deployment.
    let deployment = verification_parameter(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ${TEST_POD}\nspec: {}\n",
    );
    let run = flow
        .run(
            None,
            &[
                ("target-version", "3.28.0"),
                ("node-selector", &selector),
                ("verification-pod", &deployment),
            ],
        )
        .await
        .unwrap();
    run.failed();
    assert!(
        run.logs.contains("Deployment"),
        "klm says what is wrong\n{}",
        run.report()
    );

    assert_eq!(
        flow.case.snapshot().await,
        before,
        "bad input changed the cluster"
    );
}

#[tokio::test]
async fn helm_set_values_reach_helm_literally() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start(rig, CaseSpec::new("wf-values", 1, "3.27.0"))
        .await
        .unwrap();
    // A chart that lets a submission carry extra kata-deploy values.
    flow.case
        .helm_admin(&[
            "upgrade".into(),
            format!("klm-{}", flow.case.namespace),
            // The published chart, whose values name the image under test.
            flow.argo.published().chart_ref(),
            "--version".into(),
            flow.argo.published().chart_version.clone(),
            "--plain-http".into(),
            "--namespace".into(),
            flow.case.namespace.clone(),
            // The published chart's own values (the image by digest; plain
            // --reuse-values would keep the installed chart's defaults), then
            // the values the case set.
            "--reset-then-reuse-values".into(),
            "--set".into(),
            "submitOverrides.helmSetValues=true".into(),
        ])
        .await
        .unwrap();
    let literal = r#"it's "$HOME" and `id`"#;
    let selector = format!("klm.test/case={}", flow.case.namespace);
    let set = format!("klmTestNote={literal}");
    let run = flow
        .run(
            None,
            &[
                ("target-version", "3.28.0"),
                ("node-selector", &selector),
                ("helm-set-values", &set),
            ],
        )
        .await
        .unwrap();
    run.succeeded();
    assert_eq!(
        flow.release_values().await["klmTestNote"].as_str(),
        Some(literal),
        "{}",
        run.report()
    );
}

#[tokio::test]
async fn a_selection_that_matches_nothing_changes_nothing() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start(rig, CaseSpec::new("wf-none", 1, "3.27.0"))
        .await
        .unwrap();
    let revisions = flow.release_revisions().await;
    let before = flow.case.snapshot().await;
    let run = flow
        .run(
            None,
            &[
                ("target-version", "3.28.0"),
                ("node-selector", "klm.test/nothing=here"),
            ],
        )
        .await
        .unwrap();
    // Nothing to upgrade: the release is not upgraded, no node is touched.
    assert_eq!(
        flow.release_revisions().await,
        revisions,
        "{}",
        run.report()
    );
    assert_eq!(
        flow.case.release_state().await.1,
        "3.27.0",
        "{}",
        run.report()
    );
    let after = flow.case.snapshot().await;
    let record = flow.case.run_record().await;
    assert!(
        after == before || record.is_some_and(|r| r["state"] != "running"),
        "{}",
        run.report()
    );
}
