//! The progress of a run as a person watches it: waves done and left, the
//! current wave's nodes and the phase of each, and an estimate of the time
//! left from the waves so far. Built from the run's [`Event`]s alone; the
//! clock is passed in, so the estimate is pure and testable.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::event::{Event, Phase, PlannedGate, Waiting};

/// The wave under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentWave {
    /// Its index (from 1).
    pub index: usize,
    /// When it started.
    pub started: Instant,
    /// Its nodes, in plan order, each with its latest phase (None: not
    /// reached yet) and since when it is in it.
    pub nodes: Vec<NodeState>,
}

/// A node of the current wave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// The node.
    pub name: String,
    /// Its latest phase (None: not reached yet).
    pub phase: Option<Phase>,
    /// Since when it is in that phase.
    pub since: Instant,
}

/// A wait before a wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The wave it holds.
    pub wave: usize,
    /// What it waits for.
    pub waiting_for: Waiting,
    /// Until when, for a soak or a window.
    pub until: Option<Instant>,
}

/// A run's progress.
#[derive(Debug, Clone)]
pub struct Progress {
    /// When the run started.
    pub started: Instant,
    /// How many waves the run planned (None: not planned yet).
    pub waves: Option<usize>,
    /// Every planned node, in wave order.
    pub planned: Vec<String>,
    /// The nodes of the waves started so far.
    pub reached: BTreeSet<String>,
    /// The gates ahead, as planned.
    pub gates: Vec<PlannedGate>,
    /// How long each finished wave took, in order.
    pub finished: Vec<Duration>,
    /// Waves completed (a failed wave is finished, not completed).
    pub waves_completed: usize,
    /// The wave under way.
    pub current: Option<CurrentWave>,
    /// The wait before the next wave, while the run waits.
    pub hold: Option<Hold>,
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
            planned: Vec::new(),
            reached: BTreeSet::new(),
            gates: Vec::new(),
            finished: Vec::new(),
            waves_completed: 0,
            current: None,
            hold: None,
            completed: 0,
            rolled_back: 0,
            failed: 0,
            ended: None,
        }
    }

    /// Takes in one event, which happened at `at`.
    pub fn apply(&mut self, event: &Event, at: Instant) {
        match event.phase {
            Phase::Planned => {
                self.waves = event.waves;
                self.planned = event.nodes.clone();
                self.gates = event.gates.clone();
            }
            Phase::Held => {
                self.hold = event.waiting_for.map(|waiting_for| Hold {
                    wave: event.wave.unwrap_or(self.finished.len() + 1),
                    waiting_for,
                    until: event
                        .until
                        .as_deref()
                        .and_then(|until| instant_of(until, at)),
                });
            }
            Phase::WaveStarted => {
                self.hold = None;
                self.reached.extend(event.nodes.iter().cloned());
                self.current = Some(CurrentWave {
                    index: event.wave.unwrap_or(self.finished.len() + 1),
                    started: at,
                    nodes: event
                        .nodes
                        .iter()
                        .map(|n| NodeState {
                            name: n.clone(),
                            phase: None,
                            since: at,
                        })
                        .collect(),
                });
            }
            Phase::WaveCompleted | Phase::WaveFailedWithinBudget | Phase::WaveFailed => {
                if event.phase != Phase::WaveFailed {
                    self.waves_completed += 1;
                }
                if let Some(wave) = self.current.take() {
                    self.finished
                        .push(at.saturating_duration_since(wave.started));
                }
            }
            Phase::Completed if event.wave.is_some() => self.completed += 1,
            Phase::RolledBack => self.rolled_back += 1,
            Phase::RollbackFailed => self.failed += 1,
            phase if phase.ends_run() => {
                self.ended = Some(phase);
                self.hold = None;
            }
            _ => {}
        }
        if let (Some(node), Some(wave)) = (&event.node, self.current.as_mut()) {
            let state = NodeState {
                name: node.clone(),
                phase: Some(event.phase),
                since: at,
            };
            match wave.nodes.iter_mut().find(|n| n.name == *node) {
                Some(known) if known.phase == state.phase => {}
                Some(known) => *known = state,
                None => wave.nodes.push(state),
            }
        }
    }

    /// Waves finished (completed or failed).
    pub fn waves_done(&self) -> usize {
        self.finished.len()
    }

    /// The planned nodes no wave has reached (yet), in plan order.
    pub fn not_reached(&self) -> Vec<String> {
        self.planned
            .iter()
            .filter(|n| !self.reached.contains(*n))
            .cloned()
            .collect()
    }

    /// The time left, estimated from the mean duration of the finished
    /// waves: the waves not started yet take the mean each, the current one
    /// the mean less what it took so far (never below zero); a soak or a
    /// window the run waits for counts until it ends, and each gate ahead
    /// its soak. None before a wave finished, or before the run is planned.
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
        Some(mean * not_started + current_left + self.waiting_left(now))
    }

    /// What the waits ahead add: the rest of the current soak or window,
    /// and the soak of every gate not reached yet.
    fn waiting_left(&self, now: Instant) -> Duration {
        let held = self
            .hold
            .and_then(|hold| hold.until)
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        // The gate of the wave held now is counted by its hold.
        let next_wave = self
            .hold
            .map(|h| h.wave + 1)
            .unwrap_or(self.finished.len() + usize::from(self.current.is_some()) + 1);
        let soaks_ahead = self
            .gates
            .iter()
            .filter(|g| g.before_wave >= next_wave)
            .map(|g| Duration::from_secs(g.soak_seconds))
            .sum::<Duration>();
        held + soaks_ahead
    }

    /// The time since the run started, in whole seconds (`2m 10s`).
    pub fn elapsed_text(&self, now: Instant) -> String {
        clock(now.saturating_duration_since(self.started))
    }
}

