//! The command line: one flag, one place (its parsing, default, help text and
//! environment variable live together in `args.rs`). Only this module knows clap.

mod args;
mod bench;
mod certs;
mod consume;
mod dev;
mod group;
mod leader;
mod logging;
mod node;
mod partition;
mod produce;
mod serve;
mod signals;
mod status;
mod topic;

use std::process::ExitCode;

use args::{Cli, Command};
use clap::Parser;

/// Exit status for a usage error (as clap uses for its own).
const EXIT_USAGE: u8 = 2;

/// An error in how keel was called: a bad flag value, a missing setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev(args) => dev::run(args),
        Command::Certs(args) => certs::run(args),
        Command::Serve(args) => serve::run(*args),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Status(args) => status::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Topic(args) => topic::run(args),
        Command::Group(args) => group::run(args),
        Command::Leader(args) => leader::run(args),
        Command::Node(args) => node::run(args),
        Command::Partition(args) => partition::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", describe(&err));
            if err.downcast_ref::<Usage>().is_some() { ExitCode::from(EXIT_USAGE) } else { ExitCode::FAILURE }
        }
    }
}

/// The client settings every client command shares; `timeout` unless --timeout says otherwise.
fn client_config(args: &args::ClientArgs, timeout: std::time::Duration) -> keel::client::ClientConfig {
    let mut config = keel::client::ClientConfig::new(args.bootstrap.iter().cloned(), &args.tls);
    config.timeout = args.timeout.unwrap_or(timeout);
    config
}

/// Hands what `client` says while it keeps trying (no node answers, the disk is nearly
/// full, ...) to `say`, for as long as the runtime runs.
fn print_notices(client: &keel::client::Client, say: impl Fn(String) + Send + 'static) {
    use tokio::sync::broadcast::error::RecvError;
    let mut notices = client.notices();
    tokio::spawn(async move {
        loop {
            match notices.recv().await {
                // Good news is not a warning.
                Ok(notice @ keel::client::Notice::NodeAnswers { .. }) => say(notice.to_string()),
                Ok(notice) => say(format!("warning: {notice}")),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// An error and its causes on one line, skipping a cause its parent already quotes.
fn describe(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
