//! One module per subcommand: each has an `Args` struct (its flags and help)
//! and one `run` function that validates, composes library calls and returns
//! a report. The logic lives in the library's steps; what a subcommand
//! resolves from its flags (the release, helm, the selection, its nodes) is
//! in [`flags`], the one module here that is not a subcommand.

pub mod approve;
pub mod check_prerequisites;
pub mod close_run;
pub mod complete;
pub mod completion;
pub mod cordon;
pub mod drain;
pub mod flags;
pub mod gate;
pub mod helm_upgrade;
pub mod pause;
pub mod plan;
pub mod restart_kata_pod;
pub mod rollback;
pub mod select_nodes;
pub mod settle;
pub mod status;
pub mod uncordon;
pub mod upgrade;
pub mod verify;
