//! `p2pmix consensus show|verify`: read a consensus document, from a file or a peer, and check
//! it against the pinned authorities (what `show` prints: `consensus_view`). `show --from` also asks the peer for the evidence of
//! equivocation it holds (double signatures an authority caught, conflicting documents a node
//! was offered) and prints it, each proof checked when `--authorities` is given.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use libp2p_core::Multiaddr;
use p2pmix::{
    config::Authorities,
    directory::{
        PinnedAuthorities, fetch_consensus, fetch_evidence, verify_consensus, verify_equivocation,
    },
    proto::v1::{Evidence, SignedConsensus},
    runtime::unix_ms,
};
use prost::Message;

use super::{consensus_view, consensus_view::who, runtime};

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
        /// Print one JSON object instead (nodes with their health, the nodes left out for
        /// health, the evidence counts when fetched): for scripts.
        #[arg(long)]
        json: bool,
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
            json,
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
            if json {
                let mut v = consensus_view::json(&signed)?;
                if let Some(e) = &evidence {
                    v["equivocations"] = e.equivocations.len().into();
                    v["conflicts"] = e.conflicts.len().into();
                }
                println!("{v}");
            } else {
                print!("{}", consensus_view::text(&signed, unix_ms())?);
                if let Some(evidence) = evidence {
                    show_evidence(&evidence, pinned.as_ref());
                }
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
