//! The sans-IO mix core: what a node does with a packet, with no sockets and no clock.
//!
//! Two halves, so that Sphinx work runs off the swarm's event loop:
//! - [`Relay::process`] (`&self`, thread-safe): unwrap with the epoch key ring, check the next hop
//!   against the packet's epoch topology and the delay against the consensus cap, and say what to
//!   do: forward after a delay, or deliver. Worker threads call it.
//! - [`DelayQueue`] (owned by the event loop): holds decided packets until their release time,
//!   bounded in packets and bytes; [`DelayQueue::poll_timeout`] and [`DelayQueue::poll_transmit`]
//!   drive it with the time passed in.
//!
//! Which neighbour may send at all, and how fast, is decided before any of this, by
//! [`crate::Admission`].

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet},
    hash::Hash,
    sync::{
        RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::sphinx::{
    error::UnwrapError,
    geometry::Geometry,
    keyring::KeyRing,
    peel::{Processed, unwrap_batch},
    routing::{Destination, NodeId},
};

/// Why a node dropped a packet. Every drop is counted by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// The frame is not the geometry's packet size.
    WrongSize,
    /// The header MAC failed, or the element was invalid: tampered or forged.
    BadMac,
    /// Seen before under this epoch key.
    Replay,
    /// The key's replay filter could record no more tags (memory budget spent, or its journal
    /// behind): refused rather than relayed without replay protection.
    ReplayFilterFull,
    /// No live key opens the packet and the node holds no key for the current epoch (see
    /// [`UnwrapError::UnknownKey`]).
    UnknownKey,
    /// The header's format version is not this node's.
    UnknownVersion,
    /// The authenticated routing slot does not decode.
    BadRouting,
    /// The next hop is not in the packet's epoch topology.
    UnknownNextHop,
    /// The sender asked for a delay above the consensus cap.
    DelayTooLong,
    /// The delay queue is full (packets or bytes).
    QueueFull,
    /// The neighbour sent faster than its rate allows.
    RateLimited,
    /// A packet for a client ended here but did not come from a last-layer mix (one-hop
    /// packets straight to a gateway would fill its mailboxes without crossing the mixnet).
    FinalFromNonMix,
}

impl DropReason {
    /// Every reason, for exporting counters.
    pub const ALL: [DropReason; 12] = [
        DropReason::WrongSize,
        DropReason::BadMac,
        DropReason::Replay,
        DropReason::ReplayFilterFull,
        DropReason::UnknownKey,
        DropReason::UnknownVersion,
        DropReason::BadRouting,
        DropReason::UnknownNextHop,
        DropReason::DelayTooLong,
        DropReason::QueueFull,
        DropReason::RateLimited,
        DropReason::FinalFromNonMix,
    ];

    /// This reason's position in [`DropReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::WrongSize => "wrong_size",
            DropReason::BadMac => "bad_mac",
            DropReason::Replay => "replay",
            DropReason::ReplayFilterFull => "replay_filter_full",
            DropReason::UnknownKey => "unknown_key",
            DropReason::UnknownVersion => "unknown_version",
            DropReason::BadRouting => "bad_routing",
            DropReason::UnknownNextHop => "unknown_next_hop",
            DropReason::DelayTooLong => "delay_too_long",
            DropReason::QueueFull => "queue_full",
            DropReason::RateLimited => "rate_limited",
            DropReason::FinalFromNonMix => "final_from_non_mix",
        }
    }

    /// Whether a neighbour that keeps causing this drop is misbehaving (rather than unlucky):
    /// nodes cut off peers that send many of these. Only framing (a frame not of packet size)
    /// and sending past the rate are.
    ///
    /// A bad MAC is not, from anyone. From a node it may be a client's doing further up the
    /// route (a packet valid for one hop can be broken for the next). From a client it may be
    /// honest: the header names no epoch key, so a packet built for a key the node has retired
    /// (an acknowledgement SURB that waited in a mailbox past its key's life, a client on an
    /// expired consensus) fails the MAC just as a forgery does, and counting it got honest
    /// recipients banned by their own gateway. What bounds forgeries is the per-peer and
    /// per-address rate (a ban per identity never did: identities are free).
    ///
    /// An unknown key is not: it is what every honest client sends to a node that restarted and
    /// retired the key of the epoch under way (the rate limit bounds a flood). Nor is an unknown
    /// version: a peer on another format is not attacking, and refusing it costs one byte
    /// comparison.
    /// A replay is not either: an honest sender's fresh packet is taken for one at the filter's
    /// false-positive rate, and a replayed packet costs the node no more than a fresh one (the
    /// rate limit bounds both); a full filter is the node's state, not the sender's doing.
    /// Nor is a delivery from a non-last-layer peer: a mix listed in a consensus the gateway
    /// has not installed yet sends those honestly (the drop is counted, the unwrap was paid).
    pub fn is_peer_fault(self) -> bool {
        matches!(self, DropReason::WrongSize | DropReason::RateLimited)
    }
}

