//! A gateway's mailboxes in memory, sans-IO: packets the network delivered for its registered
//! clients, kept until the client fetches and acknowledges them, within a per-client quota, a
//! byte limit and a time-to-live.
//!
//! A client registers by fetching (the libp2p connection authenticates its peer id, from which
//! its client id is derived); packets for clients that never registered are refused, so that
//! nobody fills a gateway's disk for ids nobody will collect. Registrations are limited per
//! address and prefix, mailboxes per client in bytes, and a full gateway gives a client room
//! by evicting from the largest mailbox ([`super::limits`]). A registration with an empty
//! mailbox that nobody fetched for [`MailboxConfig::idle_registration`] is forgotten; when it
//! was last seen is kept on disk (to within [`SEEN_GRANULARITY`]), so a restart does not give
//! it a fresh lease. Each packet gets a sequence number
//! that only grows (also across restarts: numbers start above `now_ms << 10`), and a fetch
//! acknowledges everything up to the number the client has processed; what is not acknowledged
//! is handed over again.
//!
//! Persistence is a value: with [`Persistence::Spooled`] every change that must reach the disk
//! leaves as a [`SpoolOp`] ([`MailboxStore::poll_spool`]) for the driver to apply, and a stored
//! packet is handed to its client only once the driver reports it durable
//! ([`MailboxStore::spooled`]): a gateway restart loses nothing it handed over or acknowledged
//! as stored. Time is passed in (milliseconds since the UNIX epoch: expiry survives restarts).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::IpAddr,
};

use p2pmix_mix::{ClientId, Label};

use super::{
    MailboxConfig, MailboxError,
    limits::{BySize, OriginCounts},
};

/// How far the last-seen time of a registration on disk may lag behind the one in memory (a
/// fetch every few seconds does not become a write every few seconds).
pub const SEEN_GRANULARITY: u64 = 5 * 60 * 1000;

/// A registration as the disk keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// The address it was made from, when known.
    pub origin: Option<IpAddr>,
    /// When its client last fetched (milliseconds since the UNIX epoch).
    pub seen_ms: u64,
}

/// One stored packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPacket {
    /// Its sequence number in the client's mailbox.
    pub seq: u64,
    /// The label the packet's creator chose.
    pub label: Label,
    /// The Sphinx body.
    pub body: Vec<u8>,
    /// When it expires (milliseconds since the UNIX epoch).
    pub expires_ms: u64,
}

/// A change the disk must see, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolOp {
    /// `client` registered: its (empty) mailbox survives a restart.
    Register {
        /// The client.
        client: ClientId,
        /// From where, and when.
        registration: Registration,
    },
    /// `client` fetched at `seen_ms` (written once it is [`SEEN_GRANULARITY`] past the last).
    Seen {
        /// The client.
        client: ClientId,
        /// When.
        seen_ms: u64,
    },
    /// Write `packet` durably, then report with [`MailboxStore::spooled`].
    Save {
        /// The client.
        client: ClientId,
        /// The packet.
        packet: StoredPacket,
    },
    /// The packet `seq` was acknowledged or expired.
    Remove {
        /// The client.
        client: ClientId,
        /// The packet.
        seq: u64,
    },
    /// The registration and everything held for it are gone.
    Forget {
        /// The client.
        client: ClientId,
    },
}

/// Whether the store's changes go to a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Memory only: packets count as durable at once and no [`SpoolOp`] is emitted (tests).
    Memory,
    /// Every change leaves as a [`SpoolOp`]; packets wait for [`MailboxStore::spooled`].
    Spooled,
}

#[derive(Debug)]
struct Held {
    packet: StoredPacket,
    /// On disk (or in a memory-only store): may be handed over.
    durable: bool,
}

#[derive(Debug, Default)]
struct Mailbox {
    packets: BTreeMap<u64, Held>,
    next_seq: u64,
    bytes: usize,
    /// The highest number handed to the client since this gateway started: acknowledgements
    /// beyond it (from before a restart) delete nothing the client has not seen.
    handed_through: u64,
    last_seen_ms: u64,
    /// The last-seen time the disk has.
    seen_on_disk_ms: u64,
    origin: Option<IpAddr>,
}

