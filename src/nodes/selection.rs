//! Node selection: label selector, taint key and value, or both; by default
//! the nodes that run the release's kata-deploy. One LIST of nodes, filtered here.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, Taint};

use crate::annotations;
use crate::error::UserError;

/// What the user asked to select.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Criteria {
    /// A label selector, validated.
    pub label_selector: Option<String>,
    /// Taint key to require.
    pub taint_key: Option<String>,
    /// Taint value to require with the key.
    pub taint_value: Option<String>,
}

impl Criteria {
    /// Validates the raw flags: an invalid selector or a taint value without a
    /// key is bad input.
    pub fn new(
        label_selector: Option<&str>,
        taint_key: Option<&str>,
        taint_value: Option<&str>,
    ) -> Result<Self, UserError> {
        let label_selector = label_selector.map(str::trim).filter(|s| !s.is_empty());
        let taint_key = taint_key.map(str::trim).filter(|s| !s.is_empty());
        let taint_value = taint_value.map(str::trim).filter(|s| !s.is_empty());
        if taint_value.is_some() && taint_key.is_none() {
            return Err(
                UserError::bad_input("a taint value was given without a taint key")
                    .hint("pass --node-taint-key together with --node-taint-value"),
            );
        }
        if let Some(selector) = label_selector {
            validate_label_selector(selector)?;
        }
        if let Some(key) = taint_key {
            validate_qualified_name(key).map_err(|why| {
                UserError::bad_input(format!("taint key {key:?} is invalid: {why}"))
                    .hint("a taint key looks like `maintenance` or `example.com/upgrade`")
            })?;
        }
        Ok(Self {
            label_selector: label_selector.map(String::from),
            taint_key: taint_key.map(String::from),
            taint_value: taint_value.map(String::from),
        })
    }

    /// Whether the user gave any criterion (otherwise the default applies).
    pub fn is_empty(&self) -> bool {
        self.label_selector.is_none() && self.taint_key.is_none()
    }

    /// Whether a node carries the selection taint.
    pub fn taint_matches(&self, node: &Node) -> bool {
        match &self.taint_key {
            None => true,
            Some(_) => !self.selection_taints(node).is_empty(),
        }
    }

    /// The node's taints that match the taint criterion (all effects).
    pub fn selection_taints(&self, node: &Node) -> Vec<Taint> {
        let Some(key) = &self.taint_key else {
            return Vec::new();
        };
        taints(node)
            .iter()
            .filter(|t| &t.key == key)
            .filter(|t| match &self.taint_value {
                Some(value) => t.value.as_deref() == Some(value.as_str()),
                None => true,
            })
            .cloned()
            .collect()
    }
}

/// A node's taints.
pub fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
}

/// Whether a node is a control-plane node.
pub fn is_control_plane(node: &Node) -> bool {
    let labels = node.metadata.labels.as_ref();
    [
        "node-role.kubernetes.io/control-plane",
        "node-role.kubernetes.io/master",
    ]
    .iter()
    .any(|key| labels.is_some_and(|l| l.contains_key(*key)))
}

/// Whether kata-deploy has installed Kata on the node (its label).
pub fn runs_kata(node: &Node) -> bool {
    label(node, annotations::KATA_RUNTIME_LABEL) == Some("true")
}

/// A label's value.
pub fn label<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// An annotation's value.
pub fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Chooses the nodes: with criteria, the nodes the label selector returned
/// (already filtered by the API) that carry the taint; without, the nodes
/// that run the release's kata-deploy (`release_nodes`), never those of
/// another release that merely carry the kata-runtime label.
pub fn choose<'a>(
    nodes: &'a [Node],
    criteria: &Criteria,
    release_nodes: &BTreeSet<String>,
) -> Vec<&'a Node> {
    nodes
        .iter()
        .filter(|node| {
            if criteria.is_empty() {
                let name = node.metadata.name.as_deref().unwrap_or_default();
                release_nodes.contains(name)
            } else {
                criteria.taint_matches(node)
            }
        })
        .collect()
}

/// One `matchExpressions` term (`job.nodeSelectorExpressions`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Expression {
    /// The label key.
    pub key: String,
    /// In, NotIn, Exists, DoesNotExist.
    pub operator: String,
    /// The values for In and NotIn.
    #[serde(default)]
    pub values: Vec<String>,
}

impl std::fmt::Display for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.operator.as_str() {
            "Exists" => write!(f, "{}", self.key),
            "DoesNotExist" => write!(f, "!{}", self.key),
            op => write!(
                f,
                "{} {} ({})",
                self.key,
                op.to_lowercase(),
                self.values.join(",")
            ),
        }
    }
}

