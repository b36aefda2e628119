//! The `p2pmix` command line: keys, authorities, mix nodes, clients, consensus tools, health
//! checks and test networks. The library does not export this module; it is the binary's own.
//!
//! Every flag of the long-running commands (`node`, `authority`, the client's common flags) and
//! the global `--log-format` can also be given as a `P2PMIX_*` environment variable (shown in
//! `--help`); a flag wins over its variable, which wins over the configuration file.

mod authority;
mod client;
mod consensus;
mod consensus_view;
mod health;
mod node;
mod template;
mod testnet;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use libp2p_identity::Keypair;
use p2pmix::{
    config::Authorities,
    identity::{IDENTITY_FILE, write_identity},
};

#[derive(Parser)]
#[command(
    name = "p2pmix",
    version,
    about = "p2pmix: a peer-to-peer mixnet overlay on libp2p"
)]
pub(crate) struct Cli {
    /// How log lines are written to stderr: text for people, or one JSON object a line for a
    /// log collector. The level comes from RUST_LOG (default info).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "P2PMIX_LOG_FORMAT"
    )]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line (timestamp, level, target, fields).
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Create an identity (ed25519) in DIR/identity.key and print its peer id and public key.
    Keygen {
        /// Directory to write the identity into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Run a directory authority (or `authority init`: create one).
    Authority(authority::AuthorityCommand),
    /// Run a mix node or gateway: join the DHT through the bootstrap peers, get admitted through
    /// the consensus, relay Sphinx packets (or `node init`: write a configuration file).
    Node(node::NodeCommand),
    /// Send and receive messages through the mixnet.
    Client {
        #[command(subcommand)]
        command: client::ClientCommand,
    },
    /// Inspect and check consensus documents.
    Consensus {
        #[command(subcommand)]
        command: consensus::ConsensusCommand,
    },
    /// Ask a running node or authority whether it is healthy (or ready): exit 0 if so.
    Health(health::HealthArgs),
    /// Test networks: configuration for a whole network on real hosts (genconfig), and one of
    /// processes on this machine (up, start, stop, host, record, status, send, down).
    Testnet {
        #[command(subcommand)]
        command: testnet::TestnetCommand,
    },
}

/// Runs one command.
pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Keygen { out } => keygen(&out).map(|()| ExitCode::SUCCESS),
        Command::Authority(command) => authority::run(command),
        Command::Node(command) => node::run(command),
        Command::Client { command } => client::run(command),
        Command::Consensus { command } => consensus::run(command),
        Command::Health(args) => health::run(args),
        Command::Testnet { command } => testnet::run(command),
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn keygen(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(IDENTITY_FILE);
    if path.exists() {
        bail!(
            "{} exists; refusing to overwrite an identity",
            path.display()
        );
    }
    let keypair = Keypair::generate_ed25519();
    write_identity(&path, &keypair)?;
    let public = keypair.public();
    println!("peer_id = {}", public.to_peer_id());
    println!("public_key = {}", hex::encode(public.encode_protobuf()));
    println!("identity written to {}", path.display());
    println!(
        "\n# entry for an authorities file (fill in the addresses):\n{}",
        Authorities::entry(&public, &[])
    );
    Ok(())
}
