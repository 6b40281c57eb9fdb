//! Planning an upgrade's nodes, shared by `select-nodes`, `plan` and `upgrade`: which
//! nodes (by the selection criteria, or those that run the release's
//! kata-deploy), less those already completed, in which order and waves.

use crate::run::Run;
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::annotations::{self, NodeStatus};
use crate::error::UserError;
use crate::helm::Helm;
use crate::nodes::selection::{self, Criteria};
use crate::nodes::waves::{self, Ordered, Policy, Wave};
use crate::output::Report;
use crate::release::ReleaseRef;
use crate::schedule::Schedule;
use crate::schedule::gates::Gate;

/// The nodes selected for an upgrade, and its waves.
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
    /// Nodes the criteria matched that do not run the release's
    /// kata-deploy: left out (an explicit selection is narrowed to the
    /// release's nodes, as the default selection is).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
    /// Why they were left out, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_out_because: Option<String>,
    /// Nodes unavailable already (`name (NotReady)`, `name (cordoned)`):
    /// skipped, unless `unavailable_included`.
    pub unavailable: Vec<String>,
    /// Whether the unavailable nodes are planned too.
    pub unavailable_included: bool,
    /// How many selected nodes may be unschedulable at once (None: no budget).
    pub max_unavailable: Option<usize>,
    /// How many planned nodes may fail, each rolled back, before the run
    /// stops (None: the first failure stops it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_failed_nodes: Option<usize>,
    /// How nodes were selected, for people.
    pub criteria: String,
    /// How the waves were cut, for people.
    pub policy: String,
    /// The gates between the waves (set by [`plan_run`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<Gate>,
    /// The maintenance window waves start in (set by [`plan_run`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

impl Report for Selection {
    fn text(&self) -> String {
        if self.nodes.is_empty() {
            let mut text = if self.skipped.is_empty() {
                format!("No nodes matched {}: nothing to do.", self.criteria)
            } else {
                format!(
                    "Every node matched by {} is completed at the target version already: nothing to do.",
                    self.criteria
                )
            };
            if !self.skipped.is_empty() {
                text.push_str(&format!(
                    "\n{} already completed at the target version: {}",
                    self.skipped.len(),
                    self.skipped.join(", ")
                ));
            }
            if let Some(note) = self.left_out_note() {
                text.push_str(&format!("\n{note}"));
            }
            return text;
        }
        let mut lines = vec![format!(
            "{} node(s) selected by {}, in {} wave(s) ({}):",
            self.count,
            self.criteria,
            self.waves.len(),
            self.policy
        )];
        for w in &self.waves {
            if let Some(gate) = self.gates.iter().find(|g| g.before_wave == w.index) {
                lines.push(format!("  gate after {}: {}", gate.after, gate.holds_for()));
            }
            lines.push(match &w.pool {
                Some(pool) => format!("  wave {} (pool {pool}): {}", w.index, w.nodes.join(", ")),
                None => format!("  wave {}: {}", w.index, w.nodes.join(", ")),
            });
        }
        if let Some(window) = &self.window {
            lines.push(format!(
                "each wave starts only inside the maintenance window {window}; outside it the run waits for it to open"
            ));
        }
        if !self.skipped.is_empty() {
            lines.push(format!(
                "skipped (completed at the target version): {}",
                self.skipped.join(", ")
            ));
        }
        lines.extend(self.unavailable_note());
        lines.extend(self.left_out_note());
        lines.join("\n")
    }
}

impl Selection {
    /// The nodes left out for not running the release's kata-deploy, if any.
    pub fn left_out_note(&self) -> Option<String> {
        if self.left_out.is_empty() {
            return None;
        }
        Some(format!(
            "left out, matched but {}: {}",
            self.left_out_because
                .as_deref()
                .unwrap_or("not running this release's kata-deploy"),
            self.left_out.join(", ")
        ))
    }

    /// What became of the nodes unavailable already, if there were any.
    pub fn unavailable_note(&self) -> Option<String> {
        if self.unavailable.is_empty() {
            return None;
        }
        let how = match (self.unavailable_included, self.max_unavailable) {
            (false, _) => "skipped",
            (true, Some(_)) => "planned anyway (--include-unavailable)",
            (true, None) => "planned",
        };
        Some(format!(
            "unavailable already, {how}: {}",
            self.unavailable.join(", ")
        ))
    }
}

