//! Nodes: which to upgrade (selection), in which order and waves, and how a
//! run holds them (cordon ownership, selection taints).

pub mod hold;
pub mod installed;
pub mod listing;
pub mod selection;
pub mod waves;

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
