//! How `klm upgrade` shows its run: live progress on a terminal (indicatif's
//! bars and spinners), one plain line per event without one, or one JSON
//! object per event (`-o json`), for machines.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Observer;
use super::event::{Event, Phase, Waiting};
use super::progress::{Progress, clock};
use crate::output;
use crate::output::OutputFormat;

/// How long each phase of a node may take, to show a node's time in its
/// phase against its limit (`verifying 12s / 3m`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// A drain (None: the run does not drain).
    pub drain: Option<Duration>,
    /// kata-deploy coming back at the target.
    pub restart: Option<Duration>,
    /// A node's verification.
    pub verification: Option<Duration>,
}

impl Limits {
    /// The limit of `phase`, when it has one.
    pub fn of(&self, phase: Phase) -> Option<Duration> {
        match phase {
            Phase::Draining => self.drain,
            Phase::Restarting => self.restart,
            Phase::Verifying => self.verification,
            _ => None,
        }
    }
}

/// A way of showing the run.
pub enum View {
    /// Bars on a terminal.
    Live(Box<Live>),
    /// One line per event.
    Lines(Progress),
    /// One JSON object per event.
    Json(Progress),
}

impl View {
    /// The view for the output format: JSON, else bars on a terminal, else
    /// lines. `run_id` is shown from the first line.
    pub fn choose(format: OutputFormat, run_id: &str, limits: Limits) -> View {
        let now = Instant::now();
        match format {
            OutputFormat::Json => View::Json(Progress::new(now)),
            _ if View::draws_live(format) => View::Live(Box::new(Live::new(now, run_id, limits))),
            OutputFormat::Text => View::Lines(Progress::new(now)),
        }
    }

    /// Whether the view for `format` draws on the terminal (logs below
    /// errors then stay quiet, so as not to tear the drawing).
    pub fn draws_live(format: OutputFormat) -> bool {
        format == OutputFormat::Text && std::io::stdout().is_terminal()
    }

    /// Stops drawing, without a summary (the run never started).
    pub fn abandon(self) {
        if let View::Live(live) = self {
            live.clear();
        }
    }

    /// Stops drawing and shows the run's summary: a person's lines, or
    /// the final JSON object. `next` is the command to run next, if any.
    pub fn finish(self, run_id: &str, next: Option<String>) -> anyhow::Result<()> {
        let now = Instant::now();
        match self {
            View::Live(live) => {
                let progress = live.finish();
                output::print_line(&Summary::of(&progress, run_id, next, now).text())
            }
            View::Lines(progress) => {
                output::print_line(&Summary::of(&progress, run_id, next, now).text())
            }
            View::Json(progress) => output::print_line(&Summary::of(&progress, run_id, next, now)),
        }
    }
}

impl Observer for View {
    fn event(&mut self, event: &Event) {
        match self {
            View::Live(live) => live.show(event),
            View::Lines(progress) => {
                progress.apply(event, Instant::now());
                // A reader that went away is not the run's failure.
                let _ = output::print_line(&event.line());
            }
            View::Json(progress) => {
                progress.apply(event, Instant::now());
                let _ = output::print_line(event);
            }
        }
    }
}

/// How a run ended, in numbers: the last line of `-o json`, and the
/// summary a person reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The run.
    pub run_id: String,
    /// Always `summary`: every line of the stream has a phase.
    pub phase: &'static str,
    /// `completed`, `failed` or `abandoned` (left without cleaning up).
    pub result: &'static str,
    /// Nodes completed at the target.
    pub completed: usize,
    /// Nodes rolled back.
    pub rolled_back: usize,
    /// Nodes whose rollback failed (left cordoned).
    pub failed: usize,
    /// Waves finished.
    pub waves_done: usize,
    /// Waves planned.
    pub waves: usize,
    /// Planned nodes no wave reached: the run left them untouched.
    pub not_reached: Vec<String>,
    /// Seconds since the run started.
    pub seconds: u64,
    /// The command to run next, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl Summary {
    /// The summary of `progress`, now.
    pub fn of(progress: &Progress, run_id: &str, next: Option<String>, now: Instant) -> Summary {
        Summary {
            run_id: run_id.to_string(),
            phase: "summary",
            result: match progress.ended {
                Some(Phase::RunCompleted) if progress.rolled_back + progress.failed > 0 => {
                    "completed-with-failures"
                }
                Some(Phase::RunCompleted) => "completed",
                Some(Phase::Abandoned) => "abandoned",
                _ => "failed",
            },
            completed: progress.completed,
            rolled_back: progress.rolled_back,
            failed: progress.failed,
            waves_done: progress.waves_done(),
            waves: progress.waves.unwrap_or(0),
            not_reached: progress.not_reached(),
            seconds: now.saturating_duration_since(progress.started).as_secs(),
            next,
        }
    }

    /// For a person: how it ended, nodes by outcome, waves, time taken;
    /// then the nodes left untouched and the command to run next.
    pub fn text(&self) -> String {
        let how = match self.result {
            "abandoned" => "left without cleaning up",
            other => other,
        };
        let mut text = format!(
            "run {}: {how}: {} node(s) completed, {} rolled back, {} failed, in {} of {} wave(s), {}",
            self.run_id,
            self.completed,
            self.rolled_back,
            self.failed,
            self.waves_done,
            self.waves,
            clock(Duration::from_secs(self.seconds))
        );
        if !self.not_reached.is_empty() {
            text.push_str(&format!(
                "\nleft untouched ({}): {}",
                self.not_reached.len(),
                super::event::shortened(&self.not_reached, 20)
            ));
        }
        if let Some(next) = &self.next {
            text.push_str(&format!("\nnext: {next}"));
        }
        text
    }
}

