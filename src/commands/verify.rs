//! `klm verify`: run the user's verification pod on each node.

use clap::Args as ClapArgs;
use futures::future::try_join_all;

use crate::annotations::NodeStatus;
use crate::args::{GlobalArgs, NodesArgs, ReleaseArgs, RunArgs, VerificationArgs};
use crate::error::{ExitStatus, UserError};
use crate::nodes::hold;
use crate::output::{self, Report};
use crate::run_record::{NodeProgress, Records};
use crate::step;
use crate::verification::{NodeVerdict, VerificationPod, verify_nodes};

/// Flags of `klm verify`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Nodes are verified concurrently; a pod that cannot be pulled, crashes or cannot be scheduled\nfails within seconds, with its status, events and logs. The pods are deleted afterwards\n(a failed one is kept with --keep-failed). Nodes that pass are recorded as verified in the run.\n\nExamples:\n  klm verify --nodes worker-1 --verification-pod verify.yaml\n  klm verify --nodes worker-1,worker-2 --verification-pod-base64 \"$(base64 -w0 verify.yaml)\" -o json"
)]
pub struct Args {
    /// The nodes.
    #[command(flatten)]
    pub nodes: NodesArgs,

    /// The verification pod.
    #[command(flatten)]
    pub verification: VerificationArgs,

    /// Which release (its run record notes the verified nodes).
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// Which run (labels the pods it creates).
    #[command(flatten)]
    pub run: RunArgs,
}

/// What verify found.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Nodes whose pod succeeded.
    pub passed: Vec<String>,
    /// Nodes whose pod did not.
    pub failed: Vec<String>,
    /// Every node's verdict.
    pub nodes: Vec<NodeVerdict>,
}

impl Report for Verification {
    fn text(&self) -> String {
        self.nodes
            .iter()
            .map(|v| match (&v.reason, v.passed) {
                (_, true) => format!(
                    "{}: passed (pod {} succeeded in {:.1}s)",
                    v.node, v.pod, v.seconds
                ),
                (reason, false) => format!(
                    "{}: FAILED after {:.1}s (pod {}{}): {}",
                    v.node,
                    v.seconds,
                    v.pod,
                    if v.kept { ", kept" } else { "" },
                    reason.as_deref().unwrap_or("")
                ),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let Some(template) = VerificationPod::from_args(&args.verification)? else {
        return Err(UserError::bad_input("no verification pod given")
            .hint("pass --verification-pod FILE or --verification-pod-base64 (or KLM_VERIFICATION_POD_BASE64)")
            .into());
    };
    let client = crate::cluster::client(global).await?;
    let names = step::step_nodes(&client, &args.release, &args.run, &args.nodes).await?;
    let nodes_api = kube::Api::all(client.clone());
    try_join_all(names.iter().map(|n| hold::get(&nodes_api, n))).await?;
    crate::verification::run::dry_run_access(&client, &template).await?;

    let records = Records::new(&client, &args.release.helm_namespace);
    let record = records
        .load(&args.release.helm_release)
        .await?
        .map(|(record, _)| record);
    let run_id = args
        .run
        .run_id
        .clone()
        .or_else(|| record.as_ref().map(|r| r.run_id.clone()))
        .unwrap_or_else(|| "manual".to_string());
    // A verification for a run (--run-id, as the workflow gives it) moves its
    // nodes on; one by hand checks them and changes no state.
    let release_id =
        crate::annotations::release_id(&args.release.helm_namespace, &args.release.helm_release);
    let holder = args.run.run_id.as_deref().map(|run_id| hold::Holder {
        run_id,
        release: &release_id,
    });
    for node in &names {
        hold::advance(&client, node, holder, NodeStatus::Verifying).await?;
    }
    let verdicts = verify_nodes(
        &client,
        &template,
        &names,
        &run_id,
        args.verification.verification_timeout,
        args.verification.keep_failed,
    )
    .await?;
    let passed: Vec<String> = verdicts
        .iter()
        .filter(|v| v.passed)
        .map(|v| v.node.clone())
        .collect();
    let failed: Vec<String> = verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(|v| v.node.clone())
        .collect();
    if let Some(record) = record.filter(|r| r.run_id == run_id)
        && !passed.is_empty()
    {
        records
            .update(&record.release, &record.run_id, |r| {
                for node in &passed {
                    r.nodes.insert(node.clone(), NodeProgress::Verified);
                }
            })
            .await?;
    }
    let report = Verification {
        passed,
        failed,
        nodes: verdicts,
    };
    output::print(global.output, &report)?;
    Ok(if report.failed.is_empty() {
        ExitStatus::Done
    } else {
        ExitStatus::Failed
    })
}
