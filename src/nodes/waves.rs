//! Ordering nodes and splitting them into waves.

use crate::error::UserError;

/// One wave: the nodes upgraded, verified and completed (or rolled back) together.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Wave {
    /// 1-based position of the wave.
    pub index: usize,
    /// The nodes, in order.
    pub nodes: Vec<String>,
    /// The nodes as one comma-separated string (what workflow steps pass to `--nodes`).
    #[serde(rename = "nodeList")]
    pub node_list: String,
    /// The pool all its nodes are in (None: no pool label, or nodes without the label).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pool: Option<String>,
}

/// How many nodes a wave takes: a number, or a share of the selected nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    /// This many nodes.
    Nodes(usize),
    /// This percentage (1 to 100) of the selected nodes, rounded up.
    Percent(u8),
}

impl BatchSize {
    /// The number of nodes, out of `selected`: at least 1.
    pub fn of(self, selected: usize) -> usize {
        match self {
            BatchSize::Nodes(n) => n.max(1),
            BatchSize::Percent(p) => (selected * usize::from(p)).div_ceil(100).max(1),
        }
    }
}

impl std::fmt::Display for BatchSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchSize::Nodes(n) => write!(f, "{n}"),
            BatchSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Parses `--batch-size` (as clap's value parser: the flag arrives as a
/// string from Argo parameters): a whole number of nodes per wave, 1 or
/// more, or a percentage of the selected nodes (`10%`).
pub fn parse_batch_size(raw: &str) -> Result<BatchSize, String> {
    let hint = "give a whole number of nodes per wave, 1 or more (1 = node by node), or a percentage of the selected nodes from 1% to 100%";
    let raw = raw.trim();
    if let Some(percent) = raw.strip_suffix('%') {
        return match percent.trim().parse::<u8>() {
            Ok(p @ 1..=100) => Ok(BatchSize::Percent(p)),
            _ => Err(format!(
                "batch size {raw:?} is not a percentage from 1% to 100%; {hint}"
            )),
        };
    }
    match raw.parse::<usize>() {
        Ok(0) => Err(format!("batch size 0 would upgrade nothing; {hint}")),
        Ok(n) => Ok(BatchSize::Nodes(n)),
        Err(_) => Err(format!("batch size {raw:?} is not a number; {hint}")),
    }
}

/// How wave sizes grow after the first wave of a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Growth {
    /// Every wave has the batch size.
    #[default]
    Fixed,
    /// The batch size, twice it, three times it, ...
    Linear,
    /// The batch size, twice it, four times it, ...
    Exponential,
}

impl Growth {
    /// The size of the `k`-th wave (from 0) of a pool, before the cap.
    fn size(self, batch: usize, k: usize) -> usize {
        match self {
            Growth::Fixed => batch,
            Growth::Linear => batch.saturating_mul(k + 1),
            Growth::Exponential => {
                batch.saturating_mul(1usize.checked_shl(k as u32).unwrap_or(usize::MAX))
            }
        }
    }
}

/// How the selected nodes are split into waves. The default is the
/// proposal's: node by node, in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The first wave of each pool (and every wave, without growth).
    pub batch: BatchSize,
    /// How waves grow within a pool.
    pub growth: Growth,
    /// The largest a grown wave may be (None: no cap).
    pub max_batch: Option<usize>,
    /// The run's first wave: this many nodes of the first pool (None: none).
    pub canary: Option<usize>,
    /// Pools upgraded first, in this order; the others follow by name.
    pub pool_order: Vec<String>,
    /// At most this many selected nodes unschedulable at once, counting
    /// those already unavailable (None: no budget).
    pub max_unavailable: Option<BatchSize>,
    /// Plan nodes already unavailable (NotReady, cordoned by someone else)
    /// too, instead of skipping them.
    pub include_unavailable: bool,
    /// How many planned nodes may fail, each rolled back, before the run
    /// stops (None: the first failure stops it).
    pub max_failed: Option<BatchSize>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            batch: BatchSize::Nodes(1),
            growth: Growth::Fixed,
            max_batch: None,
            canary: None,
            pool_order: Vec::new(),
            max_unavailable: None,
            include_unavailable: false,
            max_failed: None,
        }
    }
}

