//! `p2pmix consensus show|verify`: read a consensus document, from a file or a peer, and check
//! it against the pinned authorities. `show --from` also asks the peer for the evidence of
//! equivocation it holds (double signatures an authority caught, conflicting documents a node
//! was offered) and prints it, each proof checked when `--authorities` is given.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use libp2p::Multiaddr;
use p2pmix::{
    config::Authorities,
    directory::{
        PinnedAuthorities, fetch_consensus, fetch_evidence, peer_id, verify_consensus,
        verify_equivocation,
    },
    proto::v1::{Consensus, Evidence, Role, SignedConsensus},
    runtime::unix_ms,
};
use prost::Message;

use super::runtime;

#[derive(Subcommand)]
pub(crate) enum ConsensusCommand {
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
        /// The pinned authorities file: the evidence of equivocation is checked against it.
        #[arg(long)]
        authorities: Option<PathBuf>,
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

/// Runs one `consensus` command.
pub(crate) fn run(command: ConsensusCommand) -> Result<ExitCode> {
    match command {
        ConsensusCommand::Show {
            file,
            from,
            epoch,
            authorities,
        } => {
            let pinned = authorities
                .map(|a| Authorities::load(&a).map(|a| a.pinned()))
                .transpose()?;
            let (signed, evidence) = match (file, from) {
                (Some(file), None) => (read_consensus(&file)?, None),
                (None, Some(addr)) => runtime()?.block_on(async {
                    let timeout = Duration::from_secs(15);
                    let signed = fetch_consensus(addr.clone(), epoch, timeout).await?;
                    // A peer too old to keep evidence refuses: nothing to show then.
                    let evidence = fetch_evidence(addr, None, timeout).await.ok();
                    anyhow::Ok((signed, evidence))
                })?,
                _ => bail!("give a FILE or --from MULTIADDR"),
            };
            show(&signed)?;
            if let Some(evidence) = evidence {
                show_evidence(&evidence, pinned.as_ref());
            }
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
    }
}

fn who(key: &[u8]) -> String {
    libp2p::identity::PublicKey::try_decode_protobuf(key)
        .map(|k| k.to_peer_id().to_string())
        .unwrap_or_else(|_| "(malformed key)".into())
}

fn short(digest: &[u8]) -> String {
    hex::encode(&digest[..digest.len().min(8)])
}

/// Prints what a peer knows of equivocation (the lines scripts look for start with
/// `equivocations` and `conflicts`).
fn show_evidence(evidence: &Evidence, pinned: Option<&PinnedAuthorities>) {
    println!("equivocations    {}", evidence.equivocations.len());
    for e in &evidence.equivocations {
        let (Some(a), Some(b)) = (&e.first, &e.second) else {
            println!("  (incomplete)");
            continue;
        };
        let checked = match pinned {
            Some(p) if verify_equivocation(e, p) => "proof verified",
            Some(_) => "PROOF DOES NOT VERIFY",
            None => "unverified: give --authorities",
        };
        println!(
            "  {} signed two documents for epoch {}: {} and {} ({checked})",
            who(&a.authority),
            a.epoch,
            short(&a.digest),
            short(&b.digest)
        );
    }
    println!("conflicts        {}", evidence.conflicts.len());
    for c in &evidence.conflicts {
        println!(
            "  epoch {}: held {} ({} signatures), refused {} ({} signatures)",
            c.epoch,
            short(&c.held_digest),
            c.held_signatures.len(),
            short(&c.refused_digest),
            c.refused_signatures.len()
        );
    }
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
        println!("  {}", who(&s.authority));
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
