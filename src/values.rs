//! Helm values trees addressed by dotted keys (`updateStrategy.type`), as
//! `--set` names them.

use serde_json::{Value, json};

/// The value at a dotted key.
pub fn lookup<'a>(values: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(values, |v, part| v.get(part))
}

/// Sets a dotted key, creating the maps on the way.
pub fn set(values: &mut Value, key: &str, value: Value) {
    let (parents, last) = split(key);
    let mut cursor = values;
    for part in parents {
        if !cursor.get(part).is_some_and(Value::is_object) {
            cursor[part] = json!({});
        }
        cursor = &mut cursor[part];
    }
    cursor[last] = value;
}

/// Removes a dotted key if it is there.
pub fn remove(values: &mut Value, key: &str) {
    let (parents, last) = split(key);
    let mut cursor = values;
    for part in parents {
        match cursor.get_mut(part) {
            Some(next) => cursor = next,
            None => return,
        }
    }
    if let Some(map) = cursor.as_object_mut() {
        map.remove(last);
    }
}

/// Sets the key to `value`, or removes it when `value` is None.
pub fn restore(values: &mut Value, key: &str, value: Option<Value>) {
    match value {
        Some(v) => set(values, key, v),
        None => remove(values, key),
    }
}

/// Like [`restore`], against the user's own values `original`: a key the
/// user did not have is removed together with the maps that held only it
/// and that the user did not have either (no `updateStrategy: {}` is left).
pub fn restore_from(values: &mut Value, key: &str, original: &Value) {
    match lookup(original, key) {
        Some(v) => set(values, key, v.clone()),
        None => {
            remove(values, key);
            let (parents, _) = split(key);
            for depth in (1..=parents.len()).rev() {
                let path = parents[..depth].join(".");
                let empty = lookup(values, &path)
                    .and_then(Value::as_object)
                    .is_some_and(|m| m.is_empty());
                if empty && lookup(original, &path).is_none() {
                    remove(values, &path);
                } else {
                    break;
                }
            }
        }
    }
}

fn split(key: &str) -> (Vec<&str>, &str) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    (parts, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_keys_are_set_looked_up_and_removed() {
        let mut values = json!({"updateStrategy": {"type": "OnDelete", "rollingUpdate": {"maxUnavailable": 1}}, "x": 1});
        remove(&mut values, "updateStrategy.type");
        assert_eq!(
            values,
            json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": 1}}, "x": 1})
        );
        set(&mut values, "verification.pod", json!("spec"));
        assert_eq!(values["verification"]["pod"], json!("spec"));
        remove(&mut values, "absent.key");
        assert!(values.get("absent").is_none());
        assert_eq!(
            lookup(&values, "updateStrategy.rollingUpdate.maxUnavailable"),
            Some(&json!(1))
        );
        restore(&mut values, "x", None);
        assert!(values.get("x").is_none());
        restore(&mut values, "job.nodes", Some(json!(["a"])));
        assert_eq!(lookup(&values, "job.nodes"), Some(&json!(["a"])));
    }

    #[test]
    fn restoring_leaves_no_map_the_user_did_not_have() {
        let original = json!({"env": {"x": 1}, "job": {}});
        let mut values = json!({
            "env": {"x": 1},
            "updateStrategy": {"type": "OnDelete"},
            "verification": {"pod": ""},
            "job": {"nodes": ["a"], "parallelism": 1},
        });
        for key in [
            "updateStrategy.type",
            "verification.pod",
            "job.nodes",
            "job.parallelism",
        ] {
            restore_from(&mut values, key, &original);
        }
        assert_eq!(
            values, original,
            "the user's empty job map stays, the others go"
        );
        let mut kept =
            json!({"updateStrategy": {"type": "OnDelete", "rollingUpdate": {"maxUnavailable": 2}}});
        restore_from(&mut kept, "updateStrategy.type", &json!({}));
        assert_eq!(
            kept,
            json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}})
        );
        let mut theirs = json!({"updateStrategy": {"type": "OnDelete"}});
        restore_from(
            &mut theirs,
            "updateStrategy.type",
            &json!({"updateStrategy": {"type": "RollingUpdate"}}),
        );
        assert_eq!(theirs, json!({"updateStrategy": {"type": "RollingUpdate"}}));
    }
}
