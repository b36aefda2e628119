//! The `p2pmix` command line: keys, authorities, mix nodes, clients and consensus tools.

mod cli_client;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use libp2p::{Multiaddr, identity::Keypair};
use p2pmix::{
    authority_node::{run_authority, unix_ms},
    config::{Authorities, AuthorityConfigFile, NodeConfig, NodeOverrides, NodeRole},
    directory::{peer_id, verify_consensus},
    fetch::fetch_consensus,
    identity::{IDENTITY_FILE, read_identity, write_identity},
    node::run_node,
    proto::v1::{Consensus, Role, SignedConsensus},
};
use prost::Message;

#[derive(Parser)]
#[command(
    name = "p2pmix",
    version,
    about = "p2pmix: a peer-to-peer mixnet overlay on libp2p"
)]
struct Cli {
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
        command: cli_client::ClientCommand,
    },
    /// Inspect and check consensus documents.
    Consensus {
        #[command(subcommand)]
        command: ConsensusCommand,
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
    /// A peer to join the network through (repeatable), e.g. /ip4/192.0.2.7/tcp/4100/p2p/12D3…
    #[arg(long)]
    bootstrap: Vec<Multiaddr>,
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
}

#[derive(Subcommand)]
enum ConsensusCommand {
    /// Print a readable summary of a consensus from a file or fetched from a peer.
    Show {
        /// A file holding an encoded signed consensus.
        file: Option<PathBuf>,
        /// Fetch it from this peer instead (any authority or node that serves it).
        #[arg(long, conflicts_with = "file")]
        from: Option<Multiaddr>,
        /// Which epoch to fetch (default: the newest the peer holds).
        #[arg(long)]
        epoch: Option<u64>,
    },
    /// Verify a consensus against pinned authority keys: exit 0 if valid now, 1 with the reason.
    Verify {
        /// A file holding an encoded signed consensus.
        file: PathBuf,
        /// The pinned authorities file.
        #[arg(long)]
        authorities: PathBuf,
        /// Check at this time (milliseconds since the UNIX epoch) instead of now.
        #[arg(long)]
        now_ms: Option<u64>,
        /// Require this epoch.
        #[arg(long)]
        epoch: Option<u64>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
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
                    role: args.role,
                    metrics: args.metrics,
                    family: args.family,
                },
            )?;
            runtime()?.block_on(async { run_node(config, shutdown_signal()).await })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Client { command } => cli_client::run(command),
        Command::Consensus { command } => match command {
            ConsensusCommand::Show { file, from, epoch } => {
                let signed = match (file, from) {
                    (Some(file), None) => read_consensus(&file)?,
                    (None, Some(addr)) => runtime()?.block_on(fetch_consensus(
                        addr,
                        epoch,
                        Duration::from_secs(15),
                    ))?,
                    _ => bail!("give a FILE or --from MULTIADDR"),
                };
                show(&signed)?;
                Ok(ExitCode::SUCCESS)
            }
            ConsensusCommand::Verify {
                file,
                authorities,
                now_ms,
                epoch,
            } => {
                let pinned = Authorities::load(&authorities)?.pinned();
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                match verify_consensus(&bytes, &pinned, now_ms.unwrap_or_else(unix_ms), epoch) {
                    Ok(v) => {
                        println!(
                            "valid: epoch {}, {} nodes, {} of {} authorities signed",
                            v.epoch(),
                            v.nodes().len(),
                            v.signers().count(),
                            pinned.len()
                        );
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => {
                        println!("invalid: {e}");
                        Ok(ExitCode::from(1))
                    }
                }
            }
        },
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
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

fn read_consensus(path: &Path) -> Result<SignedConsensus> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    SignedConsensus::decode(&bytes[..])
        .with_context(|| format!("{}: not a signed consensus", path.display()))
}

fn show(signed: &SignedConsensus) -> Result<()> {
    let c =
        Consensus::decode(&signed.consensus[..]).context("the document inside does not decode")?;
    let now = unix_ms() as i128;
    let rel = |t: u64| {
        let secs = (t as i128 - now) as f64 / 1000.0;
        if secs >= 0.0 {
            format!("in {secs:.1} s")
        } else {
            format!("{:.1} s ago", -secs)
        }
    };
    println!("epoch            {}", c.epoch);
    println!(
        "valid after      {} ({})",
        c.valid_after_ms,
        rel(c.valid_after_ms)
    );
    println!(
        "fresh until      {} ({})",
        c.fresh_until_ms,
        rel(c.fresh_until_ms)
    );
    println!(
        "valid until      {} ({})",
        c.valid_until_ms,
        rel(c.valid_until_ms)
    );
    println!(
        "digest           {}",
        hex::encode(p2pmix::directory::consensus_digest(&signed.consensus))
    );
    let p = c.parameters.unwrap_or_default();
    let gateways = c.nodes.iter().filter(|n| n.role() == Role::Gateway).count();
    println!("nodes            {} ({} gateways)", c.nodes.len(), gateways);
    // The document may come unverified from any peer: bound the loop.
    for layer in 1..=p.layers.min(64) {
        let n = c
            .nodes
            .iter()
            .filter(|n| n.role() == Role::Mix && n.layer == layer)
            .count();
        println!("  layer {layer}        {n} mixes");
    }
    println!(
        "parameters       mean delay {} us (max {} us), client send every {} us, loop every {} us, drop every {} us, mix loop every {} us, {} layers, min protocol {}, geometry {:#x}",
        p.mean_delay_us,
        p.max_delay_us,
        p.client_send_interval_us,
        p.client_loop_interval_us,
        p.client_drop_interval_us,
        p.mix_loop_interval_us,
        p.layers,
        p.min_protocol_version,
        p.geometry_id
    );
    println!("shared random    {}", hex::encode(&c.shared_random));
    println!("signers          {}", signed.signatures.len());
    for s in &signed.signatures {
        let who = libp2p::identity::PublicKey::try_decode_protobuf(&s.authority)
            .map(|k| k.to_peer_id().to_string())
            .unwrap_or_else(|_| "(malformed key)".into());
        println!("  {who}");
    }
    for node in &c.nodes {
        let id = peer_id(node)
            .map(|p| p.to_string())
            .unwrap_or_else(|| "(malformed)".into());
        println!(
            "  node {:>5} {:?} layer {} {} {}",
            node.node_id,
            node.role(),
            node.layer,
            id,
            node.addresses.join(",")
        );
    }
    Ok(())
}
