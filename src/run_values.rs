//! The values a run sets on kata-deploy for its own mechanics, never the
//! user's: `updateStrategy.type=OnDelete` (daemonset mode: nothing restarts
//! until each node's turn), `verification.pod=""` (klm verifies, not
//! kata-deploy's own hook), and in job mode `job.nodes`, `job.parallelism`
//! and the toleration that lets installers run on cordoned nodes.
//!
//! helm-upgrade sets them and records them on the run; rollback sets them
//! for its scoped reverts and takes the user's own values for them back;
//! `complete --finish-run` restores what the user had.

use serde_json::{Value, json};

use crate::values;

/// kata-deploy's DaemonSet update strategy.
pub const UPDATE_STRATEGY: &str = "updateStrategy.type";
/// kata-deploy's own verification pod.
pub const VERIFICATION_POD: &str = "verification.pod";
/// job mode: the nodes the installer runs on.
pub const JOB_NODES: &str = "job.nodes";
/// job mode: how many installers run at once.
pub const JOB_PARALLELISM: &str = "job.parallelism";
/// kata-deploy's tolerations (job mode adds [`CORDON_TOLERATION`]).
pub const TOLERATIONS: &str = "tolerations";
/// The toleration job-mode installers need to run on cordoned nodes.
pub const CORDON_TOLERATION: &str = "node.kubernetes.io/unschedulable";

/// Values klm sets for one rollback or one wave, never the user's own: a
/// revert takes the user's values before the run for these.
pub const SCOPE_KEYS: [&str; 4] = [
    JOB_NODES,
    JOB_PARALLELISM,
    VERIFICATION_POD,
    UPDATE_STRATEGY,
];

/// daemonset mode, in the order helm-upgrade sets them: kata-deploy's own
/// verification off, and `OnDelete` so that only the nodes klm restarts
/// move to the new template.
pub fn daemonset() -> Vec<(String, Value)> {
    vec![
        (VERIFICATION_POD.into(), json!("")),
        (UPDATE_STRATEGY.into(), json!("OnDelete")),
    ]
}

/// job mode, in the order helm-upgrade sets them: kata-deploy's own
/// verification off, the installer scoped to `nodes`, all of them at once,
/// and the release's tolerations (from its coalesced values) plus the
/// cordon toleration.
pub fn job_wave(nodes: &[String], coalesced: &Value) -> Vec<(String, Value)> {
    vec![
        (VERIFICATION_POD.into(), json!("")),
        (JOB_NODES.into(), json!(nodes)),
        (JOB_PARALLELISM.into(), json!(nodes.len())),
        (
            TOLERATIONS.into(),
            with_cordon_toleration(coalesced.get(TOLERATIONS)),
        ),
    ]
}

/// Sets these values in a values document.
pub fn apply(values: &mut Value, set: &[(String, Value)]) {
    for (key, value) in set {
        values::set(values, key, value.clone());
    }
}

/// These values as helm flags: strings as `--set key=value`, the rest as
/// `--set-json key=<json>`; returns the `--set` items, then the
/// `--set-json` items, each in order.
pub fn as_set_flags(set: &[(String, Value)]) -> (Vec<String>, Vec<String>) {
    let mut strings = Vec::new();
    let mut json = Vec::new();
    for (key, value) in set {
        match value {
            Value::String(s) => strings.push(format!("{key}={s}")),
            other => json.push(format!("{key}={other}")),
        }
    }
    (strings, json)
}

/// Whether the user's values keep kata-deploy's DaemonSet at `OnDelete`
/// (what daemonset mode's helm upgrade set).
pub fn is_on_delete(user_values: &Value) -> bool {
    values::lookup(user_values, UPDATE_STRATEGY) == Some(&json!("OnDelete"))
}

/// Whether the release's installer is scoped to exactly these nodes (what
/// job mode's helm upgrade of this wave set).
pub fn is_scoped_to(coalesced: &Value, nodes: &[String]) -> bool {
    values::lookup(coalesced, JOB_NODES) == Some(&json!(nodes))
}

/// Gives each of these keys the user's value before the run back (or
/// removes it, where the user had none).
pub fn restore_user_values<'a>(
    values: &mut Value,
    keys: impl IntoIterator<Item = &'a str>,
    before: &Value,
) {
    for key in keys {
        values::restore_from(values, key, before);
    }
}

