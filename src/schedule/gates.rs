//! Gates: where a run holds between waves (after the canary wave, after each
//! pool), and what it holds for: a soak (wait, then verify the nodes that
//! went before again), a person's approval, or both.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::metric::MetricQuery;
use super::period;
use crate::error::UserError;
use crate::nodes::waves::Wave;

/// After which waves a run holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateAt {
    /// Never: wave follows wave.
    #[default]
    None,
    /// After the canary wave.
    Canary,
    /// After the canary wave and after each pool.
    Pool,
}

/// Where and how a run holds between waves. The default holds nowhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatePolicy {
    /// After which waves.
    pub at: GateAt,
    /// Wait this long, then verify the gate's nodes again (None: no soak).
    pub soak: Option<Duration>,
    /// Wait for a person's approval.
    pub approval: bool,
    /// Ask Prometheus after the soak (its `every_wave`: hold before every
    /// wave for it, not only at these gates).
    pub query: Option<MetricQuery>,
}

/// One gate of a run's plan: recorded by select-nodes, passed before its wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    /// The wave (from 1) that waits at the gate.
    pub before_wave: usize,
    /// What the gate follows, for people: `the canary wave`, `pool gpu`.
    pub after: String,
    /// The nodes the soak verifies again: those of the waves since the last gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reverify: Vec<String>,
    /// How long the soak lasts, in seconds (None: no soak).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_seconds: Option<u64>,
    /// Whether a person must approve.
    #[serde(default)]
    pub approval: bool,
    /// Whether the run's metric query must be healthy after the soak.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub query: bool,
    /// How far the run got through it.
    #[serde(default)]
    pub passage: Passage,
}

/// How far a run got through a gate (recorded as it goes, so a retried or
/// resumed step carries on rather than starting the gate over).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Passage {
    /// When the soak ends (RFC 3339), set when it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_until: Option<String>,
    /// The gate's nodes passed their verification after the soak.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reverified: bool,
    /// Who approved, and when (None: not yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<String>,
    /// The metric query was healthy after the soak.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub queried: bool,
}

impl Gate {
    /// What the gate holds for, for people: `a soak of 10m, then approval`.
    pub fn holds_for(&self) -> String {
        let soak = self.soak_seconds.map(|s| {
            format!(
                "a soak of {} then verification of {} node(s) again",
                period::human(s),
                self.reverify.len()
            )
        });
        let query = self.query.then(|| "a healthy metric query".to_string());
        let approval = self.approval.then(|| "a person's approval".to_string());
        [soak, query, approval]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", then ")
    }
}

impl GatePolicy {
    /// Checks that the parts fit together: a gate holds for something, a
    /// soak or an approval needs a gate, a canary gate a canary wave and a
    /// pool gate a pool label.
    pub fn validate(
        &self,
        canary: Option<usize>,
        pool_label: Option<&str>,
    ) -> Result<(), UserError> {
        let every_wave = self.query.as_ref().is_some_and(|q| q.every_wave);
        if let Some(query) = &self.query {
            if query.query.trim().is_empty() {
                return Err(UserError::bad_input(
                    "--gate-query-every-wave asks the metric query before every wave, and there is no --gate-query",
                )
                .hint("pass --gate-query '<PromQL>' (healthy when empty, or a true scalar)"));
            }
            if query.url.trim().is_empty() {
                return Err(UserError::bad_input(
                    "--gate-query asks Prometheus, and there is no --prometheus-url",
                )
                .hint("pass --prometheus-url (e.g. http://prometheus.monitoring:9090)"));
            }
            if self.at == GateAt::None && !every_wave {
                return Err(UserError::bad_input(
                    "--gate-query is asked at a gate, and --gate is none",
                )
                .hint("pass --gate canary or --gate pool, or --gate-query-every-wave to ask it before every wave"));
            }
        }
        let holds = self.soak.is_some() || self.approval || self.query.is_some();
        match self.at {
            GateAt::None if every_wave => Ok(()),
            GateAt::None if holds => Err(UserError::bad_input(
                "--gate-soak and --gate-approval hold the run at a gate, and --gate is none",
            )
            .hint("pass --gate canary (after the canary wave) or --gate pool (after it and after each pool)")),
            GateAt::None => Ok(()),
            _ if !holds => Err(UserError::bad_input(format!(
                "--gate {} holds the run for nothing",
                self.at_name()
            ))
            .hint("pass --gate-soak (e.g. 10m: wait, then verify the nodes again), --gate-approval true, or both")),
            GateAt::Canary if canary.is_none() => Err(UserError::bad_input(
                "--gate canary holds the run after the canary wave, and there is none",
            )
            .hint("pass --canary-size N (the run's first wave: N nodes of the first pool), or --gate pool with --pool-label")),
            GateAt::Pool if pool_label.is_none_or(|l| l.trim().is_empty()) => Err(UserError::bad_input(
                "--gate pool holds the run after each pool, and there is no --pool-label",
            )
            .hint("pass --pool-label (the label whose values are the pools)")),
            _ => Ok(()),
        }
    }

