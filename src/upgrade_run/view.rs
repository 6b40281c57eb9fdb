//! How `klm upgrade` shows its run: live progress on a terminal (indicatif's
//! bars and spinners), one plain line per event without one, or one JSON
//! object per event (`-o json`), for machines.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Observer;
use super::event::{Event, Phase};
use super::progress::Progress;
use crate::args::OutputFormat;
use crate::output;

/// A way of showing the run.
pub enum View {
    /// Bars on a terminal.
    Live(Box<Live>),
    /// One line per event.
    Lines(Progress),
    /// One JSON object per event.
    Json,
}

impl View {
    /// The view for the output format: JSON, else bars on a terminal, else lines.
    pub fn choose(format: OutputFormat) -> View {
        let now = Instant::now();
        match format {
            OutputFormat::Json => View::Json,
            _ if View::draws_live(format) => View::Live(Box::new(Live::new(now))),
            OutputFormat::Text => View::Lines(Progress::new(now)),
        }
    }

    /// Whether the view for `format` draws on the terminal (logs below
    /// warnings then stay quiet, so as not to tear the drawing).
    pub fn draws_live(format: OutputFormat) -> bool {
        format == OutputFormat::Text && std::io::stdout().is_terminal()
    }

    /// Stops drawing; returns the run's summary for a person (none in JSON).
    pub fn finish(self) -> Option<String> {
        match self {
            View::Live(live) => Some(live.finish()),
            View::Lines(progress) => Some(summary(&progress, Instant::now())),
            View::Json => None,
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
            View::Json => {
                let _ = output::print_line(event);
            }
        }
    }
}

/// The run's summary: how it ended, nodes by outcome, waves, time taken.
pub fn summary(progress: &Progress, now: Instant) -> String {
    let how = match progress.ended {
        Some(Phase::RunCompleted) => "completed",
        Some(Phase::Abandoned) => "left without cleaning up",
        _ => "failed",
    };
    format!(
        "{how}: {} node(s) completed, {} rolled back, {} failed, in {} of {} wave(s), {}",
        progress.completed,
        progress.rolled_back,
        progress.failed,
        progress.waves_done(),
        progress.waves.unwrap_or(0),
        progress.elapsed_text(now)
    )
}

/// Live progress: one bar of waves (done, left, elapsed, the estimate), a
/// spinner per node of the current wave with its phase, and the events a
/// person must not miss (failures, a signal) printed above them.
pub struct Live {
    progress: Progress,
    bars: MultiProgress,
    waves: ProgressBar,
    nodes: Vec<(String, ProgressBar)>,
}

impl Live {
    fn new(now: Instant) -> Live {
        let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let waves = bars.add(ProgressBar::new(0));
        waves.set_style(
            ProgressStyle::with_template(
                "{spinner} waves [{bar:30}] {pos}/{len}  elapsed {elapsed}  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        waves.set_message("starting");
        waves.enable_steady_tick(std::time::Duration::from_millis(200));
        Live {
            progress: Progress::new(now),
            bars,
            waves,
            nodes: Vec::new(),
        }
    }

    fn show(&mut self, event: &Event) {
        let now = Instant::now();
        self.progress.apply(event, now);
        if let Some(waves) = self.progress.waves {
            self.waves.set_length(waves as u64);
        }
        self.waves.set_position(self.progress.waves_done() as u64);
        self.waves
            .set_message(self.progress.left_text(now).unwrap_or_default());
        if event.phase == Phase::WaveStarted {
            for (_, bar) in self.nodes.drain(..) {
                bar.finish_and_clear();
            }
        }
        if let Some(wave) = &self.progress.current {
            for (node, phase) in &wave.nodes {
                let bar = match self.nodes.iter().find(|(name, _)| name == node) {
                    Some((_, bar)) => bar.clone(),
                    None => {
                        let bar = self.bars.add(ProgressBar::new_spinner());
                        bar.set_style(
                            ProgressStyle::with_template("  {spinner} {msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        bar.enable_steady_tick(std::time::Duration::from_millis(200));
                        self.nodes.push((node.clone(), bar.clone()));
                        bar
                    }
                };
                let phase = phase.map_or("waiting", Phase::as_str);
                bar.set_message(format!("wave {} {node}: {phase}", wave.index));
            }
        }
        if worth_a_line(event.phase) {
            let _ = self.bars.println(event.line());
        }
    }

    fn finish(self) -> String {
        for (_, bar) in &self.nodes {
            bar.finish_and_clear();
        }
        self.waves.finish();
        summary(&self.progress, Instant::now())
    }
}

/// The events printed above the bars, to stay on screen.
fn worth_a_line(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Started
            | Phase::Planned
            | Phase::ReleaseUpgraded
            | Phase::Held
            | Phase::GatePassed
            | Phase::WaveCompleted
            | Phase::WaveFailed
            | Phase::RestartFailed
            | Phase::VerificationFailed
            | Phase::RolledBack
            | Phase::RollbackFailed
            | Phase::Released
            | Phase::Interrupted
            | Phase::RunCompleted
            | Phase::RunFailed
            | Phase::Abandoned
    )
}
