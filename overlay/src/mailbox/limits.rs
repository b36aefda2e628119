//! What a gateway's mailboxes limit by something an identity cannot mint for free.
//!
//! - **Registrations per address and per prefix**: identities are free, addresses are not. A
//!   gateway holds at most [`super::MailboxConfig::max_per_address`] registrations made from one
//!   IP address and [`super::MailboxConfig::max_per_prefix`] from one prefix (an IPv4 /24, an
//!   IPv6 /48: what one operator usually holds). The address is the connection's, kept with the
//!   registration (also on disk), so that a restart does not reset the counts.
//! - **Bytes per mailbox, and a fair share when the gateway is full**: no mailbox holds more
//!   than [`super::MailboxConfig::max_client_bytes`], and when the gateway's bytes are all in use
//!   a packet for a client still gets room by evicting the newest packet of the largest mailbox,
//!   if that mailbox is larger than the client's would be. Many identities filling their
//!   mailboxes therefore shrink each other, never an honest client's that is being fetched
//!   (nothing evicted was acknowledged to anyone: its sender retransmits).

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use p2pmix_mix::ClientId;

/// The prefix an address belongs to (an IPv4 /24, an IPv6 /48; IPv4-mapped IPv6 addresses
/// count as IPv4): the one the mix's admission counts by.
pub use p2pmix_mix::Prefix;
/// The address as it is counted (IPv4-mapped IPv6 as IPv4).
pub use p2pmix_mix::canonical_ip as canonical;

/// The prefix of `ip`.
pub fn prefix_of(ip: IpAddr) -> Prefix {
    Prefix::of(ip)
}

/// Registrations held per address and per prefix.
#[derive(Debug, Default)]
pub(super) struct OriginCounts {
    addresses: HashMap<IpAddr, usize>,
    prefixes: HashMap<Prefix, usize>,
}

impl OriginCounts {
    /// Whether one more registration from `ip` stays within the limits.
    pub(super) fn admits(&self, ip: IpAddr, per_address: usize, per_prefix: usize) -> bool {
        let ip = canonical(ip);
        self.addresses.get(&ip).copied().unwrap_or(0) < per_address
            && self.prefixes.get(&prefix_of(ip)).copied().unwrap_or(0) < per_prefix
    }

    pub(super) fn add(&mut self, ip: IpAddr) {
        let ip = canonical(ip);
        *self.addresses.entry(ip).or_default() += 1;
        *self.prefixes.entry(prefix_of(ip)).or_default() += 1;
    }

    pub(super) fn remove(&mut self, ip: IpAddr) {
        let ip = canonical(ip);
        if let Some(n) = self.addresses.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.addresses.remove(&ip);
            }
        }
        let p = prefix_of(ip);
        if let Some(n) = self.prefixes.get_mut(&p) {
            *n -= 1;
            if *n == 0 {
                self.prefixes.remove(&p);
            }
        }
    }

    /// Registrations held from `ip`.
    pub(super) fn registered_at(&self, ip: IpAddr) -> usize {
        self.addresses.get(&canonical(ip)).copied().unwrap_or(0)
    }
}

/// Mailboxes by the bytes they hold, for the fair share: the largest is the first to give
/// room.
#[derive(Debug, Default)]
pub(super) struct BySize {
    order: BTreeSet<(usize, ClientId)>,
}

impl BySize {
    /// `client`'s mailbox went from `old` bytes to `new`.
    pub(super) fn update(&mut self, client: ClientId, old: usize, new: usize) {
        if old > 0 {
            self.order.remove(&(old, client));
        }
        if new > 0 {
            self.order.insert((new, client));
        }
    }

