//! The flags steps share: the global flags every subcommand accepts, the
//! argument groups several subcommands flatten in (the release, the chart,
//! the run, the nodes, the selection, the verification pod), and their
//! parsers. Commands and library modules import them from here, never from
//! `cli` (which only lists the subcommands).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::drain::DrainScope;
use crate::nodes::waves::{BatchSize, Budget, Growth, Policy, PoolOrder};
use crate::output::OutputFormat;
use crate::schedule::Schedule;
use crate::schedule::gates::{GateAt, GatePolicy, Soak};
use crate::schedule::window::WindowArg;

/// The official kata-deploy chart (the default of `--chart`).
pub const DEFAULT_CHART: &str = "oci://ghcr.io/kata-containers/kata-deploy-charts/kata-deploy";

/// Flags every subcommand accepts.
#[derive(Debug, Default, Args)]
pub struct GlobalArgs {
    /// Where klm (and the helm it runs) connects, and as whom.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Result format on stdout: text for people, json for machines (Argo).
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = OutputFormat::Text, help_heading = "Output")]
    pub output: OutputFormat,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "KLM_LOG_FORMAT", help_heading = "Output")]
    pub log_format: LogFormat,

    /// More log detail (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Output")]
    pub verbose: u8,
}

/// Where klm connects and as whom, as kubectl takes it. Any of
/// `--kubeconfig`, `$KUBECONFIG`, `--context`, `--cluster` or `--user` means
/// a local kubeconfig; with none, the in-cluster config comes first (then
/// `~/.kube/config`). helm gets the same cluster and identity.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Connection")]
pub struct ClientArgs {
    /// Path to a kubeconfig (default: $KUBECONFIG, a list of files as kubectl reads it, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// The kubeconfig cluster to use (instead of the context's).
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,

    /// The kubeconfig user to use (instead of the context's).
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,

    /// Act as this user (impersonation, as kubectl's --as).
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,

    /// With --as: act as a member of this group too (repeatable).
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub as_groups: Vec<String>,

    /// The subcommand that connects, named in the User-Agent of its
    /// requests (not a flag: [`crate::cli::Cli::parse_args`] sets it).
    #[arg(skip)]
    pub step: Option<String>,
}

/// Draining each wave's nodes (`klm upgrade`, `klm plan`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Drain")]
pub struct DrainArgs {
    /// Evict the pods of each wave's nodes before upgrading them.
    #[arg(long)]
    pub drain: bool,

    /// How long a drain may wait for PodDisruptionBudgets and pods to go.
    #[arg(long, default_value = "300s", value_parser = parse_duration, env = "KLM_DRAIN_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    pub drain_timeout: Duration,

    /// Which pods a drain evicts: all, or only those of the release's
    /// RuntimeClasses (kata), the pods the upgrade affects.
    #[arg(long, value_enum, default_value_t = DrainScope::All, env = "KLM_DRAIN_SCOPE")]
    pub drain_scope: DrainScope,
}

/// How klm proves who it is to the Prometheus of a metric gate, and whom it
/// trusts (files: the workflow mounts them from a Secret).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Gates and window")]
pub struct PrometheusArgs {
    /// A file holding the bearer token sent to --prometheus-url.
    #[arg(long, value_name = "PATH", env = "KLM_PROMETHEUS_TOKEN_FILE")]
    pub prometheus_token_file: Option<std::path::PathBuf>,

    /// A PEM file of CA certificates trusted for --prometheus-url besides the system's.
    #[arg(long, value_name = "PATH", env = "KLM_PROMETHEUS_CA_FILE")]
    pub prometheus_ca_file: Option<std::path::PathBuf>,
}

impl PrometheusArgs {
    /// The credentials of the flags.
    pub fn credentials(&self) -> crate::prometheus::Credentials {
        crate::prometheus::Credentials {
            token_file: self.prometheus_token_file.clone(),
            ca_file: self.prometheus_ca_file.clone(),
        }
    }
}

/// Recycling the Kata pods that still run the runtime they started with
/// (`klm upgrade`, `klm settle`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Old sandboxes")]
pub struct RecycleArgs {
    /// Once a node is completed, evict up to N of its Kata pods that started before its
    /// verification (oldest first, honouring PodDisruptionBudgets), so that their controllers
    /// start them again on the new runtime (0 = leave them; `klm status --sandboxes` lists them).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = parse_count, allow_negative_numbers = true)]
    pub recycle_old_sandboxes: usize,

