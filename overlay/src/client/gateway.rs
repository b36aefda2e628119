//! Choosing a gateway when none is configured: uniformly among the gateways of a verified
//! consensus (Nym's clients default to the same), and remembered in the data directory,
//! because a client's address names its gateway: a client that chose again at every start
//! would change its address.
//!
//! [`choose_gateway`] is the rule (no I/O); [`gateway_for`] reads the remembered choice or
//! fetches the newest consensus from the authorities, verifies it against the pinned keys,
//! chooses and remembers.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use libp2p_core::Multiaddr;
use libp2p_core::multiaddr::Protocol;
use libp2p_identity::PeerId;
use p2pmix_bootstrap::{
    VerifiedConsensus, VerifyError, address::check_address, peer_id, verify_signed_consensus,
};
use p2pmix_proto::v1::SignedConsensus;
use rand::{CryptoRng, RngExt, seq::SliceRandom};
use thiserror::Error;
use tracing::{debug, info};

use crate::{
    client::route::Topology,
    config::Authorities,
    directory::fetch::fetch_consensus,
    runtime::{
        files::{FileError, write_atomic},
        unix_ms,
    },
};

/// The file in a client's data directory that holds its gateway (one multiaddr ending in
/// `/p2p/PEER_ID`), as `p2pmix client --gateway` writes it too.
pub const GATEWAY_FILE: &str = "gateway";

/// How long one authority may take to answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A gateway to use: who and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChosenGateway {
    /// Its peer id.
    pub peer: PeerId,
    /// Its addresses, each ending in `/p2p/PEER_ID`.
    pub addresses: Vec<Multiaddr>,
}

/// Why no gateway could be had.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The remembered gateway file is not one multiaddr ending in `/p2p/PEER_ID`.
    #[error(
        "{path}: not a gateway address (one multiaddr ending in /p2p/PEER_ID); remove it to choose again"
    )]
    Remembered {
        /// The file.
        path: PathBuf,
    },
    /// The choice could not be written.
    #[error(transparent)]
    File(#[from] FileError),
    /// No authority gave a consensus that verifies.
    #[error("no authority gave a valid consensus ({0})")]
    NoConsensus(String),
    /// The consensus has no gateway with a usable address.
    #[error("the consensus of epoch {0} has no gateway with a usable address")]
    NoGateway(u64),
}

/// `address` with `/p2p/peer` at its end (unless it has it already).
fn with_peer(mut address: Multiaddr, peer: PeerId) -> Multiaddr {
    if !matches!(address.iter().last(), Some(Protocol::P2p(_))) {
        address.push(Protocol::P2p(peer));
    }
    address
}

/// One gateway of `consensus`, uniformly among those a client can use: in the consensus's
/// topology (a valid Sphinx key and node id), with an address that passes the rules nodes apply
/// to dialled addresses (no `/p2p/` of another peer; loopback and private addresses only on a
/// test network), so that even a consensus signed by a faulty majority cannot make a client
/// remember a gateway it cannot use; `None` if there is none.
pub fn choose_gateway<R: CryptoRng + ?Sized>(
    consensus: &VerifiedConsensus,
    rng: &mut R,
) -> Option<ChosenGateway> {
    let topology = Topology::from_consensus(consensus);
    let test_network = consensus.parameters().test_network;
    let usable: Vec<ChosenGateway> = consensus
        .gateways()
        .filter_map(|node| {
            let peer = peer_id(node)?;
            topology.gateway(&peer)?;
            let addresses: Vec<Multiaddr> = node
                .addresses
                .iter()
                .filter_map(|a| check_address(a, Some(&peer), test_network).ok())
                .map(|a| with_peer(a, peer))
                .collect();
            (!addresses.is_empty()).then_some(ChosenGateway { peer, addresses })
        })
        .collect();
    if usable.is_empty() {
        return None;
    }
    let i = rng.random_range(0..usable.len());
    usable.into_iter().nth(i)
}

