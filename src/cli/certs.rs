//! `keel certs`: write a cluster CA and certificates for nodes and clients.

use std::process::ExitCode;

use anyhow::Context;

use super::args::CertsArgs;

pub fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    let written = keel::net::certs::generate(&args.dir, &args.nodes, &args.hosts, args.force)
        .with_context(|| format!("cannot write certificates into {}", args.dir.display()))?;
    if written.ca_created {
        println!("created a new cluster CA in {}", args.dir.display());
    } else {
        println!("signed with the existing CA in {}", args.dir.display());
    }
    for file in &written.files {
        println!("wrote {}", file.display());
    }
    Ok(ExitCode::SUCCESS)
}
