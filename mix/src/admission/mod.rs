//! Admission of neighbours' frames, before any crypto: a token bucket per peer and per source
//! address, a decaying count of each peer's faults, and bans for peers that keep sending invalid
//! frames.
//!
//! Sans-IO like the rest of the core: time is passed in, a peer is any `P: Eq + Hash + Clone`,
//! and what is known of a frame's sender ([`Origin`]: whether it is a consensus node, and the IP
//! address of its connection) is told by the caller. The rules:
//! - nodes carry many clients' traffic and get their own, higher rate ([`AdmissionConfig`]);
//! - identities are free and addresses are not: all clients behind one IP address share one
//!   bucket, all behind one prefix (IPv4 /24, IPv6 /48) another, and an address (a prefix) may
//!   hold records for only so many identities at once; nodes, admitted by the authorities, are
//!   exempt;
//! - only [`DropReason::is_peer_fault`] reasons (framing, rate) count against a peer, a bad MAC
//!   against nobody (see there: an honest packet for a retired key fails the MAC too); faults
//!   halve every [`AdmissionConfig::fault_half_life`];
//! - a peer with more than `max_faults` faults is refused for `ban`, then starts afresh;
//! - at most [`MAX_TRACKED_PEERS`] records and bans are held, whatever the peers do: idle
//!   records go first, then the least recently seen.

mod address;
mod bucket;
mod connections;
mod fair;

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    time::{Duration, Instant},
};

use self::{
    address::{AddressLimits, AddressRefusal, AddressRules},
    bucket::FaultScore,
};
pub use self::{
    address::{MAX_TRACKED_ADDRESSES, Prefix, canonical_ip},
    bucket::{Rate, TokenBucket},
    connections::{
        ConnectionCounts, ConnectionRefusal, MAX_PENDING_PER_ADDRESS, MAX_PENDING_PER_PREFIX,
    },
    fair::{FairQueue, FairRefusal},
};
use crate::relay::DropReason;

/// Peers whose rate and record (and bans) are tracked at most.
pub const MAX_TRACKED_PEERS: usize = 65_536;
/// A record unused this long (with its bucket full and its faults gone) is idle.
const IDLE: Duration = Duration::from_secs(60);

/// The limits an [`Admission`] applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionConfig {
    /// What a client (a peer that is not a node of any held consensus) may send.
    pub client: Rate,
    /// What another node may send.
    pub node: Rate,
    /// Faults after which a peer is cut off.
    pub max_faults: u32,
    /// How long a cut-off peer is refused.
    pub ban: Duration,
    /// Faults held against a peer halve this often.
    pub fault_half_life: Duration,
    /// How many clients' worth one IP address may send, and how many identities it may hold.
    pub per_address: AddressShare,
    /// The same for one prefix (IPv4 /24, IPv6 /48).
    pub per_prefix: AddressShare,
}

/// What one address (or prefix) may do, in clients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddressShare {
    /// Its clients together may send this many times a client's rate (and burst).
    pub clients_rate: f64,
    /// Identities it may hold records for at once.
    pub identities: usize,
    /// Inbound connections it may hold at once ([`ConnectionCounts`]).
    pub connections: usize,
}

impl AdmissionConfig {
    fn address_rules(&self) -> (AddressRules, AddressRules) {
        let rules = |share: AddressShare| AddressRules {
            rate: self.client.times(share.clients_rate),
            identities: share.identities,
        };
        (rules(self.per_address), rules(self.per_prefix))
    }
}

/// What is known of a frame's sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// It is a node of a held consensus.
    pub node: bool,
    /// The IP address of its connection, if it has one.
    pub address: Option<IpAddr>,
}