impl From<UnwrapError> for DropReason {
    fn from(e: UnwrapError) -> Self {
        match e {
            UnwrapError::WrongSize { .. } => DropReason::WrongSize,
            UnwrapError::UnknownKey => DropReason::UnknownKey,
            UnwrapError::UnknownVersion(_) => DropReason::UnknownVersion,
            UnwrapError::InvalidElement | UnwrapError::Mac => DropReason::BadMac,
            UnwrapError::Replay => DropReason::Replay,
            UnwrapError::ReplayFilterFull => DropReason::ReplayFilterFull,
            UnwrapError::Routing => DropReason::BadRouting,
        }
    }
}

/// What a node decided for one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<P> {
    /// Send `packet` to `to` once `release` has come.
    Forward {
        /// The next hop's peer.
        to: P,
        /// The packet rewritten for the next hop.
        packet: Vec<u8>,
        /// When to send it.
        release: Instant,
        /// When its frame arrived.
        arrived: Instant,
    },
    /// This node is the final hop: deliver the body (everything after the header) once `release`
    /// has come, or drop it silently for cover traffic.
    Final {
        /// Deliver to a client, or drop.
        destination: Destination,
        /// The packet buffer; its body is at `geometry.header_size()..`.
        packet: Vec<u8>,
        /// When to deliver it.
        release: Instant,
        /// When its frame arrived.
        arrived: Instant,
    },
}

/// Limits of one relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// Longest per-hop delay accepted (the consensus's `max_delay_us`).
    pub max_delay: Duration,
}

/// The thread-safe half of the mix core: keys, topology, decisions.
#[derive(Debug)]
pub struct Relay<P> {
    geometry: Geometry,
    /// The delay cap in microseconds (changes with the consensus).
    max_delay_us: AtomicU64,
    keys: RwLock<KeyRing>,
    /// Per epoch: compact node id -> peer.
    topologies: RwLock<HashMap<u64, HashMap<NodeId, P>>>,
    /// Every peer of the held topologies, so that [`Relay::is_node`] (asked for every frame) is
    /// one hash lookup.
    nodes: RwLock<HashSet<P>>,
}

impl<P: Clone + Eq + Hash> Relay<P> {
    /// Whether `peer` is a node of any held topology (rather than a client).
    pub fn is_node(&self, peer: &P) -> bool {
        self.nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(peer)
    }

