//! The `bundleq` binary: parse arguments, start the logger, hand over to the
//! library, and turn the result into an exit code. Nothing else lives here.
//!
//! Started with the hidden first argument `__handler-guard`, it is instead
//! the guard between `serve` and an external handler (see
//! `bundleq::handler::guard`), and ends the way the handler ended.

#![warn(clippy::unwrap_used, clippy::expect_used)]

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use bundleq::handler::guard::{GUARD_ARG, run_guard};

fn main() -> ExitCode {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if raw.get(1).is_some_and(|a| a == GUARD_ARG) {
        return guard(&raw[2..]);
    }
    let args = cli::Cli::parse();
    let default_level = match (args.global.quiet, args.global.verbose) {
        (true, _) => "error",
        (false, 0) if args.command.is_long_running() => "info",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format(|buf, record| {
            // Log lines quote file names, titles and handler output: never
            // let their control characters reach the terminal.
            writeln!(
                buf,
                "[{} {:<5}] {}",
                buf.timestamp_micros(),
                record.level(),
                cli::clean(&record.args().to_string())
            )
        })
        .init();
    cli::run(args)
}

/// The handler guard's whole life.
fn guard(args: &[std::ffi::OsString]) -> ExitCode {
    let exit = run_guard(args);
    if let Some(message) = &exit.message {
        let _ = writeln!(std::io::stderr(), "bundleq guard: {message}");
    }
    if let Some(signal) = exit.signal {
        // End by the handler's signal, as if we were the handler.
        let _ = signal_hook::low_level::emulate_default_handler(signal);
    }
    ExitCode::from(u8::try_from(exit.code).unwrap_or(255))
}
