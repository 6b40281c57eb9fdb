//! The steps of an upgrade, one module per workflow step, each named as its
//! subcommand: what `klm <step>` does, as a library call the subcommand and
//! `klm upgrade` share. A step composes the concern modules below it; no
//! step module holds a concern of its own that another step needs. Beside
//! them, [`pause`]: a person acting on a running `klm upgrade`.

pub mod check_prerequisites;
pub mod close_run;
pub mod complete;
pub mod cordon;
pub mod gate;
pub mod helm_upgrade;
pub mod pause;
pub mod plan;
pub mod restart_kata_pod;
pub mod rollback;
pub mod select_nodes;
pub mod settle;
pub mod status;
pub mod verify;
