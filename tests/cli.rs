//! The command line's shape: every subcommand of the contract is listed, and flags are checked.

use std::process::Command;

fn keel(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keel")).args(args).output().expect("run keel")
}

#[test]
fn help_lists_every_subcommand() {
    let out = keel(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["dev", "certs", "serve", "produce", "consume", "status", "bench"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(sub)), "--help does not list `{sub}`:\n{help}");
    }
}

#[test]
fn version_prints_the_crate_version() {
    let out = keel(&["--version"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("keel {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_bad_flag_is_a_usage_error() {
    let out = keel(&["certs", "--dir", "/nonexistent", "--node", "one"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'one'"));
}