    /// How long an eviction a PodDisruptionBudget refuses is retried before the pod is left
    /// running (and reported).
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION", allow_hyphen_values = true)]
    pub recycle_timeout: Duration,
}

impl RecycleArgs {
    /// The recycling asked for, if any.
    pub fn asked(&self) -> Option<crate::sandboxes::Recycle> {
        (self.recycle_old_sandboxes > 0).then_some(crate::sandboxes::Recycle {
            per_node: self.recycle_old_sandboxes,
            timeout: self.recycle_timeout,
        })
    }
}

impl DrainArgs {
    /// The drain asked for, if any: its timeout and scope.
    pub fn asked(&self) -> Option<(Duration, DrainScope)> {
        self.drain.then_some((self.drain_timeout, self.drain_scope))
    }
}

/// How logs are written on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Which kata-deploy release to act on.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Release")]
pub struct ReleaseArgs {
    /// Name of the kata-deploy Helm release.
    #[arg(
        long,
        default_value = "kata-deploy",
        env = "KLM_HELM_RELEASE",
        value_name = "NAME"
    )]
    pub helm_release: String,

    /// Namespace of the kata-deploy Helm release (-n, --namespace as kubectl
    /// users type it).
    #[arg(
        long,
        short = 'n',
        visible_alias = "namespace",
        default_value = "kube-system",
        env = "KLM_HELM_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub helm_namespace: String,

    /// The helm binary to run.
    #[arg(long, default_value = "helm", env = "KLM_HELM", value_name = "PATH")]
    pub helm: PathBuf,
}

/// Where the kata-deploy chart comes from (for upgrades and rollbacks).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Chart")]
pub struct ChartArgs {
    /// The kata-deploy chart: an OCI reference, a repo/chart name, or a local path or .tgz.
    #[arg(long, default_value = DEFAULT_CHART, env = "KLM_CHART", value_name = "REF")]
    pub chart: String,

    /// How long one helm operation may take.
    #[arg(long, default_value = "10m", value_parser = parse_duration, env = "KLM_HELM_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    pub helm_timeout: Duration,
}

/// The user's extra kata-deploy chart values, as helm's `--set` items.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Chart")]
pub struct ChartValuesArgs {
    /// Extra chart values, as helm's --set (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set_item)]
    pub set: Vec<String>,

    /// Extra chart values as one comma-separated list (the workflow's helm-set-values).
    #[arg(long, value_name = "KEY=VALUE,...", default_value = "", value_parser = parse_set_list)]
    pub helm_set_values: SetList,
}

impl ChartValuesArgs {
    /// Every item, `--set` ones first, in the order given.
    pub fn items(&self) -> Vec<String> {
        self.set
            .iter()
            .chain(&self.helm_set_values.0)
            .cloned()
            .collect()
    }
}

/// The items of one `--helm-set-values` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetList(pub Vec<String>);

/// One `--set` item: `key=value`.
pub fn parse_set_item(raw: &str) -> Result<String, String> {
    match raw.split_once('=') {
        Some((key, _)) if !key.trim().is_empty() => Ok(raw.to_string()),
        _ => Err(format!("{raw:?} is not key=value; give --set key=value")),
    }
}

/// A `--helm-set-values` list (see [`split_set_values`]).
pub fn parse_set_list(raw: &str) -> Result<SetList, String> {
    split_set_values(raw).map(SetList).map_err(|why| {
        format!("{why}; give key=value pairs separated by commas, e.g. image.reference=mirror/kata-deploy,debug=true")
    })
}

/// Identifies the run a step belongs to.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Run")]
pub struct RunArgs {
    /// The run this step belongs to (the Argo workflow name); default: the release's active run.
    #[arg(long, env = "KLM_RUN_ID", value_name = "ID")]
    pub run_id: Option<String>,
}

