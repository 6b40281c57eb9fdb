//! `klm select-nodes`: which nodes, in which waves.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::annotations::{self, NodeStatus};
use crate::args::{GlobalArgs, ReleaseArgs, RunArgs, SelectionArgs};
use crate::error::ExitStatus;
use crate::helm::Helm;
use crate::nodes::selection::{self, Criteria};
use crate::nodes::waves::{self, Ordered, Wave};
use crate::output::{self, Report};
use crate::step;

/// Flags of `klm select-nodes`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Without a selector, the nodes that run this release's kata-deploy are selected: in daemonset\nmode the nodes of its DaemonSet's pods, in job mode the nodes its installer targets (its node\nselector), never those of another kata-deploy release.\nWith --run-id, the plan is recorded in the run (an empty plan: helm-upgrade then changes nothing).\nA plan with more waves than one workflow carries (--max-waves) is refused before anything changes.\n\nExamples:\n  klm select-nodes --batch-size 2\n  klm select-nodes --node-selector node-pool=kata --node-taint-key maintenance -o json\n  klm select-nodes --skip-completed 3.28.0 --waves-file /tmp/waves.json"
)]
pub struct Args {
    /// How nodes are selected.
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Nodes per wave (1 = strict node by node).
    #[arg(long, default_value = "1", value_name = "N")]
    pub batch_size: String,

    /// Order nodes by this label first (pool order), then by name.
    #[arg(long, value_name = "LABEL")]
    pub pool_label: Option<String>,

    /// Skip nodes already completed at this version (to resume a run).
    #[arg(long, value_name = "VERSION")]
    pub skip_completed: Option<String>,

    /// Also write the waves as a JSON list to this file (for Argo's withParam).
    #[arg(long, value_name = "PATH")]
    pub waves_file: Option<PathBuf>,

    /// Also write only the waves' indices, `[1,2,...]`, to this file: the
    /// workflow loops over them and each step reads its wave from the run
    /// record (needs --run-id).
    #[arg(long, value_name = "PATH")]
    pub index_file: Option<PathBuf>,

    /// At most this many waves (what one Argo workflow carries); 0 = no bound
    /// (Argo with node status offloading).
    #[arg(long, value_name = "N", default_value_t = waves::DEFAULT_MAX_WAVES)]
    pub max_waves: usize,

    /// Which release (to find the nodes that run its kata-deploy).
    #[command(flatten)]
    pub release: ReleaseArgs,

    /// The run to record the plan in (optional).
    #[command(flatten)]
    pub run: RunArgs,
}

/// What select-nodes found.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Selection {
    /// The selected nodes, in upgrade order.
    pub nodes: Vec<String>,
    /// How many.
    pub count: usize,
    /// The waves.
    pub waves: Vec<Wave>,
    /// Nodes skipped because they are completed at the target version.
    pub skipped: Vec<String>,
    /// How nodes were selected, for people.
    pub criteria: String,
}

impl Report for Selection {
    fn text(&self) -> String {
        if self.nodes.is_empty() {
            let mut text = format!("No nodes matched {}: nothing to do.", self.criteria);
            if !self.skipped.is_empty() {
                text.push_str(&format!(
                    "\n{} already completed at the target version: {}",
                    self.skipped.len(),
                    self.skipped.join(", ")
                ));
            }
            return text;
        }
        let mut lines = vec![format!(
            "{} node(s) selected by {}, in {} wave(s):",
            self.count,
            self.criteria,
            self.waves.len()
        )];
        lines.extend(
            self.waves
                .iter()
                .map(|w| format!("  wave {}: {}", w.index, w.nodes.join(", "))),
        );
        if !self.skipped.is_empty() {
            lines.push(format!(
                "skipped (completed at the target version): {}",
                self.skipped.join(", ")
            ));
        }
        lines.join("\n")
    }
}

/// Runs the step.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let batch_size = waves::parse_batch_size(&args.batch_size)?;
    let criteria = Criteria::new(
        args.selection.node_selector.as_deref(),
        args.selection.node_taint_key.as_deref(),
        args.selection.node_taint_value.as_deref(),
    )?;
    let skip_completed = args
        .skip_completed
        .as_deref()
        .map(crate::versions::parse)
        .transpose()?;
    if args.index_file.is_some() && args.run.run_id.is_none() {
        return Err(crate::error::UserError::bad_input(
            "--index-file needs the run: its steps read their wave from the run record",
        )
        .hint("pass --run-id (or set KLM_RUN_ID) with --index-file, or use --waves-file")
        .into());
    }
    let client = crate::cluster::client(global).await?;
    let helm = step::helm(&args.release, global);
    let selection = select(
        &client,
        &helm,
        &args.release,
        &criteria,
        args.pool_label.as_deref(),
        batch_size,
        skip_completed.map(|v| v.to_string()),
    )
    .await?;
    waves::check_capacity(
        selection.waves.len(),
        selection.count,
        batch_size,
        args.max_waves,
    )?;
    if args.run.run_id.is_some() {
        let records = crate::run_record::Records::new(&client, &args.release.helm_namespace);
        let record = step::active_run(
            &records,
            &args.release.helm_release,
            args.run.run_id.as_deref(),
        )
        .await?;
        let planned: Vec<Vec<String>> = selection.waves.iter().map(|w| w.nodes.clone()).collect();
        records
            .update(&record.release, &record.run_id, |r| {
                r.waves = Some(planned.clone())
            })
            .await?;
    }
    if let Some(path) = &args.index_file {
        let indices: Vec<usize> = selection.waves.iter().map(|w| w.index).collect();
        std::fs::write(path, serde_json::to_string(&indices)?)
            .with_context(|| format!("writing the wave indices to {}", path.display()))?;
    }
    if let Some(path) = &args.waves_file {
        let json = serde_json::to_string(&selection.waves)?;
        std::fs::write(path, json)
            .with_context(|| format!("writing the waves to {}", path.display()))?;
    }
    output::print(global.output, &selection)?;
    Ok(ExitStatus::Done)
}