    /// Every node of the held topologies (a copy: for what changes once an epoch, such as who
    /// is exempt from a connection cap).
    pub fn nodes(&self) -> HashSet<P> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl<P: Clone + Eq + Hash> Relay<P> {
    /// A relay with `keys`; topologies are added per epoch with [`Relay::set_topology`].
    pub fn new(geometry: Geometry, config: RelayConfig, keys: KeyRing) -> Self {
        Relay {
            geometry,
            max_delay_us: AtomicU64::new(
                u64::try_from(config.max_delay.as_micros()).unwrap_or(u64::MAX),
            ),
            keys: RwLock::new(keys),
            topologies: RwLock::new(HashMap::new()),
            nodes: RwLock::new(HashSet::new()),
        }
    }

    /// The packet geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Installs the topology of `epoch` (from its verified consensus); keeps the last three.
    pub fn set_topology(&self, epoch: u64, topology: HashMap<NodeId, P>) {
        let mut t = self.topologies.write().unwrap_or_else(|e| e.into_inner());
        t.insert(epoch, topology);
        while t.len() > 3 {
            let Some(oldest) = t.keys().min().copied() else {
                break;
            };
            t.remove(&oldest);
        }
        let nodes: HashSet<P> = t.values().flat_map(|t| t.values().cloned()).collect();
        *self.nodes.write().unwrap_or_else(|e| e.into_inner()) = nodes;
    }

    /// Changes the longest per-hop delay accepted (a new consensus's `max_delay_us`).
    pub fn set_max_delay(&self, max_delay: Duration) {
        self.max_delay_us.store(
            u64::try_from(max_delay.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Changes the key ring (new epoch keys, rotation, retirement).
    pub fn with_keys<T>(&self, f: impl FnOnce(&mut KeyRing) -> T) -> T {
        f(&mut self.keys.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the key ring (its keys' replay caches, for gauges and snapshots) without holding up
    /// the workers.
    pub fn read_keys<T>(&self, f: impl FnOnce(&KeyRing) -> T) -> T {
        f(&self.keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Unwraps `packet` received at `now` and decides what to do with it.
    pub fn process(&self, now: Instant, mut packet: Vec<u8>) -> Result<Decision<P>, DropReason> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let processed = keys.process_keyed(&self.geometry, &mut packet);
        drop(keys);
        let (epoch, processed) = processed?;
        let topologies = self.topologies.read().unwrap_or_else(|e| e.into_inner());
        self.decide(&topologies, now, packet, epoch, processed)
    }

    /// Unwraps the packets of `batch` (each with its arrival time) together and decides for
    /// each, in order; see [`crate::unwrap_batch`]. The key ring and the topologies are read
    /// once for the whole batch.
    pub fn process_batch(
        &self,
        batch: Vec<(Instant, Vec<u8>)>,
    ) -> Vec<Result<Decision<P>, DropReason>> {
        let (arrivals, mut packets): (Vec<Instant>, Vec<Vec<u8>>) = batch.into_iter().unzip();
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let mut views: Vec<&mut [u8]> = packets.iter_mut().map(Vec::as_mut_slice).collect();
        let processed = unwrap_batch(&self.geometry, &keys, &mut views);
        drop(keys);
        let topologies = self.topologies.read().unwrap_or_else(|e| e.into_inner());
        arrivals
            .into_iter()
            .zip(packets)
            .zip(processed)
            .map(|((now, packet), processed)| {
                let (epoch, processed) = processed?;
                self.decide(&topologies, now, packet, epoch, processed)
            })
            .collect()
    }

    /// What to do with an unwrapped packet: the delay cap, the next hop's peer.
    fn decide(
        &self,
        topologies: &HashMap<u64, HashMap<NodeId, P>>,
        now: Instant,
        packet: Vec<u8>,
        epoch: u64,
        processed: Processed,
    ) -> Result<Decision<P>, DropReason> {
        let delay = match processed {
            Processed::Forward { delay, .. } | Processed::Final { delay, .. } => delay,
        };
        if delay.as_duration().as_micros() > u128::from(self.max_delay_us.load(Ordering::Relaxed)) {
            return Err(DropReason::DelayTooLong);
        }
        let release = now.checked_add(delay.as_duration()).unwrap_or(now);
        match processed {
            Processed::Forward { next, .. } => {
                let to = topologies
                    .get(&epoch)
                    .and_then(|t| t.get(&next))
                    .cloned()
                    .ok_or(DropReason::UnknownNextHop)?;
                Ok(Decision::Forward {
                    to,
                    packet,
                    release,
                    arrived: now,
                })
            }
            Processed::Final { destination, .. } => Ok(Decision::Final {
                destination,
                packet,
                release,
                arrived: now,
            }),
        }
    }
}

/// Bounds of a [`DelayQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most packets held at once.
    pub max_packets: usize,
    /// Most bytes held at once.
    pub max_bytes: usize,
}

impl Default for QueueLimits {
    /// 100 000 packets, 256 MiB.
    fn default() -> Self {
        QueueLimits {
            max_packets: 100_000,
            max_bytes: 256 << 20,
        }
    }
}

impl QueueLimits {
    /// Most packets one source may hold at once: an eighth of the queue, so that filling it
    /// takes eight consensus nodes or eight address prefixes, not a handful of free identities
    /// asking for long delays.
    pub fn per_source(&self) -> usize {
        (self.max_packets / 8).max(1)
    }
}

/// Whose share of the delay queue a packet counts against: one consensus node (admitted by the
/// authorities), or one address prefix clients send from (identities are free, prefixes are
/// not). An opaque key; the caller hashes what it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShareKey(pub u64);

/// One held packet, and whose share it counts against.
#[derive(Debug)]
struct Held<P> {
    decision: Decision<P>,
    share: Option<ShareKey>,
}

/// Packets held until their release time, earliest first, bounded in all and per source.
#[derive(Debug)]
pub struct DelayQueue<P> {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    items: HashMap<u64, Held<P>>,
    shares: HashMap<ShareKey, usize>,
    next_seq: u64,
    bytes: usize,
    limits: QueueLimits,
}

fn release_and_len<P>(decision: &Decision<P>) -> (Instant, usize) {
    match decision {
        Decision::Forward {
            release, packet, ..
        }
        | Decision::Final {
            release, packet, ..
        } => (*release, packet.len()),
    }
}

impl<P> DelayQueue<P> {
    /// An empty queue with `limits`.
    pub fn new(limits: QueueLimits) -> Self {
        DelayQueue {
            heap: BinaryHeap::new(),
            items: HashMap::new(),
            shares: HashMap::new(),
            next_seq: 0,
            bytes: 0,
            limits,
        }
    }

    /// The bounds in force.
    pub fn limits(&self) -> QueueLimits {
        self.limits
    }

    /// Holds `decision` until its release time; refuses it when the queue is full. Counts
    /// against no source's share (the node's own packets).
    pub fn push(&mut self, decision: Decision<P>) -> Result<(), DropReason> {
        self.push_shared(None, decision)
    }

    /// Holds `decision`, counting it against `share` (see [`ShareKey`]); refuses it when the
    /// queue is full or the source holds [`QueueLimits::per_source`] packets already.
    pub fn push_shared(
        &mut self,
        share: Option<ShareKey>,
        decision: Decision<P>,
    ) -> Result<(), DropReason> {
        let (release, len) = release_and_len(&decision);
        if self.items.len() >= self.limits.max_packets
            || self.bytes.saturating_add(len) > self.limits.max_bytes
        {
            return Err(DropReason::QueueFull);
        }
        if let Some(key) = share {
            let held = self.shares.entry(key).or_insert(0);
            if *held >= self.limits.per_source() {
                return Err(DropReason::QueueFull);
            }
            *held += 1;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += len;
        self.heap.push(Reverse((release, seq)));
        self.items.insert(seq, Held { decision, share });
        Ok(())
    }

    /// When the next packet is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// The next packet due at `now`, if any (in release order; ties in arrival order).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Decision<P>> {
        let Reverse((release, seq)) = *self.heap.peek()?;
        if release > now {
            return None;
        }
        self.heap.pop();
        let Held { decision, share } = self.items.remove(&seq)?;
        self.bytes -= release_and_len(&decision).1;
        if let Some(key) = share
            && let Some(held) = self.shares.get_mut(&key)
        {
            *held -= 1;
            if *held == 0 {
                self.shares.remove(&key);
            }
        }
        Some(decision)
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Packets held against `share`.
    pub fn held_by(&self, share: ShareKey) -> usize {
        self.shares.get(&share).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_releases_in_time_order_and_stays_bounded() {
        let t0 = Instant::now();
        let mut q: DelayQueue<u8> = DelayQueue::new(QueueLimits {
            max_packets: 3,
            max_bytes: 1000,
        });
        let d = |to, ms| Decision::Forward {
            to,
            packet: vec![0; 100],
            release: t0 + Duration::from_millis(ms),
            arrived: t0,
        };
        q.push(d(1, 30)).unwrap();
        q.push(d(2, 10)).unwrap();
        q.push(d(3, 20)).unwrap();
        assert_eq!(q.push(d(4, 5)), Err(DropReason::QueueFull));
        assert_eq!(q.bytes(), 300);
        assert_eq!(q.poll_timeout(), Some(t0 + Duration::from_millis(10)));
        assert!(q.poll_transmit(t0 + Duration::from_millis(9)).is_none());
        let order: Vec<u8> = std::iter::from_fn(|| q.poll_transmit(t0 + Duration::from_secs(1)))
            .map(|d| match d {
                Decision::Forward { to, .. } => to,
                Decision::Final { .. } => 0,
            })
            .collect();
        assert_eq!(order, vec![2, 3, 1]);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
        let mut small: DelayQueue<u8> = DelayQueue::new(QueueLimits {
            max_packets: 10,
            max_bytes: 150,
        });
        small.push(d(1, 1)).unwrap();
        assert_eq!(
            small.push(d(2, 1)),
            Err(DropReason::QueueFull),
            "byte bound"
        );
    }

    #[test]
    fn one_source_holds_at_most_its_share() {
        let t0 = Instant::now();
        let limits = QueueLimits {
            max_packets: 80,
            max_bytes: 1 << 20,
        };
        let mut q: DelayQueue<u8> = DelayQueue::new(limits);
        let d = |ms| Decision::Forward {
            to: 1u8,
            packet: vec![0; 10],
            release: t0 + Duration::from_millis(ms),
            arrived: t0,
        };
        let attacker = ShareKey(1);
        let accepted = (0..100)
            .filter(|_| q.push_shared(Some(attacker), d(10_000)).is_ok())
            .count();
        assert_eq!(accepted, limits.per_source());
        assert_eq!(q.held_by(attacker), 10);
        // Others still get in, and the share frees as packets leave.
        assert!(q.push_shared(Some(ShareKey(2)), d(1)).is_ok());
        assert!(q.push(d(1)).is_ok());
        assert!(q.poll_transmit(t0 + Duration::from_millis(1)).is_some());
        while q.poll_transmit(t0 + Duration::from_secs(20)).is_some() {}
        assert_eq!(q.held_by(attacker), 0);
        assert!(q.push_shared(Some(attacker), d(1)).is_ok());
    }
}
