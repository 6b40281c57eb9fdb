//! A larger run: thirty nodes node by node. Its module sorts first so that
//! the test harness starts it first: it takes longest, and the other tests
//! run beside it.

use crate::flow::{Flow, argo_rig};
use crate::support::CaseSpec;
use crate::upgrade::{assert_all_completed, selector};

#[tokio::test]
async fn thirty_nodes_one_by_one() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start(rig, CaseSpec::new("wf-30", 30, "3.27.0"))
        .await
        .unwrap();
    let selector = selector(&flow);
    let name = flow
        .submit(
            None,
            &[
                ("target-version", "3.28.0"),
                ("batch-size", "1"),
                ("node-selector", &selector),
            ],
        )
        .await
        .unwrap();
    // About half a minute a wave on a 2-core machine, shared with the other tests.
    let run = flow
        .wait_within(&name, std::time::Duration::from_secs(50 * 60))
        .await
        .unwrap();
    run.succeeded();
    assert_all_completed(&flow, "3.28.0", &run.report()).await;
}
