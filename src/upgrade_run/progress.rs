//! The progress of a run as a person watches it: waves done and left, the
//! current wave's nodes and the phase of each, and an estimate of the time
//! left from the waves so far. Built from the run's [`Event`]s alone; the
//! clock is passed in, so the estimate is pure and testable.

use std::time::{Duration, Instant};

use super::event::{Event, Phase};

/// The wave under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentWave {
    /// Its index (from 1).
    pub index: usize,
    /// When it started.
    pub started: Instant,
    /// Its nodes, in plan order, each with its latest phase (None: not reached yet).
    pub nodes: Vec<(String, Option<Phase>)>,
}

/// A run's progress.
#[derive(Debug, Clone)]
pub struct Progress {
    /// When the run started.
    pub started: Instant,
    /// How many waves the run planned (None: not planned yet).
    pub waves: Option<usize>,
    /// How long each finished wave took, in order.
    pub finished: Vec<Duration>,
    /// The wave under way.
    pub current: Option<CurrentWave>,
    /// Nodes completed at the target.
    pub completed: usize,
    /// Nodes rolled back.
    pub rolled_back: usize,
    /// Nodes whose restart, verification or rollback failed.
    pub failed: usize,
    /// How the run ended, once it did.
    pub ended: Option<Phase>,
}

impl Progress {
    /// A run that started at `started`.
    pub fn new(started: Instant) -> Progress {
        Progress {
            started,
            waves: None,
            finished: Vec::new(),
            current: None,
            completed: 0,
            rolled_back: 0,
            failed: 0,
            ended: None,
        }
    }

    /// Takes in one event, which happened at `at`.
    pub fn apply(&mut self, event: &Event, at: Instant) {
        match event.phase {
            Phase::Planned => self.waves = event.waves,
            Phase::WaveStarted => {
                self.current = Some(CurrentWave {
                    index: event.wave.unwrap_or(self.finished.len() + 1),
                    started: at,
                    nodes: event.nodes.iter().map(|n| (n.clone(), None)).collect(),
                });
            }
            Phase::WaveCompleted | Phase::WaveFailed => {
                if let Some(wave) = self.current.take() {
                    self.finished
                        .push(at.saturating_duration_since(wave.started));
                }
            }
            Phase::Completed if event.wave.is_some() => self.completed += 1,
            Phase::RolledBack => self.rolled_back += 1,
            Phase::RollbackFailed => self.failed += 1,
            phase if phase.ends_run() => self.ended = Some(phase),
            _ => {}
        }
        if let (Some(node), Some(wave)) = (&event.node, self.current.as_mut()) {
            match wave.nodes.iter_mut().find(|(name, _)| name == node) {
                Some((_, phase)) => *phase = Some(event.phase),
                None => wave.nodes.push((node.clone(), Some(event.phase))),
            }
        }
    }

    /// Waves finished (completed or failed).
    pub fn waves_done(&self) -> usize {
        self.finished.len()
    }

    /// The time left, estimated from the mean duration of the finished
    /// waves: the waves not started yet take the mean each, the current one
    /// the mean less what it took so far (never below zero). None before a
    /// wave finished, or before the run is planned.
    pub fn estimate_left(&self, now: Instant) -> Option<Duration> {
        let waves = self.waves?;
        if self.finished.is_empty() {
            return None;
        }
        let mean = self.finished.iter().sum::<Duration>() / self.finished.len() as u32;
        let started = self.finished.len() + usize::from(self.current.is_some());
        let not_started = waves.saturating_sub(started) as u32;
        let current_left = self.current.as_ref().map_or(Duration::ZERO, |wave| {
            mean.saturating_sub(now.saturating_duration_since(wave.started))
        });
        Some(mean * not_started + current_left)
    }

    /// The time since the run started, in whole seconds (`2m 10s`).
    pub fn elapsed_text(&self, now: Instant) -> String {
        clock(now.saturating_duration_since(self.started))
    }

    /// The estimate as shown: `about 5m 3s left` (None: no estimate yet).
    pub fn left_text(&self, now: Instant) -> Option<String> {
        self.estimate_left(now)
            .map(|left| format!("about {} left", clock(left)))
    }
}

/// A duration in whole seconds, as people read it.
fn clock(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(phase: Phase, wave: Option<usize>) -> Event {
        let mut event = Event::new("run", phase);
        event.wave = wave;
        event
    }

    fn planned(waves: usize) -> Event {
        let mut event = event(Phase::Planned, None);
        event.waves = Some(waves);
        event
    }

    fn wave_started(index: usize, nodes: &[&str]) -> Event {
        let mut event = event(Phase::WaveStarted, Some(index));
        event.nodes = nodes.iter().map(|n| n.to_string()).collect();
        event
    }

    #[test]
    fn the_estimate_is_the_mean_wave_times_the_waves_left() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut progress = Progress::new(t0);
        progress.apply(&planned(4), at(0));
        assert_eq!(progress.estimate_left(at(0)), None, "no wave finished yet");

        progress.apply(&wave_started(1, &["a"]), at(0));
        progress.apply(&event(Phase::WaveCompleted, Some(1)), at(100));
        // Three waves left at 100 s each.
        assert_eq!(
            progress.estimate_left(at(100)),
            Some(Duration::from_secs(300))
        );

        progress.apply(&wave_started(2, &["b"]), at(100));
        progress.apply(&event(Phase::WaveCompleted, Some(2)), at(300));
        // Mean 150 s; wave 3 is 50 s in: 100 s of it left, and wave 4.
        progress.apply(&wave_started(3, &["c"]), at(300));
        assert_eq!(
            progress.estimate_left(at(350)),
            Some(Duration::from_secs(250))
        );
        assert_eq!(
            progress.left_text(at(350)).as_deref(),
            Some("about 4m 10s left")
        );
        // A wave slower than the mean counts as done, not negative.
        assert_eq!(
            progress.estimate_left(at(600)),
            Some(Duration::from_secs(150))
        );
        assert_eq!(progress.waves_done(), 2);
    }

    #[test]
    fn the_current_wave_shows_each_nodes_latest_phase() {
        let t0 = Instant::now();
        let mut progress = Progress::new(t0);
        progress.apply(&planned(1), t0);
        progress.apply(&wave_started(1, &["a", "b"]), t0);
        progress.apply(&event(Phase::Cordoned, Some(1)).on("a"), t0);
        progress.apply(&event(Phase::Cordoned, Some(1)).on("b"), t0);
        progress.apply(&event(Phase::Verifying, Some(1)).on("a"), t0);
        let wave = progress.current.as_ref().unwrap();
        assert_eq!(
            wave.nodes,
            vec![
                ("a".to_string(), Some(Phase::Verifying)),
                ("b".to_string(), Some(Phase::Cordoned))
            ]
        );
        progress.apply(&event(Phase::Completed, Some(1)).on("a"), t0);
        progress.apply(&event(Phase::RolledBack, Some(1)).on("b"), t0);
        progress.apply(&event(Phase::WaveFailed, Some(1)), t0);
        progress.apply(&event(Phase::RunFailed, None), t0);
        assert_eq!((progress.completed, progress.rolled_back), (1, 1));
        assert_eq!(progress.ended, Some(Phase::RunFailed));
        assert!(progress.current.is_none());
        assert_eq!((progress.waves_done(), progress.waves), (1, Some(1)));
        assert_eq!(progress.elapsed_text(t0), "0s");
    }
}