/// Whether a node's labels match a nodeSelector map and expressions (an
/// unknown operator matches nothing).
pub fn matches_selector(
    node: &Node,
    labels: &BTreeMap<String, String>,
    expressions: &[Expression],
) -> bool {
    labels
        .iter()
        .all(|(k, v)| label(node, k) == Some(v.as_str()))
        && expressions.iter().all(|e| {
            let value = label(node, &e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| e.values.iter().any(|x| x == v)),
                "NotIn" => value.is_none_or(|v| !e.values.iter().any(|x| x == v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Validates a label selector in kubectl syntax: `k=v`, `k==v`, `k!=v`, `k`,
/// `!k`, `k in (a,b)`, `k notin (a,b)`, comma-separated.
pub fn validate_label_selector(selector: &str) -> Result<(), UserError> {
    let bad = |why: String| {
        UserError::bad_input(format!("label selector {selector:?} is invalid: {why}"))
            .hint("use kubectl's syntax, e.g. `node-pool=kata` or `zone in (a,b),!excluded`")
    };
    for requirement in split_requirements(selector).map_err(&bad)? {
        let requirement = requirement.trim();
        if requirement.is_empty() {
            return Err(bad("an empty requirement (stray comma?)".into()));
        }
        let (key, values) = if let Some(key) = requirement.strip_prefix('!') {
            (key.trim(), vec![])
        } else if let Some((key, rest)) = split_set_operator(requirement) {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| {
                    bad(format!(
                        "{requirement:?}: the values of in/notin go in parentheses"
                    ))
                })?;
            (key, inner.split(',').map(str::trim).collect())
        } else if let Some((key, value)) = requirement
            .split_once("!=")
            .or_else(|| requirement.split_once("=="))
            .or_else(|| requirement.split_once('='))
        {
            (key.trim(), vec![value.trim()])
        } else {
            (requirement, vec![])
        };
        validate_qualified_name(key).map_err(|why| bad(format!("key {key:?}: {why}")))?;
        for value in values {
            validate_label_value(value).map_err(|why| bad(format!("value {value:?}: {why}")))?;
        }
    }
    Ok(())
}

fn split_set_operator(requirement: &str) -> Option<(&str, &str)> {
    for op in [" notin ", " in "] {
        if let Some(index) = requirement.find(op) {
            return Some((
                requirement[..index].trim(),
                &requirement[index + op.len()..],
            ));
        }
    }
    None
}

fn split_requirements(selector: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced parentheses".into());
                }
            }
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    parts.push(&selector[start..]);
    Ok(parts)
}

/// Validates a qualified name (label key, taint key): optional DNS prefix and
/// a name of up to 63 characters.
pub fn validate_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && (prefix.is_empty() || crate::nodes::validate_node_name(prefix).is_err())
    {
        return Err("the prefix before '/' must be a DNS subdomain".into());
    }
    if name.is_empty() || name.len() > 63 {
        return Err("the name must be 1 to 63 characters".into());
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !name.chars().all(ok_char)
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(
            "only letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
                .into(),
        );
    }
    Ok(())
}

fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    validate_qualified_name(value).and_then(|_| {
        if value.contains('/') {
            Err("'/' is not allowed in a value".into())
        } else {
            Ok(())
        }
    })
}

/// Why a node is unavailable already, if it is: NotReady, or cordoned by
/// someone else (not held by a klm run).
pub fn unavailability(node: &Node) -> Option<&'static str> {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    if !ready {
        return Some("NotReady");
    }
    let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    if unschedulable && annotation(node, annotations::RUN).is_none() {
        return Some("cordoned");
    }
    None
}

/// Whether a node is out of service now: NotReady, or unschedulable (by
/// anyone): what an unavailability budget counts.
pub fn is_out(node: &Node) -> bool {
    unavailability(node).is_some() || node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
}

/// Groups nodes by a pool label value for the order (nodes without it last).
pub fn pool_of(node: &Node, pool_label: Option<&str>) -> Option<String> {
    pool_label
        .and_then(|key| label(node, key))
        .map(String::from)
}