/// The nodes a step acts on: named, or one wave of the run's plan.
#[derive(Debug, Clone, Args)]
pub struct NodesArgs {
    /// Nodes to act on: names separated by commas, or a JSON list; repeatable.
    #[arg(long = "nodes", alias = "node", required_unless_present = "wave", value_name = "NODES", value_parser = parse_node_list)]
    pub nodes: Vec<NodeList>,

    /// Instead of --nodes: wave K (from 1) of the run's plan, as `select-nodes --run-id` recorded it.
    #[arg(long, value_name = "K", conflicts_with = "nodes", value_parser = crate::args::parse_wave, allow_negative_numbers = true)]
    pub wave: Option<u32>,
}

/// Nodes named on the command line, or (for uncordon) every node a run holds.
#[derive(Debug, Clone, Args)]
pub struct OptionalNodesArgs {
    /// Nodes to act on: names separated by commas, or a JSON list; repeatable.
    #[arg(long = "nodes", alias = "node", value_name = "NODES", value_parser = parse_node_list, required_unless_present = "all_held")]
    pub nodes: Vec<NodeList>,

    /// Every node held by --run-id, except those whose rollback failed (the workflow's exit handler).
    #[arg(long, requires = "run_id", conflicts_with = "nodes")]
    pub all_held: bool,
}

impl NodesArgs {
    /// The node names, in the order given, without duplicates.
    pub fn names(&self) -> Vec<String> {
        crate::nodes::unique(self.nodes.iter().flat_map(|list| list.0.iter().cloned()))
    }

    /// The nodes a step acts on: those named with `--nodes`, or wave `--wave
    /// K` of the plan that `select-nodes --run-id` recorded for the run
    /// (resolved by the step, from the run record it reads).
    pub fn targets(&self) -> crate::run::Targets {
        match self.wave {
            Some(index) => crate::run::Targets::Wave(index),
            None => crate::run::Targets::Named(self.names()),
        }
    }
}

/// A list of node names from one `--nodes` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeList(pub Vec<String>);

/// Parses `a,b,c` or `["a","b"]` into node names, refusing empty or invalid names.
pub fn parse_node_list(raw: &str) -> Result<NodeList, String> {
    let trimmed = raw.trim();
    let names: Vec<String> = if trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(|e| format!("not a JSON list of node names: {e}"))?
    } else {
        trimmed
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    if names.is_empty() {
        return Err("no node names given".into());
    }
    for name in &names {
        crate::nodes::validate_node_name(name)?;
    }
    Ok(NodeList(names))
}

/// How the selected nodes are split into waves (see [`Policy`]).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Waves")]
pub struct WavesArgs {
    /// Nodes per wave (1 = strict node by node), or a percentage of the selected nodes (10%).
    #[arg(long, default_value = "1", value_name = "N|N%", value_parser = crate::nodes::waves::parse_batch_size, allow_negative_numbers = true)]
    pub batch_size: BatchSize,

    /// How waves grow within a pool, starting from --batch-size.
    #[arg(long, value_enum, default_value_t = Growth::Fixed)]
    pub batch_growth: Growth,