    fn at_name(&self) -> &'static str {
        match self.at {
            GateAt::None => "none",
            GateAt::Canary => "canary",
            GateAt::Pool => "pool",
        }
    }

    /// The gates of a plan: after the canary wave (`canary`: the first wave
    /// is one), and with [`GateAt::Pool`] before each pool after the first.
    /// Each re-verifies the nodes of the waves since the gate before it. A
    /// gate needs a wave after it, so the last wave has none.
    pub fn plan(&self, waves: &[Wave], canary: bool) -> Vec<Gate> {
        let every_wave = self.query.as_ref().is_some_and(|q| q.every_wave);
        if self.at == GateAt::None && !every_wave {
            return Vec::new();
        }
        let canary = canary && self.at != GateAt::None;
        // A query needs samples after the wave: the soak lasts its `for` at least.
        let soak = match (&self.query, self.soak) {
            (Some(query), soak) => Some(
                soak.map_or(0, |d| d.as_secs())
                    .max(query.for_seconds)
                    .max(1),
            ),
            (None, soak) => soak.map(|d| d.as_secs().max(1)),
        };
        let mut gates = Vec::new();
        let mut since = 0;
        for (i, pair) in waves.windows(2).enumerate() {
            let (done, next) = (&pair[0], &pair[1]);
            let after_canary = canary && i == 0;
            let pool_ends = self.at == GateAt::Pool && done.pool != next.pool;
            if !after_canary && !pool_ends && !every_wave {
                continue;
            }
            let after = match (after_canary, pool_ends, &done.pool) {
                (true, true, Some(pool)) => format!("the canary wave and pool {pool}"),
                (true, _, _) => "the canary wave".to_string(),
                (_, true, Some(pool)) => format!("pool {pool}"),
                (_, true, None) => "the nodes without a pool".to_string(),
                _ => format!("wave {}", done.index),
            };
            gates.push(Gate {
                before_wave: next.index,
                after,
                reverify: waves[since..=i]
                    .iter()
                    .flat_map(|w| w.nodes.clone())
                    .collect(),
                soak_seconds: soak,
                approval: self.approval,
                query: self.query.is_some(),
                passage: Passage::default(),
            });
            since = i + 1;
        }
        gates
    }

    /// The policy in a few words, for the plan (None: no gate).
    pub fn describe(&self) -> Option<String> {
        let soak = self
            .soak
            .map(|d| format!("soak {}", period::human(d.as_secs())));
        let approval = self.approval.then(|| "approval".to_string());
        let query = self.query.as_ref().map(MetricQuery::describe);
        let what: Vec<String> = [soak, query, approval].into_iter().flatten().collect();
        let every_wave = self.query.as_ref().is_some_and(|q| q.every_wave);
        match self.at {
            _ if every_wave => Some(format!("a gate before every wave ({})", what.join(", "))),
            GateAt::None => None,
            GateAt::Canary => Some(format!(
                "a gate after the canary wave ({})",
                what.join(", ")
            )),
            GateAt::Pool => Some(format!(
                "a gate after the canary wave and each pool ({})",
                what.join(", ")
            )),
        }
    }
}