/// Counts nodes per pool, for reports.
pub fn pools(nodes: &[&Node], pool_label: Option<&str>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for node in nodes {
        *counts
            .entry(pool_of(node, pool_label).unwrap_or_else(|| "-".into()))
            .or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_unavailable_when_not_ready_or_cordoned_by_someone_else() {
        let node = |ready: &str, unschedulable: bool, held: bool| {
            let mut node: Node = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "n"},
                "spec": {"unschedulable": unschedulable},
                "status": {"conditions": [{"type": "Ready", "status": ready}]}
            }))
            .unwrap();
            if held {
                node.metadata.annotations =
                    Some([(annotations::RUN.to_string(), "run-1".to_string())].into());
            }
            node
        };
        assert_eq!(unavailability(&node("True", false, false)), None);
        assert_eq!(
            unavailability(&node("False", false, false)),
            Some("NotReady")
        );
        assert_eq!(
            unavailability(&node("Unknown", false, false)),
            Some("NotReady")
        );
        assert_eq!(unavailability(&node("True", true, false)), Some("cordoned"));
        // Held by a klm run: not someone else's cordon; but out of service all the same.
        assert_eq!(unavailability(&node("True", true, true)), None);
        assert!(is_out(&node("True", true, true)));
        assert!(!is_out(&node("True", false, true)));
    }
    use k8s_openapi::api::core::v1::NodeSpec;
    use kube::api::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, Option<&str>, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(k, v, e)| Taint {
                            key: k.to_string(),
                            value: v.map(String::from),
                            effect: e.to_string(),
                            time_added: None,
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn selectors_in_kubectl_syntax_are_accepted() {
        for ok in [
            "a=b",
            "a==b",
            "a!=b",
            "a",
            "!a",
            "zone in (a,b)",
            "zone notin (a, b),x=y",
            "example.com/pool=kata",
            "a=",
        ] {
            assert!(validate_label_selector(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn invalid_selectors_say_what_is_wrong() {
        for bad in [
            "a=b,",
            "zone in a,b",
            "in (a",
            "=x",
            "a=b c",
            "-a=b",
            "a b=c",
        ] {
            let err = validate_label_selector(bad).unwrap_err();
            assert!(err.message.contains("is invalid"), "{bad}: {}", err.message);
        }
    }

    #[test]
    fn a_taint_value_needs_a_key() {
        let err = Criteria::new(None, None, Some("pending")).unwrap_err();
        assert!(err.message.contains("without a taint key"));
        assert!(Criteria::new(None, Some("bad key"), None).is_err());
    }

    #[test]
    fn taint_selection_matches_key_and_optional_value() {
        let tainted = node(
            "a",
            &[],
            &[
                ("upgrade", Some("pending"), "NoSchedule"),
                ("upgrade", Some("pending"), "NoExecute"),
            ],
        );
        let other = node("b", &[], &[("upgrade", Some("later"), "NoSchedule")]);
        let by_key = Criteria::new(None, Some("upgrade"), None).unwrap();
        assert!(by_key.taint_matches(&tainted) && by_key.taint_matches(&other));
        let by_value = Criteria::new(None, Some("upgrade"), Some("pending")).unwrap();
        assert!(by_value.taint_matches(&tainted));
        assert!(!by_value.taint_matches(&other));
        assert_eq!(
            by_value.selection_taints(&tainted).len(),
            2,
            "every effect of the key is kept"
        );
    }

    #[test]
    fn the_default_is_the_releases_nodes_never_another_releases() {
        let nodes = vec![
            node("cp", &[("node-role.kubernetes.io/control-plane", "")], &[]),
            node(
                "other-release",
                &[(annotations::KATA_RUNTIME_LABEL, "true")],
                &[],
            ),
            node("mine", &[(annotations::KATA_RUNTIME_LABEL, "true")], &[]),
            node("mine-unlabelled", &[], &[]),
        ];
        let mine = BTreeSet::from(["mine".to_string(), "mine-unlabelled".to_string()]);
        let chosen: Vec<_> = choose(&nodes, &Criteria::default(), &mine)
            .iter()
            .map(|n| n.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(chosen, vec!["mine", "mine-unlabelled"]);
        assert!(is_control_plane(&nodes[0]));
    }

    #[test]
    fn job_mode_selectors_match_labels_and_expressions() {
        let n = node("a", &[("pool", "kata"), ("zone", "x")], &[]);
        let labels = BTreeMap::from([("pool".to_string(), "kata".to_string())]);
        assert!(matches_selector(&n, &labels, &[]));
        assert!(matches_selector(&n, &BTreeMap::new(), &[]));
        let expr = |key: &str, operator: &str, values: &[&str]| Expression {
            key: key.into(),
            operator: operator.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        assert!(matches_selector(
            &n,
            &labels,
            &[expr("zone", "In", &["x", "y"])]
        ));
        assert!(!matches_selector(
            &n,
            &labels,
            &[expr("zone", "NotIn", &["x"])]
        ));
        assert!(matches_selector(
            &n,
            &labels,
            &[expr("gpu", "DoesNotExist", &[])]
        ));
        assert!(!matches_selector(
            &n,
            &labels,
            &[expr("gpu", "Exists", &[])]
        ));
        assert!(!matches_selector(
            &n,
            &labels,
            &[expr("zone", "Gt", &["1"])]
        ));
        assert_eq!(expr("zone", "In", &["x", "y"]).to_string(), "zone in (x,y)");
        let other = BTreeMap::from([("pool".to_string(), "gpu".to_string())]);
        assert!(!matches_selector(&n, &other, &[]));
    }
}