/// What [`Admission::admit`] decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the frame on (to the Sphinx workers).
    Admit,
    /// Drop the frame and count it for `reason`; `fault` is what the refusal did to the peer's
    /// record. A banned peer's frames are refused as [`DropReason::RateLimited`], not counted,
    /// and so are frames refused for the sender's address rather than its own rate.
    Refuse {
        /// Why the frame is dropped.
        reason: DropReason,
        /// What it did to the sender's record.
        fault: Fault,
    },
}

/// What one fault did to a peer's record, so that the caller can cut a banned peer off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Not held against the peer: not a peer fault, a bad MAC from a node, or a peer without a
    /// record.
    NotCounted,
    /// Held against the peer, which now has `faults` (after decay, rounded).
    Counted {
        /// The peer's faults so far.
        faults: u32,
    },
    /// The peer went over the limit: it is refused until `until` (its record is dropped).
    Banned {
        /// When the ban ends.
        until: Instant,
    },
}

/// What is known of one tracked peer.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PeerRecord {
    bucket: TokenBucket,
    faults: FaultScore,
    last_seen: Instant,
    /// The address whose identity count includes this record.
    address: Option<IpAddr>,
}

/// Per-peer and per-address rate limits, fault counts and bans. See the module documentation.
#[derive(Debug, Clone)]
pub struct Admission<P> {
    config: AdmissionConfig,
    records: HashMap<P, PeerRecord>,
    banned: HashMap<P, Instant>,
    addresses: AddressLimits,
}