/// The values without these keys (to compare what the user asked for).
pub fn without(values: &Value, keys: &[&str]) -> Value {
    let mut values = values.clone();
    for key in keys {
        values::remove(&mut values, key);
    }
    values
}

/// The release's tolerations plus the one that lets installers run on
/// cordoned nodes, unless an equivalent one is there.
pub fn with_cordon_toleration(existing: Option<&Value>) -> Value {
    let mut tolerations: Vec<Value> = existing
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let covered = tolerations.iter().any(|t| {
        let exists_all = t.get("operator") == Some(&json!("Exists"))
            && t.get("key")
                .is_none_or(|k| k == "" || k == CORDON_TOLERATION);
        exists_all && t.get("effect").is_none_or(|e| e == "" || e == "NoSchedule")
    });
    if !covered {
        tolerations
            .push(json!({"key": CORDON_TOLERATION, "operator": "Exists", "effect": "NoSchedule"}));
    }
    Value::Array(tolerations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cordon_toleration_is_added_once() {
        let added = with_cordon_toleration(Some(&json!([{"key": "gpu", "operator": "Exists"}])));
        assert_eq!(added.as_array().unwrap().len(), 2);
        assert_eq!(with_cordon_toleration(Some(&added)), added);
        let wildcard = json!([{"operator": "Exists"}]);
        assert_eq!(with_cordon_toleration(Some(&wildcard)), wildcard);
        assert_eq!(with_cordon_toleration(None).as_array().unwrap().len(), 1);
    }

    #[test]
    fn a_wave_scopes_the_installer_and_tolerates_the_cordon() {
        let nodes = vec!["w1".to_string(), "w2".to_string()];
        let coalesced = json!({"tolerations": [{"key": "gpu", "operator": "Exists"}]});
        let set = job_wave(&nodes, &coalesced);
        let keys: Vec<&str> = set.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [VERIFICATION_POD, JOB_NODES, JOB_PARALLELISM, TOLERATIONS]
        );
        assert_eq!(set[1].1, json!(["w1", "w2"]));
        assert_eq!(set[2].1, json!(2));
        assert_eq!(set[3].1.as_array().unwrap().len(), 2);

        let mut values = json!({"job": {"nodes": ["old"]}});
        apply(&mut values, &set);
        assert!(is_scoped_to(&values, &nodes));
        assert!(!is_scoped_to(&values, &nodes[..1]));
        assert_eq!(values::lookup(&values, VERIFICATION_POD), Some(&json!("")));
    }

    #[test]
    fn strings_are_set_and_the_rest_set_as_json() {
        let (strings, json) = as_set_flags(&job_wave(&["w1".to_string()], &json!({})));
        assert_eq!(strings, ["verification.pod="]);
        assert_eq!(
            json,
            [
                r#"job.nodes=["w1"]"#,
                "job.parallelism=1",
                r#"tolerations=[{"effect":"NoSchedule","key":"node.kubernetes.io/unschedulable","operator":"Exists"}]"#
            ]
        );
        let (strings, json) = as_set_flags(&daemonset());
        assert_eq!(
            strings,
            ["verification.pod=", "updateStrategy.type=OnDelete"]
        );
        assert!(json.is_empty());
    }

    #[test]
    fn daemonset_mode_keeps_on_delete() {
        let mut values = json!({"image": {"reference": "mirror/kata-deploy"}});
        assert!(!is_on_delete(&values));
        apply(&mut values, &daemonset());
        assert!(is_on_delete(&values));
        // `without` keeps the maps that held the keys (a comparison of two
        // releases' values strips both alike).
        assert_eq!(
            without(&values, &[UPDATE_STRATEGY, VERIFICATION_POD]),
            json!({"image": {"reference": "mirror/kata-deploy"}, "updateStrategy": {}, "verification": {}})
        );
    }

    #[test]
    fn the_users_values_come_back_for_the_run_keys() {
        let before = json!({"updateStrategy": {"type": "RollingUpdate"}});
        let mut values = json!({"debug": true});
        apply(&mut values, &daemonset());
        restore_user_values(&mut values, SCOPE_KEYS, &before);
        assert_eq!(
            values::lookup(&values, UPDATE_STRATEGY),
            Some(&json!("RollingUpdate"))
        );
        assert_eq!(values::lookup(&values, VERIFICATION_POD), None);
        assert_eq!(values::lookup(&values, "debug"), Some(&json!(true)));
    }
}
