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

/// Parses `--batch-size` (as clap's value parser: the flag arrives as a
/// string from Argo parameters): a whole number of nodes per wave, 1 or more.
pub fn parse_batch_size(raw: &str) -> Result<usize, String> {
    let hint = "give a whole number of nodes per wave, 1 or more (1 = node by node)";
    match raw.trim().parse::<usize>() {
        Ok(0) => Err(format!("batch size 0 would upgrade nothing; {hint}")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("batch size {raw:?} is not a number; {hint}")),
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

/// How many waves one Argo workflow carries, by default. The workflow
/// object (its status included) must stay under etcd's 1 MiB; the fixed part
/// takes about 51 KB, which leaves about 997 KB for the per-wave status
/// nodes. With the chart's template (a wave's loop item carries only its
/// index, so the cost does not grow with the batch size) a wave costs about
/// 1.0 to 1.3 KB compressed: 997 KB / 1.3 KB is about 766 waves, rounded down
/// for margin. Past it the workflow fails mid-wave with no exit handler.
pub const DEFAULT_MAX_WAVES: usize = 750;

/// Refuses a plan with more waves than one workflow carries (`max_waves`;
/// 0 = no bound, for Argo with node status offloading), saying which
/// batch size fits.
pub fn check_capacity(
    waves: usize,
    nodes: usize,
    batch_size: usize,
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

    #[test]
    fn batch_sizes_must_be_positive_numbers() {
        assert_eq!(parse_batch_size("3").unwrap(), 3);
        assert_eq!(parse_batch_size(" 1 ").unwrap(), 1);
        assert!(parse_batch_size("0").unwrap_err().contains("batch size 0"));
        assert!(
            parse_batch_size("two")
                .unwrap_err()
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
    fn plans_beyond_the_workflow_capacity_are_refused_with_a_batch_size_that_fits() {
        assert!(check_capacity(750, 750, 1, DEFAULT_MAX_WAVES).is_ok());
        assert!(check_capacity(500, 5000, 10, DEFAULT_MAX_WAVES).is_ok());
        assert!(
            check_capacity(100_000, 100_000, 1, 0).is_ok(),
            "0 = unlimited"
        );
        let err = check_capacity(3, 3, 1, 2).unwrap_err();
        assert!(err.message.contains("3 waves"), "{}", err.message);
        assert!(err.hints.iter().any(|h| h.contains("--batch-size 2")));
        let err = check_capacity(1001, 1001, 1, 750).unwrap_err();
        assert!(err.hints.iter().any(|h| h.contains("--batch-size 2")));
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
