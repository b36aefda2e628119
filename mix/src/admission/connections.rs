//! Inbound connections held per source address and prefix. Identities are free, so a per-peer
//! connection limit alone lets one host hold every connection slot a node has (the node's total
//! incoming limit) with throwaway identities, each of them also costing a Noise handshake and a
//! record. Connections from one IP address, and from one prefix (IPv4 /24, IPv6 /48), are
//! capped instead; nodes of a held consensus are exempt (the authorities cap how many nodes
//! share an address).
//!
//! Handshakes under way are capped per address and per prefix too ([`MAX_PENDING_PER_ADDRESS`],
//! [`MAX_PENDING_PER_PREFIX`]): the swarm's own limit on pending connections is global, so one
//! host that opens connections and stalls their handshakes would otherwise shut every other
//! client out before any per-address rule ran. Loopback is exempt from that cap (a local test
//! network starts a dozen nodes at once).
//!
//! Sans-IO: the caller says which connection opened from where and which closed; a connection
//! is any `C: Eq + Hash + Copy` (libp2p's `ConnectionId`). Entries exist only for connections
//! held or handshaking, so memory is bounded by the swarm's own limits on established and
//! pending connections.

use std::{collections::HashMap, hash::Hash, net::IpAddr};

use super::address::{Prefix, canonical_ip};

/// Inbound handshakes one address (an IPv4 address, an IPv6 /64) may have under way at once.
pub const MAX_PENDING_PER_ADDRESS: usize = 16;

/// Inbound handshakes one prefix (IPv4 /24, IPv6 /48) may have under way at once: a rented /28
/// or a home /56 holds many addresses, and a node's pending slots are few.
pub const MAX_PENDING_PER_PREFIX: usize = 64;

/// Why an inbound connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefusal {
    /// The source address holds as many connections as it may.
    #[error("{held} connections from this address already (at most {max})")]
    Address {
        /// Connections it holds.
        held: usize,
        /// The limit.
        max: usize,
    },
    /// The source prefix holds as many connections as it may.
    #[error("{held} connections from this address's prefix already (at most {max})")]
    Prefix {
        /// Connections it holds.
        held: usize,
        /// The limit.
        max: usize,
    },
    /// The source address has as many handshakes under way as it may.
    #[error("{held} handshakes from this address under way already (at most {max})")]
    Pending {
        /// Handshakes under way.
        held: usize,
        /// The limit.
        max: usize,
    },
    /// The source prefix has as many handshakes under way as it may.
    #[error("{held} handshakes from this address's prefix under way already (at most {max})")]
    PendingPrefix {
        /// Handshakes under way.
        held: usize,
        /// The limit.
        max: usize,
    },
}

impl ConnectionRefusal {
    /// Every refusal, in the order of [`ConnectionRefusal::label`]s a metric exports.
    pub const LABELS: [&'static str; 4] = ["address", "prefix", "pending", "pending_prefix"];

    /// Its place in [`ConnectionRefusal::LABELS`].
    pub fn index(&self) -> usize {
        match self {
            ConnectionRefusal::Address { .. } => 0,
            ConnectionRefusal::Prefix { .. } => 1,
            ConnectionRefusal::Pending { .. } => 2,
            ConnectionRefusal::PendingPrefix { .. } => 3,
        }
    }

    /// A short name for metrics.
    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }
}

/// Counts of inbound client connections by source address and prefix.
#[derive(Debug, Clone)]
pub struct ConnectionCounts<C> {
    per_address: usize,
    per_prefix: usize,
    held: HashMap<C, IpAddr>,
    addresses: HashMap<IpAddr, usize>,
    prefixes: HashMap<Prefix, usize>,
    handshaking: HashMap<C, IpAddr>,
    handshakes: HashMap<IpAddr, usize>,
    prefix_handshakes: HashMap<Prefix, usize>,
}

impl<C: Eq + Hash + Copy> ConnectionCounts<C> {
    /// At most `per_address` connections from one address and `per_prefix` from one prefix.
    pub fn new(per_address: usize, per_prefix: usize) -> Self {
        ConnectionCounts {
            per_address,
            per_prefix,
            held: HashMap::new(),
            addresses: HashMap::new(),
            prefixes: HashMap::new(),
            handshaking: HashMap::new(),
            handshakes: HashMap::new(),
            prefix_handshakes: HashMap::new(),
        }
    }

