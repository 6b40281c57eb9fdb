//! What `klm upgrade` reports as it goes: one [`Event`] per thing that
//! happened to the run, a wave or a node, in the order it happened.

use serde::Serialize;

pub use crate::run_record::Waiting;

/// Where the run, a wave or a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The run is checked and recorded (check-prerequisites).
    Started,
    /// The nodes are selected and the waves planned (select-nodes).
    Planned,
    /// The release moved to the target before the waves (daemonset mode).
    ReleaseUpgraded,
    /// The run waits before a wave: at a gate (soak, approval) or for its window.
    Held,
    /// A gate did its part: a soak's verification passed, an approval came.
    GatePassed,
    /// A person paused the run (`klm pause`): no new wave starts.
    Paused,
    /// A person resumed the paused run (`klm resume`).
    Resumed,
    /// A wave begins.
    WaveStarted,
    /// A node is held for the run and unschedulable.
    Cordoned,
    /// A node's pods are being evicted.
    Draining,
    /// A node's kata-deploy is being restarted at the target.
    Restarting,
    /// A node's kata-deploy did not come back at the target.
    RestartFailed,
    /// A node's verification pod runs.
    Verifying,
    /// A node passed verification.
    Verified,
    /// A node failed verification.
    VerificationFailed,
    /// A node is completed at the target and back in service.
    Completed,
    /// A node is being returned to its version before the run.
    RollingBack,
    /// A node is back at its version before the run.
    RolledBack,
    /// A completed node's Kata pods still on the runtime they started with
    /// were evicted (`--recycle-old-sandboxes`).
    SandboxesRecycled,
    /// A node's rollback failed: it stays cordoned, marked failed.
    RollbackFailed,
    /// A node the run held is back in service, unchanged by it.
    Released,
    /// A wave's nodes are all completed.
    WaveCompleted,
    /// A wave failed: it was rolled back and no further wave starts.
    WaveFailed,
    /// A wave failed within the run's failure budget: its verified nodes
    /// were completed, its failed ones rolled back; the run goes on.
    WaveFailedWithinBudget,
    /// Something a person should know that does not stop the run (a
    /// downgrade asked for, ...).
    Warning,
    /// Ctrl-C or SIGTERM: the run ends (a second one leaves without clean-up).
    Interrupted,
    /// The run is being closed (the workflow's exit handler).
    Closing,
    /// The run completed: every planned node is at the target.
    RunCompleted,
    /// The run ended failed.
    RunFailed,
    /// A second interrupt: klm left without cleaning up.
    Abandoned,
}

impl Phase {
    /// The phase as it is printed (kebab-case).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Started => "started",
            Phase::Planned => "planned",
            Phase::ReleaseUpgraded => "release-upgraded",
            Phase::Held => "held",
            Phase::GatePassed => "gate-passed",
            Phase::Paused => "paused",
            Phase::Resumed => "resumed",
            Phase::WaveStarted => "wave-started",
            Phase::Cordoned => "cordoned",
            Phase::Draining => "draining",
            Phase::Restarting => "restarting",
            Phase::RestartFailed => "restart-failed",
            Phase::Verifying => "verifying",
            Phase::Verified => "verified",
            Phase::VerificationFailed => "verification-failed",
            Phase::Completed => "completed",
            Phase::RollingBack => "rolling-back",
            Phase::RolledBack => "rolled-back",
            Phase::RollbackFailed => "rollback-failed",
            Phase::Released => "released",
            Phase::WaveCompleted => "wave-completed",
            Phase::WaveFailed => "wave-failed",
            Phase::SandboxesRecycled => "sandboxes-recycled",
            Phase::WaveFailedWithinBudget => "wave-failed-within-budget",
            Phase::Warning => "warning",
            Phase::Interrupted => "interrupted",
            Phase::Closing => "closing",
            Phase::RunCompleted => "run-completed",
            Phase::RunFailed => "run-failed",
            Phase::Abandoned => "abandoned",
        }
    }

    /// Whether the phase ends the run.
    pub fn ends_run(self) -> bool {
        matches!(
            self,
            Phase::RunCompleted | Phase::RunFailed | Phase::Abandoned
        )
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened. Every event has the run, the wave and the node
/// (null when it is about the run, or the whole wave), the phase and the time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The run.
    pub run_id: String,
    /// The wave (from 1), when the event belongs to one.
    pub wave: Option<usize>,
    /// The node, when the event is about one.
    pub node: Option<String>,
    /// What happened.
    pub phase: Phase,
    /// When (RFC 3339).
    pub time: String,
    /// `started`: the chart version the release is at before the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `started`: the chart version the run upgrades to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `started`: the deployment mode of the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `planned`: how many waves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waves: Option<usize>,
    /// `planned`: every planned node, in wave order; `wave-started`: the
    /// wave's nodes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// `planned`: the nodes skipped, completed at the target already.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// `planned`: the gates ahead of the waves and what each waits for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<PlannedGate>,
    /// `held`: what the wave waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<Waiting>,
    /// `held` for a soak or a window: until when (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Details for a person (a failure's reason, what a step did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Event {
    /// An event of `phase` for the run, now.
    pub fn new(run_id: &str, phase: Phase) -> Event {
        Event {
            run_id: run_id.to_string(),
            wave: None,
            node: None,
            phase,
            time: crate::run_record::now(),
            from: None,
            to: None,
            mode: None,
            waves: None,
            nodes: Vec::new(),
            skipped: Vec::new(),
            gates: Vec::new(),
            waiting_for: None,
            until: None,
            message: None,
        }
    }

    /// The same event, in wave `wave`.
    pub fn in_wave(mut self, wave: usize) -> Event {
        self.wave = Some(wave);
        self
    }

    /// The same event, about `node`.
    pub fn on(mut self, node: &str) -> Event {
        self.node = Some(node.to_string());
        self
    }

    /// The same event, with a message.
    pub fn saying(mut self, message: impl Into<String>) -> Event {
        self.message = Some(message.into());
        self
    }

    /// One plain line: the time, the wave, the node, the phase, the message.
    pub fn line(&self) -> String {
        self.line_at(&self.time)
    }

    /// The line with the time shown short, in the local time zone
    /// (`14:03:12`), for a person at a terminal.
    pub fn local_line(&self) -> String {
        self.line_at(&local_time(&self.time))
    }

    fn line_at(&self, time: &str) -> String {
        let mut line = time.to_string();
        if self.phase == Phase::Started {
            line.push_str(&format!(" run {}", self.run_id));
        }
        if let Some(wave) = self.wave {
            line.push_str(&format!(" wave {wave}"));
        }
        if let Some(node) = &self.node {
            line.push_str(&format!(" {node}"));
        }
        line.push_str(&format!(" {}", self.phase));
        if let Some(waves) = self.waves {
            line.push_str(&format!(" ({waves} wave(s))"));
        }
        if !self.nodes.is_empty() {
            line.push_str(&format!(" ({})", shortened(&self.nodes, 10)));
        }
        if let Some(message) = &self.message {
            line.push_str(&format!(": {message}"));
        }
        line
    }
}