    /// The largest a grown wave may be (0 = no cap).
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = parse_count, allow_negative_numbers = true)]
    pub max_batch_size: usize,

    /// The run's first wave: this many nodes of the first pool (0 = no canary wave).
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = parse_count, allow_negative_numbers = true)]
    pub canary_size: usize,

    /// Order nodes by this label first (pool by pool), then by name; a wave never mixes two pools.
    #[arg(long, value_name = "LABEL")]
    pub pool_label: Option<String>,

    /// With --pool-label: these pools first, in this order (the others follow by name).
    #[arg(long, value_name = "POOL,...", default_value = "", value_parser = crate::nodes::waves::parse_pool_order)]
    pub pool_order: PoolOrder,

    /// At most this many selected nodes unschedulable at once (a number, or N% of them),
    /// counting nodes already NotReady or cordoned by someone else (0 = no budget).
    #[arg(long, value_name = "N|N%", default_value = "0", value_parser = crate::nodes::waves::parse_max_unavailable, allow_negative_numbers = true)]
    pub max_unavailable: Budget,

    /// With --max-unavailable: plan nodes that are NotReady or cordoned by someone else
    /// too (default: skip them).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub include_unavailable: bool,

    /// How many planned nodes may fail (a number, or N% of them) before the run stops: a
    /// failed node is rolled back and the run goes on while the failures fit (0 = the first
    /// failure stops the run).
    #[arg(long, value_name = "N|N%", default_value = "0", value_parser = crate::nodes::waves::parse_max_failed_nodes, allow_negative_numbers = true)]
    pub max_failed_nodes: Budget,

    /// Hold the run after the canary wave (canary), or after it and after each pool (pool).
    #[arg(help_heading = "Gates and window", long, value_enum, default_value_t = GateAt::None)]
    pub gate: GateAt,

    /// At a gate: wait this long, then verify the nodes since the last gate again (0 = no soak).
    #[arg(help_heading = "Gates and window", long, value_name = "DURATION", default_value = "0", value_parser = crate::schedule::gates::parse_soak, allow_hyphen_values = true)]
    pub gate_soak: Soak,

    /// At a gate: wait for a person's approval (Argo: argo resume; klm upgrade: klm approve).
    #[arg(help_heading = "Gates and window", long, value_name = "BOOL", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub gate_approval: bool,

    /// At each gate, after its soak: a PromQL query that must have been healthy (an empty
    /// result, or a true scalar) at every sample over the last --gate-query-for; unhealthy: the
    /// nodes since the last gate are rolled back and the run stops (empty = no query).
    #[arg(
        help_heading = "Gates and window",
        long,
        value_name = "PROMQL",
        default_value = ""
    )]
    pub gate_query: String,

    /// The Prometheus --gate-query asks (its base URL, e.g. http://prometheus.monitoring:9090).
    #[arg(
        help_heading = "Gates and window",
        long,
        value_name = "URL",
        default_value = ""
    )]
    pub prometheus_url: String,

    /// How far back --gate-query's samples go (the gate's soak lasts this long at least).
    #[arg(help_heading = "Gates and window", long, value_name = "DURATION", default_value = "5m", value_parser = crate::schedule::period::parse_period)]
    pub gate_query_for: Duration,

    /// Time between --gate-query's samples.
    #[arg(help_heading = "Gates and window", long, value_name = "DURATION", default_value = "30s", value_parser = crate::schedule::period::parse_period)]
    pub gate_query_interval: Duration,

    /// Errors in a row (Prometheus not answering) that make a gate inconclusive: the run
    /// stops without rolling back.
    #[arg(help_heading = "Gates and window", long, value_name = "N", default_value_t = 4, value_parser = parse_count, allow_negative_numbers = true)]
    pub gate_query_error_limit: usize,

    /// Ask --gate-query before every wave, not only at the gates of --gate.
    #[arg(help_heading = "Gates and window", long, value_name = "BOOL", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub gate_query_every_wave: bool,

    /// Start waves only in this window, e.g. "Mon-Fri 01:00-05:00 Europe/Paris" (empty = any time).
    #[arg(help_heading = "Gates and window", long, value_name = "WINDOW", default_value = "", value_parser = crate::schedule::window::parse_window)]
    pub window: WindowArg,
}

impl WavesArgs {
    /// The pool label, if one is given (see [`pool_label`]).
    pub fn pool_label(&self) -> Option<&str> {
        pool_label(self.pool_label.as_deref())
    }

    /// The wave policy of the flags.
    pub fn policy(&self) -> Policy {
        Policy {
            batch: self.batch_size,
            growth: self.batch_growth,
            max_batch: (self.max_batch_size > 0).then_some(self.max_batch_size),
            canary: (self.canary_size > 0).then_some(self.canary_size),
            pool_order: self.pool_order.0.clone(),
            max_unavailable: self.max_unavailable.0,
            include_unavailable: self.include_unavailable,
            max_failed: self.max_failed_nodes.0,
        }
    }

    /// The metric gate's query, if one is given.
    pub fn metric_query(&self) -> Option<crate::schedule::metric::MetricQuery> {
        let query = self.gate_query.trim();
        (!query.is_empty() || self.gate_query_every_wave).then(|| {
            crate::schedule::metric::MetricQuery {
                query: query.to_string(),
                url: self.prometheus_url.trim().to_string(),
                for_seconds: self.gate_query_for.as_secs(),
                interval_seconds: self.gate_query_interval.as_secs(),
                error_limit: self.gate_query_error_limit,
                every_wave: self.gate_query_every_wave,
            }
        })
    }

