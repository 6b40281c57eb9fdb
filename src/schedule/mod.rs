//! When waves may start: the gates a run holds at between waves
//! ([`gates`]), the metric query a gate asks ([`metric`]), the
//! maintenance window waves start in ([`window`]) and the durations they
//! are given in ([`period`]).
//! Pure: what a held wave does about them is [`crate::steps::gate`].

pub mod gates;
pub mod metric;
pub mod period;
pub mod window;

use crate::error::UserError;
use crate::nodes::waves::Wave;
use gates::Gate;

/// The waves that wait for something before they start, as the workflow's
/// `held-waves` output tests them: `,2,5,` (every wave, with a window;
/// `,` for none).
pub fn held_waves(waves: &[Wave], gates: &[Gate], window: bool) -> String {
    let held = waves
        .iter()
        .map(|w| w.index)
        .filter(|i| window || gates.iter().any(|g| g.before_wave == *i));
    let mut text = String::from(",");
    for index in held {
        text.push_str(&format!("{index},"));
    }
    text
}

/// When a run's waves may start: its gate policy and maintenance window.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    /// Where the run holds between waves, and for what.
    pub gates: gates::GatePolicy,
    /// The window waves start in (None: any time).
    pub window: Option<window::Window>,
}

impl Schedule {
    /// The schedule in a few words, for the plan (None: nothing holds waves).
    pub fn describe(&self) -> Option<String> {
        let window = self
            .window
            .as_ref()
            .map(|w| format!("waves start only in the window {w}"));
        let parts: Vec<String> = [self.gates.describe(), window]
            .into_iter()
            .flatten()
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// How many plain waves' worth of workflow status a plan with holds takes:
/// a held wave's hold is about a wave more (one pass of `klm gate`: 9
/// status nodes beside a wave's 9 or 10), a gate about three (a soak and an
/// approval take three passes). With a window every wave is held.
pub fn wave_weight(waves: usize, gates: usize, window: bool) -> usize {
    let held = if window { waves } else { 0 };
    waves + held + 3 * gates
}

/// Refuses a plan whose holds take it past what one workflow carries
/// (`max_waves` plain waves; 0: no bound). The waves alone were checked
/// already ([`crate::nodes::waves::check_capacity`]).
pub fn check_capacity(
    waves: usize,
    gates: usize,
    window: bool,
    max_waves: usize,
) -> Result<(), UserError> {
    let weight = wave_weight(waves, gates, window);
    if max_waves == 0 || weight <= max_waves {
        return Ok(());
    }
    let fits = max_waves.saturating_sub(3 * gates) / 2;
    Err(UserError::bad_input(format!(
        "{waves} waves with their holds ({gates} gate(s){}) take as much workflow status as {weight} plain waves; one workflow carries {max_waves} (--max-waves)",
        if window { ", a window: every wave held" } else { "" }
    ))
    .hint(if window {
        format!("with a window, plan at most about {fits} waves: a larger --batch-size, or several runs with --node-selector")
    } else {
        "fewer gates (--gate canary instead of pool), or a larger --batch-size".to_string()
    })
    .hint("with Argo node status offloading configured (persistence.nodeStatusOffLoad), pass --max-waves 0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_weigh_on_what_one_workflow_carries() {
        assert_eq!(wave_weight(100, 0, false), 100, "no holds: the waves alone");
        assert_eq!(wave_weight(100, 3, false), 109);
        assert_eq!(wave_weight(100, 0, true), 200);
        assert!(check_capacity(750, 0, true, 1500).is_ok());
        let err = check_capacity(800, 0, true, 1500).unwrap_err();
        assert!(err.to_string().contains("as 1600 plain waves"), "{err}");
        assert!(
            err.hints[0].contains("plan at most about 750 waves"),
            "{err:?}"
        );
        assert!(check_capacity(100_000, 5, true, 0).is_ok());
        let held = |w: &[usize]| {
            let waves: Vec<Wave> = w
                .iter()
                .map(|i| Wave {
                    index: *i,
                    nodes: vec![],
                    node_list: String::new(),
                    pool: None,
                })
                .collect();
            waves
        };
        let gate = gates::Gate {
            before_wave: 2,
            after: "the canary wave".into(),
            reverify: vec![],
            soak_seconds: None,
            approval: true,
            query: false,
            passage: Default::default(),
        };
        assert_eq!(
            held_waves(&held(&[1, 2, 3]), std::slice::from_ref(&gate), false),
            ",2,"
        );
        assert_eq!(held_waves(&held(&[1, 2]), &[], true), ",1,2,");
        assert_eq!(held_waves(&held(&[1, 2]), &[], false), ",");
    }
}
