//! Addresses that mean something: which announced multiaddrs an authority admits, and the
//! prefix groups (IPv4 address, IPv4 /24, IPv6 /48, operator family) that admission caps count.
//!
//! A descriptor's addresses are what mixes dial, so an address that points into an operator's
//! private network (or the dialer's own loopback) would turn every mix into a reflector. On a
//! production network only public addresses and DNS names that are not local are admitted;
//! a network whose parameters say `test_network` (the testnet, the tests) admits loopback and
//! private addresses too, and those belong to no prefix group (every node of a local test network
//! shares 127.0.0.1).
//!
//! Prefixes come from the literal addresses a node announces. A DNS name has no prefix the
//! consensus can agree on (each resolver may answer differently), so DNS-only nodes are capped
//! only by family in the consensus; an authority adds the address its reachability dial reached
//! to the groups it applies before voting ([`crate::Authority`]).

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
};

use libp2p_core::Multiaddr;
use libp2p_core::multiaddr::Protocol;
use libp2p_identity::PeerId;
use p2pmix_proto::v1::NetworkParameters;
use thiserror::Error;

/// Longest address text accepted.
pub const MAX_ADDRESS_LEN: usize = 256;

/// Why an announced address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AddressError {
    /// Not a multiaddr, empty, or too long.
    #[error("not a multiaddr")]
    Malformed,
    /// Not `/ip4|ip6|dns|dns4|dns6/.../tcp/PORT` or `.../udp/PORT/quic-v1`, optionally ending in
    /// `/p2p/<the node>`.
    #[error("unsupported address shape")]
    Unsupported,
    /// Loopback, private, link-local, reserved or a local name, on a network that is not a test
    /// network.
    #[error("address is not public")]
    NotPublic,
    /// Ends in `/p2p/` of another peer.
    #[error("address names another peer")]
    OtherPeer,
}

/// Checks one announced address of `peer` (if given) for a network whose parameters say
/// `test_network` or not; returns it parsed.
pub fn check_address(
    text: &str,
    peer: Option<&PeerId>,
    test_network: bool,
) -> Result<Multiaddr, AddressError> {
    if text.is_empty() || text.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::Malformed);
    }
    let addr: Multiaddr = text.parse().map_err(|_| AddressError::Malformed)?;
    let mut parts = addr.iter();
    let public = match parts.next() {
        Some(Protocol::Ip4(ip)) => is_public_ip(IpAddr::V4(ip)),
        Some(Protocol::Ip6(ip)) => is_public_ip(IpAddr::V6(ip)),
        Some(Protocol::Dns(name) | Protocol::Dns4(name) | Protocol::Dns6(name)) => {
            if !is_hostname(&name) {
                return Err(AddressError::Malformed);
            }
            !is_local_name(&name)
        }
        _ => return Err(AddressError::Unsupported),
    };
    match (parts.next(), parts.next()) {
        (Some(Protocol::Tcp(port)), next) if port != 0 => check_tail(next, parts, peer)?,
        (Some(Protocol::Udp(port)), Some(Protocol::QuicV1)) if port != 0 => {
            check_tail(parts.next(), parts, peer)?
        }
        _ => return Err(AddressError::Unsupported),
    }
    if !public && !test_network {
        return Err(AddressError::NotPublic);
    }
    Ok(addr)
}

/// What may follow the transport: nothing, or `/p2p/` of the node itself.
fn check_tail<'a>(
    next: Option<Protocol<'a>>,
    mut rest: impl Iterator<Item = Protocol<'a>>,
    peer: Option<&PeerId>,
) -> Result<(), AddressError> {
    match next {
        None => Ok(()),
        Some(Protocol::P2p(id)) if rest.next().is_none() => match peer {
            Some(p) if *p != id => Err(AddressError::OtherPeer),
            _ => Ok(()),
        },
        Some(_) => Err(AddressError::Unsupported),
    }
}

/// Whether `addr` may go into a descriptor on a network that is (`test_network`) or is not a
/// local test network: the rule nodes apply to their listen addresses and mixes to consensus
/// addresses they dial.
pub fn is_usable(addr: &Multiaddr, test_network: bool) -> bool {
    check_address(&addr.to_string(), None, test_network).is_ok()
}

/// Whether an IP address is reachable from the public Internet: not unspecified, loopback,
/// private, shared (CGNAT), link-local, documentation, benchmarking, multicast or reserved.
/// IPv6 is public only in global unicast (2000::/3), outside documentation; an IPv4-mapped IPv6
/// address is judged as its IPv4 address.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => {
                let s = v6.segments();
                (s[0] & 0xe000) == 0x2000 && !(s[0] == 0x2001 && s[1] == 0x0db8)
            }
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b))
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 198 && (b == 18 || b == 19))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224)
}