/// The instant of an RFC 3339 time, taking `at` as now.
fn instant_of(time: &str, at: Instant) -> Option<Instant> {
    let until: jiff::Timestamp = time.parse().ok()?;
    let left = until.duration_since(jiff::Timestamp::now());
    Some(match Duration::try_from(left) {
        Ok(left) => at + left,
        // In the past: now.
        Err(_) => at,
    })
}

/// A duration in whole seconds, as people read it.
pub fn clock(duration: Duration) -> String {
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
        let phases: Vec<(&str, Option<Phase>)> = wave
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.phase))
            .collect();
        assert_eq!(
            phases,
            vec![("a", Some(Phase::Verifying)), ("b", Some(Phase::Cordoned))]
        );
        progress.apply(&event(Phase::Completed, Some(1)).on("a"), t0);
        progress.apply(&event(Phase::RolledBack, Some(1)).on("b"), t0);
        progress.apply(&event(Phase::WaveFailed, Some(1)), t0);
        progress.apply(&event(Phase::RunFailed, None), t0);
        assert_eq!((progress.completed, progress.rolled_back), (1, 1));
        assert_eq!(
            progress.waves_completed, 0,
            "a failed wave is not completed"
        );
        assert_eq!(progress.ended, Some(Phase::RunFailed));
        assert!(progress.current.is_none());
        assert_eq!((progress.waves_done(), progress.waves), (1, Some(1)));
        assert_eq!(progress.elapsed_text(t0), "0s");
    }

    #[test]
    fn a_node_keeps_the_time_it_entered_its_phase() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut progress = Progress::new(t0);
        progress.apply(&wave_started(1, &["a"]), at(0));
        progress.apply(&event(Phase::Verifying, Some(1)).on("a"), at(5));
        // The same phase again (a retried step) does not restart its clock.
        progress.apply(&event(Phase::Verifying, Some(1)).on("a"), at(9));
        let node = &progress.current.as_ref().unwrap().nodes[0];
        assert_eq!((node.phase, node.since), (Some(Phase::Verifying), at(5)));
    }

    #[test]
    fn soaks_and_windows_count_in_the_time_left_and_an_approval_is_named() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut progress = Progress::new(t0);
        let mut plan = planned(3);
        plan.nodes = vec!["a".into(), "b".into(), "c".into()];
        plan.gates = vec![
            PlannedGate {
                before_wave: 2,
                soak_seconds: 15,
                approval: false,
            },
            PlannedGate {
                before_wave: 3,
                soak_seconds: 600,
                approval: true,
            },
        ];
        progress.apply(&plan, at(0));
        progress.apply(&wave_started(1, &["a"]), at(0));
        progress.apply(&event(Phase::WaveCompleted, Some(1)), at(10));
        // Two waves of 10 s and both gates' soaks ahead.
        assert_eq!(
            progress.estimate_left(at(10)),
            Some(Duration::from_secs(20 + 15 + 600))
        );
        assert_eq!(progress.not_reached(), ["b", "c"]);

        // Held in wave 2's soak, 15 s from now: counted until it ends.
        let mut held = event(Phase::Held, Some(2));
        held.waiting_for = Some(Waiting::Soak);
        held.until = Some(
            jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::from_secs(15))
                .unwrap()
                .to_string(),
        );
        progress.apply(&held, at(10));
        let left = progress.estimate_left(at(10)).unwrap();
        assert!(
            (Duration::from_secs(633)..=Duration::from_secs(635)).contains(&left),
            "{left:?}"
        );
        assert_eq!(progress.hold.map(|h| h.wave), Some(2));

        // An approval has no clock: it is named.
        let mut approval = event(Phase::Held, Some(3));
        approval.waiting_for = Some(Waiting::Approval);
        progress.apply(&wave_started(2, &["b"]), at(30));
        progress.apply(&event(Phase::WaveCompleted, Some(2)), at(40));
        progress.apply(&approval, at(40));
        // An approval has no end to count: only the wave after it is.
        assert_eq!(
            progress.estimate_left(at(40)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            progress.hold.map(|h| h.waiting_for),
            Some(Waiting::Approval)
        );
        progress.apply(&wave_started(3, &["c"]), at(100));
        assert!(progress.hold.is_none());
        assert!(progress.not_reached().is_empty());
    }
}