/// Selects and orders nodes and plans the waves (shared with `plan`).
pub async fn select(
    client: &Client,
    helm: &Helm,
    release: &ReleaseArgs,
    criteria: &Criteria,
    pool_label: Option<&str>,
    batch_size: usize,
    skip_completed: Option<String>,
) -> anyhow::Result<Selection> {
    let nodes =
        crate::nodes::listing::list_for_selection(client, criteria.label_selector.as_deref())
            .await?;
    let (with_kata_pod, described) = if criteria.is_empty() {
        let (found, how) = release_nodes(client, helm, release, &nodes).await?;
        (found, Some(how))
    } else {
        (BTreeSet::new(), None)
    };
    let chosen = selection::choose(&nodes, criteria, &with_kata_pod);
    let mut skipped = Vec::new();
    let mut ordered = Vec::new();
    for node in chosen {
        let done_at_target = skip_completed.as_deref().is_some_and(|target| {
            selection::annotation(node, annotations::STATUS) == Some(NodeStatus::Completed.as_str())
                && selection::annotation(node, annotations::CURRENT_VERSION) == Some(target)
        });
        if done_at_target {
            skipped.push(node.name_any());
        } else {
            ordered.push(Ordered {
                pool: selection::pool_of(node, pool_label),
                name: node.name_any(),
            });
        }
    }
    skipped.sort();
    let nodes = waves::order(ordered);
    let waves = waves::plan(&nodes, batch_size);
    Ok(Selection {
        count: nodes.len(),
        nodes,
        waves,
        skipped,
        criteria: described.unwrap_or_else(|| describe(criteria)),
    })
}

/// The nodes that run this release's kata-deploy, and how they were found
/// (for the plan): daemonset mode, the nodes of its DaemonSet's pods; job
/// mode, the nodes its installer's node selector matches (`job.nodeSelector`
/// and `job.nodeSelectorExpressions` before 4.1, `nodeSelector` since).
async fn release_nodes(
    client: &Client,
    helm: &Helm,
    release: &ReleaseArgs,
    nodes: &[k8s_openapi::api::core::v1::Node],
) -> anyhow::Result<(BTreeSet<String>, String)> {
    let reference = step::release_ref(release);
    let found = reference.load(helm).await?;
    let coalesced = reference.coalesced_values(helm).await?;
    let mode = crate::release::detect_mode(&coalesced).map_err(|why| {
        crate::error::UserError::precondition(format!("release {}: {why}", reference.name))
    })?;
    let id = annotations::release_id(&reference.namespace, &reference.name);
    match mode {
        crate::versions::DeploymentMode::Daemonset => {
            let daemonset = found.daemonset()?;
            let ds = crate::kata_deploy::KataDaemonSet::find(client, &daemonset).await?;
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ds.namespace);
            let list = pods
                .list(&ListParams::default().labels(ds.selector()))
                .await
                .map_err(|e| {
                    crate::error::KubeError::new(
                        format!("listing the pods of DaemonSet {}/{}", ds.namespace, ds.name),
                        e,
                    )
                })?;
            let owned: BTreeSet<String> = list
                .items
                .iter()
                .filter(|p| {
                    p.owner_references()
                        .iter()
                        .any(|o| o.kind == "DaemonSet" && o.name == ds.name)
                })
                .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                .collect();
            Ok((
                owned,
                format!(
                    "default selection: the nodes that run release {id}'s kata-deploy (the pods of DaemonSet {}/{})",
                    ds.namespace, ds.name
                ),
            ))
        }
        crate::versions::DeploymentMode::Job => {
            let version = crate::versions::parse(&found.chart_version)?;
            let (labels_key, expressions_key) = if crate::versions::job_mode_prunes(&version) {
                ("nodeSelector", None)
            } else {
                ("job.nodeSelector", Some("job.nodeSelectorExpressions"))
            };
            let labels: std::collections::BTreeMap<String, String> =
                crate::values::lookup(&coalesced, labels_key)
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .unwrap_or_default();
            let expressions: Vec<selection::Expression> = expressions_key
                .and_then(|key| crate::values::lookup(&coalesced, key))
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            let targeted: BTreeSet<String> = nodes
                .iter()
                .filter(|n| selection::matches_selector(n, &labels, &expressions))
                .filter(|n| !selection::is_control_plane(n) || selection::runs_kata(n))
                .map(|n| n.name_any())
                .collect();
            let mut how: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            how.extend(expressions.iter().map(|e| e.to_string()));
            let how = if how.is_empty() {
                "every node".to_string()
            } else {
                how.join(",")
            };
            Ok((
                targeted,
                format!(
                    "default selection: the nodes release {id}'s kata-deploy installer targets ({labels_key}: {how})"
                ),
            ))
        }
    }
}

fn describe(criteria: &Criteria) -> String {
    let mut parts = Vec::new();
    if let Some(selector) = &criteria.label_selector {
        parts.push(format!("label selector {selector:?}"));
    }
    match (&criteria.taint_key, &criteria.taint_value) {
        (Some(key), Some(value)) => parts.push(format!("taint {key}={value}")),
        (Some(key), None) => parts.push(format!("taint key {key}")),
        _ => {}
    }
    if parts.is_empty() {
        format!(
            "default selection (nodes running kata-deploy: {}=true or a kata-deploy pod)",
            annotations::KATA_RUNTIME_LABEL
        )
    } else {
        parts.join(" and ")
    }
}