/// All mailboxes of a gateway. See the module documentation.
#[derive(Debug)]
pub struct MailboxStore {
    config: MailboxConfig,
    persistence: Persistence,
    boxes: HashMap<ClientId, Mailbox>,
    bytes: usize,
    seq_floor: u64,
    spool: VecDeque<SpoolOp>,
    origins: OriginCounts,
    by_size: BySize,
    evicted: u64,
}

/// A fetch's answer: packets oldest first, and how many more wait behind them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fetched {
    /// The packets handed over.
    pub packets: Vec<StoredPacket>,
    /// Packets still held after them.
    pub remaining: usize,
}

impl MailboxStore {
    /// Empty mailboxes at `now_ms`.
    pub fn new(config: MailboxConfig, persistence: Persistence, now_ms: u64) -> Self {
        MailboxStore {
            config,
            persistence,
            boxes: HashMap::new(),
            bytes: 0,
            seq_floor: now_ms << 10,
            spool: VecDeque::new(),
            origins: OriginCounts::default(),
            by_size: BySize::default(),
            evicted: 0,
        }
    }

    /// Mailboxes loaded back from the disk at `now_ms` (see [`super::DiskSpool::load`]): every
    /// registration (with where it came from and when it was last seen), and the packets not
    /// yet expired (expired ones are removed).
    pub fn restore(
        config: MailboxConfig,
        now_ms: u64,
        contents: impl IntoIterator<Item = (ClientId, Registration, Vec<StoredPacket>)>,
    ) -> Self {
        let mut store = MailboxStore::new(config, Persistence::Spooled, now_ms);
        for (client, registration, packets) in contents {
            let mut mailbox = Mailbox {
                next_seq: store.seq_floor,
                last_seen_ms: registration.seen_ms,
                seen_on_disk_ms: registration.seen_ms,
                origin: registration.origin,
                ..Mailbox::default()
            };
            for packet in packets {
                if packet.expires_ms <= now_ms {
                    store.spool.push_back(SpoolOp::Remove {
                        client,
                        seq: packet.seq,
                    });
                    continue;
                }
                mailbox.next_seq = mailbox.next_seq.max(packet.seq.saturating_add(1));
                mailbox.bytes += packet.body.len();
                mailbox.packets.insert(
                    packet.seq,
                    Held {
                        packet,
                        durable: true,
                    },
                );
            }
            store.bytes += mailbox.bytes;
            store.by_size.update(client, 0, mailbox.bytes);
            if let Some(ip) = mailbox.origin {
                store.origins.add(ip);
            }
            store.boxes.insert(client, mailbox);
        }
        store
    }

    fn emit(&mut self, op: SpoolOp) {
        if self.persistence == Persistence::Spooled {
            self.spool.push_back(op);
        }
    }

    /// The next change the disk must see.
    pub fn poll_spool(&mut self) -> Option<SpoolOp> {
        self.spool.pop_front()
    }

    /// Registers `client` from `origin` (idempotent; it also marks the client as seen at
    /// `now_ms`); `Ok(true)` when it is new. A new registration beyond the limits of its
    /// address or prefix is refused ([`MailboxError::AddressLimit`]).
    pub fn register(
        &mut self,
        client: ClientId,
        now_ms: u64,
        origin: Option<IpAddr>,
    ) -> Result<bool, MailboxError> {
        if let Some(mailbox) = self.boxes.get_mut(&client) {
            mailbox.last_seen_ms = mailbox.last_seen_ms.max(now_ms);
            if mailbox.last_seen_ms.saturating_sub(mailbox.seen_on_disk_ms) >= SEEN_GRANULARITY {
                mailbox.seen_on_disk_ms = mailbox.last_seen_ms;
                let seen_ms = mailbox.last_seen_ms;
                self.emit(SpoolOp::Seen { client, seen_ms });
            }
            return Ok(false);
        }
        if self.boxes.len() >= self.config.max_clients {
            return Err(MailboxError::Full);
        }
        if let Some(ip) = origin {
            if !self
                .origins
                .admits(ip, self.config.max_per_address, self.config.max_per_prefix)
            {
                return Err(MailboxError::AddressLimit);
            }
            self.origins.add(ip);
        }
        self.boxes.insert(
            client,
            Mailbox {
                next_seq: self.seq_floor,
                last_seen_ms: now_ms,
                seen_on_disk_ms: now_ms,
                origin,
                ..Mailbox::default()
            },
        );
        self.emit(SpoolOp::Register {
            client,
            registration: Registration {
                origin,
                seen_ms: now_ms,
            },
        });
        Ok(true)
    }

