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
}

/// Parses `--batch-size`, which arrives as a string from Argo parameters.
pub fn parse_batch_size(raw: &str) -> Result<usize, UserError> {
    let hint =
        "pass --batch-size as a whole number of nodes per wave, 1 or more (1 = node by node)";
    match raw.trim().parse::<usize>() {
        Ok(0) => Err(UserError::bad_input("batch size 0 would upgrade nothing").hint(hint)),
        Ok(n) => Ok(n),
        Err(_) => {
            Err(UserError::bad_input(format!("batch size {raw:?} is not a number")).hint(hint))
        }
    }
}

/// A node with the keys it is ordered by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ordered {
    /// Pool label value; nodes without a pool sort after every pool.
    pub pool: Option<String>,
    /// Node name.
    pub name: String,
}

/// Orders nodes deterministically: by pool (nodes without a pool last), then by name.
pub fn order(mut nodes: Vec<Ordered>) -> Vec<String> {
    nodes.sort_by(|a, b| match (&a.pool, &b.pool) {
        (Some(x), Some(y)) => x.cmp(y).then_with(|| a.name.cmp(&b.name)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.name.cmp(&b.name),
    });
    nodes.into_iter().map(|n| n.name).collect()
}

/// Splits ordered nodes into waves of at most `batch_size`.
pub fn plan(nodes: &[String], batch_size: usize) -> Vec<Wave> {
    nodes
        .chunks(batch_size.max(1))
        .enumerate()
        .map(|(i, chunk)| Wave {
            index: i + 1,
            nodes: chunk.to_vec(),
            node_list: chunk.join(","),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn batch_sizes_must_be_positive_numbers() {
        assert_eq!(parse_batch_size("3").unwrap(), 3);
        assert_eq!(parse_batch_size(" 1 ").unwrap(), 1);
        assert!(parse_batch_size("0").unwrap_err().message.contains("0"));
        assert!(
            parse_batch_size("two")
                .unwrap_err()
                .message
                .contains("not a number")
        );
        assert!(parse_batch_size("-1").is_err());
    }

    #[test]
    fn waves_cover_every_node_once_in_order() {
        let nodes = names(&["a", "b", "c", "d", "e"]);
        let waves = plan(&nodes, 2);
        assert_eq!(waves.len(), 3);
        assert_eq!(waves[0].nodes, names(&["a", "b"]));
        assert_eq!(waves[2].nodes, names(&["e"]));
        assert_eq!(waves[1].node_list, "c,d");
        assert_eq!(waves[2].index, 3);
        assert!(plan(&[], 3).is_empty());
        assert_eq!(plan(&nodes, 10).len(), 1);
    }

    #[test]
    fn order_is_pool_then_name_with_unpooled_last() {
        let ordered = order(vec![
            Ordered {
                pool: None,
                name: "a".into(),
            },
            Ordered {
                pool: Some("pool-b".into()),
                name: "b1".into(),
            },
            Ordered {
                pool: Some("pool-a".into()),
                name: "z".into(),
            },
            Ordered {
                pool: Some("pool-a".into()),
                name: "c".into(),
            },
        ]);
        assert_eq!(ordered, names(&["c", "z", "b1", "a"]));
    }
}
