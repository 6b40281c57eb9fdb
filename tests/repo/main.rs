//! Repository checks (`cargo test --test repo`): what only runs on GitHub
//! (the workflows, the image build, the end-to-end run on kind) is at least
//! well-formed and consistent with the rest of the repository here.
//!
//! - `workflows`: actionlint (built from its Go module by `make rig-bins`)
//!   passes; every third-party action is pinned by commit; permissions start
//!   read-only; the Rust toolchain and platforms agree with the image.
//! - `image`: the Containerfile's bases are pinned by digest, the final stage
//!   is shell-free and non-root with the OCI labels, and helm is the tests'
//!   version with a checksum for every platform.
//! - `e2e`: the end-to-end fixtures are accepted by klm and by the chart.
//! - `dependencies`: the crates the project bans stay out.
//! - `help`: snapshots of `klm --help`, each subcommand's help and one
//!   error per exit code.
//! - `cli`: the command line as people type it (completion scripts, `-n`,
//!   negative numbers, help grouped by heading).

mod cli;
mod containerfile;
mod dependencies;
mod e2e;
mod help;
mod image;
mod support;
mod workflows;