/// A DNS name of letters, digits, hyphens and dots, at most 253 characters.
fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Names that resolve to this machine or a local network by convention.
fn is_local_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    ["localhost", "local", "internal", "lan", "home.arpa"]
        .iter()
        .any(|suffix| name == *suffix || name.ends_with(&format!(".{suffix}")))
}

/// A set of nodes that admission caps count together.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// One IPv4 address.
    Ipv4([u8; 4]),
    /// An IPv4 /24.
    Ipv4Net24([u8; 3]),
    /// An IPv6 /48.
    Ipv6Net48([u16; 3]),
    /// A declared operator family (trimmed, lower case).
    Family(String),
}

/// The prefix groups of a public IP address (none for a non-public one).
pub fn ip_groups(ip: IpAddr) -> Vec<Group> {
    if !is_public_ip(ip) {
        return Vec::new();
    }
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    match (v4, ip) {
        (Some(v4), _) => {
            let [a, b, c, d] = v4.octets();
            vec![Group::Ipv4([a, b, c, d]), Group::Ipv4Net24([a, b, c])]
        }
        (None, IpAddr::V6(v6)) => {
            let s = v6.segments();
            vec![Group::Ipv6Net48([s[0], s[1], s[2]])]
        }
        (None, IpAddr::V4(_)) => Vec::new(),
    }
}

/// The literal IP address an address text starts with, if any.
pub fn literal_ip(text: &str) -> Option<IpAddr> {
    let addr: Multiaddr = text.parse().ok()?;
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

/// The groups of a node with these announced addresses and this declared family.
pub fn groups<'a>(
    addresses: impl IntoIterator<Item = &'a String>,
    family: &str,
) -> BTreeSet<Group> {
    let mut out: BTreeSet<Group> = addresses
        .into_iter()
        .filter_map(|a| literal_ip(a))
        .flat_map(ip_groups)
        .collect();
    let family = family.trim().to_lowercase();
    if !family.is_empty() {
        out.insert(Group::Family(family));
    }
    out
}

/// The caps of the network parameters, by group kind (`None`: no cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCaps {
    /// Per IPv4 address.
    pub ipv4: Option<usize>,
    /// Per IPv4 /24.
    pub ipv4_24: Option<usize>,
    /// Per IPv6 /48.
    pub ipv6_48: Option<usize>,
    /// Per family.
    pub family: Option<usize>,
}

impl GroupCaps {
    /// The caps `parameters` set (0 there: no cap).
    pub fn of(parameters: &NetworkParameters) -> Self {
        let cap = |k: u32| (k > 0).then_some(k as usize);
        GroupCaps {
            ipv4: cap(parameters.max_nodes_per_ipv4),
            ipv4_24: cap(parameters.max_nodes_per_ipv4_24),
            ipv6_48: cap(parameters.max_nodes_per_ipv6_48),
            family: cap(parameters.max_nodes_per_family),
        }
    }

    /// The cap on `group`.
    pub fn cap(&self, group: &Group) -> Option<usize> {
        match group {
            Group::Ipv4(_) => self.ipv4,
            Group::Ipv4Net24(_) => self.ipv4_24,
            Group::Ipv6Net48(_) => self.ipv6_48,
            Group::Family(_) => self.family,
        }
    }

    /// The cap on `group` times `factor` (how many an authority keeps in store per group).
    pub fn scaled(&self, group: &Group, factor: usize) -> Option<usize> {
        self.cap(group).map(|c| c.saturating_mul(factor))
    }
}

/// The label a cap is counted under.
pub fn group_kind(group: &Group) -> &'static str {
    match group {
        Group::Ipv4(_) => "ipv4",
        Group::Ipv4Net24(_) => "ipv4_24",
        Group::Ipv6Net48(_) => "ipv6_48",
        Group::Family(_) => "family",
    }
}

