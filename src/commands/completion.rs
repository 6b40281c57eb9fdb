//! `klm completion`: a shell completion script, from the same clap
//! definition as the parser.

use clap::Args as ClapArgs;
use clap_complete::Shell;

use crate::error::ExitStatus;

/// Flags of `klm completion`.
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Examples:\n  source <(klm completion bash)                        # this bash session\n  klm completion bash > /etc/bash_completion.d/klm\n  klm completion zsh > \"${fpath[1]}/_klm\"\n  klm completion fish > ~/.config/fish/completions/klm.fish"
)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// Writes the completion script of `command` (klm's own) to stdout (a
/// reader that went away is no error, as for every report).
pub fn run(args: &Args, mut command: clap::Command) -> anyhow::Result<ExitStatus> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "klm", &mut script);
    crate::output::print_raw(&String::from_utf8_lossy(&script))?;
    Ok(ExitStatus::Done)
}
