//! Reading a run directory: every process's trace files (`links.trace`, `truth.trace` in its own
//! folder, as `testnet/run.sh --clients N` writes them) and the consensus the network ran on.

use std::{
    collections::HashMap,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use libp2p::PeerId;
use p2pmix::sphinx::trace::{Direction, Line, TraceKind, Truth, format::parse_line};
use p2pmix::{
    config::Authorities,
    directory::{VerifiedConsensus, peer_id, verify_consensus},
    proto::v1::Role as WireRole,
};

use super::model::{Hop, LinkEvent, PeerIx};

/// The link view's file in each process's folder.
pub const LINKS_FILE: &str = "links.trace";
/// The ground truth's file in each process's folder.
pub const TRUTH_FILE: &str = "truth.trace";

/// Every trace of a run, with peers numbered.
#[derive(Debug, Default)]
pub struct Traces {
    /// Peer number to peer.
    pub peers: Vec<PeerId>,
    index: HashMap<PeerId, PeerIx>,
    /// Every link record.
    pub events: Vec<LinkEvent>,
    /// Every ground-truth record, with its recorder.
    pub truth: Vec<(PeerIx, Truth)>,
    /// What is wrong with the traces (unfinished, dropped or capped records, bad lines).
    pub problems: Vec<String>,
    /// Files read.
    pub files: usize,
}

impl Traces {
    /// The number of `peer`, given one if new.
    pub fn index_of(&mut self, peer: PeerId) -> PeerIx {
        *self.index.entry(peer).or_insert_with(|| {
            self.peers.push(peer);
            self.peers.len() - 1
        })
    }

    /// The number of `peer`, if it appears anywhere.
    pub fn find(&self, peer: &PeerId) -> Option<PeerIx> {
        self.index.get(peer).copied()
    }

    /// Reads the trace files in every folder of `dir` (and in `dir` itself), a link to a folder
    /// counting as one.
    pub fn read_dir(dir: &Path) -> Result<Self> {
        let mut folders = vec![dir.to_path_buf()];
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            // Through links too: in a netns run, DIR/gw0 and the rest link to genconfig's
            // directories.
            if entry.path().is_dir() {
                folders.push(entry.path());
            }
        }
        folders.sort();
        let mut traces = Traces::default();
        for folder in folders {
            for name in [LINKS_FILE, TRUTH_FILE] {
                let path = folder.join(name);
                if path.is_file() {
                    traces.read_file(&path)?;
                }
            }
        }
        if traces.files == 0 {
            bail!(
                "no {LINKS_FILE} or {TRUTH_FILE} in {} or its folders (run testnet/run.sh --clients N)",
                dir.display()
            );
        }
        Ok(traces)
    }

    /// Reads one trace file.
    pub fn read_file(&mut self, path: &Path) -> Result<()> {
        let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut lines = BufReader::new(file).lines();
        let header = lines
            .next()
            .transpose()?
            .with_context(|| format!("{} is empty", path.display()))?;
        let (kind, local) = match parse_line(&header) {
            Ok(Line::Header { kind, local }) => (kind, local),
            _ => bail!("{} does not start with a trace header", path.display()),
        };
        self.files += 1;
        let me = self.index_of(local);
        let mut peers: HashMap<u32, PeerIx> = HashMap::new();
        let mut ended = false;
        let mut bad = 0u64;
        let problem = |what: String| format!("{}: {what}", path.display());
        for line in lines {
            let line = line?;
            match parse_line(&line) {
                Ok(Line::Peer { index, peer }) => {
                    let ix = self.index_of(peer);
                    peers.insert(index, ix);
                }
                Ok(Line::Link {
                    direction,
                    at_us,
                    peer,
                    tag,
                }) if kind == TraceKind::Links => match peers.get(&peer) {
                    Some(&p) => self.events.push(LinkEvent {
                        at_us,
                        hop: match direction {
                            Direction::In => Hop::Arrive,
                            Direction::Out => Hop::Depart,
                        },
                        node: me,
                        peer: p,
                        tag: tag.0,
                    }),
                    None => bad += 1,
                },
                Ok(Line::Truth(t)) if kind == TraceKind::Truth => self.truth.push((me, t)),
                Ok(Line::End {
                    dropped, capped, ..
                }) => {
                    ended = true;
                    if dropped > 0 || capped > 0 {
                        self.problems.push(problem(format!(
                            "{dropped} records dropped (writer behind), {capped} capped"
                        )));
                    }
                }
                // A killed process leaves a cut last line.
                _ => bad += 1,
            }
        }
        if !ended {
            self.problems
                .push(problem("not closed (the process was killed?)".into()));
        }
        if bad > 0 {
            self.problems
                .push(problem(format!("{bad} lines unreadable or out of place")));
        }
        Ok(())
    }
}

/// The newest verified consensus in the data folders of `dir`, checked against
/// `dir/authorities.toml`.
pub fn consensus(dir: &Path) -> Result<VerifiedConsensus> {
    let authorities = Authorities::load(&dir.join("authorities.toml"))
        .with_context(|| format!("{} is not a testnet run directory", dir.display()))?;
    let pinned = authorities.pinned();
    let mut newest: Option<(u64, PathBuf)> = None;
    for entry in fs::read_dir(dir)? {
        let data = entry?.path().join("data");
        let Ok(files) = fs::read_dir(&data) else {
            continue;
        };
        for file in files {
            let path = file?.path();
            let epoch = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("consensus-"))
                .and_then(|n| n.strip_suffix(".pb"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(epoch) = epoch
                && newest.as_ref().is_none_or(|(e, _)| epoch > *e)
            {
                newest = Some((epoch, path));
            }
        }
    }
    let (epoch, path) =
        newest.with_context(|| format!("no consensus-*.pb under {}", dir.display()))?;
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    // Verify at the document's own start: it was valid then.
    let signed: p2pmix::proto::v1::SignedConsensus =
        prost::Message::decode(&bytes[..]).context("not a signed consensus")?;
    let inner: p2pmix::proto::v1::Consensus =
        prost::Message::decode(&signed.consensus[..]).context("not a consensus")?;
    verify_consensus(&bytes, &pinned, inner.valid_after_ms, Some(epoch))
        .with_context(|| format!("{} does not verify", path.display()))
}

/// Each node of `consensus` with its role: `(peer, None)` for gateways, `(peer, Some(layer))`
/// for mixes.
pub fn nodes(consensus: &VerifiedConsensus) -> Vec<(PeerId, Option<u32>)> {
    consensus
        .nodes()
        .iter()
        .filter_map(|n| {
            let peer = peer_id(n)?;
            Some(match n.role() {
                WireRole::Gateway => (peer, None),
                _ => (peer, Some(n.layer)),
            })
        })
        .collect()
}
