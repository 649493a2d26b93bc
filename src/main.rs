//! The `bundleq` binary: parse arguments, start the logger, hand over to the
//! library, and turn the result into an exit code. Nothing else lives here.

#![warn(clippy::unwrap_used, clippy::expect_used)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let default_level = if args.command.is_long_running() {
        "info"
    } else {
        "warn"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp_micros()
        .init();
    cli::run(args)
}