    /// When the waves may start: the gates and the window of the flags.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            gates: GatePolicy {
                at: self.gate,
                soak: self.gate_soak.0,
                approval: self.gate_approval,
                query: self.metric_query(),
            },
            window: self.window.0.clone(),
        }
    }
}

/// How nodes are selected.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Node selection")]
pub struct SelectionArgs {
    /// Label selector for the nodes (e.g. `node-pool=kata,zone in (a,b)`).
    #[arg(long, value_name = "SELECTOR")]
    pub node_selector: Option<String>,

    /// Select only nodes carrying a taint with this key.
    #[arg(long, value_name = "KEY")]
    pub node_taint_key: Option<String>,

    /// With --node-taint-key: only taints with this value.
    #[arg(long, value_name = "VALUE", requires = "node_taint_key")]
    pub node_taint_value: Option<String>,
}

/// How a step rolls nodes back: the chart the recorded versions are
/// reinstalled from, how long each node may take, and the pods that verify
/// the nodes again (none given: no verification).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Rollback")]
pub struct RollbackArgs {
    /// How long each node may take to come back Ready at the old version.
    #[arg(long, default_value = "10m", value_parser = parse_duration, env = "KLM_RESTART_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    pub timeout: Duration,

    /// Which chart (job mode reinstalls the recorded version from it).
    #[command(flatten)]
    pub chart: ChartArgs,

    /// Verify the nodes again after the rollback.
    #[command(flatten)]
    pub verification: VerificationArgs,
}

/// The verification pod and how it runs.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Verification")]
pub struct VerificationArgs {
    /// The verification pod YAML (a file path, or - for stdin); ${NODE} and ${TEST_POD} are substituted.
    #[arg(long, value_name = "PATH", conflicts_with = "verification_pod_base64")]
    pub verification_pod: Option<PathBuf>,

    /// The verification pod YAML, base64-encoded (how the workflow passes it).
    #[arg(
        long,
        value_name = "BASE64",
        env = "KLM_VERIFICATION_POD_BASE64",
        hide_env_values = true
    )]
    pub verification_pod_base64: Option<String>,

    /// The verification pod of one pool, as POOL=PATH (repeatable): nodes whose pool label
    /// has that value are verified with it, the others with the default pod.
    #[arg(long = "pool-verification-pod", value_name = "POOL=PATH", value_parser = parse_pool_pod)]
    pub pool_verification_pods: Vec<(String, PathBuf)>,

    /// The pools' verification pods as a base64-encoded YAML map of pool to pod YAML (how
    /// the workflow passes the chart's verificationPods).
    #[arg(
        long,
        value_name = "BASE64",
        env = "KLM_POOL_VERIFICATION_PODS_BASE64",
        hide_env_values = true
    )]
    pub pool_verification_pods_base64: Option<String>,

    /// Namespace the verification pods run in.
    #[arg(
        long,
        default_value = "default",
        env = "KLM_VERIFICATION_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub verification_namespace: String,

    /// How long one node's verification may take.
    #[arg(long, default_value = "180s", value_parser = parse_duration, env = "KLM_VERIFICATION_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    pub verification_timeout: Duration,

    /// Keep a failed verification pod for inspection instead of deleting it.
    #[arg(long)]
    pub keep_failed: bool,
}

/// A `--pool-label` flag's label, if one is given: an empty one (as Argo
/// passes an unset parameter) is none.
pub fn pool_label(flag: Option<&str>) -> Option<&str> {
    flag.filter(|label| !label.trim().is_empty())
}