    /// The client whose mailbox holds the most bytes, and how many.
    pub(super) fn largest(&self) -> Option<(usize, ClientId)> {
        self.order.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use p2pmix_mix::Label;

    use super::*;
    use crate::mailbox::{
        MailboxConfig, MailboxError, MailboxStore,
        store::{Persistence, Registration},
    };

    const T0: u64 = 1_800_000_000_000;

    fn id(n: u32) -> ClientId {
        let mut c = [0u8; 32];
        c[..4].copy_from_slice(&n.to_be_bytes());
        ClientId(c)
    }

    #[test]
    fn a_hundred_thousand_registrations_from_one_address_are_capped_and_others_still_register() {
        let config = MailboxConfig::default();
        let mut store = MailboxStore::new(config, Persistence::Spooled, T0);
        let flooder: IpAddr = Ipv4Addr::new(203, 0, 113, 9).into();
        let mut accepted = 0;
        let mut refused = 0;
        for n in 0..100_000 {
            match store.register(id(n), T0, Some(flooder)) {
                Ok(true) => accepted += 1,
                Err(MailboxError::AddressLimit) => refused += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(accepted, config.max_per_address);
        assert_eq!(refused, 100_000 - config.max_per_address);
        assert_eq!(store.registered_from(flooder), config.max_per_address);
        // Neighbours in the same /24 share what is left of the prefix, strangers are not
        // touched: honest clients elsewhere register.
        for n in 0..50u32 {
            let honest: IpAddr =
                Ipv4Addr::new(198, 51, (n / 200) as u8, (n % 200) as u8 + 1).into();
            assert_eq!(
                store.register(id(1_000_000 + n), T0, Some(honest)).ok(),
                Some(true)
            );
        }
        // The flooder's registrations expire when idle (an hour), and the count with them.
        store.expire(T0 + config.idle_registration.as_millis() as u64 + 1);
        assert_eq!(store.registered_from(flooder), 0);
        assert_eq!(
            store.register(id(7), T0 + 1, Some(flooder)).ok(),
            Some(true)
        );
    }

    #[test]
    fn the_counts_survive_a_restart() {
        let config = MailboxConfig {
            max_per_address: 2,
            ..MailboxConfig::default()
        };
        let ip: IpAddr = Ipv4Addr::new(203, 0, 113, 9).into();
        let registration = Registration {
            origin: Some(ip),
            seen_ms: T0,
        };
        let mut store = MailboxStore::restore(
            config,
            T0,
            [(id(1), registration, vec![]), (id(2), registration, vec![])],
        );
        assert!(matches!(
            store.register(id(3), T0, Some(ip)),
            Err(MailboxError::AddressLimit)
        ));
    }

    #[test]
    fn a_mailbox_holds_its_byte_cap_and_a_full_gateway_evicts_from_the_largest_for_a_smaller_one() {
        let config = MailboxConfig {
            max_bytes: 10_000,
            max_client_bytes: 4_000,
            ..MailboxConfig::default()
        };
        let mut store = MailboxStore::new(config, Persistence::Memory, T0);
        for n in 0..4 {
            store.register(id(n), T0, None).unwrap();
        }
        let body = [0u8; 1_000];
        for _ in 0..4 {
            store.store(&id(0), Label([0; 16]), &body, T0).unwrap();
        }
        assert!(
            matches!(
                store.store(&id(0), Label([0; 16]), &body, T0),
                Err(MailboxError::QuotaFull)
            ),
            "the per-client cap"
        );
        for _ in 0..4 {
            store.store(&id(1), Label([0; 16]), &body, T0).unwrap();
        }
        store.store(&id(2), Label([0; 16]), &body, T0).unwrap();
        store.store(&id(2), Label([0; 16]), &body, T0).unwrap();
        assert_eq!(store.bytes(), 10_000, "full");
        // A small mailbox still gets room: the largest gives up its newest packet.
        store.store(&id(3), Label([9; 16]), &body, T0).unwrap();
        assert_eq!(store.evicted(), 1);
        assert_eq!(store.bytes(), 10_000);
        assert_eq!(store.pending(&id(3)), 1);
        assert_eq!(store.pending(&id(0)) + store.pending(&id(1)), 7);
        store.store(&id(3), Label([9; 16]), &body, T0).unwrap();
        assert_eq!(store.evicted(), 2);
        // Now every mailbox holds 2 or 3 packets: a third for id 2 would make it as large as
        // the largest, which does not give room to its equal.
        assert!(matches!(
            store.store(&id(2), Label([0; 16]), &body, T0),
            Err(MailboxError::Full)
        ));
    }

    #[test]
    fn prefixes_group_an_operators_addresses_and_mapped_addresses_count_as_ipv4() {
        let a: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
        let b: IpAddr = Ipv4Addr::new(192, 0, 2, 200).into();
        let c: IpAddr = Ipv4Addr::new(192, 0, 3, 1).into();
        assert_eq!(prefix_of(a), prefix_of(b));
        assert_ne!(prefix_of(a), prefix_of(c));
        let mapped: IpAddr = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().into();
        assert_eq!(canonical(mapped), a);
        let v6a: IpAddr = "2001:db8:1:2::1".parse::<Ipv6Addr>().unwrap().into();
        let v6b: IpAddr = "2001:db8:1:ffff::9".parse::<Ipv6Addr>().unwrap().into();
        assert_eq!(prefix_of(v6a), prefix_of(v6b), "one /48");
        let mut counts = OriginCounts::default();
        counts.add(a);
        counts.add(mapped);
        assert_eq!(counts.registered_at(a), 2);
        assert!(!counts.admits(b, 10, 2), "the /24 holds two");
        counts.remove(a);
        assert!(counts.admits(b, 10, 2));
    }
}
