//! Limits keyed on where traffic comes from: one IP address, and its prefix (IPv4 /24, IPv6
//! /48). Identities are free to make; addresses are not, so every client behind one address
//! shares one bucket, and an address may hold only so many identities' records.

use std::{collections::HashMap, hash::Hash, net::IpAddr, time::Instant};

use super::bucket::{Rate, TokenBucket};

/// Addresses (and prefixes) tracked before idle ones are forgotten.
pub const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// The network an address belongs to for rate limiting: its IPv4 /24 or its IPv6 /48 (what one
/// customer of a provider gets). IPv4-mapped IPv6 addresses count as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prefix {
    /// The first three bytes of an IPv4 address.
    V4([u8; 3]),
    /// The first six bytes of an IPv6 address.
    V6([u8; 6]),
}

impl Prefix {
    /// The prefix of `ip`.
    pub fn of(ip: IpAddr) -> Prefix {
        match canonical_ip(ip) {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Prefix::V4([o[0], o[1], o[2]])
            }
            IpAddr::V6(v6) => {
                let o = v6.octets();
                Prefix::V6([o[0], o[1], o[2], o[3], o[4], o[5]])
            }
        }
    }
}

/// The "one address" limits are keyed on: an IPv4 address (an IPv4-mapped IPv6 address turned
/// back into IPv4), or an IPv6 address's /64. One host or subscriber holds a whole /64 (RFC
/// 6177) and can take a fresh address from it for every connection, so a per-address limit on
/// full IPv6 addresses would hold nobody. The IPv6 loopback stays itself.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.is_loopback() => ip,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or_else(
            || IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            IpAddr::V4,
        ),
        v4 => v4,
    }
}

/// What one address or prefix may do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AddressRules {
    /// What all clients behind it may send together.
    pub(crate) rate: Rate,
    /// Identities it may hold records for at once.
    pub(crate) identities: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    bucket: TokenBucket,
    identities: usize,
}

/// One level of address limits (addresses, or prefixes), bounded.
#[derive(Debug, Clone)]
struct Level<K> {
    rules: AddressRules,
    entries: HashMap<K, Entry>,
}

impl<K: Eq + Hash + Copy> Level<K> {
    fn new(rules: AddressRules) -> Self {
        Level {
            rules,
            entries: HashMap::new(),
        }
    }

    fn entry(&mut self, now: Instant, key: K) -> &mut Entry {
        if self.entries.len() >= MAX_TRACKED_ADDRESSES && !self.entries.contains_key(&key) {
            // Entries holding identities are bounded by the peer records; the others only hold
            // a bucket, and one that has refilled carries nothing worth keeping.
            self.entries
                .retain(|_, e| e.identities > 0 || !e.bucket.is_full(now));
            if self.entries.len() >= MAX_TRACKED_ADDRESSES {
                self.entries.retain(|_, e| e.identities > 0);
            }
        }
        let rate = self.rules.rate;
        self.entries.entry(key).or_insert_with(|| Entry {
            bucket: TokenBucket::of(rate),
            identities: 0,
        })
    }
}

/// Why an address refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressRefusal {
    /// Its clients together sent faster than it may.
    Rate,
    /// It already holds as many identities as it may.
    Identities,
}

/// Per-address and per-prefix buckets and identity counts.
#[derive(Debug, Clone)]
pub(crate) struct AddressLimits {
    ips: Level<IpAddr>,
    prefixes: Level<Prefix>,
}

impl AddressLimits {
    pub(crate) fn new(per_address: AddressRules, per_prefix: AddressRules) -> Self {
        AddressLimits {
            ips: Level::new(per_address),
            prefixes: Level::new(per_prefix),
        }
    }

    /// Takes a token from `ip` and from its prefix.
    pub(crate) fn take(&mut self, now: Instant, ip: IpAddr) -> Result<(), AddressRefusal> {
        let ip = canonical_ip(ip);
        if !self.ips.entry(now, ip).bucket.try_take(now) {
            return Err(AddressRefusal::Rate);
        }
        if !self
            .prefixes
            .entry(now, Prefix::of(ip))
            .bucket
            .try_take(now)
        {
            self.ips.entry(now, ip).bucket.give_back();
            return Err(AddressRefusal::Rate);
        }
        Ok(())
    }

    /// Counts one more identity at `ip` (a new record), if the address and its prefix allow it.
    pub(crate) fn add_identity(&mut self, now: Instant, ip: IpAddr) -> Result<(), AddressRefusal> {
        let ip = canonical_ip(ip);
        let (ip_max, prefix_max) = (self.ips.rules.identities, self.prefixes.rules.identities);
        if self.ips.entry(now, ip).identities >= ip_max
            || self.prefixes.entry(now, Prefix::of(ip)).identities >= prefix_max
        {
            return Err(AddressRefusal::Identities);
        }
        self.ips.entry(now, ip).identities += 1;
        self.prefixes.entry(now, Prefix::of(ip)).identities += 1;
        Ok(())
    }