impl Policy {
    /// Checks that the parts fit together (bad input otherwise): a cap not
    /// below a batch given in nodes, and a pool order only with a pool label.
    pub fn validate(&self, pool_label: Option<&str>) -> Result<(), UserError> {
        if let (Some(cap), BatchSize::Nodes(batch)) = (self.max_batch, self.batch)
            && cap < batch
        {
            return Err(UserError::bad_input(format!(
                "--max-batch-size {cap} is below --batch-size {batch}"
            ))
            .hint("pass a --max-batch-size of at least the batch size (0: no cap)"));
        }
        if !self.pool_order.is_empty() && pool_label.is_none_or(|l| l.trim().is_empty()) {
            return Err(UserError::bad_input(format!(
                "--pool-order {} needs --pool-label: the label whose values are the pools",
                self.pool_order.join(",")
            ))
            .hint("pass --pool-label (e.g. node-pool), or drop --pool-order"));
        }
        Ok(())
    }

    /// The largest wave the unavailability budget leaves, with `unavailable`
    /// of the `selected` nodes out already (None: no budget); a budget they
    /// use up is a precondition not met.
    pub fn budget_cap(
        &self,
        selected: usize,
        unavailable: usize,
    ) -> Result<Option<usize>, UserError> {
        let Some(budget) = self.max_unavailable else {
            return Ok(None);
        };
        let allowed = budget.of(selected);
        match allowed.checked_sub(unavailable) {
            Some(cap) if cap > 0 => Ok(Some(cap)),
            _ => Err(UserError::precondition(format!(
                "{unavailable} of the {selected} selected node(s) are unavailable already (NotReady or cordoned), and --max-unavailable {budget} allows {allowed} at once: no wave can start"
            ))
            .hint("bring those nodes back, raise --max-unavailable, or narrow the selection")),
        }
    }

    /// The policy in one line, for the plan.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("batch size {}", self.batch)];
        if self.growth != Growth::Fixed {
            let growth = match self.growth {
                Growth::Linear => "linear",
                _ => "exponential",
            };
            parts.push(match self.max_batch {
                Some(cap) => format!("growing {growth}ly up to {cap}"),
                None => format!("growing {growth}ly"),
            });
        }
        if let Some(canary) = self.canary {
            parts.push(format!("a canary wave of {canary}"));
        }
        if !self.pool_order.is_empty() {
            parts.push(format!("pools {} first", self.pool_order.join(", ")));
        }
        if let Some(budget) = self.max_unavailable {
            parts.push(format!("at most {budget} unavailable at once"));
        }
        if let Some(budget) = self.max_failed {
            parts.push(format!(
                "up to {budget} failed node(s) rolled back without stopping"
            ));
        }
        parts.join(", ")
    }
}

/// `--max-unavailable` (how many selected nodes may be unschedulable at
/// once) or `--max-failed-nodes` (how many may fail): a number or a share of
/// the nodes (None: no budget).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget(pub Option<BatchSize>);

/// Parses `--max-unavailable`: a number of nodes or a percentage of the
/// selected nodes; 0 (the workflow's default) is no budget.
pub fn parse_max_unavailable(raw: &str) -> Result<Budget, String> {
    parse_budget(raw, "max-unavailable", "no budget")
}

/// Parses `--max-failed-nodes`: a number of nodes or a percentage of the
/// planned nodes; 0 (the default) stops the run at its first failure.
pub fn parse_max_failed_nodes(raw: &str) -> Result<Budget, String> {
    parse_budget(raw, "max-failed-nodes", "stop at the first failure")
}

/// A budget flag's value: 0 or empty is none; else a number or a share.
fn parse_budget(raw: &str, flag: &str, zero: &str) -> Result<Budget, String> {
    if raw.trim().is_empty() || raw.trim() == "0" {
        return Ok(Budget(None));
    }
    parse_batch_size(raw).map(|b| Budget(Some(b))).map_err(|_| {
        format!(
            "{flag} {raw:?} is neither a number of nodes nor a percentage from 1% to 100% (0: {zero})"
        )
    })
}