    /// Counts the handshake of `connection` from `ip`, or refuses it if the address has
    /// [`MAX_PENDING_PER_ADDRESS`] under way or its prefix [`MAX_PENDING_PER_PREFIX`]. End it with [`ConnectionCounts::handshake_ended`]
    /// whatever its outcome.
    pub fn handshake_started(
        &mut self,
        connection: C,
        ip: IpAddr,
    ) -> Result<(), ConnectionRefusal> {
        let ip = canonical_ip(ip);
        if ip.is_loopback() || self.handshaking.contains_key(&connection) {
            return Ok(());
        }
        let held = self.handshakes.get(&ip).copied().unwrap_or(0);
        if held >= MAX_PENDING_PER_ADDRESS {
            return Err(ConnectionRefusal::Pending {
                held,
                max: MAX_PENDING_PER_ADDRESS,
            });
        }
        let held = self
            .prefix_handshakes
            .get(&Prefix::of(ip))
            .copied()
            .unwrap_or(0);
        if held >= MAX_PENDING_PER_PREFIX {
            return Err(ConnectionRefusal::PendingPrefix {
                held,
                max: MAX_PENDING_PER_PREFIX,
            });
        }
        self.handshaking.insert(connection, ip);
        *self.handshakes.entry(ip).or_default() += 1;
        *self.prefix_handshakes.entry(Prefix::of(ip)).or_default() += 1;
        Ok(())
    }

    /// The handshake of `connection` is over (established, failed or denied; one never counted:
    /// nothing).
    pub fn handshake_ended(&mut self, connection: C) {
        if let Some(ip) = self.handshaking.remove(&connection) {
            decrement(&mut self.handshakes, ip);
            decrement(&mut self.prefix_handshakes, Prefix::of(ip));
        }
    }

    /// Handshakes under way that are counted.
    pub fn handshaking(&self) -> usize {
        self.handshaking.len()
    }

    /// Whether one more connection from `ip` stays within the limits (it is not counted until
    /// [`ConnectionCounts::opened`]: the swarm may still refuse it for another reason).
    pub fn admits(&self, ip: IpAddr) -> Result<(), ConnectionRefusal> {
        let ip = canonical_ip(ip);
        let held = self.addresses.get(&ip).copied().unwrap_or(0);
        if held >= self.per_address {
            return Err(ConnectionRefusal::Address {
                held,
                max: self.per_address,
            });
        }
        let held = self.prefixes.get(&Prefix::of(ip)).copied().unwrap_or(0);
        if held >= self.per_prefix {
            return Err(ConnectionRefusal::Prefix {
                held,
                max: self.per_prefix,
            });
        }
        Ok(())
    }

    /// Counts `connection`, opened from `ip` (again: nothing).
    pub fn opened(&mut self, connection: C, ip: IpAddr) {
        let ip = canonical_ip(ip);
        if self.held.insert(connection, ip).is_some() {
            return;
        }
        *self.addresses.entry(ip).or_default() += 1;
        *self.prefixes.entry(Prefix::of(ip)).or_default() += 1;
    }

    /// Forgets `connection` (one never counted: nothing).
    pub fn closed(&mut self, connection: C) {
        let Some(ip) = self.held.remove(&connection) else {
            return;
        };
        decrement(&mut self.addresses, ip);
        decrement(&mut self.prefixes, Prefix::of(ip));
    }

    /// Connections held from `ip`.
    pub fn from_address(&self, ip: IpAddr) -> usize {
        self.addresses.get(&canonical_ip(ip)).copied().unwrap_or(0)
    }

    /// Connections counted.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no connection is counted.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// New limits; connections held over them stay until they close.
    pub fn set_limits(&mut self, per_address: usize, per_prefix: usize) {
        self.per_address = per_address;
        self.per_prefix = per_prefix;
    }
}