/// Keeps, in the order given (best first), every item whose groups all have room under `caps`;
/// returns the kept items and, per group kind, how many were left out for that kind (the first
/// full group of an item is the one it is counted under).
pub fn within_caps<T>(
    ranked: impl IntoIterator<Item = (T, BTreeSet<Group>)>,
    caps: &GroupCaps,
) -> (Vec<T>, std::collections::BTreeMap<&'static str, u64>) {
    let mut counts: std::collections::HashMap<Group, usize> = std::collections::HashMap::new();
    let mut kept = Vec::new();
    let mut left_out = std::collections::BTreeMap::new();
    for (item, groups) in ranked {
        let full = groups.iter().find(|g| {
            caps.cap(g)
                .is_some_and(|cap| counts.get(*g).copied().unwrap_or(0) >= cap)
        });
        if let Some(g) = full {
            *left_out.entry(group_kind(g)).or_default() += 1;
            continue;
        }
        for g in groups {
            *counts.entry(g).or_default() += 1;
        }
        kept.push(item);
    }
    (kept, left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        libp2p_identity::Keypair::ed25519_from_bytes([9; 32])
            .expect("32 bytes")
            .public()
            .to_peer_id()
    }

    #[test]
    fn production_admits_public_addresses_and_names_only() {
        let me = peer();
        for ok in [
            "/ip4/45.1.2.3/tcp/4100",
            "/ip6/2a01:4f8::1/tcp/4100",
            "/dns4/mix.example.org/tcp/4100",
            "/dns/mix.example.org/udp/4100/quic-v1",
            &format!("/ip4/45.1.2.3/tcp/4100/p2p/{me}"),
        ] {
            assert!(check_address(ok, Some(&me), false).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("/ip4/127.0.0.1/tcp/4100", AddressError::NotPublic),
            ("/ip4/10.0.0.1/tcp/4100", AddressError::NotPublic),
            ("/ip4/192.168.1.1/tcp/4100", AddressError::NotPublic),
            ("/ip4/172.20.0.1/tcp/4100", AddressError::NotPublic),
            ("/ip4/100.64.0.1/tcp/4100", AddressError::NotPublic),
            ("/ip4/169.254.0.1/tcp/4100", AddressError::NotPublic),
            ("/ip6/::1/tcp/4100", AddressError::NotPublic),
            ("/ip6/fd00::1/tcp/4100", AddressError::NotPublic),
            ("/ip6/fe80::1/tcp/4100", AddressError::NotPublic),
            ("/ip6/::ffff:127.0.0.1/tcp/4100", AddressError::NotPublic),
            ("/dns4/localhost/tcp/4100", AddressError::NotPublic),
            ("/dns4/printer.local/tcp/4100", AddressError::NotPublic),
            ("/ip4/0.0.0.0/tcp/4100", AddressError::NotPublic),
            ("/ip4/45.1.2.3/tcp/0", AddressError::Unsupported),
            ("/ip4/45.1.2.3/udp/4100", AddressError::Unsupported),
            ("/ip4/45.1.2.3", AddressError::Unsupported),
            ("/memory/1234", AddressError::Unsupported),
            ("/ip4/45.1.2.3/tcp/1/tcp/2", AddressError::Unsupported),
            ("/dns4/bad_name!/tcp/1", AddressError::Malformed),
            ("not an address", AddressError::Malformed),
            ("", AddressError::Malformed),
        ] {
            assert_eq!(check_address(bad, Some(&me), false), Err(why), "{bad}");
        }
        let other = PeerId::random();
        assert_eq!(
            check_address(
                &format!("/ip4/45.1.2.3/tcp/1/p2p/{other}"),
                Some(&me),
                false
            ),
            Err(AddressError::OtherPeer)
        );
    }

    #[test]
    fn a_test_network_admits_loopback_and_private_addresses() {
        for a in [
            "/ip4/127.0.0.1/tcp/4100",
            "/ip4/10.0.0.1/tcp/4100",
            "/dns4/localhost/tcp/4100",
        ] {
            assert!(check_address(a, None, true).is_ok(), "{a}");
        }
        // Shapes are checked all the same.
        assert_eq!(
            check_address("/ip4/127.0.0.1/udp/1", None, true),
            Err(AddressError::Unsupported)
        );
    }

    #[test]
    fn groups_come_from_public_literals_and_the_family() {
        let addrs: Vec<String> = [
            "/ip4/45.1.2.3/tcp/1",
            "/ip6/2a01:4f8:10:20::1/tcp/1",
            "/ip4/127.0.0.1/tcp/1",
            "/dns4/x.example.org/tcp/1",
        ]
        .map(String::from)
        .to_vec();
        let g = groups(&addrs, " Operator-A ");
        assert_eq!(
            g,
            BTreeSet::from([
                Group::Ipv4([45, 1, 2, 3]),
                Group::Ipv4Net24([45, 1, 2]),
                Group::Ipv6Net48([0x2a01, 0x4f8, 0x10]),
                Group::Family("operator-a".into()),
            ])
        );
        assert!(groups(&["/ip4/127.0.0.1/tcp/1".to_string()], "").is_empty());
    }

    #[test]
    fn caps_keep_the_best_ranked_and_count_what_they_leave_out() {
        let caps = GroupCaps {
            ipv4: Some(2),
            ipv4_24: Some(3),
            ipv6_48: None,
            family: Some(1),
        };
        let node = |i: u8, fam: &str| (i, groups(&[format!("/ip4/45.1.2.{}/tcp/1", i / 2)], fam));
        // 0 and 1 share an address; 2, 3 the next; all share a /24; 4 and 5 share a family.
        let ranked = vec![
            node(0, ""),
            node(1, ""),
            node(2, ""),
            node(3, ""),
            node(8, "f"),
            node(10, "f"),
        ];
        let (kept, out) = within_caps(ranked, &caps);
        assert_eq!(kept, vec![0, 1, 2]);
        assert_eq!(out.get("ipv4_24"), Some(&3));
    }
}