    /// Counts one identity less at `ip` (its record was dropped).
    pub(crate) fn remove_identity(&mut self, ip: IpAddr) {
        let ip = canonical_ip(ip);
        if let Some(e) = self.ips.entries.get_mut(&ip) {
            e.identities = e.identities.saturating_sub(1);
        }
        if let Some(e) = self.prefixes.entries.get_mut(&Prefix::of(ip)) {
            e.identities = e.identities.saturating_sub(1);
        }
    }

    /// New rules (a new client rate); buckets start afresh, identity counts stay.
    pub(crate) fn set_rules(&mut self, per_address: AddressRules, per_prefix: AddressRules) {
        self.ips.rules = per_address;
        self.prefixes.rules = per_prefix;
        for e in self.ips.entries.values_mut() {
            e.bucket = TokenBucket::of(per_address.rate);
        }
        for e in self.prefixes.entries.values_mut() {
            e.bucket = TokenBucket::of(per_prefix.rate);
        }
    }

    /// Addresses and prefixes tracked.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> (usize, usize) {
        (self.ips.entries.len(), self.prefixes.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, Ipv6Addr},
        time::Duration,
    };

    use super::*;

    /// A host with a /64 takes a fresh address for every connection: all of them are one
    /// address to the limits. Before, each was an address of its own.
    #[test]
    fn an_ipv6_address_is_its_slash_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(canonical_ip(a), canonical_ip(b));
        assert_ne!(canonical_ip(a), canonical_ip(c));
        assert_eq!(canonical_ip(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(canonical_ip(v4), v4);
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(canonical_ip(mapped), v4);
        let lo: IpAddr = "::1".parse().unwrap();
        assert_eq!(canonical_ip(lo), lo);
    }

    #[test]
    fn prefixes_are_slash_24_and_slash_48() {
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let b: IpAddr = "192.0.2.200".parse().unwrap();
        let c: IpAddr = "192.0.3.7".parse().unwrap();
        assert_eq!(Prefix::of(a), Prefix::of(b));
        assert_ne!(Prefix::of(a), Prefix::of(c));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped());
        assert_eq!(Prefix::of(mapped), Prefix::of(a));
        let x: IpAddr = "2001:db8:1:ffff::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:0::2".parse().unwrap();
        let z = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1));
        assert_eq!(Prefix::of(x), Prefix::of(y));
        assert_ne!(Prefix::of(x), Prefix::of(z));
    }

    #[test]
    fn an_address_and_its_prefix_share_one_bucket_and_cap_identities() {
        let t0 = Instant::now();
        let rules = |per_second, identities| AddressRules {
            rate: Rate {
                per_second,
                burst: per_second,
            },
            identities,
        };
        let mut l = AddressLimits::new(rules(3.0, 2), rules(4.0, 3));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let taken = (0..10).filter(|_| l.take(t0, a).is_ok()).count();
        assert_eq!(taken, 3, "the address's burst");
        assert_eq!(l.take(t0, b), Ok(()), "the prefix has one more");
        assert_eq!(l.take(t0, b), Err(AddressRefusal::Rate));
        let later = t0 + Duration::from_secs(1);
        assert_eq!(l.take(later, b), Ok(()));
        // Identities: two per address, three per prefix.
        assert_eq!(l.add_identity(t0, a), Ok(()));
        assert_eq!(l.add_identity(t0, a), Ok(()));
        assert_eq!(l.add_identity(t0, a), Err(AddressRefusal::Identities));
        assert_eq!(l.add_identity(t0, b), Ok(()));
        assert_eq!(l.add_identity(t0, b), Err(AddressRefusal::Identities));
        l.remove_identity(a);
        assert_eq!(l.add_identity(t0, b), Ok(()));
    }

    #[test]
    fn idle_addresses_are_forgotten_at_the_bound() {
        let t0 = Instant::now();
        let rules = AddressRules {
            rate: Rate {
                per_second: 1.0,
                burst: 1.0,
            },
            identities: 1,
        };
        let mut l = AddressLimits::new(rules, rules);
        for i in 0..MAX_TRACKED_ADDRESSES as u32 + 10 {
            let ip = IpAddr::V4(Ipv4Addr::from(i << 8));
            let _ = l.take(t0 + Duration::from_secs(u64::from(i / 1000)), ip);
        }
        let (ips, prefixes) = l.tracked();
        assert!(ips <= MAX_TRACKED_ADDRESSES && prefixes <= MAX_TRACKED_ADDRESSES);
    }
}