/// Parses `--pool-order` (`cpu,gpu,tdx`): pool values separated by commas;
/// empty: no order. A pool named twice is bad input.
pub fn parse_pool_order(raw: &str) -> Result<PoolOrder, String> {
    let mut pools: Vec<String> = Vec::new();
    for pool in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if pools.iter().any(|p| p == pool) {
            return Err(format!(
                "pool {pool:?} is named twice in the pool order; name each pool once"
            ));
        }
        pools.push(pool.to_string());
    }
    Ok(PoolOrder(pools))
}

/// The pools of `--pool-order`, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolOrder(pub Vec<String>);

/// A node with the keys it is ordered by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ordered {
    /// Pool label value; nodes without a pool sort after every pool.
    pub pool: Option<String>,
    /// Node name.
    pub name: String,
}

/// Orders nodes deterministically: the pools of `pool_order` first, in that
/// order, then the other pools by name, nodes without a pool last; by name
/// within a pool.
pub fn order(mut nodes: Vec<Ordered>, pool_order: &[String]) -> Vec<Ordered> {
    let rank = |pool: &Option<String>| match pool {
        Some(p) => match pool_order.iter().position(|o| o == p) {
            Some(i) => (0, i, String::new()),
            None => (1, 0, p.clone()),
        },
        None => (2, 0, String::new()),
    };
    nodes.sort_by(|a, b| {
        rank(&a.pool)
            .cmp(&rank(&b.pool))
            .then_with(|| a.name.cmp(&b.name))
    });
    nodes
}

/// Splits ordered nodes into waves by `policy`: a wave never holds nodes of
/// two pools; the canary wave comes first, from the first pool; each pool
/// starts at the batch size (a percentage of all `nodes`) and grows from
/// there, up to the cap.
pub fn plan(nodes: &[Ordered], policy: &Policy, budget_cap: Option<usize>) -> Vec<Wave> {
    let batch = policy.batch.of(nodes.len());
    let cap = policy
        .max_batch
        .unwrap_or(usize::MAX)
        .min(budget_cap.unwrap_or(usize::MAX))
        .max(1);
    let mut waves: Vec<&[Ordered]> = Vec::new();
    let mut canary = policy.canary.filter(|c| *c > 0);
    for pool in nodes.chunk_by(|a, b| a.pool == b.pool) {
        let mut rest: &[Ordered] = pool;
        if let Some(size) = canary.take() {
            let (first, after) = rest.split_at(size.min(cap).min(rest.len()));
            waves.push(first);
            rest = after;
        }
        let mut k = 0;
        while !rest.is_empty() {
            let size = policy.growth.size(batch, k).min(cap).max(1);
            let (wave, after) = rest.split_at(size.min(rest.len()));
            waves.push(wave);
            rest = after;
            k += 1;
        }
    }
    waves
        .into_iter()
        .enumerate()
        .map(|(i, wave)| {
            let nodes: Vec<String> = wave.iter().map(|n| n.name.clone()).collect();
            Wave {
                index: i + 1,
                node_list: nodes.join(","),
                nodes,
                pool: wave.first().and_then(|n| n.pool.clone()),
            }
        })
        .collect()
}

/// How many waves one Argo workflow carries, by default. The workflow
/// object (its status included) must stay under 1 MiB; the rest of the
/// object (the stored template twice, the other steps' nodes) takes about
/// 90 KB. With the chart's template (a wave is one pod and 9 status nodes,
/// its loop item only its index, so the cost does not grow with the batch
/// size) a wave costs about 490 bytes once Argo compresses the nodes:
/// measured, about 1,960 waves fit; 1,800 keeps a margin for longer names.
/// Past the limit the workflow fails mid-wave with no exit handler.
pub const DEFAULT_MAX_WAVES: usize = 1800;