    /// Registrations held that were made from `ip`.
    pub fn registered_from(&self, ip: IpAddr) -> usize {
        self.origins.registered_at(ip)
    }

    /// Packets evicted from the largest mailboxes to make room (see [`super::limits`]).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Whether `client` registered here.
    pub fn is_registered(&self, client: &ClientId) -> bool {
        self.boxes.contains_key(client)
    }

    /// Registered clients.
    pub fn clients(&self) -> usize {
        self.boxes.len()
    }

    /// Packets held for all clients.
    pub fn len(&self) -> usize {
        self.boxes.values().map(|m| m.packets.len()).sum()
    }

    /// Whether no packet is held.
    pub fn is_empty(&self) -> bool {
        self.boxes.values().all(|m| m.packets.is_empty())
    }

    /// Bytes held for all clients.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Packets held for `client`.
    pub fn pending(&self, client: &ClientId) -> usize {
        self.boxes.get(client).map_or(0, |m| m.packets.len())
    }

    /// Stores a packet for `client`; returns its sequence number. With
    /// [`Persistence::Spooled`] it is handed over only after [`MailboxStore::spooled`]. When
    /// the gateway's bytes are all in use, room is made by evicting the newest packets of the
    /// largest mailbox while that is larger than `client`'s would be; otherwise the packet is
    /// refused.
    pub fn store(
        &mut self,
        client: &ClientId,
        label: Label,
        body: &[u8],
        now_ms: u64,
    ) -> Result<u64, MailboxError> {
        let ttl_ms = u64::try_from(self.config.ttl.as_millis()).unwrap_or(u64::MAX);
        let durable = self.persistence == Persistence::Memory;
        let mailbox = self.boxes.get(client).ok_or(MailboxError::NotRegistered)?;
        if mailbox.packets.len() >= self.config.quota
            || mailbox.bytes + body.len() > self.config.max_client_bytes
        {
            return Err(MailboxError::QuotaFull);
        }
        let mine = mailbox.bytes + body.len();
        while self.bytes + body.len() > self.config.max_bytes {
            match self.by_size.largest() {
                Some((size, largest)) if size > mine && largest != *client => {
                    self.evict_newest(&largest);
                }
                _ => return Err(MailboxError::Full),
            }
        }
        let Some(mailbox) = self.boxes.get_mut(client) else {
            return Err(MailboxError::NotRegistered);
        };
        let seq = mailbox.next_seq;
        let packet = StoredPacket {
            seq,
            label,
            body: body.to_vec(),
            expires_ms: now_ms.saturating_add(ttl_ms),
        };
        mailbox.next_seq += 1;
        let old = mailbox.bytes;
        mailbox.bytes += body.len();
        let new = mailbox.bytes;
        mailbox.packets.insert(
            seq,
            Held {
                packet: packet.clone(),
                durable,
            },
        );
        self.bytes += body.len();
        self.by_size.update(*client, old, new);
        if !durable {
            self.spool.push_back(SpoolOp::Save {
                client: *client,
                packet,
            });
        }
        Ok(seq)
    }

    /// Drops the newest packet of `client`'s mailbox (to give room to a smaller one).
    fn evict_newest(&mut self, client: &ClientId) {
        let Some(mailbox) = self.boxes.get_mut(client) else {
            return;
        };
        let Some((seq, held)) = mailbox.packets.pop_last() else {
            return;
        };
        let old = mailbox.bytes;
        mailbox.bytes -= held.packet.body.len();
        let new = mailbox.bytes;
        self.bytes -= held.packet.body.len();
        self.by_size.update(*client, old, new);
        self.evicted += 1;
        self.emit(SpoolOp::Remove {
            client: *client,
            seq,
        });
    }