/// Selects and orders nodes and plans the waves: the nodes the criteria
/// match (without criteria, those that run the release's kata-deploy),
/// less those already completed at `skip_completed`, ordered by pool then
/// name, in waves of `batch_size`.
pub async fn select(
    client: &Client,
    helm: &Helm,
    reference: &ReleaseRef,
    criteria: &Criteria,
    pool_label: Option<&str>,
    policy: &Policy,
    skip_completed: Option<String>,
) -> anyhow::Result<Selection> {
    policy.validate(pool_label)?;
    let nodes =
        crate::nodes::listing::list_for_selection(client, criteria.label_selector.as_deref())
            .await?;
    let release = release_nodes(client, helm, reference, &nodes).await?;
    // An explicit selection is narrowed to the release's nodes, as the
    // default one is: a node without the release's kata-deploy would be
    // cordoned and waited on for a whole restart timeout, then fail.
    let (chosen, outside): (Vec<&Node>, Vec<&Node>) =
        selection::choose(&nodes, criteria, &release.names)
            .into_iter()
            .partition(|n| release.names.contains(&n.name_any()));
    let mut left_out: Vec<String> = outside.iter().map(|n| n.name_any()).collect();
    left_out.sort();
    if chosen.is_empty() && !left_out.is_empty() {
        return Err(crate::error::UserError::bad_input(format!(
            "none of the nodes matched by {} runs release {}'s kata-deploy ({}): {}",
            describe(criteria),
            release.id,
            release.source,
            left_out.join(", ")
        ))
        .hint("select nodes where this release's kata-deploy runs (`klm status` lists them), or name the release that runs on these nodes with --helm-release and --helm-namespace")
        .into());
    }
    // Nodes out of service already are skipped only under a budget (and
    // then unless included): without one, the default run plans every node.
    let skip_unavailable = policy.max_unavailable.is_some() && !policy.include_unavailable;
    let mut skipped = Vec::new();
    let mut unavailable = Vec::new();
    let mut ordered = Vec::new();
    for node in chosen {
        let done_at_target = skip_completed.as_deref().is_some_and(|target| {
            selection::annotation(node, annotations::STATUS) == Some(NodeStatus::Completed.as_str())
                && selection::annotation(node, annotations::CURRENT_VERSION) == Some(target)
        });
        if done_at_target {
            skipped.push(node.name_any());
            continue;
        }
        let why = selection::unavailability(node);
        if let Some(why) = why {
            unavailable.push(format!("{} ({why})", node.name_any()));
        }
        if why.is_none() || !skip_unavailable {
            ordered.push(Ordered {
                pool: selection::pool_of(node, pool_label),
                name: node.name_any(),
            });
        }
    }
    skipped.sort();
    let selected = if skip_unavailable {
        ordered.len() + unavailable.len()
    } else {
        ordered.len()
    };
    let budget_cap = policy.budget_cap(selected, unavailable.len())?;
    let ordered = waves::order(ordered, &policy.pool_order);
    let waves = waves::plan(&ordered, policy, budget_cap);
    let max_failed_nodes = policy.max_failed.map(|b| b.of(ordered.len()));
    Ok(Selection {
        count: ordered.len(),
        nodes: ordered.into_iter().map(|n| n.name).collect(),
        waves,
        skipped,
        left_out_because: (!left_out.is_empty()).then(|| {
            format!(
                "not running release {}'s kata-deploy ({})",
                release.id, release.source
            )
        }),
        left_out,
        unavailable,
        unavailable_included: !skip_unavailable,
        max_unavailable: policy.max_unavailable.map(|b| b.of(selected)),
        max_failed_nodes,
        criteria: if criteria.is_empty() {
            release.default_selection()
        } else {
            describe(criteria)
        },
        policy: policy.describe(),
        gates: Vec::new(),
        window: None,
    })
}

/// The nodes that run a release's kata-deploy, and how they were found.
struct ReleaseNodes {
    /// Their names.
    names: BTreeSet<String>,
    /// The release, `namespace/name`.
    id: String,
    /// How they were found, for people: `the pods of DaemonSet ns/name`,
    /// `its installer targets them (job.nodeSelector: ...)`.
    source: String,
    /// Whether the release installs with per-node Jobs.
    job_mode: bool,
}