/// `--gate-soak`: how long a gate's soak lasts (None: no soak).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Soak(pub Option<Duration>);

/// Parses `--gate-soak`: a duration (`10m`); empty or 0 is no soak.
pub fn parse_soak(raw: &str) -> Result<Soak, String> {
    parse_soak_duration(raw).map(Soak)
}

fn parse_soak_duration(raw: &str) -> Result<Option<Duration>, String> {
    match raw.trim() {
        "" | "0" | "0s" => Ok(None),
        raw if raw.starts_with('-') => Err(format!(
            "gate soak {raw:?} cannot be negative: give how long, e.g. 10m (0: no soak)"
        )),
        raw => match raw.parse::<u64>() {
            Ok(seconds) => Ok(Some(Duration::from_secs(seconds))),
            Err(_) => humantime::parse_duration(raw)
                .map(|d| (!d.is_zero()).then_some(d))
                .map_err(|e| {
                    format!("gate soak {raw:?}: {e} (expected e.g. 90s, 10m, 1h30m; 0: no soak)")
                }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(index: usize, pool: &str, nodes: &[&str]) -> Wave {
        let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        Wave {
            index,
            node_list: nodes.join(","),
            nodes,
            pool: (!pool.is_empty()).then(|| pool.to_string()),
        }
    }

    fn policy(at: GateAt, soak: Option<u64>, approval: bool) -> GatePolicy {
        GatePolicy {
            at,
            soak: soak.map(Duration::from_secs),
            approval,
            query: None,
        }
    }

    fn befores(gates: &[Gate]) -> Vec<usize> {
        gates.iter().map(|g| g.before_wave).collect()
    }

    #[test]
    fn a_canary_gate_holds_once_after_the_first_wave() {
        let waves = [
            wave(1, "", &["a"]),
            wave(2, "", &["b", "c"]),
            wave(3, "", &["d"]),
        ];
        let gates = policy(GateAt::Canary, Some(600), true).plan(&waves, true);
        assert_eq!(befores(&gates), [2]);
        assert_eq!(gates[0].reverify, ["a"]);
        assert_eq!(gates[0].after, "the canary wave");
        assert_eq!(gates[0].soak_seconds, Some(600));
        assert_eq!(
            gates[0].holds_for(),
            "a soak of 10m then verification of 1 node(s) again, then a person's approval"
        );
        assert!(
            policy(GateAt::None, None, false)
                .plan(&waves, true)
                .is_empty()
        );
        // A run of one wave has nothing to hold before.
        assert!(
            policy(GateAt::Canary, None, true)
                .plan(&waves[..1], true)
                .is_empty()
        );
    }

    #[test]
    fn a_pool_gate_holds_before_each_pool_and_reverifies_what_went_before() {
        let waves = [
            wave(1, "cpu", &["c1"]),
            wave(2, "cpu", &["c2", "c3"]),
            wave(3, "gpu", &["g1"]),
            wave(4, "gpu", &["g2"]),
            wave(5, "", &["x"]),
        ];
        let gates = policy(GateAt::Pool, None, true).plan(&waves, true);
        assert_eq!(befores(&gates), [2, 3, 5]);
        assert_eq!(gates[0].reverify, ["c1"]);
        assert_eq!(
            gates[1].reverify,
            ["c2", "c3"],
            "the canary's nodes were verified at their own gate"
        );
        assert_eq!(gates[1].after, "pool cpu");
        assert_eq!(gates[2].reverify, ["g1", "g2"]);
        assert_eq!(gates[0].holds_for(), "a person's approval");
        // Without a canary: the first gate follows the first pool.
        let gates = policy(GateAt::Pool, Some(60), false).plan(&waves, false);
        assert_eq!(befores(&gates), [3, 5]);
        assert_eq!(gates[0].reverify, ["c1", "c2", "c3"]);
        // A canary that is the whole first pool: one gate for both.
        let waves = [wave(1, "cpu", &["c1"]), wave(2, "gpu", &["g1"])];
        let gates = policy(GateAt::Pool, None, true).plan(&waves, true);
        assert_eq!(befores(&gates), [2]);
        assert_eq!(gates[0].after, "the canary wave and pool cpu");
    }

    #[test]
    fn contradictions_are_refused_with_what_to_pass() {
        let err = |p: GatePolicy, canary: Option<usize>, label: Option<&str>| {
            p.validate(canary, label).unwrap_err().to_string()
        };
        assert!(
            err(policy(GateAt::None, Some(60), false), Some(1), None).contains("--gate is none")
        );
        assert!(
            err(policy(GateAt::Canary, None, false), Some(1), None)
                .contains("holds the run for nothing")
        );
        assert!(err(policy(GateAt::Canary, None, true), None, None).contains("there is none"));
        assert!(err(policy(GateAt::Pool, None, true), None, Some(" ")).contains("no --pool-label"));
        assert!(
            policy(GateAt::Pool, None, true)
                .validate(None, Some("pool"))
                .is_ok()
        );
        assert!(GatePolicy::default().validate(None, None).is_ok());
        assert_eq!(parse_soak("").unwrap(), Soak(None));
        assert_eq!(parse_soak("0").unwrap(), Soak(None));
        assert_eq!(
            parse_soak("10m").unwrap(),
            Soak(Some(Duration::from_secs(600)))
        );
        assert!(parse_soak("soon").is_err());
        assert_eq!(
            policy(GateAt::Pool, Some(90), true).describe().unwrap(),
            "a gate after the canary wave and each pool (soak 1m30s, approval)"
        );
    }

    fn query(every_wave: bool) -> MetricQuery {
        MetricQuery {
            query: "failures > 0".into(),
            url: "http://127.0.0.1:9090".into(),
            for_seconds: 300,
            interval_seconds: 30,
            error_limit: 4,
            every_wave,
        }
    }

    #[test]
    fn a_metric_query_soaks_at_least_its_window_and_every_wave_holds_before_each() {
        let waves = [
            wave(1, "", &["a"]),
            wave(2, "", &["b"]),
            wave(3, "", &["c"]),
        ];
        let canary = GatePolicy {
            query: Some(query(false)),
            ..policy(GateAt::Canary, Some(60), false)
        };
        let gates = canary.plan(&waves, true);
        assert_eq!(befores(&gates), [2]);
        assert_eq!(
            gates[0].soak_seconds,
            Some(300),
            "the soak lasts the query's 5m"
        );
        assert!(gates[0].query);
        let every = GatePolicy {
            query: Some(query(true)),
            ..GatePolicy::default()
        };
        assert!(every.validate(None, None).is_ok());
        let gates = every.plan(&waves, false);
        assert_eq!(befores(&gates), [2, 3]);
        assert_eq!(gates[1].after, "wave 2");
        assert_eq!(gates[1].reverify, ["b"]);
    }

    #[test]
    fn a_metric_query_needs_a_url_a_query_and_a_gate() {
        let refused = |p: GatePolicy| p.validate(Some(1), None).unwrap_err().to_string();
        let mut no_url = query(false);
        no_url.url.clear();
        assert!(
            refused(GatePolicy {
                query: Some(no_url),
                ..policy(GateAt::Canary, None, false)
            })
            .contains("--prometheus-url")
        );
        assert!(
            refused(GatePolicy {
                query: Some(query(false)),
                ..GatePolicy::default()
            })
            .contains("--gate is none")
        );
        let mut empty = query(true);
        empty.query.clear();
        assert!(
            refused(GatePolicy {
                query: Some(empty),
                ..GatePolicy::default()
            })
            .contains("there is no --gate-query")
        );
    }
}
