//! The `p2pmix` command line: keys, authorities, mix nodes, clients and consensus tools. The
//! library does not export this module; it is the binary's own.

mod client;
mod consensus;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use libp2p::{Multiaddr, identity::Keypair};
use p2pmix::{
    authority::run_authority,
    config::{Authorities, AuthorityConfigFile, NodeConfig, NodeOverrides, NodeRole, TraceConfig},
    identity::{IDENTITY_FILE, read_identity, write_identity},
    node::run_node,
};

#[derive(Parser)]
#[command(
    name = "p2pmix",
    version,
    about = "p2pmix: a peer-to-peer mixnet overlay on libp2p"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an identity (ed25519) in DIR/identity.key and print its peer id and public key.
    Keygen {
        /// Directory to write the identity into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Run a directory authority.
    Authority {
        /// The authority's configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a mix node or gateway: join the DHT through the bootstrap peers, get admitted through
    /// the consensus, relay Sphinx packets. Flags override the configuration file.
    Node(NodeArgs),
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
}

#[derive(clap::Args)]
struct NodeArgs {
    /// The node's configuration file (TOML; see `p2pmix::config::NodeConfig`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where to listen (repeatable; default /ip4/127.0.0.1/tcp/0).
    #[arg(long)]
    listen: Vec<Multiaddr>,
    /// A peer to join the network through (repeatable), e.g. /dns4/boot.example.org/tcp/4100/p2p/12D3…
    #[arg(long)]
    bootstrap: Vec<Multiaddr>,
    /// An address other nodes and clients can reach this node at (repeatable), e.g.
    /// /dns4/mix1.example.org/tcp/4100 or /ip4/203.0.113.7/tcp/4100: the descriptor carries
    /// these (default: the public listen addresses). Behind NAT or in a container, give the
    /// public one.
    #[arg(long)]
    announce: Vec<Multiaddr>,
    /// The pinned authorities file (with a [network] section giving the epoch schedule).
    #[arg(long)]
    authorities: Option<PathBuf>,
    /// What this node does.
    #[arg(long, value_enum)]
    role: Option<NodeRole>,
    /// Identity, epoch keys and cached consensus documents live here.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks one; see DATA_DIR/metrics-addr).
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Operator family: no route uses two nodes of one family.
    #[arg(long)]
    family: Option<String>,
    #[command(flatten)]
    trace: TraceArgs,
}

/// Test-network traces (refused unless the authorities file says `test_network = true`).
#[derive(clap::Args)]
pub(crate) struct TraceArgs {
    /// Record what a global passive observer sees, one line per packet per link end (time,
    /// neighbour, packet tag), into FILE. Test networks only.
    #[arg(long, value_name = "FILE")]
    trace_links: Option<PathBuf>,
    /// Record the ground truth only this process knows (which packet became which, which
    /// message went in which packet) into FILE. Test networks only.
    #[arg(long, value_name = "FILE")]
    trace_truth: Option<PathBuf>,
}

impl TraceArgs {
    pub(crate) fn config(&self) -> TraceConfig {
        TraceConfig {
            links: self.trace_links.clone(),
            truth: self.trace_truth.clone(),
            ..TraceConfig::default()
        }
    }
}

/// Runs one command.
pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Keygen { out } => keygen(&out).map(|()| ExitCode::SUCCESS),
        Command::Authority { config } => {
            let config = AuthorityConfigFile::load(&config)?;
            let keypair = read_identity(&config.identity)?;
            runtime()?
                .block_on(async { run_authority(config, keypair, shutdown_signal()).await })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Node(args) => {
            let config = NodeConfig::load(
                args.config.as_deref(),
                NodeOverrides {
                    data_dir: args.data_dir,
                    authorities: args.authorities,
                    listen: args.listen,
                    bootstrap: args.bootstrap,
                    announce: args.announce,
                    role: args.role,
                    metrics: args.metrics,
                    family: args.family,
                    trace: args.trace.config(),
                },
            )?;
            runtime()?.block_on(async { run_node(config, shutdown_signal()).await })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Client { command } => client::run(command),
        Command::Consensus { command } => consensus::run(command),
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