impl<P: Eq + Hash + Clone> Admission<P> {
    /// No peer tracked, none banned.
    pub fn new(config: AdmissionConfig) -> Self {
        let (per_address, per_prefix) = config.address_rules();
        Admission {
            config,
            records: HashMap::new(),
            banned: HashMap::new(),
            addresses: AddressLimits::new(per_address, per_prefix),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// Decides whether a frame from `peer` at `now` goes on; counts a rate-limit fault.
    pub fn admit(&mut self, now: Instant, peer: &P, origin: Origin) -> Verdict {
        if self.is_banned(now, peer) {
            return refuse(Fault::NotCounted);
        }
        let client_address = if origin.node { None } else { origin.address };
        if !self.records.contains_key(peer) {
            if let Some(ip) = client_address
                && self.addresses.add_identity(now, ip).is_err()
            {
                // The address holds as many identities as it may: one more is no new sender.
                return refuse(Fault::NotCounted);
            }
            self.make_room(now);
            let rate = if origin.node {
                self.config.node
            } else {
                self.config.client
            };
            self.records.insert(
                peer.clone(),
                PeerRecord {
                    bucket: TokenBucket::of(rate),
                    faults: FaultScore::ZERO,
                    last_seen: now,
                    address: client_address,
                },
            );
        }
        let Some(record) = self.records.get_mut(peer) else {
            return refuse(Fault::NotCounted);
        };
        record.last_seen = now;
        if !record.bucket.try_take(now) {
            let fault = self.fault(now, peer, DropReason::RateLimited);
            return refuse(fault);
        }
        if let Some(ip) = client_address
            && let Err(AddressRefusal::Rate | AddressRefusal::Identities) =
                self.addresses.take(now, ip)
        {
            // The address (or its prefix) is over its rate: not this peer's fault alone.
            if let Some(r) = self.records.get_mut(peer) {
                r.bucket.give_back();
            }
            return refuse(Fault::NotCounted);
        }
        Verdict::Admit
    }

    /// Holds a drop for `reason` of a frame from `peer` against it, if the rules say so (the
    /// same for nodes and clients).
    pub fn fault(&mut self, now: Instant, peer: &P, reason: DropReason) -> Fault {
        if !reason.is_peer_fault() {
            return Fault::NotCounted;
        }
        let half_life = self.config.fault_half_life;
        let Some(record) = self.records.get_mut(peer) else {
            return Fault::NotCounted;
        };
        let faults = record.faults.add(now, half_life);
        if faults <= f64::from(self.config.max_faults) {
            return Fault::Counted {
                faults: faults.round() as u32,
            };
        }
        self.forget(peer);
        let until = now + self.config.ban;
        if self.banned.len() >= MAX_TRACKED_PEERS {
            self.banned.retain(|_, u| *u > now);
            if self.banned.len() >= MAX_TRACKED_PEERS {
                // Keep the longest bans; the shortest would end soonest anyway.
                let mut ends: Vec<Instant> = self.banned.values().copied().collect();
                let cut = ends.len() / 16;
                ends.select_nth_unstable(cut);
                let threshold = ends[cut];
                self.banned.retain(|_, u| *u > threshold);
            }
        }
        self.banned.insert(peer.clone(), until);
        Fault::Banned { until }
    }

    /// Whether `peer` is refused at `now` (frames and connections); forgets a ban that is over.
    pub fn is_banned(&mut self, now: Instant, peer: &P) -> bool {
        match self.banned.get(peer) {
            Some(until) if *until > now => true,
            Some(_) => {
                self.banned.remove(peer);
                false
            }
            None => false,
        }
    }

    /// Changes what each client may send (from the consensus's sending rates): clients' records
    /// are dropped, so the new rate applies from their next frame on; nodes keep theirs. The
    /// address limits follow.
    pub fn set_client_rate(&mut self, rate: Rate, is_node: impl Fn(&P) -> bool) {
        if rate != self.config.client {
            self.config.client = rate;
            let clients: Vec<P> = self
                .records
                .keys()
                .filter(|p| !is_node(p))
                .cloned()
                .collect();
            for peer in clients {
                self.forget(&peer);
            }
            let (per_address, per_prefix) = self.config.address_rules();
            self.addresses.set_rules(per_address, per_prefix);
        }
    }

    /// Peers with a record (rate and faults).
    pub fn tracked(&self) -> usize {
        self.records.len()
    }

    /// Peers banned now or recently.
    pub fn bans(&self) -> usize {
        self.banned.len()
    }

    /// The faults held against `peer` at `now`, if it has a record.
    pub fn faults(&self, now: Instant, peer: &P) -> Option<f64> {
        self.records
            .get(peer)
            .map(|r| r.faults.at(now, self.config.fault_half_life))
    }

    /// Drops `peer`'s record.
    fn forget(&mut self, peer: &P) {
        if let Some(record) = self.records.remove(peer)
            && let Some(ip) = record.address
        {
            self.addresses.remove_identity(ip);
        }
    }

    /// Keeps the records under [`MAX_TRACKED_PEERS`] before one more is added: idle ones go
    /// first, then the sixteenth least recently seen (a hard bound, whatever the records hold).
    fn make_room(&mut self, now: Instant) {
        if self.records.len() < MAX_TRACKED_PEERS {
            return;
        }
        let half_life = self.config.fault_half_life;
        let idle: Vec<P> = self
            .records
            .iter()
            .filter(|(_, r)| {
                now.saturating_duration_since(r.last_seen) >= IDLE
                    && r.bucket.is_full(now)
                    && r.faults.at(now, half_life) < 1.0
            })
            .map(|(p, _)| p.clone())
            .collect();
        for peer in idle {
            self.forget(&peer);
        }
        if self.records.len() < MAX_TRACKED_PEERS {
            return;
        }
        let mut seen: Vec<Instant> = self.records.values().map(|r| r.last_seen).collect();
        let cut = seen.len() / 16;
        seen.select_nth_unstable(cut);
        let threshold = seen[cut];
        let oldest: Vec<P> = self
            .records
            .iter()
            .filter(|(_, r)| r.last_seen <= threshold)
            .map(|(p, _)| p.clone())
            .collect();
        for peer in oldest {
            self.forget(&peer);
        }
    }
}

fn refuse(fault: Fault) -> Verdict {
    Verdict::Refuse {
        reason: DropReason::RateLimited,
        fault,
    }
}

#[cfg(test)]
mod tests;