/// A gate ahead of the waves, as the plan has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedGate {
    /// The wave it holds (from 1).
    pub before_wave: usize,
    /// How long it soaks before verifying again, in seconds (0: no soak).
    pub soak_seconds: u64,
    /// Whether a person must approve it.
    pub approval: bool,
}

/// `names` joined, the first `shown` of them and how many more.
pub fn shortened(names: &[String], shown: usize) -> String {
    if names.len() <= shown {
        return names.join(", ");
    }
    format!(
        "{} and {} more",
        names[..shown].join(", "),
        names.len() - shown
    )
}

/// An RFC 3339 time as a short local time (`14:03:12`); the text as it is
/// when it is not a time.
fn local_time(time: &str) -> String {
    match time.parse::<jiff::Timestamp>() {
        Ok(at) => at
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%H:%M:%S")
            .to_string(),
        Err(_) => time.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_has_run_wave_node_phase_and_time() {
        let event = Event::new("run-1", Phase::Verifying).in_wave(2).on("n2");
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["runId"], "run-1");
        assert_eq!(json["wave"], 2);
        assert_eq!(json["node"], "n2");
        assert_eq!(json["phase"], "verifying");
        assert!(json["time"].as_str().unwrap().ends_with('Z'));
        let run = serde_json::to_value(Event::new("run-1", Phase::Started)).unwrap();
        assert!(run["wave"].is_null() && run["node"].is_null(), "{run}");
        assert!(run.get("message").is_none());
    }

    #[test]
    fn a_line_reads_left_to_right() {
        let mut event = Event::new("run-1", Phase::VerificationFailed)
            .in_wave(1)
            .on("n1")
            .saying("pod exited 1");
        event.time = "2026-12-02T10:00:00Z".into();
        assert_eq!(
            event.line(),
            "2026-12-02T10:00:00Z wave 1 n1 verification-failed: pod exited 1"
        );
    }

    #[test]
    fn the_first_line_names_the_run_and_long_node_lists_are_cut() {
        let mut started = Event::new("run-7", Phase::Started).saying("kata-deploy from 3.27.0");
        started.time = "2026-12-02T10:00:00Z".into();
        assert_eq!(
            started.line(),
            "2026-12-02T10:00:00Z run run-7 started: kata-deploy from 3.27.0"
        );
        let nodes: Vec<String> = (1..=12).map(|i| format!("n{i}")).collect();
        assert_eq!(
            shortened(&nodes, 10),
            "n1, n2, n3, n4, n5, n6, n7, n8, n9, n10 and 2 more"
        );
        assert_eq!(shortened(&nodes[..2], 10), "n1, n2");
    }

    #[test]
    fn a_terminal_gets_short_local_times() {
        let mut event = Event::new("run-1", Phase::Verifying).in_wave(1).on("n1");
        event.time = "2026-12-02T10:00:07Z".into();
        let line = event.local_line();
        let (time, rest) = line.split_once(' ').unwrap();
        assert_eq!(rest, "wave 1 n1 verifying");
        assert_eq!(time.len(), 8, "{time}");
        assert!(time.ends_with(":07"), "{time}");
    }
}
