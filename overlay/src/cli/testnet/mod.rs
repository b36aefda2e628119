//! `p2pmix testnet …`: whole test networks. [`genconfig`] writes every identity and
//! configuration of a network for a list of hosts; [`local`] starts, drives and stops one on
//! this machine.

mod genconfig;
mod kubernetes;
mod local;

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum TestnetCommand {
    /// Write every identity, node and authority configuration and the pinned authorities file
    /// of a network on the given hosts, ready to copy to them (one directory a process), with an
    /// inventory, a Prometheus scrape configuration and Kubernetes ConfigMap/Secret manifests.
    Genconfig(genconfig::GenconfigArgs),
    /// Start a test network of this binary's processes on this machine (3 authorities,
    /// gateways, mixes; loopback or a network namespace each) and wait for its first consensus;
    /// it keeps running after this command returns (interrupted before, it stops what it
    /// started).
    Up(local::UpArgs),
    /// Start one node of a test network again, on its data directory.
    Start(local::StartArgs),
    /// Stop one process of a test network.
    Stop(local::StopArgs),
    /// List a process a script started (NAME PID), so that `down` stops it too.
    Record(local::RecordArgs),
    /// Print a process's host, NAMESPACE ADDRESS ("-" on loopback), making it if needed.
    Host(local::HostArgs),
    /// Every process of a test network: running or gone, admitted or not, where it listens.
    Status(local::DirArgs),
    /// Send messages through a test network from its first gateway to its last, and check
    /// that each arrived exactly once.
    Send(local::SendArgs),
    /// Stop every process of a test network (SIGTERM, SIGKILL after 5 s) and remove its
    /// namespaces; works on testnet/run.sh's run directories too.
    Down(local::DirArgs),
}

/// Runs one `testnet` command.
pub(crate) fn run(command: TestnetCommand) -> Result<ExitCode> {
    match command {
        TestnetCommand::Genconfig(args) => genconfig::run(args),
        TestnetCommand::Up(args) => local::up(args),
        TestnetCommand::Start(args) => local::start(args),
        TestnetCommand::Stop(args) => local::stop(args),
        TestnetCommand::Record(args) => local::record(args),
        TestnetCommand::Host(args) => local::host(args),
        TestnetCommand::Status(args) => local::status(args),
        TestnetCommand::Send(args) => local::send(args),
        TestnetCommand::Down(args) => local::down(args),
    }
}
