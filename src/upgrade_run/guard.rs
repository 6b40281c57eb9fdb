//! Running one step of `klm upgrade` under the signals: a step safe to cut
//! short is cancelled by the first Ctrl-C or SIGTERM; one that must finish
//! (a helm upgrade, a settle, the close) is left to finish, and only a
//! second signal leaves. And the [`Reporter`] that sends the run's events.

use std::future::Future;

use super::Observer;
use super::event::{Event, Phase};
use super::interrupt::{Interrupts, Signal};
use crate::error::UserError;

/// A second signal: leave at once.
pub(super) struct Abandoned(pub(super) Signal);

impl From<Abandoned> for Stop {
    fn from(Abandoned(signal): Abandoned) -> Self {
        Stop::Abandoned(signal)
    }
}

/// Why the run's work stopped early.
pub(super) enum Stop {
    Interrupted(Signal),
    Abandoned(Signal),
    WaveFailed(UserError),
    Failed(anyhow::Error),
}

/// The run's events, sent to the observer.
pub(super) struct Reporter<'o> {
    pub(super) run_id: String,
    pub(super) observer: &'o mut dyn Observer,
    pub(super) interrupt_announced: bool,
}

impl Reporter<'_> {
    pub(super) fn send(&mut self, event: Event) {
        self.observer.event(&event);
    }

    pub(super) fn run(&self, phase: Phase) -> Event {
        Event::new(&self.run_id, phase)
    }

    pub(super) fn each(&mut self, phase: Phase, wave: usize, nodes: &[String]) {
        for node in nodes {
            let event = self.run(phase).in_wave(wave).on(node);
            self.send(event);
        }
    }

    /// Tells, once, that a signal arrived and what happens now.
    pub(super) fn interrupted(&mut self, signal: Signal) {
        if std::mem::replace(&mut self.interrupt_announced, true) {
            return;
        }
        let event = self.run(Phase::Interrupted).saying(format!(
            "{}: ending the run as the workflow's exit handler would (what is in flight is rolled back, held nodes are released); a second signal leaves at once, without cleaning up",
            signal.name()
        ));
        self.send(event);
    }
}

/// Runs a step that is safe to cut short (as a killed workflow pod would
/// be): the first signal cancels it.
pub(super) async fn cancellable<T>(
    interrupts: &Interrupts,
    step: impl Future<Output = anyhow::Result<T>>,
) -> Result<anyhow::Result<T>, Stop> {
    tokio::select! {
        biased;
        signal = interrupts.reached(1) => Err(Stop::Interrupted(signal)),
        done = step => Ok(done),
    }
}

/// Runs a step that must not be cut short (a helm upgrade, a settle, the
/// close): the first signal is announced and the step finishes; a second
/// one leaves at once.
pub(super) async fn shielded<T>(
    interrupts: &Interrupts,
    reporter: &mut Reporter<'_>,
    step: impl Future<Output = T>,
) -> Result<T, Abandoned> {
    tokio::pin!(step);
    loop {
        let seen = interrupts.count();
        tokio::select! {
            biased;
            signal = interrupts.reached(2) => return Err(Abandoned(signal)),
            done = &mut step => return Ok(done),
            signal = interrupts.reached(seen + 1) => reporter.interrupted(signal),
        }
    }
}

/// Stops after a shielded step if a signal arrived meanwhile.
pub(super) fn unless_interrupted(interrupts: &Interrupts) -> Result<(), Stop> {
    match interrupts.last() {
        None => Ok(()),
        Some(signal) => Err(Stop::Interrupted(signal)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Seen(Vec<Phase>);

    impl Observer for Seen {
        fn event(&mut self, event: &Event) {
            self.0.push(event.phase);
        }
    }

    fn reporter(seen: &mut Seen) -> Reporter<'_> {
        Reporter {
            run_id: "run".into(),
            observer: seen,
            interrupt_announced: false,
        }
    }

    #[tokio::test]
    async fn the_first_signal_cancels_a_step_that_may_be_cut_short() {
        let interrupts = Interrupts::none();
        interrupts.receive(Signal::Terminate);
        let cut = cancellable(&interrupts, std::future::pending::<anyhow::Result<()>>()).await;
        assert!(matches!(cut, Err(Stop::Interrupted(Signal::Terminate))));
        assert!(matches!(
            unless_interrupted(&interrupts),
            Err(Stop::Interrupted(Signal::Terminate))
        ));
    }

    #[tokio::test]
    async fn a_shielded_step_finishes_after_one_signal_and_only_a_second_leaves() {
        let interrupts = Interrupts::none();
        let mut seen = Seen::default();
        // The signal arrives while the step is under way.
        let step = async {
            interrupts.receive(Signal::Interrupt);
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            7
        };
        let mut announcing = reporter(&mut seen);
        let finished = shielded(&interrupts, &mut announcing, step).await;
        assert!(matches!(finished, Ok(7)), "the step ran to its end");
        drop(announcing);
        assert_eq!(
            seen.0,
            [Phase::Interrupted],
            "the signal was announced once"
        );

        interrupts.receive(Signal::Interrupt);
        let mut announcing = reporter(&mut seen);
        let left = shielded(&interrupts, &mut announcing, std::future::pending::<()>()).await;
        assert!(
            matches!(left, Err(Abandoned(Signal::Interrupt))),
            "a second signal leaves"
        );
    }
}