impl ReleaseNodes {
    /// The default selection, for the plan.
    fn default_selection(&self) -> String {
        if self.job_mode {
            format!(
                "default selection: the nodes release {}'s kata-deploy installer targets ({})",
                self.id, self.source
            )
        } else {
            format!(
                "default selection: the nodes that run release {}'s kata-deploy ({})",
                self.id, self.source
            )
        }
    }
}

/// The nodes that run this release's kata-deploy, and how they were found
/// (for the plan): daemonset mode, the nodes of its DaemonSet's pods; job
/// mode, the nodes its installer's node selector matches (`job.nodeSelector`
/// and `job.nodeSelectorExpressions` before 4.1, `nodeSelector` since).
async fn release_nodes(
    client: &Client,
    helm: &Helm,
    reference: &ReleaseRef,
    nodes: &[Node],
) -> anyhow::Result<ReleaseNodes> {
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
            Ok(ReleaseNodes {
                names: owned,
                source: format!("the pods of DaemonSet {}/{}", ds.namespace, ds.name),
                id,
                job_mode: false,
            })
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
            Ok(ReleaseNodes {
                names: targeted,
                source: format!("{labels_key}: {how}"),
                id,
                job_mode: true,
            })
        }
    }
}

/// How nodes were selected, for people.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_criteria_read_as_a_phrase() {
        let label = Criteria::new(Some("node-pool=kata"), None, None).unwrap();
        assert_eq!(describe(&label), "label selector \"node-pool=kata\"");
        let taint = Criteria::new(Some("a=b"), Some("maintenance"), Some("kata")).unwrap();
        assert_eq!(
            describe(&taint),
            "label selector \"a=b\" and taint maintenance=kata"
        );
        let key = Criteria::new(None, Some("maintenance"), None).unwrap();
        assert_eq!(describe(&key), "taint key maintenance");
        let none = Criteria::new(None, None, None).unwrap();
        assert!(
            describe(&none).starts_with("default selection"),
            "{}",
            describe(&none)
        );
    }

    #[test]
    fn an_empty_selection_says_nothing_to_do() {
        let selection = Selection {
            nodes: Vec::new(),
            count: 0,
            waves: Vec::new(),
            skipped: vec!["w1".into()],
            left_out: vec!["gpu-1".into()],
            left_out_because: Some(
                "not running release kube-system/kata-deploy's kata-deploy (the pods of DaemonSet kube-system/kata-deploy)".into(),
            ),
            unavailable: Vec::new(),
            unavailable_included: false,
            max_unavailable: None,
            max_failed_nodes: None,
            criteria: "taint key maintenance".into(),
            policy: "batch size 1".into(),
            gates: Vec::new(),
            window: None,
        };
        assert_eq!(
            selection.text(),
            "Every node matched by taint key maintenance is completed at the target version already: nothing to do.\n1 already completed at the target version: w1\nleft out, matched but not running release kube-system/kata-deploy's kata-deploy (the pods of DaemonSet kube-system/kata-deploy): gpu-1"
        );
        let nothing = Selection {
            skipped: Vec::new(),
            left_out: Vec::new(),
            left_out_because: None,
            ..selection
        };
        assert_eq!(
            nothing.text(),
            "No nodes matched taint key maintenance: nothing to do."
        );
    }

    #[test]
    fn the_plan_shows_each_gate_before_its_wave_and_the_window() {
        let wave = |index: usize, node: &str| Wave {
            index,
            nodes: vec![node.into()],
            node_list: node.into(),
            pool: None,
        };
        let selection = Selection {
            nodes: vec!["a".into(), "b".into()],
            count: 2,
            waves: vec![wave(1, "a"), wave(2, "b")],
            skipped: Vec::new(),
            left_out: Vec::new(),
            left_out_because: None,
            unavailable: Vec::new(),
            unavailable_included: false,
            max_unavailable: None,
            max_failed_nodes: None,
            criteria: "label selector \"pool=kata\"".into(),
            policy: "batch size 1".into(),
            gates: vec![Gate {
                before_wave: 2,
                after: "the canary wave".into(),
                reverify: vec!["a".into()],
                soak_seconds: Some(600),
                approval: true,
                query: false,
                passage: Default::default(),
            }],
            window: Some("Mon-Fri 01:00-05:00 Europe/Paris".into()),
        };
        let text = selection.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "  wave 1: a");
        assert_eq!(
            lines[2],
            "  gate after the canary wave: a soak of 10m then verification of 1 node(s) again, then a person's approval"
        );
        assert_eq!(lines[3], "  wave 2: b");
        assert!(
            lines[4].contains("maintenance window Mon-Fri 01:00-05:00 Europe/Paris"),
            "{text}"
        );
    }
}

