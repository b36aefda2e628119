//! `p2pmix testnet …`: whole test networks. One subcommand a file: [`genconfig`] writes every
//! identity and configuration of a network for a list of hosts.

mod genconfig;
mod kubernetes;

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum TestnetCommand {
    /// Write every identity, node and authority configuration and the pinned authorities file
    /// of a network on the given hosts, ready to copy to them (one directory a process), with an
    /// inventory, a Prometheus scrape configuration and Kubernetes ConfigMap/Secret manifests.
    Genconfig(genconfig::GenconfigArgs),
}

/// Runs one `testnet` command.
pub(crate) fn run(command: TestnetCommand) -> Result<ExitCode> {
    match command {
        TestnetCommand::Genconfig(args) => genconfig::run(args),
    }
}