/// The flags that reach a run again as they were given (the cluster and
/// identity, the release, the chart, the verification pods), for a command
/// klm prints: it must work when pasted. Paths are made absolute.
pub fn reach_flags(
    client: &ClientArgs,
    release: &ReleaseArgs,
    chart: &ChartArgs,
    verification: &VerificationArgs,
) -> Vec<String> {
    let path = |p: &PathBuf| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.clone())
            .display()
            .to_string()
    };
    let mut flags = Vec::new();
    let mut flag = |name: &str, value: String| {
        flags.push(name.to_string());
        flags.push(value);
    };
    if let Some(kubeconfig) = &client.kubeconfig {
        flag("--kubeconfig", path(kubeconfig));
    }
    for (name, value) in [
        ("--context", &client.context),
        ("--cluster", &client.cluster),
        ("--user", &client.user),
        ("--as", &client.as_user),
    ] {
        if let Some(value) = value {
            flag(name, value.clone());
        }
    }
    for group in &client.as_groups {
        flag("--as-group", group.clone());
    }
    flag("--helm-release", release.helm_release.clone());
    flag("--helm-namespace", release.helm_namespace.clone());
    if release.helm.as_os_str() != "helm" {
        flag("--helm", path(&release.helm));
    }
    if chart.chart != DEFAULT_CHART {
        flag("--chart", chart.chart.clone());
    }
    match (
        &verification.verification_pod,
        &verification.verification_pod_base64,
    ) {
        (Some(pod), _) if pod.as_os_str() != "-" => flag("--verification-pod", path(pod)),
        (Some(_), _) => flag("--verification-pod", "<file>".into()),
        (None, Some(encoded)) => flag("--verification-pod-base64", encoded.clone()),
        (None, None) => {}
    }
    for (pool, pod) in &verification.pool_verification_pods {
        flag("--pool-verification-pod", format!("{pool}={}", path(pod)));
    }
    if let Some(encoded) = &verification.pool_verification_pods_base64 {
        flag("--pool-verification-pods-base64", encoded.clone());
    }
    if verification.verification_namespace != "default" {
        flag(
            "--verification-namespace",
            verification.verification_namespace.clone(),
        );
    }
    flags
}

/// Whether a run may go to a version older than the release's.
#[derive(Debug, Clone, Args)]
pub struct DowngradeArgs {
    /// Allow a --target-version older than the release's version (a
    /// downgrade); without it a downgrade is refused before anything changes.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub allow_downgrade: bool,
}

/// Parses `--pool-verification-pod POOL=PATH`.
pub fn parse_pool_pod(raw: &str) -> Result<(String, PathBuf), String> {
    match raw.split_once('=') {
        Some((pool, path)) if !pool.trim().is_empty() && !path.trim().is_empty() => {
            Ok((pool.trim().to_string(), PathBuf::from(path.trim())))
        }
        _ => Err(format!(
            "{raw:?} is not POOL=PATH: give the pool's label value, =, and its pod's file (gpu=gpu-pod.yaml)"
        )),
    }
}

/// Parses `90s`, `10m`, `1h30m` or a bare number of seconds, of at least a
/// second (timeouts: helm takes whole seconds, and no wait is shorter).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    if raw.starts_with('-') {
        return Err("cannot be negative: give how long, e.g. 90s, 10m".into());
    }
    let parsed = match raw.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(raw)
            .map_err(|e| format!("{e} (expected e.g. 90s, 10m, 1h30m)"))?,
    };
    if parsed.is_zero() {
        return Err("must be longer than zero (e.g. 90s, 10m)".into());
    }
    if parsed < Duration::from_secs(1) {
        return Err("must be at least 1s (e.g. 90s, 10m)".into());
    }
    Ok(parsed)
}

/// Parses a count (of nodes, of waves): a whole number, 0 or more.
pub fn parse_count(raw: &str) -> Result<usize, String> {
    raw.trim()
        .parse::<usize>()
        .map_err(|_| format!("{raw:?} is not a count: give a whole number, 0 or more"))
}

/// Parses a wave's index: waves are numbered from 1.
pub fn parse_wave(raw: &str) -> Result<u32, String> {
    match raw.trim().parse::<u32>() {
        Ok(index) if index >= 1 => Ok(index),
        _ => Err(format!(
            "{raw:?} is not a wave: waves are numbered from 1 (select-nodes prints them)"
        )),
    }
}

/// Argo's phases of a step or a workflow (`{{steps.X.status}}`,
/// `{{workflow.status}}`), as Argo spells them.
pub const ARGO_STATUSES: [&str; 7] = [
    "Succeeded",
    "Failed",
    "Error",
    "Skipped",
    "Omitted",
    "Running",
    "Pending",
];