/// What [`plan_run`] plans.
#[derive(Debug, Clone)]
pub struct PlanRequest<'a> {
    /// The release.
    pub release: &'a ReleaseRef,
    /// Which nodes.
    pub criteria: &'a Criteria,
    /// Order nodes by this label first (pool order).
    pub pool_label: Option<&'a str>,
    /// How the waves are cut.
    pub policy: &'a Policy,
    /// When the waves may start: gates between them, a window.
    pub schedule: &'a Schedule,
    /// Skip nodes already completed at this version (resuming).
    pub skip_completed: Option<&'a semver::Version>,
    /// At most this many waves (0: no bound).
    pub max_waves: usize,
    /// The run to record the plan in (None: recorded nowhere).
    pub run_id: Option<&'a str>,
    /// How to reach the Prometheus of a metric gate, checked up front.
    pub prometheus: &'a crate::prometheus::Credentials,
}

/// Asks the metric gate's query once, now, before anything changes: a query
/// Prometheus refuses is bad input, a Prometheus that does not answer a
/// precondition not met.
pub async fn check_query(
    query: &crate::schedule::metric::MetricQuery,
    credentials: &crate::prometheus::Credentials,
) -> Result<(), UserError> {
    use crate::prometheus::{Prometheus, PrometheusError};
    let asked = match Prometheus::connect(&query.url, credentials) {
        Ok(prometheus) => {
            prometheus
                .query_at(&query.query, jiff::Timestamp::now())
                .await
        }
        Err(err) => Err(err),
    };
    match asked {
        Ok(_) => Ok(()),
        Err(err @ (PrometheusError::BadUrl { .. } | PrometheusError::File { .. })) => {
            Err(UserError::bad_input(err.to_string())
                .hint("fix --prometheus-url, --prometheus-token-file or --prometheus-ca-file"))
        }
        Err(err) if err.is_bad_query() => Err(UserError::bad_input(format!(
            "--gate-query {:?}: {err}",
            query.query
        ))
        .hint("fix the PromQL (try it in Prometheus's UI first)")),
        Err(err) => Err(UserError::precondition(err.to_string()).hint(
            "check --prometheus-url and that Prometheus answers from where klm runs (and its token and CA)",
        )),
    }
}

/// Selects the nodes and plans the waves ([`select`]) and the gates between
/// them, refuses a plan with more waves than `max_waves`, and records it in
/// the run (when one is named): the waves every later step of the run reads.
pub async fn plan_run(
    client: &Client,
    helm: &Helm,
    request: &PlanRequest<'_>,
) -> anyhow::Result<Selection> {
    request
        .schedule
        .gates
        .validate(request.policy.canary, request.pool_label)?;
    if let Some(query) = &request.schedule.gates.query {
        check_query(query, request.prometheus).await?;
    }
    let mut selection = select(
        client,
        helm,
        request.release,
        request.criteria,
        request.pool_label,
        request.policy,
        request.skip_completed.map(ToString::to_string),
    )
    .await?;
    waves::check_capacity(
        selection.waves.len(),
        selection.count,
        request.policy.batch,
        request.max_waves,
    )?;
    selection.gates = request
        .schedule
        .gates
        .plan(&selection.waves, request.policy.canary.is_some());
    selection.window = request.schedule.window.as_ref().map(ToString::to_string);
    crate::schedule::check_capacity(
        selection.waves.len(),
        selection.gates.len(),
        selection.window.is_some(),
        request.max_waves,
    )?;
    if let Some(gates) = request.schedule.gates.describe() {
        selection.policy = format!("{}, {gates}", selection.policy);
    }
    if let Some(run_id) = request.run_id {
        let run = Run::active(client, request.release, Some(run_id)).await?;
        let planned: Vec<Vec<String>> = selection.waves.iter().map(|w| w.nodes.clone()).collect();
        run.update(|r| {
            r.plan.replan(crate::run_record::RunPlan {
                waves: Some(planned.clone()),
                max_unavailable: selection.max_unavailable,
                max_failed_nodes: selection.max_failed_nodes,
                gates: selection.gates.clone(),
                metric_query: request.schedule.gates.query.clone(),
                window: selection.window.clone(),
            })
        })
        .await?;
    }
    Ok(selection)
}
