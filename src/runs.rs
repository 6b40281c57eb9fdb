//! The runs a release has: the one its run record names and those that hold
//! its nodes. A step asked for a run that is neither (a typo, the wrong
//! release or namespace) must not report "nothing to do" and exit 0: it
//! refuses, naming the runs there are, and where a run of that name holds
//! another release's nodes, the flags that reach it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;

use crate::annotations;
use crate::error::UserError;
use crate::nodes::selection;
use crate::run_record::RunRecord;

/// The runs known for one release.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Known {
    /// The release, `namespace/name`.
    pub release: String,
    /// The run its record names, with the record's state.
    pub on_record: Option<(String, String)>,
    /// Per run holding nodes (of any release): `namespace/name` of its
    /// release, and how many nodes it holds.
    pub holding: BTreeMap<(String, String), usize>,
}

impl Known {
    /// The runs of `release` (`namespace/name`) from its record and from the
    /// holds on `nodes`.
    pub fn of(release: &str, record: Option<&RunRecord>, nodes: &[Node]) -> Self {
        let mut holding = BTreeMap::new();
        for node in nodes {
            let Some(run) = selection::annotation(node, annotations::RUN) else {
                continue;
            };
            let owner = selection::annotation(node, annotations::RELEASE)
                .unwrap_or(release)
                .to_string();
            *holding.entry((run.to_string(), owner)).or_default() += 1;
        }
        Self {
            release: release.to_string(),
            on_record: record.map(|r| {
                let state = serde_json::to_value(r.state)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                (r.run_id.clone(), state)
            }),
            holding,
        }
    }

    /// Whether `run` is a run of this release: its record names it, or it
    /// holds one of its nodes.
    pub fn has(&self, run: &str) -> bool {
        self.on_record.as_ref().is_some_and(|(id, _)| id == run)
            || self
                .holding
                .keys()
                .any(|(id, release)| id == run && release == &self.release)
    }

    /// The refusal of a step asked for `run`, which this release does not
    /// have (a precondition: nothing was changed). `step` is how the step is
    /// run again, without `--run-id` and the release's flags.
    pub fn unknown(&self, run: &str, step: &str) -> UserError {
        let mut error = UserError::precondition(format!(
            "release {} has no run {run}: no run record names it and it holds no node; nothing was changed",
            self.release
        ));
        let mut theirs: Vec<String> = Vec::new();
        if let Some((id, state)) = &self.on_record {
            theirs.push(format!("{id} ({state}, on record)"));
        }
        for ((id, release), count) in &self.holding {
            if release == &self.release && self.on_record.as_ref().is_none_or(|(r, _)| r != id) {
                theirs.push(format!("{id} (holds {count} node(s))"));
            }
        }
        error = if theirs.is_empty() {
            error.hint(format!("release {} has no run at all", self.release))
        } else {
            error.hint(format!(
                "the runs of release {}: {}",
                self.release,
                theirs.join(", ")
            ))
        };
        for ((id, release), count) in &self.holding {
            if id == run && release != &self.release {
                let (namespace, name) = release.split_once('/').unwrap_or(("", release));
                error = error.hint(format!(
                    "run {run} holds {count} node(s) of release {release}: `klm {step} --run-id {run} --helm-release {name} --helm-namespace {namespace}`"
                ));
            }
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn held(name: &str, run: &str, release: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "annotations": {
            annotations::RUN: run,
            annotations::RELEASE: release,
        }}}))
        .unwrap()
    }

    #[test]
    fn an_unknown_run_names_the_runs_there_are_and_where_it_is() {
        let mut record = crate::run_record::example();
        record.namespace = "default".into();
        record.run_id = "old".into();
        record.state = crate::run_record::RunState::Completed;
        let nodes = [
            held("w1", "klm-1", "kube-system/kata-deploy"),
            held("w2", "klm-1", "kube-system/kata-deploy"),
            held("w3", "wf-2", "default/kata-deploy"),
        ];
        let known = Known::of("default/kata-deploy", Some(&record), &nodes);
        assert!(known.has("old"));
        assert!(known.has("wf-2"));
        assert!(
            !known.has("klm-1"),
            "another release's run is not this one's"
        );
        let err = known.unknown("klm-1", "close-run");
        assert_eq!(err.status, crate::error::ExitStatus::Precondition);
        assert_eq!(
            err.message,
            "release default/kata-deploy has no run klm-1: no run record names it and it holds no node; nothing was changed"
        );
        assert_eq!(
            err.hints,
            [
                "the runs of release default/kata-deploy: old (completed, on record), wf-2 (holds 1 node(s))",
                "run klm-1 holds 2 node(s) of release kube-system/kata-deploy: `klm close-run --run-id klm-1 --helm-release kata-deploy --helm-namespace kube-system`"
            ]
        );
        let none = Known::of("default/kata-deploy", None, &[]);
        assert_eq!(
            none.unknown("x", "close-run").hints,
            ["release default/kata-deploy has no run at all"]
        );
    }
}