/// Live progress: one bar of waves (done, left, elapsed, the estimate, the
/// nodes not started), a spinner per node of the current wave with its
/// phase and its time in it against the phase's limit, and the events a
/// person must not miss (failures, a signal) printed above them.
pub struct Live {
    progress: Progress,
    limits: Limits,
    bars: MultiProgress,
    waves: ProgressBar,
    nodes: Vec<(String, ProgressBar)>,
    /// While the run waits before a wave: what for, and for how long so far.
    hold: Option<ProgressBar>,
}

impl Live {
    fn new(now: Instant, run_id: &str, limits: Limits) -> Live {
        let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let waves = bars.add(ProgressBar::new(0));
        // No bar until the waves are planned (a bar of none is drawn full).
        waves.set_style(
            ProgressStyle::with_template("{spinner} run {prefix}  elapsed {elapsed}  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        waves.set_prefix(run_id.to_string());
        waves.set_message("checking the release and planning the waves");
        waves.enable_steady_tick(Duration::from_millis(200));
        Live {
            progress: Progress::new(now),
            limits,
            bars,
            waves,
            nodes: Vec::new(),
            hold: None,
        }
    }

    /// A line for the wait before a wave, its clock counting (against the
    /// soak or the window's opening, where the wait has an end).
    fn show_hold(&mut self, event: &Event, now: Instant) {
        if let Some(bar) = self.hold.take() {
            bar.finish_and_clear();
        }
        let Some(hold) = self.progress.hold.filter(|_| event.phase == Phase::Held) else {
            return;
        };
        let bar = self.bars.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("  {spinner} {msg} {elapsed}{prefix}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        let what = match hold.waiting_for {
            Waiting::Soak => "soaking",
            Waiting::Window => "waiting for the maintenance window",
            Waiting::Approval => "waiting for approval (klm approve)",
        };
        bar.set_message(format!("wave {} held: {what}", hold.wave));
        if let Some(until) = hold.until {
            bar.set_prefix(format!(
                " / {}",
                clock(until.saturating_duration_since(now))
            ));
        }
        self.hold = Some(bar);
    }

    fn show(&mut self, event: &Event) {
        let now = Instant::now();
        self.progress.apply(event, now);
        if let Some(waves) = self.progress.waves
            && event.phase == Phase::Planned
        {
            self.waves.set_length(waves as u64);
            self.waves.set_style(
                ProgressStyle::with_template(
                    "{spinner} run {prefix} waves [{bar:30}] {pos}/{len}  elapsed {elapsed}  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
        }
        // Completed waves fill the bar; a failed one does not.
        self.waves
            .set_position(self.progress.waves_completed as u64);
        self.waves.set_message(self.waves_message(now));
        if matches!(
            event.phase,
            Phase::Held | Phase::GatePassed | Phase::WaveStarted
        ) || event.phase.ends_run()
        {
            self.show_hold(event, now);
        }
        // A completed wave's rows go (its line stays); a failed wave's stay
        // to the end, with its nodes' rollback.
        if matches!(event.phase, Phase::WaveStarted | Phase::WaveCompleted) {
            for (_, bar) in self.nodes.drain(..) {
                bar.finish_and_clear();
            }
        }
        if let Some(wave) = &self.progress.current {
            for node in &wave.nodes {
                let (bar, new) = match self.nodes.iter().find(|(name, _)| *name == node.name) {
                    Some((_, bar)) => (bar.clone(), false),
                    None => {
                        let bar = self.bars.add(ProgressBar::new_spinner());
                        bar.set_style(
                            ProgressStyle::with_template("  {spinner} {msg} {elapsed}{prefix}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        bar.enable_steady_tick(Duration::from_millis(200));
                        self.nodes.push((node.name.clone(), bar.clone()));
                        (bar, true)
                    }
                };
                let phase = node.phase.map_or("waiting", Phase::as_str);
                let changed = new || event.node.as_deref() == Some(node.name.as_str());
                if changed {
                    // The clock shows the time in this phase.
                    bar.reset_elapsed();
                }
                bar.set_message(format!("wave {} {}: {phase}", wave.index, node.name));
                if changed {
                    bar.set_prefix(
                        node.phase
                            .and_then(|p| self.limits.of(p))
                            .map(|limit| format!(" / {}", clock(limit)))
                            .unwrap_or_default(),
                    );
                }
            }
        }
        if worth_a_line(event.phase) {
            let _ = self.bars.println(event.local_line());
        }
    }

    /// The bar's words: the estimate or the wait, and the nodes not started.
    fn waves_message(&self, now: Instant) -> String {
        if self.progress.waves.is_none() {
            return "checking the release and planning the waves".into();
        }
        let mut parts: Vec<String> = self
            .progress
            .estimate_left(now)
            .map(|left| format!("about {} left", clock(left)))
            .into_iter()
            .collect();
        let waiting = self.progress.not_reached().len();
        if waiting > 0 {
            parts.push(format!("{waiting} node(s) not started"));
        }
        parts.join("  ")
    }

    fn clear(self) {
        if let Some(bar) = &self.hold {
            bar.finish_and_clear();
        }
        for (_, bar) in &self.nodes {
            bar.finish_and_clear();
        }
        self.waves.finish_and_clear();
    }

    /// Stops drawing: a full bar only for a completed run; a failed or
    /// abandoned one stays where it stopped.
    fn finish(self) -> Progress {
        if let Some(bar) = &self.hold {
            bar.finish_and_clear();
        }
        for (_, bar) in &self.nodes {
            bar.finish_and_clear();
        }
        if self.progress.ended == Some(Phase::RunCompleted) {
            self.waves.finish_with_message("completed");
        } else {
            self.waves.abandon_with_message(match self.progress.ended {
                Some(Phase::Abandoned) => "left without cleaning up",
                _ => "failed",
            });
        }
        self.progress
    }
}

/// The events printed above the bars, to stay on screen. A wave's and the
/// run's failure are not: the nodes' own failures are, and the summary and
/// the error after it say the rest, once.
fn worth_a_line(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Started
            | Phase::Planned
            | Phase::ReleaseUpgraded
            | Phase::Held
            | Phase::GatePassed
            | Phase::Paused
            | Phase::Resumed
            | Phase::WaveCompleted
            | Phase::WaveFailedWithinBudget
            | Phase::SandboxesRecycled
            | Phase::RestartFailed
            | Phase::VerificationFailed
            | Phase::RolledBack
            | Phase::RollbackFailed
            | Phase::Released
            | Phase::Warning
            | Phase::Interrupted
            | Phase::RunCompleted
            | Phase::Abandoned
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_names_the_nodes_it_left_untouched_and_what_to_run_next() {
        let t0 = Instant::now();
        let mut progress = Progress::new(t0);
        let mut planned = Event::new("r", Phase::Planned);
        planned.waves = Some(3);
        planned.nodes = vec!["a".into(), "b".into(), "c".into()];
        progress.apply(&planned, t0);
        for (wave, node) in [(1, "a"), (2, "b")] {
            let mut started = Event::new("r", Phase::WaveStarted).in_wave(wave);
            started.nodes = vec![node.into()];
            progress.apply(&started, t0);
        }
        progress.apply(&Event::new("r", Phase::RolledBack).on("b"), t0);
        progress.apply(&Event::new("r", Phase::WaveFailed).in_wave(2), t0);
        progress.apply(&Event::new("r", Phase::RunFailed), t0);
        let summary = Summary::of(
            &progress,
            "r",
            Some("klm upgrade --target-version 3.28.0".into()),
            t0,
        );
        assert_eq!(summary.result, "failed");
        assert_eq!(summary.not_reached, ["c"]);
        assert_eq!(
            summary.text(),
            "run r: failed: 0 node(s) completed, 1 rolled back, 0 failed, in 1 of 3 wave(s), 0s\nleft untouched (1): c\nnext: klm upgrade --target-version 3.28.0"
        );
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["phase"], "summary");
        assert_eq!(json["rolledBack"], 1);
        assert_eq!(json["notReached"][0], "c");
    }

    #[test]
    fn only_phases_with_a_limit_show_one() {
        let limits = Limits {
            drain: None,
            restart: Some(Duration::from_secs(300)),
            verification: Some(Duration::from_secs(180)),
        };
        assert_eq!(limits.of(Phase::Verifying), Some(Duration::from_secs(180)));
        assert_eq!(limits.of(Phase::Draining), None);
        assert_eq!(limits.of(Phase::Cordoned), None);
    }
}