/// Parses one of Argo's statuses, in any case, into Argo's spelling: a
/// status that is not one (a typo, `succeeded` read as a failure) is
/// refused rather than taken for a failure.
pub fn parse_argo_status(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    ARGO_STATUSES
        .iter()
        .find(|status| status.eq_ignore_ascii_case(raw))
        .map(|status| status.to_string())
        .ok_or_else(|| {
            format!(
                "{raw:?} is not an Argo status: expected one of {}",
                ARGO_STATUSES.join(", ")
            )
        })
}

/// Like [`parse_argo_status`]; an empty value is kept empty (no status).
pub fn parse_optional_argo_status(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        return Ok(String::new());
    }
    parse_argo_status(raw)
}

/// Parses the `--set`-style list the workflow passes (`a=1,b.c=x`) into
/// separate `key=value` items, keeping commas inside `{...}` and escaped `\,`.
pub fn split_set_values(raw: &str) -> Result<Vec<String>, String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                current.push('\\');
                current.push(chars.next().unwrap_or(','));
            }
            '{' | '[' => {
                depth += 1;
                current.push(c);
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            ',' if depth == 0 => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    items.push(current);
    let items: Vec<String> = items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for item in &items {
        match item.split_once('=') {
            Some((key, _)) if !key.trim().is_empty() => {}
            _ => return Err(format!("{item:?} is not key=value")),
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_accept_commas_and_json() {
        assert_eq!(
            parse_node_list("a, b,c").unwrap(),
            NodeList(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            parse_node_list(r#"["a","b"]"#).unwrap(),
            NodeList(vec!["a".into(), "b".into()])
        );
        assert!(parse_node_list(" , ").is_err());
        assert!(parse_node_list("Bad_Name").is_err());
    }

    #[test]
    fn durations_accept_units_and_seconds() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("0s").is_err());
        // A bare 0 is refused like 0s (it timed a restart out at once).
        assert_eq!(
            parse_duration("0").unwrap_err(),
            "must be longer than zero (e.g. 90s, 10m)"
        );
        assert!(parse_duration(" 0 ").is_err());
        assert!(parse_duration("500ms").is_err());
        assert_eq!(
            parse_duration("-5s").unwrap_err(),
            "cannot be negative: give how long, e.g. 90s, 10m"
        );
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn counts_and_waves_say_what_they_take() {
        assert_eq!(parse_count("3").unwrap(), 3);
        assert_eq!(
            parse_count("-1").unwrap_err(),
            "\"-1\" is not a count: give a whole number, 0 or more"
        );
        assert_eq!(parse_wave("2").unwrap(), 2);
        assert!(parse_wave("0").unwrap_err().contains("numbered from 1"));
        assert!(parse_wave("-1").unwrap_err().contains("numbered from 1"));
    }

    #[test]
    fn argo_statuses_are_taken_in_any_case_and_nothing_else() {
        assert_eq!(parse_argo_status("succeeded").unwrap(), "Succeeded");
        assert_eq!(parse_argo_status(" SUCCEEDED ").unwrap(), "Succeeded");
        assert_eq!(parse_argo_status("Failed").unwrap(), "Failed");
        assert_eq!(parse_argo_status("error").unwrap(), "Error");
        for bad in ["", "ok", "Success", "{{steps.upgrade.status}}"] {
            let err = parse_argo_status(bad).unwrap_err();
            assert!(err.contains("is not an Argo status"), "{err}");
        }
        assert_eq!(parse_optional_argo_status("").unwrap(), "");
        assert_eq!(parse_optional_argo_status("failed").unwrap(), "Failed");
        assert!(parse_optional_argo_status("done").is_err());
    }

    #[test]
    fn set_values_split_on_top_level_commas_only() {
        assert_eq!(split_set_values("a=1,b.c=x").unwrap(), vec!["a=1", "b.c=x"]);
        assert_eq!(
            split_set_values("list={a,b},c=2").unwrap(),
            vec!["list={a,b}", "c=2"]
        );
        assert_eq!(split_set_values(r"x=a\,b").unwrap(), vec![r"x=a\,b"]);
        assert_eq!(split_set_values("").unwrap(), Vec::<String>::new());
        assert!(split_set_values("novalue").is_err());
    }
}
