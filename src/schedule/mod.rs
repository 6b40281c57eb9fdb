//! When waves may start: the gates a run holds at between waves
//! ([`gates`]) and the maintenance window waves start in ([`window`]).
//! Pure: what a held wave does about them is [`crate::gate`].

pub mod gates;
pub mod window;

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
