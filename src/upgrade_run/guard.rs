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
