//! The command line: one flag, one place (its parsing, default, help text and
//! environment variable live together in `args.rs`). Only this module knows clap.

mod args;
mod certs;

use std::process::ExitCode;

use args::{Cli, Command};
use clap::Parser;

/// Exit status for a usage error or a feature that is not available.
const EXIT_USAGE: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev(_) => not_implemented("dev"),
        Command::Certs(args) => certs::run(args),
        Command::Serve(_) => not_implemented("serve"),
        Command::Produce(_) => not_implemented("produce"),
        Command::Consume(_) => not_implemented("consume"),
        Command::Status(_) => not_implemented("status"),
        Command::Bench(_) => not_implemented("bench"),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn not_implemented(name: &str) -> anyhow::Result<ExitCode> {
    eprintln!("error: `keel {name}` is not implemented yet in this build");
    Ok(ExitCode::from(EXIT_USAGE))
}
