//! Integration tests: every klm subcommand against the real control plane
//! of the test rig, run as the chart's ServiceAccount.

mod bad_input;
mod drain;
mod edges;
mod hints;
mod idempotence;
mod job_mode;
mod metric_gate;
mod one_process;
mod partial;
mod policy;
mod refused;
mod run_end;
mod selection;
mod side_by_side;
mod support;
mod upgrade;
mod verify;
mod views;
mod watch;
mod workflow;
