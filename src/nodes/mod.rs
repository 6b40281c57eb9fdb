//! Nodes: which to upgrade (selection), in which order and waves, and how a
//! run holds them (cordon ownership, selection taints); and how a step
//! reports a node that failed it ([`NodeFailure`]).

pub mod hold;
pub mod installed;
pub mod listing;
pub mod marks;
pub mod selection;
pub mod waves;

/// A node that failed a step, with why: reports list them, and the step
/// marks them failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeFailure {
    /// The node.
    pub node: String,
    /// Why.
    pub reason: String,
}

impl NodeFailure {
    /// One node's failure.
    pub fn new(node: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            reason: reason.into(),
        }
    }

    /// The same failure for each of these nodes, in their order: an error
    /// that names no node (helm failed, a wait for all of them ran out)
    /// fails every node of the step.
    pub fn each(nodes: &[String], reason: &str) -> Vec<Self> {
        nodes.iter().map(|node| Self::new(node, reason)).collect()
    }
}

/// The names in the order given, without duplicates.
pub fn unique(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut unique: Vec<String> = Vec::new();
    for name in names {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    unique
}

/// Checks that a string can be a node name (a DNS subdomain).
pub fn validate_node_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid node name (lowercase letters, digits, '-' and '.')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_first_place() {
        let names = ["b", "a", "b", "c", "a"].map(String::from);
        assert_eq!(unique(names), ["b", "a", "c"]);
    }

    #[test]
    fn an_error_naming_no_node_fails_each_node() {
        let nodes = vec!["b".to_string(), "a".to_string()];
        assert_eq!(
            NodeFailure::each(&nodes, "helm failed"),
            vec![
                NodeFailure::new("b", "helm failed"),
                NodeFailure::new("a", "helm failed")
            ]
        );
        assert!(NodeFailure::each(&[], "x").is_empty());
        let json = serde_json::to_value(NodeFailure::new("a", "why")).unwrap();
        assert_eq!(json, serde_json::json!({"node": "a", "reason": "why"}));
    }
}