fn decrement<K: Eq + Hash>(map: &mut HashMap<K, usize>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    /// One host opens connections and stalls their handshakes: it holds at most
    /// [`MAX_PENDING_PER_ADDRESS`] of the swarm's pending slots, others still start theirs, and
    /// every ended handshake frees its slot whatever its outcome.
    #[test]
    fn stalled_handshakes_from_one_address_hold_its_share_of_the_pending_slots() {
        let mut counts = ConnectionCounts::new(64, 1024);
        let staller = v4(203, 0, 113, 7);
        let refused = (0..256u32)
            .filter(|&c| counts.handshake_started(c, staller).is_err())
            .count();
        assert_eq!(refused, 256 - MAX_PENDING_PER_ADDRESS);
        assert_eq!(
            counts.handshake_started(1_000, staller),
            Err(ConnectionRefusal::Pending {
                held: MAX_PENDING_PER_ADDRESS,
                max: MAX_PENDING_PER_ADDRESS
            })
        );
        assert_eq!(counts.handshake_started(1_001, v4(198, 51, 100, 1)), Ok(()));
        // Loopback is not capped.
        let lo = v4(127, 0, 0, 1);
        assert!((2_000..2_100).all(|c| counts.handshake_started(c, lo).is_ok()));
        // Ended (refused ones too, and twice): the counts come back down.
        for c in (0..256)
            .chain(0..256)
            .chain([1_000, 1_001])
            .chain(2_000..2_100)
        {
            counts.handshake_ended(c);
        }
        assert_eq!(counts.handshaking(), 0);
        assert!(counts.handshakes.is_empty() && counts.prefix_handshakes.is_empty());
        assert_eq!(counts.handshake_started(3_000, staller), Ok(()));
    }

    /// A rented /24 (or an IPv6 /48 of many /64s) stalls handshakes from every address it has:
    /// it holds its prefix's share of the pending slots, not the whole node's (with per-address
    /// caps alone, 16 addresses filled a node's 256 slots).
    #[test]
    fn stalled_handshakes_from_many_addresses_of_one_prefix_hold_the_prefixs_share() {
        let mut counts = ConnectionCounts::new(64, 1024);
        let mut started = 0;
        for host in 1..=200u8 {
            for c in 0..MAX_PENDING_PER_ADDRESS as u32 {
                if counts
                    .handshake_started(u32::from(host) * 100 + c, v4(203, 0, 113, host))
                    .is_ok()
                {
                    started += 1;
                }
            }
        }
        assert_eq!(started, MAX_PENDING_PER_PREFIX);
        assert_eq!(
            counts.handshake_started(99_999, v4(203, 0, 113, 250)),
            Err(ConnectionRefusal::PendingPrefix {
                held: MAX_PENDING_PER_PREFIX,
                max: MAX_PENDING_PER_PREFIX
            })
        );
        let v6 =
            |sub: u16, host: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 7, sub, 0, 0, 0, host));
        let started_v6 = (0..256u16)
            .filter(|&sub| {
                counts
                    .handshake_started(200_000 + u32::from(sub), v6(sub, 1))
                    .is_ok()
            })
            .count();
        assert_eq!(
            started_v6, MAX_PENDING_PER_PREFIX,
            "the /48's share, not 256 /64s'"
        );
        // Elsewhere, handshakes go on.
        assert_eq!(
            counts.handshake_started(300_000, v4(198, 51, 100, 1)),
            Ok(())
        );
        for c in (0..30_000).chain(200_000..200_256).chain([300_000]) {
            counts.handshake_ended(c);
        }
        assert!(counts.handshakes.is_empty() && counts.prefix_handshakes.is_empty());
    }

    /// One IPv6 host with a /64 dials from a fresh address each time: it still holds one
    /// address's share (before, it held the /48's).
    #[test]
    fn fresh_addresses_of_one_ipv6_slash_64_hold_one_addresss_share() {
        let mut counts = ConnectionCounts::new(64, 1024);
        let mut held = 0;
        for c in 0..1_000u32 {
            let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 7, 9, 0, 0, 0, c as u16 + 1));
            if counts.admits(ip).is_ok() {
                counts.opened(c, ip);
                held += 1;
            }
        }
        assert_eq!(held, 64);
        let next_door = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 7, 10, 0, 0, 0, 1));
        assert_eq!(counts.admits(next_door), Ok(()));
    }

    #[test]
    fn a_thousand_connections_from_one_address_hold_its_share_and_others_still_connect() {
        let mut counts = ConnectionCounts::new(64, 100);
        let flood = v4(203, 0, 113, 7);
        let mut refused = 0;
        for c in 0..1_000u32 {
            match counts.admits(flood) {
                Ok(()) => counts.opened(c, flood),
                Err(e) => {
                    assert_eq!(e, ConnectionRefusal::Address { held: 64, max: 64 });
                    refused += 1;
                }
            }
        }
        assert_eq!((counts.from_address(flood), refused), (64, 936));
        // The same address as IPv4-mapped IPv6 is the same address.
        let mapped = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 7).to_ipv6_mapped());
        assert!(counts.admits(mapped).is_err());
        // A neighbour in the /24 has what is left of the prefix; another network all of its own.
        for c in 1_000..1_036 {
            counts.opened(c, v4(203, 0, 113, 8));
        }
        assert_eq!(
            counts.admits(v4(203, 0, 113, 9)),
            Err(ConnectionRefusal::Prefix {
                held: 100,
                max: 100
            })
        );
        assert_eq!(counts.admits(v4(198, 51, 100, 1)), Ok(()));
        assert_eq!(
            counts.admits(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
            Ok(())
        );
    }

    #[test]
    fn closing_gives_the_slot_back_and_unknown_or_repeated_events_change_nothing() {
        let mut counts = ConnectionCounts::new(2, 10);
        let ip = v4(192, 0, 2, 1);
        counts.opened(1u32, ip);
        counts.opened(1, ip);
        counts.opened(2, ip);
        assert!(counts.admits(ip).is_err());
        counts.closed(7);
        counts.closed(1);
        counts.closed(1);
        assert_eq!((counts.from_address(ip), counts.len()), (1, 1));
        assert_eq!(counts.admits(ip), Ok(()));
        counts.closed(2);
        assert!(counts.is_empty());
        assert!(counts.addresses.is_empty() && counts.prefixes.is_empty());
    }
}
