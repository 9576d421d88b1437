//! `aegis`: the one binary. Parses the command line, loads the configuration, sets up
//! logging and runs the command; see `aegis --help`.
//!
//! Exit codes: 0 success, 1 a failure at run time (or a check that found problems),
//! 2 a usage or configuration error.

mod approvals_cmd;
mod audit_export;
mod backtest_cmd;
mod backup_cmd;
mod cli;
mod config;
mod demo;
#[cfg(test)]
mod doc_commands;
mod logging;
mod logs_cmd;
mod model_cmd;
mod policy_cmd;
mod replay;
mod retention;
mod serve;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's malloc: under load the server allocates and frees from many
/// threads (tokio workers, the SQLite connection threads), and glibc's arena locks and
/// `malloc_consolidate` took a fifth of its CPU (BENCHMARKS.md, HTTP front door).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::run(cli)
}