    /// Whether packet `seq` of `client` is durable (may be handed over).
    pub fn is_durable(&self, client: &ClientId, seq: u64) -> bool {
        self.boxes
            .get(client)
            .and_then(|m| m.packets.get(&seq))
            .is_some_and(|h| h.durable)
    }

    /// Reports how a [`SpoolOp::Save`] went: a durable packet may now be handed over (returns
    /// `true`); one that could not be written is dropped as if it never came.
    pub fn spooled(&mut self, client: &ClientId, seq: u64, written: bool) -> bool {
        let Some(mailbox) = self.boxes.get_mut(client) else {
            return false;
        };
        if written {
            return match mailbox.packets.get_mut(&seq) {
                Some(held) => {
                    held.durable = true;
                    true
                }
                None => false,
            };
        }
        if let Some(held) = mailbox.packets.remove(&seq) {
            let old = mailbox.bytes;
            mailbox.bytes -= held.packet.body.len();
            self.bytes -= held.packet.body.len();
            self.by_size.update(*client, old, mailbox.bytes);
        }
        false
    }

    /// Deletes `client`'s packets up to `ack_through` (at most up to the highest number
    /// handed to it since this gateway started) and returns up to `max` of the rest, oldest
    /// first, with the number left after them. Only durable packets are handed over, and none
    /// after the first that is not durable yet (acknowledgements are cumulative).
    ///
    /// After a restart an acknowledgement from before it deletes nothing: everything still
    /// held is handed over again (the client drops what it already has by message id), so
    /// that even a clock stepped back, which could number new packets below the old
    /// acknowledgement, loses nothing.
    pub fn fetch(&mut self, client: &ClientId, ack_through: u64, max: usize) -> Fetched {
        let Some(mailbox) = self.boxes.get_mut(client) else {
            return Fetched::default();
        };
        let ack_through = ack_through.min(mailbox.handed_through);
        let keep = mailbox.packets.split_off(&ack_through.saturating_add(1));
        let acked = std::mem::replace(&mut mailbox.packets, keep);
        let mut removed = Vec::new();
        let old = mailbox.bytes;
        for held in acked.values() {
            mailbox.bytes -= held.packet.body.len();
            self.bytes -= held.packet.body.len();
            removed.push(held.packet.seq);
        }
        self.by_size.update(*client, old, mailbox.bytes);
        let packets: Vec<StoredPacket> = mailbox
            .packets
            .values()
            .take_while(|h| h.durable)
            .take(max)
            .map(|h| h.packet.clone())
            .collect();
        if let Some(last) = packets.last() {
            mailbox.handed_through = mailbox.handed_through.max(last.seq);
        }
        let remaining = mailbox.packets.len() - packets.len();
        for seq in removed {
            self.emit(SpoolOp::Remove {
                client: *client,
                seq,
            });
        }
        Fetched { packets, remaining }
    }

