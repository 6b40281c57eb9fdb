//! Metric gates: at a gate, after its soak, a Prometheus query must have
//! been healthy over the last `for` (an empty result, or a true scalar, at
//! every sample). Argo Rollouts' analysis is the model: a sample is healthy,
//! unhealthy or an error; one unhealthy sample fails the gate (its nodes
//! are rolled back and the run stops); errors alone leave it inconclusive
//! (the run stops, nothing is rolled back: the metrics could not say).

use serde::{Deserialize, Serialize};

use crate::prometheus::{Answer, Prometheus, PrometheusError};

/// The query a gate asks, as the run records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricQuery {
    /// The PromQL query: healthy when empty, or a true (non-zero) scalar.
    pub query: String,
    /// Prometheus's base URL.
    pub url: String,
    /// How far back the samples go, in seconds.
    pub for_seconds: u64,
    /// Seconds between samples.
    pub interval_seconds: u64,
    /// Consecutive errors that make the gate inconclusive.
    pub error_limit: usize,
    /// Hold before every wave, not only at the canary's and pools' gates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub every_wave: bool,
}

impl MetricQuery {
    /// The query in a few words, for the plan and the gate's description.
    pub fn describe(&self) -> String {
        format!(
            "Prometheus query {:?} healthy (empty, or a true scalar) for {} (a sample every {})",
            self.query,
            super::period::human(self.for_seconds),
            super::period::human(self.interval_seconds)
        )
    }

    /// The times of the samples that end at `end`: every interval over the
    /// last `for`, oldest first, `end` last.
    pub fn sample_times(&self, end: jiff::Timestamp) -> Vec<jiff::Timestamp> {
        let interval = self.interval_seconds.max(1);
        let count = self.for_seconds / interval;
        (0..=count)
            .rev()
            .filter_map(|i| {
                let back = jiff::SignedDuration::from_secs((i * interval) as i64);
                end.checked_sub(back).ok()
            })
            .collect()
    }
}

/// One sample of the query.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// Empty, or a true scalar.
    Healthy,
    /// What the query returned instead.
    Unhealthy(String),
    /// No answer.
    Error(String),
}

impl Sample {
    /// The sample an answer makes.
    pub fn of(answer: Result<Answer, PrometheusError>) -> Sample {
        match answer {
            Ok(Answer::Scalar(v)) if v != 0.0 && !v.is_nan() => Sample::Healthy,
            Ok(Answer::Scalar(v)) => Sample::Unhealthy(format!("the scalar {v}")),
            Ok(Answer::Vector(series)) if series.is_empty() => Sample::Healthy,
            Ok(Answer::Vector(series)) => {
                let shown: Vec<String> = series.iter().take(5).map(|s| s.to_string()).collect();
                let more = match series.len() {
                    n if n > 5 => format!(" and {} more", n - 5),
                    _ => String::new(),
                };
                Sample::Unhealthy(format!("{}{more}", shown.join(", ")))
            }
            Ok(Answer::Other(kind)) => Sample::Error(format!(
                "the query returns a {kind}, neither a vector nor a scalar"
            )),
            Err(err) => Sample::Error(err.to_string()),
        }
    }
}

/// What a gate's samples say.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Healthy throughout.
    Passed {
        /// How many samples.
        samples: usize,
    },
    /// Unhealthy: the first unhealthy sample, when, and what it returned.
    Failed {
        /// When.
        at: jiff::Timestamp,
        /// The query's answer.
        answer: String,
    },
    /// The metrics could not say: too many errors in a row, or no healthy
    /// sample at all.
    Inconclusive {
        /// The last error.
        why: String,
    },
}

/// Judges the samples, oldest first: one unhealthy sample fails; `limit`
/// errors in a row, or no healthy sample, is inconclusive.
pub fn judge(samples: &[(jiff::Timestamp, Sample)], limit: usize) -> Verdict {
    if let Some((at, Sample::Unhealthy(answer))) = samples
        .iter()
        .find(|(_, s)| matches!(s, Sample::Unhealthy(_)))
    {
        return Verdict::Failed {
            at: *at,
            answer: answer.clone(),
        };
    }
    let mut run = 0;
    let mut longest = 0;
    let mut last_error = None;
    for (_, sample) in samples {
        match sample {
            Sample::Error(why) => {
                run += 1;
                longest = longest.max(run);
                last_error = Some(why.clone());
            }
            _ => run = 0,
        }
    }
    let healthy = samples
        .iter()
        .filter(|(_, s)| *s == Sample::Healthy)
        .count();
    match last_error {
        Some(why) if longest >= limit.max(1) || healthy == 0 => Verdict::Inconclusive {
            why: format!("{longest} error(s) in a row; the last: {why}"),
        },
        _ => Verdict::Passed { samples: healthy },
    }
}

/// Samples `query` over the last `for` before `end` and judges it.
pub async fn evaluate(
    prometheus: &Prometheus,
    query: &MetricQuery,
    end: jiff::Timestamp,
) -> Verdict {
    let mut samples = Vec::new();
    for at in query.sample_times(end) {
        let sample = Sample::of(prometheus.query_at(&query.query, at).await);
        let failed = matches!(sample, Sample::Unhealthy(_));
        samples.push((at, sample));
        if failed {
            break;
        }
    }
    judge(&samples, query.error_limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_765_100_000 + seconds).unwrap()
    }

    fn query() -> MetricQuery {
        MetricQuery {
            query: "failures > 0".into(),
            url: "http://127.0.0.1:9090".into(),
            for_seconds: 60,
            interval_seconds: 20,
            error_limit: 2,
            every_wave: false,
        }
    }

    #[test]
    fn samples_cover_the_last_for_oldest_first() {
        assert_eq!(query().sample_times(t(60)), [t(0), t(20), t(40), t(60)]);
    }

    #[test]
    fn one_unhealthy_sample_fails_the_gate_with_its_answer() {
        let samples = [
            (t(0), Sample::Healthy),
            (t(20), Sample::Error("timeout".into())),
            (t(40), Sample::Unhealthy(r#"{node="kata-2"} 3"#.into())),
        ];
        assert_eq!(
            judge(&samples, 2),
            Verdict::Failed {
                at: t(40),
                answer: r#"{node="kata-2"} 3"#.into()
            }
        );
    }

    #[test]
    fn errors_in_a_row_up_to_the_limit_are_inconclusive_and_fewer_pass() {
        let error = || Sample::Error("no answer".into());
        let samples = [
            (t(0), Sample::Healthy),
            (t(20), error()),
            (t(40), Sample::Healthy),
        ];
        assert_eq!(judge(&samples, 2), Verdict::Passed { samples: 2 });
        let samples = [(t(0), Sample::Healthy), (t(20), error()), (t(40), error())];
        assert!(matches!(judge(&samples, 2), Verdict::Inconclusive { .. }));
        // No healthy sample at all says nothing, whatever the limit.
        assert!(matches!(
            judge(&[(t(0), error())], 5),
            Verdict::Inconclusive { .. }
        ));
    }

    #[test]
    fn an_empty_vector_or_a_true_scalar_is_healthy() {
        assert_eq!(Sample::of(Ok(Answer::Vector(Vec::new()))), Sample::Healthy);
        assert_eq!(Sample::of(Ok(Answer::Scalar(1.0))), Sample::Healthy);
        assert_eq!(
            Sample::of(Ok(Answer::Scalar(0.0))),
            Sample::Unhealthy("the scalar 0".into())
        );
        assert!(matches!(
            Sample::of(Ok(Answer::Other("string".into()))),
            Sample::Error(_)
        ));
    }
}