/// Refuses a plan with more waves than one workflow carries (`max_waves`;
/// 0 = no bound, for Argo with node status offloading), saying which
/// batch size fits.
pub fn check_capacity(
    waves: usize,
    nodes: usize,
    batch_size: BatchSize,
    max_waves: usize,
) -> Result<(), UserError> {
    if max_waves == 0 || waves <= max_waves {
        return Ok(());
    }
    let fits = nodes.div_ceil(max_waves);
    Err(UserError::bad_input(format!(
        "{nodes} node(s) at batch size {batch_size} make {waves} waves; one workflow carries at most {max_waves} (--max-waves)"
    ))
    .hint(format!(
        "pass --batch-size {fits} (or more) to fit {nodes} node(s) in {max_waves} waves"
    ))
    .hint("or split the fleet into several runs with --node-selector, each resumed with --skip-completed")
    .hint("with Argo node status offloading configured (persistence.nodeStatusOffLoad), pass --max-waves 0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn pooled(list: &[(&str, &str)]) -> Vec<Ordered> {
        list.iter()
            .map(|(pool, name)| Ordered {
                pool: (!pool.is_empty()).then(|| pool.to_string()),
                name: name.to_string(),
            })
            .collect()
    }

    fn unpooled(list: &[&str]) -> Vec<Ordered> {
        list.iter()
            .map(|n| Ordered {
                pool: None,
                name: n.to_string(),
            })
            .collect()
    }

    fn sizes(waves: &[Wave]) -> Vec<usize> {
        waves.iter().map(|w| w.nodes.len()).collect()
    }

    fn policy(batch: BatchSize, growth: Growth, max_batch: Option<usize>) -> Policy {
        Policy {
            batch,
            growth,
            max_batch,
            ..Policy::default()
        }
    }

    #[test]
    fn batch_sizes_are_positive_numbers_or_percentages() {
        assert_eq!(parse_batch_size("3").unwrap(), BatchSize::Nodes(3));
        assert_eq!(parse_batch_size(" 1 ").unwrap(), BatchSize::Nodes(1));
        assert_eq!(parse_batch_size("10%").unwrap(), BatchSize::Percent(10));
        assert!(parse_batch_size("0").unwrap_err().contains("batch size 0"));
        assert!(
            parse_batch_size("two")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(parse_batch_size("-1").is_err());
        for bad in ["0%", "101%", "x%", "%"] {
            assert!(
                parse_batch_size(bad).unwrap_err().contains("percentage"),
                "{bad}"
            );
        }
        // A share of the selected nodes, rounded up, never 0.
        assert_eq!(BatchSize::Percent(10).of(95), 10);
        assert_eq!(BatchSize::Percent(10).of(3), 1);
        assert_eq!(BatchSize::Percent(100).of(7), 7);
        assert_eq!(BatchSize::Nodes(4).of(2), 4);
    }

    #[test]
    fn waves_cover_every_node_once_in_order() {
        let nodes = unpooled(&["a", "b", "c", "d", "e"]);
        let waves = plan(
            &nodes,
            &policy(BatchSize::Nodes(2), Growth::Fixed, None),
            None,
        );
        assert_eq!(waves.len(), 3);
        assert_eq!(waves[0].nodes, names(&["a", "b"]));
        assert_eq!(waves[2].nodes, names(&["e"]));
        assert_eq!(waves[1].node_list, "c,d");
        assert_eq!(waves[2].index, 3);
        assert!(plan(&[], &Policy::default(), None).is_empty());
        assert_eq!(
            sizes(&plan(&nodes, &Policy::default(), None)),
            [1, 1, 1, 1, 1]
        );
        assert_eq!(
            plan(
                &nodes,
                &policy(BatchSize::Nodes(10), Growth::Fixed, None),
                None
            )
            .len(),
            1
        );
    }

    #[test]
    fn waves_grow_linearly_or_exponentially_up_to_the_cap() {
        let nodes: Vec<String> = (1..=100).map(|i| format!("n{i:03}")).collect();
        let nodes = unpooled(&nodes.iter().map(String::as_str).collect::<Vec<_>>());
        let exponential = plan(
            &nodes,
            &policy(BatchSize::Nodes(1), Growth::Exponential, Some(50)),
            None,
        );
        assert_eq!(sizes(&exponential), [1, 2, 4, 8, 16, 32, 37]);
        let capped = plan(
            &nodes,
            &policy(BatchSize::Nodes(1), Growth::Exponential, Some(20)),
            None,
        );
        assert_eq!(sizes(&capped), [1, 2, 4, 8, 16, 20, 20, 20, 9]);
        let linear = plan(
            &nodes,
            &policy(BatchSize::Nodes(5), Growth::Linear, None),
            None,
        );
        assert_eq!(sizes(&linear), [5, 10, 15, 20, 25, 25]);
        // 10% of 100 nodes, doubling.
        let share = plan(
            &nodes,
            &policy(BatchSize::Percent(10), Growth::Exponential, None),
            None,
        );
        assert_eq!(sizes(&share), [10, 20, 40, 30]);
        assert_eq!(share.iter().map(|w| w.nodes.len()).sum::<usize>(), 100);
        assert_eq!(share[3].nodes.last().map(String::as_str), Some("n100"));
    }

    #[test]
    fn pools_go_in_the_given_order_and_never_share_a_wave() {
        let nodes = order(
            pooled(&[
                ("gpu", "g2"),
                ("cpu", "c1"),
                ("tdx", "t1"),
                ("", "x1"),
                ("gpu", "g1"),
                ("arm", "a1"),
                ("cpu", "c2"),
                ("cpu", "c3"),
            ]),
            &names(&["cpu", "gpu"]),
        );
        let names_only: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        // Named pools first, in order; then the others by name; unpooled last.
        assert_eq!(names_only, ["c1", "c2", "c3", "g1", "g2", "a1", "t1", "x1"]);
        let waves = plan(
            &nodes,
            &policy(BatchSize::Nodes(2), Growth::Fixed, None),
            None,
        );
        let lists: Vec<&str> = waves.iter().map(|w| w.node_list.as_str()).collect();
        assert_eq!(lists, ["c1,c2", "c3", "g1,g2", "a1", "t1", "x1"]);
    }

    #[test]
    fn the_canary_is_the_first_wave_of_the_first_pool_and_growth_restarts_per_pool() {
        let nodes = order(
            pooled(&[
                ("a", "a1"),
                ("a", "a2"),
                ("a", "a3"),
                ("a", "a4"),
                ("b", "b1"),
                ("b", "b2"),
                ("b", "b3"),
            ]),
            &[],
        );
        let policy = Policy {
            canary: Some(1),
            ..policy(BatchSize::Nodes(1), Growth::Exponential, None)
        };
        let lists: Vec<String> = plan(&nodes, &policy, None)
            .into_iter()
            .map(|w| w.node_list)
            .collect();
        assert_eq!(lists, ["a1", "a2", "a3,a4", "b1", "b2,b3"]);
        // A canary larger than the first pool takes that pool only.
        let big = Policy {
            canary: Some(9),
            ..Policy::default()
        };
        let lists: Vec<String> = plan(&nodes, &big, None)
            .into_iter()
            .map(|w| w.node_list)
            .collect();
        assert_eq!(lists, ["a1,a2,a3,a4", "b1", "b2", "b3"]);
    }

    #[test]
    fn the_unavailability_budget_caps_every_wave_counting_nodes_already_out() {
        // 2 of 10 may be out; 1 is out already: waves of 1, the canary too.
        let budget = Policy {
            max_unavailable: Some(BatchSize::Nodes(2)),
            canary: Some(3),
            ..policy(BatchSize::Nodes(5), Growth::Fixed, None)
        };
        let cap = budget.budget_cap(10, 1).unwrap();
        assert_eq!(cap, Some(1));
        let nodes = unpooled(&["a", "b", "c"]);
        assert_eq!(sizes(&plan(&nodes, &budget, cap)), [1, 1, 1]);
        // 20% of 20 is 4; 1 out: waves of at most 3.
        let share = Policy {
            max_unavailable: Some(BatchSize::Percent(20)),
            ..policy(BatchSize::Nodes(1), Growth::Exponential, None)
        };
        assert_eq!(share.budget_cap(20, 1).unwrap(), Some(3));
        let many: Vec<String> = (1..=19).map(|i| format!("n{i:02}")).collect();
        let many = unpooled(&many.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            sizes(&plan(&many, &share, Some(3))),
            [1, 2, 3, 3, 3, 3, 3, 1]
        );
        // The budget used up already: no wave can start.
        let err = budget.budget_cap(10, 2).unwrap_err();
        assert_eq!(err.status, crate::error::ExitStatus::Precondition);
        assert!(
            err.message
                .contains("2 of the 10 selected node(s) are unavailable"),
            "{}",
            err.message
        );
        assert_eq!(
            Policy::default().budget_cap(10, 9).unwrap(),
            None,
            "no budget"
        );
        assert_eq!(parse_max_unavailable("0").unwrap(), Budget(None));
        assert_eq!(
            parse_max_unavailable("25%").unwrap(),
            Budget(Some(BatchSize::Percent(25)))
        );
        assert!(
            parse_max_unavailable("-2")
                .unwrap_err()
                .contains("neither a number")
        );
        assert_eq!(parse_max_failed_nodes("").unwrap(), Budget(None));
        assert_eq!(
            parse_max_failed_nodes("2").unwrap(),
            Budget(Some(BatchSize::Nodes(2)))
        );
        assert!(
            parse_max_failed_nodes("lots")
                .unwrap_err()
                .contains("(0: stop at the first failure)")
        );
    }

    #[test]
    fn a_policy_whose_parts_contradict_is_refused() {
        let below = policy(BatchSize::Nodes(5), Growth::Linear, Some(2));
        assert!(
            below
                .validate(None)
                .unwrap_err()
                .message
                .contains("below --batch-size 5")
        );
        let orphan = Policy {
            pool_order: names(&["gpu"]),
            ..Policy::default()
        };
        assert!(
            orphan
                .validate(None)
                .unwrap_err()
                .message
                .contains("needs --pool-label")
        );
        assert!(orphan.validate(Some("node-pool")).is_ok());
        assert_eq!(
            parse_pool_order(" cpu, gpu ,").unwrap(),
            PoolOrder(names(&["cpu", "gpu"]))
        );
        assert!(parse_pool_order("cpu,cpu").unwrap_err().contains("twice"));
        assert_eq!(
            Policy {
                canary: Some(2),
                ..policy(BatchSize::Percent(10), Growth::Exponential, Some(50))
            }
            .describe(),
            "batch size 10%, growing exponentially up to 50, a canary wave of 2"
        );
    }

    #[test]
    fn plans_beyond_the_workflow_capacity_are_refused_with_a_batch_size_that_fits() {
        assert!(check_capacity(1800, 1800, BatchSize::Nodes(1), DEFAULT_MAX_WAVES).is_ok());
        assert!(check_capacity(500, 5000, BatchSize::Nodes(10), DEFAULT_MAX_WAVES).is_ok());
        assert!(
            check_capacity(100_000, 100_000, BatchSize::Nodes(1), 0).is_ok(),
            "0 = unlimited"
        );
        let err = check_capacity(3, 3, BatchSize::Nodes(1), 2).unwrap_err();
        assert!(err.message.contains("3 waves"), "{}", err.message);
        assert!(err.hints.iter().any(|h| h.contains("--batch-size 2")));
        let err = check_capacity(1001, 1001, BatchSize::Nodes(1), 750).unwrap_err();
        assert!(err.hints.iter().any(|h| h.contains("--batch-size 2")));
    }

    #[test]
    fn order_is_pool_then_name_with_unpooled_last() {
        let ordered = order(
            pooled(&[
                ("", "a"),
                ("pool-b", "b1"),
                ("pool-a", "z"),
                ("pool-a", "c"),
            ]),
            &[],
        );
        let ordered: Vec<&str> = ordered.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(ordered, ["c", "z", "b1", "a"]);
    }
}