    /// Drops packets whose time-to-live is over, and registrations with nothing held that were
    /// not seen for [`MailboxConfig::idle_registration`]; returns how many packets.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let idle = u64::try_from(self.config.idle_registration.as_millis()).unwrap_or(u64::MAX);
        let mut forgotten = Vec::new();
        let origins = &mut self.origins;
        self.boxes.retain(|client, mailbox| {
            let keep =
                !mailbox.packets.is_empty() || now_ms.saturating_sub(mailbox.last_seen_ms) < idle;
            if !keep {
                forgotten.push(*client);
                if let Some(ip) = mailbox.origin {
                    origins.remove(ip);
                }
            }
            keep
        });
        let mut removed = Vec::new();
        for (client, mailbox) in &mut self.boxes {
            let old = mailbox.bytes;
            mailbox.packets.retain(|seq, held| {
                let keep = held.packet.expires_ms > now_ms;
                if !keep {
                    removed.push((*client, *seq));
                    mailbox.bytes -= held.packet.body.len();
                    self.bytes -= held.packet.body.len();
                }
                keep
            });
            self.by_size.update(*client, old, mailbox.bytes);
        }
        for client in forgotten {
            self.emit(SpoolOp::Forget { client });
        }
        let dropped = removed.len();
        for (client, seq) in removed {
            self.emit(SpoolOp::Remove { client, seq });
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn client(n: u8) -> ClientId {
        ClientId([n; 32])
    }

    fn memory(config: MailboxConfig) -> MailboxStore {
        MailboxStore::new(config, Persistence::Memory, T0)
    }

    fn bodies(f: &Fetched) -> Vec<u8> {
        f.packets.iter().map(|p| p.body[0]).collect()
    }

    #[test]
    fn unregistered_clients_get_nothing_stored() {
        let mut store = memory(MailboxConfig::default());
        assert!(matches!(
            store.store(&client(1), Label([0; 16]), b"x", T0),
            Err(MailboxError::NotRegistered)
        ));
        assert!(store.register(client(1), T0, None).unwrap());
        assert!(!store.register(client(1), T0, None).unwrap());
        store.store(&client(1), Label([0; 16]), b"x", T0).unwrap();
        assert_eq!(store.pending(&client(1)), 1);
    }

    #[test]
    fn fetch_hands_over_until_acknowledged_in_order() {
        let mut store = memory(MailboxConfig::default());
        store.register(client(1), T0, None).unwrap();
        let seqs: Vec<u64> = (0..5u8)
            .map(|i| store.store(&client(1), Label([i; 16]), &[i], T0).unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
        let first = store.fetch(&client(1), 0, 3);
        assert_eq!(bodies(&first), [0, 1, 2]);
        assert_eq!(first.remaining, 2);
        // Not acknowledged: handed over again.
        let again = store.fetch(&client(1), 0, 3);
        assert_eq!(again, first);
        let rest = store.fetch(&client(1), first.packets[2].seq, 10);
        assert_eq!(bodies(&rest), [3, 4]);
        assert_eq!(rest.remaining, 0);
        store.fetch(&client(1), rest.packets[1].seq, 10);
        assert!(store.is_empty());
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn quota_byte_limit_and_client_limit_hold() {
        let config = MailboxConfig {
            quota: 2,
            max_bytes: 5,
            max_clients: 2,
            ..MailboxConfig::default()
        };
        let mut store = memory(config);
        store.register(client(1), T0, None).unwrap();
        store.register(client(2), T0, None).unwrap();
        assert!(matches!(
            store.register(client(3), T0, None),
            Err(MailboxError::Full)
        ));
        store.store(&client(1), Label([0; 16]), b"ab", T0).unwrap();
        store.store(&client(1), Label([0; 16]), b"cd", T0).unwrap();
        assert!(matches!(
            store.store(&client(1), Label([0; 16]), b"e", T0),
            Err(MailboxError::QuotaFull)
        ));
        store.store(&client(2), Label([0; 16]), b"e", T0).unwrap();
        // Full: a packet that would make client 2's mailbox as large as the largest gets no
        // room (the fair share evicts only from a larger one).
        assert!(matches!(
            store.store(&client(2), Label([0; 16]), b"fgh", T0),
            Err(MailboxError::Full)
        ));
        assert_eq!(store.bytes(), 5);
    }

    #[test]
    fn packets_expire() {
        let config = MailboxConfig {
            ttl: Duration::from_secs(10),
            ..MailboxConfig::default()
        };
        let mut store = memory(config);
        store.register(client(1), T0, None).unwrap();
        store.store(&client(1), Label([0; 16]), b"old", T0).unwrap();
        store
            .store(&client(1), Label([0; 16]), b"new", T0 + 5_000)
            .unwrap();
        assert_eq!(store.expire(T0 + 10_000), 1);
        let left = store.fetch(&client(1), 0, 10);
        assert_eq!(left.packets[0].body, b"new");
        assert_eq!(store.bytes(), 3);
    }

    #[test]
    fn idle_empty_registrations_are_forgotten() {
        let config = MailboxConfig {
            idle_registration: Duration::from_secs(100),
            ..MailboxConfig::default()
        };
        let mut store = MailboxStore::new(config, Persistence::Spooled, T0);
        store.register(client(1), T0, None).unwrap();
        store.register(client(2), T0, None).unwrap();
        let seq = store.store(&client(2), Label([1; 16]), b"x", T0).unwrap();
        store.spooled(&client(2), seq, true);
        store.register(client(3), T0, None).unwrap();
        store.register(client(3), T0 + 60_000, None).unwrap(); // seen again
        while store.poll_spool().is_some() {}
        store.expire(T0 + 100_000);
        assert!(!store.is_registered(&client(1)));
        assert!(store.is_registered(&client(2)), "it still holds a packet");
        assert!(store.is_registered(&client(3)));
        assert_eq!(
            std::iter::from_fn(|| store.poll_spool()).collect::<Vec<_>>(),
            vec![SpoolOp::Forget { client: client(1) }]
        );
    }

    #[test]
    fn a_spooled_packet_is_handed_over_only_once_durable_and_a_failed_write_is_dropped() {
        let mut store = MailboxStore::new(MailboxConfig::default(), Persistence::Spooled, T0);
        store.register(client(1), T0, None).unwrap();
        assert_eq!(
            store.poll_spool(),
            Some(SpoolOp::Register {
                client: client(1),
                registration: Registration {
                    origin: None,
                    seen_ms: T0
                }
            })
        );
        let a = store.store(&client(1), Label([1; 16]), b"a", T0).unwrap();
        let b = store.store(&client(1), Label([2; 16]), b"b", T0).unwrap();
        assert!(
            matches!(store.poll_spool(), Some(SpoolOp::Save { packet, .. }) if packet.seq == a)
        );
        assert!(
            matches!(store.poll_spool(), Some(SpoolOp::Save { packet, .. }) if packet.seq == b)
        );
        assert!(
            store.fetch(&client(1), 0, 10).packets.is_empty(),
            "nothing durable yet"
        );
        // The second is on disk, the first not yet: nothing may be handed over (cumulative acks).
        store.spooled(&client(1), b, true);
        assert!(store.fetch(&client(1), 0, 10).packets.is_empty());
        // The first could not be written: it is gone, the second goes out.
        assert!(!store.spooled(&client(1), a, false));
        let got = store.fetch(&client(1), 0, 10);
        assert_eq!(bodies(&got), [b'b']);
        assert_eq!(store.bytes(), 1);
        store.fetch(&client(1), b, 10);
        assert_eq!(
            store.poll_spool(),
            Some(SpoolOp::Remove {
                client: client(1),
                seq: b
            })
        );
    }

    #[test]
    fn a_restore_keeps_packets_and_numbers_grow_past_them() {
        let config = MailboxConfig {
            ttl: Duration::from_secs(10),
            ..MailboxConfig::default()
        };
        let old = |seq: u64, expires_ms: u64| StoredPacket {
            seq,
            label: Label([seq as u8; 16]),
            body: vec![seq as u8],
            expires_ms,
        };
        let seen = Registration {
            origin: None,
            seen_ms: T0,
        };
        let mut store = MailboxStore::restore(
            config,
            T0,
            [
                (client(1), seen, vec![old(7, T0 + 5_000), old(3, T0 - 1)]),
                (client(2), seen, vec![]),
            ],
        );
        assert!(store.is_registered(&client(2)));
        assert_eq!(
            store.poll_spool(),
            Some(SpoolOp::Remove {
                client: client(1),
                seq: 3
            }),
            "the expired packet is removed from disk"
        );
        // An acknowledgement from before the restart deletes nothing.
        let held = store.fetch(&client(1), 7, 10);
        assert_eq!(bodies(&held), [7]);
        let next = store.store(&client(1), Label([0; 16]), b"n", T0).unwrap();
        assert!(next >= T0 << 10, "numbers start above the restart time");
    }
}
