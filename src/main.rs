//! `aegis`: the one binary. Parses the command line, loads the configuration, sets up
//! logging and runs the command; see `aegis --help`.
//!
//! Exit codes: 0 success, 1 a failure at run time (or a check that found problems),
//! 2 a usage or configuration error.

mod audit_export;
mod backtest_cmd;
mod backup_cmd;
mod cli;
mod config;
mod demo;
mod logging;
mod model_cmd;
mod policy_cmd;
mod replay;
mod retention;
mod serve;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::run(cli)
}
