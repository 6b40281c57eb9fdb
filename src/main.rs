//! `klm`: the steps of a safe Kata Containers upgrade, one subcommand each.

use std::process::ExitCode;

use kata_lifecycle_manager::args::LogFormat;
use kata_lifecycle_manager::cli::Cli;
use kata_lifecycle_manager::{exit, run};

fn main() -> ExitCode {
    let cli = Cli::parse_args(kubectl_plugin_args(std::env::args_os()));
    let quiet = cli.command.draws_live(&cli.global);
    init_logging(cli.global.log_format, cli.global.verbose, quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return report(&anyhow::Error::new(err).context("starting the async runtime")),
    };
    match runtime.block_on(run(cli)) {
        Ok(status) => ExitCode::from(status.code()),
        Err(err) => report(&err),
    }
}

/// As a kubectl plugin (`kubectl klm ...`) the binary is called `kubectl-klm`;
/// clap then needs the name it documents.
fn kubectl_plugin_args(args: std::env::ArgsOs) -> impl Iterator<Item = std::ffi::OsString> {
    args.enumerate()
        .map(|(i, arg)| if i == 0 { "klm".into() } else { arg })
}

fn report(err: &anyhow::Error) -> ExitCode {
    let (status, hints) = exit::classify(err);
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{}", exit::render(err, &hints));
    }
    ExitCode::from(status.code())
}

/// Logs at info by default; only errors while live progress is drawn
/// (`quiet`): the run's warnings and failures are its events there, said once.
fn init_logging(format: LogFormat, verbose: u8, quiet: bool) {
    let default = match verbose {
        0 if quiet => "error",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KLM_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("warn,kata_lifecycle_manager={default}"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: Argo's logs and files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.without_time().init(),
    }
}