/// The gateway remembered in `data_dir`, if one is.
pub fn remembered_gateway(data_dir: &Path) -> Result<Option<ChosenGateway>, GatewayError> {
    let path = data_dir.join(GATEWAY_FILE);
    let refused = || GatewayError::Remembered { path: path.clone() };
    // Only a missing file means "none yet": any other failure must not lead to choosing again
    // (that would change the client's address).
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Err(refused()),
    };
    let address: Multiaddr = text.trim().parse().map_err(|_| refused())?;
    match address.iter().last() {
        Some(Protocol::P2p(peer)) => Ok(Some(ChosenGateway {
            peer,
            addresses: vec![address],
        })),
        _ => Err(refused()),
    }
}

/// Remembers `address` (ending in `/p2p/PEER_ID`) as the gateway in `data_dir`.
pub fn remember_gateway(data_dir: &Path, address: &Multiaddr) -> Result<(), GatewayError> {
    write_atomic(
        &data_dir.join(GATEWAY_FILE),
        format!("{address}\n").as_bytes(),
    )?;
    Ok(())
}

/// A consensus in force now, from the first authority (asked in random order) whose answer
/// verifies against the pinned keys: the current epoch's, or else the newest it has (the next
/// epoch's is published before that epoch starts and is verified as of its start).
pub async fn fetch_verified_consensus(
    authorities: &Authorities,
) -> Result<VerifiedConsensus, GatewayError> {
    let pinned = authorities.pinned();
    let mut addresses: Vec<Multiaddr> = authorities
        .entries
        .iter()
        .flat_map(|e| e.addresses.iter().map(|a| with_peer(a.clone(), e.peer_id)))
        .collect();
    addresses.shuffle(&mut rand::rng());
    let now = unix_ms();
    let current = authorities.schedule.map(|s| s.epoch_at(now));
    let next_start = authorities
        .schedule
        .map(|s| s.start_of(s.epoch_at(now).saturating_add(1)));
    let verify =
        |signed: SignedConsensus| match verify_signed_consensus(signed.clone(), &pinned, now, None)
        {
            Err(VerifyError::NotYetValid { valid_after_ms, .. })
                if next_start.is_some_and(|n| valid_after_ms <= n) =>
            {
                verify_signed_consensus(signed, &pinned, valid_after_ms, None)
            }
            other => other,
        };
    let mut last = String::from("no authority has an address");
    for address in addresses {
        for epoch in [current, None] {
            match fetch_consensus(address.clone(), epoch, FETCH_TIMEOUT).await {
                Ok(signed) => match verify(signed) {
                    Ok(consensus) => return Ok(consensus),
                    Err(e) => last = format!("{address}: {e}"),
                },
                Err(e) => last = format!("{address}: {e}"),
            }
            debug!(%last, ?epoch, "no consensus from this authority");
            if current.is_none() {
                break;
            }
        }
    }
    Err(GatewayError::NoConsensus(last))
}

/// The gateway remembered in `data_dir`, or one chosen now ([`choose_gateway`] over the
/// newest verified consensus) and remembered there. The flag says whether it was chosen now.
pub async fn gateway_for(
    data_dir: &Path,
    authorities: &Authorities,
) -> Result<(ChosenGateway, bool), GatewayError> {
    if let Some(gateway) = remembered_gateway(data_dir)? {
        return Ok((gateway, false));
    }
    let consensus = fetch_verified_consensus(authorities).await?;
    let gateway = choose_gateway(&consensus, &mut rand::rng())
        .ok_or(GatewayError::NoGateway(consensus.epoch()))?;
    std::fs::create_dir_all(data_dir).map_err(FileError::on(data_dir))?;
    if let Some(address) = gateway.addresses.first() {
        remember_gateway(data_dir, address)?;
    }
    info!(gateway = %gateway.peer, epoch = consensus.epoch(), "chose a gateway");
    Ok((gateway, true))
}
